"""A run's plan, before it runs: ``robustbench-sys eval ... --plan`` / ``evaluate(..., plan=True)``.

:func:`build_plan` takes the units :func:`robustbench_sys.eval.plan.plan_units` planned (and its
skips) and says, per unit, what a run would do with it, reading the results store without
writing to it (no directory is created, a damaged file is reported, not quarantined):

- ``finished``: a summary and a row for every image: not run again;
- ``summarise``: every image has a row but the summary is missing: summarised only;
- ``partial``: some images have rows (an interrupted run): ``images_left`` are run;
- ``new``: nothing stored yet.

It groups the units by shared pipeline prefix, the work a run can share between them: the
decoder (``decoder``) and the whole image-side pipeline (decoder, colour, resize, geometry,
corruption: ``image_prefix``; the model-side stages graph / deploy and the normalisation are
not part of it), and estimates the wall time from a short calibration on this machine
(:class:`Calibration`): the model's forward on a few real images at the run's batch size, and
the preprocessing of a few images per distinct image-side pipeline.  The estimate says what it
assumes (:meth:`RunPlan.render`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robustbench_sys.eval.plan import Skip, Unit
from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.results.store import ResultsStore

log = logging.getLogger("robustbench_sys.eval")

#: the pipeline fields that are not image-side (computed on the model's input batch)
_MODEL_FIELDS = frozenset({st.name for st in pipeline_stages("model")} | {"mean", "std"})


class ReadOnlyStore(ResultsStore):
    """The results store, read without side effects: no folder is created and a damaged file is
    listed in :attr:`damaged` (a run would quarantine and recompute it) instead of moved."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.damaged: list[str] = []

    def _dir(self, name: str) -> Path:       # the parent creates the folder; a plan only looks
        return self.root / name

    def quarantine(self, path: Path, error: BaseException | str, consequence: str) -> Path | None:
        self.damaged.append(f"{path}: unreadable ({error}); a run would quarantine it and {consequence[5:]}"
                            if consequence.startswith("this ") else f"{path}: unreadable ({error})")
        return None


def image_prefix(pipeline: Pipeline) -> str:
    """The image-side part of a pipeline (what preprocessing computes), as a short text."""
    return pipeline.replace(**{k: None for k in _MODEL_FIELDS - {"mean", "std"}}).describe()


@dataclass
class PlannedUnit:
    model: str
    condition: str
    unit_id: str
    status: str          # new / partial / summarise / finished
    images: int
    images_left: int
    decoder: str
    image_prefix: str
    attack: bool = False
    unit: Unit | None = field(default=None, repr=False)
    #: the image-side pipeline less the decoder (the stages after it), as a short text
    after_decoder: str = ""


