"""Leaderboards computed from the stored summaries only (no per-image rows are read).

Figures
-------
Every ranked figure carries its number of images ``n`` and a 95% interval:

- ``clean``: top-1 accuracy (higher is better) with the stored Wilson interval.
- every other family (system noise: decoder, color, resize, precision, backend, graph, ...;
  natural corruptions and adversarial attacks are ranked the same way when their families are
  in the store): **mean ΔACC** over the family's options (lower is better; the rank metric) and
  **max ΔACC** (the worst option; ranked too, shown next to it).  Adversarial families also show
  ``robust acc %`` (RobustBench robust accuracy of the strongest option) and ``WCAR %``
  (RobustART's worst-case attack robustness, the lowest over the family's budgets), and
  ``validity flags``: ⚠ and the names of the AutoAttack-style validity flags raised on any of
  the model's options (black-box attack lowering robust accuracy, robust accuracy rising with
  the budget, a transfer attack beating the white-box one, ...); flags change no figure.
- ``imagenet-s`` (decoder x resize pairs) also shows RobustART's std of top-1 over the pairs
  (the model's own pair, its clean run, included).
- ``natural`` (ImageNet-C, all 15 x 5 present) is ranked by **mCE** instead (AlexNet-normalised,
  :mod:`robustbench_sys.metrics.natural`), with a conservative interval from the per-condition
  top-1 Wilson bounds (CE is monotone in each error).
  The interval of the mean ΔACC is the mean of the options' interval bounds.  The options are
  evaluated on the same images, so they are correlated; the standard deviation of an average is
  at most the average of the standard deviations, hence this interval is never narrower than the
  exact one would be (it is conservative).  The interval of the max ΔACC is the stored paired
  bootstrap interval of the worst option.

Ranks and ties (the "interval rank")
------------------------------------
Within one comparable group a model's rank is ``1 + the number of models that are clearly
better``, where *clearly better* means the two 95% intervals do not overlap: for a higher-is-better
figure ``other.ci_low > model.ci_high``; for a lower-is-better one ``other.ci_high < model.ci_low``.
Consequences: the leader has rank 1, and every model whose interval overlaps the leader's also
has rank 1 (it shares the leader's rank); models with equal rank are reported as tied (``tied``
column True).  Rows are ordered by rank, then by the point estimate.  This is the rule used by
LMSYS's Chatbot Arena ("statistically better" counting); it never splits models the data
cannot separate, and it is a true ranking (a model clearly worse than another always gets a
larger rank).

Comparability
-------------
Only results measured the same way are ranked together.  The ranked data set is the data set
fingerprint passed in, else the one with the most summary rows.  Within a family a model's
result is comparable to the ranked group when it has the same ``dataset_fingerprint``, the same
``n_images`` (images evaluated without error), the same ``suite_version`` and, for the noise
families, the same set of conditions (a mean over other options is a different number).  The
ranked group of a family is the largest such group (ties broken by the most recent result).
Everything else is listed apart (:attr:`Leaderboard.apart`) with the reason; when the same
(model, condition, data set) was stored twice the newest result is used and the older one is
listed apart as superseded.  An option a model skipped because it is its own reference pipeline
counts as ΔACC 0 (:func:`with_reference_options`); which options those are is learned from the
stored rows alone (the other models' ``pipeline`` vs ``reference_pipeline``), never from suite
files, so a stored ranking does not change when a suite file is edited or deleted.

Overall rank
------------
The overall figure of a model is its mean interval rank over the families it is ranked in;
only families in which *every* model of the overall table is ranked are used, so all models
are averaged over the same families (models ranked in fewer families are listed apart for the
overall table, with the missing families named).  Overall places are competition ranks of the
mean rank (equal mean ranks share a place and are marked tied).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robustbench_sys.noises.stages import full_key, pipeline_stages
from robustbench_sys.results import store

CLEAN = "clean"
#: marks an adversarial row with raised validity flags (column ``validity flags``)
FLAG_MARK = "⚠"
IMAGENET_S = "imagenet-s"
NATURAL = "natural"
REQUIRED = ("model", "condition", "family", "dataset_fingerprint", "n_images", "suite_version",
            "top1", "top1_ci_low", "top1_ci_high", "delta_acc", "delta_ci_low", "delta_ci_high")


@dataclass
class Leaderboard:
    """Result of :func:`build`: one ranked frame per family, the overall frame, and the rest."""

    dataset: str | None = None
    dataset_fingerprint: str | None = None
    families: dict[str, pd.DataFrame] = field(default_factory=dict)
    overall: pd.DataFrame = field(default_factory=pd.DataFrame)
    apart: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["model", "family", "dataset",
                                                                              "reason"]))

    @property
    def empty(self) -> bool:
        return not self.families


# ---------------------------------------------------------------------- reading
#: the one summary reader (kept here by name for older callers)
read_summaries = store.read_summaries


# ---------------------------------------------------------------------- interval ranks
def interval_rank(low, high, higher_is_better: bool) -> np.ndarray:
    """``1 + number of others whose interval lies entirely on the better side`` (see module doc)."""
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if higher_is_better:
        better = lo[None, :] > hi[:, None]       # [i, j]: j clearly better than i
    else:
        better = hi[None, :] < lo[:, None]
    return 1 + better.sum(axis=1)


def _rank_frame(df: pd.DataFrame, value: str, low: str, high: str, higher_is_better: bool,
                prefix: str = "") -> pd.DataFrame:
    df = df.copy()
    r = interval_rank(df[low], df[high], higher_is_better) if len(df) else np.array([], dtype=int)
    df[prefix + "rank"] = r.astype(int)
    counts = pd.Series(r).value_counts()
    df[prefix + "tied"] = [bool(counts[x] > 1) for x in r]
    return df


# ---------------------------------------------------------------------- preparation
def _tags(s: str | None) -> dict:
    try:
        t = json.loads(s) if isinstance(s, str) and s else {}
        return t if isinstance(t, dict) else {}
    except ValueError:
        return {}


def model_tags(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per model: model family, params (M), training tag (from the card tags)."""
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


