"""``robustbench-sys audit``: the deployment stack you ship, stage by stage.

The user describes the stack in the order it is built (SysNoise Fig. 3's cumulative path),
as a string or a TOML file::

    robustbench-sys audit --model mobilenet_v2 --data DIR \\
        --stack "decoder=opencv,resize=cv2-linear,color=yuv420-bt601-limited,deploy=precision/int8-ort-qdq"

    # stack.toml: one [stack] table, in the order you ship the stages
    [stack]
    decoder = "opencv"
    resize = "cv2-linear"
    color = "yuv420-bt601-limited"
    deploy = "precision/int8-ort-qdq"

Keys are stage names (:mod:`robustbench_sys.noises.stages`), values registered noises of that stage (bare
names or full keys; ``deploy`` takes the full key, ``precision/...`` or ``backend/...``).
The audit is an ordinary evaluation of a :class:`~robustbench_sys.suites.Suite` of family
``audit`` against the model's own reference pipeline, so its units and per-image rows are
shared with every other evaluation of the same pipelines (the same store, the same unit ids).
Its conditions, for the stack id ``<id>`` (a hash of the ordered stack), are::

    audit/<id>/stack                  the whole stack
    audit/<id>/alone:<i>-<stage>      stage i alone, everything else the model's own
    audit/<id>/path:<i>-<s1>+...+<si> stages 1..i (the cumulative path; the last step is the whole
                                      stack, the same unit as audit/<id>/stack)

The names carry the stack's order and the stored pipelines its noises, so ``results show --by
audit`` and the dashboard's Audit page rebuild the view from the stored summaries alone
(:func:`robustbench_sys.results.report.audit_rows`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from robustbench_sys import noises
from robustbench_sys.devices import add_device_option
from robustbench_sys.errors import UserError
from robustbench_sys.noises.registry import UnknownNoise
from robustbench_sys.noises.stages import UnknownStage, full_key, get_stage, pipeline_stages
from robustbench_sys.results.report import display_value, parse_condition
from robustbench_sys.suites import Condition, Suite

if TYPE_CHECKING:
    import pandas as pd

FAMILY = "audit"
SUITE_VERSION = 1
EXAMPLE = '"decoder=opencv,resize=cv2-linear"'


# ---------------------------------------------------------------------- the stack
@dataclass(frozen=True)
class Stack:
    """The user's deployment stack: ``(stage, full noise key)`` pairs in the user's order."""

    stages: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        return stack_id(self.stages)

    @property
    def name(self) -> str:
        """The audit's suite name (and the prefix of its condition names)."""
        return f"{FAMILY}/{self.id}"

    def overrides(self, upto: int | None = None) -> dict[str, str]:
        """Pipeline overrides of the first ``upto`` stages (all by default)."""
        return dict(self.stages[:upto])

    def text(self, sep: str = " > ") -> str:
        return sep.join(f"{s}={display_value(s, v)}" for s, v in self.stages)


def stack_id(stages) -> str:
    """8 hex digits identifying an ordered stack (the same stack in another order is another audit)."""
    return hashlib.sha1(json.dumps([[s, v] for s, v in stages]).encode()).hexdigest()[:8]


def parse_stack(spec: str | os.PathLike | Mapping, source: str | None = None) -> Stack:
    """The stack of ``spec``: ``"stage=noise,stage=noise,..."``, a ``.toml`` file with a
    ``[stack]`` table (its order kept), or a mapping built in code.

    An empty stack, an unknown stage or noise, a noise of another stage and a stage given
    twice are one-line :class:`UserError` s naming ``source`` (default ``--stack``)."""
    if isinstance(spec, Mapping):
        return _stack(source or "stack", list(spec.items()))
    text = os.fspath(spec)
    if text.strip().lower().endswith(".toml"):
        return _stack_file(Path(text).expanduser(), source or f"--stack {text}")
    src = source or "--stack"
    items = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise UserError(f"{src}: {item!r} is not stage=noise; write e.g. {EXAMPLE} (stages: "
                            f"{', '.join(s.name for s in pipeline_stages())}), or give a .toml file")
        stage, value = item.split("=", 1)
        items.append((stage.strip(), value.strip()))
    return _stack(src, items)


