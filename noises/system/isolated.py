"""Isolated implementations: Pillow builds that cannot share the main venv.

pillow-simd and pinned older Pillow releases replace the ``PIL`` package, so each runs in
its own virtual environment, reached through a small long-lived worker process
(``_isolated_worker.py``, the same file in every venv; arrays travel as ``.npy`` bytes over
its stdin/stdout).  An *environment spec* names pip requirements; the tool builds the venv
once under ``<cache>/venvs/<name>-<hash of spec>`` (``<cache>`` = ``$ROBUSTBENCH_SYS_CACHE``
or ``~/.cache/robustbench-sys``) and reuses it.  Nothing is built implicitly: the noises'
``available()`` says whether their venv exists, and a missing one is built with::

    python -m robustbench_sys.noises.system.venvs build pillow9 pillow-simd     # or scripts/setup.sh
    python -m robustbench_sys.noises.system.venvs list

Registered noises (per built-in spec ``E`` in :data:`ENV_SPECS`): ``decoder/E`` (Pillow
``Image.open().convert('RGB')`` in that venv) and ``resize/E-{nearest,bilinear,bicubic,box,
hamming,lanczos}`` (``Image.resize``; not for ``pillow9``, whose resize was measured
identical to the main venv's Pillow 13).  Your own spec::

    from robustbench_sys.noises.system import isolated
    isolated.define_env("pillow8", ["Pillow==8.4.0", "numpy<2"])
    isolated.build("pillow8")                       # IsolatedEnvError if pip cannot build it
    isolated.register_env_noises("pillow8")         # decoder/pillow8, resize/pillow8-*

or, without code, a spec file ``NAME.toml`` (``requirements = ["Pillow==8.4.0", "numpy<2"]``;
optional ``pip_args``, ``build_env`` table, ``description``, ``resize = false``) in
``<cache>/envs/`` or a directory of ``$ROBUSTBENCH_SYS_ENVS`` (``:``-separated), read at
import, so ``decoder/NAME`` can be named in any suite.  The command line writes and builds one::

    python -m robustbench_sys.noises.system.venvs define pillow8 "Pillow==8.4.0" "numpy<2"
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np

from robustbench_sys.noises.registry import list_noises, register

WORKER = Path(__file__).resolve().with_name("_isolated_worker.py")
_STAMP = ".robustbench-sys-built.json"


class IsolatedEnvError(RuntimeError):
    """An isolated environment could not be built or used (message: one line, names the spec)."""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    requirements: tuple[str, ...]
    #: extra ``pip install`` arguments
    pip_args: tuple[str, ...] = ()
    #: extra environment variables for the build (e.g. compiler flags)
    build_env: tuple[tuple[str, str], ...] = ()
    description: str = ""
    #: register ``resize/NAME-*`` noises for the built-in spec (False where measured identical to
    #: the main venv's Pillow, which would only duplicate ``resize/pil-*``)
    resize: bool = True

    @property
    def digest(self) -> str:
        key = json.dumps([self.requirements, self.pip_args, self.build_env, sys.version_info[:2]])
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    @property
    def path(self) -> Path:
        return cache_dir() / "venvs" / f"{self.name}-{self.digest}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def _simd_cc() -> tuple[tuple[str, str], ...]:
    # pillow-simd compiles its SSE4 paths by default; AVX2 ones only with -mavx2
    try:
        return (("CC", "cc -mavx2"),) if "avx2" in Path("/proc/cpuinfo").read_text() else ()
    except OSError:
        return ()


#: built-in environment specs
ENV_SPECS: dict[str, EnvSpec] = {
    # Pillow 9.5's decode and all six resize filters were measured pixel-identical to the main
    # venv's Pillow 13 (50 ImageNet images; tests/test_system_isolated.py re-measures), so only
    # decoder/pillow9 is registered; register_env_noises("pillow9", resize=True) adds the resizes
    "pillow9": EnvSpec("pillow9", ("Pillow==9.5.0", "numpy<2"), resize=False,
                       description="Pillow 9.5.0 (last 9.x release, before the 10.x API removals)"),
    "pillow-simd": EnvSpec("pillow-simd", ("pillow-simd==9.5.0.post2", "numpy<2"),
                           pip_args=("--no-cache-dir", "--no-binary", "pillow-simd"), build_env=_simd_cc(),
                           description="pillow-simd 9.5.0.post2 compiled from source (SIMD resize)"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ROBUSTBENCH_SYS_CACHE") or Path.home() / ".cache" / "robustbench-sys")


def define_env(name: str, requirements, *, pip_args=(), build_env=None, description: str = "") -> EnvSpec:
    """Add (or replace) an environment spec ``name`` -> pip ``requirements``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"isolated environment name {name!r} must be a plain name like 'pillow8'")
    spec = EnvSpec(name, tuple(requirements), tuple(pip_args), tuple(sorted((build_env or {}).items())),
                   description)
    ENV_SPECS[name] = spec
    return spec


