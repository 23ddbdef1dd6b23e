"""Released OOD / re-labelled test sets (robustbench_sys.data FORMATS): each loader on a folder in
that release's exact layout, built here from the shared real ImageNet sample; the A / R / O class
lists; the 200-class restriction of the logits (loop.Classify) against an independent computation;
ImageNet-ReaL accuracy and ImageNet-O AUPR (metrics.ood) on worked examples and end to end; bad
layouts as one-line errors naming the path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from robustbench_sys.data import (
    FORMATS,
    IMAGENETV2_FOLDERS,
    OOD_IN_PREFIX,
    class_index,
    load_dataset,
    release_subset,
    release_wnids,
    with_in_distribution,
    wnid_to_index,
)
from robustbench_sys.errors import UserError
from robustbench_sys.metrics.ood import aupr, real_accuracy

SETS = ("imagenet-a", "imagenet-r", "imagenet-o")
MODEL = "mobilenet_v2"


def _one_line(fn, *args, **kw) -> str:
    with pytest.raises(UserError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _release_200(tmp_path, name, fmt, rows, sample, n, skip=0, folders=None):
    """``fmt``'s layout under ``tmp_path/name``: every one of its class folders (or ``folders``), with
    ``n`` real sample images of those classes (after the first ``skip``)."""
    root = tmp_path / name
    wnids = release_wnids(fmt) if folders is None else folders
    for w in wnids:
        (root / w).mkdir(parents=True)
    picked = [r for r in rows if r["wnid"] in set(wnids)][skip:skip + n]
    for r in picked:
        shutil.copyfile(sample / r["file"], root / r["wnid"] / r["file"])
    return root, picked


# ---------------------------------------------------------------------- class lists
@pytest.mark.parametrize("fmt", SETS)
def test_class_lists_are_200_imagenet_wnids(fmt):
    wnids = release_wnids(fmt)
    assert len(wnids) == 200 and len(set(wnids)) == 200
    assert list(wnids) == sorted(wnids)
    assert set(wnids) <= {w for w, _ in class_index()}
    idx = release_subset(fmt)
    assert len(idx) == 200 and [class_index()[i][0] for i in idx] == list(wnids)


def test_class_lists_differ():
    a, r, o = (set(release_wnids(f)) for f in SETS)
    assert a != r and a != o and r != o
    assert set(FORMATS) >= {"folder", *SETS, "imagenet-sketch", "imagenetv2", "imagenet-real"}


# ---------------------------------------------------------------------- loaders
@pytest.mark.parametrize("fmt", SETS)
def test_200_class_release_detected_and_restricted(fmt, tmp_path, sample_rows, imagenet_sample):
    root, picked = _release_200(tmp_path, "downloaded", fmt, sample_rows, imagenet_sample, 4)
    ds = load_dataset(root)          # recognised from its 200 folders, whatever the root's name
    assert ds.kind == fmt and ds.class_subset == release_subset(fmt)
    idx = wnid_to_index()
    assert sorted((s.file, s.label) for s in ds.samples) == sorted((f"{r['wnid']}/{r['file']}", idx[r["wnid"]])
                                                                  for r in picked)
    plain = load_dataset(root, data_format="folder")
    assert plain.kind == "folder" and plain.class_subset is None
    assert plain.fingerprint != ds.fingerprint   # a restricted unit never resumes an unrestricted one


def test_partial_release_needs_data_format(tmp_path, sample_rows, imagenet_sample):
    a = release_wnids("imagenet-a")
    root, picked = _release_200(tmp_path, "some", "imagenet-a", sample_rows, imagenet_sample, 3, folders=a[:150])
    msg = _one_line(load_dataset, root)
    assert "--data-format imagenet-a" in msg and "--data-format folder" in msg
    ds = load_dataset(root, data_format="imagenet-a")
    assert ds.kind == "imagenet-a" and ds.class_subset == release_subset("imagenet-a") and len(ds) == 3
    # under the release's own folder name a partial download is ImageNet-A
    named = root.rename(tmp_path / "imagenet-a")
    assert load_dataset(named).kind == "imagenet-a"


def test_conflicting_evidence_is_ambiguous(tmp_path, sample_rows, imagenet_sample):
    root, _ = _release_200(tmp_path, "imagenet-r", "imagenet-a", sample_rows, imagenet_sample, 1)
    msg = _one_line(load_dataset, root)
    assert "ambiguous" in msg and "--data-format" in msg and "imagenet-a" in msg and "imagenet-r" in msg


def test_foreign_folder_in_release_names_it(tmp_path, sample_rows, imagenet_sample):
    root, _ = _release_200(tmp_path, "imagenet-a", "imagenet-a", sample_rows, imagenet_sample, 1)
    (root / "n01440764").mkdir()           # tench: not an ImageNet-A class
    msg = _one_line(load_dataset, root, data_format="imagenet-a")
    assert str(root / "n01440764") in msg


def test_sketch(tmp_path, sample_rows, imagenet_sample):
    root = tmp_path / "sketch"
    for w, _ in class_index():
        (root / w).mkdir(parents=True)
    for r in sample_rows[:3]:
        shutil.copyfile(imagenet_sample / r["file"], root / r["wnid"] / f"sketch_{r['file']}")
    ds = load_dataset(root)
    assert ds.kind == "imagenet-sketch" and ds.class_subset is None
    assert sorted(s.label for s in ds.samples) == sorted(int(r["class_index"]) for r in sample_rows[:3])
    assert load_dataset(root, data_format="imagenet-sketch").fingerprint == ds.fingerprint


@pytest.mark.parametrize("name", IMAGENETV2_FOLDERS)
def test_imagenetv2_release_folders(name, tmp_path, sample_rows, imagenet_sample):
    root = tmp_path / name
    for i in range(1000):
        (root / str(i)).mkdir(parents=True)
    picked = sample_rows[10:14]
    for k, r in enumerate(picked):
        shutil.copyfile(imagenet_sample / r["file"], root / r["class_index"] / f"{k:040x}.jpeg")
    ds = load_dataset(root)
    assert ds.kind == "imagenetv2"
    assert [(s.file, s.label) for s in ds.samples] == [(f"{r['class_index']}/{k:040x}.jpeg", int(r["class_index"]))
                                                       for k, r in enumerate(picked)]
    other = root.rename(tmp_path / "v2")   # the 1000 numbered folders alone are unambiguous
    assert load_dataset(other).kind == "imagenetv2"


def test_imagenetv2_bad_layouts(tmp_path, sample_rows, imagenet_sample):
    root = tmp_path / "numbers"
    for i in range(5):
        (root / str(i)).mkdir(parents=True)
    assert "--data-format imagenetv2" in _one_line(load_dataset, root)
    (root / "007").mkdir()
    assert str(root / "007") in _one_line(load_dataset, root, data_format="imagenetv2")


def _real_layout(tmp_path, rows, sample, numbers):
    """An ImageNet-val folder (wnid sub-folders, ILSVRC2012_val_NNNNNNNN.JPEG) of real images."""
    root = tmp_path / "val"
    for r, n in zip(rows, numbers):
        (root / r["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample / r["file"], root / r["wnid"] / f"ILSVRC2012_val_{n:08d}.JPEG")
    return root


def test_real_loader_and_bad_layouts(tmp_path, sample_rows, imagenet_sample):
    rows, numbers = sample_rows[:4], [1, 2, 17, 50000]
    root = _real_layout(tmp_path, rows, imagenet_sample, numbers)
    real = [[] for _ in range(50000)]
    real[0], real[1], real[16], real[49999] = [3, 7], [], [int(rows[2]["class_index"])], [999]
    (root / "real.json").write_text(json.dumps(real))
    ds = load_dataset(root)
    assert ds.kind == "imagenet-real" and ds.class_subset is None
    files = [f"{r['wnid']}/ILSVRC2012_val_{n:08d}.JPEG" for r, n in zip(rows, numbers)]
    assert dict(ds.multi_labels) == {files[0]: (3, 7), files[2]: (int(rows[2]["class_index"]),), files[3]: (999,)}
    assert sorted(s.label for s in ds.samples) == sorted(int(r["class_index"]) for r in rows)
    assert ds.fingerprint != load_dataset(root, data_format="folder").fingerprint

    (root / "real.json").write_text(json.dumps(real[:20]))          # too short for image 50000
    msg = _one_line(load_dataset, root)
    assert str(root / "real.json") in msg and "50000" in msg
    (root / "real.json").write_text('{"labels": 1}')
    assert str(root / "real.json") in _one_line(load_dataset, root)
    (root / "real.json").write_text(json.dumps(real))
    odd = root / rows[0]["wnid"] / "holiday.JPEG"
    shutil.copyfile(imagenet_sample / rows[0]["file"], odd)
    assert str(odd) in _one_line(load_dataset, root)


def test_real_flat_val_with_labels_csv(tmp_path, sample_rows, imagenet_sample):
    root = tmp_path / "flat"
    root.mkdir()
    lines = ["file,class_index"]
    for n, r in enumerate(sample_rows[:3], start=1):
        shutil.copyfile(imagenet_sample / r["file"], root / f"ILSVRC2012_val_{n:08d}.JPEG")
        lines.append(f"ILSVRC2012_val_{n:08d}.JPEG,{r['class_index']}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    assert load_dataset(root).kind == "folder"
    (root / "real.json").write_text(json.dumps([[5], [], [6, 7]]))
    ds = load_dataset(root)
    assert ds.kind == "imagenet-real"
    assert dict(ds.multi_labels) == {"ILSVRC2012_val_00000001.JPEG": (5,), "ILSVRC2012_val_00000003.JPEG": (6, 7)}
    assert [s.label for s in ds.samples] == [int(r["class_index"]) for r in sample_rows[:3]]
    assert dict(ds.limit(1).multi_labels) == {"ILSVRC2012_val_00000001.JPEG": (5,)}


# ---------------------------------------------------------------------- metrics: worked examples
def _ap_by_ranks(pos, neg) -> float:
    """AP as the mean over positives of the precision at that positive's score (ties counted in)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return float(np.mean([(pos >= s).sum() / ((pos >= s).sum() + (neg >= s).sum()) for s in pos]))


