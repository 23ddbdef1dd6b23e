"""Dashboard pages (streamlit.testing AppTest) on a real results store, plus the store-problem
states (empty, partially written, corrupt parquet) and the leaderboard / dashboard CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit", reason="streamlit not installed (scripts/setup.d/70-dashboard.sh)")
from _dashboard_store import ATTACK, LIMIT, MODELS, NATURAL, RESIZE, real_store, rich_store
from streamlit.testing.v1 import AppTest

from robustbench_sys import cli
from robustbench_sys.data import class_name
from robustbench_sys.results import leaderboard as L
from robustbench_sys.results.pareto import front_mask
from robustbench_sys.results.store import ResultsStore

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = ("Leaderboard", "ΔACC heatmap", "Clean vs robust", "Condition drill-down", "Flipped images", "Audit",
         "Provenance")


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    return real_store(tmp_path_factory)


@pytest.fixture(scope="session")
def summaries(store) -> pd.DataFrame:
    return ResultsStore(store).summaries()


def run_app(root, page="Leaderboard") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["results"] = str(root)
    at.session_state["page"] = page
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "header", "subheader")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def frames(at) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def test_store_is_real(summaries):
    assert set(summaries.model) == set(MODELS)
    assert set(summaries.condition) == {"clean", *RESIZE}
    assert (summaries.n_images == LIMIT).all()


# ---------------------------------------------------------------------- every page
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_error(store, page):
    at = run_app(store, page)
    assert not at.error, [e.value for e in at.error]
    assert page.split()[0].lower() in texts(at).lower() or page == "ΔACC heatmap"


def test_leaderboard_page_matches_library(store, summaries):
    at = run_app(store)
    lb = L.build(summaries)
    shown = frames(at)
    overall = shown[0]
    assert sorted(overall.model) == sorted(MODELS)
    assert overall["rank"].tolist() == lb.overall["rank"].tolist()
    clean = next(d for d in shown if "top1 95% CI" in d)
    assert (clean.n == LIMIT).all()
    exp = L.display_frame(lb, "clean")
    assert clean["top1 %"].tolist() == exp["top1 %"].tolist()
    resize = next(d for d in shown if "mean ΔACC pp" in d)
    assert set(resize.options) == {len(RESIZE)}
    # family filter: only the resize table (plus overall) remains
    at.multiselect(key="lb-fams").set_value(["resize"]).run()
    shown = frames(at)
    assert not any("top1 95% CI" in d for d in shown)
    assert any("mean ΔACC pp" in d for d in shown)
    # model-family tag filter keeps one model
    at.multiselect(key="lb-fams").set_value([]).run()
    at.multiselect(key="lb-mfam").set_value(["mobilenet"]).run()
    assert frames(at)[0].model.tolist() == ["mobilenet_v2"]


def test_heatmap_values_are_the_stored_deltas(store, summaries):
    at = run_app(store, "ΔACC heatmap")
    assert at.get("vega_lite_chart"), "no chart"
    pivot = frames(at)[-1]
    s = summaries[summaries.condition != "clean"]
    assert pivot.shape == (len(MODELS), len(RESIZE))
    for r in s.itertuples():
        assert pivot.loc[r.model, r.condition] == pytest.approx(round(100 * r.delta_acc, 2))


def test_scatter_pareto_front(store, summaries):
    at = run_app(store, "Clean vs robust")
    d = frames(at)[-1]
    assert sorted(d.model) == sorted(MODELS)
    assert d["Pareto front"].tolist() == front_mask(d["clean top1 %"], d["robust top1 %"]).tolist()
    assert d["Pareto front"].any()
    for _, r in d.iterrows():
        s = summaries[(summaries.model == r["model"]) & (summaries.condition != "clean")]
        assert r["robust top1 %"] == pytest.approx(round(100 * s.top1.mean(), 2))


def test_drilldown_condition_with_intervals(store, summaries):
    at = run_app(store, "Condition drill-down")
    at.selectbox(key="dd-cond").set_value(RESIZE[0]).run()
    t = frames(at)[0]
    assert sorted(t.model) == sorted(MODELS)
    assert (t.condition == RESIZE[0]).all() and (t.n == LIMIT).all()
    assert t["ΔACC 95% CI"].str.match(r"^\[[+-]\d").all()


def test_flipped_viewer_rebuilds_both_images_with_top5(store, summaries):
    at = run_app(store, "Flipped images")
    at.selectbox(key="fl-model").set_value("mobilenet_v2").run()
    at.selectbox(key="fl-cond").set_value(RESIZE[0]).run()
    if at.checkbox(key="fl-only").value is True and not at.get("image"):
        pytest.fail("flipped images announced but none shown")
    if at.checkbox(key="fl-only").value:
        at.checkbox(key="fl-only").uncheck().run()
    assert not at.warning, [w.value for w in at.warning]
    assert len(at.get("image")) == 2
    file = at.selectbox(key="fl-file").value
    ref = summaries[(summaries.model == "mobilenet_v2") & (summaries.condition == "clean")].iloc[0]
    rows = ResultsStore(store).read_unit_rows(ref.unit_id).set_index("file").loc[file]
    top_ref = frames(at)[0]
    assert top_ref["class"].tolist() == list(rows.top5)
    assert top_ref["prob"].to_numpy() == pytest.approx(np.round(np.asarray(rows.top5_prob, dtype=float), 4))
    assert top_ref["name"].tolist() == [class_name(int(i)) for i in rows.top5]
    assert f"true label: {int(rows.label)}" in texts(at)


def test_provenance_panel(store):
    at = run_app(store, "Provenance")
    shown = [json.dumps(j.value) if not isinstance(j.value, str) else j.value for j in at.json]
    assert any("torch" in s for s in shown), shown[:2]
    assert any("dataset_root" in s for s in shown)


def test_audit_page_without_audits_says_how(store):
    at = run_app(store, "Audit")
    assert "No audit stored yet" in texts(at) and not at.error


@pytest.fixture(scope="module")
def audit_store(store, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A copy of the real store plus a real two-stage audit of mobilenet_v2 (its clean unit and the
    resize/cv2-nearest unit are the store's own: shared)."""
    from robustbench_sys import audit

    root = tmp_path_factory.mktemp("audit-store") / "results"
    shutil.copytree(store, root)
    df = audit.audit("mobilenet_v2", "decoder=opencv,resize=cv2-nearest", "foolbox-demo", root, limit=LIMIT,
                     workers=0, progress=False)
    return root, df


