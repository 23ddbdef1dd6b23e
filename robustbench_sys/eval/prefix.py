"""Shared-prefix execution: units that share an image-side prefix run as one group, each image
read and decoded once, and preprocessed once per image-side pipeline, for all of them.

A group's units share the data set, the device, the decoder and the input size; they may belong
to several models (:func:`plan_groups` takes the pending units of every model of a run).  Within
a group the units fall into *image-side classes*: units whose image-side pipeline (decoder,
colour, resize, crop, corruption, input size: everything up to the [0, 1] tensor, i.e. the
pipeline less the model-side stages and the normalisation, :func:`image_side`) is identical.
Each image is read and decoded once for the group; each class runs its downstream stages
(:meth:`~robustbench_sys.pipeline.Pipeline.to_input`, on its own copy of the decoded image, with
the same per-image corruption seed) once, and the [0, 1] input is scored by every unit of the
class: each model-side condition (graph change, precision, backend, device noise) with its own
deployed model, each model with its own normalisation.  So the ``imagenet-s`` decoder x resize
pairs share the decoding, and the clean, precision, backend and graph units of one model (or
several models with the same preprocessing) share all of their preprocessing.

Every unit is scored in exactly the batches the per-unit loop (:func:`~robustbench_sys.eval.loop.run_unit`)
would give it: its own pending images, ``batch_size`` at a time, in data-set order, on the same
inputs bit for bit.  So its rows are those of the per-unit loop bit for bit, one parquet part per
batch, and an interrupted group resumes each unit from its own stored images.

Memory stays bounded: the images stream in shards of ``batch_size``; a shard's decoded images
and, per class, one batch of inputs are held at a time, and per unit at most one partial batch.
The deployed models of a group are held at once, so a group has at most :data:`MAX_GROUP`
units of at most :data:`MAX_MODELS` models, and an estimated :data:`GROUP_MEMORY_MB` MiB of
model parameters (:func:`model_bytes`: the card's ``params_m`` tag x 4 bytes, or
:data:`DEFAULT_PARAMS_M` without one, counted once per loaded model and once more per unit with
a model-side stage; ``ROBUSTBENCH_SYS_GROUP_MEMORY_MB`` changes the budget).  Preprocessing runs
in forked worker processes in lockstep with the models, as in
:func:`~robustbench_sys.eval.loop.batches` (a worker decodes an image once and writes every
class's input into a shared buffer).

A timed unit (:func:`~robustbench_sys.eval.speed.wants_speed`) has its speed measured right after
its deployment, before any batch of the group is scored (as the per-unit path does, before its
loop).  Units with an attack stay on the per-unit loop; a decoder that computes on the GPU makes
its group preprocess in this process (:func:`~robustbench_sys.eval.loop.in_process_workers`).
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

from robustbench_sys import noises, zoo
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
from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.pipeline import Pipeline

log = logging.getLogger("robustbench_sys.eval")

#: the most units in one group (their deployed models are held at once; the shared buffer holds
#: one batch of inputs per image-side class)
MAX_GROUP = 16
#: the most distinct models (card, weights) in one group (each is loaded at once)
MAX_MODELS = 4
#: the estimated model parameters a group may hold, in MiB (``ROBUSTBENCH_SYS_GROUP_MEMORY_MB``)
GROUP_MEMORY_MB = 4096
#: the parameters (millions) assumed for a card without a ``params_m`` tag
DEFAULT_PARAMS_M = 25.0

#: one item of a batch: (index into the unit's pending samples, CHW float32 or None, error)
Item = tuple[int, "np.ndarray | None", str]

#: the pipeline fields the [0, 1] input does not depend on
_MODEL_SIDE = {st.name: None for st in pipeline_stages("model")}


def enabled() -> bool:
    return os.environ.get("ROBUSTBENCH_SYS_SHARED_PREFIX", "1") != "0"


def image_side(p: Pipeline) -> Pipeline:
    """The image-side part of ``p``: what its [0, 1] input depends on (the model-side stages and
    the normalisation blanked).  Units with equal image-side pipelines get the same inputs."""
    return p.replace(**_MODEL_SIDE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def group_key(unit: Unit) -> tuple | None:
    """What a unit shares with the others of its group (data, device, decoder, input size);
    None for a unit the per-unit loop runs (an attack)."""
    p = unit.pipeline
    if unit.condition.attack:
        return None
    return (unit.dataset.fingerprint, unit.device, p.decoder, p.input_size)


def model_bytes(unit: Unit) -> int:
    """The estimated size of one copy of the unit's model: its card's ``params_m`` x 4 bytes."""
    try:
        params_m = float(unit.card.tags.get("params_m", DEFAULT_PARAMS_M))
    except (TypeError, ValueError):
        params_m = DEFAULT_PARAMS_M
    return int(params_m * 1e6 * 4)


def _memory_budget() -> int:
    try:
        return int(float(os.environ.get("ROBUSTBENCH_SYS_GROUP_MEMORY_MB", GROUP_MEMORY_MB)) * 2**20)
    except ValueError:
        return GROUP_MEMORY_MB * 2**20


def _has_model_side(unit: Unit) -> bool:
    return any(getattr(unit.pipeline, name) for name in _MODEL_SIDE)


def plan_groups(runner, units: list[Unit]) -> list[list[Unit]]:
    """The groups (two units or more) among the pending ``units`` (of one model or several, each
    model's reference first as planned): units with the same :func:`group_key`, those of one
    image-side class next to each other (the models taken :data:`MAX_MODELS` at a time, in plan
    order; within them the largest class first, so it is rarely split), cut at :data:`MAX_GROUP`
    units, :data:`MAX_MODELS` models and the memory budget (see the module doc)."""
    if not enabled() or (runner.workers > 0 and "fork" not in mp.get_all_start_methods()):
        return []
    by_key: dict[tuple, list[Unit]] = {}
    seen: set[str] = set()
    for u in units:
        key = group_key(u)
        if key is not None and u.id not in seen and runner.pending(u):
            by_key.setdefault(key, []).append(u)
            seen.add(u.id)   # two conditions with one pipeline (decoder/ffmpeg, combined/1-decode): one unit
    budget = _memory_budget()
    groups = []
    for members in by_key.values():
        size: dict[Pipeline, int] = {}
        for u in members:
            size[image_side(u.pipeline)] = size.get(image_side(u.pipeline), 0) + 1
        rank = {key: r for r, key in enumerate(sorted(size, key=lambda key: -size[key]))}   # largest class first
        order = list(dict.fromkeys((u.card.name, u.weights_sha256) for u in members))
        members = sorted(members, key=lambda u: (order.index((u.card.name, u.weights_sha256)) // MAX_MODELS,
                                                 rank[image_side(u.pipeline)]))   # stable: plan order kept
        chunk: list[Unit] = []
        models: set = set()
        held = 0
        for u in members:
            key = (u.card.name, u.weights_sha256)
            cost = model_bytes(u) * ((key not in models) + _has_model_side(u))
            if chunk and (len(chunk) == MAX_GROUP or (key not in models and len(models) == MAX_MODELS)
                          or held + cost > budget):
                groups.append(chunk)
                chunk, models, held = [], set(), 0
                cost = model_bytes(u) * (1 + _has_model_side(u))
            chunk.append(u)
            models.add(key)
            held += cost
        groups.append(chunk)
    return [g for g in groups if len(g) > 1]


def _load_models(runner, units: list[Unit], models: dict) -> dict[tuple, dict]:
    """``{(card name, weights sha256): cache}`` for the models of ``units``, each cache holding the
    loaded model under that key (and the deploy cache of :func:`deploy`); ``models`` (the run's
    one-model cache, see :meth:`Runner.model`) serves its model and is emptied when the group
    does not use it (so it is not held besides)."""
    keys = list(dict.fromkeys((u.card.name, u.weights_sha256) for u in units))
    if not any(k in models for k in keys):
        models.clear()
    held: dict[tuple, dict] = {}
    for u in units:
        key = (u.card.name, u.weights_sha256)
        if key in held:
            continue
        if key in models:
            held[key] = models
        elif not models:
            runner.model(u, models)
            held[key] = models
        else:
            held[key] = {key: zoo.load_model(u.card)}
    return held


def run_group(runner, group: list[Unit], calib: Calibration, models: dict) -> dict[str, str]:
    """Run the pending images of a group's units; returns ``{unit id: skip reason}`` for units
    that do not apply.  Holds every unit's store lock (taken in id order) throughout."""
    store = runner.store
    reasons: dict[str, str] = {}
    with ExitStack() as locks:
        for u in sorted(group, key=lambda u: u.id):
            locks.enter_context(store.unit_lock(u.id))
        first: dict[str, Unit] = {}
        for u in group:   # one unit per id (two conditions may share a pipeline)
            first.setdefault(u.id, u)
        live = [u for u in first.values() if runner.pending(u)]   # another process may have finished some
        if not live:
            return reasons
        held = _load_models(runner, live, models)
        jobs: list[tuple[Unit, Classify, list[Sample]]] = []
        for u in live:
            cache = held[(u.card.name, u.weights_sha256)]
            try:
                deployed = deploy(cache[(u.card.name, u.weights_sha256)], u, calib, cache=cache)
            except noises.NotApplicable as e:
                reasons[u.id] = f"not applicable: {e}"
                continue
            runner.deploy_info[u.id] = getattr(deployed, "info", {})
            if wants_speed(u):   # measured right after deployment, before any batch (as Runner._run_pending)
                with reference_flags(u.device):
                    runner.deploy_info[u.id] = {**runner.deploy_info[u.id], "speed": runner._speed(u, deployed)}
            strategy = Classify(u, deployed)
            todo = start_unit(store, u, strategy, runner.deploy_info[u.id])
            if todo:
                jobs.append((u, strategy, todo))
        if not jobs:
            return reasons
        pipes = [u.pipeline for u, _, _ in jobs]
        log.info("  %d units of %d model(s) share %s: each image decoded once, preprocessed once per image-side "
                 "pipeline (%d)", len(jobs), len({(u.card.name, u.weights_sha256) for u, _, _ in jobs}),
                 pipes[0].decoder, len({image_side(p) for p in pipes}))
        workers = min(in_process_workers(p, runner.workers) for p in pipes)
        bar = None
        if runner.progress:
            from tqdm import tqdm

            names = ", ".join(dict.fromkeys(u.card.name for u, _, _ in jobs))
            bar = tqdm(total=sum(len(t) for _, _, t in jobs), unit="img", dynamic_ncols=True, file=sys.stderr,
                       desc=f"{names} {len(jobs)} units", leave=False)
        try:
            with reference_flags(jobs[0][0].device):
                for k, batch in group_batches(pipes, [t for _, _, t in jobs], runner.batch_size, workers,
                                              jobs[0][0].dataset.samples):
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
    pipelines share their decoder) and preprocessed once per image-side class (:func:`image_side`).
    ``todos`` are sub-lists of ``order`` (the data set's samples), in its order.  A batch's arrays
    are valid until the next batch is asked for (score each at once) and are shared by the units
    of a class (read them, never write)."""
    classes: dict[Pipeline, int] = {}
    cls = [classes.setdefault(image_side(p), len(classes)) for p in pipelines]
    reps: list[Pipeline] = [pipelines[cls.index(c)] for c in range(len(classes))]   # one pipeline per class
    index = [{s.file: i for i, s in enumerate(todo)} for todo in todos]   # file -> index into todos[k]
    samples = [s for s in order if any(s.file in ix for ix in index)]
    left = [len(t) for t in todos]
    held: list[list[Item]] = [[] for _ in todos]
    fill = _Preprocess(reps, samples, batch_size, workers)
    try:
        for start in range(0, len(samples), batch_size):
            shard = [(n, sorted({cls[k] for k, ix in enumerate(index) if samples[n].file in ix}))
                     for n in range(start, min(start + batch_size, len(samples)))]
            for c, n, x, err in fill(shard):
                f = samples[n].file
                for k in range(len(todos)):
                    if cls[k] == c and f in index[k]:
                        held[k].append((index[k][f], x, err))
            for k in range(len(todos)):
                while held[k] and (len(held[k]) >= batch_size or len(held[k]) == left[k]):
                    batch, held[k] = held[k][:batch_size], held[k][batch_size:]
                    left[k] -= len(batch)
                    yield k, batch
            if fill.pool is not None:   # a partial batch outlives the shared buffer: copied out (once per class)
                held = _copied(held)
    finally:
        fill.close()


def _copied(held: list[list[Item]]) -> list[list[Item]]:
    """``held`` with every array copied out of the shared buffer, an array shared by units copied once."""
    copies: dict[int, np.ndarray] = {}
    out = []
    for h in held:
        items = []
        for i, x, err in h:
            if x is not None:
                if id(x) not in copies:
                    copies[id(x)] = np.array(x)
                x = copies[id(x)]
            items.append((i, x, err))
        out.append(items)
    return out


def preprocess_shared(pipelines: list[Pipeline], sample: Sample, which: list[int]):
    """``(k, x, err)`` for each pipeline ``k`` in ``which``: the image read and decoded once, then each
    pipeline's own stages on its own copy (exactly ``pipelines[k].preprocess(bytes)``)."""
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
    """``(slot, sample number, pipelines)`` -> ``(k, slot, n, x, err)``, ``x`` None when the input is
    in the shared buffer at ``[k, slot]``."""
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
    """A shard ``[(sample number, pipelines)]`` -> ``[(k, sample number, x, err)]``, in shard order;
    in this process, or in forked workers writing into a shared ``(pipelines, batch, 3, S, S)`` buffer."""

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
