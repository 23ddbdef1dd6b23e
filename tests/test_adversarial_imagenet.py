"""ImageNet proof: a standard MobileNetV2 falls to ~0% robust accuracy under PGD-L∞ 4/255
(RobustBench's ImageNet budget) on 16 real images."""

from __future__ import annotations

import pytest
import torch

from robustbench_sys import noises
from robustbench_sys.metrics import adversarial as am
from robustbench_sys.noises.adversarial import NormalizedModel, predict

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mobilenet():
    zoo = pytest.importorskip("robustbench_sys.zoo")
    if not hasattr(zoo, "load_model"):
        pytest.skip("zoo.load_model is not available")
    try:
        model = zoo.load_model("mobilenet_v2")
    except Exception as e:  # WeightsUnavailable, UnknownModel: a visible reason, not a failure
        pytest.skip(f"mobilenet_v2 not loadable here: {e}")
    card = zoo.get_card("mobilenet_v2")
    assert tuple(card.preprocess.mean) == MEAN and tuple(card.preprocess.std) == STD
    return NormalizedModel(model, card.preprocess.mean, card.preprocess.std)


@pytest.fixture(scope="module")
def batch(sample_jpegs, sample_rows):
    from PIL import Image
    from torchvision.transforms import v2 as T

    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                    T.CenterCrop(224), T.ToImage(), T.ToDtype(torch.float32, scale=True)])
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in sample_jpegs])
    y = torch.tensor([int(r["class_index"]) for r in sample_rows[:len(sample_jpegs)]])
    return x, y


def test_mobilenet_v2_falls_under_pgd_linf_4(mobilenet, batch):
    x, y = batch
    clean = predict(mobilenet, x, batch_size=16) == y
    # 5 steps of eps/2 from a random start: enough for a standard model (RobustBench: 0.0 robust)
    r = noises.get("adversarial/pgd-linf")(mobilenet, x, y, eps=4 / 255, steps=5, rel_stepsize=0.5, seed=0)
    after = predict(mobilenet, r.adv, batch_size=16) == y
    ra = am.robust_accuracy(clean, after)
    print(f"\nmobilenet_v2, {len(y)} images: clean {float(clean.float().mean()):.3f}, "
          f"PGD-Linf 4/255 robust {ra:.3f}, AR {am.attack_robustness(clean, after):.3f}")
    assert float(clean.float().mean()) >= 0.5
    assert ra <= 1 / 16
    flag = am.check_perturbation(x, r.adv, "Linf", 4 / 255)
    assert not flag.raised, flag.detail
    assert r.params["alpha"] == pytest.approx(2 / 255)
