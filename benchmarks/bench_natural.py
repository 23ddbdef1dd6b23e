"""Throughput of robustbench_sys.noises.natural vs the reference imagecorruptions 1.1.2, side by side in one run.

Same real images for both (shared ImageNet sample, PIL Resize(256) + CenterCrop(224)); one
severity (default 3).  Ours: ``corrupt_batch`` on one (N, 3, 224, 224) float32 batch (after
one warm-up call); reference: ``imagecorruptions.corrupt`` per image in its own venv (via
robustbench_sys.noises.natural.oracle), on --ref-images images (glass_blur on 1: about a second per image).
Both single-threaded by default (the reference is single-threaded numpy; this machine is
shared).  Prints images/s per corruption and the ratio; "overall" is the ratio of the time to
apply every corruption once to one image (sum over corruptions of 1 / (images/s)), and the
geometric mean of the per-corruption ratios.

    .venv/bin/python benchmarks/bench_natural.py [--images 16] [--severity 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys.noises.natural import ALL_CORRUPTIONS, corrupt_batch, oracle  # noqa: E402


def load_crops(n: int) -> np.ndarray:
    from PIL import Image
    from torchvision import transforms as T

    d = Path(os.environ.get("ROBUSTBENCH_SYS_SAMPLE", ROOT.parent / "shared" / "data" / "imagenet-sample"))
    if not (d / "labels.csv").is_file():
        sys.exit(f"bench_natural: shared ImageNet sample not found at {d} (set ROBUSTBENCH_SYS_SAMPLE)")
    with open(d / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    tf = T.Compose([T.Resize(256), T.CenterCrop(224)])
    return np.stack([np.asarray(tf(Image.open(d / r["file"]).convert("RGB"))) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16, help="batch size for ours")
    ap.add_argument("--ref-images", type=int, default=4, help="images per corruption for the reference")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls of ours per corruption (best kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reason = oracle.unavailable()
    if reason:
        sys.exit(f"bench_natural: {reason}")

    crops = load_crops(max(args.images, args.ref_images))
    jobs = [{"name": n, "severity": args.severity, "image": i, "seed": i}
            for n in ALL_CORRUPTIONS for i in range(1 if n == "glass_blur" else args.ref_images)]
    _, secs = oracle.run(crops[:args.ref_images], jobs)
    ref_time: dict[str, list[float]] = {}
    for j, s in zip(jobs, secs):
        ref_time.setdefault(j["name"], []).append(s)

    dev = torch.device(args.device)
    x = torch.as_tensor(crops[:args.images]).permute(0, 3, 1, 2).float().div(255).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print(f"device {dev}, torch threads {args.threads}, severity {args.severity}, ours batch {args.images}, "
          f"reference images {args.ref_images} (glass_blur 1)")
    print(f"{'corruption':<18} {'ours img/s':>11} {'ref img/s':>10} {'ratio':>8}")
    t_ours_sum = t_ref_sum = 0.0
    logs = []
    for n in ALL_CORRUPTIONS:
        g = torch.Generator(device=dev).manual_seed(0)
        corrupt_batch(x, n, args.severity, g)  # warm-up (caches, kernels)
        best = math.inf
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            corrupt_batch(x, n, args.severity, g)
            sync()
            best = min(best, time.perf_counter() - t)
        ours = args.images / best
        ref = len(ref_time[n]) / sum(ref_time[n])
        t_ours_sum += 1 / ours
        t_ref_sum += 1 / ref
        logs.append(math.log(ours / ref))
        print(f"{n:<18} {ours:>11.1f} {ref:>10.1f} {ours / ref:>7.1f}x")
    print(f"{'overall':<18} {1 / t_ours_sum:>11.2f} {1 / t_ref_sum:>10.2f} {t_ref_sum / t_ours_sum:>7.1f}x"
          f"   (time for all {len(ALL_CORRUPTIONS)} corruptions on one image)")
    print(f"geometric mean of per-corruption ratios: {math.exp(sum(logs) / len(logs)):.1f}x")


if __name__ == "__main__":
    main()
