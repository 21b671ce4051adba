"""Config: PySlowFast-keyed defaults, YAML + opts loading with clear errors, dump.

Keys are classified in three groups: ours (in defaults.py), PySlowFast's but unused here (listed
in pyslowfast_keys.txt: dropped, warned once, kept on the cfg for `model-info`), and unknown
(UserError naming the key, where it came from and the closest valid key).
"""
from __future__ import annotations

import ast
import difflib
import os
import re
import warnings
from functools import lru_cache

import yaml
from fvcore.common.config import CfgNode

from slowfast_dist.errors import UserError
from .defaults import get_cfg

__all__ = ["get_cfg", "load_config", "dump_config", "cfg_ignored_keys", "pyslowfast_keys"]

_IGNORED_ATTR = "__ignored_keys__"


@lru_cache(maxsize=1)
def pyslowfast_keys() -> frozenset:
    """Every full key name PySlowFast's defaults.py defines."""
    path = os.path.join(os.path.dirname(__file__), "pyslowfast_keys.txt")
    with open(path) as f:
        return frozenset(l.strip() for l in f if l.strip() and not l.startswith("#"))


# PySlowFast keys in our defaults (so its YAMLs load) whose other values we do not implement:
# a non-default value is refused rather than silently ignored.
ONLY_DEFAULT = {"RESNET.STRIDE_1X1": False,
                "DATA.TARGET_FPS": 30, "AVA.BGR": False,
                "AVA.TRAIN_USE_COLOR_AUGMENTATION": False, "AVA.TEST_FORCE_FLIP": False}


def _flatten(d, prefix=""):
    for k, v in d.items():
        if not isinstance(k, str):
            raise UserError(f"config key {prefix}{k!r} is not a name (quote it, or check the file)")
        if isinstance(v, dict):
            yield from _flatten(v, prefix + k + ".")
        else:
            yield prefix + k, v


def _our_keys(cfg) -> list[str]:
    return [k for k, _ in _flatten(cfg)]


def _line_of(path, key):
    """Line number of the key's last component in the file (cheap; None if not found)."""
    leaf = key.split(".")[-1]
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if re.match(rf"\s*{re.escape(leaf)}\s*:", line):
                    return i
    except OSError:
        pass
    return None


def _where(src, key):
    if src is None:
        return "command line"
    line = _line_of(src, key)
    return f"{src}:{line}" if line else str(src)


