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
    #: the families that are released test sets (:data:`TEST_SETS`): family -> the ranked figure's label
    test_sets: dict[str, str] = field(default_factory=dict)
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
# Everything below works column-wise on the whole summaries frame: a JSON text (card tags,
# pipeline specs) is parsed once per distinct text, never once per row, and the only Python
# loops run over groups (models of a family, (model, family) pairs lacking an option), never
# over the summary rows.  tests/_leaderboard_reference.py keeps the row-by-row version that
# tests/test_leaderboard.py compares this one against.
def _tags(s: str | None) -> dict:
    try:
        t = json.loads(s) if isinstance(s, str) and s else {}
        return t if isinstance(t, dict) else {}
    except ValueError:
        return {}


def _factorize(col: pd.Series) -> tuple[np.ndarray, list]:
    """(codes, distinct values) of a column of texts; missing values get code -1."""
    try:
        codes, uniq = pd.factorize(col, use_na_sentinel=True)
        return np.asarray(codes), list(uniq)
    except TypeError:   # unhashable cells (not a stored column): one code per row
        return np.arange(len(col)), list(col)


def model_tags(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per model: model family, params (M), training tag (from the card tags).  A model's
    tags are those of its last row with non-empty tags (else of its first row)."""
    if summaries.empty:
        return pd.DataFrame(columns=["model", "model family", "params (M)", "training"])
    n = len(summaries)
    if "tags" in summaries:
        codes, uniq = _factorize(summaries["tags"])
        parsed = [_tags(t) for t in uniq] + [{}]          # code -1 (missing) -> the trailing {}
    else:
        codes, parsed = np.full(n, -1), [{}]
    has = np.array([bool(t) for t in parsed])[codes]
    pos = pd.Series(np.arange(n))
    by = summaries["model"].to_numpy(dtype=object)
    first = pos.groupby(by, sort=False, dropna=False).min()
    last = pos.where(has, -1).groupby(by, sort=False, dropna=False).max()
    pick = np.where(last.to_numpy() >= 0, last.to_numpy(), first.to_numpy())
    rows = []
    for m, i in zip(first.index, pick):
        t = parsed[codes[i]]
        rows.append({"model": m, "model family": str(t.get("family", "")),
                     "params (M)": float(t["params_m"]) if "params_m" in t else float("nan"),
                     "training": str(t.get("training", ""))})
    return pd.DataFrame(rows)


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


class _Specs:
    """:func:`_spec` of each distinct text, parsed once (the dicts are shared: never modified)."""

    def __init__(self) -> None:
        self._done: dict = {}

    def __call__(self, text) -> dict | None:
        key = text if isinstance(text, str) else None
        if key not in self._done:
            self._done[key] = _spec(key)
        return self._done[key]


def _changes(models, pipes, refs, specs: _Specs) -> dict[str, dict] | None:
    out = {}
    for model, pipe, ref in zip(models, pipes, refs):
        p, r = specs(pipe), specs(ref)
        if p is None or r is None:
            continue
        changed = {k: v for k, v in p.items() if k not in r or r[k] != v}
        if changed:
            out[model] = changed
    return out or None


def condition_changes(rows: pd.DataFrame) -> dict[str, dict] | None:
    """What a condition sets, learned from the stored rows of the models that ran it: for each
    row, the stages whose value in its ``pipeline`` differs from its ``reference_pipeline`` (the
    condition certainly overrides those, with that value).  ``{model: {stage: value}}``; None
    when no row shows a change (an attack, whose pipeline is the reference one, or rows without
    specs)."""
    if "pipeline" not in rows or "reference_pipeline" not in rows:
        return None
    return _changes(rows.model, rows.pipeline, rows.reference_pipeline, _Specs())


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
    ``reference_pipeline`` columns are left as they are.

    Only the (model, family, data set) groups that lack an option are looked at one by one, and
    only the options they lack have their pipelines parsed (each distinct text once); the added
    rows come out in the order (family and data set as first stored, clean row, option as first
    stored)."""
    if s.empty or "reference_pipeline" not in s or "pipeline" not in s:
        return s
    is_clean = (s.condition == CLEAN).to_numpy(dtype=bool)
    clean = s[is_clean].drop_duplicates(["model", "dataset_fingerprint"], keep="last")
    noisy = s.loc[~is_clean, ["family", "dataset_fingerprint", "model", "condition"]].reset_index(drop=True)
    noisy["_row"] = np.flatnonzero(~is_clean)                 # position in s
    noisy = noisy[(noisy.family.notna() & noisy.dataset_fingerprint.notna()).to_numpy()].reset_index(drop=True)
    if noisy.empty or clean.empty:
        return s
    noisy["_g"] = noisy.groupby(["family", "dataset_fingerprint"], sort=False).ngroup().to_numpy()
    # the options of each (family, data set) group, in stored order (the first row of each), and
    # the (group, model) pairs that lack one of them: the only ones looked at below
    first = noisy[noisy.condition.notna().to_numpy()].drop_duplicates(["_g", "condition"])
    ran = noisy[noisy.model.notna().to_numpy()]
    have = ran.groupby(["_g", "model"], sort=False).condition.nunique()
    n_opts = first.groupby("_g").size().reindex(have.index.get_level_values(0), fill_value=0).to_numpy()
    short = have.index[have.to_numpy() < n_opts]
    if not len(short):
        return s
    ran = ran[pd.MultiIndex.from_arrays([ran._g, ran.model]).isin(short)]
    done = {k: set(x.condition.dropna()) for k, x in ran.groupby(["_g", "model"], sort=False)}
    options = {g: (list(x.condition), list(x._row)) for g, x in first.groupby("_g", sort=False)}
    where = noisy.groupby(["_g", "condition"], sort=False).indices
    heads = noisy.drop_duplicates("_g")
    fam_fp = dict(zip(heads._g.tolist(), zip(heads.family.tolist(), heads.dataset_fingerprint.tolist())))
    # the clean row of each (model, data set): its order among the clean rows and its position in s
    cpos = np.flatnonzero(is_clean)[np.flatnonzero(~s[is_clean].duplicated(["model", "dataset_fingerprint"],
                                                                             keep="last").to_numpy())]
    clean_at = {(m, fp): (k, p) for k, (m, fp, p) in enumerate(zip(clean.model, clean.dataset_fingerprint, cpos))}
    model_col, row_col = s["model"].to_numpy(dtype=object), noisy["_row"].to_numpy()
    pipe_col, ref_col = s["pipeline"].to_numpy(dtype=object), s["reference_pipeline"].to_numpy(dtype=object)
    specs, changes = _Specs(), {}
    add = []   # (group, clean order, option order, clean row position, option row position, family)
    for g, model in short:
        fam, fp = fam_fp[g]
        at = clean_at.get((model, fp))
        if at is None or g not in options:
            continue
        ref = specs(ref_col[at[1]])
        if ref is None:
            continue
        for k, (cond, orow) in enumerate(zip(*options[g])):
            if cond in done[g, model]:
                continue
            if (g, cond) not in changes:
                rows = row_col[where[g, cond]]
                changes[g, cond] = _changes(model_col[rows], pipe_col[rows], ref_col[rows], specs)
            ch = changes[g, cond]
            if ch and is_reference_option(ref, ch):
                add.append((g, at[0], k, at[1], orow, fam))
    if not add:
        return s
    add.sort(key=lambda a: a[:3])
    crow = np.array([a[3] for a in add])
    orow = np.array([a[4] for a in add])
    new = s.iloc[crow].reset_index(drop=True)
    opt = s.iloc[orow].reset_index(drop=True)
    new["condition"] = opt["condition"].to_numpy()
    new["family"] = [a[5] for a in add]
    new["suite"] = opt["suite"].to_numpy() if "suite" in s else None
    new["suite_version"] = opt["suite_version"].to_numpy()
    for c in ("delta_acc", "delta_ci_low", "delta_ci_high", "flip_rate"):
        new[c] = 0.0
    new["ref_top1"] = s["top1"].to_numpy()[crow]
    new["reference_option"] = True
    out = pd.concat([s.assign(reference_option=False) if "reference_option" not in s else s, new],
                    ignore_index=True)
    out["reference_option"] = out.reference_option.fillna(False).astype(bool)
    return out


def _mean(v: np.ndarray) -> float:
    """``pd.Series(v).mean()`` exactly (NaN skipped; the same summation, hence the same bits)."""
    nan = np.isnan(v)
    if nan.any():
        v = np.where(nan, 0.0, v)
    n = v.size - int(nan.sum())
    return float(v.sum() / float(n)) if n > 0 else float("nan")


def _nanmin(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.min()) if v.size else float("nan")


def _family_entries(fam: str, g: pd.DataFrame) -> pd.DataFrame:
    """One row per model for one family: figures, intervals and the comparability key.  The
    columns are read once as arrays and each model's rows taken by position (no per-model frame)."""
    groups = g.groupby("model", sort=True).indices
    if not groups:
        return pd.DataFrame()

    def num(c: str) -> np.ndarray:
        return g[c].to_numpy(dtype=float, na_value=np.nan)

    def obj(c: str) -> np.ndarray:
        return g[c].to_numpy(dtype=object)

    n_img, cond, ds = num("n_images"), obj("condition"), obj("dataset")
    suite_v = g.groupby("model", sort=True).suite_version.unique()
    if "created_at" in g:   # the newest per model as max of the sorted codes (a string groupby max is slow)
        c_codes, c_uniq = pd.factorize(g["created_at"], sort=True)
        c_codes = np.asarray(c_codes)
    else:
        c_codes = None
    if fam == CLEAN:
        top1, lo1, hi1 = num("top1"), num("top1_ci_low"), num("top1_ci_high")
    else:
        d, dlo, dhi = num("delta_acc"), num("delta_ci_low"), num("delta_ci_high")
        flip = num("flip_rate") if "flip_rate" in g else None
        adv = "robust_acc" in g
        if adv:
            robust = num("robust_acc")
            wcar = num("wcar") if "wcar" in g else None
            raised_col = obj("validity_raised") if "validity_raised" in g else None
        if fam == IMAGENET_S:
            top1, ref1 = num("top1"), num("ref_top1")
            own_col = g["reference_option"].to_numpy(dtype=bool, na_value=False) if "reference_option" in g else None
    rows = []
    for model in suite_v.index:    # the models in groupby's (sorted) order
        idx = groups[model]
        n = int(n_img[idx].min())
        key_n = (n, int(n_img[idx].max()))
        sv = ",".join(sorted(map(str, suite_v[model])))
        conds = tuple(sorted(cond[idx]))
        if c_codes is None:
            created = ""
        else:
            c = c_codes[idx].max()
            created = str(c_uniq[c]) if c >= 0 else str(float("nan"))
        row = {"model": model, "family": fam, "n": n, "k_n": key_n, "k_suite": sv,
               "k_conds": conds if fam != CLEAN else (), "k_created": created,
               "dataset": ds[idx[0]]}
        if fam == CLEAN:
            i = idx[0]
            row.update({"top1 %": 100 * top1[i], "top1 lo": 100 * lo1[i], "top1 hi": 100 * hi1[i]})
        else:
            w = idx[np.nanargmax(d[idx])]
            row.update({
                "options": len(idx),
                "mean ΔACC pp": 100 * _mean(d[idx]),
                "mean lo": 100 * _mean(dlo[idx]), "mean hi": 100 * _mean(dhi[idx]),
                "max ΔACC pp": 100 * float(d[w]),
                "max lo": 100 * float(dlo[w]), "max hi": 100 * float(dhi[w]),
                "worst option": cond[w],
                "mean flip %": 100 * _mean(flip[idx]) if flip is not None else float("nan"),
            })
            if adv and not np.isnan(robust[idx]).any():   # adversarial family: RobustBench / RobustART
                row.update({"robust acc %": 100 * float(np.min(robust[idx])),
                            "WCAR %": 100 * _nanmin(wcar[idx]) if wcar is not None else float("nan")})
                # AutoAttack-style validity flags raised on any option (eval.attack: summary_fields and
                # write_worst_case); they change no figure, they say which should not be trusted
                raised = [v for v in raised_col[idx] if not pd.isna(v)] if raised_col is not None else []
                row["validity"] = ",".join(sorted({n for v in raised for n in str(v).split(",") if n}))
            if fam == IMAGENET_S:   # RobustART: std of top-1 over the decoder x resize pairs
                t = top1[idx]
                own = own_col is not None and bool(own_col[idx].any())   # own pair already a row
                row["std top1 pp"] = 100 * float(np.std(t if own else np.append(t, ref1[idx[0]])))
            if fam == NATURAL:
                row.update(_mce_entry(g.iloc[idx]))
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
            more = "…" if len(missing) > 3 else ""
            part.append(f"missing {len(missing)} condition(s) ({', '.join(missing[:3])}{more})")
        if extra:
            part.append(f"{len(extra)} extra condition(s) ({', '.join(extra[:3])}{'…' if len(extra) > 3 else ''})")
        why.append("other set of conditions: " + "; ".join(part))
    return "; ".join(why) or "not comparable"


def rank_family(fam: str, e: pd.DataFrame, ds_name: str, tags: pd.DataFrame, apart: list[dict]) -> pd.DataFrame:
    """The ranked frame of one family from its per-model entries (:func:`_family_entries`): the
    largest comparable group (ties: the newest, then the key) ranked by the family's figure, every
    other entry appended to ``apart`` with the reason (see the module doc)."""
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
    return g[front + [c for c in g.columns if c not in front]].reset_index(drop=True)


# ---------------------------------------------------------------------- released test sets
#: released test sets ranked as families of their own, recognised by the summary's ``dataset_kind``
#: (robustbench_sys.data / released / generate): family -> (kinds, the figure's label, higher is better)
TEST_SETS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    "imagenet-a": (("imagenet-a",), "top1 % (200 classes)", True),
    "imagenet-r": (("imagenet-r",), "top1 % (200 classes)", True),
    "imagenet-sketch": (("imagenet-sketch",), "top1 %", True),
    "imagenetv2": (("imagenetv2",), "top1 %", True),
    "imagenet-real": (("imagenet-real",), "ReaL top1 %", True),
    "imagenet-o": (("imagenet-o",), "AUPR %", True),
    "imagenet-p": (("generated:imagenet-p",), "mean FP %", False),
    "imagenet-c-released": (("released:imagenet-c",), "mCE %", False),
    "imagenet-c-bar-released": (("released:imagenet-c-bar",), "mean err %", False),
    "imagenet-3dcc-released": (("released:imagenet-3dcc",), "mean err %", False),
}
TEST_SETS_BY_KIND = {k: fam for fam, (kinds, _, _) in TEST_SETS.items() for k in kinds}
#: released corruption sets: every part (corruption x severity) is ranked, not only ``clean``
_RELEASED = ("imagenet-c-released", "imagenet-c-bar-released", "imagenet-3dcc-released")
#: test sets whose units are one per part (a perturbation, a corruption x severity), each its own data set
_MULTI_PART = ("imagenet-p", *_RELEASED)


