"""``python:pkg.module:factory`` models: the user's own module, imported and called on request."""

from __future__ import annotations

import importlib
import re
from typing import Any

from robustbench_sys.zoo.card import CardError


def call_factory(spec: str):
    """Import ``pkg.module`` and call ``factory()`` of ``pkg.module:factory`` (the user's own code,
    asked for by a ``python:`` model); returns the nn.Module."""
    import torch

    if not re.fullmatch(r"[\w.]+:[\w.]+", spec):
        raise CardError(f"python:{spec}: give python:pkg.module:factory")
    mod_name, attr = spec.split(":", 1)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise CardError(f"python:{spec}: cannot import {mod_name} ({e}); is it on PYTHONPATH?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CardError(f"python:{spec}: {mod_name} has no {attr}")
        obj = getattr(obj, part)
    model = obj()
    if not isinstance(model, torch.nn.Module):
        raise CardError(f"python:{spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model
