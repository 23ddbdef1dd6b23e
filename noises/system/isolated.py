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

Rules for your own specs (checked by :func:`define_env`, ``venvs define`` and the spec-file loader):

- the name matches ``[a-z0-9][a-z0-9._-]*``, at most :data:`MAX_NAME_LEN` characters, and is
  neither a built-in environment (``pillow9``, ``pillow-simd``) nor a name whose noises would
  collide with a built-in noise: ``decoder/NAME`` must not exist and no built-in
  ``resize/NAME`` or ``resize/NAME-*`` either (so ``pil``, ``opencv``, ``cv2``, ``torch``,
  ``pillow`` are taken);
- each requirement is one PEP 508 requirement (``packaging.requirements.Requirement``):
  ``Pillow==8.4.0``, ``numpy<2; python_version < "3.13"``, or a direct reference
  ``pillow @ https://...`` / ``pillow @ file:///abs/path/x.whl`` (schemes: https, file,
  git+https, git+ssh).  Nothing starting with ``-`` (pip options such as ``-r``, ``-e``,
  ``--index-url``), no bare paths, URLs or archive file names: pip receives the requirements
  after ``--``, from an empty working directory;
- ``pip_args`` is an allow-list: ``--no-cache-dir``, ``--prefer-binary``, ``--pre``,
  ``--no-build-isolation``, ``--no-binary=PKGS``, ``--only-binary=PKGS`` (PKGS: ``:all:``,
  ``:none:`` or comma-separated project names; the two-word form ``--no-binary PKGS`` too).  For
  another index use pip's own configuration (``PIP_INDEX_URL``, ``pip.conf``), which the build
  inherits;
- ``build_env`` keys are environment variable names (``[A-Za-z_][A-Za-z0-9_]*``).

A spec file that breaks a rule (or cannot be parsed) is skipped at import with one ``warning:``
line on stderr naming the file and what to do; every command keeps working.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import re
import shlex
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

from robustbench_sys.noises import registry as _registry
from robustbench_sys.noises.registry import register

# the built-in decoder/resize noises are registered before any spec file is read, so a spec
# named after one of them is refused here instead of making decode.py / resize.py fail
from robustbench_sys.noises.system import decode as _decode  # noqa: F401
from robustbench_sys.noises.system import resize as _resize  # noqa: F401

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


BUILTIN_ENVS = frozenset(ENV_SPECS)

# --------------------------------------------------------------------------- spec rules
#: longest name of a user-defined environment
MAX_NAME_LEN = 40
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_NAME_RULE = f"a plain name like 'pillow8': [a-z0-9][a-z0-9._-]*, at most {MAX_NAME_LEN} characters"
_URL_SCHEMES = ("https", "file", "git+https", "git+ssh")
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.lz")
_REQ_RULE = ("one PEP 508 requirement like 'Pillow==8.4.0' or 'pillow @ https://...' (no pip options, "
             "no bare paths or URLs)")
_PIP_FLAGS = ("--no-cache-dir", "--prefer-binary", "--pre", "--no-build-isolation")
_PIP_VALUED = ("--no-binary", "--only-binary")
_PIP_VALUE_RE = re.compile(r":all:|:none:|[A-Za-z0-9][A-Za-z0-9._-]*(,[A-Za-z0-9][A-Za-z0-9._-]*)*")
_PIP_RULE = (f"allowed: {', '.join(_PIP_FLAGS)}, {'=PKGS, '.join(_PIP_VALUED)}=PKGS "
             "(for another index configure pip itself: PIP_INDEX_URL or pip.conf)")
_ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: names defined through define_env (spec files, ``venvs define``), not built in
_USER_ENVS: set[str] = set()
#: noise keys registered by register_env_noises, per environment
_ENV_KEYS: dict[str, list[str]] = {}


def _builtin_noise_keys() -> list[str]:
    """Registered noise keys that no user-defined environment registered."""
    user = {k for n in _USER_ENVS for k in _ENV_KEYS.get(n, ())}
    return [k for k in _registry.registered_keys() if k not in user]


