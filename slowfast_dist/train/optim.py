"""Optimizers named by SOLVER.OPTIMIZING_METHOD (sgd, adam, adamw as PySlowFast builds them, and
lamb), with PySlowFast's LARS (SOLVER.LARS_ON) over any of the first three.

Parameter groups follow PySlowFast's construct_optimizer: BatchNorm parameters in their own group
(BN.WEIGHT_DECAY, never LARS), with SOLVER.ZERO_WD_1D_PARAM the other 1-D parameters and biases
in a group without weight decay, the rest with SOLVER.WEIGHT_DECAY.

LARS (You et al. 2017, the rule of PySlowFast's LARS class, itself NVIDIA apex's LARC without
clipping): before the step, each LARS-group tensor of more than one dimension gets
    g <- (g + wd * w) * trust * |w| / (|g| + wd * |w| + eps)
and the group's own weight decay is off for the step (1-D tensors then get none, as there).
LAMB (You et al. 2019): Adam moments with bias correction, r = m^ / (sqrt(v^) + eps) + wd * w,
and the step lr * (|w| / |r|) * r. 1-D tensors (BN, biases) take no trust ratio; BN has
BN.WEIGHT_DECAY, and SOLVER.ZERO_WD_1D_PARAM takes the biases out of weight decay, as the paper's
BERT runs do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slowfast_dist.errors import UserError

METHODS = ("sgd", "adam", "adamw", "lamb")


@dataclass(frozen=True)
class OptimizerSpec:
    method: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = True
    weight_decay: float = 1e-4
    bn_weight_decay: float = 0.0
    zero_wd_1d: bool = False
    betas: tuple = (0.9, 0.999)
    lars: bool = False
    trust_coefficient: float = 0.001  # PySlowFast's construct_optimizer uses 0.001
    eps: float = 1e-8

    @classmethod
    def from_cfg(cls, cfg, lr: float) -> "OptimizerSpec":
        s = cfg.SOLVER
        spec = cls(method=s.OPTIMIZING_METHOD, lr=lr, momentum=s.MOMENTUM, dampening=s.DAMPENING,
                   nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY,
                   bn_weight_decay=cfg.BN.WEIGHT_DECAY, zero_wd_1d=s.ZERO_WD_1D_PARAM,
                   betas=tuple(s.BETAS), lars=s.LARS_ON,
                   trust_coefficient=s.LARS_TRUST_COEFFICIENT)
        spec.check()
        return spec

    def check(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"SOLVER.OPTIMIZING_METHOD {self.method!r}: one of "
                            f"{', '.join(METHODS)}")
        if self.lars and self.method == "lamb":
            raise UserError("SOLVER.LARS_ON with SOLVER.OPTIMIZING_METHOD lamb: LAMB has its own "
                            "trust ratio; use one of them")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise UserError(f"SOLVER.BETAS {list(self.betas)}: two values in [0, 1)")


def param_groups(model, spec: OptimizerSpec) -> list[dict]:
    """PySlowFast's groups; each carries `name` (for the plan) and `lars`/`trust` flags."""
    bn, zero, rest = [], [], []
    for module_name, module in model.named_modules():
        is_bn = isinstance(module, torch.nn.modules.batchnorm._NormBase)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            full = f"{module_name}.{name}".strip(".")
            if is_bn:
                bn.append(p)
            elif spec.zero_wd_1d and (p.ndim == 1 or full.endswith(".bias")):
                zero.append(p)
            else:
                rest.append(p)
    lamb = spec.method == "lamb"
    groups = [{"name": "weights", "params": rest, "weight_decay": spec.weight_decay,
               "lars": spec.lars, "trust": lamb},
              {"name": "bn", "params": bn, "weight_decay": spec.bn_weight_decay,
               "lars": False, "trust": False},
              {"name": "1d_no_decay", "params": zero, "weight_decay": 0.0,
               "lars": spec.lars, "trust": lamb}]
    return [g for g in groups if g["params"]]


