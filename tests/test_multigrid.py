"""train/multigrid.py against PySlowFast's own multigrid code, value for value.

The expected values come from running PySlowFast 287ec00's `slowfast/utils/multigrid.py`,
`lr_policy.py`, `multigrid_helper.py`, `is_eval_epoch` and `is_checkpoint_epoch` on the same keys
(`tests/data/make_multigrid_reference.py`, which wrote `tests/data/multigrid_reference.json`)."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from slowfast_dist.config import load_config
from slowfast_dist.errors import UserError
from slowfast_dist.train import multigrid as M
from slowfast_dist.train import schedule

REF = json.loads((Path(__file__).parent / "data" / "multigrid_reference.json").read_text())
CASES = {k: v for k, v in REF["cases"].items() if "error" not in v}


def spec_of(keys):
    return M.MultigridSpec(long_cycle=keys["LONG_CYCLE"], short_cycle=keys["SHORT_CYCLE"],
                           long_cycle_factors=tuple(map(tuple, keys["LONG_CYCLE_FACTORS"])),
                           short_cycle_factors=tuple(keys["SHORT_CYCLE_FACTORS"]),
                           epoch_factor=keys["EPOCH_FACTOR"], bn_base_size=keys["BN_BASE_SIZE"],
                           eval_freq=keys["EVAL_FREQ"])


def plan(keys):
    spec = spec_of(keys)
    stages = (M.long_cycle_schedule(spec, steps=keys["STEPS"], max_epoch=keys["MAX_EPOCH"],
                                    frames=keys["NUM_FRAMES"], crop=keys["CROP"])
              if spec.long_cycle else None)
    solver = M.derived_solver(spec, stages, steps=keys["STEPS"], lrs=keys["LRS"],
                              max_epoch=keys["MAX_EPOCH"], gamma=keys["GAMMA"])
    return spec, stages, solver


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_and_solver_equal_pyslowfast(name):
    case = CASES[name]
    _, stages, solver = plan(case["keys"])
    if case["schedule"] is None:
        assert stages is None
    else:
        assert [[s.lr_step, [s.batch_factor, s.frames, s.crop], s.end_epoch] for s in stages] \
            == case["schedule"]
    assert solver.steps == case["solver"]["STEPS"]
    assert solver.lrs == pytest.approx(case["solver"]["LRS"], rel=1e-12)
    assert solver.max_epoch == case["solver"]["MAX_EPOCH"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_epoch_equals_pyslowfast(name):
    """Batch, clip shape, sampling rate, BN, evaluation and checkpoint epochs, short-cycle
    batches and the LR at every quarter epoch, over the whole stretched run."""
    case = CASES[name]
    keys = case["keys"]
    spec, stages, solver = plan(keys)
    lr_at = dict(base_lr=keys["BASE_LR"], policy="steps_with_relative_lrs",
                 steps=solver.steps, lrs=solver.lrs, max_epoch=solver.max_epoch,
                 warmup_epochs=keys["WARMUP_EPOCHS"], warmup_start_lr=keys["WARMUP_START_LR"])
    assert len(case["epochs"]) == solver.max_epoch
    for want in case["epochs"]:
        e = want["epoch"]
        if stages:
            got = M.stage_settings(spec, M.stage_at(stages, e), batch_size=keys["BATCH_SIZE"],
                                   num_gpus=keys["NUM_GPUS"], frames=keys["NUM_FRAMES"],
                                   sampling_rate=keys["SAMPLING_RATE"])
            assert (got.batch_size, got.frames, got.crop, got.sampling_rate, got.norm_type) == (
                want["batch_size"], want["frames"], want["crop"],
                want["long_cycle_sampling_rate"], want["norm_type"]), e
            if got.norm_type == "sub_batchnorm":  # the others leave it stale in PySlowFast
                assert got.bn_splits == want["num_splits"], e
            if got.norm_type == "sync_batchnorm":
                assert got.bn_sync_devices == want["num_sync_devices"], e
        else:
            assert (want["batch_size"], want["frames"], want["crop"]) == (
                keys["BATCH_SIZE"], keys["NUM_FRAMES"], keys["CROP"])
        assert M.is_period_epoch(e, solver.max_epoch, stages, spec.eval_freq,
                                 keys["EVAL_PERIOD"]) == want["eval"], e
        assert M.is_period_epoch(e, solver.max_epoch, stages, spec.eval_freq,
                                 keys["CHECKPOINT_PERIOD"]) == want["checkpoint"], e
        if want["short_cycle"]:
            cycle = M.short_cycle(spec, per_gpu_batch=want["batch_size"] // keys["NUM_GPUS"],
                                  crop=want["crop"], default_crop=keys["CROP"])
            assert [b for b, _ in cycle] == want["short_cycle"]["batch_sizes"], e
        for q, lr in enumerate(want["lr"]):
            assert schedule.lr_at(e + q / 4, **lr_at) == pytest.approx(lr, rel=1e-12), (e, q)


def test_short_cycle_crops_follow_pyslowfast_s_data_set_rule():
    # kinetics.py: crop = int(round(SHORT_CYCLE_FACTORS[i] * DEFAULT_S)), then the stage's own
    cycle = M.short_cycle(M.MultigridSpec(short_cycle=True), per_gpu_batch=8, crop=224,
                          default_crop=224)
    assert cycle == [(32, 112), (16, 158), (8, 224)]


def test_long_cycles_without_short_cycles_run_where_pyslowfast_fails():
    assert REF["cases"]["long_cycle_only"]["error"].startswith("IndexError")
    keys = REF["cases"]["long_cycle_only"]["keys"]
    _, stages, solver = plan(keys)
    # every LR step runs through the 4 cycles, then the fine-tuning phase at the full shape
    assert [s.lr_step for s in stages] == [0] * 4 + [1] * 4 + [2] * 4 + [3]
    assert (stages[-1].frames, stages[-1].crop, stages[-1].batch_factor) == (32, 224, 1)
    assert solver.max_epoch == stages[-1].end_epoch == round(20 * 1.5)
    ends = [s.end_epoch for s in stages]
    assert ends == sorted(ends)


def test_multigrid_keys_are_read_and_checked(tmp_path):
    cfg = load_config("configs/demo.yaml", ["MULTIGRID.LONG_CYCLE", "True",
                                            "MULTIGRID.SHORT_CYCLE", "True",
                                            "SOLVER.LR_POLICY", "steps_with_relative_lrs"])
    spec = M.MultigridSpec.from_cfg(cfg)
    assert spec.long_cycle and spec.short_cycle and spec.long_cycle_factors[0] == (
        0.25, pytest.approx(0.5 ** 0.5))
    cosine = load_config("configs/demo.yaml", ["MULTIGRID.LONG_CYCLE", "True",
                                               "SOLVER.LR_POLICY", "cosine"])
    with pytest.raises(UserError, match="SOLVER.LR_POLICY: must be steps_with_relative_lrs"):
        M.MultigridSpec.from_cfg(cosine)
    bad = load_config("configs/demo.yaml", ["MULTIGRID.SHORT_CYCLE", "True",
                                            "MULTIGRID.SHORT_CYCLE_FACTORS", "[0.5]"])
    with pytest.raises(UserError, match="MULTIGRID.SHORT_CYCLE_FACTORS"):
        M.MultigridSpec.from_cfg(bad)
    pair = load_config("configs/demo.yaml", ["MULTIGRID.LONG_CYCLE", "True",
                                             "MULTIGRID.LONG_CYCLE_FACTORS", "[0.5, 1]"])
    with pytest.raises(UserError, match=r"^MULTIGRID.LONG_CYCLE_FACTORS \[0.5, 1\]: must be \(T, S\)"):
        M.MultigridSpec.from_cfg(pair)


@pytest.mark.parametrize("scaling,power", [("sqrt", 0.5), ("none", 0.0)])
def test_lr_scaling_changes_only_the_batch_factor_s_exponent(scaling, power):
    keys = CASES["ava_short"]["keys"]
    spec, stages, linear = plan(keys)
    gentler = M.derived_solver(replace(spec, lr_scaling=scaling), stages, steps=keys["STEPS"],
                               lrs=keys["LRS"], max_epoch=keys["MAX_EPOCH"], gamma=keys["GAMMA"])
    assert gentler.steps == linear.steps and gentler.max_epoch == linear.max_epoch
    # linear LRs are gamma^step x batch factor: the same stages, the factor to the power
    expected = [keys["GAMMA"] ** s.lr_step * s.batch_factor ** power for s in stages]
    expected = expected[:-1] + [expected[-2], expected[-1]]
    assert gentler.lrs == pytest.approx(expected, rel=1e-12)
    assert max(s.batch_factor for s in stages) > 1 and gentler.lrs[0] < linear.lrs[0]
    cfg = load_config("configs/demo.yaml", ["MULTIGRID.LONG_CYCLE", "True",
                                            "MULTIGRID.LR_SCALING", "cube",
                                            "SOLVER.LR_POLICY", "steps_with_relative_lrs"])
    with pytest.raises(UserError, match="MULTIGRID.LR_SCALING: must be one of linear, sqrt, "
                                        r"none \(got cube\)"):
        M.MultigridSpec.from_cfg(cfg)


def _train(cfg):
    import torch.distributed as dist

    from slowfast_dist.train import trainer

    try:
        return trainer.train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_dry_run_prints_the_multigrid_schedule_of_512_ranks(tmp_path, capsys):
    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml",
                      ["DIST.DRY_RUN_WORLD_SIZE", "512", "OUTPUT_DIR", str(tmp_path),
                       "AVA.FRAME_LIST_DIR", str(tmp_path / "absent"),
                       "MULTIGRID.LONG_CYCLE", "True", "MULTIGRID.SHORT_CYCLE", "True"])
    report = _train(cfg)
    want = REF["cases"]["ava_short"]  # the same SOLVER keys and shape, in PySlowFast
    grid = report["multigrid"]
    assert grid["solver"]["STEPS"] == want["solver"]["STEPS"]
    assert grid["solver"]["MAX_EPOCH"] == want["solver"]["MAX_EPOCH"] == 30
    assert [[r["frames"], r["crop"], r["epochs"][1]] for r in grid["stages"]] == [
        [t, s, end] for _, (_, t, s), end in want["schedule"]]
    first = grid["stages"][0]  # 8 frames x 158: 8x the clips per rank, 8x the global batch
    assert (first["batch_per_rank"], first["global_batch"]) == (64, 64 * 512)
    assert first["short_cycle"] == [{"batch_per_rank": 128, "crop": 112},
                                    {"batch_per_rank": 64, "crop": 158},
                                    {"batch_per_rank": 64, "crop": 158}]
    assert first["bn"] == "sub_batchnorm, 8 splits"  # BN over 8 clips, as the paper
    assert first["norm_type"] == "sub_batchnorm" and first["bn_splits"] == 8
    # the run's LR follows the re-derived steps: relative LRs carry the stage's batch factor
    assert report["lr_at_epoch"]["7"] == pytest.approx(4 * report["lr_at_epoch"]["13"])
    # the fine-tuning phase's second half rounds to nothing on a 20-epoch schedule, in
    # PySlowFast too: the plan says so rather than hide it
    assert report["lr_schedule"].endswith("steps at epoch 30, 30 not reached (MAX_EPOCH 30)")
    err = capsys.readouterr().err
    assert "multigrid (long cycle + short cycle): 20 epochs stretched to 30" in err
    # and the study's MAX_EPOCH on its last step leaves no fine-tuning phase at all: said
    assert grid["finetune_epochs"] == 0
    assert "warning: multigrid: no fine-tuning phase at the default shape (32 frames x 224 px" \
           in err and "SOLVER.STEPS [0, 10, 15] with SOLVER.LRS [1, 0.1, 0.01] keeps" in err
    assert "epochs 1-7: LR step 0, 8 frames x 158 px at rate 8, global batch 32768" in err


# 2 LR steps x 2 long-cycle shapes + fine-tuning, stretched to 4 epochs: epochs 1-2 at 4 frames x
# 34 px with the short cycle 8@24, 4@34, 4@34 per rank and BN over 4 splits of 1 clip, then epochs
# 3 and 4 at the full 8 x 48 (4@24, 2@34, 1@48) with plain BN; 36 keyframes per rank: 6 then 15
# steps
GRID = ["MULTIGRID.LONG_CYCLE", "True", "MULTIGRID.SHORT_CYCLE", "True",
        "MULTIGRID.LONG_CYCLE_FACTORS", "[[0.5, 0.7071], [1.0, 1.0]]", "MULTIGRID.BN_BASE_SIZE",
        "1", "SOLVER.STEPS", "[0, 2]", "SOLVER.LRS", "[1, 0.1]", "SOLVER.MAX_EPOCH", "3",
        "SOLVER.WARMUP_EPOCHS", "0", "TRAIN.BATCH_SIZE", "1", "DATA.TRAIN_CROP_SIZE", "48",
        "DATA.TEST_CROP_SIZE", "48", "DATA.TRAIN_JITTER_SCALES", "[48, 56]",
        "DATA_LOADER.NUM_WORKERS", "1", "DATA_LOADER.PERSISTENT_WORKERS", "True",
        "MODEL.DROPOUT_RATE", "0.5", "TRAIN.EVAL_PERIOD", "1", "LOG_PERIOD", "2"]


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    from slowfast_dist.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("grid")
    make_synthetic(str(root), videos=8, seconds=12, seed=1, width=64, height=48)
    return root


def test_ddp_multigrid_run_stopped_mid_cycle_resumes_bit_identical(grid_data, tmp_path):
    """2 gloo ranks with persistent workers: the stages' batches, clip shapes and BN splits, the
    evaluation at the default shape, and a SIGTERM inside a short cycle of the sub-batch-BN
    stage: the relaunch ends with the uninterrupted run's weights and BN statistics, bit for
    bit (the split statistics travel in the checkpoint)."""
    import os
    import signal

    import support
    from slowfast_dist.train import checkpoint as ckpt

    whole = support.finish(support.torchrun(grid_data, tmp_path / "whole", *GRID))
    assert "20 epochs stretched" not in whole and "3 epochs stretched to 4" in whole
    assert "multigrid stage of epochs 1-2: 4 frames at rate 8, per rank (batch@crop) 8@24, " \
           "4@34, 4@34, BN sub_batchnorm, 4 splits; switched in" in whole
    for epochs in ("3-3", "4-4"):  # LR step 1's full shape, then fine-tuning
        assert f"multigrid stage of epochs {epochs}: 8 frames at rate 4, per rank (batch@crop) " \
               "4@24, 2@34, 1@48, BN batchnorm" in whole
    assert "epoch 2 [####################] 6/6 " in whole and "] 15/15 " in whole
    assert "epoch 4/4: mAP" in whole and "epoch 1/4: mAP" in whole  # plan's eval epochs
    assert "nothing rebuilt" in whole and whole.count("Traceback") == 0
    assert "no fine-tuning phase" not in whole  # MAX_EPOCH 3 is past the last step, 2

    out = tmp_path / "cut"
    proc = support.torchrun(grid_data, out, *GRID)
    text, _ = support.run_until(proc, r"\] epoch 2 \[.*\] 2/6 ",
                                lambda: os.killpg(proc.pid, signal.SIGTERM))
    m = re.search(r"stopped on SIGTERM in epoch 2 after step (\d) of 6", text)
    assert m, text[-3000:]
    step = int(m.group(1))
    assert step % 3, f"stopped after step {step}: at the end of a short cycle, not inside one"
    mid = ckpt.read_checkpoint(ckpt.checkpoint_path(out, 1, step))
    splits = mid["bn_split_states"]
    assert splits and {v["num_splits"] for v in splits.values()} == {4}
    again = support.finish(support.torchrun(grid_data, out, *GRID))
    assert f"(starting epoch 2, step {step + 1})" in again
    a = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "whole", 3))["model_state"]
    b = ckpt.read_checkpoint(ckpt.checkpoint_path(out, 3))["model_state"]
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


@pytest.mark.cuda
def test_cuda_multigrid_training_on_one_gpu(grid_data, tmp_path):
    """The same plan on one GPU (torchrun, nccl): every stage's shapes and sub-batch BN train on
    CUDA, the plan's evaluations run, the checkpoints hold finite weights and the split states.
    72 keyframes on one rank: 13 then 30 steps."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (make gpu-check)")
    import math

    import support
    from slowfast_dist.train import checkpoint as ckpt

    out = tmp_path / "gpu"
    text = support.finish(support.torchrun(grid_data, out, *GRID, "NUM_GPUS", "1", nproc=1))
    assert "backend nccl" in text, text[-3000:]
    assert "BN sub_batchnorm, 4 splits; switched in" in text
    assert "epoch 2 [####################] 13/13 " in text and "] 30/30 " in text, text[-3000:]
    assert "epoch 4/4: mAP" in text and text.count("Traceback") == 0
    assert math.isfinite(json.loads((out / "summary.json").read_text())["last_loss"])
    first = ckpt.read_checkpoint(ckpt.checkpoint_path(out, 1))  # stage 1's last
    assert {v["num_splits"] for v in first["bn_split_states"].values()} == {4}
    assert all(torch.isfinite(t.float()).all() for t in first["model_state"].values())


