"""ImageNet-P: the metrics (worked examples, and a cross-check against the reference's own
formulation on full 1000-class rankings), the 10 perturbation sequences on a real image, and
generate -> eval -> summary -> results show end to end on two real sample images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import robustbench_sys
from robustbench_sys import generate as gen
from robustbench_sys.cli import main
from robustbench_sys.data import load_dataset
from robustbench_sys.metrics import perturbation as pm
from robustbench_sys.noises.natural import imagenet_p as ip
from robustbench_sys.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- metrics: worked examples
def test_flip_probability_worked_examples():
    # non-noise, difficulty 1: consecutive pairs.  [1,1,2,2,1]: pairs differ 0,1,0,1 -> 2/4;
    # [3,3,3]: 0/2; FP_p = mean over the two sequences
    assert pm.flip_probability([[1, 1, 2, 2, 1], [3, 3, 3]], noise=False) == pytest.approx((2 / 4 + 0 / 2) / 2)
    # difficulty 2: pairs (0,2) (1,3) (2,4): 1 vs 2, 1 vs 2, 2 vs 1 -> 3/3
    assert pm.flip_probability([[1, 1, 2, 2, 1]], noise=False, difficulty=2) == pytest.approx(3 / 3)
    # difficulty 3: pairs (0,3) (1,4): 1 vs 2, 1 vs 1 -> 1/2
    assert pm.flip_probability([[1, 1, 2, 2, 1]], noise=False, difficulty=3) == pytest.approx(1 / 2)
    # noise: every frame against the first: 5 vs 5,6,5,7 -> 2/4, whatever the difficulty
    for d in (1, 2, 3):
        assert pm.flip_probability([[5, 5, 6, 5, 7]], noise=True, difficulty=d) == pytest.approx(2 / 4)
    # a one-frame sequence has no pair and is left out of the mean
    assert pm.flip_probability([[4], [1, 2]], noise=False) == pytest.approx(1.0)
    assert np.isnan(pm.flip_probability([[4]], noise=False))
    with pytest.raises(ValueError, match="difficulty"):
        pm.flip_probability([[1, 2]], noise=False, difficulty=4)


def test_top5_distance_worked_examples():
    # a = [1,2,3,4,5]; their positions in b = [2,1,3,9,8]: 2, 1, 3, absent (6), absent (6)
    expected = abs(1 - 2) + abs(2 - 1) + abs(3 - 3) + abs(4 - 6) + abs(5 - 6)
    assert pm.top5_pair_distance([1, 2, 3, 4, 5], [2, 1, 3, 9, 8]) == expected
    assert pm.top5_pair_distance([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == 0
    # disjoint top-5: every rank capped at 6 -> 5 + 4 + 3 + 2 + 1
    assert pm.top5_pair_distance([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == 15
    seq = [[1, 2, 3, 4, 5], [2, 1, 3, 4, 5], [2, 1, 3, 4, 5]]
    # consecutive: d([1..5],[2,1,..]) = 2, d(same) = 0 -> 1; noise: both against frame 0 -> 2
    assert pm.top5_distance([seq], noise=False) == pytest.approx((2 + 0) / 2)
    assert pm.top5_distance([seq], noise=True) == pytest.approx((2 + 2) / 2)


def test_mfp_needs_a_baseline_and_normalises_by_it():
    fp = {p: 0.1 for p in pm.BENCHMARK_PERTURBATIONS}
    with pytest.raises(ValueError, match="AlexNet"):
        pm.mean_flip_probability(fp)
    with pytest.raises(ValueError, match="AlexNet"):
        pm.mean_top5_distance(fp)
    base = {p: 0.2 for p in pm.BENCHMARK_PERTURBATIONS}
    base["tilt"] = 0.05      # 9 ratios of 0.5 and one of 2
    assert pm.mean_flip_probability(fp, base) == pytest.approx((9 * 0.5 + 2.0) / 10)
    with pytest.raises(ValueError, match="snow"):
        pm.mean_flip_probability({k: v for k, v in fp.items() if k != "snow"}, base)


def _reference_style(logits: np.ndarray, noise: bool, d: int) -> tuple[float, float]:
    """The reference's formulation (ImageNet-P/test.py), written out independently: full ordinal
    rankings of all classes, the cumulative 'top-5' table, and per-start sub-sequences."""
    cum = np.cumsum(np.r_[0, np.ones(5), np.zeros(1000 - 6)])
    fps, t5s = [], []
    for vid in logits:
        ranks = [np.argsort(np.argsort(-frame, kind="stable"), kind="stable") + 1 for frame in vid]
        preds = [int(np.argmax(frame)) for frame in vid]
        step = 1 if noise else d
        flips, dists = [], []
        for i in range(step):
            prev_pred, prev_rank = preds[i], ranks[i]
            for j in range(i + step, len(vid), step):
                flips.append(int(prev_pred != preds[j]))
                sigma = ranks[j][np.argsort(prev_rank)]          # frame j's ranks of prev's classes, best first
                dists.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
                if not noise:
                    prev_pred, prev_rank = preds[j], ranks[j]
        fps.append(np.mean(flips))
        t5s.append(np.mean(dists))
    return float(np.mean(fps)), float(np.mean(t5s))


@pytest.mark.parametrize("noise,d", [(True, 1), (False, 1), (False, 2), (False, 3)])
def test_metrics_agree_with_the_reference_formulation(noise, d):
    rng = np.random.default_rng(7)
    # 6 sequences of 11 frames: a slowly drifting logit vector, so top-5 lists overlap partly
    base = rng.normal(size=(6, 1, 1000)) * 3
    logits = base + np.cumsum(rng.normal(size=(6, 11, 1000)) * 0.6, axis=1)
    top5 = [[list(np.argsort(-f, kind="stable")[:5]) for f in vid] for vid in logits]
    preds = [[t[0] for t in vid] for vid in top5]
    ref_fp, ref_t5 = _reference_style(logits, noise, d)
    assert 0 < ref_fp < 1 and ref_t5 > 0      # the example exercises both flips and rank changes
    assert pm.flip_probability(preds, noise=noise, difficulty=d) == pytest.approx(ref_fp)
    assert pm.top5_distance(top5, noise=noise, difficulty=d) == pytest.approx(ref_t5)


def test_sequences_from_rows_orders_frames_and_drops_errors():
    rows = pd.DataFrame({"file": ["b/01.png", "a/02.png", "a/00.png", "a/01.png", "b/00.png", "b/02.png"],
                         "pred": [7, 3, 1, 2, 7, 0], "top5": [[7, 1, 2, 3, 4]] * 6,
                         "status": ["ok", "ok", "ok", "ok", "ok", "error"]})
    seqs = pm.sequences_from_rows(rows)
    assert list(seqs) == ["a", "b"]
    assert seqs["a"][0] == [1, 2, 3] and seqs["b"][0] == [7, 7]
    with pytest.raises(ValueError, match="frame path"):
        pm.split_frame_file("flat.png")


# ------------------------------------------------------------------------------- the perturbations
@pytest.fixture(scope="module")
def resized(sample_jpegs) -> np.ndarray:
    """A real image after Resize(256) (PIL bilinear), not yet cropped."""
    im = Image.open(sample_jpegs[0]).convert("RGB")
    w, h = im.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    return np.asarray(im.resize(size, Image.Resampling.BILINEAR))


def _crop(img: np.ndarray, c: int = 224) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = int(round((h - c) / 2)), int(round((w - c) / 2))
    return img[top:top + c, left:left + c]


def _diff(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("name", ip.PERTURBATION_NAMES)
def test_perturbation_sequence(name, resized):
    p = ip.PERTURBATIONS[name]
    f = ip.sequence(resized, name, crop=224, seed=3)
    assert f.shape == (41 if name == "translate" else 31, 224, 224, 3) and f.shape[0] == p.frames
    assert f.dtype == np.uint8 and f.max() > 100
    np.testing.assert_array_equal(f, ip.sequence(resized, name, crop=224, seed=3))   # deterministic per seed
    crop = _crop(resized)
    if p.noise:
        np.testing.assert_array_equal(f[0], crop)              # frame 0: the clean image
        assert all(_diff(f[k], crop) > 1 for k in range(1, p.frames))
        assert _diff(f[1], f[2]) > 1                          # independent draws
        assert not np.array_equal(f, ip.sequence(resized, name, crop=224, seed=4))
        stronger = ip.sequence(resized, name, difficulty=3, crop=224, seed=3)
        assert _diff(stronger[1], crop) > _diff(f[1], crop)    # difficulty 3 is noisier
        return
    # temporally related frames: neighbours closer than the two ends of the sequence
    steps = [_diff(f[k], f[k + 1]) for k in range(p.frames - 1)]
    assert np.mean(steps) < _diff(f[0], f[-1])
    # the frame with the identity transform is the clean centre crop
    identity = {"zoom_blur": 0, "brightness": 15, "translate": 20, "rotate": 15, "scale": 24}
    if name in identity:
        assert _diff(f[identity[name]], crop) < 0.01
    if name == "translate":   # frame 40: shifted right by 20 px against frame 20
        np.testing.assert_array_equal(f[40][:, 20:], f[20][:, :-20])
    if name == "snow":
        assert not np.array_equal(f, ip.sequence(resized, name, crop=224, seed=4))


def test_geometric_perturbations_match_the_reference_warps(sample_jpegs):
    """translate / rotate / scale / zoom_blur against torchvision's ``affine`` on the PIL image and
    tilt against ``cv2.warpPerspective`` with the reference's homography, each then CenterCrop(224)
    (the reference generator's calls): every checked frame within 1 grey level on average (edge
    interpolation), far below the distance to the next frame (zoom_blur: to its last frame)."""
    import cv2
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    im = TF.resize(Image.open(sample_jpegs[1]).convert("RGB"), 256, interpolation=InterpolationMode.BILINEAR)
    arr = np.asarray(im)
    h, w = arr.shape[:2]

    def crop(pil):
        return np.asarray(TF.center_crop(pil, 224))

    def affine(k, **kw):
        args = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0], **kw}
        return crop(TF.affine(im, interpolation=InterpolationMode.BILINEAR, **args))

    def tilt(k):
        a, f = np.deg2rad(k - 15), np.hypot(w, h)
        p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
        rx = np.array([[1, 0, 0, 0], [0, np.cos(a), -np.sin(a), 0], [0, np.sin(a), np.cos(a), 0], [0, 0, 0, 1]])
        ry = np.array([[np.cos(a), 0, -np.sin(a), 0], [0, 1, 0, 0], [np.sin(a), 0, np.cos(a), 0], [0, 0, 0, 1]])
        t = np.eye(4)
        t[2, 3] = f
        p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
        return crop(Image.fromarray(cv2.warpPerspective(arr, p2 @ t @ rx @ ry @ p1, (w, h))))

    def zoom_blur(k):
        acc = sum(affine(j, scale=1 + 0.004 * j).astype(np.float64) for j in range(k + 1))
        return np.floor(acc / (k + 1)).astype(np.uint8)

    refs = {"translate": lambda k: crop(TF.affine(im, angle=0.0, translate=[k - 20, 0], scale=1.0, shear=[0.0])),
            "rotate": lambda k: affine(k, angle=float(k - 15)),
            "scale": lambda k: affine(k, scale=(k * 2.5 + 40) / 100),
            "tilt": tilt, "zoom_blur": zoom_blur}
    for name, ref in refs.items():
        f = ip.sequence(arr, name, crop=224)
        for k in (0, 7, len(f) - 1):
            assert _diff(f[k], ref(k)) < 1.0, (name, k)
        other = ref(30 if name == "zoom_blur" else 8)   # zoom_blur's running mean moves slowly
        assert _diff(f[7], ref(7)) < _diff(f[7], other) / 3, name


def test_perturbation_bad_inputs(resized):
    with pytest.raises(ValueError, match="unknown ImageNet-P perturbation"):
        ip.sequence(resized, "fog")
    with pytest.raises(ValueError, match="difficulty"):
        ip.sequence(resized, "rotate", difficulty=5)
    with pytest.raises(ValueError, match="uint8"):
        ip.sequence(resized.astype(np.float32), "rotate")


def test_generate_imagenet_p_bad_options(imagenet_sample, tmp_path, capsys):
    for opt, msg in ((["--perturbations", "fog"], "--perturbations fog: unknown; valid: gaussian_noise"),
                     (["--difficulties", "4"], "--difficulties 4: difficulties are 1, 2, 3")):
        rc = main(["generate", "imagenet-p", "--src", str(imagenet_sample), "--out", str(tmp_path / "o"), *opt])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- end to end
def test_generate_eval_summary_and_report(imagenet_sample, tmp_path, capsys):
    out = tmp_path / "p"
    argv = ["generate", "imagenet-p", "--src", str(imagenet_sample), "--out", str(out), "--limit", "2",
            "--perturbations", "gaussian_noise,rotate", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    assert "wrote 124 image(s)" in capsys.readouterr().out          # 2 images x 2 perturbations x 31 frames
    src = load_dataset(imagenet_sample).limit(2)
    rot = out / "rotate"
    meta = json.loads((rot / "dataset.json").read_text())
    assert meta["kind"] == "imagenet-p" and meta["complete"] and meta["n_images"] == 62
    assert meta["sequence"]["perturbation"] == "rotate" and meta["sequence"]["frames"] == 31
    with open(rot / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    stem = src.samples[0].file.rsplit(".", 1)[0]
    assert [r["file"] for r in labels[:31]] == [f"{stem}/{k:02d}.png" for k in range(31)]
    assert {r["source_file"] for r in labels} == {s.file for s in src.samples}
    # rotate's frame 15 (angle 0) is exactly the clean crop of the same pipeline
    clean = gen.base_pipeline().preprocess_crop(src.samples[0].path.read_bytes())
    assert _diff(np.asarray(Image.open(rot / stem / "15.png")), clean) < 0.01
    # resumable: a second run verifies every frame and writes none
    assert main(argv) == 0
    assert "wrote 0 image(s), kept 124 verified" in capsys.readouterr().out

    ds = load_dataset(rot)
    assert ds.kind == "generated:imagenet-p" and len(ds) == 62 and ds.preprocessed_size == 224
    res = tmp_path / "res"
    for variant in ("gaussian_noise", "rotate"):
        robustbench_sys.evaluate("mobilenet_v2", ["clean"], data=str(out / variant), out=res, progress=False,
                                 workers=0, batch_size=31, speed=False)
    summ = ResultsStore(res).summaries().set_index("dataset")
    per_image = ResultsStore(res).per_image()
    for variant, noise in (("gaussian_noise", True), ("rotate", False)):
        name = next(n for n in summ.index if n.endswith(f"-imagenet-p-{variant}"))
        rows = per_image[per_image.dataset == name]
        assert len(rows) == 62 and (rows.status == "ok").all()
        # FP / T5D recomputed from the stored rows, grouped by hand (not via sequences_from_rows)
        fps, t5s = [], []
        for seq in sorted({f.rsplit("/", 1)[0] for f in rows.file}):
            r = rows[rows.file.str.startswith(seq + "/")].sort_values("file")
            preds, top5 = r.pred.tolist(), [list(t) for t in r.top5]
            pairs = [(0, k) for k in range(1, 31)] if noise else [(k, k + 1) for k in range(30)]
            fps.append(np.mean([preds[a] != preds[b] for a, b in pairs]))
            t5s.append(np.mean([pm.top5_pair_distance(top5[a], top5[b]) for a, b in pairs]))
        assert summ.loc[name, "flip_prob"] == pytest.approx(np.mean(fps))
        assert summ.loc[name, "top5_dist"] == pytest.approx(np.mean(t5s))
        assert summ.loc[name, "dataset_kind"] == "generated:imagenet-p"

    capsys.readouterr()
    assert main(["results", "show", "--out", str(res), "--by", "imagenet-p"]) == 0
    shown = capsys.readouterr().out
    assert "gaussian_noise" in shown and "rotate" in shown and "mFP / mT5D not shown" in shown


# ------------------------------------------------------------------------------- released videos
def _write_video(path, frames) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 1, (frames.shape[2], frames.shape[1]))
    assert w.isOpened(), "OpenCV cannot write mp4v here"
    for f in frames:
        w.write(np.ascontiguousarray(f[..., ::-1]))
    w.release()


def test_released_videos_are_decoded_into_the_frame_layout(sample_jpegs, tmp_path, capsys):
    """Videos in the released layout (made here from real images with mp4v) -> frame folders that
    load as generated ImageNet-P variants; a broken video is reported and skipped; resumable."""
    root = tmp_path / "ImageNet-P"
    made = {}
    for jpeg in sample_jpegs[:2]:
        im = Image.open(jpeg).convert("RGB")
        im = np.asarray(im.resize((256 * im.width // min(im.size), 256 * im.height // min(im.size))))
        wnid, stem = jpeg.name.split("_", 1)[0], jpeg.stem
        for variant, name, d in (("rotate", "rotate", 1), ("gaussian_noise_2", "gaussian_noise", 2)):
            frames = ip.sequence(im, name, d, crop=224, seed=1)
            _write_video(root / variant / wnid / f"{stem}.mp4", frames)
            made[(variant, f"{wnid}/{stem}")] = frames
    (root / "rotate" / "n01440764" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "frames"
    argv = ["generate", "imagenet-p", "--src", str(root), "--out", str(out)]
    assert main(argv) == 0
    assert "decoded 124 frame(s), kept 0 verified, 1 video error(s)" in capsys.readouterr().out
    for (variant, seq), frames in made.items():
        stored = np.stack([np.asarray(Image.open(out / variant / seq / f"{k:02d}.png")) for k in range(31)])
        assert not (out / variant / seq / "31.png").exists()
        if variant == "rotate":   # lossy mp4v round trip, frame order kept: each frame nearest its original
            assert _diff(stored, frames) < 6
            assert all(np.argmin([_diff(stored[k], frames[j]) for j in range(0, 31, 3)]) == k // 3
                       for k in range(0, 31, 3))
        else:                     # noise frames compress worse; frame 0 is the clean image
            assert _diff(stored[0], frames[0]) < 6 and _diff(stored, frames) < 12
    ds = load_dataset(out / "gaussian_noise_2")
    assert ds.kind == "generated:imagenet-p" and len(ds) == 62 and ds.preprocessed_size == 224
    assert pm.variant_info(ds) == {"perturbation": "gaussian_noise", "difficulty": 2, "noise": True}
    assert {s.label for s in ds.samples} == {int(r["class_index"]) for r in
                                             csv.DictReader(open(out / "gaussian_noise_2" / "labels.csv"))}
    meta = json.loads((out / "rotate" / "dataset.json").read_text())
    assert [e["file"] for e in meta["skipped"]] == ["n01440764/broken.mp4"]
    assert main(argv) == 0
    assert "decoded 0 frame(s), kept 124 verified" in capsys.readouterr().out
