"""The shape of the code: layers point one way, no import circles, no private names across modules.

Every ``import`` / ``from ... import`` of every module is read (module level and inside
functions).  The top-level folders install under one import name (pyproject's ``package-dir``):
``noises/`` is ``robustbench_sys.noises``, ``zoo/`` ``robustbench_sys.zoo``, ``dashboard/``
``robustbench_sys.dashboard``, ``data/`` ``robustbench_sys.labels``; the rest of
``robustbench_sys/`` is the core.  Layers: ``noises`` imports none of our other folders; ``zoo``
only ``noises``; the core only ``noises``, ``zoo`` and ``labels``; ``dashboard`` only the core.
An import circle between modules is an error wherever the imports sit.  A name starting with
``_`` (not a dunder) is private to its module: importing it from another module, or reaching it
as ``module._name``, is an error; a module whose name starts with ``_`` is private to its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folder -> import name (pyproject.toml [tool.setuptools] package-dir)
FOLDERS = {"robustbench_sys": "robustbench_sys", "noises": "robustbench_sys.noises", "zoo": "robustbench_sys.zoo",
           "dashboard": "robustbench_sys.dashboard", "data": "robustbench_sys.labels"}
LAYERS = ("core", "noises", "zoo", "dashboard", "labels")
ALLOWED = {"noises": set(), "zoo": {"noises"}, "core": {"noises", "zoo", "labels"},
           "dashboard": {"core"}, "labels": set()}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, name in FOLDERS.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            parts = list(p.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = p
    return out


def _layer(mod: str) -> str | None:
    """The layer of one of our module names, None for anything else."""
    if mod != "robustbench_sys" and not mod.startswith("robustbench_sys."):
        return None
    for layer in ("noises", "zoo", "dashboard", "labels"):
        if mod == f"robustbench_sys.{layer}" or mod.startswith(f"robustbench_sys.{layer}."):
            return layer
    return "core"


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _resolve(current: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    if not _is_package(current):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str):
    """``(imported module, imported name or None, line, alias bound)`` of every import in ``mod``."""
    tree = ast.parse(MODULES[mod].read_text(), str(MODULES[mod]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno, a.asname
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in MODULES:       # `from pkg import module`
                    yield sub, None, node.lineno, a.asname or a.name
                else:
                    yield target, a.name, node.lineno, a.asname or a.name


def _ours(name: str) -> str | None:
    """The module of ours an import names (longest known prefix), or None."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _, _ in _imports(m):
            t = _ours(target)
            if t and t != m:
                g[m].add(t)
    return g


def test_the_scan_sees_the_code():
    g = _graph()
    assert len(MODULES) > 50
    assert "robustbench_sys.eval.plan" in g["robustbench_sys.eval.api"]
    assert "robustbench_sys.noises.stages" in g["robustbench_sys.noises.registry"]
    assert {_layer(m) for m in MODULES} == set(LAYERS)


def test_folders_match_the_package_map():
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert {v: k for k, v in conf.items()} == FOLDERS


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_point_one_way(layer):
    bad = []
    for m in MODULES:
        if _layer(m) != layer:
            continue
        for target, _, line, _ in _imports(m):
            t = _layer(target)
            if t is not None and t != layer and t not in ALLOWED[layer]:
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert not _cycles(_graph())


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_names_across_modules():
    bad = []
    for m in MODULES:
        bound: dict[str, str] = {}
        for target, name, line, alias in _imports(m):
            t = _ours(target)
            if not t:
                continue
            where = f"{MODULES[m].relative_to(ROOT)}:{line}"
            if name is not None and _private(name) and t != m:
                bad.append(f"{where} imports private {t}.{name}")
            # a private module is private to its package
            for i, part in enumerate(t.split(".")):
                owner = ".".join(t.split(".")[:i])
                if _private(part) and m != owner and not m.startswith(owner + "."):
                    bad.append(f"{where} imports private module {t}")
            if name is None and alias:
                bound[alias] = t
        tree = ast.parse(MODULES[m].read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and _private(node.attr) and bound[node.value.id] != m):
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)
