"""Sub-batch BatchNorm: statistics over a fixed number of clips whatever the batch (multigrid).

Multigrid training grows the per-GPU batch 2-8x in its small-clip stages; the paper keeps BN's
statistics over BN_BASE_SIZE clips by splitting the batch ("sub_batchnorm", PySlowFast's
SubBatchNorm3d). As there, split j of k holds the samples j, j + k, j + 2k, ... (a view of the
batch as [N/k, C*k, ...]), each split has its own running statistics while training, and
evaluation uses their aggregate: the mean of the split means, and the mean of the split variances
plus the variance of the split means.

Unlike PySlowFast's module (a `bn` and a `split_bn` inside, converted to plain BN keys when a
checkpoint is saved), this is a BatchNorm3d whose state-dict keys are a plain BN's: the split
statistics are working buffers, aggregated into `running_mean`/`running_var` before evaluation
and before the state is read. So checkpoints load into either kind of model, and the number of
splits can change between multigrid stages without rebuilding the model or its optimizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SubBatchNorm3d(nn.BatchNorm3d):
    def __init__(self, num_features: int, num_splits: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        self.register_buffer("split_mean", torch.zeros(0), persistent=False)
        self.register_buffer("split_var", torch.zeros(0), persistent=False)
        self.num_splits = 1
        self._stale = False  # split statistics moved since the last aggregation
        self.set_splits(num_splits)

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm3d, num_splits: int) -> SubBatchNorm3d:
        """The same parameters (the optimizer's tensors) and statistics, split `num_splits`."""
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new.to(bn.running_mean.device).set_splits(num_splits)

    def set_splits(self, k: int) -> SubBatchNorm3d:
        """Statistics over batch / k clips from now on; the splits start from the aggregate."""
        if k < 1:
            raise ValueError(f"SubBatchNorm3d: {k} splits")
        self.aggregate()
        self.num_splits = k
        self.split_mean = self.running_mean.detach().repeat(k)
        self.split_var = self.running_var.detach().repeat(k)
        return self

    def aggregate(self) -> None:
        """running_mean/var from the split statistics (PySlowFast's aggregate_stats)."""
        if not self._stale:
            return
        k = self.num_splits
        means, variances = self.split_mean.view(k, -1), self.split_var.view(k, -1)
        mean = means.mean(0)
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(variances.mean(0) + ((means - mean) ** 2).mean(0))
        self._stale = False

    def forward(self, x):
        k = self.num_splits
        if not self.training or k == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % k:
            raise ValueError(f"sub_batchnorm: a batch of {n} clips does not split into {k} "
                             f"(MULTIGRID.BN_BASE_SIZE)")
        self.num_batches_tracked.add_(1)
        y = F.batch_norm(x.reshape(n // k, c * k, *x.shape[2:]), self.split_mean, self.split_var,
                         None, None, True, self.momentum, self.eps).view_as(x)
        self._stale = True
        if self.affine:
            shape = (1, c) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def train(self, mode: bool = True):
        if not mode:
            self.aggregate()
        return super().train(mode)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.aggregate()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._stale = False
        self.set_splits(self.num_splits)  # the splits restart from the loaded statistics


def set_bn_splits(model: nn.Module, k: int) -> int:
    """Every BatchNorm3d of `model` computes its training statistics over batch / k clips
    (k = 1: plain BN). Plain BatchNorm3d modules are replaced in place by SubBatchNorm3d holding
    the same tensors. Call before DDP wraps the model. Returns the number of BN layers."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SubBatchNorm3d):
                child.set_splits(k)
            elif type(child) is nn.BatchNorm3d:
                setattr(parent, name, SubBatchNorm3d.from_bn(child, k))
            else:
                continue
            count += 1
    return count