def _classify(flat: dict, ours: set, src) -> tuple[dict, list]:
    keep, ignored = {}, []
    for key, val in flat.items():
        if key in ours:
            keep[key] = val
        elif key in pyslowfast_keys() or any(key.startswith(p + ".") for p in pyslowfast_keys()):
            ignored.append(key)
        else:
            close = difflib.get_close_matches(key, sorted(ours), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserError(f"{_where(src, key)}: unknown config key {key}{hint}")
    return keep, ignored


def _set(cfg: CfgNode, key: str, val, src):
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node[p]
    old = node[parts[-1]]
    if isinstance(val, str) and not isinstance(old, str):
        # Like yacs: strings (opts, and YAML scalars such as "1e-7" that PyYAML leaves as str)
        # are decoded as Python literals, then as YAML ("true").
        try:
            val = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            try:
                val = yaml.safe_load(val)
            except yaml.YAMLError:
                pass
    # Same coercions yacs allows: int->float, list<->tuple; None only where the default is None.
    if isinstance(old, float) and isinstance(val, int) and not isinstance(val, bool):
        val = float(val)
    elif isinstance(old, (list, tuple)) and isinstance(val, (list, tuple)):
        val = type(old)(val)
    if old is not None and type(val) is not type(old):
        raise UserError(
            f"{_where(src, key)}: {key} must be {type(old).__name__} (default {old!r}), got {val!r}"
        )
    node[parts[-1]] = val


def _check_solver(cfg, origin: dict, path) -> None:
    """UserError for the first SOLVER value the LR schedule would use wrongly, located where
    the value came from (`origin`: key -> file, or None for the command line)."""
    from slowfast_dist.train.schedule import solver_problems

    s = cfg.SOLVER
    problems = solver_problems(policy=s.LR_POLICY, base_lr=s.BASE_LR, steps=s.STEPS, lrs=s.LRS,
                               max_epoch=s.MAX_EPOCH, warmup_epochs=s.WARMUP_EPOCHS,
                               cosine_end_lr=s.COSINE_END_LR)
    max_from_opts = "SOLVER.MAX_EPOCH" in origin and origin["SOLVER.MAX_EPOCH"] is None
    for key, msg, against_max_epoch in problems:
        from_opts = key in origin and origin[key] is None
        if against_max_epoch and max_from_opts and not from_opts:
            continue  # SOLVER.MAX_EPOCH N on the command line cuts the file's schedule short
        # a key left at its default is reported at the file that chose the policy around it
        src = origin[key] if key in origin else path
        hint = ("; to cut a run short, give SOLVER.MAX_EPOCH on the command line"
                if against_max_epoch and src is not None else "")
        raise UserError(f"{_where(src, key)}: {msg}{hint}")


def load_config(path: str | None = None, opts: list[str] | None = None) -> CfgNode:
    """Defaults, then the YAML at `path` (with `_BASE_`), then `KEY VALUE` opts; frozen."""
    cfg = get_cfg()
    ours = set(_our_keys(cfg))
    ignored: list[str] = []
    origin: dict = {}  # key -> the file that set it, or None for the command line
    if path is not None:
        if not os.path.isfile(path):
            raise UserError(f"{path}: config file not found")
        try:
            loaded = CfgNode.load_yaml_with_base(path, allow_unsafe=False)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            loc = f"{path}:{mark.line + 1}" if mark else path
            raise UserError(f"{loc}: malformed YAML ({getattr(e, 'problem', e)})") from None
        except (OSError, KeyError) as e:
            raise UserError(f"{path}: cannot load config ({e})") from None
        except RecursionError:
            raise UserError(f"{path}: _BASE_ files include each other in a loop") from None
        except (TypeError, AssertionError, AttributeError) as e:
            # fvcore's loader on an empty, scalar or non-mapping file (or _BASE_)
            raise UserError(f"{path}: empty, or not a mapping of config keys (this file or a "
                            f"_BASE_ it names; {type(e).__name__})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: top level must be a mapping of config keys")
        try:
            flat = dict(_flatten(loaded))
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        keep, ign = _classify(flat, ours, path)
        ignored += ign
        for k, v in keep.items():
            _set(cfg, k, v, path)
            origin[k] = path
    opts = list(opts or [])
    if len(opts) % 2:
        raise UserError(f"command line: opts must be KEY VALUE pairs, got odd count: {opts}")
    flat = dict(zip(opts[0::2], opts[1::2]))
    keep, ign = _classify(flat, ours, None)
    ignored += ign
    for k, v in keep.items():
        _set(cfg, k, v, None)
        origin[k] = None
    if ignored:
        warnings.warn(
            "PySlowFast config keys not used by slowfast-dist (ignored): " + ", ".join(sorted(set(ignored))),
            stacklevel=2,
        )
    values = dict(_flatten(cfg))
    for key, only in ONLY_DEFAULT.items():
        if values[key] != only:
            raise UserError(f"{key} {values[key]!r}: not supported by slowfast-dist (only {only!r})")
    _check_solver(cfg, origin, path)
    # Stored outside the key tree so dumps stay loadable; read with cfg_ignored_keys().
    object.__setattr__(cfg, _IGNORED_ATTR, tuple(sorted(set(ignored))))
    cfg.freeze()
    return cfg


def cfg_ignored_keys(cfg: CfgNode) -> tuple[str, ...]:
    """PySlowFast keys present in the loaded YAML/opts that this project ignores."""
    return getattr(cfg, _IGNORED_ATTR, ())


def dump_config(cfg: CfgNode, path: str) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename in the same dir)."""
    from slowfast_dist.files import atomic_write

    atomic_write(path, lambda f: f.write(cfg.dump().encode()), prefix=".cfg-", fsync=False)
