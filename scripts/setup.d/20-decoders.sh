#!/usr/bin/env bash
# System-noise decoders and isolated Pillow builds (noises/system/decode.py, isolated.py):
# PyTurboJPEG<2 over Debian's libturbojpeg0 (decoder/turbojpeg-fast), PyAV with its bundled
# FFmpeg (decoder/ffmpeg); then the isolated venvs under
# ${ROBUSTBENCH_SYS_CACHE:-~/.cache/robustbench-sys}/venvs/: pillow9 (Pillow 9.5.0 wheel, ~25 s)
# and pillow-simd (9.5.0.post2 compiled from source with gcc, a few minutes on 2 cores).
# Each build is skipped when its venv already exists (the tool keys it by a hash of the spec).
set -euo pipefail
: "${ROOT:?run via scripts/setup.sh}" "${VENV:?run via scripts/setup.sh}"

# PyTurboJPEG and av come with the [decoders] extra (pyproject.toml)
"$VENV/bin/python" - <<'PY'
from robustbench_sys import noises
for k in ("decoder/turbojpeg-fast", "decoder/ffmpeg"):
    reason = noises.get(k).available()
    if reason:
        raise SystemExit(f"{k}: {reason}")
PY
"$VENV/bin/python" -m robustbench_sys.noises.system.venvs build pillow9 pillow-simd
