"""Tables from the results store: per-condition rows and SysNoise-style family aggregates."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import cast

import pandas as pd

from robustbench_sys.metrics import paired as metrics
from robustbench_sys.noises.stages import get_stage, pipeline_stages, short_name


def order(summaries: pd.DataFrame) -> pd.DataFrame:
    if summaries.empty:
        return summaries
    s = summaries.copy()
    s["_clean"] = s.condition != "clean"
    return s.sort_values(["dataset", "model", "_clean", "family", "condition"]).drop(columns="_clean")


def condition_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per (data set, model, condition): n, top-1 [CI], ΔACC [CI], flip rate (percent)."""
    if summaries.empty:
        return pd.DataFrame()
    s = order(summaries)
    return pd.DataFrame({
        "dataset": s.dataset, "model": s.model, "condition": s.condition, "n": s.n_images,
        "top1 %": (100 * s.top1).round(2),
        "top1 95% CI": [f"[{100 * a:.1f}, {100 * b:.1f}]" for a, b in zip(s.top1_ci_low, s.top1_ci_high)],
        "ΔACC pp": (100 * s.delta_acc).round(2),
        "ΔACC 95% CI": [f"[{100 * a:+.1f}, {100 * b:+.1f}]" for a, b in zip(s.delta_ci_low, s.delta_ci_high)],
        "flip %": (100 * s.flip_rate).round(2),
    }).reset_index(drop=True)


def matrix_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Condition (rows) x model (columns) for one data set: the clean row holds top-1 %, every
    other cell ``ΔACC pp [95% CI] / flip %``; the image count is in the column header."""
    if summaries.empty:
        return pd.DataFrame()
    if summaries.dataset.nunique() > 1:
        raise ValueError(f"results on several data sets ({', '.join(sorted(summaries.dataset.unique()))}); "
                         "keep one with --dataset")
    s = order(summaries)
    models = list(dict.fromkeys(s.model))
    n = {m: int(s[s.model == m].n_images.max()) for m in models}
    cell = {}
    for r in s.itertuples(index=False):
        if r.condition == "clean":
            txt = f"top-1 {100 * r.top1:.1f} [{100 * r.top1_ci_low:.1f}, {100 * r.top1_ci_high:.1f}]"
        else:
            txt = (f"{100 * r.delta_acc:+.1f} [{100 * r.delta_ci_low:+.1f}, {100 * r.delta_ci_high:+.1f}] / "
                   f"{100 * r.flip_rate:.1f}")
        cell[(r.condition, r.model)] = txt
    conds = sorted(set(s.condition), key=lambda c: (c != "clean", c))
    rows = [{"condition": c, **{f"{m} (n={n[m]})": cell.get((c, m), "-") for m in models}} for c in conds]
    return pd.DataFrame(rows)


def family_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Mean and max ΔACC (pp) and mean flip rate per (data set, model, family), clean excluded."""
    if summaries.empty:
        return pd.DataFrame()
    rows = []
    # no ΔACC without a reference (a released corruption set run with --clean-data none)
    s = summaries[(summaries.condition != "clean") & summaries.delta_acc.notna()]
    for (ds, model, fam), g in s.groupby(["dataset", "model", "family"], sort=True):
        st = metrics.family_stats(g.delta_acc)
        worst = g.loc[g.delta_acc.idxmax(), "condition"]
        rows.append({"dataset": ds, "model": model, "family": fam, "options": st["n_options"],
                     "clean top1 %": round(100 * float(g.ref_top1.iloc[0]), 2),
                     "mean ΔACC pp": round(100 * st["mean_delta"], 2), "max ΔACC pp": round(100 * st["max_delta"], 2),
                     "worst option": worst, "mean flip %": round(100 * float(g.flip_rate.mean()), 2)})
    return pd.DataFrame(rows)


