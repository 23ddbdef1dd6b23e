"""Released test sets as leaderboard families of their own (issue 16, item 4): worked examples on
summary rows (the leaderboard reads summaries only), the intervals of the new figures (ImageNet-O
AUPR, ImageNet-P flip probability), and one end-to-end run on an ImageNet-A layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustbench_sys.metrics import ood
from robustbench_sys.metrics import perturbation as pm
from robustbench_sys.metrics.paired import wilson_interval
from robustbench_sys.results import leaderboard as lbm


def _row(model, kind, *, condition="clean", family="clean", fp="fpA", n=100, top1=0.5, lo=0.4, hi=0.6,
         dataset=None, **extra) -> dict:
    return {"model": model, "condition": condition, "family": family, "dataset": dataset or kind,
            "dataset_fingerprint": fp, "dataset_kind": kind, "n_images": n, "suite_version": 1,
            "top1": top1, "top1_ci_low": lo, "top1_ci_high": hi, "delta_acc": 0.0, "delta_ci_low": 0.0,
            "delta_ci_high": 0.0, "ref_top1": top1, "flip_rate": 0.0, "pipeline": "{}", "reference_pipeline": "{}",
            "created_at": "2026-12-02T00:00:00", **extra}


def _main(model, top1, lo, hi) -> list[dict]:
    """A model's clean + one resize option on the ranked (main) data set."""
    return [_row(model, "folder", fp="val", dataset="val", top1=top1, lo=lo, hi=hi),
            _row(model, "folder", fp="val", dataset="val", condition="resize/cv2-area", family="resize",
                 top1=top1 - 0.01, lo=lo, hi=hi, delta_acc=0.01, delta_ci_low=0.0, delta_ci_high=0.02)]


def test_imagenet_a_is_its_own_family_and_stays_out_of_the_overall():
    rows = (_main("m1", 0.70, 0.65, 0.75) + _main("m2", 0.72, 0.67, 0.77) + _main("m3", 0.60, 0.55, 0.65)
            + [_row("m1", "imagenet-a", top1=0.10, lo=0.05, hi=0.15),
               _row("m2", "imagenet-a", top1=0.30, lo=0.25, hi=0.35),
               _row("m3", "imagenet-a", top1=0.12, lo=0.08, hi=0.27)])
    lb = lbm.build(pd.DataFrame(rows))
    a = lb.families["imagenet-a"]
    # m2's interval [25, 35] lies above m1's [5, 15]: m1 gets rank 2; m3's [8, 27] overlaps m2's: rank 1 (tied)
    assert dict(zip(a.model, a["rank"])) == {"m2": 1, "m3": 1, "m1": 2}
    assert list(a.model) == ["m2", "m3", "m1"] and a.tied.tolist() == [True, True, False]
    assert lb.test_sets["imagenet-a"] == "top1 % (200 classes)"
    assert lb.dataset == "val" and set(lb.families) == {"clean", "resize", "imagenet-a"}
    assert "rank imagenet-a" not in lb.overall.columns and len(lb.overall) == 3
    shown = lbm.display_frame(lb, "imagenet-a")
    assert shown.loc[0, "95% CI"] == "[25.0, 35.0]"
    text = lbm.render(lb)
    assert "== imagenet-a ==" in text and "test sets imagenet-a" in text


def test_a_test_set_for_one_model_does_not_drop_the_others_from_the_overall():
    rows = _main("m1", 0.70, 0.65, 0.75) + _main("m2", 0.72, 0.67, 0.77) + [_row("m1", "imagenet-r")]
    lb = lbm.build(pd.DataFrame(rows))
    assert set(lb.overall.model) == {"m1", "m2"}
    assert list(lb.families["imagenet-r"].model) == ["m1"]


def test_noise_conditions_on_a_test_set_are_listed_apart():
    rows = [_row("m1", "imagenet-sketch"),
            _row("m1", "imagenet-sketch", condition="resize/cv2-area", family="resize")]
    lb = lbm.build(pd.DataFrame(rows))
    assert lb.dataset is None and list(lb.families) == ["imagenet-sketch"]
    assert "only the model's own pipeline" in lb.apart.reason.iloc[0]
    assert lbm.header(lb).startswith("released test sets only")


