"""models/caffe2_weights.py: PySlowFast zoo Caffe2 .pkl files load as the same weights given as a
.pyth would, by the same rules, and never run code from the file."""
import codecs
import io
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slowfast_dist.config import load_config
from slowfast_dist.errors import UserError
from slowfast_dist.models import build_model
from slowfast_dist.models.caffe2_weights import (caffe2_to_pytorch_name, read_caffe2_blobs,
                                                 read_caffe2_weights)
from slowfast_dist.train import finetune

from support import TINY

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
BN = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
PARAM = {"weight": "w", "bias": "b"}
TRAINING_STATE = {"model_iter": np.array([1234]), "lr": np.array([0.1], np.float32)}


def _cfg(*extra):
    return load_config(DEMO, [*TINY, *extra])


def caffe2_name(key: str, last_block: dict) -> str:
    """PySlowFast's naming rules (slowfast/utils/c2_model_loading.py) read backwards, written
    out by hand as an independent check of the forward conversion. `last_block[stage]`: index
    of the stage's last block, where Caffe2 names the Fast->Slow lateral after."""
    module, param = key.rsplit(".", 1)
    bn, w = BN.get(param), PARAM.get(param)
    if m := re.fullmatch(r"s1\.pathway(\d)_stem\.(conv|bn)", module):
        t = "t_" if m[1] == "1" else ""
        return f"{t}conv1_{w}" if m[2] == "conv" else f"{t}res_conv1_bn_{bn}"
    if m := re.fullmatch(r"s(\d)_fuse\.(conv_f2s|bn)", module):
        stem = ("t_pool1_subsample" if m[1] == "1"
                else f"t_res{m[1]}_{last_block[m[1]]}_branch2c_bn_subsample")
        return f"{stem}_{w}" if m[2] == "conv_f2s" else f"{stem}_bn_{bn}"
    if m := re.fullmatch(r"s(\d)\.pathway(\d)_res(\d+)\.branch(1|2\.[abc])(_bn)?", module):
        t = "t_" if m[2] == "1" else ""
        branch = m[4].replace(".", "")  # branch2.a -> branch2a
        block = f"{t}res{m[1]}_{m[3]}_branch{branch}"
        return f"{block}_bn_{bn}" if m[5] else f"{block}_{w}"
    if module == "head.projection":
        return f"pred_{w}"
    raise AssertionError(f"no Caffe2 name for {key}")


def _last_blocks(state: dict) -> dict:
    last = {}
    for key in state:
        if m := re.match(r"s(\d)\.pathway0_res(\d+)\.", key):
            last[m[1]] = max(last.get(m[1], 0), int(m[2]))
    return {k: str(v) for k, v in last.items()}


def _random_state(model) -> dict:
    """Weights and BN statistics all different from the defaults, so every tensor counts."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v.clone()
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=gen) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=gen) * 0.2
    return state


def _blobs(state: dict, *, training_state=True) -> dict:
    last = _last_blocks(state)
    blobs = {caffe2_name(k, last): v.numpy().copy() for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    if training_state:  # SGD momentum per weight and the solver's counters, as zoo files hold
        blobs.update({f"{name}_momentum": np.zeros_like(v) for name, v in list(blobs.items())})
        blobs.update(TRAINING_STATE)
    return blobs


def _write_pkl(path, blobs) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)  # as Python 2 wrote Caffe2's
    return path


def _loaded(path, kind: str, cfg=None, **kw):
    """A fresh model of the demo config fine-tuned from `path` as the trainer does it."""
    cfg = cfg or _cfg()
    torch.manual_seed(1)
    model = build_model(cfg)
    pretrained = finetune.read_pretrained(str(path), kind, model_state=model.state_dict(),
                                          log=kw.pop("log", print))
    finetune.finetune_from(pretrained, str(path), model=model, optimizer=None, scaler=None,
                           inflate=cfg.TRAIN.CHECKPOINT_INFLATE, epoch_reset=False,
                           clear_name_patterns=[], log=print)
    return model.eval()


def _outputs(model):
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(1, 3, 2, 32, 32, generator=gen), torch.randn(1, 3, 8, 32, 32, generator=gen)]
    boxes = torch.tensor([[0.0, 2.0, 3.0, 25.0, 30.0], [0.0, 0.0, 0.0, 31.0, 31.0]])
    with torch.no_grad():
        return model(xs, boxes)


@pytest.fixture(scope="module")
def source():
    """A tiny SlowFast's random weights, and the model that has them."""
    model = build_model(_cfg())
    state = _random_state(model)
    model.load_state_dict(state)
    return model.eval(), state


