"""launch/ scripts with the real trainer: process group, finite loss, checkpoint, JOB SUMMARY, exit codes.

SLURM is a real local cluster (tests/cluster/slurm_cluster.py: two fake nodes on this machine); PBS is
run with a faked PBS environment and the real MPICH mpirun from .venv. The data set is a tiny synthetic
one made once per session, so nothing depends on demo_data/.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "slowfast-dist")
needs_mpirun = pytest.mark.skipif(not (VENV_BIN / "mpirun").exists(), reason="no mpirun in the virtualenv")


def _env(tmp_path, **extra):
    # One thread per rank: several ranks share this machine's two cores.
    env = dict(os.environ, OUTPUT_DIR=str(tmp_path / "out"), LOG_DIR=str(tmp_path / "logs"),
               PATH=f"{VENV_BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _pbs_env(tmp_path, cfg, cmd="slowfast-dist train"):
    nodes = tmp_path / "nodes"
    nodes.write_text("localhost\nlocalhost\n")  # PBS lists a host once per slot
    return _env(tmp_path, PBS_NODEFILE=str(nodes), PBS_JOBID="42.pbs", PBS_O_WORKDIR=str(ROOT),
                NPN="2", CFG=str(cfg), SFD_TRAIN_CMD=cmd)


@pytest.fixture(scope="session")
def overrides(tmp_path_factory):
    """KEY VALUE overrides pointing configs/demo.yaml at a tiny synthetic set (3 train videos x 4 s =
    12 train keyframes >= batch 2 x 4 ranks), one epoch, no evaluation, no loader workers."""
    d = tmp_path_factory.mktemp("synthetic")
    subprocess.run([CLI, "make-synthetic", str(d), "--videos", "4", "--seconds", "4"], check=True,
                   capture_output=True, timeout=120)
    return ["AVA.FRAME_DIR", f"{d}/frames", "AVA.FRAME_LIST_DIR", f"{d}/frame_lists",
            "AVA.ANNOTATION_DIR", f"{d}/annotations", "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "2",
            "TRAIN.EVAL_PERIOD", "0", "DATA_LOADER.NUM_WORKERS", "0", "TENSORBOARD.ENABLE", "False"]


def _check_real_run(out_dir: Path, log_dir: Path, ranks: int, stdout: str):
    """The trainer ran as one process group of `ranks`, got a finite loss and wrote a checkpoint."""
    logs = sorted(log_dir.glob("*.rank*.log"), key=lambda p: int(p.name.split(".rank")[1].split(".")[0]))
    assert [l.name.split(".")[-2] for l in logs] == [f"rank{r}" for r in range(ranks)], stdout
    rank0 = logs[0].read_text()
    assert f"{ranks} rank(s) on" in rank0, rank0
    s = json.loads((out_dir / "summary.json").read_text())
    assert s["ranks"] == ranks, s
    assert s["last_loss"] is not None and math.isfinite(s["last_loss"]), s
    assert list((out_dir / "checkpoints").glob("checkpoint_epoch_*.pyth")), "no checkpoint written"
    assert f"JOB SUMMARY nodes=1 ranks={ranks}" in stdout, stdout
    assert stdout.count("JOB SUMMARY") == 1, stdout  # the script's line, not also rank 0's


@needs_mpirun
def test_pbs_real_trainer_two_ranks(tmp_path, overrides):
    p = subprocess.run(["bash", "launch/pbs.sh", *overrides], cwd=ROOT, timeout=240,
                       env=_pbs_env(tmp_path, ROOT / "configs" / "demo.yaml"), capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    _check_real_run(tmp_path / "out", tmp_path / "logs" / "42.pbs", 2, p.stdout)


@needs_mpirun
def test_mpirun_script_real_trainer_two_ranks(tmp_path, overrides):
    env = _env(tmp_path, CFG=str(ROOT / "configs" / "demo.yaml"), NP="2", SFD_JOB_ID="j1")
    p = subprocess.run(["bash", "launch/mpirun.sh", *overrides], cwd=ROOT, timeout=240, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    _check_real_run(tmp_path / "out", tmp_path / "logs" / "j1", 2, p.stdout)


def test_torchrun_script_real_trainer_two_ranks(tmp_path, overrides):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _env(tmp_path, CFG=str(ROOT / "configs" / "demo.yaml"), NPROC="2", MASTER_PORT=str(port))
    p = subprocess.run(["bash", "launch/torchrun.sh", *overrides], cwd=ROOT, timeout=240, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["ranks"] == 2 and math.isfinite(s["last_loss"]), s
    assert list((tmp_path / "out" / "checkpoints").glob("checkpoint_epoch_*.pyth"))
    assert "JOB SUMMARY nodes=1 ranks=2" in p.stdout, p.stdout
    assert p.stdout.count("JOB SUMMARY") == 1, p.stdout
    # torchrun keeps one log per local rank under its --log-dir
    assert len(list((tmp_path / "logs").rglob("stdout.log"))) == 2


def test_missing_config_fails_fast(tmp_path):
    for script in ("launch/mpirun.sh", "launch/torchrun.sh"):
        p = subprocess.run(["bash", script], cwd=ROOT, timeout=60, capture_output=True, text=True,
                           env=_env(tmp_path, CFG=str(tmp_path / "missing.yaml")))
        assert p.returncode == 2 and "missing.yaml' does not exist" in p.stderr, script


def test_bad_override_fails_before_any_rank_starts(tmp_path):
    # SFD_TRAIN_CMD would leave a mark if a rank were started.
    p = subprocess.run(["bash", "launch/mpirun.sh", "NO_SUCH.KEY", "1"], cwd=ROOT, timeout=60,
                       capture_output=True, text=True,
                       env=_env(tmp_path, CFG="configs/demo.yaml", SFD_TRAIN_CMD=f"touch {tmp_path}/started"))
    assert p.returncode == 2 and "unknown config key NO_SUCH.KEY" in p.stderr, p.stderr
    assert not (tmp_path / "started").exists()


def test_pbs_hostfile_keeps_the_node_file_order(tmp_path):
    # Rank 0 runs on the hostfile's first host; it must be PBS's first (mother superior), not the
    # alphabetically first. A stand-in mpirun records the hostfile it is given.
    fake = tmp_path / "mpirun"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && exit 0\n'
                    f'while [ $# -gt 0 ]; do [ "$1" = -hostfile ] && cp "$2" {tmp_path}/hosts; shift; done\n')
    fake.chmod(0o755)
    env = _pbs_env(tmp_path, ROOT / "configs" / "demo.yaml", "true")
    (tmp_path / "nodes").write_text("cn10\ncn10\ncn02\ncn02\n")
    subprocess.run(["bash", "launch/pbs.sh"], cwd=ROOT, timeout=60, capture_output=True, text=True,
                   env=dict(env, MPIRUN=str(fake)))
    assert (tmp_path / "hosts").read_text().split() == ["cn10", "cn10", "cn02", "cn02"]  # NPN=2


@needs_mpirun
def test_missing_summary_is_reported(tmp_path):
    # The job "succeeds" (true) but writes no summary.json: the script must fail and say so.
    p = subprocess.run(["bash", "launch/pbs.sh"], cwd=ROOT, timeout=120, capture_output=True, text=True,
                       env=_pbs_env(tmp_path, ROOT / "configs" / "demo.yaml", "true"))
    assert p.returncode != 0 and "JOB SUMMARY missing" in p.stderr


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "cluster"))
    from slurm_cluster import BINARIES, SlurmCluster
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing or os.geteuid() != 0:
        pytest.skip(f"SLURM not usable here (missing {missing} or not root); see tests/cluster/install_deps.sh")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_slurm_two_nodes_real_trainer(slurm, tmp_path, overrides):
    env = _env(tmp_path, MASTER_PORT="29517", **slurm.env())
    p = subprocess.run(["sbatch", "--parsable", "-N", "2", "--ntasks-per-node", "2",
                        f"--output={tmp_path}/job.out", "launch/slurm.sbatch", "configs/demo.yaml", *overrides],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    job = p.stdout.strip().split(";")[0]
    state = slurm.wait(job, 200)
    out = (tmp_path / "job.out").read_text()
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state + out + slurm.logs()
    # The trainer counts distinct host names; both fake nodes are this machine, hence nodes=1.
    _check_real_run(tmp_path / "out", tmp_path / "logs" / job, 4, out)


@pytest.fixture(scope="session")
def sge(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "cluster"))
    from sge_cluster import BINARIES, SgeCluster
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing or os.geteuid() != 0:
        pytest.skip(f"Grid Engine not usable here (missing {missing} or not root); see tests/cluster/install_deps.sh")
    c = SgeCluster(tmp_path_factory.mktemp("sge"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@needs_mpirun
def test_sge_pe_two_slots_real_trainer(sge, tmp_path, overrides):
    # qsub passes no environment unless asked: hand over what the script needs with -v.
    env = _env(tmp_path, **sge.env())
    pass_env = ",".join(f"{k}={env[k]}" for k in ("OUTPUT_DIR", "LOG_DIR", "OMP_NUM_THREADS"))
    p = subprocess.run(["qsub", "-terse", "-pe", "mpi", "2", "-v", pass_env, "-o", f"{tmp_path}/job.out",
                        "launch/sge.sh", "configs/demo.yaml", *overrides],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    job = p.stdout.strip()
    acct = sge.wait(job, 200)
    out = (tmp_path / "job.out").read_text()
    assert re.search(r"(?m)^failed\s+0\s*$", acct) and re.search(r"(?m)^exit_status\s+0\s*$", acct), \
        acct + out + sge.logs()
    _check_real_run(tmp_path / "out", tmp_path / "logs" / job, 2, out)


def test_torchrun_script_says_a_user_error_once_and_keeps_its_exit_status(tmp_path, overrides):
    """Both ranks meet the same missing file after the process group is up: one line, and the
    script exits 2 although torchrun itself exits 1 (read back from torchrun's error file)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _env(tmp_path, CFG=str(ROOT / "configs" / "demo.yaml"), NPROC="2", MASTER_PORT=str(port))
    bad = [*overrides, "AVA.FRAME_LIST_DIR", str(tmp_path / "no_lists")]
    p = subprocess.run(["bash", "launch/torchrun.sh", *bad], cwd=ROOT, timeout=240, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stdout + p.stderr
    logs = "".join(f.read_text() for f in (tmp_path / "logs").rglob("*.log"))
    said = [l for l in logs.splitlines() if "no_lists" in l and "slowfast-dist: error:" in l]
    assert len(said) == 1, logs  # the ranks' own output: once
    # torchrun's own summary shows that line as the root cause, with the real status
    assert re.search(r"exitcode\s*: 2 .*\n.*\n\s*traceback : slowfast-dist: error: .*no_lists",
                     p.stderr), p.stderr
