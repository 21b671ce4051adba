"""Checkpoints in PySlowFast's `.pyth` layout, written atomically, resumed from the newest good one.

Layout (PySlowFast's keys first, so its tools read ours): `model_state`, `optimizer_state`,
`epoch` (the last finished epoch, 0-based), `cfg` (the YAML dump); then ours: `scaler_state`,
`rng_state` (rank 0's), `rng_states` (every rank's, by rank), `global_step`, `epoch_step`.
Files are `OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth` as in PySlowFast (after epoch 5).
A run stopped by a signal inside epoch 6 writes `checkpoint_epoch_00006_step_000120.pyth`
(`epoch_step` 120: steps of epoch 6 done; `epoch` 4); PySlowFast's resume would read it as
"epoch 5 done" and redo epoch 6 whole, ours goes on at step 121. It is removed once a later
end-of-epoch checkpoint is on disk.

Written as temp file + fsync + rename, so a run killed mid-write leaves the previous checkpoint
intact. The temp file's name does not contain "checkpoint": PySlowFast's resume takes the last
sorted name containing it, and would pick a partial file left by a killed run. Loading checks the
zip CRCs (torch.load does not, so a flipped byte would load as other weights) and uses
`weights_only=True`: every value stored is a tensor or a plain Python value.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from slowfast_dist.errors import UserError
from slowfast_dist import logs
from slowfast_dist.models.sub_batchnorm import load_split_states, split_states
from slowfast_dist.files import atomic_write

_NAME = re.compile(r"^checkpoint_epoch_(\d{5})(?:_step_(\d{6}))?\.pyth$")
_PARTIAL = ".partial_"


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | os.PathLike, epoch: int, step: int = 0) -> Path:
    """Path of the checkpoint written at the end of 0-based `epoch` (named epoch+1, as PySlowFast),
    or, with `step` > 0, after `step` steps of it."""
    tail = f"_step_{step:06d}" if step else ""
    return checkpoint_dir(output_dir) / f"checkpoint_epoch_{epoch + 1:05d}{tail}.pyth"


def _position(name: str) -> tuple[int, int] | None:
    """(epochs finished, steps of the next one) a checkpoint file name stands for."""
    m = _NAME.match(name)
    if not m:
        return None
    return (int(m.group(1)), 0) if m.group(2) is None else (int(m.group(1)) - 1, int(m.group(2)))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP / torch.compile wrappers, whose state-dict keys match PySlowFast's."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    """Every RNG the run draws from, in a form `weights_only` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():  # this rank's device only: a resume may see fewer GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # files from before: one state per visible GPU
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def save_checkpoint(path, *, model, optimizer, epoch: int, cfg_dump: str, scaler=None,
                    global_step: int = 0, epoch_step: int = 0, rng_states=None,
                    layout: dict | None = None) -> Path:
    """Write a checkpoint atomically. `epoch` is the 0-based epoch just finished (PySlowFast's);
    `epoch_step` > 0: that many steps of the next epoch are done too. `rng_states`: every rank's
    `rng_state()`, by rank (this process's alone when not given). `layout`: what `epoch_step`
    counts in (see `resume_step`)."""
    path = Path(path)
    rng_states = list(rng_states) if rng_states is not None else [rng_state()]
    state = {
        "model_state": unwrap(model).state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "epoch": epoch,
        "cfg": cfg_dump,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "rng_state": rng_states[0],
        "rng_states": rng_states,
        "global_step": global_step,
        "epoch_step": epoch_step,
        "layout": layout,
    }
    splits = split_states(unwrap(model))
    if splits:  # multigrid's sub-batch BN: what the plain BN keys above do not hold
        state["bn_split_states"] = splits
    for stale in path.parent.glob(_PARTIAL + "*"):  # left by a run killed while writing
        stale.unlink(missing_ok=True)
    atomic_write(path, lambda f: torch.save(state, f),
                 prefix=_PARTIAL + path.stem.replace("checkpoint_", "") + ".")
    here = _position(path.name)
    for older in list_checkpoints(path.parent.parent):  # mid-epoch ones this one supersedes
        pos = _position(older.name)
        if pos[1] and pos < here:
            older.unlink(missing_ok=True)
    return path


def read_checkpoint(path) -> dict:
    """Load one of our checkpoints onto the CPU (the one reader, `read_checkpoint_file`: CRCs
    checked, no code run); a missing, damaged or foreign file is a UserError."""
    from slowfast_dist.models.checkpoint_compat import read_checkpoint_file

    state = read_checkpoint_file(path)
    if not isinstance(state, dict) or "model_state" not in state:
        raise UserError(f"{path}: not a checkpoint (no 'model_state' inside)")
    return state


def list_checkpoints(output_dir) -> list[Path]:
    """Checkpoints in OUTPUT_DIR, oldest first."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = sorted((pos, p) for p in folder.iterdir() if (pos := _position(p.name)))
    return [p for _, p in found]


def latest_good_checkpoint(output_dir) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; damaged newer ones are reported and passed over. None
    when there is none; a UserError when there are some and every one is damaged (starting over
    silently would throw away a run: TRAIN.AUTO_RESUME False is how to ask for that)."""
    found = list_checkpoints(output_dir)
    for path in reversed(found):
        try:
            return path, read_checkpoint(path)
        except UserError as err:
            logs.get("checkpoint").warning(f"skipping damaged checkpoint: {err}")
    if found:
        raise UserError(f"{checkpoint_dir(output_dir)}: all {len(found)} checkpoint(s) are "
                        "damaged (see the warnings above); move them away, or set "
                        "TRAIN.AUTO_RESUME False, to start over")
    return None


