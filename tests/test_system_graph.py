"""Graph noises (stage ``graph``): changed deep copies, NotApplicable where the layer is absent.

Applicable: torchvision ResNet-18 / GoogLeNet (stride-2 MaxPool2d) and a small neck with
nn.Upsample (random init, seeded: the noise is about the graph, not the weights) on real images.
Not applicable: the real MobileNetV2 and EfficientNet-Lite0 from the zoo (no MaxPool2d, no
Upsample).
"""

from __future__ import annotations

import pytest
import torch
from _deploy_helpers import eval_batch, zoo_model
from _registry import registry_params
from torch import nn

from robustbench_sys import noises
from robustbench_sys.noises.registry import NotApplicable
from robustbench_sys.noises.system.deploy import model_fingerprint

GRAPH = noises.list_noises("graph/*")


@pytest.fixture(scope="module")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _pools(model):
    return [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]


def test_registered_graph_noises():
    assert {"graph/maxpool-ceil", "graph/upsample-bilinear", "graph/upsample-nearest"} <= set(GRAPH)
    assert all(noises.get(k).stage == "graph" for k in GRAPH)


def test_maxpool_ceil_flips_a_copy(resnet18, sample_jpegs):
    before = model_fingerprint(resnet18)
    out = noises.get("graph/maxpool-ceil")(resnet18)
    assert out is not resnet18 and model_fingerprint(resnet18) == before
    assert [p.ceil_mode for p in _pools(resnet18)] == [False]
    assert [p.ceil_mode for p in _pools(out)] == [True]
    x = eval_batch(sample_jpegs)[:4]
    with torch.inference_mode():
        a, b = resnet18(x), out(x)
        # 112x112 -> 56 (floor) vs 57 (ceil): the change reaches the logits
        assert resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(x)))).shape[-1] == 56
        assert out.maxpool(out.relu(out.bn1(out.conv1(x)))).shape[-1] == 57
    assert a.shape == b.shape and (a - b).abs().max() > 1e-3


def test_maxpool_ceil_flips_googlenet_ceil_to_floor():
    import torchvision

    torch.manual_seed(0)
    g = torchvision.models.googlenet(aux_logits=False, init_weights=False).eval()
    stride2 = [p for p in _pools(g) if p.stride == 2]
    assert stride2 and all(p.ceil_mode for p in stride2)  # GoogLeNet is trained in ceil mode
    out = noises.get("graph/maxpool-ceil")(g)
    assert all(not p.ceil_mode for p in _pools(out) if p.stride == 2)
    assert all(p.ceil_mode for p in _pools(out) if p.stride == 1)  # stride-1 pools untouched


@pytest.mark.parametrize("name", ["mobilenet_v2", "tf_efficientnet_lite0"])
def test_maxpool_ceil_not_applicable(name):
    model = zoo_model(name)
    assert not _pools(model)
    with pytest.raises(NotApplicable, match="model has no stride-2 MaxPool2d"):
        noises.get("graph/maxpool-ceil")(model)


class _Neck(nn.Module):
    """A tiny segmentation-style head: conv, 2x upsample, conv (the layer the noise swaps)."""

    def __init__(self, mode: str):
        super().__init__()
        torch.manual_seed(0)
        self.down = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode=mode)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.up(self.down(x)))


def _bn_stats_from(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Batch-norm running statistics of ``x`` (one cumulative pass), then eval mode: with the
    default (mean 0, var 1) statistics a random-init GoogLeNet gives the same logits for every
    image, and no change inside could reach them."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.fixture(scope="module")
def layered_models(resnet18, sample_jpegs) -> dict[str, nn.Module]:
    """Random-init (seeded) models that together have every layer a graph noise changes: a
    stride-2 floor-mode MaxPool2d (ResNet-18), ceil-mode ones (GoogLeNet), nn.Upsample in
    nearest and in bilinear mode (the segmentation-style neck)."""
    import torchvision

    torch.manual_seed(0)
    googlenet = torchvision.models.googlenet(aux_logits=False, init_weights=False)
    googlenet = _bn_stats_from(googlenet, eval_batch(sample_jpegs)[8:])
    return {"resnet18": resnet18, "googlenet": googlenet,
            "neck-nearest": _Neck("nearest").eval(), "neck-bilinear": _Neck("bilinear").eval()}


@pytest.mark.parametrize("key", registry_params("graph/*"))
def test_graph_noise_never_silent(key, layered_models, sample_jpegs):
    """Every graph noise applies to at least one model that has the layer it changes, and there
    changes a copy (the input stays as it was) and the outputs on real images; on the others it
    raises NotApplicable with a one-line reason, never a silent no-op."""
    x = eval_batch(sample_jpegs)[:2]
    applied = []
    for name, model in layered_models.items():
        before = model_fingerprint(model)
        try:
            out = noises.get(key)(model)
        except NotApplicable as e:
            assert str(e) and "\n" not in str(e), (key, name)
            continue
        applied.append(name)
        assert out is not model and model_fingerprint(model) == before, (key, name)
        assert model_fingerprint(out) != before, (key, name)
        with torch.inference_mode():
            a, b = model(x), out(x)
        assert a.shape == b.shape and (a - b).abs().max() > 1e-3, (key, name)
    assert applied, f"{key} applies to none of {sorted(layered_models)}: add a model with the layer it changes"


@pytest.mark.parametrize("key", registry_params("graph/*"))
def test_graph_noise_not_applicable_on_mobilenet_v2(key):
    """The real MobileNetV2 has none of the layers the graph noises change: each one says so."""
    model = zoo_model("mobilenet_v2")
    assert not [m for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.Upsample))]
    before = model_fingerprint(model)
    with pytest.raises(NotApplicable) as e:
        noises.get(key)(model)
    assert str(e.value) and "\n" not in str(e.value)
    assert model_fingerprint(model) == before


@pytest.mark.parametrize("src,dst", [("nearest", "bilinear"), ("bilinear", "nearest")])
def test_upsample_swap(src, dst, sample_jpegs):
    neck = _Neck(src).eval()
    out = noises.get(f"graph/upsample-{dst}")(neck)
    assert neck.up.mode == src and out.up.mode == dst
    x = eval_batch(sample_jpegs)[:2]
    with torch.inference_mode():
        a, b = neck(x), out(x)
    assert a.shape == b.shape and (a - b).abs().max() > 1e-3
    with pytest.raises(NotApplicable, match="already"):
        noises.get(f"graph/upsample-{dst}")(out)


@pytest.mark.parametrize("key", ["graph/upsample-bilinear", "graph/upsample-nearest"])
def test_upsample_not_applicable_without_upsample(key):
    with pytest.raises(NotApplicable, match="no nn.Upsample"):
        noises.get(key)(zoo_model("mobilenet_v2"))


def test_graph_noise_rejects_non_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        noises.get("graph/maxpool-ceil")("resnet18")
