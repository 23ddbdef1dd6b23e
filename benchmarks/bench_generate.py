"""Generator throughput with 1 and 2 processes, side by side in one run.

    python benchmarks/bench_generate.py [--images 24] [--repeats 2] [--data DIR] [--kind imagenet-s|imagenet-c]

The same real JPEGs (the shared ImageNet sample by default) go through the same variants
(imagenet-s: decoders pil, opencv x resizes pil-bilinear, cv2-area, pil-lanczos; imagenet-c:
gaussian_noise, motion_blur, contrast at severity 3, lossless) into a fresh output folder per
round; rounds alternate 1 and 2 processes and the best round of each counts, so background load
hits both alike.  Printed: output images/s (including process start-up, PNG encoding and the
manifest) and the 2-process / 1-process ratio.  On a machine shared with other jobs the ratio
stays below 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys import generate as gen  # noqa: E402
from robustbench_sys.data import load_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kind", choices=["imagenet-s", "imagenet-c"], default="imagenet-s")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample"))
    a = ap.parse_args()

    src = load_dataset(a.data).limit(a.images)
    base = gen.base_pipeline()
    if a.kind == "imagenet-s":
        variants = gen.imagenet_s_variants(base, ["pil", "opencv"], ["pil-bilinear", "cv2-area", "pil-lanczos"])
    else:
        variants = gen.imagenet_c_variants(base, ["gaussian_noise", "motion_blur", "contrast"], [3])
    n = len(src) * len(variants)
    best = {1: float("inf"), 2: float("inf")}
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        for r in range(a.repeats):
            for workers in (1, 2):
                out = Path(tmp) / f"r{r}-w{workers}"
                t = time.perf_counter()
                rep = gen.generate(src, variants, out, kind=a.kind, workers=workers, progress=False)
                best[workers] = min(best[workers], time.perf_counter() - t)
                assert rep.written == n and not rep.errors, rep.errors[:3]
                shutil.rmtree(out)
    print(f"generate {a.kind}: {len(src)} images x {len(variants)} variants = {n} outputs "
          f"({os.cpu_count()} cpus, best of {a.repeats} rounds)")
    for w in (1, 2):
        print(f"  {w} process{'es' if w > 1 else '  '} {n / best[w]:8.1f} img/s   {best[w]:6.2f} s")
    print(f"  ratio 2 / 1 processes: x{best[1] / best[2]:.2f}")


if __name__ == "__main__":
    main()
