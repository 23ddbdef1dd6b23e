#!/usr/bin/env bash
# The GPU checks of the device path (issue 14), for a bare GPU machine without network.
#
#   bash scripts/device-check.sh --prepare     here (PyPI reachable, the venv set up): gathers the kit
#   bash scripts/device-check.sh [--out DIR]   there: runs the GPU tests and bench_device.py, writes
#                                              DIR/device-report.json (default: $OUT or ./device-check-out)
#
# The kit is one git-ignored folder, .device-check/ (at most 60 MiB; it travels with the working
# tree): the torchattacks wheel (the GPU machine has torch, torchvision, timm, numpy, pandas,
# pyarrow, opencv, Pillow, onnxruntime, scipy, tqdm and pytest already), the mobilenet_v2 and
# tf_efficientnet_lite0 weights in the zoo's cache layout (ROBUSTBENCH_SYS_CACHE), and 64 images
# of the ImageNet sample with their labels.csv (ROBUSTBENCH_SYS_SAMPLE_DIR).  The package itself
# is not installed there: it is imported from the working tree in its installed layout
# (scripts/typecheck.py's layout(), symlinks in a temporary folder), so the checks always run the
# code of the tree they travelled with.
#
# The run stays within 8 minutes: each step has its own time limit, and a step that fails or
# runs out of time is recorded in the report with its exit status (the others still run).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="$ROOT/.device-check"
N_IMAGES=64
MAX_MIB=60

prepare() {
    local py="$ROOT/.venv/bin/python" sample="$ROOT/../shared/data/imagenet-sample"
    [ -x "$py" ] || { echo "device-check --prepare: $py missing; run scripts/setup.sh first" >&2; exit 2; }
    [ -f "$sample/labels.csv" ] || { echo "device-check --prepare: $sample/labels.csv missing" >&2; exit 2; }
    rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/cache/weights" "$KIT/images"
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$KIT/wheels" torchattacks==3.5.1 || exit 1
    "$py" - "$KIT" "$sample" "$N_IMAGES" <<'EOF' || exit 1
import csv, shutil, sys
from pathlib import Path

from robustbench_sys import zoo

kit, sample, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for name in ("mobilenet_v2", "tf_efficientnet_lite0"):
    path, sha = zoo.fetch_weights(zoo.get_card(name))
    shutil.copy(path, kit / "cache" / "weights" / Path(path).name)
    print(f"{name}: {Path(path).name} sha256 {sha[:12]}")
with open(sample / "labels.csv", newline="") as f:
    reader = csv.DictReader(f)
    rows = list(reader)[:n]
    fields = reader.fieldnames
with open(kit / "images" / "labels.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
for r in rows:
    shutil.copy(sample / r["file"], kit / "images" / r["file"])
print(f"{len(rows)} images")
EOF
    local mib
    mib=$(du -sm "$KIT" | cut -f1)
    if [ "$mib" -gt "$MAX_MIB" ]; then
        echo "device-check --prepare: $KIT is $mib MiB, over $MAX_MIB MiB" >&2
        exit 1
    fi
    grep -qxF "/.device-check/" "$ROOT/.gitignore" || echo "/.device-check/" >> "$ROOT/.gitignore"
    echo "prepared $KIT ($mib MiB): $(ls "$KIT/wheels" | tr '\n' ' ')"
}

run() {
    local out="$1" py="${PYTHON:-python3}" t0 site src
    [ -d "$KIT/images" ] || { echo "device-check: $KIT missing; run 'bash scripts/device-check.sh --prepare' first" >&2; exit 2; }
    mkdir -p "$out"
    site="$(mktemp -d /tmp/rbs-site.XXXXXX)"
    src="$(mktemp -d /tmp/rbs-src.XXXXXX)"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$KIT"/wheels/*.whl > "$out/pip.log" 2>&1 \
        || { echo "device-check: installing the kit's wheels failed (see $out/pip.log)" >&2; }
    "$py" -c "import sys; sys.path.insert(0, '$ROOT/scripts'); from pathlib import Path; from typecheck import layout; layout(Path('$src'))" \
        || { echo "device-check: building the package layout failed" >&2; exit 1; }
    # the kit's cache is copied: the zoo may write beside the weights, and the tree there is read-only for some
    mkdir -p "$out/cache" && cp -r "$KIT/cache/." "$out/cache/"
    export PYTHONPATH="$src:$site${PYTHONPATH:+:$PYTHONPATH}" ROBUSTBENCH_SYS_CACHE="$out/cache" \
        ROBUSTBENCH_SYS_SAMPLE_DIR="$KIT/images" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    cd "$ROOT"
    t0=$(date +%s)
    "$py" - > "$out/env.json" 2> "$out/env.log" <<'EOF'
import json, torch
from robustbench_sys.devices import device_info
print(json.dumps({"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                  "device": device_info("cuda") if torch.cuda.is_available() else None}, default=str))
EOF
    # -P: the working tree's robustbench_sys/ (without its mapped sub-packages) must not shadow the layout
    timeout 300 "$py" -P -m pytest -p no:cacheprovider -m gpu -rA -s -q tests/test_device_gpu.py \
        --junitxml="$out/gpu-tests.xml" > "$out/gpu-tests.log" 2>&1
    local rc_tests=$?
    timeout 150 "$py" -P benchmarks/bench_device.py --device cuda --data "$KIT/images" --limit "$N_IMAGES" \
        --json "$out/bench-device.json" > "$out/bench-device.log" 2>&1
    local rc_bench=$?
    "$py" - "$out" "$rc_tests" "$rc_bench" "$(( $(date +%s) - t0 ))" <<'EOF'
import json, re, sys
from pathlib import Path

out, rc_tests, rc_bench, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def text(name):
    p = out / name
    return p.read_text(errors="replace") if p.is_file() else ""
def load(name):
    try:
        return json.loads(text(name))
    except ValueError:
        return None
log = text("gpu-tests.log")
report = {
    "seconds": seconds, "env": load("env.json"),
    "gpu_tests": {"exit_status": rc_tests, "timed_out": rc_tests == 124,
                  "outcomes": re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED) (\S+)", log, re.M),
                  "figures": re.findall(r"GPU-FIGURE (.*)", log), "summary": (log.strip().splitlines() or [""])[-1]},
    "bench_device": {"exit_status": rc_bench, "timed_out": rc_bench == 124, "figures": load("bench-device.json"),
                     "tail": text("bench-device.log")[-3000:]},
}
(out / "device-report.json").write_text(json.dumps(report, indent=1, default=str))
print(json.dumps({k: report[k] for k in ("seconds", "env")}, default=str))
print("gpu tests:", report["gpu_tests"]["summary"])
for f in report["gpu_tests"]["figures"]:
    print("  ", f)
print("bench_device:", "exit", rc_bench)
print(report["bench_device"]["tail"][-1500:])
EOF
    echo "report: $out/device-report.json"
}

case "${1:-}" in
    --prepare) prepare ;;
    --out) run "${2:?--out needs a folder}" ;;
    "") run "${OUT:-$ROOT/device-check-out}" ;;
    -h|--help) sed -n 2,17p "$0" ;;
    *) echo "device-check: unknown option $1 (use --prepare, --out DIR or --help)" >&2; exit 2 ;;
esac
