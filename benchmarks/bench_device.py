"""Harness throughput against the raw forward of the same model on one device, side by side in one run.

    .venv/bin/python benchmarks/bench_device.py [--device cpu|cuda|cuda:N|auto] [--model mobilenet_v2]
                                                [--limit 64] [--batch-size 32] [--data DIR] [--repeats 3]
                                                [--json OUT]

Printed (never asserted; every figure measured in this run):

1. the raw forward: the model on ``--device``, fed the run's images already decoded, preprocessed
   (the model's own pipeline), normalised and copied to the device before the clock starts, in
   batches of ``--batch-size`` under ``torch.inference_mode`` (strict fp32 on a GPU, as the
   harness runs; ``torch.cuda.synchronize`` before each clock read); best of ``--repeats``
   rounds, one before the harness runs and the rest after;
2. the harness: ``robustbench_sys.evaluate`` (clean suite, default workers) on the same images
   into a fresh store: img/s in its batch loop (``run_unit``: read + decode + preprocess +
   copy + forward + scoring + parquet) and end to end (model load, planning, the deployment's
   speed measurement (``eval.speed``) and summaries included) — via
   ``benchmarks/bench_runner.harness``;
3. the ratio harness / raw forward for each (issue 14's goal on a GPU: >= 0.8x for the loop
   with GPU decoding);
4. on a CUDA device with ``decoder/nvjpeg`` usable: the same for a unit whose pipeline decodes
   with nvJPEG on the GPU (the batch loop of that unit alone), else the reason it is not run.

``--json OUT`` writes the figures.  Data: ``../shared/data/imagenet-sample`` next to the
repository (resolved from this file).  If this checkout's ``evaluate`` has no ``device``
argument the harness runs on the CPU only (the figures then say so).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))   # after PYTHONPATH / the installed package
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data" / "imagenet-sample"


def raw_forward(card, ds, batch_size: int, device: str, repeats: int) -> list[float]:
    """img/s of each round of the model's forward on pre-loaded device tensors (see module doc)."""
    import numpy as np
    import torch

    from robustbench_sys import zoo
    from robustbench_sys.devices import reference_flags
    from robustbench_sys.pipeline import Pipeline

    pipe = Pipeline.from_card(card)
    xs = torch.from_numpy(np.stack([pipe.preprocess(s.path.read_bytes()) for s in ds.samples]))
    xs = pipe.normalise(xs).to(device)
    model = zoo.load_model(card).eval().to(device)
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    rates = []
    with reference_flags(device), torch.inference_mode():
        model(xs[:batch_size])   # warm-up: one-off allocations, kernel choice
        sync()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(xs), batch_size):
                model(xs[i:i + batch_size])
            sync()
            rates.append(len(xs) / (time.perf_counter() - t0))
    return rates