def test_real_uses_the_wilson_interval_of_its_own_count():
    rows = [_row("m1", "imagenet-real", real_top1=0.8, real_n=50.0), _row("m2", "imagenet-real", real_top1=0.5,
                                                                            real_n=50.0)]
    lb = lbm.build(pd.DataFrame(rows))
    g = lb.families["imagenet-real"].set_index("model")
    lo, hi = wilson_interval(40, 50)
    assert g.loc["m1", "ReaL top1 %"] == pytest.approx(80.0)
    assert g.loc["m1", "lo"] == pytest.approx(100 * lo) and g.loc["m1", "hi"] == pytest.approx(100 * hi)
    assert g.loc["m1", "rank"] == 1 and g.loc["m2", "rank"] == 2   # [66.9, 88.8] vs [36.6, 63.4]


def test_imagenet_o_ranks_aupr_with_its_bootstrap_interval():
    rng = np.random.default_rng(1)
    pos_good, neg = rng.normal(1.0, 0.5, 200), rng.normal(0.0, 0.5, 400)
    pos_bad = rng.normal(0.1, 0.5, 200)
    rows = []
    for model, pos in (("good", pos_good), ("bad", pos_bad)):
        lo, hi = ood.aupr_interval(pos, neg, resamples=300)
        rows.append(_row(model, "imagenet-o", ood_aupr=ood.aupr(pos, neg), ood_aupr_ci_low=lo, ood_aupr_ci_high=hi,
                         ood_n_pos=200.0, ood_n_neg=400.0))
    good = rows[0]
    assert good["ood_aupr_ci_low"] < good["ood_aupr"] < good["ood_aupr_ci_high"]
    g = lbm.build(pd.DataFrame(rows)).families["imagenet-o"]
    assert list(g.model) == ["good", "bad"] and list(g["rank"]) == [1, 2]
    assert list(g.positives) == [200, 200]


def test_aupr_interval_is_seeded_and_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    small = ood.aupr_interval(rng.normal(1, 1, 30), rng.normal(0, 1, 60), resamples=300)
    assert small == ood.aupr_interval(*(lambda r: (r.normal(1, 1, 30), r.normal(0, 1, 60)))(np.random.default_rng(0)),
                                      resamples=300)
    big = ood.aupr_interval(rng.normal(1, 1, 3000), rng.normal(0, 1, 6000), resamples=100)
    assert big[1] - big[0] < small[1] - small[0]


def test_flip_probability_interval_over_sequences():
    # four sequences of 3 frames (difficulty 1: 2 pairs each): flip rates 0, 0.5, 1, 0.5 -> FP 0.5
    preds = [[1, 1, 1], [1, 2, 2], [1, 2, 1], [3, 3, 4]]
    per = pm.flip_probability_per_sequence(preds, noise=False)
    assert per.tolist() == [0.0, 0.5, 1.0, 0.5] and pm.flip_probability(preds, noise=False) == 0.5
    lo, hi = pm.sequence_interval(per, resamples=4000)
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    assert pm.sequence_interval(np.array([0.25])) == (0.25, 0.25)
    assert all(np.isnan(pm.sequence_interval(np.array([]))))


def test_imagenet_p_ranks_the_mean_flip_probability_over_its_perturbations():
    def p(model, pert, fp, lo, hi, fpid):
        return _row(model, "generated:imagenet-p", fp=fpid, dataset=f"val-imagenet-p-{pert}", flip_prob=fp,
                    flip_prob_ci_low=lo, flip_prob_ci_high=hi, top5_dist=1.0)

    rows = [p("m1", "rotate", 0.10, 0.08, 0.12, "r"), p("m1", "scale", 0.20, 0.18, 0.22, "s"),
            p("m2", "rotate", 0.30, 0.28, 0.32, "r"), p("m2", "scale", 0.40, 0.38, 0.42, "s"),
            p("m3", "rotate", 0.01, 0.0, 0.02, "r")]     # one perturbation only: not comparable
    lb = lbm.build(pd.DataFrame(rows))
    g = lb.families["imagenet-p"]
    assert list(g.model) == ["m1", "m2"] and list(g["rank"]) == [1, 2]
    assert g["mean FP %"].tolist() == pytest.approx([15.0, 35.0]) and g["lo"].tolist() == pytest.approx([13.0, 33.0])
    assert list(g.perturbations) == [2, 2]
    assert lb.apart.model.tolist() == ["m3"] and "imagenet-p" in lb.apart.reason.iloc[0]


