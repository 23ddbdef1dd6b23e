"""The one batch loop of the evaluator: images -> pipeline -> strategy -> per-image rows.

A unit's images are preprocessed by its :class:`~robustbench_sys.pipeline.Pipeline` (in
worker processes, in lockstep with the model, when ``workers > 0``: :func:`batches`), stacked
into batches in [0, 1], and handed
to a *strategy*: :class:`Classify` normalises and runs the model; the attack strategy
(:class:`robustbench_sys.eval.attack.Attack`) attacks the batch first and scores the
adversarial images.  Either way the loop writes one row per image, one atomically written
parquet part per batch, so an interrupted unit resumes with the images no part holds yet.
An image that cannot be read or preprocessed gets an ``error: ...`` row and is named in the log.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing as mp
import sys
import threading
from contextlib import contextmanager
from typing import Any, Protocol, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from robustbench_sys.alloc import tune_allocator
from robustbench_sys.data import Sample
from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.results.store import PER_IMAGE_SCHEMA, ResultsStore

log = logging.getLogger("robustbench_sys.eval")

TOPK = 5


# ---------------------------------------------------------------------- image loading
class Images:
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
            return i, None, error_text(e)


def error_text(e: BaseException) -> str:
    """The ``error: ...`` text of an image that could not be read or preprocessed."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:300]


def _collate(items):
    return items


