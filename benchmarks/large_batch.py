"""mAP against the global batch, same epochs: the linear scaling rule as the study used it, and the
fixes for large batches (a warm-up that grows with the batch, LARS, LAMB). The shape of the study's
Table 5 (mAP by node count) on a synthetic set, on CPU.

Usage: .venv/bin/python benchmarks/large_batch.py [--multipliers 1 2 4 8 16 32] [--epochs 8]
       [--recipes linear warmup lars lamb] [--seeds 0 1 2] [--jobs 2]
Writes benchmarks/results/large_batch.json and .png.

Each run is `slowfast-dist train` of configs/demo.yaml's tiny SlowFast on one process with
DIST.SIMULATE_WORLD_SIZE M: M ranks of --base-batch clips each (global batch M x base), their
gradients accumulated, BatchNorm over each rank's batch, exactly as M real ranks would train
(tests/test_trainer_launch.py). The data: make_synthetic with --videos videos of --seconds
labelled seconds (3 of 4 train). Schedule as the study's, shrunk to --epochs: warm-up over the
first quarter, LR x0.1 at one half and three quarters. The LR follows the linear rule from
--base-lr at the base batch (SOLVER.REFERENCE_GLOBAL_BATCH). Recipes:
- linear: that rule and a fixed warm-up (what the study did);
- warmup: the warm-up grows with the batch (SOLVER.WARMUP_SCALES_WITH_BATCH);
- lars: PySlowFast's LARS over SGD (SOLVER.LARS_ON; its LR is --lars-lr-factor x the linear one);
- lamb: LAMB (SOLVER.OPTIMIZING_METHOD lamb) at --lamb-lr, scaled by sqrt(M) (its paper's rule).
The mAP is the exact AVA frame-mAP on the validation videos after the last epoch, and at the
half-way epoch to show whether the base run still improves. Each cell runs once per --seeds
value (RNG_SEED: the initial weights and the data order); the table gives the median and the
range, so an effect can be told from the noise between seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe_opts(recipe: str, m: int, a) -> list:
    e = a.epochs
    base = ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.MAX_EPOCH", str(e),
            "SOLVER.STEPS", f"[0, {e // 2}, {3 * e // 4}]", "SOLVER.LRS", "[1, 0.1, 0.01]",
            "SOLVER.WARMUP_EPOCHS", f"{e / 4:g}", "SOLVER.BASE_LR", f"{a.base_lr:g}",
            "SOLVER.WARMUP_START_LR", f"{a.base_lr / 10:g}",
            "SOLVER.REFERENCE_GLOBAL_BATCH", str(a.base_batch)]
    if recipe == "linear":
        return base
    if recipe == "warmup":
        return base + ["SOLVER.WARMUP_SCALES_WITH_BATCH", "True"]
    if recipe == "lars":
        lr = a.base_lr * a.lars_lr_factor
        return base + ["SOLVER.LARS_ON", "True", "SOLVER.BASE_LR", f"{lr:g}",
                       "SOLVER.WARMUP_START_LR", f"{lr / 10:g}"]
    if recipe == "lamb":
        # LAMB's rule is sqrt(M): undo the linear rule's M, then apply sqrt(M)
        lr = a.lamb_lr * math.sqrt(m) / m
        return base + ["SOLVER.OPTIMIZING_METHOD", "lamb", "SOLVER.BASE_LR", f"{lr:g}",
                       "SOLVER.WARMUP_START_LR", f"{lr / 10:g}", "SOLVER.WEIGHT_DECAY", "0.01",
                       "SOLVER.ZERO_WD_1D_PARAM", "True"]
    raise SystemExit(f"unknown recipe {recipe!r}")


def run_one(recipe: str, m: int, seed: int, a, data: Path) -> dict:
    out = Path(a.work) / (f"{recipe}_x{m}" + (f"_s{seed}" if seed else ""))
    if (out / "result.json").exists() and not a.rerun:
        return json.loads((out / "result.json").read_text())
    opts = ["AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
            "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out),
            "NUM_GPUS", "1", "TRAIN.BATCH_SIZE", str(a.base_batch),
            "DIST.SIMULATE_WORLD_SIZE", str(m), "TRAIN.EVAL_PERIOD", str(a.epochs // 2),
            "TRAIN.CHECKPOINT_PERIOD", str(a.epochs), "TRAIN.AUTO_RESUME", "False",
            "TENSORBOARD.ENABLE", "False", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "100000",
            "RNG_SEED", str(seed), *recipe_opts(recipe, m, a)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0, c0 = time.time(), os.times()
    p = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "train", "--cfg",
                        "configs/demo.yaml", *opts], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{recipe} x{m}: exit {p.returncode}: {p.stderr[-2000:]}")
    maps = {str(int(e)): float(v)  # str keys: as they read back from the JSON
            for e, v in re.findall(r"epoch (\d+)/\d+: mAP ([0-9.]+)", p.stderr)}
    c1 = os.times()
    result = {"recipe": recipe, "multiplier": m, "seed": seed, "global_batch": m * a.base_batch,
              "mAP": maps[max(maps, key=int)], "mAP_by_epoch": maps,
              "updates_per_epoch": _micro_steps(p.stderr) // m,
              "wall_s": round(time.time() - t0, 1),
              "cpu_s": round(c1.children_user + c1.children_system
                             - c0.children_user - c0.children_system, 1),
              "plan": [ln.split("] ", 1)[-1] for ln in p.stderr.splitlines()
                       if any(k in ln for k in ("] lr schedule", "] optimizer", "] simulating"))]}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _micro_steps(stderr: str) -> int:
    """Micro-steps in epoch 1, from its progress line (M of them make one update)."""
    m = re.search(r"epoch 1 \[[#.]+\] \d+/(\d+)", stderr)
    return int(m.group(1)) if m else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--multipliers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--recipes", nargs="+", default=["linear", "warmup", "lars", "lamb"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--base-batch", type=int, default=2)
    ap.add_argument("--base-lr", type=float, default=0.025)
    ap.add_argument("--lars-lr-factor", type=float, default=20.0)
    ap.add_argument("--lamb-lr", type=float, default=0.004)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rerun", action="store_true", help="ignore finished runs in --work")
    ap.add_argument("--work", default="/tmp/slowfast_large_batch")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/large_batch.json"))
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from slowfast_dist.data.synthetic import make_synthetic

    data = Path(a.work) / f"data_v{a.videos}_s{a.seconds}"
    if not (data / "annotations").is_dir():
        make_synthetic(str(data), videos=a.videos, seconds=a.seconds, seed=3)
    jobs = [(r, m, s) for s in a.seeds for m in a.multipliers for r in a.recipes]
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(lambda job: run_one(*job, a, data), jobs))
    for r in results:
        print(f"{r['recipe']:7s} x{r['multiplier']:<3d} seed {r.get('seed', 0)}  batch "
              f"{r['global_batch']:4d}  mAP {r['mAP']:.3f}  (half-way "
              f"{r['mAP_by_epoch'].get(str(a.epochs // 2), float('nan')):.3f})"
              f"  {r['wall_s']:.0f} s", flush=True)
    cells = {rec: {m: spread([r["mAP"] for r in results
                              if r["recipe"] == rec and r["multiplier"] == m])
                   for m in a.multipliers} for rec in a.recipes}
    table = {rec: {m: c["median"] for m, c in row.items()} for rec, row in cells.items()}
    base = {rec: row[min(a.multipliers)] for rec, row in table.items()}
    report = {"command": "python benchmarks/large_batch.py " + " ".join(argv or sys.argv[1:]),
              "environment": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
              "method": __doc__.split("\n\n", 2)[2].strip(),
              "settings": {k: v for k, v in vars(a).items() if k not in ("work", "out")},
              "runs": results, "mAP_table": table, "mAP_cells": cells,
              # how far apart two seeds of one cell land: the noise an effect must exceed
              "seed_range_median": statistics.median(c["max"] - c["min"] for row in cells.values()
                                                     for c in row.values()),
              "drop_at_largest_vs_linear_base": {
                  rec: base["linear"] - table[rec][max(a.multipliers)] for rec in a.recipes
                  if "linear" in base},
              # the same, seed by seed (one seed: the same initial weights and data order in
              # both runs), so the seed's own luck cancels out
              "paired_drop_by_seed": paired_drops(results, a)}
    Path(a.out).write_text(json.dumps(report, indent=1))
    _plot(report, Path(a.out).with_suffix(".png"), a)
    return 0


def paired_drops(results: list, a) -> dict:
    """Per recipe: linear at the smallest batch minus the recipe at the largest, per seed."""
    def of(rec, m, seed):
        return next((r["mAP"] for r in results if r["recipe"] == rec and r["multiplier"] == m
                     and r.get("seed", 0) == seed), None)
    lo, hi = min(a.multipliers), max(a.multipliers)
    out = {}
    for rec in a.recipes:
        drops = [of("linear", lo, s) - of(rec, hi, s) for s in a.seeds
                 if of("linear", lo, s) is not None and of(rec, hi, s) is not None]
        if drops:
            out[rec] = {"by_seed": [round(d, 4) for d in drops], **spread(drops)}
    return out


def spread(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def _plot(report, path, a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for rec, row in report["mAP_cells"].items():
        ms = sorted(row)
        mid = [row[m]["median"] for m in ms]
        err = [[mid[i] - row[m]["min"] for i, m in enumerate(ms)],
               [row[m]["max"] - mid[i] for i, m in enumerate(ms)]]
        ax.errorbar([m * a.base_batch for m in ms], mid, yerr=err, marker="o", capsize=3,
                    label=rec)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("global batch (clips)")
    ax.set_ylabel("frame-mAP after the last epoch")
    ax.set_title(f"tiny SlowFast, synthetic AVA, {a.epochs} epochs; median and range over "
                 f"{len(a.seeds)} seed(s)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