def test_end_to_end_imagenet_a_family(tmp_path, sample_rows, imagenet_sample):
    """Two models on an ImageNet-A layout of real images: the family ranks what evaluate() stored."""
    import shutil

    import robustbench_sys
    from robustbench_sys.data import release_wnids, wnid_to_index
    from robustbench_sys.results.store import ResultsStore

    a = set(release_wnids("imagenet-a"))
    index = {v: k for k, v in wnid_to_index().items()}
    root = tmp_path / "imagenet-a"
    for w in a:
        (root / w).mkdir(parents=True)
    picked = [r for r in sample_rows if index[int(r["class_index"])] in a][:4]
    assert picked, "the sample has no image of an ImageNet-A class"
    for r in picked:
        shutil.copy(imagenet_sample / r["file"], root / index[int(r["class_index"])] / r["file"].split("/")[-1])
    for model in ("mobilenet_v2", "tf_efficientnet_lite0"):
        robustbench_sys.evaluate(model, "clean", str(root), tmp_path / "res", progress=False, workers=0)
    s = ResultsStore(tmp_path / "res").summaries()
    lb = lbm.build(s)
    g = lb.families["imagenet-a"].set_index("model")
    assert set(g.index) == {"mobilenet_v2", "tf_efficientnet_lite0"}
    for r in s.itertuples():
        assert g.loc[r.model, "top1 % (200 classes)"] == pytest.approx(100 * r.top1)
        assert g.loc[r.model, "n"] == len(picked)


def _p_summaries(models: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = []
    for model, fps in models.items():
        for pert, fp in fps.items():
            rows.append(_row(model, "generated:imagenet-p", fp=pert, dataset=f"val-imagenet-p-{pert}", flip_prob=fp,
                             top5_dist=10 * fp, flip_prob_ci_low=fp, flip_prob_ci_high=fp))
    return pd.DataFrame(rows)


def test_mfp_normalised_by_a_baseline_model_on_the_same_sequences():
    """mFP = mean_p FP_p / FP_p(baseline): the baseline (the paper's AlexNet) measured on the same
    generated sequences; worked example over the 10 benchmark perturbations."""
    from robustbench_sys.results import report

    perts = list(pm.BENCHMARK_PERTURBATIONS)
    base = {p: 0.1 * (k + 1) for k, p in enumerate(perts)}           # 0.1, 0.2, ..., 1.0
    model = {p: 0.05 * (k + 1) for k, p in enumerate(perts[:5])} | {p: 0.1 * (k + 6) for k, p in enumerate(perts[5:])}
    s = _p_summaries({"alexnet": base, "m": model})
    table = report.imagenet_p_summary(s, baseline=report.imagenet_p_baseline(s, "alexnet")).set_index("model")
    # ratios: 0.5 for the first five, 1.0 for the last five -> mFP 75 %; T5D = 10 x FP -> the same ratios
    assert table.loc["m", "mFP %"] == pytest.approx(75.0) and table.loc["m", "mT5D %"] == pytest.approx(75.0)
    assert table.loc["alexnet", "mFP %"] == pytest.approx(100.0)
    partial = _p_summaries({"alexnet": {p: base[p] for p in perts[:9]}, "m": model})
    t2 = report.imagenet_p_summary(partial, baseline=report.imagenet_p_baseline(partial, "alexnet"))
    assert np.isnan(t2.set_index("model").loc["m", "mFP %"])       # the baseline lacks a perturbation
    with pytest.raises(ValueError, match="--baseline-model resnet"):
        report.imagenet_p_baseline(s, "resnet")
