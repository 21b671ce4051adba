"""train/optim.py: LARS and LAMB updates against their formulas on hand-computed cases,
PySlowFast's parameter groups, adam/adamw as PySlowFast builds them, config errors, the plan's
per-group lines."""
import math

import pytest
import torch

from slowfast_dist.config import load_config
from slowfast_dist.errors import UserError
from slowfast_dist.train import optim


class Tiny(torch.nn.Module):
    """A 2x2 weight with a bias, and a BatchNorm's weight and bias."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.bn = torch.nn.BatchNorm1d(2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # norm 5
            self.fc.bias.copy_(torch.tensor([1.0, -1.0]))
            self.bn.weight.copy_(torch.tensor([2.0, 0.5]))
            self.bn.bias.copy_(torch.tensor([0.1, 0.2]))

    def set_grads(self):
        self.fc.weight.grad = torch.tensor([[0.6, 0.0], [0.0, 0.8]])  # norm 1
        self.fc.bias.grad = torch.tensor([0.5, 0.25])
        self.bn.weight.grad = torch.tensor([1.0, -2.0])
        self.bn.bias.grad = torch.tensor([0.0, 4.0])


def test_lars_step_equals_its_formula():
    m = Tiny()
    spec = optim.OptimizerSpec(method="sgd", lr=0.5, momentum=0.0, nesterov=False,
                               weight_decay=0.1, bn_weight_decay=0.2, lars=True,
                               trust_coefficient=0.001, eps=1e-8)
    opt = optim.build_optimizer(m, spec)
    m.set_grads()
    opt.step()
    # W: ratio = 0.001 * |W| / (|G| + wd |W| + eps) = 0.005 / 1.5; W -= lr (G + wd W) ratio
    ratio = 0.001 * 5 / (1 + 0.1 * 5 + 1e-8)
    want_w = [[3 - 0.5 * (0.6 + 0.3) * ratio, 0.0], [0.0, 4 - 0.5 * (0.8 + 0.4) * ratio]]
    assert torch.allclose(m.fc.weight, torch.tensor(want_w), atol=1e-7, rtol=0)
    # the 1-D bias in the LARS group: no trust ratio and, as in PySlowFast, no weight decay
    assert torch.allclose(m.fc.bias, torch.tensor([1 - 0.5 * 0.5, -1 - 0.5 * 0.25]))
    # BN: plain SGD with BN.WEIGHT_DECAY, no LARS
    assert torch.allclose(m.bn.weight, torch.tensor([2 - 0.5 * (1.0 + 0.2 * 2),
                                                     0.5 - 0.5 * (-2.0 + 0.2 * 0.5)]))
    # the group's own decay is back for the next step, and the plan says so
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.2]


@pytest.mark.parametrize("spec", [optim.OptimizerSpec(lr=0.1, lars=True),
                                  optim.OptimizerSpec(method="lamb", lr=0.01)])
def test_lars_and_lamb_resume_from_their_state_dict(spec):
    def run(steps, opt_state=None, model_state=None):
        m = Tiny()
        opt = optim.build_optimizer(m, spec)
        if model_state is not None:
            m.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
        for _ in range(steps):
            m.set_grads()
            opt.step()
        return m, opt

    whole, _ = run(4)
    half, opt = run(2)
    again, _ = run(2, opt.state_dict(), half.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                 again.state_dict().values()))


def _adam_moments(gs, b1, b2):
    m = v = 0.0
    for t, g in enumerate(gs, 1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    return m / (1 - b1 ** t), v / (1 - b2 ** t)


def test_lamb_steps_equal_their_formula():
    m = Tiny()
    lr, wd, eps, (b1, b2) = 0.1, 0.01, 1e-6, (0.9, 0.999)
    spec = optim.OptimizerSpec(method="lamb", lr=lr, weight_decay=wd, bn_weight_decay=0.0)
    opt = optim.build_optimizer(m, spec)
    w = [[3.0, 0.0], [0.0, 4.0]]
    grads = [[[0.6, 0.0], [0.0, 0.8]], [[0.6, 0.0], [0.0, 0.8]]]  # the same gradient twice
    for step in (1, 2):
        m.set_grads()
        opt.step()
        r = [[0.0, 0.0], [0.0, 0.0]]
        for i in range(2):
            for j in range(2):
                mh, vh = _adam_moments([g[i][j] for g in grads[:step]], b1, b2)
                r[i][j] = mh / (math.sqrt(vh) + eps) + wd * w[i][j]
        w_norm = math.sqrt(sum(x * x for row in w for x in row))
        r_norm = math.sqrt(sum(x * x for row in r for x in row))
        w = [[w[i][j] - lr * (w_norm / r_norm) * r[i][j] for j in range(2)] for i in range(2)]
        assert torch.allclose(m.fc.weight, torch.tensor(w), atol=1e-6, rtol=0), step
    # 1-D tensors: no trust ratio (the bias keeps its group's decay; BN has BN.WEIGHT_DECAY 0)
    b = 1.0
    for t in (1, 2):
        mh, vh = _adam_moments([0.5] * t, b1, b2)
        b -= lr * (mh / (math.sqrt(vh) + eps) + wd * b)
    assert m.fc.bias[0].item() == pytest.approx(b, abs=1e-6)
    assert m.bn.bias[0].item() == pytest.approx(0.1, abs=1e-7)  # zero gradient, no decay


def test_groups_follow_pyslowfast_bn_apart_and_1d_without_decay_on_request():
    m = Tiny()
    groups = optim.param_groups(m, optim.OptimizerSpec(weight_decay=1e-4, bn_weight_decay=0.0))
    assert [(g["name"], len(g["params"]), g["weight_decay"]) for g in groups] == [
        ("weights", 2, 1e-4), ("bn", 2, 0.0)]
    groups = optim.param_groups(m, optim.OptimizerSpec(zero_wd_1d=True, lars=True))
    names = {g["name"]: g for g in groups}
    assert names["1d_no_decay"]["params"][0] is m.fc.bias
    assert names["1d_no_decay"]["weight_decay"] == 0
    assert names["weights"]["lars"] and not names["bn"]["lars"]


@pytest.mark.parametrize("method,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_adamw_as_pyslowfast_builds_them(method, cls):
    cfg = load_config("configs/demo.yaml", ["SOLVER.OPTIMIZING_METHOD", method,
                                            "SOLVER.BETAS", "[0.8, 0.99]"])
    spec = optim.OptimizerSpec.from_cfg(cfg, lr=0.01)
    opt = optim.build_optimizer(Tiny(), spec)
    assert type(opt) is cls and opt.defaults["betas"] == (0.8, 0.99)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.SOLVER.WEIGHT_DECAY,
                                                             cfg.BN.WEIGHT_DECAY]


@pytest.mark.parametrize("opts,needle", [
    (["SOLVER.OPTIMIZING_METHOD", "rmsprop"], "SOLVER.OPTIMIZING_METHOD 'rmsprop'"),
    (["SOLVER.OPTIMIZING_METHOD", "lamb", "SOLVER.LARS_ON", "True"], "SOLVER.LARS_ON"),
    (["SOLVER.BETAS", "[0.9, 1.5]"], "SOLVER.BETAS"),
])
def test_bad_optimizer_settings_are_one_line_naming_the_key(opts, needle):
    cfg = load_config("configs/demo.yaml", opts)
    with pytest.raises(UserError) as err:
        optim.OptimizerSpec.from_cfg(cfg, lr=0.1)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_plan_lists_each_group_with_its_lr_and_decay():
    m = Tiny()
    spec = optim.OptimizerSpec(lr=0.4, lars=True, weight_decay=1e-4, bn_weight_decay=0.0)
    lines = optim.describe(optim.build_optimizer(m, spec), spec)
    assert lines[0] == "optimizer: sgd momentum 0.9 nesterov + LARS (trust coefficient 0.001)"
    assert lines[1] == ("  group weights: 2 tensors, 6 parameters, lr 0.4, weight decay 0.0001; "
                        "LR scaled per tensor by LARS's trust ratio")
    assert lines[2] == "  group bn: 2 tensors, 4 parameters, lr 0.4, weight decay 0"