def _spec(text) -> dict | None:
    """A stored pipeline spec (JSON) with every stage value as a full noise key, so a spec
    written with bare names (an older store: ``"pil-bilinear"``) compares equal to the same
    pipeline written with full keys; None when there is none or it cannot be read."""
    try:
        d = json.loads(text) if isinstance(text, str) and text else None
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    for st in pipeline_stages():
        if isinstance(d.get(st.name), str):
            try:
                d[st.name] = full_key(st.name, d[st.name])
            except ValueError:      # a bare name of a stage that spans families: keep it as stored
                pass
    return d


def condition_changes(rows: pd.DataFrame) -> dict[str, dict] | None:
    """What a condition sets, learned from the stored rows of the models that ran it: for each
    row, the stages whose value in its ``pipeline`` differs from its ``reference_pipeline`` (the
    condition certainly overrides those, with that value).  ``{model: {stage: value}}``; None
    when no row shows a change (an attack, whose pipeline is the reference one, or rows without
    specs)."""
    if "pipeline" not in rows or "reference_pipeline" not in rows:
        return None
    out = {}
    for model, pipe, ref in zip(rows.model, rows.pipeline, rows.reference_pipeline):
        p, r = _spec(pipe), _spec(ref)
        if p is None or r is None:
            continue
        changed = {k: v for k, v in p.items() if k not in r or r[k] != v}
        if changed:
            out[model] = changed
    return out or None


def is_reference_option(ref: dict, changes: dict[str, dict]) -> bool:
    """True when a model with reference pipeline ``ref`` would have skipped the condition
    whose ``changes`` (:func:`condition_changes`) other models' rows show: on every stage the
    condition was seen to set, ``ref`` already has that value (the runner skips a condition
    whose pipeline equals the model's reference, ΔACC 0 by definition)."""
    return all(k in ref and ref[k] == v for ch in changes.values() for k, v in ch.items())


