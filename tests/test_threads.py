"""Thread plans (robustbench_sys.threads): the plan for given core counts, what a real forked
preprocessing worker and a real Dask worker run with, the record in a summary's provenance,
the once-per-process inter-op caveat, and a bad ``ROBUSTBENCH_SYS_THREADS`` as one line."""

import dataclasses
import json
import multiprocessing as mp
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

import robustbench_sys
from robustbench_sys import threads
from robustbench_sys.errors import UserError
from robustbench_sys.eval.loop import init_forked_worker, serial_opencv
from robustbench_sys.threads import SWITCH, apply, plan_threads


@pytest.fixture
def torch_state(monkeypatch):
    """Restores torch's and OpenCV's thread counts (apply() changes them in this process)."""
    import cv2

    monkeypatch.delenv(SWITCH, raising=False)
    n, c = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(n)
    cv2.setNumThreads(c)


@pytest.mark.parametrize("cores", [1, 2, 6, 64])
def test_plan_for_core_counts(cores, monkeypatch):
    monkeypatch.delenv(SWITCH, raising=False)
    main = plan_threads("main", cores)
    assert (main.torch, main.interop, main.opencv, main.blas) == (cores, 1, cores, 1)
    assert main.workers == min(16, cores)
    pre = plan_threads("preprocess", cores)
    assert (pre.torch, pre.interop, pre.opencv, pre.blas, pre.workers) == (1, 1, 1, 1, 0)
    dask = plan_threads("dask", cores)
    assert (dask.torch, dask.interop, dask.opencv) == (cores, 1, cores)
    assert dask.env() == {"OMP_NUM_THREADS": str(cores), "MKL_NUM_THREADS": str(cores),
                          "OPENBLAS_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"}
    assert dask.workers == 0   # preprocessing in the worker itself (Dask's workers are daemonic)
    # naive: nothing set in the evaluator and the Dask workers, the work split kept; forked
    # preprocessing workers stay at one thread (OpenMP / OpenCV pools do not survive fork)
    naive = {k: plan_threads(k, cores, override="naive") for k in threads.KINDS}
    assert all(p.torch is p.interop is p.opencv is p.blas is None and p.env() == {}
               for k, p in naive.items() if k != "preprocess")
    assert naive["main"].workers == main.workers
    assert naive["preprocess"] == dataclasses.replace(pre, mode="naive", omp_wait=None)


def test_overrides(monkeypatch):
    monkeypatch.setenv(SWITCH, "cores=5, main.torch=3,workers=0,dask.cores=2,preprocess.opencv=2")
    main, pre, dask = (plan_threads(k) for k in threads.KINDS)
    assert (main.cores, main.torch, main.opencv, main.workers) == (5, 3, 5, 0)
    assert (pre.torch, pre.opencv) == (1, 2)
    # a Dask worker's share is dask.cores, not the process's cores=N
    assert (dask.cores, dask.torch, plan_threads("dask", 7).cores) == (2, 2, 2)
    assert threads.owned_cores() == 5
    monkeypatch.setenv(SWITCH, "naive,dask.torch=1")
    assert plan_threads("dask", 4).torch == 1 and plan_threads("main", 4).torch is None


