"""A unit's summary row: accuracy with its Wilson interval, the paired ΔACC against the model's
reference unit (interval, McNemar p, flips), calibration (ECE, NLL) of the unit and of its
reference, and provenance; attack units add robust accuracy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from robustbench_sys.devices import device_info
from robustbench_sys.eval.attack import summary_fields
from robustbench_sys.eval.speed import summary_fields as speed_fields
from robustbench_sys.metrics import calibration, ood, paired, perturbation
from robustbench_sys.provenance import environment
from robustbench_sys.results.store import ResultsStore


def summarise(store: ResultsStore, unit, ref, *, run_id: str, deploy_info: dict) -> dict:
    rows = store.read_unit_rows(unit.id)
    base = store.read_unit_rows(ref.id)
    ok = rows[rows.status == "ok"]
    m = ok.merge(base[base.status == "ok"], on="file", suffixes=("", "_ref"))
    delta = paired.paired_delta(m.correct_ref.to_numpy(), m.correct.to_numpy())
    n = len(ok)
    k1, k5 = int(ok.correct.sum()), int(ok.correct5.sum())
    lo, hi = paired.wilson_interval(k1, n)
    env = environment()
    device = getattr(unit, "device", "cpu")
    dev = {"device": device}
    if device != "cpu":   # recorded where the unit ran (a Dask client may have no GPU)
        dev = store.unit_or_empty(unit.id).get("device_info") or device_info(device)
    row = {
        "unit_id": unit.id, "run_id": run_id, "model": unit.card.name, "arch": unit.card.arch,
        "condition": unit.condition.name, "family": unit.condition.family,
        "suite": unit.condition.suite, "suite_version": unit.condition.suite_version,
        "dataset": unit.dataset.name, "dataset_fingerprint": unit.dataset.fingerprint,
        "n_images": n, "n_errors": int((rows.status != "ok").sum()), "n_paired": delta.n,
        "top1": k1 / n if n else float("nan"), "top1_ci_low": lo, "top1_ci_high": hi,
        "top5": k5 / n if n else float("nan"),
        "ref_top1": delta.ref_acc, "delta_acc": delta.delta,
        "delta_ci_low": delta.ci_low, "delta_ci_high": delta.ci_high,
        "mcnemar_p": delta.p_value, "n_lost": delta.b, "n_gained": delta.c,
        "flip_rate": paired.flip_rate(m.pred_ref.to_numpy(), m.pred.to_numpy()),
        **calibration_fields(ok), **calibration_fields(base[base.status == "ok"], "ref_"),
        "pipeline": unit.pipeline.spec_json(), "pipeline_text": unit.pipeline.describe(),
        "reference_pipeline": ref.pipeline.spec_json(),
        "weights_sha256": unit.weights_sha256,
        "deploy_info": json.dumps(deploy_info, sort_keys=True, default=str),
        **speed_fields(deploy_info),   # latency / throughput of a deploy condition or the reference (eval.speed)
        "tags": json.dumps(unit.card.tags, sort_keys=True),
        "provenance": json.dumps({**env, "noise_versions": unit.pipeline.noise_versions(), **dev},
                                 sort_keys=True, default=str),
        "run_ids": json.dumps(sorted(set(rows.run_id))),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    if unit.condition.attack:
        row.update(summary_fields(store, unit, rows, base))
    row.update(ood.summary_fields(unit.dataset, ok))   # dataset_kind, n_classes, ReaL / ImageNet-O metrics
    row.update(perturbation.summary_fields(unit.dataset, ok))   # ImageNet-P flip_prob / top5_dist
    return row


def calibration_fields(ok: pd.DataFrame, prefix: str = "") -> dict:
    """``ece`` and ``nll`` (:mod:`robustbench_sys.metrics.calibration`) of a unit's ``status == "ok"``
    rows: the confidence is the stored top-1 probability (``top5_prob[0]``), the NLL uses
    ``label_prob``.  NaN (unknown) when there is no row, when a part predates ``label_prob`` (NLL
    only) or when a probability is not a valid one (a model that output NaN / inf)."""
    nan = float("nan")
    conf = np.array([p[0] if len(p) else nan for p in ok.top5_prob], dtype=np.float64) if len(ok) else np.zeros(0)
    ece = nll = nan
    if len(conf) and ((conf > 0) & (conf <= 1)).all():
        ece = calibration.expected_calibration_error(conf, ok.correct.to_numpy(dtype=bool))
    p_true = ok["label_prob"].to_numpy(dtype=np.float64) if "label_prob" in ok else np.full(len(ok), nan)
    if len(p_true) and ((p_true >= 0) & (p_true <= 1)).all():
        nll = calibration.negative_log_likelihood(p_true)
    return {f"{prefix}ece": ece, f"{prefix}nll": nll}
