"""Generated data-set variants (``robustbench-sys generate``) on real ImageNet JPEGs: evaluating a
generated ImageNet-S / ImageNet-C variant gives exactly the predictions of the same stages applied
on the fly; resume, manifest, unreadable sources, and the size check of ``eval --data``."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import robustbench_sys
from robustbench_sys import generate as gen
from robustbench_sys.cli import main
from robustbench_sys.data import Dataset, load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")
N = 8


@pytest.fixture(scope="module")
def src(imagenet_sample):
    return load_dataset(imagenet_sample).limit(N)


def _suite(tmp_path: Path, name: str, **overrides) -> str:
    body = "\n".join(f'{k} = "{v}"' for k, v in overrides.items())
    path = tmp_path / f"onfly-{name}.toml"
    path.write_text(f'name = "onfly-{name}"\nfamily = "onfly"\nversion = 1\n\n'
                    f'[[conditions]]\nname = "{name}"\n{body}\n')
    return str(path)


def _rows(out: Path, condition: str):
    rows = ResultsStore(out).per_image()
    return rows[rows.condition == condition].set_index("file").sort_index()


def _by_source(variant_dir: Path, rows):
    """Per-image rows of a generated variant, re-keyed by the source file they came from."""
    with open(variant_dir / "labels.csv", newline="") as f:
        to_src = {r["file"]: r["source_file"] for r in csv.DictReader(f)}
    return rows.rename(index=to_src).sort_index()


def _assert_same_predictions(gen_rows, fly_rows):
    assert len(gen_rows) == len(fly_rows) == N
    assert list(gen_rows.index) == list(fly_rows.index)
    assert (gen_rows.status == "ok").all() and (fly_rows.status == "ok").all()
    assert gen_rows.pred.tolist() == fly_rows.pred.tolist()
    assert [list(t) for t in gen_rows.top5] == [list(t) for t in fly_rows.top5]
    np.testing.assert_allclose(np.stack(gen_rows.top5_prob.to_numpy()), np.stack(fly_rows.top5_prob.to_numpy()),
                               rtol=1e-5, atol=1e-7)


def _assert_manifest_matches(vdir: Path, n: int):
    with open(vdir / gen.MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    for r in rows:
        assert hashlib.sha256((vdir / r["file"]).read_bytes()).hexdigest() == r["sha256"]
        assert json.loads(r["versions"])["Pillow"]
    assert not (vdir / gen.PARTS_DIR).exists()
    return rows


def test_imagenet_s_variant_equals_on_the_fly(src, tmp_path):
    """(a) + (d): eval of a generated decoder x resize variant == the same stages on the fly."""
    base = gen.base_pipeline(card="mobilenet_v2")
    variants = gen.imagenet_s_variants(base, ["opencv", "pil"], ["cv2-area"])
    assert [v.name for v in variants] == ["opencv__cv2-area", "pil__cv2-area"]
    rep = gen.generate(src, variants, tmp_path / "s", kind="imagenet-s", workers=1, progress=False)
    assert (rep.written, rep.verified, rep.errors) == (2 * N, 0, [])

    vdir = tmp_path / "s" / "opencv__cv2-area"
    rows = _assert_manifest_matches(vdir, N)
    assert {(r["decoder"], r["resize"], r["input_size"], r["kind"]) for r in rows} == \
        {("opencv", "cv2-area", "224", "imagenet-s")}
    assert sorted(r["source_file"] for r in rows) == sorted(s.file for s in src.samples)
    meta = json.loads((vdir / "dataset.json").read_text())
    assert meta["kind"] == "imagenet-s" and meta["complete"] and meta["input_size"] == 224
    assert meta["pipeline"]["decoder"] == "decoder/opencv" and meta["generator_version"] == gen.GENERATOR_VERSION
    # the stored crop is exactly the pipeline's uint8 crop
    s0 = src.samples[0]
    crop = variants[0].pipeline.preprocess_crop(s0.path.read_bytes())
    np.testing.assert_array_equal(np.asarray(Image.open(vdir / Path(s0.file).with_suffix(".png"))), crop)

    ds = load_dataset(vdir)
    assert ds.preprocessed_size == 224 and len(ds) == N
    kw = dict(progress=False, workers=0, batch_size=N)
    robustbench_sys.evaluate("mobilenet_v2", ["clean"], data=str(vdir), out=tmp_path / "res-gen", **kw)
    robustbench_sys.evaluate("mobilenet_v2", [_suite(tmp_path, "oc", decoder="opencv", resize="cv2-area")],
                             data=src, out=tmp_path / "res-fly", **kw)
    _assert_same_predictions(_by_source(vdir, _rows(tmp_path / "res-gen", "clean")),
                             _rows(tmp_path / "res-fly", "onfly/oc"))
    # a decoder / resize condition on already-cropped data is skipped, not applied twice
    df = robustbench_sys.evaluate("mobilenet_v2", ["clean", _suite(tmp_path, "rz", resize="cv2-cubic")],
                                  data=str(vdir), out=tmp_path / "res-gen", **kw)
    assert list(df.condition) == ["clean"]
    assert "generated variant" in df.attrs["skipped"][0]["reason"]


def test_imagenet_c_lossless_equals_on_the_fly(src, imagenet_sample, tmp_path, capsys):
    """(b): the CLI's lossless ImageNet-C variant == ``corrupt=`` on the fly (random corruption:
    the per-image draw is derived from the source bytes in both)."""
    out = tmp_path / "c"
    rc = main(["generate", "imagenet-c", "--src", str(imagenet_sample), "--out", str(out), "--limit", str(N),
               "--corruptions", "gaussian_noise", "--severities", "3", "--lossless", "--workers", "2",
               "--no-progress"])
    assert rc == 0
    assert f"wrote {N} image(s)" in capsys.readouterr().out
    vdir = out / "gaussian_noise" / "3"
    rows = _assert_manifest_matches(vdir, N)
    assert {(r["corruption"], r["severity"], r["format"]) for r in rows} == {("gaussian_noise", "3", "png")}
    kw = dict(progress=False, workers=0, batch_size=N)
    robustbench_sys.evaluate("mobilenet_v2", ["clean"], data=str(vdir), out=tmp_path / "res-gen", **kw)
    robustbench_sys.evaluate("mobilenet_v2", [_suite(tmp_path, "gn3", corrupt="gaussian_noise-3")],
                             data=src, out=tmp_path / "res-fly", **kw)
    _assert_same_predictions(_by_source(vdir, _rows(tmp_path / "res-gen", "clean")),
                             _rows(tmp_path / "res-fly", "onfly/gn3"))


def test_imagenet_c_default_is_jpeg_q85(src, tmp_path):
    """Default output = ImageNet-C's release: the corrupted crop saved as a quality-85 JPEG."""
    from robustbench_sys.noises.natural import jpeg_imagenet_c

    two = src.limit(2)
    base = gen.base_pipeline()
    variants = gen.imagenet_c_variants(base, ["contrast"], [2])
    gen.generate(two, variants, tmp_path / "c", kind="imagenet-c", fmt=gen.OutputFormat("jpeg", 85), workers=1,
                 progress=False)
    s0 = two.samples[0]
    jpg = tmp_path / "c" / "contrast" / "2" / Path(s0.file).with_suffix(".JPEG")
    crop = variants[0].pipeline.preprocess_crop(s0.path.read_bytes())
    np.testing.assert_array_equal(np.asarray(Image.open(jpg).convert("RGB")), jpeg_imagenet_c(crop))
    assert len(load_dataset(tmp_path / "c" / "contrast" / "2")) == 2


