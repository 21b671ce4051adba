"""`slowfast-dist scaling-model CONFIG.yaml [--json] [--no-persistent-loader] [--png PATH]`."""
import json

REQUIRED = ("gpus_per_node", "batch_per_gpu", "labels", "epochs", "grad_mb", "bucket_mb", "compute_s",
            "backward_fraction", "intra_bw_gbs", "inter_bw_gbs", "alpha_hop_s", "loader_step_s",
            "epoch_stall_s", "persistent_stall_s", "workers_baseline", "workers_persistent", "nodes")


def add_arguments(parser):
    parser.add_argument("config", help="YAML with the model's inputs (configs/scaling/abci_v100.yaml)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-persistent-loader", action="store_true",
                        help="re-create loader workers each epoch (the study's baseline, 8 workers)")
    parser.add_argument("--png", help="write a plot of predicted run time for 16-512 GPUs")


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
    missing = [k for k in REQUIRED if k not in p]
    if missing:
        raise UserError(f"{path}: missing key(s): {', '.join(missing)}")
    for k in ("workers_baseline", "workers_persistent"):
        if p[k] not in p["loader_step_s"] or p[k] not in p["epoch_stall_s"]:
            raise UserError(f"{path}: {k}={p[k]} has no entry in loader_step_s/epoch_stall_s")
    return p


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> int:
    from slowfast_dist.profiling.scaling_model import predictions, table
    p = load_params(args.config)
    rows = table(p, persistent=not args.no_persistent_loader)
    pred = predictions(p)
    if args.png:
        _png(pred, args.png)
    if args.json:
        print(json.dumps({"rows": rows, "predictions": pred}, indent=1))
        return 0
    print(f"{'nodes':>5} {'gpus':>5} {'step s':>7} {'run min':>8} {'compute':>8} {'comm':>6} {'speedup':>8}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['gpus']:>5} {r['step_s']:>7.3f} {r['run_time_s'] / 60:>8.1f} "
              f"{r['compute_share']:>8.1%} {r['comm_share']:>6.1%} {r['speedup']:>8.1f}")
    print("\npredicted run time (min), persistent loader, 6 workers:")
    gp = [r["gpus"] for r in next(iter(pred.values()))]
    print(f"{'scenario':>13} " + " ".join(f"{g:>6}" for g in gp))
    for name, rs in pred.items():
        print(f"{name:>13} " + " ".join(f"{r['run_time_s'] / 60:>6.1f}" for r in rs))
    return 0
