"""The MNIST pair: advertorch's adversarially trained LeNet-5 keeps robust accuracy under
PGD-L∞ eps 0.3 (advertorch's tutorial setting) where the standard one collapses; our
wrapper path gives plain torchattacks' numbers; transfer and validity checks."""

from __future__ import annotations

import pytest
import torch

from robustbench_sys import noises
from robustbench_sys.metrics import adversarial as am
from robustbench_sys.noises.adversarial import NormalizedModel, predict, transfer_attack

N = 200
# advertorch tutorial: LinfPGDAttack(eps=0.3, nb_iter=40, eps_iter=0.01, rand_init=True)
PGD = dict(eps=0.3, steps=40, rel_stepsize=0.01 / 0.3, random_start=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair():
    mnist = pytest.importorskip("robustbench_sys.zoo.mnist")
    try:
        raw = {k: mnist.load_lenet5(k) for k in mnist.KINDS}
        x, y = mnist.load_mnist_test(N)
    except mnist.MnistAssetsMissing as e:
        pytest.skip(str(e))
    wrapped = {k: NormalizedModel(m, mnist.MEAN, mnist.STD) for k, m in raw.items()}
    return raw, wrapped, x, y, mnist


@pytest.fixture(scope="module")
def pgd_results(pair):
    _, wrapped, x, y, _ = pair
    pgd = noises.get("adversarial/pgd-linf")
    out = {}
    for k, m in wrapped.items():
        r = pgd(m, x, y, seed=0, **PGD)
        out[k] = (r, predict(m, x) == y, predict(m, r.adv) == y)
    return out


def test_adv_trained_keeps_robust_accuracy_standard_collapses(pgd_results):
    ra = {k: am.robust_accuracy(c, a) for k, (_, c, a) in pgd_results.items()}
    clean = {k: float(c.float().mean()) for k, (_, c, _) in pgd_results.items()}
    print(f"\nMNIST {N} digits, PGD-Linf eps 0.3 40x0.01: clean {clean}, robust {ra}")
    assert clean["standard"] > 0.95 and clean["adv-trained"] > 0.95
    assert ra["standard"] < 0.10
    assert ra["adv-trained"] > 0.70
    # RobustART's AR is the same count over the clean-correct images only
    _, c, a = pgd_results["adv-trained"]
    assert am.attack_robustness(c, a) == pytest.approx(float((c & a).sum()) / float(c.sum()))
    assert pgd_results["adv-trained"][0].params["alpha"] == pytest.approx(0.01)


def test_wrapper_equals_plain_torchattacks(pair, pgd_results):
    import torchattacks

    raw, _, x, y, mnist = pair
    for k in ("adv-trained",):   # one model keeps the file within its time budget
        atk = torchattacks.PGD(raw[k], eps=0.3, alpha=0.01, steps=40, random_start=True)
        atk.set_normalization_used(mean=list(mnist.MEAN), std=list(mnist.STD))
        state = torch.get_rng_state()
        torch.manual_seed(0)
        # torchattacks 3.5.1: with set_normalization_used, __call__ takes and returns
        # *normalised* images (it inverse-normalises inside)
        plain = atk.inverse_normalize(atk(atk.normalize(x), y))
        torch.set_rng_state(state)
        ours, _, ours_correct = pgd_results[k]
        assert torch.allclose(ours.adv, plain, atol=1e-6), k
        with torch.no_grad():
            plain_correct = raw[k](plain).argmax(1) == y
        assert torch.equal(plain_correct, ours_correct), k


def test_transfer_from_standard_to_adv_trained(pair):
    _, wrapped, x, y, _ = pair
    x, y = x[:64], y[:64]
    r = transfer_attack("pgd-linf", wrapped["standard"], wrapped["adv-trained"], x, y, seed=0, **PGD)
    assert r.params["transfer"] is True and r.params["eps"] == 0.3
    src, tgt = float(r.source_correct.float().mean()), float(r.target_correct.float().mean())
    print(f"\ntransfer standard -> adv-trained: source {src:.3f}, target {tgt:.3f}")
    assert src < 0.10 and tgt > 0.70


def test_validity_flags_on_the_robust_model(pair, pgd_results):
    _, wrapped, x, y, _ = pair
    m = wrapped["adv-trained"]
    x, y, white = x[:64], y[:64], pgd_results["adv-trained"][2][:64]
    sq = noises.get("adversarial/square")(m, x, y, eps=0.3, seed=0, n_queries=100)
    black = predict(m, sq.adv) == y
    flags = am.validity_flags(model=m, images=x[:32], labels=y[:32], white_box_correct=white,
                              black_box_correct=black)
    print("\n" + "\n".join(f"{f.name}: {f.detail}" for f in flags))
    assert am.raised(flags) == []
