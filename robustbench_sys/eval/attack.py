"""Adversarial units: attack every batch, score the adversarial images, summarise robust accuracy.

A condition with an ``attack`` (see :mod:`robustbench_sys.suites`) becomes a unit like any
other; the batch loop (:func:`robustbench_sys.eval.loop.run_unit`) runs it with the
:class:`Attack` strategy, which

1. preprocesses each batch with the unit's pipeline (the model's own clean pipeline unless the
   condition also overrides a stage) to images in [0, 1];
2. wraps the model as ``NormalizedModel(model, pipeline.mean, pipeline.std)`` so the attack and
   the scoring see exactly the same function;
3. runs the attack with the batch's seed, :func:`batch_seed` ``(base seed, batch file names)``,
   so a resumed unit gives the same adversarial images as an uninterrupted one (batches are
   stored whole, so a resumed run forms the same batches for the same batch size);
4. writes one row per image (:data:`~robustbench_sys.results.store.ADV_PER_IMAGE_SCHEMA`: the usual
   columns on the adversarial image, plus the clean prediction of the same run, the
   perturbation norm and the batch seed), one atomically written part per batch.

:func:`summary_fields` adds to the unit's summary row: RobustBench robust accuracy
(``robust_acc``: clean-correct *and* adversarially correct over all images, Wilson 95%
interval), RobustART's AR (``attack_robustness``, among the clean-correct), the attack
parameters actually used (``attack_params``, JSON), the largest perturbation checked against
eps and the validity flags.  :func:`write_worst_case` fills in RobustART's WCAR (and the
RobustBench-style worst-case robust accuracy) over the attacks of a family that share a
threat model and budget, and the group validity flags (black-box beating white-box, robust
accuracy rising with the budget, a transfer attack beating white-box) from the stored rows.

A condition with ``transfer_from = "<zoo model>"`` crafts its adversarial images on that model
(:func:`load_source`, with its own normalisation, on the same [0, 1] images) and scores them on
the unit's model; an attack composed of components (AutoAttack) records per image the component
that broke it (``broken_by``), from which :func:`summary_fields` computes AutoAttack's Square check.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from robustbench_sys import noises
from robustbench_sys.metrics import adversarial as am
from robustbench_sys.metrics import paired as metrics
from robustbench_sys.results.store import ADV_PER_IMAGE_SCHEMA

SEED_RULE = "sha256(f'{seed}\\n' + '\\n'.join(batch file names))[:8] little-endian, & (2**53 - 1)  (exact as a float64)"
#: images of the first batch the model checks (randomised outputs, probabilities, zero gradients) run on
N_CHECK = 1


def attack_noise(attack: dict):
    return noises.get(f"adversarial/{attack['name']}")


def unavailable(attack: dict) -> str | None:
    """None when the attack can run here, else the one-line reason."""
    reason = attack_noise(attack).available()
    if reason:
        return f"attack {attack['name']}: {reason}"
    src = attack.get("transfer_from")
    if src:
        from robustbench_sys import zoo

        try:
            status = zoo.weights_status(zoo.get_card(src))
        except zoo.UnknownModel as e:
            return f"transfer source: {e}"
        if status not in ("cached", "in memory"):
            return f"transfer source {src}: weights {status}"
    return None


def batch_seed(seed: int, files) -> int:
    """The attack seed of one batch: a hash of the base seed and the batch's file names."""
    h = hashlib.sha256((f"{int(seed)}\n" + "\n".join(files)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2 ** 53 - 1)


def _model_checks(wrapped, x, y) -> list[dict]:
    """AutoAttack-style checks of the model on a few images (run once per unit)."""
    flags = [am.check_randomized(wrapped, x), am.check_probability_outputs(wrapped, x),
             am.check_zero_gradients(wrapped, x, y)]
    return [{"name": f.name, "raised": bool(f.raised), "detail": f.detail} for f in flags]


class Attack:
    """The attack strategy of the batch loop (:func:`robustbench_sys.eval.loop.run_unit`): attack the
    batch with its seed, then score the adversarial images (see module doc)."""

    schema = ADV_PER_IMAGE_SCHEMA
    error_fields = {"clean_pred": None, "perturbation": None, "attack_seed": None, "broken_by": None}

    def __init__(self, unit, model, store):
        from robustbench_sys.noises.adversarial import NormalizedModel

        self.unit, self.store = unit, store
        self.device = getattr(unit, "device", "cpu")   # the model is already there (eval.deploy.place)
        self.attack = unit.condition.attack
        self.noise = attack_noise(self.attack)
        self.wrapped = NormalizedModel(model, unit.pipeline.mean, unit.pipeline.std).to(self.device)
        self.spec: dict = {}
        # a transfer condition crafts the adversarial images on another zoo model (the source,
        # with its own normalisation, on the same [0, 1] images) and scores them on this one
        self.source, self.source_info = None, {}
        if self.attack.get("transfer_from"):
            self.source, self.source_info = load_source(self.attack["transfer_from"], self.device)

    def prepare_spec(self, spec: dict, previous: dict) -> dict:
        # an interrupted run already recorded the attack actually used and the model checks
        spec.update({k: previous[k] for k in ("attack_used", "model_checks") if k in previous})
        spec.update({"attack": self.attack, "seed_rule": SEED_RULE})
        if self.source_info:
            spec["transfer_source"] = self.source_info
        self.spec = spec
        return spec

    def score(self, x, samples):
        import torch

        from robustbench_sys.devices import to_device
        from robustbench_sys.noises.adversarial import perturbation_norm

        attack, spec = self.attack, self.spec
        x = to_device(x, self.device)   # attack, scoring and norms on the unit's device; seeds unchanged
        y = torch.tensor([s.label for s in samples], dtype=torch.int64, device=x.device)
        seed = batch_seed(attack["seed"], [s.file for s in samples])
        if "model_checks" not in spec:
            spec["model_checks"] = _model_checks(self.wrapped, x[:N_CHECK], y[:N_CHECK])
        res = self.noise(self.source if self.source is not None else self.wrapped, x, y, eps=attack["eps"],
                         seed=seed, **attack["params"])
        broken_by = res.params.get("broken_by") or [None] * len(samples)
        with torch.inference_mode():
            clean_pred = self.wrapped(x).argmax(1).tolist()
            probs = torch.softmax(self.wrapped(res.adv).float(), dim=1)
        dist = perturbation_norm(x, res.adv, res.params["norm"]).tolist()
        if "attack_used" not in spec:
            spec["attack_used"] = {k: v for k, v in res.params.items()
                                   if k not in ("seed", "max_perturbation", "n_rejected_over_eps", "broken_by")}
            if self.source_info:
                spec["attack_used"]["transfer_from"] = self.source_info["model"]
            self.store.write_unit(self.unit.id, spec)
        return probs.cpu(), [{"clean_pred": c, "perturbation": d, "attack_seed": seed, "broken_by": b}
                       for c, d, b in zip(clean_pred, dist, broken_by)]


def load_source(name: str, device: str = "cpu"):
    """The source model of a transfer condition (a zoo card name), wrapped with its own
    normalisation, on ``device``, and what identifies it (card name, weights sha256) for the unit spec."""
    from robustbench_sys import zoo
    from robustbench_sys.noises.adversarial import NormalizedModel
    from robustbench_sys.pipeline import Pipeline

    card = zoo.get_card(name)
    _, sha = zoo.fetch_weights(card)
    pipe = Pipeline.from_card(card)
    return (NormalizedModel(zoo.load_model(card), pipe.mean, pipe.std).to(device),
            {"model": card.name, "weights_sha256": sha})


# ---------------------------------------------------------------------- summaries
def _flag(name: str, raised: bool, detail: str) -> dict:
    return {"name": name, "raised": bool(raised), "detail": detail}


def summary_fields(store, unit, rows: pd.DataFrame, ref_rows: pd.DataFrame) -> dict:
    """The adversarial columns of a unit's summary row (see module doc)."""
    from robustbench_sys.noises.adversarial.base import EPS_ATOL, EPS_RTOL

    attack = unit.condition.attack
    spec = store.unit_or_empty(unit.id)
    used = spec.get("attack_used", {})
    norm = used.get("norm") or attack["params"].get("norm") or attack_noise(attack).fn.norm
    eps = attack["eps"]
    ok = rows[rows.status == "ok"]
    n = len(ok)
    clean = (ok.clean_pred.to_numpy() == ok.label.to_numpy()) if n else np.zeros(0, bool)
    adv = ok.correct.to_numpy(dtype=bool)
    k = int((clean & adv).sum())
    lo, hi = metrics.wilson_interval(k, n)
    pert = ok.perturbation.to_numpy(dtype=float)
    max_p = float(np.nanmax(pert)) if n else float("nan")
    within = True if eps is None or not n else bool((pert <= eps * (1 + EPS_RTOL) + EPS_ATOL).all())
    flags = [_flag("perturbation_within_eps", not within,
                   f"max {norm} perturbation {max_p:.6g} " + ("<= " if within else "> ") +
                   ("(no budget)" if eps is None else f"eps {eps:.6g}"))]
    flags += spec.get("model_checks", [])
    ref_ok = ref_rows[ref_rows.status == "ok"][["file", "pred"]]
    m = ok.merge(ref_ok, on="file", suffixes=("", "_ref"))
    n_diff = int((m.clean_pred != m.pred_ref).sum())
    flags.append(_flag("clean_prediction_mismatch", n_diff > 0,
                       f"{n_diff} of {len(m)} clean predictions differ from the clean unit's"))
    bb = [c for c in str(used.get("black_box_components") or "").split(",") if c]
    if bb and n and "broken_by" in ok and ok.broken_by.notna().all():
        # AutoAttack's Square check on the unit's own components (see check_black_box_lowers_robust_accuracy)
        by_bb = ok.broken_by.isin(bb).to_numpy()
        f = am.check_black_box_lowers_robust_accuracy(clean, adv | by_bb, ~by_bb, black_box=" + ".join(bb))
        flags.append(_flag(f.name, f.raised, f.detail))
    params = {**used, "base_seed": attack["seed"], "seed_rule": SEED_RULE} if used else \
        {"attack": attack["name"], "eps": eps, **attack["params"], "base_seed": attack["seed"], "seed_rule": SEED_RULE}
    nan = float("nan")
    return {
        "attack": attack["name"], "attack_params": json.dumps(params, sort_keys=True, default=str),
        "eps": nan if eps is None else float(eps), "norm": norm,
        "n_clean_correct": int(clean.sum()), "clean_acc": float(clean.mean()) if n else nan,
        "robust_acc": am.robust_accuracy(clean, adv) if n else nan,
        "robust_acc_ci_low": lo, "robust_acc_ci_high": hi,
        "attack_robustness": am.attack_robustness(clean, adv) if n else nan,
        "max_perturbation": max_p, "perturbation_within_eps": within,
        "validity_flags": json.dumps(flags, sort_keys=True),
        "validity_raised": ",".join(f["name"] for f in flags if f["raised"]),
        "wc_group": "", "wc_attacks": 0, "wcar": nan, "wc_robust_acc": nan,
    }


#: ``scope`` of the flags :func:`write_worst_case` computes over a group of units: a rerun
#: replaces them in each member's ``validity_flags`` instead of adding them twice
GROUP_SCOPE = "group"


def _kind(unit, row: dict) -> str:
    """``"transfer"`` (crafted on another model), ``"composite"`` (an ensemble with black-box
    components, AutoAttack: its own Square check is a unit flag, see :func:`summary_fields`), else
    the attack's threat: ``"white-box"`` / ``"black-box"``."""
    attack = unit.condition.attack
    if attack.get("transfer_from"):
        return "transfer"
    try:
        used = json.loads(row.get("attack_params") or "{}")
    except ValueError:
        used = {}
    if used.get("black_box_components"):
        return "composite"
    return str(getattr(attack_noise(attack).fn, "threat", "white-box"))


def _common(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-image ``clean`` (of the first unit) and ``adv0..advK`` over the images every unit has."""
    merged = frames[0][["file", "clean"]]
    for j, f in enumerate(frames):
        merged = merged.merge(f[["file", "adv"]].rename(columns={"adv": f"adv{j}"}), on="file")
    return merged


def _all_of(merged: pd.DataFrame, js: list[int]) -> np.ndarray:
    out = np.ones(len(merged), bool)
    for j in js:
        out &= merged[f"adv{j}"].to_numpy(dtype=bool)
    return out


def _budget_key(unit) -> str:
    """What two attack units must share for their budgets to be compared: the attack and its
    parameters but eps and steps (and the step size that follows from them)."""
    a = unit.condition.attack
    params = {k: v for k, v in a["params"].items() if k not in ("steps", "alpha")}
    return json.dumps([a["name"], a.get("transfer_from"), params], sort_keys=True, default=str)


def write_worst_case(store, units) -> None:
    """RobustART WCAR and worst-case robust accuracy over the attack units of each
    (family, norm, eps) group, written into those units' summary rows, with the group-level
    validity flags (AutoAttack-style warnings computed from the stored per-image rows, on the
    images every unit of the group has; they never change a number):

    - ``black_box_lowers_robust_accuracy``: the group's black-box attacks (Square) lower the
      worst-case robust accuracy of its white-box ones
      (:func:`~robustbench_sys.metrics.adversarial.check_black_box_lowers_robust_accuracy`);
    - ``transfer_beats_white_box``: a transfer condition (``transfer_from``) leaves a lower
      robust accuracy than the white-box worst case
      (:func:`~robustbench_sys.metrics.adversarial.check_transfer_beats_white_box`);
    - ``robust_accuracy_not_monotone``: over the units of a family running the same attack and
      parameters at different eps / steps, a larger budget leaves a higher robust accuracy
      (:func:`~robustbench_sys.metrics.adversarial.check_budget_monotone`).

    Each flag is added to every member of its group with ``"scope": "group"``; a rerun replaces
    the group flags (never duplicates them) and recomputes ``validity_raised``."""
    import pyarrow.parquet as pq

    members: list[tuple] = []
    for u in units:
        if not u.condition.attack or not store.has_summary(u.id, u.condition.name):
            continue
        row = pq.read_table(store.summary_path(u.id, u.condition.name)).to_pylist()[0]
        members.append((u, row))
    per_image: dict[str, pd.DataFrame] = {}
    for u, _ in members:   # one read per unit, shared by every group it belongs to
        r = store.read_unit_rows(u.id)
        r = r[r.status == "ok"]
        per_image[u.id] = pd.DataFrame({"file": r.file.to_numpy(),
                                        "clean": r.clean_pred.to_numpy() == r.label.to_numpy(),
                                        "adv": r.correct.astype(bool).to_numpy()})
    fields: dict[str, dict] = {u.id: {} for u, _ in members}
    gflags: dict[str, list[dict]] = {u.id: [] for u, _ in members}

    groups: dict[tuple, list] = {}
    budgets: dict[tuple, list] = {}
    kind = {u.id: _kind(u, row) for u, row in members}
    members.sort(key=lambda m: m[0].condition.name)   # a fixed order: the same flags on every rerun
    for u, row in members:
        groups.setdefault((u.condition.family, row.get("norm"), row.get("eps")), []).append(u)
        eps = row.get("eps")
        if eps is not None and eps == eps:   # bounded attacks only
            budgets.setdefault((u.condition.family, row.get("norm"), _budget_key(u)), []).append(u)
    for (family, norm, eps), us in groups.items():
        merged = _common([per_image[u.id] for u in us])
        if merged.empty:
            continue
        clean = merged["clean"].to_numpy(dtype=bool)
        advs = [merged[f"adv{j}"].to_numpy(dtype=bool) for j in range(len(us))]
        eps_txt = "min-norm" if eps is None or eps != eps else f"{eps:.6g}"
        f = {"wc_group": f"{family} {norm} eps {eps_txt}: {len(us)} attack(s), {len(merged)} images",
             "wc_attacks": len(us), "wcar": am.worst_case_attack_robustness(clean, advs),
             "wc_robust_acc": am.worst_case_robust_accuracy(clean, advs)}
        kinds = [kind[u.id] for u in us]
        white = [j for j, k in enumerate(kinds) if k == "white-box"]
        found: list[am.Flag] = []
        if white:
            wc = _all_of(merged, white)
            black = [j for j, k in enumerate(kinds) if k == "black-box"]
            if black:
                found.append(am.check_black_box_lowers_robust_accuracy(
                    clean, wc, _all_of(merged, black),
                    black_box=" + ".join(us[j].condition.name for j in black)))
            for j, k in enumerate(kinds):
                if k == "transfer":
                    found.append(am.check_transfer_beats_white_box(
                        clean, wc, advs[j], source=str(us[j].condition.attack["transfer_from"])))
        for u in us:
            fields[u.id].update(f)
            gflags[u.id].extend(_flag(x.name, x.raised, x.detail) for x in found)
    for us in budgets.values():
        if len(us) < 2:
            continue
        merged = _common([per_image[u.id] for u in us])
        if merged.empty:
            continue
        clean = merged["clean"].to_numpy(dtype=bool)
        entries = [{"label": u.condition.name, "eps": float(u.condition.attack["eps"]),
                    "steps": u.condition.attack["params"].get("steps"), "clean": clean,
                    "adv": merged[f"adv{j}"].to_numpy(dtype=bool)} for j, u in enumerate(us)]
        x = am.check_budget_monotone(entries)
        if x.values.get("n_pairs"):
            for u in us:
                gflags[u.id].append(_flag(x.name, x.raised, x.detail))
    for u, row in members:
        flags = [g for g in json.loads(row.get("validity_flags") or "[]") if g.get("scope") != GROUP_SCOPE]
        flags += [{**g, "scope": GROUP_SCOPE} for g in gflags[u.id]]
        raised = list(dict.fromkeys(g["name"] for g in flags if g["raised"]))
        store.write_summary(u.id, {**row, **fields[u.id], "validity_flags": json.dumps(flags, sort_keys=True),
                                   "validity_raised": ",".join(raised)})
