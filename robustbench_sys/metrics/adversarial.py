"""Robust-accuracy metrics and validity checks for adversarial evaluations.

Standalone: imports nothing else from robustbench_sys (numpy; torch only inside the
checks that run a model).  Inputs are per-image boolean arrays (numpy, torch or lists)
of "prediction equals label".

Three accuracies, named after where they are defined:

- :func:`robust_accuracy` — RobustBench (Croce et al. 2021): the share of **all**
  evaluated images that are still classified correctly after the attack; an image the
  model already gets wrong counts as a failure (the attack is not run on it).
- :func:`attack_robustness` — RobustART's AR (Tang et al. 2021): among the images the
  model classifies correctly, the share still correct after the attack
  (``#(correct before and after) / #(correct before)``).
- :func:`worst_case_attack_robustness` — RobustART's WCAR: like AR, but an image counts
  only if it survives **every** attack of the list; :func:`worst_case_robust_accuracy`
  is the RobustBench-style counterpart over all images (what AutoAttack reports for its
  ensemble).

Worked example (4 images; the model gets 3 right, the attack breaks 1 of them)::

    >>> clean = [True, True, True, False]
    >>> adv = [True, False, True, True]      # the 4th was wrong before: still a failure
    >>> robust_accuracy(clean, adv)          # 2 / 4
    0.5
    >>> attack_robustness(clean, adv)        # 2 / 3
    0.6666666666666666

Validity flags in the spirit of AutoAttack's checks (``autoattack/checks.py``): they do
not change a number, they say when it should not be trusted — see :func:`validity_flags`.
Three compare attacks on the same images, from per-image arrays alone (the evaluator feeds
them the stored rows, :func:`robustbench_sys.eval.attack.write_worst_case`), with AutoAttack's
tolerance :data:`ALPHA` (0.2 pp): :func:`check_black_box_lowers_robust_accuracy` (Square
succeeding after the gradient attacks), :func:`check_budget_monotone` (a larger eps or more
steps leaving a higher robust accuracy) and :func:`check_transfer_beats_white_box` (a transfer
attack from another model beating the white-box one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ALPHA", "Flag", "attack_robustness", "check_black_box_beats_white_box",
           "check_black_box_lowers_robust_accuracy", "check_budget_monotone", "check_nondeterminism",
           "check_perturbation", "check_probability_outputs", "check_randomized", "check_transfer_beats_white_box",
           "check_zero_gradients", "perturbation_norms", "robust_accuracy", "validity_flags",
           "worst_case_attack_robustness", "worst_case_robust_accuracy"]


def _bool(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D per-image boolean array, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (prediction == label per image), got values {np.unique(arr)[:5]}")
        arr = arr.astype(bool)
    return arr


def _pair(clean, adv) -> tuple[np.ndarray, np.ndarray]:
    c, a = _bool(clean, "clean_correct"), _bool(adv, "adv_correct")
    if c.shape != a.shape:
        raise ValueError(f"clean_correct ({c.size}) and adv_correct ({a.size}) must cover the same images")
    if c.size == 0:
        raise ValueError("no images: robust accuracy of an empty set is undefined")
    return c, a


def robust_accuracy(clean_correct, adv_correct) -> float:
    """RobustBench robust accuracy: ``#(correct before and after) / #images``."""
    c, a = _pair(clean_correct, adv_correct)
    return float((c & a).sum() / c.size)


def attack_robustness(clean_correct, adv_correct) -> float:
    """RobustART AR: ``#(correct before and after) / #(correct before)``; NaN when none is correct before."""
    c, a = _pair(clean_correct, adv_correct)
    n = int(c.sum())
    return float((c & a).sum() / n) if n else float("nan")


def _all_attacks(clean_correct, adv_corrects: Sequence) -> tuple[np.ndarray, np.ndarray]:
    if len(adv_corrects) == 0:
        raise ValueError("worst case over an empty list of attacks is undefined")
    c = _bool(clean_correct, "clean_correct")
    surv = c.copy()
    for i, a in enumerate(adv_corrects):
        a = _bool(a, f"adv_corrects[{i}]")
        if a.shape != c.shape:
            raise ValueError(f"adv_corrects[{i}] covers {a.size} images, clean_correct {c.size}")
        surv &= a
    return c, surv


