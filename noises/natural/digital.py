"""Digital corruptions: contrast, elastic_transform, pixelate, jpeg_compression (ImageNet-C
"digital") and saturate (one of the four extra corruptions).  Parameters: imagecorruptions 1.1.2."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch

from robustbench_sys.noises.natural._common import CORRUPTIONS as _P
from robustbench_sys.noises.natural._common import (
    corruption,
    gaussian_kernel1d,
    generator_for,
    hsv2rgb,
    param,
    rand,
    rgb2hsv,
    sep_filter,
    to_u8,
)


@corruption("contrast", group="digital", benchmark=True,
            params=[0.4, .3, .2, .1, .05], random=False)
def contrast(x, severity, generator=None):
    """Contrast: (x - mean) * c + mean per image and channel, c = 0.4 .. 0.05."""
    c = param(_P["contrast"], severity)
    m = x.mean((2, 3), keepdim=True)
    return torch.clamp((x - m) * c + m, 0, 1) * 255


# ------------------------------------------------------------------------------------ elastic
def _elastic_draws(x, severity, generator=None):
    N, _, H, W = x.shape
    g = generator_for(x, generator)
    mx = H * 0.005
    return {"dx": rand((N, 1, H, W), x, g) * (2 * mx) - mx, "dy": rand((N, 1, H, W), x, g) * (2 * mx) - mx}


def _bilinear_reflect(img: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.map_coordinates(order=1, mode='reflect') of every channel of (N, C, H, W)
    ``img`` at (N, H, W) coordinates."""
    N, C, H, W = img.shape
    y0, x0 = torch.floor(cy), torch.floor(cx)
    ty, tx = (cy - y0).to(img.dtype), (cx - x0).to(img.dtype)
    y0, x0 = y0.long(), x0.long()

    def mirror(i, n):  # scipy 'reflect' (half-sample symmetric) for any integer index
        i = torch.remainder(i, 2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)

    ya, yb = mirror(y0, H), mirror(y0 + 1, H)
    xa, xb = mirror(x0, W), mirror(x0 + 1, W)
    flat = img.reshape(N, C, H * W)

    def at(yy, xx):
        return flat.gather(2, (yy * W + xx).reshape(N, 1, -1).expand(N, C, H * W)).view(N, C, H, W)

    ty, tx = ty.unsqueeze(1), tx.unsqueeze(1)
    return (1 - ty) * ((1 - tx) * at(ya, xa) + tx * at(ya, xb)) + ty * ((1 - tx) * at(yb, xa) + tx * at(yb, xb))


@corruption("elastic_transform", group="digital", benchmark=True,
            params=[250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12],
            sampler=_elastic_draws)
def elastic_transform(x, severity, generator=None, dx=None, dy=None):
    """Elastic: displace pixels by uniform noise in +-0.005 H, Gaussian-smoothed (sigma 0.01 H,
    W; 'reflect', truncate 3) and scaled by alpha = 12.5 .. 30; bilinear resampling."""
    alpha = param(_P["elastic_transform"], severity)
    if dx is None or dy is None:
        d = _elastic_draws(x, severity, generator)
        dx, dy = d["dx"], d["dy"]
    N, _, H, W = x.shape
    ky, kx = gaussian_kernel1d(H * 0.01, 3), gaussian_kernel1d(W * 0.01, 3)
    wd = torch.float64 if x.dtype == torch.float64 else torch.float32   # working precision
    ddx = (sep_filter(dx.to(wd), ky, kx, "reflect") * alpha).to(torch.float32)[:, 0]
    ddy = (sep_filter(dy.to(wd), ky, kx, "reflect") * alpha).to(torch.float32)[:, 0]
    gy = torch.arange(H, device=x.device, dtype=wd).view(1, H, 1)
    gx = torch.arange(W, device=x.device, dtype=wd).view(1, 1, W)
    y = _bilinear_reflect(x, gy + ddy.to(wd), gx + ddx.to(wd))
    return torch.clamp(y, 0, 1) * 255


