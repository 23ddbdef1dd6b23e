#!/usr/bin/env bash
# Natural corruptions (noises/natural): (1) the frost textures that ship inside the
# imagecorruptions 1.1.2 wheel, extracted into the cache ($ROBUSTBENCH_SYS_CACHE or
# ~/.cache/robustbench-sys)/imagecorruptions-1.1.2/frost (never committed); (2) an isolated
# "oracle" venv $ROOT/.venvs/imagecorruptions with the reference package and the last
# library versions it still runs on (np.float_, skimage multichannel=, scipy.ndimage.interpolation,
# pkg_resources), used only by tests/test_natural_*.py and benchmarks/bench_natural.py through
# noises/natural/_oracle_worker.py.  No scikit-image with Python 3.11 wheels still accepts
# gaussian(multichannel=True); the worker maps it to channel_axis=-1, which is exactly what
# scikit-image 0.19's deprecation shim did.
set -euo pipefail
: "${ROOT:?run via scripts/setup.sh}" "${VENV:?run via scripts/setup.sh}"

IC_VERSION=1.1.2
CACHE=${ROBUSTBENCH_SYS_CACHE:-$HOME/.cache/robustbench-sys}
DEST="$CACHE/imagecorruptions-$IC_VERSION"
if [ ! -f "$DEST/frost/frost5.jpg" ]; then
  tmp=$(mktemp -d)
  "$VENV/bin/python" -m pip download -q --no-deps "imagecorruptions==$IC_VERSION" -d "$tmp"
  mkdir -p "$DEST"
  "$VENV/bin/python" - "$tmp" "$DEST" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/imagecorruptions-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("imagecorruptions/frost/"):
            z.extract(n, sys.argv[1])
import shutil
shutil.copytree(sys.argv[1] + "/imagecorruptions/frost", sys.argv[2] + "/frost", dirs_exist_ok=True)
PY
  rm -rf "$tmp"
fi

OV="$ROOT/.venvs/imagecorruptions"
PINS=(numpy==1.26.4 scipy==1.11.4 scikit-image==0.20.0 opencv-python-headless==4.8.1.78
      Pillow==10.4.0 setuptools==69.5.1)
stamp="$OV/.oracle-stamp"
want="imagecorruptions==$IC_VERSION ${PINS[*]}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x "$OV/bin/python" ] || "${PYTHON:-python3}" -m venv "$OV"
  "$OV/bin/python" -m pip install -q "${PINS[@]}"
  # --no-deps: its metadata asks for opencv-python (needs libGL); the headless build is pinned above
  "$OV/bin/python" -m pip install -q --no-deps "imagecorruptions==$IC_VERSION"
  "$OV/bin/python" -W ignore -c "import numpy as np, imagecorruptions as ic; ic.corrupt(np.zeros((32,32,3),np.uint8), 1, 'fog')"
  echo "$want" > "$stamp"
fi
