"""The straightforward (row by row) leaderboard, kept as the reference that
tests/test_leaderboard.py compares the vectorised :func:`robustbench_sys.results.leaderboard.build`
against: per-model ``groupby`` loops, every pipeline spec parsed where it is used, one Python
iteration per (model, option).  Slow on a large store, obviously right on a small one.  Only the
parts that the vectorised build replaced are here; the rank rule, the spec reader and the
overall table are the library's own (they are not what is being checked)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustbench_sys.results.leaderboard import (
    CLEAN,
    IMAGENET_S,
    NATURAL,
    UNRANKED,
    Leaderboard,
    _mce_entry,
    _overall,
    _spec,
    _tags,
    check_columns,
    condition_changes,
    is_reference_option,
    rank_family,
    ranked_data_set,
)


def model_tags(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per model, one JSON parse per summary row."""
    if summaries.empty:
        return pd.DataFrame(columns=["model", "model family", "params (M)", "training"])
    rows = {}
    col = summaries["tags"] if "tags" in summaries else pd.Series([None] * len(summaries))
    for m, t in zip(summaries["model"], col):
        t = _tags(t)
        if m not in rows or t:
            rows[m] = {"model": m, "model family": str(t.get("family", "")),
                       "params (M)": float(t["params_m"]) if "params_m" in t else float("nan"),
                       "training": str(t.get("training", ""))}
    return pd.DataFrame(list(rows.values()))


def _dedupe(s: pd.DataFrame, apart: list[dict]) -> pd.DataFrame:
    if "created_at" in s:
        s = s.sort_values("created_at", kind="stable")
    dup = s.duplicated(["model", "condition", "dataset_fingerprint"], keep="last")
    for r in s[dup].itertuples():
        apart.append({"model": r.model, "family": r.family, "dataset": r.dataset,
                      "reason": f"condition {r.condition}: superseded by a newer result for the same "
                                "model, condition and data set"})
    return s[~dup]



def with_reference_options(s: pd.DataFrame) -> pd.DataFrame:
    """Row by row: for each (family, data set), each clean row, each option."""
    if s.empty or "reference_pipeline" not in s or "pipeline" not in s:
        return s
    add = []
    clean = s[s.condition == CLEAN].drop_duplicates(["model", "dataset_fingerprint"], keep="last")
    for (fam, fp), g in s[s.condition != CLEAN].groupby(["family", "dataset_fingerprint"], sort=False):
        by_model = {m: set(x.condition) for m, x in g.groupby("model")}
        options = g.drop_duplicates("condition")
        changes = {c: condition_changes(x) for c, x in g.groupby("condition", sort=False)}
        for cr in clean[clean.dataset_fingerprint == fp].itertuples(index=False):
            if cr.model not in by_model:
                continue
            ref = _spec(cr.reference_pipeline)
            if ref is None:
                continue
            for o in options.itertuples(index=False):
                if o.condition in by_model[cr.model]:
                    continue
                ch = changes.get(o.condition)
                if not ch or not is_reference_option(ref, ch):
                    continue
                row = cr._asdict()
                row.update({"condition": o.condition, "family": fam,
                            "suite": getattr(o, "suite", getattr(cr, "suite", None)),
                            "suite_version": o.suite_version, "delta_acc": 0.0, "delta_ci_low": 0.0,
                            "delta_ci_high": 0.0, "flip_rate": 0.0, "ref_top1": cr.top1,
                            "reference_option": True})
                add.append(row)
    if not add:
        return s
    out = pd.concat([s.assign(reference_option=False) if "reference_option" not in s else s,
                     pd.DataFrame(add)], ignore_index=True)
    out["reference_option"] = out.reference_option.fillna(False).astype(bool)
    return out