def test_pyslowfast_documented_examples():
    # The examples in the comments of PySlowFast's c2_model_loading.py, by its rules.
    assert caffe2_to_pytorch_name("nonlocal_conv3_1_theta_w") == \
        "s3.pathway0_nonlocal1.conv_theta.weight"
    assert caffe2_to_pytorch_name("nonlocal_conv4_5_bn_s") == "s4.pathway0_nonlocal5.bn.weight"
    assert caffe2_to_pytorch_name("t_res4_5_branch2c_bn_subsample_bn_rm") == \
        "s4_fuse.bn.running_mean"
    assert caffe2_to_pytorch_name("t_pool1_subsample_w") == "s1_fuse.conv_f2s.weight"
    assert caffe2_to_pytorch_name("res4_0_branch1_w") == "s4.pathway0_res0.branch1.weight"
    assert caffe2_to_pytorch_name("res4_4_branch2c_bn_b") == "s4.pathway0_res4.branch2.c_bn.bias"
    assert caffe2_to_pytorch_name("res_conv1_bn_riv") == "s1.pathway0_stem.bn.running_var"
    assert caffe2_to_pytorch_name("t_conv1_w") == "s1.pathway1_stem.conv.weight"
    assert caffe2_to_pytorch_name("pred_b") == "head.projection.bias"


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's `str` (BINSTRING), as Caffe2's pickles hold names and array
    data, instead of Python 3's `_codecs.encode(..., 'latin1')` call."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        n = len(obj)
        head = (pickle.SHORT_BINSTRING + bytes([n]) if n < 256
                else pickle.BINSTRING + struct.pack("<i", n))
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def test_a_python2_pickle_with_numpy_core_names_loads(tmp_path, source):
    _, state = source
    blobs = _blobs(state)
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump({b"blobs": {k.encode(): v for k, v in blobs.items()}})
    data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"_codecs" not in data and b"numpy.core.multiarray\n_reconstruct" in data
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    got = read_caffe2_blobs(path)
    assert set(got) == set(blobs)
    for k, v in blobs.items():
        assert np.array_equal(got[k], v) and got[k].dtype == v.dtype, k


def test_every_blob_maps_or_is_training_state(tmp_path, source):
    _, state = source
    blobs = _blobs(state)
    conv = read_caffe2_weights(_write_pkl(tmp_path / "k.pkl", blobs), state, log=print)
    assert conv.unmapped == []
    assert conv.read == len(blobs)
    assert sorted(conv.skipped) == sorted(k for k in blobs if k.endswith("_momentum")
                                          or k in TRAINING_STATE)
    assert len(conv.weights) + len(conv.skipped) == len(blobs)
    wanted = {k for k in state if not k.endswith("num_batches_tracked")}
    assert set(conv.weights) == wanted
    for k in wanted:
        assert torch.equal(conv.weights[k], state[k]), k


def test_pkl_gives_the_outputs_of_the_same_weights_as_pyth(tmp_path, source):
    model, state = source
    pkl = _write_pkl(tmp_path / "k.pkl", _blobs(state))
    pyth = tmp_path / "k.pyth"
    torch.save({"model_state": state}, pyth)
    from_pkl, from_pyth = _loaded(pkl, "caffe2"), _loaded(pyth, "pytorch")
    for k, v in from_pyth.state_dict().items():
        assert torch.equal(from_pkl.state_dict()[k], v), k
    out = _outputs(from_pkl)
    assert torch.equal(out, _outputs(from_pyth))
    assert torch.equal(out, _outputs(model))


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _PicksACodec:
    """Not code, but not numpy data either: `_codecs.encode` is allowed for latin1 only."""

    def __reduce__(self):
        return codecs.encode, ("abc", "rot13")


