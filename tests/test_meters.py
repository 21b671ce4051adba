"""StepMeter: skipped-sample counts summed over ranks, non-finite loss named, epoch stats."""
import io
import math

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
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, steps 1-3 of 3"):
        _run_epoch(meter, [0, 0, 0], [1.0, float("nan"), 1.0])


def test_clean_epoch_reports_no_skips():
    stream = io.StringIO()
    meter = StepMeter(rank=0, world_size=1, device=torch.device("cpu"), stream=stream)
    stats = _run_epoch(meter, [0, 0], [1.0, 1.0])
    assert stats["skipped_samples"] == 0 and "skipped" not in stream.getvalue()


# ---- what a step costs the host: nothing, unless it logs ------------------------------------

def _real_loop(rank, port, steps, accum_steps, **meter_kw):
    """The real loop, DDP over 2 gloo ranks, on fixed batches: (meter, run one epoch)."""
    import torch.distributed as dist

    from test_trainer import ListLoader, fixed_batches, shard

    from slowfast_dist.config import load_config
    from slowfast_dist.models import build_model
    from slowfast_dist.train import trainer
    from slowfast_dist.train.loop import train_one_epoch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    cfg = load_config("configs/demo.yaml", ["DATA.TRAIN_CROP_SIZE", "32"])
    model = torch.nn.parallel.DistributedDataParallel(build_model(cfg))
    optimizer = trainer.build_optimizer(model, lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
                                        weight_decay=1e-4, bn_weight_decay=0.0)
    meter = StepMeter(rank=rank, world_size=2, device=torch.device("cpu"), stream=io.StringIO(),
                      **meter_kw)
    batches = [shard(b, rank, 2) for b in fixed_batches(per_rank=2, ranks=2, steps=steps)]

    def run():
        return train_one_epoch(model, ListLoader(batches), optimizer, epoch=0,
                               lr_at=lambda e: 0.1, loss_fn=torch.nn.BCEWithLogitsLoss(),
                               device=torch.device("cpu"),
                               autocast=lambda: torch.autocast("cpu", enabled=False),
                               scaler=torch.amp.GradScaler("cpu", enabled=False),
                               accum_steps=accum_steps, meter=meter)
    return meter, run


def _count_per_step(rank, port, out, log_period, steps):
    """Counts per step the host syncs and collectives of the real loop."""
    from support import CountHostSyncs

    meter, run = _real_loop(rank, port, steps, 1, log_period=log_period)
    counts = []
    with CountHostSyncs() as counted:
        step_done = meter.step_done

        def counting_step_done(*args, **kwargs):
            step_done(*args, **kwargs)
            counts.append((dict(counted.syncs), dict(counted.collectives)))
            counted.syncs.clear()
            counted.collectives.clear()

        meter.step_done = counting_step_done
        run()
    torch.save(counts, f"{out}.{rank}")
    dist.destroy_process_group()


def test_only_logging_steps_sync_or_add_a_collective(tmp_path):
    """Steps 1-3 and 5 of 6 (LOG_PERIOD 4) read nothing back and run no collective besides DDP's
    own (gradient allreduce, BN buffer broadcast); steps 4 and 6 read once and all-gather once."""
    mp.spawn(_count_per_step, args=(free_port(), str(tmp_path / "c"), 4, 6), nprocs=2)
    for rank in (0, 1):
        counts = torch.load(tmp_path / f"c.{rank}")
        assert len(counts) == 6
        # step 3: DDP's collectives in the steady state (in steps 1-2 it also rebuilds buckets)
        ddp_own = counts[2][1]
        assert set(ddp_own) <= {"allreduce_", "broadcast_"} and ddp_own["allreduce_"] >= 1
        for step, (syncs, collectives) in enumerate(counts, start=1):
            logs = step in (4, 6)
            assert sum(syncs.values()) == (1 if logs else 0), (rank, step, syncs)
            if step < 3:
                continue
            # a logging step gathers every rank's figures once (loss, counts, timings)
            expect = dict(ddp_own, **({"allgather_": 1} if logs else {}))
            assert collectives == expect, (rank, step, collectives)


def _stop_worker(rank, port, out):
    """Only rank 1 is asked to stop, once it has done 2 steps."""
    held = {}
    meter, run = _real_loop(rank, port, 9, 3, log_period=2,
                            stop_requested=lambda: rank == 1 and held["m"].steps_done >= 2)
    held["m"] = meter
    torch.save(run(), f"{out}.{rank}")
    dist.destroy_process_group()