def check_env_name(name) -> None:
    """ValueError (one line, names ``name`` and the rule) unless ``name`` may name a user-defined
    environment: plain lowercase, not built in, no collision with a built-in noise."""
    what = f"isolated environment name {name!r}"
    if not isinstance(name, str) or len(name) > MAX_NAME_LEN or not _NAME_RE.fullmatch(name):
        raise ValueError(f"{what}: must be {_NAME_RULE}")
    if name in BUILTIN_ENVS:
        raise ValueError(f"{what}: is a built-in isolated environment ({', '.join(sorted(BUILTIN_ENVS))}); "
                         "pick another name")
    clash = sorted(k for k in _builtin_noise_keys()
                   if k == f"decoder/{name}" or k == f"resize/{name}" or k.startswith(f"resize/{name}-"))
    if clash:
        raise ValueError(f"{what}: collides with the built-in noise {clash[0]} (decoder/NAME and resize/NAME-* "
                         "must not name built-in noises); pick another name, e.g. "
                         f"{(name + '-user')[:MAX_NAME_LEN]!r}")


def check_requirement(req) -> str:
    """``req`` stripped, or ValueError (one line, names it and the rule) unless it is one PEP 508
    requirement pip can only read as a requirement (see the module docstring)."""
    from packaging.requirements import InvalidRequirement, Requirement

    what = f"requirement {req!r}"
    if not isinstance(req, str) or not req.strip():
        raise ValueError(f"{what}: must be {_REQ_RULE}")
    r = req.strip()
    if r.startswith("-"):
        raise ValueError(f"{what}: pip options are not accepted; must be {_REQ_RULE}")
    if not r.isprintable():
        raise ValueError(f"{what}: control characters; must be {_REQ_RULE}")
    try:
        parsed = Requirement(r)
    except InvalidRequirement as e:
        raise ValueError(f"{what}: not PEP 508 ({str(e).splitlines()[0]}); must be {_REQ_RULE}") from None
    if parsed.url is None and parsed.name.lower().endswith(_ARCHIVES):
        raise ValueError(f"{what}: looks like a file name; give a local file as 'NAME @ file:///abs/path' "
                         f"(must be {_REQ_RULE})")
    if parsed.url is not None and not parsed.url.lower().startswith(tuple(f"{s}://" for s in _URL_SCHEMES)):
        raise ValueError(f"{what}: the URL of 'NAME @ URL' must use {', '.join(_URL_SCHEMES)}")
    return r


def check_pip_args(args) -> tuple[str, ...]:
    """``args`` as a tuple, or ValueError (one line) unless each is on the allow-list."""
    args = tuple(args)
    i = 0
    while i < len(args):
        a = args[i]
        if not isinstance(a, str):
            raise ValueError(f"pip argument {a!r}: not a string; {_PIP_RULE}")
        flag, eq, value = a.partition("=")
        if a in _PIP_FLAGS:
            i += 1
            continue
        if flag in _PIP_VALUED:
            if not eq:   # two-word form: --no-binary PKGS
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            if not isinstance(value, str) or not _PIP_VALUE_RE.fullmatch(value):
                raise ValueError(f"pip argument {a!r}: {flag} needs ':all:', ':none:' or comma-separated "
                                 f"project names, got {value!r}")
            i += 1
            continue
        raise ValueError(f"pip argument {a!r}: not allowed; {_PIP_RULE}")
    return args


def _check_build_env(build_env) -> tuple[tuple[str, str], ...]:
    items = tuple(sorted((build_env or {}).items()))
    for k, v in items:
        if not isinstance(k, str) or not _ENV_VAR_RE.fullmatch(k) or "\0" in str(v):
            raise ValueError(f"build_env {k!r}: keys must be environment variable names ([A-Za-z_][A-Za-z0-9_]*) "
                             "and values plain strings")
    return tuple((k, str(v)) for k, v in items)


def make_spec(name: str, requirements, *, pip_args=(), build_env=None, description: str = "",
              resize: bool = True) -> EnvSpec:
    """The :class:`EnvSpec` of a user-defined environment, after checking every rule (ValueError,
    one line naming what broke which rule); defines nothing."""
    check_env_name(name)
    if isinstance(requirements, str) or not requirements:
        raise ValueError(f"isolated environment {name!r}: needs a list of requirements, each {_REQ_RULE}")
    reqs = tuple(check_requirement(r) for r in requirements)
    return EnvSpec(name, reqs, check_pip_args(pip_args), _check_build_env(build_env), str(description),
                   resize=bool(resize))