def with_reference_options(s: pd.DataFrame) -> pd.DataFrame:
    """Add, for each model, the options of a family that the runner skipped because they *are*
    the model's reference pipeline (e.g. ``resize/pil-bilinear`` for a bilinear model): ΔACC 0,
    interval [0, 0], flip rate 0 by definition.  Every model of a family then has the same set
    of options (mean ΔACC over the same options, SysNoise's convention), so a bilinear and a
    bicubic model can be ranked together.  Marked ``reference_option = True``.

    Everything comes from the stored rows (no suite file is read: editing or deleting one after
    a run never changes a stored ranking).  A condition of the family that model A lacks is A's
    reference option when the rows of the models that ran it (same family and data set) show
    it changing stages that A's reference pipeline already has at those values
    (:func:`condition_changes`, :func:`is_reference_option`); A's reference pipeline is the
    ``reference_pipeline`` of its clean row.  Rows lacking the ``pipeline`` /
    ``reference_pipeline`` columns are left as they are."""
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
    """One row per model for one family: figures, intervals and the comparability key."""
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


def _mce_entry(m: pd.DataFrame) -> dict:
    """mCE (%) of one model's natural-family rows with a conservative 95% interval: CE_c is
    monotone in each error, so plugging every error's interval bound (1 - top-1 Wilson bound) gives
    bounds that hold whenever all errors are inside their intervals.  NaN unless all 15 x 5 are
    present (mCE is only defined over the full benchmark)."""
    from robustbench_sys.metrics import natural as nm
    from robustbench_sys.results.report import natural_errors

    try:
        vals = [100 * nm.mce(natural_errors(m, col)) for col in ("top1", "top1_ci_high", "top1_ci_low")]
    except nm.MetricsError:
        return {"mCE %": float("nan"), "mCE lo": float("nan"), "mCE hi": float("nan")}
    return {"mCE %": vals[0], "mCE lo": vals[1], "mCE hi": vals[2]}


def _why_not(e, ref) -> str:
    why = []
    if e.k_n != ref.k_n:
        why.append(f"n_images {e.n} differs from the ranked group's {ref.n}")
    if e.k_suite != ref.k_suite:
        why.append(f"suite_version {e.k_suite} differs from the ranked group's {ref.k_suite}")
    if e.k_conds != ref.k_conds:
        missing = sorted(set(ref.k_conds) - set(e.k_conds))
        extra = sorted(set(e.k_conds) - set(ref.k_conds))
        part = []
        if missing:
            part.append(f"missing {len(missing)} condition(s) ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''})")
        if extra:
            part.append(f"{len(extra)} extra condition(s) ({', '.join(extra[:3])}{'…' if len(extra) > 3 else ''})")
        why.append("other set of conditions: " + "; ".join(part))
    return "; ".join(why) or "not comparable"


# ---------------------------------------------------------------------- build
#: families kept out of the ranking unless asked for by name (``--family audit``)
UNRANKED = ("audit",)