def _test_set_value(fam: str, g: pd.DataFrame) -> tuple[float, float, float, dict]:
    """(value, 95% low, 95% high, extra columns) of one model's rows of test set ``fam``, in %."""
    from robustbench_sys.metrics.paired import wilson_interval

    def col(c: str) -> np.ndarray:
        return g[c].to_numpy(dtype=float, na_value=np.nan) if c in g else np.full(len(g), np.nan)

    r = g.iloc[0]
    if fam == "imagenet-real":
        n = int(col("real_n")[0]) if not np.isnan(col("real_n")[0]) else 0
        acc = float(col("real_top1")[0])
        lo, hi = wilson_interval(int(round(acc * n)), n) if n else (float("nan"), float("nan"))
        return 100 * acc, 100 * lo, 100 * hi, {"n": n}
    if fam == "imagenet-o":
        return (100 * float(col("ood_aupr")[0]), 100 * float(col("ood_aupr_ci_low")[0]),
                100 * float(col("ood_aupr_ci_high")[0]),
                {"positives": int(col("ood_n_pos")[0]), "negatives": int(col("ood_n_neg")[0])})
    if fam == "imagenet-p":   # the mean over perturbations; its interval the mean of the bounds (conservative)
        return (100 * _mean(col("flip_prob")), 100 * _mean(col("flip_prob_ci_low")),
                100 * _mean(col("flip_prob_ci_high")), {"perturbations": len(g), "mean T5D": _mean(col("top5_dist"))})
    if fam in _RELEASED:   # mean error over the parts (mCE below when complete)
        err, elo, ehi = 1 - col("top1"), 1 - col("top1_ci_high"), 1 - col("top1_ci_low")
        out = {"parts": len(g)}
        if fam == "imagenet-c-released":
            m = _mce_entry(g)
            if not np.isnan(m["mCE %"]):
                return m["mCE %"], m["mCE lo"], m["mCE hi"], {**out, "mean err %": 100 * _mean(err)}
        return 100 * _mean(err), 100 * _mean(elo), 100 * _mean(ehi), out
    return 100 * float(r.top1), 100 * float(r.top1_ci_low), 100 * float(r.top1_ci_high), {}


