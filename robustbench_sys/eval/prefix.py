"""Shared-prefix execution: units that share an image-side prefix run as one group, each image
read and decoded once, and preprocessed once per image-side pipeline, for all of them.

A group's units share the data set, the device and the input size (and whether an image stage
computes on the GPU); they may use several decoders and belong to several models
(:func:`plan_groups` takes the pending units of every model of a run).  Within a group the
units fall into *image-side classes*: units whose image-side pipeline (decoder, colour, resize,
crop, corruption, input size: everything up to the [0, 1] tensor, i.e. the pipeline less the
model-side stages and the normalisation, :func:`image_side`) is identical.  Each image is read
once for the group and decoded once per decoder; each class runs its downstream stages
(:meth:`~robustbench_sys.pipeline.Pipeline.to_input`, on its own copy of the decoded image, with
the same per-image corruption seed) once, and the [0, 1] input is scored by every unit of the
class: each model-side condition (graph change, precision, backend, device noise) with its own
deployed model, each model with its own normalisation.  So the ``imagenet-s`` decoder x resize
pairs share the decoding, and the clean, precision, backend and graph units of one model (or
several models with the same preprocessing) share all of their preprocessing.

**Equal decodings are computed once.**  The stages after the decoder depend on the decoded
array and the per-image seed (derived from the file's bytes) only, not on which decoder gave
the array.  So when two decoders give an image the *same* array (same shape, dtype and bytes,
compared exactly, per image: e.g. PIL and OpenCV on one libjpeg-turbo), classes that differ
only in their decoder are computed once for that image and share the input
(:func:`preprocess_shared`); an image the decoders disagree on is computed per decoder, so every
input is still exactly ``pipeline.preprocess(bytes)``.

Every unit is scored in exactly the batches the per-unit loop (:func:`~robustbench_sys.eval.loop.run_unit`)
would give it: its own pending images, ``batch_size`` at a time, in data-set order, on the same
inputs bit for bit.  So its rows are those of the per-unit loop bit for bit, one parquet part per
batch, and an interrupted group resumes each unit from its own stored images.

Memory stays bounded: the images stream in shards of ``batch_size``; a shard's decoded images
and, per class, one batch of inputs are held at a time (a ``(classes, batch, 3, S, S)`` float32
buffer, two when overlapped on a GPU, at most :data:`GROUP_BUFFER_MB` MiB in all:
``ROBUSTBENCH_SYS_GROUP_BUFFER_MB``), and per unit
at most one partial batch.  The deployed models of a group are held at once, so a group has at
most :data:`MAX_GROUP` units of at most :data:`MAX_MODELS` models, and an estimated
:data:`GROUP_MEMORY_MB` MiB of model parameters (:func:`model_bytes`: the card's ``params_m`` tag x 4 bytes, or
:data:`DEFAULT_PARAMS_M` without one, counted once per loaded model and once more per unit with
a model-side stage; ``ROBUSTBENCH_SYS_GROUP_MEMORY_MB`` changes the budget).  Preprocessing runs
in forked worker processes as in :func:`~robustbench_sys.eval.loop.batches` (a worker reads an
image once and writes every class's input into a shared buffer): in lockstep with the models on
the CPU, overlapped with them (the next shard into a second buffer) on a GPU
(:func:`~robustbench_sys.eval.loop.overlap_for`, ``ROBUSTBENCH_SYS_OVERLAP``).

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
from typing import Any

import numpy as np

from robustbench_sys import noises, zoo
from robustbench_sys.data import Sample
from robustbench_sys.devices import reference_flags
from robustbench_sys.eval.deploy import Calibration, deploy
from robustbench_sys.eval.loop import (
    Classify,
    error_text,
    gpu_image_stage,
    in_process_workers,
    init_forked_worker,
    overlap_for,
    score_batch,
    serial_opencv,
    start_unit,
)
from robustbench_sys.eval.plan import Unit
from robustbench_sys.eval.speed import wants_speed
from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.pipeline import Pipeline

log = logging.getLogger("robustbench_sys.eval")

#: the most units in one group (their locks and deployed models are held at once)
MAX_GROUP = 128
#: the largest input buffer of a group, in MiB (``ROBUSTBENCH_SYS_GROUP_BUFFER_MB``): one batch of
#: float32 inputs per image-side class
GROUP_BUFFER_MB = 2048
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
    """``ROBUSTBENCH_SYS_SHARED_PREFIX``: 1 or unset (group units), 0 (every unit on its own);
    any other value: one-line :class:`UserError`."""
    v = os.environ.get("ROBUSTBENCH_SYS_SHARED_PREFIX", "").strip()
    if v not in ("", "0", "1"):
        from robustbench_sys.errors import UserError

        raise UserError(f"ROBUSTBENCH_SYS_SHARED_PREFIX={v}: give 1 (units share their image-side work) or 0 "
                        "(every unit on its own)")
    return v != "0"


def image_side(p: Pipeline) -> Pipeline:
    """The image-side part of ``p``: what its [0, 1] input depends on (the model-side stages and
    the normalisation blanked).  Units with equal image-side pipelines get the same inputs."""
    return p.replace(**_MODEL_SIDE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def group_key(unit: Unit) -> tuple | None:
    """What a unit shares with the others of its group (data, device, input size, whether an
    image stage computes on the GPU); None for a unit the per-unit loop runs (an attack)."""
    p = unit.pipeline
    if unit.condition.attack:
        return None
    return (unit.dataset.fingerprint, unit.device, p.input_size, gpu_image_stage(p))


def shardable(unit: Unit) -> bool:
    """An image-side unit (no model-side stage, attack or speed measurement): its images can be
    scored by several tasks at once, each with the same model (Dask image shards,
    :func:`robustbench_sys.eval.executors.run_dask`)."""
    p = unit.pipeline
    return not (unit.condition.attack or p.graph or p.deploy or wants_speed(unit))


def model_bytes(unit: Unit) -> int:
    """The estimated size of one copy of the unit's model: its card's ``params_m`` x 4 bytes."""
    try:
        params_m = float(unit.card.tags.get("params_m", DEFAULT_PARAMS_M))
    except (TypeError, ValueError):
        params_m = DEFAULT_PARAMS_M
    return int(params_m * 1e6 * 4)


def _mib(env: str, default: int) -> int:
    """``env`` (MiB) in bytes, ``default`` MiB when unset; a bad value: one-line :class:`UserError`."""
    from robustbench_sys.errors import UserError

    v = os.environ.get(env, "").strip()
    if not v:
        return default * 2**20
    try:
        mib = float(v)
    except ValueError:
        mib = -1.0
    if not mib > 0:
        raise UserError(f"{env}={v}: give a size in MiB (a positive number; unset: {default})")
    return int(mib * 2**20)


def _memory_budget() -> int:
    return _mib("ROBUSTBENCH_SYS_GROUP_MEMORY_MB", GROUP_MEMORY_MB)


def buffer_budget() -> int:
    """The largest input buffer of a group, in bytes (:data:`GROUP_BUFFER_MB`)."""
    return _mib("ROBUSTBENCH_SYS_GROUP_BUFFER_MB", GROUP_BUFFER_MB)


def buffer_bytes(pipeline: Pipeline, batch_size: int) -> int:
    """The bytes of one image-side class in a group's input buffer: one batch of float32 inputs."""
    return 4 * batch_size * 3 * pipeline.input_size ** 2


