"""dist/heartbeat.py: a rank that hangs (SIGSTOP) is named in one line and every process of the
job is gone within DIST.TIMEOUT_S + 60 s, under torchrun and under mpirun (real launchers, 2 gloo
ranks, 2 loader workers each)."""

import datetime
import os
import re
import signal
import subprocess
import threading
import time

import pytest
import torch.distributed as dist

from slowfast_dist.dist.heartbeat import Heartbeat

import support
from test_preempt import BIN, ENV, ROOT, RUN, STEPS, _rank_pid, data  # noqa: F401 - fixture


def _store():
    return dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=datetime.timedelta(seconds=10))


def test_a_silent_rank_is_named_once_it_missed_the_timeout_and_a_finished_one_never():
    store = _store()
    said = []
    watcher = Heartbeat(store, 0, 3, timeout_s=1.5, interval_s=0.2, on_stalled=said.append)
    quiet = Heartbeat(store, 1, 3, timeout_s=1.5, interval_s=0.2, on_stalled=said.append)
    done = Heartbeat(store, 2, 3, timeout_s=1.5, interval_s=0.2, on_stalled=said.append)
    for hb in (watcher, quiet, done):
        hb.start()
    time.sleep(0.6)
    assert not said
    quiet._stop.set()  # stops beating without saying it finished: a hung or dead rank
    done.stop()        # finished: not expected any more
    t0 = time.time()
    while not said and time.time() - t0 < 5:
        time.sleep(0.05)
    assert len(said) == 1 and 1.2 < time.time() - t0 < 3, said
    assert re.match(rf"rank 1 \(host \S+, pid {os.getpid()}\) stopped answering: no heartbeat "
                    r"for \d+ s \(DIST.TIMEOUT_S 1.5\)", said[0]), said
    assert "rank 2" not in said[0]


def _watch(proc, lines, pattern):
    """Collect output lines in a thread; an Event set at the first line matching `pattern`."""
    seen = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if re.search(pattern, line):
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    return seen


def _pids_with_env(key: str, value: str, name: str) -> list[int]:
    """The processes with that variable and name, without their children (loader workers)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if f"{key}={value}".encode() in env and name.encode() in cmd:
            out[int(pid)] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    return [pid for pid, parent in out.items() if parent not in out]


def _stop_rank_and_time_the_end(proc, rank_pid, log):
    """SIGSTOP the rank; seconds until the launcher and every process of the job are gone."""
    os.kill(rank_pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        proc.wait(timeout=120)
        while os.path.exists(f"/proc/{rank_pid}") and time.time() - t0 < 120:
            if open(f"/proc/{rank_pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # a zombie: dead, waiting for its parent to read its status
            time.sleep(0.2)
        return time.time() - t0
    finally:
        for pid in [rank_pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


HANG = ("DIST.TIMEOUT_S", "30")


def test_sigstop_of_a_rank_under_torchrun_ends_the_job_within_90_s_naming_it(data, tmp_path):
    cmd = [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
           "slowfast_dist.cli", "train", "--cfg", "configs/demo.yaml",
           *support.opts_for(data, tmp_path, *RUN, *HANG)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    assert _watch(proc, lines, rf"^epoch 2 \[.*\] 2/{STEPS} ").wait(180), "".join(lines)
    victim = _rank_pid(proc.pid, 1)
    took = _stop_rank_and_time_the_end(proc, victim, lines)
    text = "".join(lines)
    assert took < 90, text[-3000:]
    named = [l for l in lines if l.startswith("slowfast-dist: error: rank 0") and
             f"rank 1 (host" in l and f"pid {victim}) stopped answering" in l]
    assert len(named) == 1, text[-3000:]  # said once by the rank that saw it ...
    assert re.search(rf"traceback : slowfast-dist: error: rank 0: .*pid {victim}\) stopped "
                     "answering", text)  # ... and shown by torchrun for rank 0's failure
    support.record_figures("sigstop_torchrun", timeout_s=30, stop_to_all_gone_s=took)


def test_sigstop_of_a_rank_under_mpirun_ends_the_job_within_90_s_naming_it(data, tmp_path):
    env = dict(ENV, CFG="configs/demo.yaml", NP="2", SFD_JOB_ID="j",
               LOG_DIR=str(tmp_path / "logs"), PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.Popen(["bash", "launch/mpirun.sh",
                             *support.opts_for(data, tmp_path, *RUN, *HANG)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    logs = tmp_path / "logs" / "j"

    def rank0():
        found = list(logs.glob("*.rank0.log"))
        return found[0].read_text() if found else ""

    deadline = time.time() + 180
    while not re.search(rf"^epoch 2 \[.*\] 2/{STEPS} ", rank0(), re.M):
        assert proc.poll() is None and time.time() < deadline, rank0()[-3000:]
        time.sleep(0.1)
    try:
        [victim] = _pids_with_env("PMI_RANK", "1", "slowfast") or _pids_with_env(
            "OMPI_COMM_WORLD_RANK", "1", "slowfast")
    except ValueError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    took = _stop_rank_and_time_the_end(proc, victim, [])
    assert took < 90, rank0()[-3000:]
    assert re.search(rf"rank 1 \(host \S+, pid {victim}\) stopped answering", rank0()), \
        rank0()[-3000:]
    assert proc.returncode != 0
    support.record_figures("sigstop_mpirun", timeout_s=30, stop_to_all_gone_s=took)
