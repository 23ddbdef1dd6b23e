"""AutoAttack-style validity flags computed from the stored per-image rows (issue 13, defect 9):
(a) a black-box attack (Square) lowering robust accuracy after the white-box ones, (b) robust
accuracy rising with a larger budget, (c) a transfer attack from another model beating the
white-box attack.  Worked examples of the pure checks, then the MNIST LeNet-5 end to end: the
standard LeNet raises none of them; the same LeNet behind a rounding input layer (8-bit
quantisation, zero input gradient: masked gradients) raises (a) and (c)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustbench_sys import zoo
from robustbench_sys.eval import attack as adversarial_runner
from robustbench_sys.eval.api import evaluate
from robustbench_sys.metrics import adversarial as am
from robustbench_sys.results import leaderboard
from robustbench_sys.results.store import ResultsStore

NEW = ("black_box_lowers_robust_accuracy", "transfer_beats_white_box", "robust_accuracy_not_monotone")


# ---------------------------------------------------------------------- worked examples
def test_black_box_check_worked_example():
    # 10 images, 9 correct before; white-box attacks leave 6, Square breaks 2 of those 6
    clean = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    white = [1, 1, 1, 1, 1, 1, 0, 0, 0, 1]
    black = [1, 1, 1, 1, 0, 0, 1, 1, 0, 1]
    f = am.check_black_box_lowers_robust_accuracy(clean, white, black, black_box="square")
    assert f.raised and f.name == "black_box_lowers_robust_accuracy"
    assert f.values["robust_acc_white_box"] == pytest.approx(0.6)
    assert f.values["robust_acc_with_black_box"] == pytest.approx(0.4)
    assert f.values["decrease_pp"] == pytest.approx(20.0) and f.values["n_broken_only_by_black_box"] == 2
    assert "square has decreased the robust accuracy of 20.00 pp" in f.detail
    # Square breaking only images the white-box attacks already broke changes nothing
    g = am.check_black_box_lowers_robust_accuracy(clean, white, [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    assert not g.raised and g.values["decrease_pp"] == 0.0


def test_black_box_check_uses_autoattack_tolerance():
    # AutoAttack's alpha = 0.002: 2 of 1000 images (0.2 pp) is tolerated, 3 (0.3 pp) is not
    clean = np.ones(1000, bool)
    white = np.ones(1000, bool)
    for k, want in ((2, False), (3, True)):
        black = np.ones(1000, bool)
        black[:k] = False
        assert am.check_black_box_lowers_robust_accuracy(clean, white, black).raised is want, k
    with pytest.raises(ValueError, match="same images"):
        am.check_black_box_lowers_robust_accuracy([1, 1], [1, 1], [1])


def test_transfer_check_worked_example():
    clean = [1, 1, 1, 1, 0]
    white = [1, 1, 1, 0, 1]          # RA 3/5 = 60 %
    f = am.check_transfer_beats_white_box(clean, white, [1, 0, 0, 0, 0], source="lenet")
    assert f.raised and f.values["robust_acc_transfer"] == pytest.approx(0.2)
    assert f.values["decrease_pp"] == pytest.approx(40.0) and "from lenet" in f.detail
    # a weaker transfer attack (the usual case) raises nothing
    g = am.check_transfer_beats_white_box(clean, white, [1, 1, 1, 1, 0])
    assert not g.raised and g.values["decrease_pp"] == pytest.approx(-20.0)


def test_budget_check_worked_examples():
    c = [1, 1, 1, 1]

    def e(label, eps, steps, adv):
        return {"label": label, "eps": eps, "steps": steps, "clean": c, "adv": adv}

    # robust accuracy falls as eps and steps grow: fine
    ok = am.check_budget_monotone([e("eps .1", .1, 10, [1, 1, 1, 0]), e("eps .3", .3, 10, [1, 0, 0, 0]),
                                   e("eps .3 x40", .3, 40, [0, 0, 0, 0])])
    assert not ok.raised and ok.values["n_pairs"] == 3
    # more steps at the same eps leave more images correct: 25 % -> 75 %
    bad = am.check_budget_monotone([e("10 steps", .3, 10, [1, 0, 0, 0]), e("40 steps", .3, 40, [1, 1, 1, 0])])
    assert bad.raised and bad.values["rise_pp"] == pytest.approx(50.0)
    assert bad.values["smaller"] == "10 steps" and bad.values["larger"] == "40 steps"
    # a larger eps with fewer steps does not dominate: nothing to compare
    none = am.check_budget_monotone([e("a", .1, 40, [1, 0, 0, 0]), e("b", .3, 10, [1, 1, 1, 1])])
    assert not none.raised and none.values["n_pairs"] == 0
    with pytest.raises(ValueError, match="same images"):
        am.check_budget_monotone([e("a", .1, 10, [1, 0, 0, 0]), {**e("b", .3, 10, [1, 0]), "clean": [1, 1]}])


# ---------------------------------------------------------------------- the MNIST LeNet pair
N = 32
MASKED = "mnist_lenet5_rounded"
SUITE = """
name = "validity"
family = "validity"
version = 1
description = "validity flags: white-box PGD at two budgets, Square, a transfer from the standard LeNet"

