"""Scale-out: the evaluator's units on a Dask cluster (``evaluate(..., scheduler=...)``,
``robustbench-sys eval --scheduler``).

The plan is the same as in one process (:func:`robustbench_sys.eval.plan.plan_units`); only *where* a pending unit runs
changes.  Each unit is one task: the worker loads the model (kept for the next unit of the same
card), applies the unit's model-side stages (graph change, precision / backend) and runs the
same loop as :meth:`robustbench_sys.eval.runner.Runner.run_pending`, writing its per-image parquet parts
straight into the results store.  The client then summarises every unit as soon as its task
finishes, exactly as the local run does.  So:

- results are identical to a local run (same pipeline, same batches, same parts);
- resuming works the same way: finished units are not submitted again, an interrupted unit
  continues from its last finished batch, whichever worker picks it up;
- each model's reference (clean) unit runs first, because every summary is paired with it.

Scheduler forms: ``"local:N"`` (a LocalCluster of N worker processes, one thread each, bound to
127.0.0.1, no dashboard), ``"tcp://host:8786"`` (a running cluster), ``"jobqueue:PATH"`` (a
SLURM / PBS / SGE / LSF cluster through ``dask-jobqueue``, from the ``.toml`` / ``.yaml`` config
at PATH: :func:`read_jobqueue_config`, :func:`jobqueue_cluster`), or a ``distributed.Client``.
On a real cluster the workers must reach the results store and the images at the same paths
(a shared file system) and have this package, its zoo cache and noises installed.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from robustbench_sys.alloc import tune_allocator
from robustbench_sys.errors import UserError
from robustbench_sys.eval.deploy import Calibration, deploy
from robustbench_sys.eval.plan import Skip
from robustbench_sys.eval.prefix import shardable
from robustbench_sys.eval.runner import Runner
from robustbench_sys.threads import ThreadPlan, applied, apply, owned_cores, plan_threads, recording

log = logging.getLogger("robustbench_sys.eval")

#: per worker process: the loaded model of the last card (see ``Runner.run_pending``)
_WORKER_MODELS: dict = {}


class _Collect(logging.Handler):
    """Keeps the messages a worker logs, to hand them back to the client."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _on_worker(plan: ThreadPlan | None):
    """A task's set-up on a Dask worker: the allocator, the ``dask`` thread ``plan`` (None:
    planned here for the worker's ``nthreads``, a running cluster) and the log messages to hand
    back; yields ``(messages, the thread plan in force)``."""
    tune_allocator()
    if plan is None:
        from distributed import get_worker

        plan = plan_threads("dask", cores=get_worker().state.nthreads)
    if plan.workers and mp.current_process().daemon:   # a daemonic process cannot fork workers
        plan = dataclasses.replace(plan, workers=0)
    in_force = apply(plan)
    collect = _Collect()
    logger = logging.getLogger("robustbench_sys")
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield collect.messages, in_force
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)


def _worker_unit(out: str, unit, batch_size: int, calibration, plan: ThreadPlan | None) -> dict:
    """Runs on a Dask worker: one pending unit into the store at ``out``."""
    with _on_worker(plan) as (messages, in_force):
        runner = Runner(out, batch_size=batch_size, workers=in_force["workers"], progress=False)
        calib = Calibration(calibration, unit.dataset, batch_size)
        # run_pending holds the unit's store lock: a unit that another client's worker is running
        # waits for it, then finds the images stored and runs nothing (ResultsStore.unit_lock)
        reason = runner.run_pending(unit, calib, _WORKER_MODELS)
    return {"unit_id": unit.id, "skip": reason, "log": messages, "worker_pid": os.getpid(), "threads": in_force}


