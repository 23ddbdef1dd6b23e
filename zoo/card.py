"""The card data types: :class:`ModelCard`, :class:`Preprocess` and the zoo's errors (a leaf
module: the rest of :mod:`robustbench_sys.zoo` builds on it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustbench_sys.noises.stages import full_key, pipeline_stages

#: architectures defined in this package (``arch = "zoo:NAME"``)
ZOO_ARCHS = ("mnist_lenet5",)


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class CardError(ValueError):
    """A card, model name or preprocessing spec that cannot be used; one line naming the file /
    option and what to do (the CLI prints it as it prints a ``UserError`` and exits 2)."""


@dataclass(frozen=True)
class Preprocess:
    """The training system's preprocessing: the image half of a
    :class:`robustbench_sys.pipeline.Pipeline` (which adds the noise-only stages).

    Stage fields hold full noise keys (:mod:`robustbench_sys.noises.stages`); a bare name (``resize="cv2-area"``)
    is completed with the stage's family."""

    decoder: str = "decoder/pil"
    color: str = "rgb"
    resize: str = "resize/pil-bilinear"
    input_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for st in pipeline_stages():
            if hasattr(self, st.name):
                object.__setattr__(self, st.name, full_key(st.name, getattr(self, st.name)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))


@dataclass(frozen=True)
class ModelCard:
    name: str
    arch: str
    num_classes: int
    weights: dict
    preprocess: Preprocess
    tags: dict = field(default_factory=dict)
    description: str = ""
    path: str = ""
    benchmark: str = "imagenet"
    #: where ``preprocess`` came from: ``"card"`` (its ``[preprocess]`` table), or e.g.
    #: ``"timm pretrained_cfg tf_efficientnet_lite0.in1k"`` when it was resolved
    preprocess_source: str = "card"
    #: an in-memory model (``evaluate(model=nn.Module)``, a ``python:`` factory, a checked
    #: checkpoint): :func:`load_model` returns it instead of building one
    module: Any = field(default=None, compare=False, repr=False)

    @property
    def library(self) -> str:
        return self.arch.split(":", 1)[0]

    @property
    def arch_name(self) -> str:
        return self.arch.split(":", 1)[1] if ":" in self.arch else ""
