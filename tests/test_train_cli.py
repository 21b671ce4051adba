"""train/cli.py: what `slowfast-dist train` runs for a config."""
import pytest

from slowfast_dist.errors import UserError
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import cli, trainer

from support import cfg_for


def test_train_enable_false_tests_only_as_pyslowfast_run_net_does(data, tmp_path):
    assert cli.entry(cfg_for(data, tmp_path)) is trainer.train
    trainer.train(cfg_for(data, tmp_path, "SOLVER.MAX_EPOCH", "1"))
    only_test = cfg_for(data, tmp_path, "TRAIN.ENABLE", "False")
    result = cli.entry(only_test)(only_test)
    assert result["mAP"] is not None and 0.0 <= result["mAP"] <= 1.0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint_epoch_00001.pyth"]
    assert "TRAIN.ENABLE False: testing only" in (tmp_path / "train.log").read_text()
    with pytest.raises(UserError, match="^TRAIN.ENABLE False and TEST.ENABLE False: nothing"):
        cli.entry(cfg_for(data, tmp_path, "TRAIN.ENABLE", "False", "TEST.ENABLE", "False"))
