"""Starting from a pretrained checkpoint (TRAIN.CHECKPOINT_FILE_PATH), by PySlowFast's rules.

Used only when OUTPUT_DIR has no checkpoint to resume from; `trainer.py` decides that.
"""

from __future__ import annotations

import os

from slowfast_dist.errors import UserError
from slowfast_dist.models.checkpoint_compat import read_checkpoint_file
from slowfast_dist.train import checkpoint as ckpt


def read_pretrained(path: str, checkpoint_type: str, full_unpickle: bool = False) -> dict:
    """TRAIN.CHECKPOINT_FILE_PATH as a dict with `model_state` (ours or PySlowFast's .pyth)."""
    if checkpoint_type == "caffe2":
        raise UserError(f"{path}: TRAIN.CHECKPOINT_TYPE caffe2 (.pkl) is not supported; load it "
                        "once in PySlowFast and save it as a PyTorch .pyth, then use pytorch")
    if checkpoint_type != "pytorch":
        raise UserError(f"TRAIN.CHECKPOINT_TYPE: {checkpoint_type!r} must be pytorch or caffe2")
    if not os.path.isfile(path):
        raise UserError(f"{path}: TRAIN.CHECKPOINT_FILE_PATH not found")
    state = read_checkpoint_file(path, full_unpickle=full_unpickle,
                                 switch="TRAIN.CHECKPOINT_FULL_UNPICKLE")
    if not isinstance(state, dict) or not isinstance(state.get("model_state"), dict):
        raise UserError(f"{path}: not a checkpoint (no 'model_state' inside)")
    return state


def pretrained_weights(weights: dict, own: dict, *, inflate: bool, clear_name_patterns: list,
                       path: str, log) -> tuple[dict, list]:
    """The checkpoint's weights made to fit a model whose state dict is `own`, and the names of
    the tensors left as initialised.

    PySlowFast's rules: a `module.` prefix and CHECKPOINT_CLEAR_NAME_PATTERN are stripped; with
    CHECKPOINT_INFLATE a 2D conv kernel [O, I, H, W] becomes [O, I, T, H, W] / T and tensors
    that still do not fit are left as initialised. Without it, only a head of another shape is
    left out (a Kinetics classifier into the AVA detector); any other mismatch is an error.
    """
    weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in weights.items()}
    for pattern in clear_name_patterns:
        weights = {k.replace(pattern, ""): v for k, v in weights.items()}  # every occurrence
    if inflate:
        for k, v in list(weights.items()):
            mine = own.get(k)
            if (mine is not None and v.dim() == 4 and mine.dim() == 5
                    and v.shape[:2] == mine.shape[:2] and v.shape[2:] == mine.shape[3:]):
                t = mine.shape[2]
                weights[k] = v.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    fits = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    # BN's num_batches_tracked is absent from some older files and harmless to keep.
    left = sorted(k for k in own if k not in fits and not k.endswith("num_batches_tracked"))
    if not inflate:
        bad = [k for k in left if not k.startswith("head.")]
        bad += sorted(k for k in weights if k not in own and not k.startswith("head."))
        if bad:
            raise UserError(f"{path}: does not fit the model ({len(bad)} tensors, first "
                            f"{bad[0]}); set TRAIN.CHECKPOINT_INFLATE for a 2D checkpoint")
    if left:
        what = "head" if all(k.startswith("head.") for k in left) else f"{len(left)} tensors"
        log(f"{path}: {what} not loaded (shapes differ from this model; left as initialised)")
    return {**own, **fits}, left


def finetune_from(state: dict, path: str, *, model, optimizer, scaler, inflate: bool,
                  epoch_reset: bool, clear_name_patterns: list, log) -> int:
    """Start from a pretrained checkpoint; returns the start epoch: 0 with CHECKPOINT_EPOCH_RESET
    or when some tensors did not load, else the checkpoint's epoch + 1 with its optimizer and
    scaler, as PySlowFast."""
    target = ckpt.unwrap(model)
    weights, left = pretrained_weights(state["model_state"], target.state_dict(), inflate=inflate,
                                       path=path, log=log, clear_name_patterns=clear_name_patterns)
    target.load_state_dict(weights)
    start = 0
    if not epoch_reset and "epoch" in state and left:
        # Another head (or inflated 2D weights) means another task: its optimizer state does not
        # fit these parameters and its epoch is not ours.
        log(f"{path}: not every tensor loaded, so its epoch and optimizer state are not used")
    elif not epoch_reset and "epoch" in state:
        start = int(state["epoch"]) + 1
        try:
            if state.get("optimizer_state"):
                optimizer.load_state_dict(state["optimizer_state"])
            if state.get("scaler_state") and scaler.is_enabled():
                scaler.load_state_dict(state["scaler_state"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"{path}: optimizer state does not fit ({str(err)[:120]}); set "
                            "TRAIN.CHECKPOINT_EPOCH_RESET True to start a new schedule") from None
    log(f"fine-tuning from {path} (starting epoch {start + 1}"
        f"{', optimizer state restored' if start else ''})")
    return start
