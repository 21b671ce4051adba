"""Epoch-boundary stall and 10-step time, persistent vs re-created workers (study Table 3).

Usage: .venv/bin/python benchmarks/loader_stall.py [--workers 0 2 4 6 8] [--epochs 3]
Writes benchmarks/results/loader_stall.json and .png. Data: a synthetic tree (make_synthetic).
"""
import argparse
import json
import os
import statistics
import time

import torch

from slowfast_dist.data import AvaDataset, build_loader
from slowfast_dist.data.synthetic import make_synthetic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 6, 8])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", default="/tmp/slowfast_dist_stall_data")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if not os.path.isdir(os.path.join(a.data, "frames")):
        make_synthetic(a.data, videos=4, seconds=8)
    ds = AvaDataset([os.path.join(a.data, "frame_lists/train.csv")], os.path.join(a.data, "frames"),
                    [os.path.join(a.data, "annotations/ava_train_v2.2.csv")],
                    os.path.join(a.data, "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                    num_frames=8, sampling_rate=2, alpha=4, slowfast=True, mean=[0.45] * 3,
                    std=[0.225] * 3, crop_size=64, jitter_scales=[96, 112])
    rows = []
    for persistent in (False, True):
        for w in a.workers:
            ld = build_loader(ds, 2, shuffle=True, drop_last=True, num_workers=w, pin_memory=False,
                              persistent=persistent, rank=0, world_size=1, seed=0)
            stamps = []  # (epoch, time of each batch arrival)
            for e in range(a.epochs):
                ld.set_epoch(e)
                for _ in ld:
                    stamps.append((e, time.perf_counter()))
            steps = [t2 - t1 for (e1, t1), (e2, t2) in zip(stamps, stamps[1:]) if e1 == e2]
            bounds = [t2 - t1 for (e1, t1), (e2, t2) in zip(stamps, stamps[1:]) if e1 != e2]
            med = statistics.median(steps)
            rows.append({"persistent": persistent, "workers": w, "boundary_s": bounds,
                         "median_step_s": med, "ten_steps_s": 10 * med})
            print(rows[-1], flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "loader_stall.json"), "w") as f:
        json.dump({"batch_size": 2, "epochs": a.epochs, "rows": rows}, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for p, lab in ((False, "re-created workers"), (True, "persistent workers")):
        r = [x for x in rows if x["persistent"] == p]
        plt.plot([x["workers"] for x in r], [statistics.mean(x["boundary_s"]) for x in r], "o-", label=lab)
    plt.xlabel("workers"); plt.ylabel("epoch boundary (s)"); plt.legend()
    plt.savefig(os.path.join(a.out, "loader_stall.png"), dpi=100)


if __name__ == "__main__":
    main()
