"""Every registered adversarial attack on real MNIST digits (advertorch's standard LeNet-5)."""

from __future__ import annotations

import pytest
import torch
from _registry import registry_params

from robustbench_sys import noises
from robustbench_sys.metrics import adversarial as am
from robustbench_sys.noises.adversarial import SUITES, NormalizedModel, attack_grid

ATTACKS = noises.list_noises(family="adversarial")
# each attack's small test budget is its class attribute ``test_params`` (the whole file stays
# within seconds on 2 shared cores); published defaults are checked in test_defaults_are_recorded


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist8():
    mnist = pytest.importorskip("robustbench_sys.zoo.mnist")
    try:
        model = mnist.load_lenet5("standard")
        x, y = mnist.load_mnist_test(8)
    except mnist.MnistAssetsMissing as e:
        pytest.skip(str(e))
    return NormalizedModel(model, mnist.MEAN, mnist.STD), x, y


@pytest.mark.parametrize("key", ATTACKS)
def test_every_attack_has_a_valid_fast_setting(key):
    attack = noises.get(key).fn
    kw = attack.test_params
    assert isinstance(kw, dict), f"{key}: set test_params on {type(attack).__name__}"
    p = dict(kw)
    eps = p.pop("eps", None)
    assert (eps is not None) == attack.bounded, (key, kw)  # a budget exactly where one is needed
    attack.resolve(eps, p)  # every test parameter is one the attack accepts
    # a smaller budget than the published one, never a larger one
    assert all(v <= attack.defaults[k] for k, v in p.items()
               if k in ("steps", "n_queries") and k in attack.defaults), (key, kw, attack.defaults)


@pytest.mark.parametrize("key", registry_params("adversarial/*"))
def test_attack(key, mnist8):
    model, x, y = mnist8
    noise = noises.get(key)
    assert noise.stage == "attack" and noise.family == "adversarial"
    assert noise.versions()["torchattacks"] == "3.5.1"
    kw = noise.fn.test_params
    rng_before = torch.get_rng_state()
    r1 = noise(model, x, y, seed=3, **kw)
    assert torch.equal(torch.get_rng_state(), rng_before), "the caller's RNG state changed"
    adv = r1.adv
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    # parameters actually used: every default, the seed, the budget
    used = r1.params
    assert used["attack"] == noise.name and used["seed"] == 3 and used["eps"] == kw.get("eps")
    assert set(noise.fn.defaults) <= set(used)
    for k, v in kw.items():
        assert used[k] == v
    if kw.get("eps"):
        flag = am.check_perturbation(x, adv, noise.fn.norm, kw["eps"])
        assert not flag.raised, flag.detail
        assert used["max_perturbation"] == pytest.approx(flag.values["max_norm"])
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        after = model(adv).argmax(1) == y
    assert am.robust_accuracy(clean, after) < am.robust_accuracy(clean, clean), f"{key} fooled no image"
    # same seed, same images: a second run agrees exactly
    r2 = noise(model, x, y, seed=3, **kw)
    flag = am.check_nondeterminism(adv, r2.adv)
    assert not flag.raised, flag.detail


def test_defaults_are_recorded_and_published():
    aa = noises.get("adversarial/autoattack-standard")
    assert aa.params["steps"] == 100 and aa.params["n_target_classes"] == 9 and aa.params["n_queries"] == 5000
    assert noises.get("adversarial/square").params["n_queries"] == 5000
    assert noises.get("adversarial/square").params["threat"] == "black-box"
    assert noises.get("adversarial/deepfool").params["overshoot"] == 0.02


def test_bad_calls_fail_with_clear_errors(mnist8):
    model, x, y = mnist8
    pgd = noises.get("adversarial/pgd-linf")
    with pytest.raises(ValueError, match="needs eps"):
        pgd(model, x, y)
    with pytest.raises(ValueError, match="unknown parameter.*alpah"):
        pgd(model, x, y, eps=0.1, alpah=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(model, x * 255, y, eps=0.1)
    with pytest.raises(ValueError, match="training mode"):
        pgd(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).train(), x, y, eps=0.1)
    with pytest.raises(RuntimeError, match="evaluation-only"):
        model.train()


def test_min_norm_attack_rejects_beyond_eps(mnist8):
    model, x, y = mnist8
    cw = noises.get("adversarial/cw-l2")
    assert not cw.fn.bounded and "eps" not in cw.fn.test_params
    free = cw(model, x, y, seed=0, **cw.fn.test_params)
    norms = am.perturbation_norms(x, free.adv, "L2")
    eps = float(sorted(norms)[len(norms) // 2])          # half of them are farther than this
    capped = cw(model, x, y, seed=0, eps=eps, **cw.fn.test_params)
    assert capped.params["n_rejected_over_eps"] == int((norms > eps * (1 + 1e-5) + 1e-6).sum()) > 0
    assert not am.check_perturbation(x, capped.adv, "L2", eps).raised


def test_normalized_model_applies_explicit_mean_std():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    wrapped = NormalizedModel(net, mean, std)
    manual = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.equal(wrapped(x), manual)
    assert not wrapped.training
    with pytest.raises(ValueError, match="channels"):
        wrapped(torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match="one value per channel"):
        NormalizedModel(net, (0.5, 0.5), (0.2,))


def test_suites_are_valid_data():
    assert {"robustart-linf", "robustart-l2", "robustart", "robustbench-imagenet-linf"} <= set(SUITES)
    assert attack_grid("robustbench-imagenet-linf") == [("autoattack-standard", {"eps": 4 / 255, "norm": "Linf"})]
    linf = sorted({p["eps"] for a, p in SUITES["robustart-linf"]})
    assert linf == pytest.approx([0.5 / 255, 2 / 255, 8 / 255])
    assert sorted(p["eps"] for _, p in SUITES["robustart-l2"]) == [0.5, 2.0, 8.0]
    for entries in SUITES.values():
        for attack, params in entries:
            noise = noises.get(f"adversarial/{attack}")
            p = dict(params)
            noise.fn.resolve(p.pop("eps"), p)      # every parameter is accepted
    pgd = [p for a, p in SUITES["robustart"] if a == "pgd-linf"]
    assert all(p["steps"] == 20 and p["rel_stepsize"] == pytest.approx(3 / 40) for p in pgd)
    with pytest.raises(KeyError, match="valid choices"):
        attack_grid("nope")


def test_deepfool_crosses_the_boundary_beyond_float_noise(mnist8):
    """The reference step (+1e-4) leaves a margin: the adversarial class wins by far more than
    the ~1e-6 logit differences between batch sizes / CPU kernels (torchattacks' own step ends
    on the boundary, where batch-1 and batch-8 forwards can disagree)."""
    model, x, y = mnist8
    deepfool = noises.get("adversarial/deepfool")
    adv = deepfool(model, x, y, seed=0, **deepfool.fn.test_params).adv
    with torch.no_grad():
        batched = model(adv)
        single = torch.cat([model(adv[i:i + 1]) for i in range(len(adv))])
    assert torch.equal(batched.argmax(1), single.argmax(1))
    fooled = batched.argmax(1) != y
    assert fooled.float().mean() >= 0.75
    top2 = batched[fooled].topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-5
