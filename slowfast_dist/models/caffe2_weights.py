"""PySlowFast model-zoo weights in Caffe2 format (`.pkl`, TRAIN/TEST.CHECKPOINT_TYPE caffe2).

The file is read by an unpickler that builds numpy arrays and nothing else: a pickle asking for
any other global is refused before anything in it runs. Blob names become PyTorch names by
PySlowFast's rules (slowfast/utils/c2_model_loading.py). Whether the weights then fit the model
(shapes, 2D inflation, a head of another size) is decided where .pyth files are
(train/finetune.py::pretrained_weights), so both formats follow the same rules.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from slowfast_dist.errors import UserError

# PySlowFast's Caffe2 -> PyTorch renames, applied in this order, each to the previous result
# (get_name_convert_func). Later rules rely on earlier ones: `res2_0_branch2a_bn_s` becomes
# `s2.pathway0_res0.branch2.a_bn_s` first and `...a_bn.weight` at the end. Their `.` matches any
# character, as PySlowFast's does: `bn_s` and `bn.s` both end as `bn.weight`.
_RULES = [(re.compile(a), b) for a, b in [
    # non-local blocks (Slow pathway only in PySlowFast's zoo)
    (r"^nonlocal_conv([0-9]+)_([0-9]+)_(.*)", r"s\1.pathway0_nonlocal\2_\3"),
    (r"^(.*)_nonlocal([0-9]+)_(theta)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(g)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(phi)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(out)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(bn)_(.*)", r"\1_nonlocal\2.\3.\4"),
    # Fast -> Slow lateral connections: after the stem (t_pool1) and after each stage's last block
    (r"^t_pool1_subsample_bn_(.*)", r"s1_fuse.bn.\1"),
    (r"^t_pool1_subsample_(.*)", r"s1_fuse.conv_f2s.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch2c_bn_subsample_bn_(.*)", r"s\1_fuse.bn.\3"),
    (r"^t_res([0-9]+)_([0-9]+)_branch2c_bn_subsample_(.*)", r"s\1_fuse.conv_f2s.\3"),
    # Slow pathway (no prefix)
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway0_res\2.branch\3.\4_\5"),
    (r"^res_conv1_bn_(.*)", r"s1.pathway0_stem.bn.\1"),
    (r"^conv1_xy(.*)", r"s1.pathway0_stem.conv_xy\1"),
    (r"^conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway0_res\2.branch\3_\4"),
    (r"^res_conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    # Fast pathway (`t_` prefix)
    (r"^t_res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway1_res\2.branch\3.\4_\5"),
    (r"^t_res_conv1_bn_(.*)", r"s1.pathway1_stem.bn.\1"),
    (r"^t_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway1_res\2.branch\3_\4"),
    (r"^t_res_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    # heads (X3D's conv_5 / lin_5 included) and squeeze-excitation
    (r"pred_(.*)", r"head.projection.\1"),
    (r"(.*)b_bn_fc(.*)", r"\1se.fc\2"),
    (r"conv_5(.*)", r"head.conv_5\1"),
    (r"lin_5(.*)", r"head.lin_5\1"),
    # parameter suffixes: BN scale, shift and running statistics; conv/linear weight and bias
    (r"(.*)bn.b\Z", r"\1bn.bias"),
    (r"(.*)bn.s\Z", r"\1bn.weight"),
    (r"(.*)bn.rm\Z", r"\1bn.running_mean"),
    (r"(.*)bn.riv\Z", r"\1bn.running_var"),
    (r"(.*)[\._]b\Z", r"\1.bias"),
    (r"(.*)[\._]w\Z", r"\1.weight"),
]]

# Training state saved beside the weights; PySlowFast drops unmapped blobs whose name contains
# one of these without a word (a substring test, as its).
_TRAINING_STATE = ("momentum", "lr", "model_iter")
_LISTED = 20  # unmapped names written out in the log; the rest are counted


def caffe2_to_pytorch_name(name: str) -> str:
    """The PyTorch state-dict key PySlowFast gives the Caffe2 blob `name`."""
    for pattern, repl in _RULES:
        name = pattern.sub(repl, name)
    return name


class _Refused(Exception):
    """A global the unpickler will not hand out; the message names it."""


def _latin1_encode(text, encoding="latin1"):
    # What Python 3 pickles bytes as under protocol <= 2 (`_codecs.encode(str, 'latin1')`);
    # other codecs are refused so the pickle cannot pick a transform.
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed() -> dict:
    """(module, name) -> object for the globals a pickle of numpy arrays needs."""
    from collections import OrderedDict

    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode,
               ("collections", "OrderedDict"): OrderedDict}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # by the writer's numpy
        allowed[(module, "_reconstruct")] = core.multiarray._reconstruct
        allowed[(module, "scalar")] = core.multiarray.scalar
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f, encoding="latin1")  # Caffe2 pickles were written by Python 2
        self._allowed = _allowed()

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def read_caffe2_blobs(path) -> dict:
    """The `blobs` dict of a Caffe2 `.pkl` (name -> numpy array or number), read without
    running anything from the file. Not a pickle, no `blobs` inside, or a pickle asking for
    anything but numpy arrays: a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    if zipfile.is_zipfile(path):
        raise UserError(f"{path}: a PyTorch checkpoint, not a Caffe2 .pkl "
                        "(set CHECKPOINT_TYPE pytorch)")
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f).load()
    except _Refused as err:
        raise UserError(f"{path}: refused: its pickle asks for {err}, which would run code "
                        "from the file; a Caffe2 .pkl holds numpy arrays only") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    except Exception as err:  # noqa: BLE001 - a damaged pickle raises many types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: not a Caffe2 .pkl ({first[:160]})") from None
    blobs = data.get("blobs") if isinstance(data, dict) else None
    if not isinstance(blobs, dict):
        raise UserError(f"{path}: not a Caffe2 checkpoint (no 'blobs' dict inside)")
    return blobs


