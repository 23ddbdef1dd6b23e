"""ImageNet-S (systematic error): the decoder x resize cross product as a suite, and RobustART's
per-pair matrix with mean / std / max over pairs, on real images."""

import itertools

import numpy as np
import pytest

from robustbench_sys import noises
from robustbench_sys.cli import main
from robustbench_sys.errors import UserError
from robustbench_sys.eval.api import evaluate
from robustbench_sys.results import report
from robustbench_sys.results.store import ResultsStore
from robustbench_sys.suites import get_suite

PRODUCT = """name = "mini-s"
family = "imagenet-s"
version = 1
[product.decode]
pattern = "decoder/*"
exclude = {dec_exclude}
[product.resize]
pattern = "resize/*"
exclude = {res_exclude}
"""


def _suite(tmp_path, decoders, resizes):
    dec_all = [k for k in noises.list_noises("decoder/*")]
    res_all = [k for k in noises.list_noises("resize/*")]
    text = PRODUCT.format(dec_exclude=[k for k in dec_all if k.split("/")[1] not in decoders],
                          res_exclude=[k for k in res_all if k.split("/")[1] not in resizes]).replace("'", '"')
    p = tmp_path / "mini-s.toml"
    p.write_text(text)
    return p


def test_builtin_suite_is_the_cross_product():
    suite = get_suite("imagenet-s")
    decs = sorted({c.overrides["decoder"] for c in suite.conditions})
    ress = sorted({c.overrides["resize"] for c in suite.conditions})
    assert len(decs) >= 5 and len(ress) >= 11
    assert sorted((c.overrides["decoder"], c.overrides["resize"]) for c in suite.conditions) == \
        sorted(itertools.product(decs, ress))
    assert all(c.family == "imagenet-s" for c in suite.conditions)
    assert len({c.name for c in suite.conditions}) == len(suite.conditions)


def test_product_with_no_match_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "bad"\n[product.decode]\npattern = "decoder/nope*"\n[product.resize]\npattern = "resize/*"\n')
    with pytest.raises(UserError, match="bad.toml.*decoder/nope"):
        get_suite(str(p))


def test_matrix_and_stats_on_real_images(tmp_path, imagenet_sample, capsys):
    suite = _suite(tmp_path, {"pil", "ffmpeg"}, {"pil-bilinear", "cv2-nearest"})
    out = tmp_path / "res"
    df = evaluate("mobilenet_v2", [str(suite), "decoder"], imagenet_sample, out, limit=12, progress=False, workers=0)
    s = ResultsStore(out).summaries()
    cells = report.imagenet_s_cells(s)
    # 2 x 2 pairs: the model's own pair (pil + pil-bilinear) is its clean run
    assert sorted(zip(cells.decoder, cells.resize)) == sorted(
        itertools.product(["ffmpeg", "pil"], ["cv2-nearest", "pil-bilinear"]))
    clean = s[s.condition == "clean"].iloc[0]
    m = report.imagenet_s_matrix(s, "mobilenet_v2")
    m = m.set_index(m.columns[0])
    assert m.loc["pil", "pil-bilinear"] == round(100 * clean.top1, 2)
    # the ffmpeg + pil-bilinear cell is the same pipeline as the decoder sweep's ffmpeg condition
    dec = s[s.condition == "decoder/ffmpeg"].iloc[0]
    cell = cells[(cells.decoder == "ffmpeg") & (cells.resize == "pil-bilinear")].iloc[0]
    assert cell.unit_id == dec.unit_id and cell.top1 == dec.top1
    # mean / std / max over the four pairs, recomputed from the per-image rows
    rows = ResultsStore(out).per_image()
    acc = rows[rows.unit_id.isin(cells.unit_id)].groupby("unit_id").correct.mean() * 100
    t = report.imagenet_s_table(s).iloc[0]
    assert t.pairs == 4 and t.n == 12
    assert t["mean top1 %"] == pytest.approx(acc.mean(), abs=0.01)
    assert t["std top1 pp"] == pytest.approx(np.std(acc.to_numpy()), abs=0.01)
    assert t["max ΔACC pp"] == pytest.approx(100 * (clean.top1 - acc.min() / 100), abs=0.01)
    assert len(df) == len(s)
    assert main(["results", "show", "--out", str(out), "--by", "imagenet-s"]) == 0
    printed = capsys.readouterr().out
    assert "worst pair" in printed and "decoder \\ resize" in printed and "cv2-nearest" in printed
