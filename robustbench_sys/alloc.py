"""A tuned glibc allocator for every process the tool runs.

glibc's malloc returns large freed blocks to the kernel (``munmap`` above the mmap threshold,
``trim`` of the heap top above the trim threshold), so a model's activation buffers are
page-faulted in again on every batch: the forward of a small CNN then spends as much time in
the kernel as in user space (mobilenet_v2, batch 32: one 32x96x112x112 float32 activation is
154 MiB, far above glibc's default 128 KiB .. 32 MiB dynamic mmap threshold).
:func:`tune_allocator` raises both thresholds so these buffers come from the heap and stay
there between batches:

- in this process, with ``mallopt`` through ctypes (any time before the model runs);
- in every process started from it, through the ``MALLOC_TRIM_THRESHOLD_`` /
  ``MALLOC_MMAP_THRESHOLD_`` environment variables, which glibc reads at process start-up.
  Forked preprocessing and generator workers inherit the parent's malloc state and the
  environment; spawned Dask workers, spawned generator workers and the isolated-venv
  workers (``robustbench_sys.noises.system.isolated``) inherit the environment.

The mmap threshold asked for is 1 GiB (glibc >= 2.26 accepts any value; an older glibc that
refuses it gets its cap, 32 MiB on 64-bit, and :func:`allocator_info` says so).

Switches (``ROBUSTBENCH_SYS_MALLOC``):

- unset or ``tuned``: as above;
- ``default``: glibc's defaults, here and in child processes (to compare; see
  ``benchmarks/bench_runner.py``);
- ``LD_PRELOAD`` naming jemalloc or tcmalloc (``apt-get install libjemalloc2`` /
  ``libtcmalloc-minimal4``, then e.g. ``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
  robustbench-sys eval ...``): glibc is not touched, the preloaded allocator is recorded.

:func:`allocator_info` says what is in force; every result's provenance records it
(:func:`robustbench_sys.provenance.environment`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("robustbench_sys")

#: mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: freed memory kept for reuse instead of being returned to the kernel
TRIM_THRESHOLD = 2 << 30
#: blocks below this come from the heap, not from their own mmap
MMAP_THRESHOLD = 1 << 30
#: what glibc < 2.26 accepts at most on 64-bit (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD_CAP = 32 << 20
#: the switch (see module doc) and the variables glibc reads at start-up
SWITCH = "ROBUSTBENCH_SYS_MALLOC"
TRIM_VAR, MMAP_VAR = "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"
PRELOADS = ("jemalloc", "tcmalloc")

_state: dict = {}


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _preload() -> str:
    return next((x for x in PRELOADS if x in os.environ.get("LD_PRELOAD", "")), "")


def tune_allocator() -> dict:
    """Raise glibc's trim and mmap thresholds here and in child processes (idempotent).

    Returns :func:`allocator_info`."""
    if _state:
        return allocator_info()
    mode = os.environ.get(SWITCH, "tuned").strip().lower() or "tuned"
    if mode not in ("tuned", "default"):
        log.warning("%s=%s: expected 'tuned' or 'default'; using 'tuned'", SWITCH, mode)
        mode = "tuned"
    if mode == "default":
        _state.update(mode="default")
        return allocator_info()
    if _preload():
        _state.update(mode="preload")
        return allocator_info()
    libc = _libc()
    if libc is None:
        _state.update(mode="unsupported", reason=f"not glibc ({platform.system()} {platform.libc_ver()[0]})")
        return allocator_info()
    trim = TRIM_THRESHOLD if libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 else None
    mmap = next((v for v in (MMAP_THRESHOLD, MMAP_THRESHOLD_CAP) if libc.mallopt(M_MMAP_THRESHOLD, v) == 1), None)
    if trim is not None:
        os.environ[TRIM_VAR] = str(trim)
    if mmap is not None:
        os.environ[MMAP_VAR] = str(mmap)
    _state.update(mode="tuned", trim_threshold=trim, mmap_threshold=mmap)
    return allocator_info()


def allocator_info() -> dict:
    """What allocator settings this process runs with (for provenance).

    ``mode``: ``tuned`` (mallopt here), ``inherited`` (the ``MALLOC_*_`` variables were set
    when this process started; glibc applied them), ``default``, ``preload`` (jemalloc /
    tcmalloc through ``LD_PRELOAD``) or ``unsupported`` (not glibc)."""
    info = dict(_state)
    env = {k: os.environ[k] for k in (TRIM_VAR, MMAP_VAR) if k in os.environ}
    if not info:
        info["mode"] = "preload" if _preload() else "inherited" if env else "default"
    if info["mode"] in ("inherited", "default") and env:
        info["env"] = env
    if info["mode"] == "preload":
        info["preload"] = os.environ.get("LD_PRELOAD", "")
    info["glibc"] = platform.libc_ver()[1] if platform.libc_ver()[0] == "glibc" else None
    return info
