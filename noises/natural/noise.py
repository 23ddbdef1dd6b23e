"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise (ImageNet-C "noise") and
speckle_noise (one of the four extra corruptions).  Parameters: imagecorruptions 1.1.2."""

from __future__ import annotations

import torch

from robustbench_sys.noises.natural._common import CORRUPTIONS as _P
from robustbench_sys.noises.natural._common import corruption, generator_for, param, rand, randn


def _sample_normal(x, severity, generator=None):
    return {"normal": randn(x.shape, x, generator_for(x, generator))}


@corruption("gaussian_noise", group="noise", benchmark=True,
            params=[.08, .12, 0.18, 0.26, 0.38], sampler=_sample_normal)
def gaussian_noise(x, severity, generator=None, normal=None):
    """Additive Gaussian noise N(0, c) per pixel and channel; c = 0.08 .. 0.38."""
    c = param(_P["gaussian_noise"], severity)
    if normal is None:
        normal = _sample_normal(x, severity, generator)["normal"]
    return torch.clamp(x + normal.to(x.dtype) * c, 0, 1) * 255


@corruption("shot_noise", group="noise", benchmark=True,
            params=[60, 25, 12, 5, 3])
def shot_noise(x, severity, generator=None):
    """Poisson (shot) noise: Poisson(x * c) / c; c = 60 .. 3 photons per unit intensity."""
    c = param(_P["shot_noise"], severity)
    lam = x * c
    return torch.clamp(torch.poisson(lam, generator=generator_for(x, generator)).to(x.dtype) / float(c), 0, 1) * 255


@corruption("impulse_noise", group="noise", benchmark=True,
            params=[.03, .06, .09, 0.17, 0.27])
def impulse_noise(x, severity, generator=None):
    """Salt-and-pepper noise (skimage random_noise 's&p'): each value is replaced with
    probability c, by 1 or 0 with equal odds; c = 0.03 .. 0.27."""
    c = param(_P["impulse_noise"], severity)
    g = generator_for(x, generator)
    flipped = rand(x.shape, x, g) < c
    salted = rand(x.shape, x, g) < 0.5
    y = torch.where(flipped & salted, torch.ones_like(x), x)
    y = torch.where(flipped & ~salted, torch.zeros_like(x), y)
    return torch.clamp(y, 0, 1) * 255


@corruption("speckle_noise", group="noise", benchmark=False,
            params=[.15, .2, 0.35, 0.45, 0.6], sampler=_sample_normal)
def speckle_noise(x, severity, generator=None, normal=None):
    """Multiplicative Gaussian noise x + x * N(0, c); c = 0.15 .. 0.6."""
    c = param(_P["speckle_noise"], severity)
    if normal is None:
        normal = _sample_normal(x, severity, generator)["normal"]
    return torch.clamp(x + x * (normal.to(x.dtype) * c), 0, 1) * 255

