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

import logging
import os
from contextlib import contextmanager
from typing import Any

from robustbench_sys.alloc import tune_allocator
from robustbench_sys.errors import UserError
from robustbench_sys.eval.deploy import Calibration
from robustbench_sys.eval.plan import Skip
from robustbench_sys.eval.runner import Runner
from robustbench_sys.procs import available_cores

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


def _worker_unit(out: str, unit, batch_size: int, calibration, torch_threads: int | None) -> dict:
    """Runs on a Dask worker: one pending unit into the store at ``out``."""
    import torch

    tune_allocator()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    collect = _Collect()
    logger = logging.getLogger("robustbench_sys")
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        runner = Runner(out, batch_size=batch_size, workers=0, progress=False)
        calib = Calibration(calibration, unit.dataset, batch_size)
        # run_pending holds the unit's store lock: a unit that another client's worker is running
        # waits for it, then finds the images stored and runs nothing (ResultsStore.unit_lock)
        reason = runner.run_pending(unit, calib, _WORKER_MODELS)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return {"unit_id": unit.id, "skip": reason, "log": collect.messages, "worker_pid": os.getpid()}


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
    in this process; each worker gets ``cores / processes`` threads and the environment of
    :func:`worker_env`."""
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
    at that many threads (the allocator variables of :mod:`robustbench_sys.alloc` come with
    the tool's own environment)."""
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


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
                yield client, arg["cores"] // arg.get("processes", 1)
        finally:
            cluster.close()
        return
    if kind == "local":
        assert isinstance(arg, int)
        threads = max(1, available_cores() // arg)
        cluster = LocalCluster(n_workers=arg, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=40)
        try:
            with Client(cluster) as client:
                yield client, threads
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
    summarise them; returns, per model, the units that have a summary (as the local run)."""
    from distributed import as_completed

    store = runner.store
    out = str(store.root)
    todo = {u.id: u for units in plans for u in units if not runner.complete(u)}
    skipped: set[str] = set()
    refs = {units[0].card.name: units[0] for units in plans}

    def summarise(unit) -> None:
        runner.summarise(unit, refs[unit.card.name])

    with _client(scheduler) as (client, threads):
        def run(units) -> None:
            pending = [u for u in units if runner.pending(u)]
            for u in units:
                if u not in pending:      # rows complete (an earlier run), summary missing
                    summarise(u)
            futures = {client.submit(_worker_unit, out, u, batch_size, calibration, threads, pure=False,
                                     key=f"robustbench-sys-{u.card.name}-{u.id}-{runner.run_id}"): u for u in pending}
            for fut in as_completed(list(futures)):
                unit = futures[fut]
                res = fut.result()     # a failed unit raises here, after the finished ones were summarised
                for line in res["log"]:
                    log.info("%s", line)
                log.info("  %s / %s: ran on Dask worker pid %d", unit.card.name, unit.condition.name,
                         res["worker_pid"])
                if res["skip"]:
                    runner.skip(Skip(unit.card.name, unit.condition.name, res["skip"]))
                    skipped.add(unit.id)
                    continue
                summarise(unit)

        # references first: every other summary pairs its rows with them
        run([units[0] for units in plans if units[0].id in todo])
        run([u for units in plans for u in units[1:] if u.id in todo])
    return [[u for u in units if u.id not in skipped and store.has_summary(u.id, u.condition.name)]
            for units in plans]
