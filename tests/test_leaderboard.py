"""Leaderboard logic on hand-built summary frames: interval ranks, ties, comparability, output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from robustbench_sys.metrics.paired import wilson_interval
from robustbench_sys.results import leaderboard as L
from robustbench_sys.results.pareto import front_mask

FP = "fp-demo"


def row(model, condition, family, *, top1=0.7, n=100, delta=0.0, dlo=None, dhi=None, fp=FP,
        suite_version=1, created="2026-01-01T00:00:00", tags=None):
    k = round(top1 * n)
    lo, hi = wilson_interval(k, n)
    return {"model": model, "condition": condition, "family": family, "dataset": "demo",
            "dataset_fingerprint": fp, "n_images": n, "suite_version": suite_version,
            "top1": k / n, "top1_ci_low": lo, "top1_ci_high": hi, "delta_acc": delta,
            "delta_ci_low": delta - 0.02 if dlo is None else dlo,
            "delta_ci_high": delta + 0.02 if dhi is None else dhi,
            "flip_rate": abs(delta), "created_at": created,
            "tags": json.dumps(tags or {"family": model.split("_")[0], "params_m": 1.0, "training": "standard"})}


def frame(rows):
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- the rank rule
def test_interval_rank_worked_example_higher_is_better():
    # A [80,90] leads; B [75,85] overlaps A -> shares rank 1; C [60,70] is below A and B -> 3;
    # D [68,79] overlaps B (75..79) but not A (80 > 79) -> 1 + 1 (A) = 2.
    low, high = [80, 75, 60, 68], [90, 85, 70, 79]
    assert L.interval_rank(low, high, True).tolist() == [1, 1, 3, 2]


def test_interval_rank_lower_is_better_mirrors():
    low, high = [1, 2, 10, 5], [4, 6, 12, 9]
    # for ΔACC lower is better: A [1,4] best; B [2,6] overlaps; D [5,9]: A.hi 4 < 5 -> 2; C [10,12]: A,B,D -> 4
    assert L.interval_rank(low, high, False).tolist() == [1, 1, 4, 2]
    # mirror: negating values and flipping the direction gives the same ranks
    assert L.interval_rank(-np.array(high), -np.array(low), True).tolist() == [1, 1, 4, 2]


def test_clean_ranks_and_ties_from_wilson_intervals():
    # n=100: 0.90 -> [0.826, 0.945]; 0.85 overlaps it; 0.50 -> [0.40, 0.60] below both
    s = frame([row("a_1", "clean", "clean", top1=0.90), row("b_1", "clean", "clean", top1=0.85),
               row("c_1", "clean", "clean", top1=0.50)])
    lb = L.build(s)
    g = lb.families["clean"]
    assert g.model.tolist() == ["a_1", "b_1", "c_1"]
    assert g["rank"].tolist() == [1, 1, 3]
    assert g["tied"].tolist() == [True, True, False]
    assert (g["top1 lo"] <= g["top1 %"]).all() and (g["top1 %"] <= g["top1 hi"]).all()
    assert g.n.tolist() == [100, 100, 100]
    # the text output marks ties with '='
    d = L.display_frame(lb, "clean")
    assert d["rank"].tolist() == ["1=", "1=", "3"]


def test_large_n_separates_what_small_n_ties():
    small = L.build(frame([row("a", "clean", "clean", top1=0.80, n=50),
                           row("b", "clean", "clean", top1=0.72, n=50)]))
    big = L.build(frame([row("a", "clean", "clean", top1=0.80, n=5000),
                         row("b", "clean", "clean", top1=0.72, n=5000)]))
    assert small.families["clean"]["rank"].tolist() == [1, 1]
    assert big.families["clean"]["rank"].tolist() == [1, 2]


def test_noise_family_mean_and_max_with_conservative_interval():
    s = frame([
        row("a", "clean", "clean"), row("b", "clean", "clean"),
        row("a", "resize/x", "resize", delta=0.01, dlo=-0.01, dhi=0.03),
        row("a", "resize/y", "resize", delta=0.03, dlo=0.01, dhi=0.05),
        row("b", "resize/x", "resize", delta=0.20, dlo=0.15, dhi=0.25),
        row("b", "resize/y", "resize", delta=0.10, dlo=0.05, dhi=0.15),
    ])
    g = L.build(s).families["resize"].set_index("model")
    assert g.loc["a", "mean ΔACC pp"] == pytest.approx(2.0)
    assert (g.loc["a", "mean lo"], g.loc["a", "mean hi"]) == pytest.approx((0.0, 4.0))
    assert g.loc["b", "max ΔACC pp"] == pytest.approx(20.0)
    assert g.loc["b", "worst option"] == "resize/x"
    assert (g.loc["b", "max lo"], g.loc["b", "max hi"]) == pytest.approx((15.0, 25.0))
    # a's mean interval [0,4] is entirely below b's [10,20]: a rank 1, b rank 2, no tie
    assert g.loc["a", "rank"] == 1 and g.loc["b", "rank"] == 2
    assert not g["tied"].any()
    assert g.loc["a", "options"] == 2


# ---------------------------------------------------------------------- comparability
def test_incomparable_results_are_listed_apart_with_reason():
    s = frame([
        row("a", "clean", "clean"), row("b", "clean", "clean"), row("c", "clean", "clean"),
        row("d", "clean", "clean", n=60),                      # other n_images
        row("e", "clean", "clean", fp="other-fp"),             # other data set
        row("a", "resize/x", "resize", delta=0.01), row("a", "resize/y", "resize", delta=0.02),
        row("b", "resize/x", "resize", delta=0.05), row("b", "resize/y", "resize", delta=0.04),
        row("c", "resize/x", "resize", delta=0.05),            # only one of the two options
        row("d", "resize/x", "resize", delta=0.0, n=60, suite_version=2),
        row("d", "resize/y", "resize", delta=0.0, n=60, suite_version=2),
    ])
    lb = L.build(s)
    assert lb.dataset_fingerprint == FP
    assert sorted(lb.families["clean"].model) == ["a", "b", "c"]
    assert sorted(lb.families["resize"].model) == ["a", "b"]
    why = {(r.model, r.family): r.reason for r in lb.apart.itertuples()}
    assert "n_images 60 differs" in why[("d", "clean")]
    assert "other data set" in why[("e", "clean")] and "other-fp" in why[("e", "clean")]
    assert "missing 1 condition(s) (resize/y)" in why[("c", "resize")]
    assert "suite_version 2" in why[("d", "resize")] and "n_images 60" in why[("d", "resize")]
    # overall: c is ranked in clean only, so it is listed apart for the overall table
    assert sorted(lb.overall.model) == ["a", "b"]
    assert "resize" in why[("c", "overall")]


def test_choosing_the_other_data_set_ranks_it():
    s = frame([row("a", "clean", "clean"), row("b", "clean", "clean"), row("e", "clean", "clean", fp="other-fp")])
    lb = L.build(s, dataset_fingerprint="other-fp")
    assert lb.families["clean"].model.tolist() == ["e"]
    with pytest.raises(ValueError, match="not in the store"):
        L.build(s, dataset_fingerprint="nope")


def test_duplicate_result_newest_wins_and_older_listed():
    s = frame([row("a", "clean", "clean", top1=0.5, created="2026-01-01"),
               row("a", "clean", "clean", top1=0.9, created="2026-02-01")])
    lb = L.build(s)
    assert lb.families["clean"]["top1 %"].tolist() == pytest.approx([90.0])
    assert lb.apart.reason.str.contains("superseded").sum() == 1


# ---------------------------------------------------------------------- overall
def test_overall_is_mean_rank_with_ties():
    # clean: a > b clearly (n large); resize: b < a clearly (b loses less) -> mean ranks 1.5 each: tie
    s = frame([
        row("a", "clean", "clean", top1=0.9, n=5000), row("b", "clean", "clean", top1=0.7, n=5000),
        row("c", "clean", "clean", top1=0.5, n=5000),
        row("a", "resize/x", "resize", delta=0.2, dlo=0.18, dhi=0.22),
        row("b", "resize/x", "resize", delta=0.0, dlo=-0.01, dhi=0.01),
        row("c", "resize/x", "resize", delta=0.3, dlo=0.28, dhi=0.32),
    ])
    lb = L.build(s)
    o = lb.overall.set_index("model")
    assert o.loc["a", "rank clean"] == 1 and o.loc["a", "rank resize"] == 2
    assert o.loc["a", "mean rank"] == pytest.approx(1.5) and o.loc["b", "mean rank"] == pytest.approx(1.5)
    assert o.loc["a", "rank"] == o.loc["b", "rank"] == 1 and o.loc["a", "tied"]
    assert o.loc["c", "rank"] == 3 and o.loc["c", "mean rank"] == pytest.approx(3.0)


def test_family_filter_and_empty():
    assert L.build(pd.DataFrame()).empty
    assert L.render(L.build(pd.DataFrame())) == "(no results)"
    s = frame([row("a", "clean", "clean"), row("a", "resize/x", "resize", delta=0.1)])
    lb = L.build(s, families=["resize"])
    assert list(lb.families) == ["resize"]
    with pytest.raises(ValueError, match="lack column"):
        L.build(pd.DataFrame({"model": ["a"]}))


def test_pareto_front():
    x = [0.9, 0.8, 0.7, 0.85]
    y = [0.5, 0.7, 0.6, 0.5]
    # (0.7,0.6) dominated by (0.8,0.7); (0.85,0.5) dominated by (0.9,0.5)
    assert front_mask(x, y).tolist() == [True, True, False, False]
    # equal points are both on the front; NaN is never on it and dominates nothing
    assert front_mask([1, 1, np.nan, 0.5], [1, 1, 9, 0.5]).tolist() == [True, True, False, False]
    assert front_mask([np.nan, 0.5], [9, 0.5]).tolist() == [False, True]


@pytest.mark.parametrize("fmt", L.FORMATS)
def test_render_formats(fmt):
    s = frame([row("a_x", "clean", "clean", top1=0.9), row("b_y", "clean", "clean", top1=0.8),
               row("a_x", "resize/x", "resize", delta=0.01), row("b_y", "resize/x", "resize", delta=0.05),
               row("z", "clean", "clean", fp="zz")])
    text = L.render(L.build(s), fmt)
    for needle in ("a_x", "b_y", "resize", "not ranked", "other data set"):
        assert needle in text, (fmt, needle)
    if fmt == "html":
        assert text.startswith("<!doctype html>") and "<table" in text
    if fmt == "csv":
        df = pd.read_csv(__import__("io").StringIO(text))
        assert set(df.table) >= {"overall", "clean", "resize", "not ranked"}
    with pytest.raises(ValueError, match="--format"):
        L.render(L.build(s), "pdf")


# ---------------------------------------------------------------------- natural: ranked by mCE
def _natural_rows(model, scale, n=1000, clean_top1=0.7):
    """All 15 x 5 ImageNet-C conditions with error = scale * AlexNet's mean error (every severity)."""
    from robustbench_sys.metrics.natural import ALEXNET_ERRORS

    rows = [dict(row(model, "clean", "clean", top1=clean_top1, n=n), ref_top1=clean_top1,
                 pipeline=json.dumps({"corrupt": None}))]
    for c, e in ALEXNET_ERRORS.items():
        for sev in range(1, 6):
            top1 = 1 - scale * e
            r = row(model, f"natural/{c}-{sev}", "natural", top1=top1, n=n, delta=clean_top1 - top1)
            rows.append(dict(r, ref_top1=clean_top1, pipeline=json.dumps({"corrupt": f"{c}-{sev}"})))
    return rows


