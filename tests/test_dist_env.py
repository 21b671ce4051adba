import os
import socket
import subprocess
import sys
import textwrap

import pytest

from slowfast_dist.dist.env import expand_hostlist, world_info_from_env
from slowfast_dist.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.mark.parametrize("spec,hosts", [
    ("abc", ["abc"]),
    ("n[1-3,5],gpu-a[01-02]", ["n1", "n2", "n3", "n5", "gpu-a01", "gpu-a02"]),
    ("r1n[001-004]", ["r1n001", "r1n002", "r1n003", "r1n004"]),
    ("a,b[9-10]", ["a", "b9", "b10"]),
])
def test_expand_hostlist(spec, hosts):
    assert expand_hostlist(spec) == hosts


def test_detect_torchrun_wins_over_slurm():
    w = world_info_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                             "MASTER_ADDR": "h0", "MASTER_PORT": "1234", "SLURM_PROCID": "0"})
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.master_addr, w.master_port,
            w.launcher) == (3, 8, 1, 4, "h0", 1234, "torchrun")


def test_detect_openmpi_and_mpich():
    w = world_info_from_env({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16",
                             "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"})
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.launcher) == (5, 16, 1, 4, "openmpi")
    w = world_info_from_env({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0",
                             "MPI_LOCALNRANKS": "2", "SLURM_PROCID": "9"})
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.launcher) == (2, 4, 0, 2, "mpich")


def test_detect_slurm():
    w = world_info_from_env({"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2",
                             "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_JOB_NODELIST": "gpu-a[07-08]"})
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.master_addr, w.launcher) == \
        (6, 8, 2, 4, "gpu-a07", "slurm")


def test_slurm_ports_cannot_collide_between_jobs(tmp_path):
    """Rank 0 of each job takes a free port and leaves it under OUTPUT_DIR for the others: two
    jobs whose ids differ by 1000 (they collided with the job-id port) get different ports."""
    from slowfast_dist.dist.env import slurm_rendezvous_port

    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n1"}
    assert world_info_from_env(dict(env, SLURM_JOB_ID="7")).master_port is None
    assert world_info_from_env(dict(env, SLURM_JOB_ID="7", MASTER_PORT="1234")).master_port == 1234
    ports = {}
    for job in ("1041", "2041"):
        e = dict(env, SLURM_JOB_ID=job, SLURM_STEP_ID="0")
        held = socket.socket()  # rank 0's store would hold its port while the next job starts
        ports[job] = slurm_rendezvous_port(0, e, str(tmp_path), 5)
        held.bind(("", ports[job]))
        assert slurm_rendezvous_port(1, e, str(tmp_path), 5) == ports[job]  # what rank 1 reads
    assert ports["1041"] != ports["2041"]
    with pytest.raises(UserError, match=r"slurm-9.0.0.port: rank 1 waited 0.5 s for rank 0's "
                                        r"master port; OUTPUT_DIR must be on a file system"):
        slurm_rendezvous_port(1, dict(env, SLURM_JOB_ID="9", SLURM_STEP_ID="0"), str(tmp_path), 0.5)