def adversarial_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per (data set, model, attack condition): clean and robust accuracy (RobustBench,
    Wilson 95% interval), AR and WCAR (RobustART), the budget and the largest perturbation."""
    if summaries.empty or "robust_acc" not in summaries:
        return pd.DataFrame()
    s = order(summaries[summaries.robust_acc.notna()])
    if s.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "dataset": s.dataset, "model": s.model, "condition": s.condition, "n": s.n_images,
        "clean %": (100 * s.clean_acc).round(2), "robust acc %": (100 * s.robust_acc).round(2),
        "robust 95% CI": [f"[{100 * a:.1f}, {100 * b:.1f}]" for a, b in zip(s.robust_acc_ci_low, s.robust_acc_ci_high)],
        "AR %": (100 * s.attack_robustness).round(2), "WCAR %": (100 * s.wcar).round(2),
        "norm": s.norm, "eps": s.eps.round(6), "max pert": s.max_perturbation.round(6),
        "flags": [v or "-" for v in s.validity_raised],
    }).reset_index(drop=True)


# ---------------------------------------------------------------------- calibration (issue 16, item 3)
def has_calibration(summaries: pd.DataFrame) -> bool:
    """Whether any summary row records an ECE (summaries written before issue 16 have none)."""
    return not summaries.empty and "ece" in summaries and bool(summaries.ece.notna().any())


def calibration_table(summaries: pd.DataFrame, rank_by: str = "ece") -> pd.DataFrame:
    """``results show --by calibration``: per (data set, model, condition) top-1 %, expected
    calibration error (%, 15 bins, :mod:`robustbench_sys.metrics.calibration`), the reference's ECE,
    ΔECE = ECE − reference ECE (pp; positive = the condition is worse calibrated), NLL (nats) and
    ΔNLL.  Ranked within each (data set, condition) by ``rank_by`` (``"ece"`` or ``"nll"``), best
    (lowest) first (``rank``; ties share the lower rank); rows without that figure come last,
    unranked.  NaN where a figure is unknown (an NLL from per-image rows written before
    ``label_prob`` was stored).  Attack units are scored on the adversarial images: their ECE is
    the calibration under attack."""
    if rank_by not in ("ece", "nll"):
        raise ValueError(f"rank_by {rank_by!r}: expected 'ece' or 'nll'")
    if not has_calibration(summaries):
        return pd.DataFrame()
    s = summaries.copy()
    for c in ("ece", "nll", "ref_ece", "ref_nll"):
        s[c] = s[c].astype(float) if c in s else float("nan")
    s["_clean"] = s.condition != "clean"
    s["_rank"] = s.groupby(["dataset", "condition"])[rank_by].rank(method="min")
    s = s.sort_values(["dataset", "_clean", "family", "condition", "_rank", "model"], na_position="last")
    return pd.DataFrame({
        "dataset": s.dataset, "model": s.model, "condition": s.condition, "n": s.n_images,
        "rank": s._rank.astype("Int64"), "top1 %": (100 * s.top1).round(2),
        "ECE %": (100 * s.ece).round(2), "ref ECE %": (100 * s.ref_ece).round(2),
        "ΔECE pp": (100 * (s.ece - s.ref_ece)).round(2),
        "NLL": s.nll.round(4), "ΔNLL": (s.nll - s.ref_nll).round(4),
    }).reset_index(drop=True)


# ---------------------------------------------------------------------- deployments (issue 14, item 3)
_DEPLOY_COLS = ["dataset", "model", "condition", "deploy", "reference", "n", "delta_acc", "delta_ci_low",
                "delta_ci_high", "flip_rate", "latency_p50_ms", "latency_p95_ms", "throughput_ips",
                "speedup_throughput", "speedup_latency", "device", "threads", "batch_size", "load1", "cores",
                "shared_machine", "on_front"]


def deploy_noises(pipeline_json: str) -> list[str]:
    """The deploy-stage noises (stages called as ``deploy``: precision, backend, device) of a
    stored pipeline spec."""
    spec = json.loads(pipeline_json)
    return [spec[st.name] for st in pipeline_stages("model") if st.call == "deploy" and spec.get(st.name)]


def deploy_rows(summaries: pd.DataFrame) -> pd.DataFrame:
    """Per (data set, model): the reference (clean) row and every deploy condition (a pipeline
    with a deploy-stage noise), one tidy row each with ΔACC [CI], flip rate, the measured speed
    (:mod:`robustbench_sys.eval.speed`), the speed-up against the reference (throughput ratio
    ``throughput / reference throughput`` and latency ratio ``reference p50 / p50``; above 1 =
    faster) and ``on_front``: on the Pareto front of accuracy loss (ΔACC) vs throughput speed-up
    (:func:`robustbench_sys.results.pareto.pareto_front`).  With several reference rows (runs on
    several devices in one store) a condition is compared with the one measured on its device,
    else the first.  Speed figures are NaN where a unit has no measurement (an older store)."""
    from robustbench_sys.results.pareto import pareto_front

    if summaries.empty or "pipeline" not in summaries:
        return pd.DataFrame(columns=_DEPLOY_COLS)
    s = summaries.copy()
    for col in ("latency_p50_ms", "latency_p95_ms", "throughput_ips", "speed_batch_size", "speed_threads",
                "speed_load1", "speed_cores", "speed_shared_machine"):
        if col not in s:
            s[col] = float("nan")
    if "speed_device" not in s:
        s["speed_device"] = None
    noises_of = [deploy_noises(p) for p in s.pipeline]
    keep = [c == "clean" or bool(d) for c, d in zip(s.condition, noises_of)]
    s = s.assign(deploy_noise=[" + ".join(d) for d in noises_of])[keep]
    out: list[dict] = []
    for (ds, model), g in s.groupby(["dataset", "model"], sort=True):
        refs = g[g.condition == "clean"]
        rows = []
        for r in order(g).itertuples(index=False):
            same = refs[refs.speed_device == r.speed_device] if len(refs) > 1 else refs
            ref = (same if len(same) else refs).iloc[0] if len(refs) else None
            nan = float("nan")
            thr, p50 = float(r.throughput_ips), float(r.latency_p50_ms)
            rows.append({
                "dataset": ds, "model": model, "condition": r.condition, "deploy": r.deploy_noise or "-",
                "reference": r.condition == "clean", "n": int(r.n_images), "delta_acc": float(r.delta_acc),
                "delta_ci_low": float(r.delta_ci_low), "delta_ci_high": float(r.delta_ci_high),
                "flip_rate": float(r.flip_rate), "latency_p50_ms": p50, "latency_p95_ms": float(r.latency_p95_ms),
                "throughput_ips": thr,
                "speedup_throughput": thr / float(ref.throughput_ips) if ref is not None else nan,
                "speedup_latency": float(ref.latency_p50_ms) / p50 if ref is not None else nan,
                "device": r.speed_device, "threads": float(r.speed_threads), "batch_size": float(r.speed_batch_size),
                "load1": float(r.speed_load1), "cores": float(r.speed_cores),
                "shared_machine": bool(r.speed_shared_machine == 1)})
        front = {c for c, _, _ in pareto_front((x["condition"], x["delta_acc"], x["speedup_throughput"])
                                               for x in rows)}
        out.extend({**x, "on_front": x["condition"] in front} for x in rows)
    return pd.DataFrame(out, columns=_DEPLOY_COLS)


def deploy_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """``results show --by deploy``: per model the reference and every deploy condition with
    ΔACC pp [95% CI], flip %, latency p50 / p95 (ms, batch 1), throughput (img/s at the run's
    batch size), speed-up against the reference (throughput ratio and latency ratio), the device
    and thread count, the Pareto-front marker (``*``: no other option loses less accuracy and is
    faster) and ``shared`` when the figures were measured on a shared machine
    (:func:`robustbench_sys.eval.speed.is_shared`)."""
    r = deploy_rows(summaries)
    if r.empty:
        return pd.DataFrame()

    def num(v, fmt: str) -> str:
        return "-" if pd.isna(v) else format(v, fmt)

    return pd.DataFrame({
        "dataset": r.dataset, "model": r.model, "condition": r.condition, "deploy": r.deploy, "n": r.n,
        "ΔACC pp": (100 * r.delta_acc).round(2),
        "ΔACC 95% CI": [f"[{100 * a:+.1f}, {100 * b:+.1f}]" for a, b in zip(r.delta_ci_low, r.delta_ci_high)],
        "flip %": (100 * r.flip_rate).round(2),
        "p50 ms": [num(v, ".2f") for v in r.latency_p50_ms], "p95 ms": [num(v, ".2f") for v in r.latency_p95_ms],
        "img/s": [num(v, ".1f") for v in r.throughput_ips],
        "speed-up thr": [num(v, ".2f") + ("x" if pd.notna(v) else "") for v in r.speedup_throughput],
        "speed-up lat": [num(v, ".2f") + ("x" if pd.notna(v) else "") for v in r.speedup_latency],
        "device": [d if isinstance(d, str) and d else "-" for d in r.device],
        "threads": [num(v, ".0f") for v in r.threads],
        "front": ["*" if f else "" for f in r.on_front],
        "machine": [f"shared (load {x.load1:.1f} / {x.cores:.0f} cores)" if x.shared_machine
                    else ("-" if pd.isna(x.load1) else "ok") for x in r.itertuples(index=False)],
    }).reset_index(drop=True)


def _stage(pipeline_json: str, field: str) -> str | None:
    """A stage's noise name (without its family) in a stored pipeline spec."""
    return short_name(json.loads(pipeline_json)[field])