def test_natural_family_is_ranked_by_mce_worked_example():
    from robustbench_sys.results import report

    # errors equal to AlexNet's give mCE 100% exactly; 0.5 x AlexNet's gives 50%
    s = frame(_natural_rows("alex_like", 1.0) + _natural_rows("half_1", 0.5))
    lb = L.build(s)
    g = lb.families["natural"].set_index("model")
    assert g.loc["alex_like", "mCE %"] == pytest.approx(100, abs=0.06)   # top-1 rounded to k/n
    assert g.loc["half_1", "mCE %"] == pytest.approx(50, abs=0.06)
    assert g.loc["half_1", "rank"] == 1 and g.loc["alex_like", "rank"] == 2
    assert g.loc["half_1", "mCE lo"] < g.loc["half_1", "mCE %"] < g.loc["half_1", "mCE hi"]
    t = report.natural_table(s.assign(dataset="demo")).set_index("model")
    assert t.loc["half_1", "mCE %"] == pytest.approx(50, abs=0.06)
    # relative mCE: (sum E - 5 E_clean) / (sum E_alex - 5 E_alex_clean), clean error 0.3
    from robustbench_sys.metrics.natural import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS
    rel = np.mean([(0.5 * e - 0.3) / (e - ALEXNET_CLEAN_ERROR) for e in ALEXNET_ERRORS.values()])
    assert t.loc["half_1", "rel. mCE %"] == pytest.approx(100 * rel, abs=0.2)
    text = L.render(lb, "table")
    assert "mCE %" in text


