"""Run mypy on the package as it installs: the top-level folders mapped under ``robustbench_sys``.

pyproject's ``package-dir`` installs ``noises/`` as ``robustbench_sys.noises`` (and ``zoo/``,
``dashboard/``, ``data/`` likewise); mypy cannot follow that mapping in a checkout, so this builds
the installed layout from symlinks in a temporary folder and checks it there with the
``[tool.mypy]`` settings of pyproject.toml.

    .venv/bin/python scripts/typecheck.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout(dest: Path) -> Path:
    """``dest/robustbench_sys``: the core's entries plus each mapped folder, as symlinks."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = dest / "robustbench_sys"
    pkg.mkdir(parents=True)
    for entry in (ROOT / conf["robustbench_sys"]).iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in conf.items():
        if name != "robustbench_sys":
            (pkg / name.split(".", 1)[1]).symlink_to(ROOT / folder)
    return pkg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rbs-typecheck-") as tmp:
        layout(Path(tmp))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        if a.cache_dir:
            cmd += ["--cache-dir", a.cache_dir]
        return subprocess.run(cmd, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