def batches(samples: list[Sample], pipeline: Pipeline, batch_size: int, workers: int, *, overlap: bool = False):
    """Lists of ``(index into samples, CHW float32 in [0, 1] or None, error)``, in order.

    With ``workers > 0`` the images are preprocessed by that many worker processes.  By default
    they run in lockstep with the consumer: a batch is preprocessed (all workers) only when the
    consumer asks for it, i.e. after it has scored the previous one, so preprocessing and the
    model's intra-op threads never compete for the CPU cores (see :func:`preprocess_workers`).
    With ``overlap`` (the model computes on a GPU: :func:`overlap_for`) the next batch is
    preprocessed while the consumer scores the current one, into a second shared buffer (double
    buffering), so the device is not starved by the host.  An array handed out is only valid
    until the next batch is asked for (it lives in a buffer shared with the workers); the loop
    stacks each batch at once."""
    ds = Images(samples, pipeline)
    if workers <= 0:
        for start in range(0, len(ds), batch_size):
            yield [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        return
    if "fork" in mp.get_all_start_methods():
        yield from _lockstep(ds, batch_size, workers, overlap=overlap)
        return
    from torch.utils.data import DataLoader, Dataset  # no fork (macOS / Windows): overlapping workers

    # Images is a map-style data set by protocol (__len__ / __getitem__), not a Dataset subclass
    yield from DataLoader(cast(Dataset, ds), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                          shuffle=False, persistent_workers=False, prefetch_factor=2,
                          worker_init_fn=_init_dataloader_worker)


#: ``ROBUSTBENCH_SYS_OVERLAP=1`` / ``0`` forces host/device overlap on / off (default: on for CUDA)
OVERLAP_ENV = "ROBUSTBENCH_SYS_OVERLAP"


def overlap_for(device: str) -> bool:
    """Whether a unit on ``device`` preprocesses the next batch while the current one is scored:
    on a CUDA device (the host is idle while the GPU computes), not on the CPU (the workers would
    compete with the model's intra-op threads); ``ROBUSTBENCH_SYS_OVERLAP=1|0`` overrides."""
    import os

    from robustbench_sys.devices import is_cuda
    from robustbench_sys.errors import UserError

    v = os.environ.get(OVERLAP_ENV, "").strip()
    if v in ("", "auto"):
        return is_cuda(device)
    if v not in ("0", "1"):
        raise UserError(f"{OVERLAP_ENV}={v!r}: give 1 (overlap host preprocessing with the model), 0 (lockstep) "
                        "or leave it unset (overlap on CUDA devices only)")
    return v == "1"


def preprocess_workers() -> int:
    """Default number of preprocessing processes: one per core (at most 16).  They run in
    lockstep with the model (:func:`batches`), so each phase has every core to itself."""
    from robustbench_sys.threads import plan_threads

    return max(1, plan_threads("main").workers)   # robustbench_sys.threads: min(16, owned cores) or workers=N


def _init_dataloader_worker(_):
    from robustbench_sys.threads import apply, plan_threads

    tune_allocator()
    apply(plan_threads("preprocess"))   # a spawned worker (no fork here): OpenCV is set too


def gpu_image_stage(pipeline: Pipeline) -> bool:
    """True when an image stage of ``pipeline`` computes on a CUDA device (its registry tag
    ``device = "cuda"``, e.g. ``decoder/nvjpeg``)."""
    image = {st.name for st in pipeline_stages("image")}
    return any(n.tags.get("device") == "cuda" for st, n in pipeline.stage_noises() if st in image)


def in_process_workers(pipeline: Pipeline, workers: int) -> int:
    """0 when an image stage of ``pipeline`` computes on a CUDA device (:func:`gpu_image_stage`):
    CUDA cannot run in forked workers, so such a pipeline preprocesses in this process; else
    ``workers``."""
    if workers and gpu_image_stage(pipeline):
        log.info("preprocessing in this process: %s computes on the GPU", pipeline.describe())
        return 0
    return workers


# ---------------------------------------------------------------------- lockstep workers
#: in a worker process: the data set and the shared batch buffer (set by the initializer)
_W: dict = {}


def _init_lockstep(ds: Images, bufs, shape) -> None:
    init_forked_worker()
    _W.update(ds=ds, bufs=[np.frombuffer(b, dtype=np.float32).reshape(shape) for b in bufs])


def init_forked_worker() -> None:
    """Forked worker start-up: the allocator settings (inherited; idempotent), the ``preprocess``
    thread plan (:mod:`robustbench_sys.threads`: one thread), and its own isolated-venv clients
    (the parent's pipes are not shared with siblings)."""
    from robustbench_sys.procs import die_with_parent
    from robustbench_sys.threads import apply, plan_threads

    die_with_parent()
    tune_allocator()
    apply(plan_threads("preprocess"), forked=True)
    iso: Any = sys.modules.get("robustbench_sys.noises.system.isolated")   # its module-level worker registry
    if iso is not None:
        _W["inherited_isolated"] = iso._WORKERS   # kept referenced, never used or closed here
        iso._WORKERS, iso._WORKERS_LOCK = {}, threading.Lock()


def _fill(task: tuple[int, list[tuple[int, int]]]) -> list[tuple[int, int, np.ndarray | None, str]]:
    """Preprocess ``(slot, index)`` pairs into shared buffer ``task[0]``; returns ``(slot, index, x, err)``
    with ``x`` None when the image is in the buffer (else the odd-shaped array, or None on error)."""
    ds, buf = _W["ds"], _W["bufs"][task[0]]
    task_pairs = task[1]
    out: list[tuple[int, int, np.ndarray | None, str]] = []
    for slot, i in task_pairs:
        _, x, err = ds[i]
        if x is not None and x.shape == buf.shape[1:] and x.dtype == buf.dtype:
            buf[slot] = x
            out.append((slot, i, None, err))
        else:
            out.append((slot, i, x, err))
    return out


@contextmanager
def serial_opencv():
    """OpenCV at one thread while the workers are forked (they inherit a serial pool; calling
    ``cv2.setNumThreads`` in a forked child can deadlock), restored afterwards."""
    cv2 = sys.modules.get("cv2")
    n = cv2.getNumThreads() if cv2 is not None else None
    if cv2 is not None:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if cv2 is not None:
            cv2.setNumThreads(n)


def _lockstep(ds: Images, batch_size: int, workers: int, *, overlap: bool = False):
    from concurrent.futures import ProcessPoolExecutor

    size = ds.pipeline.input_size
    shape = (batch_size, 3, size, size)
    nbuf = 2 if overlap else 1   # overlap: batch k + 1 is written while batch k is scored
    bufs = [mmap.mmap(-1, 4 * batch_size * 3 * size * size) for _ in range(nbuf)]   # MAP_SHARED: shared with forks
    views = [np.frombuffer(b, dtype=np.float32).reshape(shape) for b in bufs]
    workers = min(workers, batch_size, len(ds))
    chunk = max(1, -(-batch_size // (4 * workers)))   # a few tasks per worker: balanced, cheap to send
    starts = list(range(0, len(ds), batch_size))
    with serial_opencv():
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_init_lockstep,
                                   initargs=(ds, bufs, shape))
        pool.submit(int).result()   # fork every worker now, inside the block

    def submit(k: int):
        """Start preprocessing batch ``k`` into buffer ``k % nbuf``: (its (slot, index) pairs, results)."""
        idx = list(enumerate(range(starts[k], min(starts[k] + batch_size, len(ds)))))
        tasks = [(k % nbuf, idx[j:j + chunk]) for j in range(0, len(idx), chunk)]
        return idx, k % nbuf, pool.map(_fill, tasks)   # map submits every task now

    try:
        pending = submit(0) if starts else None
        for k in range(len(starts)):
            idx, b, results = cast(tuple, pending)
            items: list[tuple[int, np.ndarray | None, str] | None] = [None] * len(idx)
            for part in results:
                for slot, i, x, err in part:
                    items[slot] = (i, views[b][slot] if x is None and not err else x, err)
            nxt = k + 1 < len(starts)
            if overlap and nxt:   # the consumer is done with batch k - 1: its buffer takes batch k + 1
                pending = submit(k + 1)
            yield items
            if not overlap and nxt:
                pending = submit(k + 1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        del views
        for b in bufs:
            try:
                b.close()
            except BufferError:   # an array of the last batch is still referenced: freed with it
                pass


# ---------------------------------------------------------------------- rows
def image_row(unit, s: Sample, run_id: str, pred: int, top5: list, top5_prob: list, status: str) -> dict:
    return {"run_id": run_id, "unit_id": unit.id, "model": unit.card.name,
            "condition": unit.condition.name, "family": unit.condition.family,
            "dataset": unit.dataset.name, "file": s.file, "label": s.label, "pred": pred,
            "top5": top5, "top5_prob": top5_prob, "correct": pred == s.label,
            "correct5": s.label in top5, "status": status}


def unit_spec(unit) -> dict:
    """What a unit is, as stored in ``units/<id>.json``."""
    return {"unit_id": unit.id, "model": unit.card.name, "arch": unit.card.arch,
            "weights": unit.card.weights, "weights_sha256": unit.weights_sha256,
            "condition": unit.condition.name, "family": unit.condition.family,
            "suite": unit.condition.suite, "suite_version": unit.condition.suite_version,
            "pipeline": unit.pipeline.spec(), "pipeline_text": unit.pipeline.describe(),
            "dataset": unit.dataset.name, "dataset_root": str(unit.dataset.root),
            "dataset_fingerprint": unit.dataset.fingerprint, "n_images": len(unit.dataset),
            "device": getattr(unit, "device", "cpu")}


# ---------------------------------------------------------------------- strategies
class Strategy(Protocol):
    #: the parquet schema of the unit's per-image rows
    schema: pa.Schema
    #: extra columns of a row whose image could not be read
    error_fields: dict

    def prepare_spec(self, spec: dict, previous: dict) -> dict:
        """The unit spec to store before the first batch (``previous``: what a killed run stored)."""

    def score(self, x, samples: list[Sample]):
        """``x`` (N,3,H,W) float32 in [0, 1] -> (softmax probabilities (N, C), per-image extra columns)."""


class Classify:
    """Normalise with the pipeline's mean / std and run the (deployed) model.

    A data set with a ``class_subset`` (ImageNet-A / -R / -O: their 200 classes) has the logits of
    every other class set to -inf before the softmax, as in those papers: the softmax is over the
    subset and the top-1 / top-5 fall inside it.  The unit spec records the subset."""

    schema = PER_IMAGE_SCHEMA
    error_fields: dict = {}

    def __init__(self, unit, model):
        self.pipeline, self.model = unit.pipeline, model
        self.device = getattr(unit, "device", "cpu")
        self.class_subset = getattr(unit.dataset, "class_subset", None)
        self._mask = None

    def prepare_spec(self, spec: dict, previous: dict) -> dict:
        if self.class_subset is not None:
            spec = {**spec, "class_subset": list(self.class_subset)}
        return spec

    def restrict(self, logits):
        """``logits`` (N, C) with the classes outside ``class_subset`` at -inf (unchanged without one)."""
        import torch

        if self.class_subset is None:
            return logits
        if self._mask is None or self._mask.shape[0] != logits.shape[1] or self._mask.device != logits.device:
            if max(self.class_subset) >= logits.shape[1]:
                from robustbench_sys.errors import UserError

                raise UserError(f"the data set's class subset (up to index {max(self.class_subset)}) does not fit "
                                f"the model's {logits.shape[1]} outputs; use an ImageNet-1k model")
            mask = torch.full((logits.shape[1],), float("-inf"), device=logits.device)
            mask[list(self.class_subset)] = 0.0
            self._mask = mask
        return logits + self._mask

    def score(self, x, samples):
        import torch

        from robustbench_sys.devices import to_device

        with torch.inference_mode():
            x = to_device(x, self.device)   # normalise, forward and softmax on the device
            logits = self.restrict(self.model(self.pipeline.normalise(x)).float())
            probs = torch.softmax(logits, dim=1)
        return probs.cpu(), [{}] * len(samples)


# ---------------------------------------------------------------------- the loop
def start_unit(store: ResultsStore, unit, strategy: Strategy, deploy_info: dict | None = None) -> list[Sample]:
    """The images of ``unit`` with no stored row yet; when there are any, the unit spec is
    stored first (as a killed run left it, or updated)."""
    done = store.done_files(unit.id)
    todo = [s for s in unit.dataset.samples if s.file not in done]
    if not todo:
        return todo
    spec = unit_spec(unit)
    if spec["device"] != "cpu":   # GPU, driver, CUDA / cuDNN, TF32 / benchmark flags (robustbench_sys.devices)
        from robustbench_sys.devices import device_info

        spec["device_info"] = device_info(spec["device"])
    if deploy_info is not None:
        spec["deploy_info"] = deploy_info
    previous = store.unit_or_empty(unit.id)
    spec = strategy.prepare_spec(spec, previous)
    if spec != previous:
        store.write_unit(unit.id, spec)
    return todo


def score_batch(store: ResultsStore, unit, strategy: Strategy, todo: list[Sample], batch, run_id: str) -> None:
    """Score one batch ``[(index into todo, CHW float32 or None, error)]`` and store its rows as one part."""
    import torch

    ok = [(i, x) for i, x, err in batch if x is not None]
    scored = {}
    if ok:
        probs, extras = strategy.score(torch.from_numpy(np.stack([x for _, x in ok])),
                                       [todo[i] for i, _ in ok])
        top_p, top_i = probs.topk(min(TOPK, probs.shape[1]), dim=1)
        # the probability of the label (for the NLL, metrics.calibration); null for a label the model lacks
        p = probs.detach().cpu().numpy()
        p_label = [float(p[j, todo[i].label]) if 0 <= todo[i].label < p.shape[1] else None
                   for j, (i, _) in enumerate(ok)]
        scored = {i: (top_i[j].tolist(), top_p[j].tolist(), {"label_prob": p_label[j], **extras[j]})
                  for j, (i, _) in enumerate(ok)}
    rows = []
    for i, _, err in batch:
        s = todo[i]
        if i not in scored:
            log.warning("skip image %s: %s", s.path, err)
            rows.append({**image_row(unit, s, run_id, -1, [], [], "error: " + err), "label_prob": None,
                         **strategy.error_fields})
            continue
        ti, tp, extra = scored[i]
        rows.append({**image_row(unit, s, run_id, ti[0], ti, tp, "ok"), **extra})
    store.append_batch(unit.id, pd.DataFrame(rows), schema=strategy.schema)


def run_unit(store: ResultsStore, unit, strategy: Strategy, *, run_id: str, batch_size: int, workers: int,
             progress: bool, deploy_info: dict | None = None, files: set[str] | None = None) -> None:
    """Score the images of ``unit`` that have no stored row yet (see module doc); ``files``: only
    those of them (one shard of the unit, :func:`robustbench_sys.eval.executors.run_dask`)."""
    todo = start_unit(store, unit, strategy, deploy_info)
    if files is not None:
        todo = [s for s in todo if s.file in files]
    if not todo:
        return
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(unit.dataset), initial=len(unit.dataset) - len(todo), unit="img", dynamic_ncols=True,
                   desc=f"{unit.card.name} {unit.condition.name}", file=sys.stderr, leave=False)
    try:
        for batch in batches(todo, unit.pipeline, batch_size, in_process_workers(unit.pipeline, workers),
                             overlap=overlap_for(getattr(unit, "device", "cpu"))):
            score_batch(store, unit, strategy, todo, batch, run_id)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
