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
from robustbench_sys.procs import available_cores
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


def batches(samples: list[Sample], pipeline: Pipeline, batch_size: int, workers: int):
    """Lists of ``(index into samples, CHW float32 in [0, 1] or None, error)``, in order.

    With ``workers > 0`` the images are preprocessed by that many worker processes in lockstep
    with the consumer: a batch is preprocessed (all workers) only when the consumer asks for it,
    i.e. after it has scored the previous one, so preprocessing and the model's intra-op
    threads never compete for the cores (see :func:`preprocess_workers`).  An array handed out
    is only valid until the next batch is asked for (it lives in a buffer shared with the
    workers); the loop stacks each batch at once."""
    ds = Images(samples, pipeline)
    if workers <= 0:
        for start in range(0, len(ds), batch_size):
            yield [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        return
    if "fork" in mp.get_all_start_methods():
        yield from _lockstep(ds, batch_size, workers)
        return
    from torch.utils.data import DataLoader, Dataset  # no fork (macOS / Windows): overlapping workers

    # Images is a map-style data set by protocol (__len__ / __getitem__), not a Dataset subclass
    yield from DataLoader(cast(Dataset, ds), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                          shuffle=False, persistent_workers=False, prefetch_factor=2,
                          worker_init_fn=_init_dataloader_worker)


def preprocess_workers() -> int:
    """Default number of preprocessing processes: one per core (at most 16).  They run in
    lockstep with the model (:func:`batches`), so each phase has every core to itself."""
    cores = available_cores()
    return max(1, min(16, cores))


def _init_dataloader_worker(_):
    import torch

    tune_allocator()
    torch.set_num_threads(1)


def in_process_workers(pipeline: Pipeline, workers: int) -> int:
    """0 when an image stage of ``pipeline`` computes on a CUDA device (its registry tag
    ``device = "cuda"``, e.g. ``decoder/nvjpeg``): CUDA cannot run in forked workers, so such a
    pipeline preprocesses in this process; else ``workers``."""
    image = {st.name for st in pipeline_stages("image")}
    if workers and any(n.tags.get("device") == "cuda" for st, n in pipeline.stage_noises() if st in image):
        log.info("preprocessing in this process: %s computes on the GPU", pipeline.describe())
        return 0
    return workers


# ---------------------------------------------------------------------- lockstep workers
#: in a worker process: the data set and the shared batch buffer (set by the initializer)
_W: dict = {}


def _init_lockstep(ds: Images, buf, shape) -> None:
    init_forked_worker()
    _W.update(ds=ds, buf=np.frombuffer(buf, dtype=np.float32).reshape(shape))


def init_forked_worker() -> None:
    """Forked worker start-up: the allocator settings (inherited; idempotent), one torch thread,
    and its own isolated-venv clients (the parent's pipes are not shared with siblings)."""
    import torch

    from robustbench_sys.procs import die_with_parent

    die_with_parent()
    tune_allocator()
    torch.set_num_threads(1)
    iso: Any = sys.modules.get("robustbench_sys.noises.system.isolated")   # its module-level worker registry
    if iso is not None:
        _W["inherited_isolated"] = iso._WORKERS   # kept referenced, never used or closed here
        iso._WORKERS, iso._WORKERS_LOCK = {}, threading.Lock()


def _fill(task: list[tuple[int, int]]) -> list[tuple[int, int, np.ndarray | None, str]]:
    """Preprocess ``(slot, index)`` pairs into the shared buffer; returns ``(slot, index, x, err)``
    with ``x`` None when the image is in the buffer (else the odd-shaped array, or None on error)."""
    ds, buf = _W["ds"], _W["buf"]
    out: list[tuple[int, int, np.ndarray | None, str]] = []
    for slot, i in task:
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


def _lockstep(ds: Images, batch_size: int, workers: int):
    from concurrent.futures import ProcessPoolExecutor

    size = ds.pipeline.input_size
    shape = (batch_size, 3, size, size)
    buf = mmap.mmap(-1, 4 * batch_size * 3 * size * size)   # MAP_SHARED | MAP_ANONYMOUS: shared with forks
    view = np.frombuffer(buf, dtype=np.float32).reshape(shape)
    workers = min(workers, batch_size, len(ds))
    chunk = max(1, -(-batch_size // (4 * workers)))   # a few tasks per worker: balanced, cheap to send
    with serial_opencv():
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_init_lockstep,
                                   initargs=(ds, buf, shape))
        pool.submit(int).result()   # fork every worker now, inside the block
    try:
        for start in range(0, len(ds), batch_size):
            idx = list(enumerate(range(start, min(start + batch_size, len(ds)))))
            items: list[tuple[int, np.ndarray | None, str] | None] = [None] * len(idx)
            for part in pool.map(_fill, [idx[k:k + chunk] for k in range(0, len(idx), chunk)]):
                for slot, i, x, err in part:
                    items[slot] = (i, view[slot] if x is None and not err else x, err)
            yield items
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        del view
        try:
            buf.close()
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
    """Normalise with the pipeline's mean / std and run the (deployed) model."""

    schema = PER_IMAGE_SCHEMA
    error_fields: dict = {}

    def __init__(self, unit, model):
        self.pipeline, self.model = unit.pipeline, model
        self.device = getattr(unit, "device", "cpu")

    def prepare_spec(self, spec: dict, previous: dict) -> dict:
        return spec

    def score(self, x, samples):
        import torch

        from robustbench_sys.devices import to_device

        with torch.inference_mode():
            x = to_device(x, self.device)   # normalise, forward and softmax on the device
            probs = torch.softmax(self.model(self.pipeline.normalise(x)).float(), dim=1)
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
        scored = {i: (top_i[j].tolist(), top_p[j].tolist(), extras[j]) for j, (i, _) in enumerate(ok)}
    rows = []
    for i, _, err in batch:
        s = todo[i]
        if i not in scored:
            log.warning("skip image %s: %s", s.path, err)
            rows.append({**image_row(unit, s, run_id, -1, [], [], "error: " + err), **strategy.error_fields})
            continue
        ti, tp, extra = scored[i]
        rows.append({**image_row(unit, s, run_id, ti[0], ti, tp, "ok"), **extra})
    store.append_batch(unit.id, pd.DataFrame(rows), schema=strategy.schema)


def run_unit(store: ResultsStore, unit, strategy: Strategy, *, run_id: str, batch_size: int, workers: int,
             progress: bool, deploy_info: dict | None = None) -> None:
    """Score the images of ``unit`` that have no stored row yet (see module doc)."""
    todo = start_unit(store, unit, strategy, deploy_info)
    if not todo:
        return
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(unit.dataset), initial=len(unit.dataset) - len(todo), unit="img", dynamic_ncols=True,
                   desc=f"{unit.card.name} {unit.condition.name}", file=sys.stderr, leave=False)
    try:
        for batch in batches(todo, unit.pipeline, batch_size, in_process_workers(unit.pipeline, workers)):
            score_batch(store, unit, strategy, todo, batch, run_id)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
