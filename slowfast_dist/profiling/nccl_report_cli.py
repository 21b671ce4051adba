"""`slowfast-dist nccl-report LOG... [--json]` (no torch import)."""
import json


def add_arguments(parser):
    parser.add_argument("logs", nargs="+", metavar="LOG", help="per-rank logs with NCCL INFO lines")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    from slowfast_dist.profiling.nccl_report import format_text, report
    rep = report(args.logs)
    print(json.dumps(rep, indent=1) if args.json else format_text(rep))
    return 0
