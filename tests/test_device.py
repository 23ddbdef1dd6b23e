"""The device path on the CPU (issue 14, items 1, 2 and the CPU side of 5): ``--device`` selection,
unit identity, provenance, and the device noise family.  GPU checks: tests/test_device_gpu.py."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_sys import noises
from robustbench_sys.cli import main
from robustbench_sys.devices import device_info, resolve_device
from robustbench_sys.errors import UserError
from robustbench_sys.eval import evaluate, runner, speed
from robustbench_sys.eval.plan import unit_id
from robustbench_sys.noises.system.device import flag_state, torch_flags
from robustbench_sys.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
N = 6
GPU_CONDITIONS = ["device/cuda-fp32", "device/tf32", "device/cudnn-benchmark", "device/autocast-fp16",
                  "device/autocast-bf16", "device/half"]


@pytest.fixture(scope="module", autouse=True)
def quick_speed():
    """The deploy speed record (eval.speed) with a few timed runs, not 50: this file checks devices."""
    def measure_unit(deployed, unit, batch_size):
        return speed.measure(deployed, speed.example_input(unit), batch_size=batch_size,
                             device=speed.ran_on(deployed, unit), runs=2, warmup=1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "measure_unit", measure_unit)
        yield


def _eval(out, data, *extra) -> int:
    return main(["eval", "--model", "mobilenet_v2", "--data", str(data), "--limit", str(N), "--batch-size", str(N),
                 "--workers", "0", "--no-progress", "--out", str(out), *extra])


def _rows(out) -> pd.DataFrame:
    rows = ResultsStore(out).per_image().drop(columns=["run_id"])
    return rows.sort_values(["unit_id", "file"]).reset_index(drop=True)


def test_device_cpu_gives_todays_unit_ids_and_rows(tmp_path, imagenet_sample, capsys):
    assert _eval(tmp_path / "plain", imagenet_sample) == 0
    assert _eval(tmp_path / "cpu", imagenet_sample, "--device", "cpu") == 0
    plain, cpu = _rows(tmp_path / "plain"), _rows(tmp_path / "cpu")
    assert len(plain) == N
    pd.testing.assert_frame_equal(plain, cpu)
    # the id is today's formula: nothing about the device is hashed in for the CPU
    spec = ResultsStore(tmp_path / "cpu").unit(plain.unit_id[0])
    key = json.dumps([spec["model"], spec["weights_sha256"], spec["dataset_fingerprint"], spec["pipeline"]],
                     sort_keys=True)
    assert plain.unit_id[0] == hashlib.sha1(key.encode()).hexdigest()[:16]
    assert spec["device"] == "cpu" and "device_info" not in spec
    prov = json.loads(ResultsStore(tmp_path / "cpu").summaries().provenance[0])
    assert prov["device"] == "cpu"


def test_unit_id_includes_a_gpu_device_only():
    class DS:
        fingerprint = "f"

    class P:
        def spec(self):
            return {"decoder": "decoder/pil"}

    ids = {d: unit_id("m", "sha", DS(), P(), None, d) for d in ("cpu", "cuda", "cuda:1")}
    assert ids["cpu"] == unit_id("m", "sha", DS(), P())
    assert len(set(ids.values())) == 3


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_without_a_gpu_exits_2_with_one_line(tmp_path, imagenet_sample, capsys, device):
    assert _eval(tmp_path / "res", imagenet_sample, "--device", device) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("robustbench-sys: error:")]
    assert len(lines) == 1 and f"--device {device}: no CUDA device here" in lines[0]
    assert "--device cpu" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def test_unknown_device_exits_2_listing_the_choices(tmp_path, imagenet_sample, capsys):
    assert _eval(tmp_path / "res", imagenet_sample, "--device", "tpu") == 2
    err = capsys.readouterr().err
    assert "--device tpu: unknown device; choose cpu, cuda, cuda:N" in err and "auto" in err
    assert "Traceback" not in err and not (tmp_path / "res").exists()
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("cuda:x")


@NO_CUDA
def test_auto_is_cpu_here_and_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="robustbench_sys"):
        assert resolve_device("auto") == "cpu"
    assert "auto: no CUDA device (torch.cuda.is_available() is False); using cpu" in caplog.text
    assert resolve_device(None) == "cpu" and resolve_device("CPU") == "cpu"


@NO_CUDA
def test_a_suite_pin_is_honoured_and_checked(tmp_path, imagenet_sample):
    def suite(name, device):
        p = tmp_path / f"{name}.toml"
        p.write_text(f'name = "{name}"\nfamily = "{name}"\ndevice = "{device}"\n'
                     '[[conditions]]\nname = "cv2"\nresize = "cv2-area"\n')
        return str(p)

    def run(suites, **kw):
        evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "res", limit=2, progress=False, **kw)

    with pytest.raises(UserError, match="--device cuda: no CUDA device here"):
        run([suite("gpu", "cuda")])                       # the pin is the run's device
    with pytest.raises(UserError, match="suites pin different devices"):
        run([suite("a", "cpu"), suite("b", "cuda:1")])
    with pytest.raises(UserError, match="suite c: device tpu: unknown device"):
        run([suite("c", "tpu")], device="cpu")
    assert not (tmp_path / "res").exists()


def test_flags_are_set_for_the_block_and_restored():
    before = flag_state()
    with torch_flags(tf32=not before["tf32_matmul"], benchmark=not before["cudnn_benchmark"]) as inside:
        assert inside["tf32_matmul"] is not before["tf32_matmul"]
        assert inside["tf32_cudnn"] is not before["tf32_matmul"]
        assert inside["cudnn_benchmark"] is not before["cudnn_benchmark"]
    assert flag_state() == before
    with pytest.raises(RuntimeError), torch_flags(tf32=True, benchmark=True):
        raise RuntimeError("boom")
    assert flag_state() == before
    assert device_info("cpu") == {"device": "cpu"}


@NO_CUDA
def test_gpu_conditions_say_what_is_missing():
    for key in GPU_CONDITIONS:
        assert noises.get(key).available().startswith("needs a CUDA GPU")
    assert noises.get("device/autocast-bf16-cpu").available() is None


def test_device_suite_skips_gpu_conditions_and_runs_bf16_autocast_on_cpu(tmp_path, imagenet_sample):
    before = flag_state()
    df = evaluate("mobilenet_v2", ["device"], imagenet_sample, tmp_path / "res", limit=N, batch_size=N, workers=0,
                  progress=False)
    skipped = {s["condition"]: s["reason"] for s in df.attrs["skipped"]}
    if not torch.cuda.is_available():
        assert set(GPU_CONDITIONS) <= set(skipped)
        assert all(skipped[c].startswith("unavailable here:") and "needs a CUDA GPU" in skipped[c]
                   for c in GPU_CONDITIONS)
    row = df[df.condition == "device/autocast-bf16-cpu"].iloc[0]
    assert row.n_paired == N and row.family == "device"
    assert 0 <= row.flip_rate <= 1 and row.delta_ci_low <= row.delta_acc <= row.delta_ci_high
    info = json.loads(row.deploy_info)
    assert info["settings"]["autocast"] == "bfloat16" and info["device"] == "cpu"
    assert json.loads(row.provenance)["device"] == "cpu"
    assert flag_state() == before   # nothing left switched on


def test_onnxruntime_backend_refuses_cuda_without_the_cuda_provider():
    from robustbench_sys.devices import onnx_providers
    from robustbench_sys.noises.system.deploy import DeployContext

    nz = noises.get("backend/onnxruntime")
    if nz.available() or "CUDAExecutionProvider" in onnx_providers():
        pytest.skip("needs a CPU-only ONNX Runtime")
    ctx = DeployContext(example_input=torch.zeros(2, 3, 8, 8), device="cuda")
    with pytest.raises(noises.NotApplicable, match="on --device cuda: ONNX Runtime has no CUDAExecutionProvider"):
        nz(torch.nn.Conv2d(3, 2, 3), ctx)


def test_onnx_model_on_cuda_uses_the_cuda_provider_or_refuses():
    from robustbench_sys.devices import check_onnx_device, onnx_providers
    from robustbench_sys.zoo.onnx_model import OnnxModel

    m = OnnxModel("model.onnx")
    assert m.providers == ["CPUExecutionProvider"] and m.to("cpu") is m
    assert m.to("cuda:1").providers == [("CUDAExecutionProvider", {"device_id": 1})]
    check_onnx_device("m", "cpu")
    if "CUDAExecutionProvider" not in onnx_providers():
        with pytest.raises(UserError, match="needs ONNX Runtime's CUDAExecutionProvider"):
            check_onnx_device("m", "cuda")


# ---------------------------------------------------------------------- host/device overlap
def _batch_arrays(samples, pipe, overlap: bool) -> list[list]:
    from robustbench_sys.eval.loop import batches

    out = []
    for batch in batches(samples, pipe, 3, 2, overlap=overlap):
        # while the consumer holds batch k the next one is being written into the other buffer:
        # batch k's arrays must not change until the consumer asks for k + 1
        before = [x.copy() if x is not None else None for _, x, _ in batch]
        import time

        time.sleep(0.05)
        assert all((a is None and x is None) or np.array_equal(a, x) for a, (_, x, _) in zip(before, batch))
        out.append([(i, before[j], err) for j, (i, _, err) in enumerate(batch)])
    return out


def test_overlap_gives_the_same_batches_as_lockstep(imagenet_sample, tmp_path):
    """Double-buffered preprocessing (the GPU path) hands out exactly the lockstep batches, in
    order, an unreadable image included, and never overwrites a batch the consumer still holds."""
    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.pipeline import Pipeline

    samples = list(load_dataset(imagenet_sample).limit(8).samples)
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(samples[0].path.read_bytes()[:200])
    samples.insert(4, type(samples[0])("bad.JPEG", bad, 0))
    pipe = Pipeline.from_card(zoo.get_card("mobilenet_v2"))
    lock, over = _batch_arrays(samples, pipe, False), _batch_arrays(samples, pipe, True)
    assert [len(b) for b in lock] == [3, 3, 3] == [len(b) for b in over]
    for bl, bo in zip(lock, over):
        for (il, xl, el), (io, xo, eo) in zip(bl, bo):
            assert il == io and el == eo
            assert (xl is None) == (xo is None) and (xl is None or np.array_equal(xl, xo))
    assert over[1][1][1] is None and over[1][1][2]   # the truncated image: an error, no array


def test_overlap_for_devices_and_the_override(monkeypatch):
    from robustbench_sys.eval.loop import OVERLAP_ENV, overlap_for

    monkeypatch.delenv(OVERLAP_ENV, raising=False)
    assert overlap_for("cuda") and overlap_for("cuda:1") and not overlap_for("cpu")
    monkeypatch.setenv(OVERLAP_ENV, "1")
    assert overlap_for("cpu")
    monkeypatch.setenv(OVERLAP_ENV, "0")
    assert not overlap_for("cuda")
    monkeypatch.setenv(OVERLAP_ENV, "yes")
    with pytest.raises(UserError, match=OVERLAP_ENV):
        overlap_for("cpu")


def test_overlapped_evaluation_stores_the_same_rows(tmp_path, imagenet_sample, monkeypatch):
    """The forced overlap path on the CPU (as a GPU run uses it) gives today's rows."""
    args = ["--suite", "clean", "--workers", "2", "--batch-size", "2"]
    assert _eval(tmp_path / "lock", imagenet_sample, *args[:2]) == 0
    monkeypatch.setenv("ROBUSTBENCH_SYS_OVERLAP", "1")
    assert main(["eval", "--model", "mobilenet_v2", "--data", str(imagenet_sample), "--limit", str(N),
                 "--no-progress", "--out", str(tmp_path / "over"), *args]) == 0
    pd.testing.assert_frame_equal(_rows(tmp_path / "lock"), _rows(tmp_path / "over"))
