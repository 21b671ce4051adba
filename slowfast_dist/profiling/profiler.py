"""torch.profiler on a schedule (one trace per rank), NVTX ranges, and cheap always-on step timers.

`maybe_profile(...)` yields a profiler (or None) that `StepMeter` steps once per training step.
`StepTimers` gets, per logging window, the steps, wall time, data wait and loss-sync time from
the meter and, when `PROFILE.COMM_PROBE` is on, the gradient-allreduce intervals of every step
from `CommTimer`, read once per window; `write_summary` gathers every rank's numbers and rank 0
writes OUTPUT_DIR/profile_summary.json.

Definitions (per step, seconds, averaged over the logging windows): step = wall time of a window
(from the end of the previous one, or the start of the epoch, to the read of its loss, after the
device finished its work) / its steps; logging time between windows is reported apart
(`overhead_s`); data = wait for the batch; comm = union of the gradient allreduce intervals +
the window's loss allreduce; compute = the rest of the step (forward, backward not overlapped
by comm, optimizer). wait = time waiting for the slowest rank (see `comm.py`; the loss
allreduce counts as wait: it moves 24 bytes); transfer = comm - wait.
"""

from __future__ import annotations

import json

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
    """Balanced step-phase ranges (data_wait, forward_backward, optimizer_step), one open at a
    time: NVTX ranges on a GPU (Nsight Systems) and `record_function` ranges everywhere, so the
    torch.profiler trace shows the same phases. No-ops when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.cuda = enabled and torch.cuda.is_available()
        self._open = None

    def begin(self, name: str) -> None:
        if self.enabled:
            self.end()
            if self.cuda:
                torch.cuda.nvtx.range_push(name)
            self._open = torch.autograd.profiler.record_function(name)
            self._open.__enter__()

    def end(self) -> None:
        if self._open is not None:
            if self.cuda:
                torch.cuda.nvtx.range_pop()
            self._open.__exit__(None, None, None)
            self._open = None

    def attach_optimizer(self, optimizer) -> None:
        """'optimizer_step' around optimizer.step(), closing 'forward_backward'."""
        if self.enabled:
            optimizer.register_step_pre_hook(lambda *a: self.begin("optimizer_step"))
            optimizer.register_step_post_hook(lambda *a: self.end())


class StepTimers:
    """Per logging window (see `StepMeter`): steps, wall time, data wait, the loss all-reduce,
    and the gradient-allreduce intervals of each of its steps from `CommTimer`."""

    def __init__(self, *, rank: int, world_size: int, comm: CommTimer | None = None,
                 nvtx: Nvtx | None = None):
        self.rank, self.world_size, self.comm = rank, world_size, comm
        self.nvtx = nvtx or Nvtx(False)
        self.rows = []  # per window: [steps, wall, data, sync, overhead]
        self.buckets = []  # per step: CommTimer intervals

    def epoch_start(self) -> None:
        self.nvtx.begin("data_wait")

    def batch_ready(self) -> None:
        self.nvtx.begin("forward_backward")

    def data_begin(self) -> None:
        self.nvtx.begin("data_wait")

    def step_end(self) -> None:
        """After every step: host-side bookkeeping only (no device read)."""
        self.nvtx.end()
        if self.comm is not None:
            self.comm.mark_step()

    def take_window_comm(self) -> float:
        """At a logging step, after the meter's one sync: the window's bucket timings are read
        here, once, not per step or per bucket. Returns the gradient allreduce time per step
        (NaN without PROFILE.COMM_PROBE)."""
        if self.comm is None:
            return float("nan")
        buckets = self.comm.pop_window()
        self.buckets.extend(buckets)
        return sum(union_length(b) for b in buckets) / max(1, len(buckets))

    def window_end(self, *, steps: int, wall_s: float, data_wait_s: float, sync_s: float,
                   overhead_s: float = 0.0) -> None:
        self.rows.append([steps, wall_s, data_wait_s, sync_s, overhead_s])

    def summary(self) -> dict | None:
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
            steps = sum(row[0] for row in r["rows"])
            n = max(1, steps)
            step, data, sync, overhead = (sum(row[k] for row in r["rows"]) / n for k in (1, 2, 3, 4))
            comm = grad_comm / n + sync
            wait = grad_wait / n + sync
            ranks.append({"rank": r["rank"], "steps": steps, "step_s": step,
                          "data_wait_s": data, "compute_s": step - data - comm, "comm_s": comm,
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
        return out


def write_summary(timers: StepTimers, path) -> dict | None:
    """Collective; rank 0 writes `path` (profile_summary.json) and returns the summary."""
    out = timers.summary()
    if out is not None:
        Path(path).write_text(json.dumps(out, indent=1))
    return out
