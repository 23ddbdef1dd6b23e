"""Backend noises (stage ``deploy``) on the real MobileNetV2 and real ImageNet images.

Every registered ``backend/*`` noise is run (unavailable ones skip with their reason); the fp32
ones must match PyTorch eager within numerical noise with identical top-1, OpenVINO's default
must report the precision it resolved to and, when that is not f32, differ measurably.
"""

from __future__ import annotations

import pytest
import torch
from _deploy_helpers import compare, deploy_setup, make_ctx
from _registry import needs, registry_params, settings_of

from robustbench_sys import noises
from robustbench_sys.noises.system.deploy import Deployed, model_fingerprint

BACKENDS = noises.list_noises("backend/*")
#: fp32 runtimes: max |logit diff| to eager must stay within this (logits are O(10)); a backend's
#: own quirks (``test_settings`` on its registered function) override the defaults below
FP32_TOL = 2e-3
#: a backend whose default resolves to a lower precision must still keep most top-1 predictions
LOWERED_MIN_TOP1_AGREE = 0.75


def _settings(key: str) -> dict:
    return settings_of(key, max_abs=FP32_TOL,      # max |logit diff| to eager at fp32
                       may_lower_precision=False,  # its default may resolve to bf16 / f16
                       rebatch=True,               # also checked on a batch of one
                       rebatch_atol=FP32_TOL)      # ... agreeing with the full batch within this


@pytest.fixture(scope="module")
def setup(imagenet_sample, sample_rows, sample_jpegs):
    model, x, files, ref = deploy_setup(imagenet_sample, sample_rows, sample_jpegs)
    return model, x, make_ctx(x, files), ref


def test_every_backend_is_registered_as_deploy():
    assert {"backend/eager", "backend/torchscript", "backend/torch-compile", "backend/torch-export",
            "backend/onnxruntime", "backend/openvino", "backend/openvino-f32",
            "backend/onnxruntime-cuda", "backend/tensorrt"} <= set(BACKENDS)
    assert all(noises.get(k).stage == "deploy" for k in BACKENDS)


@pytest.mark.parametrize("key", BACKENDS)
def test_backend_test_settings_are_known(key):
    _settings(key)  # raises on a setting this file does not understand


@pytest.mark.parametrize("key", registry_params("backend/*"))
def test_backend_matches_eager(key, setup):
    noise = noises.get(key)
    s = _settings(key)
    model, x, ctx, ref = setup
    before = model_fingerprint(model)
    run = noise(model, ctx)
    assert isinstance(run, Deployed)
    out = run(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape and out.device.type == "cpu"
    assert model_fingerprint(model) == before, "deploy must not modify the model"
    info = run.info
    assert info["toolchain"] and info["versions"] and "settings" in info
    c = compare(ref, out)
    print(f"{key}: {c} info={ {k: info[k] for k in ('inference_precision', 'compile_s') if k in info} }")
    if s["may_lower_precision"] and info["inference_precision"] != "f32":
        # the default silently lowered the precision (OpenVINO: bf16 on AVX512-BF16 / AMX CPUs)
        assert info["inference_precision"] in {"bf16", "f16"}
        assert c["max_abs"] > s["max_abs"], c
        assert c["top1_agree"] >= LOWERED_MIN_TOP1_AGREE, c
    else:
        assert c["max_abs"] < s["max_abs"], c
        assert c["top1_flips"] == 0, c
    if s["rebatch"]:  # dynamic batch (torch-compile opts out: a new batch size recompiles, slowly)
        one = run(x[:1])
        assert one.shape == (1, ref.shape[1])
        assert torch.allclose(one[0], out[0], atol=s["rebatch_atol"])


@needs("backend/openvino", "backend/openvino-f32")
def test_openvino_records_resolved_precision(setup):
    model, x, ctx, _ = setup
    default = noises.get("backend/openvino")(model, ctx).info
    f32 = noises.get("backend/openvino-f32")(model, ctx).info
    assert f32["inference_precision"] == "f32"
    assert default["settings"]["precision_hint"] == "default"
    assert default["inference_precision"] in {"f32", "bf16", "f16"}
    caps = default["device_capabilities"]
    if default["inference_precision"] == "bf16":
        assert "BF16" in caps  # OpenVINO only picks bf16 where the CPU has it


@needs("backend/onnxruntime", "backend/torchscript")
def test_exports_are_cached_per_model(setup):
    model, x, ctx, _ = setup
    first = noises.get("backend/onnxruntime")(model, ctx).info
    second = noises.get("backend/onnxruntime")(model, ctx).info
    assert second["export_cached"] is True
    assert second["onnx_path"] == first["onnx_path"]
    ts1 = noises.get("backend/torchscript")(model, ctx).info
    ts2 = noises.get("backend/torchscript")(model, ctx).info
    assert ts2["export_cached"] is True and ts1["artefact"] == ts2["artefact"]


def test_graph_change_gets_its_own_cache_entry():
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18().eval()
    ceil = noises.get("graph/maxpool-ceil")(m)
    # identical weights, only ceil_mode differs: the fingerprint (cache key) must differ
    assert model_fingerprint(ceil) != model_fingerprint(m)


@pytest.mark.parametrize("key", ["backend/onnxruntime-cuda", "backend/tensorrt"])
def test_gpu_providers_say_why_not(key, setup):
    why = noises.get(key).available()
    if torch.cuda.is_available() and why is None:
        pytest.skip("a GPU provider is usable here; covered by test_backend_matches_eager")
    assert why and "\n" not in why
    model, x, ctx, _ = setup
    with pytest.raises(RuntimeError, match="Provider|GPU"):
        noises.get(key)(model, ctx)


def test_context_rejects_bad_example_input():
    from robustbench_sys.noises.system.deploy import DeployContext

    with pytest.raises(ValueError, match="float32 NCHW"):
        DeployContext(example_input=torch.zeros(3, 224, 224))
    with pytest.raises(ValueError, match="float32 NCHW"):
        DeployContext(example_input=torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