def spec(name: str) -> EnvSpec:
    try:
        return ENV_SPECS[name]
    except KeyError:
        raise IsolatedEnvError(f"unknown isolated environment {name!r}; defined: {', '.join(sorted(ENV_SPECS))} "
                               "(add one with robustbench_sys.noises.system.isolated.define_env)") from None


def built_info(name: str) -> dict | None:
    """The build record (versions, build seconds) of a built environment, else None."""
    try:
        return json.loads((spec(name).path / _STAMP).read_text())
    except (OSError, ValueError):
        return None


def unavailable(name: str) -> str | None:
    """None when environment ``name`` is built, else a one-line reason with the fix."""
    s = spec(name)
    if built_info(name) is None:
        return (f"isolated environment {name!r} ({' '.join(s.requirements)}) is not built at {s.path}: "
                f"run `python -m robustbench_sys.noises.system.venvs build {name}` (or scripts/setup.sh)")
    return None


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("WARNING: Location")]
    errors = [ln for ln in lines if ln.startswith("ERROR") or "error:" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def build(name: str, *, force: bool = False, timeout: float = 1800) -> Path:
    """Build (once) the venv of spec ``name``; returns its path.  Raises :class:`IsolatedEnvError`
    with a one-line message naming the spec when venv creation, pip or the worker check fails."""
    s = spec(name)
    if built_info(name) is not None and not force:
        return s.path
    s.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{s.path.name}.", dir=s.path.parent))
    base: str = (os.environ.get("ROBUSTBENCH_SYS_ISOLATED_PYTHON")
                 or cast(str, getattr(sys, "_base_executable", sys.executable)))
    env = _clean_env()
    env.update(dict(s.build_env))
    what = f"cannot build isolated environment {name!r} ({' '.join(s.requirements)})"
    t0 = time.perf_counter()
    try:
        # a requirement pip cannot resolve fails here in seconds, before a venv is created
        steps: list[list[str]] = [
            [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--no-deps",
             *[a for a in s.pip_args if a != "--no-cache-dir"], *s.requirements],
            [base, "-m", "venv", str(tmp)],
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *s.pip_args, *s.requirements]]
        for cmd in steps:
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise IsolatedEnvError(f"{what}: {type(e).__name__}: {e}") from None
            if p.returncode != 0:
                raise IsolatedEnvError(f"{what}: {_last_error_line(p.stderr + p.stdout)}")
        seconds = time.perf_counter() - t0
        # the venv moves into place only after the worker answers from it
        w = Worker(name, python=tmp / "bin" / "python")
        try:
            versions = w.versions()
        except Exception as e:
            raise IsolatedEnvError(f"{what}: worker check failed: {str(e).splitlines()[0]}") from None
        finally:
            w.close()
        if s.path.exists():
            shutil.rmtree(s.path)
        # venv scripts hold absolute paths; the python symlink and `python -m` use do not
        tmp.rename(s.path)
        record = {"spec": {"name": s.name, "requirements": list(s.requirements), "pip_args": list(s.pip_args),
                           "build_env": dict(s.build_env)},
                  "versions": versions, "build_seconds": round(seconds, 1)}
        (s.path / _STAMP).write_text(json.dumps(record, indent=1))
        return s.path
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- worker client
class Worker:
    """A long-lived worker process in one isolated venv (thread-safe, restarted if it died)."""

    def __init__(self, name: str, python: Path | None = None):
        self.name = name
        self.python = Path(python) if python else spec(name).python
        self._proc: subprocess.Popen | None = None
        self._err: IO[bytes] | None = None
        self._lock = threading.Lock()
        #: seconds the last decode/resize took inside the worker (library call only, no IPC)
        self.last_seconds = 0.0

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            if not self.python.is_file():
                raise IsolatedEnvError(unavailable(self.name) or f"isolated environment {self.name!r}: "
                                       f"{self.python} missing")
            self._err = tempfile.TemporaryFile()
            self._proc = subprocess.Popen([str(self.python), "-u", str(WORKER)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._err, env=_clean_env())
        return self._proc

    def _stderr_tail(self) -> str:
        if self._err is None:
            return ""
        self._err.seek(0)
        return _last_error_line(self._err.read().decode(errors="replace"))

    def call(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        with self._lock:
            p = self._start()
            h = json.dumps(header).encode()
            assert p.stdin is not None  # Popen(stdin=PIPE)
            try:
                p.stdin.write(struct.pack(">I", len(h)) + h + struct.pack(">Q", len(payload)))
                p.stdin.write(payload)
                p.stdin.flush()
                (hlen,) = struct.unpack(">I", self._read(p, 4))
                answer = json.loads(self._read(p, hlen))
                (plen,) = struct.unpack(">Q", self._read(p, 8))
                out = self._read(p, plen) if plen else b""
            except (OSError, EOFError, struct.error) as e:
                p.kill()
                raise IsolatedEnvError(f"isolated environment {self.name!r}: worker died ({e}); "
                                       f"{self._stderr_tail()}") from None
        if not answer.pop("ok", False):
            raise OSError(f"isolated environment {self.name!r}: {answer.get('error')}")
        return answer, out

    @staticmethod
    def _read(p, n: int) -> bytes:
        buf = p.stdout.read(n)
        if len(buf) != n:
            raise EOFError("short read")
        return buf

    def versions(self) -> dict:
        return self.call({"op": "versions"})[0]

    def decode(self, data: bytes) -> np.ndarray:
        answer, out = self.call({"op": "decode"}, bytes(data))
        self.last_seconds = answer.get("seconds", 0.0)
        return _from_npy(out)

    def resize(self, img: np.ndarray, size, resample: str) -> np.ndarray:
        answer, out = self.call({"op": "resize", "filter": resample, "size": [int(s) for s in size]}, _to_npy(img))
        self.last_seconds = answer.get("seconds", 0.0)
        return _from_npy(out)

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                try:
                    assert self._proc.stdin is not None  # Popen(stdin=PIPE)
                    self._proc.stdin.close()
                    self._proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()
                self._proc = None


def _to_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


_WORKERS: dict[str, Worker] = {}
_WORKERS_LOCK = threading.Lock()


def worker(name: str) -> Worker:
    """The shared worker of environment ``name`` (started on first use; the venv must be built)."""
    reason = unavailable(name)
    if reason:
        raise IsolatedEnvError(reason)
    with _WORKERS_LOCK:
        if name not in _WORKERS:
            _WORKERS[name] = Worker(name)
        return _WORKERS[name]


@atexit.register
def close_all() -> None:
    for w in list(_WORKERS.values()):
        w.close()
    _WORKERS.clear()


# --------------------------------------------------------------------------- noises
_FILTERS = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
            "box": "BOX", "hamming": "HAMMING", "lanczos": "LANCZOS"}


def _versions(name: str) -> dict:
    info = built_info(name) or {}
    out = dict(info.get("versions", {}))
    out["isolated_env"] = name
    if info.get("spec", {}).get("build_env"):
        out["build_env"] = " ".join(f"{k}={v}" for k, v in info["spec"]["build_env"].items())
    return out


def register_env_noises(name: str, *, resize: bool = True) -> list[str]:
    """Register ``decoder/NAME`` and (with ``resize``) ``resize/NAME-<filter>`` for spec ``name``."""
    s = spec(name)
    base = {"library": f"Pillow in isolated venv {name!r}", "requirements": list(s.requirements)}
    keys = []

    def decode(data: bytes) -> np.ndarray:
        return worker(name).decode(data)

    decode.__doc__ = (f"Pillow ``Image.open(...).convert('RGB')`` in isolated venv {name!r} "
                      f"({' '.join(s.requirements)}).")
    register("decoder", name, params=dict(base, exif_orientation=False),
             available=lambda: unavailable(name), versions=lambda: _versions(name))(decode)
    keys.append(f"decoder/{name}")
    for interp, flt in (_FILTERS.items() if resize else ()):
        def resize_isolated(img: np.ndarray, size, _flt=flt) -> np.ndarray:
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"resize expects an HxWx3 uint8 image, got {img.dtype} {img.shape}")
            return worker(name).resize(img, size, _flt)

        resize_isolated.__doc__ = (f"Pillow Image.resize with {flt} in isolated venv {name!r} "
                                   f"({' '.join(s.requirements)}).")
        register("resize", f"{name}-{interp}",
                 params=dict(base, interpolation=interp, antialias=interp != "nearest"),
                 available=lambda: unavailable(name), versions=lambda: _versions(name))(resize_isolated)
        keys.append(f"resize/{name}-{interp}")
    return keys


