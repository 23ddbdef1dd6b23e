"""Declarative noise suites: TOML files that users can list, inspect and extend without code.

A suite file has ``name``, ``family``, ``version``, ``description`` and either explicit
``[[conditions]]`` (``name`` plus pipeline-stage overrides such as ``resize = "cv2-area"``
or ``decoder = "opencv"``), or a ``[sweep]`` over registered noises (``stage``, a glob
``pattern``, an optional ``where`` table and optional ``exclude`` globs), or a ``[product]``
(the cross product of several sweeps, e.g. decoder x resize for ImageNet-S: ``[product.decoder]``
and ``[product.resize]`` tables, each with ``pattern`` / ``where`` / ``exclude``), or
``include = [other suites]``, or several.

``where`` selects by the noises' registry tags (:attr:`robustbench_sys.noises.registry.Noise.tags`), e.g.
``where = { benchmark = true }`` (the 15 ImageNet-C corruptions) or
``where = { group = ["noise", "blur"] }`` (a list: any of); every key must hold.  An unknown
key, or a filter that matches nothing, is an error.  Condition names must be unique within a
suite (its includes too), and includes must not form a cycle.

Built-in suites live beside this file; add directories with
``$ROBUSTBENCH_SYS_SUITES`` (``:``-separated), or pass a ``.toml`` path as the suite name.

Adversarial suites: a ``[[conditions]]`` entry with ``attack = "pgd-linf"`` (a registered
``adversarial/*`` attack), ``eps`` (a number or a fraction string such as ``"4/255"``), an
optional ``seed`` (default 0) and ``params`` (the attack's hyper-parameters, e.g.
``{ steps = 20, rel_stepsize = 0.075 }``); or a top-level ``attack_grid = "robustart-linf"``
that expands a named grid of :data:`robustbench_sys.noises.adversarial.SUITES`.  Other keys of an attack
entry stay pipeline overrides (an attack under a system noise).  The parameters are checked
and completed with the attack's defaults when the file is read.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from robustbench_sys import noises
from robustbench_sys.errors import UserError
from robustbench_sys.noises.stages import UnknownStage, get_stage

if TYPE_CHECKING:  # torch-free at run time: the attack classes load with the adversarial family
    from robustbench_sys.noises.adversarial.base import Attack

BUILTIN_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Condition:
    name: str                 # unique within a run, e.g. "resize/cv2-area" or "clean"
    family: str
    suite: str
    suite_version: int
    overrides: dict = field(default_factory=dict, hash=False)
    #: adversarial attack of the condition: {"name", "eps", "seed", "params"} (all params
    #: resolved with the attack's defaults), or empty
    attack: dict = field(default_factory=dict, hash=False)

    @property
    def is_clean(self) -> bool:
        return not self.overrides and not self.attack


@dataclass(frozen=True)
class Suite:
    name: str
    family: str
    version: int
    description: str
    conditions: tuple[Condition, ...]
    path: str


def _suite_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ROBUSTBENCH_SYS_SUITES", "").split(os.pathsep) if p]
    return [BUILTIN_DIR, *extra]


def _parse(path: Path, _including: tuple[Path, ...] = ()) -> Suite:
    """The suite of ``path``; ``_including``: the files whose includes led here (cycle check)."""
    here = path.resolve()
    if here in _including:
        chain = " -> ".join(p.name for p in (*_including[_including.index(here):], here))
        raise UserError(f"suite file {path}: include cycle {chain}")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"suite file {path}: {e}") from None
    name, family, version = d.get("name", path.stem), d.get("family", path.stem), int(d.get("version", 1))
    conds: list[Condition] = []
    for c in d.get("conditions", []):
        c = dict(c)
        cname = c.pop("name", None)
        if not cname:
            raise UserError(f"suite file {path}: every [[conditions]] entry needs a name")
        full = cname if cname == "clean" else f"{family}/{cname}"
        attack = _attack(path, cname, c) if "attack" in c else {}
        conds.append(Condition(full, family if (c or attack) else "clean", name, version, c, attack))
    grid = d.get("attack_grid")
    if grid:
        conds.extend(_attack_grid(path, grid, family, name, version))
    for inc in d.get("include", []):
        conds.extend(_get_suite(inc, (*_including, here), path).conditions)
    sweep = d.get("sweep")
    if sweep:
        if not isinstance(sweep, dict):
            raise UserError(f"suite file {path}: [sweep] must be a table with stage / pattern / where / exclude")
        for noise, value in _sweep(path, sweep.get("stage"), sweep, "[sweep]"):
            conds.append(Condition(f"{family}/{noise.name}" if noise.family == family else f"{family}/{noise.key}",
                                   family, name, version, {noise.stage: value}))
    product = d.get("product")
    if product:
        axes = [[(noise, noise.stage, value) for noise, value in _sweep(path, stage, spec, f"[product.{stage}]")]
                for stage, spec in product.items()]
        for combo in itertools.product(*axes):
            conds.append(Condition(f"{family}/" + "+".join(n.name for n, _, _ in combo), family, name, version,
                                   {field_: value for _, field_, value in combo}))
    if not conds:
        raise UserError(f"suite file {path}: no conditions (add [[conditions]], a [sweep] or an attack_grid)")
    seen: set[str] = set()
    repeated: set[str] = set()
    for c in conds:
        if c.name in seen:
            repeated.add(c.name)
        seen.add(c.name)
    dups = sorted(repeated)
    if dups:
        raise UserError(f"suite file {path}: condition name(s) {', '.join(dups)} given more than once "
                        "(directly or through include); names must be unique within a suite")
    return Suite(name, family, version, d.get("description", "").strip(), tuple(conds), str(path))


def _eps(path: Path, cname: str, value) -> float:
    """``eps`` as a number or a fraction string (``"4/255"``)."""
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise UserError(f"suite file {path}, condition {cname}: eps {value!r} is not a number "
                        "or a fraction such as \"4/255\"") from None


def _attack_noise(name: str) -> Attack:
    """The registered :class:`Attack` instance of ``adversarial/<name>``."""
    return cast("Attack", noises.get(f"adversarial/{name}").fn)


def _attack(path: Path, cname: str, c: dict) -> dict:
    """Pop the attack keys of a condition entry ``c`` and return the resolved attack spec."""
    name = c.pop("attack")
    eps = c.pop("eps", None)
    seed = c.pop("seed", 0)
    params = c.pop("params", {})
    key = f"adversarial/{name}"
    if key not in noises.list_noises("adversarial/*"):
        raise UserError(f"suite file {path}, condition {cname}: unknown attack {name!r}; valid: "
                        f"{', '.join(k.split('/', 1)[1] for k in noises.list_noises('adversarial/*'))}")
    if not isinstance(params, dict) or not isinstance(seed, int):
        raise UserError(f"suite file {path}, condition {cname}: params must be a table and seed an integer")
    eps = None if eps is None else _eps(path, cname, eps)
    try:
        resolved = _attack_noise(name).resolve(eps, dict(params))
    except ValueError as e:
        raise UserError(f"suite file {path}, condition {cname}: {e}") from None
    return {"name": name, "eps": eps, "seed": int(seed), "params": resolved}


def eps_label(eps: float | None, norm: str) -> str:
    """``2/255`` for L∞ budgets on the 1/255 grid (to 0.1), else ``%g``."""
    if eps is None:
        return "min-norm"
    k = eps * 255
    if norm == "Linf" and abs(k - round(k, 1)) < 1e-6:
        return f"{round(k, 1):g}/255"
    return f"{eps:g}"


def _attack_grid(path: Path, grid: str, family: str, suite: str, version: int) -> list[Condition]:
    from robustbench_sys.noises.adversarial import attack_grid

    try:
        entries = attack_grid(grid)
    except KeyError as e:
        raise UserError(f"suite file {path}: attack_grid: {e.args[0]}") from None
    out = []
    for attack, p in entries:
        eps = p.pop("eps", None)
        norm = p.get("norm") or _attack_noise(attack).norm
        cname = f"{attack}@{eps_label(eps, norm)}"
        entry = {"attack": attack, "eps": eps, "params": p}
        out.append(Condition(f"{family}/{cname}", family, suite, version, {}, _attack(path, cname, entry)))
    return out


def _sweep(path: Path, stage, spec: dict, table: str):
    """``(noise, pipeline value)`` for the registered noises of ``stage`` matching the spec
    (``table``: ``[sweep]`` or ``[product.<stage>]``, for messages)."""
    try:
        st = get_stage(str(stage))
    except UnknownStage as e:
        raise UserError(f"suite file {path}: sweep {e}") from None
    if not st.in_pipeline:
        raise UserError(f"suite file {path}: stage {st.name!r} cannot be swept; give attack conditions")
    if not isinstance(spec, dict):
        raise UserError(f"suite file {path}: {table} must be a table with pattern / where / exclude")
    allowed = {"stage", *_SWEEP_KEYS} if table == "[sweep]" else set(_SWEEP_KEYS)
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise UserError(f"suite file {path}: {table} has unknown key(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(allowed))}")
    where = _where(path, st.name, spec.get("where", {}))
    exclude = spec.get("exclude", [])
    if isinstance(exclude, str) or not all(isinstance(x, str) for x in exclude):
        raise UserError(f"suite file {path}: sweep exclude must be a list of globs, got {exclude!r}")
    out = []
    for key in noises.list_noises(spec.get("pattern", "*")):
        noise = noises.get(key)
        if noise.stage != st.name or not _matches(noise, where) or any(fnmatch.fnmatch(key, x) for x in exclude):
            continue
        out.append((noise, noise.key))
    if not out:
        sel = f"pattern {spec.get('pattern', '*')!r}" + (f" where {spec['where']!r}" if where else "")
        raise UserError(f"suite file {path}: stage {st.name!r} {sel} matches no noise")
    return out


_SWEEP_KEYS = ("pattern", "where", "exclude")


def _where(path: Path, stage: str, where) -> dict[str, list]:
    """A sweep's ``where`` table as {tag: accepted values}, checked against the tags of ``stage``'s noises."""
    if not isinstance(where, dict):
        raise UserError(f"suite file {path}: sweep where must be a table such as {{ benchmark = true }}, "
                        f"got {where!r}")
    of_stage = [noises.get(k) for k in noises.list_noises()]
    known = sorted({t for n in of_stage if n.stage == stage for t in n.tags})
    out = {}
    for key, value in where.items():
        if key not in known:
            raise UserError(f"suite file {path}: sweep where: unknown key {key!r} for stage {stage!r}; "
                            f"valid: {', '.join(known) or '(its noises have no tags)'}")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise UserError(f"suite file {path}: sweep where {key!r}: give a value or a non-empty list of "
                            f"values, got {value!r}")
        out[key] = values
    return out


def _same(a, b) -> bool:
    """Tag equality that keeps booleans apart from numbers (``true`` is not ``1``)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _matches(noise, where: dict[str, list]) -> bool:
    return all(k in noise.tags and any(_same(noise.tags[k], v) for v in vs) for k, vs in where.items())


