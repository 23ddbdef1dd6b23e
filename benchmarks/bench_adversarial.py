"""Overhead of our attack path (registry + NormalizedModel + scoped RNG + checks) over
plain torchattacks (``set_normalization_used``) on the same model, images and seed.

Runs both side by side, interleaved, and prints median times and the ratio
(goal: within 5%).  Uses the MNIST LeNet-5 (``python -m zoo.mnist fetch``) and, when its
weights are cached, torchvision MobileNetV2 on the shared ImageNet sample.

    .venv/bin/python benchmarks/bench_adversarial.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import noises
from noises.adversarial import NormalizedModel


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(label, raw, mean, std, x, y, eps, steps, repeats):
    import torchattacks

    wrapped = NormalizedModel(raw, mean, std)
    pgd = noises.get("adversarial/pgd-linf")
    rel = 0.25

    def ours():
        return pgd(wrapped, x, y, eps=eps, steps=steps, rel_stepsize=rel, seed=0).adv

    def plain():
        atk = torchattacks.PGD(raw, eps=eps, alpha=rel * eps, steps=steps, random_start=True)
        atk.set_normalization_used(mean=list(mean), std=list(std))
        torch.manual_seed(0)
        # torchattacks 3.5.1: with set_normalization_used, inputs and outputs are *normalised*
        return atk.inverse_normalize(atk(atk.normalize(x), y))

    a, b = ours(), plain()  # warm-up, and the two paths must agree
    with torch.no_grad():
        same_pred = bool(torch.equal(wrapped(a).argmax(1), wrapped(b).argmax(1)))
    diff = (a - b).abs()
    same = f"{same_pred} (pixels differing by >1e-5: {int((diff > 1e-5).sum())} of {diff.numel()})"
    t_ours, t_plain = [], []
    for i in range(repeats):
        order = (ours, plain) if i % 2 == 0 else (plain, ours)
        for f in order:
            (t_ours if f is ours else t_plain).append(_time(f))
    mo, mp = statistics.median(t_ours), statistics.median(t_plain)
    print(f"{label}: PGD-Linf {steps} steps, {len(x)} images | plain torchattacks {mp * 1000:.1f} ms | "
          f"ours {mo * 1000:.1f} ms | ratio ours/plain {mo / mp:.3f} | same predictions: {same}")
    return mo / mp


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.repeats} repeats, median")

    from zoo import mnist

    try:
        x, y = mnist.load_mnist_test(200)
        for kind in mnist.KINDS:
            bench(f"mnist lenet5 {kind}", mnist.load_lenet5(kind), mnist.MEAN, mnist.STD, x, y, 0.3, 40, args.repeats)
    except mnist.MnistAssetsMissing as e:
        print(f"mnist: skipped ({e})")

    try:
        import csv
        from pathlib import Path

        from PIL import Image
        from torchvision.transforms import v2 as T

        import zoo

        root = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
        rows = list(csv.DictReader(open(root / "labels.csv")))[:8]
        tf = T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224), T.ToImage(),
                        T.ToDtype(torch.float32, scale=True)])
        xi = torch.stack([tf(Image.open(root / r["file"]).convert("RGB")) for r in rows])
        yi = torch.tensor([int(r["class_index"]) for r in rows])
        card = zoo.get_card("mobilenet_v2")
        bench("imagenet mobilenet_v2", zoo.load_model("mobilenet_v2"), card.preprocess.mean, card.preprocess.std,
              xi, yi, 4 / 255, 3, max(3, args.repeats // 2))
    except Exception as e:  # missing sample / weights: say so, keep the MNIST figures
        print(f"imagenet: skipped ({type(e).__name__}: {e})")


if __name__ == "__main__":
    main()
