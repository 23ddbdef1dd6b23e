"""Shared machinery of the natural corruptions: the corruption table, batched torch
helpers that reproduce the numerics of the reference (``imagecorruptions`` 1.1.2, which
follows Hendrycks & Dietterich's ImageNet-C code) and the random-draw helpers.

Conventions of every corruption function ``f(x, severity, generator=None, **draws)``:

* ``x``: (N, 3, H, W) float tensor in [0, 1] on any device (float64 reproduces the
  reference's float64 numerics; float32 is faster and differs by float rounding).
* returns the corrupted batch on the **0..255 scale**, clipped, before the reference's final
  ``np.uint8`` (a truncation): ``corrupt`` floors it, ``corrupt_batch`` divides it by 255.
* random corruptions split into ``sample_<name>(x, severity, generator)`` returning a dict of
  draws and the deterministic body taking those draws as keyword arguments, so that tests can
  feed the reference's own random draws and compare the bodies exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

#: ImageNet-C's corruption groups, in the paper's order (the order of the lists derived from them)
GROUP_NAMES = ("noise", "blur", "weather", "digital")


@dataclass(frozen=True)
class Corruption:
    name: str
    group: str                      # noise | blur | weather | digital (ImageNet-C's grouping)
    fn: Callable                    # fn(x, severity, generator=None, **draws) -> 0..255 tensor
    params: tuple                   # the five per-severity parameter sets of the reference
    random: bool                    # whether the output depends on random draws
    sampler: Callable | None = None  # sample(x, severity, generator) -> dict of draws
    doc: str = field(default="", compare=False)
    #: one of ImageNet-C's 15 benchmark corruptions (mCE); False for the held-out extra ones
    benchmark: bool = False

    @property
    def tags(self) -> dict:
        """Selection metadata of the registered ``natural/<name>-<severity>`` noises."""
        return {"corruption": self.name, "group": self.group, "benchmark": self.benchmark}


CORRUPTIONS: dict[str, Corruption] = {}


def corruption(name: str, group: str, params, *, benchmark: bool, sampler=None, random: bool = True):
    """Decorator adding ``fn`` to :data:`CORRUPTIONS` (one entry per corruption).

    ``group``: one of :data:`GROUP_NAMES`; ``benchmark``: whether the corruption is one of the
    15 ImageNet-C benchmark corruptions (the ``imagenet-c`` suite and mCE) or an extra one
    (``imagenet-c-extra``).  Required, so that a new corruption never joins the benchmark by
    default.  In a module, define corruptions in the paper's order within their group: the
    exported lists (``BENCHMARK_CORRUPTIONS``, ``GROUPS``...) follow group, then definition order.
    """
    if group not in GROUP_NAMES:
        raise ValueError(f"corruption {name}: group {group!r} is not one of {GROUP_NAMES}")
    if not isinstance(benchmark, bool):
        raise TypeError(f"corruption {name}: benchmark must be True or False, got {benchmark!r}")

    def deco(fn):
        if name in CORRUPTIONS:
            raise ValueError(f"corruption {name} defined twice")
        CORRUPTIONS[name] = Corruption(name, group, fn, tuple(params), random, sampler,
                                       (fn.__doc__ or "").strip().split("\n")[0], benchmark)
        return fn

    return deco


def param(c: Corruption | tuple, severity: int):
    params = c.params if isinstance(c, Corruption) else c
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return params[severity - 1]


# ------------------------------------------------------------------------------- randomness
def default_generator(device) -> torch.Generator:
    """The generator used when none is given: seed 0 on ``device`` (never global state)."""
    return torch.Generator(device=torch.device(device)).manual_seed(0)


def generator_for(x: torch.Tensor, generator):
    return generator if generator is not None else default_generator(x.device)


def _draw_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rand(shape, x, generator):
    """Uniform [0, 1) draws, float64 for float64 batches (the reference's precision), else float32."""
    return torch.rand(shape, generator=generator, device=x.device, dtype=_draw_dtype(x))


def randn(shape, x, generator):
    return torch.randn(shape, generator=generator, device=x.device, dtype=_draw_dtype(x))


# ------------------------------------------------------------------------------- padding / filters
def _mirror_index(n: int, r: int, mode: str, device) -> torch.Tensor:
    """Indices of a length-n axis padded by r on both sides.
    mode: 'nearest' (edge), 'reflect' (scipy: half-sample symmetric, d c b a | a b c d),
    'reflect101' (OpenCV BORDER_REFLECT_101 / torch 'reflect': d c b | a b c d)."""
    i = torch.arange(-r, n + r, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    period = 2 * n if mode == "reflect" else max(2 * n - 2, 1)
    i = torch.remainder(i, period)
    if mode == "reflect":
        return torch.where(i >= n, period - 1 - i, i)
    return torch.where(i >= n, period - i, i)


def pad2d(x: torch.Tensor, ry: int, rx: int, mode: str) -> torch.Tensor:
    """Pad the last two dims of ``x`` with a scipy / OpenCV border mode (any radius)."""
    H, W = x.shape[-2:]
    if ry:
        x = x.index_select(-2, _mirror_index(H, ry, mode, x.device))
    if rx:
        x = x.index_select(-1, _mirror_index(W, rx, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's Gaussian kernel: radius int(truncate * sigma + 0.5), normalised."""
    r = int(truncate * float(sigma) + 0.5)
    k = np.exp(-0.5 / float(sigma) ** 2 * np.arange(-r, r + 1, dtype=np.float64) ** 2)
    return k / k.sum()


@lru_cache(maxsize=128)
def _axis_matrix(n: int, kernel: tuple, mode: str) -> np.ndarray:
    """(n, n) matrix applying the 1-D correlation ``kernel`` along an axis of length n with the
    border ``mode`` folded in (so a separable filter is two matrix products)."""
    r = len(kernel) // 2
    idx = _mirror_index(n, r, mode, "cpu").numpy()
    m = np.zeros((n, n), np.float64)
    for j, w in enumerate(kernel):
        np.add.at(m, (np.arange(n), idx[np.arange(n) + j]), w)
    return m


def sep_filter(x: torch.Tensor, ky: np.ndarray, kx: np.ndarray, mode: str) -> torch.Tensor:
    """Separable correlation of every channel of (..., H, W) ``x`` with 1-D kernels."""
    H, W = x.shape[-2:]
    my = torch.as_tensor(_axis_matrix(H, tuple(float(v) for v in ky), mode), dtype=x.dtype, device=x.device)
    mx = torch.as_tensor(_axis_matrix(W, tuple(float(v) for v in kx), mode), dtype=x.dtype, device=x.device)
    return my @ x @ mx.T


def gaussian(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0):
    """skimage.filters.gaussian (scipy.ndimage.gaussian_filter) per channel, no channel mixing."""
    k = gaussian_kernel1d(sigma, truncate)
    return sep_filter(x, k, k, mode)


def filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """cv2.filter2D per channel with BORDER_REFLECT_101 (a correlation)."""
    N, C, H, W = x.shape
    ky, kx = kernel.shape
    y = pad2d(x.reshape(N * C, 1, H, W), ky // 2, kx // 2, "reflect101")
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    if ky * kx <= 49:
        return F.conv2d(y, k.view(1, 1, ky, kx)).reshape(N, C, H, W)
    # large kernels: FFT correlation (as cv2.filter2D itself does for kernels from 11x11)
    Hp, Wp = y.shape[-2:]
    Y = torch.fft.rfft2(y, s=(Hp, Wp))
    K = torch.fft.rfft2(torch.flip(k, (0, 1)), s=(Hp, Wp))
    z = torch.fft.irfft2(Y * K, s=(Hp, Wp))
    return z[..., ky - 1:ky - 1 + H, kx - 1:kx - 1 + W].reshape(N, C, H, W)


# ------------------------------------------------------------------------------- zoom
def clipped_zoom(x: torch.Tensor, zoom: float, keep: bool = True) -> torch.Tensor:
    """The reference's ``clipped_zoom`` on (N, C, H, W): centre crop of ceil(n / zoom) per
    axis, scipy.ndimage.zoom(order=1) to round(crop * zoom) samples -- scipy maps output o to
    input o * (crop - 1) / (out - 1), i.e. bilinear with align_corners=True -- then cropped
    top-left to the input size when ``keep`` (as the reference's callers do)."""
    H, W = x.shape[-2:]
    ch, cw = int(np.ceil(H / float(zoom))), int(np.ceil(W / float(zoom)))
    top, left = (H - ch) // 2, (W - cw) // 2
    oh, ow = int(round(ch * zoom)), int(round(cw * zoom))
    y = F.interpolate(x[..., top:top + ch, left:left + cw], size=(oh, ow), mode="bilinear", align_corners=True)
    return y[..., :H, :W] if keep else y


# ------------------------------------------------------------------------------- motion blur
def motion_offsets(radius: int, sigma: float, angle: float, H: int, W: int):
    """Kernel weights and (dy, dx) pixel shifts of the reference's ``_motion_blur``: a
    one-sided Gaussian of width 2 * radius + 1 along ``angle`` degrees (taps past the image
    size are dropped, as the reference's ``break`` does)."""
    width = radius * 2 + 1
    k = np.exp(-np.arange(width, dtype=np.float64) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / np.sum(k)
    p0, p1 = width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle))
    hyp = math.hypot(p0, p1)
    taps = []
    for i in range(width):
        dy = -math.ceil(((i * p0) / hyp) - 0.5)
        dx = -math.ceil(((i * p1) / hyp) - 0.5)
        if abs(dy) >= H or abs(dx) >= W:
            break
        taps.append((k[i], dy, dx))
    return taps


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles) -> torch.Tensor:
    """Batched ``_motion_blur``: sum_i k_i * shift(x, dx_i, dy_i) with edge replication,
    one angle per image; works on any (N, C, H, W) tensor, in x's scale.  Shifts are slices
    of the edge-padded batch (faster here than a per-image FFT stencil)."""
    N, C, H, W = x.shape
    P = 2 * radius + 1
    xp = pad2d(x, P, P, "nearest")      # shift(x)[r, c] = x[clamp(r - dy), clamp(c - dx)]
    out = torch.zeros_like(x)
    for n, a in enumerate(angles):
        acc = out[n]
        for w, dy, dx in motion_offsets(radius, sigma, float(a), H, W):
            acc.add_(xp[n, :, P - dy:P - dy + H, P - dx:P - dx + W], alpha=float(w))
    return out


# ------------------------------------------------------------------------------- colour
def rgb2hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on (N, 3, H, W) (same tie-breaking: blue > green > red)."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    h = (g - b) / safe
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], 1)


def hsv2rgb(hsv: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on (N, 3, H, W)."""
    h, s, v = hsv.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = torch.remainder(hi.to(torch.int64) % 256, 6)  # the reference casts to uint8 first
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = [torch.zeros_like(v) for _ in range(3)]
    for k, rgb in enumerate(table):
        m = hi == k
        for c in range(3):
            out[c] = torch.where(m, rgb[c], out[c])
    return torch.stack(out, 1)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> the uint8 values the reference starts from (round, clamp) as float."""
    return torch.round(x * 255).clamp(0, 255)
