"""Helpers shared by tests (imported as `support`; pytest puts tests/ on sys.path)."""
import os
import re
import socket
import subprocess
import sys
import time

from slowfast_dist.config import load_config

# configs/demo.yaml made tiny: small crops, no workers, no TensorBoard, quiet
TINY = ["DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES",
        "[32, 40]", "DATA_LOADER.NUM_WORKERS", "0", "TENSORBOARD.ENABLE", "False",
        "LOG_PERIOD", "100"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def opts_for(data, out, *extra) -> list:
    """Overrides that point configs/demo.yaml at the synthetic tree `data` and OUTPUT_DIR `out`."""
    return ["AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
            "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out), *TINY, *extra]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
# the repository first, then what the caller had (make gpu-check brings packages that way)
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


def torchrun(data, out, *extra, nproc=2):
    """`nproc` ranks of configs/demo.yaml under torchrun (this Python's), in a session of their
    own (a scheduler signals the whole job); stdout and stderr together."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "-m",
           "slowfast_dist.cli", "train", "--cfg", "configs/demo.yaml",
           *opts_for(data, out, *extra)]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run_until(proc, pattern, act):
    """Read the output; call `act()` once at the first line matching `pattern`. Returns the
    output and the seconds from `act` to the end of the process."""
    lines, t_act = [], None
    for line in proc.stdout:
        lines.append(line)
        if t_act is None and re.search(pattern, line):
            t_act = time.time()
            act()
    proc.wait(timeout=300)
    assert t_act is not None, "".join(lines)[-3000:]
    return "".join(lines), time.time() - t_act


def finish(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def cfg_for(data, out, *extra):
    return load_config("configs/demo.yaml", opts_for(data, out, *extra))


class CountHostSyncs:
    """Counts, by op name, the ops that would block the host on a GPU (a value read back:
    .item(), float(t), .tolist(), bool(t); shape-dependent results: nonzero, boolean-mask
    indexing, unique, masked_select) and the collectives (c10d ops) run under it.

    On CPU nothing blocks, but the same dispatcher calls happen, so this counts what a CUDA
    run would sync on."""

    SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2",
                "unique_dim", "unique_consecutive", "is_nonzero", "item"}

    def __init__(self):
        from collections import Counter

        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self.syncs, self.collectives = Counter(), Counter()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(mode, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = func._schema.name
                ns, _, op = name.partition("::")
                if ns == "c10d":
                    counter[1][op] += 1
                elif op in self.SYNC_OPS or (op in ("index", "index_put_", "index_put")
                                             and _has_bool_index(args)):
                    counter[0][op] += 1
                return func(*args, **kwargs)

        self._mode = _Mode()

    def __enter__(self):
        import torch

        # .tolist() and .numpy() of a CPU tensor read memory without a dispatcher call; on a
        # GPU they copy to the host and sync, so they are counted by wrapping them.
        self._saved = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, self._counting(name, method))
        self._mode.__enter__()
        return self

    def _counting(self, name, method):
        def wrapped(tensor, *args, **kwargs):
            self.syncs[name] += 1
            return method(tensor, *args, **kwargs)
        return wrapped

    def __exit__(self, *exc):
        import torch

        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        return self._mode.__exit__(*exc)


def _has_bool_index(args) -> bool:
    import torch

    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()))


def record_figures(test: str, **figures) -> None:
    """Fault tests measure what README's Reliability table quotes: with SFD_FIGURES_JSON set
    (benchmarks/faults.py sets it), their figures are added to that JSON file."""
    import json
    import os

    path = os.environ.get("SFD_FIGURES_JSON")
    if not path:
        return
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[test] = {k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def needs_libjpeg(decoder: str = "libjpeg") -> None:
    """Skip, saying why, where DATA.DECODER `decoder` is libjpeg and its C module was not built."""
    import pytest

    from slowfast_dist.data import jpeg

    if decoder == "libjpeg" and not jpeg.installed("libjpeg"):
        pytest.skip("DATA.DECODER libjpeg was not built here (pip install -e . builds it where "
                    "gcc and libjpeg-turbo's headers are found)")
