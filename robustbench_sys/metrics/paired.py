"""Metrics with intervals, following the papers' definitions.

- Top-1 / top-5 accuracy with a Wilson 95% score interval.
- ΔACC = ACC(training system) - ACC(deployment system), the SysNoise convention: positive
  means the deployment lost accuracy.  Its 95% interval is a paired percentile bootstrap
  over images (the per-image difference ``d_i = ref_correct_i - cond_correct_i``), and the
  exact two-sided McNemar test on the discordant pairs gives a p-value.
- Flip rate: the share of images whose top-1 prediction differs from the reference
  pipeline's prediction (whether or not either is correct).
- Family aggregates: mean and max ΔACC over a family's options (SysNoise Table 2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of b vs c discordant pairs at 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedDelta:
    n: int
    ref_acc: float
    acc: float
    delta: float          # ref_acc - acc (positive = accuracy lost)
    ci_low: float
    ci_high: float
    b: int                # reference correct, condition wrong
    c: int                # reference wrong, condition correct
    p_value: float        # exact McNemar

    def as_dict(self) -> dict:
        return asdict(self)


def paired_delta(ref_correct, cond_correct, *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> PairedDelta:
    """ΔACC with a paired percentile-bootstrap 95% interval.

    Resampling images with replacement only changes how many of the n images fall in each
    of the three kinds of pair (d=+1, d=-1, d=0), so the bootstrap is drawn exactly as a
    multinomial of those counts: identical in distribution to resampling indices, and fast.
    """
    r = np.asarray(ref_correct, dtype=bool)
    k = np.asarray(cond_correct, dtype=bool)
    if r.shape != k.shape:
        raise ValueError(f"paired outcomes differ in length: {r.shape} vs {k.shape}")
    n = int(r.size)
    if n == 0:
        nan = float("nan")
        return PairedDelta(0, nan, nan, nan, nan, nan, 0, 0, 1.0)
    b = int(np.sum(r & ~k))
    c = int(np.sum(~r & k))
    delta = (b - c) / n
    if b == 0 and c == 0:
        lo = hi = 0.0
    else:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, [b / n, c / n, 1 - (b + c) / n], size=resamples)
        boot = (draws[:, 0] - draws[:, 1]) / n
        lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    return PairedDelta(n, float(r.mean()), float(k.mean()), float(delta), lo, hi, b, c, mcnemar_exact_p(b, c))


def flip_rate(ref_pred, cond_pred) -> float:
    a, b = np.asarray(ref_pred), np.asarray(cond_pred)
    if a.shape != b.shape:
        raise ValueError(f"prediction arrays differ in length: {a.shape} vs {b.shape}")
    return float((a != b).mean()) if a.size else float("nan")


def family_stats(deltas) -> dict:
    """Mean and max ΔACC over a family's options (SysNoise Table 2)."""
    d = np.asarray([x for x in deltas if x == x], dtype=float)  # drop NaN
    if d.size == 0:
        return {"mean_delta": float("nan"), "max_delta": float("nan"), "n_options": 0}
    return {"mean_delta": float(d.mean()), "max_delta": float(d.max()), "n_options": int(d.size)}
