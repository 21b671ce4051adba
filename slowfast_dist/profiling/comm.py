"""Communication timers (`PROFILE.COMM_PROBE`, off by default): a DDP comm hook that times
every gradient bucket's allreduce.

`CommTimer.hook` replaces DDP's built-in C++ allreduce (same maths: divide by the world size,
then sum, optionally on a bf16/fp16 copy as torch's compression hooks do) and records, per
bucket, the interval from the hook call (this rank hands the bucket over) to the completion of
the allreduce future. It costs a Python call per bucket, hence off by default.
- CPU / gloo: the `then` callback runs when the allreduce has finished, so `perf_counter()` in
  it is the completion time.
- CUDA / nccl: the future is marked done when the kernel is enqueued, not finished; the hook
  therefore records a CUDA event at the call and one inside the callback (which runs on a stream
  ordered after the collective). The events are read with `elapsed_time` once per logging
  window, after the meter's one sync, never per step or per bucket.

Waiting-for-the-slowest-rank vs moving bytes (`split_wait`): every interval is stored relative
to the completion of the step's last bucket, a moment all ranks share to within one network
latency, so no clock synchronisation is needed. For bucket b, the last rank to arrive arrives
at L_b = max over ranks of the arrival offsets; rank i spends [arrival_i, L_b] waiting for the
slowest rank (it cannot receive before everyone has sent). The union of those waiting
intervals is the wait; the union of all bucket intervals minus it is the transfer (which also
contains queueing behind earlier buckets on this rank). It is an estimate, not a trace.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist


def union_length(intervals) -> float:
    """Total length covered by a set of (start, end) intervals (overlaps counted once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0.0)


class CommTimer:
    def __init__(self, world_size: int, cuda: bool, compress: str = "none"):
        self.world_size, self.cuda = world_size, cuda
        self.wire_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[compress]
        self._step = []  # this step's buckets: [start, end], floats on CPU, events on CUDA
        self._steps = []  # finished steps of the current logging window

    def register(self, ddp_model) -> None:
        ddp_model.register_comm_hook(state=None, hook=self.hook)

    def hook(self, state, bucket):
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            start = time.perf_counter()
        slot = [start, None]
        self._step.append(slot)
        buffer = bucket.buffer()
        wire = buffer if self.wire_dtype is None else buffer.to(self.wire_dtype)
        fut = dist.all_reduce(wire.div_(self.world_size), group=state, async_op=True).get_future()

        def done(f):
            if self.cuda:
                slot[1] = torch.cuda.Event(enable_timing=True)
                slot[1].record()
            else:
                slot[1] = time.perf_counter()
            reduced = f.value()[0]
            if reduced.data_ptr() != buffer.data_ptr():  # a compressed copy went on the wire
                buffer.copy_(reduced)
            return buffer

        return fut.then(done)

    def mark_step(self) -> None:
        """End of a training step (host bookkeeping only)."""
        self._steps.append(self._step)
        self._step = []

    def pop_window(self) -> list[list[tuple[float, float]]]:
        """Per step of the window, its bucket intervals in seconds relative to that step's last
        completion (<= 0). Call after the device has finished the window's work."""
        steps, self._steps = self._steps, []
        return [self._intervals([s for s in slots if s[1] is not None]) for slots in steps]

    def _intervals(self, slots) -> list[tuple[float, float]]:
        if not slots:
            return []
        if self.cuda:
            ref = slots[0][0]
            ends = [ref.elapsed_time(s[1]) / 1e3 for s in slots]
            starts = [ref.elapsed_time(s[0]) / 1e3 for s in slots]
        else:
            starts, ends = [s[0] for s in slots], [s[1] for s in slots]
        end = max(ends)
        return [(s - end, e - end) for s, e in zip(starts, ends)]


def split_wait(per_rank_steps: list[list[list[tuple[float, float]]]]) -> list[tuple[float, float]]:
    """Per rank (sum of allreduce time, sum of time waiting for the slowest rank) over all steps.

    `per_rank_steps[rank][step]` is that step's bucket intervals from `CommTimer.pop_window`."""
    ranks = len(per_rank_steps)
    out = [[0.0, 0.0] for _ in range(ranks)]
    steps = min(len(s) for s in per_rank_steps)
    for k in range(steps):
        buckets = [per_rank_steps[r][k] for r in range(ranks)]
        for r in range(ranks):
            out[r][0] += union_length(buckets[r])
        if len({len(b) for b in buckets}) != 1:
            continue  # ranks disagree on the buckets of this step: no wait estimate
        latest = [max(b[j][0] for b in buckets) for j in range(len(buckets[0]))]
        for r in range(ranks):
            waits = [(s, min(max(s, latest[j]), e)) for j, (s, e) in enumerate(buckets[r])]
            out[r][1] += union_length(waits)
    return [tuple(x) for x in out]