def _rank_test_set(lb: Leaderboard, fam: str, g: pd.DataFrame, apart: list[dict]) -> None:
    """Rank the models on test set ``fam`` (one figure with its interval, :data:`TEST_SETS`) into
    ``lb.families[fam]``.  A single-part set ranks each model's own pipeline (condition ``clean``);
    a multi-part set (ImageNet-P: clean on each perturbation; released corruption sets: every part)
    averages its parts.  Comparable: the same data set fingerprint(s) and number of images; the
    largest such group is ranked, the rest listed apart with the reason."""
    _, label, higher = TEST_SETS[fam]
    if fam not in _RELEASED:
        other = g[g.condition != CLEAN]
        for r in other[["model", "condition", "dataset"]].drop_duplicates().itertuples(index=False):
            apart.append({"model": r.model, "family": fam, "dataset": r.dataset, "reason":
                          f"condition {r.condition} on {fam}: only the model's own pipeline (clean) is ranked"})
        g = g[g.condition == CLEAN]
    rows = []
    for model, m in g.groupby("model", sort=True):
        if fam not in _MULTI_PART and m.dataset_fingerprint.nunique() > 1:   # several copies: the newest
            m = m.sort_values("created_at").iloc[[-1]] if "created_at" in m else m.iloc[[-1]]
        value, lo, hi, extra = _test_set_value(fam, m)
        key = (tuple(sorted(set(m.dataset_fingerprint))), int(m.n_images.min()), int(m.n_images.max()))
        rows.append({"model": model, "n": int(m.n_images.min()), label: value, "lo": lo, "hi": hi, **extra,
                     "dataset": str(m.dataset.iloc[0]), "_key": repr(key)})
    e = pd.DataFrame(rows)
    e = e[e[label].notna()] if len(e) else e
    if e.empty:
        return
    best = e._key.value_counts().sort_index().sort_values(ascending=False, kind="stable").index[0]
    for r in e[e._key != best].itertuples(index=False):
        apart.append({"model": r.model, "family": fam, "dataset": r.dataset,
                      "reason": f"other images or parts of {fam} than the ranked group"})
    e = _rank_frame(e[e._key == best].drop(columns=["_key"]), label, "lo", "hi", higher)
    e = e.sort_values(["rank", label, "model"], ascending=[True, not higher, True])
    front = ["rank", "tied", "model"]
    lb.families[fam] = e[front + [c for c in e.columns if c not in front]].reset_index(drop=True)
    lb.test_sets[fam] = label


