"""Shared-prefix execution (robustbench_sys.eval.prefix): a model's decoder x resize units run as
groups, each image decoded once, give the per-unit loop's rows and summaries bit for bit, and an
interrupted grouped run resumes to the same rows."""

import numpy as np
import pandas as pd
import pytest

from robustbench_sys import noises
from robustbench_sys.eval import prefix
from robustbench_sys.eval.api import evaluate
from robustbench_sys.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")

DECODERS = ("pil", "opencv")
RESIZES = ("pil-bilinear", "cv2-area", "cv2-nearest", "pil-bicubic")


def _suite(tmp_path):
    dec = [k for k in noises.list_noises("decoder/*") if k.split("/")[1] not in DECODERS]
    res = [k for k in noises.list_noises("resize/*") if k.split("/")[1] not in RESIZES]
    p = tmp_path / "mini-s.toml"
    p.write_text(f'name = "mini-s"\nfamily = "imagenet-s"\nversion = 1\n[product.decode]\npattern = "decoder/*"\n'
                 f'exclude = {dec}\n[product.resize]\npattern = "resize/*"\nexclude = {res}\n'.replace("'", '"'))
    return p


def _run(monkeypatch, out, suite, data, grouped: bool, workers: int):
    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1" if grouped else "0")
    evaluate("mobilenet_v2", ["clean", str(suite)], data, out, limit=8, batch_size=3, progress=False,
             workers=workers)
    store = ResultsStore(out)
    rows = store.per_image().sort_values(["unit_id", "file"]).reset_index(drop=True)
    summ = store.summaries().sort_values("unit_id").reset_index(drop=True)
    return rows, summ


def _same_rows(a: pd.DataFrame, b: pd.DataFrame):
    assert len(a) == len(b) > 0
    for col in ("unit_id", "file", "condition", "label", "pred", "correct", "correct5", "status"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("top5", "top5_prob"):
        assert np.array_equal(np.stack(a[col].to_numpy()), np.stack(b[col].to_numpy())), col


def _same_summaries(a: pd.DataFrame, b: pd.DataFrame):
    assert a.unit_id.tolist() == b.unit_id.tolist()
    stats = ["condition", "n_images", "n_errors", "n_paired", "top1", "top1_ci_low", "top1_ci_high", "top5",
             "ref_top1", "delta_acc", "delta_ci_low", "delta_ci_high", "mcnemar_p", "n_lost", "n_gained",
             "flip_rate", "pipeline", "reference_pipeline", "deploy_info"]
    pd.testing.assert_frame_equal(a[stats], b[stats])


def test_grouped_rows_equal_per_unit_and_resume(tmp_path, imagenet_sample, monkeypatch):
    suite = _suite(tmp_path)
    rows_unit, summ_unit = _run(monkeypatch, tmp_path / "per-unit", suite, imagenet_sample, False, 0)
    assert summ_unit.unit_id.nunique() == len(DECODERS) * len(RESIZES)   # the model's own pair is clean
    calls = []
    real = prefix.run_group

    def spy(runner, group, calib, models):
        calls.append(len(group))
        return real(runner, group, calib, models)

    monkeypatch.setattr(prefix, "run_group", spy)
    out = tmp_path / "grouped"
    rows_g, summ_g = _run(monkeypatch, out, suite, imagenet_sample, True, 1)   # one forked worker
    assert sorted(calls) == [4, 4]   # pil: clean + 3 pairs (pil-bilinear is clean); opencv: 4 pairs
    _same_rows(rows_unit, rows_g)
    _same_summaries(summ_unit, summ_g)

    # interrupted: the grouped run dies after 6 batches (group 1: every unit's first batch, then the
    # second batch of its first two units); one unit also loses its first part.  The resumed units'
    # pending images then differ (misaligned batches) and still give the same rows.
    out = tmp_path / "interrupted"
    real_score = prefix.score_batch
    scored: list[str] = []

    def dying(store, unit, strategy, todo, batch, run_id):
        if len(scored) == 6:
            raise RuntimeError("killed")
        scored.append(unit.id)
        return real_score(store, unit, strategy, todo, batch, run_id)

    monkeypatch.setattr(prefix, "score_batch", dying)
    with pytest.raises(RuntimeError, match="killed"):
        _run(monkeypatch, out, suite, imagenet_sample, True, 0)
    monkeypatch.setattr(prefix, "score_batch", real_score)
    store = ResultsStore(out)
    assert len(set(scored)) == 4 and scored.count(scored[0]) == 2
    parts = sorted(store.unit_dir(scored[0]).glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    assert len(parts) == 2
    parts[0].unlink()   # images 0-2 of that unit are pending again, 3-5 are not
    assert len(store.done_files(scored[0])) == 3 and len(store.done_files(scored[2])) == 3
    calls.clear()
    rows_r, summ_r = _run(monkeypatch, out, suite, imagenet_sample, True, 0)
    assert sorted(calls) == [4, 4]   # both groups ran (the interrupted one resumed)
    _same_rows(rows_unit, rows_r)
    _same_summaries(summ_unit, summ_r)
