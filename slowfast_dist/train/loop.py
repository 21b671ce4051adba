"""The training loop. Setup lives in `trainer.py`; timing, logging and profiling in `meters.py`.

    torchrun --standalone --nproc_per_node 2 -m slowfast_dist.cli train --cfg configs/demo.yaml
    mpirun -n 8 slowfast-dist train --cfg configs/AVA/SLOWFAST_32x2_R50.yaml
    sbatch -N 16 launch/slurm.sbatch configs/AVA/SLOWFAST_32x2_R50.yaml
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def to_device(batch: dict, device: torch.device):
    """Pathway tensors, [K, 5] boxes and targets of a collated batch, on the device."""
    nb = device.type == "cuda"
    inputs = [x.to(device, non_blocking=nb) for x in batch["inputs"]]
    boxes = batch["boxes"].to(device, non_blocking=nb) if batch.get("boxes") is not None else None
    return inputs, boxes, batch["labels"].to(device, non_blocking=nb)


def train_one_epoch(model, loader, optimizer, *, epoch, lr_at, loss_fn, device, autocast,
                    scaler, accum_steps, meter, start_step=0):
    """One pass over this rank's shard, from `start_step` (a resumed run). `lr_at(fractional
    epoch)` gives the LR of every step. Stops early, at the end of an accumulation window, when
    the ranks agreed to (a stop signal, `preempt.py`): the stats then say `stopped_at`."""
    model.train()
    loader.set_epoch(epoch, start_step)
    steps = len(loader)
    for step, batch in enumerate(meter.timed(loader, epoch, start_step), start=start_step):
        # the LR of the update this micro-step belongs to: the schedule of the large-batch run
        # that accumulation (or DIST.SIMULATE_WORLD_SIZE) stands for
        lr = lr_at(epoch + (step - step % accum_steps) / steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, boxes, labels = to_device(batch, device)
        last_micro = (step + 1) % accum_steps == 0 or step + 1 == steps
        # Gradients are all-reduced only on the last micro-step of an accumulation window.
        with (nullcontext() if last_micro else getattr(model, "no_sync", nullcontext)()), autocast():
            loss = loss_fn(model(inputs, boxes), labels)
        scaler.scale(loss / accum_steps).backward()
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        meter.step_done(epoch, step, loss.detach(), lr, inputs[0].shape[0])
        if last_micro and meter.stop_agreed and step + 1 < steps:
            return {**meter.epoch_done(epoch), "stopped_at": step + 1}
    return {**meter.epoch_done(epoch), "stopped_at": None}


def fit(model, train_loader, optimizer, *, start_epoch, max_epoch, on_epoch_end, start_step=0,
        on_epoch_start=None, **step_args):
    """Epochs from `start_epoch` (its step `start_step`); `on_epoch_start(epoch)` sets what
    changes per epoch (a multigrid stage); `on_epoch_end(epoch, stats)` checkpoints, evaluates,
    and ends the run early when asked to."""
    for epoch in range(start_epoch, max_epoch):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, epoch=epoch,
                                start_step=start_step if epoch == start_epoch else 0, **step_args)
        on_epoch_end(epoch, stats)
