"""Evaluation-loop throughput against the work bound of this machine, side by side in one run.

    .venv/bin/python benchmarks/bench_runner.py [--model mobilenet_v2] [--limit 256] [--batch-size 32]
                                                [--data DIR] [--repeats 2] [--no-suite]

Printed (never asserted; each figure measured in this run, rounds interleaved, best round):

1. the raw forward (pre-decoded tensors, batch ``--batch-size``, torch's default threads) with
   glibc's default allocator and with the tuned one (:mod:`robustbench_sys.alloc`), each in a
   fresh subprocess (mallopt is process-wide): img/s and system time / wall time;
2. the preprocessing alone (read + decode + colour + resize + crop + to float, exactly what a
   DataLoader worker does per image) in a subprocess pinned to one core: img/s;
3. the work bound of a clean run: every core busy, no overhead,
   ``1 / (1 / forward_tuned + 1 / (preprocessing * cores))``;
4. the harness, ``robustbench_sys.evaluate`` with its defaults, for the clean suite and the
   resize suite: img/s end to end (model load and planning included) and in the batch loops
   alone (the ``run_unit`` calls), against the bound.  The resize suite's bound weighs each
   unit's own preprocessing rate (measured like 2., on the first 64 images).

With ``--threads`` it prints instead the thread plans of :mod:`robustbench_sys.threads` against
naive settings (``ROBUSTBENCH_SYS_THREADS=naive``: every library at its default thread count and
OpenMP at its default, spinning wait policy, in every process), the same evaluation side by side, each run a fresh
subprocess with the tuned allocator, rounds interleaved, best round: the one-process path
(lockstep preprocessing workers) and ``scheduler="local:2"`` (two Dask worker processes), img/s
end to end, the tuned / naive ratio, the plan each recorded in its summaries' provenance and
the 1-minute load average before and after each run::

    .venv/bin/python benchmarks/bench_runner.py --threads [--suite resize] [--limit 128] [--repeats 2]
                                                [--schedulers none,local:1,local:2]

Naive is not what it sounds like everywhere: forked preprocessing workers stay at one thread
in every mode (at more, a forked worker's first parallel torch op waits forever for the
parent's OpenMP threads), and Dask's nanny starts every worker with ``OMP_NUM_THREADS=1``
(``distributed.nanny.pre-spawn-environ``), so a naive Dask worker that owns several cores runs
the model on one (``local:1`` shows it on a small machine).

Data: ``../shared/data/imagenet-sample`` next to the repository (resolved from this file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))   # after PYTHONPATH / the installed package
DATA = ROOT.parent / "shared" / "data" / "imagenet-sample"
MALLOC_VARS = ("ROBUSTBENCH_SYS_MALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
#: the user's own OpenMP wait policy (``import robustbench_sys`` sets one in this process: its
#: children must not inherit that, or naive runs would get it too)
USER_WAIT = os.environ.get("OMP_WAIT_POLICY")


# ---------------------------------------------------------------------- subprocess bodies
def _child_forward(a) -> dict:
    """Raw forward over pre-decoded images (``a.images``, .npy), allocator per ``a.alloc``."""
    from robustbench_sys.alloc import allocator_info, tune_allocator

    if a.alloc == "tuned":
        tune_allocator()
    import numpy as np
    import torch

    from robustbench_sys import zoo
    from robustbench_sys.pipeline import Pipeline

    card = zoo.get_card(a.model)
    pipe, model = Pipeline.from_card(card), zoo.load_model(card).eval()
    xs = torch.from_numpy(np.load(a.images))
    bs = a.batch_size
    with torch.inference_mode():
        model(pipe.normalise(xs[:bs]))   # warm-up (one-off allocations, kernels)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(0, len(xs), bs):
            model(pipe.normalise(xs[i:i + bs]))
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"img_s": len(xs) / wall, "sys_wall": (r1.ru_stime - r0.ru_stime) / wall,
            "user_wall": (r1.ru_utime - r0.ru_utime) / wall, "minflt": r1.ru_minflt - r0.ru_minflt,
            "threads": torch.get_num_threads(), "allocator": allocator_info()}


def _child_preprocess(a) -> dict:
    """Preprocessing on one core for each pipeline spec in ``a.specs`` (JSON list); the first
    one's tensors are saved to ``a.images`` when given."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import numpy as np
    import torch

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.loop import Images
    from robustbench_sys.pipeline import Pipeline

    samples = list(load_dataset(a.data).samples)
    rates = []
    for k, spec in enumerate(json.loads(a.specs)):
        ds = Images(samples[: a.limit if k == 0 else min(a.limit, a.per_unit)], Pipeline.from_spec(spec))
        ds[0]   # warm-up: imports, isolated worker start
        best, xs = float("inf"), []
        for _ in range(a.repeats if k == 0 else 1):
            t0 = time.perf_counter()
            xs = [ds[i][1] for i in range(len(ds))]
            best = min(best, time.perf_counter() - t0)
        rates.append(len(ds) / best)
        if k == 0 and a.images:
            np.save(a.images, np.stack(xs))
    return {"img_s": rates}


