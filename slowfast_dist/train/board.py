"""What TensorBoard shows of a training run: one run per OUTPUT_DIR, every value on the global step.

Rank 0 writes the event files into OUTPUT_DIR itself (TENSORBOARD.LOG_DIR, when set, is taken
relative to OUTPUT_DIR as in PySlowFast), so `tensorboard --logdir runs/` lists each OUTPUT_DIR
under runs/ as one run named after it. A resumed attempt appends to the same run and hides what
an earlier attempt wrote after the step it resumes from (TensorBoard's purge step).

Tags (x axis: the global step, the optimizer-independent count of training steps):
- `train/loss`, `train/lr`, `train/grad_norm`, `perf/clips_per_s`, `perf/mfu`, `time/eta_min`:
  per logging window (LOG_PERIOD steps).
- `rank/<figure>/{min,mean,max}` over the ranks, per window: `clips_per_s` (a rank's own pace),
  `data_wait_s` (per step), `comm_wait_s` (time in the window's closing collective, waiting for
  the slowest rank), `allreduce_s` (gradient allreduce per step, PROFILE.COMM_PROBE),
  `max_memory_allocated_gb` (GPU), and `epoch_boundary_s` (the first batch's wait of an epoch,
  the study's stall) at the first window of each epoch.
- `profile/{data,comm,compute}_share`: the split of the step per window, mean over ranks.
- `epoch/*` at the step where the epoch ended; `eval/mAP` at the step it was measured after.
- `config` (text): the resolved config; the hparams tab: the figures that define the run.
The "Custom scalars" tab draws the min/mean/max of each rank figure as one band, and the split
as one chart.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

RANK_FIGURES = ("clips_per_s", "data_wait_s", "comm_wait_s", "allreduce_s",
                "max_memory_allocated_gb", "epoch_boundary_s")
SHARES = ("data_share", "comm_share", "compute_share")
METRICS = ("eval/mAP", "train/loss", "perf/clips_per_s")  # the hparams tab's columns


def log_dir(output_dir, configured: str) -> Path:
    """OUTPUT_DIR, or TENSORBOARD.LOG_DIR joined to it (an absolute LOG_DIR stays as it is)."""
    return Path(os.path.join(output_dir, configured)) if configured else Path(output_dir)


def spread(values) -> dict | None:
    """{min, mean, max} of the finite values, None when there is none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return {"min": min(vals), "mean": sum(vals) / len(vals), "max": max(vals)}


class Board:
    def __init__(self, path, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events an earlier attempt wrote after the resumed step are hidden; the
        # values at the resumed step itself (the epoch's end, its mAP) are kept
        self.writer = SummaryWriter(str(path), purge_step=start_step + 1 if start_step else None)

    def scalar(self, tag: str, value, step: int) -> None:
        if value is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def spread(self, figure: str, values, step: int) -> None:
        s = spread(values)
        for k, v in (s or {}).items():
            self.writer.add_scalar(f"rank/{figure}/{k}", v, step)

    def describe_run(self, config_yaml: str, hparams: dict, step: int, *, comm_probe: bool,
                     cuda: bool) -> None:
        """The resolved config as text, the run's defining figures as hparams, and the layout
        of the charts this run will have (no empty allreduce chart without the probe, no memory
        chart without a GPU)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # four-space indent: a code block in the text plugin's markdown
        self.writer.add_text("config", "\n".join("    " + line for line in
                                                 config_yaml.splitlines()), step)
        for summary in hparams_summary(hparams, {m: math.nan for m in METRICS}):
            # into this run, not the sub-run SummaryWriter.add_hparams would make
            self.writer._get_file_writer().add_summary(summary)
        split = ("step split, mean over ranks" if comm_probe else
                 "step split, mean over ranks (no PROFILE.COMM_PROBE: allreduce in compute)")
        absent = {"allreduce_s"} if not comm_probe else set()
        absent |= {"max_memory_allocated_gb"} if not cuda else set()
        self.writer.add_custom_scalars({
            "per rank: mean, band from min to max": {
                f: ["Margin", [f"rank/{f}/mean", f"rank/{f}/min", f"rank/{f}/max"]]
                for f in RANK_FIGURES if f not in absent},
            "time": {split: ["Multiline", [f"profile/{s}" for s in SHARES]]},
        })

    def window(self, step: int, *, loss: float, lr: float, grad_norm: float | None,
               rows: list[dict], clips_per_s: float, mfu: float | None,
               eta_s: float | None, epoch_start: bool) -> None:
        """One logging window: `rows` holds each rank's figures (see `StepMeter._flush`)."""
        self.scalar("train/loss", loss, step)
        self.scalar("train/lr", lr, step)
        self.scalar("train/grad_norm", grad_norm, step)
        self.scalar("perf/clips_per_s", clips_per_s, step)
        self.scalar("perf/mfu", mfu, step)
        if eta_s is not None:
            self.scalar("time/eta_min", eta_s / 60.0, step)
        for figure in RANK_FIGURES:
            # comm_wait_s is timed by this window's collective: the meter writes it one window
            # late, at the step it belongs to; the boundary stall only at an epoch's start
            if figure == "comm_wait_s" or (figure == "epoch_boundary_s" and not epoch_start):
                continue
            self.spread(figure, [r[figure] for r in rows], step)
        shares = [r["shares"] for r in rows]
        for s in SHARES:
            self.scalar(f"profile/{s}", sum(x[s] for x in shares) / len(shares), step)

    def epoch(self, step: int, stats: dict) -> None:
        for key in ("loss", "samples_per_s", "time_s", "skipped_samples"):
            self.scalar(f"epoch/{key}", stats[key], step)
        self.writer.flush()

    def evaluated(self, step: int, map_: float) -> None:
        self.scalar("eval/mAP", map_, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
