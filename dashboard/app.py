"""robustbench-sys dashboard (Streamlit): leaderboard, ΔACC heatmap, clean-vs-robust scatter,
per-condition drill-down, flipped-image viewer, deployment-stack audits, provenance and a
calibration ranking (ECE / NLL), over one results store.

Start it with ``robustbench-sys dashboard [--results DIR] [--port N] [--expose]`` (binds
127.0.0.1 unless ``--expose``; usage statistics off).  Everything shown is read from the store
(``summaries/``, ``units/``, ``per_image/``); the viewer re-runs each unit's own stored pipeline
on its images.  Adversarial pixels are not stored (only the attack's per-image predictions,
perturbation norm and seed) and attacks are never re-run here, so for an attack condition the
viewer shows the clean input as the clean input and the adversarial prediction without an image.
Every pipeline shown is the one stored with that (model, condition) unit; raised validity flags
(``validity_flags`` / ``validity_raised``) are shown as warnings with their detail.  Store
problems (empty, still being written, corrupt files) are shown as messages in the page.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from robustbench_sys.paths import default_results_dir
from robustbench_sys.results import leaderboard as L
from robustbench_sys.results.store import ResultsStore, StoreError


class _LazyModule:
    """A module imported on its first attribute access (a plain, thread-safe import each time: a
    ``sys.modules`` lookup once loaded), so a module only some pages use (``report``: deploy,
    drill-down, audit, calibration) costs the other pages nothing."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


report = _LazyModule("robustbench_sys.results.report")

PAGES = ("Leaderboard", "ΔACC heatmap", "Clean vs robust", "Deployment speed", "Condition drill-down",
         "Flipped images", "Audit", "Provenance", "Calibration")


