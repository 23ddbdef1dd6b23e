#!/usr/bin/env bash
# Deploy-stage runtimes (noises/system/{backend,precision}.py): ONNX export (torch.onnx dynamo
# exporter needs onnx + onnxscript), ONNX Runtime (CPU EP; fp32 and QDQ int8), OpenVINO (CPU),
# torchao (PT2E int8 with X86InductorQuantizer; 0.18.0 is the release matching torch 2.14).
# onnxruntime-gpu / TensorRT are not installed here (no GPU); those noises report "unavailable".
set -euo pipefail
: "${VENV:?run via scripts/setup.sh (exports VENV)}"
"$VENV/bin/python" -m pip install -q \
  "onnx==1.23.2" "onnxscript==0.7.2" "onnx-ir==1.1.0" "onnxruntime==1.31.1" \
  "openvino==2026.4.1" "torchao==0.18.0" "torch==2.14.1"
"$VENV/bin/python" - <<'PY'
import onnx, onnxruntime, onnxscript, openvino, torchao  # noqa: F401  fail loudly if broken
PY
