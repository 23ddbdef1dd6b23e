"""Worked examples for robustbench_sys.metrics.natural (numbers computed by hand)."""

from __future__ import annotations

import pandas as pd
import pytest

from robustbench_sys.metrics import natural as M


def test_ce_gaussian_noise_worked_example():
    # sum_s E = .5 + .6 + .7 + .8 + .9 = 3.5; AlexNet: 5 x .886428 = 4.43214
    # CE = 3.5 / 4.43214 = 0.789686
    errs = {1: .5, 2: .6, 3: .7, 4: .8, 5: .9}
    assert M.corruption_error(errs, "gaussian_noise") == pytest.approx(0.789686, abs=1e-6)
    assert M.corruption_error([.5, .6, .7, .8, .9], "gaussian_noise") == pytest.approx(0.789686, abs=1e-6)
    assert M.mean_error(errs) == pytest.approx(0.7)


def test_relative_ce_worked_example():
    # clean error .2: (3.5 - 5 x .2) / (4.43214 - 5 x .43478) = 2.5 / 2.25824 = 1.107057
    errs = [.5, .6, .7, .8, .9]
    assert M.relative_corruption_error(errs, 0.2, "gaussian_noise") == pytest.approx(1.107057, abs=1e-6)
    # contrast, errors .3 .. .7 (sum 2.5), clean .25: CE = 2.5 / 4.26602 = 0.586026;
    # relative = (2.5 - 1.25) / (4.26602 - 2.1739) = 1.25 / 2.09212 = 0.597480
    c = [.3, .4, .5, .6, .7]
    assert M.corruption_error(c, "contrast") == pytest.approx(0.586026, abs=1e-6)
    assert M.relative_corruption_error(c, 0.25, "contrast") == pytest.approx(0.597480, abs=1e-6)


def test_mce_alexnet_is_one_and_scales():
    alex = {c: [e] * 5 for c, e in M.ALEXNET_ERRORS.items()}
    assert M.mce(alex) == pytest.approx(1.0)
    half = {c: [e / 2] * 5 for c, e in M.ALEXNET_ERRORS.items()}
    assert M.mce(half) == pytest.approx(0.5)
    # AlexNet itself has relative mCE 1 when its clean error is AlexNet's
    assert M.relative_mce(alex, M.ALEXNET_CLEAN_ERROR) == pytest.approx(1.0)


def test_mce_two_corruption_example_and_dataframe():
    # mean of CE over {gaussian_noise: 0.789686, contrast: 0.586026} = 0.687856
    errs = {"gaussian_noise": [.5, .6, .7, .8, .9], "contrast": [.3, .4, .5, .6, .7]}
    assert M.mce(errs, corruptions=["gaussian_noise", "contrast"]) == pytest.approx(0.687856, abs=1e-6)
    df = pd.DataFrame([{"corruption": c, "severity": s + 1, "error": e}
                       for c, v in errs.items() for s, e in enumerate(v)])
    assert M.mce(df, corruptions=["gaussian_noise", "contrast"]) == pytest.approx(0.687856, abs=1e-6)
    t = M.ce_table(df, clean_error=0.2).set_index("corruption")
    assert t.loc["gaussian_noise", "ce"] == pytest.approx(0.789686, abs=1e-6)
    assert t.loc["gaussian_noise", "relative_ce"] == pytest.approx(1.107057, abs=1e-6)


def test_bad_inputs_are_reported():
    with pytest.raises(M.MetricsError, match="missing"):
        M.mce({"gaussian_noise": [.5] * 5})
    with pytest.raises(M.MetricsError, match="severities \\[5\\]"):
        M.corruption_error({1: .1, 2: .1, 3: .1, 4: .1}, "fog")
    with pytest.raises(M.MetricsError, match="percentages"):
        M.corruption_error([50, 60, 70, 80, 90], "fog")
    with pytest.raises(M.MetricsError, match="no AlexNet baseline"):
        M.corruption_error([.5] * 5, "spatter")


def test_standalone_module():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(M.__file__).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith(("robustbench_sys", "noises", "zoo")) for m in mods), mods
