"""``--scheduler jobqueue:CONFIG``: the config file is checked (a bad one is one line naming the
file and key, exit 2) and becomes a dask-jobqueue cluster object whose job script carries the
queue, cores, memory, walltime, account and extra directives; nothing is submitted."""

import pytest

from robustbench_sys.cli import main
from robustbench_sys.errors import UserError
from robustbench_sys.eval.executors import jobqueue_cluster, read_jobqueue_config

pytest.importorskip("dask_jobqueue")

SLURM = ('kind = "slurm"\ncores = 8\nmemory = "32GB"\nprocesses = 2\nwalltime = "02:00:00"\nqueue = "gpu-short"\n'
         'account = "proj42"\njob_extra = ["--exclusive"]\njobs = 3\n')


@pytest.mark.parametrize("kind,queue_line,account_line", [
    ("slurm", "#SBATCH -p gpu-short", "#SBATCH -A proj42"),
    ("pbs", "#PBS -q gpu-short", "#PBS -A proj42"),
    ("sge", "#$ -q gpu-short", "#$ -P proj42"),
    ("lsf", "#BSUB -q gpu-short", "#BSUB -P \"proj42\""),
])
def test_cluster_object_and_job_script(tmp_path, kind, queue_line, account_line):
    path = tmp_path / "cluster.toml"
    path.write_text(SLURM.replace('"slurm"', f'"{kind}"'))
    cfg = read_jobqueue_config(str(path))
    assert cfg["jobs"] == 3 and cfg["kind"] == kind
    cluster = jobqueue_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert queue_line in script and account_line in script, script
    assert "--nworkers 2" in script and "--nthreads 4" in script     # 8 cores / 2 processes
    assert "export OMP_NUM_THREADS=4" in script
    if kind == "slurm":
        assert "#SBATCH --mem=30G" in script and "#SBATCH --cpus-per-task=8" in script
        assert "#SBATCH -t 02:00:00" in script and "#SBATCH --exclusive" in script


def test_yaml_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: pbs\ncores: 4\nmemory: 8GB\nqueue: short\n")
    cluster = jobqueue_cluster(read_jobqueue_config(str(path)))
    try:
        assert "#PBS -q short" in cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize("text,key", [
    ('kind = "slurm"\nmemory = "8GB"\n', "'cores' missing"),
    ('kind = "condor"\ncores = 4\nmemory = "8GB"\n', "'kind'"),
    ('kind = "slurm"\ncores = "four"\nmemory = "8GB"\n', "'cores'"),
    ('kind = "slurm"\ncores = 4\nmemory = "8GB"\nqeue = "x"\n', "unknown key 'qeue'"),
    ('kind = "slurm"\ncores = 4\nmemory = "8GB"\nprocesses = 3\n', "'processes'"),
    ('kind = "slurm"\ncores = 4\nmemory = "8GB"\njob_extra = "--x"\n', "'job_extra'"),
    ('kind = "slurm\n', "not valid toml"),
])
def test_bad_config_one_line(tmp_path, capsys, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=key):
        read_jobqueue_config(str(path))
    rc = main(["eval", "--model", "mobilenet_v2", "--data", "foolbox-demo", "--out", str(tmp_path / "o"),
               "--scheduler", f"jobqueue:{path}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(path) in err and key in err
    assert not (tmp_path / "o").exists()


def test_missing_file(tmp_path, capsys):
    rc = main(["eval", "--model", "mobilenet_v2", "--data", "foolbox-demo", "--out", str(tmp_path / "o"),
               "--plan", "--scheduler", f"jobqueue:{tmp_path / 'nope.toml'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nope.toml" in err
