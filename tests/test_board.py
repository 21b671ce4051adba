"""TensorBoard (train/board.py): a 2-rank run, resumed once, read back through the HTTP API of a
running TensorBoard: one run named after OUTPUT_DIR, every scalar on the global step, the rank
figures as min/mean/max, the config and hparams, the charts' layout."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
import torch.multiprocessing as mp

from support import cfg_for, free_port

from slowfast_dist.train.board import log_dir, spread


def test_spread_and_log_dir():
    assert spread([1.0, float("nan"), 3.0]) == {"min": 1.0, "mean": 2.0, "max": 3.0}
    assert spread([float("nan"), None]) is None
    assert log_dir("runs/a", "") == log_dir("runs/a", ".").parent / "a"
    assert str(log_dir("runs/a", "tb")) == "runs/a/tb"  # PySlowFast: relative to OUTPUT_DIR
    assert str(log_dir("runs/a", "/abs/tb")) == "/abs/tb"


def _worker(rank, port, cfg):
    from slowfast_dist.train import launch, trainer

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    launch.guarded(trainer.train, cfg)


class TensorBoard:
    """`tensorboard --logdir` in a subprocess, read through its HTTP API."""

    def __init__(self, logdir, tmp):
        self.port = free_port()
        self.log = open(tmp / "tensorboard.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
             "127.0.0.1", "--port", str(self.port), "--load_fast", "false",
             "--reload_interval", "0"], stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-XSRF-Protected": "1",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def wait_for_run(self, name, timeout_s=90):
        t0 = time.time()
        while time.time() - t0 < timeout_s:
            assert self.proc.poll() is None, "tensorboard exited (see tensorboard.log)"
            try:
                tags = self.get("/data/plugin/scalars/tags")
                if "eval/mAP" in tags.get(name, {}):
                    return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"tensorboard did not load run {name} in {timeout_s} s")

    def scalars(self, run, tag):
        rows = self.get(f"/data/plugin/scalars/scalars?run={run}&tag={tag}")
        return [(step, value) for _, step, value in rows]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def board(data, tmp_path_factory):
    """2 ranks, 2 epochs; then the same command with MAX_EPOCH 3 resumes it (a second attempt
    in the same OUTPUT_DIR)."""
    runs = tmp_path_factory.mktemp("runs")
    for epochs in ("2", "3"):
        cfg = cfg_for(data, runs / "two_ranks", "TENSORBOARD.ENABLE", "True",
                      "TRAIN.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH", epochs, "LOG_PERIOD", "2",
                      "TRAIN.EVAL_PERIOD", "1", "TRAIN.CHECKPOINT_PERIOD", "1",
                      "PROFILE.COMM_PROBE", "True")
        mp.spawn(_worker, args=(free_port(), cfg), nprocs=2)
    tb = TensorBoard(runs, runs)
    try:
        tb.wait_for_run("two_ranks")
        yield tb
    finally:
        tb.close()


RANK_TAGS = [f"rank/{f}/{k}" for f in ("clips_per_s", "data_wait_s", "comm_wait_s",
                                       "allreduce_s", "epoch_boundary_s")
             for k in ("min", "mean", "max")]
TAGS = ["train/loss", "train/lr", "train/grad_norm", "perf/clips_per_s", "time/eta_min",
        "profile/data_share", "profile/comm_share", "profile/compute_share", "epoch/loss",
        "epoch/samples_per_s", "epoch/time_s", "epoch/skipped_samples", "eval/mAP", *RANK_TAGS]


def test_one_run_named_after_output_dir_with_every_tag(board):
    assert board.get("/data/runs") == ["two_ranks"]  # the resumed attempt is the same run
    tags = set(board.get("/data/plugin/scalars/tags")["two_ranks"])
    assert set(TAGS) <= tags, sorted(set(TAGS) - tags)
    for tag in tags:  # a line over the run, not a dot at its end
        assert len(board.scalars("two_ranks", tag)) >= 2, tag


def test_every_scalar_is_on_the_global_step(board):
    ends = [s for s, _ in board.scalars("two_ranks", "epoch/loss")]
    per_epoch = ends[0]
    assert ends == [per_epoch, 2 * per_epoch, 3 * per_epoch]  # each attempt's epochs, once
    assert [s for s, _ in board.scalars("two_ranks", "eval/mAP")] == ends
    assert [s for s, _ in board.scalars("two_ranks", "rank/epoch_boundary_s/max")] == [
        e - per_epoch + 2 for e in ends]  # the epoch's first window (LOG_PERIOD 2)
    steps = [s for s, _ in board.scalars("two_ranks", "train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == ends[-1]
    starts = [0, *ends]
    for s in steps:  # every LOG_PERIOD (2) steps of an epoch, and at its end
        start = max(e for e in starts if e < s)
        assert (s - start) % 2 == 0 or s in ends, (s, ends)
    assert [s for s, _ in board.scalars("two_ranks", "train/lr")] == steps


def test_rank_figures_are_min_mean_max_over_the_two_ranks(board):
    for figure in ("clips_per_s", "data_wait_s", "allreduce_s"):
        lo, mid, hi = (board.scalars("two_ranks", f"rank/{figure}/{k}")
                       for k in ("min", "mean", "max"))
        assert [s for s, _ in lo] == [s for s, _ in mid] == [s for s, _ in hi]
        for (_, a), (_, m), (_, b) in zip(lo, mid, hi):
            assert a <= m <= b and m == pytest.approx((a + b) / 2, rel=1e-5, abs=1e-9)
        assert any(a < b for (_, a), (_, b) in zip(lo, hi)), figure  # two ranks, two values
    shares = [board.scalars("two_ranks", f"profile/{s}_share") for s in ("data", "comm",
                                                                          "compute")]
    for parts in zip(*shares):
        assert sum(v for _, v in parts) == pytest.approx(1.0, abs=1e-4)
    assert all(v > 0 for _, v in board.scalars("two_ranks", "train/grad_norm"))


def test_config_hparams_and_layout(board):
    assert board.get("/data/plugin/text/tags")["two_ranks"] == ["config/text_summary"]
    text = board.get("/data/plugin/text/text?run=two_ranks&tag=config/text_summary")[0]["text"]
    assert "TRAIN_CROP_SIZE: 32" in text and "MAX_EPOCH" in text
    exp = board.get("/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {h["name"] for h in exp["hparamInfos"]}
    assert {"ranks", "global_batch", "base_lr", "optimizer", "multigrid"} <= names
    metrics = {m["name"]["tag"] for m in exp["metricInfos"]}
    assert {"eval/mAP", "train/loss"} <= metrics
    layout = board.get("/data/plugin/custom_scalars/layout")
    charts = {c["title"]: c for cat in layout["category"] for c in cat["chart"]}
    assert "allreduce_s" in charts and "max_memory_allocated_gb" not in charts  # probe, no GPU
    margin = charts["clips_per_s"]["margin"]["series"][0]
    assert (margin["value"], margin["lower"], margin["upper"]) == (
        "rank/clips_per_s/mean", "rank/clips_per_s/min", "rank/clips_per_s/max")