def imagenet_s_cells(summaries: pd.DataFrame) -> pd.DataFrame:
    """The ImageNet-S (systematic error) rows with their (decoder, resize) pair; the clean row
    is the pair of the model's own pipeline (the runner does not repeat it as a condition)."""
    s = summaries[(summaries.family == "imagenet-s") | (summaries.condition == "clean")]
    if s.empty or not (s.family == "imagenet-s").any():
        return pd.DataFrame()
    s = s.assign(decoder=[_stage(p, "decoder") for p in s.pipeline], resize=[_stage(p, "resize") for p in s.pipeline])
    keep = s.groupby(["dataset", "model"]).family.transform(lambda f: (f == "imagenet-s").any())
    return s[keep]


def imagenet_s_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """RobustART's ImageNet-S summary per (data set, model): top-1 mean and std over the decoder x
    resize pairs (the model's own pair included), max ΔACC and the pair that causes it."""
    cells = imagenet_s_cells(summaries)
    rows: list[dict] = []
    for (ds, model), g in (cells.groupby(["dataset", "model"], sort=True) if not cells.empty else []):
        acc = 100 * g.top1.to_numpy(dtype=float)
        worst = g.loc[g.delta_acc.idxmax()]
        rows.append({"dataset": ds, "model": model, "pairs": len(g), "n": int(g.n_images.min()),
                     "clean top1 %": round(100 * float(g.ref_top1.iloc[0]), 2),
                     "mean top1 %": round(float(acc.mean()), 2), "std top1 pp": round(float(acc.std(ddof=0)), 2),
                     "mean ΔACC pp": round(100 * float(g.delta_acc.mean()), 2),
                     "max ΔACC pp": round(100 * float(worst.delta_acc), 2),
                     "worst pair": f"{worst.decoder}+{worst.resize}"})
    return pd.DataFrame(rows)