def test_audit_page_waterfall_and_verdict(audit_store):
    from robustbench_sys.results import report

    root, df = audit_store
    stack = df.attrs["stack"]
    s = ResultsStore(root).summaries()
    rows = report.audit_rows(s)
    rows = rows[(rows.model == "mobilenet_v2") & (rows.stack_id == stack.id)]
    assert len(rows) == 5
    # the audit's resize step is the unit the resize suite stored
    near = s[(s.model == "mobilenet_v2") & (s.condition == "resize/cv2-nearest")].iloc[0]
    assert rows[(rows.part == "alone") & (rows.stage == "resize")].unit_id.iloc[0] == near.unit_id
    at = run_app(root, "Audit")
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="au-model").value == "mobilenet_v2"
    assert at.selectbox(key="au-stack").value == stack.id
    assert len(at.get("vega_lite_chart")) == 2, "waterfall + alone bars"
    verdict = report.audit_verdict(rows).replace("verdict: ", "**Verdict:** ", 1)
    assert verdict in [m.value for m in at.markdown]
    assert stack.text() in texts(at)
    t = frames(at)[-1]
    assert list(t.part) == ["stack", "alone", "alone", "path", "path"]
    assert t["ΔACC pp"].tolist() == pytest.approx((100 * rows.delta_acc).round(2).tolist())
    # the waterfall: each step from the ΔACC before it to the ΔACC after it, then the whole stack from 0
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    chart = at.get("vega_lite_chart")[0].proto
    data = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.datasets]
    bars = next(d for d in data if "start" in d).to_dict("records")
    path = rows[rows.part == "path"].sort_values("index")
    whole = 100 * rows[rows.part == "stack"].delta_acc.iloc[0]
    assert [b["step"] for b in bars] == ["1. decoder=opencv", "2. +resize=cv2-nearest", "whole stack"]
    assert [b["end"] for b in bars] == pytest.approx([*(100 * path.delta_acc), whole])
    assert [b["start"] for b in bars] == pytest.approx([0.0, 100 * path.delta_acc.iloc[0], 0.0])
    for page in PAGES:   # an audit in the store breaks no other page
        assert not run_app(root, page).error, page


