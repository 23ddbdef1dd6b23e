"""End to end on real images: CLI, store contents, provenance, bad input, resume after a kill."""

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import robustbench_sys
from robustbench_sys import noises
from robustbench_sys.cli import main
from robustbench_sys.results.store import ResultsStore

CLI = [sys.executable, "-m", "robustbench_sys.cli"]


def _flat_dataset(dest: Path, rows, src: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class_index"])
        for r in rows:
            shutil.copy(src / r["file"], dest / r["file"])
            w.writerow([r["file"], r["class_index"]])
    return dest


def test_cli_eval_then_results_show(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["eval", "--model", "mobilenet_v2", "--suite", "clean,resize", "--data", "foolbox-demo",
               "--limit", "8", "--out", str(out), "--no-progress", "--workers", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "resize/cv2-nearest" in printed and "ΔACC pp" in printed
    s = ResultsStore(out).summaries()
    available = [k for k in noises.list_noises("resize/*") if noises.get(k).available() is None]
    n_options = len(available) - 1                   # pil-bilinear is the reference: skipped, ΔACC 0 by definition
    assert len(s) == 1 + n_options
    assert set(s.n_images) == {8}
    clean = s[s.condition == "clean"].iloc[0]
    assert clean.delta_acc == 0 and clean.flip_rate == 0
    prov = json.loads(clean.provenance)
    assert {"torch", "timm", "Pillow", "numpy"} <= set(prov["packages"])
    assert prov["libjpeg-turbo"] and prov["cpu"] and "noise_versions" in prov
    assert json.loads(clean.pipeline)["resize"] == "resize/pil-bilinear"
    rows = ResultsStore(out).per_image()
    assert len(rows) == (1 + n_options) * 8 and not rows.duplicated(["unit_id", "file"]).any()
    assert rows.top5.map(len).eq(5).all()
    # paired metrics recomputed from the per-image rows
    ref = rows[rows.condition == "clean"].set_index("file")
    near = rows[rows.condition == "resize/cv2-nearest"].set_index("file").loc[ref.index]
    row = s[s.condition == "resize/cv2-nearest"].iloc[0]
    assert row.delta_acc == pytest.approx(ref.correct.mean() - near.correct.mean())
    assert row.flip_rate == pytest.approx((ref.pred != near.pred).mean())

    assert main(["results", "show", "--out", str(out), "--by", "family", "--format", "markdown"]) == 0
    assert f"| foolbox-demo[:8] | mobilenet_v2 | resize | {n_options} |" in capsys.readouterr().out
    # condition x model matrix: the cell is the stored ΔACC [CI] / flip rate
    assert main(["results", "show", "--out", str(out), "--by", "matrix", "--family", "resize"]) == 0
    table = capsys.readouterr().out
    assert "mobilenet_v2 (n=8)" in table
    cell = (f"{100 * row.delta_acc:+.1f} [{100 * row.delta_ci_low:+.1f}, {100 * row.delta_ci_high:+.1f}] / "
            f"{100 * row.flip_rate:.1f}")
    line = next(ln for ln in table.splitlines() if "resize/cv2-nearest" in ln)
    assert cell in line
    assert f"top-1 {100 * clean.top1:.1f}" in next(ln for ln in table.splitlines() if ln.strip().startswith("clean"))


def test_second_run_is_skipped_entirely(tmp_path):
    kw = dict(data="foolbox-demo", out=tmp_path, limit=4, progress=False, workers=0)
    a = robustbench_sys.evaluate("mobilenet_v2", ["clean"], **kw)
    t = time.monotonic()
    b = robustbench_sys.evaluate("mobilenet_v2", ["clean"], **kw)
    assert list(a.unit_id) == list(b.unit_id) and list(a.run_id) == list(b.run_id)
    assert len(ResultsStore(tmp_path).per_image()) == 4
    assert time.monotonic() - t < 20


@pytest.mark.parametrize("argv,needle", [
    (["eval", "--model", "mobilenet_v9", "--data", "foolbox-demo"], "unknown model 'mobilenet_v9'; valid choices:"),
    (["eval", "--model", "mobilenet_v2", "--suite", "resise", "--data", "foolbox-demo"], "unknown suite 'resise'"),
    (["eval", "--model", "mobilenet_v2", "--data", "/no/such/dir"], "--data /no/such/dir: no such file"),
    (["eval", "--model", "resnet50", "--data", "foolbox-demo"], "--model resnet50: weights not available here"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ROBUSTBENCH_SYS_OFFLINE": "1"}
    p = subprocess.run(CLI + argv + ["--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], p.stderr


def test_bad_images_are_reported_and_skipped(tmp_path, sample_rows, imagenet_sample, caplog):
    rows = sample_rows[:5]
    d = _flat_dataset(tmp_path / "bad", rows, imagenet_sample)
    names = [r["file"] for r in rows]
    data = (d / names[0]).read_bytes()
    (d / names[0]).write_bytes(data[: len(data) // 3])                       # truncated JPEG
    rgb = np.asarray(Image.open(d / names[1]).convert("RGB"))
    alpha = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(alpha, "RGBA").save(d / names[1], "PNG")                 # PNG with alpha (name kept)
    Image.open(d / names[2]).convert("L").save(d / names[2], "JPEG")        # greyscale
    Image.open(d / names[3]).convert("CMYK").save(d / names[3], "JPEG")     # CMYK JPEG
    with caplog.at_level(logging.INFO, logger="robustbench_sys"):
        df = robustbench_sys.evaluate("mobilenet_v2", ["clean"], d, tmp_path / "res", progress=False, workers=0)
    logs = [r.getMessage() for r in caplog.records]
    row = df.iloc[0]
    assert row.n_images == 4 and row.n_errors == 1
    per = ResultsStore(tmp_path / "res").per_image().set_index("file")
    assert per.loc[names[0], "status"].startswith("error: OSError") and "truncated" in per.loc[names[0], "status"]
    assert (per.drop(index=names[0]).status == "ok").all()
    assert any(names[0] in m and "truncated" in m for m in logs)


def test_resume_after_kill_gives_same_rows_without_duplicates(tmp_path, sample_rows, imagenet_sample):
    d = _flat_dataset(tmp_path / "data", sample_rows[:8], imagenet_sample)
    suite = tmp_path / "mini.toml"   # a user-defined suite file: two resize options
    suite.write_text('name = "mini"\nfamily = "resize"\n[[conditions]]\nname = "cv2-area"\nresize = "cv2-area"\n'
                     '[[conditions]]\nname = "pil-nearest"\nresize = "pil-nearest"\n')
    args = ["eval", "--model", "mobilenet_v2", "--suite", f"clean,{suite}", "--data", str(d), "--batch-size", "2",
            "--workers", "0", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(CLI + args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(killed.glob("per_image/*/[!.]*.parquet"))) < 5:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_parts = len(list(killed.glob("per_image/*/[!.]*.parquet")))
    assert 0 < n_parts < 3 * 4, "the kill should land mid-run"
    assert subprocess.run(CLI + args + ["--out", str(killed)], capture_output=True, timeout=600).returncode == 0
    fresh = tmp_path / "fresh"
    assert subprocess.run(CLI + args + ["--out", str(fresh)], capture_output=True, timeout=600).returncode == 0
    a, b = ResultsStore(killed).per_image(), ResultsStore(fresh).per_image()
    assert not a.duplicated(["unit_id", "file"]).any()
    key = ["unit_id", "file", "pred", "correct"]
    assert a[key].sort_values(key).values.tolist() == b[key].sort_values(key).values.tolist()
    assert len(set(a.run_id)) == 2                   # rows from the killed run were kept, not recomputed
    sa, sb = ResultsStore(killed).summaries(), ResultsStore(fresh).summaries()
    cols = ["unit_id", "top1", "delta_acc", "flip_rate", "delta_ci_low", "delta_ci_high"]
    pd.testing.assert_frame_equal(sa[cols].sort_values("unit_id").reset_index(drop=True),
                                  sb[cols].sort_values("unit_id").reset_index(drop=True))
