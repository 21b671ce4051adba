"""PySlowFast's SOLVER learning-rate schedule, evaluated per iteration, and the linear scaling rule.

`cur_epoch` is a float: epoch + iter / iters_per_epoch. Warm-up follows PySlowFast's
`get_lr_at_epoch`: for cur_epoch < warmup_epochs the LR goes linearly from warmup_start_lr (at 0)
to the policy's value at warmup_epochs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def _policy_lr(policy, cur_epoch, base_lr, max_epoch, steps, lrs, cosine_end_lr,
               cosine_after_warmup, warmup_epochs):
    if policy == "cosine":
        offset = warmup_epochs if cosine_after_warmup else 0.0
        if not cosine_end_lr < base_lr:
            raise ValueError(f"SOLVER.COSINE_END_LR ({cosine_end_lr}) must be below BASE_LR ({base_lr})")
        return cosine_end_lr + (base_lr - cosine_end_lr) * 0.5 * (
            math.cos(math.pi * (cur_epoch - offset) / (max_epoch - offset)) + 1.0)
    if policy in ("steps_with_relative_lrs", "steps_with_lrs"):
        # Index of the last step <= cur_epoch; STEPS start at 0 (PySlowFast's get_step_index).
        # From MAX_EPOCH on no bound is above cur_epoch and PySlowFast's loop variable ends on
        # the last index: the last LR (what a warm-up as long as the run ramps to).
        bounds = list(steps) + [max_epoch]
        ind = len(bounds) - 1
        for i, s in enumerate(bounds):
            if cur_epoch < s:
                ind = i
                break
        ind -= 1
        if ind < 0 or ind >= len(lrs):
            raise ValueError(f"epoch {cur_epoch} outside SOLVER.STEPS {list(steps)} / LRS {list(lrs)}")
        return lrs[ind] * base_lr if policy == "steps_with_relative_lrs" else lrs[ind]
    raise ValueError(f"unknown SOLVER.LR_POLICY {policy!r}")


def lr_at(cur_epoch: float, *, base_lr: float, policy: str, max_epoch: float,
          steps: Sequence[float] = (), lrs: Sequence[float] = (), warmup_epochs: float = 0.0,
          warmup_start_lr: float = 0.01, cosine_end_lr: float = 0.0,
          cosine_after_warmup: bool = False) -> float:
    """LR at fractional epoch `cur_epoch`, exactly as PySlowFast's get_lr_at_epoch."""
    kw = dict(policy=policy, base_lr=base_lr, max_epoch=max_epoch, steps=steps, lrs=lrs,
              cosine_end_lr=cosine_end_lr, cosine_after_warmup=cosine_after_warmup,
              warmup_epochs=warmup_epochs)
    lr = _policy_lr(cur_epoch=cur_epoch, **kw)
    if cur_epoch < warmup_epochs:
        lr_end = _policy_lr(cur_epoch=warmup_epochs, **kw)
        lr = warmup_start_lr + cur_epoch * (lr_end - warmup_start_lr) / warmup_epochs
    return lr


def scaled_base_lr(base_lr: float, global_batch: int, reference_global_batch: int) -> float:
    """Linear scaling rule: base_lr * global_batch / reference_global_batch."""
    if reference_global_batch <= 0 or global_batch <= 0:
        raise ValueError("batch sizes must be positive")
    return base_lr * global_batch / reference_global_batch


@dataclass(frozen=True)
class ResolvedLR:
    base_lr: float
    warmup_start_lr: float
    cosine_end_lr: float
    factor: float
    rule: str  # human-readable, for logs

    def describe(self, cosine: bool) -> str:
        """For the start-up line; the cosine's end LR only where the policy uses it."""
        end = f"cosine_end_lr={self.cosine_end_lr:g} " if cosine else ""
        return (f"base_lr={self.base_lr:g} warmup_start_lr={self.warmup_start_lr:g} "
                f"{end}({self.rule})")


def scaled_lr(base_lr: float, warmup_start_lr: float, cosine_end_lr: float, *, num_shards: int,
              scale_num_shards: bool, global_batch: int = 0,
              reference_global_batch: int = 0) -> ResolvedLR:
    """Resolve the LRs actually used.

    reference_global_batch > 0 (our SOLVER.REFERENCE_GLOBAL_BATCH): all three scale by
    global_batch / reference_global_batch. Otherwise SOLVER.BASE_LR_SCALE_NUM_SHARDS: PySlowFast's
    assert_and_infer_cfg multiplies BASE_LR, WARMUP_START_LR and COSINE_END_LR by NUM_SHARDS.
    """
    if reference_global_batch > 0:
        f = global_batch / reference_global_batch
        rule = f"linear scaling x{f:g} = global batch {global_batch} / reference {reference_global_batch}"
    elif scale_num_shards:
        f = float(num_shards)
        rule = f"BASE_LR_SCALE_NUM_SHARDS: x{num_shards} shards"
    else:
        f, rule = 1.0, "no scaling"
    return ResolvedLR(base_lr * f, warmup_start_lr * f, cosine_end_lr * f, f, rule)


POLICIES = ("cosine", "steps_with_relative_lrs", "steps_with_lrs")


