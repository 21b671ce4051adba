import math
from functools import partial

import pytest

from slowfast_dist.train.schedule import lr_at, scaled_base_lr, scaled_lr, schedule_line

# Study recipe: 0.05 per node (32 labels per node), 20 epochs, 5 warm-up, x0.1 at 10 and 15.
PER_NODE_LR, PER_NODE_WARM = 0.05, 0.000125
RECIPE = dict(policy="steps_with_relative_lrs", max_epoch=20, steps=[0, 10, 15],
              lrs=[1, 0.1, 0.01], warmup_epochs=5.0)


@pytest.mark.parametrize("nodes", [1, 16, 128])
def test_study_recipe_per_iteration(nodes):
    r = scaled_lr(PER_NODE_LR, PER_NODE_WARM, 0.0, num_shards=nodes, scale_num_shards=True)
    assert r.base_lr == pytest.approx(0.05 * nodes) and "x%d" % nodes in str(r)
    # Same as the batch form with 32 labels per node.
    assert scaled_base_lr(PER_NODE_LR, 32 * nodes, 32) == pytest.approx(r.base_lr)
    iters = 100
    kw = dict(RECIPE, base_lr=r.base_lr, warmup_start_lr=r.warmup_start_lr)
    for epoch, it in [(0, 0), (0, 1), (2, 50), (4, 99), (5, 0), (9, 99), (10, 0), (14, 99), (15, 0), (19, 99)]:
        e = epoch + it / iters
        if e < 5:  # linear from warmup start to the step LR at epoch 5 (= base)
            want = r.warmup_start_lr + e * (r.base_lr - r.warmup_start_lr) / 5
        else:
            want = r.base_lr * (1 if e < 10 else 0.1 if e < 15 else 0.01)
        assert lr_at(e, **kw) == pytest.approx(want, rel=1e-12), (nodes, e)
    assert lr_at(0.0, **kw) == pytest.approx(PER_NODE_WARM * nodes)


def test_cosine_and_cosine_after_warmup():
    kw = dict(base_lr=1.0, policy="cosine", max_epoch=10, cosine_end_lr=0.1, warmup_epochs=2,
              warmup_start_lr=0.0)
    assert lr_at(5.0, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (math.cos(math.pi * 0.5) + 1))
    peak_at_2 = 0.1 + 0.9 * 0.5 * (math.cos(math.pi * 0.2) + 1)
    assert lr_at(1.0, **kw) == pytest.approx(peak_at_2 / 2)
    # After warm-up the cosine starts from its peak.
    assert lr_at(2.0, **kw, cosine_after_warmup=True) == pytest.approx(1.0)
    assert lr_at(1.0, **kw, cosine_after_warmup=True) == pytest.approx(0.5)


def test_reference_batch_rule_and_errors():
    r = scaled_lr(0.1, 0.01, 0.0, num_shards=4, scale_num_shards=True, global_batch=512,
                  reference_global_batch=64)
    assert r.factor == 8 and r.base_lr == pytest.approx(0.8)
    assert scaled_lr(0.1, 0.01, 0.0, num_shards=4, scale_num_shards=False).base_lr == 0.1
    with pytest.raises(ValueError):
        lr_at(1.0, base_lr=0.1, policy="bogus", max_epoch=10)


def test_plan_line_shows_the_lr_of_each_step_of_the_short_config():
    # read through the trainer's resolve_lr, i.e. the lr_at function the training calls
    from slowfast_dist.config import load_config
    from slowfast_dist.train import trainer

    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml", [])
    _, at = trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=cfg.TRAIN.BATCH_SIZE)
    assert trainer.lr_schedule_line(cfg, at) == (
        "lr schedule: epoch 0-10 0.1, 10-15 0.01, 15-20 0.001 (warm-up from 0.000125 to 0.1 over "
        "epochs 0-5); steps at epoch 20 not reached (MAX_EPOCH 20)")
    # cut short on the command line: the line says what will run
    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml", ["SOLVER.MAX_EPOCH", "12"])
    _, at = trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=cfg.TRAIN.BATCH_SIZE)
    assert trainer.lr_schedule_line(cfg, at) == (
        "lr schedule: epoch 0-10 0.1, 10-12 0.01 (warm-up from 0.000125 to 0.1 over epochs 0-5); "
        "steps at epoch 15, 20 not reached (MAX_EPOCH 12)")