def _stack_file(path: Path, src: str) -> Stack:
    if not path.is_file():
        raise UserError(f"{src}: no such file; give a .toml file with a [stack] table or a string such as {EXAMPLE}")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{src}: {e}") from None
    table = d.get("stack")
    if not isinstance(table, dict):
        raise UserError(f"{src}: needs a [stack] table of stage = \"noise\" lines, in the order you ship them")
    extra = sorted(set(d) - {"stack"})
    if extra:
        raise UserError(f"{src}: unknown top-level key(s) {', '.join(extra)}; the file holds one [stack] table")
    return _stack(src, list(table.items()))


def _stack(src: str, items: list) -> Stack:
    if not items:
        raise UserError(f"{src}: empty stack; give stage=noise pairs in the order you ship them, e.g. {EXAMPLE}")
    out: list[tuple[str, str]] = []
    for stage, value in items:
        try:
            st = get_stage(str(stage))
        except UnknownStage:
            raise UserError(f"{src}: unknown stage {stage!r}; valid: "
                            f"{', '.join(s.name for s in pipeline_stages())}") from None
        if not st.in_pipeline:
            raise UserError(f"{src}: stage {st.name!r} is not part of a deployment pipeline; valid: "
                            f"{', '.join(s.name for s in pipeline_stages())}")
        if any(s == st.name for s, _ in out):
            raise UserError(f"{src}: stage {st.name} given twice; a stack has one noise per stage")
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{src}: stage {st.name} has no noise (a string); see 'robustbench-sys noises list "
                            f"\"{st.families[0]}/*\"'")
        try:
            key = full_key(st.name, value.strip())
        except ValueError as e:
            raise UserError(f"{src}: {e}") from None
        assert key is not None
        if key not in st.builtin:
            try:
                nz = noises.get(key)
            except UnknownNoise as e:
                raise UserError(f"{src}: {st.name}={value}: {e}") from None
            if nz.stage != st.name:
                raise UserError(f"{src}: {key} is a {nz.stage} noise, not a {st.name} one; write "
                                f"{nz.stage}={value}")
        out.append((st.name, key))
    return Stack(tuple(out))


def check_available(stack: Stack) -> None:
    """Refuse (one line) a stack with a noise that cannot run here."""
    for stage, key in stack.stages:
        if key in get_stage(stage).builtin:
            continue
        reason = noises.get(key).available()
        if reason:
            raise UserError(f"--stack {stage}={display_value(stage, key)}: not available here: {reason}")


# ---------------------------------------------------------------------- the suite and its names
def audit_suite(stack: Stack) -> Suite:
    """The audit as an ordinary suite of family ``audit``: the whole stack, each stage alone,
    and the cumulative path in the user's order (see the module docstring for the names)."""
    def cond(part: str, overrides: dict) -> Condition:
        return Condition(f"{stack.name}/{part}", FAMILY, stack.name, SUITE_VERSION, overrides)

    n = len(stack.stages)
    conds = [cond("stack", stack.overrides())]
    conds += [cond(f"alone:{i}-{s}", {s: v}) for i, (s, v) in enumerate(stack.stages, 1)]
    conds += [cond(f"path:{i}-" + "+".join(s for s, _ in stack.stages[:i]), stack.overrides(i))
              for i in range(1, n + 1)]
    return Suite(stack.name, FAMILY, SUITE_VERSION, f"audit of the stack {stack.text()}", tuple(conds), "")


