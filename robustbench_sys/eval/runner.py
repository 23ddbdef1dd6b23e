"""One evaluation run's context and the steps every executor shares: deploy a unit's model-side
stages, run its batch loop, summarise it.  The one-process path (:func:`run_models`) and the
Dask workers (:mod:`robustbench_sys.eval.executors`) both go through :meth:`Runner.run_pending`."""

from __future__ import annotations

import logging
import os
import time
import uuid

from robustbench_sys import noises, zoo
from robustbench_sys.devices import reference_flags
from robustbench_sys.eval.attack import Attack
from robustbench_sys.eval.deploy import Calibration, deploy
from robustbench_sys.eval.loop import Classify, preprocess_workers, run_unit
from robustbench_sys.eval.plan import Skip, Unit
from robustbench_sys.eval.scoring import summarise
from robustbench_sys.eval.speed import measure_unit, wants_speed
from robustbench_sys.results.store import ResultsStore

log = logging.getLogger("robustbench_sys.eval")


class Runner:
    """A run over one results store: its id, batch settings, and what it skipped."""

    def __init__(self, out: str | os.PathLike, *, batch_size: int = 32, workers: int | None = None,
                 progress: bool = True):
        self.store = ResultsStore(out)
        self.batch_size = batch_size
        self.workers = preprocess_workers() if workers is None else workers
        self.progress = progress
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.skipped: list[dict] = []
        self.deploy_info: dict[str, dict] = {}

    def skip(self, s: Skip) -> None:
        self.skipped.append(s.as_dict())
        log.info("  skip %s / %s: %s", s.model, s.condition, s.reason)

    def pending(self, unit: Unit) -> bool:
        """True while some image of the unit has no stored row yet."""
        done = self.store.done_files(unit.id)
        return any(s.file not in done for s in unit.dataset.samples)

    def complete(self, unit: Unit) -> bool:
        """True when the unit has a readable summary and a readable row for every image.  A damaged
        summary or part file is quarantined on the way (:meth:`ResultsStore.quarantine`), so the
        run that asks recomputes that work."""
        return self.store.has_summary(unit.id, unit.condition.name) and not self.pending(unit)

    def run_pending(self, unit: Unit, calib: Calibration, models: dict) -> str | None:
        """Deploy the model-side stages of one pending unit and run its loop.  ``models`` caches the
        loaded model (one at a time, by card name and weights sha256).  Returns a skip reason (a graph
        change that does not apply to this model) or None.

        Holds the unit's store lock (:meth:`ResultsStore.unit_lock`) throughout: a second process
        on the same unit waits, then finds the images already stored and runs nothing."""
        with self.store.unit_lock(unit.id):
            if not self.pending(unit):     # another process finished it while this one waited
                return None
            return self._run_pending(unit, calib, models)

    @staticmethod
    def model(unit: Unit, models: dict):
        """The unit's loaded model, from ``models`` (one at a time, by card name and weights sha256)."""
        key = (unit.card.name, unit.weights_sha256)   # two modules may share a (class) name
        model = models.get(key)
        if model is None:
            models.clear()
            model = models[key] = zoo.load_model(unit.card)
        return model

    def _run_pending(self, unit: Unit, calib: Calibration, models: dict) -> str | None:
        model = self.model(unit, models)
        try:
            deployed = deploy(model, unit, calib, cache=models)   # on unit.device (robustbench_sys.devices)
        except noises.NotApplicable as e:
            return f"not applicable: {e}"
        self.deploy_info[unit.id] = getattr(deployed, "info", {})
        strategy = Attack(unit, deployed, self.store) if unit.condition.attack else Classify(unit, deployed)
        with reference_flags(unit.device):   # strict fp32 on a GPU (TF32 / cuDNN benchmark off), restored after
            if wants_speed(unit):   # the deployment's latency / throughput, as it runs (eval.speed)
                self.deploy_info[unit.id] = {**self.deploy_info[unit.id], "speed": self._speed(unit, deployed)}
            run_unit(self.store, unit, strategy, run_id=self.run_id, batch_size=self.batch_size,
                     workers=self.workers, progress=self.progress, deploy_info=self.deploy_info[unit.id])
        return None

    def _speed(self, unit: Unit, deployed) -> dict:
        """The unit's speed record: the one a killed run of this unit already stored, else measured now."""
        kept = self.store.unit_or_empty(unit.id).get("deploy_info", {}).get("speed")
        return kept or measure_unit(deployed, unit, self.batch_size)

    def summarise(self, unit: Unit, ref: Unit) -> None:
        """Write the unit's summary row (paired with the model's reference unit)."""
        with self.store.unit_lock(unit.id):   # no other writer adds rows while they are summarised
            info = self.deploy_info.get(unit.id)
            if info is None:   # deployed by another or an earlier, interrupted run: its unit spec kept the info
                info = self.store.unit_or_empty(unit.id).get("deploy_info", {})
            self.store.write_summary(unit.id, summarise(self.store, unit, ref, run_id=self.run_id,
                                                        deploy_info=info))


def run_local(runner: Runner, units: list[Unit], calib: Calibration) -> list[Unit]:
    """One model's units in this process, reference first; returns the units with a summary."""
    return run_models(runner, [units], calib)[0]


def run_models(runner: Runner, plans: list[list[Unit]], calib: Calibration) -> list[list[Unit]]:
    """The units of several models (one list per model, reference first) in this process, model
    by model; returns each model's units with a summary.

    Units that share an image-side prefix, of one model or several, run together as a group
    (:mod:`robustbench_sys.eval.prefix`: each image decoded once, preprocessed once per image-side
    pipeline, scored by every unit's deployed model): when the first of them comes up, the whole
    group runs; the units of a later model it completed are summarised in that model's turn, after
    its reference."""
    from robustbench_sys.eval import prefix

    models: dict = {}   # the loaded model, shared by the units (see Runner.run_pending)
    groups = {u.id: g for g in prefix.plan_groups(runner, [u for units in plans for u in units]) for u in g}
    reasons: dict[str, str] = {}
    finished_all = []
    for units in plans:
        ref, finished = units[0], []
        for unit in units:
            if not runner.complete(unit):
                group = groups.get(unit.id)
                if group is not None:
                    for u in group:
                        groups.pop(u.id, None)
                    reasons.update(prefix.run_group(runner, group, calib, models))
                reason = reasons.get(unit.id)
                if reason is None and runner.pending(unit):
                    reason = runner.run_pending(unit, calib, models)
                if reason:
                    runner.skip(Skip(unit.card.name, unit.condition.name, reason))
                    continue
                # Summarised as soon as the unit is complete, so a crash later in the run
                # (a native backend, an interrupt) never costs a finished unit its summary.
                runner.summarise(unit, ref)
            finished.append(unit)
        finished_all.append(finished)
    return finished_all
