"""Find rank / world size from any launcher's environment and start torch.distributed.

Precedence (first match wins): torchrun (RANK + WORLD_SIZE), then MPI (OpenMPI OMPI_COMM_WORLD_*,
then MPICH/Hydra PMI_*), then schedulers (SLURM_PROCID, then PBS / Grid Engine host files with a
rank from an MPI launcher), else a single process. torchrun's variables win because torchrun
may itself run inside a SLURM or MPI job, and its own numbering is the one its workers share.

World size 1 without a launcher: no process group is created (collectives are skipped by callers
that check `dist.is_initialized()`); a launcher reporting world size 1 still gets a 1-rank group.
"""
from __future__ import annotations

import datetime
import errno
import os
import re
import socket
from dataclasses import dataclass, replace
from typing import Mapping

from slowfast_dist.errors import UserError

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class WorldInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    master_port: int | None
    launcher: str  # torchrun | openmpi | mpich | slurm | pbs | sge | single


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: str
    backend: str | None
    launcher: str


def expand_hostlist(spec: str) -> list[str]:
    """Expand a SLURM hostlist: 'n[1-3,5],gpu-a[01-02]' -> n1 n2 n3 n5 gpu-a01 gpu-a02."""
    hosts: list[str] = []
    # Split on commas that are not inside brackets.
    parts, depth, cur = [], 0, ""
    for ch in spec.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    for part in parts:
        hosts.extend(_expand_one(part))
    return hosts


