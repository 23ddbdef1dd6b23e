"""``eval --plan`` / ``evaluate(..., plan=True)``: the units a run would compute (new / partial /
finished / skipped), image-conditions, shared prefixes and a calibrated estimate, with nothing
run and nothing written to ``--out``."""

import os
import shutil

import pytest

import robustbench_sys
from robustbench_sys.cli import main
from robustbench_sys.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")
N = 6


def _tree(root):
    return sorted((p, os.path.getsize(os.path.join(p, f)) if f else 0)
                  for p, _, fs in os.walk(root) for f in fs + [""])


def test_plan_fresh_store_writes_nothing(imagenet_sample, suite_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "--model", "mobilenet_v2", "--suite", f"clean,graph,{suite_file}", "--data",
               str(imagenet_sample), "--limit", str(N), "--batch-size", "4", "--out", str(out), "--plan",
               "--no-progress", "--scheduler", "local:2"])
    text = capsys.readouterr().out
    assert rc == 0
    assert not out.exists()                      # not even the folder
    assert "units: 6 planned (6 new, 0 partial, 0 summarise, 0 finished)" in text
    assert f"image-conditions: {6 * N} planned, {6 * N} to compute" in text
    assert "shared prefixes by decoder: 1 group(s) over 6 units" in text
    assert "shared prefixes by image-side pipeline: 3 group(s) over 6 units" in text
    assert "calibration image(s) on this machine" in text and "assumes:" in text
    assert "on Dask (local:2: 2 workers" in text


def test_plan_partly_finished_store(imagenet_sample, suite_file, tmp_path):
    out = tmp_path / "out"
    robustbench_sys.evaluate("mobilenet_v2", [suite_file], imagenet_sample, out, limit=N, progress=False,
                             workers=0, batch_size=4)
    # an interrupted unit: only its first batch (4 of the 6 images) stored
    store = ResultsStore(out)
    s = store.summaries()
    uid = s[s.condition == "resize/cv2-nearest"].unit_id.iloc[0]
    rows = store.read_unit_rows(uid)
    shutil.rmtree(out / "per_image" / uid)
    store.append_batch(uid, rows.iloc[:4])
    assert len(store.done_files(uid)) == 4
    before = _tree(out)

    df = robustbench_sys.evaluate("mobilenet_v2", ["clean", "graph", suite_file], imagenet_sample, out, limit=N,
                                  progress=False, batch_size=4, plan=True)
    assert _tree(out) == before                  # read only: no file or folder added, moved or changed
    st = df.set_index("condition").status.to_dict()
    assert st["clean"] == "finished" and st["resize/pil-bicubic"] == "finished"
    assert st["resize/cv2-nearest"] == "partial"
    assert df.set_index("condition").images_left["resize/cv2-nearest"] == 2
    assert {k for k, v in st.items() if v == "new"} == {"graph/maxpool-ceil", "graph/upsample-bilinear",
                                                        "graph/upsample-nearest"}
    plan = df.attrs["plan"]
    assert plan.image_conditions() == (6 * N, 3 * N + 2)
    assert df.attrs["estimate_seconds"] > 0 and plan.calibration.forward["mobilenet_v2"] > 0
    assert "1 partial" in plan.render()


