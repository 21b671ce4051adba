"""models/checkpoint_compat.py, the one .pyth reader: a checkpoint whose pickle would run code
never runs it, through resume, fine-tuning or the test command; PySlowFast-era data loads."""
import os

import numpy as np
import pytest
import torch

from slowfast_dist.errors import UserError
from slowfast_dist.models.checkpoint_compat import read_checkpoint_file
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import trainer

from support import cfg_for


class _RunsACommand:
    """What a malicious .pyth pickles: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(path, marker):
    torch.save({"model_state": {}, "epoch": 1, "payload": _RunsACommand(marker)}, path)
    return path


def test_reader_refuses_code_and_names_what_the_pickle_asked_for(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "bad.pyth", marker)
    with pytest.raises(UserError, match=r"bad.pyth: refused: its pickle asks for .*system.*"
                                        r"TRAIN.CHECKPOINT_FULL_UNPICKLE True"):
        read_checkpoint_file(path, switch="TRAIN.CHECKPOINT_FULL_UNPICKLE")
    assert not marker.exists()


def test_full_unpickling_only_behind_the_switch_and_with_a_warning(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = _malicious(tmp_path / "mine.pyth", marker)
    read_checkpoint_file(path, full_unpickle=True, switch="TRAIN.CHECKPOINT_FULL_UNPICKLE")
    assert marker.exists() and "fully unpickled" in capsys.readouterr().err


def test_a_file_that_is_no_checkpoint_is_not_called_code_carrying(tmp_path):
    # a YAML given as a checkpoint: the unpickler stops at its first byte, asks for no class
    path = tmp_path / "run.yaml"
    path.write_text("_BASE_: a.yaml\nSOLVER:\n  BASE_LR: 0.1\n")
    for full in (False, True):  # and with the switch on: the same line, not a traceback
        with pytest.raises(UserError) as err:
            read_checkpoint_file(path, full_unpickle=full, switch="TEST.CHECKPOINT_FULL_UNPICKLE")
        assert str(err.value).startswith(f"{path}: not a readable checkpoint (Unsupported operand")
        assert "refused" not in str(err.value) and "FULL_UNPICKLE" not in str(err.value)


def test_a_caffe2_zoo_pickle_read_as_pytorch_names_the_key_to_set(tmp_path):
    import pickle

    # a Python 3 pickle, and what the zoo ships: a Python 2 pickle naming numpy.core, which a
    # weights-only load refuses (it must not send the user to FULL_UNPICKLE)
    py3 = tmp_path / "py3.pkl"
    py3.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(3)}}, protocol=2))
    py2 = tmp_path / "SLOWFAST_8x8_R50.pkl"
    py2.write_bytes(b"\x80\x02}q\x00U\x05blobsq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02s.")
    for path in (py3, py2):
        with pytest.raises(UserError) as err:
            read_checkpoint_file(path, switch="TEST.CHECKPOINT_FULL_UNPICKLE")
        assert str(err.value) == (f"{path}: not a torch checkpoint; a PySlowFast model-zoo .pkl is "
                                  "a Caffe2 checkpoint: set TEST.CHECKPOINT_TYPE caffe2")


def test_the_refused_class_is_named_as_torch_words_it():
    from slowfast_dist.models.checkpoint_compat import _asked_global

    assert _asked_global("Unsupported global: GLOBAL numpy.core.multiarray._reconstruct was not "
                         "an allowed global") == "numpy.core.multiarray._reconstruct"
    assert _asked_global("unsupported GLOBAL posix.system whose module posix is blocked") == \
        "posix.system"
    assert _asked_global("Unsupported class GLOBAL os system") == "os.system"


def test_pyslowfast_layout_and_numpy_data_load_without_the_switch(tmp_path):
    """PySlowFast's layout (cfg as its YAML dump) and numpy values, as converted files hold."""
    path = tmp_path / "old.pyth"
    torch.save({"model_state": {"w": torch.ones(2)}, "cfg": "MODEL:\n  ARCH: slowfast\n",
                "mean": np.arange(3.0), "epoch": np.int64(4)}, path)
    state = read_checkpoint_file(path)
    assert state["mean"].tolist() == [0.0, 1.0, 2.0] and int(state["epoch"]) == 4


def test_a_pickled_cfgnode_is_refused_by_name(tmp_path):
    from fvcore.common.config import CfgNode

    path = tmp_path / "cfgnode.pyth"
    torch.save({"model_state": {}, "cfg": CfgNode({"A": 1})}, path)
    with pytest.raises(UserError, match="cfgnode.pyth: refused: its pickle asks for "
                                        "fvcore.common.config.CfgNode"):
        read_checkpoint_file(path)


@pytest.mark.parametrize("route", ["resume", "finetune", "test"])
def test_no_route_runs_the_pickle(data, tmp_path, route):
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    common = ["SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0"]
    if route == "resume":  # a poisoned file where auto-resume looks
        folder = ckpt.checkpoint_dir(out)
        folder.mkdir(parents=True)
        _malicious(folder / "checkpoint_epoch_00001.pyth", marker)
        cfg = cfg_for(data, out, *common)
    elif route == "finetune":
        cfg = cfg_for(data, out, *common, "TRAIN.CHECKPOINT_FILE_PATH",
                      str(_malicious(tmp_path / "pre.pyth", marker)))
    else:
        cfg = cfg_for(data, out, "TEST.CHECKPOINT_FILE_PATH",
                      str(_malicious(tmp_path / "pre.pyth", marker)))
    run = trainer.test if route == "test" else trainer.train
    try:
        run(cfg)
    except UserError as err:
        # fine-tuning and test refuse the file by name; resume passes over it with a warning
        # and, finding no other checkpoint, stops rather than silently start over
        expect = "all 1 checkpoint(s) are damaged" if route == "resume" else "refused"
        assert expect in str(err), err
    assert not marker.exists()
