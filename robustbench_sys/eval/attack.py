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
threat model and budget.
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
    return f"attack {attack['name']}: {reason}" if reason else None


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
    error_fields = {"clean_pred": None, "perturbation": None, "attack_seed": None}

    def __init__(self, unit, model, store):
        from robustbench_sys.noises.adversarial import NormalizedModel

        self.unit, self.store = unit, store
        self.attack = unit.condition.attack
        self.noise = attack_noise(self.attack)
        self.wrapped = NormalizedModel(model, unit.pipeline.mean, unit.pipeline.std)
        self.spec: dict = {}

    def prepare_spec(self, spec: dict, previous: dict) -> dict:
        # an interrupted run already recorded the attack actually used and the model checks
        spec.update({k: previous[k] for k in ("attack_used", "model_checks") if k in previous})
        spec.update({"attack": self.attack, "seed_rule": SEED_RULE})
        self.spec = spec
        return spec

    def score(self, x, samples):
        import torch

        from robustbench_sys.noises.adversarial import perturbation_norm

        attack, spec = self.attack, self.spec
        y = torch.tensor([s.label for s in samples], dtype=torch.int64)
        seed = batch_seed(attack["seed"], [s.file for s in samples])
        if "model_checks" not in spec:
            spec["model_checks"] = _model_checks(self.wrapped, x[:N_CHECK], y[:N_CHECK])
        res = self.noise(self.wrapped, x, y, eps=attack["eps"], seed=seed, **attack["params"])
        with torch.inference_mode():
            clean_pred = self.wrapped(x).argmax(1).tolist()
            probs = torch.softmax(self.wrapped(res.adv).float(), dim=1)
        dist = perturbation_norm(x, res.adv, res.params["norm"]).tolist()
        if "attack_used" not in spec:
            spec["attack_used"] = {k: v for k, v in res.params.items()
                                   if k not in ("seed", "max_perturbation", "n_rejected_over_eps")}
            self.store.write_unit(self.unit.id, spec)
        return probs, [{"clean_pred": c, "perturbation": d, "attack_seed": seed} for c, d in zip(clean_pred, dist)]


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


def write_worst_case(store, units) -> None:
    """RobustART WCAR and worst-case robust accuracy over the attack units of each
    (family, norm, eps) group, written into those units' summary rows."""
    import pyarrow.parquet as pq

    groups: dict[tuple, list] = {}
    for u in units:
        if not u.condition.attack or not store.has_summary(u.id, u.condition.name):
            continue
        path = store.summary_path(u.id, u.condition.name)
        row = pq.read_table(path).to_pylist()[0]
        groups.setdefault((u.condition.family, row.get("norm"), row.get("eps")), []).append((u, row))
    for (family, norm, eps), members in groups.items():
        merged = None
        for j, (u, _) in enumerate(members):
            r = store.read_unit_rows(u.id)
            r = r[r.status == "ok"]
            part = pd.DataFrame({"file": r.file, f"adv{j}": r.correct.astype(bool).to_numpy()})
            if merged is None:
                part["clean"] = (r.clean_pred.to_numpy() == r.label.to_numpy())
                merged = part
            else:
                merged = merged.merge(part, on="file")
        if merged is None or merged.empty:
            continue
        clean = merged["clean"].to_numpy()
        advs = [merged[f"adv{j}"].to_numpy() for j in range(len(members))]
        eps_txt = "min-norm" if eps is None or eps != eps else f"{eps:.6g}"
        fields = {"wc_group": f"{family} {norm} eps {eps_txt}: {len(members)} attack(s), {len(merged)} images",
                  "wc_attacks": len(members), "wcar": am.worst_case_attack_robustness(clean, advs),
                  "wc_robust_acc": am.worst_case_robust_accuracy(clean, advs)}
        for u, row in members:
            store.write_summary(u.id, {**row, **fields})
