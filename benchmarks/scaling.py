"""Weak scaling of the real trainer: 1, 2, ... N processes at a fixed per-process batch.

Each run is `torchrun --standalone --nproc_per_node n slowfast-dist train` on the same synthetic
set (gloo on CPU, nccl where CUDA is present), timed by the trainer's own always-on timers
(`profile_summary.json`). Reports per process count: step time, samples/s, speed-up, efficiency
and the compute / communication / data split (the form of the study's Table 4), as JSON and a
PNG in the form of its Fig. 3.

    .venv/bin/python benchmarks/scaling.py --max-procs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    from slowfast_dist.profiling import host

    return f"CPU ({host.describe_cpu()})"


def run_trainer(nprocs: int, data: Path, out: Path, batch: int, epochs: int) -> dict:
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(nprocs),
           "-m", "slowfast_dist.cli", "train", "--cfg", str(ROOT / "configs/demo.yaml"),
           "AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
           "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out),
           "TRAIN.BATCH_SIZE", str(batch), "NUM_GPUS", "1", "SOLVER.MAX_EPOCH", str(epochs),
           "TRAIN.EVAL_PERIOD", "0", "TRAIN.CHECKPOINT_PERIOD", "1000", "TENSORBOARD.ENABLE",
           "False", "DATA_LOADER.NUM_WORKERS", "1",
           # the comm split needs the per-bucket timing hook (off by default in training)
           "PROFILE.COMM_PROBE", "True"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{nprocs} process(es) failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "profile_summary.json").read_text())
    mean = summary["mean"]
    return {"processes": nprocs, "per_process_batch": batch, "global_batch": batch * nprocs,
            "step_s": mean["step_s"], "samples_per_s": batch * nprocs / mean["step_s"],
            "data_wait_s": mean["data_wait_s"], "compute_s": mean["compute_s"],
            "comm_s": mean["comm_s"], "wait_for_slowest_s": mean["wait_for_slowest_s"],
            "transfer_s": mean["transfer_s"], **summary["split"]}


def median_row(runs: list) -> dict:
    """The median of every figure over the rounds, with the speed-up's range (each round's own
    1-process run is its reference)."""
    row = {k: statistics.median(r[k] for r in runs) for k, v in runs[0].items()
           if isinstance(v, (int, float)) and k != "round"}
    row["speedup_min_max"] = [min(r["speedup"] for r in runs), max(r["speedup"] for r in runs)]
    row["efficiency"] = row["speedup"] / row["processes"]
    return row


def plot(rows: list, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["processes"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [r["speedup"] for r in rows], "o-", label="measured")
    a.plot(n, n, "--", color="grey", label="linear")
    a.set(xlabel="processes", ylabel="speed-up (samples/s vs 1 process)", title="Speed-up")
    a.legend()
    bottom = [0.0] * len(rows)
    for key, label in (("compute_s", "compute"), ("comm_s", "communication"),
                       ("data_wait_s", "data wait")):
        vals = [r[key] for r in rows]
        b.bar([str(x) for x in n], vals, bottom=bottom, label=label)
        bottom = [x + y for x, y in zip(bottom, vals)]
    b.set(xlabel="processes", ylabel="seconds per step", title="Where a step goes")
    b.legend()
    fig.suptitle(f"slowfast-dist weak scaling, demo model, {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-procs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="clips per process per step")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of 1..N processes, interleaved; rows give the medians")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/scaling_cpu"))
    args = ap.parse_args()

    from slowfast_dist.data.synthetic import make_synthetic

    counts = range(1, args.max_procs + 1)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_synthetic(str(data), videos=12, seconds=16, seed=0)
        for rep in range(args.repeats):  # round by round: the machine's load moves all alike
            one = None
            for n in counts:
                r = run_trainer(n, data, Path(tmp) / f"run{rep}_{n}", args.batch, args.epochs)
                one = one or r
                r.update(round=rep, speedup=r["samples_per_s"] / one["samples_per_s"])
                runs.append(r)
    rows = [median_row([r for r in runs if r["processes"] == n]) for n in counts]
    device = device_name()
    result = {"command": "benchmarks/scaling.py " + " ".join(sys.argv[1:]), "device": device,
              "backend": "nccl" if "CPU" not in device else "gloo",
              "model": "configs/demo.yaml (tiny SlowFast)", "repeats": args.repeats,
              "rows": rows, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"), device)
    for r in rows:
        lo, hi = r["speedup_min_max"]
        print(f"{r['processes']} proc: step {r['step_s'] * 1e3:.1f} ms, {r['samples_per_s']:.1f} "
              f"clips/s, speed-up {r['speedup']:.2f} ({lo:.2f}-{hi:.2f}), efficiency {r['efficiency']:.2f}, "
              f"compute {r['compute_share']:.0%} comm {r['comm_share']:.0%} data {r['data_share']:.0%}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
