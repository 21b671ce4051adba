"""PySlowFast's layout: one process per node starts NUM_GPUS workers (torch.multiprocessing).

Global rank = SHARD_ID * NUM_GPUS + local_rank; world size = NUM_SHARDS * NUM_GPUS; all workers
meet at INIT_METHOD (tcp://host:port), as PySlowFast's launch_job / run does.
"""
from __future__ import annotations

from typing import Callable


def _worker(local_rank, fn, num_gpus, num_shards, shard_id, init_method, backend, timeout_s, args):
    import torch

    from .env import init_distributed

    torch.set_num_threads(1)  # workers share the node's cores
    info = init_distributed(backend=backend, init_method=init_method, timeout_s=timeout_s,
                            rank=shard_id * num_gpus + local_rank,
                            world_size=num_shards * num_gpus, local_rank=local_rank,
                            local_world_size=num_gpus)
    fn(info, *args)


def spawn_local_workers(fn: Callable, num_gpus: int, num_shards: int, shard_id: int,
                        init_method: str, *, backend: str | None = None,
                        timeout_s: float = 300, args: tuple = ()) -> None:
    """Run fn(dist_info, *args) in num_gpus processes of this node; fn must be picklable."""
    import torch.multiprocessing as mp

    mp.start_processes(_worker, nprocs=num_gpus, start_method="spawn", join=True,
                       args=(fn, num_gpus, num_shards, shard_id, init_method, backend, timeout_s,
                             args))