def _worker_shard(out: str, unit, shard: Shard, batch_size: int, calibration, plan: ThreadPlan | None,
                  run_id: str) -> dict:
    """Runs on a Dask worker: the pending images of one shard of an image-side unit, in the
    batches a one-process run gives them, each batch its own parquet part.  Holds the unit's
    store lock shared and the shard's (``<unit id>.<shard name>``) exclusively: another task on
    the same shard waits, then finds its images stored and runs nothing; a whole-unit writer
    (another client's one-process run) and the shards never write the unit at once."""
    from robustbench_sys.devices import reference_flags
    from robustbench_sys.eval.loop import Classify, run_unit
    from robustbench_sys.noises import NotApplicable

    with _on_worker(plan) as (messages, in_force):
        runner = Runner(out, batch_size=batch_size, workers=in_force["workers"], progress=False)
        runner.run_id = run_id   # the client's: one run id for all the unit's rows
        store, reason = runner.store, None
        # the unit held shared (its other shards may run at once, a whole-unit writer may not),
        # the shard exclusively
        with store.unit_lock(unit.id, shared=True), store.unit_lock(f"{unit.id}.{shard.name}"):
            files = set(shard.files) - store.done_files(unit.id)
            if files:
                model = runner.model(unit, _WORKER_MODELS)
                try:
                    deployed = deploy(model, unit, Calibration(calibration, unit.dataset, batch_size),
                                      cache=_WORKER_MODELS)
                except NotApplicable as e:
                    reason = f"not applicable: {e}"
                else:
                    with reference_flags(unit.device):
                        run_unit(store, unit, Classify(unit, deployed), run_id=run_id, batch_size=batch_size,
                                 workers=runner.workers, progress=False, deploy_info=getattr(deployed, "info", {}),
                                 files=files)
    return {"unit_id": unit.id, "skip": reason, "log": messages, "worker_pid": os.getpid(), "threads": in_force,
            "shard": shard.name}


def _worker_group(out: str, units: list, batch_size: int, calibration, plan: ThreadPlan | None, run_id: str,
                  shard: Shard | None = None) -> dict:
    """Runs on a Dask worker: units that share an image-side prefix as one group
    (:func:`robustbench_sys.eval.prefix.run_group`: each image read and decoded once for all of
    them, every unit's rows those of the per-unit loop), under the client's run id.

    ``shard``: only the group's images of that shard (every unit of the group), holding each
    unit's lock shared and the shard's (``<unit id>.<shard name>``) exclusively, so the shards of
    one group run at once on several workers, each image decoded once by one of them; another
    task on the same shard waits, then finds its images stored and runs nothing."""
    from robustbench_sys.eval import prefix

    with _on_worker(plan) as (messages, in_force):
        runner = Runner(out, batch_size=batch_size, workers=in_force["workers"], progress=False)
        runner.run_id = run_id
        calib = Calibration(calibration, units[0].dataset, batch_size)
        if shard is None:
            reasons = prefix.run_group(runner, units, calib, _WORKER_MODELS)
        else:
            reasons = prefix.run_group(runner, units, calib, _WORKER_MODELS, files=set(shard.files),
                                       shard=shard.name)
    res = {"unit_ids": [u.id for u in units], "skips": reasons, "log": messages, "worker_pid": os.getpid(),
           "threads": in_force}
    if shard is not None:
        res["shard"] = shard.name
    return res


# ---------------------------------------------------------------------- shards
#: ``ROBUSTBENCH_SYS_SHARD_IMAGES``: images per shard (rounded up to a multiple of the batch
#: size); 0 = one task per unit; unset: split only where a wave has fewer units than workers
SHARD_ENV = "ROBUSTBENCH_SYS_SHARD_IMAGES"


@dataclass(frozen=True)
class Shard:
    """Images ``start`` .. ``start + len(files)`` of a unit's data set (its samples' order)."""

    start: int
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.start}"


def shard_size_env() -> int | None:
    """The ``ROBUSTBENCH_SYS_SHARD_IMAGES`` value (None when unset; one-line :class:`UserError` when bad)."""
    v = os.environ.get(SHARD_ENV, "").strip()
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise UserError(f"{SHARD_ENV}={v}: give the images per Dask task (a whole number; 0 = one task per unit)")
    return n


