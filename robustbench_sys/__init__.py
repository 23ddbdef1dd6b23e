"""robustbench-sys: how robust is an image classifier, really?

    >>> import robustbench_sys as rbs
    >>> df = rbs.evaluate(["mobilenet_v2"], ["clean", "resize"], data="foolbox-demo", out="/tmp/res")
"""

from robustbench_sys.runner import evaluate

__version__ = "0.1.0"
__all__ = ["evaluate", "__version__"]
