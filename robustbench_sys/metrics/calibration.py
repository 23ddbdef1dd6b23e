"""Calibration of a classifier's confidence: expected calibration error and negative log-likelihood.

Definitions (``../shared/docs/reference-facts.md``, "Calibration"; Guo et al. 2017, "On Calibration
of Modern Neural Networks", as reported by RobustBench):

- **Expected calibration error (ECE).**  The top-1 softmax probability of each image is its
  *confidence*.  The interval (0, 1] is split into ``M`` equal-width bins, bin ``m`` (1-based)
  being the half-open interval ``((m-1)/M, m/M]``: a confidence exactly on an edge ``m/M`` belongs
  to the *lower* bin ``m``, and a confidence of exactly 1.0 to the last bin.  With ``B_m`` the
  images whose confidence falls in bin ``m``, ``acc(B_m)`` the share of them that are top-1
  correct and ``conf(B_m)`` their mean confidence,

      ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|,

  over the non-empty bins (``n`` images in all).  ``M = 15`` is the common choice (the default).
- **Negative log-likelihood (NLL).**  The mean over images of ``-log p(true class)``, natural
  logarithm, with ``p`` the softmax probability the model gives the image's label.

Both are 0 for a perfectly calibrated, perfectly confident-and-right model and grow with
miscalibration; neither depends on the order of the images.  No image gives NaN (undefined);
invalid input raises :class:`ValueError` with a one-line message.

Example::

    >>> import numpy as np
    >>> # 0.9, 0.9 in bin (13/15, 14/15]: acc 1/2, conf 0.9; 0.6 in bin (8/15, 9/15]: acc 1, conf 0.6
    >>> round(float(expected_calibration_error(np.array([0.9, 0.9, 0.6]), np.array([True, False, True]))), 6)
    0.4
    >>> round(float(negative_log_likelihood(np.array([0.5, 0.25]))), 6)   # (ln 2 + ln 4) / 2
    1.039721
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the number of equal-width confidence bins (Guo et al. 2017; RobustBench)
N_BINS = 15

#: the smallest probability :func:`negative_log_likelihood` uses by default: the smallest positive
#: normal float32.  Probabilities are computed and stored in float32, so a true-class probability
#: that underflowed to 0 (a logit gap above ~87 nats) is only known to lie below this; clipping to it
#: caps one image's NLL at ``-ln(tiny) ~= 87.34`` instead of making the mean infinite.
NLL_EPS = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin figures of :func:`reliability_bins` (arrays of length ``n_bins``; bin ``m`` is
    ``(lower[m], upper[m]]``).  ``accuracy`` / ``confidence`` are NaN in an empty bin."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray


def _as_1d(name: str, values) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of per-image values, got shape {a.shape}")
    return a


def _confidence(confidence) -> np.ndarray:
    c = _as_1d("confidence", confidence)
    if c.dtype == bool or not np.issubdtype(c.dtype, np.number):
        raise ValueError(f"confidence: expected top-1 probabilities (floats in (0, 1]), got dtype {c.dtype}")
    c = c.astype(np.float64)
    bad = ~((c > 0) & (c <= 1))   # NaN fails both comparisons
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"confidence: {int(bad.sum())} value(s) outside (0, 1] (first: index {i}, {c[i]!r}); "
                         "pass the top-1 softmax probability of each image")
    return c


def _correct(correct, n: int) -> np.ndarray:
    k = _as_1d("correct", correct)
    if len(k) != n:
        raise ValueError(f"correct: {len(k)} value(s) but confidence has {n}; pass one of each per image")
    if k.dtype == bool:
        return k
    if not np.issubdtype(k.dtype, np.number) or not np.isin(k, (0, 1)).all():
        raise ValueError("correct: expected booleans (or 0 / 1) telling whether each top-1 prediction is right")
    return k.astype(bool)


def _n_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    return int(n_bins)


def bin_index(confidence, n_bins: int = N_BINS) -> np.ndarray:
    """The 0-based bin of each confidence: ``m - 1`` for ``(m-1)/M < c <= m/M``, where the bin
    edges are the float64 values ``m / M`` (so a confidence equal to an edge goes to the lower bin,
    1.0 to the last one)."""
    c, m = _confidence(confidence), _n_bins(n_bins)
    upper = np.arange(1, m + 1, dtype=np.float64) / m
    # first bin whose upper edge is >= c: upper[i-1] < c <= upper[i]
    return np.searchsorted(upper, c, side="left")


def reliability_bins(confidence, correct, n_bins: int = N_BINS) -> ReliabilityBins:
    """Count, accuracy and mean confidence per equal-width confidence bin (the reliability
    diagram behind :func:`expected_calibration_error`)."""
    c, m = _confidence(confidence), _n_bins(n_bins)
    k = _correct(correct, len(c))
    idx = bin_index(c, m)
    count = np.bincount(idx, minlength=m)
    hits = np.bincount(idx, weights=k.astype(np.float64), minlength=m)
    conf = np.bincount(idx, weights=c, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_conf = hits / count, conf / count
    edges = np.arange(m + 1, dtype=np.float64) / m
    return ReliabilityBins(lower=edges[:-1], upper=edges[1:], count=count, accuracy=acc, confidence=mean_conf)


def expected_calibration_error(confidence, correct, n_bins: int = N_BINS) -> float:
    """Expected calibration error (Guo et al. 2017; see the module doc for the definition).

    Args:
        confidence: (n,) top-1 softmax probability of each image, each in (0, 1].
        correct: (n,) bool (or 0 / 1): whether each image's top-1 prediction is its label.
        n_bins: the number of equal-width bins ``M`` (default 15).

    Returns:
        ECE in [0, 1]; NaN when there is no image.

    Raises:
        ValueError: shapes differ or are not 1-D, a confidence outside (0, 1] (or NaN), a
        ``correct`` value other than a boolean / 0 / 1, ``n_bins`` not a positive integer.

    Example::

        >>> round(expected_calibration_error([0.95, 0.95, 0.95, 0.95], [True, True, True, False]), 6)
        0.2
    """
    b = reliability_bins(confidence, correct, n_bins)
    n = int(b.count.sum())
    if n == 0:
        return float("nan")
    full = b.count > 0
    return float(np.sum(b.count[full] / n * np.abs(b.accuracy[full] - b.confidence[full])))


def negative_log_likelihood(p_true, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood of the true class: ``mean(-ln(max(p_true, eps)))``.

    Args:
        p_true: (n,) the softmax probability each image's label gets, each in [0, 1].
        eps: probabilities below this are clipped up to it before the logarithm, so an image
            whose true-class probability underflowed to 0 adds ``-ln(eps)`` instead of infinity.
            Default :data:`NLL_EPS`, the smallest positive normal float32 (per-image NLL at most
            ~87.34), since the probabilities are float32: below that the value is not known.

    Returns:
        The mean NLL in nats (>= 0); NaN when there is no image.

    Raises:
        ValueError: not 1-D, a value outside [0, 1] or NaN (a missing probability is unknown, not
        certain: the caller must not pass it), ``eps`` not in (0, 1].

    Example::

        >>> round(float(negative_log_likelihood([1.0, 0.5])), 6)   # (0 + ln 2) / 2
        0.346574
    """
    p = _as_1d("p_true", p_true)
    if p.dtype == bool or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"p_true: expected probabilities (floats in [0, 1]), got dtype {p.dtype}")
    if not (isinstance(eps, (int, float, np.floating)) and 0 < eps <= 1):
        raise ValueError(f"eps: expected a clipping floor in (0, 1], got {eps!r}")
    p = p.astype(np.float64)
    bad = ~((p >= 0) & (p <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"p_true: {int(bad.sum())} value(s) outside [0, 1] or missing (first: index {i}, "
                         f"{p[i]!r}); pass the softmax probability of each image's label")
    if len(p) == 0:
        return float("nan")
    return float(np.mean(-np.log(np.maximum(p, eps))))