def plan_shards(unit, pending: int, batch_size: int, size: int) -> list[Shard] | None:
    """``unit``'s data set in shards of ``size`` images rounded up to a multiple of ``batch_size``
    (so on a fresh store every batch is one a one-process run scores), or None (one task) when
    ``size`` is 0, the unit is not :func:`shardable` or its ``pending`` images fit one shard.
    Shards are fixed by the data set, not by what is pending, so their locks are the same for
    every client and every resumed run."""
    if size <= 0 or not shardable(unit):
        return None
    size = -(-size // batch_size) * batch_size
    if pending <= size:
        return None
    files = [s.file for s in unit.dataset.samples]
    return [Shard(k, tuple(files[k:k + size])) for k in range(0, len(files), size)]


#: jobqueue config keys: required, optional (with their types)
JOBQUEUE_KINDS = ("slurm", "pbs", "sge", "lsf")
_JQ_REQUIRED: dict[str, type] = {"kind": str, "cores": int, "memory": str}
_JQ_OPTIONAL: dict[str, type] = {"processes": int, "jobs": int, "walltime": str, "queue": str, "account": str,
                "job_extra": list, "interface": str, "local_directory": str, "log_directory": str,
                "python": str, "job_script_prologue": list}


def read_jobqueue_config(path) -> dict:
    """The cluster config of ``--scheduler jobqueue:PATH`` (``.toml``, ``.yaml`` / ``.yml``), checked:
    ``kind`` (slurm / pbs / sge / lsf), ``cores`` and ``memory`` per job (``"16GB"``) required;
    ``processes`` (Dask worker processes per job, default 1), ``jobs`` (jobs to start, default 1),
    ``walltime``, ``queue``, ``account``, ``job_extra`` (extra scheduler directives), ``interface``,
    ``local_directory``, ``log_directory``, ``python``, ``job_script_prologue`` optional.  A bad
    file or key is a one-line :class:`UserError` naming both."""
    import tomllib

    where = f"--scheduler jobqueue:{path}"
    p = os.fspath(path)
    try:
        text = open(p, encoding="utf-8").read()
    except OSError as e:
        raise UserError(f"{where}: cannot read the config ({e.strerror or e})") from None
    try:
        if p.endswith((".yaml", ".yml")):
            import yaml

            cfg = yaml.safe_load(text)
        elif p.endswith(".toml"):
            cfg = tomllib.loads(text)
        else:
            raise UserError(f"{where}: expected a .toml or .yaml config file")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise UserError(f"{where}: not valid {p.rsplit('.', 1)[-1]}: {str(e).splitlines()[0]}") from None
    except Exception as e:   # yaml.YAMLError (yaml imported lazily)
        if isinstance(e, UserError):
            raise
        raise UserError(f"{where}: not valid yaml: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{where}: expected a table of keys (kind, cores, memory, ...)")
    for key in cfg:
        if key not in _JQ_REQUIRED and key not in _JQ_OPTIONAL:
            raise UserError(f"{where}: unknown key {key!r}; valid: "
                            f"{', '.join([*_JQ_REQUIRED, *_JQ_OPTIONAL])}")
    for key, typ in {**_JQ_REQUIRED, **_JQ_OPTIONAL}.items():
        if key not in cfg:
            if key in _JQ_REQUIRED:
                raise UserError(f"{where}: key {key!r} missing (kind, cores and memory are required)")
            continue
        v: Any = cfg[key]
        ok = isinstance(v, typ) and not isinstance(v, bool)
        if not ok or (typ is list and not all(isinstance(x, str) for x in v)):
            want = "a list of strings" if typ is list else typ.__name__
            raise UserError(f"{where}: key {key!r} = {v!r}: expected {want}")
        if typ is int and v < 1:
            raise UserError(f"{where}: key {key!r} = {v}: must be at least 1")
    if cfg["kind"].lower() not in JOBQUEUE_KINDS:
        raise UserError(f"{where}: key 'kind' = {cfg['kind']!r}: expected one of {', '.join(JOBQUEUE_KINDS)}")
    if cfg["cores"] % cfg.get("processes", 1):
        raise UserError(f"{where}: key 'processes' = {cfg['processes']}: must divide cores = {cfg['cores']}")
    return {**cfg, "kind": cfg["kind"].lower(), "path": p}


def jobqueue_cluster(cfg: dict):
    """The ``dask_jobqueue`` cluster object of a :func:`read_jobqueue_config` config (not scaled:
    no job is submitted yet; ``cluster.job_script()`` shows what would be).  Its scheduler runs
    in this process; each worker gets ``cores / processes`` threads (the ``dask`` plan of
    :mod:`robustbench_sys.threads`) and the environment of :func:`worker_env`."""
    where = f"--scheduler jobqueue:{cfg['path']}"
    try:
        import dask_jobqueue
    except ImportError as e:
        raise UserError(f"{where}: dask-jobqueue is not installed ({e}); pip install "
                        "'robustbench-sys[cluster]'") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
           "sge": dask_jobqueue.SGECluster, "lsf": dask_jobqueue.LSFCluster}[cfg["kind"]]
    kw: dict = {"cores": cfg["cores"], "memory": cfg["memory"], "processes": cfg.get("processes", 1),
                "scheduler_options": {"dashboard_address": ":0"}}   # any free port, not a fixed 8787
    for key in ("walltime", "queue", "interface", "local_directory", "log_directory", "python"):
        if key in cfg:
            kw[key] = cfg[key]
    if "account" in cfg:   # SLURM / PBS call it account, SGE / LSF project
        kw["account" if cfg["kind"] in ("slurm", "pbs") else "project"] = cfg["account"]
    if "job_extra" in cfg:
        kw["job_extra_directives"] = cfg["job_extra"]
    threads = cfg["cores"] // cfg.get("processes", 1)
    kw["job_script_prologue"] = [*cfg.get("job_script_prologue", []),
                                 *(f"export {k}={v}" for k, v in worker_env(threads).items())]
    try:
        return cls(**kw)
    except (ValueError, TypeError) as e:
        raise UserError(f"{where}: {e}") from None


