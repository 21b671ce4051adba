"""What the loop reports: loss, LR, throughput, MFU, timings; TensorBoard and a progress line.

The loop calls three things: `timed(loader, epoch)` around its iterator (measures how long each
batch was waited for; the first wait of an epoch is the epoch-boundary stall the study found),
`step_done(...)` after each step, and `epoch_done(epoch)`. Everything else is here, so the loop
itself never branches on logging, profiling or rank.

No step waits for the device unless it logs. On a GPU every value read back to the host is a
blocking sync that also stops the CPU from queueing the next step, and a collective per step is a
barrier. So the loss sum and the count of non-finite losses accumulate on the device, and every
`log_period` steps (and at the end of an epoch) one all-gather of every rank's [loss sum,
non-finite count, skipped samples, stop requested (a signal on any rank, `preempt.py`), and the
window's timings for TensorBoard] is read back. A non-finite loss is therefore seen up to
`log_period` steps late,
named by the step range; no checkpoint is written inside an epoch, so the last good one is kept.
Timings are per logging window: wall time between two reads, the host's data waits inside it.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.distributed as dist

from slowfast_dist.logs import format_duration
from slowfast_dist.profiling.mfu import mfu


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the run stops and the last good checkpoint is kept."""


def eta_s(epoch: int, step: int, steps: int, max_epoch: int, step_s: float,
          epoch_steps=None) -> float:
    """Seconds left after `step` (0-based) of `steps` in `epoch` (0-based) of `max_epoch`.
    `epoch_steps(e)`: the steps of epoch e, where they differ by epoch (multigrid)."""
    later = (sum(epoch_steps(e) for e in range(epoch + 1, max_epoch)) if epoch_steps
             else (max_epoch - epoch - 1) * steps)
    return ((steps - step - 1) + later) * step_s


