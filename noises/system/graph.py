"""Graph noise: an operator's configuration differs between training and deployment.

Stage ``graph``: ``fn(model) -> model``, a changed deep copy (the input model is never
modified).  A model without the layer a noise changes raises
:class:`robustbench_sys.noises.registry.NotApplicable`, never a silent no-op.  Registered names (family
``graph``):

- ``maxpool-ceil``: flips ``ceil_mode`` of every stride-2 ``nn.MaxPool2d`` (SysNoise's
  "ceil mode": trained with floor, deployed with ceil; a model trained with ceil mode, e.g.
  GoogLeNet, is deployed with floor).  ResNets and GoogLeNet have one; MobileNetV2 and
  EfficientNet-Lite have none.
- ``upsample-bilinear`` / ``upsample-nearest``: every ``nn.Upsample`` (incl.
  ``UpsamplingNearest2d`` / ``UpsamplingBilinear2d``) in another 2-D mode is switched to
  bilinear (``align_corners=False``) / nearest.  Functional ``F.interpolate`` calls inside a
  ``forward`` are not rewritten; such models raise NotApplicable.

Example::

    >>> from robustbench_sys.noises import get
    >>> ceil = get("graph/maxpool-ceil")(torchvision.models.resnet18())
    >>> ceil.maxpool.ceil_mode
    True
"""

from __future__ import annotations

import copy
from typing import cast

from torch import nn

from robustbench_sys.noises.registry import NotApplicable, register
from robustbench_sys.noises.system.deploy import torch_versions


def _stride2(m: nn.MaxPool2d) -> bool:
    stride = m.stride if m.stride is not None else m.kernel_size
    pair: tuple[int, ...] = (stride, stride) if isinstance(stride, int) else tuple(stride)
    return 2 in pair


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"graph noises take a torch.nn.Module, got {type(model).__name__}")


@register("graph", "maxpool-ceil",
          params={"layer": "nn.MaxPool2d (stride 2)", "change": "ceil_mode flipped"},
          versions=torch_versions)
def maxpool_ceil(model: nn.Module) -> nn.Module:
    """Flip ``ceil_mode`` of every stride-2 nn.MaxPool2d (floor <-> ceil); a changed copy."""
    _check_module(model)
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d) and _stride2(m)]
    if not targets:
        raise NotApplicable("model has no stride-2 MaxPool2d")
    out = copy.deepcopy(model)
    for name in targets:
        m = cast(nn.MaxPool2d, out.get_submodule(name))
        m.ceil_mode = not m.ceil_mode
    return out


_MODES_2D = ("nearest", "bilinear", "bicubic", "nearest-exact")


def _make_upsample(mode: str):
    def swap(model: nn.Module) -> nn.Module:
        _check_module(model)
        ups = [n for n, m in model.named_modules() if isinstance(m, nn.Upsample)]
        targets = [n for n in ups if model.get_submodule(n).mode != mode
                   and model.get_submodule(n).mode in _MODES_2D]
        if not targets:
            detail = (f"all its nn.Upsample layers are already {mode!r} or not 2-D" if ups
                      else "model has no nn.Upsample (functional F.interpolate calls are not rewritten)")
            raise NotApplicable(f"upsample-{mode}: {detail}")
        out = copy.deepcopy(model)
        for name in targets:
            m = cast(nn.Upsample, out.get_submodule(name))
            m.mode = mode
            m.align_corners = False if mode == "bilinear" else None
        return out

    swap.__doc__ = f"Switch every 2-D nn.Upsample to mode={mode!r}; a changed copy."
    return swap


for _mode in ("bilinear", "nearest"):
    register("graph", f"upsample-{_mode}",
             params={"layer": "nn.Upsample", "mode": _mode,
                     "align_corners": False if _mode == "bilinear" else None},
             versions=torch_versions)(_make_upsample(_mode))
