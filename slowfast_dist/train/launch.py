"""How `train` and `test` start: under a launcher, or as PySlowFast's one process per node.

Under torchrun, mpirun, srun or qsub each process is one rank. Without a launcher,
NUM_GPUS > 1 or --num_shards makes this process start its NUM_GPUS local workers itself
(PySlowFast's launch_job), rank = SHARD_ID * NUM_GPUS + local. Exit status: 0, 2 (bad input),
3 (non-finite loss, last good checkpoint kept), 75 (stopped by SIGTERM/SIGUSR1/SIGUSR2 with a
checkpoint: run it again to resume; `preempt.py`), 1 (a worker crashed).
"""

from __future__ import annotations

import os
import re
import socket
import sys

import torch
import torch.distributed as dist

from slowfast_dist.errors import UserError
from slowfast_dist.train import checkpoint as ckpt


def _under(path, folder) -> bool:
    """Whether `path` is `folder` or inside it (what this run writes), by name only."""
    if not path or not folder:
        return False
    path, folder = os.path.abspath(os.fsdecode(path)), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def guarded(fn, cfg, info=None, report_user_errors: bool = True) -> int:
    """Run `fn(cfg)`; a user error ends the run with status 2, said once for the job; a
    non-finite loss with status 3, the last checkpoint kept; a stop signal with status 75 after a
    checkpoint. (Spawned workers leave user errors to their parent: `report_user_errors`.)"""
    from slowfast_dist.data.loader import LoaderTimeout
    from slowfast_dist.dist.failure import end_now, record_for_torchrun, say_once
    from slowfast_dist.train.meters import NonFiniteLoss
    from slowfast_dist.train.preempt import Preempted

    try:
        fn(cfg, info)
    except UserError as err:
        if not report_user_errors:
            raise
        say_once(f"slowfast-dist: error: {err}", UserError.exit_code)
        return UserError.exit_code
    except NonFiniteLoss as err:
        say_once(f"slowfast-dist: error: {err}; stopped, last good checkpoint kept in "
                 f"{ckpt.checkpoint_dir(cfg.OUTPUT_DIR)}", 3)
        return 3
    except Preempted as err:
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"slowfast-dist: {err}", file=sys.stderr, flush=True)
        record_for_torchrun(f"slowfast-dist: {err}", Preempted.exit_code)
        return Preempted.exit_code
    except OSError as err:  # a full disk, a read-only OUTPUT_DIR: one line naming the path
        from slowfast_dist.files import user_error_for

        said = user_error_for(err, writing=_under(err.filename, cfg.OUTPUT_DIR) or None)
        if said is None:
            raise
        say_once(f"slowfast-dist: error: {said}", UserError.exit_code)
        return UserError.exit_code
    except LoaderTimeout as err:
        end_now(f"slowfast-dist: error: rank {dist.get_rank() if dist.is_initialized() else 0}: "
                f"{err}", 1)
    except RuntimeError as err:
        _collective_failed(err)  # a rank that stopped answering: named, and no hang at exit
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _collective_failed(err: RuntimeError) -> None:
    """A collective that timed out or lost its peer: name the rank that went silent (the
    heartbeat's view), in one line instead of a traceback per rank, and end this process at once:
    an orderly exit could wait on the silent rank (MPI_Finalize, a barrier in clean-up)."""
    from slowfast_dist.dist import heartbeat
    from slowfast_dist.dist.failure import end_now

    hb = heartbeat.current()
    text = " ".join(str(err).split())
    if hb is None or not isinstance(err, dist.DistError) and not re.search(
            r"gloo|nccl|[Tt]imed out|timeout|Connection (closed|reset)|peer", text):
        return
    silent = hb.describe_stalled()
    what = silent or "no rank missed a heartbeat (rank 0 may have stopped; see its log)"
    end_now(f"slowfast-dist: error: rank {hb.rank}: a collective failed ({text[:160]}); {what}",
            heartbeat.EXIT_CODE)


