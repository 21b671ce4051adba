"""train/history.py: each attempt keeps its files, `last`/`best` point at the right checkpoints,
TRAIN.CHECKPOINT_KEEP prunes all but the newest and the best; through the real trainer."""
import json
import os

import pytest
import torch

from slowfast_dist.errors import UserError
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import history, trainer

import support


def _touch_checkpoints(out, epochs):
    folder = ckpt.checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [ckpt.checkpoint_path(out, e) for e in epochs]
    for p in paths:
        p.write_bytes(b"x")
    return paths


def test_prune_keeps_the_newest_and_the_best(tmp_path):
    paths = _touch_checkpoints(tmp_path, range(5))
    assert history.record_best(tmp_path, 2, 0.7, paths[1])
    assert not history.record_best(tmp_path, 3, 0.6, paths[2])  # worse: best stays
    removed = history.prune(tmp_path, 2, paths[4])
    assert [p.name for p in removed] == [paths[0].name, paths[2].name]
    left = sorted(p.name for p in ckpt.list_checkpoints(tmp_path))
    assert left == sorted([paths[1].name, paths[3].name, paths[4].name])
    assert os.readlink(ckpt.checkpoint_dir(tmp_path) / "best.pyth") == paths[1].name
    assert history.prune(tmp_path, 0, paths[4]) == []  # 0 keeps all


def test_prune_never_removes_what_was_just_saved_nor_an_older_run_s_later_epochs(tmp_path):
    old_run = _touch_checkpoints(tmp_path, range(10, 14))  # AUTO_RESUME False over an old run
    history.record_best(tmp_path, 12, 0.9, old_run[1])
    history.forget_best(tmp_path)  # the new run starts afresh: the old best is not its best
    assert history.best_record(tmp_path) is None
    assert not (ckpt.checkpoint_dir(tmp_path) / "best.pyth").exists()
    new = _touch_checkpoints(tmp_path, range(3))
    assert history.prune(tmp_path, 1, new[0]) == []
    removed = history.prune(tmp_path, 2, new[2])
    assert removed == [new[0]]
    assert all(p.exists() for p in [new[1], new[2], *old_run])


def test_pointers_are_relative_links_that_no_resume_takes_for_a_checkpoint(tmp_path):
    paths = _touch_checkpoints(tmp_path, range(2))
    history.point(tmp_path, "last", paths[0])
    history.point(tmp_path, "last", paths[1])  # replaced, not added
    link = ckpt.checkpoint_dir(tmp_path) / "last.pyth"
    assert os.readlink(link) == paths[1].name and link.resolve() == paths[1].resolve()
    assert ckpt.list_checkpoints(tmp_path) == paths
    # PySlowFast's resume lists names containing "checkpoint": the pointers are not among them
    assert [n for n in os.listdir(link.parent) if "checkpoint" in n] == [p.name for p in paths]


def test_training_twice_in_one_output_dir_keeps_both_attempts_and_the_pointers(data, tmp_path):
    out = tmp_path / "run"
    common = ["TRAIN.CHECKPOINT_PERIOD", "1", "TRAIN.EVAL_PERIOD", "1",
              "TRAIN.CHECKPOINT_KEEP", "2", "DATA.TRAIN_JITTER_SCALES", "[32, 40]"]
    trainer.train(support.cfg_for(data, out, "SOLVER.MAX_EPOCH", "3", *common))
    # resumed and extended: a second attempt in the same folder
    summary = trainer.train(support.cfg_for(data, out, "SOLVER.MAX_EPOCH", "4", *common))
    attempts = sorted(p.name for p in (out / "attempts").iterdir())
    assert attempts == ["001", "002"]
    for a in attempts:
        assert {"config.yaml", "summary.json", "profile_summary.json"} <= set(
            os.listdir(out / "attempts" / a))
    first = json.loads((out / "attempts/001/summary.json").read_text())
    assert json.loads((out / "summary.json").read_text()) == summary  # the top: the latest
    assert first["wall_time_s"] != summary["wall_time_s"]
    assert "MAX_EPOCH: 3" in (out / "attempts/001/config.yaml").read_text()
    assert "MAX_EPOCH: 4" in (out / "config.yaml").read_text()
    # last -> the epoch-4 checkpoint; best -> the evaluated epoch with the highest mAP
    folder = ckpt.checkpoint_dir(out)
    assert os.readlink(folder / "last.pyth") == ckpt.checkpoint_path(out, 3).name
    maps = {e: json.loads((out / f"map_epoch{e:05d}.json").read_text())["mAP"]
            for e in range(1, 5)}
    best_epoch = max(maps, key=lambda e: (maps[e], -e))  # a tie keeps the earlier one
    assert json.loads((folder / "best.json").read_text())["epoch"] == best_epoch
    assert os.readlink(folder / "best.pyth") == ckpt.checkpoint_path(out, best_epoch - 1).name
    # two newest epochs kept, plus the best if older
    left = {p.name for p in ckpt.list_checkpoints(out)}
    want = {ckpt.checkpoint_path(out, e).name for e in (2, 3, best_epoch - 1)}
    assert left == want
    state = ckpt.read_checkpoint(folder / "best.pyth")  # the pointer reads as a checkpoint
    assert state["epoch"] == best_epoch - 1 and isinstance(state["model_state"], dict)
    assert torch.is_tensor(next(iter(state["model_state"].values())))
    # another model in the same folder: refused, and the top config.yaml is still the one that
    # wrote the checkpoints (the refused one is only in its own attempt)
    with pytest.raises(UserError, match="made by another model config"):
        trainer.train(support.cfg_for(data, out, "SOLVER.MAX_EPOCH", "5", "MODEL.NUM_CLASSES", "9",
                                      *common))
    assert "MAX_EPOCH: 4" in (out / "config.yaml").read_text()
    assert "NUM_CLASSES: 9" in (out / "attempts/003/config.yaml").read_text()
