"""Dashboard / leaderboard timing on a large results store (1 million per-image rows).

Builds a store in the results-store layout (``units/``, ``per_image/<unit>/part-*.parquet``,
``summaries/``) with synthetic predictions: MODELS x CONDITIONS units of IMAGES images each
(default 20 x 50 x 1000 = 1,000,000 per-image rows, 1000 summary rows over 4 families), then
times, side by side in one run:

- reading the summaries (``ResultsStore.summaries``) and ``leaderboard.build`` on them,
- rendering the dashboard's Leaderboard page with streamlit's AppTest, cold (empty cache) and
  warm (cache hit, keyed by the store's file mtimes), and the heatmap / scatter pages,
- for scale: reading every per-image row (``ResultsStore.per_image``), which the leaderboard never does.

    .venv/bin/python benchmarks/bench_dashboard.py [--models 20 --conditions 50 --images 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys.metrics.paired import Z95, wilson_interval  # noqa: E402
from robustbench_sys.results import leaderboard as L  # noqa: E402
from robustbench_sys.results.store import PER_IMAGE_SCHEMA, ResultsStore  # noqa: E402

FAMILIES = ("resize", "decoder", "color", "precision")


def build_store(root: Path, n_models: int, n_conds: int, n_images: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    store = ResultsStore(root)
    labels = rng.integers(0, 1000, n_images).astype(np.int32)
    files = [f"n{label:08d}/img_{i:06d}.JPEG" for i, label in enumerate(labels)]
    conds = ["clean"] + [f"{FAMILIES[k % len(FAMILIES)]}/opt{k:02d}" for k in range(n_conds - 1)]
    rows = 0
    for m in range(n_models):
        model = f"model_{m:02d}"
        skill = 0.55 + 0.3 * rng.random()
        ref_correct = rng.random(n_images) < skill
        ref_pred = np.where(ref_correct, labels, (labels + 1) % 1000).astype(np.int32)
        tags = json.dumps({"family": ["resnet", "vit", "mobilenet", "convnext"][m % 4], "params_m": 3 + 7 * m,
                           "training": ["standard", "augmix", "adversarial"][m % 3]}, sort_keys=True)
        for c in conds:
            unit = f"{m:04d}{abs(hash(c)) % 10**12:012d}"
            fam = "clean" if c == "clean" else c.split("/")[0]
            flip = np.zeros(n_images, bool) if c == "clean" else rng.random(n_images) < 0.08 * rng.random()
            pred = np.where(flip, (ref_pred + 7) % 1000, ref_pred).astype(np.int32)
            correct = pred == labels
            top5 = np.stack([pred, (pred + 1) % 1000, (pred + 2) % 1000, (pred + 3) % 1000, (pred + 4) % 1000], 1)
            prob = np.tile(np.array([0.6, 0.2, 0.1, 0.05, 0.05], np.float32), (n_images, 1))
            t = pa.table({
                "run_id": pa.array(["bench"] * n_images), "unit_id": pa.array([unit] * n_images),
                "model": pa.array([model] * n_images), "condition": pa.array([c] * n_images),
                "family": pa.array([fam] * n_images), "dataset": pa.array(["bench"] * n_images),
                "file": pa.array(files), "label": pa.array(labels), "pred": pa.array(pred),
                "top5": pa.array(list(top5), type=pa.list_(pa.int32())),
                "top5_prob": pa.array(list(prob), type=pa.list_(pa.float32())),
                "correct": pa.array(correct), "correct5": pa.array(np.isin(labels, top5)),
                "status": pa.array(["ok"] * n_images),
                "label_prob": pa.array(np.where(correct, 0.6, 0.01).astype(np.float32))}, schema=PER_IMAGE_SCHEMA)
            d = store.unit_dir(unit)
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, d / "part-000000000000.parquet")
            rows += n_images
            k = int(correct.sum())
            lo, hi = wilson_interval(k, n_images)
            dvec = ref_correct.astype(float) - correct
            delta, se = float(dvec.mean()), float(dvec.std(ddof=1) / math.sqrt(n_images))
            store.write_unit(unit, {"unit_id": unit, "model": model, "condition": c, "family": fam,
                                    "pipeline": {}, "dataset_root": str(root / "no-images"),
                                    "dataset_fingerprint": "benchfp", "n_images": n_images})
            store.write_summary(unit, {
                "unit_id": unit, "model": model, "condition": c, "family": fam, "suite": fam,
                "suite_version": 1, "dataset": "bench", "dataset_fingerprint": "benchfp",
                "n_images": n_images, "top1": k / n_images, "top1_ci_low": lo, "top1_ci_high": hi,
                "ref_top1": float(ref_correct.mean()), "delta_acc": delta,
                "delta_ci_low": delta - Z95 * se, "delta_ci_high": delta + Z95 * se, "mcnemar_p": 1.0,
                "flip_rate": float(flip.mean()), "pipeline": "{}", "pipeline_text": c, "tags": tags,
                "provenance": "{}", "run_ids": '["bench"]', "created_at": "2026-01-01T00:00:00+00:00"})
    return rows


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--conditions", type=int, default=50)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--keep", default=None, help="build the store here and keep it")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="rbs-bench-dashboard-"))
    try:
        t0 = time.perf_counter()
        if not (root / "summaries").is_dir():
            rows = build_store(root, a.models, a.conditions, a.images)
        else:
            rows = a.models * a.conditions * a.images
        print(f"store: {root}  {rows:,} per-image rows, {a.models * a.conditions} units "
              f"(built in {time.perf_counter() - t0:.1f} s)")

        t_sum, (df, _) = timed(lambda: L.read_summaries(root), 3)
        t_lb, lb = timed(lambda: L.build(df), 3)
        t_txt, _ = timed(lambda: L.render(lb, "table"), 3)
        print(f"read_summaries ({len(df)} rows)          {t_sum:7.3f} s   (the one summary reader)")
        print(f"leaderboard.build                       {t_lb:7.3f} s   ({len(lb.overall)} models ranked, "
              f"{len(lb.families)} families)")
        print(f"leaderboard.render (text)               {t_txt:7.3f} s")
        print(f"summaries + build (CLI path)            {t_sum + t_lb:7.3f} s   target < 2 s")

        from streamlit.testing.v1 import AppTest

        def page(name, at=None):
            at = at or AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
            at.session_state["results"] = str(root)
            at.session_state["page"] = name
            t = time.perf_counter()
            at.run()
            dt = time.perf_counter() - t
            assert not at.exception, [e.message for e in at.exception]
            assert not at.error, [e.value for e in at.error]
            return dt, at

        t_cold, at = page("Leaderboard")
        t_warm, _ = page("Leaderboard", at)
        t_heat, _ = page("ΔACC heatmap", at)
        t_scat, _ = page("Clean vs robust", at)
        print(f"Leaderboard page, cold (empty cache)    {t_cold:7.3f} s   target < 2 s")
        print(f"Leaderboard page, warm (cache hit)      {t_warm:7.3f} s")
        print(f"ΔACC heatmap page (warm summaries)      {t_heat:7.3f} s")
        print(f"Clean vs robust page (warm summaries)   {t_scat:7.3f} s")

        t_all, pi = timed(lambda: ResultsStore(root).per_image(), 1)
        print(f"for scale: read all per-image rows      {t_all:7.3f} s   ({len(pi):,} rows; "
              f"{t_all / max(t_sum + t_lb, 1e-9):.0f}x the leaderboard path)")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
