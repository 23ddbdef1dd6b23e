"""Threads per process, chosen from the cores the process owns.

Every process the evaluator runs is one of a few *kinds*; :func:`plan_threads` decides, for a
kind and a number of owned cores, torch's intra-op and inter-op threads, OpenCV's threads, the
OpenMP / MKL / OpenBLAS variables of the processes it starts, and how many preprocessing worker
processes it forks; :func:`apply` puts a plan in force in the calling process and returns what
was actually applied (recorded in every summary's provenance, ``provenance["threads"]``).

Kinds (``cores``: :func:`robustbench_sys.procs.available_cores`, the affinity mask, not the
machine's CPU count that torch and OpenCV default to):

- ``main``, the one-process evaluator (``evaluate()`` without a scheduler, the CLI): the model
  gets every owned core (intra-op ``cores``; never raised above what the process already runs
  with, so ``torch.set_num_threads`` before ``evaluate()`` is respected), one inter-op thread
  (eager CPU inference runs one op at a time; the inter-op pool only serves ``torch.jit.fork``),
  OpenCV ``cores`` threads for in-process preprocessing, and ``min(16, cores)`` preprocessing
  workers, which run in lockstep with the model (:func:`robustbench_sys.eval.loop.batches`):
  each phase has every core to itself.
- ``preprocess``, a forked preprocessing worker (evaluation, shared-prefix groups, ``generate``)
  or a spawned DataLoader worker: one thread everywhere, in every mode.  Not only for speed: a
  forked child that enters an OpenMP parallel region after its parent used OpenMP waits forever
  for threads that did not survive the fork, so torch runs at one intra-op thread in a forked
  worker whatever an override asks; OpenCV is serial because the parent forks it with OpenCV at
  one thread (``eval.loop.serial_opencv``; calling ``cv2.setNumThreads`` in a forked child can
  deadlock), so it is not called there.
- ``dask``, a Dask worker process: ``cores`` = the cores of its share (``local:N``: owned cores
  / N; ``jobqueue``: cores / processes; a running cluster: the worker's ``nthreads``); the
  model and the in-process preprocessing both get them (``dask.workers=N`` forks N lockstep
  preprocessing workers in a worker that is not daemonic; Dask's are by default, and on 2 shared
  cores forking them per unit of 32 images cost 30%); OMP / MKL / OpenBLAS variables are set
  when the process starts (``LocalCluster(env=...)``, the jobqueue script's prologue).  Left to
  itself, Dask's nanny starts every worker at ``OMP_NUM_THREADS=1``
  (``distributed.nanny.pre-spawn-environ``): one torch thread whatever the worker owns.

Isolated-venv workers (:mod:`robustbench_sys.noises.system.isolated`, a Pillow build decoding
one image at a time) start from their parent's environment, which in a worker kind carries the
plan's ``OMP_NUM_THREADS`` etc.

Override (``ROBUSTBENCH_SYS_THREADS``), comma-separated:

- ``auto`` (default): the plans above;
- ``naive``: set nothing where that is safe: every library at its own default (torch and
  OpenCV at the machine's core count in the evaluator and in each Dask worker, i.e.
  oversubscribed workers; for comparison, see ``benchmarks/bench_runner.py --threads``); the
  forked preprocessing workers keep their one thread (above) and their number;
- ``KEY=N`` for every kind, or ``KIND.KEY=N`` for one (``main``, ``preprocess``, ``dask``), with
  KEY ``cores`` (plan as if owning N cores), ``torch``, ``interop``, ``opencv``, ``blas``
  (OMP / MKL / OpenBLAS of started processes) or ``workers`` (0 or more), e.g.
  ``ROBUSTBENCH_SYS_THREADS=main.torch=1,dask.cores=4``.

A bad value is a one-line :class:`~robustbench_sys.errors.UserError` naming the variable.

OpenMP's wait policy: torch's intra-op threads spin after each parallel region by default, so
on a machine whose cores other processes share (a login node, a laptop, this project's 2-core
test machine) every op waits for a thread that was descheduled: mobilenet_v2's forward at two
threads measured 3.4x *slower* than at one there, and 1.0x with ``OMP_WAIT_POLICY=PASSIVE``
(threads sleep between regions; on an idle machine the cost is a wake-up per op).  libgomp reads
the policy once, when torch loads, so ``import robustbench_sys`` sets it (:func:`early`; unless
it is set already, torch is loaded already or the mode is ``naive``) and every worker kind gets it
in its start-up environment; the applied record notes a ``main`` process that could not.

torch allows ``set_num_interop_threads`` once per process, before any inter-op work: a second
plan with another value, or a process that already ran inter-op work, keeps the value it has and
the applied record says so (``notes``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from robustbench_sys.errors import UserError
from robustbench_sys.procs import available_cores

SWITCH = "ROBUSTBENCH_SYS_THREADS"
KINDS = ("main", "preprocess", "dask")
KEYS = ("cores", "torch", "interop", "opencv", "blas", "workers")
MODES = ("auto", "naive")
#: variables read at start-up by OpenMP (torch's intra-op pool), MKL and OpenBLAS (numpy)
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: OpenMP's wait policy, read once when libgomp loads (with torch): PASSIVE threads sleep between
#: parallel regions instead of spinning (see the module doc)
WAIT_VAR, WAIT_POLICY = "OMP_WAIT_POLICY", "PASSIVE"
#: at most this many preprocessing workers by default
MAX_WORKERS = 16


@dataclass(frozen=True)
class ThreadPlan:
    """What one process of ``kind`` owning ``cores`` cores runs with; None = left to the library."""

    kind: str
    cores: int
    torch: int | None
    interop: int | None
    opencv: int | None
    blas: int | None
    workers: int
    mode: str = "auto"
    omp_wait: str | None = None
    overrides: tuple[tuple[str, int], ...] = field(default=())

    def env(self) -> dict[str, str]:
        """OpenMP / MKL / OpenBLAS variables for the processes this one starts ({} when naive)."""
        env = {} if self.blas is None else {k: str(self.blas) for k in ENV_VARS}
        if self.omp_wait:
            env[WAIT_VAR] = os.environ.get(WAIT_VAR, self.omp_wait)   # a user's own policy stands
        return env

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["overrides"] = dict(self.overrides)
        return d


def _bad(raw: str, what: str) -> UserError:
    return UserError(f"{SWITCH}={raw}: {what}; expected auto, naive or KEY=N entries, comma-separated "
                     f"(KEY: {', '.join(KEYS)}; KIND.KEY for one kind: {', '.join(KINDS)}), "
                     "e.g. main.torch=1,dask.cores=4")


def parse_override(raw: str | None) -> tuple[str, dict[str, dict[str, int]]]:
    """``(mode, {kind or "*": {key: n}})`` of a ``ROBUSTBENCH_SYS_THREADS`` value (one-line
    :class:`UserError` when it is malformed)."""
    mode, out = "auto", {}   # type: str, dict[str, dict[str, int]]
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.lower() in MODES:
            mode = entry.lower()
            continue
        if "=" not in entry:
            raise _bad(raw or "", f"{entry!r} is neither a mode nor KEY=N")
        key, _, value = (s.strip() for s in entry.partition("="))
        kind, _, key = key.rpartition(".")
        if kind and kind not in KINDS:
            raise _bad(raw or "", f"unknown process kind {kind!r}")
        if key not in KEYS:
            raise _bad(raw or "", f"unknown key {key!r}")
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < (0 if key == "workers" else 1):
            raise _bad(raw or "", f"{entry!r}: N must be an integer >= {0 if key == 'workers' else 1}")
        out.setdefault(kind or "*", {})[key] = n
    return mode, out


def owned_cores() -> int:
    """The cores this process plans for: its affinity mask, or ``cores=N`` / ``main.cores=N``."""
    _, over = parse_override(os.environ.get(SWITCH))
    return {**over.get("*", {}), **over.get("main", {})}.get("cores", available_cores())


def plan_threads(kind: str, cores: int | None = None, override: str | None = None) -> ThreadPlan:
    """The plan of a process of ``kind`` (:data:`KINDS`) owning ``cores`` cores (default: this
    process's, :func:`owned_cores`).  ``override``: a ``ROBUSTBENCH_SYS_THREADS`` value (default:
    the variable's).  Pure: sets nothing (see :func:`apply`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown process kind {kind!r}; expected one of {', '.join(KINDS)}")
    raw = os.environ.get(SWITCH) if override is None else override
    mode, over = parse_override(raw)
    mine = {**over.get("*", {}), **over.get(kind, {})}
    if kind == "dask":   # a plain cores=N is this process's; a Dask worker's share is dask.cores=N
        mine.pop("cores", None)
        mine.update({k: v for k, v in over.get("dask", {}).items() if k == "cores"})
    if "cores" in mine:
        cores = mine["cores"]
    elif cores is None:
        cores = {**over.get("*", {}), **over.get("main", {})}.get("cores", available_cores())
    cores = max(1, int(cores))
    workers = min(MAX_WORKERS, cores) if kind == "main" else 0
    plan: dict[str, int | None]
    if kind == "preprocess":   # naive too: torch and OpenCV pools do not survive fork (see apply)
        plan = {"torch": 1, "interop": 1, "opencv": 1, "blas": 1, "workers": 0}
    elif mode == "naive":
        plan = {"torch": None, "interop": None, "opencv": None, "blas": None, "workers": workers}
    elif kind == "main":
        plan = {"torch": cores, "interop": 1, "opencv": cores, "blas": 1, "workers": workers}
    else:   # dask: the model and the in-process preprocessing share the worker's cores
        plan = {"torch": cores, "interop": 1, "opencv": cores, "blas": cores, "workers": 0}
    # workers: the preprocessing processes an evaluator or a Dask worker forks (preprocess: none)
    given = {k: v for k, v in mine.items() if k != "cores" and (k != "workers" or kind != "preprocess")}
    plan.update(given)
    return ThreadPlan(kind=kind, cores=cores, torch=plan["torch"], interop=plan["interop"], opencv=plan["opencv"],
                      blas=plan["blas"], workers=int(plan["workers"] or 0), mode=mode,
                      overrides=tuple(sorted(mine.items())), omp_wait=None if mode == "naive" else WAIT_POLICY)


#: whether torch (libgomp) was loaded before :func:`early` could set the wait policy
_EARLY: dict = {}


def early() -> None:
    """At ``import robustbench_sys``: OpenMP's wait policy PASSIVE for this process, when torch
    is not loaded yet (libgomp reads it once) and neither the user nor ``naive`` says otherwise."""
    try:
        mode, _ = parse_override(os.environ.get(SWITCH))
    except UserError:   # reported by evaluate()
        mode = "auto"
    _EARLY["torch_loaded_first"] = "torch" in sys.modules
    if mode != "naive" and not _EARLY["torch_loaded_first"]:
        os.environ.setdefault(WAIT_VAR, WAIT_POLICY)


# ---------------------------------------------------------------------- applying
#: what :func:`apply` put in force in this process (per process: forked children start from the parent's)
_APPLIED: dict = {}
#: the record a summary written now should carry instead (a Dask worker's, see :func:`recording`)
_RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("robustbench_sys_threads", default=None)


def apply(plan: ThreadPlan, *, forked: bool = False) -> dict:
    """Put ``plan`` in force in this process; returns (and keeps, :func:`applied`) what is in
    force afterwards: ``kind``, ``mode``, ``cores``, ``torch``, ``interop``, ``opencv``, ``env``,
    ``workers``, ``pid`` and ``notes`` (why a value differs from the plan).

    ``forked``: this process was forked from an evaluator, which forked it with OpenCV at one
    thread; OpenCV is not called (``cv2.setNumThreads`` in a forked child can deadlock).
    The ``main`` plan never raises torch's intra-op threads above what they are (a user's
    ``torch.set_num_threads`` before ``evaluate()`` stands); an explicit ``torch=N`` override does."""
    import torch

    notes: list[str] = []
    if forked and plan.torch != 1:
        notes.append(f"torch intra-op at 1, not {plan.torch}: a forked worker's parallel region would wait "
                     "forever for the parent's OpenMP threads")
        plan = dataclasses.replace(plan, torch=1)
    if plan.torch is not None:
        n = plan.torch
        explicit = any(k == "torch" for k, _ in plan.overrides)
        if plan.kind == "main" and not explicit and torch.get_num_threads() < n:
            n = torch.get_num_threads()
            notes.append(f"torch intra-op kept at {n} (set before the plan; below {plan.torch})")
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    if plan.interop is not None and torch.get_num_interop_threads() != plan.interop:
        try:
            torch.set_num_interop_threads(plan.interop)
        except RuntimeError:   # once per process, before any inter-op work
            notes.append(f"torch inter-op kept at {torch.get_num_interop_threads()} (torch sets it once per "
                         "process, before inter-op work)")
    cv2 = sys.modules.get("cv2")
    if cv2 is None and plan.opencv is not None and not forked:
        try:
            import cv2
        except ImportError:
            cv2 = None
    opencv = None
    if forked:
        opencv = plan.opencv if plan.opencv is not None else "inherited"
    elif cv2 is not None:
        if plan.opencv is not None and cv2.getNumThreads() != plan.opencv:
            cv2.setNumThreads(plan.opencv)
        opencv = cv2.getNumThreads()
    if plan.kind != "main":   # worker kinds: the processes they start (isolated venvs, oracles)
        os.environ.update(plan.env())
    if plan.omp_wait and os.environ.get(WAIT_VAR) != plan.omp_wait and plan.kind == "main":
        notes.append(f"OpenMP wait policy {os.environ.get(WAIT_VAR, 'default (spinning)')}: torch was loaded "
                     f"before robustbench_sys, set {WAIT_VAR}={plan.omp_wait} before starting Python to use it")
    _APPLIED.clear()
    _APPLIED.update(kind=plan.kind, mode=plan.mode, cores=plan.cores, torch=torch.get_num_threads(),
                    interop=torch.get_num_interop_threads(), opencv=opencv,
                    env={k: os.environ[k] for k in (*ENV_VARS, WAIT_VAR) if k in os.environ}, workers=plan.workers,
                    pid=os.getpid(), notes=notes, overrides=dict(plan.overrides))
    return applied() or {}


def applied() -> dict | None:
    """What :func:`apply` last put in force in this process (None before)."""
    return dict(_APPLIED, notes=list(_APPLIED["notes"])) if _APPLIED else None


def apply_main() -> dict:
    """The ``main`` plan for the evaluator process (each ``evaluate()``; a one-line
    :class:`UserError` for a bad ``ROBUSTBENCH_SYS_THREADS``)."""
    return apply(plan_threads("main"))


def record() -> dict:
    """The ``threads`` entry of a summary's provenance: the plan in force where the unit ran (a
    Dask worker's, inside :func:`recording`), else this process's, with the plan of the
    preprocessing workers it forks."""
    rec = _RECORD.get()
    if rec is not None:
        return rec
    out: dict = {"process": applied()}
    try:
        out["preprocess"] = plan_threads("preprocess").as_dict()
    except UserError as e:
        out["preprocess"] = str(e)
    return out


@contextmanager
def recording(rec: dict | None):
    """Summaries written inside the block record ``rec`` as their thread plan."""
    token = _RECORD.set(rec)
    try:
        yield
    finally:
        _RECORD.reset(token)