def test_a_stop_asked_of_one_rank_stops_every_rank_at_the_same_optimizer_step(tmp_path):
    """Rank 1 alone is signalled; the logging step after step 2 tells every rank, and all stop
    at the end of that gradient-accumulation window (step 3 of 9 with 3 micro-steps)."""
    mp.spawn(_stop_worker, args=(free_port(), str(tmp_path / "s")), nprocs=2)
    for rank in (0, 1):
        stats = torch.load(tmp_path / f"s.{rank}")
        assert stats["stopped_at"] == 3 and stats["steps"] == 3, (rank, stats)


@pytest.mark.cuda
def test_cuda_non_logging_steps_never_sync_the_host():
    """The real loop on a GPU, with torch's sync debug mode raising on any host sync except
    inside the meter's logging read."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (make gpu-check)")
    from test_trainer import fixed_batches

    from slowfast_dist.config import load_config
    from slowfast_dist.models import build_model
    from slowfast_dist.train import trainer
    from slowfast_dist.train.loop import train_one_epoch

    device = torch.device("cuda")
    cfg = load_config("configs/demo.yaml", ["DATA.TRAIN_CROP_SIZE", "32"])
    model = build_model(cfg).to(device)
    optimizer = trainer.build_optimizer(model, lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
                                        weight_decay=1e-4, bn_weight_decay=0.0)
    batches = [{k: ([x.to(device) for x in v] if k == "inputs" else v.to(device))
                for k, v in b.items()} for b in fixed_batches(per_rank=2, ranks=1, steps=6)]
    meter = StepMeter(rank=0, world_size=1, device=device, log_period=3, stream=io.StringIO())
    flush, reads = meter._flush, []

    def allowed_flush(*args):
        torch.cuda.set_sync_debug_mode("default")
        reads.append(args[1])
        flush(*args)
        torch.cuda.set_sync_debug_mode("error")

    meter._flush = allowed_flush
    torch.cuda.set_sync_debug_mode("error")
    try:
        from test_trainer import ListLoader

        train_one_epoch(model, ListLoader(batches), optimizer, epoch=0, lr_at=lambda e: 0.1,
                        loss_fn=torch.nn.BCEWithLogitsLoss(), device=device,
                        autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16),
                        scaler=torch.amp.GradScaler("cuda", enabled=False), accum_steps=1,
                        meter=meter)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert reads == [2, 5] and math.isfinite(meter.last_loss)


def test_log_line_shows_clips_per_gpu_and_mfu_when_the_peak_is_known():
    stream = io.StringIO()
    # 1 TFLOP per clip on a 100 TFLOP/s device: 10 clips/s per GPU would be 10 % MFU
    meter = StepMeter(rank=0, world_size=2, device=torch.device("cpu"), log_period=2,
                      stream=stream, train_flops_per_clip=1e12, peak_tflops=100.0)
    rate = meter.throughput(samples=40, wall_s=2.0)
    assert rate["clips_per_s"] == 20 and rate["clips_per_s_per_gpu"] == 10
    assert rate["mfu"] == pytest.approx(0.10)
    meter.world_size = 1  # no process group here; the log line is what is checked
    stats = _run_epoch(meter, [0, 0], [1.0, 1.0])
    line = stream.getvalue().strip().splitlines()[-1]
    assert "clips/s/GPU" in line and "MFU" in line and stats["mfu"] > 0
    no_peak = StepMeter(rank=0, world_size=1, device=torch.device("cpu"), stream=io.StringIO())
    assert no_peak.throughput(4, 1.0)["mfu"] is None
    assert "ETA" not in line  # no MAX_EPOCH given


def test_the_progress_line_ends_with_the_run_s_eta():
    from slowfast_dist.logs import format_duration
    from slowfast_dist.train.meters import eta_s

    stream = io.StringIO()
    meter = StepMeter(rank=0, world_size=1, device=torch.device("cpu"), log_period=2,
                      stream=stream, max_epoch=3)
    _run_epoch(meter, [0, 0, 0, 0], [1.0] * 4)
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 2 and all(" ETA " in ln for ln in lines)
    # after step 2 of 4 in epoch 1 of 3: 2 + 2 x 4 = 10 steps left; at the end of the epoch 8
    assert eta_s(0, 1, 4, 3, 0.5) == 5.0 and eta_s(0, 3, 4, 3, 0.5) == 4.0
    assert eta_s(2, 3, 4, 3, 0.5) == 0.0
    assert [format_duration(x) for x in (4.4, 65, 3 * 3600 + 7 * 60 + 5)] == ["4s", "1m05s",
                                                                            "3h07m"]
