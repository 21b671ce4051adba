"""The trainer: DDP equals one process, resume is bit-identical, bad checkpoints and NaN losses."""

import contextlib
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from slowfast_dist.config import load_config
from slowfast_dist.errors import UserError
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import launch, trainer
from slowfast_dist.train.loop import train_one_epoch
from slowfast_dist.train.meters import StepMeter

from support import cfg_for, free_port


# ---- DDP with 2 processes == 1 process with the same global batch --------------------------

class ListLoader:
    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, epoch, start_step=0):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def fixed_batches(per_rank, ranks, steps):
    """Batches of `per_rank * ranks` clips, each clip with one box; split by rank on demand."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        n = per_rank * ranks
        out.append({"inputs": [torch.randn(n, 3, 2, 32, 32, generator=g),
                               torch.randn(n, 3, 8, 32, 32, generator=g)],
                    "boxes": torch.tensor([[i, 2.0, 3.0, 25.0, 30.0] for i in range(n)]),
                    "labels": (torch.rand(n, 6, generator=g) > 0.5).float()})
    return out


def shard(batch, rank, per_rank):
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    boxes = batch["boxes"][lo:hi].clone()
    boxes[:, 0] -= lo
    return {"inputs": [x[lo:hi] for x in batch["inputs"]], "boxes": boxes,
            "labels": batch["labels"][lo:hi]}


def run_steps(cfg, model, batches, world_size, rank):
    import torch.distributed as dist

    optimizer = trainer.build_optimizer(model, lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
                                        weight_decay=1e-4, bn_weight_decay=0.0)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    meter = StepMeter(rank=rank, world_size=world_size, device=torch.device("cpu"), log_period=100)
    train_one_epoch(model, ListLoader(batches), optimizer, epoch=0, lr_at=lambda e: 0.1 * (1 + e),
                    loss_fn=torch.nn.BCEWithLogitsLoss(), device=torch.device("cpu"),
                    autocast=lambda: torch.autocast("cpu", enabled=False),
                    scaler=torch.amp.GradScaler("cpu", enabled=False), accum_steps=1, meter=meter)
    if dist.is_initialized():
        dist.destroy_process_group()
    return ckpt.unwrap(model).state_dict()


def tiny_model(cfg):
    from slowfast_dist.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    # Per-rank BN statistics differ from whole-batch ones; frozen BN makes DDP exactly equal.
    trainer.freeze_batchnorm(model)
    return model


def _ddp_worker(rank, port, cfg, batches, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    state = run_steps(cfg, tiny_model(cfg), [shard(b, rank, 2) for b in batches], 2, rank)
    if rank == 0:
        torch.save(state, out)


def test_ddp_two_processes_equal_one_process_with_same_global_batch(data, tmp_path):
    cfg = cfg_for(data, tmp_path, "MODEL.DROPOUT_RATE", "0.0")
    batches = fixed_batches(per_rank=2, ranks=2, steps=3)
    mp.spawn(_ddp_worker, args=(free_port(), cfg, batches, tmp_path / "ddp.pt"), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt")
    single = run_steps(cfg, tiny_model(cfg), batches, 1, 0)
    init = tiny_model(cfg).state_dict()
    moved = [k for k in single if not torch.equal(single[k], init[k])]
    assert moved, "three SGD steps must change the parameters"
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=1e-5, msg=key)


# ---- resume, damaged checkpoints, NaN -------------------------------------------------------

def test_resume_after_epoch_1_is_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    common = ["SOLVER.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_PERIOD", "1", "TRAIN.EVAL_PERIOD", "0"]
    trainer.train(cfg_for(data, tmp_path / "a", *common))
    trainer.train(cfg_for(data, tmp_path / "b", *common))
    # "Kill" run b after epoch 1: drop what it wrote later, then start it again.
    ckpt.checkpoint_path(tmp_path / "b", 1).unlink()
    summary = trainer.train(cfg_for(data, tmp_path / "b", *common))
    assert summary["last_loss"] is not None
    a = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "a", 1))
    b = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "b", 1))
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    first = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "a", 0))["model_state"]
    assert any(not torch.equal(first[k], a["model_state"][k]) for k in first)


def test_checkpoint_layout_is_pyslowfast_and_write_is_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 4), model=model, optimizer=opt,
                                epoch=4, cfg_dump="A: 1\n")
    assert path.name == "checkpoint_epoch_00005.pyth"
    state = ckpt.read_checkpoint(path)
    assert {"model_state", "optimizer_state", "epoch", "cfg"} <= set(state)
    # A write that dies half-way leaves the earlier file and no temporary behind.
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, model=model, optimizer=opt, epoch=5, cfg_dump="")
    assert ckpt.read_checkpoint(path)["epoch"] == 4
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_mid_epoch_checkpoints_sort_after_their_epoch_and_go_when_superseded(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save = lambda path, **kw: ckpt.save_checkpoint(path, model=model, optimizer=opt,  # noqa: E731
                                                   cfg_dump="", **kw)
    end1 = save(ckpt.checkpoint_path(tmp_path, 0), epoch=0)
    mid = save(ckpt.checkpoint_path(tmp_path, 1, 3), epoch=0, epoch_step=3,
               rng_states=[ckpt.rng_state(), ckpt.rng_state()])
    assert mid.name == "checkpoint_epoch_00002_step_000003.pyth"
    assert ckpt.list_checkpoints(tmp_path) == [end1, mid]
    state = ckpt.latest_good_checkpoint(tmp_path)[1]
    notes = []
    assert ckpt.restore(state, model=model, rank=1, world_size=2) == (1, 3)
    assert ckpt.restore(state, model=model, rank=0, world_size=4, log=notes.append) == (1, 3)
    assert "RNG states of 2 rank(s) and this run has 4" in notes[0]
    end2 = save(ckpt.checkpoint_path(tmp_path, 1), epoch=1)
    assert ckpt.list_checkpoints(tmp_path) == [end1, end2]  # the mid-epoch one is superseded


def test_damaged_checkpoint_is_refused_and_the_previous_one_used(tmp_path, capsys):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in (0, 1):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, epoch), model=model, optimizer=opt,
                             epoch=epoch, cfg_dump="")
    newest = ckpt.checkpoint_path(tmp_path, 1)
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as after a crash mid-copy
    with pytest.raises(trainer.UserError, match="checkpoint_epoch_00002.pyth: not a readable"):
        ckpt.read_checkpoint(newest)
    path, state = ckpt.latest_good_checkpoint(tmp_path)
    assert path == ckpt.checkpoint_path(tmp_path, 0) and state["epoch"] == 0
    assert "skipping damaged checkpoint" in capsys.readouterr().err


def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in (0, 1):
        path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, epoch), model=model,
                                    optimizer=opt, epoch=epoch, cfg_dump="")
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"checkpoints: all 2 checkpoint\(s\) are damaged .*"
                                        r"TRAIN.AUTO_RESUME False"):
        ckpt.latest_good_checkpoint(tmp_path)
    assert ckpt.latest_good_checkpoint(tmp_path / "empty") is None


def test_a_checkpoint_of_another_model_is_one_line_naming_file_and_key(tmp_path):
    small, big = torch.nn.Linear(3, 2), torch.nn.Linear(3, 5)
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 0), model=small,
                                optimizer=torch.optim.SGD(small.parameters(), lr=0.1),
                                epoch=0, cfg_dump="")
    state = ckpt.read_checkpoint(path)
    with pytest.raises(UserError) as err:
        ckpt.restore(state, model=big, path=path)
    assert str(err.value).startswith(f"{path}: made by another model config (weight has shape "
                                     "[2, 3] in the file, [5, 3] in this model)")
    assert "\n" not in str(err.value)


def test_flipped_byte_in_the_weights_is_refused(tmp_path):
    model = torch.nn.Linear(300, 200)  # the weights fill the middle of the file
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 0), model=model,
                                optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epoch=0,
                                cfg_dump="")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # torch.load alone would return other weights without a word
    path.write_bytes(bytes(raw))
    with pytest.raises(trainer.UserError, match="checkpoint_epoch_00001.pyth: damaged checkpoint"):
        ckpt.read_checkpoint(path)


def test_partial_file_of_a_killed_save_is_invisible_to_pyslowfast_and_cleared(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    temps, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (temps.append(Path(a).name), real_replace(a, b)))
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 0), model=model, optimizer=opt, epoch=0,
                         cfg_dump="")
    # PySlowFast's get_last_checkpoint takes the last sorted name that contains "checkpoint".
    assert temps and "checkpoint" not in temps[0]
    stale = ckpt.checkpoint_dir(tmp_path) / temps[0]
    stale.write_bytes(b"half a file")  # what a SIGKILL mid-write leaves
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), model=model, optimizer=opt, epoch=1,
                         cfg_dump="")
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == [
        "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(data, tmp_path,
                                                                                monkeypatch, capsys):
    real = trainer.make_loss
    calls = {"n": 0}

    def poisoned(name):
        loss = real(name)

        def fn(logits, labels):
            calls["n"] += 1
            value = loss(logits, labels)
            return value * float("nan") if calls["n"] == 5 else value  # epoch 2, step 2
        return fn

    monkeypatch.setattr(trainer, "make_loss", poisoned)
    # LOG_PERIOD 1: the loss is read every step, so the step is named exactly (with a longer
    # period the meter names the window's step range: tests/test_meters.py)
    cfg = cfg_for(data, tmp_path, "SOLVER.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_PERIOD", "1",
                  "TRAIN.EVAL_PERIOD", "0", "LOG_PERIOD", "1")
    assert launch.guarded(trainer.train, cfg) == 3
    err = capsys.readouterr().err
    assert "non-finite loss in epoch 2, step 2 of 3" in err
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint_epoch_00001.pyth"]
    assert ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path, 0))["epoch"] == 0


def test_too_few_keyframes_for_one_global_batch_is_a_clear_error(data, tmp_path):
    with pytest.raises(trainer.UserError, match="fewer than one global batch"):
        trainer.train(cfg_for(data, tmp_path, "TRAIN.BATCH_SIZE", "64"))


@pytest.mark.parametrize("nodes", [1, 16, 128])
def test_study_config_resolves_to_the_linear_scaling_recipe(nodes):
    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50.yaml", [])
    gpus = nodes * cfg.NUM_GPUS
    lr, lr_at = trainer.resolve_lr(cfg, world_size=gpus, global_batch=8 * gpus)
    assert trainer.per_process_batch(cfg.TRAIN.BATCH_SIZE, cfg.NUM_GPUS) == 8
    with pytest.raises(trainer.UserError, match="^TEST.BATCH_SIZE 2 is smaller than NUM_GPUS 4"):
        trainer.per_process_batch(2, 4, "TEST.BATCH_SIZE")
    assert lr.base_lr == pytest.approx(0.05 * nodes)
    start = 0.000125 * nodes
    assert lr_at(0.0) == pytest.approx(start)
    assert lr_at(2.5) == pytest.approx(start + (0.05 * nodes - start) * 2.5 / 5)  # warm-up
    assert lr_at(7.0) == pytest.approx(0.05 * nodes)
    assert lr_at(12.0) == pytest.approx(0.005 * nodes)
    assert lr_at(19.9) == pytest.approx(0.0005 * nodes)


def test_cosine_after_warmup_reaches_the_schedule():
    cfg = load_config("configs/demo.yaml", ["SOLVER.LR_POLICY", "cosine", "SOLVER.BASE_LR", "0.1",
                                            "SOLVER.COSINE_END_LR", "0.0", "SOLVER.MAX_EPOCH", "20",
                                            "SOLVER.WARMUP_EPOCHS", "10", "SOLVER.COSINE_AFTER_WARMUP",
                                            "True", "SOLVER.BASE_LR_SCALE_NUM_SHARDS", "False"])
    _, lr_at = trainer.resolve_lr(cfg, world_size=1, global_batch=cfg.TRAIN.BATCH_SIZE)
    assert lr_at(10.0) == pytest.approx(0.1)   # the cosine starts after the warm-up
    assert lr_at(15.0) == pytest.approx(0.05)  # half-way down it


def test_gradient_accumulation_counts_in_the_global_batch(data, tmp_path, capsys):
    import re
    trainer.train(cfg_for(data, tmp_path, "TRAIN.GRAD_ACCUM_STEPS", "2"))
    out = capsys.readouterr()
    g, b = map(int, re.search(r"global batch (\d+) \((\d+)/rank\)", out.out + out.err).groups())
    assert g == 2 * b  # one process, two batches per optimizer step: the LR rule sees both


def test_missing_evaluation_files_fail_before_training(data, tmp_path, capsys):
    with pytest.raises(trainer.UserError, match=r"nope\.csv: AVA.GROUNDTRUTH_FILE not found"):
        trainer.train(cfg_for(data, tmp_path, "TRAIN.EVAL_PERIOD", "1",
                              "AVA.GROUNDTRUTH_FILE", "nope.csv"))
    assert not ckpt.list_checkpoints(tmp_path)  # no epoch ran
    with pytest.raises(trainer.UserError, match="AVA.LABEL_MAP_FILE not found"):
        trainer.test(cfg_for(data, tmp_path, "AVA.LABEL_MAP_FILE", "nope.pbtxt"))


def test_bad_evaluation_rows_fail_before_training(data, tmp_path):
    import shutil

    for case, (name, row) in enumerate((
            ("ava_val_v2.2.csv", "vid,0902,a,b,c,d,1,0"),  # the evaluator's own inputs
            ("ava_val_excluded_timestamps_v2.2.csv", "vid,09x2"),
            ("ava_val_v2.2.csv", None),  # no ground truth: nothing to score
            ("ava_val_predicted_boxes.csv", "vid,0902,0.1,0.1"),  # the val set's (its loader)
            ("ava_action_list_v2.2.pbtxt", None))):
        ann = tmp_path / str(case) / "annotations"
        shutil.copytree(Path(data) / "annotations", ann)
        with open(ann / name, "a" if row else "w") as f:
            f.write(row + "\n" if row else "")
        out = tmp_path / str(case) / "run"
        with pytest.raises(trainer.UserError, match=re.escape(name)):
            trainer.train(cfg_for(data, out, "TRAIN.EVAL_PERIOD", "1",
                                  "AVA.ANNOTATION_DIR", str(ann)))
        assert not ckpt.list_checkpoints(out), name  # no epoch ran


def test_an_evaluation_set_with_nothing_to_score_fails_before_training(data, tmp_path):
    with pytest.raises(trainer.UserError, match=r"^the val set has no keyframe to score: .* at "
                                                r"AVA.DETECTION_SCORE_THRESH 1.5$"):
        trainer.train(cfg_for(data, tmp_path, "TRAIN.EVAL_PERIOD", "1",
                              "AVA.DETECTION_SCORE_THRESH", "1.5"))
    assert not ckpt.list_checkpoints(tmp_path)


def test_a_last_epoch_trained_but_not_scored_is_scored_on_the_rerun(data, tmp_path):
    trainer.train(cfg_for(data, tmp_path, "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0"))
    assert not (tmp_path / "map_epoch00001.json").exists()
    summary = trainer.train(cfg_for(data, tmp_path, "SOLVER.MAX_EPOCH", "1",
                                    "TRAIN.EVAL_PERIOD", "1"))
    assert summary["mAP"] is not None and (tmp_path / "map_epoch00001.json").exists()
    assert "epoch 1 was trained but not evaluated" in (tmp_path / "train.log").read_text()
    again = trainer.train(cfg_for(data, tmp_path, "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "1"))
    assert again["mAP"] == summary["mAP"]  # started once more: nothing to do, the same mAP
    assert "was trained and evaluated already" in (tmp_path / "train.log").read_text()


def test_eval_at_the_end_of_training_equals_the_test_command(data, tmp_path):
    summary = trainer.train(cfg_for(data, tmp_path, "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "1"))
    assert summary["mAP"] is not None and 0.0 <= summary["mAP"] <= 1.0
    rows = (tmp_path / "detections_epoch00001.csv").read_text().splitlines()
    assert rows and len(rows[0].split(",")) == 8  # AVA detection rows
    assert trainer.test(cfg_for(data, tmp_path))["mAP"] == summary["mAP"]
    # each test run keeps its own summary, detections and mAP in its attempt folder
    trainer.test(cfg_for(data, tmp_path))
    tests = sorted((tmp_path / "attempts").iterdir())[-2:]
    for attempt in tests:
        assert {"config.yaml", "summary.json", "detections_test.csv", "map_test.json"} <= {
            p.name for p in attempt.iterdir()}, attempt
    assert (tests[0] / "map_test.json").read_text() == (tmp_path / "map_test.json").read_text()


def test_two_ranks_evaluate_the_checkpoint_s_bn_statistics(data, tmp_path):
    """Without precise BN each rank's last batch moves its own BN statistics after DDP's
    broadcast. The evaluation runs through the DDP wrapper, which broadcasts rank 0's buffers
    (the checkpoint's) before every forward: the scores of the evaluation at the end of
    training are the checkpoint's, one process scoring them again. (Through the bare model,
    rank 1 scores its own statistics: up to 1e-3 apart here.)"""
    import support

    support.finish(support.torchrun(data, tmp_path, "SOLVER.MAX_EPOCH", "1",
                                    "TRAIN.EVAL_PERIOD", "1", "BN.USE_PRECISE_STATS", "False"))
    run = trainer.Run(cfg_for(data, tmp_path))
    path, state = ckpt.latest_good_checkpoint(tmp_path)
    ckpt.load_weights(run.model, state["model_state"], path)
    dataset, loader, _ = run.loader("val")
    run.evaluate(run.model, dataset, loader, "again")
    run.finish()

    def scores(name):
        rows = (tmp_path / name).read_text().splitlines()
        return {tuple(r.split(",")[:7]): float(r.split(",")[7]) for r in rows}

    during, again = scores("detections_epoch00001.csv"), scores("detections_again.csv")
    assert during.keys() == again.keys() and len(during) > 10
    # float noise only (other batches, other kernels)
    assert max(abs(during[k] - again[k]) for k in during) < 1e-4


def test_video_source_with_workers_trains_and_scores_like_the_frames(data, tmp_path):
    # the whole path with PyAV decoding in forked loader workers, no JPEG read at all
    common = ("SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "1", "DATA_LOADER.NUM_WORKERS", "2")
    video = trainer.train(cfg_for(data, tmp_path / "v", *common, "AVA.PIXEL_SOURCE", "video",
                                  "AVA.VIDEO_DIR", str(data / "videos"),
                                  "AVA.FRAME_DIR", str(tmp_path / "no_frames")))
    frames = trainer.train(cfg_for(data, tmp_path / "f", *common))
    assert video["mAP"] is not None and math.isfinite(video["last_loss"])
    # same seed, keyframes and boxes, pixels within JPEG/H.264 loss: the same run, nearly
    assert abs(video["last_loss"] - frames["last_loss"]) < 0.05, (video, frames)


def test_dali_decoder_trains_like_the_cpu_decoder(data, tmp_path):
    """DATA.DECODER dali through the trainer (DALI's CPU backend here): the same draws and
    nearly the same pixels as simplejpeg, so the same losses."""
    pytest.importorskip("nvidia.dali.fn", reason="NVIDIA DALI not installed")
    common = ("SOLVER.MAX_EPOCH", "1", "DATA_LOADER.NUM_WORKERS", "2")
    dali = trainer.train(cfg_for(data, tmp_path / "d", *common, "DATA.DECODER", "dali"))
    cpu = trainer.train(cfg_for(data, tmp_path / "c", *common, "DATA.DECODER", "simplejpeg"))
    assert math.isfinite(dali["last_loss"])
    assert abs(dali["last_loss"] - cpu["last_loss"]) < 1e-4, (dali, cpu)


def test_every_skipped_sample_is_counted_in_the_epoch_that_drew_it(data, tmp_path, capfd):
    """One unreadable keyframe, 2 epochs, 2 persistent workers (which prefetch the next epoch's
    batches before this one ends): each epoch's summary counts it once, wherever it was read."""
    import re
    import shutil

    from slowfast_dist.data import build_ava_dataset

    root = tmp_path / "set"
    shutil.copytree(data, root)
    opts = ("SOLVER.MAX_EPOCH", "2", "TRAIN.EVAL_PERIOD", "0", "TRAIN.BATCH_SIZE", "1",
            "DATA_LOADER.NUM_WORKERS", "2", "LOG_PERIOD", "1")
    cfg = cfg_for(root, tmp_path / "out", *opts)
    ds = build_ava_dataset(cfg, "train")
    vidx, sec, _ = ds.keys[0]
    open(ds.frame_path(vidx, sec, 0), "wb").write(b"not a jpeg")
    trainer.train(cfg)  # batch 1: no keyframe is dropped, every epoch draws each once
    counts = re.findall(r"epoch (\d)/2: .*skipped samples (\d+)", capfd.readouterr().err)
    assert counts == [("1", "1"), ("2", "1")], counts


def test_dry_run_builds_the_study_config_for_512_ranks_without_data(tmp_path):
    import torch.distributed as dist

    cfg = load_config("configs/AVA/SLOWFAST_32x2_R50.yaml",
                      ["DIST.DRY_RUN_WORLD_SIZE", "512", "OUTPUT_DIR", str(tmp_path / "out"),
                       "AVA.FRAME_LIST_DIR", str(tmp_path / "absent")])
    try:
        report = trainer.train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert report["world_size"] == 512 and report["nodes"] == 128
    assert report["global_batch"] == 8 * 512
    assert 33.5e6 < report["params"] < 34.2e6  # SlowFast R50 AVA detector
    assert report["lr_at_epoch"]["5"] == pytest.approx(0.05 * 128)
    assert report["lr_at_epoch"]["15"] == pytest.approx(0.0005 * 128)
    assert report["lr_schedule"] == ("lr schedule: epoch 0-10 6.4, 10-15 0.64, 15-20 0.064 "
                                     "(warm-up from 0.016 to 6.4 over epochs 0-5)")
    groups = report["param_group_lr"]  # the plan's LR per parameter group
    assert groups["weights"] == {"lr": pytest.approx(6.4), "weight_decay": 1e-7, "lars": False,
                                 "lamb_trust": False}
    assert groups["bn"]["weight_decay"] == 0.0 and set(groups) == {"weights", "bn"}
    assert not (tmp_path / "out").exists()  # a dry run writes nothing: no log, config, attempt


# ---- DDP communication options ---------------------------------------------------------------

def _train_worker(rank, port, cfg):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = launch.guarded(trainer.train, cfg)
    if code:
        sys.exit(code)


def _two_rank_params(data, out, *opts):
    cfg = cfg_for(data, out, "TRAIN.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH", "1",
                  "TRAIN.EVAL_PERIOD", "0", "MODEL.DROPOUT_RATE", "0.0", *opts)
    mp.spawn(_train_worker, args=(free_port(), cfg), nprocs=2)
    return ckpt.read_checkpoint(ckpt.checkpoint_path(out, 0))["model_state"]


def test_fp16_compression_and_bucket_views_change_the_wire_not_the_training(data, tmp_path):
    """DDP.COMM_HOOK fp16 averages fp16-rounded gradients: close to the plain run, not equal
    (the hook took effect); through the timing probe the same, with allreduce timings."""
    plain = _two_rank_params(data, tmp_path / "plain")
    fp16 = _two_rank_params(data, tmp_path / "fp16", "DDP.COMM_HOOK", "fp16",
                            "DDP.GRADIENT_AS_BUCKET_VIEW", "True")
    probe = _two_rank_params(data, tmp_path / "probe", "DDP.COMM_HOOK", "fp16",
                             "PROFILE.COMM_PROBE", "True")
    floats = [k for k, v in plain.items() if v.is_floating_point()]
    assert any(not torch.equal(plain[k], fp16[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(fp16[k], plain[k], rtol=0, atol=2e-3, msg=k)
        torch.testing.assert_close(probe[k], fp16[k], rtol=0, atol=1e-6, msg=k)
    import json
    summary = json.loads((tmp_path / "probe" / "profile_summary.json").read_text())
    assert all(r["allreduce_s"] > 0 for r in summary["ranks"])


def test_bf16_compression_on_gloo_is_a_clear_error(data, tmp_path, capfd):
    cfg = cfg_for(data, tmp_path, "TRAIN.BATCH_SIZE", "2", "DDP.COMM_HOOK", "bf16")
    with pytest.raises(mp.ProcessExitedException) as failed:
        mp.spawn(_train_worker, args=(free_port(), cfg), nprocs=2)
    assert failed.value.exit_code == 2
    assert "DDP.COMM_HOOK bf16 needs the nccl" in capfd.readouterr().err


def test_a_resumed_run_takes_the_optimizer_settings_of_its_config(tmp_path):
    """The checkpoint's optimizer state (momentum buffers) is kept; its group settings are
    not: LARS turned on at resume takes effect, and a checkpoint whose groups do not fit the
    config is a one-line error naming it."""
    from slowfast_dist.errors import UserError
    from slowfast_dist.train import optim

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    plain = optim.build_optimizer(model, optim.OptimizerSpec(weight_decay=1e-4))
    model(torch.randn(4, 2)).sum().backward()
    plain.step()
    path = tmp_path / "checkpoint_epoch_00001.pyth"
    ckpt.save_checkpoint(path, model=model, optimizer=plain, epoch=0, cfg_dump="")
    state = ckpt.read_checkpoint(path)
    lars = optim.build_optimizer(model, optim.OptimizerSpec(weight_decay=5e-4, lars=True))
    ckpt.restore(state, model=model, optimizer=lars, path=path)
    assert [g["lars"] for g in lars.param_groups] == [True, False]
    assert lars.param_groups[0]["weight_decay"] == 5e-4
    assert torch.equal(lars.state[model[0].weight]["momentum_buffer"],
                       plain.state[model[0].weight]["momentum_buffer"])
    three = optim.build_optimizer(model, optim.OptimizerSpec(zero_wd_1d=True))
    with pytest.raises(UserError, match="checkpoint_epoch_00001.pyth: its optimizer state does "
                                        "not fit") as err:
        ckpt.restore(state, model=model, optimizer=three, path=path)
    assert "\n" not in str(err.value)


def test_each_micro_step_takes_the_lr_of_its_update():
    """With 2 micro-steps per update and 4 per epoch, an epoch has 2 updates, at epoch + 0 and
    epoch + 0.5: the schedule of the run with the twice larger batch."""
    from slowfast_dist.train.loop import train_one_epoch

    seen = []

    class Meter:
        stop_agreed = False

        def timed(self, loader, epoch, start_step=0):
            return iter(loader)

        def step_done(self, epoch, step, loss, lr, n):
            seen.append(lr)

        def epoch_done(self, epoch):
            return {}

    model = torch.nn.Linear(1, 1)
    batches = [{"inputs": [torch.ones(2, 1)], "labels": torch.ones(2, 1)}] * 4

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, inputs, boxes):
            return self.m(inputs[0])

    train_one_epoch(Wrap(), ListLoader(batches), torch.optim.SGD(model.parameters(), lr=1.0),
                    epoch=3, lr_at=lambda e: e, loss_fn=torch.nn.MSELoss(),
                    device=torch.device("cpu"), autocast=lambda: contextlib.nullcontext(),
                    scaler=torch.amp.GradScaler("cpu", enabled=False), accum_steps=2,
                    meter=Meter())
    assert seen == [3.0, 3.0, 3.5, 3.5]


def test_a_mid_epoch_checkpoint_resumes_at_the_same_batch_in_another_split_of_the_ranks():
    from slowfast_dist.errors import UserError

    saved = {"epoch_step": 800, "layout": {"ranks": 8, "simulate": 2, "batch": 4}}
    # 8 ranks simulated 2 per process: 400 batches of each rank done
    assert ckpt.resume_step(saved, {"ranks": 8, "simulate": 1, "batch": 4}) == 400
    assert ckpt.resume_step(saved, {"ranks": 8, "simulate": 4, "batch": 4}) == 1600
    assert ckpt.resume_step(saved, {"ranks": 8, "simulate": 2, "batch": 4}) == 800
    assert ckpt.resume_step({"epoch_step": 7}, {"ranks": 2, "simulate": 1, "batch": 4}) == 7
    for other in ({"ranks": 4, "simulate": 1, "batch": 4}, {"ranks": 8, "simulate": 2,
                                                            "batch": 2}):
        with pytest.raises(UserError, match=r"ck.pyth: saved inside an epoch by a run of 8 "
                                            r"ranks x 4 clips") as err:
            ckpt.resume_step(saved, other, "ck.pyth")
        assert "\n" not in str(err.value)
