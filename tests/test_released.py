"""Released ImageNet-C / -C-bar / -3DCC roots (robustbench_sys.released): a root in the released
layout (<corruption>/<severity>/<wnid>/<file>) built at test time from a ``robustbench-sys generate
imagenet-c`` output (JPEG q85, as released) evaluates to exactly the predictions of the generated
variant folders (no second resize), its natural table gives the same errors / CE, the name lists
match the published sizes, and bad layouts and missing choices are refused with one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import robustbench_sys
from robustbench_sys import released as R
from robustbench_sys import zoo
from robustbench_sys.cli import main
from robustbench_sys.data import class_index, load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.metrics import natural as nm
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.results import report
from robustbench_sys.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")
N = 4
CORRUPTIONS = ("gaussian_noise", "contrast")
KW = dict(progress=False, workers=0, batch_size=N)


@pytest.fixture(scope="module")
def clean(sample_rows, imagenet_sample, tmp_path_factory) -> Path:
    """N real validation JPEGs in the ImageNet val layout (<wnid>/<file>)."""
    root = tmp_path_factory.mktemp("clean") / "val"
    for r in sample_rows[:N]:
        (root / r["wnid"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(imagenet_sample / r["file"], root / r["wnid"] / r["file"])
    return root


@pytest.fixture(scope="module")
def generated(clean, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "c"
    rc = main(["generate", "imagenet-c", "--src", str(clean), "--out", str(out), "--corruptions",
               ",".join(CORRUPTIONS), "--workers", "1", "--no-progress"])
    assert rc == 0
    return out


def _rearrange(generated: Path, dest: Path) -> Path:
    """The generated variants rearranged into the released layout, images copied bit-identical."""
    for labels in sorted(generated.glob("*/*/labels.csv")):
        vdir = labels.parent
        with open(labels, newline="") as f:
            for r in csv.DictReader(f):
                d = dest / vdir.parent.name / vdir.name / class_index()[int(r["class_index"])][0]
                d.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(vdir / r["file"], d / Path(r["file"]).name)
    return dest


@pytest.fixture(scope="module")
def rel_root(generated, tmp_path_factory) -> Path:
    return _rearrange(generated, tmp_path_factory.mktemp("rel") / "ImageNet-C")


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_generated_outputs_stay_generated(generated):
    """A ``generate`` output root and its variants keep their own reader (dataset.json), unless a
    release is named explicitly."""
    assert R.resolve(str(generated), None) is None
    assert R.resolve(str(generated / "contrast" / "3"), None) is None
    assert load_dataset(generated / "contrast" / "3").kind == "generated:imagenet-c"
    assert R.resolve(str(generated), "imagenet-c").release == "imagenet-c"


def test_name_lists_match_the_published_sizes():
    from robustbench_sys.noises.natural import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS

    assert R.corruptions("imagenet-c", "benchmark") == BENCHMARK_CORRUPTIONS == nm.BENCHMARK_CORRUPTIONS
    assert len(R.corruptions("imagenet-c", "benchmark")) == 15
    assert R.corruptions("imagenet-c", "extra") == EXTRA_CORRUPTIONS and len(EXTRA_CORRUPTIONS) == 4
    assert len(R.corruptions("imagenet-c-bar")) == 10 and len(R.corruptions("imagenet-3dcc")) == 12
    rows = R.corruption_table()
    names = [r["corruption"] for r in rows]
    assert len(names) == len(set(names)) == 15 + 4 + 10 + 12        # no folder name in two releases
    assert {r["release"] for r in rows} == set(R.RELEASES)
    assert all(("paper:" in r["source"] or "repo:" in r["source"]) for r in rows)


def test_open_released_lists_parts_with_wnid_labels(rel_root, clean):
    rel = R.open_released(rel_root)
    assert (rel.release, rel.size, rel.root) == ("imagenet-c", 224, rel_root.resolve())
    listing = rel.listing()
    assert [(c, s) for c, s, _ in listing] == [(c, s) for c in sorted(CORRUPTIONS) for s in R.SEVERITIES]
    clean_ds = load_dataset(clean)
    for c, s, ds in listing:
        assert ds.preprocessed_size == 224 and ds.kind == "released:imagenet-c" and ds.name == "ImageNet-C"
        assert ds.root == rel_root.resolve() / c / str(s)
        assert [(x.file, x.label) for x in ds.samples] == [(x.file, x.label) for x in clean_ds.samples]
    assert R.open_released(rel_root, "imagenet-c").listing()[0][2] == listing[0][2]
    with pytest.raises(UserError, match=r"contrast is a corruption of imagenet-c, not one of the 12 imagenet-3dcc"):
        R.open_released(rel_root, "imagenet-3dcc")


def test_released_equals_generated_variants_and_natural_table(rel_root, generated, clean, tmp_path, capsys):
    """The key check: one unit per (corruption, severity) on the released layout gives exactly the
    predictions of evaluating each generated variant folder directly, so no second resize."""
    out = tmp_path / "res-rel"
    rc = main(["eval", "--model", "mobilenet_v2", "--data", str(rel_root), "--clean-data", str(clean),
               "--out", str(out), "--no-progress", "--workers", "0", "--batch-size", str(N)])
    assert rc == 0
    rows = ResultsStore(out).per_image()
    summ = ResultsStore(out).summaries()
    assert sorted(summ.condition) == sorted(["clean"] + [f"imagenet-c/{c}-{s}" for c in CORRUPTIONS
                                                         for s in R.SEVERITIES])
    clean_top1 = float(summ[summ.condition == "clean"].top1.iloc[0])
    gen_err = []
    for c in CORRUPTIONS:
        for s in R.SEVERITIES:
            vdir = generated / c / str(s)
            g_out = tmp_path / f"res-gen-{c}-{s}"
            robustbench_sys.evaluate("mobilenet_v2", ["clean"], data=str(vdir), out=g_out, **KW)
            g = ResultsStore(g_out).per_image().set_index("file").sort_index()
            r = rows[rows.condition == f"imagenet-c/{c}-{s}"].set_index("file").sort_index()
            assert list(r.index) == list(g.index) and len(r) == N and (r.status == "ok").all()
            assert r.pred.tolist() == g.pred.tolist()
            assert [list(t) for t in r.top5] == [list(t) for t in g.top5]
            np.testing.assert_allclose(np.stack(r.top5_prob.to_numpy()), np.stack(g.top5_prob.to_numpy()),
                                       rtol=1e-6, atol=1e-7)
            gen_err.append({"corruption": c, "severity": s, "error": 1 - float(g.correct.mean())})
            spec = json.loads(summ[summ.condition == f"imagenet-c/{c}-{s}"].pipeline.iloc[0])
            assert (spec["resize"], spec["decoder"], spec["released_corrupt"], spec["released_input"]) == \
                ("none", "decoder/pil", f"{c}-{s}", None)
    # the second resize this avoids really changes the input: Resize(256) + CenterCrop(224) of a 224 crop
    card = zoo.get_card("mobilenet_v2")
    data = next((rel_root / "contrast" / "5").glob("*/*.JPEG")).read_bytes()
    as_released = R.part_pipeline(card, R.open_released(rel_root), R.open_released(rel_root).parts[0], None)
    assert not np.array_equal(Pipeline.from_card(card).preprocess(data), as_released.preprocess(data))
    np.testing.assert_array_equal(as_released.preprocess(data),
                                  np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB"),
                                             dtype=np.float32).transpose(2, 0, 1) / np.float32(255))

    # results show --by natural: the same errors, CE and clean error as the generated set
    gen_err = pd.DataFrame(gen_err)
    nat = summ[summ.family == "natural"]
    rel_err = report.natural_errors(nat).sort_values(["corruption", "severity"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rel_err, gen_err.sort_values(["corruption", "severity"]).reset_index(drop=True))
    table = report.natural_table(summ).iloc[0]
    assert (table.dataset, table.corruptions, table.n) == ("ImageNet-C", 2, N)
    assert table["clean err %"] == round(100 * (1 - clean_top1), 2)
    assert table["mean corr. err %"] == round(100 * float(gen_err.error.mean()), 2)
    ce = nm.ce_table(rel_err, 1 - clean_top1).set_index("corruption")
    ce_gen = nm.ce_table(gen_err, 1 - clean_top1).set_index("corruption")
    pd.testing.assert_frame_equal(ce.sort_index(), ce_gen.sort_index())
    assert ce.loc["contrast", "ce"] == pytest.approx(
        gen_err[gen_err.corruption == "contrast"].error.sum() / (5 * nm.ALEXNET_ERRORS["contrast"]))
    capsys.readouterr()
    assert main(["results", "show", "--out", str(out), "--by", "natural", "--format", "csv"]) == 0
    shown = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert shown["mean corr. err %"].iloc[0] == table["mean corr. err %"]
    # a re-run resumes: same units, nothing new; so does one corruption or one severity folder of the root
    df = robustbench_sys.evaluate("mobilenet_v2", data=str(rel_root), clean_data=str(clean), out=out, **KW)
    assert sorted(df.unit_id) == sorted(summ.unit_id)
    one = robustbench_sys.evaluate("mobilenet_v2", data=str(rel_root / "contrast" / "5"), clean_data=str(clean),
                                   out=out, **KW)
    assert sorted(one.condition) == ["clean", "imagenet-c/contrast-5"] and set(one.unit_id) <= set(summ.unit_id)
    five = robustbench_sys.evaluate("mobilenet_v2", data=str(rel_root / "gaussian_noise"), clean_data=str(clean),
                                    out=out, **KW)
    assert len(five) == 6 and set(five.unit_id) <= set(summ.unit_id)
    assert len(ResultsStore(out).summaries()) == len(summ)


def test_full_benchmark_gives_mce_without_clean(generated, tmp_path):
    """All 15 x 5 present (one real q85 crop copied into each folder) with --clean-data none: mCE
    from the units' errors, no clean error / relative mCE, ΔACC left empty."""
    src = next((generated / "contrast" / "3").glob("*/*.JPEG"))
    wnid = src.parent.name
    root = tmp_path / "full"
    for c in nm.BENCHMARK_CORRUPTIONS:
        for s in R.SEVERITIES:
            d = root / c / str(s) / wnid
            d.mkdir(parents=True)
            shutil.copyfile(src if (c, s) != ("fog", 5) else next((generated / "gaussian_noise" / "5").glob(
                "*/*.JPEG")), d / src.name)
    df = robustbench_sys.evaluate("mobilenet_v2", data=str(root), data_format="imagenet-c", clean_data="none",
                                  out=tmp_path / "res", **KW)
    assert len(df) == 75 and df.ref_top1.isna().all() and df.delta_acc.isna().all()
    err = report.natural_errors(df)
    table = report.natural_table(df).iloc[0]
    assert table["mCE %"] == round(100 * nm.mce(err), 2)
    assert np.isnan(table["rel. mCE %"]) and np.isnan(table["clean err %"])
    # no reference: nothing for the ΔACC tables (and no crash on the NaNs); the leaderboard ranks the
    # released set as a family of its own by mCE, which needs no reference
    from robustbench_sys.results import leaderboard

    assert report.family_table(df).empty
    lb = leaderboard.build(df)
    assert list(lb.families) == ["imagenet-c-released"] and lb.overall.empty
    g = lb.families["imagenet-c-released"]
    assert g["mCE %"].iloc[0] == pytest.approx(100 * nm.mce(err)) and g["parts"].iloc[0] == 75
    assert g["lo"].iloc[0] <= g["mCE %"].iloc[0] <= g["hi"].iloc[0]