def _family_entries(fam: str, g: pd.DataFrame) -> pd.DataFrame:
    """One row per model, one pandas groupby group at a time."""
    rows = []
    for model, m in g.groupby("model", sort=True):
        n = int(m.n_images.min())
        key_n = (n, int(m.n_images.max()))
        suite_v = ",".join(sorted(map(str, set(m.suite_version))))
        conds = tuple(sorted(m.condition))
        created = str(m["created_at"].max()) if "created_at" in m else ""
        row = {"model": model, "family": fam, "n": n, "k_n": key_n, "k_suite": suite_v,
               "k_conds": conds if fam != CLEAN else (), "k_created": created,
               "dataset": m.dataset.iloc[0]}
        if fam == CLEAN:
            r = m.iloc[0]
            row.update({"top1 %": 100 * r.top1, "top1 lo": 100 * r.top1_ci_low, "top1 hi": 100 * r.top1_ci_high})
        else:
            w = m.loc[m.delta_acc.idxmax()]
            row.update({
                "options": len(m),
                "mean ΔACC pp": 100 * float(m.delta_acc.mean()),
                "mean lo": 100 * float(m.delta_ci_low.mean()), "mean hi": 100 * float(m.delta_ci_high.mean()),
                "max ΔACC pp": 100 * float(w.delta_acc),
                "max lo": 100 * float(w.delta_ci_low), "max hi": 100 * float(w.delta_ci_high),
                "worst option": w.condition,
                "mean flip %": 100 * float(m.flip_rate.mean()) if "flip_rate" in m else float("nan"),
            })
            if "robust_acc" in m and m.robust_acc.notna().all():   # adversarial family: RobustBench / RobustART
                row.update({"robust acc %": 100 * float(m.robust_acc.min()),
                            "WCAR %": 100 * float(m.wcar.min()) if "wcar" in m else float("nan")})
                # AutoAttack-style validity flags raised on any option (eval.attack: summary_fields and
                # write_worst_case); they change no figure, they say which should not be trusted
                raised = m.validity_raised.dropna() if "validity_raised" in m else []
                row["validity"] = ",".join(sorted({n for v in raised for n in str(v).split(",") if n}))
            if fam == IMAGENET_S:   # RobustART: std of top-1 over the decoder x resize pairs
                top1 = m.top1.to_numpy(dtype=float)
                own = "reference_option" in m and bool(m.reference_option.any())   # own pair already a row
                row["std top1 pp"] = 100 * float(np.std(top1 if own else np.append(top1, m.ref_top1.iloc[0])))
            if fam == NATURAL:
                row.update(_mce_entry(m))
        rows.append(row)
    return pd.DataFrame(rows)



def build(summaries: pd.DataFrame, *, dataset_fingerprint: str | None = None,
          families: list[str] | None = None) -> Leaderboard:
    """The build as it was before it was vectorised."""
    lb = Leaderboard()
    if summaries is None or summaries.empty:
        return lb
    check_columns(summaries)
    apart: list[dict] = []
    s = _dedupe(summaries, apart)
    if families:
        keep = set(families) | {CLEAN}
        s = s[s.family.isin(keep)]
    else:   # an audit measures one user's own stack per model: a report, not a ranking
        s = s[~s.family.isin(UNRANKED)]
    if s.empty:
        return lb
    fp, ds_name = ranked_data_set(s, dataset_fingerprint)
    lb.dataset, lb.dataset_fingerprint = ds_name, fp
    for (model, fam, ds, ofp), _ in s[s.dataset_fingerprint != fp].groupby(
            ["model", "family", "dataset", "dataset_fingerprint"], sort=True):
        apart.append({"model": model, "family": fam, "dataset": ds,
                      "reason": f"other data set (fingerprint {ofp}); ranked: {ds_name} ({fp})"})
    s = with_reference_options(s[s.dataset_fingerprint == fp])
    tags = model_tags(s)

    fams = sorted(set(s.family), key=lambda f: (f != CLEAN, f))
    if families:
        fams = [f for f in fams if f in families]
    for fam in fams:
        lb.families[fam] = rank_family(fam, _family_entries(fam, s[s.family == fam]), ds_name, tags, apart)

    lb.overall = _overall(lb.families, apart, ds_name)
    lb.apart = pd.DataFrame(apart, columns=["model", "family", "dataset", "reason"])
    return lb

