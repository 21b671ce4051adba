"""The one reader of `.pyth` checkpoints (ours and PySlowFast's): resume, fine-tuning and test.

Loading never runs code from the file: `torch.load(weights_only=True)`, which unpickles tensors
and plain Python values only, plus numpy arrays and scalars (data, no code), which converted
model-zoo files hold. PySlowFast stores its config as a YAML string (`cfg.dump()`), so its files
need nothing more. A file whose pickle asks for anything else (a pickled CfgNode included: torch's
safe unpickler cannot fill a dict subclass) is refused with one line naming the file and what
it asked for. Full unpickling, which runs whatever the file
says, happens only with `full_unpickle=True` (TRAIN/TEST.CHECKPOINT_FULL_UNPICKLE), with a
warning. Before loading, the zip members' CRCs are checked: torch.load does not, so a flipped
byte would load as other weights.
"""
import re
import zipfile
from pathlib import Path

from ..errors import UserError
from .. import logs


def _allowed_globals() -> list:
    """numpy arrays and scalars: what converted checkpoints pickle besides tensors."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    allowed = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    return allowed + [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int64",
                                                  "int32", "uint8", "bool")]


def read_checkpoint_file(path, *, full_unpickle: bool = False, switch: str = "") -> object:
    """The checkpoint at `path`, loaded onto the CPU. Missing, damaged, unreadable or
    code-carrying files are UserErrors naming the file; `switch` names the config key that
    would allow full unpickling."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    if zipfile.is_zipfile(path):  # torch's legacy (pre-1.6) format has no CRCs to check
        try:
            with zipfile.ZipFile(path) as z:
                damaged = z.testzip()
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"{path}: not a readable checkpoint ({err})") from None
        if damaged is not None:
            raise UserError(f"{path}: damaged checkpoint (CRC mismatch in {damaged})")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        asked = _asked_global(str(err))
        if asked is None or _caffe2_like(path):  # no class refused, or not a torch file at all
            raise UserError(_unreadable(path, err, switch)) from None
        if not full_unpickle:
            raise UserError(f"{path}: refused: its pickle asks for {asked}, which would run code "
                            f"from the file; if you made this file yourself, set "
                            f"{switch or 'CHECKPOINT_FULL_UNPICKLE'} True") from None
        logs.get("checkpoint").warning(
            f"{path}: fully unpickled ({switch} True): any code in the file has run")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - as below
            raise UserError(_unreadable(path, err, switch)) from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise UserError(_unreadable(path, err, switch)) from None


def _asked_global(text: str) -> str | None:
    """The class a weights-only load refused, as module.name. torch has written it as
    "GLOBAL os system", "GLOBAL posix.system whose module..." and "GLOBAL a.b was not...": the
    second word is part of the name only when it is not torch's own next word."""
    m = re.search(r"(?:global|GLOBAL)\s+([\w.]+)(?:\s+(?!was\b|whose\b|is\b)([\w.]+))?", text)
    return None if m is None else ".".join(g for g in m.groups() if g)


def _caffe2_like(path: Path) -> bool:
    """A `.pkl` that is no torch.save zip: what PySlowFast's model zoo ships (a Python 2 pickle
    of Caffe2 blobs), read under CHECKPOINT_TYPE pytorch by mistake."""
    return path.suffix == ".pkl" and not zipfile.is_zipfile(path)


def _unreadable(path: Path, err: Exception, switch: str) -> str:
    """One line for a file torch.load cannot read: its reason (the unpickler's own line rather
    than torch's paragraph about weights_only), and for a Caffe2 pickle, the key to set."""
    if _caffe2_like(path):
        section = switch.rsplit(".", 1)[0] + "." if "." in switch else ""
        return (f"{path}: not a torch checkpoint; a PySlowFast model-zoo .pkl is a Caffe2 "
                f"checkpoint: set {section}CHECKPOINT_TYPE caffe2")
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return f"{path}: not a readable checkpoint ({first[:160]})"


def load_pyslowfast_checkpoint(model, path, *, skip_head=None, log=print, full_unpickle=False,
                               switch=""):
    """Load weights; returns the checkpoint's cfg (str/dict) if present.

    skip_head=None: skip head.* automatically when shapes differ (Kinetics -> AVA), one line told.
    """
    ckpt = read_checkpoint_file(path, full_unpickle=full_unpickle, switch=switch)
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
