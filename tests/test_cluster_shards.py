"""Dask work split finer than one unit per task: a unit above the shard size, or a shared-prefix
group of image-side units, runs as image shards, one task each, with exactly the rows and
summaries of a run in one process."""

import json
import logging
import os
import re

import numpy as np
import pytest

import robustbench_sys
from robustbench_sys.errors import UserError
from robustbench_sys.eval.executors import SHARD_ENV, plan_shards
from robustbench_sys.results.store import COMPACT_NAME, ResultsStore, compacted_parts

pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("one_thread")
N = 12


def _rows(out):
    r = ResultsStore(out).per_image()
    return r.sort_values(["condition", "file"]).reset_index(drop=True)


def test_shards_equal_one_process(imagenet_sample, suite_file, tmp_path, caplog, monkeypatch):
    suites = ["clean", suite_file]
    kw = dict(limit=N, progress=False, batch_size=4, speed=False)
    local = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "local", workers=0, **kw)
    monkeypatch.setenv(SHARD_ENV, "6")   # rounded up to 8 = two batches: shards of 8 and 4 images
    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "0")   # no shared-prefix groups: every unit sharded
    with caplog.at_level(logging.INFO, logger="robustbench_sys"):
        dask = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "dask",
                                        scheduler="local:2", **kw)
    ran = [re.search(r"/ (\S+) (shard-\d+): ran on Dask worker pid (\d+)$", r.getMessage()) for r in caplog.records]
    ran = [m.groups() for m in ran if m]
    assert sorted((c, s) for c, s, _ in ran) == sorted((c, s) for c in dask.condition for s in ("shard-0", "shard-8"))
    assert os.getpid() not in {int(p) for _, _, p in ran}

    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "dask")
    assert len(a) == len(b) == 3 * N and not b.duplicated(["unit_id", "file"]).any()
    for col in ("unit_id", "condition", "file", "pred", "correct", "status"):
        assert a[col].tolist() == b[col].tolist(), col
    assert [list(x) for x in a.top5] == [list(x) for x in b.top5]
    np.testing.assert_allclose(np.stack(a.top5_prob.to_numpy()), np.stack(b.top5_prob.to_numpy()), rtol=1e-5,
                               atol=1e-6)
    # every shard wrote its own parts: two batches of 4 + one of 4 per unit, as in one process
    for uid in dask.unit_id:   # (a finished unit may be compacted: its file names the parts it covers)
        d = tmp_path / "dask" / "per_image" / uid
        compact = d / COMPACT_NAME
        covered = compacted_parts(compact) if compact.is_file() else set()
        assert len(covered | {p.name for p in d.glob("part-*.parquet")}) == 3
    la, lb = local.set_index("condition").sort_index(), dask.set_index("condition").sort_index()
    for col in ("top1", "top5", "delta_acc", "delta_ci_low", "delta_ci_high", "mcnemar_p", "flip_rate", "n_images"):
        np.testing.assert_allclose(la[col].to_numpy(dtype=float), lb[col].to_numpy(dtype=float), err_msg=col)
    assert all(len(json.loads(r)) == 1 for r in dask.run_ids)   # one run id across a unit's shards

    # resume: nothing left to run, same rows
    again = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "dask",
                                     scheduler="local:1", **kw)
    assert sorted(again.unit_id) == sorted(dask.unit_id) and _rows(tmp_path / "dask").equals(b)


def test_plan_shards_whole_batches(imagenet_sample, suite_file):
    from robustbench_sys import zoo
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.plan import plan_units
    from robustbench_sys.suites import resolve

    ds = load_dataset(imagenet_sample).limit(20)
    units, _ = plan_units(zoo.get_card("mobilenet_v2"), "sha", resolve(["clean", suite_file, "graph", "precision"]),
                          ds, speed=True)
    ref, resize = units[0], units[1]
    graph, precision = (next(u for u in units if u.condition.family == f) for f in ("graph", "precision"))
    shards = plan_shards(resize, 20, 8, 5)   # 5 -> 8: whole batches
    assert [(s.start, len(s.files)) for s in shards] == [(0, 8), (8, 8), (16, 4)]
    assert [f for s in shards for f in s.files] == [s.file for s in ds.samples]
    assert plan_shards(resize, 8, 8, 5) is None and plan_shards(resize, 20, 8, 0) is None
    # one task: a model-side stage (graph, precision) or a speed measurement (the timed reference)
    assert ref.timed and all(plan_shards(u, 20, 8, 5) is None for u in (graph, precision, ref))


