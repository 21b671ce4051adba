"""Starting from a pretrained checkpoint (TRAIN.CHECKPOINT_FILE_PATH), by PySlowFast's rules.

Used only when OUTPUT_DIR has no checkpoint to resume from; `trainer.py` decides that.
"""

from __future__ import annotations

import os

from slowfast_dist.errors import UserError
from slowfast_dist.models.checkpoint_compat import read_checkpoint_file
from slowfast_dist.train import checkpoint as ckpt


def read_pretrained(path: str, checkpoint_type: str, full_unpickle: bool = False, *,
                    model_state: dict | None = None, log=print) -> dict:
    """TRAIN.CHECKPOINT_FILE_PATH as a dict with `model_state` (ours or PySlowFast's .pyth, or a
    PySlowFast zoo Caffe2 .pkl). A .pkl's blob names depend on the model they are read for:
    `model_state` is the model's state dict, and `caffe2_names` maps each key back to its blob."""
    if checkpoint_type not in ("pytorch", "caffe2"):
        raise UserError(f"TRAIN.CHECKPOINT_TYPE: {checkpoint_type!r} must be pytorch or caffe2")
    if not os.path.isfile(path):
        raise UserError(f"{path}: TRAIN.CHECKPOINT_FILE_PATH not found")
    if checkpoint_type == "caffe2":
        from slowfast_dist.models.caffe2_weights import read_caffe2_weights

        if model_state is None:
            raise ValueError("read_pretrained(caffe2) needs the model's state dict")
        conv = read_caffe2_weights(path, model_state, log=log)
        return {"model_state": conv.weights, "caffe2_names": conv.sources}
    state = read_checkpoint_file(path, full_unpickle=full_unpickle,
                                 switch="TRAIN.CHECKPOINT_FULL_UNPICKLE")
    if not isinstance(state, dict) or not isinstance(state.get("model_state"), dict):
        raise UserError(f"{path}: not a checkpoint (no 'model_state' inside)")
    return state


def pretrained_weights(weights: dict, own: dict, *, inflate: bool, clear_name_patterns: list,
                       path: str, log, source_names: dict | None = None,
                       head_may_differ: bool = True) -> tuple[dict, list]:
    """The checkpoint's weights made to fit a model whose state dict is `own`, and the names of
    the tensors left as initialised.

    PySlowFast's rules: a `module.` prefix and CHECKPOINT_CLEAR_NAME_PATTERN are stripped; with
    CHECKPOINT_INFLATE a 2D conv kernel [O, I, H, W] becomes [O, I, T, H, W] / T and tensors
    that still do not fit are left as initialised. Without it, only a head of another shape is
    left out (a Kinetics classifier into the AVA detector), unless `head_may_differ` is False
    (scoring: a random head would give a meaningless mAP); any other mismatch is an error naming
    the first tensor (`source_names[key]` too: the Caffe2 blob it came from) and both shapes.
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
        def spared(k):
            return head_may_differ and k.startswith("head.")

        bad = [k for k in left if not spared(k)]
        bad += sorted(k for k in weights if k not in own and not spared(k))
        if bad:
            k = bad[0]
            name = f"{source_names[k]} -> {k}" if k in (source_names or {}) else k
            if k not in weights:
                fit = "missing from the file"
            elif k not in own:
                fit = "not in this model"
            else:
                fit = f"{list(weights[k].shape)} in the file, {list(own[k].shape)} in this model"
            hint = "; set TRAIN.CHECKPOINT_INFLATE for a 2D checkpoint" if head_may_differ else ""
            raise UserError(f"{path}: does not fit the model ({len(bad)} tensors, first "
                            f"{name}: {fit}){hint}")
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
                                       path=path, log=log, clear_name_patterns=clear_name_patterns,
                                       source_names=state.get("caffe2_names"))
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


def load_caffe2_for_test(model, path: str, *, log) -> None:
    """TEST.CHECKPOINT_TYPE caffe2: a PySlowFast zoo .pkl into the model to score, every tensor,
    head included, from the file."""
    from slowfast_dist.models.caffe2_weights import read_caffe2_weights

    target = ckpt.unwrap(model)
    own = target.state_dict()
    conv = read_caffe2_weights(path, own, log=log)
    weights, _ = pretrained_weights(conv.weights, own, inflate=False, clear_name_patterns=[],
                                    path=path, log=log, source_names=conv.sources,
                                    head_may_differ=False)
    target.load_state_dict(weights)