# ---------------------------------------------------------------------- store problems
def test_missing_and_empty_store(tmp_path):
    at = run_app(tmp_path / "nope")
    assert "No results store" in texts(at)
    (tmp_path / "empty").mkdir()
    at = run_app(tmp_path / "empty")
    assert "No finished results" in texts(at)
    assert not at.error


def test_partially_written_store_and_cache_refresh(store, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(store, root)
    at = run_app(root)
    assert "no summary yet" not in texts(at)
    victim = sorted((root / "summaries").glob("*.parquet"))[0]
    victim.unlink()  # a unit whose per-image parts are written but whose summary is not (yet)
    at.run()
    assert not at.exception
    assert "1 unit(s) have per-image results but no summary" in texts(at)
    for page in PAGES:
        a = run_app(root, page)
        assert not a.error, (page, [e.value for e in a.error])


def test_new_results_are_never_stale(store, tmp_path):
    """The pages are cached on the identity (name, inode, mtime, size) of every summary file: a result
    rewritten right after a page was shown (an atomic replace, possibly within the same mtime tick) and
    a new model's results both show at the next rerun, with no restart."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    def replace(path: Path, table) -> None:   # as the store writes: a temporary file renamed over
        tmp = path.with_name(f".tmp-{path.name}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)

    root = tmp_path / "fresh"
    shutil.copytree(store, root)
    at = run_app(root)
    assert sorted(frames(at)[0].model) == sorted(MODELS)
    rs = ResultsStore(root)
    s = rs.summaries()
    clean = s[(s.model == MODELS[0]) & (s.condition == "clean")].iloc[0]
    path = rs.summary_path(clean.unit_id, "clean")
    t = pq.read_table(path)
    for col, v in (("top1", 0.5), ("top1_ci_low", 0.4), ("top1_ci_high", 0.6)):
        t = t.set_column(t.schema.get_field_index(col), col, pa.array([v], pa.float64()))
    replace(path, t)
    at.run()
    assert not at.exception
    shown = next(d for d in frames(at) if "top1 95% CI" in d).set_index("model")
    assert shown.loc[MODELS[0], "top1 %"] == pytest.approx(50.0)
    # a new model: every summary of MODELS[1] stored again under another model name and unit id
    for r in s[s.model == MODELS[1]].itertuples():
        t = pq.read_table(rs.summary_path(r.unit_id, r.condition))
        uid = "f" * 8 + r.unit_id[8:]
        for col, v in (("model", "new_model"), ("unit_id", uid)):
            t = t.set_column(t.schema.get_field_index(col), col, pa.array([v], pa.string()))
        replace(rs.summary_path(uid, r.condition), t)
    at.run()
    assert not at.exception and not at.error
    assert sorted(frames(at)[0].model) == sorted([*MODELS, "new_model"])


def test_corrupt_parquet_is_a_message(store, tmp_path):
    root = tmp_path / "corrupt"
    shutil.copytree(store, root)
    files = sorted((root / "summaries").glob("*.parquet"))
    files[0].write_bytes(b"PAR1 this is not parquet")
    at = run_app(root)
    assert "corrupt parquet file" in texts(at)
    assert frames(at), "the readable summaries are still shown"
    for p in files:
        p.write_bytes(b"garbage")
    at = run_app(root)
    assert "every summary file was unreadable" in texts(at)
    # a corrupt per-image part: the viewer says so instead of a trace
    for p in files:
        p.unlink()
    shutil.copytree(store / "summaries", root / "summaries", dirs_exist_ok=True)
    for part in (root / "per_image").glob("*/[!.]*.parquet"):
        part.write_bytes(b"garbage")
    at = run_app(root, "Flipped images")
    assert at.error and "corrupt parquet" in at.error[0].value


# ---------------------------------------------------------------------- CLI
@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "html"])
def test_leaderboard_cli(store, fmt, capsys, tmp_path):
    save = tmp_path / f"lb.{fmt}"
    assert cli.main(["leaderboard", "--out", str(store), "--format", fmt, "--save", str(save)]) == 0
    out = capsys.readouterr().out
    for m in MODELS:
        assert m in out
    assert save.read_text().strip() == out.strip()


def test_leaderboard_cli_errors(tmp_path, capsys):
    assert cli.main(["leaderboard", "--out", str(tmp_path / "none")]) == 2
    assert "no results store" in capsys.readouterr().err


def test_leaderboard_cli_unknown_family(store, capsys):
    assert cli.main(["leaderboard", "--out", str(store), "--family", "nosuch"]) == 2
    assert "no such family" in capsys.readouterr().err


def test_dashboard_command_binds_localhost_without_telemetry(tmp_path):
    cmd = cli.dashboard_command(tmp_path, 8765)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[-2:] == ["--results", str(tmp_path)]
    assert Path(cmd[cmd.index("run") + 1]).is_file()
    exposed = cli.dashboard_command(tmp_path, 8765, expose=True)
    assert exposed[exposed.index("--server.address") + 1] == "0.0.0.0"
    a = cli.build_parser().parse_args(["dashboard", "--results", str(tmp_path), "--port", "9999"])
    assert (a.results, a.port, a.expose) == (str(tmp_path), 9999, False)


def test_one_summary_reader_typed_skips_temp_and_names_corrupt(store, tmp_path):
    """``store.read_summaries`` is the one reader (ResultsStore.summaries, the leaderboard CLI
    and the dashboard all use it): columns typed by SUMMARY_SCHEMA, temp files skipped,
    corrupt files named in ``problems`` while the readable rows are still returned."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robustbench_sys.results import store as S

    df, problems = S.read_summaries(store)
    assert problems == [] and len(df) == len(MODELS) * (1 + len(RESIZE))
    via_store = ResultsStore(store)
    pd.testing.assert_frame_equal(via_store.summaries(), df)
    assert via_store.problems == []
    want = S.SUMMARY_SCHEMA.empty_table().to_pandas().dtypes
    assert set(df.columns) <= set(want.index) and {"pipeline", "reference_pipeline", "suite"} <= set(df.columns)
    for name in df.columns:
        assert df[name].dtype == want[name], name
    root = tmp_path / "c"
    shutil.copytree(store / "summaries", root / "summaries")
    files = sorted((root / "summaries").glob("*.parquet"))
    # a writer that inferred other types (an int column as float, a string column all null)
    t = pq.read_table(files[1])
    t = t.set_column(t.schema.get_field_index("n_images"), "n_images", t["n_images"].cast(pa.float64()))
    t = t.set_column(t.schema.get_field_index("arch"), "arch", pa.nulls(1, pa.null()))
    pq.write_table(t, files[1])
    shutil.copy(files[2], root / "summaries" / f".{files[2].name}.tmp.parquet")   # an interrupted write
    files[0].write_bytes(b"junk")
    df2, problems = S.read_summaries(root)
    assert len(df2) == len(df) - 1
    assert len(problems) == 1 and str(files[0]) in problems[0] and "corrupt parquet file" in problems[0]
    assert df2.n_images.dtype == np.int64 and (df2.n_images == LIMIT).all()
    assert df2.arch.isna().sum() == 1
    assert L.read_summaries is S.read_summaries
    empty, problems = S.read_summaries(tmp_path / "nothing")
    assert empty.empty and problems == [] and list(empty.columns) == S.SUMMARY_SCHEMA.names


# ---------------------------------------------------------------------- issue 13 (defect 8): honest pages
# A second real store: the one above plus two natural corruptions with a long common name prefix
# and a real FGSM attack (tests/_dashboard_store.py).
@pytest.fixture(scope="session")
def rich(tmp_path_factory) -> Path:
    return rich_store(tmp_path_factory)


def image_captions(at) -> list[str]:
    return [i.caption for el in at.get("image") for i in el.proto.imgs]


def test_rich_store_is_real(rich):
    s = ResultsStore(rich).summaries()
    assert set(s.condition) == {"clean", *RESIZE, *NATURAL, ATTACK}
    adv = s[s.condition == ATTACK]
    assert len(adv) == len(MODELS) and adv.attack.eq("fgsm").all() and (adv.n_images == LIMIT).all()
    # the attack's per-image rows hold predictions, never pixels: the dashboard cannot show the image
    rows = ResultsStore(rich).read_unit_rows(adv.unit_id.iloc[0])
    assert {"clean_pred", "perturbation", "attack_seed"} <= set(rows.columns)
    assert not {c for c in rows.columns if "pixel" in c or "image" in c or "adv" in c}


@pytest.mark.parametrize("model", MODELS)
def test_flipped_attack_condition_never_captions_clean_image_as_adversarial(rich, model):
    s = ResultsStore(rich).summaries()
    at = run_app(rich, "Flipped images")
    at.selectbox(key="fl-model").set_value(model).run()
    at.selectbox(key="fl-cond").set_value(ATTACK).run()
    if at.checkbox(key="fl-only").value:
        at.checkbox(key="fl-only").uncheck().run()
    assert not at.error and not at.warning, [w.value for w in at.warning]
    adv = s[(s.model == model) & (s.condition == ATTACK)].iloc[0]
    ref = s[(s.model == model) & (s.condition == "clean")].iloc[0]
    store = ResultsStore(rich)
    for file in at.selectbox(key="fl-file").options:
        at.selectbox(key="fl-file").set_value(file).run()
        a = store.read_unit_rows(adv.unit_id).set_index("file").loc[file]
        c = store.read_unit_rows(ref.unit_id).set_index("file").loc[file]
        caps = image_captions(at)
        # one image: the clean input, captioned as the clean input with the clean prediction
        assert caps == [f"clean input (reference), clean prediction: {class_name(int(c.pred))}"], caps
        assert not any(ATTACK in cap or "adversarial" in cap.replace("NOT the adversarial", "") for cap in caps)
        if int(a.pred) != int(c.pred):
            assert not any(class_name(int(a.pred)) in cap for cap in caps), "clean image with the adversarial label"
        shown = texts(at)
        assert "Adversarial image not stored" in shown and "not stored, not shown" in shown
        assert f"adversarial prediction: **{int(a.pred)} {class_name(int(a.pred))}**" in shown
        assert f"clean prediction in the attack run: {int(a.clean_pred)}" in shown
        top = frames(at)
        assert top[0]["class"].tolist() == list(c.top5)       # clean input's top-5
        assert top[1]["class"].tolist() == list(a.top5)       # adversarial image's top-5
    assert "top-5 on the adversarial image" in texts(at)


def test_flipped_noise_condition_still_shows_both_images_with_their_own_pipelines(rich):
    at = run_app(rich, "Flipped images")
    at.selectbox(key="fl-model").set_value("tf_efficientnet_lite0").run()
    at.selectbox(key="fl-cond").set_value(NATURAL[1]).run()
    if at.checkbox(key="fl-only").value:
        at.checkbox(key="fl-only").uncheck().run()
    caps = image_captions(at)
    assert len(caps) == 2 and caps[0].startswith("reference (clean): ") and caps[1].startswith(f"{NATURAL[1]}: ")
    shown = texts(at)
    assert "pipeline: `decoder:pil > color:rgb > resize:pil-bicubic(256->224)`" in shown
    assert "resize:pil-bicubic(256->224) > corrupt:defocus_blur-2`" in shown
    assert "pil-bilinear" not in shown


@pytest.mark.parametrize("cond", ["clean", NATURAL[0], ATTACK, RESIZE[0]])
def test_drilldown_shows_each_units_own_pipeline(rich, cond):
    store = ResultsStore(rich)
    s = store.summaries()
    at = run_app(rich, "Condition drill-down")
    at.selectbox(key="dd-cond").set_value(cond).run()
    assert not at.error
    t = frames(at)[0].set_index("model")
    shown = texts(at)
    for model, resize in (("mobilenet_v2", "pil-bilinear"), ("tf_efficientnet_lite0", "pil-bicubic")):
        unit = s[(s.model == model) & (s.condition == cond)].unit_id.iloc[0]
        own = store.unit(unit)["pipeline_text"]
        assert t.loc[model, "pipeline"] == own
        assert f"- **{model}** (foolbox-demo[:{LIMIT}]): `{own}`" in shown
        if cond != RESIZE[0]:   # the model's own resize; the resize condition swaps it for both
            assert f"resize:{resize}(" in own
    if cond == RESIZE[0]:
        assert t.pipeline.str.contains("resize:cv2-nearest(", regex=False).all()


def _vega(at, i=0) -> tuple[dict, pd.DataFrame]:
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    chart = at.get("vega_lite_chart")[i].proto
    data = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.datasets]
    return json.loads(chart.spec), next(d for d in data if "condition" in d)


