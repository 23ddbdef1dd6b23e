"""Shared-prefix preprocessing: the ``imagenet-s`` suite's decoder x resize pairs, grouped (each
image decoded once per decoder, :mod:`robustbench_sys.eval.prefix`) vs the per-unit loop
(:func:`robustbench_sys.eval.loop.batches`, every unit decodes every image), side by side in one run.

    python benchmarks/bench_prefix.py [--images 100] [--model mobilenet_v2] [--workers N] [--check 16]

Preprocessing alone (no model): every pair available here, on the first N images of the shared
ImageNet sample, with the evaluator's batch size and preprocessing workers.  The two loops run
interleaved (per-unit, grouped, per-unit, grouped ...; best of ``--repeats``), then the inputs
of the first ``--check`` images are compared bit for bit (same inputs in the same batches give
the same rows: the scoring is shared code).  Prints the wall times and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys import zoo  # noqa: E402
from robustbench_sys.data import load_dataset  # noqa: E402
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


def _groups(pipes: list[Pipeline]) -> list[list[Pipeline]]:
    by: dict[str, list[Pipeline]] = {}
    for p in pipes:
        by.setdefault(p.decoder, []).append(p)
    return [g[k:k + MAX_GROUP] for g in by.values() for k in range(0, len(g), MAX_GROUP)]


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
    for group in _groups(pipes):
        for k, batch in group_batches(group, [samples] * len(group), bs, workers, samples):
            for i, x, _ in batch:
                n += 1
                if digest is not None:
                    u = offset[id(group[k])]
                    digest[(u, i)] = hashlib.sha1(x.tobytes()).hexdigest() if x is not None else None
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="preprocessing processes (default: one per core)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--check", type=int, default=16, help="images whose inputs are compared bit for bit")
    a = ap.parse_args()
    workers = preprocess_workers() if a.workers is None else a.workers
    samples = list(load_dataset(a.data).limit(a.images).samples)
    pipes, missing = _pipelines(a.model)
    decs = sorted({p.decoder for p in pipes})
    print(f"imagenet-s preprocessing for {a.model}: {len(pipes)} pairs available here ({len(decs)} decoders: "
          f"{', '.join(d.split('/')[1] for d in decs)}; {len(missing)} unavailable), {len(samples)} images, "
          f"batch {a.batch_size}, {workers} workers")
    best = {"per-unit": float("inf"), "grouped": float("inf")}
    for _ in range(a.repeats):
        for name, fn in (("per-unit", per_unit), ("grouped", grouped)):
            t = time.perf_counter()
            n = fn(pipes, samples, a.batch_size, workers)
            best[name] = min(best[name], time.perf_counter() - t)
            assert n == len(pipes) * len(samples), (name, n)
    cells = len(pipes) * len(samples)
    for name, s in best.items():
        print(f"  {name:9s} {s:8.2f} s   {cells / s:8.1f} image-conditions/s")
    print(f"  ratio     x{best['per-unit'] / best['grouped']:.2f}  (per-unit / grouped wall time; goal >= 5)")
    check = samples[:a.check]
    d1: dict = {}
    d2: dict = {}
    per_unit(pipes, check, a.batch_size, workers, d1)
    grouped(pipes, check, a.batch_size, workers, d2)
    same = d1 == d2 and len(d1) == len(pipes) * len(check)
    print(f"  inputs identical bit for bit on {len(check)} images x {len(pipes)} pairs: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
