"""Registry-driven test parameters: every registered noise becomes a test item, unavailable ones
included, as a visible skip with the noise's own one-line reason (``pytest -rs`` lists them).

    >>> @pytest.mark.parametrize("key", registry_params("resize/*"))
    ... def test_resize(key): ...
    >>> @needs("backend/onnxruntime")              # a test that is not parametrised over keys
    ... def test_onnx_cache(): ...

Both put a ``noise(*keys)`` mark on the item; after collection (and after ``-k`` / ``-m``
deselection, so only the tests that will run pay for it) :func:`skip_unavailable`, called from
``conftest.py``, asks each key's ``available()`` and adds ``pytest.mark.skip(reason="<key>:
<why>")`` where a noise is not usable here.

Per-item test settings (tolerances, fast attack budgets, ...) live on the registered objects, not
in the test files (a ``test_settings`` dict attribute); :func:`settings_of` reads them.  They are
read by tests only.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from robustbench_sys import noises

MARK = "noise"


def unavailable(key: str) -> str | None:
    """``noises.get(key).available()``, checked to be None or a non-empty one-line reason."""
    why = noises.get(key).available()
    if why is not None and (not isinstance(why, str) or not why.strip() or "\n" in why):
        raise TypeError(f"{key}.available() must return None or a one-line reason, got {why!r}")
    return why


def _keys(pattern: str | Iterable[str]) -> list[str]:
    if isinstance(pattern, str):
        keys = noises.list_noises(pattern)
        if not keys:  # a typo must not turn into zero silently passing tests
            raise ValueError(f"registry pattern {pattern!r} matches no registered noise")
        return keys
    keys = list(pattern)
    for k in keys:
        noises.get(k)  # UnknownNoise (with the valid choices) for a key that is not registered
    return keys


def registry_param(key: str, *values, id: str | None = None):
    """``pytest.param(key, *values)`` with id ``key``, skipped with its reason if unavailable."""
    noises.get(key)
    return pytest.param(key, *values, id=id or key, marks=getattr(pytest.mark, MARK)(key))


def registry_params(pattern: str | Iterable[str]) -> list:
    """One :func:`registry_param` per key matching a glob ``pattern`` (or per key of a list)."""
    return [registry_param(k) for k in _keys(pattern)]


def needs(*keys: str):
    """Mark for a test that needs every one of ``keys``: skipped with the first reason otherwise."""
    return getattr(pytest.mark, MARK)(*_keys(keys))


def skip_unavailable(items) -> None:
    """Add a skip mark with the reason to every item whose ``noise`` mark names an unavailable noise."""
    seen: dict[str, str | None] = {}
    for item in items:
        for mark in item.iter_markers(MARK):
            whys = [(k, seen[k] if k in seen else seen.setdefault(k, unavailable(k))) for k in mark.args]
            first = next(((k, w) for k, w in whys if w), None)
            if first:
                item.add_marker(pytest.mark.skip(reason=f"{first[0]}: {first[1]}"))
                break


def settings_of(key: str, **defaults):
    """The test settings of noise ``key``: ``defaults`` overridden by the ``test_settings`` dict
    attached to its registered object.  A setting the test does not know is an error (a typo on
    the noise side must not be ignored)."""
    own = dict(getattr(noises.get(key).fn, "test_settings", None) or {})
    unknown = sorted(set(own) - set(defaults))
    if unknown:
        raise KeyError(f"{key}: unknown test setting(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    return {**defaults, **own}