def worst_case_attack_robustness(clean_correct, adv_corrects: Sequence) -> float:
    """RobustART WCAR: ``#(correct before and after every attack) / #(correct before)``."""
    c, surv = _all_attacks(clean_correct, adv_corrects)
    n = int(c.sum())
    return float(surv.sum() / n) if n else float("nan")


def worst_case_robust_accuracy(clean_correct, adv_corrects: Sequence) -> float:
    """RobustBench-style worst case: ``#(correct before and after every attack) / #images``."""
    c, surv = _all_attacks(clean_correct, adv_corrects)
    if c.size == 0:
        raise ValueError("no images: robust accuracy of an empty set is undefined")
    return float(surv.sum() / c.size)


# ------------------------------------------------------------------- perturbation budget

def perturbation_norms(clean, adv, norm: str) -> np.ndarray:
    """Per-image ``||adv - clean||`` (float64) for ``norm`` in ``"Linf"``, ``"L2"``, ``"L1"``."""
    if hasattr(clean, "detach"):
        clean = clean.detach().cpu().numpy()
    if hasattr(adv, "detach"):
        adv = adv.detach().cpu().numpy()
    clean, adv = np.asarray(clean, np.float64), np.asarray(adv, np.float64)
    if clean.shape != adv.shape or clean.ndim < 2:
        raise ValueError(f"clean {clean.shape} and adv {adv.shape} must be batches of the same shape")
    d = (adv - clean).reshape(len(adv), -1)
    if norm == "Linf":
        return np.abs(d).max(1)
    if norm == "L2":
        return np.sqrt((d * d).sum(1))
    if norm == "L1":
        return np.abs(d).sum(1)
    raise ValueError(f"unknown norm {norm!r}; valid choices: Linf, L2, L1")


@dataclass(frozen=True)
class Flag:
    """One validity check: ``raised`` True means the evaluation is suspect; ``detail`` says why."""

    name: str
    raised: bool
    detail: str
    values: dict = field(default_factory=dict)


def check_perturbation(clean, adv, norm: str, eps: float, *, rtol: float = 1e-5, atol: float = 1e-6) -> Flag:
    """Raised when any perturbation exceeds ``eps`` (beyond float32 rounding) or leaves [0, 1]."""
    n = perturbation_norms(clean, adv, norm)
    a = adv.detach().cpu().numpy() if hasattr(adv, "detach") else np.asarray(adv)
    over = n > eps * (1 + rtol) + atol
    out_of_range = int(((a < 0) | (a > 1)).reshape(len(a), -1).any(1).sum())
    raised = bool(over.any()) or out_of_range > 0
    detail = (f"{int(over.sum())} of {len(n)} perturbations exceed {norm} eps {eps:.6g} (max {n.max():.6g}); "
              f"{out_of_range} images leave [0, 1]") if raised else f"max {norm} {n.max():.6g} <= eps {eps:.6g}"
    return Flag("perturbation_within_eps", raised, detail,
                {"max_norm": float(n.max()), "n_over_eps": int(over.sum()), "n_out_of_range": out_of_range})


# ------------------------------------------------------------------- validity flags

def check_black_box_beats_white_box(white_box_correct, black_box_correct, *, margin: int = 0) -> Flag:
    """Raised when a black-box attack leaves fewer images correct than a white-box one:
    a sign that the gradients are masked (AutoAttack reports Square beating APGD)."""
    w, b = _pair(white_box_correct, black_box_correct)
    nw, nb = int(w.sum()), int(b.sum())
    raised = nb + margin < nw
    return Flag("black_box_beats_white_box", raised,
                f"black-box leaves {nb}, white-box {nw} of {w.size} images correct"
                + ("; suspect gradient masking" if raised else ""),
                {"white_box_correct": nw, "black_box_correct": nb, "fooled_only_by_black_box": int((w & ~b).sum())})