def test_bad_shard_size_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARD_ENV, "many")
    with pytest.raises(UserError, match=f"^{SHARD_ENV}=many: give the images per Dask task"):
        robustbench_sys.evaluate("mobilenet_v2", ["clean"], "foolbox-demo", tmp_path, limit=2, progress=False,
                                 scheduler="local:1")


def test_group_shards_equal_one_process(imagenet_sample, suite_file, tmp_path, caplog, monkeypatch):
    """A shared-prefix group (two resizes of one decoder) on local:2 runs as image shards of the
    whole group, each unit summarised once after the group's last shard, rows as in one process."""
    from robustbench_sys.eval.runner import Runner

    suites = ["clean", suite_file]
    kw = dict(limit=2 * 4, progress=False, batch_size=2, speed=False)   # 2 shards x 2 batches of 2
    local = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "local", workers=0, **kw)
    summarised: list[str] = []
    plain = Runner.summarise

    def counted(self, unit, ref):
        summarised.append(unit.id)
        plain(self, unit, ref)

    monkeypatch.setattr(Runner, "summarise", counted)
    monkeypatch.delenv(SHARD_ENV, raising=False)   # auto: a wave of one group gets one shard per worker
    with caplog.at_level(logging.INFO, logger="robustbench_sys"):
        dask = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "dask",
                                        scheduler="local:2", **kw)
    pat = r"/ (\S+) \(group of (\d+)\) (shard-\d+): ran on Dask worker pid (\d+)$"
    ran = [m.groups() for m in (re.search(pat, r.getMessage()) for r in caplog.records) if m]
    resizes = sorted(c for c in dask.condition if c != "clean")
    assert len(resizes) == 2
    # every unit of the group in each of the two shards, the shards run by worker processes
    assert sorted((c, n, s) for c, n, s, _ in ran) == sorted((c, "2", s) for c in resizes
                                                             for s in ("shard-0", "shard-4"))
    pids = {int(p) for _, _, _, p in ran}
    assert os.getpid() not in pids and len(pids) <= 2
    assert sorted(summarised) == sorted(dask.unit_id)   # each unit summarised exactly once

    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "dask")
    assert len(a) == len(b) == 3 * 8 and not b.duplicated(["unit_id", "file"]).any()
    for col in ("unit_id", "condition", "file", "pred", "correct", "status"):
        assert a[col].tolist() == b[col].tolist(), col
    assert [list(x) for x in a.top5] == [list(x) for x in b.top5]
    np.testing.assert_allclose(np.stack(a.top5_prob.to_numpy()), np.stack(b.top5_prob.to_numpy()), rtol=1e-5,
                               atol=1e-6)
    la, lb = local.set_index("condition").sort_index(), dask.set_index("condition").sort_index()
    for col in ("top1", "top5", "delta_acc", "delta_ci_low", "delta_ci_high", "mcnemar_p", "flip_rate", "n_images"):
        np.testing.assert_allclose(la[col].to_numpy(dtype=float), lb[col].to_numpy(dtype=float), err_msg=col)
    assert all(len(json.loads(r)) == 1 for r in dask.run_ids)   # one run id across the group's shards

    # resume: nothing runs or is summarised again, same rows
    caplog.clear()
    summarised.clear()
    with caplog.at_level(logging.INFO, logger="robustbench_sys"):
        again = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "dask",
                                         scheduler="local:2", **kw)
    assert not [r for r in caplog.records if "ran on Dask worker" in r.getMessage()]
    assert summarised == []
    assert sorted(again.unit_id) == sorted(dask.unit_id) and _rows(tmp_path / "dask").equals(b)
