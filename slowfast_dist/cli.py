"""`slowfast-dist COMMAND ...`: one entry point, each command imported only when it runs.

Every command lives in its own module that defines `add_arguments(parser)` and `run(args) -> int`.
Those modules import nothing heavy at module level, so `slowfast-dist ava-eval` never imports
torch and `slowfast-dist --help` is instant.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("slowfast_dist.train.cli", "train a model (any launcher: torchrun, mpirun, SLURM, PBS, SGE)"),
    "test": ("slowfast_dist.train.test_cli", "run distributed inference and score it"),
    "ava-eval": ("slowfast_dist.eval.cli", "score AVA detections exactly as the official evaluator"),
    "make-synthetic": ("slowfast_dist.data.synthetic_cli", "write a small synthetic AVA-format data set"),
    "prepare-ava": ("slowfast_dist.data.prepare_ava_cli", "cut, downscale and extract raw AVA movies; check them against the annotations"),
    "convert-checkpoint": ("slowfast_dist.models.convert_cli", "convert a PySlowFast Caffe2 .pkl checkpoint to .pyth"),
    "model-info": ("slowfast_dist.models.info_cli", "parameters, GFLOPs and state-dict layout of a config"),
    "config": ("slowfast_dist.config.cli",
               "print the resolved config as YAML, or every valid key and default (--keys)"),
    "nccl-report": ("slowfast_dist.profiling.nccl_report_cli", "read NCCL INFO logs: rings, hops, route problems"),
    "scaling-model": ("slowfast_dist.profiling.scaling_model_cli", "predict step and run time at N nodes"),
}


OVERRIDES_HELP = ("config overrides, applied after the YAML, e.g. SOLVER.BASE_LR 0.05 "
                  "(`slowfast-dist config --keys` lists the keys)")


def add_overrides(parser, pyslowfast_opts: bool = False) -> None:
    """The trailing `[KEY VALUE ...]` config overrides, shown and parsed alike by every command
    that loads a config; with `pyslowfast_opts`, also PySlowFast's `--opts KEY VALUE ...`."""
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help=OVERRIDES_HELP)
    if pyslowfast_opts:
        parser.add_argument("--opts", dest="more_opts", nargs=argparse.REMAINDER, default=[],
                            help="config overrides, PySlowFast's spelling (takes the rest of the "
                                 "line)")
    # `--cfg X KEY VALUE --json KEY VALUE`: plain parse_args would take the overrides before an
    # option and then refuse the ones after it as unrecognised.
    parser.parse_args = parser.parse_intermixed_args


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already names its default or
    there is nothing to name (no default, an empty list, an on/off flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is argparse.SUPPRESS
                or action.nargs == 0 or default == [] or default == ()):
            return text
        return text + " (default: %(default)s)"


def command_parser(name: str):
    """(module, parser) of a command; imports the command's module, which is light."""
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"slowfast-dist {name}", description=help_,
                                     formatter_class=DefaultsHelpFormatter)
    module.add_arguments(parser)
    return module, parser


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS)) + 2  # convert-checkpoint ran into its help at 16
    lines = [f"  {name:<{width}}{help_}" for name, (_, help_) in COMMANDS.items()]
    return argparse.ArgumentParser(
        prog="slowfast-dist",
        usage="slowfast-dist COMMAND [ARGS...]",
        description="Distributed SlowFast for AVA.\n\ncommands:\n" + "\n".join(lines),
        epilog="Run `slowfast-dist COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from slowfast_dist import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"slowfast-dist: error: unknown command {name!r}{hint} "
              f"(commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, parser = command_parser(name)
    args = parser.parse_args(argv[1:])

    from slowfast_dist.errors import UserError

    try:
        return int(module.run(args) or 0)
    except UserError as err:
        from slowfast_dist.dist.failure import say_once

        say_once(f"slowfast-dist {name}: error: {err}", err.exit_code)  # once, not per rank
        return err.exit_code
    except KeyboardInterrupt:
        print(f"slowfast-dist {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
