"""Label data shipped with the package (installed as ``robustbench_sys.labels``): the ImageNet
class index.  Generated data sets go below ``data/generated/`` in a checkout (git-ignored) and
are never part of the package."""