def solver_problems(*, policy, base_lr, steps, lrs, max_epoch, warmup_epochs, cosine_end_lr):
    """(key, message, against_max_epoch) for each SOLVER value `lr_at` would use wrongly.

    The rules follow PySlowFast's get_step_index, which looks the epoch up in STEPS +
    [MAX_EPOCH]: STEPS[i] is where LRS[i] starts, so the list starts at 0, increases, and has
    one LR per step. A step equal to MAX_EPOCH is allowed though it never applies: PySlowFast's
    own AVA SLOWFAST_32x2_R50_SHORT.yaml ends with one. `against_max_epoch` marks the rules
    that compare with MAX_EPOCH, which the config loader waives for the file's values when
    MAX_EPOCH comes from the command line (a run cut short on purpose: the later steps are then
    simply not reached).
    """
    steps, lrs = list(steps), list(lrs)
    if policy not in POLICIES:
        yield ("SOLVER.LR_POLICY", f"SOLVER.LR_POLICY {policy!r} must be one of "
               f"{', '.join(POLICIES)}", False)
        return
    if not base_lr > 0:
        yield "SOLVER.BASE_LR", f"SOLVER.BASE_LR {base_lr!r} must be > 0", False
    if not max_epoch >= 1:
        yield "SOLVER.MAX_EPOCH", f"SOLVER.MAX_EPOCH {max_epoch!r} must be >= 1", False
    if not warmup_epochs >= 0:
        yield "SOLVER.WARMUP_EPOCHS", f"SOLVER.WARMUP_EPOCHS {warmup_epochs!r} must be >= 0", False
    elif warmup_epochs > max_epoch:
        yield ("SOLVER.WARMUP_EPOCHS", f"SOLVER.WARMUP_EPOCHS {warmup_epochs!r} must be within "
               f"SOLVER.MAX_EPOCH {max_epoch!r} (the warm-up would never end)", True)
    if policy == "cosine":
        if not cosine_end_lr < base_lr:
            yield ("SOLVER.COSINE_END_LR", f"SOLVER.COSINE_END_LR {cosine_end_lr!r} must be "
                   f"below SOLVER.BASE_LR {base_lr!r} (cosine policy)", False)
        return
    rule = f"SOLVER.LR_POLICY {policy}"
    if not steps or steps[0] != 0:
        yield ("SOLVER.STEPS", f"SOLVER.STEPS {steps} must start at 0 (STEPS[i] is the epoch "
               f"where LRS[i] starts; {rule})", False)
        return
    for prev, cur in zip(steps, steps[1:]):
        if not cur > prev:
            yield ("SOLVER.STEPS", f"SOLVER.STEPS {steps} must be strictly increasing ({cur} "
                   f"follows {prev}; they are epochs, not step lengths)", False)
            return
    if steps[-1] > max_epoch:
        late = [s for s in steps if s > max_epoch]
        yield ("SOLVER.STEPS", f"SOLVER.STEPS {steps} must lie within SOLVER.MAX_EPOCH "
               f"{max_epoch!r} ({', '.join(map(str, late))} would never apply)", True)
    if len(lrs) != len(steps):
        yield ("SOLVER.LRS", f"SOLVER.LRS {lrs} must have one LR per SOLVER.STEPS entry "
               f"({len(lrs)} LRS for STEPS {steps})", False)


def warmup_epochs_for(warmup_epochs: float, *, global_batch: int, reference_global_batch: int,
                      max_epoch: float, policy: str, steps: Sequence[float]) -> float:
    """SOLVER.WARMUP_SCALES_WITH_BATCH: the warm-up grows with the batch past the reference, never
    shorter than configured, and ending at least one epoch before the first LR step (at half the
    run under cosine): a warm-up ramps to the schedule's LR at its last epoch, and from the first
    step on that is no longer the base LR."""
    if reference_global_batch <= 0:
        raise ValueError("SOLVER.WARMUP_SCALES_WITH_BATCH needs SOLVER.REFERENCE_GLOBAL_BATCH")
    grown = warmup_epochs * max(1.0, global_batch / reference_global_batch)
    later = [float(x) for x in steps if x > 0]
    cap = min(later) - 1.0 if policy != "cosine" and later else max_epoch / 2
    return max(float(warmup_epochs), min(grown, cap, float(max_epoch)))


def schedule_line(lr_at, *, policy: str, steps: Sequence[float], max_epoch: float,
                  warmup_epochs: float) -> str:
    """One line for the start-up plan: the LR of each step segment (after warm-up) or the
    cosine's ends, all read from `lr_at`, the function the training calls, so the line shows
    what will run (a command-line MAX_EPOCH that cuts the schedule included)."""
    warm = ""
    if warmup_epochs > 0:
        cut = f", cut at epoch {max_epoch:g}" if warmup_epochs > max_epoch else ""
        warm = (f" (warm-up from {lr_at(0.0):g} to {lr_at(float(warmup_epochs)):g} over epochs "
                f"0-{warmup_epochs:g}{cut})")
    if policy == "cosine":
        start = min(float(warmup_epochs), float(max_epoch))
        return (f"lr schedule: cosine {lr_at(start):g} at epoch {start:g} -> "
                f"{lr_at(float(max_epoch)):g} at epoch {max_epoch:g}{warm}")
    parts, unreached = [], []
    bounds = list(steps) + [max_epoch]
    for a, b in zip(bounds, bounds[1:]):
        b = min(b, max_epoch)
        if a >= max_epoch:
            unreached.append(f"{a:g}")
            continue
        if a >= b:  # a step repeated (multigrid's stages that round to no epoch): no segment
            continue
        # the LR after warm-up: a segment the warm-up covers wholly has none of its own
        at = max(float(a), float(warmup_epochs))
        parts.append(f"{a:g}-{b:g} {lr_at(at):g}" if at < b else f"{a:g}-{b:g} warm-up")
    line = "lr schedule: epoch " + ", ".join(parts) + warm
    if unreached:
        line += f"; steps at epoch {', '.join(unreached)} not reached (MAX_EPOCH {max_epoch:g})"
    return line