def worker_env(threads: int) -> dict[str, str]:
    """The thread environment of a worker process of ``threads`` cores: OpenMP / MKL / OpenBLAS
    as its ``dask`` thread plan says (:mod:`robustbench_sys.threads`; that many threads, none when
    ``ROBUSTBENCH_SYS_THREADS=naive``; the allocator variables of :mod:`robustbench_sys.alloc`
    come with the tool's own environment)."""
    return plan_threads("dask", cores=threads).env()


def _parse(scheduler) -> tuple[str, object]:
    if not isinstance(scheduler, str):
        return "client", scheduler
    if scheduler.startswith("jobqueue:"):
        return "jobqueue", read_jobqueue_config(scheduler.split(":", 1)[1])
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"--scheduler {scheduler}: give local:N with N >= 1 worker processes")
        return "local", n
    if "://" in scheduler:
        return "address", scheduler
    raise UserError(f"--scheduler {scheduler}: expected local:N (a local Dask cluster), jobqueue:CONFIG.toml "
                    "(a SLURM / PBS / SGE / LSF cluster) or a scheduler address such as tcp://host:8786")


def check_scheduler(scheduler) -> None:
    """Raise the one-line :class:`UserError` a bad ``scheduler`` gets, without starting anything."""
    _parse(scheduler)


