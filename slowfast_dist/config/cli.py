"""`slowfast-dist config [--cfg X.yaml] [KEY VALUE ...] [--keys]`: the config a run would use,
printed as YAML (defaults, then the file with its `_BASE_`s, then the overrides), or every key
the loader accepts with its default and whose it is."""

from __future__ import annotations

import sys

from slowfast_dist.cli import add_overrides


def add_arguments(parser) -> None:
    parser.add_argument("--cfg", "--cfg_file", dest="cfg",
                        help="YAML config (PySlowFast files accepted); without it, the defaults")
    parser.add_argument("--keys", action="store_true",
                        help="list every valid key with its default, marked PySlowFast (its "
                             "name and default), slowfast-dist (our extension) or ignored "
                             "(PySlowFast's, accepted and not used)")
    add_overrides(parser)


def _shown(value) -> str:
    """A default as it is typed after its key on the command line ('' for the empty string)."""
    if isinstance(value, str) and value and value.strip() == value:
        return value
    return repr(value)


def key_lines() -> list[str]:
    """`KEY DEFAULT  # whose` for every key `load_config` uses, then `KEY  # PySlowFast, ignored`
    for those it accepts and ignores; each group sorted by key."""
    from slowfast_dist.config import ONLY_DEFAULT, _flatten, get_cfg, pyslowfast_keys

    theirs = pyslowfast_keys()
    defaults = dict(_flatten(get_cfg()))
    lines = ["# KEY DEFAULT  # PySlowFast (its key and default) or slowfast-dist (our extension)"]
    for key in sorted(defaults):
        whose = "PySlowFast" if key in theirs else "slowfast-dist"
        if key in ONLY_DEFAULT:
            whose += ", only this value"  # others are refused, not ignored
        lines.append(f"{key} {_shown(defaults[key])}  # {whose}")
    # they load with a warning naming them; no default is kept for them here
    lines.append("# PySlowFast keys accepted and ignored")
    lines += [f"{key}  # PySlowFast, ignored" for key in sorted(theirs - defaults.keys())]
    return lines


def run(args) -> int:
    from slowfast_dist.errors import UserError

    if args.keys:
        if args.cfg is not None or args.opts:
            raise UserError("--keys lists the defaults: give it without --cfg and KEY VALUE")
        print("\n".join(key_lines()))
        return 0
    from slowfast_dist.config import load_config

    sys.stdout.write(load_config(args.cfg, list(args.opts)).dump())
    return 0
