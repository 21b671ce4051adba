"""Precise BN (BN.USE_PRECISE_STATS, BN.NUM_BATCHES_PRECISE): BN's running statistics recomputed
as the plain average over a number of training batches, before a checkpoint or an evaluation.

A BN layer's running statistics are an exponential average dominated by the last few dozen
steps. Under multigrid those steps mix clip shapes (the short cycle's crops, the stage's frames)
whose activations have other statistics than the default shape the model is evaluated at;
PySlowFast's multigrid configs therefore turn this on, and recompute the statistics on training
batches at the default shape. As PySlowFast (fvcore's update_bn_stats): the model in train mode
without gradients, each layer's momentum set to 1 so its running statistics are the current
batch's, averaged over the batches. Unlike it, the averages are also averaged over the ranks,
so every rank evaluates with the statistics the checkpoint holds, and the pass runs on a fork
of the RNG streams (dropout), so the training that follows is the same with or without it.
"""

from __future__ import annotations

import itertools

import torch
import torch.distributed as dist

from slowfast_dist.models.sub_batchnorm import SubBatchNorm3d


def update_bn_stats(model, batches, num_batches: int, forward, world_size: int = 1) -> int:
    """Recompute every BN layer's running statistics of `model` (unwrapped from DDP) over the
    first `num_batches` of `batches`, calling `forward(model, batch)`; returns the batches
    used. Sub-batch BN layers use one split during the pass and keep their own afterwards."""
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers or num_batches < 1:
        return 0
    splits = {m: m.num_splits for m in layers if isinstance(m, SubBatchNorm3d)}
    for m in splits:
        m.set_splits(1)  # the whole batch, as evaluation sees it
    momenta = [m.momentum for m in layers]
    means = [torch.zeros_like(m.running_mean) for m in layers]
    variances = [torch.zeros_like(m.running_var) for m in layers]
    was_training = model.training
    model.train()
    used = 0
    try:
        with torch.random.fork_rng(devices=_cuda_devices(model)), torch.no_grad():
            for m in layers:
                m.momentum = 1.0  # running stats := this batch's
            for used, batch in enumerate(itertools.islice(batches, num_batches), start=1):
                forward(model, batch)
                for m, mean, var in zip(layers, means, variances):
                    mean += (m.running_mean - mean) / used
                    var += (m.running_var - var) / used
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
    if used:  # no batch (the same count on every rank): the statistics stay as they were
        for t in means + variances if world_size > 1 else ():
            dist.all_reduce(t)
            t /= world_size
        for m, mean, var in zip(layers, means, variances):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    for m, k in splits.items():
        m.set_splits(k)  # the splits restart from the precise statistics
    model.train(was_training)
    return used


def _cuda_devices(model) -> list:
    return sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
