"""Colour noise: the RGB image goes through a different colour path before the model.

Every function has the ``color`` stage signature ``fn(img) -> img`` (HxWx3 uint8 RGB in,
HxWx3 uint8 out).

- ``color/bgr``: the channels swapped (an OpenCV BGR array fed to an RGB model).
- ``color/yuv420-{bt601,bt709}-{limited,full}``: a round trip through NV12, the frame format
  of hardware decoders, cameras and video encoders (SysNoise's colour noise is BT.601
  limited range): RGB -> Y'CbCr with the given matrix and range, luma kept per pixel, chroma
  averaged over each 2x2 block (edge blocks of odd-sized images average the pixels they
  have), every plane rounded to uint8 as a converter stores it; then back with the chroma
  sample replicated to its 2x2 block (nearest upsampling, as OpenCV's and libyuv's NV12
  readers do), rounded and clipped to 0..255.

Matrices (ITU-R BT.601 Kr=0.299 Kb=0.114; BT.709 Kr=0.2126 Kb=0.0722), with R, G, B in 0..255::

    Y  = Kr R + (1 - Kr - Kb) G + Kb B
    Cb = (B - Y) / (2 (1 - Kb)),  Cr = (R - Y) / (2 (1 - Kr))
    full range:    Y' = Y,                Cb' = Cb + 128,              Cr' = Cr + 128
    limited range: Y' = 16 + 219/255 Y,   Cb' = 128 + 224/255 Cb,      Cr' = 128 + 224/255 Cr

so BT.601 limited gives SysNoise's ``Y' = round(0.256788 R + 0.504129 G + 0.097906 B) + 16``.

Example::

    >>> from robustbench_sys.noises import get
    >>> out = get("color/yuv420-bt601-limited")(img)   # img: HxWx3 uint8 RGB
"""

from __future__ import annotations

import numpy as np

from robustbench_sys.noises.registry import register

#: (Kr, Kb) of each matrix
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
#: (luma offset, luma scale, chroma scale) of each range, on the 0..255 scale
RANGES = {"limited": (16.0, 219.0 / 255.0, 224.0 / 255.0), "full": (0.0, 1.0, 1.0)}


def _numpy_versions() -> dict:
    return {"numpy": np.__version__}


def _check(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"colour noise expects an HxWx3 uint8 RGB image, got "
                         f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    return img


def forward_matrix(matrix: str, rng: str) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix M, offset o) with [Y', Cb', Cr'] = M @ [R, G, B] + o (before rounding)."""
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    y0, ys, cs = RANGES[rng]
    y = np.array([kr, kg, kb])
    cb = (np.array([0.0, 0.0, 1.0]) - y) / (2 * (1 - kb))
    cr = (np.array([1.0, 0.0, 0.0]) - y) / (2 * (1 - kr))
    return np.stack([ys * y, cs * cb, cs * cr]), np.array([y0, 128.0, 128.0])


def rgb_to_nv12(img: np.ndarray, matrix: str = "bt601", rng: str = "limited") -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 RGB -> (Y: HxW uint8, UV: ceil(H/2) x ceil(W/2) x 2 uint8, interleaved Cb, Cr)."""
    img = _check(img)
    m, o = forward_matrix(matrix, rng)
    h, w = img.shape[:2]
    x = img.astype(np.float64)
    y = np.clip(np.rint(x @ m[0] + o[0]), 0, 255).astype(np.uint8)
    # chroma of the 2x2-averaged RGB (== average of per-pixel chroma: the map is affine);
    # odd sizes: the last row/column block averages the pixels it has
    h2, w2 = -(-h // 2), -(-w // 2)
    sums = np.zeros((h2, w2, 3))
    counts = np.zeros((h2, w2, 1))
    for dy in (0, 1):
        for dx in (0, 1):
            part = x[dy::2, dx::2]
            sums[:part.shape[0], :part.shape[1]] += part
            counts[:part.shape[0], :part.shape[1]] += 1
    mean = sums / counts
    uv = np.clip(np.rint(mean @ m[1:].T + o[1:]), 0, 255).astype(np.uint8)
    return y, uv


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, matrix: str = "bt601", rng: str = "limited") -> np.ndarray:
    """(Y, UV) NV12 planes -> HxWx3 uint8 RGB; chroma upsampled by replication, rounded, clipped."""
    m, o = forward_matrix(matrix, rng)
    inv = np.linalg.inv(m)
    h, w = y.shape
    uv_full = np.repeat(np.repeat(uv, 2, axis=0), 2, axis=1)[:h, :w].astype(np.float64)
    ycc = np.concatenate([y[..., None].astype(np.float64), uv_full], axis=-1) - o
    return np.clip(np.rint(ycc @ inv.T), 0, 255).astype(np.uint8)


def _make_yuv420(matrix: str, rng: str):
    def color(img: np.ndarray) -> np.ndarray:
        y, uv = rgb_to_nv12(img, matrix, rng)
        return nv12_to_rgb(y, uv, matrix, rng)

    color.__doc__ = (f"RGB -> NV12 (YUV 4:2:0, {matrix.upper()} {rng} range) -> RGB round trip: 2x2-averaged "
                     "chroma, every plane rounded to uint8, replicated chroma and clipping on the way back.")
    return color


for _matrix in MATRICES:
    for _rng in RANGES:
        register("color", f"yuv420-{_matrix}-{_rng}",
                 params={"format": "NV12 (YUV 4:2:0)", "matrix": _matrix.upper().replace("BT", "BT."),
                         "range": _rng, "chroma_downsampling": "2x2 mean",
                         "chroma_upsampling": "nearest (replicate)", "rounding": "round half to even, clip 0..255"},
                 versions=_numpy_versions)(_make_yuv420(_matrix, _rng))


@register("color", "bgr", params={"order": "BGR"}, versions=_numpy_versions)
def color_bgr(img: np.ndarray) -> np.ndarray:
    """Red and blue channels swapped (an OpenCV BGR array fed as RGB)."""
    return np.ascontiguousarray(_check(img)[..., ::-1])
