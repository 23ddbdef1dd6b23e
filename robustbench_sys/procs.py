"""Worker processes that never outlive the command that started them.

A pool worker (``generate``'s, the evaluation's preprocessing workers) calls
:func:`die_with_parent` at start-up: on Linux the kernel sends it SIGTERM when its parent dies,
even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls the parent's pid
once a second.  Without it a killed ``generate`` leaves its workers writing into ``--out``."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def die_with_parent(parent: int | None = None) -> str:
    """Arrange for this process to end when ``parent`` (default: the current parent) ends.
    Returns how: ``"pdeathsig"`` or ``"poll"``."""
    parent = os.getppid() if parent is None else parent
    how = "poll"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                how = "pdeathsig"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:     # the parent died before the signal was armed
        os._exit(1)
    if how == "poll":
        threading.Thread(target=_watch, args=(parent,), daemon=True, name="die-with-parent").start()
    return how
