"""Pareto fronts: :func:`front_mask` of points to maximise in both coordinates (the leaderboard's
clean vs robust accuracy), and :func:`pareto_front` of deployment options: least accuracy loss,
most speed-up (issue 14, item 3), the same rule with the loss negated.

A deployment option is a point ``(condition, accuracy loss, speed-up)``: the accuracy loss is its
ΔACC against the model's reference (positive = accuracy lost; the reference itself is
``(clean, 0, 1)``) and the speed-up its throughput (or latency) ratio against the reference
(above 1 = faster).  Option *a* **dominates** *b* when *a* loses no more accuracy and is no
slower (``a.loss <= b.loss`` and ``a.speedup >= b.speedup``) and is strictly better in at least
one of the two.  The front is the set of options no other option dominates.

Ties, documented:

- two options with the same loss and the same speed-up (different conditions) do not dominate
  each other: both are on the front (or both off it);
- an option tied on one coordinate and worse on the other is dominated (same loss, slower: off);
- the same ``(condition, loss, speed-up)`` given twice is one option (kept once);
- an option with a missing (NaN / None) loss or speed-up is never on the front (not measured).

The front comes back sorted by loss (ascending), then speed-up (descending), then condition.

    >>> pareto_front([("clean", 0.0, 1.0), ("fp16", 0.5, 2.0), ("slow", 0.5, 0.9)])
    [('clean', 0.0, 1.0), ('fp16', 0.5, 2.0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def _number(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def front_mask(x, y) -> np.ndarray:
    """Boolean mask of the points no other point dominates, both coordinates maximised: *q*
    dominates *p* when it is >= in both and > in one.  Equal points do not dominate each other;
    a point with a NaN coordinate is never on the front and dominates nothing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    ge = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
    gt = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    return ok & ~(ge & gt & ok[None, :]).any(axis=1)


def dominates(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    """True when option ``a`` dominates ``b`` (module doc)."""
    return a[1] <= b[1] and a[2] >= b[2] and (a[1] < b[1] or a[2] > b[2])


def pareto_front(options: Iterable[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The non-dominated options of ``(condition, accuracy loss, speed-up)`` (module doc):
    minimise the loss, maximise the speed-up."""
    pts: list[tuple[str, float, float]] = []
    for cond, loss, speed in options:
        lo, sp = _number(loss), _number(speed)
        if lo is None or sp is None:
            continue
        p = (str(cond), lo, sp)
        if p not in pts:
            pts.append(p)
    on = front_mask([-p[1] for p in pts], [p[2] for p in pts])   # least loss = most (-loss)
    return sorted((p for p, keep in zip(pts, on) if keep), key=lambda p: (p[1], -p[2], p[0]))
