"""ImageNet-P metrics: flip probability (FP), top-5 distance (T5D), mFP and mT5D.

Standalone (numpy / pandas only).  Definitions (Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR 2019, section 3; reference
code: github.com/hendrycks/robustness, ``ImageNet-P/test.py``, ``flip_prob`` / ``ranking_dist``).
A *sequence* is the frames x_1 .. x_n of one image under one perturbation, f(x) the top-1 class.

* Noise perturbations (``gaussian_noise``, ``shot_noise``, ...; frames are independent noise
  draws of the same image, the first frame is the clean image): every frame is compared with
  the first, pairs (x_1, x_j) for j = 2 .. n.
* The others (temporally related frames): with difficulty d (1, 2 or 3) each frame is compared
  with the one d frames before it, pairs (x_j, x_{j+d}).  This is the reference's loop "for each
  start i < d, consecutive frames of x_i, x_{i+d}, x_{i+2d}, ..." written as one set of pairs
  (every pair (j, j + d) occurs in exactly one of those sub-sequences).

FP of a sequence = the fraction of its pairs whose top-1 classes differ; FP_p = the mean over the
sequences of perturbation p (each sequence weighs the same, as in the reference).

T5D of a pair (a, b): with c_1 .. c_5 the top-5 classes of frame a (best first) and r_i the rank
of c_i in frame b (1 = top-1) capped at 6, T5D = sum_i |i - min(r_i, 6)|.  This is the reference's
``dist(sigma, 'top5')`` (its ``cum_sum_top5`` table is min(k, 5)), so the top-5 list of each frame
is all it needs.  T5D_p averages like FP_p.

mFP = mean over the benchmark perturbations of FP_p / FP_p(baseline), mT5D likewise.  The paper
normalises by AlexNet; AlexNet's published per-perturbation values are NOT included here (not
available to this project in checked form), so :func:`mean_flip_probability` /
:func:`mean_top5_distance` need the baseline's values passed in (e.g. AlexNet evaluated on the
same generated sequences) and refuse without them.  All values are fractions / counts as
computed; multiply FP by 100 for the paper's "%".

Rows of a generated ImageNet-P variant (``robustbench-sys generate imagenet-p``) name their
sequence and frame in the file path: ``<sequence>/<frame:02d>.png``; :func:`sequences_from_rows`
groups per-image result rows by that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath

import numpy as np

#: the 10 perturbations of the ImageNet-P benchmark (the paper's order)
BENCHMARK_PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness",
                           "translate", "rotate", "tilt", "scale")
#: AlexNet's published FP_p / T5D_p: not available here in checked form (see the module doc)
ALEXNET_FP: Mapping[str, float] | None = None
ALEXNET_T5D: Mapping[str, float] | None = None
DIFFICULTIES = (1, 2, 3)


def is_noise(perturbation: str) -> bool:
    """The reference's rule: a perturbation whose name contains 'noise' compares every frame with
    the first (``gaussian_noise``, ``shot_noise``, ``speckle_noise`` and their ``_2`` / ``_3``)."""
    return "noise" in perturbation


def _check_difficulty(difficulty) -> int:
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, np.integer)) or difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    return int(difficulty)


def frame_pairs(n_frames: int, *, noise: bool, difficulty: int = 1) -> list[tuple[int, int]]:
    """The (earlier, later) frame index pairs compared in a sequence of ``n_frames`` frames."""
    d = _check_difficulty(difficulty)
    if noise:
        return [(0, j) for j in range(1, n_frames)]
    return [(j, j + d) for j in range(n_frames - d)]


def top5_pair_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """T5D of one pair from the two frames' top-5 lists (best first): sum_i |i - min(r_i, 6)|,
    r_i the 1-based position in ``b`` of ``a``'s i-th class (6 when absent)."""
    if len(a) != 5 or len(b) != 5:
        raise ValueError(f"top5_pair_distance needs two top-5 lists, got lengths {len(a)} and {len(b)}")
    pos = {int(c): k + 1 for k, c in enumerate(b)}
    return int(sum(abs(i - pos.get(int(c), 6)) for i, c in enumerate(a, start=1)))


