"""The tuned allocator (robustbench_sys.alloc) reaches every kind of process the tool starts,
``ROBUSTBENCH_SYS_MALLOC=default`` switches it off, and provenance records it.

Every check runs in a fresh interpreter (mallopt and the MALLOC_*_ variables are process-wide;
this test process is left alone).  No timing: where glibc is present, a 64 MiB ``malloc`` is
checked to come from the brk heap (tuned: below the mmap threshold) or from its own mapping
(glibc's default), which is what the tuning is for."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
VARS = ("ROBUSTBENCH_SYS_MALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")

# What a child reports: its allocator_info, the tuned variables in its environment, and
# whether a 64 MiB malloc landed in the [heap] (brk) segment.
PROBE = r'''
import ctypes, json, os
from robustbench_sys.alloc import allocator_info

def in_heap():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.malloc.restype = ctypes.c_void_p
    p = libc.malloc(64 << 20)
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= p < hi:
            return line.rstrip().endswith("[heap]")
    return False

def report():
    return {"info": allocator_info(), "heap": in_heap(),
            "env": {k: os.environ[k] for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_") if k in os.environ}}
'''

# The parent: tune as the CLI / evaluate() do, then start children the way the tool does.
PARENT = PROBE + r'''
import multiprocessing as mp, subprocess, sys
from robustbench_sys.alloc import tune_allocator

def child(q):
    q.put(report())

def via(method):
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start(); r = q.get(timeout=120); p.join()
    return r

if __name__ == "__main__":
    parent = {"tuned": tune_allocator(), **report()}
    from robustbench_sys.noises.system.isolated import _clean_env
    iso = subprocess.run([sys.executable, "-c", PROBE_SRC + "\nprint(json.dumps(report()))"], env=_clean_env(),
                         capture_output=True, text=True, check=True)
    print(json.dumps({"parent": parent,
                      "fork": via("fork"),      # preprocessing workers, generator pool (fork)
                      "spawn": via("spawn"),    # Dask LocalCluster workers, generator pool (spawn)
                      "isolated": json.loads(iso.stdout)}))   # isolated-venv workers
'''


def _run(code: str, malloc: str | None, tmp_path) -> dict:
    script = tmp_path / "probe_parent.py"
    script.write_text(f"PROBE_SRC = {PROBE!r}\n" + code)
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if malloc is not None:
        env["ROBUSTBENCH_SYS_MALLOC"] = malloc
    p = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the allocator tuning applies to glibc only")
def test_every_kind_of_child_runs_tuned(tmp_path):
    from robustbench_sys import alloc

    r = _run(PARENT, None, tmp_path)
    assert r["parent"]["tuned"]["mode"] == "tuned"
    assert r["parent"]["tuned"]["trim_threshold"] == alloc.TRIM_THRESHOLD
    mmap = r["parent"]["tuned"]["mmap_threshold"]
    assert mmap in (alloc.MMAP_THRESHOLD, alloc.MMAP_THRESHOLD_CAP)
    want = {alloc.TRIM_VAR: str(alloc.TRIM_THRESHOLD), alloc.MMAP_VAR: str(mmap)}
    for kind in ("parent", "fork", "spawn", "isolated"):
        assert r[kind]["env"] == want, kind
        if mmap > 64 << 20:   # glibc took the 1 GiB threshold: a 64 MiB block comes from the heap
            assert r[kind]["heap"] is True, kind
    assert r["fork"]["info"]["mode"] == "tuned"                   # the parent's malloc state, forked
    for kind in ("spawn", "isolated"):                            # glibc applied the variables at start-up
        assert r[kind]["info"]["mode"] == "inherited" and r[kind]["info"]["env"] == want, kind


@pytest.mark.skipif(not GLIBC, reason="the allocator tuning applies to glibc only")
def test_switch_default_leaves_glibc_alone(tmp_path):
    r = _run(PARENT, "default", tmp_path)
    assert r["parent"]["tuned"]["mode"] == "default"
    for kind in ("parent", "fork", "spawn", "isolated"):
        assert r[kind]["env"] == {}, kind
        assert r[kind]["heap"] is False, kind         # glibc's default: a 64 MiB block is its own mapping
        assert r[kind]["info"]["mode"] == "default", kind


def test_provenance_records_the_allocator(tmp_path):
    code = r'''
import json
from robustbench_sys.provenance import environment
before = environment()["allocator"]
from robustbench_sys.alloc import tune_allocator
tune_allocator()
print(json.dumps({"before": before, "after": environment()["allocator"]}))
'''
    r = _run(code, None, tmp_path)
    assert r["before"]["mode"] == "default"
    assert r["after"]["mode"] == ("tuned" if GLIBC else "unsupported")
    assert "glibc" in r["after"]
    r = _run(code, "default", tmp_path)
    assert r["after"]["mode"] == "default"


def test_cli_main_tunes(tmp_path):
    code = r'''
import json
from robustbench_sys import cli
from robustbench_sys.alloc import allocator_info
rc = cli.main(["suites", "list"])
print(json.dumps({"rc": rc, "info": allocator_info()}))
'''
    r = _run(code, None, tmp_path)
    assert r["rc"] == 0
    assert r["info"]["mode"] == ("tuned" if GLIBC else "unsupported")
