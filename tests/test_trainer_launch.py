"""The trainer's launch layouts (PySlowFast's one process per node), fine-tuning, AMP on CPU."""

import math
import os
import subprocess
import sys

import pytest
import torch

from slowfast_dist.errors import UserError
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import finetune, launch, trainer

import support
from support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
ONE_EPOCH = ["SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0"]


def opts_for(data, out, *extra):
    return support.opts_for(data, out, *ONE_EPOCH, *extra)


def cfg_for(data, out, *extra):
    return support.cfg_for(data, out, *ONE_EPOCH, *extra)


ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def cli(*args, launcher=(sys.executable, "-m")):
    return subprocess.Popen([*launcher, "slowfast_dist.cli", "train", "--cfg", "configs/demo.yaml",
                             *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*procs):
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


def weights(out):
    return ckpt.read_checkpoint(ckpt.checkpoint_path(out, 0))["model_state"]


# ---- PySlowFast's layout: one process per node starting NUM_GPUS workers ------------------

def test_two_local_workers_equal_torchrun_and_two_shards_of_one_worker(data, tmp_path):
    # NUM_GPUS 2 without a launcher: this process spawns 2 gloo workers. BATCH_SIZE is per node,
    # so 2 shards x 1 worker with BATCH_SIZE 2 is the same global batch of 4 in 2 ranks.
    [(_, err)] = finish(cli(*opts_for(data, tmp_path / "spawn", "NUM_GPUS", "2",
                                      "BN.NORM_TYPE", "sync_batchnorm",
                                      "BENCHMARK.NUM_EPOCHS", "3")))
    # On CPU sync BN falls back to per-process BN, said once; results equal plain BN below.
    assert err.count("sync_batchnorm needs CUDA") == 1
    # a PySlowFast key we ignore: one line through the logging, not a Python warning per rank
    assert err.count("] warning: PySlowFast config keys not used by slowfast-dist (ignored): "
                     "BENCHMARK.NUM_EPOCHS") == 1 and "UserWarning" not in err
    finish(cli(*opts_for(data, tmp_path / "torchrun", "NUM_GPUS", "2"),
               launcher=(f"{BIN}/torchrun", "--standalone", "--nproc_per_node", "2", "-m")))
    init = f"tcp://127.0.0.1:{free_port()}"
    shards = [cli("--num_shards", "2", "--shard_id", str(i), "--init_method", init,
                  *opts_for(data, tmp_path / "shards", "TRAIN.BATCH_SIZE", "2"))
              for i in (0, 1)]
    (stdout0, _), _ = finish(*shards)
    assert "JOB SUMMARY nodes=1 ranks=2" in stdout0
    ref = weights(tmp_path / "torchrun")
    for name in ("spawn", "shards"):
        got = weights(tmp_path / name)
        for key, value in ref.items():
            assert torch.equal(got[key], value), (name, key)


def test_a_failing_worker_ends_the_run_with_one_line_naming_its_rank(data, tmp_path):
    missing = tmp_path / "missing.pyth"
    p = cli(*opts_for(data, tmp_path, "NUM_GPUS", "2", "TRAIN.CHECKPOINT_FILE_PATH", str(missing)))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("slowfast-dist: error: rank ") and "of shard 0)" in last, last
    assert f"{missing}: TRAIN.CHECKPOINT_FILE_PATH not found" in last


@pytest.mark.parametrize("env,gpus,shards,init,expect", [
    ({}, 1, 1, "", None),                                   # one process, nothing to spawn
    ({}, 2, 1, "tcp://h:1", "tcp://h:1"),                   # one node, 2 workers
    ({"RANK": "0", "WORLD_SIZE": "2"}, 2, 1, "", None),     # torchrun numbers the ranks
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, 4, 2, "tcp://h:1", "tcp://h:1"),  # srun per node
])
def test_which_processes_start_local_workers(env, gpus, shards, init, expect):
    got = launch.rendezvous_for_local_workers(num_gpus=gpus, num_shards=shards, shard_id=0,
                                               init_method=init, env=env)
    assert got == expect


