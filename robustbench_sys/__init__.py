"""robustbench-sys: how robust is an image classifier, really?

    >>> import robustbench_sys as rbs
    >>> df = rbs.evaluate(["mobilenet_v2"], ["clean", "resize"], data="foolbox-demo", out="/tmp/res")

Subpackages: :mod:`~robustbench_sys.eval` (plan, batch loop, deploy, executors),
:mod:`~robustbench_sys.metrics` (paired, natural, adversarial), :mod:`~robustbench_sys.results`
(store, report, leaderboard); modules: :mod:`~robustbench_sys.pipeline`, :mod:`~robustbench_sys.data`,
:mod:`~robustbench_sys.suites`, :mod:`~robustbench_sys.generate`, :mod:`~robustbench_sys.cli`.
"""

from robustbench_sys.eval.api import evaluate

__version__ = "0.1.0"
__all__ = ["evaluate", "__version__"]
