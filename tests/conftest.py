"""Shared fixtures.  Real images only: ../shared/data/imagenet-sample (500 ImageNet JPEGs)
and the foolbox demo set; tests that need them skip with a visible reason where absent."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: ROBUSTBENCH_SYS_SAMPLE_DIR (the GPU check script's copy) or ROBUSTBENCH_SYS_SAMPLE overrides the shared sample
SHARED_SAMPLE = Path(os.environ.get("ROBUSTBENCH_SYS_SAMPLE_DIR") or os.environ.get("ROBUSTBENCH_SYS_SAMPLE")
                     or ROOT.parent / "shared" / "data" / "imagenet-sample")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "noise(*keys): the test needs these registered noises; skipped with "
                                      "their available() reason where one is not usable (tests/_registry.py)")


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only tests that will run ask available()
def pytest_collection_modifyitems(config, items):
    from _registry import skip_unavailable

    skip_unavailable(items)


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    """The shared 500-image ImageNet sample (one JPEG per even class index)."""
    if not (SHARED_SAMPLE / "labels.csv").is_file():
        pytest.skip(f"shared ImageNet sample not found at {SHARED_SAMPLE} (set ROBUSTBENCH_SYS_SAMPLE_DIR)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def sample_rows(imagenet_sample) -> list[dict]:
    """labels.csv rows of the shared sample: file, wnid, class_index, class_name."""
    with open(imagenet_sample / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def sample_jpegs(imagenet_sample, sample_rows) -> list[Path]:
    """The first 16 shared JPEG paths (deterministic order)."""
    return [imagenet_sample / r["file"] for r in sample_rows[:16]]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for the module: small models on 2 shared cores run several
    times faster without oversubscription (use with ``pytestmark = pytest.mark.usefixtures``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def suite_file(tmp_path_factory) -> str:
    """A suite file of two resize conditions (cv2-nearest, pil-bicubic) in the resize family."""
    path = tmp_path_factory.mktemp("suite") / "two-resizes.toml"
    path.write_text('name = "two-resizes"\nfamily = "resize"\nversion = 1\n\n'
                    '[[conditions]]\nname = "cv2-nearest"\nresize = "cv2-nearest"\n\n'
                    '[[conditions]]\nname = "pil-bicubic"\nresize = "pil-bicubic"\n')
    return str(path)
