#!/usr/bin/env bash
# Deploy-stage runtimes (noises/system/{backend,precision}.py): ONNX export (torch.onnx dynamo
# exporter needs onnx + onnxscript), ONNX Runtime (CPU EP; fp32 and QDQ int8), OpenVINO (CPU),
# torchao (PT2E int8 with X86InductorQuantizer; 0.18.0 is the release matching torch 2.14).
# onnxruntime-gpu / TensorRT are not installed here (no GPU); those noises report "unavailable".
set -euo pipefail
: "${VENV:?run via scripts/setup.sh (exports VENV)}"
# onnx, onnxscript, onnxruntime, openvino and torchao come with the [backends] extra (pyproject.toml)
"$VENV/bin/python" - <<'PY'
import onnx, onnxruntime, onnxscript, openvino, torchao  # noqa: F401  fail loudly if broken
PY
