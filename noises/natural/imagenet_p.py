"""ImageNet-P perturbation sequences (Hendrycks & Dietterich, ICLR 2019): the 10 benchmark
perturbations, each turning one image into a sequence of frames.

Parameters and sequence lengths follow the reference generator (github.com/hendrycks/robustness,
``ImageNet-P/create_p/make_imagenet_p.py``, its test-set section); every sequence is computed as
one batched torch operation over its frames (float32, CPU or GPU), with an explicit generator.

===============  ======  =====================================================================
perturbation     frames  frame i
===============  ======  =====================================================================
gaussian_noise   31      0: the clean crop; 1..30: clip(x + sigma N(0, 1)), independent draws;
                         sigma 0.03 / 0.05 / 0.08 for difficulty 1 / 2 / 3
shot_noise       31      0: the clean crop; 1..30: Poisson(x c) / c; c = 300 / 120 / 60
motion_blur      31      motion blur (radius 10, sigma 3) at angle (i - 30) * 4 degrees
zoom_blur        31      mean of the crops zoomed by 1 + 0.004 j, j = 0..i (bilinear)
snow             31      one snow layer (N(0.05, 0.3), zoomed x3, < 0.5 cut) motion-blurred
                         (radius 14, sigma 4) at angle 4 i - 150 degrees, over the image
                         brightened towards its grey level (blend 0.85)
brightness       31      HSV value + (i - 15) * 0.02
translate        41      shift by (i - 20, 0) px of the resized image (nearest), then the crop
rotate           31      rotation by i - 15 degrees about the centre (bilinear), then the crop
tilt             31      perspective view rotated by i - 15 degrees about both the x and y axes
                         (focal length sqrt(w^2 + h^2)), then the crop
scale            31      zoom by (40 + 2.5 i) / 100 about the centre (bilinear), then the crop
===============  ======  =====================================================================

Only the two noise perturbations have difficulty-dependent frames (the reference writes
``gaussian_noise``, ``gaussian_noise_2``, ``gaussian_noise_3``); for the others the difficulty is
the frame step of the flip probability (``robustbench_sys.metrics.perturbation``), so their
frames are the same at every difficulty.

Input: the image after the resize stage and *before* the centre crop (ImageNet-P: Resize(256)),
because translate / rotate / tilt / scale move pixels from outside the crop into it; ``crop``
is the centre-crop size (torchvision's offsets).  Outside the image is black, as in the reference.

Deviations from the reference, all documented here: the released sequences are H.264 videos
(ffmpeg, lossy) while these frames are exact; the geometric warps are torch ``grid_sample``
(bilinear / nearest, zero padding) rather than Pillow / OpenCV, so pixels differ by interpolation
rounding (tests/test_imagenet_p.py: within 1 grey level on average of torchvision's ``affine`` and
``cv2.warpPerspective`` with the reference's calls); motion blur is the Wand-free port shared with
ImageNet-C (:func:`~robustbench_sys.noises.natural._common.motion_blur`); random draws come from a
torch generator (same distributions, different numbers).  The warps sample all frames of a
sequence in one ``grid_sample`` call, only at the crop's pixels (benchmarks/bench_imagenet_p.py:
1.4-1.5x the frame-by-frame rate for the bilinear ones on one CPU thread).

    >>> import numpy as np
    >>> from robustbench_sys.noises.natural.imagenet_p import sequence
    >>> sequence(np.zeros((256, 320, 3), np.uint8), "rotate", crop=224).shape
    (31, 224, 224, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_sys.noises.natural._common import clipped_zoom, hsv2rgb, motion_blur, rgb2hsv


@dataclass(frozen=True)
class Perturbation:
    name: str
    frames: int
    noise: bool                  # frames are independent draws compared with frame 0
    params: str                  # human-readable parameters (provenance)
    by_difficulty: tuple = ()    # noise perturbations: the difficulty-1/2/3 parameter


#: the 10 ImageNet-P benchmark perturbations, in the paper's order
PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("gaussian_noise", 31, True, "sigma 0.03/0.05/0.08 by difficulty", (0.03, 0.05, 0.08)),
    Perturbation("shot_noise", 31, True, "photons 300/120/60 by difficulty", (300, 120, 60)),
    Perturbation("motion_blur", 31, False, "radius 10, sigma 3, angle (i-30)*4"),
    Perturbation("zoom_blur", 31, False, "running mean of zooms 1+0.004j"),
    Perturbation("snow", 31, False, "layer N(0.05,0.3) x3 zoom >=0.5, blur radius 14 sigma 4 angle 4i-150, blend 0.85"),
    Perturbation("brightness", 31, False, "HSV value + (i-15)*0.02"),
    Perturbation("translate", 41, False, "shift (i-20, 0) px, nearest"),
    Perturbation("rotate", 31, False, "angle i-15 deg, bilinear"),
    Perturbation("tilt", 31, False, "x and y rotation i-15 deg, perspective"),
    Perturbation("scale", 31, False, "zoom (40+2.5i)/100, bilinear"),
)}
PERTURBATION_NAMES = tuple(PERTURBATIONS)
DIFFICULTIES = (1, 2, 3)
REFERENCE = "hendrycks/robustness ImageNet-P/create_p/make_imagenet_p.py"


def variant_name(name: str, difficulty: int = 1) -> str:
    """The released folder name: ``gaussian_noise``, ``gaussian_noise_2``, ...; non-noise
    perturbations have one sequence set (``translate``)."""
    p = lookup(name)
    return f"{name}_{difficulty}" if p.noise and difficulty > 1 else name


def lookup(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise ValueError(f"unknown ImageNet-P perturbation {name!r}; valid: {', '.join(PERTURBATION_NAMES)}") from None


# ------------------------------------------------------------------------------- geometry
def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop of the last two dims with torchvision's ``int(round((h - size) / 2))`` offsets."""
    H, W = x.shape[-2:]
    if H < size or W < size:
        raise ValueError(f"image {W}x{H} smaller than the {size}px crop")
    top, left = int(round((H - size) / 2.0)), int(round((W - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def _pixel_grid(H: int, W: int, device, crop: int | None = None) -> torch.Tensor:
    """(h, w, 3) homogeneous pixel-centre coordinates (x, y, 1) with the image centre at 0, of the
    whole H x W image or only of its centre crop (torchvision's offsets)."""
    top, left, h, w = 0, 0, H, W
    if crop:
        top, left, h, w = int(round((H - crop) / 2.0)), int(round((W - crop) / 2.0)), crop, crop
    ys = torch.arange(top, top + h, device=device, dtype=torch.float64) + 0.5 - H / 2
    xs = torch.arange(left, left + w, device=device, dtype=torch.float64) + 0.5 - W / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1)


def warp(x: torch.Tensor, inverse: np.ndarray, mode: str = "bilinear", crop: int | None = None) -> torch.Tensor:
    """Warp one (3, H, W) image by T inverse 3x3 maps (output pixel -> input pixel, in centred
    pixel coordinates), zero outside: (T, 3, h, w), the whole image or only its centre ``crop``
    (the same values as cropping the whole warp).  One ``grid_sample`` call samples every frame
    from the one image (the frames' grids stacked), so the image is never copied per frame."""
    _, H, W = x.shape
    if crop and (H < crop or W < crop):
        raise ValueError(f"image {W}x{H} smaller than the {crop}px crop")
    minv = torch.as_tensor(np.asarray(inverse, np.float64), device=x.device)          # (T, 3, 3)
    src = torch.einsum("tij,hwj->thwi", minv, _pixel_grid(H, W, x.device, crop))     # (T, h, w, 3)
    src = src[..., :2] / src[..., 2:]
    grid = torch.stack([src[..., 0] * (2.0 / W), src[..., 1] * (2.0 / H)], -1).to(x.dtype)   # align_corners=False
    T, h, w = grid.shape[:3]
    out = F.grid_sample(x.unsqueeze(0), grid.reshape(1, T * h, w, 2), mode=mode, padding_mode="zeros",
                        align_corners=False)                                          # (1, 3, T * h, w)
    return out.view(3, T, h, w).transpose(0, 1)


def affine_inverse(angle: float = 0.0, translate=(0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    """Inverse of the centred map p -> R(angle) * scale * p + t (angle in degrees, clockwise on
    screen for positive angles, like torchvision's ``affine``)."""
    a = math.radians(angle)
    fwd = np.array([[math.cos(a) * scale, -math.sin(a) * scale, translate[0]],
                    [math.sin(a) * scale, math.cos(a) * scale, translate[1]],
                    [0.0, 0.0, 1.0]])
    return np.linalg.inv(fwd)


def tilt_inverse(degrees: float, H: int, W: int) -> np.ndarray:
    """Inverse (centred coordinates) of the reference's tilt homography: the image plane rotated
    by ``degrees`` about its x and y axes and re-projected with focal length sqrt(w^2 + h^2)."""
    phi = theta = math.radians(degrees)
    f = math.hypot(W, H)
    to3d = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float64)    # centred (x, y, 1) -> (x, y, 1, 1)
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0],
                   [0, math.sin(theta), math.cos(theta), 0], [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0],
                   [math.sin(phi), 0, math.cos(phi), 0], [0, 0, 0, 1]])
    push = np.eye(4)
    push[2, 3] = f
    project = np.array([[f, 0, 0, 0], [0, f, 0, 0], [0, 0, 1, 0]], np.float64)   # to centred image coordinates
    fwd = project @ push @ rx @ ry @ to3d
    return np.linalg.inv(fwd)