def test_aupr_worked_examples():
    assert aupr([0.8, 0.35], [0.1, 0.4]) == pytest.approx(5 / 6)     # scikit-learn's documented example
    assert aupr([0.5], [0.5]) == pytest.approx(0.5)                   # a tie is one threshold
    assert aupr([1, 1], [1]) == pytest.approx(2 / 3)
    assert aupr([3, 2], [1, 0]) == 1.0
    assert aupr([0, 0], [1, 1]) == pytest.approx(0.5)
    assert aupr([0.9, 0.2], [0.5]) == pytest.approx((1 + 2 / 3) / 2)
    assert aupr([0.2], []) == 1.0
    rng = np.random.default_rng(0)
    for _ in range(50):   # ties frequent (integer scores): against the rank definition
        pos, neg = rng.integers(0, 6, rng.integers(1, 20)), rng.integers(0, 6, rng.integers(0, 20))
        assert aupr(pos, neg) == pytest.approx(_ap_by_ranks(pos, neg))
    with pytest.raises(ValueError):
        aupr([], [0.1])
    with pytest.raises(ValueError):
        aupr([float("nan")], [0.1])


def test_real_accuracy_worked_example():
    preds = {"a": 1, "b": 2, "c": 3, "d": 4}
    labels = {"a": (1, 5), "b": (7,), "c": (), "e": (1,)}   # c: empty (left out); d: no entry
    assert real_accuracy(preds, labels) == (0.5, 2)
    acc, n = real_accuracy({"c": 3}, labels)
    assert n == 0 and np.isnan(acc)


