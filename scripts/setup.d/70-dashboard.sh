#!/usr/bin/env bash
# Dashboard (dashboard/app.py, `robustbench-sys dashboard`) and its browser test
# (tests/test_dashboard_browser.py): pinned Streamlit + the Playwright *python* package only.
# The browser is Debian's `chromium` (scripts/apt-packages.txt, /usr/bin/chromium); we never run
# `playwright install`, so nothing is downloaded outside PyPI/apt.
set -euo pipefail
: "${ROOT:?run via scripts/setup.sh}" "${VENV:?run via scripts/setup.sh}"

want="playwright==1.65.2"  # streamlit: the [dashboard] extra; playwright: the [test] extra
stamp="$VENV/.dashboard-stamp"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $want
  "$VENV/bin/python" -c "import streamlit, playwright.sync_api"
  echo "$want" > "$stamp"
fi
