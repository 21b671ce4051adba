"""Probe job for the scheduler tests: joins one process group, all_reduces, writes summary.json.

Stands in for `slowfast-dist train` (via SFD_TRAIN_CMD) so the scheduler plumbing is proven alone.
"""
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist


def main() -> int:
    torch.set_num_threads(1)
    t0 = time.time()
    try:
        from slowfast_dist.dist.env import init_distributed
        info = init_distributed(backend="gloo")
        rank, world = info.rank, info.world_size
    except ImportError:
        # init_distributed not written yet: derive from MPICH/OpenMPI/SLURM variables.
        e = os.environ
        rank = int(e.get("PMI_RANK", e.get("OMPI_COMM_WORLD_RANK", e.get("SLURM_PROCID", 0))))
        world = int(e.get("PMI_SIZE", e.get("OMPI_COMM_WORLD_SIZE", e.get("SLURM_NTASKS", 1))))
        dist.init_process_group("gloo", init_method="tcp://%s:%s" % (
            e.get("MASTER_ADDR", "127.0.0.1"), e.get("MASTER_PORT", "29511")), rank=rank, world_size=world)
    t = torch.ones(1) * (rank + 1)
    dist.all_reduce(t)
    print(f"PROBE rank={rank} world={world} host={socket.gethostname()} sum={t.item():.0f}", flush=True)
    if rank == 0:
        out = os.environ.get("OUTPUT_DIR", "output")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump({"nodes": 1, "ranks": world, "wall_time_s": round(time.time() - t0, 2),
                       "last_loss": float(t.item()), "mAP": None}, f)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
