"""Results-store timing at scale (issue 15, item 2): 10,000 summaries and 100 million per-image rows.

Builds a synthetic store in the real layout with the store's own writers and schemas
(``units/<id>.json``, ``per_image/<id>/unit.parquet`` -- finished units, compacted --,
``summaries/<id>.<tag>.parquet``; then one read builds ``index/summaries.parquet``): MODELS x
CONDITIONS units of ROWS / UNITS images each, realistic values (a per-model skill, flips per
condition, random top-5 and softmax-like probabilities, ImageNet-style file names).  Then times,
each in a fresh process (cold: no in-process cache; the OS page cache is whatever it is):

- leaderboard: ``read_summaries`` + ``leaderboard.build``                      goal < 1 s
- one unit's drill-down: ``ResultsStore.read_unit_rows`` (and projected + filtered) goal < 0.5 s
- ``robustbench-sys results show --out ROOT``                                   goal < 2 s
- the dashboard's Leaderboard page through streamlit's AppTest                  goal < 2 s

side by side with what came before: the summaries read file by file (no table), one unit stored as
part files of 32 rows, and the row-by-row leaderboard build (tests/_leaderboard_reference.py, the
reference the vectorised build is tested against).  Prints file counts and bytes per row.

    .venv/bin/python benchmarks/bench_store.py [--rows 100000000] [--models 20] [--conditions 500]
                                               [--keep DIR] [--threads 2] [--ops leaderboard,dashboard]

Building 100 million rows takes minutes; to iterate, keep a store with the same 10,000 summaries and a
smaller per-image part (``--rows 1000000 --keep /tmp/rbs-1m``: 100 images per unit, built in about a
minute, reused by the next call) and time only some operations (``--ops``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustbench_sys.metrics.paired import Z95, wilson_interval  # noqa: E402
from robustbench_sys.results.store import PER_IMAGE_SCHEMA, ResultsStore  # noqa: E402

FAMILIES = ("resize", "decoder", "color", "precision", "backend", "graph")
ARCHS = ("resnet50", "vit_base_patch16_224", "mobilenet_v2", "convnext_tiny", "efficientnet_b0")


def _const(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value])).cast(pa.string())


def _unit_id(model: str, cond: str) -> str:
    return hashlib.sha1(f"{model}|{cond}|bench".encode()).hexdigest()[:16]


def build_store(root: Path, rows: int, n_models: int, n_conds: int, threads: int, seed: int = 0) -> dict:
    store = ResultsStore(root)
    n_units = n_models * n_conds
    n_images = max(1, rows // n_units)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 1000, n_images).astype(np.int32)
    files = pa.array([f"n{1440764 + 37 * int(lab):08d}/ILSVRC2012_val_{i + 1:08d}.JPEG"
                      for i, lab in enumerate(labels)])
    conds = ["clean"] + [f"{FAMILIES[k % len(FAMILIES)]}/option-{k:03d}" for k in range(n_conds - 1)]
    label_arr = pa.array(labels)
    offsets = pa.array(np.arange(0, 5 * n_images + 1, 5, dtype=np.int32))

    def one_unit(m: int, c: str, ref_correct: np.ndarray, ref_pred: np.ndarray, tags: str) -> None:
        r = np.random.default_rng((seed, m, conds.index(c)))
        model = f"model_{m:03d}"
        unit = _unit_id(model, c)
        fam = "clean" if c == "clean" else c.split("/")[0]
        flip = np.zeros(n_images, bool) if c == "clean" else r.random(n_images) < 0.12 * r.random()
        pred = np.where(flip, (ref_pred + 1 + r.integers(0, 999, n_images)) % 1000, ref_pred).astype(np.int32)
        correct = pred == labels
        top5 = np.empty((n_images, 5), np.int32)
        top5[:, 0] = pred
        top5[:, 1:] = (pred[:, None] + r.integers(1, 1000, (n_images, 4))) % 1000
        logits = np.sort(r.standard_normal((n_images, 5)).astype(np.float32) * 2, axis=1)[:, ::-1]
        prob = (np.exp(logits) / (np.exp(logits).sum(1, keepdims=True) * 1.25)).astype(np.float32)
        hit = top5 == labels[:, None]
        correct5 = hit.any(1)
        label_prob = np.where(correct5, prob[np.arange(n_images), hit.argmax(1)],
                              r.random(n_images).astype(np.float32) * prob[:, -1]).astype(np.float32)
        table = pa.table({
            "run_id": _const("20260101-000000-bench0", n_images), "unit_id": _const(unit, n_images),
            "model": _const(model, n_images), "condition": _const(c, n_images), "family": _const(fam, n_images),
            "dataset": _const("imagenet-val", n_images), "file": files, "label": label_arr, "pred": pa.array(pred),
            "top5": pa.ListArray.from_arrays(offsets, pa.array(top5.ravel())),
            "top5_prob": pa.ListArray.from_arrays(offsets, pa.array(prob.ravel())),
            "correct": pa.array(correct), "correct5": pa.array(correct5), "status": _const("ok", n_images),
            "label_prob": pa.array(label_prob)},
            schema=PER_IMAGE_SCHEMA)
        pipeline = {"decoder": "pil", "resize": c if fam == "resize" else "pil-bilinear", "size": 224,
                    "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "precision": "fp32"}
        store.write_unit(unit, {"unit_id": unit, "model": model, "condition": c, "family": fam, "pipeline": pipeline,
                                "dataset_root": str(root / "no-images"), "dataset_fingerprint": "benchfp",
                                "n_images": n_images})
        store.write_compacted(unit, table)
        k = int(correct.sum())
        lo, hi = wilson_interval(k, n_images)
        dvec = correct.astype(float) - ref_correct
        delta = float(dvec.mean())
        se = float(dvec.std(ddof=1) / math.sqrt(n_images)) if n_images > 1 else 0.0
        lost, gained = int((ref_correct & ~correct).sum()), int((~ref_correct & correct).sum())
        store.write_summary(unit, {
            "unit_id": unit, "run_id": "20260101-000000-bench0", "model": model, "arch": ARCHS[m % len(ARCHS)],
            "condition": c, "family": fam, "suite": fam, "suite_version": 1, "dataset": "imagenet-val",
            "dataset_fingerprint": "benchfp", "n_images": n_images, "n_errors": 0, "n_paired": n_images,
            "top1": k / n_images, "top1_ci_low": lo, "top1_ci_high": hi, "top5": float(correct5.mean()),
            "ref_top1": float(ref_correct.mean()), "delta_acc": delta, "delta_ci_low": delta - Z95 * se,
            "delta_ci_high": delta + Z95 * se, "mcnemar_p": 1.0 if c == "clean" else 0.01, "n_lost": lost,
            "n_gained": gained, "flip_rate": float(flip.mean()), "pipeline": json.dumps(pipeline, sort_keys=True),
            "pipeline_text": " -> ".join(f"{k}={v}" for k, v in pipeline.items() if k in ("decoder", "resize")),
            "reference_pipeline": "{}", "weights_sha256": hashlib.sha256(model.encode()).hexdigest(),
            "deploy_info": "{}", "tags": tags, "provenance": json.dumps({"torch": "2.x", "host": "bench"}),
            "run_ids": '["20260101-000000-bench0"]', "created_at": "2026-01-01T00:00:00+00:00"})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as ex:
        for m in range(n_models):
            skill = 0.55 + 0.3 * rng.random()
            ref_correct = rng.random(n_images) < skill
            ref_pred = np.where(ref_correct, labels, (labels + 1 + rng.integers(0, 998, n_images)) % 1000)
            tags = json.dumps({"family": ["resnet", "vit", "mobilenet", "convnext"][m % 4], "params_m": 3 + 7 * m,
                               "training": ["standard", "augmix", "adversarial"][m % 3]}, sort_keys=True)
            k = len(conds)
            list(ex.map(one_unit, [m] * k, conds, [ref_correct] * k, [ref_pred.astype(np.int32)] * k, [tags] * k))
            done = (m + 1) * n_conds
            print(f"  {done:,}/{n_units:,} units  ({done * n_images:,} rows, {time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return {"units": n_units, "images": n_images, "rows": n_units * n_images, "build_s": time.perf_counter() - t0}


def old_layout_unit(root: Path, src: ResultsStore, unit: str, batch: int = 32) -> float:
    """The same unit as it was stored before compaction (one part per batch of ``batch`` rows), and the
    seconds its read_unit_rows takes (in this process)."""
    import pyarrow.parquet as pq

    table = pq.read_table(src.root / "per_image" / unit / "unit.parquet")
    d = root / "per_image" / unit
    d.mkdir(parents=True)
    for i in range(0, table.num_rows, batch):
        pq.write_table(table.slice(i, batch), d / f"part-{i:012d}.parquet")
    return len(list(d.iterdir()))


# ---------------------------------------------------------------------- the timed operations (fresh process each)
def _op(name: str, root: str, arg: str) -> float:
    if name in ("leaderboard", "leaderboard-reference"):
        from robustbench_sys.results.store import read_summaries
        if name == "leaderboard":
            from robustbench_sys.results import leaderboard as L
        else:
            sys.path.insert(0, str(ROOT / "tests"))
            import _leaderboard_reference as L
        t = time.perf_counter()
        df, _ = read_summaries(root)
        L.build(df)
    elif name == "summaries":
        from robustbench_sys.results.store import read_summaries
        t = time.perf_counter()
        read_summaries(root)
    elif name == "summaries-no-table":
        from robustbench_sys.results.store import read_summaries
        t = time.perf_counter()
        read_summaries(root, index=False)
    elif name == "drill-down":
        t = time.perf_counter()
        ResultsStore(root).read_unit_rows(arg)
    elif name == "drill-down-projected":
        import pyarrow.compute as pc
        t = time.perf_counter()
        ResultsStore(root).read_unit_rows(arg, columns=["file", "label", "pred", "correct"],
                                          filter=pc.field("correct") == False)  # noqa: E712
    elif name == "results-show":
        import contextlib
        import io

        from robustbench_sys.cli import main
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["results", "show", "--out", root]) == 0
    elif name == "dashboard":
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
        at.session_state["results"] = root
        at.session_state["page"] = "Leaderboard"
        t = time.perf_counter()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert not at.error, [e.value for e in at.error]
    else:
        raise SystemExit(f"unknown op {name}")
    return time.perf_counter() - t


def cold(name: str, root: Path, arg: str = "", repeat: int = 3) -> tuple[float, float]:
    """(best in-process seconds after imports, best whole-process wall seconds) over ``repeat`` fresh processes."""
    best_in, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--op", name, str(root), arg], capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - t
        if out.returncode:
            raise SystemExit(f"{name}: failed\n{out.stderr[-3000:]}")
        best_in, best_wall = min(best_in, float(out.stdout.strip().splitlines()[-1])), min(best_wall, wall)
    return best_in, best_wall


def _count(root: Path) -> tuple[dict[str, int], int]:
    counts, per_image_bytes = {}, 0
    for sub in ("units", "per_image", "summaries", "index"):
        n = 0
        for dirpath, _, names in os.walk(root / sub):
            n += len(names)
            if sub == "per_image":
                per_image_bytes += sum(os.path.getsize(os.path.join(dirpath, f)) for f in names)
        counts[sub] = n
    return counts, per_image_bytes


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--op":
        print(_op(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else ""))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000_000, help="per-image rows in all (default 100 million)")
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--conditions", type=int, default=500, help="per model (models x conditions = summaries)")
    ap.add_argument("--threads", type=int, default=2, help="writer threads while building")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per timing (the best is shown)")
    ap.add_argument("--keep", default=None, help="build the store here and keep it (reused when it exists)")
    ap.add_argument("--ops", default=None, help="time only these operations (comma-separated op names: "
                    "leaderboard, leaderboard-reference, summaries, summaries-no-table, drill-down, "
                    "drill-down-projected, results-show, dashboard); default all")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="rbs-bench-store-"))
    old = Path(tempfile.mkdtemp(prefix="rbs-bench-store-old-"))
    try:
        if not (root / "summaries").is_dir():
            info = build_store(root, a.rows, a.models, a.conditions, a.threads)
            print(f"built {info['rows']:,} rows ({info['units']:,} units x {info['images']:,} images) "
                  f"in {info['build_s']:.0f} s")
        t = time.perf_counter()
        from robustbench_sys.results.store import read_summaries
        df, _ = read_summaries(root)          # the first read after the writes builds the summaries table
        first = time.perf_counter() - t
        n_rows = int(df.n_images.sum())
        counts, nbytes = _count(root)
        print(f"store {root}: {n_rows:,} per-image rows, {len(df):,} summaries")
        print("files: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
              + f"; per-image files per finished unit: {counts['per_image'] / max(1, len(df)):.2f}")
        print(f"per-image bytes: {nbytes / 2**30:.2f} GiB = {nbytes / max(1, n_rows):.1f} bytes/row")
        print(f"first read_summaries after the writes (reads {len(df):,} files, builds the table): {first:.2f} s")
        unit = df.unit_id.iloc[len(df) // 2]
        n_parts = old_layout_unit(old, ResultsStore(root), unit)
        print(f"\nload averages (1, 5, 15 min) before timing: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
              f"on {os.cpu_count()} cores")
        print(f"{'operation (fresh process each)':<48}{'in-process':>11}{'process':>9}   goal")
        rows = [("leaderboard cold (read_summaries + build)", "leaderboard", root, "", "< 1 s"),
                ("  before: row-by-row build (reference)", "leaderboard-reference", root, "", ""),
                ("  of which read_summaries (table + newer files)", "summaries", root, "", ""),
                ("  before: summaries file by file (no table)", "summaries-no-table", root, "", ""),
                ("drill-down: one unit's rows (1 file)", "drill-down", root, unit, "< 0.5 s"),
                ("  projected 4 columns + filter correct==False", "drill-down-projected", root, unit, ""),
                (f"  before: the same unit as {n_parts} parts", "drill-down", old, unit, ""),
                ("results show --out", "results-show", root, "", "< 2 s"),
                ("dashboard Leaderboard page cold (AppTest)", "dashboard", root, "", "< 2 s")]
        ops = set(a.ops.split(",")) if a.ops else None
        for label, op, r, arg, goal in rows:
            if ops is not None and op not in ops:
                continue
            t_in, t_wall = cold(op, r, arg, a.repeat if op != "dashboard" else min(a.repeat, 2))
            print(f"{label:<48}{t_in:>10.3f}s{t_wall:>8.2f}s   {goal}", flush=True)
        print(f"load averages after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        shutil.rmtree(old, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