def test_plan_bad_option_exit_2(imagenet_sample, tmp_path, capsys):
    rc = main(["eval", "--model", "mobilenet_v2", "--data", str(imagenet_sample), "--limit", "2", "--out",
               str(tmp_path / "o"), "--plan", "--scheduler", "bogus"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--scheduler bogus" in err
    assert not (tmp_path / "o").exists()


def test_estimate_charges_shared_preprocessing_once(monkeypatch):
    """Worked example: 2 models x (clean + a model-side condition) on one image-side pipeline, one
    resize condition and one attack.  Shared prefix: the pipeline's preprocessing is charged once
    for the most images left, the attack per unit; off: every unit pays its own."""
    from robustbench_sys.eval.estimate import Calibration, PlannedUnit, RunPlan

    def pu(model, cond, prefix, left, attack=False):
        return PlannedUnit(model, cond, f"{model}-{cond}", "new", 10, left, "pil", prefix, attack)

    units = [pu("a", "clean", "P", 10), pu("a", "precision/bf16", "P", 10), pu("b", "clean", "P", 6),
             pu("b", "graph/x", "P", 8), pu("a", "resize/cv2", "Q", 10), pu("a", "pgd", "P", 4, attack=True)]
    cal = Calibration(images=4, batch_size=4, torch_threads=1, cores=2, forward={"a": 0.1, "b": 0.2},
                      load={"a": 1.0, "b": 2.0}, preprocess={"P": 0.05, "Q": 0.07})
    plan = RunPlan("out", "d", 10, 4, 1, None, units, [], [], cal)   # one worker: preprocessing not split
    forward = 10 * 0.1 + 10 * 0.1 + 6 * 0.2 + 8 * 0.2 + 10 * 0.1
    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1")
    shared = 3.0 + (10 * 0.05 + 10 * 0.07) + forward + 4 * (0.05 + 0.1)
    assert plan.estimate_local() == pytest.approx(shared)
    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "0")
    per_unit = 3.0 + (10 + 10 + 6 + 8) * 0.05 + 10 * 0.07 + forward + 4 * (0.05 + 0.1)
    assert plan.estimate_local() == pytest.approx(per_unit) and per_unit > shared


def test_estimate_charges_each_decoder_once_and_equal_decodings_once(monkeypatch):
    """Worked example: 2 decoders x 2 resizes.  Shared prefix: each decoder is charged once per
    image, the stages after it once per (distinct decoded array, stages): d2 gave the calibration
    images d1's arrays, so its resizes cost nothing more; without that, once per pipeline."""
    from robustbench_sys.eval.estimate import Calibration, PlannedUnit, RunPlan

    def pu(dec, res, left=10):
        return PlannedUnit("a", f"{dec}+{res}", f"{dec}-{res}", "new", 10, left, dec, f"{dec}>{res}",
                           after_decoder=f">{res}")

    units = [pu("d1", "r1"), pu("d1", "r2"), pu("d2", "r1"), pu("d2", "r2", left=6)]
    cal = Calibration(images=4, batch_size=4, torch_threads=1, cores=2, forward={"a": 0.1}, load={"a": 1.0},
                      preprocess={"d1>r1": 0.05, "d1>r2": 0.06, "d2>r1": 0.06, "d2>r2": 0.07},
                      decode={"d1": 0.02, "d2": 0.03}, same_decode={"d1": "d1", "d2": "d1"})
    plan = RunPlan("out", "d", 10, 4, 1, None, units, [], [], cal)
    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1")
    forward = 36 * 0.1
    assert plan.estimate_local() == pytest.approx(1.0 + 10 * (0.02 + 0.03) + 10 * 0.03 + 10 * 0.04 + forward)
    cal.same_decode = {"d1": "d1", "d2": "d2"}
    assert plan.estimate_local() == pytest.approx(1.0 + 10 * (0.02 + 0.03) + 10 * (0.03 + 0.04)
                                                  + 10 * 0.03 + 6 * 0.04 + forward)
    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "0")
    assert plan.estimate_local() == pytest.approx(1.0 + 10 * (0.05 + 0.06 + 0.06) + 6 * 0.07 + forward)


def test_dask_estimate_spreads_image_side_units_over_the_workers(imagenet_sample, suite_file, tmp_path, monkeypatch):
    """Worked example on 2 workers: the two resize units run as image shards over both workers
    (shared preprocessing and forwards halved, each worker loading the model); the reference
    (timed for its deploy speed) and a model-side unit (bf16) are assigned whole."""
    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.estimate import Calibration, build_plan
    from robustbench_sys.eval.plan import plan_units
    from robustbench_sys.suites import resolve

    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1")
    card = zoo.get_card("mobilenet_v2")
    _, sha = zoo.fetch_weights(card)
    data = load_dataset(str(imagenet_sample)).limit(8)
    units, skips = plan_units(card, sha, resolve(["clean", suite_file, "precision"]), data)
    units = [u for u in units if u.condition.name in ("clean", "resize/cv2-nearest", "resize/pil-bicubic",
                                                      "precision/bf16")]
    plan = build_plan(tmp_path / "out", [units], [], data, batch_size=4, workers=2, calibrate=False)
    by = {u.condition: u for u in plan.units}
    pre = {by[c].image_prefix: s for c, s in (("clean", 0.010), ("resize/cv2-nearest", 0.012),
                                              ("resize/pil-bicubic", 0.016))}
    plan.calibration = Calibration(images=4, batch_size=4, torch_threads=2, cores=2, forward={"mobilenet_v2": 0.05},
                                   load={"mobilenet_v2": 1.0}, preprocess=pre, decode={"decoder/pil": 0.004},
                                   same_decode={"decoder/pil": "decoder/pil"})
    # 2 workers x 1 thread: forwards take 0.05 x 2 = 0.1 s per image
    clean = 8 * (0.010 + 0.1) + 1.0
    resizes = (8 * 0.004 + 8 * (0.008 + 0.012) + 2 * 8 * 0.1) / 2 + 1.0   # decoded once, resized twice
    bf16 = 8 * (0.010 + 0.1) + 1.0
    wall, busy = plan.estimate_dask(2, 1)
    assert wall == pytest.approx(clean + resizes + bf16)
    assert sorted(busy) == pytest.approx(sorted([clean + resizes + bf16, resizes]))