[[conditions]]
name = "pgd@0.3"
attack = "pgd-linf"
eps = 0.3
params = { steps = 40, rel_stepsize = 0.03333333333333333, random_start = true }

[[conditions]]
name = "pgd@0.3-10steps"
attack = "pgd-linf"
eps = 0.3
params = { steps = 10, rel_stepsize = 0.03333333333333333, random_start = true }

[[conditions]]
name = "pgd@0.15"
attack = "pgd-linf"
eps = 0.15
params = { steps = 20, rel_stepsize = 0.03333333333333333, random_start = true }

[[conditions]]
name = "square@0.3"
attack = "square"
eps = 0.3
params = { n_queries = 100 }

[[conditions]]
name = "transfer-pgd@0.3"
attack = "pgd-linf"
eps = 0.3
transfer_from = "mnist_lenet5_standard"
params = { steps = 40, rel_stepsize = 0.03333333333333333, random_start = true }
"""
SUITE_AA = """
name = "validity-aa"
family = "validity-aa"
version = 1
description = "AutoAttack standard, small budget"

[[conditions]]
name = "autoattack@0.3"
attack = "autoattack-standard"
eps = 0.3
params = { steps = 10, n_queries = 100, n_target_classes = 3 }
"""


class Round(torch.nn.Module):
    """``round(x * 255) / 255``: 8-bit quantisation of the input; the function barely changes,
    its input gradient is zero everywhere (masked gradients)."""

    def forward(self, x):
        return torch.round(x * 255) / 255


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from robustbench_sys.zoo import mnist

    if not mnist.test_npz_path().is_file() or zoo.weights_status(zoo.get_card("mnist_lenet5_standard")) != "cached":
        pytest.skip("MNIST assets not cached: run scripts/setup.d/60-adversarial.sh")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # 2 shared cores
    base = tmp_path_factory.mktemp("validity")
    (base / "validity.toml").write_text(SUITE)
    (base / "validity-aa.toml").write_text(SUITE_AA)
    suites = [str(base / "validity.toml"), str(base / "validity-aa.toml")]
    out = base / "res"
    kw = dict(data="mnist-test", out=out, limit=N, batch_size=N, workers=0, progress=False)
    try:
        evaluate(["mnist_lenet5_standard"], suites, **kw)
        masked = torch.nn.Sequential(Round(), mnist.load_lenet5("standard")).eval()
        evaluate(model=masked, suites=suites, preprocess="mnist_lenet5_standard", name=MASKED, **kw)
    finally:
        torch.set_num_threads(threads)
    store = ResultsStore(out)
    s = store.summaries()
    return store, s[s.attack.notna()].set_index(["model", "condition"]), suites


def _flags(row) -> dict[str, dict]:
    flags = json.loads(row.validity_flags)
    names = [f["name"] for f in flags]
    assert len(names) == len(set(names)), f"duplicate flags {names}"
    return {f["name"]: f for f in flags}


def test_standard_lenet_raises_none(run):
    _, s, _ = run
    std = s.loc["mnist_lenet5_standard"]
    assert len(std) == 6
    for cond, row in std.iterrows():
        flags = _flags(row)
        print(f"\nstandard {cond}: robust acc {100 * row.robust_acc:.1f} %; " +
              "; ".join(f"{n}: {flags[n]['detail']}" for n in NEW if n in flags))
        assert not any(flags[n]["raised"] for n in NEW if n in flags), (cond, row.validity_flags)
        assert not set(NEW) & set(str(row.validity_raised).split(","))
    # every check had something to compare: the group ones on the PGD family, AutoAttack's on its unit
    fam = _flags(std.loc["validity/pgd@0.3"])
    assert set(NEW) <= set(fam)
    assert "black_box_lowers_robust_accuracy" in _flags(std.loc["validity-aa/autoattack@0.3"])


def test_masked_lenet_raises_black_box_and_transfer(run):
    store, s, _ = run
    m = s.loc[MASKED]
    figures = {c: round(100 * r.robust_acc, 1) for c, r in m.iterrows()}
    print(f"\nmasked robust acc %: {figures}")
    aa = m.loc["validity-aa/autoattack@0.3"]
    f = _flags(aa)["black_box_lowers_robust_accuracy"]
    print("masked AutoAttack:", f["detail"])
    assert f["raised"] and "black_box_lowers_robust_accuracy" in aa.validity_raised.split(",")
    # the figure is the share of images only Square broke, recomputed from the stored rows
    rows = store.read_unit_rows(aa.unit_id)
    clean = rows.clean_pred.to_numpy() == rows.label.to_numpy()
    by_square = 100 * float((clean & (rows.broken_by == "square").to_numpy()).sum()) / len(rows)
    assert by_square > 20 and f"{by_square:.2f} pp" in f["detail"]
    assert set(rows.broken_by) <= {"", "apgd-ce", "apgd-t", "fab-t", "square"}
    pgd = m.loc["validity/pgd@0.3"]
    flags = _flags(pgd)
    for name in ("black_box_lowers_robust_accuracy", "transfer_beats_white_box"):
        print(f"masked group {name}: {flags[name]['detail']}")
        assert flags[name]["raised"] and flags[name]["scope"] == "group", flags[name]
        assert name in pgd.validity_raised.split(",")
    # the flags change no figure: the white-box PGD still reports its (masked) robust accuracy
    assert pgd.robust_acc > 0.8 and m.loc["validity/transfer-pgd@0.3"].robust_acc < 0.3


def test_group_flags_are_idempotent(run):
    from types import SimpleNamespace

    from robustbench_sys.suites import resolve

    store, s, suites = run
    conds = {c.name: c for c in resolve(suites)}
    for model in ("mnist_lenet5_standard", MASKED):
        units = [SimpleNamespace(id=r.unit_id, condition=conds[c]) for c, r in s.loc[model].iterrows()]
        before = store.summaries().set_index("unit_id")
        adversarial_runner.write_worst_case(store, units)     # a rerun of the group pass
        after = store.summaries().set_index("unit_id")
        for u in units:
            assert after.loc[u.id, "validity_flags"] == before.loc[u.id, "validity_flags"]
            assert after.loc[u.id, "validity_raised"] == before.loc[u.id, "validity_raised"]
            _flags(after.loc[u.id])


def test_leaderboard_marks_flagged_rows(run):
    store, _, _ = run
    lb = leaderboard.build(store.summaries())
    d = leaderboard.display_frame(lb, "validity").set_index("model")
    assert "validity flags" in d
    masked = d.loc[MASKED, "validity flags"]
    assert masked.startswith(leaderboard.FLAG_MARK) and "black_box_lowers_robust_accuracy" in masked
    assert "transfer_beats_white_box" in masked
    assert not set(NEW) & set(d.loc["mnist_lenet5_standard", "validity flags"].replace(leaderboard.FLAG_MARK, "")
                              .strip().split(","))
    assert leaderboard.FLAG_MARK in leaderboard.render(lb, "table")