def _has_model_side(unit: Unit) -> bool:
    return any(getattr(unit.pipeline, name) for name in _MODEL_SIDE)


def plan_groups(runner, units: list[Unit]) -> list[list[Unit]]:
    """The groups (two units or more) among the pending ``units`` (of one model or several, each
    model's reference first as planned): units with the same :func:`group_key`, those of one
    image-side class next to each other (the models taken :data:`MAX_MODELS` at a time, in plan
    order; within them the decoders in plan order, and per decoder the largest class first, so
    it is rarely split), cut at :data:`MAX_GROUP` units, :data:`MAX_MODELS` models, the memory
    budget and the input buffer budget (see the module doc)."""
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
    buffers = buffer_budget()
    groups = []
    for members in by_key.values():
        size: dict[Pipeline, int] = {}
        for u in members:
            size[image_side(u.pipeline)] = size.get(image_side(u.pipeline), 0) + 1
        rank = {key: r for r, key in enumerate(sorted(size, key=lambda key: -size[key]))}   # largest class first
        order = list(dict.fromkeys((u.card.name, u.weights_sha256) for u in members))
        decoders = list(dict.fromkeys(u.pipeline.decoder for u in members))
        members = sorted(members, key=lambda u: (order.index((u.card.name, u.weights_sha256)) // MAX_MODELS,
                                                 decoders.index(u.pipeline.decoder),
                                                 rank[image_side(u.pipeline)]))   # stable: plan order kept
        chunk: list[Unit] = []
        models: set = set()
        classes: set[Pipeline] = set()
        held = buffered = 0
        copies = 2 if overlap_for(members[0].device) else 1   # overlapped: two buffers in turn
        for u in members:
            key, cls = (u.card.name, u.weights_sha256), image_side(u.pipeline)
            cost = model_bytes(u) * ((key not in models) + _has_model_side(u))
            buf = copies * buffer_bytes(u.pipeline, runner.batch_size) * (cls not in classes)
            if chunk and (len(chunk) == MAX_GROUP or (key not in models and len(models) == MAX_MODELS)
                          or held + cost > budget or buffered + buf > buffers):
                groups.append(chunk)
                chunk, models, classes, held, buffered = [], set(), set(), 0, 0
                cost = model_bytes(u) * (1 + _has_model_side(u))
                buf = copies * buffer_bytes(u.pipeline, runner.batch_size)
            chunk.append(u)
            models.add(key)
            classes.add(cls)
            held += cost
            buffered += buf
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


