"""The four offline models' clean top-1 against an independent computation that uses each
weight's own published preprocessing (torchvision's transforms / timm's create_transform)."""

import pytest
import torch
from PIL import Image

import robustbench_sys
from robustbench_sys import zoo

N = 100


def _independent_top1(name, paths_labels):
    card = zoo.get_card(name)
    if card.library == "timm":
        import timm
        from timm.data import create_transform, resolve_data_config

        tf = create_transform(**resolve_data_config({}, model=timm.create_model(card.arch_name, pretrained=False)))
    else:
        import torchvision

        tf = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    model = zoo.load_model(name)
    correct, preds = 0, []
    for i in range(0, len(paths_labels), 25):
        chunk = paths_labels[i:i + 25]
        xs = []
        for p, _ in chunk:
            with Image.open(p) as im:
                xs.append(tf(im.convert("RGB")))
        with torch.inference_mode():
            pred = model(torch.stack(xs)).argmax(1).tolist()
        preds += pred
        correct += sum(int(a == y) for a, (_, y) in zip(pred, chunk))
    return correct / len(paths_labels), preds


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                  "tf_efficientnet_lite2"])
def test_clean_top1_matches_independent_pipeline(name, imagenet_sample, sample_rows, tmp_path):
    rows = sample_rows[:N]
    ours = robustbench_sys.evaluate(name, ["clean"], imagenet_sample, tmp_path, limit=N, progress=False)
    acc, _ = _independent_top1(name, [(imagenet_sample / r["file"], int(r["class_index"])) for r in rows])
    top1 = float(ours.iloc[0].top1)
    assert abs(top1 - acc) <= 0.01, (name, top1, acc)
    assert top1 > 0.6, f"{name}: {top1:.2f} top-1 means the weights or preprocessing are wrong"
