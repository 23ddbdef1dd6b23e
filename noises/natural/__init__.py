"""Natural corruptions: the 15 ImageNet-C corruptions and its 4 extra ones, severities 1-5.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019.  Parameters and numerics follow the ``imagecorruptions`` package
1.1.2 (Michaelis et al., 2019; the ImageNet-C code made size-agnostic), the reference that
``tests/test_natural_*.py`` compares against.  Every corruption is a batched torch operation on
(N, 3, H, W) floats in [0, 1], on any device, with explicit generators (no global RNG).

    >>> import numpy as np
    >>> from robustbench_sys.noises.natural import corrupt, corrupt_batch, BENCHMARK_CORRUPTIONS
    >>> img = np.zeros((224, 224, 3), np.uint8)
    >>> corrupt(img, "fog", 3, seed=0).shape
    (224, 224, 3)

API
---
``corrupt(image, name, severity, seed=0) -> uint8``
    HxWx3 uint8 in, HxWx3 uint8 out (the reference's final ``np.uint8``, a truncation);
    computed in float64 to reproduce the reference's numerics.
``corrupt_batch(x, name, severity, generator=None) -> tensor``
    (N, 3, H, W) float in [0, 1] -> same shape, dtype and device, in [0, 1] (not quantised).
    ``generator``: a ``torch.Generator`` on x's device; None means seed 0 (reproducible).
``GROUPS`` ("noise", "blur", "weather", "digital": ImageNet-C's 15 by group; "extra": the 4
held-out ones), ``BENCHMARK_CORRUPTIONS`` (the 15, in the paper's order), ``EXTRA_CORRUPTIONS``,
``ALL_CORRUPTIONS``, ``CORRUPTIONS`` (name -> :class:`Corruption`: group, benchmark, parameters,
fn).  All lists derive from each corruption's ``@corruption(name, group=..., benchmark=...)``
(``group`` in :data:`GROUP_NAMES`, also for the extra ones: speckle_noise is a noise, spatter
weather...; ``benchmark`` True for the 15), so a new corruption is added in one place.

Registry
--------
Every corruption and severity is registered as ``natural/<name>-<severity>`` (e.g.
``natural/gaussian_noise-3``), stage ``corrupt``, with tags ``corruption``, ``severity``,
``group`` and ``benchmark`` (what a suite's ``[sweep] where = { benchmark = true }`` selects).
The severity is bound by the name, so the registered function is
``fn(img, severity=None, rng=None) -> img``: ``img`` HxWx3 uint8, ``severity`` may be omitted
(or must equal the bound one; it is accepted only to keep the ``corrupt`` stage signature of
:mod:`robustbench_sys.noises`), ``rng`` a ``numpy.random.Generator`` whose next
63-bit integer seeds the torch generator (None: seed 0).  The pipeline calls ``fn(img)``.

Deviations from the reference (see docs in each module): random draws come from torch
generators, so random corruptions match the reference in distribution, and their
deterministic parts match exactly when given the reference's draws (the ``sampler`` /
keyword-argument split of every random corruption); jpeg_compression and spatter's water
drops (severities 1-3) run Pillow / OpenCV on the CPU image by image.  Frost needs the frost
photographs of the imagecorruptions wheel in the cache (see :func:`frost_dir`).
"""

from __future__ import annotations

import numpy as np
import torch

from robustbench_sys.noises.natural import blur, digital, noise, weather  # noqa: F401  (define the corruptions)
from robustbench_sys.noises.natural._common import CORRUPTIONS, GROUP_NAMES, Corruption, default_generator
from robustbench_sys.noises.natural.digital import jpeg_roundtrip
from robustbench_sys.noises.natural.weather import frost_dir, frost_unavailable
from robustbench_sys.noises.registry import register


def _in_paper_order(names) -> tuple[str, ...]:
    """ImageNet-C's order: by group (noise, blur, weather, digital), then definition order."""
    return tuple(sorted(names, key=lambda n: GROUP_NAMES.index(CORRUPTIONS[n].group)))  # stable sort


# every list below derives from the ``group`` / ``benchmark`` of the @corruption decorators
# (one source; a new corruption joins the benchmark only by saying ``benchmark=True``)
BENCHMARK_CORRUPTIONS = _in_paper_order(n for n, c in CORRUPTIONS.items() if c.benchmark)
EXTRA_CORRUPTIONS = _in_paper_order(n for n, c in CORRUPTIONS.items() if not c.benchmark)
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
GROUPS = {**{g: tuple(n for n in BENCHMARK_CORRUPTIONS if CORRUPTIONS[n].group == g) for g in GROUP_NAMES},
          "extra": EXTRA_CORRUPTIONS}
SEVERITIES = (1, 2, 3, 4, 5)

