"""The model-side stages of a unit: graph change, then precision / backend deployment.

Post-training quantisation calibrates on images disjoint from the evaluated ones
(:class:`Calibration`), preprocessed by the model's own reference pipeline.  The calibration
batches stay on the CPU on every ``--device``: the int8 deployments (PT2E x86 / ONNX Runtime
QDQ) quantise and run on the CPU.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from robustbench_sys import noises, zoo
from robustbench_sys.data import Dataset, load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.pipeline import Pipeline

log = logging.getLogger("robustbench_sys.eval")


class Calibration:
    """Calibration batches for post-training quantisation, from images disjoint from the
    evaluation set, preprocessed by the model's own reference pipeline."""

    def __init__(self, spec, evaluated: Dataset, batch_size: int, max_images: int = 64):
        self.spec, self.evaluated, self.batch_size, self.max_images = spec, evaluated, batch_size, max_images
        self._ds: Dataset | None = None

    def dataset(self) -> Dataset:
        if self._ds is None:
            ds = (self.spec if isinstance(self.spec, Dataset) else load_dataset(self.spec)).limit(self.max_images)
            overlap = {s.path.resolve() for s in ds.samples} & {s.path.resolve() for s in self.evaluated.samples}
            if overlap:
                raise UserError(f"--calibration {self.spec}: {len(overlap)} image(s) are also evaluated "
                                "(e.g. {}); give a disjoint calibration set".format(next(iter(overlap)).name))
            self._ds = ds
        return self._ds

    def batches(self, pipeline: Pipeline):
        import torch

        xs = [pipeline.preprocess(s.path.read_bytes()) for s in self.dataset().samples]
        return [pipeline.normalise(torch.from_numpy(np.stack(xs[i:i + self.batch_size])))
                for i in range(0, len(xs), self.batch_size)]


def needs_calibration(deploy_key: str) -> bool:
    return "int8" in deploy_key


def deploy(model, unit, calib: Calibration, cache: dict | None = None):
    """Apply the model-side stages of a unit's pipeline in stage-table order (graph change, then
    precision / backend / device): a ``model`` stage maps the module to a changed module, a ``deploy``
    stage the module and a :class:`~robustbench_sys.noises.system.deploy.DeployContext` to a callable
    model; then place the result on ``unit.device`` (:func:`place`; ``cache`` keeps the loaded
    model's device copy for the next unit).  ``model`` (on the CPU) is never modified.

    Raises :class:`noises.NotApplicable` when a graph change does not apply to the model."""
    pipe = unit.pipeline
    loaded = model
    for st in pipeline_stages("model"):
        key = getattr(pipe, st.name)
        if not key:
            continue
        if st.call == "deploy":
            model = noises.get(key)(model, _context(unit, calib, key))
        else:
            model = noises.get(key)(model)
    return place(model, unit, shared=model is loaded, cache=cache)


def place(model, unit, *, shared: bool = False, cache: dict | None = None):
    """``model`` on ``unit.device``.  An nn.Module is moved (a copy when ``shared``: the loaded
    model, or the user's own module, stays on the CPU; kept in ``cache``), an ONNX model gets the
    device's execution provider; a deployed model (``.info``) ran where its noise put it, and its
    ``info["device"]`` says where (``cpu`` unless the noise placed it: never silently the GPU)."""
    device = getattr(unit, "device", "cpu")
    if device == "cpu":
        return model
    info = getattr(model, "info", None)
    if isinstance(info, dict):
        if info.setdefault("device", "cpu") == "cpu":
            log.info("  %s / %s: %s runs on the CPU (it has no %s path); recorded in deploy_info",
                     unit.card.name, unit.condition.name, unit.pipeline.deploy, device)
        return model
    import torch

    if not isinstance(model, torch.nn.Module):
        return model.to(device)   # an OnnxModel: ONNX Runtime's CUDAExecutionProvider
    if not shared:
        return model.to(device)
    key = ("on-device", device)
    if cache is not None and key in cache:
        return cache[key]
    moved = copy.deepcopy(model).to(device).eval()
    if cache is not None:
        cache[key] = moved
    return moved


def _context(unit, calib: Calibration, key: str):
    import torch

    from robustbench_sys.noises.system.deploy import DeployContext

    ref = Pipeline.from_card(unit.card)
    s = unit.pipeline.input_size
    return DeployContext(example_input=torch.zeros(2, 3, s, s), calibration=lambda: calib.batches(ref),
                         device=getattr(unit, "device", "cpu"),
                         cache_dir=zoo.cache_dir() / "deploy",
                         model_key=f"{unit.card.name}-{unit.weights_sha256[:12]}",
                         calibration_id=f"{calib.spec}:{calib.dataset().fingerprint}"
                         if needs_calibration(key) else "")
