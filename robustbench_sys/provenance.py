"""Provenance recorded with every result: library versions, CPU/GPU, platform, git commit,
allocator settings (:mod:`robustbench_sys.alloc`), the thread plan in force
(:mod:`robustbench_sys.threads`)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: distributions whose versions are recorded when installed (read from metadata: no import)
PACKAGES = ("robustbench-sys", "numpy", "Pillow", "pillow-simd", "opencv-python-headless", "opencv-python",
            "torch", "torchvision", "timm", "onnx", "onnxruntime", "openvino", "torchao", "av",
            "PyTurboJPEG", "torchattacks", "pandas", "pyarrow")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "fma", "f16c")


def _pkg_versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu() -> dict:
    model, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags), "cpu_count": os.cpu_count()}


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Machine + package provenance (computed once per process), the allocator settings in
    force now (``allocator``: :func:`robustbench_sys.alloc.allocator_info`) and the thread plan
    where the unit ran (``threads``: :func:`robustbench_sys.threads.record`)."""
    from robustbench_sys.alloc import allocator_info
    from robustbench_sys.threads import record

    return {**_static_environment(), "allocator": allocator_info(), "threads": record()}


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict:
    import torch
    from PIL import features

    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "packages": _pkg_versions(), "libjpeg-turbo": features.version("libjpeg_turbo"),
           "torch_threads": torch.get_num_threads(), "git_commit": _git_commit()}
    env.update(_cpu())
    env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return env