def build_optimizer(model, spec: OptimizerSpec) -> torch.optim.Optimizer:
    groups = param_groups(model, spec)
    if spec.method == "lamb":
        return Lamb(groups, lr=spec.lr, betas=spec.betas, eps=1e-6)
    if spec.method == "sgd":
        base, kw = torch.optim.SGD, dict(momentum=spec.momentum, dampening=spec.dampening,
                                         nesterov=spec.nesterov)
    elif spec.method == "adam":
        base, kw = torch.optim.Adam, dict(betas=spec.betas)
    else:
        base, kw = torch.optim.AdamW, dict(betas=spec.betas, eps=1e-8)
    if spec.lars:
        return _with_lars(base)(groups, lr=spec.lr, trust_coefficient=spec.trust_coefficient,
                                lars_eps=spec.eps, **kw)
    return base(groups, lr=spec.lr, **kw)


def describe(optimizer, spec: OptimizerSpec) -> list[str]:
    """The start-up plan's optimizer lines: the method, then each group's size, LR and decay."""
    head = spec.method
    if spec.method == "sgd":
        head += f" momentum {spec.momentum:g}" + (" nesterov" if spec.nesterov else "")
    elif spec.method in ("adam", "adamw", "lamb"):
        head += f" betas {spec.betas[0]:g},{spec.betas[1]:g}"
    if spec.lars:
        head += f" + LARS (trust coefficient {spec.trust_coefficient:g})"
    lines = [f"optimizer: {head}"]
    for g in optimizer.param_groups:
        n = sum(p.numel() for p in g["params"])
        scaled = ("; LR scaled per tensor by LARS's trust ratio" if g.get("lars") else
                  "; LR scaled per tensor by LAMB's trust ratio" if g.get("trust") else "")
        lines.append(f"  group {g.get('name', '?')}: {len(g['params'])} tensors, {n:,} "
                     f"parameters, lr {g['lr']:g}, weight decay {g['weight_decay']:g}{scaled}")
    return lines


def _with_lars(base):
    class Lars(base):
        """`base` with PySlowFast's LARS applied to the gradients of the `lars` groups."""

        def __init__(self, params, *, trust_coefficient, lars_eps, **kw):
            super().__init__(params, **kw)
            self.trust_coefficient, self.lars_eps = trust_coefficient, lars_eps

        @torch.no_grad()
        def step(self, closure=None):
            decays = []
            for group in self.param_groups:
                decays.append(group["weight_decay"])
                if not group.get("lars"):
                    continue
                wd, group["weight_decay"] = group["weight_decay"], 0.0
                for p in group["params"]:
                    if p.grad is None or p.ndim == 1:
                        continue
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
                    ratio = self.trust_coefficient * w_norm / (g_norm + w_norm * wd
                                                               + self.lars_eps)
                    # a zero norm leaves the gradient as it is (no host read: torch.where)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio,
                                        torch.ones_like(ratio))
                    decay = torch.where((w_norm > 0) & (g_norm > 0), wd, 0.0)
                    p.grad.add_(p * decay).mul_(ratio)
            try:
                return super().step(closure)
            finally:
                for group, wd in zip(self.param_groups, decays):
                    group["weight_decay"] = wd

    Lars.__name__ = Lars.__qualname__ = f"Lars{base.__name__}"
    return Lars


class Lamb(torch.optim.Optimizer):
    """LAMB; groups with `trust` False (BN) take plain Adam steps with their weight decay."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      trust=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0  # a Python number: the bias corrections in double, no sync
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = m / (1 - b1 ** state["step"])
                v_hat = v / (1 - b2 ** state["step"])
                r = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    r.add_(p, alpha=group["weight_decay"])
                if group.get("trust", True) and p.ndim > 1:
                    w_norm, r_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(r)
                    ratio = torch.where((w_norm > 0) & (r_norm > 0), w_norm / r_norm,
                                        torch.ones_like(w_norm))
                    r.mul_(ratio)
                p.add_(r, alpha=-group["lr"])
        return loss
