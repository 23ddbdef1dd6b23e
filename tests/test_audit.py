"""``robustbench-sys audit``: stack parsing, the audit suite's names, and real audits (MobileNetV2 on
16 shared ImageNet images) whose rows are those of ordinary evaluations of the same pipelines."""

from __future__ import annotations

import argparse
import dataclasses
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from robustbench_sys import audit as A
from robustbench_sys.cli import main as cli_main
from robustbench_sys.errors import UserError
from robustbench_sys.results import report
from robustbench_sys.results.store import ResultsStore
from robustbench_sys.suites import get_suite

pytestmark = pytest.mark.usefixtures("one_thread")

LIMIT = 16
FOUR = "decoder=opencv,resize=cv2-linear,color=yuv420-bt601-limited,deploy=precision/int8-ort-qdq"
FOUR_KEYS = (("decoder", "decoder/opencv"), ("resize", "resize/cv2-linear"),
             ("color", "color/yuv420-bt601-limited"), ("deploy", "precision/int8-ort-qdq"))


# ---------------------------------------------------------------------- parsing
def test_string_and_toml_give_the_same_ordered_stack(tmp_path):
    s = A.parse_stack(FOUR)
    assert s.stages == FOUR_KEYS
    f = tmp_path / "stack.toml"
    f.write_text('# what we ship\n[stack]\ndecoder = "opencv"\nresize = "resize/cv2-linear"\n'
                 'color = "yuv420-bt601-limited"\ndeploy = "precision/int8-ort-qdq"\n')
    assert A.parse_stack(str(f)) == A.parse_stack(f) == s
    assert A.parse_stack({"decode": "opencv", "resize": "cv2-linear"}).stages == FOUR_KEYS[:2]   # alias, mapping
    # the order is part of the stack
    other = A.parse_stack("resize=cv2-linear, decoder=opencv ,")
    assert other.stages == (FOUR_KEYS[1], FOUR_KEYS[0]) and other.id != A.parse_stack(FOUR).id
    assert s.text() == ("decoder=opencv > resize=cv2-linear > color=yuv420-bt601-limited > "
                        "deploy=precision/int8-ort-qdq")
    assert A.parse_stack("color=grey").stages == (("color", "grey"),)    # a builtin value


@pytest.mark.parametrize("spec, says", [
    ("", "empty stack"),
    (" , ,", "empty stack"),
    ("decoder=opencv,decoder=pil", "stage decoder given twice"),
    ("decode=opencv,decoder=pil", "stage decoder given twice"),
    ("gpu=opencv", "unknown stage 'gpu'"),
    ("attack=pgd-linf", "stage 'attack' is not part of a deployment pipeline"),
    ("decoder=nosuch", "unknown noise 'decoder/nosuch'"),
    ("resize=decoder/opencv", "decoder/opencv is a decoder noise, not a resize one"),
    ("deploy=int8-ort-qdq", "give the full key"),
    ("decoder", "'decoder' is not stage=noise"),
    ("decoder=", "stage decoder has no noise"),
])
def test_bad_stack_string_is_one_line(spec, says):
    with pytest.raises(UserError) as e:
        A.parse_stack(spec)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--stack") and says in msg, msg


@pytest.mark.parametrize("text, says", [
    ("", "needs a [stack] table"),
    ('decoder = "opencv"\n', "needs a [stack] table"),
    ("[stack]\n", "empty stack"),
    ('[stack]\ndecode = "opencv"\ndecoder = "pil"\n', "given twice"),
    ('[stack]\nresize = "nosuch"\n', "unknown noise 'resize/nosuch'"),
    ('[stack]\nresize = 3\n', "stage resize has no noise"),
    ('[stack]\nresize = "cv2-linear"\n[extra]\n', "unknown top-level key(s) extra"),
    ("[stack\n", "--stack"),
])
def test_bad_stack_file_is_one_line(tmp_path, text, says):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        A.parse_stack(str(f))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--stack {f}") and says in msg, msg
    with pytest.raises(UserError, match="no such file"):
        A.parse_stack(str(tmp_path / "missing.toml"))


def _parser():
    ap = argparse.ArgumentParser()
    A.add_audit_parser(ap.add_subparsers(dest="cmd"))
    return ap