# ---- PySlowFast's one-process-per-node layout ----------------------------------------------

def rendezvous_for_local_workers(*, num_gpus: int, num_shards: int, shard_id: int,
                                 init_method: str, env) -> str | None:
    """The INIT_METHOD this process's workers meet at when it must start them itself, else None.

    PySlowFast's layout (`--num_shards N --shard_id I`, NUM_GPUS workers per node) applies when no
    launcher numbered the processes, or when one did with one process per shard (`srun
    --ntasks-per-node 1` running PySlowFast's command line). Under torchrun / mpirun with one
    process per GPU the launcher's numbering is used and nothing is spawned.
    """
    from slowfast_dist.dist.env import world_info_from_env

    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise UserError(f"SHARD_ID {shard_id} must be in 0..NUM_SHARDS-1 (NUM_SHARDS {num_shards})")
    if num_gpus < 1:
        raise UserError(f"NUM_GPUS {num_gpus} must be at least 1")
    launcher = world_info_from_env(env)
    if launcher.launcher != "single" and launcher.world_size != num_shards:
        if num_shards > 1:
            raise UserError(f"NUM_SHARDS {num_shards} (--num_shards) with {launcher.launcher} "
                            f"starting {launcher.world_size} processes: use one process per "
                            "shard, or drop --num_shards/--shard_id and let the launcher number them")
        return None
    if num_gpus == 1 and num_shards == 1:
        return None
    if init_method:
        return init_method
    if num_shards > 1:
        raise UserError(f"NUM_SHARDS {num_shards} needs --init_method tcp://HOST:PORT, the "
                        "address of shard 0 that every shard can reach")
    with socket.socket() as s:  # one node: any free local port (PySlowFast fixes 9999)
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _worker_main(info, fn, cfg) -> None:
    code = guarded(fn, cfg, info, report_user_errors=False)
    if code:
        sys.exit(code)


def launch(fn, cfg, env=None) -> int:
    """`train`/`test` under any layout; PySlowFast's `launch_job` when this process starts the
    workers. Exit status: 0, 2 (bad input), 3 (non-finite loss), 75 (preempted, checkpoint
    saved), 1 (a worker crashed)."""
    from slowfast_dist.dist.env import init_distributed
    from slowfast_dist.dist.spawn import WorkerFailed, spawn_local_workers

    init = None
    if not cfg.DIST.DRY_RUN_WORLD_SIZE:
        init = rendezvous_for_local_workers(num_gpus=cfg.NUM_GPUS, num_shards=cfg.NUM_SHARDS,
                                            shard_id=cfg.SHARD_ID, init_method=cfg.INIT_METHOD,
                                            env=os.environ if env is None else env)
    if init is None:
        return guarded(fn, cfg)
    if torch.cuda.is_available() and cfg.NUM_GPUS > torch.cuda.device_count():
        raise UserError(f"NUM_GPUS {cfg.NUM_GPUS}: this node has {torch.cuda.device_count()} GPUs")
    if cfg.NUM_GPUS == 1:  # one worker per shard: this process is it
        info = init_distributed(init_method=init, timeout_s=cfg.DIST.TIMEOUT_S, rank=cfg.SHARD_ID,
                                world_size=cfg.NUM_SHARDS, local_rank=0, local_world_size=1)
        return guarded(fn, cfg, info)
    try:
        spawn_local_workers(_worker_main, cfg.NUM_GPUS, cfg.NUM_SHARDS, cfg.SHARD_ID, init,
                            timeout_s=cfg.DIST.TIMEOUT_S, args=(fn, cfg))
    except WorkerFailed as err:
        if err.exit_code == 75:  # the workers said why (rank 0's line); nothing failed
            return 75
        print(f"slowfast-dist: error: {err}", file=sys.stderr, flush=True)
        return err.exit_code if err.exit_code in (UserError.exit_code, 3) else 1
    return 0
