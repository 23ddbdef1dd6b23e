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
127.0.0.1, no dashboard), ``"tcp://host:8786"`` (a running cluster), or a ``distributed.Client``.
On a real cluster the workers must reach the results store and the images at the same paths
(a shared file system) and have this package, its zoo cache and noises installed.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from robustbench_sys.alloc import tune_allocator
from robustbench_sys.errors import UserError
from robustbench_sys.eval.deploy import Calibration
from robustbench_sys.eval.plan import Skip
from robustbench_sys.eval.runner import Runner

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


def _parse(scheduler) -> tuple[str, object]:
    if not isinstance(scheduler, str):
        return "client", scheduler
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
    raise UserError(f"--scheduler {scheduler}: expected local:N (a local Dask cluster) or a scheduler "
                    "address such as tcp://host:8786")


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
    if kind == "local":
        threads = max(1, (os.cpu_count() or 1) // arg)
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