def test_mpi4py_of_another_mpi_is_a_clear_error():
    # Open MPI's mpirun says rank 1 of 2; the installed mpi4py (MPICH) starts a 1-process world.
    code = ("import torch; torch.set_num_threads(1)\n"
            "from slowfast_dist.dist.env import init_distributed\n"
            "init_distributed(backend='gloo', timeout_s=5, env={'OMPI_COMM_WORLD_RANK': '1',"
            " 'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_LOCAL_RANK': '1',"
            " 'OMPI_COMM_WORLD_LOCAL_SIZE': '2'})\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode != 0
    assert "mpi4py sees 1 process(es), the launcher 2" in p.stderr, p.stderr[-2000:]


def test_detect_pbs_and_sge(tmp_path):
    nf = tmp_path / "nodes"
    nf.write_text("cn17\ncn17\ncn18\ncn18\n")
    w = world_info_from_env({"PBS_NODEFILE": str(nf), "PMI_RANK": "3", "PMI_SIZE": "4",
                             "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"})
    assert (w.rank, w.world_size, w.master_addr, w.launcher) == (3, 4, "cn17", "pbs")
    pe = tmp_path / "pe"
    pe.write_text("node4 2 all.q@node4 UNDEFINED\nnode5 2 all.q@node5 UNDEFINED\n")
    w = world_info_from_env({"PE_HOSTFILE": str(pe), "OMPI_COMM_WORLD_RANK": "1",
                             "OMPI_COMM_WORLD_SIZE": "4"})
    assert (w.rank, w.world_size, w.master_addr, w.launcher) == (1, 4, "node4", "sge")
    with pytest.raises(UserError, match="missing: cannot read host file"):
        world_info_from_env({"PE_HOSTFILE": str(tmp_path / "missing"), "PMI_RANK": "0"})


def test_single_process():
    w = world_info_from_env({})
    assert (w.rank, w.world_size, w.launcher) == (0, 1, "single")


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from slowfast_dist.dist.env import init_distributed
    info = init_distributed(timeout_s=60)
    t = torch.tensor([float(info.rank + 1)])
    dist.all_reduce(t)
    assert t.item() == 3.0, t
    assert info.world_size == 2 and info.backend == "gloo" and info.device == "cpu"
    assert info.launcher == sys.argv[1], info
    print("OK", info.rank, info.launcher)
    dist.destroy_process_group()
""")




def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    p = subprocess.run([f"{BIN}/torchrun", "--standalone", "--nproc_per_node", "2", str(script),
                        "torchrun"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("OK") == 2


@pytest.mark.parametrize("site_master", [False, True])
def test_mpirun_two_processes(tmp_path, site_master):
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    if site_master:
        # MASTER_ADDR/PORT given by the site: mpi4py must not even be imported (its MPI build
        # may not match the mpirun in use), so a poisoned mpi4py on the path must not matter.
        (tmp_path / "mpi4py").mkdir()
        (tmp_path / "mpi4py" / "__init__.py").write_text("raise RuntimeError('mpi4py imported')")
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port.getsockname()[1]))
        port.close()
    p = subprocess.run([f"{BIN}/mpirun", "-n", "2", sys.executable, str(script), "mpich"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("OK") == 2


def _allreduce_worker(info, out_dir):
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(info.rank + 1)])
    dist.all_reduce(t)
    with open(os.path.join(out_dir, f"r{info.rank}"), "w") as f:
        f.write(f"{t.item()} {info.local_rank} {info.world_size} {info.launcher}")
    dist.destroy_process_group()


def test_one_process_per_node_layout(tmp_path):
    from slowfast_dist.dist.spawn import spawn_local_workers

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spawn_local_workers(_allreduce_worker, num_gpus=2, num_shards=1, shard_id=0,
                        init_method=f"tcp://127.0.0.1:{port}", backend="gloo", timeout_s=60,
                        args=(str(tmp_path),))
    assert (tmp_path / "r0").read_text() == "3.0 0 2 spawn"
    assert (tmp_path / "r1").read_text() == "3.0 1 2 spawn"


def test_dry_run_512_and_unreachable_master(tmp_path):
    code = textwrap.dedent("""
        import torch, torch.distributed as dist
        from slowfast_dist.dist.env import init_distributed
        from slowfast_dist.errors import UserError
        info = init_distributed(dry_run_world_size=512, rank=7)
        assert dist.get_world_size() == 512 and dist.get_rank() == 7 and info.backend == "fake"
        t = torch.ones(2); dist.all_reduce(t)  # no-op, must not hang
        dist.destroy_process_group()
        try:
            init_distributed(init_method="tcp://127.0.0.1:1", timeout_s=2,
                             env={"RANK": "1", "WORLD_SIZE": "2"})
        except UserError as e:
            assert "127.0.0.1:1" in str(e), e
            print("UNREACHABLE OK")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0 and "UNREACHABLE OK" in p.stdout, p.stderr[-3000:]


def _dying_worker(info):
    import signal

    import torch.distributed as dist

    if info.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    dist.barrier()  # rank 0 waits for a peer that never comes: the parent must not hang


def _bad_input_worker(info):
    raise UserError(f"bad.yaml:3: rank {info.rank} is unhappy")


def _free_init():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_a_dead_or_failing_worker_is_named_by_its_global_rank():
    from slowfast_dist.dist.spawn import WorkerFailed, spawn_local_workers

    # One shard of 2 workers: rank 0 really is waiting in its barrier when rank 1 dies.
    with pytest.raises(WorkerFailed, match=r"rank 1 \(worker 1 of shard 0\) was killed by SIGKILL"):
        spawn_local_workers(_dying_worker, num_gpus=2, num_shards=1, shard_id=0,
                            init_method=_free_init(), backend="gloo", timeout_s=60)
    # Bad input in a worker: its one-line message and exit status 2 reach the parent.
    with pytest.raises(WorkerFailed, match=r"rank [01] \(.*\): bad.yaml:3: rank [01] is unhappy") as e:
        spawn_local_workers(_bad_input_worker, num_gpus=2, num_shards=1, shard_id=0,
                            init_method=_free_init(), backend="gloo", timeout_s=60)
    assert e.value.exit_code == 2


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses in LISTEN state on `port`, from /proc/net/tcp."""
    out = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            out.add(socket.inet_ntoa(bytes.fromhex(ip)[::-1]))
    return out


def test_the_rendezvous_store_listens_on_the_master_address_only():
    import datetime

    from slowfast_dist.dist.env import bound_store

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = bound_store("127.0.0.1", port, 2, datetime.timedelta(seconds=10))
    assert store is not None
    store.set("k", "v")
    assert store.get("k") == b"v"
    assert _listening_addresses(port) == {"127.0.0.1"}  # torch's own: 0.0.0.0 (or ::)
    assert bound_store("192.0.2.1", port + 1, 2, datetime.timedelta(seconds=1)) is None


def test_a_rendezvous_port_in_use_or_out_of_range_is_one_line():
    import socket

    from slowfast_dist.dist.env import init_distributed
    from slowfast_dist.errors import UserError

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(UserError, match=rf"^127.0.0.1:{port}: the rendezvous port is in use"):
            init_distributed("gloo", f"tcp://127.0.0.1:{port}", timeout_s=5, env={}, rank=0,
                             world_size=2)
    finally:
        busy.close()
    with pytest.raises(UserError, match="port 99999 is outside 1-65535"):
        init_distributed("gloo", "tcp://localhost:99999", timeout_s=5, env={}, rank=0,
                         world_size=2)
