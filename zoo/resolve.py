"""Any model as a :class:`~zoo.ModelCard`: zoo names and ``.toml`` cards, ``timm:NAME[.TAG]``,
``torchvision:NAME[.WEIGHTS]``, an ``.onnx`` file, a ``python:pkg.module:factory``, or an
``nn.Module`` in memory (:func:`resolve_model`).

Preprocessing comes from the card, from timm's pretrained_cfg of the tag
(:func:`timm_preprocess`), from the torchvision weights' transforms
(:func:`torchvision_preprocess`), or, where the model itself cannot say (ONNX, a module, a
factory), from the caller's ``preprocess=`` (:func:`preprocess_from`: a card, a
:class:`zoo.Preprocess` or Pipeline, or a timm data-config dict).  Anything that cannot be
resolved is a one-line :class:`zoo.CardError` saying how to give it.

Identity (what unit ids hash): the card name and the sha256 of the weights file; an in-memory
module's is ``name`` (default its class name) and :func:`state_dict_sha256`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from robustbench_sys.zoo import CardError, ModelCard, Preprocess, UnknownModel, get_card
from robustbench_sys.zoo.preprocessing import (
    INTERPOLATION,
    bad_where,
    check_registered,
    exact_crop_pct,
    from_data_config,
    make_preprocess,
    timm_cfg,
    timm_preprocess,
    torchvision_preprocess,
    torchvision_weights,
)
from robustbench_sys.zoo.python_model import call_factory
from robustbench_sys.zoo.weights import WeightsUnavailable, cached, load_state_dict, sha256_file

PREPROCESS_HELP = ("a zoo card name or .toml card, a zoo.Preprocess / Pipeline, or a timm data config dict "
                   "(timm.data.resolve_data_config)")


def preprocess_from(obj: Any, where: str = "preprocess") -> tuple[Preprocess, str, str | None]:
    """``(preprocess, where it came from, benchmark of a card or None)`` from ``preprocess=``: a
    zoo card (object, name or ``.toml`` path), a :class:`zoo.Preprocess` or Pipeline (its image
    half; a Pipeline with a corruption or model-side stage is refused), a timm data-config dict,
    or a torchvision ``ImageClassification`` transform."""
    if isinstance(obj, ModelCard):
        return obj.preprocess, f"card {obj.name}", obj.benchmark
    if isinstance(obj, Preprocess):
        extra = {k: getattr(obj, k) for k in ("corrupt", "graph", "deploy") if getattr(obj, k, None)}
        if extra:
            raise CardError(f"{where}: the pipeline has noise stages {extra}; give the reference pipeline "
                            "(Pipeline.from_card) or a zoo.Preprocess")
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(Preprocess)}
        return make_preprocess(bad_where(where), **fields), "given", None
    if isinstance(obj, dict):
        return from_data_config(obj, f"{where} (timm data config)"), "given (timm data config)", None
    if isinstance(obj, (str, os.PathLike)):
        try:
            card = get_card(obj)
        except UnknownModel:
            raise CardError(f"{where} {obj}: no such card or .toml file; give {PREPROCESS_HELP}") from None
        return card.preprocess, f"card {card.path or card.name}", card.benchmark
    if all(hasattr(obj, a) for a in ("crop_size", "resize_size", "interpolation", "mean", "std")):
        class _W:   # a torchvision ImageClassification preset, given directly
            name = "transforms"

            @staticmethod
            def transforms():
                return obj
        return torchvision_preprocess(_W()), "given (torchvision transforms)", None
    raise CardError(f"{where}: a {type(obj).__name__} is not a preprocessing; give {PREPROCESS_HELP}")


# ---------------------------------------------------------------------- weights / identity
def state_dict_sha256(module) -> str:
    """sha256 over the module's state dict: every entry's name, dtype, shape and raw bytes, in
    state-dict order (deterministic for the same weights)."""
    import torch

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        if not isinstance(v, torch.Tensor):
            h.update(f"{k}:{v!r};".encode())
            continue
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_checkpoint(model, path: Path, where: str) -> None:
    """Load a checkpoint (safetensors or ``torch.load(weights_only=True)``, the state dict possibly
    under ``state_dict`` / ``model``) into ``model``, strictly, with a one-line error if it does not fit."""
    try:
        sd = load_state_dict(path)
    except CardError as e:        # one line naming the file (code in a pickle, unreadable)
        raise CardError(f"{where}: {e}") from None
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CardError(f"{where}: {path} is not a loadable state dict ({msg[:200]})") from None
    if not isinstance(sd, dict):
        raise CardError(f"{where}: {path} holds a {type(sd).__name__}, not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise CardError(f"{where}: checkpoint {path} does not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)


def _infer_num_classes(model, pp: Preprocess, where: str) -> int:
    """The module's class count: its ``num_classes`` attribute, else the width of its output on one
    blank input of the preprocessed size."""
    import torch

    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    channels = 1 if pp.color == "grey" else 3
    with torch.inference_mode():
        out = model(torch.zeros(1, channels, pp.input_size, pp.input_size))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise CardError(f"{where}: the model's output is not (batch, classes) logits")
    return int(out.shape[1])


def _is_module(obj) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def module_card(model, preprocess: Any, *, name: str | None = None, checkpoint=None, arch: str | None = None,
                where: str | None = None) -> ModelCard:
    """A card for an in-memory nn.Module: identity ``name`` (default the class name) and the sha256
    of its state dict (:func:`state_dict_sha256`).  The card holds a private copy, in eval mode,
    on the CPU, fp32; the caller's module is not changed."""
    cls = type(model).__name__
    where = where or f"model={cls}"
    if preprocess is None:
        raise CardError(f"{where}: an nn.Module needs preprocess= ({PREPROCESS_HELP}); on the command line "
                        "--preprocess card.toml")
    pp, source, bench = preprocess_from(preprocess, f"{where} preprocess")
    own = copy.deepcopy(model).to("cpu").float().eval()
    weights: dict = {"source": "module"}
    if checkpoint is not None:
        path = _checkpoint_path(checkpoint, where)
        load_checkpoint(own, path, where)
    weights["sha256"] = state_dict_sha256(own)
    return ModelCard(name=name or cls, arch=arch or f"module:{type(model).__module__}.{cls}",
                     num_classes=_infer_num_classes(own, pp, where), weights=weights, preprocess=pp,
                     description=f"in-memory {cls}", benchmark=bench or "imagenet", preprocess_source=source,
                     module=own)