def imagenet_s_matrix(summaries: pd.DataFrame, model: str, dataset: str | None = None) -> pd.DataFrame:
    """Top-1 (%) of one model as a decoder (rows) x resize (columns) matrix."""
    cells = imagenet_s_cells(summaries)
    cells = cells[(cells.model == model) & ((cells.dataset == dataset) if dataset else True)]
    if cells.empty:
        return pd.DataFrame()
    if cells.dataset.nunique() > 1:
        raise ValueError(f"model {model} has ImageNet-S results on several data sets "
                         f"({', '.join(sorted(cells.dataset.unique()))}); name one")
    m = cells.pivot_table(index="decoder", columns="resize", values="top1", aggfunc="first")
    return (100 * m).round(2).rename_axis(index="decoder \\ resize", columns=None).reset_index()


def natural_errors(g: pd.DataFrame, value: str = "top1") -> pd.DataFrame:
    """``corruption, severity, error`` rows from a model's natural-family summaries (error =
    1 - ``value``, e.g. ``top1`` or one of its interval bounds)."""
    # a natural-family row has a corrupt stage, or reads a released part (robustbench_sys.released)
    cs = [cast(str, _stage(p, "corrupt") or json.loads(p).get("released_corrupt")).rsplit("-", 1) for p in g.pipeline]
    return pd.DataFrame({"corruption": [c for c, _ in cs], "severity": [int(v) for _, v in cs],
                         "error": 1 - g[value].to_numpy(dtype=float)})


