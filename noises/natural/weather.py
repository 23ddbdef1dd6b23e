"""Weather corruptions: snow, frost, fog, brightness (ImageNet-C "weather") and spatter (one
of the four extra corruptions).  Parameters: imagecorruptions 1.1.2.

Frost overlays one of the five frost photographs that ship inside the ``imagecorruptions``
wheel (not redistributed here): ``scripts/setup.d/50-imagecorruptions-oracle.sh`` extracts
them into ``$ROBUSTBENCH_SYS_CACHE`` (default ``~/.cache/robustbench-sys``)
``/imagecorruptions-1.1.2/frost/``; :func:`frost_dir` says where they are looked for.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from robustbench_sys.noises.natural._common import CORRUPTIONS as _P
from robustbench_sys.noises.natural._common import (
    clipped_zoom,
    corruption,
    gaussian,
    generator_for,
    hsv2rgb,
    motion_blur,
    param,
    rand,
    randn,
    rgb2hsv,
)

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


# ------------------------------------------------------------------------------------ snow
def _snow_draws(x, severity, generator=None):
    loc, scale = param(_P["snow"], severity)[:2]
    N, _, H, W = x.shape
    g = generator_for(x, generator)
    layer = randn((N, 1, H, W), x, g) * scale + loc
    return {"layer": layer, "angles": (rand((N,), x, g) * 90 - 135).tolist()}


@corruption("snow", group="weather", benchmark=True,
            params=[(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                    (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)], sampler=_snow_draws)
def snow(x, severity, generator=None, layer=None, angles=None):
    """Snow: a Gaussian layer N(loc, scale) zoomed by `zoom`, thresholded, motion-blurred
    (radius, sigma) at an angle in [-135, -45] degrees, added twice (and rotated 180 degrees)
    over the image brightened towards its grey level by (1 - blend)."""
    loc, scale, zoom, thr, radius, sigma, blend = param(_P["snow"], severity)
    if layer is None or angles is None:
        d = _snow_draws(x, severity, generator)
        layer, angles = d["layer"], d["angles"]
    H, W = x.shape[-2:]
    s = clipped_zoom(layer.to(x.dtype), zoom, keep=False)
    s = torch.where(s < thr, torch.zeros_like(s), s).clamp(0, 1)
    s = motion_blur(s, radius, sigma, angles)
    s = (torch.round(s * 255) / 255)[..., :H, :W]
    r, g, b = x.unbind(1)
    gray = (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
    y = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return torch.clamp(y + s + torch.flip(s, (-2, -1)), 0, 1) * 255


# ------------------------------------------------------------------------------------ frost
def frost_dir() -> Path:
    """Where the frost textures are read from."""
    base = Path(os.environ.get("ROBUSTBENCH_SYS_CACHE") or Path.home() / ".cache" / "robustbench-sys")
    return base / "imagecorruptions-1.1.2" / "frost"


def frost_unavailable() -> str | None:
    d = frost_dir()
    missing = [f for f in FROST_FILES[:5] if not (d / f).is_file()]
    if missing:
        return (f"frost textures missing in {d} ({', '.join(missing)}): run scripts/setup.sh "
                f"(fragment 50-imagecorruptions-oracle.sh), or extract imagecorruptions/frost/ from "
                f"`pip download --no-deps imagecorruptions==1.1.2` there")
    return None


@lru_cache(maxsize=32)
def frost_texture(idx: int, H: int, W: int) -> np.ndarray:
    """Frost photograph ``idx`` (0..4) rescaled as the reference does for an HxW image
    (BGR uint8, as cv2 reads it; at least 1.1 x the larger of itself and the image)."""
    reason = frost_unavailable()
    if reason:
        raise FileNotFoundError(reason)
    import cv2

    fr = cv2.imread(str(frost_dir() / FROST_FILES[idx]))
    assert fr is not None, f"cv2 cannot read {frost_dir() / FROST_FILES[idx]}"
    fh, fw = fr.shape[:2]
    s: float
    if fh >= H and fw >= W:
        s = 1
    elif fh < H and fw >= W:
        s = H / fh
    elif fh >= H and fw < W:
        s = W / fw
    else:
        s = np.maximum(H / fh, W / fw)
    s *= 1.1
    return cv2.resize(fr, dsize=(int(np.ceil(fw * s)), int(np.ceil(fh * s))), interpolation=cv2.INTER_CUBIC)


def _frost_draws(x, severity, generator=None):
    N, _, H, W = x.shape
    g = generator_for(x, generator)
    idx = torch.randint(0, 5, (N,), generator=g, device=x.device).tolist()
    u = rand((N, 2), x, g).tolist()
    tops, lefts = [], []
    for i, (a, b) in zip(idx, u):
        th, tw = frost_texture(i, H, W).shape[:2]
        tops.append(int(a * (th - H)))
        lefts.append(int(b * (tw - W)))
    return {"idx": idx, "tops": tops, "lefts": lefts}


@corruption("frost", group="weather", benchmark=True,
            params=[(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
            sampler=_frost_draws)
def frost(x, severity, generator=None, idx=None, tops=None, lefts=None):
    """Frost: a*image + b*frost texture (one of five photographs, random crop);
    (a, b) = (1, 0.4) .. (0.6, 0.75)."""
    a, b = param(_P["frost"], severity)
    if idx is None:
        d = _frost_draws(x, severity, generator)
        idx, tops, lefts = d["idx"], d["tops"], d["lefts"]
    H, W = x.shape[-2:]
    crops = [frost_texture(i, H, W)[t:t + H, left:left + W, ::-1] for i, t, left in zip(idx, tops, lefts)]
    fr = torch.as_tensor(np.stack(crops).transpose(0, 3, 1, 2).copy(), device=x.device).to(x.dtype)
    return torch.clamp(a * (x * 255) + b * fr, 0, 255)


# ------------------------------------------------------------------------------------ fog
def plasma_fractal(n: int, mapsize: int, wibbledecay: float, uniform, device="cpu") -> torch.Tensor:
    """Diamond-square height maps (n, mapsize, mapsize) in [0, 1], as the reference's
    ``plasma_fractal``, for a batch at once.  ``uniform(shape, low, high)`` returns (n, *shape)
    float64 draws; the reference's order of draws is kept (square step, then two diamond steps,
    per level)."""
    S = mapsize
    m = torch.zeros((n, S, S), dtype=torch.float64, device=device)
    stp, wib = S, 100.0
    while stp >= 2:
        h = stp // 2
        c = m[:, 0:S:stp, 0:S:stp]
        sq = c + torch.roll(c, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, h:S:stp, h:S:stp] = sq / 4 + wib * uniform(tuple(sq.shape[1:]), -wib, wib)
        dr = m[:, h:S:stp, h:S:stp]
        ul = m[:, 0:S:stp, 0:S:stp]
        lt = (dr + torch.roll(dr, 1, 1)) + (ul + torch.roll(ul, -1, 2))
        m[:, 0:S:stp, h:S:stp] = lt / 4 + wib * uniform(tuple(lt.shape[1:]), -wib, wib)
        tt = (dr + torch.roll(dr, 1, 2)) + (ul + torch.roll(ul, -1, 1))
        m[:, h:S:stp, 0:S:stp] = tt / 4 + wib * uniform(tuple(tt.shape[1:]), -wib, wib)
        stp //= 2
        wib /= wibbledecay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


class TorchUniform:
    """uniform(shape, low, high) for :func:`plasma_fractal` from a torch generator."""

    def __init__(self, n, generator, device):
        self.n, self.g, self.device = n, generator, torch.device(device)

    def __call__(self, shape, low, high):
        u = torch.rand((self.n, *shape), generator=self.g, device=self.device, dtype=torch.float64)
        return low + (high - low) * u


def _fog_draws(x, severity, generator=None):
    _, decay = param(_P["fog"], severity)
    S = 1 << (int(max(x.shape[-2:])) - 1).bit_length()
    uniform = TorchUniform(x.shape[0], generator_for(x, generator), x.device)
    return {"fractal": plasma_fractal(x.shape[0], S, decay, uniform, x.device)}


@corruption("fog", group="weather", benchmark=True,
            params=[(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)], sampler=_fog_draws)
def fog(x, severity, generator=None, fractal=None):
    """Fog: add a * plasma fractal (wibble decay 2 .. 1.4), rescale by max / (max + a);
    a = 1.5 .. 3."""
    a, _ = param(_P["fog"], severity)
    if fractal is None:
        fractal = _fog_draws(x, severity, generator)["fractal"]
    H, W = x.shape[-2:]
    mx = x.amax((1, 2, 3), keepdim=True)
    y = x + a * fractal[:, None, :H, :W].to(x.dtype)
    return torch.clamp(y * mx / (mx + a), 0, 1) * 255


# ------------------------------------------------------------------------------------ brightness
@corruption("brightness", group="weather", benchmark=True,
            params=[.1, .2, .3, .4, .5], random=False)
def brightness(x, severity, generator=None):
    """Brightness: HSV value + c, c = 0.1 .. 0.5 (skimage's HSV conversion)."""
    hsv = rgb2hsv(x)
    hsv = torch.cat([hsv[:, :2], torch.clamp(hsv[:, 2:] + param(_P["brightness"], severity), 0, 1)], 1)
    return torch.clamp(hsv2rgb(hsv), 0, 1) * 255


# ------------------------------------------------------------------------------------ spatter
def _spatter_draws(x, severity, generator=None):
    loc, scale = param(_P["spatter"], severity)[:2]
    N, _, H, W = x.shape
    return {"layer": randn((N, 1, H, W), x, generator_for(x, generator)) * scale + loc}


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """The reference's OpenCV chain for water drops (Canny edges, distance transform,
    histogram equalisation, emboss): HxW float64 liquid layer -> HxW float32 mask."""
    import cv2

    lu8 = (liquid * 255).astype(np.uint8)
    dist = 255 - cv2.Canny(lu8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return lu8 * dist


@corruption("spatter", group="weather", benchmark=False,
            params=[(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)], sampler=_spatter_draws)
def spatter(x, severity, generator=None, layer=None):
    """Spatter: a blurred, thresholded Gaussian liquid layer; water drops (severities 1-3,
    via OpenCV on the CPU, one image at a time) or mud (4-5)."""
    loc, scale, sigma, thr, intensity, mud = param(_P["spatter"], severity)
    if layer is None:
        layer = _spatter_draws(x, severity, generator)["layer"]
    liquid = gaussian(layer.to(torch.float64 if x.dtype == torch.float64 else torch.float32), sigma)
    liquid = torch.where(liquid < thr, torch.zeros_like(liquid), liquid)
    if not mud:
        ms = [_water_mask(liq) for liq in liquid[:, 0].cpu().numpy()]
        m = torch.as_tensor(np.stack(ms), device=x.device).to(x.dtype).unsqueeze(1)
        m = m / m.amax((2, 3), keepdim=True) * intensity
        color = torch.tensor([175 / 255., 238 / 255., 238 / 255.], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return torch.clamp(x + m * color, 0, 1) * 255
    m = (liquid > thr).to(x.dtype)
    m = gaussian(m, intensity)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    color = torch.tensor([63 / 255., 42 / 255., 20 / 255.], dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * m
    return torch.clamp(x * (1 - m) + color, 0, 1) * 255