def test_natural_without_all_15_falls_back_to_mean_delta():
    s = frame([r for r in _natural_rows("a_1", 0.5) if "snow" not in r["condition"]])
    g = L.build(s).families["natural"]
    assert np.isnan(g["mCE %"].iloc[0]) and not np.isnan(g["mean ΔACC pp"].iloc[0])


def _spec(**stages):
    return json.dumps({"decoder": "pil", "resize": "pil-bilinear", "color": "rgb", **stages})


def test_own_reference_option_counts_as_zero_and_keeps_models_comparable():
    """A bilinear and a bicubic model each skip their own resize (ΔACC 0 by definition); the
    leaderboard adds that option back as 0, learned from the other model's stored rows (its
    pipeline for that condition vs its reference pipeline), so both have the same options and
    are ranked together; an option that is not the model's reference stays missing.  The
    reference specs use bare names (an older store) and the condition pipelines full keys: they
    compare as the same pipeline."""
    bil = _spec(resize="pil-bilinear")
    bic = _spec(resize="pil-bicubic")

    def r(model, cond, delta, ref):
        pipe = ref if cond == "clean" else _spec(resize="resize/" + cond.split("/", 1)[1], decoder="decoder/pil")
        return {**row(model, cond, "clean" if cond == "clean" else "resize", delta=delta),
                "suite": "clean" if cond == "clean" else "resize", "pipeline": pipe, "reference_pipeline": ref}

    s = frame([r("bil", "clean", 0.0, bil), r("bic", "clean", 0.0, bic),
               r("bil", "resize/pil-bicubic", 0.03, bil), r("bil", "resize/cv2-nearest", 0.06, bil),
               r("bic", "resize/pil-bilinear", 0.01, bic), r("bic", "resize/cv2-nearest", 0.02, bic)])
    lb = L.build(s)
    g = lb.families["resize"].set_index("model")
    assert sorted(g.index) == ["bic", "bil"] and set(g.options) == {3}
    assert g.loc["bil", "mean ΔACC pp"] == pytest.approx(100 * (0.03 + 0.06 + 0) / 3)
    assert g.loc["bic", "mean ΔACC pp"] == pytest.approx(100 * (0.01 + 0.02 + 0) / 3)
    assert lb.apart.empty or "resize" not in set(lb.apart.family)
    # a model that lacks an option which is *not* its reference is still listed apart
    s2 = frame([*s.to_dict("records"), r("bic2", "clean", 0.0, bic), r("bic2", "resize/pil-bilinear", 0.01, bic)])
    lb2 = L.build(s2)
    why = {(x.model, x.family): x.reason for x in lb2.apart.itertuples()}
    assert "missing 1 condition(s) (resize/cv2-nearest)" in why[("bic2", "resize")]