@dataclass
class Calibration:
    """What was measured on this machine (seconds; per image unless named otherwise)."""

    images: int = 0
    batch_size: int = 0
    torch_threads: int = 1
    cores: int = 1
    forward: dict[str, float] = field(default_factory=dict)     # model -> s / image at batch_size
    load: dict[str, float] = field(default_factory=dict)        # model -> s to load it
    preprocess: dict[str, float] = field(default_factory=dict)  # image prefix -> s / image, one process
    decode: dict[str, float] = field(default_factory=dict)      # decoder -> s / image (part of preprocess)
    same_decode: dict[str, str] = field(default_factory=dict)   # decoder -> the first one that gave every
    #                                                             calibration image the same array
    seconds: float = 0.0                                        # the calibration itself
    notes: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    """The plan of one ``evaluate`` call; :meth:`table` one row per unit or skip, :meth:`render` text."""

    out: str
    dataset: str
    n_images: int
    batch_size: int
    workers: int
    scheduler: object
    units: list[PlannedUnit]
    skips: list[Skip]
    damaged: list[str]
    calibration: Calibration
    out_exists: bool = False

    # ------------------------------------------------------------------ figures
    def pending(self) -> list[PlannedUnit]:
        return [u for u in self.units if u.images_left]

    def image_conditions(self) -> tuple[int, int]:
        """(all image-conditions of the planned units, those still to compute)."""
        return sum(u.images for u in self.units), sum(u.images_left for u in self.units)

    def unit_seconds(self, u: PlannedUnit, *, forward_scale: float = 1.0, parallel_pre: int = 1) -> float:
        c = self.calibration
        pre = c.preprocess.get(u.image_prefix, 0.0) / max(1, parallel_pre)
        return u.images_left * (pre + c.forward.get(u.model, 0.0) * forward_scale)

    def estimate_local(self) -> float:
        """Seconds in one process: per model its load, then per image preprocessing (spread over
        the lockstep workers, one per core at most) plus the forward (on every core).  With
        shared-prefix execution (:mod:`robustbench_sys.eval.prefix`, on unless
        ``ROBUSTBENCH_SYS_SHARED_PREFIX=0``) an image is preprocessed once per image-side pipeline
        for all the (non-attack) units and models that share it, so that work is charged once (for
        the most images any of them has left), split into the decoding (charged once per decoder)
        and the stages after it (charged once per distinct decoded array and later stages: once
        for decoders that gave every calibration image the same array)."""
        from robustbench_sys.eval import prefix

        c = self.calibration
        par = max(1, min(self.workers, c.cores)) if self.workers else 1
        pending = self.pending()
        models = {u.model for u in pending}
        load = sum(c.load.get(m, 0.0) for m in models)
        if not prefix.enabled():
            return load + sum(self.unit_seconds(u, parallel_pre=par) for u in pending)
        pre = self.shared_preprocess([u for u in pending if not u.attack]) / par
        attacks = sum(self.unit_seconds(u, parallel_pre=par) for u in pending if u.attack)
        forward = sum(u.images_left * c.forward.get(u.model, 0.0) for u in pending if not u.attack)
        return load + pre + attacks + forward

    def shared_preprocess(self, units: list[PlannedUnit]) -> float:
        """Seconds (one process) to preprocess the images left of ``units`` with shared-prefix
        execution: each decoder once per image, the stages after it once per (distinct decoded
        array, stages) for the most images any unit sharing them has left."""
        c = self.calibration
        decoded: dict[str, int] = {}                           # decoder -> images
        after: dict[tuple[str, str], tuple[int, float]] = {}   # (decoded array, later stages) -> (images, s)
        for u in units:
            decoded[u.decoder] = max(decoded.get(u.decoder, 0), u.images_left)
            key = (c.same_decode.get(u.decoder, u.decoder), u.after_decoder or u.image_prefix)
            cost = max(0.0, c.preprocess.get(u.image_prefix, 0.0) - c.decode.get(u.decoder, 0.0))
            n, s = after.get(key, (0, 0.0))
            after[key] = (max(n, u.images_left), max(s, cost))
        return sum(n * c.decode.get(d, 0.0) for d, n in decoded.items()) + sum(n * s for n, s in after.values())

    def estimate_dask(self, n_workers: int, threads_per_worker: int) -> tuple[float, list[float]]:
        """(wall seconds, busy seconds per worker) on ``n_workers`` Dask workers of
        ``threads_per_worker`` torch threads each, preprocessing in the worker's own process.
        The forward time scales from the calibration's threads as 1/threads (linear; small
        models scale worse, so this leans optimistic for them).  References run first (a phase),
        then the rest.  With shared-prefix execution the image-side units (no attack, model-side
        stage or speed timing) of a phase run as image shards spread over every worker: their
        shared preprocessing and forwards split evenly, each worker loading each of their models;
        the other units are assigned whole, longest first, to the least busy worker."""
        from robustbench_sys.eval import prefix

        c = self.calibration
        scale = c.torch_threads / max(1, threads_per_worker)
        busy = [0.0] * n_workers
        wall = 0.0
        pending = self.pending()
        for phase in ([u for u in pending if u.condition == "clean"], [u for u in pending if u.condition != "clean"]):
            split = [u for u in phase if prefix.enabled() and not u.attack and u.unit is not None
                     and prefix.shardable(u.unit)]
            load = [0.0] * n_workers
            if split:
                share = (self.shared_preprocess(split)
                         + sum(u.images_left * c.forward.get(u.model, 0.0) * scale for u in split)) / n_workers
                models = sum(c.load.get(m, 0.0) for m in {u.model for u in split})
                load = [share + models] * n_workers
            whole = [u for u in phase if not any(u is v for v in split)]
            for u in sorted(whole, key=lambda u: -self.unit_seconds(u, forward_scale=scale)):
                i = min(range(n_workers), key=load.__getitem__)
                load[i] += self.unit_seconds(u, forward_scale=scale) + c.load.get(u.model, 0.0)
            wall += max(load, default=0.0)
            busy = [a + b for a, b in zip(busy, load)]
        return wall, busy

    # ------------------------------------------------------------------ output
    def table(self) -> pd.DataFrame:
        rows = [{"model": u.model, "condition": u.condition, "unit_id": u.unit_id, "status": u.status,
                 "images": u.images, "images_left": u.images_left, "decoder": u.decoder,
                 "image_prefix": u.image_prefix, "est_seconds": round(self.unit_seconds(u), 3), "reason": ""}
                for u in self.units]
        rows += [{"model": s.model, "condition": s.condition, "unit_id": "", "status": "skipped", "images": 0,
                  "images_left": 0, "decoder": "", "image_prefix": "", "est_seconds": 0.0, "reason": s.reason}
                 for s in self.skips]
        df = pd.DataFrame(rows)
        df.attrs["plan"] = self
        df.attrs["estimate_seconds"] = self.estimate_local()
        return df

    def render(self) -> str:
        c = self.calibration
        where = "" if self.out_exists else ", it does not exist yet"
        lines = [f"plan (nothing is run; {self.out} is only read{where}):"
                 f" {self.n_images} images of {self.dataset}, batch size {self.batch_size}"]
        for model in dict.fromkeys([u.model for u in self.units] + [s.model for s in self.skips]):
            lines.append(f"\nmodel {model}")
            for u in (x for x in self.units if x.model == model):
                left = {"new": f"{u.images_left} images", "finished": "-",
                        "summarise": "0 images (rows stored; summary only)",
                        "partial": f"{u.images_left} of {u.images} images left"}[u.status]
                lines.append(f"  {u.status:<10} {u.condition:<36} {left}{'  (attack)' if u.attack else ''}")
            for s in (x for x in self.skips if x.model == model):
                lines.append(f"  {'skipped':<10} {s.condition:<36} {s.reason}")
        counts = {k: sum(u.status == k for u in self.units) for k in ("new", "partial", "summarise", "finished")}
        total, todo = self.image_conditions()
        lines.append(f"\nunits: {len(self.units)} planned ({', '.join(f'{v} {k}' for k, v in counts.items())}), "
                     f"{len(self.skips)} skipped")
        lines.append(f"image-conditions: {total} planned, {todo} to compute")
        for what, key in (("decoder", "decoder"), ("image-side pipeline", "image_prefix")):
            groups: dict[str, list[PlannedUnit]] = {}
            for u in self.units:
                groups.setdefault(getattr(u, key), []).append(u)
            lines.append(f"shared prefixes by {what}: {len(groups)} group(s) over {len(self.units)} units")
            for k, us in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                lines.append(f"  {len(us):>4} units ({sum(u.images_left for u in us)} image-conditions to compute)"
                             f"  {k if key == 'decoder' else _short(k)}")
        for d in self.damaged:
            lines.append(f"damaged: {d}")
        lines.append("")
        lines.append(f"estimated wall time: {_hms(self.estimate_local())} in one process "
                     f"(workers={self.workers}, {c.torch_threads} torch threads, {c.cores} cores)")
        if self.scheduler is not None:
            lines += self._render_dask()
        lines.append(f"  an estimate from {c.images} calibration image(s) on this machine ({c.seconds:.1f} s): "
                     + "; ".join(f"{m}: load {c.load.get(m, 0):.2f} s, forward {1e3 * f:.1f} ms/image at batch "
                                 f"{c.batch_size}" for m, f in c.forward.items())
                     + (f"; preprocessing {1e3 * min(c.preprocess.values()):.1f}-{1e3 * max(c.preprocess.values()):.1f}"
                        f" ms/image over {len(c.preprocess)} image-side pipeline(s)" if c.preprocess else ""))
        lines.append("  assumes: every image costs what the calibration images cost; model-side conditions "
                     "(precision / backend / graph / device) forward as fast as the fp32 reference; attacks "
                     "cost one forward per image (their steps are not counted); the lockstep preprocessing "
                     "workers split preprocessing evenly (one per core at most); an image is decoded once "
                     "per decoder and preprocessed once per image-side pipeline for all units and models "
                     "sharing it, and once for decoders that gave the calibration images the same arrays "
                     "(shared prefix; per unit with ROBUSTBENCH_SYS_SHARED_PREFIX=0); the deploy-speed timing "
                     "(50 batch-1 runs per timed unit), quantisation calibration and summaries are not "
                     "counted; the machine is not busier than during the calibration")
        same: dict[str, list[str]] = {}
        for d, first in c.same_decode.items():
            same.setdefault(first, []).append(d)
        lines += [f"  decoders that gave the calibration image(s) the same arrays (their later stages "
                  f"charged once): {' = '.join(ds)}" for ds in same.values() if len(ds) > 1]
        lines += [f"  note: {n}" for n in c.notes]
        return "\n".join(lines)

    def _render_dask(self) -> list[str]:
        c = self.calibration
        n, threads = dask_workers(self.scheduler, c.cores)
        if n is None:
            work = sum(self.unit_seconds(u, forward_scale=c.torch_threads) for u in self.pending())
            return [f"  on Dask ({self.scheduler}): {_hms(work)} of single-thread worker time; divide by the "
                    "number of workers (references first)"]
        wall, busy = self.estimate_dask(n, threads)
        return [f"  on Dask ({self.scheduler}: {n} workers x {threads} torch thread(s)): {_hms(wall)} wall; "
                f"per worker busy {', '.join(_hms(b) for b in busy)}",
                "  (each worker preprocesses in its own process; the forward time is scaled from "
                f"{c.torch_threads} to {threads} thread(s) as 1/threads; references first; image-side units "
                "as image shards over every worker, the others whole, longest first to the least busy worker; "
                "worker start-up (imports) not counted)"]


