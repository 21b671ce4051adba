"""Epoch-boundary stall and 10-step time, persistent vs re-created workers (study Table 3).

Usage: .venv/bin/python benchmarks/loader_stall.py [--workers 0 2 4 6 8] [--epochs 4]
       [--step-ms 40]
Writes benchmarks/results/loader_stall.json and .png. Data: a synthetic tree (make_synthetic).

Each step waits for a batch and then "computes" for --step-ms (a sleep standing in for the GPU
step the loader has to hide behind; without it a bare loop measures only the prefetch queue).
A boundary is the wait for the first batch of epochs 1.. (epoch 0's start-up is not a boundary).
A step is its wait plus the compute; the median is over all non-first steps.
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch

from slowfast_dist.data import AvaDataset, ClipSpec, build_loader
from slowfast_dist.data.synthetic import make_synthetic


def measure(ds, workers, persistent, epochs, step_s, batch_size):
    ld = build_loader(ds, batch_size, shuffle=True, drop_last=True, num_workers=workers,
                      pin_memory=False, persistent=persistent, rank=0, world_size=1, seed=0)
    bounds, steps = [], []
    for e in range(epochs):
        ld.set_epoch(e)
        t = time.perf_counter()
        for i, _ in enumerate(ld):
            wait = time.perf_counter() - t
            time.sleep(step_s)
            if i == 0:
                if e > 0:
                    bounds.append(wait)
            else:
                steps.append(wait + step_s)
            t = time.perf_counter()
    med = statistics.median(steps)
    return {"persistent": persistent, "workers": workers, "boundary_s": bounds,
            "max_boundary_s": max(bounds), "median_step_s": med, "ten_steps_s": 10 * med,
            "steps_per_epoch": len(ld)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 6, 8])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--step-ms", type=float, default=40.0)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--data", default="/tmp/slowfast_dist_stall_data")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if not os.path.isdir(os.path.join(a.data, "frames")):
        make_synthetic(a.data, videos=4, seconds=8)
    ds = AvaDataset([os.path.join(a.data, "frame_lists/train.csv")], os.path.join(a.data, "frames"),
                    [os.path.join(a.data, "annotations/ava_train_v2.2.csv")],
                    os.path.join(a.data, "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                    clip=ClipSpec(num_frames=8, sampling_rate=2, crop_size=64, alpha=4,
                                  jitter_scales=(96, 112)))
    rows = []
    for persistent in (False, True):
        for w in a.workers:
            rows.append(measure(ds, w, persistent, a.epochs, a.step_ms / 1e3, a.batch_size))
            r = rows[-1]
            print(f"{'persistent' if persistent else 're-created'} workers={w}: boundary max "
                  f"{r['max_boundary_s'] * 1e3:.1f} ms, median step {r['median_step_s'] * 1e3:.1f} ms",
                  flush=True)
    pers = [r for r in rows if r["persistent"]]
    summary = {"persistent_boundary_below_one_step_at_every_worker_count":
               all(r["max_boundary_s"] < r["median_step_s"] for r in pers)}
    print(summary)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "loader_stall.json"), "w") as f:
        json.dump({"command": "benchmarks/loader_stall.py " + " ".join(
                       f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
                       if k in ("epochs", "step_ms", "batch_size")),
                   "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                   "batch_size": a.batch_size, "epochs": a.epochs, "step_ms": a.step_ms,
                   "summary": summary, "rows": rows}, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for p, lab in ((False, "re-created workers"), (True, "persistent workers")):
        r = [x for x in rows if x["persistent"] == p]
        plt.plot([x["workers"] for x in r], [statistics.mean(x["boundary_s"]) for x in r], "o-",
                 label=f"{lab}: boundary")
    plt.plot([x["workers"] for x in pers], [x["median_step_s"] for x in pers], "k--",
             label="median step")
    plt.xlabel("workers"); plt.ylabel("seconds"); plt.yscale("log"); plt.legend()
    plt.savefig(os.path.join(a.out, "loader_stall.png"), dpi=100)


if __name__ == "__main__":
    main()
