"""ImageNet-P sequences: one batched op over a sequence's frames vs the same frames one at a time,
side by side in one run, per perturbation (a real image from the shared sample, Resize(256),
frames cropped to 224, float32, one thread by default).  Prints sequences/s of both and the ratio.

    .venv/bin/python benchmarks/bench_imagenet_p.py [--repeat 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys.noises.natural import imagenet_p as ip  # noqa: E402


def per_frame(x: torch.Tensor, name: str) -> torch.Tensor:
    """The same frames as ``sequence_frames`` for the geometric perturbations, one ``warp`` call per frame."""
    p = ip.PERTURBATIONS[name]
    H, W = x.shape[-2:]
    out = []
    for k in range(p.frames):
        if name == "translate":
            inv = ip.affine_inverse(translate=(k - 20, 0))
        elif name == "rotate":
            inv = ip.affine_inverse(angle=k - 15)
        elif name == "scale":
            inv = ip.affine_inverse(scale=(k * 2.5 + 40) / 100)
        else:
            inv = ip.tilt_inverse(k - 15, H, W)
        out.append(ip.warp(x, inv[None], "nearest" if name == "translate" else "bilinear", 224)[0])
    return torch.stack(out).clamp(0, 1)


def timed(fn, repeat: int) -> float:
    fn()   # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sample = ROOT.parent / "shared" / "data" / "imagenet-sample" / "n01440764_tench.JPEG"
    im = Image.open(sample).convert("RGB")
    s = 256 / min(im.size)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255).to(a.device)
    print(f"{'perturbation':14s} {'batched seq/s':>14s} {'per-frame seq/s':>16s} {'ratio':>7s}  max |diff|")
    for name in ("translate", "rotate", "scale", "tilt"):
        batched = ip.sequence_frames(x, name, crop=224)
        diff = float((batched - per_frame(x, name)).abs().max())
        tb = timed(lambda n=name: ip.sequence_frames(x, n, crop=224), a.repeat)
        tf = timed(lambda n=name: per_frame(x, n), a.repeat)
        print(f"{name:14s} {1 / tb:14.2f} {1 / tf:16.2f} {tf / tb:7.2f}  {diff:.1e}")


if __name__ == "__main__":
    main()