@dataclass
class Conversion:
    """Blobs converted for one model: `weights` by PyTorch name, `sources` their Caffe2 names."""

    weights: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    read: int = 0
    skipped: list = field(default_factory=list)    # training state (momentum, lr, model_iter)
    unmapped: list = field(default_factory=list)   # (caffe2 name, the PyTorch name it became)
    reshaped: list = field(default_factory=list)   # fewer dims: trailing 1s added, as PySlowFast


def convert_blobs(blobs: dict, own: dict, *, path, log=print) -> Conversion:
    """Caffe2 blobs as tensors named for a model whose state dict is `own`.

    Blobs whose name maps to no tensor of the model are logged and left out (training state
    silently), as PySlowFast; none mapping at all is a UserError. A blob with fewer dims than its
    tensor gets trailing 1s when that makes the shapes equal (a linear layer's [O, I] into a
    [O, I, 1, 1, 1] conv, as PySlowFast); other shapes are passed on as they are, for the
    shape and inflation rules of `pretrained_weights`.
    """
    import numpy as np
    import torch

    out = Conversion(read=len(blobs))
    for c2_name, blob in blobs.items():
        name = caffe2_to_pytorch_name(str(c2_name))
        if name not in own:
            if any(s in str(c2_name) for s in _TRAINING_STATE):
                out.skipped.append(c2_name)
            else:
                out.unmapped.append((c2_name, name))
            continue
        if name in out.sources:
            raise UserError(f"{path}: blobs {out.sources[name]} and {c2_name} both map to {name}")
        array = np.asarray(blob)
        if array.dtype.kind not in "biuf":
            raise UserError(f"{path}: blob {c2_name} -> {name} is not numeric ({array.dtype})")
        want = tuple(own[name].shape)
        padded = array.shape + (1,) * (len(want) - array.ndim)
        if array.ndim < len(want) and padded == want:
            array = array.reshape(padded)
            out.reshaped.append(c2_name)
        out.weights[name] = torch.from_numpy(np.array(array, copy=True))
        out.sources[name] = c2_name
    if out.unmapped:
        shown = ", ".join(f"{c2} ({pt})" for c2, pt in out.unmapped[:_LISTED])
        more = f" and {len(out.unmapped) - _LISTED} more" if len(out.unmapped) > _LISTED else ""
        log(f"{path}: {len(out.unmapped)} blob(s) map to no tensor of this model, not loaded: "
            f"{shown}{more}")
    if not out.weights:
        first = (f"; first {out.unmapped[0][0]} -> {out.unmapped[0][1]}" if out.unmapped else "")
        raise UserError(f"{path}: none of its {len(blobs)} blobs maps to a tensor of this model"
                        f"{first} (a checkpoint of another architecture?)")
    return out


def read_caffe2_weights(path, own: dict, *, log=print) -> Conversion:
    """`read_caffe2_blobs` then `convert_blobs` for a model whose state dict is `own`."""
    return convert_blobs(read_caffe2_blobs(path), own, path=path, log=log)