def _all() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _suite_dirs():
        for p in sorted(d.glob("*.toml")):
            found[p.stem] = p
    return found


def list_suites() -> list[str]:
    return sorted(_all())


def get_suite(name: str) -> Suite:
    return _get_suite(name)


def _get_suite(name: str, including: tuple[Path, ...] = (), parent: Path | None = None) -> Suite:
    """:func:`get_suite`, called for an include of ``parent`` when given (in its error messages)."""
    at = f"suite file {parent}: include " if parent else ""
    p = Path(name)
    if p.suffix == ".toml":
        if not p.is_file():
            raise UserError(f"{at or '--suite '}{name}: no such suite file")
        return _parse(p, including)
    found = _all()
    if name not in found:
        raise UserError(f"{at}unknown suite {name!r}; valid choices: {', '.join(sorted(found))} (or a .toml path)")
    return _parse(found[name], including)


def resolve(suites) -> list[Condition]:
    """Conditions of the given suites (names, ``.toml`` paths or :class:`Suite` objects built in
    code), clean first, each condition name once."""
    out: dict[str, Condition] = {"clean": Condition("clean", "clean", "clean", 1, {})}
    for s in suites:
        for c in (s if isinstance(s, Suite) else get_suite(str(s))).conditions:
            out.setdefault(c.name, c)
    return list(out.values())