# ------------------------------------------------------------------------------- the perturbations
def _noise_frames(x: torch.Tensor, p: Perturbation, difficulty: int, g: torch.Generator) -> torch.Tensor:
    n = p.frames - 1
    level = p.by_difficulty[difficulty - 1]
    xs = x.unsqueeze(0).expand(n, -1, -1, -1)
    if p.name == "gaussian_noise":
        noisy = xs + level * torch.randn(xs.shape, generator=g, device=x.device, dtype=x.dtype)
    else:
        noisy = torch.poisson(xs * level, generator=g) / level
    return torch.cat([x.unsqueeze(0), noisy.clamp(0, 1)], 0)


def _snow_frames(x: torch.Tensor, p: Perturbation, g: torch.Generator) -> torch.Tensor:
    _, H, W = x.shape
    layer = torch.randn((1, 1, H, W), generator=g, device=x.device, dtype=x.dtype) * 0.3 + 0.05
    z = clipped_zoom(layer, 3, keep=False)
    top, left = (z.shape[-2] - H) // 2, (z.shape[-1] - W) // 2
    z = z[..., top:top + H, left:left + W]
    z = torch.where(z < 0.5, torch.zeros_like(z), z)
    u8 = torch.floor(z.clamp(0, 1) * 255)                   # the reference stores the layer as an 8-bit image
    s = torch.round(torch.cat([motion_blur(u8, 14, 4, [4 * i - 150]) for i in range(p.frames)])) / 255
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
    base = 0.85 * x + 0.15 * torch.maximum(x, grey * 1.5 + 0.5)
    return (base.unsqueeze(0) + s + torch.flip(s, (-2, -1))).clamp(0, 1)