# --------------------------------------------------------------------------- spec files
def spec_dirs() -> list[Path]:
    """Where spec files are read: ``<cache>/envs`` and each directory of ``$ROBUSTBENCH_SYS_ENVS``."""
    extra = [Path(p).expanduser() for p in os.environ.get("ROBUSTBENCH_SYS_ENVS", "").split(":") if p]
    return [cache_dir() / "envs", *extra]


def load_spec_file(path: Path) -> EnvSpec:
    """Parse one ``NAME.toml`` spec file; ValueError (one line, names the file) when malformed."""
    import tomllib

    try:
        d = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"isolated environment spec {path}: unreadable ({str(e).splitlines()[0]})") from None
    req, pip_args, env = d.get("requirements"), d.get("pip_args", []), d.get("build_env", {})
    if not req or not isinstance(req, list) or not all(isinstance(r, str) for r in req) \
            or not isinstance(pip_args, list) or not isinstance(env, dict):
        raise ValueError(f"isolated environment spec {path}: needs requirements = [\"Pillow==X.Y.Z\", ...] "
                         "(a list of pip requirement strings); pip_args a list, build_env a table")
    unknown = sorted(set(d) - {"requirements", "pip_args", "build_env", "description", "resize"})
    if unknown:
        raise ValueError(f"isolated environment spec {path}: unknown key(s) {', '.join(unknown)}; valid: "
                         "requirements, pip_args, build_env, description, resize")
    spec_ = define_env(Path(path).stem, req, pip_args=pip_args, build_env={k: str(v) for k, v in env.items()},
                       description=str(d.get("description", "")))
    if d.get("resize") is False:
        spec_ = ENV_SPECS[spec_.name] = dataclasses.replace(spec_, resize=False)
    return spec_


