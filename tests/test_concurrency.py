"""Two writers on one results store: two real ``eval`` commands into one ``--out`` at the same
time give exactly the rows and summaries of one run (the per-unit lock); the reader never counts
a duplicated part twice; ``ResultsStore.verify`` finds and repairs what a bad store holds."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from robustbench_sys.results.store import ResultsStore

CLI = [sys.executable, "-m", "robustbench_sys.cli"]
N = 16
COLS = ("n_images", "n_errors", "n_paired", "top1", "top1_ci_low", "top1_ci_high", "delta_acc", "delta_ci_low",
        "delta_ci_high", "flip_rate")


def _env():
    # one thread per process: two evals on a small machine, and no oversubscription
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _args(suite, out):
    return ["eval", "--model", "mobilenet_v2", "--suite", f"clean,{suite}", "--data", "foolbox-demo",
            "--out", str(out), "--limit", str(N), "--batch-size", "4", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(shared, fresh): the store two concurrent evals wrote, and one eval's into a fresh store."""
    base = tmp_path_factory.mktemp("conc")
    suite = base / "two-resizes.toml"
    suite.write_text('name = "two-resizes"\nfamily = "resize"\nversion = 1\n\n'
                     '[[conditions]]\nname = "cv2-nearest"\nresize = "cv2-nearest"\n\n'
                     '[[conditions]]\nname = "pil-bicubic"\nresize = "pil-bicubic"\n')
    shared, fresh = base / "shared", base / "fresh"
    procs = [subprocess.Popen(CLI + _args(suite, shared), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=_env()) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0].decode(errors="replace") for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    one = subprocess.run(CLI + _args(suite, fresh), capture_output=True, env=_env(), timeout=900)
    assert one.returncode == 0, one.stderr.decode(errors="replace")[-3000:]
    return shared, fresh


def test_two_concurrent_evals_equal_one_run(stores):
    shared, fresh = stores
    # on disk (not through the de-duplicating reader): every unit holds each image exactly once
    parts = sorted(shared.glob("per_image/*/[!.]*.parquet"))
    raw = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert not raw.duplicated(["unit_id", "file"]).any()
    counts = raw.groupby("unit_id").size()
    assert len(counts) == 3 and (counts == N).all(), counts.to_dict()

    a, b = ResultsStore(shared).summaries(), ResultsStore(fresh).summaries()
    assert sorted(a.condition) == sorted(b.condition) == ["clean", "resize/cv2-nearest", "resize/pil-bicubic"]
    assert set(a.n_images + a.n_errors) == {N}
    a, b = a.set_index("condition").sort_index(), b.set_index("condition").sort_index()
    assert list(a.unit_id) == list(b.unit_id)
    for col in COLS:
        np.testing.assert_allclose(a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float), err_msg=col)
    key = ["unit_id", "file", "pred", "correct"]
    ra, rb = ResultsStore(shared).per_image(), ResultsStore(fresh).per_image()
    assert ra[key].sort_values(key).values.tolist() == rb[key].sort_values(key).values.tolist()
    assert ResultsStore(shared).verify() == []


def test_reader_drops_a_duplicated_part(stores, tmp_path, caplog):
    _, fresh = stores
    out = tmp_path / "dup"
    shutil.copytree(fresh, out)
    store = ResultsStore(out)
    summaries = store.summaries()
    clean = summaries[summaries.condition == "clean"].unit_id.iloc[0]
    before = store.read_unit_rows(clean)
    parts = sorted((out / "per_image" / clean).glob("[!.]*.parquet"))   # the compacted file
    # a second writer's copy of a batch, with other predictions (to see which one wins)
    copy = pd.read_parquet(parts[0]).assign(pred=-7, run_id="other")
    copy.to_parquet(out / "per_image" / clean / "part-zzzzzzzzzzzz.parquet", index=False)
    with caplog.at_level("WARNING", logger="robustbench_sys"):
        rows = store.read_unit_rows(clean)
    assert len(rows) == len(before) == N and not rows.duplicated(["unit_id", "file"]).any()
    assert (rows.pred != -7).all()                  # the first part (in name order) wins
    assert any(f"{len(copy)} duplicate" in r.getMessage() and clean in r.getMessage() for r in caplog.records)
    assert store.done_files(clean) == set(before.file)

    # verify names the duplicate part, an unreadable part and a temporary file; repair fixes them
    (out / "per_image" / clean / "part-000000000000.parquet").write_bytes(b"not parquet")
    tmp = out / "per_image" / clean / ".part-abc.tmp-1-deadbeef.parquet"
    tmp.write_bytes(b"half")
    problems = store.verify()
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert "part-zzzzzzzzzzzz.parquet" in text and f"{len(copy)} duplicate" in text
    assert "part-000000000000.parquet: unreadable" in text and "temporary file" in text
    assert len(store.verify(repair=True)) == 3
    assert store.verify() == []
    assert not tmp.exists() and not (out / "per_image" / clean / "part-zzzzzzzzzzzz.parquet").exists()
    assert store.read_unit_rows(clean).sort_values("file").equals(before.sort_values("file"))


