"""Metric definitions against worked examples."""

import math

import numpy as np
import pytest

from robustbench_sys.metrics import paired as metrics


def test_wilson_interval_worked_example():
    # 8/10: Wilson 95% = (0.4902, 0.9433) (Newcombe 1998, Table I style computation)
    lo, hi = metrics.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert metrics.wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))


@pytest.mark.parametrize("b,c,p", [(0, 5, 0.0625), (3, 1, 0.625), (0, 0, 1.0), (10, 0, 2 / 1024),
                                   (6, 6, 1.0)])
def test_mcnemar_exact(b, c, p):
    assert metrics.mcnemar_exact_p(b, c) == pytest.approx(p)


def test_paired_delta_worked_example():
    # 10 images: ref correct on 7, condition correct on 5; 3 lost (b), 1 gained (c)
    ref = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], bool)
    cond = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0, 0], bool)
    d = metrics.paired_delta(ref, cond)
    assert (d.n, d.b, d.c) == (10, 3, 1)
    assert d.ref_acc == pytest.approx(0.7) and d.acc == pytest.approx(0.5)
    assert d.delta == pytest.approx(0.2)           # SysNoise sign: ACC(train) - ACC(deploy)
    assert d.p_value == pytest.approx(0.625)
    # normal approximation of the paired difference: var(d_i) = (b + c)/n - delta^2 = 0.36
    half = 1.96 * (0.36 / 10) ** 0.5                # 0.372
    assert d.ci_low == pytest.approx(0.2 - half, abs=0.06) and d.ci_high == pytest.approx(0.2 + half, abs=0.06)
    assert d.ci_low <= 0.0                          # 3 vs 1 discordant pairs: not significant


def test_paired_bootstrap_matches_index_resampling():
    rng = np.random.default_rng(1)
    ref = rng.random(400) < 0.75
    cond = np.where(rng.random(400) < 0.1, ~ref, ref)
    d = metrics.paired_delta(ref, cond)
    idx = rng.integers(0, 400, size=(4000, 400))
    boot = (ref[idx].mean(1) - cond[idx].mean(1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert d.ci_low == pytest.approx(lo, abs=0.006) and d.ci_high == pytest.approx(hi, abs=0.006)


def test_paired_delta_identical_outcomes_has_zero_interval():
    x = np.array([1, 0, 1, 1], bool)
    d = metrics.paired_delta(x, x)
    assert (d.delta, d.ci_low, d.ci_high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_delta_rejects_unpaired():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.paired_delta([1, 0], [1])


def test_flip_rate_counts_any_top1_change():
    assert metrics.flip_rate([1, 2, 3, 4], [1, 2, 9, 8]) == 0.5   # flips between two wrong labels count too


def test_family_stats_mean_and_max():
    s = metrics.family_stats([0.01, 0.03, -0.01, float("nan")])
    assert s == {"mean_delta": pytest.approx(0.01), "max_delta": pytest.approx(0.03), "n_options": 3}