def run_group(runner, group: list[Unit], calib: Calibration, models: dict, *, files: set[str] | None = None,
              shard: str | None = None) -> dict[str, str]:
    """Run the pending images of a group's units; returns ``{unit id: skip reason}`` for units
    that do not apply.  Holds every unit's store lock (taken in id order) throughout.

    ``files``: only those images (one image shard of the group, named ``shard``: each unit's lock
    is then held shared, and ``<unit id>.<shard>`` exclusively, so shards of one group run at
    once on several Dask workers, :func:`robustbench_sys.eval.executors.run_dask`, while a
    whole-unit writer excludes them all)."""
    store = runner.store
    reasons: dict[str, str] = {}
    with ExitStack() as locks:
        for u in sorted(group, key=lambda u: u.id):
            if shard is None:
                locks.enter_context(store.unit_lock(u.id))
            else:   # other shards of the unit may run at once; a whole-unit writer may not
                locks.enter_context(store.unit_lock(u.id, shared=True))
                locks.enter_context(store.unit_lock(f"{u.id}.{shard}"))
        first: dict[str, Unit] = {}
        for u in group:   # one unit per id (two conditions may share a pipeline)
            first.setdefault(u.id, u)
        live = [u for u in first.values() if runner.pending(u)
                and (files is None or not files <= store.done_files(u.id))]   # another process may have finished some
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
            if files is not None:
                todo = [s for s in todo if s.file in files]
            if todo:
                jobs.append((u, strategy, todo))
        if not jobs:
            return reasons
        pipes = [u.pipeline for u, _, _ in jobs]
        log.info("  %d units of %d model(s) share each image: read once, decoded once per decoder (%s), "
                 "preprocessed once per image-side pipeline (%d)", len(jobs),
                 len({(u.card.name, u.weights_sha256) for u, _, _ in jobs}),
                 ", ".join(dict.fromkeys(p.decoder for p in pipes)), len({image_side(p) for p in pipes}))
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
                                              jobs[0][0].dataset.samples, overlap=overlap_for(jobs[0][0].device)):
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
                  order: Sequence[Sample], *, overlap: bool = False) -> Iterator[tuple[int, list[Item]]]:
    """``(k, batch)``: unit ``k``'s next batch, exactly as ``batches(todos[k], pipelines[k],
    batch_size, workers)`` gives it, with each image read once for all units, decoded once per
    decoder and preprocessed once per image-side class (:func:`image_side`; classes that differ
    only in the decoder once per distinct decoded array, :func:`preprocess_shared`).  ``todos``
    are sub-lists of ``order`` (the data set's samples), in its order.  A batch's arrays are valid
    until the next batch is asked for (score each at once) and are shared by the units of a class
    (read them, never write).

    ``overlap`` (with ``workers``): the workers preprocess the next shard of images into a second
    buffer while this shard's batches are scored (as :func:`~robustbench_sys.eval.loop.batches`
    does on a GPU); a buffer is rewritten only after every batch read from it was handed out and
    the consumer asked for the next."""
    classes: dict[Pipeline, int] = {}
    cls = [classes.setdefault(image_side(p), len(classes)) for p in pipelines]
    reps: list[Pipeline] = [pipelines[cls.index(c)] for c in range(len(classes))]   # one pipeline per class
    index = [{s.file: i for i, s in enumerate(todo)} for todo in todos]   # file -> index into todos[k]
    samples = [s for s in order if any(s.file in ix for ix in index)]
    left = [len(t) for t in todos]
    held: list[list[Item]] = [[] for _ in todos]
    fill = _Preprocess(reps, samples, batch_size, workers, overlap=overlap)
    starts = range(0, len(samples), batch_size)

    def shard(start: int) -> list[tuple[int, list[int]]]:
        return [(n, sorted({cls[k] for k, ix in enumerate(index) if samples[n].file in ix}))
                for n in range(start, min(start + batch_size, len(samples)))]

    try:
        pending = fill.submit(shard(0)) if samples else None
        for i in range(len(starts)):
            results = fill.result(pending)
            nxt = i + 1 < len(starts)
            if fill.overlap and nxt:   # written into the other buffer while this shard is scored
                pending = fill.submit(shard(starts[i + 1]))
            for c, n, x, err in results:
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
            if not fill.overlap and nxt:
                pending = fill.submit(shard(starts[i + 1]))
    finally:
        fill.close()