def natural_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """ImageNet-C figures per (data set, model): clean error, mCE and relative mCE over the 15
    benchmark corruptions (AlexNet-normalised, :mod:`robustbench_sys.metrics.natural`; shown when all
    15 x 5 are present), mean corruption error, and accuracy per severity (all corruptions)."""
    from robustbench_sys.metrics import natural as nm

    s = summaries[summaries.family.astype(str).str.startswith("natural")] if not summaries.empty else summaries
    rows = []
    for (ds, model), g in s.groupby(["dataset", "model"], sort=True):
        err = natural_errors(g)
        clean_err = 1 - float(g.ref_top1.iloc[0])
        have = set(zip(err.corruption, err.severity))
        full = all((c, k) in have for c in nm.BENCHMARK_CORRUPTIONS for k in nm.SEVERITIES)
        bench = err[err.corruption.isin(nm.BENCHMARK_CORRUPTIONS)]
        row = {"dataset": ds, "model": model, "n": int(g.n_images.min()), "corruptions": err.corruption.nunique(),
               "clean err %": round(100 * clean_err, 2),
               "mCE %": round(100 * nm.mce(bench), 2) if full else float("nan"),
               "rel. mCE %": (round(100 * nm.relative_mce(bench, clean_err), 2) if full and clean_err == clean_err
                              else float("nan")),   # NaN clean error: a released run with --clean-data none
               "mean corr. err %": round(100 * float(err.error.mean()), 2)}
        for k, e in err.groupby("severity").error:
            row[f"acc s{k} %"] = round(100 * (1 - float(e.mean())), 2)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- ImageNet-P (metrics.perturbation)
