"""Resize noise: the same geometry, different resize implementations.

Every function has the ``resize`` stage signature ``fn(img, (width, height))``: the
pipeline computes the target size once (short side to ``floor(size / crop_pct)``,
torchvision's rounding for the long side) and each implementation only resamples, so
the only difference between conditions is the library and its interpolation kernel.

Registered names: ``pil-{nearest,bilinear,bicubic,box,hamming,lanczos}`` (Pillow,
antialiased by construction), ``cv2-{nearest,linear,area,cubic,lanczos4}`` (OpenCV,
no antialiasing except ``area``), ``torch-{bilinear,bicubic}`` and their ``-aa``
(antialias=True) twins (``torch.nn.functional.interpolate`` on float32, output kept
as float32 in the 0..255 scale, unclamped, as a tensor pipeline would feed it on).

Example::

    >>> from robustbench_sys.noises import get
    >>> out = get("resize/cv2-area")(img, (298, 224))   # img: HxWx3 uint8
"""

from __future__ import annotations

from typing import cast

import numpy as np

from robustbench_sys.noises.registry import register


def _pil_versions() -> dict:
    import PIL
    from PIL import features

    return {"Pillow": PIL.__version__, "pillow-simd": "simd" in PIL.__version__,
            "libjpeg-turbo": features.version("libjpeg_turbo")}


def _cv2_versions() -> dict:
    import cv2

    return {"opencv": cv2.__version__}


def _torch_versions() -> dict:
    import torch

    return {"torch": torch.__version__}


def _cv2_available() -> str | None:
    try:
        import cv2  # noqa: F401
    except ImportError as e:  # pragma: no cover - cv2 is a core dependency
        return f"OpenCV is not importable ({e}); pip install opencv-python-headless"
    return None


def _as_uint8_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"resize expects an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    return img


# --------------------------------------------------------------------------- Pillow
_PIL_FILTERS = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
                "box": "BOX", "hamming": "HAMMING", "lanczos": "LANCZOS"}


def _make_pil(interp: str):
    def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        resample = getattr(Image.Resampling, _PIL_FILTERS[interp])
        return np.asarray(Image.fromarray(_as_uint8_rgb(img)).resize(cast(tuple[int, int], tuple(size)), resample))

    resize.__doc__ = f"Pillow Image.resize with {_PIL_FILTERS[interp]} (antialiased)."
    return resize


for _interp in _PIL_FILTERS:
    register("resize", f"pil-{_interp}",
             params={"library": "Pillow", "interpolation": _interp, "antialias": _interp != "nearest"},
             versions=_pil_versions)(_make_pil(_interp))


# --------------------------------------------------------------------------- OpenCV
_CV2_FLAGS = {"nearest": "INTER_NEAREST", "linear": "INTER_LINEAR", "area": "INTER_AREA",
              "cubic": "INTER_CUBIC", "lanczos4": "INTER_LANCZOS4"}


def _make_cv2(interp: str):
    def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        import cv2

        return cv2.resize(_as_uint8_rgb(img), tuple(int(s) for s in size),
                          interpolation=getattr(cv2, _CV2_FLAGS[interp]))

    resize.__doc__ = f"OpenCV cv2.resize with {_CV2_FLAGS[interp]}."
    return resize


for _interp in _CV2_FLAGS:
    register("resize", f"cv2-{_interp}",
             params={"library": "OpenCV", "interpolation": _interp, "antialias": _interp == "area"},
             available=_cv2_available, versions=_cv2_versions)(_make_cv2(_interp))


# --------------------------------------------------------------------------- torch
def _make_torch(mode: str, antialias: bool, device: str = "cpu"):
    def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if device != "cpu" and not torch.cuda.is_available():
            raise RuntimeError(f"resize/torch-{mode}-cuda: {_cuda_reason()}")
        x = torch.from_numpy(np.array(_as_uint8_rgb(img), copy=True)).permute(2, 0, 1)[None].to(device).float()
        w, h = size
        y = F.interpolate(x, size=(int(h), int(w)), mode=mode, align_corners=False, antialias=antialias)
        return y[0].permute(1, 2, 0).contiguous().cpu().numpy()

    resize.__doc__ = (f"torch.nn.functional.interpolate mode={mode} antialias={antialias} on float32 "
                      + (f"on the GPU ({device}; the result is copied back) " if device != "cpu" else "")
                      + "(output float32, 0..255 scale, not rounded or clamped).")
    return resize


def _cuda_reason() -> str:
    return "needs a CUDA GPU (torch.cuda.is_available() is False)"


def _cuda_available() -> str | None:
    import torch

    return None if torch.cuda.is_available() else _cuda_reason()


for _mode in ("bilinear", "bicubic"):
    for _aa in (False, True):
        register("resize", f"torch-{_mode}{'-aa' if _aa else ''}",
                 params={"library": "torch", "interpolation": _mode, "antialias": _aa},
                 versions=_torch_versions)(_make_torch(_mode, _aa))
        # the same interpolation on the GPU: the GPU's kernels against the CPU's (tagged device=cuda:
        # the evaluator preprocesses such a pipeline in its own process, CUDA being unusable in forks)
        register("resize", f"torch-{_mode}{'-aa' if _aa else ''}-cuda",
                 params={"library": "torch", "interpolation": _mode, "antialias": _aa, "device": "cuda"},
                 available=_cuda_available, versions=_torch_versions,
                 tags={"device": "cuda"})(_make_torch(_mode, _aa, "cuda"))