def dask_workers(scheduler, cores: int) -> tuple[int | None, int]:
    """(workers, torch threads each) a scheduler gives, where the plan can know it without
    connecting: ``local:N`` (cores // N threads), a jobqueue config (jobs x processes, cores /
    processes threads); None for a running cluster's address or a Client."""
    if isinstance(scheduler, str) and scheduler.startswith("local:"):
        n = int(scheduler.split(":", 1)[1])
        return n, max(1, cores // n)
    if isinstance(scheduler, str) and scheduler.startswith("jobqueue:"):
        from robustbench_sys.eval.executors import read_jobqueue_config

        cfg = read_jobqueue_config(scheduler.split(":", 1)[1])
        procs = int(cfg.get("processes", 1))
        return int(cfg.get("jobs", 1)) * procs, max(1, int(cfg["cores"]) // procs)
    return None, 1


def _same_arrays(xs: list, ys: list) -> bool:
    from robustbench_sys.eval.prefix import same_array

    return len(xs) == len(ys) and all(same_array(a, b) for a, b in zip(xs, ys))


def _short(prefix: str, width: int = 110) -> str:
    return prefix if len(prefix) <= width else prefix[:width - 3] + "..."


def _hms(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    h, rem = divmod(int(round(s)), 3600)
    return f"{h}h {rem // 60:02d}m {rem % 60:02d}s" if h else f"{rem // 60}m {rem % 60:02d}s"


def plan_status(store: ResultsStore, unit: Unit) -> tuple[str, int]:
    """(status, images left) of a unit in ``store`` (read-only when it is a :class:`ReadOnlyStore`)."""
    done = store.done_files(unit.id)
    left = sum(s.file not in done for s in unit.dataset.samples)
    if left:
        return ("partial" if left < len(unit.dataset) else "new"), left
    return ("finished" if store.has_summary(unit.id, unit.condition.name) else "summarise"), 0


def build_plan(out, plans: list[list[Unit]], skips: list[Skip], dataset, *, batch_size: int, workers: int,
               scheduler=None, calibrate: bool = True, calibration_images: int = 4) -> RunPlan:
    """The :class:`RunPlan` of a run's units (one list per model, reference first); reads ``out``
    without writing to it; ``calibrate`` measures this machine (a few seconds)."""
    store = ReadOnlyStore(out)
    planned = []
    for units in plans:
        for u in units:
            status, left = plan_status(store, u)
            planned.append(PlannedUnit(u.card.name, u.condition.name, u.id, status, len(u.dataset), left,
                                       u.pipeline.decoder, image_prefix(u.pipeline), bool(u.condition.attack), u,
                                       image_prefix(u.pipeline.replace(decoder=""))))
    rp = RunPlan(str(store.root), dataset.name, len(dataset), batch_size, workers, scheduler, planned, skips,
                 store.damaged, Calibration(), out_exists=store.root.exists())
    if calibrate:
        rp.calibration = calibrate_machine(plans, dataset, min(batch_size, len(dataset)), calibration_images)
    return rp


def calibrate_machine(plans: list[list[Unit]], dataset, batch_size: int, n: int = 4) -> Calibration:
    """Time, on ``n`` real images of ``dataset``: each distinct image-side pipeline's preprocessing
    (one process), each model's load and its reference forward at ``batch_size`` (the ``n``
    images repeated to fill the batch; one warm-up, then the best of two)."""
    import numpy as np
    import torch

    from robustbench_sys import zoo
    from robustbench_sys.procs import available_cores

    t0 = time.perf_counter()
    samples = dataset.samples[:max(1, n)]
    blobs = [s.path.read_bytes() for s in samples]
    c = Calibration(images=len(samples), batch_size=batch_size, torch_threads=torch.get_num_threads(),
                    cores=available_cores())
    pipes: dict[str, Pipeline] = {}
    for units in plans:
        for u in units:
            pipes.setdefault(image_prefix(u.pipeline), u.pipeline)
    # a suite of many image-side pipelines (imagenet-c): fewer images each, a few seconds in all
    per = len(blobs) if len(pipes) <= 16 else 1
    for key, pipe in pipes.items():
        try:
            pipe.preprocess(blobs[0])   # warm-up (imports, first-call set-up), not timed
        except Exception:
            pass
        start = time.perf_counter()
        k = 0
        for b in blobs[:per]:
            try:
                pipe.preprocess(b)
            except Exception as e:  # an unreadable image: an error row in a run, cheap
                c.notes.append(f"calibration image failed in {pipe.describe()}: {type(e).__name__}")
            k += 1
        c.preprocess[key] = (time.perf_counter() - start) / max(1, k)
    arrays: dict[str, list] = {}   # decoder -> its calibration images' arrays
    for pipe in {p.decoder: p for p in pipes.values()}.values():
        start = time.perf_counter()
        try:
            got = [pipe.decode(b) for b in blobs[:per]]
        except Exception:   # its units' preprocessing is charged whole
            continue
        c.decode[pipe.decoder] = (time.perf_counter() - start) / max(1, len(got))
        c.same_decode[pipe.decoder] = next((d for d, xs in arrays.items() if _same_arrays(xs, got)), pipe.decoder)
        if c.same_decode[pipe.decoder] == pipe.decoder:
            arrays[pipe.decoder] = got
    for units in plans:
        ref = units[0]
        start = time.perf_counter()
        try:
            model = zoo.load_model(ref.card)
        except Exception as e:   # the run would say why; the plan estimates without this model
            c.notes.append(f"{ref.card.name}: not loaded for the calibration ({type(e).__name__}: {e}); "
                           "its forward is not in the estimate")
            continue
        c.load[ref.card.name] = time.perf_counter() - start
        try:
            xs = np.stack([ref.pipeline.preprocess(b) for b in blobs])
            x = torch.from_numpy(xs[np.arange(batch_size) % len(xs)])
            device = torch.device(ref.device)
            if hasattr(model, "to"):
                model = model.to(device)
            x = ref.pipeline.normalise(x.to(device))
            times = []
            with torch.inference_mode():
                for _ in range(3):
                    start = time.perf_counter()
                    model(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times.append(time.perf_counter() - start)
            c.forward[ref.card.name] = min(times[1:]) / batch_size
        except Exception as e:
            c.notes.append(f"{ref.card.name}: forward not timed ({type(e).__name__}: {e})")
    c.seconds = time.perf_counter() - t0
    return c
