"""Worked examples of the robust-accuracy metrics and the validity flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustbench_sys.metrics import adversarial as am

# 10 images: the model gets 8 right (images 0..7); the attack breaks 0, 1, 2;
# image 8 was wrong before and "right" after (the attack fixed it): still a failure.
CLEAN = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
ADV = [0, 0, 0, 1, 1, 1, 1, 1, 1, 0]


def test_robust_accuracy_counts_clean_errors_as_failures():
    assert am.robust_accuracy(CLEAN, ADV) == pytest.approx(5 / 10)
    # naive "accuracy on adversarial images" would give 6 / 10
    assert np.mean(ADV) == pytest.approx(0.6)


def test_attack_robustness_is_conditional_on_clean_correct():
    assert am.attack_robustness(CLEAN, ADV) == pytest.approx(5 / 8)
    assert math.isnan(am.attack_robustness([0, 0], [1, 1]))


def test_worst_case_requires_surviving_every_attack():
    adv2 = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]   # breaks only image 3
    adv3 = [1, 1, 1, 1, 0, 1, 1, 1, 0, 0]   # breaks image 4
    # survivors of all three: 5, 6, 7
    assert am.worst_case_attack_robustness(CLEAN, [ADV, adv2, adv3]) == pytest.approx(3 / 8)
    assert am.worst_case_robust_accuracy(CLEAN, [ADV, adv2, adv3]) == pytest.approx(3 / 10)
    # a single attack: WCAR == AR
    assert am.worst_case_attack_robustness(CLEAN, [ADV]) == am.attack_robustness(CLEAN, ADV)
    with pytest.raises(ValueError, match="empty list"):
        am.worst_case_attack_robustness(CLEAN, [])


def test_metrics_accept_torch_and_reject_bad_input():
    c = torch.tensor(CLEAN, dtype=torch.bool)
    a = torch.tensor(ADV, dtype=torch.bool)
    assert am.robust_accuracy(c, a) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same images"):
        am.robust_accuracy(CLEAN, ADV[:5])
    with pytest.raises(ValueError, match="boolean"):
        am.robust_accuracy([0, 2], [1, 1])


def test_perturbation_norms_and_eps_check():
    x = torch.zeros(2, 1, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0] = 0.03
    adv[0, 0, 1, 1] = 0.04
    adv[1] = 0.01
    assert am.perturbation_norms(x, adv, "Linf") == pytest.approx([0.04, 0.01])
    assert am.perturbation_norms(x, adv, "L2") == pytest.approx([0.05, 0.02])
    assert am.perturbation_norms(x, adv, "L1") == pytest.approx([0.07, 0.04])
    ok = am.check_perturbation(x, adv, "Linf", 0.04)
    assert not ok.raised
    bad = am.check_perturbation(x, adv, "L2", 0.03)
    assert bad.raised and bad.values["n_over_eps"] == 1
    out = am.check_perturbation(x, adv - 0.02, "Linf", 0.1)
    assert out.raised and out.values["n_out_of_range"] == 2


def test_black_box_beats_white_box_flag():
    white = [1, 1, 1, 0]
    assert not am.check_black_box_beats_white_box(white, [1, 1, 1, 0]).raised
    f = am.check_black_box_beats_white_box(white, [1, 0, 0, 0])
    assert f.raised and f.values["fooled_only_by_black_box"] == 2


def test_nondeterminism_flag():
    a = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert not am.check_nondeterminism(a, a.clone()).raised
    b = a.clone()
    b[1, 0, 0, 0] += 1e-3
    f = am.check_nondeterminism(a, b)
    assert f.raised and f.values["n_differing"] == 1


class _Quantised(torch.nn.Module):
    """A classifier behind 8-bit rounding: a real gradient-masking defence (zero input gradient)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 255) / 255)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5)).eval()


def test_zero_gradient_flag_on_masked_model():
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    net = _net()
    assert not am.check_zero_gradients(net, x, y).raised
    f = am.check_zero_gradients(_Quantised(net), x, y)
    assert f.raised and f.values["n_zero"] == 4


def test_randomized_and_probability_flags():
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    net = _net()
    assert not am.check_randomized(net, x).raised
    noisy = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 5)).train()
    assert am.check_randomized(noisy, x).raised
    assert not am.check_probability_outputs(net, x).raised
    assert am.check_probability_outputs(torch.nn.Sequential(net, torch.nn.Softmax(1)), x).raised
    flags = am.validity_flags(model=net, images=x, labels=torch.tensor([0, 1, 2, 3]))
    assert [f.name for f in flags] == ["randomized_outputs", "probability_outputs", "zero_gradients"]
    assert am.raised(flags) == []
