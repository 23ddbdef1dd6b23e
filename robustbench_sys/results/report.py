"""Tables from the results store: per-condition rows and SysNoise-style family aggregates."""

from __future__ import annotations

import json
from typing import cast

import pandas as pd

from noises.stages import short_name

from robustbench_sys.metrics import paired as metrics


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
    s = summaries[summaries.condition != "clean"]
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
    rows = []
    for (ds, model), g in cells.groupby(["dataset", "model"], sort=True):
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
    # a natural-family row always has a corrupt stage
    cs = [cast(str, _stage(p, "corrupt")).rsplit("-", 1) for p in g.pipeline]
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
               "rel. mCE %": round(100 * nm.relative_mce(bench, clean_err), 2) if full else float("nan"),
               "mean corr. err %": round(100 * float(err.error.mean()), 2)}
        for k, e in err.groupby("severity").error:
            row[f"acc s{k} %"] = round(100 * (1 - float(e.mean())), 2)
        rows.append(row)
    return pd.DataFrame(rows)


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
