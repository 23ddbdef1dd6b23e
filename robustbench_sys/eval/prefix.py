"""Shared-prefix execution: one model's image-side units that share a decoder run as one group,
each image read and decoded once for all of them.

A unit whose conditions differ from its group's only after the decoder (colour, resize,
corruption: the ``imagenet-s`` decoder x resize pairs, the resize / colour / natural families)
gets the decoded image (a copy, so no stage can see another's changes), runs its own downstream
stages (:meth:`~robustbench_sys.pipeline.Pipeline.to_input`, with the same per-image corruption
seed), and is scored in exactly the batches the per-unit loop (:func:`~robustbench_sys.eval.loop.run_unit`)
would give it: its own pending images, ``batch_size`` at a time, in data-set order.  So its
rows are those of the per-unit loop bit for bit, one parquet part per batch, and an interrupted
group resumes each unit from its own stored images.

Memory stays bounded: the images stream in shards of ``batch_size``; a shard's decoded images
and, per unit, at most one batch of preprocessed inputs are held at a time (groups of at most
:data:`MAX_GROUP` units).  Preprocessing runs in forked worker processes in lockstep with the
model, as in :func:`~robustbench_sys.eval.loop.batches` (a worker decodes an image once and
writes every unit's input into a shared buffer).

Units with a model-side stage (graph, precision, backend, device noise), an attack, or a speed
measurement, and a decoder that computes on the GPU with workers, stay on the per-unit loop;
``ROBUSTBENCH_SYS_SHARED_PREFIX=0`` turns grouping off.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import numpy as np

from robustbench_sys import noises
from robustbench_sys.data import Sample
from robustbench_sys.devices import reference_flags
from robustbench_sys.eval.deploy import Calibration, deploy
from robustbench_sys.eval.loop import (
    Classify,
    error_text,
    in_process_workers,
    init_forked_worker,
    score_batch,
    serial_opencv,
    start_unit,
)
from robustbench_sys.eval.plan import Unit
from robustbench_sys.eval.speed import wants_speed
from robustbench_sys.pipeline import Pipeline

log = logging.getLogger("robustbench_sys.eval")

#: the most units in one group (bounds the shared buffer: units x batch_size inputs)
MAX_GROUP = 12

#: one item of a batch: (index into the unit's pending samples, CHW float32 or None, error)
Item = tuple[int, "np.ndarray | None", str]


def enabled() -> bool:
    return os.environ.get("ROBUSTBENCH_SYS_SHARED_PREFIX", "1") != "0"


def group_key(unit: Unit) -> tuple | None:
    """What a unit shares with the others of its group (model, data, device, decoder, input size);
    None for a unit the per-unit loop runs."""
    p = unit.pipeline
    if unit.condition.attack or p.graph or p.deploy or wants_speed(unit):
        return None
    return (unit.card.name, unit.weights_sha256, unit.dataset.fingerprint, unit.device, p.decoder, p.input_size)


def plan_groups(runner, units: list[Unit]) -> list[list[Unit]]:
    """The groups (two units or more, plan order kept) among the pending units of one model."""
    if not enabled() or (runner.workers > 0 and "fork" not in mp.get_all_start_methods()):
        return []
    by_key: dict[tuple, list[Unit]] = {}
    for u in units:
        key = group_key(u)
        if key is not None and runner.pending(u):
            by_key.setdefault(key, []).append(u)
    groups = []
    for members in by_key.values():
        for k in range(0, len(members), MAX_GROUP):
            chunk = members[k:k + MAX_GROUP]
            if len(chunk) > 1:
                groups.append(chunk)
    return groups


def run_group(runner, group: list[Unit], calib: Calibration, models: dict) -> dict[str, str]:
    """Run the pending images of a group's units; returns ``{unit id: skip reason}`` for units
    that do not apply.  Holds every unit's store lock (taken in id order) throughout."""
    store = runner.store
    reasons: dict[str, str] = {}
    with ExitStack() as locks:
        for u in sorted(group, key=lambda u: u.id):
            locks.enter_context(store.unit_lock(u.id))
        live = [u for u in group if runner.pending(u)]   # another process may have finished some
        if not live:
            return reasons
        model = runner.model(live[0], models)
        jobs: list[tuple[Unit, Classify, list[Sample]]] = []
        for u in live:
            try:
                deployed = deploy(model, u, calib, cache=models)
            except noises.NotApplicable as e:
                reasons[u.id] = f"not applicable: {e}"
                continue
            runner.deploy_info[u.id] = getattr(deployed, "info", {})
            strategy = Classify(u, deployed)
            todo = start_unit(store, u, strategy, runner.deploy_info[u.id])
            if todo:
                jobs.append((u, strategy, todo))
        if not jobs:
            return reasons
        log.info("  %d units share %s: each image decoded once", len(jobs), jobs[0][0].pipeline.decoder)
        workers = min(in_process_workers(u.pipeline, runner.workers) for u, _, _ in jobs)
        bar = None
        if runner.progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(t) for _, _, t in jobs), unit="img", dynamic_ncols=True, file=sys.stderr,
                       desc=f"{jobs[0][0].card.name} {len(jobs)} units", leave=False)
        try:
            with reference_flags(jobs[0][0].device):
                for k, batch in group_batches([u.pipeline for u, _, _ in jobs], [t for _, _, t in jobs],
                                              runner.batch_size, workers, jobs[0][0].dataset.samples):
                    u, strategy, todo = jobs[k]
                    score_batch(store, u, strategy, todo, batch, runner.run_id)
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
    return reasons