def build(summaries: pd.DataFrame, *, dataset_fingerprint: str | None = None,
          families: list[str] | None = None) -> Leaderboard:
    """Rank the models of a summaries frame (``ResultsStore.summaries()``); see the module doc."""
    lb = Leaderboard()
    if summaries is None or summaries.empty:
        return lb
    missing = [c for c in REQUIRED if c not in summaries]
    if missing:
        raise ValueError(f"summaries lack column(s) {missing}; re-run the evaluation with this version")
    apart: list[dict] = []
    s = _dedupe(summaries, apart)
    if families:
        keep = set(families) | {CLEAN}
        s = s[s.family.isin(keep)]
    else:   # an audit measures one user's own stack per model: a report, not a ranking
        s = s[~s.family.isin(UNRANKED)]
    if s.empty:
        return lb
    counts = s.dataset_fingerprint.value_counts()
    fp = dataset_fingerprint if dataset_fingerprint is not None else counts.index[0]
    if fp not in set(s.dataset_fingerprint):
        raise ValueError(f"data set fingerprint {fp} is not in the store; have {', '.join(counts.index)}")
    ds_name = s.loc[s.dataset_fingerprint == fp, "dataset"].iloc[0]
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
        e = _family_entries(fam, s[s.family == fam])
        e["k_key"] = [repr((a, b, c)) for a, b, c in zip(e.k_n, e.k_suite, e.k_conds)]
        cand = pd.DataFrame({"key": e.k_key, "size": e.k_key.map(e.k_key.value_counts()),
                             "newest": e.groupby("k_key")["k_created"].transform("max")})
        best_key = cand.sort_values(["size", "newest", "key"], ascending=[False, False, True]).key.iloc[0]
        ref = e[e.k_key == best_key].iloc[0]
        for r in e[e.k_key != best_key].itertuples():
            apart.append({"model": r.model, "family": fam, "dataset": ds_name, "reason": _why_not(r, ref)})
        g = e[e.k_key == best_key].drop(columns=["k_key", "k_n", "k_suite", "k_conds", "k_created"])
        if fam == CLEAN:
            g = _rank_frame(g, "top1 %", "top1 lo", "top1 hi", True)
            g = g.sort_values(["rank", "top1 %", "model"], ascending=[True, False, True])
        elif fam == NATURAL and g["mCE %"].notna().all():   # ImageNet-C is ranked by mCE
            g = _rank_frame(g, "max ΔACC pp", "max lo", "max hi", False, prefix="max ")
            g = _rank_frame(g, "mCE %", "mCE lo", "mCE hi", False)
            g = g.sort_values(["rank", "mCE %", "model"])
        else:
            g = _rank_frame(g, "max ΔACC pp", "max lo", "max hi", False, prefix="max ")
            g = _rank_frame(g, "mean ΔACC pp", "mean lo", "mean hi", False)
            g = g.sort_values(["rank", "mean ΔACC pp", "model"])
        g = g.merge(tags, on="model", how="left")
        front = ["rank", "tied", "model"]
        lb.families[fam] = g[front + [c for c in g.columns if c not in front]].reset_index(drop=True)

    lb.overall = _overall(lb.families, apart, ds_name)
    lb.apart = pd.DataFrame(apart, columns=["model", "family", "dataset", "reason"])
    return lb


def _overall(fams: dict[str, pd.DataFrame], apart: list[dict], ds_name: str) -> pd.DataFrame:
    if not fams:
        return pd.DataFrame()
    ranks = pd.DataFrame({f: g.set_index("model")["rank"] for f, g in fams.items()})
    n_fams = ranks.notna().sum(axis=1)
    full = n_fams == n_fams.max()
    used = [f for f in ranks.columns if ranks.loc[full, f].notna().all()]
    for model in ranks.index[~full]:
        miss = [f for f in used if pd.isna(ranks.loc[model, f])]
        apart.append({"model": model, "family": "overall", "dataset": ds_name,
                      "reason": f"not ranked in family(ies) {', '.join(miss)} that the overall rank averages"})
    r = ranks.loc[full, used]
    out = pd.DataFrame({"model": r.index, "mean rank": r.mean(axis=1).round(6).to_numpy(),
                        "families": len(used)})
    for f in used:
        out[f"rank {f}"] = r[f].astype(int).to_numpy()
    out["rank"] = out["mean rank"].rank(method="min").astype(int)
    counts = out["rank"].value_counts()
    out["tied"] = out["rank"].map(lambda x: bool(counts[x] > 1))
    out = out.sort_values(["rank", "model"]).reset_index(drop=True)
    front = ["rank", "tied", "model", "mean rank", "families"]
    return out[front + [c for c in out.columns if c not in front]]


# ---------------------------------------------------------------------- rendering
# Ranking (:func:`build`) returns data; everything below only turns a :class:`Leaderboard`
# into text: :func:`display_frame` (figures with their intervals as text, ties marked '='),
# :func:`sections` (the tables in output order) and one renderer per format.
def _ci(lo: float, hi: float, signed: bool = False) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "n/a"
    return f"[{lo:+.1f}, {hi:+.1f}]" if signed else f"[{lo:.1f}, {hi:.1f}]"