# ---------------------------------------------------------------------- build
#: the columns :func:`_family_entries` (and :func:`_mce_entry`) read
_ENTRY_COLUMNS = ("model", "family", "condition", "dataset", "n_images", "suite_version", "created_at", "top1",
                  "top1_ci_low", "top1_ci_high", "delta_acc", "delta_ci_low", "delta_ci_high", "flip_rate",
                  "robust_acc", "wcar", "validity_raised", "ref_top1", "reference_option", "pipeline")
#: families kept out of the ranking unless asked for by name (``--family audit``)
UNRANKED = ("audit",)


def check_columns(summaries: pd.DataFrame) -> None:
    """A summaries frame lacking a :data:`REQUIRED` column: ``ValueError`` saying what to do."""
    missing = [c for c in REQUIRED if c not in summaries]
    if missing:
        raise ValueError(f"summaries lack column(s) {missing}; re-run the evaluation with this version")


def ranked_data_set(s: pd.DataFrame, dataset_fingerprint: str | None) -> tuple[str, str]:
    """(fingerprint, name) of the data set ranked: the one asked for, else the one with the most
    summaries; ``ValueError`` for a fingerprint not in ``s``."""
    counts = s.dataset_fingerprint.value_counts()
    fp = dataset_fingerprint if dataset_fingerprint is not None else counts.index[0]
    if fp not in set(s.dataset_fingerprint.unique()):
        raise ValueError(f"data set fingerprint {fp} is not in the store; have {', '.join(counts.index)}")
    return fp, s.loc[s.dataset_fingerprint == fp, "dataset"].iloc[0]


