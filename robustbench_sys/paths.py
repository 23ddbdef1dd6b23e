"""Default locations (environment-overridable; never relative to the working directory)."""

from __future__ import annotations

import os
from pathlib import Path


def default_results_dir() -> Path:
    """``$ROBUSTBENCH_SYS_RESULTS`` or ``$XDG_DATA_HOME/robustbench-sys/results``."""
    env = os.environ.get("ROBUSTBENCH_SYS_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "robustbench-sys" / "results"
