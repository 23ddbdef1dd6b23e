"""The speed of a deployment, measured on the deployed model as it runs (issue 14, item 3).

Every unit whose pipeline has a deploy-stage noise (a model-side stage with ``call == "deploy"``
in :mod:`robustbench_sys.noises.stages`: precision, backend, device) and the model's reference
(clean) unit are timed once, right after deployment (:meth:`Runner._run_pending
<robustbench_sys.eval.runner.Runner>`), on the device the unit runs on:

- **latency** at batch 1: :data:`WARMUP` untimed calls, then :data:`LATENCY_RUNS` calls timed
  one by one with ``time.perf_counter`` (``torch.cuda.synchronize`` before each clock read on a
  CUDA device); p50 and p95 in milliseconds;
- **throughput** at the unit's batch size: one untimed batch, then at least
  :data:`MIN_BATCHES` and at most :data:`MAX_BATCHES` timed batches (more only while the timed
  ones take under :data:`THROUGHPUT_BUDGET_S`); images per second over all timed batches.

The inputs are pre-built, seeded, normalised-range float32 tensors already on the device, so
the figures are the deployed callable alone (no decoding, preprocessing, normalisation or
softmax) under ``torch.inference_mode``.  Timings are measured, never estimated.

With the figures the record keeps what they depend on: the device, torch's intra-op threads,
the batch size, the number of timed runs / batches, the CPUs available to the process and the
load averages (``os.getloadavg()``) before and after the timing.  **The shared-machine rule**:
the load average counts the runnable threads of every process, this one's included; the
process's own threads are its torch intra-op threads (busy while it evaluates).  The machine
counts as shared (``shared_machine``: True) when the load of the *other* processes, the larger
1-minute load average (before / after) minus the process's own threads, exceeds the cores the
process leaves to them, the CPUs available to it minus its own threads: other work then competes
with the measurement for cores, and its figures are slower than the machine can do.  (The two
"own threads" cancel: the rule is ``load1 > cores``; it is written out so the terms stay
visible.)  A throttled CPU shows the same way only through slower figures, not this flag.

The record is stored with the unit's deploy info (``deploy_info["speed"]`` in the unit spec and
the summary) so a resumed or finished unit keeps it; :func:`summary_fields` gives the summary
columns (:data:`COLUMNS`, NaN / None for a unit without a measurement).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.procs import available_cores

#: timed batch-1 calls (the issue asks for at least 50)
LATENCY_RUNS = 50
#: untimed calls before timing (one-off allocations, kernel selection, lazy compilation)
WARMUP = 3
#: timed batches for the throughput: at least / at most, more only within the time budget
MIN_BATCHES, MAX_BATCHES = 2, 5
THROUGHPUT_BUDGET_S = 1.0

#: the summary columns (results.store.SUMMARY_SCHEMA) and the record key each comes from;
#: all float64 except the device (a store mixing measured and unmeasured units reads back with
#: one dtype: NaN = no measurement; speed_shared_machine 1.0 / 0.0 / NaN)
COLUMNS = {"latency_p50_ms": "latency_p50_ms", "latency_p95_ms": "latency_p95_ms",
           "throughput_ips": "throughput_ips", "speed_batch_size": "batch_size", "speed_device": "device",
           "speed_threads": "threads", "speed_load1": "load1", "speed_cores": "cores",
           "speed_shared_machine": "shared_machine"}


def deploy_stage_noises(pipeline) -> list[str]:
    """The deploy-stage noise keys of a pipeline (model-side stages called as ``deploy``)."""
    return [v for st in pipeline_stages("model") if st.call == "deploy" and (v := getattr(pipeline, st.name, None))]


def wants_speed(unit) -> bool:
    """True for a unit the plan marked ``timed``: every unit with a deploy-stage noise, and the
    model's reference (clean) unit when the run has one of those (its speed is what they are
    compared with); none with ``evaluate(speed=False)`` / ``--no-speed``."""
    return bool(getattr(unit, "timed", False))


def is_shared(load1: float, cores: int, threads: int) -> bool:
    """The shared-machine rule (module doc): the other processes' load exceeds the cores this
    process leaves to them."""
    others = load1 - threads
    left = cores - threads
    return others > left


def _percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a non-empty list."""
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure(model: Callable, example, *, batch_size: int, device: str = "cpu",
            runs: int = LATENCY_RUNS, warmup: int = WARMUP) -> dict:
    """Time ``model`` (a deployed callable on normalised NCHW float32) at batch 1 and at
    ``batch_size`` on ``device``, on ``example`` (one normalised (1, C, H, W) input, repeated to
    the batch); returns the speed record (module doc)."""
    import torch

    cuda = str(device).startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    one = example.to(device)
    batch = example.expand(batch_size, *example.shape[1:]).contiguous().to(device)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    start = time.perf_counter()
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(one)
        sync()
        for _ in range(runs):
            t0 = time.perf_counter()
            model(one)
            sync()
            times.append(time.perf_counter() - t0)
        model(batch)   # warm-up at this shape
        sync()
        n_batches, spent = 0, 0.0
        while n_batches < MIN_BATCHES or (n_batches < MAX_BATCHES and spent < THROUGHPUT_BUDGET_S):
            t0 = time.perf_counter()
            model(batch)
            sync()
            spent += time.perf_counter() - t0
            n_batches += 1
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    threads, cores = torch.get_num_threads(), available_cores()
    load1 = max(load_before[0], load_after[0])
    return {"latency_p50_ms": 1000 * _percentile(times, 50), "latency_p95_ms": 1000 * _percentile(times, 95),
            "latency_runs": runs, "warmup": warmup,
            "throughput_ips": n_batches * batch_size / spent, "throughput_batches": n_batches,
            "batch_size": batch_size, "device": str(device), "threads": threads, "cores": cores,
            "load_before": list(load_before), "load_after": list(load_after), "load1": load1,
            "shared_machine": bool(is_shared(load1, cores, threads)),
            "rule": "shared when load1 - threads > cores - threads (load1: the larger 1-min load average "
                    "before / after)",
            "timer": "time.perf_counter" + (" + torch.cuda.synchronize" if cuda else ""),
            "measure_s": round(time.perf_counter() - start, 3), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def ran_on(deployed, unit) -> str:
    """The device a unit's deployed model computes on: a deployment's ``info["device"]`` (set by
    the noise, or ``cpu`` for one that has no GPU path; :func:`robustbench_sys.eval.deploy.place`),
    else (the reference module, moved by the evaluator) the unit's device."""
    info = getattr(deployed, "info", None)
    if isinstance(info, dict):
        return str(info.get("device") or "cpu")
    return str(getattr(unit, "device", "cpu"))


def example_input(unit):
    """The unit's first image that preprocesses (its own pipeline, normalised): a (1, C, H, W)
    float32 tensor of the shape the model really gets; None when none of the first few does."""
    import torch

    for s in unit.dataset.samples[:8]:
        try:
            x = unit.pipeline.preprocess(s.path.read_bytes())
        except Exception:   # an unreadable image is reported by the batch loop itself
            continue
        return unit.pipeline.normalise(torch.from_numpy(x[None]).float())
    return None


def measure_unit(deployed, unit, batch_size: int) -> dict:
    """:func:`measure` of a unit's deployed model on the device it runs on, on its own first
    image, at the unit's batch size: the run's, or the unit's image count when that is smaller
    (its batches are never larger).  ``{"not_measured": reason}`` when no image preprocesses."""
    example = example_input(unit)
    if example is None:
        return {"not_measured": "none of the unit's first images could be read"}
    return measure(deployed, example, batch_size=max(1, min(batch_size, len(unit.dataset))),
                   device=ran_on(deployed, unit))


def summary_fields(deploy_info: dict | None) -> dict:
    """The summary columns (:data:`COLUMNS`) from a unit's deploy info: NaN (None for the device)
    where the unit has no speed record."""
    rec = (deploy_info or {}).get("speed") or {}
    out: dict = {}
    for col, key in COLUMNS.items():
        v = rec.get(key)
        if col == "speed_device":
            out[col] = None if v is None else str(v)
        else:
            out[col] = float("nan") if v is None else float(v)
    return out