def test_a_plan_whose_batches_do_not_fit_an_epoch_is_refused_before_training(data, tmp_path):
    from support import cfg_for

    # 12 keyframes: one batch of 6 fits, the short cycle's 24 and 12 do not
    cfg = cfg_for(data, tmp_path, "MULTIGRID.SHORT_CYCLE", "True", "TRAIN.BATCH_SIZE", "6")
    with pytest.raises(UserError, match="multigrid: epoch 1's batches do not fit once in an "
                                        "epoch of 12 keyframes over 1 ranks"):
        _train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_short_cycles_train_with_gradient_accumulation_and_bf16(data, tmp_path, capfd):
    """Micro-batches of 4, 2 and 1 clips (short cycle) accumulate into updates under autocast;
    each epoch runs the steps the plan cuts: 12 keyframes -> 4+2+1, 4 (the 2 does not fit)."""
    from support import cfg_for

    cfg = cfg_for(data, tmp_path, "MULTIGRID.SHORT_CYCLE", "True", "TRAIN.BATCH_SIZE", "1",
                  "TRAIN.GRAD_ACCUM_STEPS", "2", "TRAIN.MIXED_PRECISION", "True",
                  "TRAIN.AMP_DTYPE", "bf16", "SOLVER.MAX_EPOCH", "2", "TRAIN.EVAL_PERIOD", "0",
                  "DATA.TRAIN_CROP_SIZE", "48", "DATA.TRAIN_JITTER_SCALES", "[48, 56]",
                  "SLOWFAST.ALPHA", "2")  # bf16 on CPU: see test_trainer_launch.SLOW4
    summary = _train(cfg)
    err = capfd.readouterr().err
    assert "multigrid (short cycle): 2 epochs stretched to 3" in err
    assert "per rank (batch@crop) 4@24, 2@34, 1@48" in err
    assert "global batch 2 (1/rank)" in err  # an update is 2 micro-steps
    for epoch in (1, 2, 3):
        assert f"epoch {epoch} [####################] 4/4 " in err, err[-2000:]
    assert summary["last_loss"] is not None and summary["last_loss"] > 0


