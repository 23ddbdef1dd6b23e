"""Client of the reference ``imagecorruptions`` 1.1.2 ("oracle"), which runs in its own venv
(``$ROBUSTBENCH_SYS_IC_VENV``, default ``<repo>/.venvs/imagecorruptions``, built by
``scripts/setup.d/50-imagecorruptions-oracle.sh``) through ``_oracle_worker.py``: arrays go
in and out as .npy files in a temporary directory, all jobs in one subprocess call.
Used by the faithfulness tests and ``benchmarks/bench_natural.py``; never by the library.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

WORKER = Path(__file__).resolve().with_name("_oracle_worker.py")


def venv_python() -> Path:
    root = (os.environ.get("ROBUSTBENCH_SYS_IC_VENV")
            or Path(__file__).resolve().parents[2] / ".venvs" / "imagecorruptions")
    return Path(root) / "bin" / "python"


def unavailable() -> str | None:
    """None when the oracle venv is usable, else a one-line reason."""
    py = venv_python()
    if not py.is_file():
        return (f"imagecorruptions oracle venv not found ({py}): "
                "run scripts/setup.sh (fragment 50-imagecorruptions-oracle.sh)")
    return None


def run(images: np.ndarray, jobs: list[dict], timeout: float = 900) -> tuple[np.ndarray, list[float]]:
    """Run ``jobs`` ({"name", "severity", "image", "seed"}) on ``images`` (N, H, W, 3) uint8 with
    the reference; returns (J, H, W, 3) uint8 outputs in job order and per-job seconds."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="ic-oracle-") as d:
        np.save(f"{d}/images.npy", images)
        with open(f"{d}/jobs.json", "w") as f:
            json.dump([{k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in j.items()} for j in jobs], f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.setdefault("OMP_NUM_THREADS", "1")
        p = subprocess.run([str(venv_python()), str(WORKER), d], capture_output=True, text=True, env=env,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"imagecorruptions oracle failed (rc {p.returncode}): {p.stderr.strip()[-2000:]}")
        out = np.load(f"{d}/out.npy")
        with open(f"{d}/seconds.json") as f:
            secs = json.load(f)
    return out, secs