def _per_sequence(sequences: Iterable, pair_value, *, noise: bool, difficulty: int) -> np.ndarray:
    """Per sequence, the mean of ``pair_value(x_a, x_b)`` over its pairs (sequences with no pair,
    e.g. a single frame, are left out)."""
    per_seq = []
    for frames in sequences:
        frames = list(frames)
        pairs = frame_pairs(len(frames), noise=noise, difficulty=difficulty)
        if pairs:
            per_seq.append(np.mean([pair_value(frames[a], frames[b]) for a, b in pairs]))
    return np.asarray(per_seq, dtype=np.float64)


def _sequence_means(sequences: Iterable, pair_value, *, noise: bool, difficulty: int) -> float:
    """Mean over sequences of :func:`_per_sequence`; NaN when no sequence has a pair."""
    per_seq = _per_sequence(sequences, pair_value, noise=noise, difficulty=difficulty)
    return float(np.mean(per_seq)) if per_seq.size else float("nan")


def sequence_interval(per_seq: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean over sequences (sequences resampled with
    replacement: the frames of one sequence are dependent, the sequences are not); NaN when empty.
    Resamples are drawn in chunks of at most ~4 million indices (bounded memory at 50,000 sequences)."""
    v = np.asarray(per_seq, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    step = max(1, 4_000_000 // v.size)
    means = np.concatenate([v[rng.integers(0, v.size, size=(min(step, resamples - k), v.size))].mean(axis=1)
                            for k in range(0, resamples, step)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def flip_probability_per_sequence(predictions: Iterable[Sequence[int]], *, noise: bool,
                                  difficulty: int = 1) -> np.ndarray:
    """Each sequence's flip rate (FP_p is their mean)."""
    return _per_sequence(predictions, lambda a, b: float(int(a) != int(b)), noise=noise, difficulty=difficulty)


def flip_probability(predictions: Iterable[Sequence[int]], *, noise: bool, difficulty: int = 1) -> float:
    """FP_p: ``predictions`` holds one sequence of top-1 classes per image (frame order)."""
    per_seq = flip_probability_per_sequence(predictions, noise=noise, difficulty=difficulty)
    return float(np.mean(per_seq)) if per_seq.size else float("nan")


def top5_distance(top5s: Iterable[Sequence[Sequence[int]]], *, noise: bool, difficulty: int = 1) -> float:
    """T5D_p: ``top5s`` holds one sequence per image of each frame's top-5 classes (best first)."""
    return _sequence_means(top5s, top5_pair_distance, noise=noise, difficulty=difficulty)


def _normalised_mean(values: Mapping[str, float], baseline: Mapping[str, float] | None, what: str,
                     perturbations: Sequence[str]) -> float:
    if baseline is None:
        raise ValueError(f"m{what} needs the baseline's {what} per perturbation: AlexNet's published ImageNet-P "
                         f"values are not included in robustbench-sys; pass baseline={{perturbation: {what}}} "
                         "(e.g. AlexNet evaluated on the same generated sequences)")
    missing = [p for p in perturbations if p not in values or p not in baseline]
    if missing:
        raise ValueError(f"m{what}: no {what} for {', '.join(missing)} (model or baseline); m{what} averages over "
                         f"{', '.join(perturbations)}")
    zero = [p for p in perturbations if not baseline[p] > 0]
    if zero:
        raise ValueError(f"m{what}: the baseline's {what} of {', '.join(zero)} is not positive; cannot normalise")
    return float(np.mean([values[p] / baseline[p] for p in perturbations]))


def mean_flip_probability(fp: Mapping[str, float], baseline: Mapping[str, float] | None = ALEXNET_FP,
                          perturbations: Sequence[str] = BENCHMARK_PERTURBATIONS) -> float:
    """mFP = mean_p FP_p / FP_p(baseline) (a fraction; the paper prints it x 100)."""
    return _normalised_mean(fp, baseline, "FP", perturbations)


def mean_top5_distance(t5d: Mapping[str, float], baseline: Mapping[str, float] | None = ALEXNET_T5D,
                       perturbations: Sequence[str] = BENCHMARK_PERTURBATIONS) -> float:
    """mT5D = mean_p T5D_p / T5D_p(baseline)."""
    return _normalised_mean(t5d, baseline, "T5D", perturbations)


# ------------------------------------------------------------------------------- result rows
def split_frame_file(file: str) -> tuple[str, int]:
    """``<sequence>/<frame>.png`` -> (sequence, frame index); ValueError for another layout."""
    p = PurePosixPath(file)
    if not p.stem.isdigit() or str(p.parent) in ("", "."):
        raise ValueError(f"{file!r} is not an ImageNet-P frame path '<sequence>/<frame:02d>.<ext>'")
    return str(p.parent), int(p.stem)


def sequences_from_rows(rows) -> dict[str, tuple[list[int], list[list[int]]]]:
    """Per-image result rows (``file``, ``pred``, ``top5``; rows with a ``status`` other than
    ``ok`` are left out) -> ``{sequence: (top-1 per frame, top-5 per frame)}`` in frame order.
    A sequence with a missing frame keeps the frames it has (its pairs then span the gap)."""
    if "status" in rows:
        rows = rows[rows.status == "ok"]
    seqs: dict[str, list[tuple[int, int, list[int]]]] = {}
    for file, pred, top5 in zip(rows.file, rows.pred, rows.top5):
        seq, frame = split_frame_file(file)
        seqs.setdefault(seq, []).append((frame, int(pred), [int(c) for c in top5]))
    out = {}
    for seq in sorted(seqs):
        frames = sorted(seqs[seq])
        out[seq] = ([f[1] for f in frames], [f[2] for f in frames])
    return out


def sequence_metrics(rows, *, perturbation: str, difficulty: int = 1) -> tuple[float, float]:
    """(FP, T5D) of one perturbation's per-image result rows (see :func:`sequences_from_rows`)."""
    seqs = sequences_from_rows(rows).values()
    noise = is_noise(perturbation)
    fp = flip_probability([p for p, _ in seqs], noise=noise, difficulty=difficulty)
    t5 = top5_distance([t for _, t in seqs], noise=noise, difficulty=difficulty)
    return fp, t5


def variant_info(dataset) -> dict | None:
    """``{"perturbation", "difficulty", "noise"}`` of a generated ImageNet-P variant (its
    ``dataset.json`` ``sequence`` block), None for any other data set."""
    if getattr(dataset, "kind", None) != "generated:imagenet-p":
        return None
    import json

    try:
        seq = json.loads((dataset.root / "dataset.json").read_text())["sequence"]
        name, difficulty = str(seq["perturbation"]), int(seq.get("difficulty", 1))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{dataset.root}/dataset.json: no ImageNet-P sequence description ({e}); regenerate "
                         "the variant with 'robustbench-sys generate imagenet-p'") from None
    return {"perturbation": name, "difficulty": difficulty, "noise": bool(seq.get("noise", is_noise(name)))}


def summary_fields(dataset, ok) -> dict:
    """Summary columns ``flip_prob`` / ``top5_dist`` of a unit on ``dataset`` from its scored rows
    ``ok`` (``file``, ``pred``, ``top5``): FP and T5D of a generated ImageNet-P variant (non-noise
    perturbations at difficulty 1, noise ones against the first frame), null for other data sets."""
    info = variant_info(dataset)
    if info is None:
        return {"flip_prob": None, "top5_dist": None, "flip_prob_ci_low": None, "flip_prob_ci_high": None}
    seqs = sequences_from_rows(ok).values()
    d = 1 if not info["noise"] else info["difficulty"]
    per_seq = flip_probability_per_sequence([p for p, _ in seqs], noise=info["noise"], difficulty=d)
    fp = float(np.mean(per_seq)) if per_seq.size else float("nan")
    lo, hi = sequence_interval(per_seq)
    t5 = top5_distance([t for _, t in seqs], noise=info["noise"], difficulty=d)

    def opt(v: float):
        return None if np.isnan(v) else v

    return {"flip_prob": opt(fp), "top5_dist": opt(t5), "flip_prob_ci_low": opt(lo), "flip_prob_ci_high": opt(hi)}