def imagenet_p_rows(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summaries of generated ImageNet-P variants (a ``flip_prob`` value), with ``source`` (the
    source data set) and ``perturbation`` (the variant: ``gaussian_noise_2``...) parsed from the data
    set name ``<source>-imagenet-p-<variant>``."""
    if summaries.empty or "flip_prob" not in summaries:
        return summaries.iloc[0:0].assign(source=[], perturbation=[])
    s = summaries[summaries.flip_prob.notna() & summaries.dataset.astype(str).str.contains("-imagenet-p-")]
    parts = s.dataset.astype(str).str.rsplit("-imagenet-p-", n=1)
    return s.assign(source=parts.str[0], perturbation=parts.str[1])


def imagenet_p_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, model, condition, perturbation): frames scored, top-1 over the frames,
    flip probability FP (%) and top-5 distance T5D (non-noise perturbations at difficulty 1)."""
    s = imagenet_p_rows(summaries)
    rows = [{"dataset": r.source, "model": r.model, "condition": r.condition, "perturbation": r.perturbation,
             "frames": int(r.n_images), "top1 %": round(100 * float(r.top1), 2),
             "FP %": round(100 * float(r.flip_prob), 3), "T5D": round(float(r.top5_dist), 4)}
            for r in s.itertuples()]
    out = pd.DataFrame(rows, columns=["dataset", "model", "condition", "perturbation", "frames", "top1 %", "FP %",
                                      "T5D"])
    return out.sort_values(["dataset", "model", "condition", "perturbation"], kind="stable").reset_index(drop=True)


def imagenet_p_baseline(summaries: pd.DataFrame, model: str) -> dict[str, tuple[dict, dict]]:
    """Per source data set, ``model``'s ({perturbation: FP}, {perturbation: T5D}) on the same generated
    sequences (its own pipeline, condition ``clean``): the normalisers of mFP / mT5D when the store
    holds the baseline (the paper's is AlexNet, e.g. ``torchvision:alexnet``).  ValueError (one line)
    when ``model`` has no ImageNet-P result there."""
    s = imagenet_p_rows(summaries)
    s = s[(s.model == model) & (s.condition == "clean")] if not s.empty else s
    if s.empty:
        have = sorted(set(imagenet_p_rows(summaries).model)) if not summaries.empty else []
        raise ValueError(f"--baseline-model {model}: no clean ImageNet-P result of that model in this store "
                         f"(models with ImageNet-P results: {', '.join(have) or 'none'}); evaluate it on the same "
                         "generated sequences first (the paper's baseline is AlexNet: --model torchvision:alexnet)")
    return {src: (dict(zip(g.perturbation, g.flip_prob.astype(float))),
                  dict(zip(g.perturbation, g.top5_dist.astype(float))))
            for src, g in s.groupby("source", sort=True)}


def imagenet_p_summary(summaries: pd.DataFrame, fp_baseline=None, t5d_baseline=None,
                       baseline: dict[str, tuple[dict, dict]] | None = None) -> pd.DataFrame:
    """Per (source, model, condition): the benchmark perturbations present, mean FP (%) and mean T5D
    over them, and mFP / mT5D (%) normalised by ``fp_baseline`` / ``t5d_baseline`` ({perturbation:
    value}) when given and all 10 are present; the normalisers default to none (AlexNet's published
    values are not included: :data:`robustbench_sys.metrics.perturbation.ALEXNET_FP`), so no mFP.
    ``baseline`` (:func:`imagenet_p_baseline`): normalisers per source data set, measured on the same
    sequences, used where given."""
    from robustbench_sys.metrics import perturbation as pm

    s = imagenet_p_rows(summaries)
    s = s[s.perturbation.isin(pm.BENCHMARK_PERTURBATIONS)] if not s.empty else s
    rows = []
    for (ds, model, cond), g in (s.groupby(["source", "model", "condition"], sort=True) if not s.empty else []):
        fp = dict(zip(g.perturbation, g.flip_prob.astype(float)))
        t5 = dict(zip(g.perturbation, g.top5_dist.astype(float)))
        full = all(p in fp for p in pm.BENCHMARK_PERTURBATIONS)
        fp_base, t5_base = fp_baseline, t5d_baseline
        if baseline is not None:
            fp_base, t5_base = baseline.get(ds, ({}, {}))
            full = full and all(p in fp_base for p in pm.BENCHMARK_PERTURBATIONS)
        row = {"dataset": ds, "model": model, "condition": cond, "perturbations": len(fp),
               "mean FP %": round(100 * sum(fp.values()) / len(fp), 3),
               "mean T5D": round(sum(t5.values()) / len(t5), 4)}
        if fp_base is not None:
            row["mFP %"] = round(100 * pm.mean_flip_probability(fp, fp_base), 2) if full else float("nan")
        if t5_base is not None:
            row["mT5D %"] = round(100 * pm.mean_top5_distance(t5, t5_base), 2) if full else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- audit (robustbench_sys.audit)
_AUDIT_COLS = ["dataset", "dataset_fingerprint", "model", "stack_id", "stack", "part", "index", "stage", "noise",
               "step", "n", "ref_top1", "top1", "delta_acc", "delta_ci_low", "delta_ci_high", "flip_rate",
               "step_delta", "unit_id", "note"]


def display_value(stage: str, value: str | None) -> str:
    """A stage value for display: without its family, except where the stage spans several
    families (``deploy``: ``precision/int8-ort-qdq``)."""
    if value is None:
        return "-"
    return value if len(get_stage(stage).families) > 1 else str(short_name(value))


_NAME = re.compile(r"^audit/(?P<id>[0-9a-f]{8})/(?:(?P<stack>stack)|alone:(?P<ai>\d+)-(?P<astage>[a-z]+)"
                   r"|path:(?P<pi>\d+)-(?P<pstages>[a-z]+(?:\+[a-z]+)*))$")


@dataclass(frozen=True)
class AuditName:
    """A parsed audit condition name."""

    stack_id: str
    part: str                  # "stack", "alone" or "path"
    index: int                 # 1-based position in the stack (0 for "stack")
    stages: tuple[str, ...]    # alone: (its stage,); path: the stages so far; stack: ()


def parse_condition(name: str) -> AuditName | None:
    """The parts of an audit condition name, or None for any other condition."""
    m = _NAME.match(str(name))
    if not m:
        return None
    if m["stack"]:
        return AuditName(m["id"], "stack", 0, ())
    if m["ai"]:
        return AuditName(m["id"], "alone", int(m["ai"]), (m["astage"],))
    stages = tuple(m["pstages"].split("+"))
    if len(stages) != int(m["pi"]):
        return None
    return AuditName(m["id"], "path", int(m["pi"]), stages)


def audit_rows(summaries: pd.DataFrame) -> pd.DataFrame:
    """The audits in the stored summaries, one tidy row per (data set, model, stack, part):
    ``part`` ``stack`` (the whole stack), ``alone`` (stage ``index`` alone) and ``path``
    (stages 1..``index``, with ``step_delta`` the ΔACC the step adds to the one before: the
    waterfall).  The order and the stages come from the condition names, the noises from the
    stored pipelines (:mod:`robustbench_sys.audit`), so nothing but the summaries is needed.
    A part the runner skipped because its pipeline *is* the model's reference gets ΔACC 0 by
    definition; one missing for another reason (skipped, not run yet) has NaN figures."""

    if summaries.empty or "condition" not in summaries:
        return pd.DataFrame(columns=_AUDIT_COLS)
    names = [parse_condition(c) if f == "audit" else None for c, f in zip(summaries.condition, summaries.family)]
    keep = [p is not None for p in names]
    s = summaries[keep].assign(_p=[p for p in names if p is not None])
    if s.empty:
        return pd.DataFrame(columns=_AUDIT_COLS)
    s = s.assign(stack_id=[p.stack_id for p in s._p])
    if "created_at" in s:
        s = s.sort_values("created_at", kind="stable")
    out = []
    for _, g in s.groupby(["dataset_fingerprint", "model", "stack_id"], sort=True):
        g = g.drop_duplicates("condition", keep="last")
        out.extend(_audit_group(g, display_value))
    return pd.DataFrame(out, columns=_AUDIT_COLS)


def _audit_group(g: pd.DataFrame, display_value) -> list[dict]:
    parts = {(p.part, p.index): r for p, (_, r) in zip(g._p, g.iterrows())}
    order: dict[int, str] = {}
    for p in g._p:
        if p.part == "alone":
            order[p.index] = p.stages[0]
        elif p.part == "path":
            order.update(enumerate(p.stages, 1))
    n = max(order, default=0)
    stages = [order.get(i, "?") for i in range(1, n + 1)]

    def value(i: int) -> str | None:
        """The noise of stage i, from the stored pipelines that hold it."""
        st = stages[i - 1]
        for key in [("stack", 0)] + [("path", k) for k in range(n, i - 1, -1)] + [("alone", i)]:
            if key in parts and st != "?":
                return json.loads(parts[key].pipeline).get(st)
        return None

    values = [value(i) for i in range(1, n + 1)]
    ref = json.loads(g.reference_pipeline.iloc[0])
    own = [st != "?" and v is not None and ref.get(st) == v for st, v in zip(stages, values)]
    first = g.iloc[0]
    n_img = int(g.n_images.max())
    base = {"dataset": first.dataset, "dataset_fingerprint": first.dataset_fingerprint, "model": first.model,
            "stack_id": first.stack_id,
            "stack": " > ".join(f"{st}={display_value(st, v) if st != '?' else v}" for st, v in zip(stages, values)),
            "ref_top1": float(first.ref_top1)}

    def row(part: str, i: int, stage: str, noise: str, step: str, is_own: bool) -> dict:
        r = parts.get((part, i))
        d = {**base, "part": part, "index": i, "stage": stage, "noise": noise, "step": step}
        if r is not None:
            d.update(n=int(r.n_images), top1=float(r.top1), delta_acc=float(r.delta_acc),
                     delta_ci_low=float(r.delta_ci_low), delta_ci_high=float(r.delta_ci_high),
                     flip_rate=float(r.flip_rate), unit_id=r.unit_id, note="")
        elif is_own:
            d.update(n=n_img, top1=base["ref_top1"], delta_acc=0.0, delta_ci_low=0.0, delta_ci_high=0.0,
                     flip_rate=0.0, unit_id=None, note="the model's own pipeline (ΔACC 0 by definition)")
        else:
            nan = float("nan")
            d.update(n=n_img, top1=nan, delta_acc=nan, delta_ci_low=nan, delta_ci_high=nan, flip_rate=nan,
                     unit_id=None, note="no result (skipped or not run; see the run's log)")
        return d

    def shown(i: int) -> str:
        st = stages[i - 1]
        return display_value(st, values[i - 1]) if st != "?" and values[i - 1] is not None else "?"

    rows = [row("stack", 0, "+".join(stages), " > ".join(shown(i) for i in range(1, n + 1)),
                f"whole stack ({n} stage{'s' if n != 1 else ''})", all(own))]
    rows += [row("alone", i, stages[i - 1], shown(i), f"{stages[i - 1]} alone", own[i - 1]) for i in range(1, n + 1)]
    prev = 0.0
    for i in range(1, n + 1):
        r = row("path", i, stages[i - 1], shown(i), f"{i} " + ("" if i == 1 else "+") + stages[i - 1], all(own[:i]))
        r["step_delta"] = r["delta_acc"] - prev
        prev = r["delta_acc"]
        rows.append(r)
    for r in rows:
        r.setdefault("step_delta", float("nan"))
    return rows


def _audit_groups(rows: pd.DataFrame):
    return rows.groupby(["dataset_fingerprint", "model", "stack_id"], sort=True) if not rows.empty else []


def audit_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """The audits of the stored summaries (``results show --by audit``): per (data set, model,
    stack) the whole stack, each stage alone and the cumulative path, with ΔACC pp [95% CI],
    flip rate and, on the path, the ΔACC each step adds."""
    return _audit_display(audit_rows(summaries))


def _audit_display(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "dataset": rows.dataset, "model": rows.model, "stack": rows.stack_id, "part": rows.part,
        "step": rows.step, "noise": rows.noise, "n": rows.n,
        "ΔACC pp": (100 * rows.delta_acc).round(2),
        "ΔACC 95% CI": [f"[{100 * a:+.1f}, {100 * b:+.1f}]" if pd.notna(a) else "-"
                        for a, b in zip(rows.delta_ci_low, rows.delta_ci_high)],
        "flip %": (100 * rows.flip_rate).round(2),
        "step ΔACC pp": (100 * rows.step_delta).round(2),
        "note": rows.note,
    }).reset_index(drop=True)