def test_layout_errors_are_one_line():
    with pytest.raises(UserError, match="needs --init_method tcp://HOST:PORT"):
        launch.rendezvous_for_local_workers(num_gpus=2, num_shards=2, shard_id=0, init_method="",
                                             env={})
    with pytest.raises(UserError, match="SHARD_ID 2 must be in 0..NUM_SHARDS-1"):
        launch.rendezvous_for_local_workers(num_gpus=1, num_shards=2, shard_id=2,
                                             init_method="tcp://h:1", env={})
    with pytest.raises(UserError, match="torchrun starting 8 processes"):
        launch.rendezvous_for_local_workers(num_gpus=4, num_shards=2, shard_id=0,
                                             init_method="tcp://h:1",
                                             env={"RANK": "0", "WORLD_SIZE": "8"})
    # One node without --init_method picks a free local port rather than PySlowFast's fixed 9999.
    assert launch.rendezvous_for_local_workers(num_gpus=2, num_shards=1, shard_id=0,
                                                init_method="", env={}).startswith("tcp://127.0.0.1:")


# ---- fine-tuning from TRAIN.CHECKPOINT_FILE_PATH --------------------------------------------

@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """A checkpoint of one trained epoch (with SGD momentum buffers)."""
    out = tmp_path_factory.mktemp("pre")
    trainer.train(cfg_for(data, out))
    return ckpt.checkpoint_path(out, 0)


@pytest.fixture
def captured(monkeypatch):
    """Replace the loop: record what the run starts from, train nothing."""
    seen = {}

    def fit(model, loader, optimizer, *, start_epoch, **_):
        seen.update(start_epoch=start_epoch, optimizer=optimizer.state_dict(),
                    model={k: v.clone() for k, v in ckpt.unwrap(model).state_dict().items()})

    monkeypatch.setattr(trainer, "fit", fit)
    return seen


def test_finetune_loads_weights_and_epoch_reset_drops_the_optimizer(data, tmp_path, pretrained,
                                                                    captured):
    source = ckpt.read_checkpoint(pretrained)
    trainer.train(cfg_for(data, tmp_path, "TRAIN.CHECKPOINT_FILE_PATH", str(pretrained),
                          "TRAIN.CHECKPOINT_EPOCH_RESET", "True"))
    for key, value in source["model_state"].items():
        assert torch.equal(captured["model"][key], value), key
    assert captured["start_epoch"] == 0
    assert captured["optimizer"]["state"] == {}  # no momentum carried into the new schedule


def test_finetune_without_epoch_reset_continues_with_the_optimizer(data, tmp_path, pretrained,
                                                                  captured):
    source = ckpt.read_checkpoint(pretrained)
    trainer.train(cfg_for(data, tmp_path, "TRAIN.CHECKPOINT_FILE_PATH", str(pretrained),
                          "SOLVER.MAX_EPOCH", "2"))
    assert captured["start_epoch"] == 1
    state = captured["optimizer"]["state"]
    assert state and all(torch.equal(state[i]["momentum_buffer"],
                                     source["optimizer_state"]["state"][i]["momentum_buffer"])
                         for i in state)


def test_auto_resume_wins_over_checkpoint_file_path(data, tmp_path, pretrained, captured):
    own = ckpt.read_checkpoint(pretrained)
    own["model_state"] = {k: v + 1 if v.is_floating_point() else v
                          for k, v in own["model_state"].items()}
    ckpt.checkpoint_dir(tmp_path).mkdir(parents=True)
    torch.save(own, ckpt.checkpoint_path(tmp_path, 0))
    trainer.train(cfg_for(data, tmp_path, "TRAIN.CHECKPOINT_FILE_PATH", str(pretrained),
                          "SOLVER.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_EPOCH_RESET", "True"))
    assert captured["start_epoch"] == 1
    for key, value in own["model_state"].items():
        assert torch.equal(captured["model"][key], value), key


def test_kinetics_head_is_left_out_of_the_detector(data, tmp_path, pretrained, captured, capsys):
    state = ckpt.read_checkpoint(pretrained)
    w = state["model_state"]["head.projection.weight"]
    state["model_state"]["head.projection.weight"] = torch.randn(400, w.shape[1])
    state["model_state"]["head.projection.bias"] = torch.randn(400)
    state["model_state"] = {"module." + k: v for k, v in state["model_state"].items()}  # DDP-saved
    path = tmp_path / "kinetics.pyth"
    torch.save({"model_state": state["model_state"], "epoch": 195}, path)
    trainer.train(cfg_for(data, tmp_path / "run", "TRAIN.CHECKPOINT_FILE_PATH", str(path),
                          "TRAIN.CHECKPOINT_EPOCH_RESET", "True"))
    assert "head not loaded" in capsys.readouterr().err
    assert captured["model"]["head.projection.weight"].shape == w.shape
    key = "s1.pathway0_stem.conv.weight"
    assert torch.equal(captured["model"][key], state["model_state"]["module." + key])


