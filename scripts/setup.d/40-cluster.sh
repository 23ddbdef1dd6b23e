#!/usr/bin/env bash
# Scale-out executor (robustbench_sys/executors.py, `eval --scheduler local:N|tcp://...`):
# Dask distributed, pinned; tests/test_cluster.py starts a LocalCluster on 127.0.0.1.
set -euo pipefail
: "${VENV:?run via scripts/setup.sh}"
"$VENV/bin/python" -m pip install -q "dask==2026.8.0" "distributed==2026.8.0"
"$VENV/bin/python" -c "import distributed"
