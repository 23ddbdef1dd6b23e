#!/usr/bin/env bash
# Sets up robustbench-sys on a fresh Debian/Ubuntu machine: apt packages, a venv with
# pinned torch, the project (editable), torchattacks (--no-deps), every fragment in
# scripts/setup.d/, and the offline weights + demo data.  Idempotent: a second run
# only checks.  Works offline except for PyPI / apt.
#
#   bash scripts/setup.sh            # venv in ./.venv
#   ROBUSTBENCH_SYS_VENV=/x bash scripts/setup.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ROBUSTBENCH_SYS_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
export ROOT VENV
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# ---------------------------------------------------------------- apt packages
APT_PKGS=$(grep -hv '^\s*#' "$ROOT"/scripts/apt-packages.txt | xargs)
missing=()
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing apt packages (${missing[*]}); install them as root. Features that need them report 'unavailable'."
  fi
fi

# ---------------------------------------------------------------- venv + core
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.robustbench-sys-stamp"
want=$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" "$ROOT"/scripts/setup.d/*.sh "$ROOT/scripts/apt-packages.txt" 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch 2.14.1 + torchvision 0.29.1 (from this machine's disk where present)"
  $PIP install -q --upgrade pip
  $PIP install -q "torch==2.14.1" "torchvision==0.29.1"
  log "installing robustbench-sys (editable) with every extra and its dependencies"
  $PIP install -q -e "$ROOT[all,test]" "torch==2.14.1" "torchvision==0.29.1"
  # torchattacks 3.5.1 pins requests~=2.25.1, which drags the resolver into old releases
  $PIP install -q --no-deps "torchattacks==3.5.1"
  for frag in "$ROOT"/scripts/setup.d/*.sh; do
    [ -e "$frag" ] || continue
    log "running $(basename "$frag")"
    bash "$frag"
  done
  echo "$want" > "$stamp"
else
  log "venv up to date ($VENV)"
fi

# ---------------------------------------------------------------- weights + demo data
export HF_HUB_OFFLINE=1
log "fetching offline weights and the demo data set into the cache"
"$VENV/bin/robustbench-sys" zoo fetch --offline >&2
"$VENV/bin/robustbench-sys" data fetch foolbox-demo >&2
log "done: $VENV/bin/robustbench-sys is ready"