def _copied(held: list[list[Item]]) -> list[list[Item]]:
    """``held`` with every array copied out of the shared buffer, an array shared by units copied once."""
    copies: dict[tuple, np.ndarray] = {}
    out = []
    for h in held:
        items = []
        for i, x, err in h:
            if x is not None:   # keyed by the memory it views: classes sharing a slot share one copy
                key = (x.__array_interface__["data"][0], x.shape)
                if key not in copies:
                    copies[key] = np.array(x)
                x = copies[key]
            items.append((i, x, err))
        out.append(items)
    return out


def after_decoder(pipelines: list[Pipeline]) -> list[int]:
    """Per pipeline, a number equal for pipelines whose stages after the decoder are the same
    (their image-side pipelines less the decoder): from equal decoded arrays they compute equal
    inputs (:meth:`~robustbench_sys.pipeline.Pipeline.to_input` never looks at the decoder)."""
    keys: dict[Pipeline, int] = {}
    return [keys.setdefault(image_side(p).replace(decoder=""), len(keys)) for p in pipelines]


def same_array(a, b) -> bool:
    """Two decoded images are the same array: both numpy, same shape, dtype and bytes."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype and bool(np.array_equal(a, b)))


def preprocess_shared(pipelines: list[Pipeline], sample: Sample, which: list[int],
                      after: list[int] | None = None) -> Iterator[tuple[int, np.ndarray | None, str, int]]:
    """``(k, x, err, first)`` for each pipeline ``k`` in ``which`` (in that order): ``x`` is exactly
    ``pipelines[k].preprocess(bytes)``, with the image read once, decoded once per decoder, and
    the stages after the decoder run once per (distinct decoded array, :func:`after_decoder`
    number ``after[k]``) on its own copy of the array: two decoders that give this image the same
    array (compared exactly) share the work.  ``first`` is the first ``k`` of ``which`` computed
    with the same work (``k`` itself when computed for it), whose ``x`` is the same object."""
    after = list(range(len(pipelines))) if after is None else after
    try:
        data = sample.path.read_bytes()
    except Exception as e:  # unreadable: the same error for every unit
        err = error_text(e)
        for k in which:
            yield k, None, err, k
        return
    decoded: dict[str, tuple[Any, str, str]] = {}   # decoder -> (array, error, decoder first giving it)
    for k in which:
        dec = pipelines[k].decoder
        if dec in decoded:
            continue
        try:
            rgb = pipelines[k].decode(data)
        except Exception as e:   # truncated / unsupported for this decoder: its units get the error
            decoded[dec] = (None, error_text(e), dec)
            continue
        same = next((d for d, (a, _, first) in decoded.items() if first == d and same_array(a, rgb)), dec)
        decoded[dec] = (decoded[same][0] if same != dec else rgb, "", same)
    work: dict[tuple[str, int], int] = {}   # (decoded array, stages after the decoder) -> first k
    for k in which:
        _, err, canon = decoded[pipelines[k].decoder]
        if not err:
            work.setdefault((canon, after[k]), k)
    uses: dict[str, int] = {}
    for canon, _ in work:
        uses[canon] = uses.get(canon, 0) + 1
    done: dict[tuple[str, int], tuple[np.ndarray | None, str]] = {}
    for k in which:
        rgb, err, canon = decoded[pipelines[k].decoder]
        if err:
            yield k, None, err, k
            continue
        key = (canon, after[k])
        if key not in done:
            uses[canon] -= 1   # the last use of an array gets the array itself, the others a copy
            p = pipelines[k]
            try:
                done[key] = (p.to_input(rgb if uses[canon] == 0 else rgb.copy(), p.image_rng(data)), "")
            except Exception as e:
                done[key] = (None, error_text(e))
        x, why = done[key]
        yield k, x, why, work[key]


#: in a worker process: the pipelines, samples and the shared buffer (set by the initializer)
_G: dict = {}


def _init_group_worker(pipelines, after, samples, bufs, shape) -> None:
    init_forked_worker()
    _G.update(pipelines=pipelines, after=after, samples=samples,
              bufs=[np.frombuffer(b, dtype=np.float32).reshape(shape) for b in bufs])


#: what a worker hands back per input: (k, slot, sample number, x or None, error, src)
_Filled = tuple[int, int, int, "np.ndarray | None", str, int]


def _group_fill(b: int, task: list[tuple[int, int, list[int]]]) -> list[_Filled]:
    """Into shared buffer ``b``: ``(slot, sample number, pipelines)`` -> ``(k, slot, n, x, err, src)``,
    ``x`` None when the input is in the buffer at ``[src, slot]`` (``src`` = ``k``, or the class
    whose input it shares)."""
    pipelines, after, samples, buf = _G["pipelines"], _G["after"], _G["samples"], _G["bufs"][b]
    out: list[_Filled] = []
    for slot, n, which in task:
        stored: set[int] = set()
        for k, x, err, first in preprocess_shared(pipelines, samples[n], which, after):
            if first in stored:
                out.append((k, slot, n, None, err, first))
            elif x is not None and x.shape == buf.shape[2:] and x.dtype == buf.dtype:
                buf[k, slot] = x
                stored.add(k)
                out.append((k, slot, n, None, err, k))
            else:
                out.append((k, slot, n, x, err, k))
    return out


class _Preprocess:
    """A shard ``[(sample number, pipelines)]`` -> ``[(k, sample number, x, err)]``, in shard order
    (:meth:`submit`, then :meth:`result`); in this process, or in forked workers writing into a
    shared ``(pipelines, batch, 3, S, S)`` buffer (two with ``overlap``, used in turn)."""

    def __init__(self, pipelines: list[Pipeline], samples: list[Sample], batch_size: int, workers: int, *,
                 overlap: bool = False):
        self.pipelines, self.samples = pipelines, samples
        self.after = after_decoder(pipelines)
        self.workers = min(workers, batch_size, len(samples))
        self.pool = None
        self.overlap = False
        if self.workers <= 0:
            return
        from concurrent.futures import ProcessPoolExecutor

        self.overlap = overlap
        size = pipelines[0].input_size
        shape = (len(pipelines), batch_size, 3, size, size)
        # MAP_SHARED | MAP_ANONYMOUS: shared with the forks
        self.bufs = [mmap.mmap(-1, 4 * int(np.prod(shape))) for _ in range(2 if overlap else 1)]
        self.views = [np.frombuffer(b, dtype=np.float32).reshape(shape) for b in self.bufs]
        self.chunk = max(1, -(-batch_size // (4 * self.workers)))
        self.turn = 0
        with serial_opencv():
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"),
                                            initializer=_init_group_worker,
                                            initargs=(pipelines, self.after, samples, self.bufs, shape))
            self.pool.submit(int).result()   # fork every worker now, inside the block

    def submit(self, shard: list[tuple[int, list[int]]]):
        """Start preprocessing ``shard`` (in this process: done at :meth:`result`)."""
        if self.pool is None:
            return shard
        b, self.turn = self.turn, (self.turn + 1) % len(self.bufs)
        task = [(slot, n, which) for slot, (n, which) in enumerate(shard)]
        parts = [task[i:i + self.chunk] for i in range(0, len(task), self.chunk)]
        return b, self.pool.map(_group_fill, [b] * len(parts), parts)   # map submits every task now

    def result(self, pending) -> list[tuple[int, int, np.ndarray | None, str]]:
        if self.pool is None:
            return [(k, n, x, err) for n, which in pending
                    for k, x, err, _ in preprocess_shared(self.pipelines, self.samples[n], which, self.after)]
        b, parts = pending
        return [(k, n, self.views[b][src, slot] if x is None and not err else x, err)
                for part in parts for k, slot, n, x, err, src in part]

    def close(self) -> None:
        if self.pool is None:
            return
        self.pool.shutdown(wait=True, cancel_futures=True)
        del self.views
        for b in self.bufs:
            try:
                b.close()
            except BufferError:   # an array of the last batch is still referenced: freed with it
                pass