@contextmanager
def _client(scheduler):
    kind, arg = _parse(scheduler)
    if kind == "client":
        yield arg, None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise UserError(f"--scheduler {scheduler}: Dask distributed is not installed ({e}); "
                        "pip install 'robustbench-sys[cluster]'") from None
    if kind == "jobqueue":
        assert isinstance(arg, dict)
        cluster = jobqueue_cluster(arg)
        try:
            cluster.scale(jobs=arg.get("jobs", 1))
            with Client(cluster) as client:
                yield client, plan_threads("dask", cores=arg["cores"] // arg.get("processes", 1))
        finally:
            cluster.close()
        return
    if kind == "local":
        assert isinstance(arg, int)
        plan = plan_threads("dask", cores=max(1, owned_cores() // arg))
        # the plan's OMP / MKL / OpenBLAS variables and wait policy are set before the worker process starts
        cluster = LocalCluster(n_workers=arg, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=40, env=plan.env())
        try:
            with Client(cluster) as client:
                yield client, plan
        finally:
            cluster.close()
        return
    try:
        client = Client(arg, timeout=30)
    except (OSError, TimeoutError) as e:
        raise UserError(f"--scheduler {arg}: cannot reach the Dask scheduler ({e})") from None
    try:
        yield client, None
    finally:
        client.close()


def run_dask(runner, plans: list[list], scheduler, *, calibration, batch_size: int) -> list[list]:
    """Run the pending units of ``plans`` (one list per model, reference first) on Dask and
    summarise them; returns, per model, the units that have a summary (as the local run).

    Units that share an image-side prefix (:mod:`robustbench_sys.eval.prefix`) run as groups, each
    image read once per group and decoded once per decoder.  A group whose units are all :func:`shardable` is split by
    images: one task per image shard of the whole group (every unit, the shard's images; shards
    as for a single unit, :func:`plan_shards` of its first unit), or one task for the whole group
    when it fits one shard; its units are summarised once the group's last shard is done.  Any
    other group (a model-side stage, an attack or a speed measurement in it), and every group
    when ``SHARD_ENV=0``, is cut by units into one part per worker.  Any other unit is one task,
    or, when it is large, one task per shard of its images, summarised once all its shards are
    done.  Shard size: :data:`SHARD_ENV` images when set, else (unset) a group is spread over
    every worker (one shard each: no image is decoded twice, and groups of unequal size even
    out), and a single unit is split only when a wave has fewer tasks than the cluster has
    workers (e.g. the references' wave)."""
    from distributed import as_completed

    store = runner.store
    out = str(store.root)
    todo = {u.id: u for units in plans for u in units if not runner.complete(u)}
    skipped: set[str] = set()
    refs = {units[0].card.name: units[0] for units in plans}
    fixed = shard_size_env()

    def summarise(unit) -> None:
        runner.summarise(unit, refs[unit.card.name])

    with _client(scheduler) as (client, plan):
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))

        def unit_pending(u) -> list:
            done = store.done_files(u.id)
            return [s for s in u.dataset.samples if s.file not in done]

        def shards_of(items: list[list], tasks: int | None) -> list[list[Shard] | None]:
            """Per item (a unit, or a shared-prefix group: a list of units of one data set), its
            image shards or None (one task).  Unless :data:`SHARD_ENV` fixes the size, in whole
            batches: ``tasks`` (the wave's other tasks and these items, before any split) enough
            for every worker, one size for all items; None: each item split over every worker."""
            left = [max(len(unit_pending(u)) for u in it) for it in items]

            def size(n: int) -> int:
                if fixed is not None:
                    return fixed
                per = n_workers if tasks is None else -(-n_workers // max(1, tasks))
                return 0 if per <= 1 else max(1, -(-(n if tasks is None else max(left)) // per))

            return [plan_shards(it[0], n, batch_size, size(n)) if all(shardable(u) for u in it) else None
                    for it, n in zip(items, left)]

        def cut(g: list) -> list[list]:
            """A group cut into one part per worker (round robin; parts of two units or more)."""
            k = max(1, min(n_workers, len(g) // 2))
            return [g[i::k] for i in range(k)]

        def done(unit, res) -> None:
            with recording({"process": res["threads"], "client": applied()}):
                summarise(unit)   # its provenance records the thread plan of the worker that ran it

        def run(units) -> None:
            from robustbench_sys.eval import prefix

            pending = [u for u in units if runner.pending(u)]
            for u in units:
                if u not in pending:      # rows complete (an earlier run), summary missing
                    summarise(u)
            groups = prefix.plan_groups(runner, pending)
            grouped = {u.id for g in groups for u in g}
            rest = [u for u in pending if u.id not in grouped]
            # a group of image-side units is split by images (each image still decoded once, by
            # one worker; so, unless SHARD_ENV fixes the size, every such group is spread over all
            # workers, which also evens out groups of unequal size), unless shards are off
            # (SHARD_ENV=0); any other group by units
            by_images = [g for g in groups if fixed != 0 and all(shardable(u) for u in g)]
            by_units = [part for g in groups if not any(g is h for h in by_images) for part in cut(g)]
            group_shards = shards_of(by_images, None)
            tasks = sum(len(p) if p else 1 for p in group_shards) + len(by_units) + len(rest)
            unit_shards = shards_of([[u] for u in rest], tasks)
            futures: dict = {}
            open_shards: dict[str, int] = {}   # unit id (a unit) or first unit id (a group): shards left
            for g, parts in [*zip(by_images, group_shards), *((g, None) for g in by_units)]:
                key = f"robustbench-sys-{g[0].card.name}-group-{g[0].id}-{runner.run_id}"
                if parts is None:
                    futures[client.submit(_worker_group, out, g, batch_size, calibration, plan, runner.run_id,
                                          pure=False, key=key)] = g
                    continue
                open_shards[g[0].id] = len(parts)
                for sh in parts:
                    futures[client.submit(_worker_group, out, g, batch_size, calibration, plan, runner.run_id, sh,
                                          pure=False, key=f"{key}-{sh.name}")] = g
            for u, parts in zip(rest, unit_shards):
                key = f"robustbench-sys-{u.card.name}-{u.id}-{runner.run_id}"
                if parts is None:
                    futures[client.submit(_worker_unit, out, u, batch_size, calibration, plan, pure=False,
                                          key=key)] = u
                    continue
                open_shards[u.id] = len(parts)
                for sh in parts:
                    futures[client.submit(_worker_shard, out, u, sh, batch_size, calibration, plan, runner.run_id,
                                          pure=False, key=f"{key}-{sh.name}")] = u
            for fut in as_completed(list(futures)):
                what = futures[fut]
                res = fut.result()     # a failed task raises here, after the finished units were summarised
                for line in res["log"]:
                    log.info("%s", line)
                where = f" {res['shard']}" if "shard" in res else ""
                if isinstance(what, list):   # a group (or one shard of it)
                    for unit in what:
                        log.info("  %s / %s (group of %d)%s: ran on Dask worker pid %d", unit.card.name,
                                 unit.condition.name, len(what), where, res["worker_pid"])
                        if unit.id in res["skips"] and unit.id not in skipped:
                            runner.skip(Skip(unit.card.name, unit.condition.name, res["skips"][unit.id]))
                            skipped.add(unit.id)
                    if what[0].id in open_shards:
                        open_shards[what[0].id] -= 1
                        if open_shards[what[0].id]:
                            continue   # its units summarised after the group's last shard
                    for unit in what:
                        if unit.id not in skipped:
                            done(unit, res)
                    continue
                unit = what
                log.info("  %s / %s%s: ran on Dask worker pid %d", unit.card.name, unit.condition.name, where,
                         res["worker_pid"])
                if res["skip"]:
                    if unit.id not in skipped:
                        runner.skip(Skip(unit.card.name, unit.condition.name, res["skip"]))
                        skipped.add(unit.id)
                    continue
                if unit.id in open_shards:
                    open_shards[unit.id] -= 1
                    if open_shards[unit.id] or unit.id in skipped:
                        continue   # summarised after its last shard
                done(unit, res)

        # references first: every other summary pairs its rows with them
        run([units[0] for units in plans if units[0].id in todo])
        run([u for units in plans for u in units[1:] if u.id in todo])
    return [[u for u in units if u.id not in skipped and store.has_summary(u.id, u.condition.name)]
            for units in plans]
