"""The package as a user installs it: a built wheel in a fresh venv, run from outside the repository.

The wheel is built offline (``--no-build-isolation``) and installed ``--no-deps`` into a
throwaway venv that sees this environment's third-party packages through a ``.pth`` line (torch
and friends are not copied), but not the repository nor its editable install: every import of
``robustbench_sys`` there comes from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("robustbench_sys-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True, timeout=120)
    site = Path(subprocess.run([str(d / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # this environment's third-party packages, as a plain path: its .pth files (the editable
    # install of the repository) are not processed
    (site / "thirdparty.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(d / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def _run(venv: Path, *args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([str(venv / "bin" / "robustbench-sys"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("robustbench_sys/labels/imagenet_classes.csv", "robustbench_sys/suites/resize.toml",
                 "robustbench_sys/zoo/cards/mobilenet_v2.toml", "robustbench_sys/dashboard/app.py",
                 "robustbench_sys/noises/stages.py", "robustbench_sys/noises/system/_isolated_worker.py"):
        assert want in names, want
    # no top-level import names that other PyPI distributions own
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"robustbench_sys"}, tops
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_wheel_runs_outside_the_repository(venv, tmp_path):
    r = _run(venv, "demo", "--limit", "4", "--out", str(tmp_path / "res"), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ΔACC" in r.stdout
    r = _run(venv, "dashboard", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--results" in r.stdout, r.stderr
    # the modules really came from the wheel, not from the repository
    py = subprocess.run([str(venv / "bin" / "python"), "-c",
                         "import robustbench_sys, robustbench_sys.noises as n, robustbench_sys.zoo as z;"
                         "print(robustbench_sys.__file__, n.__file__, z.__file__)"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert py.returncode == 0, py.stderr
    assert str(ROOT) not in py.stdout and str(venv) in py.stdout, py.stdout


@pytest.mark.parametrize("module,key,extra", [
    ("onnxruntime", "backend/onnxruntime", "backends"),
    ("openvino", "backend/openvino", "backends"),
    ("torchao", "precision/int8-pt2e", "backends"),
    ("turbojpeg", "decoder/turbojpeg-fast", "decoders"),
    ("av", "decoder/ffmpeg", "decoders"),
    ("torchattacks", "adversarial/pgd-linf", "adversarial"),
])
def test_a_missing_optional_dependency_names_its_extra(module, key, extra, monkeypatch):
    from robustbench_sys import noises

    noise = noises.get(key)
    monkeypatch.setitem(sys.modules, module, None)     # what `import module` sees when it is not installed
    why = noise.available()
    assert why and f"pip install 'robustbench-sys[{extra}]'" in why and "\n" not in why, why
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras[extra] and extra in extras["all"][0], extras
