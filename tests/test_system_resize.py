"""Every registered resize implementation (parametrised over the registry)."""

import io

import numpy as np
import pytest
from _registry import registry_params
from PIL import Image

from robustbench_sys import noises
from robustbench_sys.pipeline import Pipeline


@pytest.fixture(scope="module")
def real_image(sample_jpegs):
    return noises.get("decoder/pil")(sample_jpegs[0].read_bytes())


@pytest.mark.parametrize("key", registry_params("resize/*"))
def test_resize_geometry_and_closeness(key, real_image):
    h, w = real_image.shape[:2]
    size = Pipeline().target_size(w, h)
    out = noises.get(key)(real_image, size)
    assert out.shape == (size[1], size[0], 3)
    assert out.dtype in (np.uint8, np.float32)
    ref = noises.get("resize/pil-bilinear")(real_image, size).astype(np.float32)
    diff = np.abs(out.astype(np.float32) - ref)
    # every implementation approximates the same image; nearest/no-antialias ones the least
    assert diff.mean() < 12, (key, diff.mean())
    if key != "resize/pil-bilinear":
        assert diff.max() > 0, f"{key} is identical to pil-bilinear: not a different implementation"


def test_pil_bilinear_equals_pillow_directly(real_image):
    out = noises.get("resize/pil-bilinear")(real_image, (300, 200))
    direct = np.asarray(Image.fromarray(real_image).resize((300, 200), Image.BILINEAR))
    assert np.array_equal(out, direct)


def test_torch_resize_keeps_float_unrounded(real_image):
    out = noises.get("resize/torch-bicubic")(real_image, (300, 200))
    assert out.dtype == np.float32 and not np.allclose(out, np.round(out))


def test_resize_rejects_non_rgb_uint8():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        noises.get("resize/cv2-area")(np.zeros((10, 10), np.uint8), (5, 5))


def test_unknown_noise_lists_choices():
    with pytest.raises(KeyError, match="valid choices: .*resize/cv2-area"):
        noises.get("resize/cv2-bogus")


def test_pil_decoder_converts_modes(sample_jpegs):
    rgb = noises.get("decoder/pil")(sample_jpegs[1].read_bytes())
    for mode in ("L", "CMYK", "RGBA"):
        buf = io.BytesIO()
        fmt = "PNG" if mode == "RGBA" else "JPEG"
        Image.fromarray(rgb).convert(mode).save(buf, fmt)
        out = noises.get("decoder/pil")(buf.getvalue())
        assert out.shape == rgb.shape and out.dtype == np.uint8, mode