@pytest.mark.parametrize("bad", ["torch=0", "fast", "gpu.torch=1", "torchs=2", "torch=two", "workers=-1"])
def test_bad_override_is_one_line(bad, monkeypatch, tmp_path):
    monkeypatch.setenv(SWITCH, bad)
    with pytest.raises(UserError) as e:
        robustbench_sys.evaluate("mobilenet_v2", ["clean"], "foolbox-demo", tmp_path, limit=2, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{SWITCH}={bad}:") and "e.g." in msg
    assert not any(tmp_path.iterdir())   # refused before anything ran


def test_bad_override_cli(tmp_path):
    env = {**os.environ, SWITCH: "main.torch=0", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "robustbench_sys.cli", "eval", "--model", "mobilenet_v2",
                        "--data", "foolbox-demo", "--limit", "2", "--out", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().count("\n") == 0 and f"{SWITCH}=main.torch=0" in p.stderr


def _inside() -> dict:
    import cv2

    return {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "opencv": cv2.getNumThreads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "applied": threads.applied(), "pid": os.getpid()}


def _forked_worker() -> dict:
    with serial_opencv(), ProcessPoolExecutor(1, mp_context=mp.get_context("fork"),
                                              initializer=init_forked_worker) as pool:
        return pool.submit(_inside).result()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork on this platform")
def test_forked_worker_runs_the_plan(torch_state, monkeypatch):
    torch.set_num_threads(2)   # the evaluator's model threads, inherited by the fork
    got = _forked_worker()
    want = plan_threads("preprocess")
    assert got["pid"] != os.getpid() and got["applied"]["kind"] == "preprocess"
    assert (got["torch"], got["opencv"], got["omp"]) == (want.torch, want.opencv, str(want.blas)) == (1, 1, "1")
    assert got["applied"]["torch"] == got["torch"] and got["applied"]["interop"] == got["interop"]
    # an override cannot give a forked worker more intra-op threads: OpenMP's pool does not survive fork
    monkeypatch.setenv(SWITCH, "naive,preprocess.torch=2,preprocess.blas=3")
    got = _forked_worker()
    assert (got["torch"], got["omp"], got["applied"]["mode"]) == (1, "3", "naive")
    assert "torch intra-op at 1, not 2" in got["applied"]["notes"][0]


def test_interop_set_once(torch_state):
    try:   # fix this process's inter-op threads, whatever ran before
        torch.set_num_interop_threads(torch.get_num_interop_threads())
    except RuntimeError:
        pass
    have = torch.get_num_interop_threads()
    rec = apply(plan_threads("main", override=f"main.interop={have + 1}"))
    assert rec["interop"] == have and any("inter-op kept" in n for n in rec["notes"])
    rec = apply(plan_threads("main", override=f"main.interop={have}"))
    assert rec["interop"] == have and not any("inter-op" in n for n in rec["notes"])


def test_provenance_records_the_plan(imagenet_sample, tmp_path, torch_state):
    pytest.importorskip("distributed")
    kw = dict(limit=4, progress=False, batch_size=4, speed=False)
    local = robustbench_sys.evaluate("mobilenet_v2", ["clean"], imagenet_sample, tmp_path / "one", **kw)
    rec = json.loads(local.provenance[0])["threads"]
    assert rec["process"]["kind"] == "main" and rec["process"]["pid"] == os.getpid()
    assert rec["process"]["torch"] == torch.get_num_threads()
    # one inter-op thread, unless an earlier test of this process fixed it (torch sets it once)
    assert rec["process"]["interop"] == torch.get_num_interop_threads()
    assert rec["process"]["interop"] == 1 or "inter-op kept" in " ".join(rec["process"]["notes"])
    assert rec["preprocess"] == plan_threads("preprocess").as_dict()

    dask = robustbench_sys.evaluate("mobilenet_v2", ["clean"], imagenet_sample, tmp_path / "dask",
                                    scheduler="local:2", **kw)
    rec = json.loads(dask.provenance[0])["threads"]
    want = plan_threads("dask", max(1, threads.owned_cores() // 2))
    worker = rec["process"]   # queried inside the Dask worker after the plan was applied
    assert worker["kind"] == "dask" and worker["pid"] != os.getpid() and rec["client"]["kind"] == "main"
    assert (worker["torch"], worker["interop"], worker["opencv"]) == (want.torch, want.interop, want.opencv)
    assert worker["env"] == want.env()


@pytest.mark.parametrize("env, first, want", [({}, "", "PASSIVE"), ({SWITCH: "naive"}, "", "None"),
                                               ({"OMP_WAIT_POLICY": "ACTIVE"}, "", "ACTIVE"),
                                               ({}, "import torch; ", "None")])
def test_wait_policy_at_import(env, first, want):
    """``import robustbench_sys`` sets OpenMP's wait policy for torch, unless torch came first,
    the user set one or the mode is naive."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", SWITCH)}
    p = subprocess.run([sys.executable, "-c", f"{first}import os, robustbench_sys; "
                        "print(os.environ.get('OMP_WAIT_POLICY'))"], env={**base, **env},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.split() == [want], p.stderr[-1000:]
