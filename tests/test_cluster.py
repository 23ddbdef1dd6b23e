"""Scale-out on Dask: a LocalCluster of 2 worker processes on 127.0.0.1 gives exactly the rows
and summaries of a run in one process, resumes without resubmitting finished units, and
reports model-side stages that do not apply (graph noises on MobileNetV2) as skips."""

import logging
import os

import numpy as np
import pytest

import robustbench_sys
from robustbench_sys.errors import UserError
from robustbench_sys.results.store import ResultsStore

pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("one_thread")
N = 12
SUITES = ["clean", "graph"]


def _rows(out):
    r = ResultsStore(out).per_image()
    return r.sort_values(["condition", "file"]).reset_index(drop=True)


def test_local_cluster_equals_one_process(imagenet_sample, suite_file, tmp_path, caplog):
    suites = SUITES + [suite_file]
    local = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "local", limit=N,
                                     progress=False, workers=0, batch_size=8)
    with caplog.at_level(logging.INFO, logger="robustbench_sys"):
        dask = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "dask", limit=N,
                                        progress=False, batch_size=8, scheduler="local:2")
    logs = [r.getMessage() for r in caplog.records]
    pids = {int(m.rsplit(" ", 1)[1]) for m in logs if "ran on Dask worker pid" in m}
    assert pids and os.getpid() not in pids    # the units ran in the cluster's worker processes
    assert sorted(local.condition) == sorted(dask.condition) == ["clean", "resize/cv2-nearest", "resize/pil-bicubic"]
    # the graph noises do not apply to MobileNetV2 (no max-pool, no upsample): skipped with the reason
    skips = {s["condition"]: s["reason"] for s in dask.attrs["skipped"]}
    assert all(k.startswith("graph/") and v.startswith("not applicable") for k, v in skips.items()) and skips
    assert skips == {s["condition"]: s["reason"] for s in local.attrs["skipped"]}

    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "dask")
    assert len(a) == len(b) == 3 * N and not b.duplicated(["unit_id", "file"]).any()
    for col in ("unit_id", "condition", "file", "pred", "correct"):
        assert a[col].tolist() == b[col].tolist(), col
    np.testing.assert_allclose(np.stack(a.top5_prob.to_numpy()), np.stack(b.top5_prob.to_numpy()), rtol=1e-5,
                               atol=1e-6)
    la, lb = local.set_index("condition").sort_index(), dask.set_index("condition").sort_index()
    for col in ("top1", "delta_acc", "delta_ci_low", "delta_ci_high", "flip_rate", "n_images"):
        np.testing.assert_allclose(la[col].to_numpy(dtype=float), lb[col].to_numpy(dtype=float), err_msg=col)

    # resume: everything is summarised, nothing is submitted again, same rows
    again = robustbench_sys.evaluate("mobilenet_v2", suites, imagenet_sample, tmp_path / "dask", limit=N,
                                     progress=False, batch_size=8, scheduler="local:1")
    assert sorted(again.unit_id) == sorted(dask.unit_id)
    assert _rows(tmp_path / "dask").equals(b)


def test_bad_scheduler_is_one_line(tmp_path):
    for bad, msg in (("local:0", "local:N with N >= 1"), ("nowhere", "expected local:N")):
        with pytest.raises(UserError, match=msg):
            robustbench_sys.evaluate("mobilenet_v2", ["clean"], "foolbox-demo", tmp_path, limit=2, progress=False,
                                     scheduler=bad)
