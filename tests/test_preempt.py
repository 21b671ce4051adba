"""train/preempt.py and exact resume: a stop signal mid-epoch leaves a mid-epoch checkpoint and the
relaunch ends bit-identical; so does a relaunch after `kill -9` of a rank. Real launchers, 2 gloo
ranks with 2 persistent loader workers each, dropout on (per-rank RNG streams matter)."""

import os
import re
import signal
import subprocess
import time

import pytest
import torch

from slowfast_dist.data.synthetic import make_synthetic
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train.preempt import EXIT_CODE, StopSignals

import support

ROOT, BIN, ENV = support.ROOT, support.BIN, support.ENV
STEPS = 7  # steps per epoch of the set below with 2 ranks x 2 clips
RUN = ["SOLVER.MAX_EPOCH", "3", "TRAIN.EVAL_PERIOD", "0", "TRAIN.BATCH_SIZE", "2",
       "DATA.TRAIN_CROP_SIZE", "48", "DATA.TRAIN_JITTER_SCALES", "[48, 56]",
       "DATA_LOADER.NUM_WORKERS", "2", "DATA_LOADER.PERSISTENT_WORKERS", "True",
       "MODEL.DROPOUT_RATE", "0.5", "LOG_PERIOD", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_synthetic(str(root), videos=6, seconds=6, seed=1, width=64, height=48)
    return root


def torchrun(data, out, *extra):
    return support.torchrun(data, out, *RUN, *extra)


run_until, finish = support.run_until, support.finish


def final_weights(out):
    return ckpt.read_checkpoint(ckpt.checkpoint_path(out, 2))["model_state"]


def assert_bit_identical(a, b):
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    finish(torchrun(data, out))
    return final_weights(out)


def test_sigterm_mid_epoch_saves_within_30_s_and_the_relaunch_ends_bit_identical(
        data, tmp_path, uninterrupted):
    proc = torchrun(data, tmp_path)
    # SIGTERM to every process of the job, as SLURM and Grid Engine do at a time limit
    text, took = run_until(proc, rf"\] epoch 2 \[.*\] 2/{STEPS} ",
                           lambda: os.killpg(proc.pid, signal.SIGTERM))
    assert took < 30, text[-2000:]
    assert text.count("SIGTERM received: stopping") == 1  # rank 0 says it, once
    m = re.search(r"stopped on SIGTERM in epoch 2 after step (\d) of 7; checkpoint saved", text)
    assert m and text.count("stopped on SIGTERM") == 1, text[-3000:]
    mid = ckpt.checkpoint_path(tmp_path, 1, int(m.group(1)))
    assert ckpt.list_checkpoints(tmp_path)[-1] == mid and mid.exists()
    state = ckpt.read_checkpoint(mid)
    assert state["epoch"] == 0 and state["epoch_step"] == int(m.group(1))
    assert len(state["rng_states"]) == 2
    assert state["rng_states"][0]["python"] != state["rng_states"][1]["python"]  # each rank's

    again = finish(torchrun(data, tmp_path))
    assert f"resumed from {mid} (starting epoch 2, step {int(m.group(1)) + 1})" in again
    assert_bit_identical(final_weights(tmp_path), uninterrupted)
    support.record_figures("sigterm_torchrun", signal_to_exit_s=took,
                           stopped_after_step=int(m.group(1)), signalled_at_step=2,
                           log_period=1, tensors_differing_after_resume=0)
    # superseded by the end of epoch 2: gone, so PySlowFast's "last file" resume is right too
    assert not mid.exists() and ckpt.list_checkpoints(tmp_path)[-1].name.endswith("03.pyth")


def mpirun_script(data, out, *extra):
    """launch/mpirun.sh with 2 ranks (the real mpirun); logs under out/logs/j."""
    env = dict(ENV, CFG="configs/demo.yaml", NP="2", SFD_JOB_ID="j", LOG_DIR=str(out / "logs"),
               PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.Popen(["bash", "launch/mpirun.sh", *support.opts_for(data, out, *RUN, *extra)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def rank_log(out, rank=0):
    logs = list((out / "logs" / "j").glob(f"*.rank{rank}.log"))
    return logs[0].read_text() if logs else ""


def wait_for_log(proc, out, pattern, limit=240):
    deadline = time.time() + limit
    while not re.search(pattern, rank_log(out), re.M):
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            raise AssertionError(rank_log(out)[-3000:])
        time.sleep(0.1)


def test_sigusr1_to_the_mpirun_script_stops_every_rank_with_75_and_it_resumes(
        data, tmp_path, uninterrupted):
    """What Grid Engine's -notify and SLURM's --signal do: USR1 to the job script, passed on by
    launch/mpirun.sh to the real mpirun, by mpirun to the ranks."""
    proc = mpirun_script(data, tmp_path)
    wait_for_log(proc, tmp_path, rf"\] epoch 2 \[.*\] 2/{STEPS} ")
    t0 = time.time()
    proc.send_signal(signal.SIGUSR1)  # the script's bash only
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CODE and time.time() - t0 < 30, text + rank_log(tmp_path)[-3000:]
    assert "launch: stopped on a signal after a checkpoint" in text
    assert "stopped on SIGUSR1 in epoch 2" in rank_log(tmp_path)
    took = time.time() - t0
    assert ckpt.list_checkpoints(tmp_path)[-1].name.startswith("checkpoint_epoch_00002_step_")
    again = mpirun_script(data, tmp_path)
    text, _ = again.communicate(timeout=240)
    assert again.returncode == 0, text + rank_log(tmp_path)[-3000:]
    assert_bit_identical(final_weights(tmp_path), uninterrupted)
    support.record_figures("sigusr1_mpirun_script", signal_to_exit_s=took,
                           exit_status=EXIT_CODE, tensors_differing_after_resume=0)


def _rank_pid(parent: int, rank: int) -> int:
    """The pid of the process with RANK=rank among `parent`'s children."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no child of {parent} with RANK={rank}")


def test_kill_9_of_a_rank_mid_epoch_then_relaunch_ends_bit_identical(data, tmp_path,
                                                                       uninterrupted):
    opts = ("TRAIN.CHECKPOINT_PERIOD", "1")
    proc = torchrun(data, tmp_path, *opts)
    text, took = run_until(proc, rf"\] epoch 2 \[.*\] 3/{STEPS} ",
                           lambda: os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL))
    assert proc.returncode != 0 and took < 60, text[-2000:]
    assert ckpt.list_checkpoints(tmp_path)[-1] == ckpt.checkpoint_path(tmp_path, 0)
    again = finish(torchrun(data, tmp_path, *opts))
    assert "(starting epoch 2)" in again
    assert_bit_identical(final_weights(tmp_path), uninterrupted)
    support.record_figures("kill9_torchrun", kill_to_job_end_s=took,
                           tensors_differing_after_resume=0)


def test_a_signal_is_noted_not_fatal_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals(announce=False) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert stop() and stop.requested == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
    assert EXIT_CODE == 75


def _mpi_rank_pid(rank: int) -> int:
    """The rank's main process under mpirun (not its loader workers)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and b"slowfast" in cmd:
            found[int(pid)] = parent
    mains = [pid for pid, parent in found.items() if parent not in found]
    assert len(mains) == 1, found
    return mains[0]


def test_kill_9_of_a_rank_under_mpirun_then_relaunch_ends_bit_identical(data, tmp_path,
                                                                        uninterrupted):
    opts = ("TRAIN.CHECKPOINT_PERIOD", "1")
    proc = mpirun_script(data, tmp_path, *opts)
    wait_for_log(proc, tmp_path, rf"\] epoch 2 \[.*\] 3/{STEPS} ")
    os.kill(_mpi_rank_pid(1), signal.SIGKILL)
    t0 = time.time()
    text, _ = proc.communicate(timeout=120)
    took = time.time() - t0
    assert proc.returncode != 0 and took < 60, text + rank_log(tmp_path)[-3000:]
    assert ckpt.list_checkpoints(tmp_path)[-1] == ckpt.checkpoint_path(tmp_path, 0)
    again = mpirun_script(data, tmp_path, *opts)
    text, _ = again.communicate(timeout=240)
    assert again.returncode == 0, text + rank_log(tmp_path)[-3000:]
    assert "(starting epoch 2)" in rank_log(tmp_path)
    assert_bit_identical(final_weights(tmp_path), uninterrupted)
    support.record_figures("kill9_mpirun", kill_to_job_end_s=took,
                           tensors_differing_after_resume=0)