def test_kinetics_checkpoint_without_epoch_reset_starts_a_new_schedule(data, tmp_path, pretrained,
                                                                       captured, capsys):
    # A PySlowFast Kinetics file keeps its epoch and a momentum buffer for its 400-way head:
    # restoring them would put the run past MAX_EPOCH and crash the first optimizer step.
    state = ckpt.read_checkpoint(pretrained)
    w = state["model_state"]["head.projection.weight"]
    state["model_state"]["head.projection.weight"] = torch.randn(400, w.shape[1])
    for buf in state["optimizer_state"]["state"].values():
        if buf["momentum_buffer"].shape == w.shape:
            buf["momentum_buffer"] = torch.randn(400, w.shape[1])
    path = tmp_path / "kinetics.pyth"
    torch.save({**state, "epoch": 195}, path)
    trainer.train(cfg_for(data, tmp_path / "run", "TRAIN.CHECKPOINT_FILE_PATH", str(path)))
    assert captured["start_epoch"] == 0 and captured["optimizer"]["state"] == {}
    assert "epoch and optimizer state are not used" in capsys.readouterr().err


def test_the_test_command_refuses_a_checkpoint_whose_head_does_not_fit(data, tmp_path, pretrained):
    # Scoring a randomly initialised head would print a meaningless mAP.
    state = ckpt.read_checkpoint(pretrained)
    w = state["model_state"]["head.projection.weight"]
    state["model_state"]["head.projection.weight"] = torch.randn(60, w.shape[1])
    state["model_state"]["head.projection.bias"] = torch.randn(60)
    path = tmp_path / "ava60.pyth"
    torch.save(state, path)
    with pytest.raises(UserError, match="ava60.pyth: state dict does not match the model"):
        trainer.test(cfg_for(data, tmp_path / "run", "TEST.CHECKPOINT_FILE_PATH", str(path)))


def test_missing_or_caffe2_checkpoint_is_one_line_exit_2(data, tmp_path, capsys):
    from slowfast_dist.cli import main

    code = main(["train", "--cfg", "configs/demo.yaml",
                 *opts_for(data, tmp_path, "TRAIN.CHECKPOINT_FILE_PATH", str(tmp_path / "no.pyth"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].endswith("no.pyth: TRAIN.CHECKPOINT_FILE_PATH not found")
    with pytest.raises(UserError, match="x.pkl: TRAIN.CHECKPOINT_FILE_PATH not found"):
        finetune.read_pretrained(str(tmp_path / "x.pkl"), "caffe2", model_state={})


def test_inflate_turns_a_2d_kernel_into_a_3d_one_with_the_same_response():
    own = {"conv.weight": torch.zeros(4, 3, 5, 7, 7), "fc.weight": torch.zeros(2, 4)}
    w2d = torch.randn(4, 3, 7, 7)
    got, left = finetune.pretrained_weights({"backbone.conv.weight": w2d}, own, inflate=True,
                                           clear_name_patterns=["backbone."], path="p", log=print)
    assert left == ["fc.weight"]
    assert got["conv.weight"].shape == (4, 3, 5, 7, 7)
    # A clip of identical frames gives the 2D response: the kernel sums back to w2d over time.
    torch.testing.assert_close(got["conv.weight"].sum(2), w2d)
    assert torch.equal(got["fc.weight"], own["fc.weight"])  # not in the checkpoint: kept
    with pytest.raises(UserError, match="does not fit the model"):
        finetune.pretrained_weights({"conv.weight": w2d}, own, inflate=False,
                                   clear_name_patterns=[], path="p", log=print)


# ---- AMP on CPU --------------------------------------------------------------------------

# 4 slow-pathway frames (SLOWFAST.ALPHA 2): over the toy config's 2, oneDNN's bf16 weight
# gradient of the 3x1x1 convolutions is often non-finite on CPUs with native bf16 (AMD EPYC
# here; the trainer warns, test below)
SLOW4 = ("SLOWFAST.ALPHA", "2")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_one_amp_epoch_on_cpu_has_a_finite_loss(data, tmp_path, dtype):
    summary = trainer.train(cfg_for(data, tmp_path, "TRAIN.MIXED_PRECISION", "True",
                                    "TRAIN.AMP_DTYPE", dtype, *SLOW4))
    assert summary["last_loss"] is not None and math.isfinite(summary["last_loss"])
    scaler = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path, 0))["scaler_state"]
    # fp16 trains through a GradScaler (its scale is saved for resume); bf16 needs none.
    assert (scaler.get("scale") is not None) == (dtype == "fp16")


@pytest.mark.parametrize("extra,said", [
    (("SLOWFAST.ALPHA", "4"), "2 slow-pathway frame(s) (DATA.NUM_FRAMES / SLOWFAST.ALPHA)"),
    (("SLOWFAST.ALPHA", "2"), None),
    (("SLOWFAST.ALPHA", "2", "MULTIGRID.LONG_CYCLE", "True", "TRAIN.BATCH_SIZE", "1"),
     "1 slow-pathway frame(s) (DATA.NUM_FRAMES / SLOWFAST.ALPHA, at the smallest long-cycle")])
def test_bf16_on_cpu_with_fewer_than_3_slow_frames_is_warned(data, tmp_path, capfd, extra, said):
    """8 frames at SLOWFAST.ALPHA 4: 2 slow-pathway frames, warned at start-up; at 2, 4 frames;
    a multigrid long cycle trains on fewer at its first stages (8 x 0.25 / 2 = 1)."""
    import torch.distributed as dist

    try:
        trainer.train(cfg_for(data, tmp_path, "TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE",
                              "bf16", *extra, "DIST.DRY_RUN_WORLD_SIZE", "1"))
    finally:
        if dist.is_initialized():  # the dry run's fake group
            dist.destroy_process_group()
    err = capfd.readouterr().err
    if said:
        assert f"bf16 on CPU with {said}" in err, err[-2000:]
    else:
        assert "bf16 on CPU" not in err, err[-2000:]


# ---- N ranks simulated on fewer processes ----------------------------------------------------

def _final_params(out):
    """The parameters (not the BN running statistics, which each layout tracks its own way) of
    the last checkpoint in `out`."""
    path = ckpt.list_checkpoints(out)[-1]
    state = ckpt.read_checkpoint(path)["model_state"]
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                              "num_batches_tracked"))}


