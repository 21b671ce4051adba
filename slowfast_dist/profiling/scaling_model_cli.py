"""`slowfast-dist scaling-model CONFIG.yaml [--json] [--no-persistent-loader] [--png PATH]
[--bucket-mb MIB] [--comm-hook none|bf16|fp16] [--gradient-as-bucket-view]`."""
import difflib
import json

REQUIRED = ("gpus_per_node", "batch_per_gpu", "labels", "epochs", "grad_mb", "compute_s",
            "backward_fraction", "intra_bw_gbs", "inter_bw_gbs", "alpha_hop_s", "loader_step_s",
            "epoch_stall_s", "persistent_stall_s", "workers_baseline", "workers_persistent", "nodes",
            "DDP", "nccl_call_base_s", "nccl_call_hop_s", "hbm_bw_gbs")
DDP_KEYS = ("BUCKET_CAP_MB", "COMM_HOOK", "GRADIENT_AS_BUCKET_VIEW")
COMM_HOOKS = ("none", "bf16", "fp16")
OPTION_NODES = (32, 64, 128)  # the node counts of the study's Table 4


def add_arguments(parser):
    parser.add_argument("config", help="YAML with the model's inputs (configs/scaling/abci_v100.yaml)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-persistent-loader", action="store_true",
                        help="re-create loader workers each epoch (the study's baseline, 8 workers)")
    parser.add_argument("--png", help="write a plot of predicted run time for 16-512 GPUs")
    ddp = parser.add_argument_group(
        "DDP options", "the trainer's DDP.* config keys; the YAML's DDP block holds the study's setting "
        "(25 MiB, none, false) and these flags override it. They set the first table's options and add a "
        "row to the DDP options tables, which always compare the study's setting, the bf16 and fp16 "
        "hooks, and 50 and 100 MiB buckets at 32, 64 and 128 nodes")
    ddp.add_argument("--bucket-mb", type=float, metavar="MIB",
                     help="DDP.BUCKET_CAP_MB: bucket size in MiB of fp32 gradient; sets the number of "
                          "allreduce calls (NCCL latency each) and, with overlap, the exposed last bucket")
    ddp.add_argument("--comm-hook", choices=COMM_HOOKS,
                     help="DDP.COMM_HOOK: bf16/fp16 (torch's *_compress_hook) halve the bytes of every "
                          "allreduce and add a cast of 16 B of HBM traffic per gradient element")
    ddp.add_argument("--gradient-as-bucket-view", action="store_true", default=None,
                     help="DDP.GRADIENT_AS_BUCKET_VIEW: saves one gradient-sized buffer per GPU; "
                          "its time effect (< 1 ms a step) is modelled as 0")


