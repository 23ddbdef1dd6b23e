"""Model cards, weight sources and loading (offline)."""

import time

import pytest
import torch

from robustbench_sys import zoo
from robustbench_sys.zoo.weights import WeightsUnavailable

OFFLINE = ["mobilenet_v2", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def test_every_card_parses_with_full_preprocessing():
    names = zoo.list_models()
    assert set(OFFLINE) <= set(names) and {"resnet50", "vit_small_patch16_224", "convnext_tiny"} <= set(names)
    for n in names:
        c = zoo.get_card(n)
        assert c.library in ("timm", "torchvision")
        assert c.weights["source"] in ("pypi", "hf-hub", "url", "file")
        assert len(c.preprocess.mean) == 3 and 0 < c.preprocess.crop_pct <= 1
        assert {"family", "params_m", "training"} <= set(c.tags), n


def test_list_models_pattern():
    assert zoo.list_models("tf_efficientnet_lite*") == OFFLINE[1:]


def test_timm_cards_agree_with_timm_pretrained_cfg():
    import timm

    for n in zoo.list_models():
        c = zoo.get_card(n)
        if c.library != "timm":
            continue
        tag = c.weights["repo"].split("/", 1)[1] if c.weights["source"] == "hf-hub" else c.arch_name
        cfg = timm.models.get_pretrained_cfg(tag)
        assert cfg is not None, tag
        p = c.preprocess
        assert (p.input_size, p.crop_pct, p.mean, p.std) == (cfg.input_size[1], cfg.crop_pct, tuple(cfg.mean),
                                                           tuple(cfg.std)), n
        assert p.resize == f"resize/pil-{cfg.interpolation}", n


def test_torchvision_card_agrees_with_torchvision_weights_meta():
    import torchvision

    w = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    c = zoo.get_card("mobilenet_v2")
    assert c.weights["member"].endswith(w.url.rsplit("/", 1)[1])
    assert c.tags["published_top1"] == w.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert c.weights["sha256"].startswith(w.url.rsplit("-", 1)[1].split(".")[0])   # file name = sha256 prefix


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_weights_load_and_verify(name):
    assert zoo.weights_status(zoo.get_card(name)) == "cached", "run scripts/setup.sh (zoo fetch --offline)"
    path, sha = zoo.fetch_weights(zoo.get_card(name))
    assert sha == zoo.get_card(name).weights["sha256"]
    m = zoo.load_model(name)
    assert not m.training
    with torch.inference_mode():
        out = m(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)


def test_sha_mismatch_is_refused(tmp_path):
    f = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(2)}, f)
    with pytest.raises(WeightsUnavailable, match="sha256 mismatch"):
        zoo.weights.fetch({"source": "file", "path": str(f), "sha256": "deadbeef"})


def test_by_order_map_refuses_mismatch():
    m = zoo.build_arch(zoo.get_card("tf_efficientnet_lite0"))
    sd = {f"k{i}": v for i, v in enumerate(m.state_dict().values())}
    sd.popitem()
    with pytest.raises(ValueError, match="tensors in the file"):
        zoo._map_by_order(sd, m)


@pytest.mark.parametrize("name", ["resnet50", "vit_small_patch16_224"])
def test_hub_only_weights_fail_fast_and_clearly_offline(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ROBUSTBENCH_SYS_CACHE", str(tmp_path))
    c = zoo.get_card(name)
    assert zoo.weights_status(c).startswith("needs network")
    t = time.monotonic()
    with pytest.raises(WeightsUnavailable) as e:
        zoo.load_model(c)
    assert time.monotonic() - t < 30
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="valid choices: .*mobilenet_v2"):
        zoo.get_card("mobilenet_v9")