def write_spec_file(name: str, requirements, *, pip_args=(), resize: bool = True, description: str = "") -> Path:
    """Write ``<cache>/envs/NAME.toml`` (what ``venvs define`` does) and load it."""
    define_env(name, requirements)   # validates the name
    q = lambda v: json.dumps(str(v))
    lines = [f"requirements = [{', '.join(q(r) for r in requirements)}]"]
    if pip_args:
        lines.append(f"pip_args = [{', '.join(q(a) for a in pip_args)}]")
    if description:
        lines.append(f"description = {q(description)}")
    if not resize:
        lines.append("resize = false")
    path = cache_dir() / "envs" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    spec_ = load_spec_file(path)
    if f"decoder/{name}" not in list_noises(f"decoder/{name}"):
        register_env_noises(name, resize=spec_.resize)
    return path


def _load_spec_files() -> None:
    import warnings

    for d in spec_dirs():
        for path in sorted(d.glob("*.toml")) if d.is_dir() else ():
            if path.stem in BUILTIN_ENVS:
                warnings.warn(f"{path}: {path.stem!r} is a built-in isolated environment; file ignored", stacklevel=2)
                continue
            try:
                s = load_spec_file(path)
            except ValueError as e:
                warnings.warn(str(e), stacklevel=2)
                continue
            register_env_noises(s.name, resize=s.resize)


BUILTIN_ENVS = frozenset(ENV_SPECS)
for _name, _spec in list(ENV_SPECS.items()):
    register_env_noises(_name, resize=_spec.resize)
_load_spec_files()
