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
        bounds = list(steps) + [max_epoch]
        ind = len(bounds)
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

    def __str__(self):
        return (f"base_lr={self.base_lr:g} warmup_start_lr={self.warmup_start_lr:g} "
                f"cosine_end_lr={self.cosine_end_lr:g} ({self.rule})")


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