def test_reference_option_rule_reads_only_what_the_rows_show():
    """The rule learns what a condition sets from the pipelines of the models that ran it: a
    two-stage condition (decoder + resize, as ImageNet-S pairs) is a model's reference option
    only when its reference has *both* values; an attack (its pipeline is the reference one)
    never is; rows without pipeline specs are left as they are."""
    a_ref, b_ref = _spec(decoder="decoder/pil", resize="resize/pil-bilinear"), \
        _spec(decoder="decoder/cv2", resize="resize/pil-bicubic")

    def r(model, cond, fam, ref, pipe, delta=0.01):
        return {**row(model, cond, fam, delta=delta), "suite": fam, "pipeline": pipe, "reference_pipeline": ref}

    s = frame([r("a", "clean", "clean", a_ref, a_ref), r("b", "clean", "clean", b_ref, b_ref),
               r("c", "clean", "clean", b_ref, b_ref),
               # the pair "cv2+pil-bicubic": a ran it (both stages changed); it is b's own pipeline
               r("a", "pair/cv2+pil-bicubic", "pair", a_ref, _spec(decoder="decoder/cv2", resize="resize/pil-bicubic")),
               r("a", "pair/pil+cv2-area", "pair", a_ref, _spec(decoder="decoder/pil", resize="resize/cv2-area")),
               r("b", "pair/pil+cv2-area", "pair", b_ref, _spec(decoder="decoder/pil", resize="resize/cv2-area")),
               r("c", "pair/pil+cv2-area", "pair", b_ref, _spec(decoder="decoder/pil", resize="resize/cv2-area")),
               # an attack that only a ran: pipeline == reference, so nothing shows it is b's option
               r("a", "adv/pgd", "adv", a_ref, a_ref), r("b", "adv/x", "adv", b_ref, b_ref)])
    out = L.with_reference_options(s)
    added = out[out.reference_option]
    assert sorted(zip(added.model, added.condition)) == [("b", "pair/cv2+pil-bicubic"), ("c", "pair/cv2+pil-bicubic")]
    assert (added.delta_acc == 0).all() and (added.flip_rate == 0).all() and (added.family == "pair").all()
    assert L.condition_changes(s[s.condition == "adv/pgd"]) is None
    # a model whose reference matches only the resize half of the pair does not skip it
    d_ref = _spec(decoder="decoder/pil", resize="resize/pil-bicubic")
    s2 = frame([*s.to_dict("records"), r("d", "clean", "clean", d_ref, d_ref),
                r("d", "pair/pil+cv2-area", "pair", d_ref, _spec(decoder="decoder/pil", resize="resize/cv2-area"))])
    out2 = L.with_reference_options(s2)
    assert not ((out2.model == "d") & out2.reference_option).any()
    # no pipeline specs stored: nothing added
    assert "reference_option" not in L.with_reference_options(s.drop(columns="pipeline"))


