"""Profiler: one trace per rank that torch-tb-profiler loads, and a summary whose split adds up."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from slowfast_dist.profiling.comm import split_wait, union_length

from support import cfg_for, free_port


def test_union_and_wait_split():
    assert union_length([(0, 2), (1, 3), (5, 6)]) == pytest.approx(4)
    # Rank 0 hands its bucket over 0.5 s before rank 1: that half second is waiting.
    wait = split_wait([[[(-1.0, 0.0)]], [[(-0.5, 0.0)]]])
    assert wait[0] == pytest.approx((1.0, 0.5)) and wait[1] == pytest.approx((0.5, 0.0))


def _worker(rank, port, cfg):
    from slowfast_dist.train import launch, trainer

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    launch.guarded(trainer.train, cfg)


def test_two_rank_run_writes_loadable_traces_and_a_consistent_summary(data, tmp_path):
    out = tmp_path / "out"
    cfg = cfg_for(data, out, "TRAIN.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH", "2",
                  "TRAIN.EVAL_PERIOD", "0", "TRAIN.CHECKPOINT_PERIOD", "100",
                  "PROFILE.ENABLE", "True", "PROFILE.COMM_PROBE", "True", "PROFILE.WAIT", "1", "PROFILE.WARMUP", "1",
                  "PROFILE.ACTIVE", "2", "PROFILE.REPEAT", "1")
    mp.spawn(_worker, args=(free_port(), cfg), nprocs=2)

    traces = sorted(p.name for p in (out / "profile").iterdir())
    assert [t.split(".")[0] for t in traces] == ["rank0", "rank1"], traces

    from torch_tb_profiler import io
    from torch_tb_profiler.profiler.loader import RunLoader

    run = RunLoader("run", str(out / "profile"), io.Cache(str(tmp_path / "cache"))).load()
    # A trace the loader cannot parse is dropped with a warning, so its worker would be missing.
    assert {"rank0", "rank1"} <= set(run.workers)

    # the step phases are ranges in the trace (NVTX ranges as well on a GPU)
    trace = json.loads(next((out / "profile").glob("rank0.*")).read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"data_wait", "forward_backward", "optimizer_step"} <= names

    summary = json.loads((out / "profile_summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["ranks"]) == 2
    assert sum(summary["split"].values()) == pytest.approx(1.0, abs=0.05)
    for r in summary["ranks"]:
        assert r["steps"] == 6
        parts = r["data_wait_s"] + r["compute_s"] + r["comm_s"]
        assert parts == pytest.approx(r["step_s"], rel=0.05)
        assert r["allreduce_s"] > 0 and r["comm_s"] > 0
        assert 0 <= r["wait_for_slowest_s"] <= r["comm_s"]
