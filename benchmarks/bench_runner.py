"""Evaluation-loop throughput: images/s with preprocessing in the main process vs in
DataLoader workers, and the share of time spent in preprocessing vs the model.
Prints ratios measured side by side in one run (never asserts on time).

    .venv/bin/python benchmarks/bench_runner.py [--n 64] [--model mobilenet_v2]
"""

import argparse
import tempfile
import time

import numpy as np
import torch

import robustbench_sys
import zoo
from robustbench_sys.data import load_dataset
from robustbench_sys.pipeline import Pipeline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--data", default="foolbox-demo")
    a = ap.parse_args()
    ds = load_dataset(a.data)
    samples = (list(ds.samples) * (a.n // len(ds.samples) + 1))[: a.n]
    card = zoo.get_card(a.model)
    pipe = Pipeline.from_card(card)
    model = zoo.load_model(card)

    t = time.perf_counter()
    xs = [pipe.preprocess(s.path.read_bytes()) for s in samples]
    t_pre = time.perf_counter() - t
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(xs), 32):
            model(pipe.normalise(torch.from_numpy(np.stack(xs[i:i + 32]))))
    t_model = time.perf_counter() - t
    print(f"preprocess {len(xs) / t_pre:8.1f} img/s   model {len(xs) / t_model:8.1f} img/s   "
          f"preprocess share {t_pre / (t_pre + t_model):.2f}")

    rates = {}
    for workers in (0, 1):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            robustbench_sys.evaluate(card, ["clean"], ds, out, progress=False, workers=workers)
            rates[workers] = len(ds) / (time.perf_counter() - t)
    print(f"evaluate() end to end on {len(ds)} images: workers=0 {rates[0]:.1f} img/s, workers=1 {rates[1]:.1f} img/s, "
          f"ratio {rates[1] / rates[0]:.2f}x  (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
