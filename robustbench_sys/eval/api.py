"""The typed entry point: :func:`evaluate`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

import zoo
from robustbench_sys.alloc import tune_allocator
from robustbench_sys.data import Dataset, load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.eval.attack import write_worst_case
from robustbench_sys.eval.deploy import Calibration
from robustbench_sys.eval.plan import check_benchmark, check_preprocessed, plan_units
from robustbench_sys.eval.runner import Runner, run_local
from robustbench_sys.paths import default_results_dir
from robustbench_sys.suites import resolve

Model = str | os.PathLike | zoo.ModelCard
Data = str | os.PathLike | Dataset


def evaluate(models: Model | Sequence[Model], suites: str | Sequence[str] = ("clean",),
             data: Data = "foolbox-demo", out: str | os.PathLike | None = None, *, limit: int | None = None,
             batch_size: int = 32, workers: int | None = None, progress: bool = True,
             calibration: Data = "foolbox-demo", scheduler: Any = None) -> pd.DataFrame:
    """Evaluate models against noise suites; results are appended to the parquet store at ``out``.

    Args:
        models: zoo card names (``robustbench-sys zoo list``), ``.toml`` card paths or
            :class:`zoo.ModelCard` objects.
        suites: suite names (``robustbench-sys suites list``) or ``.toml`` suite paths; ``clean``
            (the model's own pipeline) is always included as the reference.
        data: an image folder (ImageNet wnid sub-folders, or a flat folder with ``labels.csv``),
            a :class:`Dataset`, or ``"foolbox-demo"``.
        out: results root (default ``$ROBUSTBENCH_SYS_RESULTS`` or ``~/.local/share/robustbench-sys/results``).
        limit: evaluate only the first ``limit`` images (sorted by file name).
        batch_size: images per forward pass (and per stored parquet part).
        workers: preprocessing processes (forked, in lockstep with the model); default one per core,
            at most 16; 0 = in this process.
        calibration: images for post-training quantisation (precision suite), disjoint from ``data``.
        scheduler: None runs every unit in this process; ``"local:N"`` starts a Dask
            LocalCluster of N worker processes on 127.0.0.1; ``"tcp://host:8786"`` (or a
            ``distributed.Client``) uses a running Dask cluster, whose workers must see ``out``
            and the data at the same paths (:mod:`robustbench_sys.eval.executors`).

    Returns:
        One summary row per (model, condition) evaluated or found finished, as a DataFrame;
        ``attrs["skipped"]`` lists the conditions not run, each with its reason.

    Re-running the same call resumes: finished units are read back, interrupted ones continue.
    Diagnostics (skipped conditions and images) go to the ``robustbench_sys`` logger.
    """
    tune_allocator()
    model_list = [models] if isinstance(models, (str, os.PathLike, zoo.ModelCard)) else list(models)
    suite_list = [suites] if isinstance(suites, str) else list(suites)
    full = data if isinstance(data, Dataset) else load_dataset(data)
    dataset = full.limit(limit)
    if len(dataset) == 0:
        raise UserError(f"--data {data}: no images found")
    conditions = resolve(suite_list)
    runner = Runner(out or default_results_dir(), batch_size=batch_size, workers=workers, progress=progress)
    cards = []
    for m in model_list:
        try:
            cards.append(m if isinstance(m, zoo.ModelCard) else zoo.get_card(m))
        except zoo.UnknownModel as e:
            raise UserError(f"--model: {e}") from None
    for card in cards:
        check_benchmark(card, full)
        check_preprocessed(card, full, data)
    calib = Calibration(calibration, dataset, batch_size)
    plans = []
    for card in cards:
        try:
            _, sha = zoo.fetch_weights(card)
        except zoo.WeightsUnavailable as e:
            raise UserError(f"--model {card.name}: weights not available here: {e}") from None
        units, skips = plan_units(card, sha, conditions, dataset)
        for s in skips:
            runner.skip(s)
        plans.append(units)    # the reference first: every other summary pairs with it
    if scheduler is None:
        finished = [run_local(runner, units, calib) for units in plans]
    else:
        from robustbench_sys.eval.executors import run_dask

        finished = run_dask(runner, plans, scheduler, calibration=calibration, batch_size=batch_size)
    summaries = []
    for units in finished:
        write_worst_case(runner.store, units)   # WCAR over each suite's attacks
        keys = {(u.id, u.condition.name) for u in units}
        s = runner.store.summaries()
        summaries.append(s[[k in keys for k in zip(s.unit_id, s.condition)]] if len(s) else s)
    out_df = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    out_df.attrs["skipped"] = runner.skipped
    out_df.attrs["out"] = str(runner.store.root)
    return out_df