def test_sections_are_data_and_renderers_share_them():
    s = frame([row("a_x", "clean", "clean", top1=0.9), row("b_y", "clean", "clean", top1=0.8),
               row("a_x", "resize/x", "resize", delta=0.01), row("b_y", "resize/x", "resize", delta=0.05),
               row("z", "clean", "clean", fp="zz")])
    lb = L.build(s)
    names = [n for n, _, _ in L.sections(lb)]
    assert names == ["overall", "clean", "resize", "not ranked"]
    assert [n for n, _, _ in L.sections(lb, ["resize"])] == ["overall", "resize", "not ranked"]
    for fmt, fn in L.RENDERERS.items():
        assert L.render(lb, fmt) == fn(lb)
    assert L.render_table(lb).startswith(L.header(lb) + "\n\n== overall (mean interval rank over families) ==\n")


# ---------------------------------------------------------------------- from the store alone (real run)
PAIR_SUITE = """name = "resize-pair"
family = "resize"
version = 1
description = "two resize options; pil-bicubic is tf_efficientnet_lite0's own"

[[conditions]]
name = "cv2-area"
resize = "cv2-area"

[[conditions]]
name = "pil-bicubic"
resize = "pil-bicubic"
"""


def test_leaderboard_from_stored_data_alone_survives_suite_edits(tmp_path, capsys):
    """Real run: mobilenet_v2 (bilinear) and tf_efficientnet_lite0 (bicubic) on a user suite of
    two resize options, one of them lite0's own pipeline (skipped by the runner).  The leaderboard
    counts it as lite0's ΔACC 0 option from the stored rows, so both models are ranked on the same
    two options; editing and then deleting the suite file afterwards changes no byte of it."""
    import robustbench_sys as rbs
    from robustbench_sys import cli
    from robustbench_sys.errors import UserError
    from robustbench_sys.results.store import ResultsStore

    suite = tmp_path / "resize-pair.toml"
    suite.write_text(PAIR_SUITE)
    out = tmp_path / "results"
    try:
        rbs.evaluate(["mobilenet_v2", "tf_efficientnet_lite0"], ["clean", str(suite)], "foolbox-demo", out,
                     limit=4, workers=0, progress=False)
    except UserError as e:
        pytest.skip(f"cannot build a real results store here: {e}")
    stored = ResultsStore(out).summaries()
    assert ("tf_efficientnet_lite0", "resize/pil-bicubic") not in set(zip(stored.model, stored.condition))

    def show():
        got = {}
        for fmt in L.FORMATS:
            assert cli.main(["leaderboard", "--out", str(out), "--format", fmt]) == 0
            got[fmt] = capsys.readouterr().out
        return got

    before = show()
    lb = L.build(ResultsStore(out).summaries())
    g = lb.families["resize"].set_index("model")
    assert sorted(g.index) == ["mobilenet_v2", "tf_efficientnet_lite0"] and set(g.options) == {2}
    assert lb.apart.empty, lb.apart.to_dict("records")
    ref = L.with_reference_options(stored)
    assert ref[ref.reference_option][["model", "condition", "delta_acc"]].values.tolist() == \
        [["tf_efficientnet_lite0", "resize/pil-bicubic", 0.0]]
    lite = stored[(stored.model == "tf_efficientnet_lite0") & (stored.condition == "resize/cv2-area")].iloc[0]
    assert g.loc["tf_efficientnet_lite0", "mean ΔACC pp"] == pytest.approx(100 * lite.delta_acc / 2)
    assert "tf_efficientnet_lite0" in before["table"] and "not ranked" not in before["table"]

    # the suite file is edited after the run (other options, a new version), then deleted
    suite.write_text(PAIR_SUITE.replace('resize = "pil-bicubic"', 'resize = "cv2-nearest"')
                     .replace("version = 1", "version = 2"))
    assert show() == before
    suite.unlink()
    assert show() == before


