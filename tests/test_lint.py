"""Static checks: ``ruff check`` and ``mypy`` (both configured in pyproject.toml) pass on the repository.

The tools are taken from the running interpreter's environment (``pip install -e .[test]`` pins
them); a test skips when its tool is not installed there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(BIN))
    if exe is None:
        pytest.skip(f"{name} is not installed in {BIN} (pip install -e .[test])")
    return exe


def test_ruff_check_passes():
    p = subprocess.run([_tool("ruff"), "check", "--no-cache", str(ROOT)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"ruff check failed:\n{p.stdout}{p.stderr}"


def test_mypy_passes(tmp_path_factory):
    """mypy on the installed layout (``scripts/typecheck.py`` maps noises/, zoo/, dashboard/ and
    data/ under robustbench_sys as pyproject's package-dir does)."""
    _tool("mypy")
    cache = tmp_path_factory.mktemp("mypy-cache")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "typecheck.py"), "--cache-dir", str(cache)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"mypy failed:\n{p.stdout}{p.stderr}"