def test_cli_refuses_a_bad_stack_before_running(tmp_path):
    a = _parser().parse_args(["audit", "--model", "mobilenet_v2", "--stack", "resize=nosuch", "--data",
                              "foolbox-demo", "--out", str(tmp_path / "r")])
    assert a.model == ["mobilenet_v2"] and a.format == "table" and a.workers is None
    with pytest.raises(UserError, match="unknown noise 'resize/nosuch'"):
        A.cmd_audit(a)
    assert not (tmp_path / "r").exists()


def test_suite_names_sort_parse_and_end_with_the_whole_stack():
    s = A.parse_stack(FOUR)
    suite = A.audit_suite(s)
    assert suite.family == "audit" and suite.name == f"audit/{s.id}"
    names = [c.name for c in suite.conditions]
    p = f"audit/{s.id}/"
    assert names == [p + "stack", p + "alone:1-decoder", p + "alone:2-resize", p + "alone:3-color",
                     p + "alone:4-deploy", p + "path:1-decoder", p + "path:2-decoder+resize",
                     p + "path:3-decoder+resize+color", p + "path:4-decoder+resize+color+deploy"]
    assert sorted(names[1:]) == names[1:]        # alone in the stack's order, then the path in its order
    by = {c.name: c for c in suite.conditions}
    assert by[p + "path:4-decoder+resize+color+deploy"].overrides == by[p + "stack"].overrides == dict(FOUR_KEYS)
    assert by[p + "alone:3-color"].overrides == {"color": "color/yuv420-bt601-limited"}
    assert by[p + "path:2-decoder+resize"].overrides == dict(FOUR_KEYS[:2])
    assert all(c.family == "audit" and c.suite == suite.name for c in suite.conditions)
    parsed = [A.parse_condition(n) for n in names]
    assert [(q.part, q.index) for q in parsed] == [("stack", 0)] + [("alone", i) for i in range(1, 5)] + \
        [("path", i) for i in range(1, 5)]
    assert parsed[-1].stages == ("decoder", "resize", "color", "deploy")
    assert A.parse_condition("resize/cv2-linear") is None and A.parse_condition("clean") is None


# ---------------------------------------------------------------------- real audits
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit") / "results"


@pytest.fixture(scope="module")
def four(store, imagenet_sample):
    """The four-stage audit through the command (printed output, summaries of the store)."""
    a = _parser().parse_args(["audit", "--model", "mobilenet_v2", "--stack", FOUR, "--data", str(imagenet_sample),
                              "--out", str(store), "--limit", str(LIMIT), "--workers", "0", "--no-progress"])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert A.cmd_audit(a) == 0
    return out.getvalue(), ResultsStore(store).summaries()


def _rows(store: Path, unit_id: str) -> pd.DataFrame:
    r = ResultsStore(store).read_unit_rows(unit_id).sort_values("file").reset_index(drop=True)
    return r[["file", "label", "pred", "correct", "correct5", "status"]]