@pytest.mark.parametrize("route", ["reader", "finetune", "test"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, route):
    marker = tmp_path / "pwned"
    path = _write_pkl(tmp_path / "bad.pkl", {"conv1_w": np.zeros(3), "x": _RunsACommand(marker)})
    with pytest.raises(UserError, match=r"bad.pkl: refused: its pickle asks for "
                                        r"(posix|os|nt)\.system") as err:
        if route == "reader":
            read_caffe2_blobs(path)
        elif route == "finetune":
            finetune.read_pretrained(str(path), "caffe2", model_state={})
        else:
            finetune.load_caffe2_for_test(build_model(_cfg()), str(path), log=print)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    codec = _write_pkl(tmp_path / "codec.pkl", {"x": _PicksACodec()})
    with pytest.raises(UserError, match="codec.pkl: refused: .*_codecs.encode with encoding"):
        read_caffe2_blobs(codec)


def test_files_that_are_not_caffe2_pickles_are_one_line_naming_the_file(tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x00not a pickle at all")
    with pytest.raises(UserError, match=r"junk.pkl: not a Caffe2 .pkl"):
        read_caffe2_blobs(junk)
    no_blobs = tmp_path / "noblobs.pkl"
    no_blobs.write_bytes(pickle.dumps({"weights": {}}, protocol=2))
    with pytest.raises(UserError, match=r"noblobs.pkl: not a Caffe2 checkpoint \(no 'blobs'"):
        read_caffe2_blobs(no_blobs)
    pyth = tmp_path / "model.pyth"
    torch.save({"model_state": {}}, pyth)
    with pytest.raises(UserError, match=r"model.pyth: a PyTorch checkpoint, not a Caffe2 .pkl"):
        read_caffe2_blobs(pyth)
    with pytest.raises(UserError, match=r"absent.pkl: TRAIN.CHECKPOINT_FILE_PATH not found"):
        finetune.read_pretrained(str(tmp_path / "absent.pkl"), "caffe2", model_state={})


def test_a_blob_of_another_shape_names_the_blob_and_both_shapes(tmp_path, source):
    _, state = source
    blobs = _blobs(state)
    blobs["res2_0_branch2a_w"] = np.zeros((8, 12, 1, 1, 1), np.float32)  # model: [8, 10, 1, 1, 1]
    path = _write_pkl(tmp_path / "wrong.pkl", blobs)
    with pytest.raises(UserError) as err:
        _loaded(path, "caffe2")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: does not fit the model")
    assert ("res2_0_branch2a_w -> s2.pathway0_res0.branch2.a.weight: [8, 12, 1, 1, 1] in the "
            "file, [8, 10, 1, 1, 1] in this model") in msg


def test_unmapped_blobs_are_logged_and_none_mapping_is_an_error(tmp_path, source):
    _, state = source
    blobs = _blobs(state)
    blobs["nonlocal_conv3_1_theta_w"] = np.zeros((4, 8, 1, 1, 1), np.float32)  # no non-local here
    lines = []
    _loaded(_write_pkl(tmp_path / "nl.pkl", blobs), "caffe2", log=lines.append)
    assert any("1 blob(s) map to no tensor" in line and "nonlocal_conv3_1_theta_w "
               "(s3.pathway0_nonlocal1.conv_theta.weight)" in line for line in lines), lines
    other = _write_pkl(tmp_path / "other.pkl", {"fc1000_w": np.zeros((3, 2)), "lr": np.ones(1)})
    with pytest.raises(UserError, match=r"other.pkl: none of its 2 blobs maps to a tensor of "
                                        r"this model; first fc1000_w -> fc1000.weight"):
        finetune.read_pretrained(str(other), "caffe2", model_state=state)


def _flattened(state: dict) -> dict:
    """Every 3D conv kernel as the 2D one an ImageNet model would have: [O, I, H, W]."""
    return {k: (v.sum(2) if v.dim() == 5 else v) for k, v in state.items()}


def test_2d_blobs_inflate_under_checkpoint_inflate_as_pyth_does(tmp_path, source):
    _, state = source
    flat = _flattened(state)
    pkl = _write_pkl(tmp_path / "2d.pkl", _blobs(flat))
    pyth = tmp_path / "2d.pyth"
    torch.save({"model_state": flat}, pyth)
    cfg = _cfg("TRAIN.CHECKPOINT_INFLATE", "True")
    from_pkl, from_pyth = _loaded(pkl, "caffe2", cfg), _loaded(pyth, "pytorch", cfg)
    for k, v in from_pyth.state_dict().items():
        assert torch.equal(from_pkl.state_dict()[k], v), k
    kernel = from_pkl.state_dict()["s1.pathway1_stem.conv.weight"]  # T = 5: w2d / 5 per frame
    torch.testing.assert_close(kernel.sum(2), flat["s1.pathway1_stem.conv.weight"])
    assert torch.equal(kernel[:, :, 0], kernel[:, :, 4])
    with pytest.raises(UserError, match=r"2d.pkl: does not fit the model .*first conv1_w -> "
                                        r"s1.pathway0_stem.conv.weight: \[8, 3, 7, 7\] in the "
                                        r"file, \[8, 3, 1, 7, 7\] in this model\); set "
                                        r"TRAIN.CHECKPOINT_INFLATE"):
        _loaded(pkl, "caffe2")


def test_scoring_a_pkl_needs_every_tensor_head_included(tmp_path, source):
    model, state = source
    blobs = _blobs(state)
    target = build_model(_cfg())
    finetune.load_caffe2_for_test(target, str(_write_pkl(tmp_path / "ava.pkl", blobs)),
                                  log=print)
    assert torch.equal(_outputs(target.eval()), _outputs(model))
    blobs["pred_w"], blobs["pred_b"] = np.zeros((400, 288), np.float32), np.zeros(400, np.float32)
    with pytest.raises(UserError, match=r"kinetics.pkl: does not fit the model \(2 tensors, "
                                        r"first pred_b -> head.projection.bias: \[400\] in the "
                                        r"file, \[6\] in this model\)$"):
        finetune.load_caffe2_for_test(target, str(_write_pkl(tmp_path / "kinetics.pkl", blobs)),
                                      log=print)


def test_training_from_a_pkl_through_the_trainer(tmp_path, source, monkeypatch):
    import torch.distributed as dist

    from slowfast_dist.train import checkpoint as ckpt
    from slowfast_dist.train import trainer

    _, state = source
    blobs = _blobs(state)
    blobs["pred_w"], blobs["pred_b"] = np.zeros((400, 288), np.float32), np.zeros(400, np.float32)
    pkl = _write_pkl(tmp_path / "k400.pkl", blobs)
    seen = {}

    def report(run, model, *args):
        seen.update(ckpt.unwrap(model).state_dict())
        return {}

    monkeypatch.setattr(trainer, "dry_run_report", report)
    cfg = _cfg("DIST.DRY_RUN_WORLD_SIZE", "1", "OUTPUT_DIR", str(tmp_path / "run"),
               "AVA.FRAME_LIST_DIR", str(tmp_path / "absent"), "TRAIN.CHECKPOINT_TYPE", "caffe2",
               "TRAIN.CHECKPOINT_FILE_PATH", str(pkl))
    try:
        trainer.train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    for k, v in state.items():  # all but the Kinetics head, which does not fit the AVA one
        if not k.startswith("head.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(seen[k], v), k
    assert seen["head.projection.weight"].shape == (6, 288)


def _convert(*args):
    return subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "convert-checkpoint",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_convert_checkpoint_writes_a_pyth_read_back_equal(tmp_path, source):
    _, state = source
    blobs = _blobs(state)
    blobs["pred_w"], blobs["pred_b"] = np.zeros((400, 288), np.float32), np.zeros(400, np.float32)
    pkl, out = _write_pkl(tmp_path / "k400.pkl", blobs), tmp_path / "k400.pyth"
    done = _convert(pkl, out, "--cfg", DEMO, *TINY)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1 and f"{len(blobs)} blobs read, " in summary[0], summary
    assert "inflated" in summary[0] and "skipped" in summary[0]
    back = finetune.read_pretrained(str(out), "pytorch")
    direct = finetune.read_pretrained(str(pkl), "caffe2", model_state=state)
    assert set(back["model_state"]) == set(direct["model_state"])
    for k, v in direct["model_state"].items():
        assert torch.equal(back["model_state"][k], v), k
    assert isinstance(back["cfg"], str) and "epoch" not in back


def test_convert_checkpoint_exits_2_with_one_line_on_a_mismatching_file(tmp_path, source):
    _, state = source
    blobs = _blobs(state)
    blobs["t_conv1_w"] = np.zeros((2, 3, 5, 7, 7), np.float32)  # model: [1, 3, 5, 7, 7]
    done = _convert(_write_pkl(tmp_path / "bad.pkl", blobs), tmp_path / "out.pyth",
                    "--cfg", DEMO, *TINY)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert "t_conv1_w -> s1.pathway1_stem.conv.weight: [2, 3, 5, 7, 7] in the file, " \
           "[1, 3, 5, 7, 7] in this model" in err[0]
    assert not (tmp_path / "out.pyth").exists()


def test_convert_checkpoint_refuses_to_write_over_its_input(tmp_path, source):
    _, state = source
    pkl = _write_pkl(tmp_path / "k400.pkl", _blobs(state))
    before = pkl.read_bytes()
    for out in (pkl, tmp_path / "." / "k400.pkl"):
        done = _convert(pkl, out, "--cfg", DEMO, *TINY)
        assert done.returncode == 2 and "is the input checkpoint" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert pkl.read_bytes() == before
    (tmp_path / "a_folder").mkdir()  # a folder given as the output: one line, exit 2
    done = _convert(pkl, tmp_path / "a_folder", "--cfg", DEMO, *TINY)
    assert done.returncode == 2 and "a folder where a file is needed" in done.stderr, done.stderr