def _child_evaluate(a) -> dict:
    """One evaluate() of ``a.suite`` (with ``a.scheduler`` when not "none") into a fresh store,
    under the thread plan of ``ROBUSTBENCH_SYS_THREADS`` (set by the parent)."""
    import robustbench_sys
    from robustbench_sys.alloc import tune_allocator

    tune_allocator()   # as the CLI does
    kw = {} if a.scheduler == "none" else {"scheduler": a.scheduler}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        df = robustbench_sys.evaluate(a.model, [a.suite], a.data, out, limit=a.limit, batch_size=a.batch_size,
                                      progress=False, speed=False, **kw)
        wall = time.perf_counter() - t0
    n = a.limit * (len(df) + len(df.attrs.get("skipped", [])))
    rec = json.loads(df.provenance.iloc[0])["threads"]
    return {"wall": wall, "n": n, "units": len(df), "threads": rec["process"], "load0": load0,
            "load1": os.getloadavg()[0]}


def _child(argv) -> None:
    ap = argparse.ArgumentParser()
    for k in ("--child", "--model", "--alloc", "--images", "--data", "--specs", "--suite", "--scheduler"):
        ap.add_argument(k)
    for k in ("--batch-size", "--limit", "--repeats", "--per-unit"):
        ap.add_argument(k, type=int)
    a = ap.parse_args(argv)
    out = {"forward": _child_forward, "preprocess": _child_preprocess, "evaluate": _child_evaluate}[a.child](a)
    print("RESULT " + json.dumps(out))