def _check_ddp(path, block):
    from slowfast_dist.errors import UserError
    if not isinstance(block, dict):
        raise UserError(f"{path}: DDP: expected a mapping with {', '.join(DDP_KEYS)}")
    for key in block:
        if key not in DDP_KEYS:
            close = difflib.get_close_matches(str(key), DDP_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{path}: DDP.{key}: unknown key{hint}")
    missing = [k for k in DDP_KEYS if k not in block]
    if missing:
        raise UserError(f"{path}: DDP: missing key(s): {', '.join(missing)}")
    cap = block["BUCKET_CAP_MB"]
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0:
        raise UserError(f"{path}: DDP.BUCKET_CAP_MB: expected a positive number of MiB, got {cap!r}")
    if block["COMM_HOOK"] not in COMM_HOOKS:
        raise UserError(f"{path}: DDP.COMM_HOOK: {block['COMM_HOOK']!r} is not one of "
                        f"{', '.join(COMM_HOOKS)}")
    if not isinstance(block["GRADIENT_AS_BUCKET_VIEW"], bool):
        raise UserError(f"{path}: DDP.GRADIENT_AS_BUCKET_VIEW: expected true or false")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _by_workers(v) -> bool:
    return (isinstance(v, dict) and bool(v)
            and all(isinstance(k, int) and k >= 0 and _number(x) and x >= 0 for k, x in v.items()))


# key -> (check, what it must be): a value the model cannot use is one line naming it, not a
# ZeroDivisionError (or a silently negative bandwidth) further on
_VALUES = {
    **{k: (_count, "a positive integer")
       for k in ("gpus_per_node", "batch_per_gpu", "labels", "epochs")},
    **{k: (lambda v: _number(v) and v > 0, "a positive number")
       for k in ("grad_mb", "compute_s", "intra_bw_gbs", "inter_bw_gbs", "hbm_bw_gbs")},
    **{k: (lambda v: _number(v) and v >= 0, "a number >= 0")
       for k in ("alpha_hop_s", "persistent_stall_s", "nccl_call_base_s", "nccl_call_hop_s")},
    "backward_fraction": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "workers_baseline": (lambda v: _count(v) or v == 0, "an integer >= 0"),
    "workers_persistent": (lambda v: _count(v) or v == 0, "an integer >= 0"),
    "nodes": (lambda v: isinstance(v, list) and bool(v) and all(map(_count, v)),
              "a list of positive node counts"),
    "loader_step_s": (_by_workers, "a mapping of worker count to seconds >= 0"),
    "epoch_stall_s": (_by_workers, "a mapping of worker count to seconds >= 0"),
}


def load_params(path):
    import yaml
    from slowfast_dist.errors import UserError
    try:
        with open(path) as f:
            p = yaml.safe_load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}")
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {str(e).splitlines()[0]}")
    if not isinstance(p, dict):
        raise UserError(f"{path}: expected a mapping")
    for key in p:
        if key not in REQUIRED and key != "study":
            close = difflib.get_close_matches(str(key), REQUIRED, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{path}: {key}: unknown key{hint}")
    missing = [k for k in REQUIRED if k not in p]
    if missing:
        raise UserError(f"{path}: missing key(s): {', '.join(missing)}")
    for key, (ok, want) in _VALUES.items():
        if not ok(p[key]):
            raise UserError(f"{path}: {key}: expected {want}, got {p[key]!r}")
    study = p.get("study", {})
    if not isinstance(study, dict) or any(
            k not in ("run_min", "comm_share") or not isinstance(v, dict)
            or not all(_count(n) and _number(x) for n, x in v.items()) for k, v in study.items()):
        raise UserError(f"{path}: study: expected run_min and/or comm_share, each a mapping of "
                        f"node count to a number, got {study!r}")
    for k in ("workers_baseline", "workers_persistent"):
        if p[k] not in p["loader_step_s"] or p[k] not in p["epoch_stall_s"]:
            raise UserError(f"{path}: {k}={p[k]} has no entry in loader_step_s/epoch_stall_s")
    _check_ddp(path, p["DDP"])
    return p


def given_options(p, args):
    """The study's DDP options with the flags applied; None when no flag was given."""
    import dataclasses
    from slowfast_dist.errors import UserError
    from slowfast_dist.profiling.scaling_model import study_ddp
    if args.bucket_mb is None and args.comm_hook is None and args.gradient_as_bucket_view is None:
        return None
    if args.bucket_mb is not None and not args.bucket_mb > 0:
        raise UserError(f"--bucket-mb: expected a positive number of MiB, got {args.bucket_mb:g}")
    changes = {"bucket_cap_mb": args.bucket_mb, "comm_hook": args.comm_hook,
               "gradient_as_bucket_view": args.gradient_as_bucket_view}
    return dataclasses.replace(study_ddp(p), **{k: v for k, v in changes.items() if v is not None})


def _check_png(path):
    """Before any work: matplotlib would add `.png` to a folder's name, or fail on a suffix."""
    import os

    from slowfast_dist.errors import UserError
    if os.path.isdir(path) or not path.lower().endswith(".png"):
        raise UserError(f"--png {path}: expected a file name ending in .png")
    if not os.path.isdir(os.path.dirname(path) or "."):
        raise UserError(f"--png {path}: folder {os.path.dirname(path)} not found")


def _png(pred, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in pred.items():
        ax.plot([r["gpus"] for r in rows], [r["run_time_s"] / 60 for r in rows], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs (4 per node)")
    ax.set_ylabel("run time of 5 epochs (min)")
    ax.set_title("SlowFast R50 AVA on ABCI V100: analytic model")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:
        from slowfast_dist.files import user_error_for
        raise user_error_for(err, path) or err
    finally:
        plt.close(fig)


def _study_row(study, nodes):
    run, comm = study.get("run_min", {}), study.get("comm_share", {})
    return [{"nodes": n, "run_min": run.get(n), "comm_share": comm.get(n)} for n in nodes]


def _cell(value, spec):
    return f"{'-':>7}" if value is None else format(value, spec)


def _print_options(title, tables, study):
    print(f"\n{title}")
    print(f"{'':>24}" + "".join(f"{f'{n} nodes':>22}" for n in OPTION_NODES))
    print(f"{'DDP options':<24}" + f"{'step s':>8}{'comm':>7}{'min':>7}" * len(OPTION_NODES)
          + f"{'wire MB':>9}{'calls':>6}")
    if study:
        cells = "".join(f"{'-':>8}" + _cell(s["comm_share"], ">7.1%") + _cell(s["run_min"], ">7.1f")
                        for s in study)
        print(f"{'study (Fig. 3, Table 4)':<24}{cells}")
    for label, rows in tables.items():
        cells = "".join(f"{r['step_s']:>8.3f}{r['exposed_share']:>7.1%}{r['run_time_s'] / 60:>7.1f}"
                        for r in rows)
        print(f"{label:<24}{cells}{rows[0]['wire_mb']:>9.1f}{rows[0]['calls']:>6}")


def run(args) -> int:
    from slowfast_dist.profiling.scaling_model import (ddp_options_table, hook_cast_s, option_sets,
                                                       predictions, study_ddp, table, view_copy_bound_s)
    p = load_params(args.config)
    if args.png:
        _check_png(args.png)
    given = given_options(p, args)
    ddp = given or study_ddp(p)
    rows = table(p, persistent=not args.no_persistent_loader, ddp=ddp)
    pred = predictions(p)
    sets = option_sets(p, given)
    options = {"no_overlap": ddp_options_table(p, sets, OPTION_NODES, overlap=False),
               "overlap": ddp_options_table(p, sets, OPTION_NODES, overlap=True)}
    study = _study_row(p["study"], OPTION_NODES) if "study" in p else []
    view = {"memory_saved_mb_per_gpu": p["grad_mb"], "time_modelled_s": 0.0,
            "time_saved_at_most_s": round(view_copy_bound_s(p), 5)}
    hook = {"wire_bytes_factor": 0.5, "cast_s": round(hook_cast_s(p), 5)}
    if args.png:
        _png(pred, args.png)
    if args.json:
        print(json.dumps({"ddp": {"BUCKET_CAP_MB": ddp.bucket_cap_mb, "COMM_HOOK": ddp.comm_hook,
                                  "GRADIENT_AS_BUCKET_VIEW": ddp.gradient_as_bucket_view},
                          "rows": rows, "predictions": pred, "ddp_options": options, "study": study,
                          "comm_hook": hook, "gradient_as_bucket_view": view}, indent=1))
        return 0
    print(f"DDP: BUCKET_CAP_MB {ddp.bucket_cap_mb:g}, COMM_HOOK {ddp.comm_hook}, "
          f"GRADIENT_AS_BUCKET_VIEW {ddp.gradient_as_bucket_view}")
    print(f"{'nodes':>5} {'gpus':>5} {'step s':>7} {'run min':>8} {'compute':>8} {'comm':>6} {'speedup':>8}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['gpus']:>5} {r['step_s']:>7.3f} {r['run_time_s'] / 60:>8.1f} "
              f"{r['compute_share']:>8.1%} {r['comm_share']:>6.1%} {r['speedup']:>8.1f}")
    print("\npredicted run time (min), persistent loader, 6 workers:")
    gp = [r["gpus"] for r in next(iter(pred.values()))]
    print(f"{'scenario':>13} " + " ".join(f"{g:>6}" for g in gp))
    for name, rs in pred.items():
        print(f"{name:>13} " + " ".join(f"{r['run_time_s'] / 60:>6.1f}" for r in rs))
    _print_options("DDP options, communication exposed as in the study's profiles (the fit)",
                   options["no_overlap"], study)
    _print_options("DDP options, allreduce overlapped with backward (last bucket exposed)",
                   options["overlap"], [])
    print(f"""
persistent loader, {p['workers_persistent']} workers. comm = exposed communication / (compute + cast + exposed), Table 4's
split when nothing overlaps. wire MB = bytes a step's allreduces carry; calls = buckets a step.
Each call adds NCCL's ring latency, {p['nccl_call_base_s'] * 1e6:g} us + {p['nccl_call_hop_s'] * 1e6:g} us a ring step. With overlap
the last bucket (taken full) waits for the end of backward, so big buckets expose more.
bf16/fp16 hook: half the wire bytes, plus {hook_cast_s(p) * 1e3:.2f} ms of casts a step. The fitted latency
(congestion, stragglers) is taken as independent of bytes, so a hook saves the bandwidth term only.
bf16 equals fp16 here (same bytes). Pre-Ampere GPUs such as V100 have no bf16 units, and bf16
allreduce needs NCCL >= 2.10.
GRADIENT_AS_BUCKET_VIEW: saves {p['grad_mb']:g} MB of GPU memory per GPU (one gradient copy); time
modelled as 0 (the copies it removes take at most {view['time_saved_at_most_s'] * 1e3:.1f} ms a step).""")
    return 0
