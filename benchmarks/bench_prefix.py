"""Shared-prefix execution (:mod:`robustbench_sys.eval.prefix`), side by side in one run:

(a) preprocessing alone: the ``imagenet-s`` suite's decoder x resize pairs, grouped (each image
    decoded once per decoder) vs the per-unit loop (:func:`robustbench_sys.eval.loop.batches`,
    every unit decodes every image);
(b) a whole suite (default ``sysnoise``) evaluated end to end for one model on N images:
    grouped (each image decoded once per decoder and preprocessed once per image-side pipeline
    for every model-side condition) vs ``ROBUSTBENCH_SYS_SHARED_PREFIX=0`` (the per-unit loop),
    each in a fresh process with a fresh deploy cache and a fresh TorchInductor cache (neither side
    reuses the other's exports or compilations); asserts the two stores' rows are identical.

    python benchmarks/bench_prefix.py [--part a|b|ab] [--images 100] [--suite-images 100]
        [--model mobilenet_v2] [--suite sysnoise] [--workers N] [--check 16] [--no-speed]

(a): every pair available here, on the first N images of the shared ImageNet sample, with the
evaluator's batch size and preprocessing workers.  The two loops run interleaved (per-unit,
grouped, per-unit, grouped ...; best of ``--repeats``), then the inputs of the first ``--check``
images are compared bit for bit (same inputs in the same batches give the same rows: the scoring
is shared code).  Prints the wall times and the ratio.  (b): prints each side's wall time of
``evaluate`` (and of its whole process), the ratio and ``os.getloadavg()`` before / after each
side (the machine may be shared: a busy machine slows either side).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys import zoo  # noqa: E402
from robustbench_sys.data import load_dataset  # noqa: E402
from robustbench_sys.eval import prefix  # noqa: E402
from robustbench_sys.eval.loop import batches, preprocess_workers  # noqa: E402
from robustbench_sys.eval.prefix import MAX_GROUP, group_batches  # noqa: E402
from robustbench_sys.pipeline import Pipeline  # noqa: E402
from robustbench_sys.suites import get_suite  # noqa: E402


def _pipelines(model: str) -> tuple[list[Pipeline], list[str]]:
    ref = Pipeline.from_card(zoo.get_card(model))
    pipes, missing = [], []
    for cond in get_suite("imagenet-s").conditions:
        p = ref.replace(**cond.overrides)
        reason = p.check_available()
        (missing if reason else pipes).append(cond.name if reason else p)
    return pipes, missing


def _groups(pipes: list[Pipeline], batch_size: int) -> list[list[Pipeline]]:
    """As :func:`robustbench_sys.eval.prefix.plan_groups` cuts one model's image-side units: all
    decoders together, at most MAX_GROUP pipelines and the input buffer budget."""
    per = max(1, min(MAX_GROUP, prefix.buffer_budget() // prefix.buffer_bytes(pipes[0], batch_size)))
    return [pipes[k:k + per] for k in range(0, len(pipes), per)]


def per_unit(pipes, samples, bs, workers, digest=None):
    n = 0
    for u, p in enumerate(pipes):
        for batch in batches(samples, p, bs, workers):
            for i, x, _ in batch:
                n += 1
                if digest is not None:
                    digest[(u, i)] = hashlib.sha1(x.tobytes()).hexdigest() if x is not None else None
    return n


def grouped(pipes, samples, bs, workers, digest=None):
    n, offset = 0, {id(p): u for u, p in enumerate(pipes)}
    for group in _groups(pipes, bs):
        for k, batch in group_batches(group, [samples] * len(group), bs, workers, samples):
            for i, x, _ in batch:
                n += 1
                if digest is not None:
                    u = offset[id(group[k])]
                    digest[(u, i)] = hashlib.sha1(x.tobytes()).hexdigest() if x is not None else None
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="ab", help="a: imagenet-s preprocessing; b: a whole suite end to end")
    ap.add_argument("--images", type=int, default=100, help="(a) images")
    ap.add_argument("--suite-images", type=int, default=100, help="(b) images (the issue asks for 500)")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--suite", default="sysnoise", help="(b) the suite")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="preprocessing processes (default: one per core)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--check", type=int, default=16, help="(a) images whose inputs are compared bit for bit")
    ap.add_argument("--no-speed", action="store_true", help="(b) no deploy-speed timing (eval --no-speed)")
    ap.add_argument("--side", choices=["grouped", "per-unit"], help=argparse.SUPPRESS)   # (b): one side, in a child
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        _suite_side(a)
        return
    if "a" in a.part:
        part_a(a)
    if "b" in a.part:
        part_b(a)


def part_a(a) -> None:
    workers = preprocess_workers() if a.workers is None else a.workers
    samples = list(load_dataset(a.data).limit(a.images).samples)
    pipes, missing = _pipelines(a.model)
    decs = sorted({p.decoder for p in pipes})
    print(f"imagenet-s preprocessing for {a.model}: {len(pipes)} pairs available here ({len(decs)} decoders: "
          f"{', '.join(d.split('/')[1] for d in decs)}; {len(missing)} unavailable), {len(samples)} images, "
          f"batch {a.batch_size}, {workers} workers")
    best = {"per-unit": float("inf"), "grouped": float("inf")}
    load0 = os.getloadavg()
    for _ in range(a.repeats):
        for name, fn in (("per-unit", per_unit), ("grouped", grouped)):
            t = time.perf_counter()
            n = fn(pipes, samples, a.batch_size, workers)
            best[name] = min(best[name], time.perf_counter() - t)
            assert n == len(pipes) * len(samples), (name, n)
    cells = len(pipes) * len(samples)
    print(f"  load (os.getloadavg) before {', '.join(f'{x:.2f}' for x in load0)}, "
          f"after {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, s in best.items():
        print(f"  {name:9s} {s:8.2f} s   {cells / s:8.1f} image-conditions/s")
    print(f"  ratio     x{best['per-unit'] / best['grouped']:.2f}  (per-unit / grouped wall time; goal >= 5)")
    _stage_bound(pipes, samples[:20])
    check = samples[:a.check]
    d1: dict = {}
    d2: dict = {}
    per_unit(pipes, check, a.batch_size, workers, d1)
    grouped(pipes, check, a.batch_size, workers, d2)
    same = d1 == d2 and len(d1) == len(pipes) * len(check)
    print(f"  inputs identical bit for bit on {len(check)} images x {len(pipes)} pairs: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


def _stage_bound(pipes, samples) -> None:
    """The ratio the stage costs allow, measured in this process on ``samples``: per unit every
    pair decodes and resizes; shared at best each decoder decodes once and each distinct (decoded
    array, later stages) is computed once (what the grouped loop does)."""
    dec_s: dict[str, float] = {}
    after_s: list[float] = []
    distinct = 0.0
    after = prefix.after_decoder(pipes)
    for s in samples:
        data = s.path.read_bytes()
        arrays = {}
        for d in dict.fromkeys(p.decoder for p in pipes):
            t = time.perf_counter()
            arrays[d] = next(p for p in pipes if p.decoder == d).decode(data)
            dec_s[d] = dec_s.get(d, 0.0) + time.perf_counter() - t
        canon = {d: next(e for e in arrays if prefix.same_array(arrays[e], arrays[d])) for d in arrays}
        seen = set()
        for k, p in enumerate(pipes):
            t = time.perf_counter()
            p.to_input(arrays[p.decoder].copy(), p.image_rng(data))
            dt = time.perf_counter() - t
            after_s.append(dt)
            if (canon[p.decoder], after[k]) not in seen:
                seen.add((canon[p.decoder], after[k]))
                distinct += dt
    per_unit = sum(dec_s[p.decoder] for p in pipes) + sum(after_s)
    decode_once = sum(dec_s.values()) + sum(after_s)
    shared = sum(dec_s.values()) + distinct
    n = len(samples)
    decs = ", ".join(f"{d.split('/')[1]} {1e3 * v / n:.1f}" for d, v in dec_s.items())
    print(f"  stage costs on {n} images (one process, ms/image): decode {decs}; "
          f"stages after the decoder {1e3 * sum(after_s) / n:.1f} for all pairs, {1e3 * distinct / n:.1f} for the "
          f"distinct decoded arrays")
    print(f"  bound from them: x{per_unit / decode_once:.2f} decoding once per decoder, x{per_unit / shared:.2f} "
          "also sharing equal decodings (the grouped loop does both)")


# ---------------------------------------------------------------------- (b) a whole suite
def _suite_side(a) -> None:
    """In a child process: evaluate the suite with grouping on or off (set by the parent's
    environment); prints a JSON line with the wall time of ``evaluate``."""
    from robustbench_sys.eval.api import evaluate

    t = time.perf_counter()
    df = evaluate(a.model, [a.suite], a.data, a.out, limit=a.suite_images, batch_size=a.batch_size,
                  workers=a.workers, progress=False, speed=not a.no_speed)
    wall = time.perf_counter() - t
    print(json.dumps({"wall": wall, "units": len(df), "skipped": len(df.attrs["skipped"])}))


def _fresh_cache(tmp: Path) -> Path:
    """A cache folder that shares the real one's weights, data sets and isolated venvs but has no
    ``deploy`` folder (no side reuses the other's exported / quantised models)."""
    real = Path(os.environ.get("ROBUSTBENCH_SYS_CACHE") or Path.home() / ".cache" / "robustbench-sys")
    cache = tmp / "cache"
    cache.mkdir()
    for entry in real.iterdir() if real.is_dir() else []:
        if entry.name != "deploy":
            (cache / entry.name).symlink_to(entry)
    return cache


def part_b(a) -> None:
    import numpy as np

    from robustbench_sys.results.store import ResultsStore

    tmp = Path(tempfile.mkdtemp(prefix="rbs-bench-prefix-"))
    print(f"\n{a.suite} suite end to end for {a.model}: {a.suite_images} images of {a.data}, batch {a.batch_size}, "
          f"workers {'default' if a.workers is None else a.workers}, speed timing {'off' if a.no_speed else 'on'}; "
          f"{os.cpu_count()} CPUs, torch threads default", flush=True)
    res, stores = {}, {}
    for side in ("per-unit", "grouped"):
        root = tmp / side
        root.mkdir()
        env = {**os.environ, "ROBUSTBENCH_SYS_SHARED_PREFIX": "1" if side == "grouped" else "0",
               "ROBUSTBENCH_SYS_CACHE": str(_fresh_cache(root)), "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor")}
        cmd = [sys.executable, __file__, "--side", side, "--out", str(root / "out"), "--model", a.model,
               "--suite", a.suite, "--data", a.data, "--suite-images", str(a.suite_images),
               "--batch-size", str(a.batch_size)] + (["--workers", str(a.workers)] if a.workers is not None else []) \
            + (["--no-speed"] if a.no_speed else [])
        load0 = os.getloadavg()
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        total = time.perf_counter() - t
        load1 = os.getloadavg()
        if p.returncode != 0:
            print(p.stderr[-3000:])
            sys.exit(f"{side}: the run failed (rc {p.returncode})")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        res[side] = r
        stores[side] = root / "out"
        print(f"  {side:9s} evaluate {r['wall']:8.1f} s  (process {total:7.1f} s)  {r['units']} units, "
              f"{r['skipped']} skipped;  load before {', '.join(f'{x:.2f}' for x in load0)}, "
              f"after {', '.join(f'{x:.2f}' for x in load1)}", flush=True)
    ratio = res["per-unit"]["wall"] / res["grouped"]["wall"]
    print(f"  ratio     x{ratio:.2f}  (per-unit / grouped evaluate wall time)")
    rows = {k: ResultsStore(v).per_image().sort_values(["unit_id", "file"]).reset_index(drop=True)
            for k, v in stores.items()}
    a_, b_ = rows["per-unit"], rows["grouped"]
    same = len(a_) == len(b_) > 0 and all(a_[c].tolist() == b_[c].tolist() for c in
                                          ("unit_id", "file", "condition", "pred", "correct", "correct5", "status"))
    same = same and all(np.array_equal(np.stack(a_[c].to_numpy()), np.stack(b_[c].to_numpy()))
                        for c in ("top5", "top5_prob"))
    differ = []
    if not same and len(a_) == len(b_):
        for cond, g in a_.groupby("condition"):
            h = b_.loc[g.index]
            if not (g.pred.tolist() == h.pred.tolist() and np.array_equal(np.stack(g.top5_prob.to_numpy()),
                                                                          np.stack(h.top5_prob.to_numpy()))):
                differ.append(cond)
    print(f"  rows identical bit for bit ({len(a_)} rows, {a_.unit_id.nunique()} units): "
          f"{'yes' if same else 'NO ' + ', '.join(differ)}")
    assert same, f"grouped rows differ from the per-unit rows: {differ or 'row sets differ'}"


if __name__ == "__main__":
    main()
