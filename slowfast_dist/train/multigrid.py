"""Multigrid training's schedule (Wu et al., 2020), with PySlowFast's `MULTIGRID` keys and meaning.

Long cycle: training is split into stages of smaller clips (fewer frames T, smaller crops S)
with the global batch grown so each iteration costs about the same; every LR step of SOLVER.STEPS
runs through all of LONG_CYCLE_FACTORS, then a fine-tuning phase at the full shape. Short cycle:
within a stage, iterations cycle through two smaller crops (SHORT_CYCLE_FACTORS x the default
crop) with larger batches, then the stage's own crop. Epochs are stretched by EPOCH_FACTOR, and
the LR schedule is re-derived over them (relative LRs that include each stage's batch factor:
the linear scaling rule within the run).

Everything here is a pure function of the keys, checked value for value against PySlowFast's own
code (`tests/data/multigrid_reference.json`, made by running PySlowFast 287ec00). Where PySlowFast
fails, this module does what it evidently meant:
- long cycles without short cycles: PySlowFast's fine-tuning phase indexes the third shape of the
  last long cycle, which exists only with short cycles (IndexError); here it is that cycle's own
  shape, the same one whenever PySlowFast runs;
- PySlowFast changes the batch and BN settings only when (T, S) changes from the previous epoch;
  here every stage gets its own settings (they differ only in values PySlowFast leaves stale).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass

from slowfast_dist.errors import UserError


# MULTIGRID.LR_SCALING: the exponent of a long-cycle stage's batch factor in its LR. PySlowFast
# scales linearly; the linear rule alone loses mAP at large batches on small models
# (benchmarks/large_batch.py), so "sqrt" (Krizhevsky 2014's rule) and "none" are offered too.
LR_SCALING = {"linear": 1.0, "sqrt": 0.5, "none": 0.0}


@dataclass(frozen=True)
class MultigridSpec:
    long_cycle: bool = False
    short_cycle: bool = False
    long_cycle_factors: tuple = ((0.25, 0.5 ** 0.5), (0.5, 0.5 ** 0.5), (0.5, 1.0), (1.0, 1.0))
    short_cycle_factors: tuple = (0.5, 0.5 ** 0.5)
    epoch_factor: float = 1.5
    bn_base_size: int = 8
    eval_freq: int = 3
    lr_scaling: str = "linear"  # MULTIGRID.LR_SCALING (ours): LR factor per batch factor

    @property
    def enabled(self) -> bool:
        return self.long_cycle or self.short_cycle

    @classmethod
    def from_cfg(cls, cfg) -> MultigridSpec:
        m = cfg.MULTIGRID
        try:
            long_factors = tuple(tuple(float(x) for x in f) for f in m.LONG_CYCLE_FACTORS)
        except (TypeError, ValueError):  # [0.5, 1]: a pair where a list of pairs belongs
            raise UserError(f"MULTIGRID.LONG_CYCLE_FACTORS {list(m.LONG_CYCLE_FACTORS)}: must be "
                            "(T, S) pairs of positive factors") from None
        try:
            short_factors = tuple(float(x) for x in m.SHORT_CYCLE_FACTORS)
        except (TypeError, ValueError):
            raise UserError(f"MULTIGRID.SHORT_CYCLE_FACTORS {list(m.SHORT_CYCLE_FACTORS)}: must "
                            "be two positive spatial factors") from None
        spec = cls(long_cycle=bool(m.LONG_CYCLE), short_cycle=bool(m.SHORT_CYCLE),
                   long_cycle_factors=long_factors,
                   short_cycle_factors=short_factors,
                   epoch_factor=float(m.EPOCH_FACTOR), bn_base_size=int(m.BN_BASE_SIZE),
                   eval_freq=int(m.EVAL_FREQ), lr_scaling=str(m.LR_SCALING))
        spec.check(cfg.SOLVER.LR_POLICY)
        return spec

    def check(self, lr_policy: str) -> None:
        if not self.enabled:
            return
        bad = None
        if any(len(f) != 2 or min(f) <= 0 for f in self.long_cycle_factors) or \
                not self.long_cycle_factors:
            bad = ("MULTIGRID.LONG_CYCLE_FACTORS", "(T, S) pairs of positive factors")
        elif len(self.short_cycle_factors) != 2 or min(self.short_cycle_factors) <= 0:
            bad = ("MULTIGRID.SHORT_CYCLE_FACTORS", "two positive spatial factors")
        elif self.epoch_factor <= 0:
            bad = ("MULTIGRID.EPOCH_FACTOR", "a positive number")
        elif self.bn_base_size < 1 or self.eval_freq < 1:
            bad = ("MULTIGRID.BN_BASE_SIZE / EVAL_FREQ", "positive integers")
        elif self.lr_scaling not in LR_SCALING:
            bad = ("MULTIGRID.LR_SCALING", f"one of {', '.join(LR_SCALING)} "
                   f"(got {self.lr_scaling})")
        elif self.long_cycle and lr_policy != "steps_with_relative_lrs":
            # the long cycle's LRs carry each stage's batch factor; only this policy reads them
            bad = ("SOLVER.LR_POLICY", "steps_with_relative_lrs under MULTIGRID.LONG_CYCLE "
                   f"(got {lr_policy})")
        if bad:
            raise UserError(f"{bad[0]}: must be {bad[1]}")


@dataclass(frozen=True)
class Stage:
    """Epochs [previous stage's end_epoch, end_epoch) of the long cycle, inside LR step
    `lr_step`, at clips of `frames` x `crop`, the global batch `batch_factor` x the default."""

    lr_step: int
    batch_factor: int
    frames: int
    crop: int
    end_epoch: int


def long_cycle_schedule(spec: MultigridSpec, *, steps, max_epoch: int, frames: int,
                        crop: int) -> list[Stage]:
    """PySlowFast's `get_long_cycle_schedule` for SOLVER.STEPS `steps` and MAX_EPOCH, at the
    default shape `frames` x `crop` (DATA.NUM_FRAMES, DATA.TRAIN_CROP_SIZE)."""
    steps = list(steps)
    if len(steps) < 2:
        raise UserError("MULTIGRID.LONG_CYCLE needs SOLVER.STEPS with at least two entries")
    default_size = float(frames * crop ** 2)
    cycles = []  # per long-cycle factor: its (B, T, S) shapes, the short-cycle ones first
    for t_factor, s_factor in spec.long_cycle_factors:
        base_t, base_s = int(round(frames * t_factor)), int(round(crop * s_factor))
        shapes = [(base_t, crop * f) for f in spec.short_cycle_factors] if spec.short_cycle else []
        shapes.append((base_t, base_s))
        cycles.append([(int(round(default_size / (t * s * s))), t, s) for t, s in shapes])
    avg_batch = [statistics.fmean(b for b, _, _ in shapes) for shapes in cycles]
    plan, iterations = [], 0.0  # (lr step, shape, epochs), before the epoch factor
    for k in range(len(steps) - 1):
        for shapes, batch in zip(cycles, avg_batch):
            epochs = (steps[k + 1] - steps[k]) * batch / sum(avg_batch)
            iterations += epochs / batch
            plan.append((k, shapes[-1], epochs))
    saving = steps[-1] / iterations  # iterations of the default run per multigrid iteration
    # the fine-tuning phase saves as many iterations as the rest, at the last cycle's shape
    plan.append((len(steps) - 1, cycles[-1][-1],
                 (max_epoch - steps[-1]) / saving * avg_batch[-1]))
    stretch = max_epoch * spec.epoch_factor / sum(p[2] for p in plan)
    stages, total = [], 0.0
    for k, (b, t, s), epochs in plan:
        total += epochs * stretch
        stages.append(Stage(k, b, t, int(s), int(round(total))))
    return stages


@dataclass(frozen=True)
class Solver:
    steps: list
    lrs: list
    max_epoch: int


def derived_solver(spec: MultigridSpec, schedule: list[Stage] | None, *, steps, lrs,
                   max_epoch: int, gamma: float) -> Solver:
    """SOLVER.STEPS, LRS and MAX_EPOCH as PySlowFast's `init_multigrid` rewrites them."""
    if spec.long_cycle:
        new_steps = [0] + [s.end_epoch for s in schedule]
        new_steps[-1] = (new_steps[-2] + new_steps[-1]) // 2  # fine-tuning: two halves
        power = LR_SCALING[spec.lr_scaling]
        new_lrs = [gamma ** s.lr_step * s.batch_factor ** power for s in schedule]
        new_lrs = new_lrs[:-1] + [new_lrs[-2], new_lrs[-1]]
        return Solver(new_steps, new_lrs, schedule[-1].end_epoch)
    if spec.short_cycle:
        return Solver([int(s * spec.epoch_factor) for s in steps], list(lrs),
                      int(max_epoch * spec.epoch_factor))
    return Solver(list(steps), list(lrs), max_epoch)


def stage_at(schedule: list[Stage], epoch: int) -> Stage:
    """The stage that trains `epoch` (PySlowFast's get_current_long_cycle_shape)."""
    for s in schedule:
        if epoch < s.end_epoch:
            return s
    return schedule[-1]


@dataclass(frozen=True)
class StageSettings:
    batch_size: int  # TRAIN.BATCH_SIZE of the stage (per shard, as the key is)
    frames: int
    crop: int
    sampling_rate: int
    norm_type: str  # batchnorm, sub_batchnorm (BN over BN_BASE_SIZE clips), sync_batchnorm
    bn_splits: int  # sub_batchnorm: BN.NUM_SPLITS
    bn_sync_devices: int  # sync_batchnorm: BN.NUM_SYNC_DEVICES


def stage_settings(spec: MultigridSpec, stage: Stage, *, batch_size: int, num_gpus: int,
                   frames: int, sampling_rate: int) -> StageSettings:
    """PySlowFast's `update_long_cycle`: the batch, BN and sampling rate of a stage. BN keeps
    its statistics over BN_BASE_SIZE clips whatever the stage's batch (the paper's rule)."""
    batch = stage.batch_factor * batch_size
    per_gpu = float(batch / num_gpus) / spec.bn_base_size
    norm, splits, sync = "batchnorm", 1, 1
    if per_gpu < 1:
        norm, sync = "sync_batchnorm", int(1.0 / per_gpu)
    elif per_gpu > 1:
        norm, splits = "sub_batchnorm", int(per_gpu)
    return StageSettings(batch, stage.frames, stage.crop,
                         sampling_rate * (frames // stage.frames), norm, splits, sync)


def short_cycle(spec: MultigridSpec, *, per_gpu_batch: int, crop: int,
                default_crop: int) -> list[tuple[int, int]]:
    """(batch, crop) of the three iterations of a short cycle: PySlowFast's
    ShortCycleBatchSampler batch sizes and its data sets' crop rule."""
    out = []
    for f in spec.short_cycle_factors:
        factor = int(round((float(crop) / (f * default_crop)) ** 2))
        out.append((per_gpu_batch * factor, int(round(f * default_crop))))
    return out + [(per_gpu_batch, crop)]


def is_period_epoch(epoch: int, max_epoch: int, schedule: list[Stage] | None, eval_freq: int,
                    period: int) -> bool:
    """PySlowFast's is_eval_epoch / is_checkpoint_epoch: the last epoch; under a long cycle
    EVAL_FREQ times per stage, counted back from its end; else every `period` epochs."""
    if epoch + 1 == max_epoch:
        return True
    if schedule is not None:
        start = 0
        for s in schedule:
            if epoch < s.end_epoch:
                every = max((s.end_epoch - start) // eval_freq + 1, 1)
                return (s.end_epoch - 1 - epoch) % every == 0
            start = s.end_epoch
    return period > 0 and (epoch + 1) % period == 0


def check_frames(frames, alpha: int) -> None:
    """Every stage's clip (its `frames`) must give the Slow pathway whole frames (T a multiple
    of ALPHA)."""
    for t in frames:
        if t < alpha or t % alpha:
            raise UserError(f"MULTIGRID.LONG_CYCLE_FACTORS: a stage of {t} frames does not "
                            f"divide by SLOWFAST.ALPHA {alpha} (DATA.NUM_FRAMES x the T factor)")


def plan(spec: MultigridSpec, *, steps, lrs, max_epoch: int, gamma: float, frames: int,
         crop: int, sampling_rate: int, per_rank_batch: int, ranks: int, eval_period: int,
         checkpoint_period: int) -> dict:
    """The whole multigrid run at a glance, for the start-up plan and the dry run: the derived
    solver, every stage's shape, batches (per rank and global, short cycle included), BN, and the
    epochs that evaluate and checkpoint."""
    stages = (long_cycle_schedule(spec, steps=steps, max_epoch=max_epoch, frames=frames,
                                  crop=crop) if spec.long_cycle else None)
    solver = derived_solver(spec, stages, steps=steps, lrs=lrs, max_epoch=max_epoch,
                            gamma=gamma)
    rows, start = [], 0
    whole = stages or [Stage(-1, 1, frames, crop, solver.max_epoch)]
    for stage in whole:
        # num_gpus 1 with the per-rank batch: BN is decided per process, as on each GPU
        st = stage_settings(spec, stage, batch_size=per_rank_batch, num_gpus=1, frames=frames,
                            sampling_rate=sampling_rate)
        cycle = (short_cycle(spec, per_gpu_batch=st.batch_size, crop=st.crop, default_crop=crop)
                 if spec.short_cycle else [(st.batch_size, st.crop)])
        if any(b < 1 for b, _ in cycle):
            raise UserError(f"MULTIGRID.SHORT_CYCLE_FACTORS: a short-cycle crop larger than the "
                            f"{st.crop} px of a stage (LONG_CYCLE_FACTORS) gets a batch of 0")
        # BN_BASE_SIZE need not divide the stage's batch (PySlowFast then fails at its first
        # step): the most splits that divide it, so each holds about BN_BASE_SIZE clips
        splits = st.bn_splits
        while st.batch_size % splits:
            splits -= 1
        rows.append({"epochs": [start, stage.end_epoch], "lr_step": stage.lr_step,
                     "frames": st.frames, "crop": st.crop, "sampling_rate": st.sampling_rate,
                     "batch_per_rank": st.batch_size, "global_batch": st.batch_size * ranks,
                     "short_cycle": [{"batch_per_rank": b, "crop": c} for b, c in cycle],
                     # PySlowFast sets BN per stage of a long cycle only; a short cycle alone
                     # trains with BN.NORM_TYPE as configured
                     "bn": ({"sub_batchnorm": f"sub_batchnorm, {splits} splits",
                             "sync_batchnorm": f"sync_batchnorm over {st.bn_sync_devices}"
                             }.get(st.norm_type, "batchnorm") if stages else "as configured"),
                     "bn_splits": splits if stages else 1,
                     "norm_type": st.norm_type if stages else None})
        start = stage.end_epoch
    evals = [e for e in range(solver.max_epoch)  # TRAIN.EVAL_PERIOD 0: no evaluation
             if eval_period > 0
             and is_period_epoch(e, solver.max_epoch, stages, spec.eval_freq, eval_period)]
    ckpts = [e for e in range(solver.max_epoch)
             if is_period_epoch(e, solver.max_epoch, stages, spec.eval_freq, checkpoint_period)]
    # the long cycle's last LR step is PySlowFast's fine-tuning phase, at the default shape
    # (with the short cycle's crops, if on); it has no epochs when SOLVER.MAX_EPOCH is the last
    # of SOLVER.STEPS
    finetune = (sum(r["epochs"][1] - r["epochs"][0] for r in rows
                    if r["lr_step"] == len(steps) - 1) if stages else None)
    return {"solver": {"STEPS": solver.steps, "LRS": [float(f"{x:.6g}") for x in solver.lrs],
                       "MAX_EPOCH": solver.max_epoch},
            "stages": rows, "finetune_epochs": finetune, "eval_epochs": [e + 1 for e in evals],
            "checkpoint_epochs": [e + 1 for e in ckpts]}


def digest(p: dict) -> str:
    """A short fingerprint of a plan: a checkpoint saved inside an epoch resumes only under the
    same plan (the same cut of the epoch into batches)."""
    keys = ("epochs", "frames", "crop", "sampling_rate", "batch_per_rank", "global_batch",
            "short_cycle", "bn_splits")  # not the display fields (bn, norm_type)
    cut = {"solver": p["solver"], "stages": [{k: r[k] for k in keys} for r in p["stages"]]}
    return hashlib.sha1(json.dumps(cut, sort_keys=True).encode()).hexdigest()[:16]


def row_at(p: dict, epoch: int) -> dict:
    """The plan's stage row that trains `epoch` (0-based); the last one past the end."""
    for row in p["stages"]:
        if epoch < row["epochs"][1]:
            return row
    return p["stages"][-1]


def plan_lines(spec: MultigridSpec, p: dict, max_epoch: int) -> list[str]:
    """The plan as log lines, one per stage."""
    kinds = [k for k, on in (("long cycle", spec.long_cycle), ("short cycle", spec.short_cycle))
             if on]
    s = p["solver"]
    lines = [f"multigrid ({' + '.join(kinds)}): {max_epoch} epochs stretched to "
             f"{s['MAX_EPOCH']} (EPOCH_FACTOR {spec.epoch_factor:g}); SOLVER.STEPS {s['STEPS']}, "
             f"LRS {s['LRS']}"]
    for r in p["stages"]:
        cycle = ", ".join(f"{c['batch_per_rank']}@{c['crop']}" for c in r["short_cycle"])
        step = f"LR step {r['lr_step']}, " if r["lr_step"] >= 0 else ""
        first, last = r["epochs"][0] + 1, r["epochs"][1]
        span = f"epochs {first}-{last}" if last >= first else "no epoch (rounded away)"
        lines.append(f"  {span}: {step}"
                     f"{r['frames']} frames x {r['crop']} px at rate {r['sampling_rate']}, "
                     f"global batch {r['global_batch']}; per rank (batch@crop) {cycle}; "
                     f"BN {r['bn']}")
    lines.append(f"  evaluation after epochs {p['eval_epochs']}" if p["eval_epochs"]
                 else "  no evaluation while training (TRAIN.EVAL_PERIOD 0)")
    return lines