def define_env(name: str, requirements, *, pip_args=(), build_env=None, description: str = "",
               resize: bool = True) -> EnvSpec:
    """Add (or replace) a user-defined environment spec ``name`` -> pip ``requirements`` (the rules
    of the module docstring; ValueError, one line, when one is broken)."""
    spec = make_spec(name, requirements, pip_args=pip_args, build_env=build_env, description=description,
                     resize=resize)
    ENV_SPECS[name] = spec
    _USER_ENVS.add(name)
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
                f"run `python -m robustbench_sys.noises.system.venvs build {shlex.quote(name)}` "
                "(or scripts/setup.sh)")
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
    if name in _USER_ENVS:   # ENV_SPECS may have been changed by hand since define_env
        try:
            make_spec(name, s.requirements, pip_args=s.pip_args, build_env=dict(s.build_env))
        except ValueError as e:
            raise IsolatedEnvError(f"cannot build isolated environment {name!r}: {e}") from None
    s.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{s.path.name}.", dir=s.path.parent))
    # pip runs from an empty directory: it reads a requirement naming a local folder as that folder
    empty = Path(tempfile.mkdtemp(prefix=f".{s.path.name}.cwd.", dir=s.path.parent))
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
             *[a for a in s.pip_args if a != "--no-cache-dir"], "--", *s.requirements],
            [base, "-m", "venv", str(tmp)],
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *s.pip_args, "--", *s.requirements]]
        for cmd in steps:
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=empty)
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
        shutil.rmtree(empty, ignore_errors=True)
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


def _env_noise_keys(name: str, resize: bool) -> list[str]:
    return [f"decoder/{name}", *([f"resize/{name}-{interp}" for interp in _FILTERS] if resize else [])]


def _clashing_keys(name: str, resize: bool) -> list[str]:
    """Keys environment ``name`` would register that some other noise already holds."""
    owned = set(_ENV_KEYS.get(name, ()))
    return [k for k in _env_noise_keys(name, resize) if k in set(_registry.registered_keys()) and k not in owned]


def register_env_noises(name: str, *, resize: bool = True) -> list[str]:
    """Register ``decoder/NAME`` and (with ``resize``) ``resize/NAME-<filter>`` for spec ``name``
    (those not registered yet by an earlier call); returns the keys.  ValueError, before
    registering anything, when another noise holds one of the keys."""
    s = spec(name)
    clash = _clashing_keys(name, resize)
    if clash:
        raise ValueError(f"isolated environment {name!r}: noise {clash[0]} is already registered by something "
                         "else; pick another environment name")
    owned = _ENV_KEYS.setdefault(name, [])
    base = {"library": f"Pillow in isolated venv {name!r}", "requirements": list(s.requirements)}

    def decode(data: bytes) -> np.ndarray:
        return worker(name).decode(data)

    decode.__doc__ = (f"Pillow ``Image.open(...).convert('RGB')`` in isolated venv {name!r} "
                      f"({' '.join(s.requirements)}).")
    if f"decoder/{name}" not in owned:
        register("decoder", name, params=dict(base, exif_orientation=False),
                 available=lambda: unavailable(name), versions=lambda: _versions(name))(decode)
        owned.append(f"decoder/{name}")
    for interp, flt in (_FILTERS.items() if resize else ()):
        if f"resize/{name}-{interp}" in owned:
            continue

        def resize_isolated(img: np.ndarray, size, _flt=flt) -> np.ndarray:
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"resize expects an HxWx3 uint8 image, got {img.dtype} {img.shape}")
            return worker(name).resize(img, size, _flt)

        resize_isolated.__doc__ = (f"Pillow Image.resize with {flt} in isolated venv {name!r} "
                                   f"({' '.join(s.requirements)}).")
        register("resize", f"{name}-{interp}",
                 params=dict(base, interpolation=interp, antialias=interp != "nearest"),
                 available=lambda: unavailable(name), versions=lambda: _versions(name))(resize_isolated)
        owned.append(f"resize/{name}-{interp}")
    return _env_noise_keys(name, resize)


# --------------------------------------------------------------------------- spec files
def spec_dirs() -> list[Path]:
    """Where spec files are read: ``<cache>/envs`` and each directory of ``$ROBUSTBENCH_SYS_ENVS``."""
    extra = [Path(p).expanduser() for p in os.environ.get("ROBUSTBENCH_SYS_ENVS", "").split(":") if p]
    return [cache_dir() / "envs", *extra]


_SPEC_KEYS = ("requirements", "pip_args", "build_env", "description", "resize")
#: spec files read at import: name -> file
_SPEC_FILES: dict[str, Path] = {}


