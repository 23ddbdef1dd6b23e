"""Adversarial suites through the evaluator, end to end on real data: the MNIST LeNet-5 pair via
the CLI (the adversarially trained one keeps its robust accuracy, the standard one collapses),
MobileNetV2 on shared ImageNet images equal to a direct torchattacks run, resume after an
interrupt, recorded perturbation norms, and the leaderboard keeping the benchmarks apart."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_sys import zoo
from robustbench_sys.cli import main
from robustbench_sys.errors import UserError
from robustbench_sys.eval import attack as adversarial_runner
from robustbench_sys.eval.api import evaluate
from robustbench_sys.results import leaderboard
from robustbench_sys.results.store import ADV_PER_IMAGE_SCHEMA, PER_IMAGE_SCHEMA, ResultsStore
from robustbench_sys.suites import get_suite

N = 200
BATCH = 50
MNIST_MODELS = ["mnist_lenet5_standard", "mnist_lenet5_advtrained"]
MNIST_COND = "mnist-pgd-linf/pgd-linf@0.3"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()     # 2 shared cores: one intra-op thread avoids oversubscription
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mnist_ready():
    from robustbench_sys.zoo import mnist

    if not mnist.test_npz_path().is_file() or not all(zoo.weights_status(zoo.get_card(m)) == "cached"
                                                      for m in MNIST_MODELS):
        pytest.skip("MNIST assets not cached: run scripts/setup.d/60-adversarial.sh")


@pytest.fixture(scope="module")
def mnist_run(mnist_ready, tmp_path_factory):
    """The README command: both LeNets x clean + the advertorch-tutorial PGD suite, 200 digits."""
    out = tmp_path_factory.mktemp("mnist")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["eval", "--model", ",".join(MNIST_MODELS), "--suite", "clean,mnist-pgd-linf",
                   "--data", "mnist-test", "--limit", str(N), "--out", str(out), "--no-progress",
                   "--workers", "0", "--batch-size", str(BATCH)])
    assert rc == 0
    store = ResultsStore(out)
    return out, buf.getvalue(), store.summaries(), store.per_image()


def test_mnist_pair_end_to_end(mnist_run):
    out, printed, s, rows = mnist_run
    assert "robust acc %" in printed and MNIST_COND in printed
    adv = s[s.condition == MNIST_COND].set_index("model")
    assert sorted(adv.index) == sorted(MNIST_MODELS) and set(adv.n_images) == {N}
    print("\n" + adv[["clean_acc", "robust_acc", "attack_robustness", "wcar"]].to_string())
    assert (adv.clean_acc > 0.95).all()
    assert adv.loc["mnist_lenet5_standard", "robust_acc"] < 0.10
    assert adv.loc["mnist_lenet5_advtrained", "robust_acc"] > 0.70
    params = json.loads(adv.loc["mnist_lenet5_advtrained", "attack_params"])
    assert params["steps"] == 40 and params["alpha"] == pytest.approx(0.01) and params["random_start"] is True
    assert params["eps"] == 0.3 and params["torchattacks_class"] == "PGD"
    for model, r in adv.iterrows():
        # summary figures recomputed from the stored per-image rows
        pr = rows[(rows.model == model) & (rows.condition == MNIST_COND)]
        assert len(pr) == N and not pr.duplicated("file").any()
        clean = pr.clean_pred.to_numpy() == pr.label.to_numpy()
        both = clean & pr.correct.to_numpy(dtype=bool)
        assert r.robust_acc == pytest.approx(both.mean())
        assert r.attack_robustness == pytest.approx(both.sum() / clean.sum())
        assert r.wcar == pytest.approx(r.attack_robustness)      # one attack: WCAR = AR
        assert r.robust_acc_ci_low - 1e-12 <= r.robust_acc <= r.robust_acc_ci_high + 1e-12
        # the clean unit scored the same images to the same predictions
        ref = rows[(rows.model == model) & (rows.condition == "clean")].set_index("file").pred
        assert (pr.set_index("file").clean_pred.astype(int) == ref.loc[pr.file].to_numpy()).all()
        assert r.validity_raised == "", r.validity_flags
    lb = leaderboard.build(s)
    fam = lb.families["mnist-pgd-linf"].set_index("model")
    assert fam.loc["mnist_lenet5_advtrained", "rank"] < fam.loc["mnist_lenet5_standard", "rank"]
    assert fam.loc["mnist_lenet5_advtrained", "robust acc %"] > 70


def test_perturbation_norms_recorded_within_eps(mnist_run):
    _, _, s, rows = mnist_run
    adv_rows = rows[rows.condition == MNIST_COND]
    eps = 0.3
    assert adv_rows.perturbation.notna().all() and (adv_rows.perturbation <= eps * (1 + 1e-5) + 1e-6).all()
    assert adv_rows.perturbation.max() > 0.9 * eps          # the actual L∞ norms, not a placeholder
    assert adv_rows.attack_seed.notna().all() and adv_rows.groupby("file").attack_seed.nunique().eq(1).all()
    for r in s[s.condition == MNIST_COND].itertuples():
        assert r.max_perturbation == pytest.approx(adv_rows[adv_rows.model == r.model].perturbation.max())
        assert r.perturbation_within_eps and r.norm == "Linf" and r.eps == eps
        flags = {f["name"]: f["raised"] for f in json.loads(r.validity_flags)}
        assert flags["perturbation_within_eps"] is False and "zero_gradients" in flags
    assert rows[rows.condition == "clean"].perturbation.isna().all()   # other units lack the columns


def test_resume_after_interrupt_gives_the_same_rows(mnist_run, tmp_path, monkeypatch):
    _, _, _, full = mnist_run
    out = tmp_path / "resume"
    orig = ResultsStore.append_batch
    written = []

    def interrupting(self, unit_id, rows, schema=PER_IMAGE_SCHEMA):
        part = orig(self, unit_id, rows, schema)
        if schema is ADV_PER_IMAGE_SCHEMA:
            written.append(part)
            if len(written) == 2:        # Ctrl-C after the second attacked batch
                raise KeyboardInterrupt
        return part

    kw = dict(limit=N, batch_size=BATCH, workers=0, progress=False)
    monkeypatch.setattr(ResultsStore, "append_batch", interrupting)
    with pytest.raises(KeyboardInterrupt):
        evaluate(["mnist_lenet5_standard"], ["mnist-pgd-linf"], "mnist-test", out, **kw)
    monkeypatch.undo()
    store = ResultsStore(out)
    assert len(store.per_image().query("condition == @MNIST_COND")) == 2 * BATCH
    assert not any("pgd" in c for c in store.summaries().get("condition", []))

    s = evaluate(["mnist_lenet5_standard"], ["mnist-pgd-linf"], "mnist-test", out, **kw)
    got = store.per_image().query("condition == @MNIST_COND").set_index("file").sort_index()
    want = full.query("condition == @MNIST_COND and model == 'mnist_lenet5_standard'").set_index("file").sort_index()
    assert len(got) == N and not got.index.duplicated().any() and got.run_id.nunique() == 2
    cols = ["unit_id", "pred", "clean_pred", "correct", "attack_seed"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    np.testing.assert_allclose(got.perturbation, want.perturbation, rtol=0, atol=1e-7)
    row = s[s.condition == MNIST_COND].iloc[0]
    assert row.robust_acc == pytest.approx((want.correct & (want.clean_pred == want.label)).mean())


def test_mobilenet_pgd_equals_plain_torchattacks(imagenet_sample, sample_rows, tmp_path, mnist_run):
    torchattacks = pytest.importorskip("torchattacks")
    from PIL import Image
    from torchvision.transforms import v2 as T

    if zoo.weights_status(zoo.get_card("mobilenet_v2")) != "cached":
        pytest.skip("mobilenet_v2 weights not cached: run scripts/setup.sh")
    # a user suite file: PGD-L∞ 4/255, 3 steps of eps/2 (quick; enough for a standard model)
    suite = tmp_path / "pgd4-quick.toml"
    suite.write_text('name = "pgd4-quick"\nfamily = "pgd4-quick"\nversion = 1\n[[conditions]]\n'
                     'name = "pgd-linf@4/255"\nattack = "pgd-linf"\neps = "4/255"\nseed = 7\n'
                     'params = { steps = 3, rel_stepsize = 0.5 }\n')
    assert get_suite(str(suite)).conditions[0].attack["params"]["random_start"] is True   # default filled in
    n = 8
    s = evaluate(["mobilenet_v2"], [str(suite)], imagenet_sample, tmp_path / "res", limit=n, batch_size=n,
                 workers=0, progress=False)
    r = s[s.condition == "pgd4-quick/pgd-linf@4/255"].iloc[0]
    rows = ResultsStore(tmp_path / "res").read_unit_rows(r.unit_id).sort_values("file")

    # the same 8 images (first by file name), torchvision's eval transform, plain torchattacks
    files = sorted(x["file"] for x in sample_rows)[:n]
    label = {x["file"]: int(x["class_index"]) for x in sample_rows}
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                    T.CenterCrop(224), T.ToImage(), T.ToDtype(torch.float32, scale=True)])
    x = torch.stack([tf(Image.open(imagenet_sample / f).convert("RGB")) for f in files])
    y = torch.tensor([label[f] for f in files])
    card = zoo.get_card("mobilenet_v2")
    plain = torch.nn.Sequential(T.Normalize(card.preprocess.mean, card.preprocess.std), zoo.load_model(card)).eval()
    torch.manual_seed(adversarial_runner.batch_seed(7, files))
    adv = torchattacks.PGD(plain, eps=4 / 255, alpha=2 / 255, steps=3, random_start=True)(x, y)
    with torch.no_grad():
        clean_pred, adv_pred = plain(x).argmax(1), plain(adv).argmax(1)
    assert list(rows.file) == files
    assert rows.pred.tolist() == adv_pred.tolist() and rows.clean_pred.tolist() == clean_pred.tolist()
    ra = float(((clean_pred == y) & (adv_pred == y)).float().mean())
    print(f"\nmobilenet_v2, {n} images: clean {float((clean_pred == y).float().mean()):.3f}, "
          f"PGD-Linf 4/255 x3 robust {r.robust_acc:.3f} (plain torchattacks {ra:.3f})")
    assert r.robust_acc == ra and r.clean_acc >= 0.5 and r.robust_acc <= 1 / n
    d = (adv - x).abs().flatten(1).amax(1).double().numpy()
    np.testing.assert_allclose(rows.perturbation.to_numpy(), d, rtol=0, atol=1e-6)
    assert r.max_perturbation <= 4 / 255 * (1 + 1e-5) and r.validity_raised == ""

    # leaderboard: the ImageNet and MNIST results are never ranked together
    both = pd.concat([s, mnist_run[2]], ignore_index=True)
    bench = {m: zoo.get_card(m).benchmark for m in both.model}
    for fp in set(both.dataset_fingerprint):
        lb = leaderboard.build(both, dataset_fingerprint=fp)
        ranked = {m for g in lb.families.values() for m in g.model}
        assert len({bench[m] for m in ranked}) == 1
        assert set(lb.apart.reason.str.contains("other data set")) == {True}


def test_bad_suite_and_benchmark_mismatch_fail_clearly(tmp_path, imagenet_sample, mnist_ready):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[conditions]]\nname = "x"\nattack = "pgd-linf"\neps = "4/zero"\n')
    with pytest.raises(UserError, match=r"bad\.toml.*eps"):
        get_suite(str(bad))
    bad.write_text('name = "bad"\n[[conditions]]\nname = "x"\nattack = "pgd-linf"\neps = 0.1\n'
                   'params = { stepz = 3 }\n')
    with pytest.raises(UserError, match=r"bad\.toml.*unknown parameter.*stepz"):
        get_suite(str(bad))
    with pytest.raises(UserError, match="mnist model"):
        evaluate(["mnist_lenet5_standard"], ["clean"], imagenet_sample, tmp_path / "r", limit=4, progress=False)
    with pytest.raises(UserError, match="benchmark mnist"):
        evaluate(["mobilenet_v2"], ["clean"], "mnist-test", tmp_path / "r", limit=4, progress=False)
