"""robustbench-sys: how robust is an image classifier, really?

    >>> import robustbench_sys as rbs
    >>> df = rbs.evaluate(["mobilenet_v2"], ["clean", "resize"], data="foolbox-demo", out="/tmp/res")

Subpackages: :mod:`~robustbench_sys.eval` (plan, batch loop, deploy, executors),
:mod:`~robustbench_sys.metrics` (paired, natural, adversarial), :mod:`~robustbench_sys.results`
(store, report, leaderboard); modules: :mod:`~robustbench_sys.pipeline`, :mod:`~robustbench_sys.data`,
:mod:`~robustbench_sys.suites`, :mod:`~robustbench_sys.generate`, :mod:`~robustbench_sys.audit`,
:mod:`~robustbench_sys.cli`.  The repository's top-level folders install under this name:
:mod:`robustbench_sys.noises` (``noises/``), :mod:`robustbench_sys.zoo` (``zoo/``),
:mod:`robustbench_sys.dashboard` (``dashboard/``) and ``robustbench_sys.labels`` (``data/``).

``evaluate`` is imported on first use, so ``import robustbench_sys.noises`` stays light (no
torch import); the audit of a deployment stack is :func:`robustbench_sys.audit.audit`.
"""

from typing import Any

from robustbench_sys.threads import early as _early_threads

_early_threads()   # OpenMP's wait policy, before anything loads torch (robustbench_sys.threads)

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from robustbench_sys.eval.api import evaluate

        return evaluate
    raise AttributeError(f"module 'robustbench_sys' has no attribute {name!r}")