class StepMeter:
    def __init__(self, *, rank: int, world_size: int, device, log_period: int = 10,
                 board=None, profiler=None, timers=None, stream=sys.stderr,
                 train_flops_per_clip: float | None = None, peak_tflops: float | None = None,
                 stop_requested=None, max_epoch: int | None = None):
        """`stop_requested`: a callable, true once this rank was asked to stop (a signal); at
        the next logging step `stop_agreed` becomes true on every rank at once."""
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.timers = timers  # slowfast_dist.profiling.profiler.StepTimers, or None
        self.log_period = max(1, log_period)
        self.board, self.profiler, self.stream = board, profiler, stream  # board: rank 0's
        self.flops_per_clip, self.peak_tflops = train_flops_per_clip, peak_tflops
        self.max_epoch = max_epoch  # for the ETA on the progress line
        self.epoch_steps = None  # epoch -> its steps, where they differ by epoch (multigrid)
        self.global_step = 0
        self.last_loss = math.nan
        self._steps = 0
        self._first_step = 0  # the epoch's first step here: > 0 in an epoch resumed mid-way
        self.stop_requested = stop_requested or (lambda: False)
        self.stop_agreed = False
        self._prev_sync = (0, math.nan)  # (global step, s) of the last window's collective
        self._grad_norms = None  # [sum, count] on the device, once `watch_gradients` is on
        self._reset()

    def watch_gradients(self, optimizer) -> None:
        """The gradient norm of every update, for TensorBoard: summed on the device (no sync)
        by a hook that runs inside optimizer.step(), after GradScaler unscaled the gradients."""
        self._grad_norms = torch.zeros(2, dtype=torch.float32, device=self.device)

        def hook(opt, args, kwargs):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                total = torch.nn.utils.get_total_norm(grads).float().reshape(1)
                self._grad_norms += torch.cat([total, total.new_ones(1)])

        optimizer.register_step_pre_hook(hook)

    def _reset(self):
        self.loss_sum = 0.0  # sum over this epoch's steps of the rank-averaged loss
        self.samples = 0
        self.steps_done = 0
        self.data_wait = []
        self.boundary_s = 0.0
        self.skipped = 0  # summed over ranks, from each batch's "skipped" count
        self._epoch_t0 = time.perf_counter()
        self._new_window(self._epoch_t0)

    def _new_window(self, start: float):
        self._window_t0 = start
        self._window_first_step = self.steps_done
        self._window_wait = 0.0
        self._window_samples = 0
        self._window_skipped = 0
        # [sum of finite losses, non-finite count], on the device: adding to it never syncs
        self._acc = torch.zeros(2, dtype=torch.float32, device=self.device)

    def timed(self, loader, epoch: int, start_step: int = 0):
        """Yield the loader's batches, timing the wait for each (and the epoch boundary).
        `start_step`: the step the loader starts at (a resumed epoch)."""
        self._reset()
        self._steps, self._first_step = len(loader), start_step
        if self.timers is not None:
            self.timers.epoch_start()
        t_wait = time.perf_counter()
        for i, batch in enumerate(loader):
            now = time.perf_counter()
            if self.timers is not None:
                self.timers.batch_ready()
            self.data_wait.append(now - t_wait)
            self._window_wait += now - t_wait
            if i == 0:
                self.boundary_s = now - t_wait
            # a host int, counted by collate in whichever worker built the batch
            self._window_skipped += int(batch.get("skipped", 0)) if isinstance(batch, dict) else 0
            yield batch
            t_wait = time.perf_counter()
            if self.timers is not None:
                self.timers.data_begin()

    def step_done(self, epoch: int, step: int, loss: torch.Tensor, lr: float, batch_size: int):
        """Accumulate the loss on the device; on logging steps reduce, check and log."""
        loss = loss.detach().float().reshape(())
        finite = torch.isfinite(loss)
        self._acc += torch.stack([torch.where(finite, loss, torch.zeros_like(loss)),
                                  (~finite).float()])
        self.steps_done += 1
        self.global_step += 1
        self.samples += batch_size * self.world_size
        self._window_samples += batch_size  # this rank's; summed over ranks at the window's end
        if self.timers is not None:
            self.timers.step_end()
        if self.profiler is not None:
            self.profiler.step()
        if (step + 1) % self.log_period == 0 or step + 1 == self._steps:
            self._flush(epoch, step, lr)

    # what each rank sends in the window's one collective, and how the figures are named
    _SENT = ("loss_sum", "bad", "skipped", "stop", "samples", "wall_s", "data_wait_s",
             "prev_comm_wait_s", "allreduce_s", "epoch_boundary_s", "max_memory_allocated_gb",
             "grad_norm_sum", "grad_norm_count")

    def _flush(self, epoch: int, step: int, lr: float):
        """The one sync and one collective of a logging window: every rank's figures are
        gathered (sums for the loss and the counts, min/mean/max of the rest for TensorBoard)."""
        steps = self.steps_done - self._window_first_step
        if steps == 0:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the window's wall time includes its GPU work
        t_ready = time.perf_counter()
        allreduce = self.timers.take_window_comm() if self.timers is not None else math.nan
        memory = (torch.cuda.max_memory_allocated(self.device) / 1e9
                  if self.device.type == "cuda" else math.nan)
        host = [float(self._window_skipped), float(self.stop_requested()),
                float(self._window_samples), t_ready - self._window_t0, self._window_wait / steps,
                self._prev_sync[1], allreduce, self.boundary_s, memory]
        grads = self._grad_norms if self._grad_norms is not None else torch.zeros(2)
        mine = torch.cat([self._acc.double(), torch.tensor(host, dtype=torch.float64,
                                                            device=self.device),
                          grads.to(self.device, torch.float64)])
        gathered = [mine]
        if self.world_size > 1:
            gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
            dist.all_gather(gathered, mine)
        rows = [dict(zip(self._SENT, r)) for r in torch.stack(gathered).tolist()]  # the sync
        end = time.perf_counter()
        loss_sum, bad, skipped, stop = (sum(r[k] for r in rows)
                                        for k in ("loss_sum", "bad", "skipped", "stop"))
        self.skipped += int(skipped)
        self.stop_agreed = self.stop_agreed or stop > 0
        if bad:
            first = self._first_step + self._window_first_step + 1
            where = f"step {first}" if first == step + 1 else f"steps {first}-{step + 1}"
            raise NonFiniteLoss(
                f"non-finite loss in epoch {epoch + 1}, {where} of {self._steps} "
                f"(global step {self.global_step}): {int(bad)} non-finite step loss(es) over "
                f"{self.world_size} rank(s)")
        self.last_loss = loss_sum / (self.world_size * steps)
        self.loss_sum += loss_sum / self.world_size
        window = {"steps": steps, "wall_s": end - self._window_t0,
                  "data_wait_s": self._window_wait, "sync_s": end - t_ready}
        if self.rank == 0:
            self._log(epoch, step, lr, window, sum(r["samples"] for r in rows))
            if self.board is not None:
                self._to_board(epoch, step, lr, window, rows)
        restart = time.perf_counter()  # logging time stays out of the next window
        if self.timers is not None:
            self.timers.window_end(**window, overhead_s=restart - end)
        self._prev_sync = (self.global_step, end - t_ready)
        if self._grad_norms is not None:
            self._grad_norms.zero_()
        self._new_window(restart)

    def throughput(self, samples: int, wall_s: float) -> dict:
        """clips/s in all, per GPU (process), and MFU when the device's peak is known."""
        total = samples / max(wall_s, 1e-9)
        per_gpu = total / self.world_size
        return {"clips_per_s": total, "clips_per_s_per_gpu": per_gpu,
                "mfu": mfu(per_gpu, self.flops_per_clip, self.peak_tflops)
                if self.flops_per_clip else None}

    def _eta_s(self, epoch, step, step_s):
        # at the last window's pace; evaluation time not included
        return (eta_s(epoch, step, self._steps, self.max_epoch, step_s, self.epoch_steps)
                if self.max_epoch else None)

    def _log(self, epoch, step, lr, window, samples):
        rate = self.throughput(samples, window["wall_s"])
        step_s = window["wall_s"] / window["steps"]
        data_s = window["data_wait_s"] / window["steps"]
        width = 20
        filled = int(width * (step + 1) / max(1, self._steps))
        mfu_text = f"  MFU {rate['mfu']:.1%}" if rate["mfu"] is not None else ""
        left = self._eta_s(epoch, step, step_s)
        eta = f"  ETA {format_duration(left)}" if left is not None else ""
        print(f"epoch {epoch + 1} [{'#' * filled}{'.' * (width - filled)}] "
              f"{step + 1}/{self._steps}  loss {self.last_loss:.4f}  lr {lr:.4g}  "
              f"{rate['clips_per_s_per_gpu']:.1f} clips/s/GPU{mfu_text}  "
              f"step {step_s * 1e3:.0f} ms  data {data_s * 1e3:.0f} ms{eta}",
              file=self.stream, flush=True)

    def _to_board(self, epoch, step, lr, window, rows):
        """Rank 0: the window's figures of every rank, on the global step."""
        g, steps = self.global_step, window["steps"]
        for r in rows:
            r["clips_per_s"] = r["samples"] / max(r["wall_s"], 1e-9)
            comm = r["allreduce_s"] * steps if math.isfinite(r["allreduce_s"]) else 0.0
            data = r["data_wait_s"] * steps
            wall = max(r["wall_s"], 1e-9)  # up to the window's collective, not through it
            r["shares"] = {"data_share": data / wall, "comm_share": comm / wall,
                           "compute_share": max(0.0, wall - data - comm) / wall}
        total = sum(r["clips_per_s"] for r in rows)
        norms = sum(r["grad_norm_count"] for r in rows)
        self.board.window(
            g, loss=self.last_loss, lr=lr, rows=rows, clips_per_s=total,
            grad_norm=sum(r["grad_norm_sum"] for r in rows) / norms if norms else None,
            mfu=mfu(total / self.world_size, self.flops_per_clip, self.peak_tflops)
            if self.flops_per_clip else None,
            eta_s=self._eta_s(epoch, step, window["wall_s"] / steps),
            epoch_start=self._window_first_step == 0)
        prev_step, _ = self._prev_sync
        if prev_step:  # the previous window's collective, timed only after it ended
            self.board.spread("comm_wait_s", [r["prev_comm_wait_s"] for r in rows], prev_step)

    def epoch_done(self, epoch: int) -> dict:
        elapsed = time.perf_counter() - self._epoch_t0
        n = max(1, self.steps_done)
        rate = self.throughput(self.samples, elapsed)
        stats = {
            "epoch": epoch + 1,
            "loss": self.loss_sum / n,
            "last_loss": self.last_loss,
            "steps": self.steps_done,
            "time_s": elapsed,
            "samples_per_s": rate["clips_per_s"],
            "samples_per_s_per_gpu": rate["clips_per_s_per_gpu"],
            "mfu": rate["mfu"],
            "data_wait_s": sum(self.data_wait) / n,
            "compute_s": max(0.0, elapsed - sum(self.data_wait)) / n,
            "epoch_boundary_s": self.boundary_s,
            "skipped_samples": self.skipped,
        }
        if self.rank == 0 and self.skipped:
            print(f"epoch {epoch + 1}: {self.skipped} unreadable sample(s) skipped on all ranks "
                  "(replaced by the next readable one; see the warnings for the files)",
                  file=self.stream, flush=True)
        if self.board is not None:
            self.board.epoch(self.global_step, stats)
        return stats
