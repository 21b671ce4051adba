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
    """`capacity`: the most splits this module will be set to. The split buffers are sized for
    it once, because DDP keeps references to a module's buffers (it broadcasts them every
    step): a later stage changes only how much of them is used."""

    def __init__(self, num_features: int, num_splits: int = 1, capacity: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        size = max(num_splits, capacity) * num_features
        self.register_buffer("split_mean", torch.zeros(size), persistent=False)
        self.register_buffer("split_var", torch.ones(size), persistent=False)
        self.num_splits = num_splits
        self._stale = False  # split statistics moved since the last aggregation
        self._restart()

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm3d, num_splits: int, capacity: int = 1) -> SubBatchNorm3d:
        """The same parameters (the optimizer's tensors) and statistics, split `num_splits`."""
        new = cls(bn.num_features, num_splits, capacity=capacity, eps=bn.eps,
                  momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        new = new.to(bn.running_mean.device)
        new._restart()
        return new

    @property
    def capacity(self) -> int:
        return self.split_mean.numel() // self.num_features

    def _splits(self):
        """(mean, var) of the splits in use: views of the buffers, updated in place."""
        n = self.num_splits * self.num_features
        return self.split_mean[:n], self.split_var[:n]

    def set_splits(self, k: int) -> SubBatchNorm3d:
        """Statistics over batch / k clips from now on; new splits start from the aggregate.
        The same k keeps the splits' statistics (PySlowFast, which rebuilds the model at every
        stage, restarts them from the aggregate even then; keeping them lets a run resumed
        from a checkpoint taken inside a stage go on exactly as the first)."""
        if not 1 <= k <= self.capacity:
            raise ValueError(f"SubBatchNorm3d: {k} splits (room for 1-{self.capacity}: "
                             "set_bn_splits(capacity=) before DDP wraps the model)")
        if k != self.num_splits:
            self.aggregate()
            self.num_splits = k
            self._restart()
        return self

    def _restart(self) -> None:
        """Every split from the running statistics."""
        mean, var = self._splits()
        with torch.no_grad():
            mean.copy_(self.running_mean.repeat(self.num_splits))
            var.copy_(self.running_var.repeat(self.num_splits))

    def aggregate(self) -> None:
        """running_mean/var from the split statistics (PySlowFast's aggregate_stats)."""
        if not self._stale:
            return
        k = self.num_splits
        means, variances = (t.view(k, -1) for t in self._splits())
        mean = means.mean(0)
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(variances.mean(0) + ((means - mean) ** 2).mean(0))
        self._stale = False

    def split_state(self) -> dict:
        """The split statistics, which a plain BN's state dict does not hold: a checkpoint
        taken inside a stage keeps them, so a resumed run goes on exactly as the first."""
        mean, var = self._splits()
        return {"num_splits": self.num_splits, "mean": mean.clone(), "var": var.clone()}

    def load_split_state(self, state: dict) -> None:
        """After the state dict (whose running statistics are these splits' aggregate)."""
        self.num_splits = int(state["num_splits"])
        mean, var = self._splits()
        with torch.no_grad():
            mean.copy_(state["mean"])
            var.copy_(state["var"])

    def forward(self, x):
        k = self.num_splits
        if not self.training or k == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % k:
            raise ValueError(f"sub_batchnorm: a batch of {n} clips does not split into {k} "
                             f"(MULTIGRID.BN_BASE_SIZE)")
        self.num_batches_tracked.add_(1)
        mean, var = self._splits()
        # the affine part inside the same kernel, each split's channels with the one weight
        # (PySlowFast applies it after, as two more passes over the activations and back)
        w, b = ((self.weight.repeat(k), self.bias.repeat(k)) if self.affine else (None, None))
        y = F.batch_norm(x.reshape(n // k, c * k, *x.shape[2:]), mean, var, w, b, True,
                         self.momentum, self.eps).view_as(x)
        self._stale = True
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
        self._restart()  # from the loaded statistics


def set_bn_splits(model: nn.Module, k: int, capacity: int = 1) -> int:
    """Every BatchNorm3d of `model` computes its training statistics over batch / k clips
    (k = 1: plain BN). Plain BatchNorm3d modules are replaced in place by SubBatchNorm3d holding
    the same tensors, with room for `capacity` splits: do that before DDP wraps the model, with
    the most splits any stage will use. Returns the number of BN layers."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SubBatchNorm3d):
                child.set_splits(k)
            elif type(child) is nn.BatchNorm3d:
                setattr(parent, name, SubBatchNorm3d.from_bn(child, k, capacity))
            else:
                continue
            count += 1
    return count


def split_states(model: nn.Module) -> dict:
    """{module name: split statistics} of every SubBatchNorm3d (for a checkpoint)."""
    return {name: m.split_state() for name, m in model.named_modules()
            if isinstance(m, SubBatchNorm3d)}


def load_split_states(model: nn.Module, states: dict) -> None:
    """Back into the SubBatchNorm3d modules of the same names. Those missing, or with too
    little room (a run with other multigrid keys), keep the splits their state dict gave."""
    modules = dict(model.named_modules())
    for name, state in states.items():
        m = modules.get(name)
        if isinstance(m, SubBatchNorm3d) and int(state["num_splits"]) <= m.capacity:
            m.load_split_state(state)
