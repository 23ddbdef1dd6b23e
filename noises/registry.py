"""A timm-style registry of noise generators.

Every noise is registered under ``family/name`` with the pipeline *stage* it
replaces.  The stage fixes the call signature (see :mod:`noises`), so the
runner can swap any registered noise into a pipeline without special cases.

    >>> from noises import registry
    >>> registry.list_noises("resize/pil-*")[:2]
    ['resize/pil-bicubic', 'resize/pil-bilinear']
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

#: The pipeline stages a noise can replace, in pipeline order.
STAGES = ("decode", "color", "resize", "corrupt", "attack", "graph", "deploy")


class NotApplicable(Exception):
    """Raised by a noise that does not apply to the given input (e.g. a graph
    noise on a model without the layer it changes).  Reported, never silent."""


class UnknownNoise(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Noise:
    family: str
    name: str
    stage: str
    fn: Callable[..., Any]
    description: str = ""
    params: dict = field(default_factory=dict)
    #: returns None when usable here, else a one-line reason
    available: Callable[[], str | None] = lambda: None
    #: returns {library: version} of what the noise runs on
    versions: Callable[[], dict] = dict

    @property
    def key(self) -> str:
        return f"{self.family}/{self.name}"

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


_REGISTRY: dict[str, Noise] = {}


def register(family: str, name: str, *, stage: str, description: str = "",
             params: dict | None = None,
             available: Callable[[], str | None] | None = None,
             versions: Callable[[], dict] | None = None):
    """Decorator registering ``fn`` as noise ``family/name``."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")

    def deco(fn):
        key = f"{family}/{name}"
        if key in _REGISTRY:
            raise ValueError(f"noise {key} registered twice")
        _REGISTRY[key] = Noise(family, name, stage, fn,
                               description or (fn.__doc__ or "").strip().split("\n")[0],
                               dict(params or {}),
                               available or (lambda: None),
                               versions or dict)
        return fn

    return deco


def _load_all() -> None:
    # importing the family packages runs their @register decorators; each family
    # imports its optional libraries lazily, so this never fails for a missing extra
    import importlib

    for pkg in ("noises.system", "noises.natural", "noises.adversarial"):
        importlib.import_module(pkg)


def get(key: str, family: str | None = None) -> Noise:
    """Look up ``family/name`` (or ``name`` with ``family`` given)."""
    _load_all()
    if family and "/" not in key:
        key = f"{family}/{key}"
    try:
        return _REGISTRY[key]
    except KeyError:
        fam = key.split("/")[0]
        choices = sorted(k for k in _REGISTRY if k.startswith(fam + "/")) or sorted(_REGISTRY)
        raise UnknownNoise(f"unknown noise {key!r}; valid choices: {', '.join(choices)}") from None


def list_noises(pattern: str = "*", family: str | None = None) -> list[str]:
    """Sorted ``family/name`` keys matching a glob ``pattern``."""
    _load_all()
    keys = sorted(_REGISTRY)
    if family:
        keys = [k for k in keys if k.startswith(family + "/")]
    return [k for k in keys if fnmatch.fnmatch(k, pattern)]


def families() -> list[str]:
    _load_all()
    return sorted({n.family for n in _REGISTRY.values()})