def test_resume_skips_verified_and_rewrites_damaged(src, tmp_path):
    """(c): a second run keeps outputs whose sha256 matches, rewrites a corrupted and a deleted one."""
    four = src.limit(4)
    variants = gen.imagenet_s_variants(gen.base_pipeline(), ["pil"], ["pil-bicubic"])
    out = tmp_path / "s"
    first = gen.generate(four, variants, out, kind="imagenet-s", workers=2, progress=False)
    assert (first.written, first.verified) == (4, 0)
    vdir = out / "pil__pil-bicubic"
    files = sorted(vdir.glob("*.png"))
    original = {p.name: p.read_bytes() for p in files}
    files[0].write_bytes(original[files[0].name][:100])   # damaged
    files[1].unlink()                                     # lost
    untouched = files[2].stat().st_mtime_ns
    second = gen.generate(four, variants, out, kind="imagenet-s", workers=2, progress=False)
    assert (second.written, second.verified, second.errors) == (2, 2, [])
    assert {p.name: p.read_bytes() for p in sorted(vdir.glob("*.png"))} == original   # deterministic rewrite
    assert files[2].stat().st_mtime_ns == untouched
    _assert_manifest_matches(vdir, 4)
    # a killed run leaves part files (no manifest.csv yet), the last one maybe with a torn row:
    # complete rows are read, the torn one ignored, and only its image is written again
    complete = sorted(gen.read_manifest(vdir))
    lines = (vdir / gen.MANIFEST).read_bytes().splitlines(True)
    (vdir / gen.MANIFEST).unlink()
    parts = vdir / gen.PARTS_DIR
    parts.mkdir()
    (parts / "part-a.csv").write_bytes(lines[0] + lines[1] + lines[2])
    (parts / "part-b.csv").write_bytes(lines[0] + lines[3] + lines[4][:40])
    assert sorted(gen.read_manifest(vdir)) == complete[:3]
    third = gen.generate(four, variants, out, kind="imagenet-s", workers=1, progress=False)
    assert (third.written, third.verified) == (1, 3)
    _assert_manifest_matches(vdir, 4)
    # a different pipeline into the same folder is refused
    other = gen.imagenet_s_variants(gen.base_pipeline(size=192), ["pil"], ["pil-bicubic"])
    with pytest.raises(UserError, match="another pipeline"):
        gen.generate(four, other, out, kind="imagenet-s", workers=1, progress=False)