# ---------------------------------------------------------------------- vectorised build == row-by-row reference
def _edge_store(seed: int = 0) -> pd.DataFrame:
    """A generated summaries frame with every case the build handles: two data sets, duplicates
    (the newest wins), results apart (other n_images, suite_version, a missing option), reference
    options (bilinear / bicubic models, specs with bare names and full keys, a two-stage ImageNet-S
    pair), a model without a clean row, an attack family (robust accuracy, WCAR, validity flags, one
    option without robust accuracy), a natural family with all 15 x 5 (ranked by mCE), an audit row,
    missing / empty / unreadable / changing card tags, a missing flip rate and creation time."""
    from robustbench_sys.metrics.natural import ALEXNET_ERRORS

    rng = np.random.default_rng(seed)
    bil_bare, bil_full = _spec(resize="pil-bilinear"), _spec(decoder="decoder/pil", resize="resize/pil-bilinear")
    bic = _spec(resize="pil-bicubic")
    refs = {"m0": bil_bare, "m1": bil_full, "m2": bil_bare, "m3": bic, "m4": bic, "m5": bil_full, "m6": bil_full}
    rows = []

    def add(model, cond, fam, *, fp=FP, n=200, sv=1, pipe=None, created="2026-01-01T00:00:00", **extra):
        delta = float(rng.normal(0.03, 0.03))
        r = row(model, cond, fam, top1=float(rng.uniform(0.5, 0.9)), n=n, delta=delta,
                dlo=delta - float(rng.uniform(0.005, 0.04)), dhi=delta + float(rng.uniform(0.005, 0.04)), fp=fp,
                suite_version=sv, created=created, tags={"family": model[:1], "params_m": int(model[1:]) + 1.5,
                                                         "training": "standard"})
        r.update({"suite": fam, "pipeline": pipe if pipe is not None else refs[model],
                  "reference_pipeline": refs[model], "ref_top1": 0.7, **extra})
        rows.append(r)

    for fp in (FP, "fp-b"):
        for m in refs:
            if not (m == "m6" and fp == FP):
                add(m, "clean", "clean", fp=fp)
    for m, ref in refs.items():
        own = "pil-bicubic" if ref == bic else "pil-bilinear"
        for opt in ("pil-bilinear", "pil-bicubic", "cv2-area", "cv2-nearest"):
            if opt == own or (m == "m5" and opt == "cv2-nearest"):
                continue
            add(m, f"resize/{opt}", "resize", pipe=_spec(resize=f"resize/{opt}"))
        for dec in ("cv2", "pil-reduce"):   # decoder: m4 measured on fewer images, m2 with another suite version
            add(m, f"decoder/{dec}", "decoder", n=150 if m == "m4" else 200, sv=2 if m == "m2" else 1,
                pipe=_spec(decoder=f"decoder/{dec}"), created=None if m == "m1" else "2026-01-01T00:00:00")
        for pair in ("pil+pil-bilinear", "pil+pil-bicubic", "cv2+pil-bicubic", "pil+cv2-area"):
            d, r = pair.split("+")
            pipe = _spec(decoder=f"decoder/{d}", resize=f"resize/{r}")
            if L._spec(pipe) != L._spec(ref) and not (d == "pil" and r == own):
                add(m, f"imagenet-s/{pair}", "imagenet-s", pipe=pipe)
        for k, eps in enumerate(("1/255", "4/255")):   # an attack: pipeline = reference (never a reference option)
            ra = float("nan") if (m == "m3" and k == 1) else float(rng.uniform(0.1, 0.4))
            add(m, f"adv/pgd@{eps}", "adv", robust_acc=ra, wcar=ra,
                validity_raised=["", "black_box_stronger", None, "a,b"][(int(m[1:]) + k) % 4])
        add(m, "resize/cv2-area", "resize", fp="fp-b", pipe=_spec(resize="resize/cv2-area"))
    # duplicates: m0's cv2-area stored again later (it wins), m1's twice at the same time (the later row wins)
    add("m0", "resize/cv2-area", "resize", pipe=_spec(resize="resize/cv2-area"), created="2026-03-01T00:00:00")
    add("m1", "resize/cv2-area", "resize", pipe=_spec(resize="resize/cv2-area"))
    rows[-1]["flip_rate"] = float("nan")
    for m, scale in (("m0", 0.9), ("m3", 0.7)):   # ImageNet-C, all 15 x 5
        for c, e in ALEXNET_ERRORS.items():
            for sev in range(1, 6):
                add(m, f"natural/{c}-{sev}", "natural", pipe=json.dumps({"corrupt": f"{c}-{sev}"}),
                    top1_override=1 - scale * e)
    add("m2", "audit/0123abcd/stack", "audit")
    for r in rows:
        if "top1_override" in r:
            r["top1"] = r.pop("top1_override")
    for i, t in ((0, None), (1, "{}"), (2, "{not json"), (len(rows) - 3, json.dumps({"family": "z", "params_m": 9}))):
        rows[i]["tags"] = t
    return pd.DataFrame(rows)