# ---------------------------------------------------------------------- the grouped batches
def group_batches(pipelines: list[Pipeline], todos: list[list[Sample]], batch_size: int, workers: int,
                  order: Sequence[Sample]) -> Iterator[tuple[int, list[Item]]]:
    """``(k, batch)``: unit ``k``'s next batch, exactly as ``batches(todos[k], pipelines[k],
    batch_size, workers)`` gives it, with each image read and decoded once for all units (the
    pipelines share their decoder).  ``todos`` are sub-lists of ``order`` (the data set's samples),
    in its order.  A batch's arrays are valid until the next batch is asked for: score each at once."""
    index = [{s.file: i for i, s in enumerate(todo)} for todo in todos]   # file -> index into todos[k]
    samples = [s for s in order if any(s.file in ix for ix in index)]
    left = [len(t) for t in todos]
    held: list[list[Item]] = [[] for _ in todos]
    fill = _Preprocess(pipelines, samples, batch_size, workers)
    try:
        for start in range(0, len(samples), batch_size):
            shard = [(n, [k for k, ix in enumerate(index) if samples[n].file in ix])
                     for n in range(start, min(start + batch_size, len(samples)))]
            for k, n, x, err in fill(shard):
                held[k].append((index[k][samples[n].file], x, err))
            for k in range(len(todos)):
                while held[k] and (len(held[k]) >= batch_size or len(held[k]) == left[k]):
                    batch, held[k] = held[k][:batch_size], held[k][batch_size:]
                    left[k] -= len(batch)
                    yield k, batch
            if fill.pool is not None:   # a partial batch outlives the shared buffer: copied out
                held = [[(i, None if x is None else np.array(x), err) for i, x, err in h] for h in held]
    finally:
        fill.close()


def preprocess_shared(pipelines: list[Pipeline], sample: Sample, which: list[int]):
    """``(k, x, err)`` for each unit ``k`` in ``which``: the image read and decoded once, then each
    unit's own stages on its own copy (exactly ``pipelines[k].preprocess(bytes)``)."""
    try:
        data = sample.path.read_bytes()
        rgb = pipelines[which[0]].decode(data)
    except Exception as e:  # unreadable / truncated / unsupported: the same error for every unit
        err = error_text(e)
        for k in which:
            yield k, None, err
        return
    for j, k in enumerate(which):
        p = pipelines[k]
        try:
            yield k, p.to_input(rgb if j == len(which) - 1 else rgb.copy(), p.image_rng(data)), ""
        except Exception as e:
            yield k, None, error_text(e)


#: in a worker process: the pipelines, samples and the shared buffer (set by the initializer)
_G: dict = {}


def _init_group_worker(pipelines, samples, buf, shape) -> None:
    init_forked_worker()
    _G.update(pipelines=pipelines, samples=samples, buf=np.frombuffer(buf, dtype=np.float32).reshape(shape))


def _group_fill(task: list[tuple[int, int, list[int]]]) -> list[tuple[int, int, int, np.ndarray | None, str]]:
    """``(slot, sample number, units)`` -> ``(k, slot, n, x, err)``, ``x`` None when the input is in
    the shared buffer at ``[k, slot]``."""
    pipelines, samples, buf = _G["pipelines"], _G["samples"], _G["buf"]
    out: list[tuple[int, int, int, np.ndarray | None, str]] = []
    for slot, n, which in task:
        for k, x, err in preprocess_shared(pipelines, samples[n], which):
            if x is not None and x.shape == buf.shape[2:] and x.dtype == buf.dtype:
                buf[k, slot] = x
                out.append((k, slot, n, None, err))
            else:
                out.append((k, slot, n, x, err))
    return out


class _Preprocess:
    """A shard ``[(sample number, units)]`` -> ``[(k, sample number, x, err)]``, in shard order;
    in this process, or in forked workers writing into a shared ``(units, batch, 3, S, S)`` buffer."""

    def __init__(self, pipelines: list[Pipeline], samples: list[Sample], batch_size: int, workers: int):
        self.pipelines, self.samples = pipelines, samples
        self.workers = min(workers, batch_size, len(samples))
        self.pool = None
        if self.workers <= 0:
            return
        from concurrent.futures import ProcessPoolExecutor

        size = pipelines[0].input_size
        shape = (len(pipelines), batch_size, 3, size, size)
        self.buf = mmap.mmap(-1, 4 * int(np.prod(shape)))   # MAP_SHARED | MAP_ANONYMOUS: shared with forks
        self.view = np.frombuffer(self.buf, dtype=np.float32).reshape(shape)
        self.chunk = max(1, -(-batch_size // (4 * self.workers)))
        with serial_opencv():
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"),
                                            initializer=_init_group_worker,
                                            initargs=(pipelines, samples, self.buf, shape))
            self.pool.submit(int).result()   # fork every worker now, inside the block

    def __call__(self, shard: list[tuple[int, list[int]]]):
        if self.pool is None:
            return [(k, n, x, err) for n, which in shard
                    for k, x, err in preprocess_shared(self.pipelines, self.samples[n], which)]
        task = [(slot, n, which) for slot, (n, which) in enumerate(shard)]
        out = []
        for part in self.pool.map(_group_fill, [task[i:i + self.chunk] for i in range(0, len(task), self.chunk)]):
            for k, slot, n, x, err in part:
                out.append((k, n, self.view[k, slot] if x is None and not err else x, err))
        return out

    def close(self) -> None:
        if self.pool is None:
            return
        self.pool.shutdown(wait=True, cancel_futures=True)
        del self.view
        try:
            self.buf.close()
        except BufferError:   # an array of the last batch is still referenced: freed with it
            pass
