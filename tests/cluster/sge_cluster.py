"""A real Grid Engine (Debian Son of Grid Engine 8.1.9) on this one machine: sge_qmaster + sge_execd.

Uses the cell the Debian packages set up (SGE_ROOT=/var/lib/gridengine, cell default, spool under
/var/spool/gridengine) and configures it idempotently: root may run jobs (min_uid 0), a 1 s schedule
interval, this host as exec host, a parallel environment `mpi` ($fill_up), `all.q` with 2 slots, and an
ABCI-like requestable resource `rt_F` so launch/sge.sh is submitted unchanged. Both daemons
daemonize themselves (init reaps them); stop() kills them by pid file and waits until they are gone.
"""
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

SGE_ROOT = "/var/lib/gridengine"
SPOOL = Path("/var/spool/gridengine")
BINARIES = ("sge_qmaster", "sge_execd", "qsub", "qconf", "qstat", "qacct")

_QUEUE = """qname all.q
hostlist {host}
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list mpi
rerun FALSE
slots 2
tmpdir /tmp
shell /bin/bash
prolog NONE
epilog NONE
shell_start_mode posix_compliant
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method NONE
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values rt_F=16
projects NONE
xprojects NONE
calendar NONE
initial_state default
""" + "".join(f"{k} INFINITY\n" for k in ("s_rt", "h_rt", "s_cpu", "h_cpu", "s_fsize", "h_fsize", "s_data",
                                          "h_data", "s_stack", "h_stack", "s_core", "h_core", "s_rss",
                                          "h_rss", "s_vmem", "h_vmem"))

_PE = """pe_name mpi
slots 16
user_lists NONE
xuser_lists NONE
start_proc_args NONE
stop_proc_args NONE
allocation_rule $fill_up
control_slaves FALSE
job_is_first_task TRUE
urgency_slots min
accounting_summary FALSE
qsort_args NONE
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pid(f: Path) -> int | None:
    """The pid in a daemon's pid file, if that process is still an SGE daemon (pids get reused)."""
    try:
        pid = int(f.read_text().split()[0])
        return pid if Path(f"/proc/{pid}/comm").read_text().startswith("sge_") else None
    except (FileNotFoundError, ValueError, IndexError):
        return None


class SgeCluster:
    def __init__(self, base: Path):
        self.base = base
        self.started = False

    def env(self):
        return dict(os.environ, SGE_ROOT=SGE_ROOT, SGE_CELL="default")

    def _q(self, *args, check=True) -> str:
        p = subprocess.run(["qconf", *args], env=self.env(), capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"qconf {' '.join(args)}: {p.stdout}{p.stderr}")
        return p.stdout

    def _file(self, name: str, text: str) -> str:
        d = self.base / "conf"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
        return str(d / name)

    def start(self):
        host = socket.gethostname()
        # The host resolves to 127.0.0.1, which SGE reports as "localhost": tell it they are one host.
        Path(SGE_ROOT, "default/common/host_aliases").write_text(f"{host} localhost\n")
        self.started = True
        subprocess.run(["/usr/sbin/sge_qmaster"], env=self.env(), check=True, timeout=30)
        deadline = time.time() + 30
        while subprocess.run(["qconf", "-sh"], env=self.env(), capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("sge_qmaster did not answer:\n" + self.logs())
            time.sleep(0.5)
        conf = re.sub(r"(?m)^(min_[ug]id)\s+\d+", r"\1 0", self._q("-sconf"))
        self._q("-Mconf", self._file("global", conf))  # qconf takes the config's name from the file name
        self._q("-Msconf", self._file("sched", re.sub(r"(?m)^schedule_interval\s+\S+",
                                                      "schedule_interval 0:0:1", self._q("-ssconf"))))
        self._q("-as", host, check=False)  # "already exists" is fine: the install adds it
        self._q("-ah", host, check=False)
        if host not in self._q("-sel", check=False):
            self._q("-Ae", self._file("exec", f"hostname {host}\nload_scaling NONE\ncomplex_values NONE\n"
                                              "user_lists NONE\nxuser_lists NONE\nprojects NONE\n"
                                              "xprojects NONE\nusage_scaling NONE\nreport_variables NONE\n"))
        complexes = self._q("-sc")
        if not re.search(r"(?m)^rt_F\s", complexes):
            self._q("-Mc", self._file("complex", complexes + "rt_F rt_F INT <= YES NO 0 0\n"))
        exists = "mpi" in self._q("-spl", check=False).split()
        self._q("-Mp" if exists else "-Ap", self._file("mpi", _PE))
        exists = "all.q" in self._q("-sql", check=False).split()
        self._q("-Mq" if exists else "-Aq", self._file("all.q", _QUEUE.format(host=host)))
        subprocess.run(["/usr/sbin/sge_execd"], env=self.env(), check=True, timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["qstat", "-f"], env=self.env(), capture_output=True, text=True).stdout
            # A queue instance with a load value (not "-NA-") and no state flag (au, E, ...) is up.
            if re.search(r"all\.q@\S+\s+\S+\s+\S+\s+[\d.]+\s+\S+\s*$", out, re.M):
                return
            time.sleep(1)
        raise RuntimeError("SGE queue all.q did not come up:\n" + out + self.logs())

    def logs(self):
        files = [SPOOL / "qmaster" / "messages", *sorted((SPOOL / "execd").glob("*/messages"))]
        return "\n".join(f.read_text()[-3000:] for f in files if f.exists())

    def wait(self, job_id: str, timeout: float) -> str:
        """Wait until the job is accounted; return its qacct record (failed, exit_status)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = subprocess.run(["qacct", "-j", job_id], env=self.env(), capture_output=True, text=True)
            if p.returncode == 0 and "exit_status" in p.stdout:
                return p.stdout
            time.sleep(1)
        subprocess.run(["qdel", job_id], env=self.env(), capture_output=True)
        raise TimeoutError(f"job {job_id} did not finish in {timeout}s\n" + self.logs())

    def stop(self):
        if not self.started:
            return
        subprocess.run(["qdel", "-u", "root"], env=self.env(), capture_output=True, timeout=30)
        pids = [_pid(SPOOL / "qmaster" / "qmaster.pid"),
                *(_pid(f) for f in (SPOOL / "execd").glob("*/execd.pid"))]
        for pid in pids:
            if pid and _alive(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 20
        while time.time() < deadline and any(p and _alive(p) for p in pids):
            time.sleep(0.2)
        for pid in pids:
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.started = False