def _expand_one(part: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", part)
    if not m:
        return [part]
    head, tail = part[: m.start()], part[m.end():]
    out = []
    for rng in m.group(1).split(","):
        if "-" in rng:
            a, b = rng.split("-", 1)
            width = len(a)
            for i in range(int(a), int(b) + 1):
                out.extend(_expand_one(f"{head}{str(i).zfill(width)}{tail}"))
        else:
            out.extend(_expand_one(f"{head}{rng}{tail}"))
    return out


def _tasks_per_node(spec: str) -> list[int]:
    """SLURM_TASKS_PER_NODE '2(x3),1' -> [2, 2, 2, 1]."""
    out = []
    for p in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", p.strip())
        if m:
            out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def _read_hosts(path: str, sge: bool) -> list[str]:
    try:
        with open(path) as f:
            lines = [l.split() for l in f if l.strip()]
    except OSError as e:
        raise UserError(f"{path}: cannot read host file ({e.strerror})") from None
    hosts = [l[0] for l in lines]
    if sge:  # PE_HOSTFILE: host slots queue ...; expand by slots
        hosts = [l[0] for l in lines for _ in range(int(l[1]) if len(l) > 1 else 1)]
    return hosts


def _mpi_ranks(env) -> tuple[int, int, int, int, str] | None:
    if "OMPI_COMM_WORLD_RANK" in env:
        g = lambda k, d: int(env.get(k, d))
        return (g("OMPI_COMM_WORLD_RANK", 0), g("OMPI_COMM_WORLD_SIZE", 1),
                g("OMPI_COMM_WORLD_LOCAL_RANK", 0), g("OMPI_COMM_WORLD_LOCAL_SIZE", 1), "openmpi")
    if "PMI_RANK" in env:
        g = lambda k, d: int(env.get(k, d))
        size = g("PMI_SIZE", 1)
        return (g("PMI_RANK", 0), size, g("MPI_LOCALRANKID", env.get("PMI_RANK", 0)),
                g("MPI_LOCALNRANKS", size), "mpich")
    return None


def world_info_from_env(env: Mapping[str, str]) -> WorldInfo:
    """Detect the launcher and this process's place in the world from `env` (no side effects)."""
    port = int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else None
    addr = env.get("MASTER_ADDR") or None
    if "RANK" in env and "WORLD_SIZE" in env:
        ws = int(env["WORLD_SIZE"])
        return WorldInfo(int(env["RANK"]), ws, int(env.get("LOCAL_RANK", 0)),
                         int(env.get("LOCAL_WORLD_SIZE", ws)), addr, port, "torchrun")
    mpi = _mpi_ranks(env)
    if mpi is not None:
        rank, ws, lr, lws, launcher = mpi
        # Inside a PBS / SGE job the master is the first host of the node file.
        if addr is None and env.get("PBS_NODEFILE"):
            addr = _read_hosts(env["PBS_NODEFILE"], sge=False)[0]
            launcher = "pbs"
        elif addr is None and env.get("PE_HOSTFILE"):
            addr = _read_hosts(env["PE_HOSTFILE"], sge=True)[0]
            launcher = "sge"
        elif addr is None and env.get("SLURM_JOB_NODELIST"):
            addr = expand_hostlist(env["SLURM_JOB_NODELIST"])[0]
        return WorldInfo(rank, ws, lr, lws, addr, port, launcher)
    if "SLURM_PROCID" in env:
        ws = int(env.get("SLURM_NTASKS", 1))
        if env.get("SLURM_NTASKS_PER_NODE"):
            lws = _tasks_per_node(env["SLURM_NTASKS_PER_NODE"])[0]
        elif env.get("SLURM_TASKS_PER_NODE"):
            lws = _tasks_per_node(env["SLURM_TASKS_PER_NODE"])[0]
        else:
            lws = 1
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if addr is None and nodelist:
            addr = expand_hostlist(nodelist)[0]
        # port None: rank 0 picks a free one at start (slurm_rendezvous_port), unless MASTER_PORT
        return WorldInfo(int(env["SLURM_PROCID"]), ws, int(env.get("SLURM_LOCALID", 0)), lws,
                         addr, port, "slurm")
    return WorldInfo(0, 1, 0, 1, None, None, "single")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _mpi_share_master(info: WorldInfo, env: Mapping[str, str]) -> WorldInfo:
    """Rank 0 broadcasts its own host and a free port with mpi4py (imported lazily).

    Its own host, not the node file's first line: mpirun may place rank 0 elsewhere."""
    try:
        from mpi4py import MPI
    except ImportError:
        return info
    size = MPI.COMM_WORLD.Get_size()
    if size != info.world_size:
        raise UserError(f"{info.launcher}: mpi4py sees {size} process(es), the launcher "
                        f"{info.world_size}: mpi4py is built on another MPI than this mpirun; "
                        "set MASTER_ADDR and MASTER_PORT instead")
    payload = None
    if info.rank == 0:
        payload = (env.get("MASTER_ADDR") or socket.gethostname(), info.master_port or _free_port())
    addr, port = MPI.COMM_WORLD.bcast(payload, root=0)
    if info.local_world_size == info.world_size:
        addr = "127.0.0.1" if addr == socket.gethostname() else addr
    return WorldInfo(info.rank, info.world_size, info.local_rank, info.local_world_size,
                     addr, port, info.launcher)


def slurm_rendezvous_port(rank: int, env: Mapping[str, str], folder: str | None,
                          timeout_s: float) -> int:
    """The master port of a SLURM job step without MASTER_PORT: rank 0 takes a free port on its
    node and leaves it in `folder`/.rendezvous/ (OUTPUT_DIR, which every node must see for
    checkpoints anyway); the other ranks read it there. A port computed from the job id would
    collide between two jobs on one node whose ids differ by the modulus. Without a folder (a
    caller with no OUTPUT_DIR), the job-id port."""
    import time
    from pathlib import Path

    job = env.get("SLURM_JOB_ID", "0") or "0"
    if not folder:
        return DEFAULT_PORT + int(job) % 1000
    name = (f"slurm-{job}.{env.get('SLURM_STEP_ID', 'batch')}."
            f"{env.get('SLURM_RESTART_COUNT', '0')}.port")  # a requeued job keeps its id
    path = Path(folder) / ".rendezvous" / name
    if rank == 0:
        from slowfast_dist.files import atomic_write

        port = _free_port()
        atomic_write(path, lambda f: f.write(str(port).encode()), prefix=".port-", fsync=True)
        return port
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise UserError(f"{path}: rank {rank} waited {timeout_s:g} s for rank 0's master "
                            "port; OUTPUT_DIR must be on a file system every node sees (or set "
                            "MASTER_PORT)")
        time.sleep(0.2)
    return int(path.read_text())


def bound_store(host: str, port: int, world_size: int, timeout):
    """Rank 0's rendezvous store listening on the master address only (torch's own listens on
    every interface): a socket bound to that address is handed to the store. None where that
    cannot be done (the address is not this host's, say): the caller lets torch make one."""
    import torch.distributed as dist

    try:
        addr = socket.gethostbyname(host)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(max(128, world_size))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise _port_in_use(host, port) from None
        return None
    try:
        # the libuv server takes no listening socket; the classic one does
        store = dist.TCPStore(host, port, world_size, True, timeout, wait_for_workers=False,
                              master_listen_fd=sock.fileno(), use_libuv=False)
    except Exception:  # noqa: BLE001 - a torch without that option: its own store
        sock.close()
        return None
    # The store's thread polls that fd until the process ends; a Python socket object closing
    # it at exit would make the thread abort the process, so Python lets go of it.
    sock.detach()
    return store


def _port_in_use(host: str, port: int) -> UserError:
    return UserError(f"{host}:{port}: the rendezvous port is in use on this host (another job, "
                     "or a run that has not ended): give another port (INIT_METHOD "
                     "tcp://host:PORT or MASTER_PORT)")


def _check_reachable(host: str, port: int, timeout_s: float) -> None:
    """Fail fast with a UserError instead of hanging on an unreachable master."""
    from torch.distributed import TCPStore

    try:
        TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=timeout_s),
                 wait_for_workers=False)
    except Exception as e:  # noqa: BLE001 - any connect failure is the user's address/port
        raise UserError(f"{host}:{port}: cannot reach the master within {timeout_s:g}s "
                        f"({type(e).__name__}); check MASTER_ADDR/MASTER_PORT or INIT_METHOD") from None


