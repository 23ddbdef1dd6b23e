"""Planning: which (model, condition, data set) units a run has, and which it skips and why.

A :class:`Unit` is one evaluation; its id hashes exactly what decides its rows (card name,
weights sha256, data-set fingerprint, the full pipeline spec and the attack), so re-running
the same command finds the same units.  For an in-memory ``nn.Module`` the name is the
``name=`` given to :func:`~robustbench_sys.eval.api.evaluate` (default its class name) and the
sha256 that of its state dict (:func:`zoo.resolve.state_dict_sha256`).  An ONNX model skips
the model-side conditions (graph / precision / backend) and attacks, with that reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from robustbench_sys import zoo
from robustbench_sys.data import Dataset
from robustbench_sys.errors import UserError
from robustbench_sys.eval.attack import unavailable
from robustbench_sys.eval.speed import deploy_stage_noises
from robustbench_sys.noises.stages import pipeline_stages
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.suites import Condition


@dataclass(frozen=True)
class Unit:
    """One (model, condition, data set) evaluation."""

    id: str
    card: zoo.ModelCard
    weights_sha256: str
    condition: Condition
    pipeline: Pipeline
    dataset: Dataset
    #: where it computes (:func:`robustbench_sys.devices.resolve_device`); part of the id unless ``cpu``
    device: str = "cpu"
    #: its deployment's speed is measured (:mod:`robustbench_sys.eval.speed`): a unit with a
    #: deploy-stage noise, and the model's reference when the run has one
    timed: bool = False


@dataclass(frozen=True)
class Skip:
    """A condition a model does not run, with the one-line reason."""

    model: str
    condition: str
    reason: str

    def as_dict(self) -> dict:
        return {"model": self.model, "condition": self.condition, "reason": self.reason}


def unit_id(card_name: str, weights_sha: str, dataset: Dataset, pipeline: Pipeline, attack: dict | None = None,
            device: str = "cpu") -> str:
    """The unit's id; the device is hashed in only when it is not ``cpu`` (CPU ids stay as they were)."""
    key = json.dumps([card_name, weights_sha, dataset.fingerprint, pipeline.spec()] + ([attack] if attack else [])
                     + ([{"device": device}] if device != "cpu" else []), sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def reference_pipeline(card: zoo.ModelCard, dataset: Dataset) -> Pipeline:
    """The model's own pipeline; for a generated variant (``dataset.preprocessed_size``) the
    images already are its input crop: decode with PIL, no resize, the card's mean / std."""
    ref = Pipeline.from_card(card)
    return ref if dataset.preprocessed_size is None else ref.replace(decoder="decoder/pil", resize="none")


def plan_units(card: zoo.ModelCard, weights_sha: str, conditions: list[Condition],
               dataset: Dataset, device: str = "cpu", *, speed: bool = True) -> tuple[list[Unit], list[Skip]]:
    """The units of one model on ``device``, reference (clean) first, and the conditions it skips.
    With ``speed`` the deploy units and (when there is one) the reference are ``timed``."""
    ref = reference_pipeline(card, dataset)
    units: list[Unit] = []
    skips: list[Skip] = []
    model_side = {st.name for st in pipeline_stages("model")}
    for cond in conditions:
        if card.library == "onnx" and (cond.attack or model_side & set(cond.overrides)):
            skips.append(Skip(card.name, cond.name, "not applicable: an ONNX model is evaluated through ONNX "
                                                    "Runtime exactly as deployed; model-side noises (graph / "
                                                    "precision / backend) and attacks need a PyTorch module"))
            continue
        if dataset.preprocessed_size is not None and {"decoder", "resize"} & set(cond.overrides):
            skips.append(Skip(card.name, cond.name, "not applicable: --data is a generated variant, already "
                                                    "decoded, resized and cropped"))
            continue
        try:
            pipe = ref.replace(**cond.overrides)
            if pipe.resize_size > 8192:   # the card limit (zoo.preprocessing), with a condition's geometry
                raise ValueError(f"input_size / crop_pct = {pipe.input_size} / {pipe.crop_pct} resizes images "
                                 "to over 8192 pixels a side")
            reason = pipe.check_available()
            if cond.attack and not reason:
                reason = unavailable(cond.attack)
        except (ValueError, KeyError) as e:
            raise UserError(f"suite {cond.suite}, condition {cond.name}: {e}") from None
        if not cond.is_clean and pipe == ref and not cond.attack:
            skips.append(Skip(card.name, cond.name, "same as the model's reference pipeline (ΔACC 0 by definition)"))
            continue
        if reason:
            skips.append(Skip(card.name, cond.name, f"unavailable here: {reason}"))
            continue
        if _device_reference(pipe, device):
            skips.append(Skip(card.name, cond.name, f"same as the model's reference on --device {device} "
                                                    "(strict fp32 on the GPU; ΔACC 0 by definition)"))
            continue
        units.append(Unit(unit_id(card.name, weights_sha, dataset, pipe, cond.attack or None, device), card,
                          weights_sha, cond, pipe, dataset, device))
    if speed and any(deploy_stage_noises(u.pipeline) for u in units):
        units = [replace(u, timed=u.condition.is_clean or bool(deploy_stage_noises(u.pipeline))) for u in units]
    return [u for u in units if u.condition.is_clean] + [u for u in units if not u.condition.is_clean], skips


def _device_reference(pipe: Pipeline, device: str) -> bool:
    """A ``device/*`` deploy noise that is the reference itself on a ``device`` run (``device/cuda-fp32``
    on ``--device cuda``)."""
    if not pipe.deploy or not pipe.deploy.startswith("device/"):
        return False
    from robustbench_sys import noises

    tags = noises.get(pipe.deploy).tags
    return tags.get("numerics") == "fp32" and tags.get("device") == device.split(":")[0]


def check_benchmark(card: zoo.ModelCard, dataset: Dataset) -> None:
    """Refuse a model of another benchmark (an MNIST LeNet on ImageNet images, or the reverse)."""
    bench = "mnist" if dataset.name.split("[")[0] == "mnist-test" else None
    top = max((s.label for s in dataset.samples), default=-1)
    if (bench and card.benchmark != bench) or top >= card.num_classes:
        raise UserError(f"--model {card.name}: a {card.benchmark} model ({card.num_classes} classes) cannot be "
                        f"evaluated on --data {dataset.name} (labels up to {top}"
                        f"{', benchmark ' + bench if bench else ''}); pick a model of that benchmark "
                        "(robustbench-sys zoo list)")


def check_preprocessed(card: zoo.ModelCard, dataset: Dataset, data) -> None:
    size = dataset.preprocessed_size
    if size is not None and size != card.preprocess.input_size:
        raise UserError(f"--model {card.name}: --data {data} holds {size}px crops (a generated variant) but "
                        f"the model takes {card.preprocess.input_size}px input; generate a variant for it with "
                        f"'robustbench-sys generate ... --model {card.name}'")