def parse_spec_file(path: Path) -> EnvSpec:
    """The checked spec of one ``NAME.toml`` file (defines nothing); ValueError, one line naming
    the file and the broken rule, when malformed."""
    import tomllib

    path = Path(path)
    what = f"isolated environment spec {path}"
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    req, pip_args, env = d.get("requirements"), d.get("pip_args", []), d.get("build_env", {})
    if not req or not isinstance(req, list) or not all(isinstance(r, str) for r in req) \
            or not isinstance(pip_args, list) or not isinstance(env, dict) \
            or not isinstance(d.get("resize", True), bool) or not isinstance(d.get("description", ""), str):
        raise ValueError(f"{what}: needs requirements = [\"Pillow==X.Y.Z\", ...] (a list of pip requirement "
                         "strings); pip_args a list, build_env a table, description a string, resize true/false")
    unknown = sorted(set(d) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_SPEC_KEYS)}")
    try:
        return make_spec(path.stem, req, pip_args=pip_args, build_env={k: str(v) for k, v in env.items()},
                         description=d.get("description", ""), resize=d.get("resize", True))
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _define_and_register(s: EnvSpec) -> EnvSpec:
    clash = _clashing_keys(s.name, s.resize)
    if clash:
        raise ValueError(f"isolated environment name {s.name!r}: noise {clash[0]} is already registered; "
                         "pick another name")
    s = define_env(s.name, s.requirements, pip_args=s.pip_args, build_env=dict(s.build_env),
                   description=s.description, resize=s.resize)
    register_env_noises(s.name, resize=s.resize)
    return s


def load_spec_file(path: Path) -> EnvSpec:
    """Parse one ``NAME.toml`` spec file and define its environment (noises not registered);
    ValueError (one line, names the file) when malformed."""
    s = parse_spec_file(path)
    return define_env(s.name, s.requirements, pip_args=s.pip_args, build_env=dict(s.build_env),
                      description=s.description, resize=s.resize)


def write_spec_file(name: str, requirements, *, pip_args=(), resize: bool = True, description: str = "") -> Path:
    """Check the rules, write ``<cache>/envs/NAME.toml`` (what ``venvs define`` does), define the
    environment and register its noises.  ValueError (one line, nothing written) when a rule is broken."""
    import tomllib

    s = make_spec(name, requirements, pip_args=pip_args, resize=resize, description=description)
    clash = _clashing_keys(name, s.resize)
    if clash:
        raise ValueError(f"isolated environment name {name!r}: noise {clash[0]} is already registered; "
                         "pick another name")
    q = lambda v: json.dumps(str(v), ensure_ascii=False)
    lines = [f"requirements = [{', '.join(q(r) for r in s.requirements)}]"]
    if s.pip_args:
        lines.append(f"pip_args = [{', '.join(q(a) for a in s.pip_args)}]")
    if description:
        lines.append(f"description = {q(description)}")
    if not resize:
        lines.append("resize = false")
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except ValueError as e:
        raise ValueError(f"isolated environment {name!r}: cannot write its spec file ({e})") from None
    path = cache_dir() / "envs" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.toml.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _define_and_register(s)
    _SPEC_FILES[name] = path
    return path


def _load_spec_files() -> None:
    """Define and register every spec file; one that breaks a rule is skipped with one warning
    line on stderr (never an exception: this runs at import, before any command)."""
    for d in spec_dirs():
        try:
            paths = sorted(d.glob("*.toml")) if d.is_dir() else []
        except OSError:
            continue
        for path in paths:
            try:
                if path.stem in _SPEC_FILES:
                    raise ValueError(f"isolated environment spec {path}: {path.stem!r} is already defined by "
                                     f"{_SPEC_FILES[path.stem]}")
                _define_and_register(parse_spec_file(path))
                _SPEC_FILES[path.stem] = path
            except Exception as e:   # a bad file must not stop the import
                msg = " ".join(str(e).split()) or type(e).__name__
                if str(path) not in msg:
                    msg = f"isolated environment spec {path}: {msg}"
                print(f"warning: {msg} -- file skipped: rename or fix it, or delete it "
                      "(`python -m robustbench_sys.noises.system.venvs define NAME REQUIREMENT...` writes a valid one)",
                      file=sys.stderr)


for _name, _spec in list(ENV_SPECS.items()):
    register_env_noises(_name, resize=_spec.resize)
_load_spec_files()
