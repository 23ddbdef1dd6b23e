"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur (ImageNet-C "blur") and
gaussian_blur (one of the four extra corruptions).  Parameters: imagecorruptions 1.1.2."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from robustbench_sys.noises.natural._common import CORRUPTIONS as _P
from robustbench_sys.noises.natural._common import (
    clipped_zoom,
    corruption,
    filter2d,
    gaussian,
    generator_for,
    param,
    rand,
)
from robustbench_sys.noises.natural._common import motion_blur as _motion


@cache
def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk: an aliased disk of ``radius`` (17x17 up to radius 8)
    smoothed by cv2.GaussianBlur (3x3, or 5x5 above radius 8; sigma ``alias_blur``)."""
    import cv2

    L = np.arange(-8, 8 + 1) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = (3, 3) if radius <= 8 else (5, 5)
    X, Y = np.meshgrid(L, L)
    d = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=np.float32)
    d /= np.sum(d)
    return cv2.GaussianBlur(d, ksize=ksize, sigmaX=alias_blur)


@corruption("defocus_blur", group="blur", benchmark=True,
            params=[(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)], random=False)
def defocus_blur(x, severity, generator=None):
    """Defocus: correlation with an anti-aliased disk of radius 3 .. 10 px (cv2.filter2D,
    reflect-101 border)."""
    radius, alias = param(_P["defocus_blur"], severity)
    k = disk_kernel(radius, alias).astype(np.float64)
    return torch.clamp(filter2d(x, k), 0, 1) * 255


def _glass_offsets(x, severity, generator=None):
    _, d, iters = param(_P["glass_blur"], severity)
    N, _, H, W = x.shape
    g = generator_for(x, generator)
    # one (dx, dy) pair per visited pixel, in the reference's loop order
    return {"offsets": torch.randint(-d, d, (N, iters, max(H - 2 * d, 0), max(W - 2 * d, 0), 2),
                                     generator=g, device=x.device)}


def glass_shuffle(u: torch.Tensor, d: int, offsets: torch.Tensor) -> torch.Tensor:
    """The reference's pixel loop, vectorised exactly.  The loop visits h = H-d .. d+1 and
    w = W-d .. d+1 (both descending) and runs ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on
    numpy views, which *copies* x[h', w'] into x[h, w] (the second assignment writes the
    value back); h' = h + dy, w' = w + dx.  So a visited pixel takes the value its source
    has at that moment: the source's final value if the source was visited earlier (a later
    raster position), else its original value.  These chains are resolved by pointer
    doubling, for every image of the batch at once.  ``offsets``: (N, nH, nW, 2) (dx, dy)."""
    N, C, H, W = u.shape
    nH, nW = offsets.shape[1:3]
    dev = u.device
    hs = (H - d - torch.arange(nH, device=dev)).view(1, nH, 1)
    ws = (W - d - torch.arange(nW, device=dev)).view(1, 1, nW)
    p = (hs * W + ws).expand(N, nH, nW).reshape(N, -1)
    sh = hs + offsets[..., 1]
    sw = ws + offsets[..., 0]
    src = (sh * W + sw).reshape(N, -1)
    visited = torch.zeros(N, H * W, dtype=torch.bool, device=dev)
    visited[:, p[0]] = True
    S = torch.arange(H * W, device=dev).repeat(N, 1)
    S.scatter_(1, p, src)
    chain = visited.gather(1, src) & (src > p)
    f = torch.arange(H * W, device=dev).repeat(N, 1)
    f.scatter_(1, p, torch.where(chain, src, p))
    while True:
        f2 = f.gather(1, f)
        if torch.equal(f2, f):
            break
        f = f2
    g = S.gather(1, f)
    flat = u.reshape(N, C, H * W)
    return flat.gather(2, g.view(N, 1, -1).expand(N, C, H * W)).view(N, C, H, W)


@corruption("glass_blur", group="blur", benchmark=True,
            params=[(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
            sampler=_glass_offsets)
def glass_blur(x, severity, generator=None, offsets=None):
    """Glass: Gaussian blur (sigma), `iterations` passes of local pixel shuffling within
    +-max_delta, Gaussian blur again; (sigma, max_delta, iterations) = (0.7, 1, 2) .. (1.5, 4, 2)."""
    sigma, d, iters = param(_P["glass_blur"], severity)
    if offsets is None:
        offsets = _glass_offsets(x, severity, generator)["offsets"]
    u = torch.floor(gaussian(x, sigma) * 255).clamp(0, 255)      # np.uint8(gaussian(x) * 255)
    for i in range(iters):
        u = glass_shuffle(u, d, offsets[:, i])
    return torch.clamp(gaussian(u / 255, sigma), 0, 1) * 255


def _motion_angles(x, severity, generator=None):
    return {"angles": (rand((x.shape[0],), x, generator_for(x, generator)) * 90 - 45).tolist()}


@corruption("motion_blur", group="blur", benchmark=True,
            params=[(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)], sampler=_motion_angles)
def motion_blur(x, severity, generator=None, angles=None):
    """Motion: one-sided Gaussian streak (radius, sigma) = (10, 3) .. (20, 15) px at a random
    angle in [-45, 45] degrees per image, edge-replicated shifts (the reference's Wand-free
    version)."""
    radius, sigma = param(_P["motion_blur"], severity)
    if angles is None:
        angles = _motion_angles(x, severity, generator)["angles"]
    return torch.clamp(_motion(x * 255, radius, sigma, angles), 0, 255)


@corruption("zoom_blur", group="blur", benchmark=True,
            params=[np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                    np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)], random=False)
def zoom_blur(x, severity, generator=None):
    """Zoom: mean of the image and its centre zooms by the factors 1 .. 1.1 (step .01) up to
    1 .. 1.3 (step .03), each cropped top-left to the image size (as imagecorruptions does);
    accumulated in float32 like the reference."""
    zs = param(_P["zoom_blur"], severity)
    x32 = x.to(torch.float32)
    src = x32.to(torch.float64) if x.dtype == torch.float64 else x32
    out = torch.zeros_like(x32)
    for z in zs:
        out += clipped_zoom(src, float(z)).to(torch.float32)
    y = (x32 + out) / (len(zs) + 1)
    return (torch.clamp(y, 0, 1) * 255).to(x.dtype)


@corruption("gaussian_blur", group="blur", benchmark=False,
            params=[1, 2, 3, 4, 6], random=False)
def gaussian_blur(x, severity, generator=None):
    """Gaussian blur with sigma 1 .. 6 px (skimage.filters.gaussian, 'nearest' border)."""
    return torch.clamp(gaussian(x, param(_P["gaussian_blur"], severity)), 0, 1) * 255
