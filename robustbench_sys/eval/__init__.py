"""Evaluation: plan units, run the one batch loop (classify or attack), summarise, scale out.

- :mod:`~robustbench_sys.eval.api`: :func:`evaluate`, the typed entry point
- :mod:`~robustbench_sys.eval.plan`: units, their ids, and the conditions a model skips
- :mod:`~robustbench_sys.eval.loop`: the batch loop and the classify strategy
- :mod:`~robustbench_sys.eval.attack`: the attack strategy and adversarial summaries
- :mod:`~robustbench_sys.eval.deploy`: model-side stages (graph, precision, backend)
- :mod:`~robustbench_sys.eval.scoring`: a unit's summary row
- :mod:`~robustbench_sys.eval.runner`: a run's context, shared by every executor
- :mod:`~robustbench_sys.eval.executors`: Dask
"""

from robustbench_sys.eval.api import evaluate

__all__ = ["evaluate"]