def test_unit_lock_blocks_the_same_unit_only(tmp_path):
    store = ResultsStore(tmp_path)
    probe = textwrap.dedent("""
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(3)
        """)
    with store.unit_lock("unit-a"), store.unit_lock("unit-a"):     # re-entrant in one thread
        held = subprocess.run([sys.executable, "-c", probe, str(store.lock_path("unit-a"))])
        other = subprocess.run([sys.executable, "-c", probe, str(store.lock_path("unit-b"))])
    assert held.returncode == 3 and other.returncode == 0
    free = subprocess.run([sys.executable, "-c", probe, str(store.lock_path("unit-a"))])
    assert free.returncode == 0


def test_shared_unit_lock_admits_shards_and_excludes_a_whole_unit_writer(tmp_path):
    """A shard's shared hold lets another process's shard hold the unit too, never an exclusive
    (whole-unit) writer; an exclusive hold excludes shards."""
    store = ResultsStore(tmp_path)
    probe = textwrap.dedent("""
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(3)
        """)

    def probe_rc(mode):
        return subprocess.run([sys.executable, "-c", probe, str(store.lock_path("unit-a")), mode]).returncode

    with store.unit_lock("unit-a", shared=True), store.unit_lock("unit-a.shard-0"):
        assert (probe_rc("shared"), probe_rc("exclusive")) == (0, 3)
    with store.unit_lock("unit-a"):
        assert (probe_rc("shared"), probe_rc("exclusive")) == (3, 3)
    assert (probe_rc("shared"), probe_rc("exclusive")) == (0, 0)


def test_results_verify_cli_reports_then_repairs(stores, tmp_path, capsys):
    from robustbench_sys.cli import main

    _, fresh = stores
    out = tmp_path / "v"
    shutil.copytree(fresh, out)
    assert main(["results", "verify", "--out", str(out)]) == 0
    unit = sorted((out / "per_image").iterdir())[0]
    part = sorted(unit.glob("[!.]*.parquet"))[0]
    shutil.copy(part, unit / "part-zzzzzzzzzzzz.parquet")       # a duplicated batch
    capsys.readouterr()
    assert main(["results", "verify", "--out", str(out)]) == 1
    assert "duplicate" in capsys.readouterr().out
    assert main(["results", "verify", "--out", str(out), "--repair"]) == 0
    assert main(["results", "verify", "--out", str(out)]) == 0


def test_two_dask_clients_on_one_store_equal_one_run(stores, tmp_path):
    """Two ``eval --scheduler tcp://...`` clients of one Dask cluster (2 worker processes, on
    127.0.0.1) write one store at once: the rows and summaries equal a single run's."""
    distributed = pytest.importorskip("distributed")
    shared, fresh = stores
    suite = shared.parent / "two-resizes.toml"
    out = tmp_path / "two-clients"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        argv = CLI + _args(suite, out) + ["--scheduler", cluster.scheduler_address]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env())
                 for _ in range(2)]
        outs = [p.communicate(timeout=900)[0].decode(errors="replace") for p in procs]
    for p, text in zip(procs, outs):
        assert p.returncode == 0, text[-3000:]
        assert "Traceback" not in text
    parts = sorted(out.glob("per_image/*/[!.]*.parquet"))
    raw = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert not raw.duplicated(["unit_id", "file"]).any()
    assert (raw.groupby("unit_id").size() == N).all() and raw.unit_id.nunique() == 3
    a = ResultsStore(out).summaries().set_index("condition").sort_index()
    b = ResultsStore(fresh).summaries().set_index("condition").sort_index()
    assert list(a.unit_id) == list(b.unit_id) and set(a.n_images + a.n_errors) == {N}
    for col in COLS:
        np.testing.assert_allclose(a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float), err_msg=col)
    assert ResultsStore(out).verify() == []