def audit_verdict(rows: pd.DataFrame) -> str:
    """The verdict line of one audit (the :func:`audit_rows` of one data set, model and stack):
    the whole stack's ΔACC [95% CI] and flip rate, whether the 95% interval excludes 0
    (distinguishable from zero), and the stage that costs most alone (largest ΔACC alone; on a
    tie the larger flip rate, then the first in the stack's order)."""
    first = rows.iloc[0]
    head = f"verdict: {first.model} on {first.dataset}: "
    whole = rows[rows.part == "stack"].iloc[0]
    if pd.isna(whole.delta_acc):
        text = head + "no result for the whole stack (skipped or not run)"
    else:
        lo, hi = whole.delta_ci_low, whole.delta_ci_high
        sig = ("distinguishable from zero (the 95% CI excludes 0)" if lo > 0 or hi < 0 else
               f"not distinguishable from zero on {int(whole.n)} images (the 95% CI includes 0)")
        text = (head + f"whole stack ΔACC {100 * whole.delta_acc:+.1f} pp [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}], "
                f"flip {100 * whole.flip_rate:.1f}%, {sig}")
    alone = rows[(rows.part == "alone") & rows.delta_acc.notna()].sort_values("index")
    if alone.empty:
        return text + "; no per-stage result"
    worst = alone.sort_values(["delta_acc", "flip_rate", "index"], ascending=[False, False, True],
                              kind="stable").iloc[0]
    return text + (f"; costliest stage alone: {worst.stage}={worst.noise} "
                   f"(ΔACC {100 * worst.delta_acc:+.1f} pp, flip {100 * worst.flip_rate:.1f}%)")