def nvjpeg_reason(device: str) -> str | None:
    """None when an nvJPEG pipeline can be timed on ``device``, else why not."""
    if not device.startswith("cuda"):
        return "not a CUDA device"
    from robustbench_sys import noises

    try:
        return noises.get("decoder/nvjpeg").available()
    except KeyError:
        return "decoder/nvjpeg is not registered in this checkout"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the raw forward (best counts)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the figures to this JSON file")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from robustbench_sys.alloc import tune_allocator

    tune_allocator()   # as the CLI does
    import torch
    from bench_runner import harness

    import robustbench_sys
    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.devices import resolve_device
    from robustbench_sys.eval.loop import preprocess_workers
    from robustbench_sys.suites import Condition, Suite

    device = resolve_device(a.device)
    kw = {}
    if "device" in inspect.signature(robustbench_sys.evaluate).parameters:
        kw["device"] = device
    elif device != "cpu":
        raise SystemExit(f"--device {device}: this checkout's evaluate() has no device argument")
    card = zoo.get_card(a.model)
    ds = load_dataset(a.data).limit(a.limit)
    n = len(ds)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    head = {"model": a.model, "device": device, "gpu": gpu, "images": n, "data": a.data, "batch_size": a.batch_size,
            "cores": cores, "torch_threads": torch.get_num_threads(), "workers": preprocess_workers(),
            "load_before": list(os.getloadavg()), "evaluate_device_arg": "device" in kw}
    print(f"{a.model} on {device}{f' ({gpu})' if gpu else ''}, {n} images of {a.data}, batch {a.batch_size}, "
          f"{cores} cores, torch threads {torch.get_num_threads()}, preprocessing workers {preprocess_workers()}, "
          f"load {os.getloadavg()[0]:.1f}")

    rounds = raw_forward(card, ds, a.batch_size, device, 1)
    clean = harness(card, "clean", ds, n, a.batch_size, **kw)
    rounds += raw_forward(card, ds, a.batch_size, device, max(1, a.repeats - 1))
    raw = max(rounds)
    loop = clean["n"] / clean["loop"]
    e2e = clean["n"] / clean["wall"]
    print(f"  raw forward (pre-loaded {device} tensors): {raw:8.1f} img/s  "
          f"(rounds: {', '.join(format(r, '.1f') for r in rounds)})")
    print(f"  harness batch loop (clean):               {loop:8.1f} img/s  ratio {loop / raw:.2f}x raw forward")
    print(f"  harness end to end (clean):               {e2e:8.1f} img/s  ratio {e2e / raw:.2f}x raw forward "
          "(model load, planning, speed measurement, summaries included)")
    out = {**head, "raw_forward_ips": raw, "raw_forward_rounds": rounds, "harness_loop_ips": loop,
           "harness_end_to_end_ips": e2e, "ratio_loop": loop / raw, "ratio_end_to_end": e2e / raw}

    # the other host/device schedule, side by side: overlap (double-buffered preprocessing, the
    # default on a GPU) vs lockstep (the default on the CPU); ROBUSTBENCH_SYS_OVERLAP forces one
    from robustbench_sys.eval.loop import OVERLAP_ENV, overlap_for

    default = "overlap" if overlap_for(device) else "lockstep"
    other = "lockstep" if default == "overlap" else "overlap"
    saved = os.environ.get(OVERLAP_ENV)
    os.environ[OVERLAP_ENV] = "1" if other == "overlap" else "0"
    try:
        alt = harness(card, "clean", ds, n, a.batch_size, **kw)
    finally:
        if saved is None:
            os.environ.pop(OVERLAP_ENV, None)
        else:
            os.environ[OVERLAP_ENV] = saved
    alt_loop = alt["n"] / alt["loop"]
    print(f"  harness batch loop (clean, {other:8s}):    {alt_loop:8.1f} img/s  ratio {alt_loop / raw:.2f}x raw "
          f"forward ({alt_loop / loop:.2f}x the default {default})")
    out.update(schedule=default, other_schedule=other, other_loop_ips=alt_loop, ratio_other_loop=alt_loop / raw)

    why = nvjpeg_reason(device)
    if why is None:
        cond = Condition("decoder/nvjpeg", "decoder", "bench-device", 1, {"decoder": "decoder/nvjpeg"})
        suite = Suite("bench-device", "decoder", 1, "nvJPEG decoding on the GPU", (cond,), "")
        nv = harness(card, suite, ds, n, a.batch_size, **kw)
        units = [u for u in nv["units"] if u[0].get("decoder") == "decoder/nvjpeg"]
        if units:
            nv_loop = units[0][1] / units[0][2]
            print(f"  harness batch loop (decoder/nvjpeg):      {nv_loop:8.1f} img/s  ratio {nv_loop / raw:.2f}x "
                  "raw forward")
            out.update(nvjpeg_loop_ips=nv_loop, ratio_nvjpeg_loop=nv_loop / raw)
        else:
            why = f"the decoder/nvjpeg unit did not run ({nv['skipped']} skipped)"
    if why is not None:
        print(f"  nvJPEG pipeline: not timed ({why})")
        out["nvjpeg"] = f"not timed: {why}"
    out["load_after"] = list(os.getloadavg())
    print(f"  load average now {os.getloadavg()[0]:.1f}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=1, default=str))
        print(f"  figures: {a.json_out}")
    return out


if __name__ == "__main__":
    from robustbench_sys.errors import UserError

    try:
        main()
    except UserError as e:   # e.g. --device cuda where there is none: one line, exit 2
        print(f"bench_device: error: {e}", file=sys.stderr)
        sys.exit(2)
