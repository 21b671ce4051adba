"""Load PySlowFast .pyth checkpoints (dict with 'model_state', optional 'cfg')."""
from ..errors import UserError


def read_pyslowfast(path) -> object:
    """Load a .pyth file onto the CPU; a missing or unreadable file is a UserError."""
    import torch
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            # PySlowFast checkpoints pickle a CfgNode. The user named this file: trusted, as
            # PySlowFast's own loader trusts it.
            return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise UserError(f"{path}: cannot read checkpoint ({type(e).__name__})") from None


def load_pyslowfast_checkpoint(model, path, *, skip_head=None, log=print):
    """Load weights; returns the checkpoint's cfg (str/dict) if present.

    skip_head=None: skip head.* automatically when shapes differ (Kinetics -> AVA), one line told.
    """
    ckpt = read_pyslowfast(path)
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: no 'model_state' in checkpoint")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    target = getattr(model, "_orig_mod", model)
    own = target.state_dict()
    head_mismatch = any(k.startswith("head.") and (k not in own or own[k].shape != v.shape)
                        for k, v in state.items())
    if skip_head or (skip_head is None and head_mismatch):
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        for k, v in own.items():
            if k.startswith("head."):
                state[k] = v
        log(f"{path}: head weights not loaded (classification checkpoint into a different head)")
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: state dict does not match the model: {str(e).splitlines()[1] if len(str(e).splitlines())>1 else e}") from None
    return ckpt.get("cfg") if isinstance(ckpt, dict) else None