#: AutoAttack's tolerance (``autoattack/checks.py``, ``check_square_sr(acc_dict, alpha=0.002)``): a
#: robust-accuracy difference of at most 0.2 percentage points is not reported
ALPHA = 0.002


def _triple(clean, first, second, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = _bool(clean, "clean_correct")
    a, b = _bool(first, names[0]), _bool(second, names[1])
    if not (c.shape == a.shape == b.shape):
        raise ValueError(f"clean_correct ({c.size}), {names[0]} ({a.size}) and {names[1]} ({b.size}) "
                         "must cover the same images")
    if c.size == 0:
        raise ValueError("no images: robust accuracy of an empty set is undefined")
    return c, a, b


def check_black_box_lowers_robust_accuracy(clean_correct, white_box_correct, black_box_correct, *,
                                           alpha: float = ALPHA, black_box: str = "black-box attack") -> Flag:
    """AutoAttack's Square check (``autoattack/checks.py``, ``check_square_sr``): raised when
    adding the black-box attack to the white-box ones lowers the robust accuracy by more than
    ``alpha`` (0.2 pp).  A score-based attack that needs no gradient should not succeed where
    gradient attacks with the same budget failed; when it does, the gradients are likely masked.

    ``white_box_correct``: per image, still correct after every white-box attack (their worst
    case); ``black_box_correct``: still correct after the black-box attack (on its own, or only
    where it was run, as AutoAttack runs Square on the images the others left).  The two robust
    accuracies compared are ``RA_w = robust_accuracy(clean, white)`` and
    ``RA_all = worst_case_robust_accuracy(clean, [white, black])``; the flag says
    ``RA_w - RA_all`` in percentage points, as AutoAttack's warning "Square Attack has decreased
    the robust accuracy of 1.60 %".  Like AutoAttack's checks it never changes a number.

    Worked example (5 images, all correct before; the white-box attacks break 1, the black-box
    one breaks another)::

        >>> f = check_black_box_lowers_robust_accuracy([1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 1])
        >>> f.raised, f.values["decrease_pp"]      # RA 80 % -> 60 %
        (True, 20.0)
    """
    c, w, b = _triple(clean_correct, white_box_correct, black_box_correct, ("white_box_correct", "black_box_correct"))
    kw, kall = int((c & w).sum()), int((c & w & b).sum())
    ra_w, ra_all = kw / c.size, kall / c.size
    drop = (kw - kall) / c.size
    raised = drop > alpha + 1e-12
    detail = (f"{black_box} has decreased the robust accuracy of {100 * drop:.2f} pp "
              f"({100 * ra_w:.2f} % -> {100 * ra_all:.2f} % on {c.size} images)")
    return Flag("black_box_lowers_robust_accuracy", raised,
                detail + ("; suspect gradient masking" if raised else ""),
                {"robust_acc_white_box": ra_w, "robust_acc_with_black_box": ra_all, "decrease_pp": 100 * drop,
                 "n_images": int(c.size), "n_broken_only_by_black_box": int((c & w & ~b).sum())})


def check_transfer_beats_white_box(clean_correct, white_box_correct, transfer_correct, *, alpha: float = ALPHA,
                                   source: str = "another model") -> Flag:
    """Raised when a transfer attack (adversarial images crafted on ``source`` and scored on
    this model) leaves a lower robust accuracy than the white-box attacks on the model itself,
    by more than ``alpha``: a white-box attack that knows the model should be at least as
    strong, so its gradients are likely masked (Athalye et al. 2018; Carlini et al. 2019,
    "On evaluating adversarial robustness", §5).  Compares
    ``robust_accuracy(clean, transfer)`` with ``robust_accuracy(clean, white)``.

    Worked example (4 images, all correct before; white-box breaks 1, the transfer 3)::

        >>> f = check_transfer_beats_white_box([1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0])
        >>> f.raised, f.values["decrease_pp"]      # RA 75 % (white-box) vs 25 % (transfer)
        (True, 50.0)
    """
    c, w, t = _triple(clean_correct, white_box_correct, transfer_correct, ("white_box_correct", "transfer_correct"))
    kw, kt = int((c & w).sum()), int((c & t).sum())
    ra_w, ra_t = kw / c.size, kt / c.size
    drop = (kw - kt) / c.size
    raised = drop > alpha + 1e-12
    return Flag("transfer_beats_white_box", raised,
                f"transfer attack from {source} leaves {100 * ra_t:.2f} %, the white-box attacks "
                f"{100 * ra_w:.2f} % robust accuracy on {c.size} images"
                + (f": {100 * drop:.2f} pp lower; suspect gradient masking" if raised else ""),
                {"robust_acc_white_box": ra_w, "robust_acc_transfer": ra_t, "decrease_pp": 100 * drop,
                 "n_images": int(c.size)})


def check_budget_monotone(entries: Sequence[dict], *, alpha: float = ALPHA) -> Flag:
    """Raised when a larger attack budget leaves a **higher** robust accuracy (by more than
    ``alpha``) than a smaller one on the same images: a stronger attack of the same kind must
    not do worse (Carlini et al. 2019, "On evaluating adversarial robustness": increasing the
    distortion bound or the iterations must increase the attack's success; a plateau or a rise
    points at masked gradients or a broken attack).

    ``entries``: one dict per attack run of the same attack and parameters but its budget,
    ``{"label": str, "eps": float, "steps": int | None, "clean": bools, "adv": bools}``, all
    over the same images.  Entry B *dominates* A when ``eps_B >= eps_A`` and ``steps_B >= steps_A``
    (a missing steps counts as equal) with at least one strictly larger; every dominated pair
    is compared by ``robust_accuracy(clean, adv)``.  The flag names the largest rise.

    Worked example (robust accuracy 50 % at eps 0.1, 75 % at eps 0.3: a rise of 25 pp)::

        >>> e = [{"label": "eps 0.1", "eps": 0.1, "steps": 10, "clean": [1, 1, 1, 1], "adv": [1, 1, 0, 0]},
        ...      {"label": "eps 0.3", "eps": 0.3, "steps": 10, "clean": [1, 1, 1, 1], "adv": [1, 1, 1, 0]}]
        >>> f = check_budget_monotone(e)
        >>> f.raised, f.values["rise_pp"]
        (True, 25.0)
    """
    k: list[int] = []
    n = 0
    for i, e in enumerate(entries):
        c, a = _pair(e["clean"], e["adv"])
        if i and c.size != n:
            raise ValueError(f"entries[{i}] covers {c.size} images, entries[0] {n}: compare on the same images")
        n = c.size
        k.append(int((c & a).sum()))
    ra = [x / n for x in k] if n else []
    worst: tuple[float, int, int] | None = None
    n_pairs = 0
    for i, small in enumerate(entries):
        for j, large in enumerate(entries):
            s_steps = small.get("steps")
            l_steps = large.get("steps")
            steps_ge = s_steps is None or l_steps is None or l_steps >= s_steps
            steps_gt = s_steps is not None and l_steps is not None and l_steps > s_steps
            eps_ge, eps_gt = large["eps"] >= small["eps"], large["eps"] > small["eps"]
            if i == j or not (eps_ge and steps_ge and (eps_gt or steps_gt)):
                continue
            n_pairs += 1
            rise = (k[j] - k[i]) / n
            if worst is None or rise > worst[0]:
                worst = (rise, i, j)
    if worst is None:
        return Flag("robust_accuracy_not_monotone", False, "no two budgets of the same attack to compare",
                    {"n_pairs": 0})
    rise, i, j = worst
    raised = rise > alpha + 1e-12
    detail = (f"robust accuracy {100 * ra[i]:.2f} % at {entries[i]['label']} vs {100 * ra[j]:.2f} % at the larger "
              f"{entries[j]['label']} ({100 * rise:+.2f} pp) on {n} images")
    return Flag("robust_accuracy_not_monotone", raised,
                (detail + "; a larger budget must not raise robust accuracy: suspect gradient masking")
                if raised else f"robust accuracy does not rise with the budget over {n_pairs} pair(s); "
                               f"largest change {detail}",
                {"n_pairs": n_pairs, "rise_pp": 100 * rise, "smaller": entries[i]["label"],
                 "larger": entries[j]["label"]})


def check_nondeterminism(adv_run1, adv_run2, *, atol: float = 0.0) -> Flag:
    """Raised when two runs with the same seed give different adversarial images (or predictions)."""
    a = adv_run1.detach().cpu().numpy() if hasattr(adv_run1, "detach") else np.asarray(adv_run1)
    b = adv_run2.detach().cpu().numpy() if hasattr(adv_run2, "detach") else np.asarray(adv_run2)
    if a.shape != b.shape:
        return Flag("nondeterministic", True, f"runs differ in shape {a.shape} vs {b.shape}")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    n = int((diff.reshape(len(a), -1) > atol).any(1).sum()) if a.ndim > 1 else int((diff > atol).sum())
    return Flag("nondeterministic", n > 0,
                f"{n} of {len(a)} images differ between two runs with the same seed (max diff {diff.max():.3g})"
                if n else "two runs with the same seed agree", {"n_differing": n, "max_abs_diff": float(diff.max())})


def check_randomized(model, images, *, n_runs: int = 2, atol: float = 0.0) -> Flag:
    """Raised when the model's logits change between forward passes on the same input
    (dropout left on, stochastic defences): a randomised model needs EOT attacks."""
    import torch

    with torch.no_grad():
        outs = [model(images) for _ in range(max(2, n_runs))]
    diff = max(float((o - outs[0]).abs().max()) for o in outs[1:])
    raised = diff > atol
    return Flag("randomized_outputs", raised,
                f"logits differ by up to {diff:.3g} between identical forward passes" if raised
                else "identical forward passes agree", {"max_abs_diff": diff})


def check_probability_outputs(model, images, *, tol: float = 1e-4) -> Flag:
    """Raised when the outputs look like probabilities (non-negative rows summing to 1):
    attacks built for logits (CE, DLR, margin) lose their gradients on them."""
    import torch

    with torch.no_grad():
        out = model(images)
    raised = bool((out >= -tol).all() and ((out.sum(1) - 1).abs() < tol).all())
    return Flag("probability_outputs", raised,
                "outputs are non-negative and rows sum to 1: pass logits, not softmax" if raised
                else "outputs look like logits")


def check_zero_gradients(model, images, labels, *, threshold: float = 0.0) -> Flag:
    """Raised when the input gradient of the cross-entropy vanishes for some images
    (max |grad| <= ``threshold``): gradient-based attacks cannot move them (masking,
    saturated softmax, non-differentiable pre-processing)."""
    import torch

    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x), labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    if g is None:
        g = torch.zeros_like(x)
    gmax = g.detach().abs().flatten(1).amax(1)
    n = int((gmax <= threshold).sum())
    return Flag("zero_gradients", n > 0,
                f"{n} of {len(x)} images have a vanishing input gradient" if n else "input gradients are non-zero",
                {"n_zero": n, "min_max_abs_grad": float(gmax.min()) if len(gmax) else 0.0})


def validity_flags(*, model=None, images=None, labels=None, white_box_correct=None, black_box_correct=None,
                   adv_run1=None, adv_run2=None, adv=None, norm: str | None = None,
                   eps: float | None = None) -> list[Flag]:
    """Every check whose inputs are given, in a fixed order; see :attr:`Flag.raised`."""
    flags: list[Flag] = []
    if model is not None and images is not None:
        flags.append(check_randomized(model, images))
        flags.append(check_probability_outputs(model, images))
        if labels is not None:
            flags.append(check_zero_gradients(model, images, labels))
    if white_box_correct is not None and black_box_correct is not None:
        flags.append(check_black_box_beats_white_box(white_box_correct, black_box_correct))
    if adv_run1 is not None and adv_run2 is not None:
        flags.append(check_nondeterminism(adv_run1, adv_run2))
    if adv is not None and images is not None and norm is not None and eps is not None:
        flags.append(check_perturbation(images, adv, norm, eps))
    return flags


def raised(flags: Iterable[Flag]) -> list[str]:
    """Names of the raised flags."""
    return [f.name for f in flags if f.raised]
