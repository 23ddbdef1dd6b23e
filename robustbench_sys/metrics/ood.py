"""Metrics of the released re-labelled and out-of-distribution test sets.

* :func:`aupr`: average precision (area under the precision-recall curve) of an anomaly score,
  the anomalies being the positives; the same definition as scikit-learn's
  ``average_precision_score`` (step-wise, no interpolation):
  ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds, highest first.
* :func:`real_accuracy`: ImageNet-ReaL top-1, a prediction being correct when it is one of the
  image's re-assessed labels; images without a label are left out.
* :func:`summary_fields`: the summary columns of a unit on such a set (``real_top1`` / ``real_n``,
  ``ood_aupr`` / ``ood_n_pos`` / ``ood_n_neg``, ``n_classes``, ``dataset_kind``).

ImageNet-O (Hendrycks et al. 2021) is scored as anomaly detection: anomaly score = the negative
maximum softmax probability (over its 200 classes), ImageNet-O images the positives, ImageNet
validation images of the same 200 classes the negatives.

    >>> aupr([0.8, 0.35], [0.1, 0.4])   # scikit-learn's documented example: 0.8333...
    0.8333333333333333
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def aupr(scores_pos: Sequence[float] | np.ndarray, scores_neg: Sequence[float] | np.ndarray) -> float:
    """Average precision of ``scores_pos`` (positives) against ``scores_neg`` (higher = more
    anomalous).  Tied scores form one threshold.  ValueError without positives or with a
    non-finite score; no negatives gives 1.0."""
    pos = np.asarray(scores_pos, dtype=np.float64).ravel()
    neg = np.asarray(scores_neg, dtype=np.float64).ravel()
    if pos.size == 0:
        raise ValueError("aupr: no positive scores")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("aupr: scores must be finite (NaN or inf given)")
    scores = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, y = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]   # the last index of each distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_interval(scores_pos, scores_neg, *, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of :func:`aupr`: positives and negatives resampled with
    replacement separately (their numbers fixed, as in the data set), ``resamples`` times."""
    pos = np.asarray(scores_pos, dtype=np.float64).ravel()
    neg = np.asarray(scores_neg, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    vals = [aupr(pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)])
            for _ in range(resamples)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def msp_anomaly(top1_prob: Iterable[float]) -> np.ndarray:
    """The anomaly score of the maximum-softmax-probability baseline: ``-max_c p(c | x)``."""
    return -np.asarray(list(top1_prob), dtype=np.float64)


def real_accuracy(preds: Mapping[str, int], labels: Mapping[str, Sequence[int]]) -> tuple[float, int]:
    """(ReaL top-1, number of images counted): ``preds`` file -> predicted class, ``labels`` file ->
    its ReaL labels; files with no or an empty label list are left out.  NaN when none counts."""
    hits = [preds[f] in set(labels[f]) for f in preds if labels.get(f)]
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def summary_fields(dataset, ok) -> dict:
    """Summary columns of a unit on ``dataset`` from its scored rows ``ok`` (status ``ok``; columns
    ``file``, ``pred``, ``top5_prob``).  Null where they do not apply."""
    subset = getattr(dataset, "class_subset", None)
    out: dict = {"dataset_kind": getattr(dataset, "kind", "folder"),
                 "n_classes": len(subset) if subset is not None else None,
                 "real_top1": None, "real_n": None, "ood_aupr": None, "ood_aupr_ci_low": None, "ood_aupr_ci_high": None,
                 "ood_n_pos": None, "ood_n_neg": None}
    labels = getattr(dataset, "multi_labels", None)
    if labels is not None:
        acc, n = real_accuracy(dict(zip(ok.file, ok.pred.astype(int))), labels)
        out.update(real_top1=acc if n else None, real_n=n)
    negatives = getattr(dataset, "ood_negatives", None)
    if negatives is not None:
        is_neg = ok.file.isin(negatives).to_numpy()
        score = msp_anomaly(p[0] for p in ok.top5_prob)
        pos, neg = score[~is_neg], score[is_neg]
        out.update(ood_aupr=aupr(pos, neg) if pos.size and neg.size else None,
                   ood_n_pos=int(pos.size), ood_n_neg=int(neg.size))
        if pos.size and neg.size:
            out["ood_aupr_ci_low"], out["ood_aupr_ci_high"] = aupr_interval(pos, neg)
    return out
