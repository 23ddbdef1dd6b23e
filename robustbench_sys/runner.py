"""The evaluation loop: (model x condition) units over a data set, resumable, batched.

One loop serves every suite: a condition only changes the :class:`Pipeline`, so the same
code decodes, preprocesses, runs the model and writes per-image rows for all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import noises
import zoo
from robustbench_sys import adversarial_runner, metrics
from robustbench_sys.data import Dataset, Sample, load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.provenance import environment
from robustbench_sys.store import ResultsStore, StoreError
from robustbench_sys.suites import Condition, resolve

TOPK = 5


@dataclass(frozen=True)
class Unit:
    """One (model, condition, data set) evaluation."""

    id: str
    card: zoo.ModelCard
    weights_sha256: str
    condition: Condition
    pipeline: Pipeline
    dataset: Dataset


def unit_id(card_name: str, weights_sha: str, dataset: Dataset, pipeline: Pipeline, attack: dict | None = None) -> str:
    key = json.dumps([card_name, weights_sha, dataset.fingerprint, pipeline.spec()] + ([attack] if attack else []),
                     sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- image loading
class _Images:
    """torch-style dataset: sample -> (index, CHW float32 or None, error or "")."""

    def __init__(self, samples: list[Sample], pipeline: Pipeline):
        self.samples, self.pipeline = samples, pipeline

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            return i, self.pipeline.preprocess(s.path.read_bytes()), ""
        except Exception as e:  # unreadable / truncated / unsupported: reported and skipped
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return i, None, f"{type(e).__name__}: {msg}"[:300]


def _collate(items):
    return items


def _batches(samples: list[Sample], pipeline: Pipeline, batch_size: int, workers: int):
    ds = _Images(samples, pipeline)
    if workers <= 0:
        for start in range(0, len(ds), batch_size):
            yield [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                          shuffle=False, persistent_workers=False, prefetch_factor=4)


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# ---------------------------------------------------------------------- the run
class Runner:
    def __init__(self, out: str | os.PathLike, *, batch_size: int = 32, workers: int | None = None,
                 progress: bool = True, log=None):
        self.store = ResultsStore(out)
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers
        self.progress = progress
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.skipped: list[dict] = []
        self.deploy_info: dict[str, dict] = {}

    # -------------------------------------------------------------- planning
    def plan(self, card: zoo.ModelCard, weights_sha: str, conditions: list[Condition],
             dataset: Dataset) -> list[Unit]:
        ref = reference_pipeline(card, dataset)
        units = []
        for cond in conditions:
            if dataset.preprocessed_size is not None and {"decoder", "resize"} & set(cond.overrides):
                self._skip(card.name, cond, "not applicable: --data is a generated variant, already decoded, "
                                            "resized and cropped")
                continue
            try:
                pipe = ref.replace(**cond.overrides)
                reason = pipe.check_available()
                if cond.attack and not reason:
                    reason = adversarial_runner.unavailable(cond.attack)
            except (ValueError, KeyError) as e:
                raise UserError(f"suite {cond.suite}, condition {cond.name}: {e}") from None
            if not cond.is_clean and pipe == ref and not cond.attack:
                self._skip(card.name, cond, "same as the model's reference pipeline (ΔACC 0 by definition)")
                continue
            if reason:
                self._skip(card.name, cond, f"unavailable here: {reason}")
                continue
            units.append(Unit(unit_id(card.name, weights_sha, dataset, pipe, cond.attack or None), card, weights_sha,
                              cond, pipe, dataset))
        return units

    def _skip(self, model: str, cond: Condition, reason: str) -> None:
        self.skipped.append({"model": model, "condition": cond.name, "reason": reason})
        self.log(f"  skip {model} / {cond.name}: {reason}")

    # -------------------------------------------------------------- execution
    def pending(self, unit: Unit) -> bool:
        """True while some image of the unit has no stored row yet."""
        done = self.store.done_files(unit.id)
        return any(s.file not in done for s in unit.dataset.samples)

    def run_unit(self, unit: Unit, model) -> None:
        if unit.condition.attack:   # attack, then score the adversarial images
            return adversarial_runner.run_unit(self, unit, model)
        store = self.store
        done = store.done_files(unit.id)
        todo = [s for s in unit.dataset.samples if s.file not in done]
        if not todo:
            return
        spec = self._unit_spec(unit)
        if unit.id in self.deploy_info:
            spec["deploy_info"] = self.deploy_info[unit.id]
        if not (store.root / "units" / f"{unit.id}.json").is_file() or "deploy_info" in spec:
            store.write_unit(unit.id, spec)
        import torch

        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(unit.dataset), initial=len(done), unit="img", dynamic_ncols=True,
                       desc=f"{unit.card.name} {unit.condition.name}", file=sys.stderr, leave=False)
        try:
            for batch in _batches(todo, unit.pipeline, self.batch_size, self.workers):
                ok = [(i, x) for i, x, err in batch if x is not None]
                probs = None
                if ok:
                    x = unit.pipeline.normalise(torch.from_numpy(np.stack([x for _, x in ok])))
                    with torch.inference_mode():
                        probs = torch.softmax(model(x).float(), dim=1)
                    top_p, top_i = probs.topk(TOPK, dim=1)
                rows, j = [], 0
                for i, x, err in batch:
                    s = todo[i]
                    if x is None:
                        self.log(f"  skip image {s.path}: {err}")
                        rows.append(self._row(unit, s, -1, [], [], "error: " + err))
                        continue
                    ti, tp = top_i[j].tolist(), top_p[j].tolist()
                    j += 1
                    rows.append(self._row(unit, s, ti[0], ti, tp, "ok"))
                store.append_batch(unit.id, pd.DataFrame(rows))
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()

    def _row(self, unit: Unit, s: Sample, pred: int, top5: list, top5_prob: list, status: str) -> dict:
        return {"run_id": self.run_id, "unit_id": unit.id, "model": unit.card.name,
                "condition": unit.condition.name, "family": unit.condition.family,
                "dataset": unit.dataset.name, "file": s.file, "label": s.label, "pred": pred,
                "top5": top5, "top5_prob": top5_prob, "correct": pred == s.label,
                "correct5": s.label in top5, "status": status}

    def _unit_spec(self, unit: Unit) -> dict:
        return {"unit_id": unit.id, "model": unit.card.name, "arch": unit.card.arch,
                "weights": unit.card.weights, "weights_sha256": unit.weights_sha256,
                "condition": unit.condition.name, "family": unit.condition.family,
                "suite": unit.condition.suite, "suite_version": unit.condition.suite_version,
                "pipeline": unit.pipeline.spec(), "pipeline_text": unit.pipeline.describe(),
                "dataset": unit.dataset.name, "dataset_root": str(unit.dataset.root),
                "dataset_fingerprint": unit.dataset.fingerprint, "n_images": len(unit.dataset)}

    # -------------------------------------------------------------- summaries
    def _deploy_info(self, unit: Unit) -> dict:
        if unit.id in self.deploy_info:
            return self.deploy_info[unit.id]
        try:   # deployed by an earlier, interrupted run: its unit spec kept the info
            return self.store.unit(unit.id).get("deploy_info", {})
        except StoreError:
            return {}

    def summarise(self, unit: Unit, ref: Unit) -> dict:
        rows = self.store.read_unit_rows(unit.id)
        base = self.store.read_unit_rows(ref.id)
        ok = rows[rows.status == "ok"]
        m = ok.merge(base[base.status == "ok"], on="file", suffixes=("", "_ref"))
        paired = metrics.paired_delta(m.correct_ref.to_numpy(), m.correct.to_numpy())
        n = len(ok)
        k1, k5 = int(ok.correct.sum()), int(ok.correct5.sum())
        lo, hi = metrics.wilson_interval(k1, n)
        env = environment()
        row = {
            "unit_id": unit.id, "run_id": self.run_id, "model": unit.card.name, "arch": unit.card.arch,
            "condition": unit.condition.name, "family": unit.condition.family,
            "suite": unit.condition.suite, "suite_version": unit.condition.suite_version,
            "dataset": unit.dataset.name, "dataset_fingerprint": unit.dataset.fingerprint,
            "n_images": n, "n_errors": int((rows.status != "ok").sum()), "n_paired": paired.n,
            "top1": k1 / n if n else float("nan"), "top1_ci_low": lo, "top1_ci_high": hi,
            "top5": k5 / n if n else float("nan"),
            "ref_top1": paired.ref_acc, "delta_acc": paired.delta,
            "delta_ci_low": paired.ci_low, "delta_ci_high": paired.ci_high,
            "mcnemar_p": paired.p_value, "n_lost": paired.b, "n_gained": paired.c,
            "flip_rate": metrics.flip_rate(m.pred_ref.to_numpy(), m.pred.to_numpy()),
            "pipeline": unit.pipeline.spec_json(), "pipeline_text": unit.pipeline.describe(),
            "reference_pipeline": ref.pipeline.spec_json(),
            "weights_sha256": unit.weights_sha256,
            "deploy_info": json.dumps(self._deploy_info(unit), sort_keys=True, default=str),
            "tags": json.dumps(unit.card.tags, sort_keys=True),
            "provenance": json.dumps({**env, "noise_versions": unit.pipeline.noise_versions()},
                                     sort_keys=True, default=str),
            "run_ids": json.dumps(sorted(set(rows.run_id))),
            "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        }
        if unit.condition.attack:
            row.update(adversarial_runner.summary_fields(self.store, unit, rows, base))
        return row


def evaluate(models, suites=("clean",), data="foolbox-demo", out=None, *, limit: int | None = None,
             batch_size: int = 32, workers: int | None = None, progress: bool = True,
             calibration="foolbox-demo", log=None, scheduler=None) -> pd.DataFrame:
    """Evaluate models against noise suites; results are appended to the parquet store at ``out``.

    Args:
        models: zoo card names (``robustbench-sys zoo list``) or ``.toml`` card paths.
        suites: suite names (``robustbench-sys suites list``) or ``.toml`` suite paths; ``clean``
            (the model's own pipeline) is always included as the reference.
        data: an image folder (ImageNet wnid sub-folders, or a flat folder with ``labels.csv``),
            a :class:`Dataset`, or ``"foolbox-demo"``.
        out: results root (default ``$ROBUSTBENCH_SYS_RESULTS`` or ``~/.local/share/robustbench-sys/results``).
        limit: evaluate only the first ``limit`` images (sorted by file name).
        calibration: images for post-training quantisation (precision suite), disjoint from ``data``.
        scheduler: None runs every unit in this process; ``"local:N"`` starts a Dask
            LocalCluster of N worker processes on 127.0.0.1; ``"tcp://host:8786"`` (or a
            ``distributed.Client``) uses a running Dask cluster, whose workers must see ``out``
            and the data at the same paths (:mod:`robustbench_sys.executors`).

    Returns:
        One summary row per (model, condition) evaluated or found finished, as a DataFrame.

    Re-running the same call resumes: finished units are read back, interrupted ones continue.
    """
    from robustbench_sys.paths import default_results_dir

    models = [models] if isinstance(models, (str, zoo.ModelCard)) else list(models)
    suites = [suites] if isinstance(suites, str) else list(suites)
    full = data if isinstance(data, Dataset) else load_dataset(data)
    dataset = full.limit(limit)
    if len(dataset) == 0:
        raise UserError(f"--data {data}: no images found")
    conditions = resolve(suites)
    runner = Runner(out or default_results_dir(), batch_size=batch_size, workers=workers,
                    progress=progress, log=log)
    cards = []
    for m in models:
        try:
            cards.append(m if isinstance(m, zoo.ModelCard) else zoo.get_card(m))
        except zoo.UnknownModel as e:
            raise UserError(f"--model: {e}") from None
    for card in cards:
        _check_benchmark(card, full)
        _check_preprocessed(card, full, data)
    calib = _Calibration(calibration, dataset, batch_size)
    plans = []
    for card in cards:
        try:
            _, sha = zoo.fetch_weights(card)
        except zoo.WeightsUnavailable as e:
            raise UserError(f"--model {card.name}: weights not available here: {e}") from None
        units = runner.plan(card, sha, conditions, dataset)
        ref = next(u for u in units if u.condition.is_clean)
        plans.append([ref] + [u for u in units if u is not ref])   # the reference is summarised first
    if scheduler is None:
        finished = [_run_local(runner, units, calib) for units in plans]
    else:
        from robustbench_sys import executors

        finished = executors.run_dask(runner, plans, scheduler, calibration=calibration, batch_size=batch_size)
    summaries = []
    for units in finished:
        adversarial_runner.write_worst_case(runner.store, units)   # WCAR over each suite's attacks
        keys = {(u.id, u.condition.name) for u in units}
        s = runner.store.summaries()
        summaries.append(s[[k in keys for k in zip(s.unit_id, s.condition)]] if len(s) else s)
    out_df = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    out_df.attrs["skipped"] = runner.skipped
    out_df.attrs["out"] = str(runner.store.root)
    return out_df


def run_pending(runner: Runner, unit: Unit, calib: "_Calibration", models: dict) -> str | None:
    """Deploy the model-side stages of one pending unit and run its loop.  ``models`` caches the
    loaded model (one card at a time).  Returns a skip reason (a graph change that does not apply
    to this model) or None."""
    model = models.get(unit.card.name)
    if model is None:
        models.clear()
        model = models[unit.card.name] = zoo.load_model(unit.card)
    try:
        deployed = _deploy(model, unit, calib)
    except noises.NotApplicable as e:
        return f"not applicable: {e}"
    runner.deploy_info[unit.id] = getattr(deployed, "info", {})
    runner.run_unit(unit, deployed)
    return None


def _run_local(runner: Runner, units: list[Unit], calib: "_Calibration") -> list[Unit]:
    """One model's units in this process, reference first; returns the units with a summary."""
    ref, models, finished = units[0], {}, []
    for unit in units:
        if not runner.store.has_summary(unit.id, unit.condition.name):
            if runner.pending(unit):
                reason = run_pending(runner, unit, calib, models)
                if reason:
                    runner._skip(unit.card.name, unit.condition, reason)
                    continue
            # Summarised as soon as the unit is complete, so a crash later in the run
            # (a native backend, an interrupt) never costs a finished unit its summary.
            runner.store.write_summary(unit.id, runner.summarise(unit, ref))
        finished.append(unit)
    return finished


def _check_benchmark(card: zoo.ModelCard, dataset: Dataset) -> None:
    """Refuse a model of another benchmark (an MNIST LeNet on ImageNet images, or the reverse)."""
    bench = "mnist" if dataset.name.split("[")[0] == "mnist-test" else None
    top = max((s.label for s in dataset.samples), default=-1)
    if (bench and card.benchmark != bench) or top >= card.num_classes:
        raise UserError(f"--model {card.name}: a {card.benchmark} model ({card.num_classes} classes) cannot be "
                        f"evaluated on --data {dataset.name} (labels up to {top}"
                        f"{', benchmark ' + bench if bench else ''}); pick a model of that benchmark "
                        "(robustbench-sys zoo list)")


def reference_pipeline(card: zoo.ModelCard, dataset: Dataset) -> Pipeline:
    """The model's own pipeline; for a generated variant (``dataset.preprocessed_size``) the
    images already are its input crop: decode with PIL, no resize, the card's mean / std."""
    ref = Pipeline.from_card(card)
    return ref if dataset.preprocessed_size is None else ref.replace(decoder="pil", resize="none")


def _check_preprocessed(card: zoo.ModelCard, dataset: Dataset, data) -> None:
    size = dataset.preprocessed_size
    if size is not None and size != card.preprocess.input_size:
        raise UserError(f"--model {card.name}: --data {data} holds {size}px crops (a generated variant) but "
                        f"the model takes {card.preprocess.input_size}px input; generate a variant for it with "
                        f"'robustbench-sys generate ... --model {card.name}'")


class _Calibration:
    """Calibration batches for post-training quantisation, from images disjoint from the
    evaluation set, preprocessed by the model's own reference pipeline."""

    def __init__(self, spec, evaluated: Dataset, batch_size: int, max_images: int = 64):
        self.spec, self.evaluated, self.batch_size, self.max_images = spec, evaluated, batch_size, max_images
        self._ds: Dataset | None = None

    def dataset(self) -> Dataset:
        if self._ds is None:
            ds = (self.spec if isinstance(self.spec, Dataset) else load_dataset(self.spec)).limit(self.max_images)
            overlap = {s.path.resolve() for s in ds.samples} & {s.path.resolve() for s in self.evaluated.samples}
            if overlap:
                raise UserError(f"--calibration {self.spec}: {len(overlap)} image(s) are also evaluated "
                                "(e.g. {}); give a disjoint calibration set".format(next(iter(overlap)).name))
            self._ds = ds
        return self._ds

    def batches(self, pipeline: Pipeline):
        import torch

        xs = [pipeline.preprocess(s.path.read_bytes()) for s in self.dataset().samples]
        return [pipeline.normalise(torch.from_numpy(np.stack(xs[i:i + self.batch_size])))
                for i in range(0, len(xs), self.batch_size)]


def _deploy(model, unit: Unit, calib: _Calibration):
    """Apply the model-side stages (graph change, then precision/backend) of a unit's pipeline."""
    pipe = unit.pipeline
    if pipe.graph:
        model = noises.get(pipe.graph, "graph")(model)
    if not pipe.deploy:
        return model
    import torch
    from noises.system.deploy import DeployContext

    ref = Pipeline.from_card(unit.card)
    s = pipe.input_size
    ctx = DeployContext(example_input=torch.zeros(2, 3, s, s), calibration=lambda: calib.batches(ref),
                        cache_dir=zoo.cache_dir() / "deploy", model_key=f"{unit.card.name}-{unit.weights_sha256[:12]}",
                        calibration_id=f"{calib.spec}:{calib.dataset().fingerprint}" if _needs_calibration(pipe.deploy) else "")
    return noises.get(pipe.deploy)(model, ctx)


def _needs_calibration(key: str) -> bool:
    return "int8" in key
