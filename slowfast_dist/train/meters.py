"""What the loop reports: per-step timings, loss, LR, throughput; TensorBoard and a progress line.

The loop calls three things: `timed(loader, epoch)` around its iterator (measures how long each
batch was waited for; the first wait of an epoch is the epoch-boundary stall the study found),
`step_done(...)` after each step, and `epoch_done(epoch)`. Everything else is here, so the loop
itself never branches on logging, profiling or rank.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.distributed as dist


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the run stops and the last good checkpoint is kept."""


class StepMeter:
    def __init__(self, *, rank: int, world_size: int, device, log_period: int = 10,
                 writer=None, profiler=None, timers=None, stream=sys.stderr):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.timers = timers  # slowfast_dist.profiling.profiler.StepTimers, or None
        self.log_period = max(1, log_period)
        self.writer, self.profiler, self.stream = writer, profiler, stream
        self.global_step = 0
        self.last_loss = math.nan
        self._steps = 0
        self._reset()

    def _reset(self):
        self.loss_sum = 0.0
        self.samples = 0
        self.data_wait = []
        self.compute = []
        self.boundary_s = 0.0
        self.skipped = 0  # summed over ranks, from each batch's "skipped" count
        self._batch_skipped = 0
        self._epoch_t0 = time.perf_counter()

    def timed(self, loader, epoch: int):
        """Yield the loader's batches, timing the wait for each (and the epoch boundary)."""
        self._reset()
        self._steps = len(loader)
        if self.timers is not None:
            self.timers.epoch_start()
        t_wait = time.perf_counter()
        for i, batch in enumerate(loader):
            now = time.perf_counter()
            if self.timers is not None:
                self.timers.batch_ready()
            self.data_wait.append(now - t_wait)
            if i == 0:
                self.boundary_s = now - t_wait
            self._t_batch = now
            self._batch_skipped = int(batch.get("skipped", 0)) if isinstance(batch, dict) else 0
            yield batch
            t_wait = time.perf_counter()
            if self.timers is not None:
                self.timers.data_begin()

    def step_done(self, epoch: int, step: int, loss: torch.Tensor, lr: float, batch_size: int):
        """Average the loss over ranks (also stopping every rank on a non-finite loss) and log.

        The same one all-reduce sums the skipped-sample counts, so they cost nothing extra."""
        bad = 0.0 if torch.isfinite(loss).item() else 1.0
        packed = torch.tensor([0.0 if bad else float(loss), bad, float(self._batch_skipped)],
                              dtype=torch.float64, device=self.device)
        t_sync = time.perf_counter()
        if self.world_size > 1:
            dist.all_reduce(packed)
        loss_sum, bad_ranks, skipped = packed.tolist()
        self.skipped += int(skipped)
        end = time.perf_counter()
        self.compute.append(end - self._t_batch)
        self.global_step += 1
        if bad_ranks:
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch + 1}, step {step + 1}/{self._steps} "
                f"(global step {self.global_step}) on {int(bad_ranks)} of {self.world_size} rank(s)"
            )
        self.last_loss = loss_sum / self.world_size
        self.loss_sum += self.last_loss
        self.samples += batch_size * self.world_size
        if self.profiler is not None:
            self.profiler.step()
        if self.rank == 0:
            self._log_step(epoch, step, lr)
        if self.timers is not None:
            self.timers.step_end(data_wait=self.data_wait[-1], compute=self.compute[-1],
                                 sync=end - t_sync, end=end, writer=self.writer,
                                 global_step=self.global_step)

    def _log_step(self, epoch, step, lr):
        g = self.global_step
        if self.writer is not None:
            self.writer.add_scalar("train/loss", self.last_loss, g)
            self.writer.add_scalar("train/lr", lr, g)
            self.writer.add_scalar("time/data_wait_s", self.data_wait[-1], g)
            self.writer.add_scalar("time/compute_s", self.compute[-1], g)
        if (step + 1) % self.log_period == 0 or step + 1 == self._steps:
            elapsed = time.perf_counter() - self._epoch_t0
            width = 20
            filled = int(width * (step + 1) / max(1, self._steps))
            print(f"epoch {epoch + 1} [{'#' * filled}{'.' * (width - filled)}] "
                  f"{step + 1}/{self._steps}  loss {self.last_loss:.4f}  lr {lr:.4g}  "
                  f"{self.samples / max(elapsed, 1e-9):.1f} clips/s  "
                  f"data {self.data_wait[-1] * 1e3:.0f} ms", file=self.stream, flush=True)

    def epoch_done(self, epoch: int) -> dict:
        elapsed = time.perf_counter() - self._epoch_t0
        n = max(1, len(self.compute))
        stats = {
            "epoch": epoch + 1,
            "loss": self.loss_sum / n,
            "last_loss": self.last_loss,
            "steps": len(self.compute),
            "time_s": elapsed,
            "samples_per_s": self.samples / max(elapsed, 1e-9),
            "data_wait_s": sum(self.data_wait) / n,
            "compute_s": sum(self.compute) / n,
            "epoch_boundary_s": self.boundary_s,
            "skipped_samples": self.skipped,
        }
        if self.rank == 0 and self.skipped:
            print(f"epoch {epoch + 1}: {self.skipped} unreadable sample(s) skipped on all ranks "
                  "(replaced by the next readable one; see the warnings for the files)",
                  file=self.stream, flush=True)
        if self.rank == 0 and self.writer is not None:
            for key in ("loss", "samples_per_s", "data_wait_s", "epoch_boundary_s", "time_s",
                        "skipped_samples"):
                self.writer.add_scalar(f"epoch/{key}", stats[key], epoch + 1)
            self.writer.flush()
        return stats