def load_weights(model, saved: dict, path=None) -> None:
    """Our checkpoint's `model_state` into `model`, strictly; one that does not fit is a
    UserError naming the file and the first key that differs (not torch's line per tensor)."""
    bare = unwrap(model)
    mismatch = _first_mismatch(bare.state_dict(), saved)
    if mismatch:
        raise UserError(f"{path or 'checkpoint'}: made by another model config ({mismatch}); "
                        "use the config that wrote it, or another OUTPUT_DIR")
    bare.load_state_dict(saved, strict=True)


def _first_mismatch(model_state: dict, saved: dict) -> str | None:
    """The first key where a checkpoint does not fit the model, said in a few words."""
    for key, value in model_state.items():
        if key not in saved:
            return f"{key} is missing from the file"
        if tuple(saved[key].shape) != tuple(value.shape):
            return (f"{key} has shape {list(saved[key].shape)} in the file, "
                    f"{list(value.shape)} in this model")
    extra = [k for k in saved if k not in model_state]
    return f"{extra[0]} in the file is not in this model" if extra else None


def restore(state: dict, *, model, optimizer=None, scaler=None, rank: int = 0,
            world_size: int = 1, log=None, path=None) -> tuple[int, int]:
    """Load a checkpoint of our own layout into the run; returns (epoch, step) to start from.
    Each rank takes its own RNG states back when the world size is the one saved. A checkpoint
    of another model is a UserError naming `path` and the first key that does not fit."""
    load_weights(model, state["model_state"], path)
    load_split_states(unwrap(model), state.get("bn_split_states") or {})
    if optimizer is not None and state.get("optimizer_state") is not None:
        # the config's settings (LR policy aside, set every step) win over the saved ones: a
        # resumed run that turns on LARS or changes the decay gets what it asked for
        wanted = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict(state["optimizer_state"])
        except ValueError as err:
            raise UserError(f"{path}: its optimizer state does not fit this config's parameter "
                            f"groups ({' '.join(str(err).split())}); SOLVER.ZERO_WD_1D_PARAM or "
                            "BN settings changed since it was saved?") from None
        for group, settings in zip(optimizer.param_groups, wanted):
            group.update(settings)
    if scaler is not None and state.get("scaler_state") is not None:
        scaler.load_state_dict(state["scaler_state"])
    states = state.get("rng_states") or []
    if len(states) == world_size:
        set_rng_state(states[rank])
    elif state.get("rng_state") is not None:
        if states and log is not None:
            log(f"note: the checkpoint holds RNG states of {len(states)} rank(s) and this run has "
                f"{world_size}: every rank takes rank 0's, so the run will not repeat the old one "
                "bit for bit")
        set_rng_state(state["rng_state"])
    return int(state.get("epoch", -1)) + 1, int(state.get("epoch_step", 0))


def resume_step(state: dict, layout: dict, path=None) -> int:
    """The step of this run's epoch to resume at, from a checkpoint saved inside an epoch.

    `layout` is {"ranks": simulated world, "simulate": simulated ranks per process, "batch":
    clips per rank, and under multigrid "multigrid": a digest of the plan}. A process runs its
    simulated ranks' batches in turn, so a saved epoch_step covers epoch_step / simulate batches
    of each rank: the same count in another split of the same ranks. Other ranks, batches or
    plans shard the epoch differently: refused."""
    step, saved = int(state.get("epoch_step", 0)), state.get("layout")
    if not step or not saved:
        return step
    if (saved["ranks"], saved["batch"]) != (layout["ranks"], layout["batch"]):
        raise UserError(f"{path}: saved inside an epoch by a run of {saved['ranks']} ranks x "
                        f"{saved['batch']} clips; this one is {layout['ranks']} x "
                        f"{layout['batch']}, which splits the epoch otherwise: resume with the "
                        "same ranks (or DIST.SIMULATE_WORLD_SIZE) and TRAIN.BATCH_SIZE, or move "
                        "this file away to resume from the last end-of-epoch checkpoint")
    if saved.get("multigrid") != layout.get("multigrid"):
        raise UserError(f"{path}: saved inside an epoch under another multigrid plan (MULTIGRID "
                        "or SOLVER keys changed), which cuts the epoch otherwise: resume with the "
                        "same keys, or move this file away to resume from the last end-of-epoch "
                        "checkpoint")
    return step // saved["simulate"] * layout["simulate"]


def gather_rng_states(world_size: int) -> list:
    """Every rank's `rng_state()`, by rank; a collective, so every rank calls it."""
    import torch.distributed as dist

    mine = rng_state()
    if world_size == 1 or not dist.is_initialized():
        return [mine]
    states = [None] * world_size
    dist.all_gather_object(states, mine)
    return states
