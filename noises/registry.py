"""A timm-style registry of noise generators.

Every noise is registered under ``family/name``; its family fixes the pipeline
*stage* it replaces (:mod:`robustbench_sys.noises.stages`, the one stage table) and so its call
signature, so the runner can swap any registered noise into a pipeline without
special cases.

    >>> from robustbench_sys.noises import registry
    >>> registry.list_noises("resize/pil-*")[:2]
    ['resize/pil-bicubic', 'resize/pil-bilinear']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robustbench_sys.noises.stages import stage_of_family


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
    #: selection metadata, scalar values (e.g. natural: ``group``, ``benchmark``): what a
    #: suite's ``[sweep] where = {...}`` filter matches, so membership lives with the noise
    tags: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.family}/{self.name}"

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


_REGISTRY: dict[str, Noise] = {}


def register(family: str, name: str, *, description: str = "",
             params: dict | None = None,
             available: Callable[[], str | None] | None = None,
             versions: Callable[[], dict] | None = None,
             tags: dict | None = None):
    """Decorator registering ``fn`` as noise ``family/name`` (its stage follows from ``family``).

    ``tags``: selection metadata (``{"group": "blur", "benchmark": True}``) with str / int /
    float / bool values, matched by a suite's ``[sweep] where`` filter."""
    stage = stage_of_family(family).name
    tags = dict(tags or {})
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise TypeError(f"noise {family}/{name}: tag {k!r} = {v!r} must map a str to a str, int, float or bool")

    def deco(fn):
        key = f"{family}/{name}"
        if key in _REGISTRY:
            raise ValueError(f"noise {key} registered twice")
        _REGISTRY[key] = Noise(family, name, stage, fn,
                               description or (fn.__doc__ or "").strip().split("\n")[0],
                               dict(params or {}),
                               available or (lambda: None),
                               versions or dict,
                               tags)
        return fn

    return deco


_LOADED: list[bool] = []


def _load_all() -> None:
    """Import every public module of the family packages (``noises/system``, ``natural``,
    ``adversarial``), which runs their ``register`` calls: a new noise is one new file (or one
    entry in an existing file), with nothing to add elsewhere.  Modules whose name starts with
    ``_`` are helpers or scripts run in other environments and are not imported here.  Each
    family imports its optional libraries lazily, so this never fails for a missing extra."""
    if _LOADED:
        return
    import importlib
    import pkgutil

    base = __name__.rsplit(".", 1)[0]
    for family in ("system", "natural", "adversarial"):
        pkg = importlib.import_module(f"{base}.{family}")
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{info.name}")
    _LOADED.append(True)


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


def registered_keys() -> list[str]:
    """The keys registered so far, without importing the noise modules (for modules that
    register noises themselves while the registry loads)."""
    return list(_REGISTRY)


def families() -> list[str]:
    _load_all()
    return sorted({n.family for n in _REGISTRY.values()})
