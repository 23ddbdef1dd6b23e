"""Shared set-up of the deploy/graph tests: the real MobileNetV2, real images, a session cache.

Evaluation images: the 16 ``sample_jpegs``; calibration images: the next 32 rows of the shared
sample (disjoint).  Loaded once per pytest session (lru_cache), exports cached in one temp dir.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
N_CALIB = 32
CALIB_BATCH = 8


def preprocess(path: Path) -> torch.Tensor:
    """torchvision's reference: Resize(256) bilinear, CenterCrop(224), ImageNet mean/std."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
        im = im.crop((left, top, left + 224, top + 224))
    a = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


@functools.cache
def _batch(paths: tuple[str, ...]) -> torch.Tensor:
    return torch.stack([preprocess(Path(p)) for p in paths])


def eval_batch(sample_jpegs) -> torch.Tensor:
    return _batch(tuple(str(p) for p in sample_jpegs))


def calib_files(imagenet_sample, sample_rows, sample_jpegs) -> list[str]:
    eval_names = {Path(p).name for p in sample_jpegs}
    files = [r["file"] for r in sample_rows if r["file"] not in eval_names][:N_CALIB]
    if len(files) < N_CALIB:
        pytest.skip(f"shared sample has fewer than {N_CALIB} images besides the evaluation ones")
    return [str(imagenet_sample / f) for f in files]


def calib_batches(files: list[str]) -> list[torch.Tensor]:
    return [_batch(tuple(files[i:i + CALIB_BATCH])) for i in range(0, len(files), CALIB_BATCH)]


@functools.cache
def cache_root() -> Path:
    d = Path(tempfile.mkdtemp(prefix="rbs-deploy-test-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.cache
def _zoo_model(name: str):
    try:
        from robustbench_sys import zoo
    except ImportError as e:
        return None, f"zoo not importable ({e})"
    if not hasattr(zoo, "load_model"):
        return None, "zoo.load_model not available yet"
    try:
        return zoo.load_model(name), ""
    except Exception as e:
        return None, f"zoo.load_model({name!r}) failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def zoo_model(name: str) -> torch.nn.Module:
    model, why = _zoo_model(name)
    if model is None:
        pytest.skip(why)
    return model


@functools.cache
def reference_logits(key: tuple[str, ...]) -> torch.Tensor:
    model = zoo_model("mobilenet_v2")
    with torch.inference_mode():
        return model(_batch(key)).float()


def deploy_setup(imagenet_sample, sample_rows, sample_jpegs):
    """``(model, x, files, ref)`` of the deploy tests: the zoo MobileNetV2, the evaluation batch,
    the calibration files and the model's eager logits on that batch."""
    model = zoo_model("mobilenet_v2")
    x = eval_batch(sample_jpegs)
    files = calib_files(imagenet_sample, sample_rows, sample_jpegs)
    ref = reference_logits(tuple(str(p) for p in sample_jpegs))
    return model, x, files, ref


def make_ctx(x: torch.Tensor, files: list[str], model_key: str = "mobilenet_v2"):
    import hashlib

    from robustbench_sys.noises.system.deploy import DeployContext

    cid = hashlib.sha1("\n".join(Path(f).name for f in files).encode()).hexdigest()[:10]
    return DeployContext(example_input=x, calibration=lambda: calib_batches(files),
                         cache_dir=cache_root(), model_key=model_key, calibration_id=cid)


def compare(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """Agreement figures between reference and deployed logits."""
    d = (out - ref).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "top1_agree": float((out.argmax(1) == ref.argmax(1)).float().mean()),
            "top1_flips": int((out.argmax(1) != ref.argmax(1)).sum())}