def test_the_detector_runs_at_every_stage_shape():
    """Long-cycle stages change T, the short cycle and the stages change S: the model (RoIAlign,
    the temporal pooling of the head, the Slow/Fast fusion) takes every (T, S) of a plan."""
    import torch

    from slowfast_dist.models import build_model

    cfg = load_config("configs/demo.yaml", [])
    spec = M.MultigridSpec(long_cycle=True, short_cycle=True,
                           long_cycle_factors=((0.5, 0.5 ** 0.5), (1.0, 1.0)))
    p = M.plan(spec, steps=[0, 10, 14], lrs=[1, 0.1, 0.01], max_epoch=16, gamma=0.1, frames=8,
               crop=64, sampling_rate=2, per_rank_batch=2, ranks=1, eval_period=1,
               checkpoint_period=1)
    shapes = {(r["frames"], c["crop"]) for r in p["stages"] for c in r["short_cycle"]}
    assert shapes == {(4, 32), (4, 45), (8, 32), (8, 45), (8, 64)}
    model = build_model(cfg).train()
    for t, s in sorted(shapes):
        xs = [torch.randn(2, 3, t // cfg.SLOWFAST.ALPHA, s, s), torch.randn(2, 3, t, s, s)]
        boxes = torch.tensor([[0, 0.0, 0.0, s - 1.0, s - 1.0], [1, s / 4, s / 4, s / 2, s / 2]])
        out = model(xs, boxes)
        assert out.shape == (2, cfg.MODEL.NUM_CLASSES) and torch.isfinite(out).all(), (t, s)
        out.sum().backward()
    with pytest.raises(UserError, match="a stage of 2 frames does not divide by SLOWFAST.ALPHA 4"):
        M.check_frames([s.frames for s in M.long_cycle_schedule(
            M.MultigridSpec(long_cycle=True), steps=[0, 10], max_epoch=12, frames=8, crop=64)], 4)


def test_bn_splits_divide_every_stage_batch_and_a_zero_batch_is_refused():
    # 7 clips per rank: stages of 28 and 14 clips; BN_BASE_SIZE 8 asks 3 splits of 28 (PySlowFast
    # fails at the stage's first step), so 2 splits of 14
    spec = M.MultigridSpec(long_cycle=True, bn_base_size=8)
    p = M.plan(spec, steps=[0, 10, 15], lrs=[1, 0.1, 0.01], max_epoch=20, gamma=0.1, frames=32,
               crop=224, sampling_rate=2, per_rank_batch=7, ranks=1, eval_period=1,
               checkpoint_period=1)
    for row in p["stages"]:
        assert row["batch_per_rank"] % row["bn_splits"] == 0, row
    # MAX_EPOCH past the last step: the last LR step fine-tunes at the default shape alone
    tuning = [r for r in p["stages"] if r["lr_step"] == 2]
    assert [(r["frames"], r["crop"]) for r in tuning] == [(32, 224)]
    assert p["finetune_epochs"] == tuning[0]["epochs"][1] - tuning[0]["epochs"][0] > 0
    assert {(r["batch_per_rank"], r["bn_splits"]) for r in p["stages"]} >= {(28, 2), (14, 1)}
    # the full-shape stages hold 7 clips, fewer than BN_BASE_SIZE: PySlowFast's sync BN there
    assert {r["norm_type"] for r in p["stages"] if r["batch_per_rank"] == 7} == {"sync_batchnorm"}
    bad = M.MultigridSpec(long_cycle=True, short_cycle=True, short_cycle_factors=(0.5, 0.9),
                          long_cycle_factors=((0.5, 0.5), (1.0, 1.0)))
    with pytest.raises(UserError, match="a short-cycle crop larger than the 112 px of a stage"):
        M.plan(bad, steps=[0, 10, 15], lrs=[1, 0.1, 0.01], max_epoch=20, gamma=0.1, frames=32,
               crop=224, sampling_rate=2, per_rank_batch=8, ranks=1, eval_period=1,
               checkpoint_period=1)
