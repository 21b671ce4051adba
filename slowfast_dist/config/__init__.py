"""Config: PySlowFast-keyed defaults, YAML + opts loading with clear errors, dump.

Keys are classified in three groups: ours (in defaults.py), PySlowFast's but unused here (listed
in pyslowfast_keys.txt: dropped, warned once, kept on the cfg for `model-info`), and unknown
(UserError naming the key, where it came from and the closest valid key).
"""
from __future__ import annotations

import ast
import difflib
import os
from functools import lru_cache

import yaml
from fvcore.common.config import CfgNode

from slowfast_dist.errors import UserError, where
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


_BASE_KEY = "_BASE_"
_MAP_TAG = "tag:yaml.org,2002:map"


def _node_tree(node, file, loader, prefix="") -> dict:
    """{key: (file, line, subtree or None)} of a YAML mapping node, keys as safe_load makes them.
    A key written twice in one mapping is a UserError: YAML keeps the last without a word."""
    first = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` brings keys that the mapping's own may override
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, str) and key in first:
            raise UserError(f"{file}:{line}: config key {prefix}{key} given twice in one mapping "
                            f"(first at line {first[key]}; YAML would keep this one silently)")
        if isinstance(key, str):
            first[key] = line
    loader.flatten_mapping(node)  # `<<: *anchor` merge keys, applied as safe_load applies them
    tree = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        sub = (_node_tree(value_node, file, loader, f"{prefix}{key}.")
               if isinstance(value_node, yaml.MappingNode) and value_node.tag == _MAP_TAG else None)
        tree[key] = (file, key_node.start_mark.line + 1, sub)
    return tree


def _merge_tree(a: dict, b: dict) -> None:
    """Merge location tree `a` into `b` by fvcore's rule for the values (a's keys win)."""
    for k, (file, line, sub) in a.items():
        if sub is not None and k in b and b[k][2] is not None:
            _merge_tree(sub, b[k][2])
        else:
            b[k] = (file, line, sub)


def _base_path(file: str, base: str) -> str | None:
    """The file fvcore's loader opens for `_BASE_: base` in `file` (None: a URL, not located)."""
    if base.startswith("~"):
        base = os.path.expanduser(base)
    if base.startswith(("https://", "http://")):
        return None
    return base if base.startswith("/") else os.path.join(os.path.dirname(file), base)


def _file_tree(file: str, chain: tuple = ()) -> dict:
    """Location tree of `file` merged over its `_BASE_` files, in the order fvcore merges them."""
    if file is None or file in chain:  # fvcore has refused a loop before this runs
        return {}
    with open(file) as f:
        root = yaml.compose(f, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return {}
    loader = yaml.SafeLoader("")
    tree = _node_tree(root, file, loader)
    if _BASE_KEY not in tree:
        return tree
    del tree[_BASE_KEY]
    bases = [loader.construct_object(v, deep=True) for k, v in root.value
             if isinstance(k, yaml.ScalarNode) and k.value == _BASE_KEY][-1]
    merged: dict = {}
    for base in bases if isinstance(bases, list) else [bases]:
        if isinstance(base, str):
            _merge_tree(_file_tree(_base_path(file, base), chain + (file,)), merged)
    _merge_tree(tree, merged)
    return merged


def _tree_locations(tree: dict, prefix: str = ""):
    for k, (file, line, sub) in tree.items():
        if not isinstance(k, str):
            raise UserError(f"{file}:{line}: config key {prefix}{k!r} is not a name (quote it, or "
                            "check the file)")
        if sub is None:
            yield prefix + k, (file, line)
        else:
            yield from _tree_locations(sub, prefix + k + ".")


def _key_locations(path: str) -> dict:
    """{full.key: (file, line)}: where the loaded value of each key was written, read from the
    YAML parser's nodes, so that a key set in a `_BASE_` file is reported there, and a leaf name
    used in several sections (TRAIN.BATCH_SIZE, TEST.BATCH_SIZE) at its own line."""
    try:
        tree = _file_tree(path)
    except (OSError, yaml.YAMLError, TypeError, ValueError, RecursionError):
        # fvcore read these files a moment ago; a file changed since is reported without a line
        return {}
    return dict(_tree_locations(tree))


def _where(loc) -> str:
    """'file:line', 'file' or 'command line' for a location: (file, line or None), or None."""
    return "command line" if loc is None else where(*loc)


def _classify(flat: dict, ours: set, locate) -> tuple[dict, list]:
    """(ours, ignored) of `flat`; UserError at `locate(key)` for the first unknown key."""
    keep, ignored = {}, []
    for key, val in flat.items():
        if key in ours:
            keep[key] = val
        elif key in pyslowfast_keys() or any(key.startswith(p + ".") for p in pyslowfast_keys()):
            ignored.append(key)
        else:
            close = difflib.get_close_matches(key, sorted(ours), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else ""
            if any(k.startswith(key + ".") for k in ours):
                hint = f"; {key} is a section: give its keys ({key}.NAME), not a value"
            if key.startswith("-") and locate(key) is None:
                # argparse leaves an option given after the overrides among them
                hint = "; options go before the KEY VALUE overrides (and before --opts)"
            raise UserError(f"{_where(locate(key))}: unknown config key {key}{hint}")
    return keep, ignored


def _set(cfg: CfgNode, key: str, val, loc):
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
            f"{_where(loc)}: {key} must be {type(old).__name__} (default {old!r}), got {val!r}"
        )
    node[parts[-1]] = val


def _check_solver(cfg, origin: dict, path) -> None:
    """UserError for the first SOLVER value the LR schedule would use wrongly, located where
    the value came from (`origin`: key -> (file, line), or None for the command line)."""
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
        # (no line: the key is not in it), or the command line if the policy came from there
        if key in origin:
            loc = origin[key]
        else:
            policy = origin.get("SOLVER.LR_POLICY", None if path is None else (path, None))
            loc = None if policy is None else (policy[0], None)
        hint = ("; to cut a run short, give SOLVER.MAX_EPOCH on the command line"
                if against_max_epoch and loc is not None else "")
        raise UserError(f"{_where(loc)}: {msg}{hint}")


def _numbers(v, n=None) -> bool:
    return (isinstance(v, (list, tuple)) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _pathways(cfg) -> int:
    return 2 if cfg.MODEL.ARCH == "slowfast" else 1


# (key, the rule it breaks when this is true, what it must be): checked at load so that a value
# the model or the loader cannot use is one line naming where it was set, not a traceback later
_VALUE_RULES = (
    ("MODEL.NUM_CLASSES", lambda c, v: v < 1, "at least 1"),
    ("DATA.NUM_FRAMES", lambda c, v: v < 1, "at least 1"),
    ("DATA.SAMPLING_RATE", lambda c, v: v < 1, "at least 1"),
    ("DATA.TRAIN_CROP_SIZE", lambda c, v: v < 1, "at least 1"),
    ("DATA.TEST_CROP_SIZE", lambda c, v: v < 1, "at least 1"),
    # the order of the two (crop <= min <= max) the training set checks, where it uses them
    ("DATA.TRAIN_JITTER_SCALES", lambda c, v: not _numbers(v, 2), "two numbers [min, max]"),
    ("DATA.MEAN", lambda c, v: not _numbers(v, 3), "three numbers (R, G, B)"),
    ("DATA.STD", lambda c, v: not _numbers(v, 3) or min(v) <= 0, "three positive numbers"),
    ("DATA.INPUT_CHANNEL_NUM", lambda c, v: not _numbers(v) or len(v) < _pathways(c) or min(v) < 1,
     "a channel count for each pathway (2 for MODEL.ARCH slowfast, else 1)"),
    ("SLOWFAST.ALPHA", lambda c, v: v < 1, "at least 1"),
    ("DATA.NUM_FRAMES", lambda c, v: _pathways(c) == 2 and v % c.SLOWFAST.ALPHA != 0,
     lambda c: f"a multiple of SLOWFAST.ALPHA {c.SLOWFAST.ALPHA} (the slow pathway takes every "
               "ALPHA-th frame)"),
    ("TRAIN.BATCH_SIZE", lambda c, v: v < 1, "at least 1"),
    ("TEST.BATCH_SIZE", lambda c, v: v < 1, "at least 1"),
    ("TRAIN.GRAD_ACCUM_STEPS", lambda c, v: v < 1, "at least 1"),
    ("TRAIN.CHECKPOINT_KEEP", lambda c, v: v < 0, "0 (keep all) or more"),
    ("TRAIN.CHECKPOINT_TYPE", lambda c, v: v not in ("pytorch", "caffe2"), "pytorch or caffe2"),
    ("TEST.CHECKPOINT_TYPE", lambda c, v: v not in ("pytorch", "caffe2"), "pytorch or caffe2"),
    ("SOLVER.MOMENTUM", lambda c, v: not 0 <= v < 1, "in [0, 1)"),
    ("DATA_LOADER.NUM_WORKERS", lambda c, v: v < 0, "0 or more"),
    ("DATA_LOADER.TIMEOUT_S", lambda c, v: v < 0, "0 (wait for ever) or more"),
    ("DIST.TIMEOUT_S", lambda c, v: v <= 0, "positive"),
    ("PROFILE.WAIT", lambda c, v: v < 0, "0 or more"),
    ("PROFILE.WARMUP", lambda c, v: v < 0, "0 or more"),
    ("PROFILE.ACTIVE", lambda c, v: v < 1, "at least 1"),
)  # MULTIGRID.* values: multigrid.MultigridSpec checks them where they are read


def _check_values(cfg, origin: dict, path) -> None:
    """UserError for the first value in _VALUE_RULES that breaks its rule, located where it was
    set (a default is reported without a place: another key it depends on was changed)."""
    for key, broken, want in _VALUE_RULES:
        section, name = key.split(".")
        value = cfg[section][name]
        if broken(cfg, value):
            loc = origin.get(key, None if path is None else (path, None))
            want = want(cfg) if callable(want) else want
            raise UserError(f"{_where(loc)}: {key} {value!r}: must be {want}")


def load_config(path: str | None = None, opts: list[str] | None = None) -> CfgNode:
    """Defaults, then the YAML at `path` (with `_BASE_`), then `KEY VALUE` opts; frozen."""
    cfg = get_cfg()
    ours = set(_our_keys(cfg))
    ignored: list[str] = []
    origin: dict = {}  # key -> (file, line) that set it, or None for the command line
    if path is not None:
        if not os.path.isfile(path):
            raise UserError(f"{path}: config file not found")
        try:
            loaded = CfgNode.load_yaml_with_base(path, allow_unsafe=False)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            # the parser names the file it was reading: this one or a _BASE_ file
            name = mark.name if mark and os.path.isfile(mark.name) else path
            loc = where(name, mark.line + 1 if mark else None)
            raise UserError(f"{loc}: malformed YAML ({getattr(e, 'problem', e)})") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                            f"{e.start}; this file or a _BASE_ it names): save it as UTF-8") from None
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
        locs = _key_locations(path)  # also refuses a key that is not a name, at its line

        def locate(key):
            return locs.get(key, (path, None))

        try:
            flat = dict(_flatten(loaded))
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        keep, ign = _classify(flat, ours, locate)
        ignored += ign
        for k, v in keep.items():
            _set(cfg, k, v, locate(k))
            origin[k] = locate(k)
    opts = list(opts or [])
    if len(opts) % 2:
        raise UserError(f"command line: opts must be KEY VALUE pairs, got odd count: {opts}")
    flat = dict(zip(opts[0::2], opts[1::2]))
    keep, ign = _classify(flat, ours, lambda key: None)
    ignored += ign
    for k, v in keep.items():
        _set(cfg, k, v, None)
        origin[k] = None
    values = dict(_flatten(cfg))
    for key, only in ONLY_DEFAULT.items():
        if values[key] != only:
            raise UserError(f"{key} {values[key]!r}: not supported by slowfast-dist (only {only!r})")
    _check_solver(cfg, origin, path)
    _check_values(cfg, origin, path)
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
