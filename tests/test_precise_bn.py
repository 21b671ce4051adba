"""train/precise_bn.py: BN statistics as the plain average over training batches (PySlowFast's
BN.USE_PRECISE_STATS), on a fork of the RNG, and in the trainer before the checkpoint."""

import torch
from torch import nn

from slowfast_dist.models.sub_batchnorm import SubBatchNorm3d, set_bn_splits
from slowfast_dist.train.precise_bn import update_bn_stats


def _batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 2, 2, 3, 3, generator=g) * (k + 1) + k for k in range(n)]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3, momentum=0.1), nn.Dropout(0.5))


def test_statistics_are_the_average_over_the_batches_and_the_rng_is_untouched():
    model, batches = _model(), _batches()
    torch.manual_seed(7)
    used = update_bn_stats(model, iter(batches), 2, lambda m, x: m(x))
    after = torch.rand(3)
    torch.manual_seed(7)
    assert used == 2 and torch.equal(after, torch.rand(3))  # dropout drew from a fork
    with torch.no_grad():
        ys = [model[0](x) for x in batches[:2]]
    dims = (0, 2, 3, 4)
    mean = sum(y.mean(dims) for y in ys) / 2
    var = sum(y.var(dims, unbiased=True) for y in ys) / 2  # what BN's running_var holds
    bn = model[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, atol=1e-5)
    assert bn.momentum == 0.1 and model.training


def test_sub_batch_bn_is_measured_whole_and_keeps_its_splits():
    model = _model()
    set_bn_splits(model, 2, capacity=2)
    model.train()
    model(_batches()[0])  # splits move apart
    update_bn_stats(model, iter(_batches()), 3, lambda m, x: m(x))
    bn = model[1]
    assert isinstance(bn, SubBatchNorm3d) and bn.num_splits == 2
    assert torch.equal(bn.split_mean, bn.running_mean.repeat(2))  # restarted from the average


def test_the_trainer_recomputes_bn_before_the_checkpoint_and_trains_the_same(data, tmp_path,
                                                                                capfd):
    from support import cfg_for

    from slowfast_dist.train import checkpoint as ckpt
    from slowfast_dist.train import trainer

    common = ["SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0", "MODEL.DROPOUT_RATE", "0.5"]
    trainer.train(cfg_for(data, tmp_path / "plain", *common))
    trainer.train(cfg_for(data, tmp_path / "precise", *common, "BN.USE_PRECISE_STATS", "True",
                          "BN.NUM_BATCHES_PRECISE", "2"))
    assert "precise BN: statistics over 2 batches at the default shape" in capfd.readouterr().err
    a = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "plain", 0))["model_state"]
    b = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "precise", 0))["model_state"]
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in a if k.endswith(("weight", "bias"))]
    assert all(torch.equal(a[k], b[k]) for k in weights)  # the same training
    assert all(not torch.equal(a[k], b[k]) for k in stats)  # other statistics
