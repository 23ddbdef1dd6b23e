"""Decode and resize throughput of every registered implementation, side by side in one run.

    python benchmarks/bench_preprocess.py [--images 48] [--repeats 3] [--data DIR]

Each implementation runs over the same real JPEGs (the shared ImageNet sample by default);
rounds are interleaved (every implementation once per round) and the best round counts,
so background load hits all of them alike.  Printed: images/s and the ratio to
``decoder/pil`` (decode) or ``resize/pil-bilinear`` (resize; to the pipeline's target
size).  Isolated implementations (``decoder/pillow9``, ``resize/pillow-simd-*``) include
the worker round trip (array to .npy, pipe, back): the cost a user of them pays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys import noises  # noqa: E402
from robustbench_sys.pipeline import Pipeline  # noqa: E402


def _rounds(fns: dict, run, repeats: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            run(fn)
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def _report(title: str, best: dict, n: int, ref: str) -> None:
    print(f"\n{title} ({n} images, best of rounds; ratio = throughput / {ref})")
    for k in sorted(best, key=best.get):
        print(f"  {k:34s} {n / best[k]:9.1f} img/s   x{best[ref] / best[k]:5.2f}")


def _isolated_compute(images, sizes, pil_seconds: float, repeats: int) -> None:
    """The isolated resizes once more, timing only the library call inside the worker."""
    from robustbench_sys.noises.system import isolated

    rows = {}
    for name in isolated.ENV_SPECS:
        if isolated.unavailable(name):
            continue
        w = isolated.worker(name)
        for interp, flt in isolated._FILTERS.items():
            best = float("inf")
            for _ in range(repeats):
                total = 0.0
                for im, s in zip(images, sizes):
                    w.resize(im, s, flt)
                    total += w.last_seconds
                best = min(best, total)
            rows[f"{name}-{interp} (in worker)"] = best
    if rows:
        print("\nisolated resizes, library call only (no IPC); ratio = throughput / resize/pil-bilinear")
        for k in sorted(rows, key=rows.get):
            print(f"  {k:34s} {len(images) / rows[k]:9.1f} img/s   x{pil_seconds / rows[k]:5.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("ROBUSTBENCH_SYS_SAMPLE",
                                                     ROOT.parent / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    files = sorted(Path(args.data).glob("*.JPEG"))[: args.images]
    if not files:
        raise SystemExit(f"no *.JPEG files in {args.data} (--data DIR)")
    blobs = [f.read_bytes() for f in files]

    skipped = []
    decoders = {}
    for k in noises.list_noises("decoder/*"):
        reason = noises.get(k).available()
        (skipped.append(f"{k}: {reason}") if reason else decoders.__setitem__(k, noises.get(k)))
    for fn in decoders.values():  # warm up (worker start, library load)
        fn(blobs[0])
    best = _rounds(decoders, lambda fn: [fn(b) for b in blobs], args.repeats)
    _report("decode", best, len(blobs), "decoder/pil")

    pipe = Pipeline()
    images = [noises.get("decoder/pil")(b) for b in blobs]
    sizes = [pipe.target_size(im.shape[1], im.shape[0]) for im in images]
    resizes = {}
    for k in noises.list_noises("resize/*"):
        reason = noises.get(k).available()
        (skipped.append(f"{k}: {reason}") if reason else resizes.__setitem__(k, noises.get(k)))
    for fn in resizes.values():
        fn(images[0], sizes[0])
    best = _rounds(resizes, lambda fn: [fn(im, s) for im, s in zip(images, sizes)], args.repeats)
    _report("resize to the pipeline target size", best, len(images), "resize/pil-bilinear")
    _isolated_compute(images, sizes, best["resize/pil-bilinear"], args.repeats)
    if skipped:
        print("\nnot available here:\n  " + "\n  ".join(skipped))


if __name__ == "__main__":
    main()