def test_model_of_another_input_size_needs_a_choice(rel_root, tmp_path):
    card = zoo.get_card("tf_efficientnet_lite1")
    assert card.preprocess.input_size == 240
    kw = dict(out=tmp_path / "res", clean_data="none", limit=1, **KW)
    with pytest.raises(UserError, match=r"takes 240px input .* 224px imagenet-c crops; choose --released-input "
                                        r"resize .* or --released-input pad"):
        robustbench_sys.evaluate("tf_efficientnet_lite1", data=str(rel_root), **kw)
    rel = R.open_released(rel_root)
    part = rel.parts[0]
    data = part.dataset.samples[0].path.read_bytes()
    crop = np.asarray(Image.open(part.dataset.samples[0].path).convert("RGB"))
    pad = R.part_pipeline(card, rel, part, "pad")
    x = pad.preprocess(data)
    assert x.shape == (3, 240, 240) and not x[:, :8].any() and not x[:, :, -8:].any()
    np.testing.assert_array_equal(x[:, 8:232, 8:232], crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    rs = R.part_pipeline(card, rel, part, "resize")
    want = Pipeline.from_card(card).replace(decoder="decoder/pil", crop_pct=1.0).preprocess(data)
    np.testing.assert_array_equal(rs.preprocess(data), want)
    assert rs.preprocess(data).shape == (3, 240, 240)
    df = robustbench_sys.evaluate("tf_efficientnet_lite1", data=str(rel_root), released_input="pad", **kw)
    assert len(df) == 10 and {json.loads(p)["released_input"] for p in df.pipeline} == {"pad"}
    assert all("centre-padded to 240px" in t for t in df.pipeline_text)
    # the stored spec rebuilds the padded pipeline (the dashboard's image preview of a flipped image)
    from dashboard.app import rebuild_image
    from robustbench_sys.results.store import ResultsStore

    assert Pipeline.from_spec(pad.spec_json()) == pad
    store = ResultsStore(tmp_path / "res")
    unit = df.unit_id.iloc[0]
    file = store.read_unit_rows(unit).file.iloc[0]
    shown = rebuild_image(str(tmp_path / "res"), unit, file)
    img = np.asarray(Image.open(Path(store.unit_or_empty(unit)["dataset_root"]) / file).convert("RGB"))
    assert shown.shape == (240, 240, 3) and not shown[:8].any() and not shown[:, -8:].any()
    np.testing.assert_array_equal(shown[8:232, 8:232], img)
    with pytest.raises(UserError, match="--released-input pad: --model mnist_lenet5_standard takes 28px"):
        R.part_pipeline(zoo.get_card("mnist_lenet5_standard"), rel, part, "pad")


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_layouts_are_refused_naming_the_path(rel_root, tmp_path):
    root = _copy(rel_root, tmp_path)
    shutil.rmtree(root / "contrast" / "4")
    with pytest.raises(UserError) as e:
        R.open_released(root)
    assert f"{root / 'contrast'} lacks severity 4" in _one_line(e)
    shutil.copytree(root / "contrast" / "3", root / "contrast" / "4")

    (root / "not_a_corruption").mkdir()
    with pytest.raises(UserError) as e:
        R.resolve(str(root), "imagenet-c")
    assert f"folder {root / 'not_a_corruption'} is no known corruption" in _one_line(e)
    (root / "not_a_corruption").rename(root / "sparkles")   # an ImageNet-C-bar name: a mixed root
    shutil.copytree(root / "contrast", root / "sparkles", dirs_exist_ok=True)
    with pytest.raises(UserError) as e:
        R.open_released(root)
    assert "mixes corruptions of imagenet-c" in _one_line(e) and "imagenet-c-bar" in str(e.value)
    shutil.rmtree(root / "sparkles")

    (root / "contrast" / "6").mkdir()
    with pytest.raises(UserError) as e:
        R.open_released(root)
    assert f"{root / 'contrast' / '6'} is no severity folder" in _one_line(e)
    (root / "contrast" / "6").rmdir()

    flat = root / "gaussian_noise" / "2"
    for f in list(flat.glob("*/*.JPEG")):
        f.rename(flat / f.name)
    with pytest.raises(UserError) as e:
        R.open_released(root)
    assert f"lies directly in {flat}; released images sit in {flat}/<wnid>/" in _one_line(e)
    for f in list(flat.glob("*.JPEG")):
        f.unlink()
    for d in list(flat.iterdir()):
        d.rmdir()
    with pytest.raises(UserError) as e:
        R.open_released(root)
    assert f"{flat}: no <wnid>/ sub-folders" in _one_line(e)
    (flat / "n99999999").mkdir()
    with pytest.raises(UserError) as e:
        R.open_released(root)
    assert f"{flat / 'n99999999'} is not an ImageNet wnid folder" in _one_line(e)


def test_missing_choices_and_misplaced_options(rel_root, clean, imagenet_sample, tmp_path, capsys):
    rc = main(["eval", "--model", "mobilenet_v2", "--data", str(rel_root), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--clean-data DIR" in err and "--clean-data none" in err
    with pytest.raises(UserError) as e:   # a flat labels.csv folder: its names cannot pair with <wnid>/<file>
        robustbench_sys.evaluate("mobilenet_v2", data=str(rel_root), clean_data=str(imagenet_sample),
                                 out=tmp_path / "r", **KW)
    assert "none of its files matches" in _one_line(e)
    with pytest.raises(UserError) as e:
        robustbench_sys.evaluate("mobilenet_v2", "resize", data=str(rel_root), clean_data="none", out=tmp_path / "r",
                                 **KW)
    assert "its corruptions are the conditions" in _one_line(e)
    with pytest.raises(UserError) as e:
        robustbench_sys.evaluate("mobilenet_v2", data=str(clean), clean_data="none", out=tmp_path / "r", **KW)
    assert "--clean-data: applies only to a released" in _one_line(e)
    with pytest.raises(UserError) as e:
        robustbench_sys.evaluate("mobilenet_v2", data=str(clean), data_format="imagenet-c-bar", out=tmp_path / "r",
                                 **KW)
    assert "is no known corruption" in _one_line(e) or "not one of the 10 imagenet-c-bar" in str(e.value)