# ---------------------------------------------------------------------- running it
def audit(models, stack: Stack | str | os.PathLike | Mapping, data="foolbox-demo", out=None, *,
          limit: int | None = None, batch_size: int = 32, workers: int | None = None, progress: bool = True,
          calibration="foolbox-demo", scheduler=None, device: str | None = None, **model_kw) -> pd.DataFrame:
    """Evaluate ``stack`` on ``models`` against their reference pipelines; the summaries (clean
    and the audit conditions) as :func:`~robustbench_sys.eval.api.evaluate` returns them, with
    ``attrs["stack"]`` the :class:`Stack`.  Show them with
    :func:`robustbench_sys.results.report.audit_report`.

    ``models`` and ``model_kw`` (``preprocess=``, ``checkpoint=``, ``name=``) are those of
    :func:`evaluate`: every model entry point, e.g. an ``.onnx`` file with ``preprocess="mobilenet_v2"``
    (run as deployed by ONNX Runtime: a model-side stage such as ``deploy`` is then skipped)."""
    from robustbench_sys.eval.api import evaluate

    stack = stack if isinstance(stack, Stack) else parse_stack(stack)
    check_available(stack)
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be at least 1")
    df = evaluate(models, [audit_suite(stack)], data, out, limit=limit, batch_size=batch_size, workers=workers,
                  progress=progress, calibration=calibration, scheduler=scheduler, device=device,
                  **{k: v for k, v in model_kw.items() if v is not None})
    df.attrs["stack"] = stack
    return df


# ---------------------------------------------------------------------- command line
def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """The ``audit`` subcommand on ``subparsers`` (``ArgumentParser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "audit", help="your deployment stack, stage by stage, against the model's reference pipeline",
        description="Evaluate the stack you ship against the model's reference pipeline on your data: the whole "
                    "stack's ΔACC [95%% CI] and flip rate, each stage alone, the cumulative path in your order "
                    "(SysNoise Fig. 3) and a verdict. Results go to the store (results show --by audit).")
    p.add_argument("--model", required=True, type=_csv, help="zoo names or model files, comma-separated")
    p.add_argument("--stack", required=True,
                   help=f"stage=noise pairs in the order you ship them, e.g. {EXAMPLE}, "
                        "or a .toml file with a [stack] table")
    p.add_argument("--data", required=True, help="image folder, folder with labels.csv, or foolbox-demo")
    p.add_argument("--out", default=None,
                   help="results root (default $ROBUSTBENCH_SYS_RESULTS or ~/.local/share/robustbench-sys/results)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by file name)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None,
                   help="preprocessing processes; 0 = in the main process (default: one per core, at most 16)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    add_device_option(p)
    try:   # --checkpoint / --preprocess / --name, as eval has them (any model: .onnx, timm:, python:, ...)
        from robustbench_sys.models_cli import add_model_options
    except ImportError:
        pass
    else:
        add_model_options(p)
    return p


def cmd_audit(a) -> int:
    from robustbench_sys.results import report

    stack = parse_stack(a.stack)
    models, model_kw = a.model, {}
    if hasattr(a, "preprocess"):    # add_model_options
        from robustbench_sys.models_cli import eval_model_kwargs

        model_kw = eval_model_kwargs(a.model, a.checkpoint, a.preprocess, a.name)
        models = model_kw.pop("models")
    df = audit(models, stack, a.data, a.out, limit=a.limit, batch_size=a.batch_size, workers=a.workers,
               progress=not a.no_progress, device=getattr(a, "device", None), **model_kw)
    mine = df[[(p := parse_condition(c)) is not None and p.stack_id == stack.id for c in df.condition]] \
        if not df.empty else df
    if a.format == "csv":
        print(report.render(report.audit_table(mine), "csv"))
        for v in report.audit_verdicts(mine):
            print(v, file=sys.stderr)
    else:
        print(report.audit_report(mine, a.format))
    if mine.empty or not (mine.condition == f"{stack.name}/stack").any():
        why = [s["reason"] for s in df.attrs.get("skipped", []) if s["condition"] == f"{stack.name}/stack"]
        print(f"no result for the whole stack{': ' + why[0] if why else ''}", file=sys.stderr)
    print(f"\nresults: {df.attrs.get('out')}  (robustbench-sys results show --by audit --out ...)", file=sys.stderr)
    return 0