def test_heatmap_condition_labels_unique_untruncated(rich):
    s = ResultsStore(rich).summaries()
    at = run_app(rich, "ΔACC heatmap")
    spec, d = _vega(at)
    x = spec["encoding"]["x"]
    assert x["field"] == "label"
    assert x["axis"]["labelLimit"] == 0 and x["axis"]["labelOverlap"] is False   # never cut, never hidden
    labels = d.drop_duplicates("condition").set_index("condition")["label"]
    noisy = sorted(set(s.condition) - {"clean"})
    assert sorted(labels.index) == noisy
    assert labels.is_unique, labels.to_dict()                          # one column per condition
    assert d.groupby("label").condition.nunique().eq(1).all()
    for cond, label in labels.items():
        assert cond.endswith(label) and not label.endswith("…")       # the name itself, its family dropped
    assert labels[NATURAL[0]] == "defocus_blur-1" and labels[NATURAL[1]] == "defocus_blur-2"
    assert labels[ATTACK] == "fgsm@1/255"
    # the full name stays in the tooltip; the family order is in the axis title
    assert {"condition", "family"} <= {t["field"] for t in spec["encoding"]["tooltip"]}
    assert "adv-mini | natural | resize" in x["axis"]["title"]
    pivot = frames(at)[-1]
    assert pivot.shape == (len(MODELS), len(noisy))