def _checkpoint_path(checkpoint, where: str) -> Path:
    path = Path(os.path.expanduser(os.fspath(checkpoint))).resolve()
    if not path.is_file():
        raise CardError(f"{where}: checkpoint {checkpoint} does not exist; give --checkpoint PATH to a "
                        ".safetensors or torch.save state dict")
    return path


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("ROBUSTBENCH_SYS_OFFLINE") == "1"


def _checked_checkpoint_card(card: ModelCard, checkpoint, where: str) -> ModelCard:
    """The card with ``file`` weights = the checkpoint (sha256 pinned), after a load test that the
    state dict fits; the loaded model travels with the card (no second load)."""
    from robustbench_sys.zoo import build_arch

    path = _checkpoint_path(checkpoint, where)
    card = dataclasses.replace(card, weights={"source": "file", "path": str(path), "sha256": sha256_file(path)})
    model = build_arch(card)
    load_checkpoint(model, path, where)
    return dataclasses.replace(card, module=model.eval())


def timm_card(spec: str, *, checkpoint=None, preprocess: Any = None, name: str | None = None) -> ModelCard:
    """``timm:NAME[.TAG]``: preprocessing from timm's pretrained_cfg of the tag (or ``preprocess=``);
    weights from ``checkpoint`` or the tag's Hugging Face hub repo (needs network)."""
    where = f"--model {spec}"
    name_tag = spec.split(":", 1)[1]
    try:
        cfg, full = timm_cfg(name_tag)
    except CardError as e:
        raise CardError(f"{where}: {e}") from None
    pp, source = timm_preprocess(name_tag) if preprocess is None else preprocess_from(preprocess, where)[:2]
    card = ModelCard(name=name or spec, arch=f"timm:{full}", num_classes=int(cfg.num_classes or 1000),
                     weights={}, preprocess=pp, description=f"timm {full}", preprocess_source=source)
    if checkpoint is not None:
        return _checked_checkpoint_card(card, checkpoint, where)
    hub = cfg.hf_hub_id or ""
    if not hub:
        raise CardError(f"{where}: timm has no Hugging Face hub weights for {full}; give --checkpoint PATH "
                        "(checkpoint= in Python)")
    weights = {"source": "hf-hub", "repo": hub, "filename": cfg.hf_hub_filename or "model.safetensors",
               "sha256": ""}
    if _offline() and not cached(weights):
        raise CardError(f"{where}: no network here (HF_HUB_OFFLINE / ROBUSTBENCH_SYS_OFFLINE=1) for the hub "
                        f"weights {hub}; give --checkpoint PATH (checkpoint= in Python)")
    return dataclasses.replace(card, weights=weights)