def _brightness_frames(x: torch.Tensor, p: Perturbation) -> torch.Tensor:
    hsv = rgb2hsv(x.unsqueeze(0).to(torch.float64))
    c = (torch.arange(p.frames, dtype=torch.float64, device=x.device) - 15) * 0.02
    v = (hsv[:, 2:] + c.view(-1, 1, 1, 1)).clamp(0, 1)
    hsv = torch.cat([hsv[:, :2].expand(p.frames, -1, -1, -1), v], 1)
    return hsv2rgb(hsv).clamp(0, 1).to(x.dtype)


def sequence_frames(x: torch.Tensor, name: str, difficulty: int = 1, crop: int | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """One image's ImageNet-P sequence.

    Args:
        x: (3, H, W) float tensor in [0, 1]: the resized image before the centre crop.
        name: one of :data:`PERTURBATION_NAMES`; difficulty: 1..3 (changes the noise
            perturbations' frames only).
        crop: centre-crop size of the frames (None: no crop, H x W frames).
        generator: torch generator on x's device (None: seed 0).
    Returns:
        (T, 3, crop, crop) float tensor in [0, 1], T = ``PERTURBATIONS[name].frames``.
    """
    p = lookup(name)
    if isinstance(difficulty, bool) or difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    if not (isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[0] == 3 and x.is_floating_point()):
        raise ValueError(f"sequence_frames: x must be a float (3, H, W) tensor in [0, 1], got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    H, W = x.shape[-2:]

    def cc(t):
        return center_crop(t, crop) if crop else t

    if name in ("translate", "rotate", "scale", "tilt", "zoom_blur"):
        i = range(p.frames)
        if name == "translate":
            inv = [affine_inverse(translate=(k - 20, 0)) for k in i]
        elif name == "rotate":
            inv = [affine_inverse(angle=k - 15) for k in i]
        elif name == "scale":
            inv = [affine_inverse(scale=(k * 2.5 + 40) / 100) for k in i]
        elif name == "tilt":
            inv = [tilt_inverse(k - 15, H, W) for k in i]
        else:
            inv = [affine_inverse(scale=1 + 0.004 * k) for k in i]
        frames = warp(x, np.stack(inv), "nearest" if name == "translate" else "bilinear", crop)
        if name == "zoom_blur":   # frame i: the mean of the zooms 0..i (frame 0 is the crop itself)
            frames[0] = cc(x)
            counts = torch.arange(1, p.frames + 1, device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
            frames = torch.cumsum(frames, 0) / counts
        return frames.clamp(0, 1)
    xc = cc(x)
    if p.noise:
        return _noise_frames(xc, p, difficulty, generator)
    if name == "motion_blur":
        # frame by frame: the shared helper pads its whole batch, so one padded copy per call is cheapest
        return torch.cat([motion_blur(xc.unsqueeze(0), 10, 3, [(k - 30) * 4]) for k in range(p.frames)]).clamp(0, 1)
    if name == "snow":
        return _snow_frames(xc, p, generator)
    return _brightness_frames(xc, p)


def sequence(image: np.ndarray, name: str, difficulty: int = 1, crop: int | None = 224, seed: int = 0,
             device: str | torch.device = "cpu") -> np.ndarray:
    """One HxWx3 uint8 image (resized, not yet cropped) -> its (T, crop, crop, 3) uint8 frames.

    Frames are rounded to 8 bits (warps, blurs) or truncated (noise, snow, brightness: the
    reference's ``np.uint8`` / ``ToPILImage``); ``seed`` seeds the random ones (noise, snow).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"sequence: image must be an HxWx3 uint8 array, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    x = torch.from_numpy(np.array(image, copy=True)).to(device).permute(2, 0, 1).to(torch.float32) / 255
    g = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
    y = sequence_frames(x, name, difficulty, crop, g) * 255
    exact = name in ("gaussian_noise", "shot_noise", "snow", "brightness", "zoom_blur")
    y = torch.floor(y + 1e-4) if exact else torch.round(y)
    return y.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def versions() -> dict:
    return {"torch": torch.__version__, "numpy": np.__version__, "reference": REFERENCE}
