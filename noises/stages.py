"""The one stage table: every pipeline stage a noise can replace, under one name.

A stage's ``name`` is at once the registry stage of its noises, the field of
:class:`~robustbench_sys.pipeline.Pipeline` (and of a model card's ``[preprocess]``) that holds
the noise key, and the key a suite file sweeps (``[sweep] stage = "resize"``,
``[product.decoder]``).  ``families`` are the registry families whose noises replace the stage
(a noise's stage follows from its family), ``side`` says whether it changes the image or the
model, and ``call`` how the pipeline calls it:

====== ======================================================================
call   signature
====== ======================================================================
bytes  ``fn(encoded bytes) -> HxWx3 uint8``                         (decoder)
image  ``fn(HxWx3 uint8) -> HxWx3 uint8``, before the resize          (color)
resize ``fn(HxWxC, (width, height)) -> HxWxC``, then the centre crop (resize)
crop   ``fn(HxWxC crop, rng=...) -> HxWxC crop``                    (corrupt)
model  ``fn(nn.Module) -> nn.Module``                                 (graph)
deploy ``fn(nn.Module, DeployContext) -> callable model``  (precision, backend, device)
attack an :class:`~robustbench_sys.noises.adversarial.Attack` (part of a condition, not of the pipeline)
====== ======================================================================

Pipelines hold full noise keys (``decoder/pil``, ``resize/cv2-area``, ``precision/bf16``);
``builtin`` values name no registered noise and are done by the pipeline itself (``rgb``:
the decoder's output unchanged, ``grey``: ITU-R 601-2 luma, ``none``: no resize).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    families: tuple[str, ...]
    side: str                       # "image" or "model"
    call: str
    builtin: tuple[str, ...] = ()
    #: older spellings accepted in suite files
    aliases: tuple[str, ...] = ()

    @property
    def in_pipeline(self) -> bool:
        """False for the attack stage: an attack belongs to the condition, not to the pipeline."""
        return self.call != "attack"


#: in pipeline order
STAGES: tuple[Stage, ...] = (
    Stage("decoder", ("decoder",), "image", "bytes", aliases=("decode",)),
    Stage("color", ("color",), "image", "image", builtin=("rgb", "grey")),
    Stage("resize", ("resize",), "image", "resize", builtin=("none",)),
    Stage("corrupt", ("natural",), "image", "crop"),
    Stage("attack", ("adversarial",), "model", "attack"),
    Stage("graph", ("graph",), "model", "model"),
    Stage("deploy", ("precision", "backend", "device"), "model", "deploy"),
)
_BY_NAME = {n: s for s in STAGES for n in (s.name, *s.aliases)}
_BY_FAMILY = {f: s for s in STAGES for f in s.families}


class UnknownStage(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_stage(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownStage(f"unknown stage {name!r}; valid: {', '.join(s.name for s in STAGES)}") from None


def stage_of_family(family: str) -> Stage:
    """The stage the noises of a registry family replace."""
    try:
        return _BY_FAMILY[family]
    except KeyError:
        raise UnknownStage(f"family {family!r} belongs to no stage; known families: "
                           f"{', '.join(sorted(_BY_FAMILY))} "
                           "(add it to robustbench_sys.noises.stages.STAGES)") from None


def pipeline_stages(side: str | None = None) -> tuple[Stage, ...]:
    """The stages a pipeline holds, in order (``side``: only ``"image"`` or ``"model"`` ones)."""
    return tuple(s for s in STAGES if s.in_pipeline and (side is None or s.side == side))


def full_key(stage: str, value: str | None) -> str | None:
    """The full noise key of a stage value: ``("resize", "cv2-area") -> "resize/cv2-area"``;
    full keys, builtin values and None stay as they are.  A bare name is refused where the
    stage spans several families (``deploy``: give ``precision/...`` or ``backend/...``)."""
    st = get_stage(stage)
    if value is None or value in st.builtin or "/" in value:
        return value
    if len(st.families) != 1:
        raise ValueError(f"{st.name} {value!r}: give the full key, one of "
                         + " or ".join(f"'{f}/{value}'" for f in st.families))
    return f"{st.families[0]}/{value}"


def short_name(value: str | None) -> str | None:
    """A stage value without its family (``resize/cv2-area -> cv2-area``), for display."""
    return value.split("/", 1)[1] if value and "/" in value else value