def test_four_stage_audit_is_the_ordinary_evals(four, store, imagenet_sample, tmp_path):
    import robustbench_sys as rbs

    printed, s = four
    stack = A.parse_stack(FOUR)
    p = f"audit/{stack.id}/"
    audit = s[s.family == "audit"].set_index("condition")
    assert len(audit) == 9 and (audit.n_images == LIMIT).all()
    # the last cumulative step is the whole stack: one unit, two summaries
    assert audit.loc[p + "stack", "unit_id"] == audit.loc[p + "path:4-decoder+resize+color+deploy", "unit_id"]
    assert audit.loc[p + "alone:1-decoder", "unit_id"] == audit.loc[p + "path:1-decoder", "unit_id"]
    assert audit.unit_id.nunique() == 7

    # the whole stack == an ordinary eval of the combined condition, in a store of its own
    suite = tmp_path / "shipped.toml"
    suite.write_text('name = "shipped"\nfamily = "combined"\n\n[[conditions]]\nname = "opencv+linear+yuv+int8"\n'
                     'decoder = "opencv"\nresize = "cv2-linear"\ncolor = "yuv420-bt601-limited"\n'
                     'deploy = "precision/int8-ort-qdq"\n')
    other = tmp_path / "eval"
    with redirect_stdout(io.StringIO()):
        assert cli_main(["eval", "--model", "mobilenet_v2", "--suite", str(suite), "--data", str(imagenet_sample),
                         "--out", str(other), "--limit", str(LIMIT), "--workers", "0", "--no-progress"]) == 0
    ev = ResultsStore(other).summaries().set_index("condition").loc["combined/opencv+linear+yuv+int8"]
    whole = audit.loc[p + "stack"]
    assert ev.unit_id == whole.unit_id
    pd.testing.assert_frame_equal(_rows(other, ev.unit_id), _rows(store, whole.unit_id))
    for k in ("delta_acc", "delta_ci_low", "delta_ci_high", "flip_rate", "top1", "ref_top1"):
        assert ev[k] == pytest.approx(whole[k]), k

    # each stage alone == that option of the single-stage suite, sharing the audit's units
    parts = sorted((store / "per_image").iterdir())
    for i, (fam, (stage, key)) in enumerate(zip(["decoder", "resize", "color", "precision"], stack.stages), 1):
        full = get_suite(fam)
        cond = next(c for c in full.conditions if c.overrides == {stage: key})
        got = rbs.evaluate("mobilenet_v2", dataclasses.replace(full, conditions=(cond,)), imagenet_sample, store,
                           limit=LIMIT, workers=0, progress=False).set_index("condition")
        alone = audit.loc[f"{p}alone:{i}-{stage}"]
        assert got.loc[cond.name, "unit_id"] == alone.unit_id, cond.name
        assert got.loc[cond.name, "delta_acc"] == alone.delta_acc
        assert got.loc[cond.name, "flip_rate"] == alone.flip_rate
    assert sorted((store / "per_image").iterdir()) == parts       # no new unit: all shared

    # the printed audit: header, every part, the verdict naming the costliest stage alone
    rows = report.audit_rows(s)
    alone_rows = rows[rows.part == "alone"]
    top = alone_rows[alone_rows.delta_acc == alone_rows.delta_acc.max()]
    worst = top[top.flip_rate == top.flip_rate.max()].sort_values("index").iloc[0]   # ties: more flips, then order
    verdict = next(ln for ln in printed.splitlines() if ln.startswith("verdict:"))
    assert f"costliest stage alone: {worst.stage}={worst.noise} (ΔACC {100 * worst.delta_acc:+.1f} pp" in verdict
    lo, hi = whole.delta_ci_low, whole.delta_ci_high
    assert f"whole stack ΔACC {100 * whole.delta_acc:+.1f} pp [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}]" in verdict
    assert ("not distinguishable" in verdict) == (lo <= 0 <= hi)
    assert f"stack: {stack.text()}" in printed
    for step in ("whole stack (4 stages)", "decoder alone", "deploy alone", "1 decoder", "2 +resize", "3 +color",
                 "4 +deploy"):
        assert step in printed, step
    # the waterfall adds up to the whole stack
    path = rows[rows.part == "path"].sort_values("index")
    assert path.step_delta.sum() == pytest.approx(whole.delta_acc)
    assert list(path.noise) == ["opencv", "cv2-linear", "yuv420-bt601-limited", "precision/int8-ort-qdq"]

    # results show --by audit rebuilds the same view from the stored summaries alone
    stored = ResultsStore(store).summaries()
    assert report.audit_report(stored[stored.condition.str.startswith(p)]).strip() == printed.strip()
    assert printed.strip() in report.audit_report(stored)


def test_two_stage_audit_with_the_models_own_stage(four, store, imagenet_sample):
    """A stage equal to the model's reference (mobilenet_v2 decodes with PIL) is ΔACC 0 by definition;
    its steps reuse the units the four-stage audit already ran."""
    parts = sorted((store / "per_image").iterdir())
    df = A.audit("mobilenet_v2", "resize=cv2-linear,decoder=pil", imagenet_sample, store, limit=LIMIT, workers=0,
                 progress=False)
    assert sorted((store / "per_image").iterdir()) == parts
    stack = df.attrs["stack"]
    skipped = {s["condition"] for s in df.attrs["skipped"]}
    assert f"audit/{stack.id}/alone:2-decoder" in skipped
    rows = report.audit_rows(df)
    rows = rows[rows.stack_id == stack.id].set_index(["part", "index"])
    assert rows.loc[("alone", 2), "delta_acc"] == 0 and "by definition" in rows.loc[("alone", 2), "note"]
    assert rows.loc[("path", 2), "step_delta"] == 0
    assert rows.loc[("stack", 0), "delta_acc"] == rows.loc[("alone", 1), "delta_acc"]
    alone1 = four[1].set_index("condition").loc[f"audit/{A.parse_stack(FOUR).id}/alone:2-resize"]
    assert rows.loc[("alone", 1), "unit_id"] == alone1.unit_id
    verdict = report.audit_verdicts(df)
    assert len(verdict) == 1
    resize = rows.loc[("alone", 1)]
    name = "resize=cv2-linear" if (resize.delta_acc, resize.flip_rate) >= (0, 0) else "decoder=pil"
    assert f"costliest stage alone: {name} " in verdict[0]


