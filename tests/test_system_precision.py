"""Precision noises (stage ``deploy``) on the real MobileNetV2 and real ImageNet images.

fp32 must equal eager; bf16 / fp16 / int8 must keep most top-1 predictions while their logits
differ measurably.  int8 calibrates on shared-sample images disjoint from the evaluation ones.
"""

from __future__ import annotations

import pytest
import torch
from _deploy_helpers import N_CALIB, compare, deploy_setup, make_ctx
from _registry import needs, registry_params, settings_of

from robustbench_sys import noises
from robustbench_sys.noises.system.deploy import DeployContext, Deployed, model_fingerprint

PRECISIONS = noises.list_noises("precision/*")
#: a lower precision must move the logits by more than fp32 runtimes do (they stay < 2e-3)
MEASURABLE = 1e-2
#: ... and keep most top-1 predictions on the real images
MIN_TOP1_AGREE = 0.75


def _settings(key: str) -> dict:
    """Defaults overridden by the noise's own ``test_settings``."""
    return settings_of(key, exact=False,         # equals eager exactly (the reference precision)
                       calibrated=False,         # static int8: needs DeployContext.calibration
                       min_change=MEASURABLE, min_top1_agree=MIN_TOP1_AGREE, min_logit_corr=0.95)


CALIBRATED = [k for k in PRECISIONS if _settings(k)["calibrated"]]


@pytest.fixture(scope="module")
def setup(imagenet_sample, sample_rows, sample_jpegs):
    return deploy_setup(imagenet_sample, sample_rows, sample_jpegs)


def test_registered_precisions():
    assert {"precision/fp32", "precision/bf16", "precision/fp16", "precision/int8-pt2e",
            "precision/int8-ort-qdq"} <= set(PRECISIONS)
    assert all(noises.get(k).stage == "deploy" for k in PRECISIONS)


def test_calibration_is_disjoint_from_evaluation(setup, sample_jpegs):
    _, _, files, _ = setup
    assert len(files) == N_CALIB
    assert not {str(p) for p in sample_jpegs} & set(files)


def test_settings_are_consistent():
    assert [k for k in PRECISIONS if _settings(k)["exact"]] == ["precision/fp32"]
    assert CALIBRATED and all(noises.get(k).params["dtype"] == "int8" for k in CALIBRATED)


@pytest.mark.parametrize("key", registry_params("precision/*"))
def test_precision_vs_fp32(key, setup):
    noise = noises.get(key)
    s = _settings(key)
    model, x, files, ref = setup
    ctx = make_ctx(x, files)
    before = model_fingerprint(model)
    run = noise(model, ctx)
    assert isinstance(run, Deployed)
    out = run(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert model_fingerprint(model) == before, "deploy must not modify the model"
    c = compare(ref, out)
    print(f"{key}: {c} settings={run.info['settings']}")
    if s["exact"]:
        assert c["max_abs"] == 0.0
        return
    assert c["max_abs"] > s["min_change"], c
    assert c["top1_agree"] >= s["min_top1_agree"], c
    # the logits are still the same model's: strongly correlated with the reference
    corr = torch.corrcoef(torch.stack([ref.flatten(), out.flatten()]))[0, 1]
    assert corr > s["min_logit_corr"], (corr, c)
    if s["calibrated"]:
        info = run.info
        assert info["calibration_images"] == N_CALIB
        assert info["calibration_batches"] == -(-N_CALIB // 8)
        assert info["calibration_id"] == ctx.calibration_id


@pytest.mark.parametrize("key", registry_params(CALIBRATED))
def test_int8_without_calibration_says_what_to_do(key, setup):
    model, x, _, _ = setup
    with pytest.raises(ValueError, match="needs calibration data"):
        noises.get(key)(model, DeployContext(example_input=x[:2]))


@needs("precision/int8-ort-qdq")
def test_int8_ort_qdq_is_cached_per_calibration_set(setup):
    key = "precision/int8-ort-qdq"
    model, x, files, _ = setup
    a = noises.get(key)(model, make_ctx(x, files)).info
    b = noises.get(key)(model, make_ctx(x, files)).info
    assert b["quantize_cached"] is True and a["quantized_path"] == b["quantized_path"]
    other = noises.get(key)(model, make_ctx(x, files[:16])).info  # another calibration set
    assert other["quantized_path"] != a["quantized_path"]
    assert other["calibration_images"] == 16