__all__ = ["ALL_CORRUPTIONS", "BENCHMARK_CORRUPTIONS", "CORRUPTIONS", "Corruption", "EXTRA_CORRUPTIONS",
           "GROUP_NAMES", "GROUPS", "SEVERITIES", "corrupt", "corrupt_batch", "frost_dir", "jpeg_imagenet_c",
           "versions"]


def _lookup(name: str) -> Corruption:
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(ALL_CORRUPTIONS)}") from None


def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


def corrupt_batch(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt a batch.

    Args:
        x: (N, 3, H, W) float tensor in [0, 1] (float64 reproduces the reference numerics;
           float32 is faster), any device.
        name: one of :data:`ALL_CORRUPTIONS`.
        severity: 1..5.
        generator: ``torch.Generator`` on ``x.device``; None means a fresh one seeded 0.
    Returns:
        (N, 3, H, W) tensor in [0, 1], same dtype and device (not quantised to 1/255).

    Example::

        g = torch.Generator().manual_seed(1)
        y = corrupt_batch(torch.rand(8, 3, 224, 224), "snow", 2, g)
    """
    c = _lookup(name)
    severity = _check_severity(severity)
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] == 3 and x.is_floating_point()):
        raise ValueError(f"corrupt_batch: x must be a float (N, 3, H, W) tensor in [0, 1], got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if min(x.shape[-2:]) < 32:
        raise ValueError(f"corrupt_batch: images must be at least 32x32, got {tuple(x.shape[-2:])}")
    if name == "frost" and frost_unavailable():
        raise FileNotFoundError(frost_unavailable())
    if generator is None:
        generator = default_generator(x.device)
    return (c.fn(x, severity, generator) / 255).to(x.dtype)


def to_uint8(y255: torch.Tensor) -> np.ndarray:
    """0..255 float batch -> (N, H, W, 3) uint8 by truncation, like the reference's np.uint8."""
    return torch.floor(y255.clamp(0, 255)).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def corrupt(image: np.ndarray, name: str, severity: int = 1, seed: int = 0,
            device: str | torch.device = "cpu") -> np.ndarray:
    """Corrupt one HxWx3 uint8 RGB image (imagecorruptions' ``corrupt`` with a seed).

    Args:
        image: HxWx3 (or HxW grey) uint8 array, at least 32x32.
        name: one of :data:`ALL_CORRUPTIONS`; severity: 1..5; seed: torch generator seed.
    Returns:
        HxWx3 uint8 array.
    """
    c = _lookup(name)
    severity = _check_severity(severity)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"corrupt: image must be a uint8 numpy array, got {type(image).__name__} "
                         f"{getattr(image, 'dtype', '')}")
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"corrupt: image must be HxWx3 (or HxW), got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, 2)
    x = torch.as_tensor(np.array(image, copy=True), device=device).permute(2, 0, 1)[None].to(torch.float64) / 255
    g = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
    if name == "frost" and frost_unavailable():
        raise FileNotFoundError(frost_unavailable())
    if min(x.shape[-2:]) < 32:
        raise ValueError(f"corrupt: images must be at least 32x32, got {image.shape[:2]}")
    return to_uint8(c.fn(x, severity, g))[0]


def jpeg_imagenet_c(image: np.ndarray) -> np.ndarray:
    """The quality-85 JPEG round trip that ImageNet-C's released images went through after
    corrupting (HxWx3 uint8 -> HxWx3 uint8, Pillow)."""
    x = torch.as_tensor(np.array(image, copy=True)).permute(2, 0, 1)[None].to(torch.float64) / 255
    return jpeg_roundtrip(x, 85)[0].permute(1, 2, 0).to(torch.uint8).numpy()


def versions() -> dict:
    """Libraries the corruptions run on (provenance)."""
    import cv2
    import PIL

    return {"torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "opencv": cv2.__version__, "reference": "imagecorruptions==1.1.2"}


def _registered(name: str, bound: int):
    def fn(img: np.ndarray, severity: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        if severity is not None and severity != bound:
            raise ValueError(f"natural/{name}-{bound} has severity {bound} bound; got severity={severity}")
        seed = 0 if rng is None else int(rng.integers(0, 2 ** 63 - 1))
        return corrupt(img, name, bound, seed=seed)

    fn.__name__ = f"{name}_{bound}"
    fn.__doc__ = f"ImageNet-C {name}, severity {bound}: " + CORRUPTIONS[name].doc
    return fn


for _name in ALL_CORRUPTIONS:
    for _s in SEVERITIES:
        _c = CORRUPTIONS[_name]
        register("natural", f"{_name}-{_s}",
                 params={"corruption": _name, "severity": _s, "group": _c.group,
                         "benchmark": _c.benchmark, "values": repr(_c.params[_s - 1])},
                 tags={**_c.tags, "severity": _s},
                 available=frost_unavailable if _name == "frost" else None,
                 versions=versions)(_registered(_name, _s))
