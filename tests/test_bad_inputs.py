"""Bad inputs, built at test time from real ImageNet JPEGs: labels.csv entries that leave the data
folder (``..``, absolute paths, symlinks), malformed labels.csv files, and images that cannot or
must not be decoded (16-bit PNG, empty / HTML files, over the pixel cap, float TIFF).

labels.csv problems stop the command with exit 2 and one line naming ``labels.csv:<line>`` (no
traceback, nothing written outside ``--out``); per-image problems are reported and skipped."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustbench_sys import generate as gen
from robustbench_sys import noises
from robustbench_sys.cli import main
from robustbench_sys.data import Dataset, Sample, load_dataset
from robustbench_sys.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
GEN = ["generate", "imagenet-s", "--decoders", "pil", "--resizes", "pil-bilinear", "--workers", "1", "--no-progress"]


def _snapshot(top: Path, skip: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if skip not in p.parents and p != skip}


def _write_labels(d: Path, rows, header=("file", "class_index"), prefix: bytes = b"") -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    (d / "labels.csv").write_bytes(prefix + buf.getvalue().encode())


@pytest.fixture
def world(tmp_path, sample_rows, imagenet_sample):
    """tmp/data (2 real JPEGs, a.JPEG + b.JPEG), tmp/secret/x.JPEG and tmp/trav_escape/x.JPEG
    outside it (real JPEGs too), and tmp/out for --out."""
    data = tmp_path / "data"
    data.mkdir()
    for name, r in zip(("a.JPEG", "b.JPEG"), sample_rows[:2]):
        shutil.copy(imagenet_sample / r["file"], data / name)
    for sub in ("secret", "trav_escape"):
        (tmp_path / sub).mkdir()
        shutil.copy(imagenet_sample / sample_rows[2]["file"], tmp_path / sub / "x.JPEG")
    return tmp_path


def _run_refused(argv, world, capsys, *needles):
    """exit 2, one error line on stderr containing the needles, no traceback, nothing new outside --out."""
    out = world / "out"
    before = _snapshot(world, out)
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2, cap.err
    # the one error line (generate prints its plan line "generate imagenet-s: ..." first)
    lines = [ln for ln in cap.err.splitlines() if ln.strip() and not ln.startswith("generate imagenet-")]
    assert len(lines) == 1 and lines[0].startswith("robustbench-sys: error: "), cap.err
    assert "Traceback" not in cap.err + cap.out
    for n in needles:
        assert n in lines[0], lines[0]
    assert _snapshot(world, out) == before
    return lines[0]


# ---------------------------------------------------------------------- labels.csv: exit 2
ESCAPES = [
    ("traversal-etc-passwd", "../../../../etc/passwd", "outside the data folder"),
    ("absolute-etc-passwd", "/etc/passwd", "absolute path"),
    ("traversal-secret", "../secret/x.JPEG", "outside the data folder"),
    ("traversal-trav-escape", "../../trav_escape/x.JPEG", "outside the data folder"),
    ("traversal-to-sibling", "../trav_escape/x.JPEG", "outside the data folder"),
]


@pytest.mark.parametrize("cmd", ["eval", "generate-s", "generate-c"])
@pytest.mark.parametrize("name,entry,needle", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_labels_csv_path_escapes_are_refused(world, capsys, cmd, name, entry, needle):
    data = world / "data"
    _write_labels(data, [("a.JPEG", 0), (entry, 1)])
    out = world / "out"
    argv = {"eval": ["eval", "--model", "mobilenet_v2", "--data", str(data), "--out", str(out), "--no-progress",
                     "--workers", "0"],
            "generate-s": GEN + ["--src", str(data), "--out", str(out)],
            "generate-c": ["generate", "imagenet-c", "--src", str(data), "--out", str(out), "--corruptions",
                           "gaussian_noise", "--severities", "1", "--workers", "1", "--no-progress"]}[cmd]
    _run_refused(argv, world, capsys, "labels.csv:3", needle, repr(entry))
    assert not list(world.rglob("*.png"))


def test_symlink_to_outside_file_is_refused(world, capsys):
    data = world / "data"
    (data / "link.JPEG").symlink_to(world / "secret" / "x.JPEG")
    _write_labels(data, [("a.JPEG", 0), ("link.JPEG", 1)])
    _run_refused(GEN + ["--src", str(data), "--out", str(world / "out")], world, capsys,
                 "labels.csv:3", "outside the data folder", str((world / "secret" / "x.JPEG").resolve()))


def test_symlinked_folder_leading_out_is_refused(world, capsys):
    data = world / "data"
    (data / "sub").symlink_to(world / "secret", target_is_directory=True)
    _write_labels(data, [("a.JPEG", 0), ("sub/x.JPEG", 1)])
    _run_refused(GEN + ["--src", str(data), "--out", str(world / "out")], world, capsys,
                 "labels.csv:3", "outside the data folder")


def test_symlink_in_wnid_folder_layout_is_refused(world, capsys):
    data = world / "wnids"
    (data / "n01440764").mkdir(parents=True)
    shutil.copy(world / "data" / "a.JPEG", data / "n01440764" / "a.JPEG")
    (data / "n01440764" / "b.JPEG").symlink_to(world / "secret" / "x.JPEG")
    _run_refused(GEN + ["--src", str(data), "--out", str(world / "out")], world, capsys,
                 "n01440764/b.JPEG", "outside the data folder")


def test_symlink_inside_the_root_is_fine(world):
    data = world / "data"
    (data / "alias.JPEG").symlink_to(data / "a.JPEG")
    _write_labels(data, [("alias.JPEG", 0), ("b.JPEG", 1)])
    assert [s.file for s in load_dataset(data).samples] == ["alias.JPEG", "b.JPEG"]


BAD_CSV = [
    ("duplicate-same-label", [("a.JPEG", 0), ("b.JPEG", 1), ("a.JPEG", 0)], None,
     ["labels.csv:4", "'a.JPEG'", "line 2", "same label 0", "list each image once"]),
    ("duplicate-conflicting-labels", [("a.JPEG", 0), ("a.JPEG", 5)], None,
     ["labels.csv:3", "labels conflict: 0 there, 5 here"]),
    ("duplicate-via-dot-path", [("a.JPEG", 0), ("./a.JPEG", 0)], None, ["labels.csv:3", "same file as line 2"]),
    ("empty-file-cell", [("a.JPEG", 0), ("", 3)], None, ["labels.csv:3", "empty 'file' cell"]),
    ("empty-label-cell", [("a.JPEG", 0), ("b.JPEG", "")], None, ["labels.csv:3", "empty class_index", "'b.JPEG'"]),
    ("missing-files", [("a.JPEG", 0), ("gone1.JPEG", 1), ("gone2.JPEG", 2), ("gone3.JPEG", 3)], None,
     ["3 listed file(s) not found", "'gone1.JPEG' (line 3)"]),
    ("non-integer-label", [("a.JPEG", "five")], None, ["labels.csv:2", "bad label 'five'", "integer 0..999"]),
    ("float-label", [("a.JPEG", "5.0")], None, ["labels.csv:2", "bad label '5.0'"]),
    ("label-1000", [("a.JPEG", 1000)], None, ["labels.csv:2", "class_index 1000 outside 0..999"]),
    ("negative-label", [("a.JPEG", -1)], None, ["labels.csv:2", "class_index -1 outside 0..999"]),
    ("unknown-wnid", [("a.JPEG", "n99999999")], ("file", "wnid"), ["labels.csv:2", "bad label 'n99999999'"]),
    ("extra-cells", [("a.JPEG", 0, "oops")], None, ["labels.csv:2", "3 cells but the header has 2"]),
    ("wrong-header", [("a.JPEG", 0)], ("name", "label"), ["needs columns 'file'"]),
]


@pytest.mark.parametrize("name,rows,header,needles", BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_labels_csv_exit_2_one_line(world, capsys, name, rows, header, needles):
    data = world / "data"
    _write_labels(data, rows, header or ("file", "class_index"))
    _run_refused(GEN + ["--src", str(data), "--out", str(world / "out")], world, capsys, *needles)


def test_non_utf8_labels_csv(world, capsys):
    data = world / "data"
    (data / "labels.csv").write_bytes("file,class_index\nä.JPEG,1\n".encode("latin-1"))
    _run_refused(GEN + ["--src", str(data), "--out", str(world / "out")], world, capsys, "not UTF-8")


def test_utf8_bom_header_is_accepted(world, capsys):
    data = world / "data"
    _write_labels(data, [("a.JPEG", 0), ("b.JPEG", 1)], prefix="\ufeff".encode())
    ds = load_dataset(data)
    assert [(s.file, s.label) for s in ds.samples] == [("a.JPEG", 0), ("b.JPEG", 1)]
    assert main(GEN + ["--src", str(data), "--out", str(world / "out")]) == 0
    assert sorted(p.name for p in (world / "out" / "pil__pil-bilinear").glob("*.png")) == ["a.png", "b.png"]


# ---------------------------------------------------------------------- generate: outputs stay in --out
def test_generate_api_refuses_outputs_outside_out(world):
    """A hand-made Dataset (no labels.csv check) whose file leads out of --out: refused, nothing written."""
    data = world / "data"
    ds = Dataset("x", data, (Sample("a.JPEG", data / "a.JPEG", 0),
                             Sample("../../trav_escape/y.JPEG", world / "trav_escape" / "x.JPEG", 1)))
    variants = gen.imagenet_s_variants(gen.base_pipeline(), ["pil"], ["pil-bilinear"])
    before = _snapshot(world, world / "out")
    with pytest.raises(UserError, match=r"'\.\./\.\./trav_escape/y\.JPEG' would be written to .*outside --out"):
        gen.generate(ds, variants, world / "out", kind="imagenet-s", workers=1, progress=False)
    assert _snapshot(world, world / "out") == before and not (world / "out").exists()


def test_generate_refuses_variant_folder_symlinked_out(world, capsys):
    data = world / "data"
    _write_labels(data, [("a.JPEG", 0)])
    (world / "out").mkdir()
    (world / "elsewhere").mkdir()
    (world / "out" / "pil__pil-bilinear").symlink_to(world / "elsewhere", target_is_directory=True)
    _run_refused(GEN + ["--src", str(data), "--out", str(world / "out")], world, capsys,
                 "--out", "outside it")
    assert not list((world / "elsewhere").iterdir())


# ---------------------------------------------------------------------- per image: reported and skipped
def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header says w x h (8-bit grey) followed by a tiny IDAT: cheap to build, and
    a decoder that reads the pixels would need w*h bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _sixteen_bit_png(path: Path, src: Path) -> np.ndarray:
    grey = np.asarray(Image.open(src).convert("L")).astype(np.uint16) * 257 + 128   # high byte = grey
    Image.fromarray(grey).save(path, "PNG")
    return grey


def _float_tiff(path: Path, src: Path) -> None:
    Image.fromarray(np.asarray(Image.open(src).convert("L")).astype(np.float32)).save(path, "TIFF")


PER_IMAGE = [
    ("zero-byte", lambda p, src: p.write_bytes(b""), "empty file (0 bytes)"),
    ("html-page", lambda p, src: p.write_bytes(b"<!DOCTYPE html><html><body>403 Forbidden</body></html>"),
     "HTML"),
    ("over-pixel-cap-header", lambda p, src: p.write_bytes(_png_header_only(12000, 12000)),
     "12000x12000 = 144,000,000 pixels, above the cap of 64,000,000"),
    ("float-tiff", _float_tiff, "32-bit float image (mode F)"),
]


@pytest.mark.parametrize("name,make,needle", PER_IMAGE, ids=[c[0] for c in PER_IMAGE])
def test_bad_image_is_reported_and_skipped(world, capsys, name, make, needle):
    data = world / "data"
    make(data / "bad.JPEG", data / "a.JPEG")
    _write_labels(data, [("a.JPEG", 0), ("bad.JPEG", 1)])
    before = _snapshot(world, world / "out")
    assert main(GEN + ["--src", str(data), "--out", str(world / "out")]) == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "BytesIO" not in cap.err
    line = next(ln for ln in cap.err.splitlines() if "bad.JPEG" in ln)
    assert needle in line, cap.err
    vdir = world / "out" / "pil__pil-bilinear"
    meta = json.loads((vdir / "dataset.json").read_text())
    assert [e["file"] for e in meta["skipped"]] == ["bad.JPEG"] and needle in meta["skipped"][0]["reason"]
    assert [s.file for s in load_dataset(vdir).samples] == ["a.png"]
    assert _snapshot(world, world / "out") == before


def test_pixel_cap_from_env(world, monkeypatch):
    data = (world / "data" / "a.JPEG").read_bytes()
    w, h = Image.open(io.BytesIO(data)).size
    pil = noises.get("decoder/pil")
    monkeypatch.setenv("ROBUSTBENCH_SYS_MAX_PIXELS", str(w * h - 1))
    with pytest.raises(OSError, match=f"{w}x{h} .* above the cap of {w * h - 1:,}"):
        pil(data)
    with pytest.raises(OSError, match="above the cap"):
        noises.get("decoder/opencv")(data)
    monkeypatch.setenv("ROBUSTBENCH_SYS_MAX_PIXELS", str(w * h))
    assert pil(data).shape == (h, w, 3)
    monkeypatch.setenv("ROBUSTBENCH_SYS_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="ROBUSTBENCH_SYS_MAX_PIXELS='lots': not an integer"):
        pil(data)


@pytest.mark.parametrize("key", ["decoder/pil", "decoder/pil-draft"])
def test_16bit_png_decodes_by_high_byte(world, key):
    grey16 = _sixteen_bit_png(world / "g16.png", world / "data" / "a.JPEG")
    assert Image.open(world / "g16.png").mode.startswith("I")
    rgb = noises.get(key)((world / "g16.png").read_bytes())
    expect = (grey16 >> 8).astype(np.uint8)
    assert rgb.dtype == np.uint8 and rgb.shape == (*grey16.shape, 3)
    np.testing.assert_array_equal(rgb, np.repeat(expect[..., None], 3, axis=2))
    assert rgb.min() < 200   # not the all-white image of convert('RGB')


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"),
                                      ("PNG", "L")])
def test_8bit_images_decode_exactly_as_convert_rgb(world, fmt, mode):
    buf = io.BytesIO()
    Image.open(world / "data" / "a.JPEG").convert(mode).save(buf, fmt)
    data = buf.getvalue()
    expect = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(noises.get("decoder/pil")(data), expect)


def test_eval_reports_and_skips_bad_images(world, capsys):
    """eval: empty / HTML / over-cap files are skipped with file + cause; a 16-bit PNG is scored."""
    data = world / "data"
    (data / "empty.JPEG").write_bytes(b"")
    (data / "page.JPEG").write_bytes(b"<html><body>not found</body></html>")
    (data / "huge.png").write_bytes(_png_header_only(12000, 12000))
    _sixteen_bit_png(data / "g16.png", data / "a.JPEG")
    _write_labels(data, [("a.JPEG", 0), ("b.JPEG", 1), ("empty.JPEG", 2), ("page.JPEG", 3), ("huge.png", 4),
                         ("g16.png", 5)])
    out = world / "out"
    before = _snapshot(world, out)
    rc = main(["eval", "--model", "mobilenet_v2", "--suite", "clean", "--data", str(data), "--out", str(out),
               "--no-progress", "--workers", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Traceback" not in cap.err and "BytesIO" not in cap.err
    for f, cause in [("empty.JPEG", "empty file"), ("page.JPEG", "HTML"), ("huge.png", "above the cap")]:
        assert any(f in ln and cause in ln for ln in cap.err.splitlines()), (f, cap.err)
    from robustbench_sys.results.store import ResultsStore

    per = ResultsStore(out).per_image().set_index("file")
    assert per.loc["g16.png", "status"] == "ok"
    assert all(per.loc[f, "status"].startswith("error: ") for f in ("empty.JPEG", "page.JPEG", "huge.png"))
    assert _snapshot(world, out) == before


# ---------------------------------------------------------------------- a damaged store: quarantined, recomputed
EVAL4 = ["eval", "--model", "mobilenet_v2", "--suite", "clean,resize", "--limit", "4", "--batch-size", "2",
         "--no-progress", "--workers", "0"]
STATS = ("n_images", "n_errors", "n_paired", "top1", "top1_ci_low", "top1_ci_high", "delta_acc", "delta_ci_low",
         "delta_ci_high", "n_lost", "n_gained", "flip_rate")


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory, imagenet_sample):
    """One undamaged eval (mobilenet_v2, clean + the resize family, 4 real images) to compare with."""
    out = tmp_path_factory.mktemp("clean-store") / "out"
    assert main(EVAL4 + ["--data", str(imagenet_sample), "--out", str(out)]) == 0
    return out


def _stats(out: Path):
    from robustbench_sys.results.store import ResultsStore

    df = ResultsStore(out).summaries().set_index("condition").sort_index()
    return df[list(STATS)].astype(float).round(12).to_dict("index")


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage(out: Path, how: str) -> str:
    """Damage the store the way a kill / full disk / bad copy does; returns what the warning names."""
    summaries = sorted((out / "summaries").glob("*.parquet"))
    parts = sorted((out / "per_image").glob("*/[!.]*.parquet"))   # a finished unit: its compacted file
    if how == "truncated-summary":
        _truncate(summaries[1])
        return summaries[1].name
    if how == "truncated-part":
        _truncate(parts[0])
        return parts[0].name
    if how == "garbage-part":
        parts[-1].write_bytes(b"PAR1 this is not parquet PAR1")
        return parts[-1].name
    if how == "empty-summary":
        summaries[0].write_bytes(b"")
        return summaries[0].name
    if how == "leftover-temp-summary":   # a kill between write and rename leaves a complete temporary copy
        shutil.copy(summaries[0], out / "summaries" / f".{summaries[0].stem}.tmp-123-abcdef.parquet")
        return ""
    if how == "leftover-temp-part":
        shutil.copy(parts[0], parts[0].parent / f".{parts[0].stem}.tmp-123-abcdef.parquet")
        return ""
    raise AssertionError(how)


DAMAGE = ["truncated-summary", "truncated-part", "garbage-part", "empty-summary", "leftover-temp-summary",
          "leftover-temp-part"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_store_is_quarantined_and_recomputed(clean_store, imagenet_sample, tmp_path, capsys, how):
    """The rerun of the same command exits 0, names the damaged file, moves it to quarantine/ and
    recomputes its work: every summary statistic equals the undamaged run's; a temporary file is
    never read (no row counted twice)."""
    out = tmp_path / "out"
    shutil.copytree(clean_store, out)
    named = _damage(out, how)
    capsys.readouterr()
    # readers before the rerun: no traceback, the damage named, nothing counted twice
    assert main(["results", "show", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    if named and "summary" in how:
        assert named in cap.err
    assert main(EVAL4 + ["--data", str(imagenet_sample), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    if named:
        assert any(named in ln and "quarantine" in ln for ln in cap.err.splitlines()), cap.err
        assert [p.name.startswith(named) for p in (out / "quarantine").rglob("*") if p.is_file()] == [True]
    assert _stats(out) == _stats(clean_store)
    from robustbench_sys.results.store import ResultsStore

    assert not ResultsStore(out).per_image().duplicated(["unit_id", "file"]).any()
    assert [p for p in ResultsStore(out).verify() if "temporary file" not in p] == []


# ---------------------------------------------------------------------- results show on stores without the rows
@pytest.mark.parametrize("by", ["condition", "family", "matrix", "imagenet-s", "natural", "adversarial", "audit"])
@pytest.mark.parametrize("store", ["empty-folder", "clean-only"])
def test_results_show_without_those_rows(clean_store, tmp_path, capsys, by, store):
    out = clean_store if store == "clean-only" else tmp_path / "empty"
    out.mkdir(exist_ok=True)
    capsys.readouterr()
    assert main(["results", "show", "--out", str(out), "--by", by]) == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out and cap.err == ""
    if by in ("imagenet-s", "natural", "adversarial"):
        assert f"(no {by} results in this store: run 'robustbench-sys eval" in cap.out


# ---------------------------------------------------------------------- generate: --out inside --src, killed parent
def _wnid_src(world) -> Path:
    src = world / "wnid-src"
    for wnid, name in (("n01440764", "a.JPEG"), ("n01443537", "b.JPEG")):
        (src / wnid).mkdir(parents=True)
        shutil.copy(world / "data" / name, src / wnid / name)
    return src


def test_generate_out_inside_wnid_src_resumes(world, capsys):
    src = _wnid_src(world)
    argv = GEN + ["--src", str(src), "--out", str(src / "generated")]
    assert main(argv) == 0
    assert main(argv) == 0      # the resume does not take its own outputs for source data
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "2 output(s) verified by sha256 and kept; 0 to write" in cap.err
    assert sorted(s.file for s in load_dataset(src / "generated" / "pil__pil-bilinear").samples) == \
        ["n01440764/a.png", "n01443537/b.png"]
    assert len(load_dataset(src, exclude=src / "generated")) == 2


def test_generate_out_equal_to_src_is_refused(world, capsys):
    src = _wnid_src(world)
    _run_refused(GEN + ["--src", str(src), "--out", str(src)], world, capsys, "--out", "the same folder as --src")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the pool workers")
def test_generate_workers_die_with_a_killed_parent(world, imagenet_sample):
    """SIGKILL the generate command while its 2 pool workers corrupt images: both workers end
    within seconds (nothing keeps writing into --out)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "robustbench_sys.cli", "generate", "imagenet-c", "--src", str(imagenet_sample),
           "--out", str(world / "out"), "--corruptions", "glass_blur", "--severities", "5", "--workers", "2",
           "--limit", "200", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline, kids = time.time() + 120, []
        while time.time() < deadline and len(kids) < 2:
            time.sleep(0.5)
            kids = [k for k in _children(proc.pid) if _alive(k)]
        assert len(kids) >= 2, "the pool workers did not start"
        while not list((world / "out").rglob("*.JPEG")) and time.time() < deadline:
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone = time.time() + 20
        while any(_alive(k) for k in kids) and time.time() < gone:
            time.sleep(0.2)
        assert not any(_alive(k) for k in kids), [k for k in kids if _alive(k)]
    finally:
        for k in _children(proc.pid):
            os.kill(k, signal.SIGKILL)