# ---------------------------------------------------------------------- data access (cached)
def results_arg() -> str:
    """``--results DIR`` after ``streamlit run app.py --``, else the default results root."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--results", default=None)
    a, _ = ap.parse_known_args(sys.argv[1:])
    return str(Path(a.results or default_results_dir()).expanduser())


def _listing(d: Path) -> list[tuple]:
    """(name, inode, mtime_ns, size) of every entry of ``d`` but temporary ones (``.name``); [] when none."""
    out = []
    try:
        with os.scandir(d) as it:
            for e in it:
                if not e.name.startswith("."):
                    try:
                        st_ = e.stat()
                    except FileNotFoundError:   # removed meanwhile
                        continue
                    out.append((e.name, e.inode(), st_.st_mtime_ns, st_.st_size))
    except (FileNotFoundError, NotADirectoryError):
        pass
    return sorted(out)


def store_signature(root: str) -> tuple:
    """The cache key of everything read from ``summaries/``: a digest of (name, inode, mtime_ns, size)
    of every summary file, the identity ``read_summaries`` checks its compacted table against.  A new
    run adds or atomically replaces summary files (a new inode even within one mtime tick), so a
    new result always changes the key; per-image rows have their own key (:func:`unit_signature`)."""
    return (hashlib.sha1(repr(_listing(Path(root) / "summaries")).encode()).hexdigest(),)


def unit_signature(root: str, unit_id: str) -> tuple:
    """The cache key of one unit's per-image rows: its part / compacted files' identities."""
    return (hashlib.sha1(repr(_listing(Path(root) / "per_image" / unit_id)).encode()).hexdigest(),)


@st.cache_data(show_spinner=False, max_entries=8)
def load_summaries(root: str, signature: tuple) -> tuple[pd.DataFrame, list[str]]:
    store = ResultsStore(root)
    return store.summaries(), store.problems


@st.cache_data(show_spinner=False, max_entries=16)
def build_leaderboard(root: str, signature: tuple, fingerprint: str | None, families: tuple,
                      models: tuple | None) -> L.Leaderboard:
    df, _ = load_summaries(root, signature)
    if models is not None:
        df = df[df.model.isin(models)]
    return L.build(df, dataset_fingerprint=fingerprint, families=list(families) or None)


@st.cache_data(show_spinner=False, max_entries=32)
def _load_unit_rows(root: str, unit_id: str, unit_sig: tuple) -> pd.DataFrame:
    return ResultsStore(root).read_unit_rows(unit_id)


def load_unit_rows(root: str, unit_id: str, signature: tuple | None = None) -> pd.DataFrame:
    """One unit's per-image rows, cached on the unit's own files (``signature``, the store's, is not needed)."""
    return _load_unit_rows(root, unit_id, unit_signature(root, unit_id))


def unit_spec(root: str, unit_id: str) -> dict:
    return ResultsStore(root).unit(unit_id)


def in_progress_units(root: str, summaries: pd.DataFrame) -> list[str]:
    """Unit ids with a spec or per-image parts but no summary yet (a run still writing, or killed)."""
    def names(d: Path, want_dir: bool) -> set[str]:   # (no stat per entry: the directory's own types)
        try:
            with os.scandir(d) as it:
                return {e.name for e in it if not e.name.startswith(".")
                        and (e.is_dir() if want_dir else e.name.endswith(".json"))}
        except (FileNotFoundError, NotADirectoryError):
            return set()

    r = Path(root)
    ids = {n[:-len(".json")] for n in names(r / "units", False)} | names(r / "per_image", True)
    done = set(summaries.unit_id.unique()) if "unit_id" in summaries else set()
    return sorted(ids - done)


def rebuild_image(root: str, unit_id: str, file: str) -> np.ndarray:
    """HxWx3 uint8 model input of ``file`` under the unit's stored pipeline (before normalisation)."""
    from robustbench_sys.pipeline import Pipeline

    spec = unit_spec(root, unit_id)
    path = Path(spec["dataset_root"]) / file
    if not path.is_file():
        raise FileNotFoundError(f"image {path} is not there any more (data set root {spec['dataset_root']})")
    x = Pipeline.from_spec(spec["pipeline"]).preprocess(path.read_bytes())
    return np.clip(np.rint(x.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------- helpers
def _tag_filter(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Sidebar-free filters on the card tags (model family, training, size) -> filtered summaries."""
    tags = L.model_tags(df)
    c1, c2, c3 = st.columns(3)
    fams = sorted(x for x in tags["model family"].unique() if x)
    trains = sorted(x for x in tags["training"].unique() if x)
    pick_f = c1.multiselect("model family", fams, key=f"{key}-mfam")
    pick_t = c2.multiselect("training", trains, key=f"{key}-train")
    sizes = tags["params (M)"].dropna()
    keep = tags
    if len(sizes) and sizes.max() > sizes.min():
        lo, hi = c3.slider("params (M)", float(sizes.min()), float(sizes.max()),
                           (float(sizes.min()), float(sizes.max())), key=f"{key}-size")
        keep = keep[keep["params (M)"].isna() | keep["params (M)"].between(lo, hi)]
    if pick_f:
        keep = keep[keep["model family"].isin(pick_f)]
    if pick_t:
        keep = keep[keep["training"].isin(pick_t)]
    return df[df.model.isin(set(keep.model))]


def _dataset_choice(df: pd.DataFrame, key: str) -> str | None:
    ds = df.groupby("dataset_fingerprint").agg(name=("dataset", "first"), rows=("model", "size"))
    ds = ds.sort_values("rows", ascending=False)
    labels = {fp: f"{r.name} ({fp}, {r.rows} results)" for fp, r in ds.iterrows()}
    if len(labels) == 1:
        return next(iter(labels))
    return st.selectbox("data set", list(labels), format_func=labels.__getitem__, key=f"{key}-ds")


def condition_labels(conditions) -> dict[str, str]:
    """A short, unique axis label per condition name: the name without its family prefix
    (``natural/defocus_blur-1 -> defocus_blur-1``, the stage table's short name) where that
    stays unique among ``conditions``, else the full name."""
    conds = list(dict.fromkeys(conditions))
    short = {c: c.split("/", 1)[1] if "/" in c else c for c in conds}
    counts = pd.Series(list(short.values()), dtype=object).value_counts()
    out = {c: (short[c] if counts[short[c]] == 1 else c) for c in conds}
    if len(set(out.values())) != len(out):    # a short name equal to another condition's full name
        out = {c: c for c in conds}
    return out


def pipeline_text(row) -> str:
    """The pipeline a summary row's unit actually ran (its own, stored per unit)."""
    from robustbench_sys.pipeline import Pipeline

    text = row.get("pipeline_text")
    if isinstance(text, str) and text:
        return text
    spec = row.get("pipeline")
    return Pipeline.from_spec(spec).describe() if isinstance(spec, str | dict) and spec else "(not stored)"


def _latest(rows: pd.DataFrame) -> pd.DataFrame:
    """The newest summary row per (model, condition, data set), as the leaderboard uses."""
    if rows.empty:
        return rows
    if "created_at" in rows:
        rows = rows.sort_values("created_at", kind="stable", na_position="first")
    return rows.drop_duplicates(["model", "condition", "dataset_fingerprint"], keep="last")


def raised_flags(rows: pd.DataFrame) -> list[dict]:
    """``{model, condition, family, flags: [(name, detail)]}`` for every summary row with a raised
    validity flag (``validity_flags``: JSON list of ``{name, raised, detail}``, per unit or written
    for a whole group of attacks; ``validity_raised``: the raised names).  A name listed in
    ``validity_raised`` without an entry in ``validity_flags`` is kept, with no detail."""
    if rows.empty or ("validity_flags" not in rows and "validity_raised" not in rows):
        return []
    out = []
    rows = _latest(rows)
    some = np.zeros(len(rows), dtype=bool)   # rows with a non-blank flag text: the only ones read one by one
    for c in ("validity_flags", "validity_raised"):
        if c in rows:
            text = rows[c].astype(object)
            some |= (text.notna() & (text.astype(str).str.strip() != "")).to_numpy(dtype=bool)
    for _, r in rows[some].iterrows():
        flags: list[tuple[str, str]] = []
        raw = r.get("validity_flags")
        if isinstance(raw, str) and raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = []
                flags.append(("unreadable validity_flags", raw[:200]))
            for f in parsed if isinstance(parsed, list) else []:
                if isinstance(f, dict) and f.get("raised"):
                    flags.append((str(f.get("name", "?")), str(f.get("detail", "") or "")))
        names = r.get("validity_raised")
        for name in (names.split(",") if isinstance(names, str) else []):
            name = name.strip()
            if name and name not in {n for n, _ in flags}:
                flags.append((name, "(no detail stored)"))
        if flags:
            out.append({"model": r.model, "condition": r.condition, "family": r.family, "flags": flags})
    return sorted(out, key=lambda e: (e["family"], e["model"], e["condition"]))


def show_flag_warnings(entries: list[dict]) -> None:
    """One visible warning per result with raised validity flags, each flag with its detail."""
    for e in entries:
        lines = "\n".join(f"- **{name}**: {detail}" for name, detail in e["flags"])
        st.warning(f"⚠ Validity flag(s) raised for **{e['model']}** on `{e['condition']}`: this result may "
                   f"not be trustworthy.\n{lines}")


def flag_column(entries: list[dict], models, by: str | None = None) -> list[str]:
    """Per model: ``⚠`` and the raised flag names of its results in ``entries``, each prefixed
    by its ``by`` field (``"family"`` / ``"condition"``) when given; '' where none."""
    per: dict[str, list[str]] = {}
    for e in entries:
        names = ", ".join(n for n, _ in e["flags"])
        per.setdefault(e["model"], []).append(f"{e[by]}: {names}" if by else names)
    return ["⚠ " + "; ".join(dict.fromkeys(per[m])) if m in per else "" for m in models]


# ---------------------------------------------------------------------- pages
def page_leaderboard(root: str, sig: tuple, df: pd.DataFrame) -> None:
    st.header("Leaderboard")
    test_fam = df.dataset_kind.map(L.TEST_SETS_BY_KIND) if "dataset_kind" in df else pd.Series(None, index=df.index)
    main = df[test_fam.isna()]   # released test sets are families of their own, not a data set to pick
    fp = _dataset_choice(main, "lb") if len(main) else None
    tests = set(test_fam.dropna())
    fams_all = sorted(set(df.family), key=lambda f: (f != L.CLEAN, f)) + sorted(tests)   # released test sets last
    fams = st.multiselect("families", fams_all, key="lb-fams", help="empty = every family")
    sub = _tag_filter(df, "lb")
    if sub.empty:
        st.info("No model matches these filters.")
        return
    lb = build_leaderboard(root, sig, fp, tuple(fams), tuple(sorted(set(sub.model))))
    if lb.empty:
        st.info("Nothing to rank with these filters.")
        return
    where = (f"Data set **{lb.dataset}** (fingerprint `{lb.dataset_fingerprint}`)" if lb.dataset is not None
             else "Released test sets only")
    if lb.test_sets:
        where += (f"; released test sets ranked as families of their own (not in the overall rank): "
                  f"{', '.join(lb.test_sets)}")
    st.caption(f"{where}. Rank = 1 + number of models "
               "whose 95% interval lies entirely on the better side, so models whose interval overlaps the "
               "leader's share rank 1; '=' marks a tie. ΔACC = reference − condition accuracy (pp, positive = "
               "lost). Click a column header to sort.")
    ranked = df[(df.dataset_fingerprint == lb.dataset_fingerprint) & df.model.isin(set(sub.model))
                & df.family.isin(set(lb.families))]
    flags = raised_flags(ranked)
    if flags:
        st.warning(f"⚠ {len(flags)} ranked result(s) raised validity flags (marked in the 'validity flags' "
                   "column); their adversarial figures may not be trustworthy. Details below.")
    st.subheader("Overall (mean rank over families)")
    overall = L.display_frame(lb, "overall")
    if flags and len(overall):
        overall["validity flags"] = flag_column(flags, overall.model, "family")
    st.dataframe(overall, hide_index=True, width="stretch")
    for fam in lb.families:
        st.subheader(f"{fam}")
        t = L.display_frame(lb, fam)
        fam_flags = [e for e in flags if e["family"] == fam]
        if fam_flags and "validity flags" not in t:   # (the library's own column, where it has one, is kept)
            t["validity flags"] = flag_column(fam_flags, t.model, "condition")
        st.dataframe(t, hide_index=True, width="stretch")
        show_flag_warnings(fam_flags)
    if len(lb.apart):
        with st.expander(f"Not ranked ({len(lb.apart)}): results not comparable with the ranked group"):
            st.dataframe(lb.apart, hide_index=True, width="stretch")


def page_heatmap(root: str, sig: tuple, df: pd.DataFrame) -> None:
    import altair as alt

    st.header("Model × condition ΔACC")
    fp = _dataset_choice(df, "hm")
    s = df[(df.dataset_fingerprint == fp) & (df.family != L.CLEAN)]
    fams = sorted(set(s.family))
    pick = st.multiselect("families", fams, key="hm-fams", help="empty = every family")
    if pick:
        s = s[s.family.isin(pick)]
    if s.empty:
        st.info("No noise conditions stored for this data set yet (only clean results).")
        return
    s = s.sort_values(["family", "condition", "model"])   # columns grouped by family (the chart keeps data order)
    labels = condition_labels(s.condition)
    d = pd.DataFrame({"model": s.model, "condition": s.condition, "label": s.condition.map(labels),
                      "family": s.family, "ΔACC pp": (100 * s.delta_acc).round(2),
                      "95% CI": [f"[{100 * a:+.1f}, {100 * b:+.1f}]" for a, b in zip(s.delta_ci_low, s.delta_ci_high)],
                      "n": s.n_images, "flip %": (100 * s.flip_rate).round(2)})
    fam_order = " | ".join(dict.fromkeys(s.family))
    # labels: short (family prefix dropped where unique), never truncated (labelLimit 0), angled;
    # the full condition name is in the tooltip
    axis = alt.Axis(labelAngle=-40, labelLimit=0, labelOverlap=False, labelAlign="right",
                    title=f"condition, grouped by family: {fam_order} (hover for the full name)")
    chart = alt.Chart(d).mark_rect().encode(
        x=alt.X("label:N", sort=None, axis=axis), y=alt.Y("model:N", axis=alt.Axis(labelLimit=0)),
        color=alt.Color("ΔACC pp:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)),
        tooltip=[c for c in d.columns if c != "label"])
    st.altair_chart(chart, width="stretch")
    st.dataframe(d.pivot_table(index="model", columns="condition", values="ΔACC pp"), width="stretch")


def page_scatter(root: str, sig: tuple, df: pd.DataFrame) -> None:
    import altair as alt

    st.header("Clean vs robust accuracy")
    fp = _dataset_choice(df, "sc")
    s = df[df.dataset_fingerprint == fp]
    fams = sorted(set(s.family) - {L.CLEAN})
    if not fams:
        st.info("Only clean results are stored for this data set: no robust accuracy to plot yet.")
        return
    fam = st.selectbox("noise family (robust accuracy = mean top-1 over its conditions)", ["all"] + fams, key="sc-fam")
    noisy = s[s.family != L.CLEAN] if fam == "all" else s[s.family == fam]
    clean = s[s.family == L.CLEAN].drop_duplicates("model", keep="last").set_index("model")
    rob = noisy.groupby("model").agg(robust=("top1", "mean"), n=("n_images", "min"), options=("condition", "size"))
    d = rob.join(clean[["top1", "top1_ci_low", "top1_ci_high"]], how="inner").reset_index()
    if d.empty:
        st.info("No model has both a clean and a noisy result here.")
        return
    d = pd.DataFrame({"model": d.model, "clean top1 %": (100 * d.top1).round(2),
                      "clean 95% CI": [f"[{100 * a:.1f}, {100 * b:.1f}]"
                                       for a, b in zip(d.top1_ci_low, d.top1_ci_high)],
                      "robust top1 %": (100 * d.robust).round(2), "options": d.options, "n": d.n})
    from robustbench_sys.results.pareto import front_mask

    d["Pareto front"] = front_mask(d["clean top1 %"], d["robust top1 %"])
    pts = alt.Chart(d).mark_circle(size=90).encode(
        x=alt.X("clean top1 %:Q", scale=alt.Scale(zero=False)), y=alt.Y("robust top1 %:Q", scale=alt.Scale(zero=False)),
        color="Pareto front:N", tooltip=list(d.columns))
    front = alt.Chart(d[d["Pareto front"]].sort_values("clean top1 %")).mark_line(strokeDash=[4, 3]).encode(
        x="clean top1 %:Q", y="robust top1 %:Q")
    st.altair_chart(pts + front, width="stretch")
    st.dataframe(d, hide_index=True, width="stretch")


def deploy_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The Deployment-speed page's points: :func:`report.deploy_rows` (each deploy condition and
    the reference, with ΔACC and the measured speed-up) with an accuracy-loss axis in pp and the
    Pareto front of loss vs throughput speed-up per model; unmeasured options are left out."""
    d = report.deploy_rows(df)
    if d.empty:
        return d
    d = d[d.speedup_throughput.notna() & d.delta_acc.notna()].copy()
    d["accuracy loss pp"] = (100 * d.delta_acc).round(2)
    d["speed-up ×"] = d.speedup_throughput.round(3)
    d["p50 ms"] = d.latency_p50_ms.round(2)
    d["img/s"] = d.throughput_ips.round(1)
    return d


def page_deploy(root: str, sig: tuple, df: pd.DataFrame) -> None:
    import altair as alt

    st.header("Deployment options: accuracy loss vs speed-up")
    st.caption("Each point is a deploy condition (precision / backend / device) of one model, measured as it ran: "
               "throughput speed-up against the model's reference and ΔACC (positive = accuracy lost). "
               "The dashed line joins the Pareto front: no other option loses less accuracy and runs faster.")
    d = deploy_frame(df)
    if d.empty:
        st.info("No deploy condition with a speed measurement is stored. Run `robustbench-sys eval --suite "
                "precision` (or backend, device) to time the deployment options beside their accuracy.")
        return
    models = sorted(d.model.unique())
    model = st.selectbox("model", models, key="dp-model")
    m = d[d.model == model]
    shared = m[m.shared_machine == 1]
    if len(shared):
        st.warning(f"{len(shared)} of {len(m)} option(s) were timed on a shared machine (load above the cores): "
                   "their speed-ups are less reliable.")
    tip = ["condition", "deploy", "accuracy loss pp", "speed-up ×", "p50 ms", "img/s", "device", "on_front"]
    pts = alt.Chart(m).mark_circle(size=110).encode(
        x=alt.X("speed-up ×:Q", scale=alt.Scale(zero=False)), y=alt.Y("accuracy loss pp:Q"),
        color=alt.Color("on_front:N", title="Pareto front"), tooltip=tip)
    line = alt.Chart(m[m.on_front].sort_values("speed-up ×")).mark_line(strokeDash=[4, 3]).encode(
        x="speed-up ×:Q", y="accuracy loss pp:Q")
    st.altair_chart(pts + line, width="stretch")
    st.dataframe(m[tip + ["latency_p95_ms", "flip_rate", "n"]], hide_index=True, width="stretch")


def page_drilldown(root: str, sig: tuple, df: pd.DataFrame) -> None:
    import altair as alt

    st.header("Per-condition drill-down")
    fp = _dataset_choice(df, "dd")
    s = df[df.dataset_fingerprint == fp]
    conds = sorted(set(s.condition), key=lambda c: (c != "clean", c))
    cond = st.selectbox("condition", conds, key="dd-cond")
    c = s[s.condition == cond]
    o = report.order(c)   # the row order of report.condition_table
    t = report.condition_table(c)
    t["McNemar p"] = o.mcnemar_p.round(4).to_numpy() if "mcnemar_p" in o else np.nan
    # each unit's own pipeline (a condition swaps stages of every model's *own* reference pipeline)
    t["pipeline"] = [pipeline_text(r) for _, r in o.iterrows()]
    flags = raised_flags(c)
    if "validity_raised" in o and o.validity_raised.notna().any():
        t["validity flags"] = flag_column(flags, t.model)
    show_flag_warnings(flags)
    st.dataframe(t, hide_index=True, width="stretch")
    field = "top1" if cond == "clean" else "delta_acc"
    lo, hi = ("top1_ci_low", "top1_ci_high") if cond == "clean" else ("delta_ci_low", "delta_ci_high")
    d = pd.DataFrame({"model": c.model, "value": 100 * c[field], "lo": 100 * c[lo], "hi": 100 * c[hi]})
    title = "top-1 % (Wilson 95% CI)" if cond == "clean" else "ΔACC pp (paired bootstrap 95% CI)"
    base = alt.Chart(d).encode(y=alt.Y("model:N"))
    chart = base.mark_rule().encode(x=alt.X("lo:Q", title=title), x2="hi:Q") + \
        base.mark_point(filled=True, size=70).encode(x="value:Q", tooltip=list(d.columns))
    st.altair_chart(chart, width="stretch")
    if len(o):
        lines = [f"- **{r.model}** ({r.dataset}): `{pipeline_text(r)}`" for _, r in o.iterrows()]
        st.markdown("**Pipeline of each result** (the unit actually run for this model and condition, as "
                    "stored with it; a condition changes stages of each model's *own* reference pipeline):\n"
                    + "\n".join(lines))


def page_flips(root: str, sig: tuple, df: pd.DataFrame) -> None:
    from robustbench_sys.data import class_name

    st.header("Flipped images: reference vs noisy pipeline")
    fp = _dataset_choice(df, "fl")
    s = df[(df.dataset_fingerprint == fp)]
    noisy = s[s.family != L.CLEAN]
    if noisy.empty:
        st.info("No noise condition stored for this data set: nothing to compare with the reference.")
        return
    c1, c2 = st.columns(2)
    model = c1.selectbox("model", sorted(set(noisy.model)), key="fl-model")
    cond = c2.selectbox("condition", sorted(set(noisy[noisy.model == model].condition)), key="fl-cond")
    row = noisy[(noisy.model == model) & (noisy.condition == cond)].iloc[-1]
    ref = s[(s.model == model) & (s.family == L.CLEAN)]
    if ref.empty:
        st.warning(f"No clean (reference) result for {model} on this data set.")
        return
    ref_id = ref.iloc[-1].unit_id
    rows = load_unit_rows(root, row.unit_id, sig)
    base = load_unit_rows(root, ref_id, sig)
    m = rows[rows.status == "ok"].merge(base[base.status == "ok"], on="file", suffixes=("", "_ref"))
    m["flipped"] = m.pred != m.pred_ref
    n_flip = int(m.flipped.sum())
    st.write(f"**{n_flip}** of {len(m)} images change their top-1 prediction under `{cond}` "
             f"(flip rate {100 * row.flip_rate:.1f}%).")
    only = st.checkbox("only flipped images", value=n_flip > 0, key="fl-only")
    if only and n_flip == 0:
        st.info("No image flips under this condition; untick the box to browse every image.")
        return
    pool = m[m.flipped] if only else m
    file = st.selectbox("image", list(pool.file), key="fl-file")
    r = pool[pool.file == file].iloc[0]
    st.caption(f"true label: {int(r.label)} {class_name(int(r.label))}")
    attack = row.get("attack") if "attack" in row else None
    if isinstance(attack, str) and attack:
        _attack_pair(root, ref_id, row, r, cond)
        return
    cols = st.columns(2)
    for col, uid, sfx, title in ((cols[0], ref_id, "_ref", "reference (clean)"), (cols[1], row.unit_id, "", cond)):
        with col:
            _image_with_top5(col, root, uid, file, r, sfx, title)


def _top5(r, sfx: str) -> pd.DataFrame:
    from robustbench_sys.data import class_name

    return pd.DataFrame({"class": [int(i) for i in r["top5" + sfx]],
                         "name": [class_name(int(i)) for i in r["top5" + sfx]],
                         "prob": np.round(np.asarray(r["top5_prob" + sfx], dtype=float), 4)})


def _image_with_top5(col, root: str, uid: str, file: str, r, sfx: str, title: str) -> None:
    """The image ``file`` rebuilt with unit ``uid``'s own stored pipeline, captioned with the
    prediction that unit stored for it, the pipeline named under it, then its top-5."""
    from robustbench_sys.data import class_name

    try:
        img = rebuild_image(root, uid, file)
        col.image(img, caption=f"{title}: {class_name(int(r['pred' + sfx]))}", width=336)
    except Exception as e:  # missing file / unavailable noise: a message, not a trace
        col.warning(f"cannot rebuild the {title} image: {type(e).__name__}: {e}")
    try:
        col.caption(f"pipeline: `{unit_spec(root, uid).get('pipeline_text', '?')}`")
    except StoreError as e:
        col.caption(f"pipeline unknown: {e}")
    col.dataframe(_top5(r, sfx), hide_index=True, width="stretch")


def _attack_pair(root: str, ref_id: str, row, r, cond: str) -> None:
    """An attack condition: the store keeps the attack's predictions (and the perturbation norm,
    the batch seed and the clean prediction of the same run) per image, never the adversarial
    pixels, and the dashboard does not re-run attacks.  So the clean input is shown as the clean
    input, and the adversarial prediction is listed beside it without an image: a clean image is
    never captioned with the adversarial prediction."""
    from robustbench_sys.data import class_name

    st.info("**Adversarial image not stored.** The results store keeps each attacked image's predictions, "
            "perturbation norm and seed, not its pixels, and the dashboard does not re-run attacks. Shown: the "
            "**clean input** with its clean prediction (left) and the **adversarial prediction** without an "
            "image (right).")
    cols = st.columns(2)
    with cols[0]:
        _image_with_top5(cols[0], root, ref_id, r.file, r, "_ref", "clean input (reference), clean prediction")
    with cols[1]:
        st.markdown(f"**adversarial image under `{cond}`: not stored, not shown**")
        try:
            own = unit_spec(root, row.unit_id).get("pipeline")
            ref_pipe = unit_spec(root, ref_id).get("pipeline")
        except StoreError:
            own = ref_pipe = None
        if own is not None and own != ref_pipe and pd.notna(r.get("clean_pred", np.nan)):
            # the attack ran on another pipeline (an attack condition that also swaps a stage):
            # its own clean starting point, captioned as the clean input it is
            try:
                img = rebuild_image(root, row.unit_id, r.file)
                st.image(img, width=336, caption="clean input of the attack run (its own pipeline; NOT the "
                         f"adversarial image), clean prediction: {class_name(int(r.clean_pred))}")
            except Exception as e:
                st.warning(f"cannot rebuild the attack's clean input: {type(e).__name__}: {e}")
            st.caption(f"pipeline: `{pipeline_text(row)}`")
        norm = row.get("norm") if "norm" in row else None
        eps = row.get("eps") if "eps" in row else None
        lines = [f"- adversarial prediction: **{int(r.pred)} {class_name(int(r.pred))}**"]
        clean_pred = r.get("clean_pred")
        if clean_pred is not None and pd.notna(clean_pred):
            lines.append(f"- clean prediction in the attack run: {int(clean_pred)} {class_name(int(clean_pred))}")
        pert = r.get("perturbation")
        if pert is not None and pd.notna(pert):
            budget = f" (eps {float(eps):.6g})" if eps is not None and pd.notna(eps) else ""
            lines.append(f"- perturbation {norm or ''} norm: {float(pert):.6g}{budget}")
        seed = r.get("attack_seed")
        if seed is not None and pd.notna(seed):
            lines.append(f"- batch attack seed: {int(seed)}")
        st.markdown("\n".join(lines))
        st.caption("top-5 on the adversarial image")
        st.dataframe(_top5(r, ""), hide_index=True, width="stretch")


def waterfall_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The cumulative path of one audit (:func:`report.audit_rows` of one data set, model and
    stack) as waterfall bars: each step from the ΔACC before it to the ΔACC after it, then the
    whole stack from 0.  ΔACC in pp, positive = accuracy lost."""
    path = rows[rows.part == "path"].sort_values("index")
    out, before = [], 0.0
    for r in path.itertuples():
        after = 100 * r.delta_acc
        step = 100 * r.step_delta
        out.append({"step": f"{r.index}. {'' if r.index == 1 else '+'}{r.stage}={r.noise}", "start": before,
                    "end": after, "ΔACC pp": round(step, 2), "cumulative ΔACC pp": round(after, 2),
                    "effect": "loss" if step > 0 else "gain" if step < 0 else "none", "note": r.note})
        before = after if pd.notna(after) else before
    whole = rows[rows.part == "stack"].iloc[0]
    total = 100 * whole.delta_acc
    out.append({"step": "whole stack", "start": 0.0, "end": total, "ΔACC pp": round(total, 2),
                "cumulative ΔACC pp": round(total, 2), "effect": "whole stack", "note": whole.note})
    return pd.DataFrame(out)


def page_audit(root: str, sig: tuple, df: pd.DataFrame) -> None:
    import altair as alt

    st.header("Audit: your deployment stack, stage by stage")
    rows = report.audit_rows(df)
    if rows.empty:
        st.info("No audit stored yet. Run `robustbench-sys audit --model M --stack "
                "\"decoder=opencv,resize=cv2-linear,...\" --data DIR` into this results folder.")
        return
    fp = _dataset_choice(df[df.dataset_fingerprint.isin(set(rows.dataset_fingerprint))], "au")
    rows = rows[rows.dataset_fingerprint == fp]
    c1, c2 = st.columns(2)
    model = c1.selectbox("model", sorted(set(rows.model)), key="au-model")
    rows = rows[rows.model == model]
    stacks = dict(zip(rows.stack_id, rows["stack"]))
    sid = c2.selectbox("stack", sorted(stacks), format_func=lambda k: f"{stacks[k]}  ({k})", key="au-stack")
    g = rows[rows.stack_id == sid]
    st.markdown(report.audit_verdict(g).replace("verdict: ", "**Verdict:** ", 1))
    st.caption(f"Stack `{stacks[sid]}` against {model}'s reference pipeline on **{g.dataset.iloc[0]}** "
               f"(n = {int(g.n.max())}, reference top-1 {100 * g.ref_top1.iloc[0]:.1f}%). ΔACC = reference − "
               "stack accuracy (pp, positive = lost), paired bootstrap 95% CI; flip = share of images whose "
               "top-1 prediction changes.")
    st.subheader("Cumulative path (SysNoise Fig. 3), in your order")
    wf = waterfall_frame(g)
    colors = alt.Scale(domain=["loss", "gain", "none", "whole stack"],
                       range=["#d62728", "#2ca02c", "#9e9e9e", "#4c78a8"])
    bars = alt.Chart(wf).mark_bar().encode(
        x=alt.X("step:N", sort=None, title=None, axis=alt.Axis(labelAngle=-20, labelLimit=260)),
        y=alt.Y("start:Q", title="ΔACC pp (cumulative)"), y2="end:Q",
        color=alt.Color("effect:N", scale=colors, title=None), tooltip=list(wf.columns))
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="black").encode(y="y:Q")
    st.altair_chart(bars + zero, width="stretch")
    st.subheader("Each stage alone")
    alone = g[g.part == "alone"].sort_values("index")
    a = pd.DataFrame({"stage": [f"{r.index}. {r.stage}={r.noise}" for r in alone.itertuples()],
                      "ΔACC pp": (100 * alone.delta_acc).round(2).to_numpy(),
                      "lo": (100 * alone.delta_ci_low).to_numpy(), "hi": (100 * alone.delta_ci_high).to_numpy(),
                      "flip %": (100 * alone.flip_rate).round(2).to_numpy()})
    base = alt.Chart(a).encode(x=alt.X("stage:N", sort=None, title=None, axis=alt.Axis(labelAngle=-20, labelLimit=260)))
    chart = base.mark_bar(color="#d62728", opacity=0.75).encode(y=alt.Y("ΔACC pp:Q", title="ΔACC pp (95% CI)"),
                                                                tooltip=list(a.columns)) + \
        base.mark_rule().encode(y="lo:Q", y2="hi:Q") + zero
    st.altair_chart(chart, width="stretch")
    st.subheader("Table")
    t = report.audit_table(df[df.dataset_fingerprint.eq(fp) & df.model.eq(model)])
    st.dataframe(t[t["stack"] == sid].drop(columns=["dataset", "model", "stack"]), hide_index=True, width="stretch")


def page_provenance(root: str, sig: tuple, df: pd.DataFrame) -> None:
    st.header("Provenance")
    labels = [f"{r.model} / {r.condition} / {r.dataset}" for r in df.itertuples()]
    i = st.selectbox("result", range(len(df)), format_func=lambda k: labels[k], key="pv-row")
    r = df.iloc[i]
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("pipeline")
        st.code(str(r.get("pipeline_text", "")))
        st.json(_json(r.get("pipeline")))
        st.subheader("model card tags")
        st.json(_json(r.get("tags")))
        st.write({k: str(r.get(k)) for k in ("unit_id", "weights_sha256", "dataset_fingerprint", "suite",
                                             "suite_version", "run_ids", "created_at") if k in r})
    with c2:
        st.subheader("environment and library versions")
        st.json(_json(r.get("provenance")))
    try:
        with st.expander("unit spec (units/<id>.json)"):
            st.json(unit_spec(root, r.unit_id))
    except StoreError as e:
        st.warning(str(e))


def _json(s) -> dict:
    try:
        return json.loads(s) if isinstance(s, str) else {}
    except ValueError:
        return {"unparsed": str(s)}


def page_calibration(root: str, sig: tuple, df: pd.DataFrame) -> None:
    """Models ranked by expected calibration error or NLL per condition (report.calibration_table)."""
    st.header("Calibration")
    if not report.has_calibration(df):
        st.info("No calibration figures in this store: its summaries predate them. Delete its `summaries/` "
                "folder and re-run the same eval command to rebuild them from the stored per-image rows.")
        return
    fp = _dataset_choice(df, "ca")
    s = df[df.dataset_fingerprint == fp]
    c1, c2 = st.columns(2)
    conds = sorted(set(s.condition), key=lambda c: (c != "clean", c))
    cond = c1.selectbox("condition", ["(all)", *conds], key="ca-cond")
    by = c2.radio("rank by", ("ECE", "NLL"), horizontal=True, key="ca-by")
    st.caption("ECE: expected calibration error over 15 equal-width bins of the top-1 softmax probability "
               "(Guo et al. 2017); NLL: mean −ln p(label). Lower is better; rank 1 = best calibrated model for "
               "the condition; Δ = condition − the model's reference. Attack conditions are scored on the "
               "adversarial images.")
    t = report.calibration_table(s if cond == "(all)" else s[s.condition == cond], rank_by=by.lower())
    st.dataframe(t, hide_index=True, width="stretch")


RENDER = dict(zip(PAGES, (page_leaderboard, page_heatmap, page_scatter, page_deploy, page_drilldown, page_flips,
                          page_audit, page_provenance, page_calibration)))


# ---------------------------------------------------------------------- main
def main() -> None:
    st.set_page_config(page_title="robustbench-sys", layout="wide")
    if "results" not in st.session_state:
        st.session_state["results"] = results_arg()
    root = st.sidebar.text_input("results folder", key="results")
    page = st.sidebar.radio("page", PAGES, key="page")
    st.title("robustbench-sys")
    root = str(Path(root).expanduser())
    if not Path(root).is_dir():
        st.info(f"No results store at `{root}`. Run `robustbench-sys eval --out {root} ...` first, "
                "or type another folder in the sidebar.")
        return
    try:
        sig = store_signature(root)
        df, problems = load_summaries(root, sig)
    except Exception as e:
        st.error(f"Cannot read the results store at `{root}`: {type(e).__name__}: {e}")
        return
    for p in problems:
        st.warning(f"Skipped an unreadable file: {p}")
    pending = in_progress_units(root, df)
    if pending:
        st.info(f"{len(pending)} unit(s) have per-image results but no summary yet (a run is still writing, "
                f"or was interrupted: re-run the same eval command to finish): {', '.join(pending[:5])}"
                f"{'…' if len(pending) > 5 else ''}")
    if df.empty:
        st.info(f"No finished results in `{root}` yet"
                + (" (every summary file was unreadable)." if problems else ". Run `robustbench-sys eval` first."))
        return
    missing = [c for c in L.REQUIRED + ("unit_id", "dataset") if c not in df]
    if missing:
        st.error(f"The summaries in `{root}` lack column(s) {missing}; they were written by an older version. "
                 "Re-run the evaluation into a new folder.")
        return
    try:
        RENDER[page](root, sig, df)
    except Exception as e:  # a clear message in the page, never a stack trace
        st.error(f"Cannot show '{page}': {type(e).__name__}: {e}")


main()