def _raise_group_flag(root: Path, model: str) -> dict:
    """Add a raised group-level validity flag to ``model``'s attack summary, as the worst-case writer
    of a family does (same columns: ``validity_flags`` JSON list, ``validity_raised`` names)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flag = {"name": "square_after_whitebox", "raised": True,
            "detail": "square lowers robust accuracy after white-box attacks (84.0% -> 71.0%): the white-box "
                      "attacks are likely masked"}
    for p in (root / "summaries").glob("*.parquet"):
        row = pq.read_table(p).to_pylist()[0]
        if row["model"] == model and row["condition"] == ATTACK:
            flags = json.loads(row["validity_flags"]) + [flag]
            row["validity_flags"] = json.dumps(flags, sort_keys=True)
            row["validity_raised"] = ",".join(f["name"] for f in flags if f["raised"])
            pq.write_table(pa.Table.from_pylist([row]), p)
            return flag
    raise AssertionError("no attack summary")


def test_no_validity_warning_when_no_flag_is_raised(rich):
    s = ResultsStore(rich).summaries()
    assert s[s.condition == ATTACK].validity_raised.eq("").all()     # the real FGSM run raised none
    for page in ("Leaderboard", "Condition drill-down"):
        at = run_app(rich, page)
        if page == "Condition drill-down":
            at.selectbox(key="dd-cond").set_value(ATTACK).run()
        assert not [w.value for w in at.warning if "Validity flag" in w.value or "validity flags" in w.value]


def test_raised_validity_flags_are_visible(rich, tmp_path):
    root = tmp_path / "flagged"
    shutil.copytree(rich, root)
    flag = _raise_group_flag(root, "tf_efficientnet_lite0")
    # leaderboard: a banner, a column in the adversarial family's table and the overall table, the detail
    at = run_app(root)
    assert not at.error
    warns = [w.value for w in at.warning]
    assert any("1 ranked result(s) raised validity flags" in w for w in warns), warns
    detail = [w for w in warns if flag["detail"] in w]
    assert len(detail) == 1 and "tf_efficientnet_lite0" in detail[0] and ATTACK in detail[0]
    assert f"**{flag['name']}**" in detail[0]
    fam = next(d for d in frames(at) if "validity flags" in d and "worst option" in d).set_index("model")
    cell = fam.loc["tf_efficientnet_lite0", "validity flags"]
    assert cell.startswith("⚠") and flag["name"] in cell
    assert fam.loc["mobilenet_v2", "validity flags"] == ""
    overall = frames(at)[0].set_index("model")
    assert overall.loc["tf_efficientnet_lite0", "validity flags"] == f"⚠ adv-mini: {flag['name']}"
    # drill-down of the attack condition: the warning with its detail and a column
    at = run_app(root, "Condition drill-down")
    at.selectbox(key="dd-cond").set_value(ATTACK).run()
    warns = [w.value for w in at.warning]
    assert len(warns) == 1 and flag["detail"] in warns[0] and "tf_efficientnet_lite0" in warns[0]
    t = frames(at)[0].set_index("model")
    assert t.loc["tf_efficientnet_lite0", "validity flags"] == f"⚠ {flag['name']}"
    assert t.loc["mobilenet_v2", "validity flags"] == ""
    # other conditions carry no flag
    at.selectbox(key="dd-cond").set_value(NATURAL[0]).run()
    assert not at.warning and "validity flags" not in frames(at)[0]