def _run_child(args: list[str], alloc: str, env_extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARS}
    env["ROBUSTBENCH_SYS_MALLOC"] = alloc
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("OMP_WAIT_POLICY", None)
    if USER_WAIT is not None:
        env["OMP_WAIT_POLICY"] = USER_WAIT
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode or line is None:
        raise SystemExit(f"bench child {args[:2]} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


# ---------------------------------------------------------------------- the harness
def harness(card, suite, data, limit: int, batch_size: int, **kw) -> dict:
    """evaluate() into a fresh store (``kw``: more evaluate() arguments, e.g. ``device``); wall
    time end to end and inside run_unit (``units``: pipeline spec, images, loop seconds per unit).
    Also used by benchmarks/bench_device.py."""
    import robustbench_sys
    from robustbench_sys.eval import runner as runner_mod

    loops = []
    real = runner_mod.run_unit

    def timed(store, unit, strategy, **kw):
        n = len(unit.dataset) - len(store.done_files(unit.id))
        t0 = time.perf_counter()
        real(store, unit, strategy, **kw)
        loops.append((unit.pipeline.spec(), n, time.perf_counter() - t0))

    runner_mod.run_unit = timed
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            df = robustbench_sys.evaluate(card, [suite], data, out, limit=limit, batch_size=batch_size,
                                          progress=False, **kw)
            wall = time.perf_counter() - t0
    finally:
        runner_mod.run_unit = real
    n = sum(x[1] for x in loops)
    return {"wall": wall, "loop": sum(x[2] for x in loops), "n": n, "units": loops,
            "skipped": len(df.attrs.get("skipped", []))}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return _child(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the raw forward")
    ap.add_argument("--no-suite", action="store_true", help="skip the resize-suite harness run")
    ap.add_argument("--threads", action="store_true",
                    help="only the thread plans vs naive thread settings (see the module doc)")
    ap.add_argument("--suite", default="resize", help="the suite of --threads (clean is always included)")
    ap.add_argument("--schedulers", default="none,local:1,local:2",
                    help="the runs of --threads: none (one process) and / or local:N Dask clusters")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.threads:
        return threads_bench(a)

    from robustbench_sys.alloc import tune_allocator

    tune_allocator()   # as the CLI does: this process and the DataLoader workers it forks
    import torch

    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.loop import preprocess_workers
    from robustbench_sys.pipeline import Pipeline

    cores = len(os.sched_getaffinity(0))
    card = zoo.get_card(a.model)
    ds = load_dataset(a.data).limit(a.limit)
    n = len(ds)
    print(f"{a.model}, {n} images of {a.data}, batch {a.batch_size}, {cores} cores, torch threads "
          f"{torch.get_num_threads()}, preprocessing workers {preprocess_workers()} (lockstep), "
          f"load {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        npy = str(Path(tmp) / "x.npy")
        common = ["--model", a.model, "--batch-size", str(a.batch_size), "--data", a.data,
                  "--limit", str(n), "--repeats", "2", "--per-unit", "64"]
        spec = json.dumps([Pipeline.from_card(card).spec()])
        pre = _run_child(["--child", "preprocess", *common, "--specs", spec, "--images", npy], "tuned")["img_s"][0]
        fwd = {"default": [], "tuned": []}
        for _ in range(a.repeats):
            for mode in fwd:
                fwd[mode].append(_run_child(["--child", "forward", *common, "--images", npy, "--alloc", mode], mode))
    best = {m: max(r, key=lambda x: x["img_s"]) for m, r in fwd.items()}
    for m, r in best.items():
        print(f"  raw forward, {m:7s} allocator: {r['img_s']:7.1f} img/s  sys/wall {r['sys_wall']:.2f}  "
              f"user/wall {r['user_wall']:.2f}  minor faults {r['minflt']:>8d}   "
              f"(rounds: {', '.join(format(x['img_s'], '.1f') for x in fwd[m])})")
    print(f"  tuned / default: {best['tuned']['img_s'] / best['default']['img_s']:.2f}x")
    F = best["tuned"]["img_s"]

    def bound(p: float) -> float:
        return 1 / (1 / F + 1 / (p * cores))

    print(f"  preprocessing alone, one core: {pre:7.1f} img/s")
    print(f"  work bound (clean, {cores} cores) = 1 / (1/{F:.1f} + 1/({pre:.1f} x {cores})) = {bound(pre):7.1f} img/s")

    def report(name: str, h: dict, b: float) -> None:
        print(f"  harness {name:14s} {h['n']:5d} img: end to end {h['n'] / h['wall']:7.1f} img/s "
              f"({h['n'] / h['wall'] / b:.2f}x bound), batch loops {h['n'] / h['loop']:7.1f} img/s "
              f"({h['n'] / h['loop'] / b:.2f}x bound {b:.1f})" + (f", {h['skipped']} skipped" if h["skipped"] else ""))

    clean = harness(card, "clean", ds, n, a.batch_size)
    report("clean", clean, bound(pre))
    if not a.no_suite:
        suite = harness(card, "resize", ds, n, a.batch_size)
        specs = [u[0] for u in suite["units"]]
        with tempfile.TemporaryDirectory():
            rates = _run_child(["--child", "preprocess", "--model", a.model, "--batch-size", str(a.batch_size),
                                "--data", a.data, "--limit", str(n), "--repeats", "1", "--per-unit", "64",
                                "--specs", json.dumps(specs)], "tuned")["img_s"]
        # every unit's images at that unit's bound: total images / total bound time
        b = suite["n"] / sum(u[1] / bound(r) for u, r in zip(suite["units"], rates))
        slowest = min(zip(rates, specs), key=lambda x: x[0])
        report(f"resize ({len(specs)} u)", suite, b)
        print(f"    resize-suite preprocessing, one core: {min(rates):.1f} .. {max(rates):.1f} img/s "
              f"(slowest: {slowest[1]['resize']})")
    print(f"  load average now {os.getloadavg()[0]:.1f}")


def _plan_text(t: dict) -> str:
    return (f"torch {t['torch']}/{t['interop']} opencv {t['opencv']} "
            f"OMP {t['env'].get('OMP_NUM_THREADS', '-')} wait {t['env'].get('OMP_WAIT_POLICY', 'default')}"
            + (f" ({'; '.join(t['notes'])})" if t["notes"] else ""))


def threads_bench(a) -> None:
    """Thread plans vs naive thread settings, one process and local:2, side by side (module doc)."""
    from robustbench_sys.procs import available_cores

    cores = available_cores()
    print(f"{a.model} x clean+{a.suite} x {a.limit} images of {a.data}, batch {a.batch_size}, {cores} cores, "
          f"tuned allocator, load {os.getloadavg()[0]:.2f}")
    common = ["--child", "evaluate", "--model", a.model, "--suite", a.suite, "--data", a.data,
              "--limit", str(a.limit), "--batch-size", str(a.batch_size)]
    runs: dict = {}
    scheds = a.schedulers.split(",")
    for r in range(a.repeats):
        for sched in scheds:
            for mode in ("auto", "naive"):
                res = _run_child([*common, "--scheduler", sched], "tuned", {"ROBUSTBENCH_SYS_THREADS": mode})
                runs.setdefault((sched, mode), []).append(res)
                print(f"  round {r + 1} {'one process' if sched == 'none' else sched:<11} {mode:<5}: "
                      f"{res['n'] / res['wall']:6.1f} img/s ({res['wall']:5.1f} s)  load {res['load0']:.2f} -> "
                      f"{res['load1']:.2f}", flush=True)
    print("best rounds (img/s end to end, model load and planning included):")
    for sched in scheds:
        best = {m: max(runs[(sched, m)], key=lambda x: x["n"] / x["wall"]) for m in ("auto", "naive")}
        rate = {m: b["n"] / b["wall"] for m, b in best.items()}
        name = "one process" if sched == "none" else sched
        for m in ("auto", "naive"):
            print(f"  {name:<11} {'planned' if m == 'auto' else 'naive':<7} {rate[m]:6.1f} img/s   "
                  f"{best[m]['threads']['kind']}: {_plan_text(best[m]['threads'])}")
        paired = [p["n"] / p["wall"] / (q["n"] / q["wall"])
                  for p, q in zip(runs[(sched, "auto")], runs[(sched, "naive")])]
        print(f"  {name:<11} planned / naive: {rate['auto'] / rate['naive']:.2f}x best rounds; per round "
              f"{', '.join(f'{x:.2f}x' for x in paired)} (load decides: spinning OpenMP threads lose on busy cores)")
    print(f"  load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
