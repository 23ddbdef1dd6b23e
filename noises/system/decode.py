"""Decoder noise: the same JPEG bytes through different decoders.

Every function has the ``decode`` stage signature ``fn(data: bytes) -> HxWx3 uint8 RGB``.
Greyscale, CMYK and alpha images are converted to RGB as the decoder's library does.

Example::

    >>> from noises import get
    >>> rgb = get("decoder/pil")(open("cat.jpg", "rb").read())
"""

from __future__ import annotations

import io

import numpy as np

from noises.registry import register


def _pil_versions() -> dict:
    import PIL
    from PIL import features

    return {"Pillow": PIL.__version__, "libjpeg-turbo": features.version("libjpeg_turbo")}


@register("decoder", "pil", stage="decode",
          params={"library": "Pillow", "idct": "libjpeg-turbo default (islow)", "exif_orientation": False},
          versions=_pil_versions)
def decode_pil(data: bytes) -> np.ndarray:
    """Pillow ``Image.open(...).convert('RGB')``: torchvision's and timm's default loader."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()  # raises OSError on truncated data instead of returning a grey tail
        return np.asarray(im.convert("RGB"))
