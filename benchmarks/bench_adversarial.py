"""Overhead of our attack path over plain torchattacks (``set_normalization_used``) on the
same model, images and seed, at two levels:

1. the attack call: registry + NormalizedModel + scoped RNG + eps check vs ``torchattacks.PGD``;
2. the evaluator's runner path (``Runner.run_unit`` of an attack unit: decode + preprocess each
   batch, attack, score clean and adversarial images, perturbation norms, model checks on the
   first batch, one parquet part per batch) vs a plain loop over the same batches (tensors
   already in memory: torchattacks, then the clean and adversarial predictions).  The ratio is
   printed against the plain loop alone and against the plain loop plus the preprocessing time
   (the same work as ours).

Runs both side by side, interleaved, and prints median times and the ratio
(goal: within 5%).  Uses the MNIST LeNet-5 pair (``python -m robustbench_sys.zoo.mnist fetch``) and, when its
weights are cached, torchvision MobileNetV2 on the shared ImageNet sample.

    .venv/bin/python benchmarks/bench_adversarial.py [--repeats 5] [--threads 1] [--part attack|runner|all]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustbench_sys import noises
from robustbench_sys.noises.adversarial import NormalizedModel


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


def bench_runner(label, card_name, data, suite, limit, batch_size, repeats):
    """Runner path (level 2 in the module doc) vs a plain torchattacks loop; returns the ratio."""
    import tempfile
    import uuid

    import numpy as np
    import torchattacks

    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.attack import Attack
    from robustbench_sys.eval.loop import run_unit
    from robustbench_sys.eval.plan import plan_units
    from robustbench_sys.results.store import ResultsStore
    from robustbench_sys.suites import get_suite

    card = zoo.get_card(card_name)
    model, (_, sha) = zoo.load_model(card), zoo.fetch_weights(card)
    ds = load_dataset(data).limit(limit)
    cond = next(c for c in get_suite(suite).conditions if c.attack)
    a = cond.attack
    assert a["name"] == "pgd-linf", "the plain loop below is torchattacks.PGD"
    p = a["params"]
    mean, std = list(card.preprocess.mean), list(card.preprocess.std)
    tmp = tempfile.mkdtemp(prefix="bench-adv-")

    def plan():
        store = ResultsStore(f"{tmp}/{uuid.uuid4().hex}")
        return store, plan_units(card, sha, [cond], ds)[0][0]

    _, unit = plan()
    pipe = unit.pipeline
    samples = list(ds.samples)

    def preprocess():
        chunks = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
        return [(torch.from_numpy(np.stack([pipe.preprocess(s.path.read_bytes()) for s in c])),
                 torch.tensor([s.label for s in c])) for c in chunks]

    batches = preprocess()

    def ours():
        store, u = plan()
        run_unit(store, u, Attack(u, model, store), run_id="bench", batch_size=batch_size, workers=0, progress=False)

    def plain():
        for xb, yb in batches:
            atk = torchattacks.PGD(model, eps=a["eps"], alpha=p["rel_stepsize"] * a["eps"], steps=int(p["steps"]),
                                   random_start=bool(p["random_start"]))
            atk.set_normalization_used(mean=mean, std=std)
            torch.manual_seed(0)
            adv = atk.inverse_normalize(atk(atk.normalize(xb), yb))
            with torch.inference_mode():
                model(pipe.normalise(xb)).argmax(1)
                torch.softmax(model(pipe.normalise(adv)).float(), 1).topk(5, dim=1)

    ours(), plain()   # warm-up
    t_ours, t_plain, t_pre = [], [], []
    for i in range(repeats):
        for f in ((ours, plain) if i % 2 == 0 else (plain, ours)):
            (t_ours if f is ours else t_plain).append(_time(f))
        t_pre.append(_time(preprocess))
    mo, mp, mpre = statistics.median(t_ours), statistics.median(t_plain), statistics.median(t_pre)
    print(f"{label}: runner path, {cond.name} ({int(p['steps'])} steps), {len(samples)} images, batch {batch_size} | "
          f"plain loop {mp * 1000:.0f} ms (+ preprocessing {mpre * 1000:.0f} ms) | runner {mo * 1000:.0f} ms | "
          f"ratio runner/plain {mo / mp:.3f}, runner/(plain + preprocessing) {mo / (mp + mpre):.3f}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return mo / (mp + mpre)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=["attack", "runner", "all"], default="all",
                    help="attack call only, evaluator runner path only, or both")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.repeats} repeats, median")

    if args.part != "runner":
        bench_attack_calls(args)
    if args.part != "attack":
        bench_runner_paths(args)


def bench_attack_calls(args):
    from robustbench_sys.zoo import mnist

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

        from robustbench_sys import zoo

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


def bench_runner_paths(args):
    print("\n-- evaluator runner path (Runner.run_unit of an attack unit) vs a plain torchattacks loop --")
    try:
        for name in ("mnist_lenet5_standard", "mnist_lenet5_advtrained"):
            bench_runner(name, name, "mnist-test", "mnist-pgd-linf", 200, 100, args.repeats)
    except Exception as e:
        print(f"mnist runner: skipped ({type(e).__name__}: {e})")
    try:
        from pathlib import Path

        root = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
        bench_runner("imagenet mobilenet_v2", "mobilenet_v2", root, "adv-pgd-linf-4", 4, 4, max(3, args.repeats // 2))
    except Exception as e:
        print(f"imagenet runner: skipped ({type(e).__name__}: {e})")


if __name__ == "__main__":
    main()