# ------------------------------------------------------------------------------------ pixelate
@lru_cache(maxsize=64)
def pil_box_weights(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX resampling (8-bit path) as an (n_out, n_in) matrix of its fixed-point
    weights (22 fractional bits)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = np.zeros((n_out, n_in), np.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        xs = (np.arange(xmax) + xmin - center + 0.5) / fscale
        w = ((xs > -0.5) & (xs <= 0.5)).astype(np.float64)
        if w.sum():
            w /= w.sum()
        m[o, xmin:xmin + xmax] = np.where(w < 0, np.trunc(-0.5 + w * (1 << 22)), np.trunc(0.5 + w * (1 << 22)))
    return m


def _pil_pass(u: torch.Tensor, m: np.ndarray, dim: int) -> torch.Tensor:
    k = torch.as_tensor(m, dtype=torch.float64, device=u.device)
    v = u.to(torch.float64)
    s = (v @ k.T) if dim == -1 else (k @ v)
    return torch.floor((s + (1 << 21)) / (1 << 22)).clamp(0, 255)


@corruption("pixelate", group="digital", benchmark=True,
            params=[0.6, 0.5, 0.4, 0.3, 0.25], random=False)
def pixelate(x, severity, generator=None):
    """Pixelate: Pillow BOX downscale by c = 0.6 .. 0.25, NEAREST upscale back (Pillow's
    8-bit fixed-point arithmetic reproduced; input rounded to uint8 first)."""
    c = param(_P["pixelate"], severity)
    N, C, H, W = x.shape
    nw, nh = int(W * c), int(H * c)
    u = to_u8(x)
    if u.device.type == "cpu" and C in (1, 3):   # Pillow itself: the reference's exact code path, ~8x faster
        return _pixelate_pil(u, (nw, nh)).to(x.dtype)
    u = _pil_pass(u, pil_box_weights(W, nw), -1)     # Pillow resizes horizontally first
    u = _pil_pass(u, pil_box_weights(H, nh), -2)
    iy = torch.floor((torch.arange(H, dtype=torch.float64) + 0.5) * (nh / H)).long().to(x.device)
    ix = torch.floor((torch.arange(W, dtype=torch.float64) + 0.5) * (nw / W)).long().to(x.device)
    return u.index_select(2, iy).index_select(3, ix).to(x.dtype)


def _pixelate_pil(u: torch.Tensor, small: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) uint8-valued -> Pillow BOX resize to ``small`` then NEAREST back, per image."""
    from PIL import Image

    N, C, H, W = u.shape
    arr = u.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(arr)
    for i, im in enumerate(arr):
        pim = Image.fromarray(im[..., 0] if C == 1 else im)
        res = np.asarray(pim.resize(small, Image.Resampling.BOX).resize((W, H), Image.Resampling.NEAREST))
        out[i] = res[..., None] if C == 1 else res
    return torch.from_numpy(out).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------ jpeg
def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode every image of (N, 3, H, W) ``x`` in [0, 1] as a Pillow JPEG of ``quality``
    (Pillow defaults: 4:2:0 subsampling) and decode it: uint8 values as x.dtype on x's device.
    ImageNet-C's released files went through this with quality 85 after corrupting."""
    from PIL import Image

    u8 = to_u8(x).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for im in u8:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=int(quality))
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.as_tensor(np.stack(out)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)


@corruption("jpeg_compression", group="digital", benchmark=True,
            params=[25, 18, 15, 10, 7], random=False)
def jpeg_compression(x, severity, generator=None):
    """JPEG compression with quality 25 .. 7 (Pillow; on the CPU, one image at a time)."""
    return jpeg_roundtrip(x, param(_P["jpeg_compression"], severity))


# ------------------------------------------------------------------------------------ saturate
@corruption("saturate", group="digital", benchmark=False,
            params=[(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)], random=False)
def saturate(x, severity, generator=None):
    """Saturation: HSV saturation * a + b, (a, b) = (0.3, 0) .. (20, 0.2)."""
    a, b = param(_P["saturate"], severity)
    hsv = rgb2hsv(x)
    hsv = torch.cat([hsv[:, :1], torch.clamp(hsv[:, 1:2] * a + b, 0, 1), hsv[:, 2:]], 1)
    return torch.clamp(hsv2rgb(hsv), 0, 1) * 255