def test_truncated_source_is_reported_and_skipped(src, tmp_path, capsys):
    """(e): a truncated JPEG in --src is reported (file + reason) and skipped; the rest is written."""
    d = tmp_path / "src"
    d.mkdir()
    picked = src.samples[:3]
    for s in picked:
        shutil.copy(s.path, d / s.file)
    data = picked[0].path.read_bytes()
    (d / "truncated.JPEG").write_bytes(data[: len(data) // 3])
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class_index"])
        w.writerows([(s.file, s.label) for s in picked] + [("truncated.JPEG", picked[0].label)])
    rc = main(["generate", "imagenet-s", "--src", str(d), "--out", str(tmp_path / "s"), "--decoders", "pil",
               "--resizes", "pil-bilinear", "--workers", "1", "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "truncated.JPEG" in err and "OSError" in err
    vdir = tmp_path / "s" / "pil__pil-bilinear"
    meta = json.loads((vdir / "dataset.json").read_text())
    assert [e["file"] for e in meta["skipped"]] == ["truncated.JPEG"] and meta["skipped"][0]["reason"]
    assert meta["n_images"] == 3 and not (vdir / "truncated.png").exists()
    assert sorted(s.file for s in load_dataset(vdir).samples) == sorted(Path(s.file).stem + ".png" for s in picked)


def test_size_mismatch_and_bad_data_dirs(src, tmp_path, capsys):
    """(f): a 224-px variant refused for tf_efficientnet_lite2 (260 px), naming both sizes and the fix;
    an output root or an unfinished variant given as --data are refused with what to do."""
    variants = gen.imagenet_s_variants(gen.base_pipeline(), ["pil"], ["pil-bilinear"])
    gen.generate(src.limit(2), variants, tmp_path / "s", kind="imagenet-s", workers=1, progress=False)
    vdir = tmp_path / "s" / "pil__pil-bilinear"
    with pytest.raises(UserError) as e:
        robustbench_sys.evaluate("tf_efficientnet_lite2", ["clean"], data=str(vdir), out=tmp_path / "r",
                                 progress=False, workers=0)
    msg = str(e.value)
    assert "224px" in msg and "260px" in msg and str(vdir) in msg and "--model tf_efficientnet_lite2" in msg
    assert main(["eval", "--model", "tf_efficientnet_lite2", "--data", str(vdir), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "260px" in capsys.readouterr().err
    with pytest.raises(UserError, match="one variant folder"):
        load_dataset(tmp_path / "s")
    meta = json.loads((vdir / "dataset.json").read_text())
    (vdir / "dataset.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(UserError, match="did not finish"):
        load_dataset(vdir)
    # the reference pipeline of a generated variant: PIL decode, no resize, the card's own mean/std
    from robustbench_sys import zoo
    from robustbench_sys.eval.plan import reference_pipeline

    card = zoo.get_card("tf_efficientnet_lite0")
    ref = reference_pipeline(card, Dataset(src.name, src.root, src.samples, preprocessed_size=224))
    assert (ref.decoder, ref.resize, ref.mean) == ("decoder/pil", "none", Pipeline.from_card(card).mean)