def torchvision_card(spec: str, *, checkpoint=None, preprocess: Any = None, name: str | None = None) -> ModelCard:
    """``torchvision:NAME[.WEIGHTS]``: preprocessing of the named weights' transforms (``DEFAULT``
    when none is named); weights from ``checkpoint`` or torchvision's download URL (needs network)."""
    where = f"--model {spec}"
    arch, _, wname = spec.split(":", 1)[1].partition(".")
    w = torchvision_weights(arch, wname or None)
    if preprocess is None:
        pp, source = torchvision_preprocess(w), f"torchvision {type(w).__name__}.{w.name} transforms"
    else:
        pp, source = preprocess_from(preprocess, where)[:2]
    card = ModelCard(name=name or spec, arch=f"torchvision:{arch}.{w.name}", num_classes=len(w.meta["categories"]),
                     weights={}, preprocess=pp, description=f"torchvision {type(w).__name__}.{w.name}",
                     preprocess_source=source)
    if checkpoint is not None:
        return _checked_checkpoint_card(card, checkpoint, where)
    prefix = w.url.rsplit("/", 1)[-1].rsplit("-", 1)[-1].split(".")[0]
    weights = {"source": "url", "url": w.url, "sha256": prefix if re.fullmatch(r"[0-9a-f]{8,64}", prefix) else ""}
    if _offline() and not cached(weights):
        raise CardError(f"{where}: no network here (HF_HUB_OFFLINE / ROBUSTBENCH_SYS_OFFLINE=1) for {w.url}; "
                        "give --checkpoint PATH (checkpoint= in Python)")
    return dataclasses.replace(card, weights=weights)


def onnx_card(path, *, preprocess: Any = None, name: str | None = None) -> ModelCard:
    """An ``.onnx`` file, evaluated through ONNX Runtime as deployed; preprocessing must be given."""
    from robustbench_sys.zoo.onnx_model import OnnxModel

    p = Path(os.path.expanduser(os.fspath(path))).resolve()
    where = f"--model {path}"
    if not p.is_file():
        raise CardError(f"{where}: no such file")
    if preprocess is None:
        raise CardError(f"{where}: an ONNX model does not carry its preprocessing; give --preprocess card.toml "
                        f"(preprocess= in Python: {PREPROCESS_HELP})")
    pp, source, bench = preprocess_from(preprocess, f"{where} preprocess")
    model = OnnxModel(p)
    return ModelCard(name=name or p.stem, arch="onnx", num_classes=model.num_classes(pp, where),
                     weights={"source": "file", "path": str(p), "sha256": sha256_file(p)}, preprocess=pp,
                     description=f"ONNX model {p.name} (ONNX Runtime, CPUExecutionProvider)",
                     benchmark=bench or "imagenet", preprocess_source=source)


def resolve_model(spec: Any, *, preprocess: Any = None, checkpoint=None, name: str | None = None) -> ModelCard:
    """Any model as a card (see the module doc), its preprocessing checked against the noise
    registry.  ``preprocess`` / ``checkpoint`` / ``name`` apply to models that are not zoo cards;
    a zoo card with them is refused (edit the card instead)."""
    if name is not None and (not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\n")):
        raise CardError(f"name={name!r}: give a non-empty one-line name without '/' or '\\'")
    card = _resolve(spec, preprocess=preprocess, checkpoint=checkpoint, name=name)
    check_registered(card.preprocess, f"model {card.path or card.name}")
    return card


def _resolve(spec: Any, *, preprocess: Any, checkpoint, name: str | None) -> ModelCard:
    if _is_module(spec):
        return module_card(spec, preprocess, name=name, checkpoint=checkpoint)
    if isinstance(spec, ModelCard):
        card = spec
    elif isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if s.startswith("timm:"):
            return timm_card(s, checkpoint=checkpoint, preprocess=preprocess, name=name)
        if s.startswith("torchvision:"):
            return torchvision_card(s, checkpoint=checkpoint, preprocess=preprocess, name=name)
        if s.startswith("python:"):
            model = call_factory(s.split(":", 1)[1])
            return module_card(model, preprocess, name=name or s, checkpoint=checkpoint, arch=s,
                               where=f"--model {s}")
        if s.endswith(".onnx"):
            if checkpoint is not None:
                raise CardError(f"--model {s}: an ONNX file holds its weights; drop --checkpoint")
            return onnx_card(s, preprocess=preprocess, name=name)
        card = get_card(s)
    else:
        raise CardError(f"--model: a {type(spec).__name__} is not a model; give a zoo name, a .toml card, "
                        "timm:NAME, torchvision:NAME, a .onnx file, python:pkg.module:factory or an nn.Module")
    given = [k for k, v in (("preprocess", preprocess), ("checkpoint", checkpoint), ("name", name)) if v is not None]
    if given:
        raise CardError(f"--model {card.name}: a zoo card has its own name, [weights] and [preprocess]; drop "
                        f"{', '.join(given)} or edit the card ({card.path or 'zoo add'})")
    if card.library == "python" and not card.weights:
        model = call_factory(card.arch_name)
        return dataclasses.replace(module_card(model, card, name=card.name, arch=card.arch), path=card.path,
                                   tags=card.tags, description=card.description)
    return card


__all__ = ["INTERPOLATION", "WeightsUnavailable", "call_factory", "exact_crop_pct", "from_data_config",
           "load_checkpoint", "module_card", "onnx_card", "preprocess_from", "resolve_model", "state_dict_sha256",
           "timm_card", "timm_preprocess", "torchvision_card", "torchvision_preprocess", "torchvision_weights"]
