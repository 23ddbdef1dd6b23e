#!/usr/bin/env bash
# Scale-out executor (robustbench_sys/executors.py, `eval --scheduler local:N|tcp://...`):
# Dask distributed, pinned; tests/test_cluster.py starts a LocalCluster on 127.0.0.1.
set -euo pipefail
: "${VENV:?run via scripts/setup.sh}"
# dask and distributed come with the [cluster] extra (pyproject.toml)
"$VENV/bin/python" -c "import distributed"