def test_plan_line_for_cosine_and_for_a_warm_up_covering_a_step():
    cos = dict(base_lr=1.0, policy="cosine", max_epoch=10, cosine_end_lr=0.1, warmup_epochs=0.0)
    line = schedule_line(partial(lr_at, **cos), policy="cosine", steps=[], max_epoch=10,
                         warmup_epochs=0.0)
    assert line == "lr schedule: cosine 1 at epoch 0 -> 0.1 at epoch 10"
    steps = dict(RECIPE, base_lr=1.0, warmup_start_lr=0.0, warmup_epochs=12.0)
    line = schedule_line(partial(lr_at, **steps), policy=RECIPE["policy"], steps=RECIPE["steps"],
                         max_epoch=20, warmup_epochs=12.0)
    assert line == ("lr schedule: epoch 0-10 warm-up, 10-15 0.1, 15-20 0.01 "
                    "(warm-up from 0 to 0.1 over epochs 0-12)")


def test_from_max_epoch_on_the_last_lr_applies_as_in_pyslowfast():
    # PySlowFast's get_step_index ends its loop on the last index when no bound is above the
    # epoch: a warm-up as long as the run ramps to the last LR instead of failing
    kw = dict(base_lr=1.0, policy="steps_with_relative_lrs", max_epoch=20, steps=[0, 10, 15, 20],
              lrs=[1, 0.1, 0.01, 0.001])
    assert lr_at(19.99, **kw) == pytest.approx(0.01) and lr_at(20.0, **kw) == pytest.approx(0.001)
    assert lr_at(10.0, **kw, warmup_epochs=20.0, warmup_start_lr=0.0) == pytest.approx(0.0005)


def test_warm_up_grows_with_the_batch_when_asked():
    from slowfast_dist.config import load_config
    from slowfast_dist.errors import UserError
    from slowfast_dist.train import trainer

    opts = ["SOLVER.REFERENCE_GLOBAL_BATCH", "64", "SOLVER.WARMUP_SCALES_WITH_BATCH", "True"]
    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml", opts)
    # 1.5x the reference batch: 1.5x the 5 warm-up epochs, and the LRs by the linear rule
    _, at = trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=96)
    assert at.keywords["warmup_epochs"] == 7.5
    assert trainer.lr_schedule_line(cfg, at) == (
        "lr schedule: epoch 0-10 0.15, 10-15 0.015, 15-20 0.0015 (warm-up from 0.0001875 to "
        "0.15 over epochs 0-7.5); steps at epoch 20 not reached (MAX_EPOCH 20)")
    # never shorter than configured; ends an epoch before the first LR step, at the base LR
    _, at = trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=32)
    assert at.keywords["warmup_epochs"] == 5.0
    lr, at = trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=64 * 8)
    assert at.keywords["warmup_epochs"] == 9.0
    assert at(9.0) == pytest.approx(lr.base_lr) and at(8.999) < lr.base_lr
    # off: PySlowFast's fixed length whatever the batch
    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml", opts[:2])
    _, at = trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=256)
    assert at.keywords["warmup_epochs"] == 5.0
    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml", opts[2:])
    with pytest.raises(UserError, match="needs SOLVER.REFERENCE_GLOBAL_BATCH"):
        trainer.resolve_lr(cfg, world_size=cfg.NUM_GPUS, global_batch=256)


def test_start_up_line_names_the_cosine_end_only_under_cosine():
    lr = scaled_lr(0.1, 0.01, 0.001, num_shards=4, scale_num_shards=True)
    assert lr.describe(cosine=True) == ("base_lr=0.4 warmup_start_lr=0.04 cosine_end_lr=0.004 "
                                        f"({lr.rule})")
    assert "cosine_end_lr" not in lr.describe(cosine=False)
