"""Colour noises: worked examples, round-trip error on real images, agreement with OpenCV."""

import numpy as np
import pytest

from robustbench_sys import noises
from robustbench_sys.noises.system import color as C

COLORS = noises.list_noises("color/*")


@pytest.fixture(scope="module")
def images(sample_jpegs):
    return [noises.get("decoder/pil")(p.read_bytes()) for p in sample_jpegs[:6]]


@pytest.mark.parametrize("key", COLORS)
def test_color_contract(key, images):
    noise = noises.get(key)
    assert noise.stage == "color" and noise.available() is None and noise.versions()
    for img in images[:2] + [images[2][:101, :77]]:  # odd sizes too
        out = noise(img)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert not np.array_equal(out, img), key
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        noise(images[0].astype(np.float32))


def test_bgr_swaps_channels(images):
    out = noises.get("color/bgr")(images[0])
    assert np.array_equal(out[..., 0], images[0][..., 2]) and np.array_equal(out[..., 1], images[0][..., 1])


# worked examples: 8-bit values a BT.601/BT.709 converter must produce
@pytest.mark.parametrize("matrix,rng,rgb,yuv", [
    ("bt601", "limited", (255, 255, 255), (235, 128, 128)),
    ("bt601", "limited", (0, 0, 0), (16, 128, 128)),
    ("bt601", "limited", (255, 0, 0), (81, 90, 240)),
    ("bt601", "limited", (0, 255, 0), (145, 54, 34)),
    ("bt601", "limited", (0, 0, 255), (41, 240, 110)),
    ("bt601", "full", (255, 0, 0), (76, 85, 255)),
    ("bt601", "full", (128, 128, 128), (128, 128, 128)),
    ("bt709", "limited", (255, 0, 0), (63, 102, 240)),
    ("bt709", "limited", (0, 255, 0), (173, 42, 26)),
    ("bt709", "full", (0, 0, 255), (18, 255, 116)),
])
def test_worked_examples(matrix, rng, rgb, yuv):
    img = np.empty((2, 2, 3), np.uint8)
    img[:] = rgb
    y, uv = C.rgb_to_nv12(img, matrix, rng)
    assert y.shape == (2, 2) and uv.shape == (1, 1, 2)
    assert (int(y[0, 0]), int(uv[0, 0, 0]), int(uv[0, 0, 1])) == yuv
    back = C.nv12_to_rgb(y, uv, matrix, rng)
    assert np.abs(back.astype(int) - rgb).max() <= 2  # 8-bit quantisation only


def test_sysnoise_luma_formula():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    y, _ = C.rgb_to_nv12(rgb, "bt601", "limited")
    x = rgb.astype(np.float64)
    ref = np.rint(0.256788 * x[..., 0] + 0.504129 * x[..., 1] + 0.097906 * x[..., 2]) + 16
    assert np.abs(y - ref).max() <= 1 and (y != ref).mean() < 0.01


def test_chroma_is_2x2_mean_with_odd_edges():
    img = np.zeros((3, 3, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    _, uv = C.rgb_to_nv12(img, "bt601", "full")
    assert uv.shape == (2, 2, 2)
    m, o = C.forward_matrix("bt601", "full")
    assert uv[0, 0, 1] == np.rint(m[2] @ (255 / 4, 0, 0) + 128)  # red averaged over 4 pixels
    assert (uv[1, 1] == 128).all()  # 1-pixel edge block of black


def test_round_trip_error_on_real_images(images):
    for key in COLORS:
        if not key.startswith("color/yuv420"):
            continue
        errs = [np.abs(noises.get(key)(im).astype(int) - im).mean() for im in images]
        # chroma subsampling costs a little on average (large only at sharp colour edges)
        assert 0.3 < np.mean(errs) < 4, (key, np.mean(errs))
    # smooth (2x2-constant) images survive up to rounding
    flat = np.repeat(np.repeat(images[0][::2, ::2], 2, 0), 2, 1)
    for key in ("color/yuv420-bt601-full", "color/yuv420-bt709-full"):
        assert np.abs(noises.get(key)(flat).astype(int) - flat).max() <= 2


def test_agrees_with_opencv_bt601_limited(images):
    cv2 = pytest.importorskip("cv2")
    for im in images[:3]:
        im = np.ascontiguousarray(im[: im.shape[0] // 4 * 4, : im.shape[1] // 2 * 2])
        h, w = im.shape[:2]
        y, uv = C.rgb_to_nv12(im, "bt601", "limited")
        flat = cv2.cvtColor(im, cv2.COLOR_RGB2YUV_I420).ravel()
        cy = flat[: h * w].reshape(h, w)
        # OpenCV's fixed-point luma is within 1 of ours
        assert np.abs(cy.astype(int) - y).max() <= 1 and (cy != y).mean() < 0.1
        # OpenCV point-samples chroma (top-left pixel of each block): on a 2x2-constant image
        # that equals the mean, and the matrices must agree
        blocky = np.ascontiguousarray(np.repeat(np.repeat(im[::2, ::2], 2, 0), 2, 1))
        _, buv = C.rgb_to_nv12(blocky, "bt601", "limited")
        bflat = cv2.cvtColor(blocky, cv2.COLOR_RGB2YUV_I420).ravel()
        cu = bflat[h * w: h * w + h * w // 4].reshape(h // 2, w // 2)
        cv = bflat[h * w + h * w // 4:].reshape(h // 2, w // 2)
        assert np.abs(cu.astype(int) - buv[..., 0]).max() <= 1 and np.abs(cv.astype(int) - buv[..., 1]).max() <= 1
        # the way back: OpenCV's NV12 reader on our planes
        back = cv2.cvtColor(np.concatenate([y, uv.reshape(h // 2, w)], 0), cv2.COLOR_YUV2RGB_NV12)
        assert np.abs(back.astype(int) - C.nv12_to_rgb(y, uv, "bt601", "limited")).max() <= 1