def display_frame(lb: Leaderboard, family: str) -> pd.DataFrame:
    """A family's ranked rows with the interval as text next to every figure."""
    if family == "overall":
        return lb.overall.copy()
    g = lb.families[family]
    rank = [f"{r}=" if t else str(r) for r, t in zip(g["rank"], g["tied"])]
    out = pd.DataFrame({"rank": rank, "model": g.model, "n": g.n})
    if family == CLEAN:
        out["top1 %"] = g["top1 %"].round(2)
        out["top1 95% CI"] = [_ci(a, b) for a, b in zip(g["top1 lo"], g["top1 hi"])]
    else:
        out["options"] = g.options
        out["mean ΔACC pp"] = g["mean ΔACC pp"].round(2)
        out["mean 95% CI"] = [_ci(a, b, True) for a, b in zip(g["mean lo"], g["mean hi"])]
        out["max ΔACC pp"] = g["max ΔACC pp"].round(2)
        out["max 95% CI"] = [_ci(a, b, True) for a, b in zip(g["max lo"], g["max hi"])]
        out["max rank"] = [f"{r}=" if t else str(r) for r, t in zip(g["max rank"], g["max tied"])]
        out["worst option"] = g["worst option"]
        for c in ("robust acc %", "WCAR %"):   # adversarial families: lowest over the options / budgets
            if c in g:
                out[c] = g[c].round(2)
        if "validity" in g:   # adversarial families: a visible marker and the names of the raised flags
            out["validity flags"] = [f"{FLAG_MARK} {v}" if isinstance(v, str) and v else ""
                                     for v in g["validity"]]
        if "std top1 pp" in g:
            out["std top1 pp"] = g["std top1 pp"].round(2)
        if "mCE %" in g and g["mCE %"].notna().any():
            out.insert(3, "mCE %", g["mCE %"].round(2))
            out.insert(4, "mCE 95% CI", [_ci(a, b) for a, b in zip(g["mCE lo"], g["mCE hi"])])
    for c in ("model family", "params (M)", "training"):
        out[c] = g[c]
    return out


def header(lb: Leaderboard) -> str:
    """The line above the tables: the ranked data set and the rank rule."""
    return (f"data set {lb.dataset} (fingerprint {lb.dataset_fingerprint}); rank = 1 + number of models "
            "whose 95% interval lies entirely on the better side; '=' marks a tie")


def sections(lb: Leaderboard, families: list[str] | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """``(name, title, display frame)`` of every table in output order: overall, each ranked
    family (``families``: only these), then ``not ranked`` when anything is listed apart."""
    names = ["overall"] + [f for f in lb.families if not families or f in families]
    out = [(n, f"{n} (mean interval rank over families)" if n == "overall" else n, display_frame(lb, n))
           for n in names]
    if len(lb.apart):
        out.append(("not ranked", "not ranked", lb.apart))
    return out


def render_table(lb: Leaderboard, families: list[str] | None = None) -> str:
    """Plain-text tables (the CLI's default)."""
    from robustbench_sys.results import report

    return header(lb) + "\n\n" + "\n\n".join(f"== {title} ==\n" + report.render(d, "table")
                                               for _, title, d in sections(lb, families))


def render_markdown(lb: Leaderboard, families: list[str] | None = None) -> str:
    from robustbench_sys.results import report

    return header(lb) + "\n\n" + "\n\n".join(f"### {title}\n\n" + report.render(d, "markdown")
                                               for _, title, d in sections(lb, families))


def render_csv(lb: Leaderboard, families: list[str] | None = None) -> str:
    """One CSV: every table's rows with a leading ``table`` column naming the table."""
    frames = []
    for name, _, d in sections(lb, families):
        if name == "not ranked":
            frames.append(d.assign(table=name))
        else:
            d = d.copy()
            d.insert(0, "table", name)
            frames.append(d)
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def render_html(lb: Leaderboard, families: list[str] | None = None) -> str:
    """A standalone HTML page."""
    blocks = [f"<h2>{title}</h2>\n" + d.to_html(index=False, escape=True) for _, title, d in sections(lb, families)]
    return (f"<!doctype html><meta charset='utf-8'><title>robustbench-sys leaderboard</title>\n<p>{header(lb)}</p>\n"
            + "\n".join(blocks))


RENDERERS = {"table": render_table, "markdown": render_markdown, "csv": render_csv, "html": render_html}
FORMATS = tuple(RENDERERS)


def render(lb: Leaderboard, fmt: str = "table", families: list[str] | None = None) -> str:
    """Text of every table (overall first) in ``table``, ``markdown``, ``csv`` or ``html``."""
    if fmt not in RENDERERS:
        raise ValueError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if lb.empty:
        return "(no results)"
    return RENDERERS[fmt](lb, families)
