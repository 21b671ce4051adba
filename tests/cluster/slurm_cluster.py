"""A real SLURM on this one machine: munged, slurmctld and two slurmd (fake nodes n1, n2) in a temp dir.

Every daemon started here is killed by pid and reaped in stop(), also when start() or a test fails.
"""
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")


def _hosts_entry():
    text = Path("/etc/hosts").read_text()
    if not re.search(r"^\S+\s+.*\bn1\b.*\bn2\b", text, re.M):
        with open("/etc/hosts", "a") as f:
            f.write("127.0.0.1 n1 n2\n")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class SlurmCluster:
    def __init__(self, base: Path):
        self.base = base
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None  # munged daemonizes itself: not our child, kill by pid
        self.conf = base / "slurm.conf"

    def start(self):
        b, host = self.base, socket.gethostname()
        for d in ("state", "spool-n1", "spool-n2", "log", "tmp-n1", "tmp-n2"):
            (b / d).mkdir(parents=True, exist_ok=True)
        _hosts_entry()
        self.conf.write_text(f"""ClusterName=sfd
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool-%n
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
TmpFS={b}/tmp-%n
NodeName=n1 NodeHostname={host} NodeAddr=127.0.0.1 Port=6821 CPUs=2 RealMemory=1000
NodeName=n2 NodeHostname={host} NodeAddr=127.0.0.1 Port=6822 CPUs=2 RealMemory=1000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
""")
        env = self.env()
        os.makedirs("/run/munge", exist_ok=True)
        subprocess.run(["chown", "munge:munge", "/run/munge"], check=True)
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
            self.munged_pid = int(subprocess.run(["pgrep", "-nx", "munged"], capture_output=True,
                                                 text=True).stdout)
        # Foreground daemons (-D) stay our children, so stop() can reap them; their chatter goes to a file.
        out = open(b / "log" / "daemons.out", "ab")
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env, stdout=out, stderr=out))
        time.sleep(1)
        for n in ("n1", "n2"):
            self.procs.append(subprocess.Popen(["slurmd", "-D", "-N", n], env=env, stdout=out, stderr=out))
        out.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T %D"], env=env, capture_output=True, text=True).stdout
            if re.search(r"idle 2", out):
                return
            time.sleep(1)
        raise RuntimeError("SLURM nodes did not become idle:\n" + self.logs())

    def env(self):
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def logs(self):
        return "\n".join(p.read_text()[-3000:] for p in sorted((self.base / "log").glob("*.log")))

    def wait(self, job_id: str, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["scontrol", "show", "job", job_id], env=self.env(),
                                 capture_output=True, text=True).stdout
            m = re.search(r"JobState=(\S+).*?ExitCode=(\S+)", out, re.S)
            if m and m.group(1) not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return out
            time.sleep(1)
        subprocess.run(["scancel", job_id], env=self.env())
        raise TimeoutError(f"job {job_id} did not finish in {timeout}s\n" + self.logs())

    def stop(self):
        # Jobs' slurmstepd outlive slurmd: cancel them first, so no rank keeps running.
        if self.procs:
            subprocess.run(["scancel", "--user=root"], env=self.env(), capture_output=True, timeout=10)
            deadline = time.time() + 10
            while time.time() < deadline and subprocess.run(
                    ["squeue", "-h"], env=self.env(), capture_output=True, text=True, timeout=10).stdout.strip():
                time.sleep(0.5)
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            # Not our child, so init reaps it; wait until it is gone so a next start() sees no munged.
            deadline = time.time() + 10
            while time.time() < deadline and _alive(self.munged_pid):
                time.sleep(0.2)
            self.munged_pid = None
