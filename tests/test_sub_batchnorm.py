"""models/sub_batchnorm.py: BN over sub-batches as PySlowFast's SubBatchNorm3d, with a plain
BN's state-dict keys."""

import pytest
import torch
from torch import nn

from slowfast_dist.models.sub_batchnorm import SubBatchNorm3d, set_bn_splits


def _x(n=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, 2, 3, 3, generator=g) * 2 + torch.arange(n).view(n, 1, 1, 1, 1)


def _affine(bn):
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return bn


def test_each_split_is_normalised_over_its_own_clips_as_pyslowfast_interleaves_them():
    k, x = 4, _x()
    sub = _affine(SubBatchNorm3d(3, num_splits=k)).train()
    y = sub(x)
    for j in range(k):  # PySlowFast's view(n // k, c * k, ...): split j = samples j, j+k, ...
        ref = _affine(nn.BatchNorm3d(3)).train()
        assert torch.allclose(y[j::k], ref(x[j::k]), atol=1e-5), j


def test_evaluation_uses_pyslowfast_s_aggregate_of_the_split_statistics():
    k = 2
    sub = SubBatchNorm3d(3, num_splits=k).train()
    splits = [nn.BatchNorm3d(3).train() for _ in range(k)]
    for step in range(3):
        x = _x(seed=step)
        sub(x)
        for j, bn in enumerate(splits):
            bn(x[j::k])
    sub.eval()
    means = torch.stack([bn.running_mean for bn in splits])
    variances = torch.stack([bn.running_var for bn in splits])
    mean = means.sum(0) / k  # PySlowFast's _get_aggregated_mean_std
    var = variances.sum(0) / k + ((means - mean) ** 2).sum(0) / k
    assert torch.allclose(sub.running_mean, mean, atol=1e-6)
    assert torch.allclose(sub.running_var, var, atol=1e-6)
    x = _x(seed=9)
    ref = nn.BatchNorm3d(3).eval()
    ref.load_state_dict(sub.state_dict())
    assert torch.allclose(sub(x), ref(x), atol=1e-6)


def test_state_dict_is_a_plain_bn_s_and_loads_both_ways():
    sub = SubBatchNorm3d(3, num_splits=4).train()
    sub(_x())
    state = sub.state_dict()  # aggregated on the way out
    plain = nn.BatchNorm3d(3)
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state)
    back = SubBatchNorm3d(3, num_splits=2)
    back.load_state_dict(plain.state_dict())
    assert torch.equal(back.split_mean, plain.running_mean.repeat(2))


def test_one_split_is_plain_bn_and_a_batch_that_does_not_split_is_an_error():
    x = _x()
    a, b = _affine(SubBatchNorm3d(3)).train(), _affine(nn.BatchNorm3d(3)).train()
    assert torch.equal(a(x), b(x)) and torch.equal(a.running_var, b.running_var)
    with pytest.raises(ValueError, match="a batch of 8 clips does not split into 3"):
        SubBatchNorm3d(3, num_splits=3).train()(x)


def test_a_model_switches_splits_between_stages_keeping_its_tensors():
    from slowfast_dist.config import load_config
    from slowfast_dist.models import build_model

    cfg = load_config("configs/demo.yaml", ["DATA.TRAIN_CROP_SIZE", "32"])
    model = build_model(cfg)
    params = [id(p) for p in model.parameters()]
    keys = set(model.state_dict())
    layers = set_bn_splits(model, 4)
    assert layers > 10 and all(type(m) is not nn.BatchNorm3d for m in model.modules())
    assert [id(p) for p in model.parameters()] == params  # the optimizer's tensors stay
    assert set(model.state_dict()) == keys
    xs = [torch.randn(8, 3, 2, 32, 32), torch.randn(8, 3, 8, 32, 32)]
    boxes = torch.tensor([[i, 0.0, 0.0, 20.0, 20.0] for i in range(8)])
    model.train()
    model(xs, boxes).sum().backward()
    assert set_bn_splits(model, 2) == layers  # the next stage: fewer splits, same modules
    model(xs, boxes)
    model.eval()
    assert all(torch.isfinite(m.running_var).all() for m in model.modules()
               if isinstance(m, SubBatchNorm3d))


def test_room_for_more_splits_changes_nothing_and_the_buffers_stay_the_same_tensors():
    """DDP holds a module's buffers from the start: a later stage's splits must live in them."""
    roomy, exact = SubBatchNorm3d(3, num_splits=2, capacity=4).train(), \
        SubBatchNorm3d(3, num_splits=2).train()
    buffers = [roomy.split_mean.data_ptr(), roomy.split_var.data_ptr()]
    for step in range(3):
        assert torch.equal(roomy(_x(seed=step)), exact(_x(seed=step)))
    roomy.set_splits(4)
    roomy(_x())
    assert [roomy.split_mean.data_ptr(), roomy.split_var.data_ptr()] == buffers
    with pytest.raises(ValueError, match="5 splits"):
        roomy.set_splits(5)


def test_split_statistics_round_trip_and_the_same_k_keeps_them():
    from slowfast_dist.models.sub_batchnorm import load_split_states, split_states

    model = nn.Sequential(nn.BatchNorm3d(3))
    set_bn_splits(model, 2, capacity=4)
    model.train()
    model(_x())
    saved = split_states(model)
    state = model.state_dict()  # aggregated: loses the spread between the splits
    other = nn.Sequential(nn.BatchNorm3d(3))
    set_bn_splits(other, 1, capacity=4)
    other.load_state_dict(state)
    load_split_states(other, saved)
    set_bn_splits(other, 2)  # the stage of the checkpoint: kept, not restarted
    a, b = model[0], other[0]
    assert torch.equal(a.split_var[:6], b.split_var[:6]) and a.num_splits == b.num_splits
    model(_x(seed=3)), other(_x(seed=3))
    model.eval(), other.eval()
    assert torch.equal(model[0].running_var, other[0].running_var)
