"""A real SLURM on this one machine: munged, slurmctld and two slurmd (fake nodes n1, n2) in a temp dir.

Every daemon started here is killed by pid in stop(), also when the test fails.
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


class SlurmCluster:
    def __init__(self, base: Path):
        self.base = base
        self.pids: list[int] = []
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
            self.pids.append(int(subprocess.run(["pgrep", "-nx", "munged"], capture_output=True,
                                                text=True).stdout))
        self.pids.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env).pid)
        time.sleep(1)
        for n in ("n1", "n2"):
            self.pids.append(subprocess.Popen(["slurmd", "-D", "-N", n], env=env).pid)
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
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.pids.clear()