@pytest.mark.parametrize("fmt", ["markdown", "csv"])
def test_results_show_by_audit_formats(four, store, fmt):
    text = report.audit_report(ResultsStore(store).summaries(), fmt)
    stack = A.parse_stack(FOUR)
    if fmt == "csv":
        t = pd.read_csv(io.StringIO(text), dtype={"stack": str})
        mine = t[t["stack"] == stack.id]
        assert list(mine.part) == ["stack"] + ["alone"] * 4 + ["path"] * 4
        assert set(mine["model"]) == {"mobilenet_v2"}
    else:
        assert f"audit {stack.id}: mobilenet_v2 on imagenet-sample[:{LIMIT}]" in text
        assert "| part | step | noise |" in text and "verdict:" in text


def test_cli_audit_and_results_show_by_audit(four, store, imagenet_sample, capsys):
    """Through robustbench_sys.cli once ``audit`` is wired in (skipped before that)."""
    from robustbench_sys import cli

    if "audit" not in cli.build_parser().format_help():
        pytest.skip("the audit subcommand is not wired into robustbench_sys/cli.py yet")
    printed, _ = four
    assert cli_main(["audit", "--model", "mobilenet_v2", "--stack", FOUR, "--data", str(imagenet_sample), "--out",
                     str(store), "--limit", str(LIMIT), "--workers", "0", "--no-progress"]) == 0   # all units stored
    assert capsys.readouterr().out.strip() == printed.strip()
    assert cli_main(["results", "show", "--out", str(store), "--by", "audit"]) == 0
    assert printed.strip() in capsys.readouterr().out
    assert cli_main(["audit", "--model", "mobilenet_v2", "--stack", "resize=nosuch", "--data", "foolbox-demo"]) == 2
    err = capsys.readouterr().err
    assert "--stack: resize=nosuch: unknown noise 'resize/nosuch'" in err and err.count("\n") == 1


def test_audit_of_an_onnx_file(four, tmp_path, imagenet_sample):
    """An ONNX file as the deployed model (preprocessing from the zoo card): the image-side stages
    are audited as for the zoo model; the predictions are the same network's."""
    import warnings

    import torch

    from robustbench_sys import zoo

    pytest.importorskip("onnxruntime", reason="ONNX Runtime comes with the [backends] extra")
    path = tmp_path / "mv2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(zoo.load_model("mobilenet_v2"), torch.zeros(1, 3, 224, 224), str(path), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    a = _parser().parse_args(["audit", "--model", str(path), "--preprocess", "mobilenet_v2", "--stack",
                              "decoder=opencv,resize=cv2-linear", "--data", str(imagenet_sample), "--out",
                              str(tmp_path / "r"), "--limit", str(LIMIT), "--workers", "0", "--no-progress"])
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert A.cmd_audit(a) == 0
    rows = report.audit_rows(ResultsStore(tmp_path / "r").summaries())
    assert len(rows) == 5 and rows.delta_acc.notna().all() and (rows.n == LIMIT).all()
    assert set(rows.model) == {"mv2"} and "verdict: mv2 on" in out.getvalue()
    torch_rows = report.audit_rows(four[1]).set_index(["part", "index"])
    mine = rows.set_index(["part", "index"])
    for key in (("alone", 1), ("alone", 2)):     # decoder=opencv, resize=cv2-linear: the same network's ΔACC
        assert mine.loc[key, "noise"] == torch_rows.loc[key, "noise"]
        assert abs(mine.loc[key, "delta_acc"] - torch_rows.loc[key, "delta_acc"]) <= 1 / LIMIT
