"""Pipeline stages: geometry worked examples and bit-exactness against torchvision / timm."""

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_sys import zoo
from robustbench_sys.pipeline import Pipeline


@pytest.mark.parametrize("size,crop_pct,expected", [(224, 0.875, 256), (240, 0.882, 272), (260, 0.890, 292),
                                                    (224, 0.9, 248), (224, 1.0, 224)])
def test_resize_size_is_timm_floor_rule(size, crop_pct, expected):
    assert Pipeline(input_size=size, crop_pct=crop_pct).resize_size == expected


@pytest.mark.parametrize("wh,expected", [((500, 375), (341, 256)), ((375, 500), (256, 341)),
                                         ((256, 256), (256, 256)), ((1000, 333), (768, 256))])
def test_target_size_matches_torchvision_rule(wh, expected):
    assert Pipeline().target_size(*wh) == expected


def test_center_crop_uses_torchvision_rounding():
    # (341 - 224) / 2 = 58.5 -> Python's round() gives 58 (half to even), as torchvision does
    img = np.arange(256 * 341).reshape(256, 341, 1).repeat(3, 2)
    out = Pipeline().center_crop(img)
    assert out.shape == (224, 224, 3)
    assert out[0, 0, 0] == img[16, 58, 0]
    with pytest.raises(ValueError, match="smaller than"):
        Pipeline().center_crop(np.zeros((100, 300, 3), np.uint8))


def test_replace_rejects_unknown_stage():
    with pytest.raises(ValueError, match="unknown pipeline stage"):
        Pipeline().replace(resise="cv2-area")


def _torchvision_reference(path):
    import torchvision.transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with Image.open(path) as im:
        return tf(im.convert("RGB"))


def test_mobilenet_reference_pipeline_is_bit_exact_with_torchvision(sample_jpegs):
    pipe = Pipeline.from_card(zoo.get_card("mobilenet_v2"))
    for p in sample_jpegs:
        ours = pipe.normalise(torch.from_numpy(pipe.preprocess(p.read_bytes()))[None])[0]
        assert torch.equal(ours, _torchvision_reference(p)), p.name


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_timm_reference_pipeline_is_bit_exact_with_timm_transforms(name, sample_jpegs):
    import timm
    from timm.data import create_transform, resolve_data_config

    card = zoo.get_card(name)
    tf = create_transform(**resolve_data_config({}, model=timm.create_model(card.arch_name, pretrained=False)))
    pipe = Pipeline.from_card(card)
    for p in sample_jpegs[:6]:
        with Image.open(p) as im:
            ref = tf(im.convert("RGB"))
        ours = pipe.normalise(torch.from_numpy(pipe.preprocess(p.read_bytes()))[None])[0]
        assert ours.shape == ref.shape
        assert torch.equal(ours, ref), p.name


def test_spec_is_stable_and_distinguishes_stages():
    a, b = Pipeline(), Pipeline().replace(resize="cv2-area")
    assert a.digest == Pipeline().digest and a.digest != b.digest
    assert "resize:cv2-area(256->224)" in b.describe()
