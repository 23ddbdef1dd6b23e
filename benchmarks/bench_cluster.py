"""A preprocessing-bound suite on ``scheduler="local:2"`` (a Dask LocalCluster of 2 worker
processes) vs one process (default lockstep preprocessing workers), side by side in one run,
with the per-image rows compared.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_cluster.py [--images 64] [--suite resize]
                                                                  [--shard-images N]

``--shard-images`` sets ``ROBUSTBENCH_SYS_SHARD_IMAGES`` for the Dask run (images per task;
default: the executor's own choice, shards only where a wave has fewer units than workers).

Prints both wall times (each a fresh store, model load included), the speed-up and whether
the rows are identical.  The machine may be shared: the 1-minute load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--suite", default="resize")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample"))
    ap.add_argument("--shard-images", type=int, default=None, help="ROBUSTBENCH_SYS_SHARD_IMAGES of the Dask run")
    a = ap.parse_args()
    if a.shard_images is not None:
        os.environ["ROBUSTBENCH_SYS_SHARD_IMAGES"] = str(a.shard_images)
    import robustbench_sys
    from robustbench_sys.results.store import ResultsStore

    def rows(out):
        r = ResultsStore(out).per_image()
        return r.sort_values(["condition", "file"]).reset_index(drop=True)

    cores = len(os.sched_getaffinity(0))
    print(f"{a.model} x {a.suite} x {a.images} images of {a.data}, batch {a.batch_size}, {cores} cores, "
          f"load1 {os.getloadavg()[0]:.2f}, shard images {os.environ.get('ROBUSTBENCH_SYS_SHARD_IMAGES', 'auto')}")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in (("one process", {}), ("local:2", {"scheduler": "local:2"})):
            t = time.perf_counter()
            df = robustbench_sys.evaluate(a.model, [a.suite], a.data, Path(tmp) / name.replace(" ", "-"),
                                          limit=a.images, batch_size=a.batch_size, progress=False, speed=False, **kw)
            times[name] = time.perf_counter() - t
            print(f"  {name:<12} {times[name]:7.1f} s  ({len(df)} summaries)  load1 {os.getloadavg()[0]:.2f}",
                  flush=True)
        x, y = rows(Path(tmp) / "one-process"), rows(Path(tmp) / "local:2")
        same = (len(x) == len(y) and all(x[c].tolist() == y[c].tolist()
                                         for c in ("unit_id", "condition", "file", "pred", "correct")))
        gap = float(np.abs(np.stack(x.top5_prob.to_numpy()) - np.stack(y.top5_prob.to_numpy())).max()) if same else None
    # probabilities differ in the last float bits when the model ran at other thread counts (one
    # process: every core; a local:2 worker: half); at equal counts they are bit-identical
    # (tests/test_cluster_shards.py)
    print(f"speed-up local:2 vs one process: {times['one process'] / times['local:2']:.2f}x (goal >= 1.6x); "
          f"rows identical (unit, file, pred, correct): {same} ({len(x)} rows), top-5 probabilities max "
          f"|diff| {gap if gap is None else format(gap, '.1e')}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