def test_simulated_ranks_train_as_the_real_ranks_do(data, tmp_path):
    """4 gloo ranks of 2 clips each against the same 4 ranks simulated on 2 processes and on 1
    (DIST.SIMULATE_WORLD_SIZE 4): the same global batch of 8, the same shards, BatchNorm over
    each 2-clip batch, the same LR per update; two updates give the same parameters up to the
    order of the floating-point sums."""
    two = ["SOLVER.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_PERIOD", "1"]
    finish(cli(*opts_for(data, tmp_path / "real4", *two, "NUM_GPUS", "4",
                         "TRAIN.BATCH_SIZE", "8")))
    finish(cli(*opts_for(data, tmp_path / "sim4on2", *two, "NUM_GPUS", "2",
                         "TRAIN.BATCH_SIZE", "4", "DIST.SIMULATE_WORLD_SIZE", "4")))
    [(_, err)] = finish(cli(*opts_for(data, tmp_path / "sim4on1", *two, "NUM_GPUS", "1",
                                      "TRAIN.BATCH_SIZE", "2", "DIST.SIMULATE_WORLD_SIZE", "4")))
    assert "simulating 4 ranks" in err and "global batch 8 (2/rank)" in err
    real = _final_params(tmp_path / "real4")
    for name in ("sim4on2", "sim4on1"):
        got = _final_params(tmp_path / name)
        for key, value in real.items():
            assert torch.allclose(got[key], value, rtol=1e-4, atol=1e-6), (name, key)
    # the second update moved the weights: the comparison is not of two untrained models
    first = ckpt.read_checkpoint(ckpt.list_checkpoints(tmp_path / "real4")[0])["model_state"]
    assert any(not torch.equal(first[k], real[k]) for k in real)


def test_a_simulated_world_that_is_not_a_multiple_of_the_processes_is_one_line(data, tmp_path):
    p = cli(*opts_for(data, tmp_path, "NUM_GPUS", "2", "DIST.SIMULATE_WORLD_SIZE", "3"))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err[-3000:]
    assert err.count("DIST.SIMULATE_WORLD_SIZE 3: must be a multiple of the 2 processes") == 1
    assert "Traceback" not in err