def audit_verdicts(summaries: pd.DataFrame) -> list[str]:
    """One :func:`audit_verdict` line per (data set, model, stack) in the summaries."""
    return [audit_verdict(g.sort_values(["part", "index"])) for _, g in _audit_groups(audit_rows(summaries))]


def audit_report(summaries: pd.DataFrame, fmt: str = "table") -> str:
    """``results show --by audit``: per (data set, model, stack) a header naming the stack in
    its order, the table (whole stack, each stage alone, cumulative path) and the verdict line;
    ``csv``: the one :func:`audit_table`."""
    if fmt == "csv":
        return render(audit_table(summaries), fmt)
    rows = audit_rows(summaries)
    if rows.empty:
        return "(no audit results: run 'robustbench-sys audit --model M --stack ... --data DIR')"
    blocks = []
    for _, g in _audit_groups(rows):
        first = g.iloc[0]
        t = _audit_display(g).drop(columns=["dataset", "model", "stack"])
        if not (t.note != "").any():
            t = t.drop(columns="note")
        blocks.append(f"audit {first.stack_id}: {first.model} on {first.dataset} (n={int(g.n.max())}, reference "
                      f"top-1 {100 * first.ref_top1:.1f}%)\nstack: {first['stack']}\n"
                      + render(t.astype(object).where(t.notna(), "-"), fmt) + "\n" + audit_verdict(g))
    return "\n\n".join(blocks)


def render(df: pd.DataFrame, fmt: str = "table") -> str:
    if df.empty:
        return "(no results)"
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        cols = list(df.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
        return "\n".join(lines)
    return df.to_string(index=False)
