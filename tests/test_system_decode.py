"""Every registered decoder on real JPEGs, and the measured differences between them."""

import io

import numpy as np
import pytest
from _registry import registry_param, registry_params
from PIL import Image

from robustbench_sys import noises


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float((d.max(-1) > 0).mean()), float(d.mean())


@pytest.fixture(scope="module")
def jpeg_bytes(sample_jpegs):
    return [p.read_bytes() for p in sample_jpegs[:8]]


@pytest.mark.parametrize("key", registry_params("decoder/*"))
def test_decoder_contract(key, jpeg_bytes):
    noise = noises.get(key)
    assert noise.stage == "decoder" and isinstance(noise.params, dict)
    versions = noise.versions()
    assert versions and all(v for v in versions.values()), versions
    ref = noises.get("decoder/pil")(jpeg_bytes[0])
    out = noise(jpeg_bytes[0])
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
    if key != "decoder/pil-draft":
        assert out.shape == ref.shape
        assert _diff(out, ref)[1] < 3.0, key  # the same picture, however decoded
    with pytest.raises((OSError, ValueError, RuntimeError)):
        noise(jpeg_bytes[0][:200])  # truncated: header only


@pytest.mark.parametrize("key,min_frac", [registry_param("decoder/ffmpeg", 0.05, id="decoder/ffmpeg-0.05"),
                                          registry_param("decoder/turbojpeg-fast", 0.3,
                                                         id="decoder/turbojpeg-fast-0.3")])
def test_decoder_differs_from_pil(key, min_frac, jpeg_bytes):
    fracs, maes = [], []
    for data in jpeg_bytes:
        frac, mae = _diff(noises.get(key)(data), noises.get("decoder/pil")(data))
        fracs.append(frac)
        maes.append(mae)
        assert frac > 0, f"{key} decoded a real JPEG identically to decoder/pil"
    assert np.mean(fracs) > min_frac and 0 < np.mean(maes) < 3, (key, np.mean(fracs), np.mean(maes))


def test_opencv_equals_pil_without_exif_orientation(jpeg_bytes):
    for data in jpeg_bytes:
        with Image.open(io.BytesIO(data)) as im:
            assert im.getexif().get(0x0112, 1) == 1
        assert np.array_equal(noises.get("decoder/opencv")(data), noises.get("decoder/pil")(data))


def test_opencv_applies_exif_orientation_pil_does_not(jpeg_bytes):
    rgb = noises.get("decoder/pil")(jpeg_bytes[0])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, exif=exif)
    pil = noises.get("decoder/pil")(buf.getvalue())
    cv = noises.get("decoder/opencv")(buf.getvalue())
    assert pil.shape == rgb.shape and cv.shape == (rgb.shape[1], rgb.shape[0], 3)
    assert np.array_equal(cv, np.rot90(pil, k=-1))
    assert noises.get("decoder/opencv").params["exif_orientation"] is True


def test_pil_draft_scales_large_jpegs_in_dct_domain(jpeg_bytes):
    rgb = noises.get("decoder/pil")(jpeg_bytes[1])
    big = Image.fromarray(rgb).resize((rgb.shape[1] * 3, rgb.shape[0] * 3), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    full = noises.get("decoder/pil")(buf.getvalue())
    out = noises.get("decoder/pil-draft")(buf.getvalue())
    short = noises.get("decoder/pil-draft").params["draft_short_side"]
    h, w = full.shape[:2]
    scale = next(s for s in (8, 4, 2, 1) if min(h, w) // s >= short)
    assert scale > 1 and out.shape == (-(-h // scale), -(-w // scale), 3)
    assert min(out.shape[:2]) >= short
    # a DCT-domain downscale is close to, but not the same as, decoding then resizing
    ref = np.asarray(Image.fromarray(full).resize(out.shape[1::-1], Image.BOX)).astype(np.int16)
    assert 0 < np.abs(out - ref).mean() < 4
    # small images are left alone
    assert np.array_equal(noises.get("decoder/pil-draft")(jpeg_bytes[0]), noises.get("decoder/pil")(jpeg_bytes[0]))


@pytest.mark.parametrize("key", registry_params(["decoder/opencv", "decoder/ffmpeg", "decoder/turbojpeg-fast"]))
def test_decoders_convert_greyscale(key, jpeg_bytes):
    grey = Image.fromarray(noises.get("decoder/pil")(jpeg_bytes[2])).convert("L")
    buf = io.BytesIO()
    grey.save(buf, "JPEG", quality=90)
    out = noises.get(key)(buf.getvalue())
    assert out.shape == (grey.height, grey.width, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_nvjpeg_reports_missing_gpu_or_decodes(jpeg_bytes):
    noise = noises.get("decoder/nvjpeg")
    reason = noise.available()
    if reason:
        assert "CUDA" in reason
        with pytest.raises(RuntimeError, match="decoder/nvjpeg"):
            noise(jpeg_bytes[0])
    else:
        out = noise(jpeg_bytes[0])
        assert _diff(out, noises.get("decoder/pil")(jpeg_bytes[0]))[1] < 3
