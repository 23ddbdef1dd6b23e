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

A suite may pin the device its conditions run on with a top-level ``device = "cuda"`` (``cpu``,
``cuda``, ``cuda:N`` or ``auto``; see :mod:`robustbench_sys.devices`): a run without ``--device``
then uses it, and a run with another ``--device`` is refused.  Includes do not carry a pin.

Adversarial suites: a ``[[conditions]]`` entry with ``attack = "pgd-linf"`` (a registered
``adversarial/*`` attack), ``eps`` (a number or a fraction string such as ``"4/255"``), an
optional ``seed`` (default 0) and ``params`` (the attack's hyper-parameters, e.g.
``{ steps = 20, rel_stepsize = 0.075 }``) and an optional ``transfer_from`` (a zoo model name: the
attack is run on that source model and its adversarial images are scored on the evaluated one,
a transfer attack; see :func:`robustbench_sys.eval.attack.write_worst_case` for the flag it
feeds); or a top-level ``attack_grid = "robustart-linf"``
that expands a named grid of :data:`robustbench_sys.noises.adversarial.SUITES`.  Other keys of an attack
entry stay pipeline overrides (an attack under a system noise).  The parameters are checked
and completed with the attack's defaults when the file is read.

Validation (when the file is read, before any model loads; a one-line :class:`UserError`
``suite file F, condition C: KEY ...; what to give``): top-level keys are :data:`TOP_KEYS`;
``name`` / ``family`` one-line names without ``/``, ``version`` a positive integer.  A
condition has a one-line ``name`` (``clean`` is the reference and takes no overrides), stage
keys (a pipeline stage or its alias) naming a registered noise of that stage, geometry keys
``input_size`` (1..4096), ``crop_pct`` ([0.1, 1]), ``mean`` / ``std`` (3 or 1 finite numbers,
std > 0), and attack keys only with ``attack``.  ``eps`` is finite and > 0, at most 1 for an L∞
budget (images lie in [0, 1]) and at most :data:`MAX_L2_EPS` for L2; ``seed`` an integer
0..2**63-1; ``params`` in :data:`ATTACK_PARAM_RANGES` (e.g. ``steps`` an integer 1..100000).  A
condition name that two suites of one run define differently is refused (:func:`resolve`).
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from robustbench_sys import noises
from robustbench_sys.errors import UserError
from robustbench_sys.noises.stages import UnknownStage, full_key, get_stage, pipeline_stages

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
    #: the device the suite pins (``device = "cuda"`` in its file), or None: the run's ``--device``
    device: str | None = None


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
    name, family, version = _header(path, d)
    conds: list[Condition] = []
    for c in d.get("conditions", []):
        c = dict(c)
        cname = c.pop("name", None)
        if not cname:
            raise UserError(f"suite file {path}: every [[conditions]] entry needs a name")
        cname = _condition_name(path, cname)
        full = cname if cname == "clean" else f"{family}/{cname}"
        attack = _attack(path, cname, c) if "attack" in c else {}
        c = _overrides(path, cname, c)
        if full == "clean" and (c or attack):
            raise UserError(f"suite file {path}: condition clean: the name 'clean' is the model's reference "
                            "pipeline and takes no overrides or attack; name the condition otherwise")
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
    device = d.get("device")
    if device is not None and (not isinstance(device, str) or not device.strip()):
        raise UserError(f"suite file {path}: device must be a string such as \"cuda\", got {device!r}")
    return Suite(name, family, version, d.get("description", "").strip(), tuple(conds), str(path), device)


#: the top-level keys of a suite file
TOP_KEYS = ("name", "family", "version", "description", "conditions", "include", "sweep", "product",
            "attack_grid", "device")
#: the keys of an attack condition besides ``attack`` (``eps``, ``seed``, ``params``, ``transfer_from``)
ATTACK_KEYS = ("eps", "seed", "params", "transfer_from")
#: condition overrides of the model's geometry and normalisation (checked as a card's [preprocess])
GEOMETRY_KEYS = ("input_size", "crop_pct", "mean", "std")
#: the largest L2 budget: the L2 diameter of [0, 1]^(3 x 4096 x 4096), the largest input a card may
#: take (a larger eps bounds nothing); an L∞ budget is at most 1 (images lie in [0, 1])
MAX_L2_EPS = math.sqrt(3 * 4096 * 4096)
#: value ranges of attack parameters: ("int", lo, hi) an integer in [lo, hi]; ("pos", lo, hi) a finite
#: number in (lo, hi]; ("num", lo, hi) a finite number in [lo, hi]; ("bool",) / ("str",) that type.
#: A parameter not listed here is checked against the type of its default.
ATTACK_PARAM_RANGES: dict[str, tuple] = {
    "steps": ("int", 1, 100_000), "n_queries": ("int", 1, 1_000_000), "n_restarts": ("int", 1, 1_000),
    "n_target_classes": ("int", 1, 999), "rel_stepsize": ("pos", 0, 10), "decay": ("num", 0, 10),
    "c": ("pos", 0, 1e6), "kappa": ("num", 0, 1e6), "lr": ("pos", 0, 100), "overshoot": ("num", 0, 10),
    "p_init": ("pos", 0, 1), "random_start": ("bool",), "norm": ("str",), "loss": ("str",),
}


def _text(v) -> str:
    """A value for a one-line message: plain names as they are, anything else as its repr."""
    return v if isinstance(v, str) and v.isprintable() and v.strip() == v and v else repr(v)


def _header(path: Path, d: dict) -> tuple[str, str, int]:
    """``(name, family, version)`` of a suite file's data, after checking every top-level key."""
    unknown = sorted(set(d) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"suite file {path}: unknown key(s) {', '.join(map(_text, unknown))}; valid top-level "
                        f"keys: {', '.join(TOP_KEYS)}")
    name, family, version = d.get("name", path.stem), d.get("family", path.stem), d.get("version", 1)
    for key, v in (("name", name), ("family", family)):
        if not isinstance(v, str) or not v or not v.isprintable() or v.strip() != v or "/" in v:
            raise UserError(f"suite file {path}: {key} must be a one-line name without '/' or surrounding "
                            f"spaces, got {v!r}")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2 ** 31:
        raise UserError(f"suite file {path}: version must be a positive integer such as 1, got {version!r}")
    if not isinstance(d.get("description", ""), str):
        raise UserError(f"suite file {path}: description must be a string, got {d['description']!r}")
    conds = d.get("conditions", [])
    if not isinstance(conds, list) or not all(isinstance(c, dict) for c in conds):
        raise UserError(f"suite file {path}: conditions must be [[conditions]] tables (each with a name), "
                        f"got {type(conds).__name__}")
    include = d.get("include", [])
    if not isinstance(include, list) or not all(isinstance(x, str) and x.isprintable() for x in include):
        raise UserError(f"suite file {path}: include must be a list of suite names or .toml paths, got {include!r}")
    grid = d.get("attack_grid")
    if grid is not None and not isinstance(grid, str):
        raise UserError(f"suite file {path}: attack_grid must be the name of an attack grid, got {grid!r}")
    product = d.get("product")
    if product is not None and not isinstance(product, dict):
        raise UserError(f"suite file {path}: [product] must hold one table per stage ([product.decoder], ...), "
                        f"got {product!r}")
    return name, family, version


def _condition_name(path: Path, cname) -> str:
    if not isinstance(cname, str) or not cname.isprintable() or cname.strip() != cname:
        raise UserError(f"suite file {path}: condition name {cname!r}: give a one-line string without "
                        "surrounding spaces")
    return cname


def _overrides(path: Path, cname: str, c: dict) -> dict:
    """The pipeline overrides of condition ``cname`` (its keys left once ``name`` and the attack keys
    are taken), checked: stage keys name a registered noise of the stage (full keys; an alias such
    as ``decode`` becomes its stage), geometry keys are valid values.  One-line UserError otherwise."""
    at = f"suite file {path}, condition {cname}"
    stages = {n: st for st in pipeline_stages() for n in (st.name, *st.aliases)}
    out: dict = {}
    for key, value in c.items():
        if key in ATTACK_KEYS:
            raise UserError(f"{at}: {key} belongs to an attack; add attack = \"NAME\" (robustbench-sys noises "
                            "list 'adversarial/*') or drop it")
        if key in GEOMETRY_KEYS:
            out[key] = _geometry(at, key, value)
            continue
        st = stages.get(key)
        if st is None:
            raise UserError(f"{at}: unknown key {_text(key)}; valid: name, a pipeline stage "
                            f"({', '.join(s.name for s in pipeline_stages())}), {', '.join(GEOMETRY_KEYS)}, "
                            f"or attack with {', '.join(ATTACK_KEYS)}")
        if st.name in out:
            raise UserError(f"{at}: stage {st.name} given twice ({key} is another name for it)")
        if not isinstance(value, str) or not value or not value.isprintable():
            raise UserError(f"{at}: {key} must be a noise key such as \"{st.families[0]}/NAME\", got {value!r}")
        try:
            full = full_key(st.name, value)
        except ValueError as e:
            raise UserError(f"{at}: {e}") from None
        valid = [*st.builtin, *(k for f in st.families for k in noises.list_noises(family=f))]
        if full not in valid:
            raise UserError(f"{at}: {key} {value!r} is not a registered {st.name} noise; see robustbench-sys "
                            f"noises list '{st.families[0]}/*'")
        out[st.name] = full
    if "input_size" in out and "crop_pct" in out and out["input_size"] / out["crop_pct"] > 8192:
        raise UserError(f"{at}: input_size / crop_pct = {out['input_size']} / {out['crop_pct']} resizes images to "
                        "over 8192 pixels a side; give a larger crop_pct or a smaller input_size")
    return out


def _geometry(at: str, key: str, value):
    """A checked geometry / normalisation override (the ranges of a card's ``[preprocess]``)."""
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if key == "input_size":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
            raise UserError(f"{at}: input_size must be an integer 1..4096 (pixels), got {value!r}")
        return value
    if key == "crop_pct":
        if not number(value) or not 0.1 <= value <= 1:
            raise UserError(f"{at}: crop_pct must be a number in [0.1, 1] (the crop's share of the resized short "
                            f"side, e.g. 0.875), got {value!r}")
        return float(value)
    if not isinstance(value, list) or len(value) not in (1, 3) or not all(number(x) for x in value) \
            or (key == "std" and not all(x > 0 for x in value)):
        raise UserError(f"{at}: {key} must be a list of 3 (or 1) finite numbers{', each > 0' if key == 'std' else ''}, "
                        f"got {value!r}")
    return tuple(float(x) for x in value)


def _check_attack_values(at: str, attack: Attack, eps, seed, params: dict) -> None:
    """Types and ranges of an attack condition's seed, eps and params (:data:`ATTACK_PARAM_RANGES`),
    before the attack's own checks see them."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise UserError(f"{at}: seed must be an integer 0..2**63-1, got {seed!r}")
    unknown = sorted(set(params) - set(attack.defaults))
    if unknown:
        raise UserError(f"{at}: attack {attack.name!r}: unknown parameter(s) {', '.join(map(_text, unknown))}; "
                        f"valid: {', '.join(sorted(attack.defaults)) or '(none)'}")
    for key, v in params.items():
        default = attack.defaults.get(key)
        spec = ATTACK_PARAM_RANGES.get(key) or (
            ("bool",) if isinstance(default, bool) else ("int", 0, 10 ** 9) if isinstance(default, int)
            else ("num", -1e9, 1e9) if isinstance(default, float) else ("str",))
        kind = spec[0]
        if kind == "bool":
            ok, want = isinstance(v, bool), "true or false"
        elif kind == "str":
            ok, want = isinstance(v, str), "a string"
        elif kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and spec[1] <= v <= spec[2]
            want = f"an integer {spec[1]}..{spec[2]}"
        else:
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (spec[1] < v if kind == "pos" else spec[1] <= v) and v <= spec[2])
            want = f"a number in {'(' if kind == 'pos' else '['}{spec[1]:g}, {spec[2]:g}]"
        if not ok:
            raise UserError(f"{at}: params {_text(key)} must be {want}, got {v!r}")
    if eps is None:
        return
    norm = params.get("norm") if isinstance(params.get("norm"), str) else attack.norm
    top = MAX_L2_EPS if norm == "L2" else 1.0
    example = "0.5" if norm == "L2" else '"4/255"'
    if not (math.isfinite(eps) and 0 < eps <= top):
        raise UserError(f"{at}: eps {eps!r} is out of range; the {norm} budget is a number in (0, {top:g}] "
                        f"(images lie in [0, 1]), e.g. {example}")

def _eps(path: Path, cname: str, value) -> float:
    """``eps`` as a number or a fraction string (``"4/255"``)."""
    try:
        if isinstance(value, bool):
            raise TypeError(value)
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
    source = c.pop("transfer_from", None)
    if source is not None and (not isinstance(source, str) or not source):
        raise UserError(f"suite file {path}, condition {cname}: transfer_from must be a zoo model name, got {source!r}")
    key = f"adversarial/{name}"
    if key not in noises.list_noises("adversarial/*"):
        raise UserError(f"suite file {path}, condition {cname}: unknown attack {name!r}; valid: "
                        f"{', '.join(k.split('/', 1)[1] for k in noises.list_noises('adversarial/*'))}")
    if not isinstance(params, dict) or not isinstance(seed, int):
        raise UserError(f"suite file {path}, condition {cname}: params must be a table and seed an integer")
    eps = None if eps is None else _eps(path, cname, eps)
    _check_attack_values(f"suite file {path}, condition {cname}", _attack_noise(name), eps, seed, params)
    try:
        resolved = _attack_noise(name).resolve(eps, dict(params))
    except ValueError as e:
        raise UserError(f"suite file {path}, condition {cname}: {e}") from None
    spec = {"name": name, "eps": eps, "seed": int(seed), "params": resolved}
    if source:   # only when given: the unit ids of the other attack conditions stay as they were
        spec["transfer_from"] = source
    return spec


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
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise UserError(f"suite file {path}: sweep exclude must be a list of globs, got {exclude!r}")
    out = []
    if not isinstance(spec.get("pattern", "*"), str):
        raise UserError(f"suite file {path}: {table} pattern must be a glob such as \"resize/cv2-*\", "
                        f"got {spec['pattern']!r}")
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
    code), clean first, each condition name once.  A condition name that two suites define
    differently (other overrides or attack) is a one-line UserError naming both; the same
    condition reached twice (a suite given twice, or included by two) is kept once."""
    out: dict[str, Condition] = {"clean": Condition("clean", "clean", "clean", 1, {})}
    where: dict[str, str] = {"clean": "the reference pipeline"}
    for s in suites:
        suite = s if isinstance(s, Suite) else get_suite(str(s))
        for c in suite.conditions:
            here = f"suite {c.suite}" + (f" (--suite {suite.path or suite.name})" if c.suite == suite.name else
                                         f" (included by --suite {suite.path or suite.name})")
            first = out.get(c.name)
            if first is None:
                out[c.name], where[c.name] = c, here
            elif (first.overrides, first.attack) != (c.overrides, c.attack):
                raise UserError(f"--suite: condition {c.name} is defined by {where[c.name]} and, differently, by "
                                f"{here}; condition names must be unique in a run: rename one (its name or "
                                "family)")
    return list(out.values())
