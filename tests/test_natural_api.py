"""robustbench_sys.noises.natural API, registry and behaviour that needs no reference (the reference
comparison is test_natural_faithful.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sys import noises
from robustbench_sys.noises.natural import (
    ALL_CORRUPTIONS,
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    GROUP_NAMES,
    GROUPS,
    SEVERITIES,
    corrupt,
    corrupt_batch,
    jpeg_imagenet_c,
)
from robustbench_sys.noises.natural.weather import frost_unavailable

KEYS = [f"natural/{n}-{s}" for n in ALL_CORRUPTIONS for s in SEVERITIES]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def crop(sample_jpegs) -> np.ndarray:
    from PIL import Image
    from torchvision import transforms as T

    return np.asarray(T.CenterCrop(224)(T.Resize(256)(Image.open(sample_jpegs[3]).convert("RGB"))))


def test_groups_and_lists():
    # written out on purpose: the lists derive from the @corruption metadata, and a new
    # corruption must not join the 15-corruption benchmark without this test changing
    assert BENCHMARK_CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                                     "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                                     "elastic_transform", "pixelate", "jpeg_compression")
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert sorted(sum(GROUPS.values(), ())) == sorted(ALL_CORRUPTIONS) == sorted(CORRUPTIONS)
    assert GROUPS["extra"] == EXTRA_CORRUPTIONS
    assert GROUPS["blur"] == ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
    assert noises.list_noises("natural/*") == sorted(KEYS)


def test_metadata_is_the_one_source():
    extra_groups = {"speckle_noise": "noise", "gaussian_blur": "blur", "spatter": "weather", "saturate": "digital"}
    for name, c in CORRUPTIONS.items():
        assert c.group in GROUP_NAMES and c.benchmark == (name in BENCHMARK_CORRUPTIONS)
        assert c.group == extra_groups.get(name, c.group)
        if c.benchmark:
            assert name in GROUPS[c.group]
    for key in KEYS:
        noise = noises.get(key)
        name, sev = key.split("/")[1].rsplit("-", 1)
        assert noise.tags == {"corruption": name, "severity": int(sev), "group": CORRUPTIONS[name].group,
                              "benchmark": name in BENCHMARK_CORRUPTIONS}
        assert noise.params["benchmark"] == noise.tags["benchmark"] and noise.params["group"] == noise.tags["group"]


def test_corruption_decorator_requires_group_and_benchmark():
    from robustbench_sys.noises.natural._common import corruption

    with pytest.raises(TypeError, match="benchmark"):
        corruption("new_one", "noise", [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="group 'extra'"):
        corruption("new_one", group="extra", benchmark=False, params=[1, 2, 3, 4, 5])
    with pytest.raises(TypeError, match="True or False"):
        corruption("new_one", group="noise", benchmark=1, params=[1, 2, 3, 4, 5])
    assert "new_one" not in CORRUPTIONS


def test_register_tags_are_checked():
    from robustbench_sys.noises.registry import register

    with pytest.raises(TypeError, match="tag 'group'"):
        register("natural", "never-registered", tags={"group": ["noise"]})
    assert "natural/never-registered" not in noises.list_noises("natural/*")


@pytest.mark.parametrize("key", KEYS)
def test_registered_corruption(key, crop):
    noise = noises.get(key)
    assert noise.stage == "corrupt" and noise.family == "natural"
    if noise.available():
        pytest.skip(noise.available())
    name, sev = key.split("/")[1].rsplit("-", 1)
    a = noise(crop, rng=np.random.default_rng(3))
    b = noise(crop, int(sev), np.random.default_rng(3))
    assert a.shape == crop.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)                        # reproducible from the rng
    assert np.abs(a.astype(int) - crop).mean() > 0.3           # it changes the image
    np.testing.assert_array_equal(noise(crop), corrupt(crop, name, int(sev), seed=0))
    if CORRUPTIONS[name].random:
        c = noise(crop, rng=np.random.default_rng(4))
        assert not np.array_equal(a, c), "a different rng must give different draws"
    with pytest.raises(ValueError, match="bound"):
        noise(crop, 6 - int(sev) if int(sev) != 3 else 1)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_batch_matches_single_and_severity_grows(name, crop):
    if name == "frost" and frost_unavailable():
        pytest.skip(frost_unavailable())
    x = torch.as_tensor(np.stack([crop, crop[::-1].copy()])).permute(0, 3, 1, 2).float() / 255
    y = corrupt_batch(x, name, 3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1
    if not CORRUPTIONS[name].random:    # deterministic: each image of a batch as alone
        y1 = corrupt_batch(x[1:], name, 3)
        assert (y[1:] - y1).abs().max() < 1e-5
    d = [np.abs(corrupt(crop, name, s, seed=1).astype(float) - crop).mean() for s in (1, 5)]
    # not monotone in mean change by design: saturate (1-2 desaturate, 3-5 saturate) and frost
    # (severity 1 adds 0.4 x texture to the full image, 5 mixes 0.6 x image + 0.75 x texture),
    # fog (rescaled by max / (max + a) after adding the fractal)
    if name not in ("saturate", "frost", "fog"):
        assert d[1] > d[0], f"{name}: severity 5 changes less than severity 1 ({d})"


def test_bad_inputs(crop):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(crop, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(crop, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(crop.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        corrupt_batch(torch.zeros(3, 224, 224), "fog", 1)


def test_grey_image_and_jpeg85(crop):
    g = crop[..., 0]
    assert corrupt(g, "contrast", 2).shape == crop.shape
    j = jpeg_imagenet_c(crop)
    assert j.shape == crop.shape and 0 < np.abs(j.astype(int) - crop).mean() < 12


def test_frost_draws_uniform_over_five_textures(crop):
    if frost_unavailable():
        pytest.skip(frost_unavailable())
    from robustbench_sys.noises.natural.weather import _frost_draws, frost_texture

    x = torch.zeros(500, 3, 224, 224)
    d = _frost_draws(x, 3, torch.Generator().manual_seed(0))
    counts = np.bincount(d["idx"], minlength=6)
    assert counts[5] == 0 and counts[:5].min() > 70          # frost6 is never used, as in the reference
    for i, t, left in zip(d["idx"], d["tops"], d["lefts"]):
        th, tw = frost_texture(i, 224, 224).shape[:2]
        assert 0 <= t < th - 224 and 0 <= left < tw - 224


def test_glass_shuffle_matches_the_reference_loop():
    # the reference's numpy loop (its swap copies x[h', w'] into x[h, w]) on a small array
    from robustbench_sys.noises.natural.blur import glass_shuffle

    rng = np.random.default_rng(0)
    H, W, d = 12, 15, 2
    img = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    offs = rng.integers(-d, d, (H - 2 * d, W - 2 * d, 2))
    ref = img.copy()
    for a, h in enumerate(range(H - d, d, -1)):
        for b, w in enumerate(range(W - d, d, -1)):
            dx, dy = offs[a, b]
            ref[h, w], ref[h + dy, w + dx] = ref[h + dy, w + dx], ref[h, w]
    ours = glass_shuffle(torch.as_tensor(img).permute(2, 0, 1)[None].double(), d, torch.as_tensor(offs)[None])
    np.testing.assert_array_equal(ours[0].permute(1, 2, 0).numpy().astype(np.uint8), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_cuda_matches_cpu_for_deterministic(name, crop):
    x = torch.as_tensor(crop).permute(2, 0, 1)[None].double() / 255
    y = corrupt_batch(x.cuda(), name, 3, torch.Generator(device="cuda").manual_seed(0))
    assert y.device.type == "cuda"
    if not CORRUPTIONS[name].random:
        assert (y.cpu() - corrupt_batch(x, name, 3)).abs().max() < 1e-6


def test_pixelate_pillow_path_equals_the_fixed_point_torch_path(crop):
    """On CPU pixelate calls Pillow (the reference's own code); on CUDA it runs Pillow's BOX
    fixed-point arithmetic as matrices.  Both give the same values on real images."""
    from robustbench_sys.noises.natural import digital
    from robustbench_sys.noises.natural._common import to_u8

    x = torch.as_tensor(np.stack([crop, crop[::-1]])).permute(0, 3, 1, 2).float() / 255
    N, C, H, W = x.shape
    for severity, c in enumerate([0.6, 0.5, 0.4, 0.3, 0.25], start=1):   # imagenet-c 1.1.2 parameters
        nw, nh = int(W * c), int(H * c)
        u = digital._pil_pass(digital._pil_pass(to_u8(x), digital.pil_box_weights(W, nw), -1),
                              digital.pil_box_weights(H, nh), -2)
        iy = torch.floor((torch.arange(H, dtype=torch.float64) + 0.5) * (nh / H)).long()
        ix = torch.floor((torch.arange(W, dtype=torch.float64) + 0.5) * (nw / W)).long()
        fixed_point = u.index_select(2, iy).index_select(3, ix)
        assert torch.equal(digital.pixelate(x, severity), fixed_point.to(x.dtype)), severity