def _reference():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import _leaderboard_reference

    return _leaderboard_reference


def _same(a: L.Leaderboard, b: L.Leaderboard) -> None:
    assert (a.dataset, a.dataset_fingerprint, list(a.families)) == (b.dataset, b.dataset_fingerprint, list(b.families))
    for fam in a.families:
        pd.testing.assert_frame_equal(a.families[fam], b.families[fam], obj=fam)
    pd.testing.assert_frame_equal(a.overall, b.overall, obj="overall")
    pd.testing.assert_frame_equal(a.apart, b.apart, obj="apart")
    for fmt in L.FORMATS:
        assert L.render(a, fmt) == L.render(b, fmt), fmt


@pytest.mark.parametrize("order", ["stored", "shuffled"])
def test_vectorised_build_equals_row_by_row_reference(order):
    """The vectorised build (column-wise, each pipeline JSON parsed once) gives exactly the frames and
    text of the straightforward row-by-row build (tests/_leaderboard_reference.py) on a store with
    every edge case, for each data set and family filter, with the rows in stored and shuffled order."""
    R = _reference()
    s = _edge_store()
    if order == "shuffled":
        s = s.sample(frac=1.0, random_state=1).reset_index(drop=True)
    # the generated store does exercise each case
    lb = L.build(s)
    assert lb.dataset_fingerprint == FP
    reasons = " | ".join(lb.apart.reason)
    for needle in ("superseded", "other data set", "missing 1 condition(s) (resize/cv2-nearest)",
                   "suite_version 2", "n_images 150"):
        assert needle in reasons, needle
    ref_opts = L.with_reference_options(s[s.dataset_fingerprint == FP])
    added = set(zip(ref_opts[ref_opts.reference_option].model, ref_opts[ref_opts.reference_option].condition))
    assert {("m0", "resize/pil-bilinear"), ("m3", "resize/pil-bicubic"), ("m0", "imagenet-s/pil+pil-bilinear"),
            ("m3", "imagenet-s/pil+pil-bicubic")} <= added
    assert not any(c.startswith("adv/") for _, c in added) and not any(m == "m6" for m, _ in added)
    assert lb.families["natural"]["mCE %"].notna().all() and "validity" in lb.families["adv"]
    assert set(lb.families["resize"].options) == {4}

    for kw in ({}, {"dataset_fingerprint": "fp-b"}, {"families": ["resize"]}, {"families": ["adv", "natural"]},
               {"families": ["audit"]}):
        _same(L.build(s, **kw), R.build(s, **kw))
    for fp in (FP, "fp-b"):
        one = s[s.dataset_fingerprint == fp]
        # the same rows and values (the added rows keep the stored column types, where the reference's
        # rows built from dicts may infer another one: only the final frames above are compared strictly)
        pd.testing.assert_frame_equal(L.with_reference_options(one), R.with_reference_options(one), check_dtype=False)
    pd.testing.assert_frame_equal(L.model_tags(s), R.model_tags(s))
