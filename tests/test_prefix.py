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


def _same_summaries(a: pd.DataFrame, b: pd.DataFrame, drop=()):
    assert a.unit_id.tolist() == b.unit_id.tolist()
    stats = ["condition", "n_images", "n_errors", "n_paired", "top1", "top1_ci_low", "top1_ci_high", "top5",
             "ref_top1", "delta_acc", "delta_ci_low", "delta_ci_high", "mcnemar_p", "n_lost", "n_gained",
             "flip_rate", "pipeline", "reference_pipeline", "deploy_info"]
    stats = [c for c in stats if c not in drop]
    pd.testing.assert_frame_equal(a[stats], b[stats])


def _killed_after(monkeypatch, n: int, run) -> list[str]:
    """Run ``run()`` with the grouped loop killed before its ``n + 1``-th batch; the ids of the
    units whose batches were stored, in order."""
    real_score = prefix.score_batch
    scored: list[str] = []

    def dying(store, unit, strategy, todo, batch, run_id):
        if len(scored) == n:
            raise RuntimeError("killed")
        scored.append(unit.id)
        return real_score(store, unit, strategy, todo, batch, run_id)

    monkeypatch.setattr(prefix, "score_batch", dying)
    with pytest.raises(RuntimeError, match="killed"):
        run()
    monkeypatch.setattr(prefix, "score_batch", real_score)
    return scored


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
    assert calls == [8]   # one group over both decoders: clean + 3 pil pairs (pil-bilinear is clean) + 4 opencv
    _same_rows(rows_unit, rows_g)
    _same_summaries(summ_unit, summ_g)

    # interrupted: the grouped run dies after 10 batches (every unit's first batch, then the second
    # batch of its first two units); one unit also loses its first part.  The resumed units'
    # pending images then differ (misaligned batches) and still give the same rows.
    out = tmp_path / "interrupted"
    scored = _killed_after(monkeypatch, 10, lambda: _run(monkeypatch, out, suite, imagenet_sample, True, 0))
    store = ResultsStore(out)
    assert len(set(scored)) == 8 and scored.count(scored[0]) == 2
    parts = sorted(store.unit_dir(scored[0]).glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    assert len(parts) == 2
    parts[0].unlink()   # images 0-2 of that unit are pending again, 3-5 are not
    assert len(store.done_files(scored[0])) == 3 and len(store.done_files(scored[2])) == 3
    calls.clear()
    rows_r, summ_r = _run(monkeypatch, out, suite, imagenet_sample, True, 0)
    assert calls == [8]   # the interrupted group resumed
    _same_rows(rows_unit, rows_r)
    _same_summaries(summ_unit, summ_r)


# ---------------------------------------------------------------------- model-side conditions, two models
MODEL_SIDE = (("bf16", "deploy", "precision/bf16"), ("torchscript", "deploy", "backend/torchscript"),
              ("maxpool-ceil", "graph", "graph/maxpool-ceil"), ("cv2-area", "resize", "cv2-area"),
              ("cv2-area-again", "resize", "cv2-area"))   # the same pipeline: the same unit, run once


def _model_side_suite(tmp_path):
    p = tmp_path / "model-side.toml"
    p.write_text('name = "model-side"\nfamily = "mixed"\nversion = 1\n'
                 + "".join(f'\n[[conditions]]\nname = "{n}"\n{stage} = "{key}"\n' for n, stage, key in MODEL_SIDE))
    return p


def _stable_info(summ: pd.DataFrame) -> list:
    """The summaries' deploy info less what depends on the machine's state (the deploy cache on disk,
    the speed measurement), not on the run."""
    import json

    out = []
    for info in summ.deploy_info:
        d = json.loads(info) if isinstance(info, str) and info else dict(info or {})
        out.append({k: v for k, v in d.items() if k not in ("load_s", "export_cached", "speed")})
    return out


def _run_two(monkeypatch, out, suite, data, grouped: bool, workers: int, speed: bool = False):
    import dataclasses

    from robustbench_sys import zoo

    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1" if grouped else "0")
    twin = dataclasses.replace(zoo.get_card("mobilenet_v2"), name="mobilenet_v2_twin")   # same preprocessing
    df = evaluate(["mobilenet_v2", twin], ["clean", str(suite)], data, out, limit=6, batch_size=4, progress=False,
                  workers=workers, speed=speed)
    store = ResultsStore(out)
    rows = store.per_image().sort_values(["unit_id", "file"]).reset_index(drop=True)
    summ = store.summaries().sort_values(["unit_id", "condition"]).reset_index(drop=True)
    return rows, summ, df.attrs["skipped"]


def test_grouped_model_side_and_two_models(tmp_path, imagenet_sample, monkeypatch):
    """clean / bf16 / TorchScript of two models share one preprocessing (one image-side class), the
    resize condition is a second class of the same group; maxpool-ceil does not apply (skipped in
    both runs).  Rows and summaries equal the per-unit loop's; an interrupted grouped run (with the
    speed of its timed units measured) resumes to the same rows."""
    suite = _model_side_suite(tmp_path)
    rows_unit, summ_unit, skip_unit = _run_two(monkeypatch, tmp_path / "per-unit", suite, imagenet_sample,
                                               False, 0)
    assert summ_unit.unit_id.nunique() == 2 * 4 and len(summ_unit) == 2 * 5 and summ_unit.model.nunique() == 2
    calls = []
    real = prefix.run_group

    def spy(runner, group, calib, models):
        calls.append((len(group), len({u.card.name for u in group}),
                      len({prefix.image_side(u.pipeline) for u in group})))
        return real(runner, group, calib, models)

    monkeypatch.setattr(prefix, "run_group", spy)
    rows_g, summ_g, skip_g = _run_two(monkeypatch, tmp_path / "grouped", suite, imagenet_sample, True, 1)
    assert calls == [(10, 2, 2)]   # 5 units x 2 models, one group; clean/bf16/torchscript/maxpool one class
    assert sorted(map(str, skip_g)) == sorted(map(str, skip_unit)) and len(skip_g) >= 2
    _same_rows(rows_unit, rows_g)
    _same_summaries(summ_unit, summ_g, drop=("deploy_info",))
    assert _stable_info(summ_unit) == _stable_info(summ_g) and any(_stable_info(summ_g))

    # interrupted mid-group after 9 of its 16 batches (two per unit); then resumed, with speed measured
    out = tmp_path / "interrupted"
    scored = _killed_after(monkeypatch, 9,
                           lambda: _run_two(monkeypatch, out, suite, imagenet_sample, True, 0, speed=True))
    store = ResultsStore(out)
    assert len(set(scored)) == 8 and scored.count(scored[0]) == 2 and store.summaries().empty
    parts = sorted(store.unit_dir(scored[0]).glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    assert len(parts) == 2
    parts[0].unlink()   # images 0-3 of that unit are pending again, 4-5 are not: misaligned with the others
    assert len(store.done_files(scored[0])) == 2 and len(store.done_files(scored[1])) == 4
    calls.clear()
    rows_r, summ_r, _ = _run_two(monkeypatch, out, suite, imagenet_sample, True, 1, speed=True)
    assert calls == [(10, 2, 2)]
    _same_rows(rows_unit, rows_r)
    timed = summ_r.condition.str.split("/").str[-1].isin(["clean", "bf16", "torchscript"])
    assert summ_r.latency_p50_ms[timed].notna().all() and summ_r.latency_p50_ms[~timed].isna().all()
    _same_summaries(summ_unit, summ_r, drop=("deploy_info",))
    assert _stable_info(summ_unit) == _stable_info(summ_r)


def test_plan_groups_caps(tmp_path, imagenet_sample, monkeypatch):
    """Groups span models with the same image-side pipeline and are cut at MAX_MODELS models and at
    the memory budget (estimated parameter bytes of the models a group holds)."""
    import dataclasses

    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.plan import plan_units
    from robustbench_sys.eval.runner import Runner
    from robustbench_sys.suites import resolve

    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1")
    card = zoo.get_card("mobilenet_v2")
    _, sha = zoo.fetch_weights(card)
    data = load_dataset(str(imagenet_sample)).limit(4)
    conds = resolve(["clean", str(_model_side_suite(tmp_path))])
    units = [u for c in (card, dataclasses.replace(card, name="mobilenet_v2_twin"))
             for u in plan_units(c, sha, conds, data)[0]]
    runner = Runner(tmp_path / "out", workers=0, progress=False)
    ids = sorted({u.id for u in units})   # cv2-area and cv2-area-again: one unit

    groups = prefix.plan_groups(runner, units)
    assert [len(g) for g in groups] == [10] and sorted(u.id for u in groups[0]) == ids

    monkeypatch.setattr(prefix, "MAX_MODELS", 1)
    groups = prefix.plan_groups(runner, units)
    assert [len(g) for g in groups] == [5, 5] and [len({u.card.name for u in g}) for g in groups] == [1, 1]
    assert sorted(u.id for g in groups for u in g) == ids

    monkeypatch.setattr(prefix, "MAX_MODELS", 4)
    copy = prefix.model_bytes(units[0])
    monkeypatch.setenv("ROBUSTBENCH_SYS_GROUP_MEMORY_MB", str(3.5 * copy / 2**20))
    groups = prefix.plan_groups(runner, units)
    for g in groups:   # each model counted once loaded, once more per unit with a model-side stage
        held = len({u.card.name for u in g}) + sum(prefix._has_model_side(u) for u in g)
        assert 2 <= len(g) and held * copy <= 3.5 * copy
    assert len(groups) >= 3

    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "0")
    assert prefix.plan_groups(runner, units) == []
