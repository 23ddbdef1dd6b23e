"""Faithfulness of robustbench_sys.noises.natural against the reference ``imagecorruptions`` 1.1.2 (run in its
own venv through robustbench_sys.noises.natural.oracle; one subprocess call per session for every corruption,
severity and image).  Images: the first IMAGES shared sample JPEGs, PIL Resize(256) +
CenterCrop(224), as ImageNet-C.

Three checks per registered corruption and severity:

* deterministic corruptions: our uint8 output equals the reference's on at least
  EXACT_SHARE of the values, and no value differs by more than 1 (float rounding before the
  reference's truncating np.uint8);
* random corruptions, "same draws": the reference's random draws are reproduced from
  ``np.random.RandomState(seed)`` (the worker calls ``np.random.seed(seed)``) and fed to our
  deterministic body; same criterion, with the per-corruption tolerances of SAME_DRAWS
  (interpolation / OpenCV-version differences);
* random corruptions, distribution (our own torch draws): the change d = corrupted - clean
  (0..255 scale, all pixels of all images) has mean within MEAN_TOL and mean |d| within
  REL_TOL (relative) of the reference's.  Corruptions whose output is dominated by one large
  random structure per image (a blur angle, a fractal, a texture crop, a snow / liquid layer)
  are drawn REPLICATES times per image on both sides and use LARGE_TOL (frost: five textures,
  so 24 draws leave a wide spread; its draws are checked directly in test_natural_api.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sys.noises.natural import ALL_CORRUPTIONS, CORRUPTIONS, SEVERITIES, corrupt, oracle, to_uint8
from robustbench_sys.noises.natural.weather import frost_texture, frost_unavailable, plasma_fractal

IMAGES = 3
EXACT_SHARE = 0.999
#: same-draws tolerances: (max |diff|, share of values that must be equal)
SAME_DRAWS = {"elastic_transform": (1, 0.998), "snow": (1, 0.9995), "spatter": (1, 0.999)}
MEAN_TOL, REL_TOL = 1.0, 0.05
REPLICATES = 8
LARGE_TOL = {"motion_blur": (1.0, 0.08), "fog": (6.0, 0.15), "frost": (15.0, 0.25), "snow": (6.0, 0.15),
             "spatter": (1.5, 0.25)}

CASES = [(n, s) for n in ALL_CORRUPTIONS for s in SEVERITIES]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def crops(sample_jpegs) -> np.ndarray:
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224)])
    return np.stack([np.asarray(tf(Image.open(p).convert("RGB"))) for p in sample_jpegs[:IMAGES]])


def _seed(name, severity, i, r=0):
    return 1000 * ALL_CORRUPTIONS.index(name) + 10 * severity + i + 100_000 * r


def _reps(name):
    return REPLICATES if name in LARGE_TOL else 1


@pytest.fixture(scope="session")
def reference(crops):
    """{(name, severity): (replicates * IMAGES, 224, 224, 3) uint8} from one oracle call
    (replicate-major; replicate 0 uses the seeds of the same-draws check)."""
    reason = oracle.unavailable() or frost_unavailable()
    if reason:
        pytest.skip(reason)
    jobs = [{"name": n, "severity": s, "image": i, "seed": _seed(n, s, i, r)}
            for n, s in CASES for r in range(_reps(n)) for i in range(len(crops))]
    out, _ = oracle.run(crops, jobs)
    res, k = {}, 0
    for n, s in CASES:
        m = _reps(n) * len(crops)
        res[n, s] = out[k:k + m]
        k += m
    return res


def _x(img):
    return torch.as_tensor(img).permute(2, 0, 1)[None].to(torch.float64) / 255


def legacy_draws(name, severity, img, seed) -> dict:
    """The reference's random draws for one image, from numpy's legacy global-seed stream."""
    rs = np.random.RandomState(seed)
    H, W = img.shape[:2]
    p = CORRUPTIONS[name].params[severity - 1]
    if name in ("gaussian_noise", "speckle_noise"):
        return {"normal": torch.from_numpy(rs.standard_normal((H, W, 3))).permute(2, 0, 1)[None]}
    if name == "glass_blur":
        d, iters = p[1], p[2]
        nH, nW = H - 2 * d, W - 2 * d
        return {"offsets": torch.from_numpy(rs.randint(-d, d, size=(iters * nH * nW, 2))).view(1, iters, nH, nW, 2)}
    if name == "motion_blur":
        return {"angles": [rs.uniform(-45, 45)]}
    if name == "frost":
        idx = rs.randint(5)
        th, tw = frost_texture(idx, H, W).shape[:2]
        top = rs.randint(0, th - H)
        return {"idx": [idx], "tops": [top], "lefts": [rs.randint(0, tw - W)]}
    if name == "fog":
        S = 1 << (max(H, W) - 1).bit_length()
        uniform = lambda shape, lo, hi: torch.from_numpy(rs.uniform(lo, hi, shape))[None]
        return {"fractal": plasma_fractal(1, S, p[1], uniform)}
    if name == "snow":
        layer = torch.from_numpy(rs.normal(size=(H, W), loc=p[0], scale=p[1]))[None, None]
        return {"layer": layer, "angles": [rs.uniform(-135, -45)]}
    if name == "elastic_transform":
        m = H * 0.005
        dx = torch.from_numpy(rs.uniform(-m, m, size=(H, W)))[None, None]
        return {"dx": dx, "dy": torch.from_numpy(rs.uniform(-m, m, size=(H, W)))[None, None]}
    if name == "spatter":
        return {"layer": torch.from_numpy(rs.normal(size=(H, W), loc=p[0], scale=p[1]))[None, None]}
    return None  # shot_noise, impulse_noise: draws not reproducible (Poisson / skimage's own Generator)


def _agreement(ours, ref):
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return int(diff.max()), float((diff == 0).mean())


@pytest.mark.parametrize("name,severity", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_matches_reference(name, severity, crops, reference):
    ref_all = reference[name, severity]
    ref = ref_all[:len(crops)]
    c = CORRUPTIONS[name]
    if not c.random:
        ours = np.stack([corrupt(img, name, severity) for img in crops])
        mx, share = _agreement(ours, ref)
        assert mx <= 1 and share >= EXACT_SHARE, f"{name}-{severity}: max |diff| {mx}, equal share {share:.5f}"
        return

    tol_max, tol_share = SAME_DRAWS.get(name, (1, EXACT_SHARE))
    same = []
    for i, img in enumerate(crops):
        draws = legacy_draws(name, severity, img, _seed(name, severity, i))
        if draws is not None:
            same.append(to_uint8(c.fn(_x(img), severity, None, **draws))[0])
    if same:
        mx, share = _agreement(np.stack(same), ref)
        assert mx <= tol_max and share >= tol_share, \
            f"{name}-{severity} with the reference's draws: max |diff| {mx}, equal share {share:.5f}"

    # distribution, with our own generator
    reps = _reps(name)
    ours = np.stack([corrupt(img, name, severity, seed=7 + i + 1000 * r)
                     for r in range(reps) for i, img in enumerate(crops)])
    clean = np.concatenate([crops] * reps).astype(np.float64)
    d_ours, d_ref = ours - clean, ref_all - clean
    mean_tol, rel_tol = LARGE_TOL.get(name, (MEAN_TOL, REL_TOL))
    assert abs(d_ours.mean() - d_ref.mean()) <= mean_tol, \
        f"{name}-{severity}: mean change {d_ours.mean():.2f} vs reference {d_ref.mean():.2f}"
    a, b = np.abs(d_ours).mean(), np.abs(d_ref).mean()
    assert abs(a - b) <= rel_tol * b + 0.05, f"{name}-{severity}: mean |change| {a:.3f} vs reference {b:.3f}"
