"""Latency of every deploy noise (backend/* and precision/*) relative to eager fp32, one run.

    .venv/bin/python benchmarks/bench_backend.py                   # mobilenet_v2, batch 1 and 16
    .venv/bin/python benchmarks/bench_backend.py --only 'backend/*' --repeats 5

Timings are interleaved (each repeat visits every deployment in turn) so that load from other
processes hits all of them alike; the ratio is median(noise) / median(eager fp32) at the same
batch size.  Agreement with eager on the evaluation images is printed alongside (max |logit
diff|, top-1 flips).  Images: the shared ImageNet sample; the first 16 are evaluated, the next
32 calibrate the int8 noises (disjoint).  Prints ratios only; asserts nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys import noises  # noqa: E402
from robustbench_sys.noises.system.deploy import DeployContext  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


def load_images(folder: Path, n_eval: int, n_calib: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    import csv

    from PIL import Image
    from torchvision import transforms as T

    labels = folder / "labels.csv"
    if not labels.is_file():
        sys.exit(f"--data {folder}: no labels.csv; pass the shared ImageNet sample folder")
    with open(labels, newline="") as f:
        files = [folder / r["file"] for r in csv.DictReader(f)]
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224),
                    T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def load(paths):
        return torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])

    x = load(files[:n_eval])
    calib = files[n_eval:n_eval + n_calib]
    return x, [load(calib[i:i + 8]) for i in range(0, len(calib), 8)]


def timed(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2", help="zoo model name (default mobilenet_v2)")
    ap.add_argument("--data", type=Path, default=SAMPLE, help="folder with labels.csv + JPEGs")
    ap.add_argument("--only", default="*", help="glob over backend/* and precision/* keys")
    ap.add_argument("--batches", default="1,16", help="batch sizes (comma-separated)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per deployment and batch size")
    ap.add_argument("--budget-s", type=float, default=40.0,
                    help="stop repeating a deployment once it used this many seconds (min 2 repeats)")
    args = ap.parse_args(argv)

    from robustbench_sys import zoo

    model = zoo.load_model(args.model)
    batches = [int(b) for b in args.batches.split(",")]
    x, calib = load_images(args.data, max(batches), 32)
    cache = tempfile.TemporaryDirectory(prefix="rbs-bench-deploy-")
    ctx = DeployContext(example_input=x, calibration=lambda: calib, cache_dir=cache.name,
                        model_key=args.model, calibration_id="shared-sample[16:48]")
    keys = ["backend/eager"] + [k for k in noises.list_noises("backend/*") + noises.list_noises("precision/*")
                                if k != "backend/eager" and fnmatch.fnmatch(k, args.only)]
    print(f"model {args.model}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"images {x.shape[0]} eval / {sum(len(c) for c in calib)} calib", flush=True)

    deployed, setup_s, notes = {}, {}, {}
    for k in keys:
        why = noises.get(k).available()
        if why:
            notes[k] = f"unavailable: {why}"
            continue
        t = time.perf_counter()
        try:
            run = noises.get(k)(model, ctx)
            for b in batches:  # warm-up (compiles for each batch size where the backend must)
                run(x[:b])
        except Exception as e:
            notes[k] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            continue
        setup_s[k] = time.perf_counter() - t
        deployed[k] = run
        print(f"  ready {k:28s} setup {setup_s[k]:6.1f}s", flush=True)

    ref = deployed["backend/eager"](x)
    times = {(k, b): [] for k in deployed for b in batches}
    spent = dict.fromkeys(deployed, 0.0)
    for rep in range(args.repeats):
        for k, run in deployed.items():
            if rep >= 2 and spent[k] > args.budget_s:
                continue
            for b in batches:
                dt = timed(run, x[:b])
                times[k, b].append(dt)
                spent[k] += dt

    head = f"{'deployment':28s} " + " ".join(f"{'ms/img b' + str(b):>12s} {'x eager':>8s}" for b in batches)
    print("\n" + head + f" {'max|dlogit|':>12s} {'top1 flips':>10s} {'setup s':>8s}  info")
    for k, run in deployed.items():
        cols = []
        for b in batches:
            med = statistics.median(times[k, b])
            base = statistics.median(times["backend/eager", b])
            cols.append(f"{1000 * med / b:12.2f} {med / base:8.2f}")
        out = run(x)
        diff = float((out - ref).abs().max())
        flips = int((out.argmax(1) != ref.argmax(1)).sum())
        info = run.info
        extra = {k2: info[k2] for k2 in ("inference_precision", "compile_s", "providers") if k2 in info}
        print(f"{k:28s} " + " ".join(cols) + f" {diff:12.2e} {flips:>7d}/{len(out)} {setup_s[k]:8.1f}  {extra}")
    for k, note in notes.items():
        print(f"{k:28s} {note}")


if __name__ == "__main__":
    main()
