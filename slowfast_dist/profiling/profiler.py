"""torch.profiler on a schedule (one trace per rank), NVTX ranges, and cheap always-on step timers.

`maybe_profile(...)` yields a profiler (or None) that `StepMeter` steps once per training step.
`StepTimers` gets, per step, data wait, compute and the loss-sync time from the meter and the
gradient-allreduce intervals from `CommTimer`; `write_summary` gathers every rank's numbers and
rank 0 writes OUTPUT_DIR/profile_summary.json.

Definitions (per step, seconds): step = wall time from the end of the previous step (or the
start of the epoch) to the end of this one, minus profiler/logging time after the step
(`overhead_s`, reported apart); data = wait for the batch; comm = union of the gradient
allreduce intervals + the end-of-step loss allreduce; compute = the rest of the step
(forward, backward not overlapped by comm, optimizer). wait = time waiting for the slowest
rank (see `comm.py`; the loss allreduce counts as wait: it moves 16 bytes); transfer = comm - wait.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from slowfast_dist.profiling.comm import CommTimer, split_wait, union_length


@contextmanager
def maybe_profile(enabled: bool, out_dir, rank: int, wait: int, warmup: int, active: int,
                  repeat: int):
    """torch.profiler with `schedule(wait, warmup, active, repeat)` writing
    `out_dir/profile/rank{rank}.<ts>.pt.trace.json`; yields None when disabled."""
    if not enabled:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities,
                 schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=repeat),
                 on_trace_ready=tensorboard_trace_handler(str(Path(out_dir) / "profile"),
                                                          worker_name=f"rank{rank}"),
                 record_shapes=False) as prof:
        yield prof


class Nvtx:
    """Balanced NVTX ranges (one open at a time); no-ops without CUDA or when disabled."""

    def __init__(self, enabled: bool):
        self.on = enabled and torch.cuda.is_available()
        self.open = False

    def begin(self, name: str) -> None:
        if self.on:
            self.end()
            torch.cuda.nvtx.range_push(name)
            self.open = True

    def end(self) -> None:
        if self.on and self.open:
            torch.cuda.nvtx.range_pop()
            self.open = False

    def attach_optimizer(self, optimizer) -> None:
        """'optimizer_step' around optimizer.step(), closing 'forward_backward'."""
        if self.on:
            optimizer.register_step_pre_hook(lambda *a: self.begin("optimizer_step"))
            optimizer.register_step_post_hook(lambda *a: self.end())


class StepTimers:
    def __init__(self, *, rank: int, world_size: int, comm: CommTimer | None = None,
                 nvtx: Nvtx | None = None):
        self.rank, self.world_size, self.comm = rank, world_size, comm
        self.nvtx = nvtx or Nvtx(False)
        self.rows = []  # per step: [step, data, compute, sync, overhead]
        self.buckets = []  # per step: CommTimer intervals
        self._start = time.perf_counter()

    def epoch_start(self) -> None:
        self._start = time.perf_counter()
        self.nvtx.begin("data_wait")

    def batch_ready(self) -> None:
        self.nvtx.begin("forward_backward")

    def data_begin(self) -> None:
        self.nvtx.begin("data_wait")

    def step_end(self, *, data_wait: float, compute: float, sync: float, end: float,
                 writer=None, global_step: int = 0) -> None:
        """Called last in `StepMeter.step_done`; `end` is when the step's work finished."""
        self.nvtx.end()
        buckets = self.comm.pop_step() if self.comm is not None else []
        self.buckets.append(buckets)
        if writer is not None:
            writer.add_scalar("time/allreduce_s", union_length(buckets), global_step)
        now = time.perf_counter()
        self.rows.append([end - self._start, data_wait, compute, sync, now - end])
        self._start = now

    def summary(self, writer=None, global_step: int = 0) -> dict | None:
        """Collective: gathers every rank's numbers; rank 0 returns the summary, others None."""
        mine = {"rank": self.rank, "rows": self.rows, "buckets": self.buckets}
        everyone = [mine]
        if self.world_size > 1:
            everyone = [None] * self.world_size if self.rank == 0 else None
            dist.gather_object(mine, everyone, dst=0)  # only rank 0 writes the summary
        if self.rank != 0:
            return None
        comm_wait = split_wait([r["buckets"] for r in everyone])
        ranks = []
        for r, (grad_comm, grad_wait) in zip(everyone, comm_wait):
            n = max(1, len(r["rows"]))
            step, data, compute, sync, overhead = (sum(c) / n for c in zip(*r["rows"])) \
                if r["rows"] else (0.0,) * 5
            comm = grad_comm / n + sync
            wait = grad_wait / n + sync
            ranks.append({"rank": r["rank"], "steps": len(r["rows"]), "step_s": step,
                          "data_wait_s": data, "compute_s": compute - comm, "comm_s": comm,
                          "allreduce_s": grad_comm / n, "wait_for_slowest_s": wait,
                          "transfer_s": comm - wait, "overhead_s": overhead})
        mean = {k: sum(x[k] for x in ranks) / len(ranks) for k in ranks[0] if k.endswith("_s")}
        step = max(mean["step_s"], 1e-12)
        split = {"compute_share": mean["compute_s"] / step, "comm_share": mean["comm_s"] / step,
                 "data_share": mean["data_wait_s"] / step}
        comm = max(mean["comm_s"], 1e-12)
        out = {"world_size": self.world_size, "ranks": ranks, "mean": mean, "split": split,
               "comm_split": {"wait_share": mean["wait_for_slowest_s"] / comm,
                              "transfer_share": mean["transfer_s"] / comm},
               "method": __doc__.split("Definitions", 1)[1].strip()}
        if writer is not None:
            for r in ranks:
                for k, v in r.items():
                    if k.endswith("_s"):
                        writer.add_scalar(f"profile/rank{r['rank']}/{k}", v, global_step)
            for k, v in {**split, **out["comm_split"]}.items():
                writer.add_scalar(f"profile/{k}", v, global_step)
        return out


def write_summary(timers: StepTimers, path, writer=None, global_step: int = 0) -> dict | None:
    """Collective; rank 0 writes `path` (profile_summary.json) and returns the summary."""
    out = timers.summary(writer, global_step)
    if out is not None:
        Path(path).write_text(json.dumps(out, indent=1))
    return out