def init_distributed(backend: str | None = None, init_method: str | None = None,
                     timeout_s: float = 300, dry_run_world_size: int = 0,
                     env: Mapping[str, str] | None = None, rank: int | None = None,
                     world_size: int | None = None, local_rank: int | None = None,
                     local_world_size: int | None = None,
                     rendezvous_dir: str | None = None) -> DistInfo:
    """Start torch.distributed from the launcher's environment (or explicit rank/world_size,
    as spawn_local_workers passes) and return where this process stands. `rendezvous_dir`:
    where SLURM ranks meet to learn rank 0's port (OUTPUT_DIR)."""
    import torch
    import torch.distributed as dist

    env = os.environ if env is None else env
    if dry_run_world_size:
        # A fake world: collectives are no-ops, so a 512-rank setup can be built on a laptop.
        from torch.testing._internal.distributed.fake_pg import FakeStore

        r = rank or 0
        dist.init_process_group("fake", store=FakeStore(), rank=r, world_size=dry_run_world_size)
        return DistInfo(r, dry_run_world_size, 0, 1, "cpu", "fake", "dry-run")

    info = world_info_from_env(env)
    if rank is not None:
        info = WorldInfo(rank, world_size, local_rank if local_rank is not None else rank,
                         local_world_size or world_size, None, None, "spawn")
    elif (info.launcher in ("openmpi", "mpich", "pbs", "sge") and init_method is None
          and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT"))):
        # A site that sets MASTER_ADDR/PORT needs no mpi4py (whose MPI build may not match mpirun).
        info = _mpi_share_master(info, env)

    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise UserError("backend nccl needs CUDA; none available (use gloo)")
    if cuda:
        # One GPU per task (srun --gpus-per-task, CUDA_VISIBLE_DEVICES per rank) shows device 0 only.
        gpu = info.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
        device = f"cuda:{gpu}"
    else:
        device = "cpu"

    if info.world_size == 1 and info.launcher == "single" and init_method is None:
        return DistInfo(0, 1, 0, 1, device, None, "single")

    if init_method is None and info.launcher == "torchrun":
        init_method = "env://"  # torchrun's agent already serves the store at MASTER_PORT
    if init_method is None and info.launcher == "slurm" and info.master_port is None:
        info = replace(info, master_port=slurm_rendezvous_port(info.rank, env, rendezvous_dir,
                                                               min(timeout_s, 300)))
    if init_method is None:
        if info.master_addr is None:
            raise UserError(f"{info.launcher}: no master address; set MASTER_ADDR/MASTER_PORT "
                            "or INIT_METHOD tcp://host:port")
        init_method = f"tcp://{info.master_addr}:{info.master_port or DEFAULT_PORT}"
    m = re.fullmatch(r"tcp://\[?([^\]]+?)\]?:(\d+)", init_method)
    if m is None and not init_method.startswith(("env://", "file://")):
        raise UserError(f"INIT_METHOD {init_method!r}: expected tcp://host:port, env:// or file://")
    if m is not None and not 0 < int(m.group(2)) < 65536:
        raise UserError(f"rendezvous {init_method!r} (INIT_METHOD, or MASTER_ADDR/MASTER_PORT): "
                        f"port {m.group(2)} is outside 1-65535")
    if m is not None and info.rank != 0:
        _check_reachable(m.group(1), int(m.group(2)), min(timeout_s, 60))
    timeout = datetime.timedelta(seconds=timeout_s)
    store = None
    if m is not None and info.rank == 0:
        store = bound_store(m.group(1), int(m.group(2)), info.world_size, timeout)
    if store is not None:
        # the prefix torch puts on a store it makes from an init_method, as the others' have
        dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=0,
                                world_size=info.world_size, timeout=timeout)
    else:
        try:
            dist.init_process_group(backend, init_method=init_method, rank=info.rank,
                                    world_size=info.world_size, timeout=timeout)
        except RuntimeError as err:  # torch's DistNetworkError: the same, for its own store
            if m is not None and "EADDRINUSE" in str(err):
                raise _port_in_use(m.group(1), int(m.group(2))) from None
            raise
    return DistInfo(info.rank, info.world_size, info.local_rank, info.local_world_size, device,
                    backend, info.launcher)
