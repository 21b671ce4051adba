"""PySlowFast's layout: one process per node starts NUM_GPUS workers (torch.multiprocessing).

Global rank = SHARD_ID * NUM_GPUS + local_rank; world size = NUM_SHARDS * NUM_GPUS; all workers
meet at INIT_METHOD (tcp://host:port), as PySlowFast's launch_job / run does.

A worker that fails ends the whole node: the others are stopped and `WorkerFailed` names the
global rank, so the parent exits non-zero with one line instead of hanging in a collective.
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from typing import Callable


class WorkerFailed(RuntimeError):
    """A local worker died or raised; `exit_code` is its exit status (2: bad user input)."""

    def __init__(self, message: str, rank: int, exit_code: int):
        super().__init__(message)
        self.rank, self.exit_code = rank, exit_code


def _worker(local_rank, fn, num_gpus, num_shards, shard_id, init_method, backend, timeout_s,
            msg_dir, args):
    import torch

    from slowfast_dist.errors import UserError

    from .env import init_distributed

    # The node's cores are shared by its workers (one thread each on a 2-core laptop).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus))
    rank = shard_id * num_gpus + local_rank
    try:
        info = init_distributed(backend=backend, init_method=init_method, timeout_s=timeout_s,
                                rank=rank, world_size=num_shards * num_gpus,
                                local_rank=local_rank, local_world_size=num_gpus)
        fn(info, *args)
    except UserError as err:
        # The parent prints it once, as one line; a traceback would bury it.
        _note(msg_dir, local_rank, str(err))
        sys.exit(UserError.exit_code)
    except Exception as err:  # noqa: BLE001 - a bug: keep its traceback, summarise for the parent
        traceback.print_exc()
        _note(msg_dir, local_rank, f"{type(err).__name__}: {err}".splitlines()[0])
        sys.exit(1)


def _note(msg_dir: str, local_rank: int, text: str) -> None:
    with open(os.path.join(msg_dir, f"worker{local_rank}.txt"), "w") as f:
        f.write(text)


def spawn_local_workers(fn: Callable, num_gpus: int, num_shards: int, shard_id: int,
                        init_method: str, *, backend: str | None = None,
                        timeout_s: float = 300, args: tuple = ()) -> None:
    """Run fn(dist_info, *args) in num_gpus processes of this node; fn must be picklable.

    Raises WorkerFailed naming the global rank of the first worker that failed; the other
    workers are terminated first. A worker ending with `sys.exit(code)` reports that code.
    """
    import signal

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="slowfast-dist-workers-") as msg_dir:
        ctx = mp.start_processes(
            _worker, nprocs=num_gpus, start_method="spawn", join=False,
            args=(fn, num_gpus, num_shards, shard_id, init_method, backend, timeout_s, msg_dir,
                  args))

        def forward(signum, _frame):
            # a stop signal is the workers' to handle (checkpoint, exit 75); this process waits
            for p in ctx.processes:
                if p.is_alive():
                    os.kill(p.pid, signum)

        old = {sig: signal.signal(sig, forward)
               for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
        try:
            while not ctx.join(grace_period=5):
                pass
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as err:
            local = err.error_index
            rank = shard_id * num_gpus + local
            who = f"rank {rank} (worker {local} of shard {shard_id})"
            note = os.path.join(msg_dir, f"worker{local}.txt")
            text = open(note).read() if os.path.exists(note) else ""
            code = getattr(err, "exit_code", 1)
            if getattr(err, "signal_name", None):
                raise WorkerFailed(f"{who} was killed by {err.signal_name}", rank, 1) from None
            if text:
                raise WorkerFailed(f"{who}: {text}", rank, code if code > 0 else 1) from None
            raise WorkerFailed(f"{who} exited with status {code}", rank,
                               code if code > 0 else 1) from None
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