# ---------------------------------------------------------------------- end to end (one real model)
@pytest.fixture(scope="module")
def logits(imagenet_sample, sample_rows):
    """file -> the model's 1000 logits, computed here with the card's pipeline and torch (the
    reference the restricted and ReaL / O scores are checked against)."""
    import torch

    from robustbench_sys import zoo
    from robustbench_sys.pipeline import Pipeline

    card = zoo.get_card(MODEL)
    try:
        model = zoo.load_model(card).eval()
    except zoo.WeightsUnavailable as e:
        pytest.skip(f"{MODEL} weights not available: {e}")
    pipe = Pipeline.from_card(card)
    a, o = set(release_wnids("imagenet-a")), set(release_wnids("imagenet-o"))
    files = [r["file"] for r in sample_rows if r["wnid"] in a][:16] + \
            [r["file"] for r in sample_rows if r["wnid"] in o][:8] + [r["file"] for r in sample_rows[:2]]
    files = list(dict.fromkeys(files))
    x = torch.from_numpy(np.stack([pipe.preprocess((imagenet_sample / f).read_bytes()) for f in files]))
    with torch.inference_mode():
        out = model(pipe.normalise(x)).float().numpy()
    return dict(zip(files, out))


def _evaluate(data, out, **kw):
    import robustbench_sys

    df = robustbench_sys.evaluate(MODEL, ["clean"], data, out, progress=False, speed=False, workers=0, **kw)
    assert len(df) == 1
    from robustbench_sys.results.store import ResultsStore

    row = df.iloc[0]
    return row, ResultsStore(out).read_unit_rows(row.unit_id).set_index("file")


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_imagenet_a_restriction_end_to_end(tmp_path, sample_rows, imagenet_sample, logits):
    root, picked = _release_200(tmp_path, "imagenet-a", "imagenet-a", sample_rows, imagenet_sample, 16)
    subset = np.array(release_subset("imagenet-a"))
    outside = [r["file"] for r in picked if int(np.argmax(logits[r["file"]])) not in set(subset)]
    assert outside, "no image whose unrestricted top-1 falls outside the 200 classes: the check would be vacuous"
    row, rows = _evaluate(root, tmp_path / "out")
    assert row.dataset_kind == "imagenet-a" and row.n_classes == 200
    for r in picked:
        got = rows.loc[f"{r['wnid']}/{r['file']}"]
        z = logits[r["file"]][subset]
        assert got.pred == subset[int(np.argmax(z))]                  # argmax over the 200, independently
        assert set(got.top5) <= set(subset.tolist())
        assert got.top5_prob[0] == pytest.approx(_softmax(z).max(), abs=1e-4)   # softmax over the 200
    labels = [int(r["class_index"]) for r in picked]
    preds = [int(rows.loc[f"{r['wnid']}/{r['file']}"].pred) for r in picked]
    assert row.top1 == pytest.approx(np.mean([p == y for p, y in zip(preds, labels)]))
    spec = json.loads((tmp_path / "out" / "units" / f"{row.unit_id}.json").read_text())
    assert spec["class_subset"] == subset.tolist()
    # the same folder read as plain ImageNet folders: 1000-way, the outside predictions stay outside
    row2, rows2 = _evaluate(root, tmp_path / "out", data_format="folder")
    assert row2.unit_id != row.unit_id and row2.dataset_kind == "folder" and pd.isna(row2.n_classes)
    for f in outside:
        wnid = f.split("_")[0]
        assert rows2.loc[f"{wnid}/{f}"].pred == int(np.argmax(logits[f])) != rows.loc[f"{wnid}/{f}"].pred