def build(summaries: pd.DataFrame, *, dataset_fingerprint: str | None = None,
          families: list[str] | None = None) -> Leaderboard:
    """Rank the models of a summaries frame (``ResultsStore.summaries()``); see the module doc."""
    lb = Leaderboard()
    if summaries is None or summaries.empty:
        return lb
    check_columns(summaries)
    apart: list[dict] = []
    s = _dedupe(summaries, apart)
    test_fam = (s["dataset_kind"].map(TEST_SETS_BY_KIND) if "dataset_kind" in s
                else pd.Series(None, index=s.index, dtype=object))
    tests, s = s[test_fam.notna()], s[test_fam.isna()]
    if families:
        tests = tests[test_fam[test_fam.notna()].isin(families)]
    for fam, g in tests.groupby(test_fam[test_fam.notna()], sort=True):
        _rank_test_set(lb, str(fam), g, apart)
    # a released corruption set run with --clean-data none has no reference: nothing to rank it against
    noref = (s.family != CLEAN) & s.delta_acc.isna() & (s.ref_top1.isna() if "ref_top1" in s else False)
    for model, fam, ds in s.loc[noref, ["model", "family", "dataset"]].drop_duplicates().itertuples(index=False):
        apart.append({"model": model, "family": fam, "dataset": ds, "reason": "no clean reference (--clean-data none)"})
    s = s[~noref]
    if families:
        keep = set(families) | {CLEAN}
        s = s[s.family.isin(keep)]
    else:   # an audit measures one user's own stack per model: a report, not a ranking
        s = s[~s.family.isin(UNRANKED)]
    if s.empty:
        lb.apart = pd.DataFrame(apart, columns=["model", "family", "dataset", "reason"])
        return lb
    fp, ds_name = ranked_data_set(s, dataset_fingerprint)
    lb.dataset, lb.dataset_fingerprint = ds_name, fp
    keys = ["model", "family", "dataset", "dataset_fingerprint"]
    other = s.loc[(s.dataset_fingerprint != fp).to_numpy(), keys].dropna().drop_duplicates().sort_values(keys)
    for model, fam, ds, ofp in zip(*(other[k].tolist() for k in keys)):
        apart.append({"model": model, "family": fam, "dataset": ds,
                      "reason": f"other data set (fingerprint {ofp}); ranked: {ds_name} ({fp})"})
    s = with_reference_options(s[s.dataset_fingerprint == fp])
    tags = model_tags(s)

    fams = sorted(s.family.unique(), key=lambda f: (f != CLEAN, f))
    if families:
        fams = [f for f in fams if f in families]
    rows_of = s.groupby("family", sort=False).indices     # each family's rows, in stored order
    slim = s[[c for c in _ENTRY_COLUMNS if c in s]]       # (a take of ~20 columns, not of every one)
    for fam in fams:
        lb.families[fam] = rank_family(fam, _family_entries(fam, slim.iloc[rows_of[fam]]), ds_name, tags, apart)

    # the overall rank averages the families of the ranked data set; a test set evaluated for some
    # models only must not push the others out of it
    lb.overall = _overall({f: g for f, g in lb.families.items() if f not in lb.test_sets}, apart, ds_name)
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
    if family in lb.test_sets:   # a released test set: its one figure with the interval, then its extras
        label = lb.test_sets[family]
        out[label] = g[label].round(2)
        out["95% CI"] = [_ci(a, b) for a, b in zip(g["lo"], g["hi"])]
        for c in g.columns:
            if c not in ("rank", "tied", "model", "n", label, "lo", "hi"):
                out[c] = g[c].round(3) if g[c].dtype.kind == "f" else g[c]
        return out
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
    ranked = (f"data set {lb.dataset} (fingerprint {lb.dataset_fingerprint})" if lb.dataset is not None
              else "released test sets only")
    tests = f", test sets {', '.join(lb.test_sets)} as families of their own" if lb.test_sets else ""
    return (f"{ranked}{tests}; rank = 1 + number of models "
            "whose 95% interval lies entirely on the better side; '=' marks a tie")


def sections(lb: Leaderboard, families: list[str] | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """``(name, title, display frame)`` of every table in output order: overall, each ranked
    family (``families``: only these), then ``not ranked`` when anything is listed apart."""
    names = ["overall"] * (not lb.overall.empty) + [f for f in lb.families if not families or f in families]
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
