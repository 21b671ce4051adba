"""StepMeter: skipped-sample counts summed over ranks, non-finite loss named, epoch stats."""
import io

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from slowfast_dist.train.meters import NonFiniteLoss, StepMeter

from support import free_port


def _run_epoch(meter, skipped_per_batch, losses):
    batches = [{"skipped": k} for k in skipped_per_batch]
    for step, _ in enumerate(meter.timed(batches, 0)):
        meter.step_done(0, step, torch.tensor(losses[step]), 0.1, 2)
    return meter.epoch_done(0)


def _worker(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    stream = io.StringIO()
    meter = StepMeter(rank=rank, world_size=2, device=torch.device("cpu"), stream=stream)
    # rank 0 skipped 1 + 2 samples, rank 1 skipped 4: every rank must report 7
    stats = _run_epoch(meter, [1, 0, 2] if rank == 0 else [0, 4, 0], [1.0, 2.0, 3.0])
    torch.save({"stats": stats, "log": stream.getvalue()}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_skipped_samples_are_summed_over_ranks_and_reported(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path / "r")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"r.{i}") for i in (0, 1))
    assert r0["stats"]["skipped_samples"] == r1["stats"]["skipped_samples"] == 7
    assert "7 unreadable sample(s) skipped" in r0["log"]
    assert "skipped" not in r1["log"]  # only rank 0 prints
    assert r0["stats"]["steps"] == 3 and r0["stats"]["loss"] == pytest.approx(2.0)


def test_non_finite_loss_names_the_step():
    meter = StepMeter(rank=0, world_size=1, device=torch.device("cpu"), stream=io.StringIO())
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step 2/3"):
        _run_epoch(meter, [0, 0, 0], [1.0, float("nan"), 1.0])


def test_clean_epoch_reports_no_skips():
    stream = io.StringIO()
    meter = StepMeter(rank=0, world_size=1, device=torch.device("cpu"), stream=stream)
    stats = _run_epoch(meter, [0, 0], [1.0, 1.0])
    assert stats["skipped_samples"] == 0 and "skipped" not in stream.getvalue()
