"""Calibration under every noise (issue 16, item 3): expected calibration error and negative
log-likelihood (robustbench_sys.metrics.calibration) on hand-computed worked examples, edge cases
and an independent loop implementation; then end to end on real images: the stored per-image
``label_prob``, the summary's ``ece`` / ``nll`` / ``ref_*``, an older store without the column,
``results show --by calibration`` and the dashboard's calibration page."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from robustbench_sys.metrics.calibration import (
    NLL_EPS,
    bin_index,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

M = 15


def loop_ece(conf, correct, n_bins=M) -> float:
    """Straight from the definition: bin m = ((m-1)/M, m/M], ECE = sum |B_m|/n |acc - conf|."""
    n = len(conf)
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        members = [i for i in range(n) if lo < conf[i] <= hi]
        if not members:
            continue
        acc = sum(1.0 for i in members if correct[i]) / len(members)
        mean_conf = sum(float(conf[i]) for i in members) / len(members)
        total += len(members) / n * abs(acc - mean_conf)
    return total


# ---------------------------------------------------------------------- worked examples
def test_ece_worked_example_three_bins():
    conf = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 0.25]
    correct = [True, True, True, False, True, False, False]
    # 0.95 * 15 = 14.25 -> bin 15 (14/15, 1]: 4 images, acc 3/4, conf 0.95 -> 4/7 * 0.20 = 0.80/7
    # 0.55 * 15 =  8.25 -> bin  9 (8/15, 9/15]: 2 images, acc 1/2, conf 0.55 -> 2/7 * 0.05 = 0.10/7
    # 0.25 * 15 =  3.75 -> bin  4 (3/15, 4/15]: 1 image,  acc 0,   conf 0.25 -> 1/7 * 0.25 = 0.25/7
    # ECE = (0.80 + 0.10 + 0.25) / 7 = 1.15 / 7
    assert expected_calibration_error(conf, correct) == pytest.approx(1.15 / 7, abs=1e-12)
    b = reliability_bins(conf, correct)
    assert b.count.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 4]
    assert b.accuracy[14] == 0.75 and b.accuracy[8] == 0.5 and b.accuracy[3] == 0.0
    assert b.confidence[14] == pytest.approx(0.95) and np.isnan(b.accuracy[0])
    assert b.lower[8] == pytest.approx(8 / 15) and b.upper[8] == pytest.approx(9 / 15)


def test_ece_all_in_one_bin():
    # 0.61, 0.63, 0.66 all in bin 10 (9/15, 10/15] = (0.6, 0.6667]: acc 2/3, mean conf 1.90/3
    # ECE = |2/3 - 1.90/3| = 0.10/3
    conf, correct = [0.61, 0.63, 0.66], [True, False, True]
    assert set(bin_index(conf).tolist()) == {9}
    assert expected_calibration_error(conf, correct) == pytest.approx(0.1 / 3, abs=1e-12)
    # one bin only (M = 1) is |overall accuracy - mean confidence|: |3/7 - 0.5| over these
    conf1, correct1 = [0.2, 0.4, 0.6, 0.8, 0.3, 0.7, 0.5], [1, 0, 1, 0, 0, 1, 0]
    assert expected_calibration_error(conf1, correct1, n_bins=1) == pytest.approx(abs(3 / 7 - 3.5 / 7), abs=1e-12)


def test_ece_confidence_exactly_one():
    assert bin_index([1.0]).tolist() == [M - 1]
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0   # acc 1, conf 1
    assert expected_calibration_error([1.0], [False]) == 1.0              # acc 0, conf 1
    # 1.0 and 0.94 (14.1 / 15 -> bin 15) share the last bin: acc 1/2, conf 0.97 -> 0.47
    assert expected_calibration_error([1.0, 0.94], [False, True]) == pytest.approx(0.47, abs=1e-12)


def test_ece_edges_go_to_the_lower_bin():
    edges = np.arange(1, M + 1) / M
    assert bin_index(edges).tolist() == list(range(M))            # m/M is in bin m: ((m-1)/M, m/M]
    above = np.nextafter(edges[:-1], 2.0)
    assert bin_index(above).tolist() == list(range(1, M))          # just above m/M: bin m + 1
    # 0.2 = 3/15 is in bin 3 (2/15, 3/15], 0.21 in bin 4: two bins, not one
    # ECE = 1/2 |1 - 0.2| + 1/2 |0 - 0.21| = 0.40 + 0.105 = 0.505 (one bin would give |1/2 - 0.205| = 0.295)
    assert expected_calibration_error([0.2, 0.21], [True, False]) == pytest.approx(0.505, abs=1e-12)
    assert expected_calibration_error([3 / 15, 0.21], [True, False]) == pytest.approx(0.505, abs=1e-12)


def test_empty_is_nan():
    assert math.isnan(expected_calibration_error([], []))
    assert math.isnan(negative_log_likelihood([]))
    assert reliability_bins([], []).count.sum() == 0


def test_nll_worked_examples_and_clipping():
    # (-ln 1 - ln 0.5 - ln 0.25) / 3 = (0 + ln 2 + 2 ln 2) / 3 = ln 2
    assert negative_log_likelihood([1.0, 0.5, 0.25]) == pytest.approx(math.log(2), abs=1e-12)
    # p = 0 is clipped to eps: (-ln 1e-3 + 0) / 2 = ln(1000) / 2
    assert negative_log_likelihood([0.0, 1.0], eps=1e-3) == pytest.approx(math.log(1000) / 2, abs=1e-12)
    # default floor: the smallest normal float32, 2**-126 -> -ln = 126 ln 2 ~= 87.34
    assert NLL_EPS == 2.0 ** -126
    assert negative_log_likelihood([0.0]) == pytest.approx(126 * math.log(2), abs=1e-9)
    assert math.isfinite(negative_log_likelihood(np.zeros(3, np.float32)))
    # values above the floor are not touched
    assert negative_log_likelihood(np.array([1e-30])) == pytest.approx(30 * math.log(10), abs=1e-9)


def test_matches_independent_loop_on_random_data():
    rng = np.random.default_rng(16)
    for n_bins in (1, 10, 15, 20):
        for n in (1, 7, 500):
            conf = rng.uniform(0, 1, n)
            conf[conf == 0] = 0.5
            k = rng.integers(0, n_bins + 1, n // 5)
            conf[: len(k)] = np.maximum(k, 1) / n_bins            # some exactly on an edge
            conf[rng.random(n) < 0.05] = 1.0
            correct = rng.random(n) < conf                          # roughly calibrated
            assert expected_calibration_error(conf, correct, n_bins) == pytest.approx(
                loop_ece(conf.tolist(), correct.tolist(), n_bins), abs=1e-12)
            p = rng.uniform(0, 1, n)
            assert negative_log_likelihood(p) == pytest.approx(
                sum(-math.log(max(x, NLL_EPS)) for x in p) / n, rel=1e-12)
    # float32 input (as stored) gives the same bins as its float64 value
    c32 = rng.uniform(0.05, 1, 200).astype(np.float32)
    ok = rng.random(200) < 0.5
    assert expected_calibration_error(c32, ok) == pytest.approx(loop_ece(c32.astype(float).tolist(), ok), abs=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: expected_calibration_error([0.5, 0.6], [True]), "correct: 1 value"),
    (lambda: expected_calibration_error([0.0, 0.6], [True, True]), r"outside \(0, 1\]"),
    (lambda: expected_calibration_error([1.5], [True]), r"outside \(0, 1\]"),
    (lambda: expected_calibration_error([float("nan")], [True]), r"outside \(0, 1\]"),
    (lambda: expected_calibration_error([[0.5]], [[True]]), "1-D"),
    (lambda: expected_calibration_error(["a"], [True]), "dtype"),
    (lambda: expected_calibration_error([0.5], [2]), "booleans"),
    (lambda: expected_calibration_error([0.5], [True], n_bins=0), "n_bins"),
    (lambda: expected_calibration_error([0.5], [True], n_bins=2.5), "n_bins"),
    (lambda: negative_log_likelihood([1.2]), r"outside \[0, 1\]"),
    (lambda: negative_log_likelihood([-0.1]), r"outside \[0, 1\]"),
    (lambda: negative_log_likelihood([float("nan")]), "missing"),
    (lambda: negative_log_likelihood([0.5], eps=0), "eps"),
])
def test_bad_input_is_one_clear_error(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- end to end on real images
N_IMAGES = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory, imagenet_sample, suite_file):
    import robustbench_sys

    out = tmp_path_factory.mktemp("calib") / "out"
    robustbench_sys.evaluate("mobilenet_v2", ["clean", suite_file], imagenet_sample, out, limit=N_IMAGES,
                             progress=False, workers=0, batch_size=4, speed=False)
    return out


def _rows_by_condition(store, summaries):
    return {r.condition: store.read_unit_rows(r.unit_id) for r in summaries.itertuples()}


def test_summary_ece_nll_recomputed_from_stored_rows(run):
    from robustbench_sys.results.store import ResultsStore

    store = ResultsStore(run)
    s = store.summaries().set_index("condition")
    assert set(s.index) == {"clean", "resize/cv2-nearest", "resize/pil-bicubic"}
    rows = _rows_by_condition(store, s.reset_index())
    for cond, r in rows.items():
        ok = r[r.status == "ok"]
        assert len(ok) == N_IMAGES and ok.label_prob.notna().all()
        conf = [float(p[0]) for p in ok.top5_prob]
        ece = loop_ece(conf, ok.correct.tolist())
        nll = float(np.mean(-np.log(ok.label_prob.to_numpy(dtype=np.float64))))
        assert s.loc[cond, "ece"] == pytest.approx(ece, abs=1e-12) and 0 < ece < 1
        assert s.loc[cond, "nll"] == pytest.approx(nll, abs=1e-12) and nll > 0
        assert s.loc[cond, "ref_ece"] == pytest.approx(s.loc["clean", "ece"], abs=1e-12)
        assert s.loc[cond, "ref_nll"] == pytest.approx(s.loc["clean", "nll"], abs=1e-12)
        # the label's probability is the top-k entry of the label where the label is in the top 5
        for label, top5, tp, lp in zip(ok.label, ok.top5, ok.top5_prob, ok.label_prob):
            if label in list(top5):
                assert lp == tp[list(top5).index(label)]
            else:
                assert lp <= tp[-1]
    assert s.loc["resize/cv2-nearest", "ece"] != s.loc["clean", "ece"]   # a noise changes the calibration


def test_label_prob_equals_independent_softmax(run, imagenet_sample):
    import torch
    import torchvision
    from PIL import Image

    from robustbench_sys import zoo
    from robustbench_sys.results.store import ResultsStore

    store = ResultsStore(run)
    s = store.summaries()
    rows = store.read_unit_rows(s[s.condition == "clean"].unit_id.iloc[0]).sort_values("file")
    tf = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()   # torchvision's own preprocessing
    xs = []
    for f in rows.file:
        with Image.open(imagenet_sample / f) as im:
            xs.append(tf(im.convert("RGB")))
    with torch.inference_mode():
        p = torch.softmax(zoo.load_model("mobilenet_v2")(torch.stack(xs)).double(), dim=1).numpy()
    want = p[np.arange(len(rows)), rows.label.to_numpy()]
    # float32 on our side (stored), float64 softmax here: equal to ~1e-6
    np.testing.assert_allclose(rows.label_prob.to_numpy(dtype=np.float64), want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose([t[0] for t in rows.top5_prob], p.max(1), atol=1e-5, rtol=1e-4)
    assert want.min() < 0.5 < want.max()   # a spread of probabilities, not all near 1


def test_older_store_without_label_prob_reads_as_unknown_nll(run, tmp_path, imagenet_sample, suite_file):
    import shutil

    import robustbench_sys
    from robustbench_sys.results.store import COMPACT_NAME, ResultsStore

    old = tmp_path / "old"
    shutil.copytree(run, old)
    store = ResultsStore(old)
    before = store.summaries().set_index("condition")
    for d in (old / "per_image").iterdir():   # per-image files as written before the column existed
        t = pq.read_table(d / COMPACT_NAME)
        store.write_compacted(d.name, t.drop_columns(["label_prob"]), [])
    shutil.rmtree(old / "summaries")
    assert "label_prob" not in store.read_unit_rows(before.unit_id.iloc[0]).columns
    scan = store.scan(columns=["file", "label_prob"])
    assert len(scan) == 3 * N_IMAGES and scan.label_prob.isna().all()
    # the same command rebuilds the summaries from the stored rows (no image is scored again)
    robustbench_sys.evaluate("mobilenet_v2", ["clean", suite_file], imagenet_sample, old, limit=N_IMAGES,
                             progress=False, workers=0, batch_size=4, speed=False)
    after = store.summaries().set_index("condition")
    assert set(after.index) == set(before.index)
    assert after.nll.isna().all() and after.ref_nll.isna().all()          # unknown, never 0
    for col in ("ece", "ref_ece", "top1"):                                 # the top-1 probability is still there
        pd.testing.assert_series_equal(after[col], before.loc[after.index, col])


def test_results_show_by_calibration(run, capsys, tmp_path):
    from robustbench_sys.cli import main
    from robustbench_sys.results.store import ResultsStore

    s = ResultsStore(run).summaries()
    assert main(["results", "show", "--out", str(run), "--by", "calibration", "--format", "csv"]) == 0
    t = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert t.condition.tolist()[0] == "clean" and set(t.condition) == set(s.condition)
    for r in s.itertuples():
        got = t[t.condition == r.condition].iloc[0]
        assert got["ECE %"] == pytest.approx(round(100 * r.ece, 2))
        assert got["ΔECE pp"] == pytest.approx(round(100 * (r.ece - r.ref_ece), 2))
        assert got["NLL"] == pytest.approx(round(r.nll, 4))
        assert got["rank"] == 1                                              # one model per condition
    # a store whose summaries predate the columns: a one-line hint, not a table of NaN
    old = tmp_path / "old"
    (old / "summaries").mkdir(parents=True)
    for p in (run / "summaries").glob("*.parquet"):
        pq.write_table(pq.read_table(p).drop_columns(["ece", "nll", "ref_ece", "ref_nll"]), old / "summaries" / p.name)
    assert main(["results", "show", "--out", str(old), "--by", "calibration"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("(no calibration figures in this store") and out.count("\n") == 1


def test_calibration_table_ranks_models_per_condition():
    from robustbench_sys.results.report import calibration_table

    s = pd.DataFrame({"dataset": ["d"] * 4, "model": ["a", "b", "a", "b"], "family": ["clean", "clean", "r", "r"],
                      "condition": ["clean", "clean", "r/x", "r/x"], "n_images": [10] * 4,
                      "top1": [0.7, 0.8, 0.6, 0.75], "ece": [0.05, 0.02, 0.10, 0.08],
                      "nll": [1.0, 1.5, 2.0, 1.8], "ref_ece": [0.05, 0.02, 0.05, 0.02],
                      "ref_nll": [1.0, 1.5, 1.0, 1.5]})
    t = calibration_table(s)
    assert t[["condition", "model", "rank"]].values.tolist() == [["clean", "b", 1], ["clean", "a", 2],
                                                                 ["r/x", "b", 1], ["r/x", "a", 2]]
    assert t["ΔECE pp"].tolist() == [0.0, 0.0, 6.0, 5.0]
    by_nll = calibration_table(s, rank_by="nll")
    assert by_nll[["condition", "model", "rank"]].values.tolist() == [["clean", "a", 1], ["clean", "b", 2],
                                                                      ["r/x", "b", 1], ["r/x", "a", 2]]
    with pytest.raises(ValueError, match="rank_by"):
        calibration_table(s, rank_by="top1")


def test_dashboard_calibration_page(run):
    pytest.importorskip("streamlit", reason="streamlit not installed (scripts/setup.d/70-dashboard.sh)")
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from robustbench_sys.results.store import ResultsStore

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.session_state["results"] = str(run)
    at.session_state["page"] = "Calibration"
    at.run()
    assert not at.exception and not at.error, [e.message for e in at.exception]
    t = at.dataframe[0].value
    s = ResultsStore(run).summaries().set_index("condition")
    assert set(t.condition) == set(s.index)
    for _, r in t.iterrows():
        assert r["ECE %"] == pytest.approx(round(100 * s.loc[r.condition, "ece"], 2))
    at.radio(key="ca-by").set_value("NLL").run()
    assert not at.exception and at.dataframe[0].value.NLL.notna().all()


def test_attack_unit_calibration_on_adversarial_rows(tmp_path, imagenet_sample):
    """An attack unit's rows (ADV_PER_IMAGE_SCHEMA, which extends the per-image schema) carry
    ``label_prob`` of the adversarial image; its ECE / NLL are the calibration under attack."""
    import robustbench_sys
    from robustbench_sys.results.store import ADV_PER_IMAGE_SCHEMA, ResultsStore

    assert "label_prob" in ADV_PER_IMAGE_SCHEMA.names and "clean_pred" in ADV_PER_IMAGE_SCHEMA.names
    suite = tmp_path / "adv.toml"
    suite.write_text('name = "adv-calib"\nfamily = "adv-calib"\nversion = 1\n\n[[conditions]]\n'
                     'name = "fgsm@1/255"\nattack = "fgsm"\neps = "1/255"\nseed = 0\n')
    out = tmp_path / "out"
    robustbench_sys.evaluate("mobilenet_v2", ["clean", str(suite)], imagenet_sample, out, limit=4,
                             progress=False, workers=0, batch_size=4, speed=False)
    store = ResultsStore(out)
    s = store.summaries().set_index("condition")
    adv = store.read_unit_rows(s.loc["adv-calib/fgsm@1/255", "unit_id"])
    assert adv.label_prob.notna().all() and adv.clean_pred.notna().all()
    assert s.loc["adv-calib/fgsm@1/255", "ece"] == pytest.approx(
        loop_ece([float(p[0]) for p in adv.top5_prob], adv.correct.tolist()), abs=1e-12)
    assert s.loc["adv-calib/fgsm@1/255", "nll"] == pytest.approx(
        float(np.mean(-np.log(adv.label_prob.to_numpy(dtype=np.float64)))), abs=1e-12)
    assert s.loc["adv-calib/fgsm@1/255", "ref_ece"] == pytest.approx(s.loc["clean", "ece"], abs=1e-12)
    # FGSM ascends the loss, i.e. the mean NLL: higher under attack than on the clean images
    assert s.loc["adv-calib/fgsm@1/255", "nll"] > s.loc["clean", "nll"]
