"""The speed of each deployment (issue 14, item 3): latency / throughput records of the deploy
conditions and the reference, ``results show --by deploy`` and the Pareto front.

Real MobileNetV2 on 4 real sample images, one torch thread; ``precision/fp32`` is the deploy
condition (a registered precision noise, fast on any CPU; bf16 / fp16 casts take about a second
per image on CPUs without native support), ``resize/cv2-area`` the non-deploy one.  Timings are
never compared with a figure: only their presence, sign and order (p50 <= p95).
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from robustbench_sys.eval import speed
from robustbench_sys.results import report
from robustbench_sys.results.pareto import dominates, pareto_front
from robustbench_sys.suites import Condition, Suite

pytestmark = pytest.mark.usefixtures("one_thread")

LIMIT, BATCH = 4, 8   # the unit's batches hold at most its 4 images: timed at batch 4
DEPLOY, RESIZE = "precision/fp32", "resize/cv2-area"
SUITE = Suite("speed-test", "mixed", 1, "one deploy and one image-side condition", (
    Condition(DEPLOY, "precision", "speed-test", 1, {"deploy": DEPLOY}),
    Condition(RESIZE, "resize", "speed-test", 1, {"resize": RESIZE}),
), "")


def _run(out, sample):
    import robustbench_sys

    return robustbench_sys.evaluate("mobilenet_v2", [SUITE], sample, out, limit=LIMIT, batch_size=BATCH,
                                    workers=0, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory, imagenet_sample, one_thread):
    out = tmp_path_factory.mktemp("speed")
    df = _run(out, imagenet_sample)
    assert set(df.condition) == {"clean", DEPLOY, RESIZE}
    return out, df.set_index("condition")


@pytest.mark.parametrize("cond", ["clean", DEPLOY])
def test_speed_fields_of_a_deploy_condition_and_the_reference(store, cond):
    _, df = store
    r = df.loc[cond]
    assert r.latency_p50_ms > 0 and r.latency_p95_ms > 0 and r.throughput_ips > 0
    assert r.latency_p50_ms <= r.latency_p95_ms
    assert (r.speed_batch_size, r.speed_device, r.speed_threads) == (min(BATCH, LIMIT), "cpu", 1)
    assert r.speed_cores >= 1 and math.isfinite(r.speed_load1) and r.speed_shared_machine in (0.0, 1.0)
    rec = json.loads(r.deploy_info)["speed"]
    assert rec["latency_runs"] >= 50 and rec["throughput_batches"] >= 2
    assert len(rec["load_before"]) == len(rec["load_after"]) == 3
    assert rec["shared_machine"] == speed.is_shared(rec["load1"], rec["cores"], rec["threads"])
    assert bool(r.speed_shared_machine) == rec["shared_machine"]


def test_no_speed_for_a_condition_without_deploy_stage(store):
    _, df = store
    r = df.loc[RESIZE]
    assert all(math.isnan(r[c]) for c in speed.COLUMNS if c != "speed_device")
    assert pd.isna(r.speed_device) and "speed" not in json.loads(r.deploy_info)


def test_resumed_and_finished_units_keep_their_figures(store, imagenet_sample, monkeypatch):
    out, before = store

    def refuse(*a, **k):
        raise AssertionError("a unit with a stored speed record was timed again")

    monkeypatch.setattr(speed, "measure", refuse)
    # finished: read back as it is
    again = _run(out, imagenet_sample).set_index("condition")
    # interrupted: the deploy condition loses its rows and summary, and is run again
    unit = before.loc[DEPLOY, "unit_id"]
    for p in (out / "per_image" / unit).glob("*.parquet"):
        p.unlink()
    for p in (out / "summaries").glob(f"{unit}.*.parquet"):
        p.unlink()
    resumed = _run(out, imagenet_sample).set_index("condition")
    cols = list(speed.COLUMNS)
    for df in (again, resumed):
        pd.testing.assert_frame_equal(df.loc[["clean", DEPLOY], cols], before.loc[["clean", DEPLOY], cols])
    def rec(df):
        return json.loads(df.loc[DEPLOY, "deploy_info"])["speed"]

    assert rec(resumed) == rec(before)


def test_results_show_by_deploy(store, capsys):
    from robustbench_sys.cli import main as cli_main

    out, df = store
    assert cli_main(["results", "show", "--out", str(out), "--by", "deploy"]) == 0
    text = capsys.readouterr().out
    for col in ("ΔACC pp", "ΔACC 95% CI", "flip %", "p50 ms", "p95 ms", "img/s", "speed-up thr", "speed-up lat",
                "device", "front", "machine"):
        assert col in text, col
    assert "clean" in text and DEPLOY in text and RESIZE not in text
    rows = report.deploy_rows(df.reset_index()).set_index("condition")
    assert set(rows.index) == {"clean", DEPLOY}
    assert rows.loc["clean", "speedup_throughput"] == 1.0 and rows.loc["clean", "speedup_latency"] == 1.0
    ref, dep = df.loc["clean"], df.loc[DEPLOY]
    assert rows.loc[DEPLOY, "speedup_throughput"] == pytest.approx(dep.throughput_ips / ref.throughput_ips)
    assert rows.loc[DEPLOY, "speedup_latency"] == pytest.approx(ref.latency_p50_ms / dep.latency_p50_ms)
    front = {c for c, _, _ in pareto_front(zip(rows.index, rows.delta_acc, rows.speedup_throughput))}
    assert front and set(rows.index[rows.on_front]) == front   # (fp32 ties clean on ΔACC: the faster one is on it)


def test_results_show_by_deploy_without_deploy_conditions(tmp_path, capsys):
    from robustbench_sys.cli import main as cli_main

    (tmp_path / "summaries").mkdir()
    assert cli_main(["results", "show", "--out", str(tmp_path), "--by", "deploy"]) == 0
    assert "no deploy results" in capsys.readouterr().out


def test_shared_machine_rule():
    # the load of the other processes (load1 - own threads) against the cores left to them
    assert not speed.is_shared(1.9, cores=2, threads=1)
    assert speed.is_shared(2.5, cores=2, threads=1)
    assert not speed.is_shared(15.0, cores=16, threads=16)
    assert speed.is_shared(17.0, cores=16, threads=8)


def test_measure_on_a_tiny_model():
    import torch

    rec = speed.measure(torch.nn.Conv2d(3, 2, 3), torch.rand(1, 3, 8, 8), batch_size=3, runs=50)
    assert rec["latency_runs"] == 50 and rec["batch_size"] == 3 and rec["device"] == "cpu"
    assert 0 < rec["latency_p50_ms"] <= rec["latency_p95_ms"] and rec["throughput_ips"] > 0
    assert speed.MIN_BATCHES <= rec["throughput_batches"] <= speed.MAX_BATCHES


def test_pareto_worked_example():
    """Minimise the accuracy loss, maximise the speed-up; see robustbench_sys.results.pareto."""
    options = [
        ("clean", 0.0, 1.0),       # the reference: nothing loses less
        ("fp16", 0.002, 1.8),      # front
        ("fp16-copy", 0.002, 1.8),  # tied with fp16 on both: both on the front
        ("fp16", 0.002, 1.8),      # a duplicate: kept once
        ("bf16", 0.002, 1.5),      # same loss as fp16, slower: dominated
        ("int8", 0.010, 3.0),      # front: the fastest
        ("int8-eager", 0.010, 0.4),  # dominated by int8 (same loss) and by clean
        ("openvino", 0.000, 1.0),  # tied with clean: on the front
        ("slow", 0.020, 2.0),      # dominated by int8
        ("tf32", -0.004, 0.9),     # gains accuracy: least loss, on the front
        ("unmeasured", 0.0, float("nan")),  # no speed figure: never on the front
    ]
    front = pareto_front(options)
    assert front == [("tf32", -0.004, 0.9), ("clean", 0.0, 1.0), ("openvino", 0.0, 1.0),
                     ("fp16", 0.002, 1.8), ("fp16-copy", 0.002, 1.8), ("int8", 0.010, 3.0)]
    assert dominates(("fp16", 0.002, 1.8), ("bf16", 0.002, 1.5))
    assert not dominates(("fp16", 0.002, 1.8), ("fp16-copy", 0.002, 1.8))
    assert pareto_front([]) == []


def test_dashboard_deployment_page(store):
    """The Deployment-speed page plots each timed option of the real store (reference + the deploy
    condition) with its measured speed-up, and marks the Pareto front computed from those rows."""
    pytest.importorskip("streamlit")
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from robustbench_sys.dashboard import app
    from robustbench_sys.results.store import ResultsStore

    out, df = store
    d = app.deploy_frame(ResultsStore(out).summaries()).set_index("condition")
    assert set(d.index) == {"clean", DEPLOY}          # the resize condition is not a deployment option
    assert d.loc["clean", "speed-up ×"] == 1.0
    ratio = df.loc[DEPLOY, "throughput_ips"] / df.loc["clean", "throughput_ips"]
    assert d.loc[DEPLOY, "speed-up ×"] == pytest.approx(ratio, abs=1e-3)
    front = {c for c, _, _ in pareto_front(zip(d.index, d.delta_acc, d.speedup_throughput))}
    assert {c for c in d.index if d.loc[c, "on_front"]} == front
    at = AppTest.from_file(str(Path(app.__file__)), default_timeout=120)
    at.session_state["results"] = str(out)
    at.session_state["page"] = "Deployment speed"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    shown = at.dataframe[0].value.set_index("condition")
    assert set(shown.index) == {"clean", DEPLOY}
    assert shown.loc[DEPLOY, "speed-up ×"] == d.loc[DEPLOY, "speed-up ×"]


def test_dashboard_deployment_page_without_timed_options(tmp_path):
    pytest.importorskip("streamlit")
    from robustbench_sys.dashboard import app

    assert app.deploy_frame(pd.DataFrame()).empty