def test_imagenet_o_aupr_end_to_end(tmp_path, sample_rows, imagenet_sample, logits):
    o, picked = _release_200(tmp_path, "imagenet-o", "imagenet-o", sample_rows, imagenet_sample, 4)
    val = tmp_path / "val"                     # in-distribution: ImageNet-val images of O classes + one other
    o_rows = [r for r in sample_rows if r["wnid"] in set(release_wnids("imagenet-o"))][4:8]
    for r in [*o_rows, sample_rows[0]]:
        (val / r["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(imagenet_sample / r["file"], val / r["wnid"] / r["file"])
    assert "--ood-in" in _one_line(_evaluate, o, tmp_path / "out")          # no silent default
    row, rows = _evaluate(o, tmp_path / "out", ood_in=val)
    subset = np.array(release_subset("imagenet-o"))
    pos = [-_softmax(logits[r["file"]][subset]).max() for r in picked]
    neg = [-_softmax(logits[r["file"]][subset]).max() for r in o_rows]     # sample_rows[0] (tench) left out
    assert (row.ood_n_pos, row.ood_n_neg, row.n_classes) == (4, 4, 200)
    assert row.ood_aupr == pytest.approx(_ap_by_ranks(pos, neg), abs=1e-6)
    assert sum(f.startswith(OOD_IN_PREFIX) for f in rows.index) == 4


def test_real_end_to_end(tmp_path, sample_rows, imagenet_sample, logits):
    rows_in = [r for r in sample_rows if r["file"] in logits][:8]
    numbers = [5, 9, 10, 11, 300, 4000, 49999, 50000]
    root = _real_layout(tmp_path, rows_in, imagenet_sample, numbers)
    p = [int(np.argmax(logits[r["file"]])) for r in rows_in]
    y = [int(r["class_index"]) for r in rows_in]
    lists = [[y[0]], [p[1]], [], [p[3], y[3]], [(p[4] + 1) % 1000], [y[5], (p[5] + 1) % 1000], [p[6]], [y[7]]]
    real = [[] for _ in range(50000)]
    for n, lab in zip(numbers, lists):
        real[n - 1] = lab
    (root / "real.json").write_text(json.dumps(real))
    row, rows = _evaluate(root, tmp_path / "out")
    files = [f"{r['wnid']}/ILSVRC2012_val_{n:08d}.JPEG" for r, n in zip(rows_in, numbers)]
    assert [int(rows.loc[f].pred) for f in files] == p
    expect = [p[i] in lists[i] for i in range(8) if lists[i]]
    assert row.dataset_kind == "imagenet-real" and row.real_n == 7
    assert row.real_top1 == pytest.approx(np.mean(expect))
    assert row.top1 == pytest.approx(np.mean([a == b for a, b in zip(p, y)]))


# ---------------------------------------------------------------------- refusals
def test_attacks_and_ood_in_refused(tmp_path, sample_rows, imagenet_sample):
    import robustbench_sys

    a, _ = _release_200(tmp_path, "imagenet-a", "imagenet-a", sample_rows, imagenet_sample, 1)
    msg = _one_line(robustbench_sys.evaluate, MODEL, ["adv-pgd-linf-4"], a, tmp_path / "out", progress=False)
    assert "attacks" in msg and "200 classes" in msg
    msg = _one_line(robustbench_sys.evaluate, MODEL, ["clean"], a, tmp_path / "out", ood_in=a, progress=False)
    assert "--ood-in" in msg and "imagenet-a" in msg
    ds = load_dataset(a)
    assert "--ood-in" in _one_line(with_in_distribution, ds, None)
    msg = _one_line(load_dataset, a, data_format="imagenet-x")
    assert "--data-format imagenet-x" in msg and "imagenetv2" in msg


def test_cli_threads_data_format_and_ood_in(tmp_path, sample_rows, imagenet_sample, capsys):
    from robustbench_sys import cli

    o, _ = _release_200(tmp_path, "imagenet-o", "imagenet-o", sample_rows, imagenet_sample, 2)
    val = tmp_path / "val"
    for r in [r for r in sample_rows if r["wnid"] in set(release_wnids("imagenet-o"))][2:4]:
        (val / r["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(imagenet_sample / r["file"], val / r["wnid"] / r["file"])
    base = ["eval", "--model", MODEL, "--data", str(o), "--out", str(tmp_path / "out"), "--no-progress",
            "--no-speed", "--workers", "0", "--format", "csv"]
    assert cli.main(base) == 2
    err = capsys.readouterr().err.strip()
    assert "--ood-in" in err and len(err.splitlines()) == 1
    assert cli.main([*base, "--data-format", "folder", "--ood-in", str(val)]) == 2   # read as plain folders
    assert "applies to ImageNet-O" in capsys.readouterr().err
    assert cli.main([*base, "--ood-in", str(val)]) == 0
    capsys.readouterr()
    from robustbench_sys.results.store import ResultsStore

    s = ResultsStore(tmp_path / "out").summaries()
    assert len(s) == 1 and s.ood_n_pos.iloc[0] == 2 and s.ood_n_neg.iloc[0] == 2 and 0 < s.ood_aupr.iloc[0] <= 1
    assert cli.main(["generate", "imagenet-c", "--src", str(o), "--out", str(tmp_path / "gen"), "--no-progress"]) == 2
    assert "class subset" in capsys.readouterr().err


def test_ood_in_join_limit_and_overlap(tmp_path, sample_rows, imagenet_sample):
    o, picked = _release_200(tmp_path, "imagenet-o", "imagenet-o", sample_rows, imagenet_sample, 3)
    val = tmp_path / "val"
    others = [r for r in sample_rows if r["wnid"] in set(release_wnids("imagenet-o"))][3:6]
    for r in [*others, sample_rows[0]]:
        (val / r["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(imagenet_sample / r["file"], val / r["wnid"] / r["file"])
    ds = load_dataset(o)
    joined = with_in_distribution(ds, val)
    assert len(joined) == 6 and joined.ood_negatives == {f"{OOD_IN_PREFIX}{r['wnid']}/{r['file']}" for r in others}
    assert joined.class_subset == ds.class_subset and joined.fingerprint != ds.fingerprint
    one = joined.limit(1)
    assert len(one) == 2 and len(one.ood_negatives) == 1 and one.samples[1].file in one.ood_negatives
    msg = _one_line(with_in_distribution, ds, o)          # the ImageNet-O images themselves
    assert str(o) in msg and "ImageNet-O image" in msg
