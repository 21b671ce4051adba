"""Multigrid at real model size: the train step's clips/s at every shape of PySlowFast's multigrid
plan for configs/AVA/SLOWFAST_32x2_R50.yaml (long + short cycle, default factors, 8 clips per
GPU, BN over BN_BASE_SIZE 8 clips), against the default shape, and the training time the plan
implies against the baseline for the same epochs.

Each (stage, short-cycle iteration) is a train step of the real model (bf16 autocast,
channels_last_3d, as `benchmarks/model_step.py`'s bf16_cl): forward, BCE loss, backward, SGD step,
on a batch already on the device, its BN split into the stage's sub-batches (SubBatchNorm3d).
The baseline is the same step at the default shape with plain BN. Each entry is built and
warmed up once (its first step, timed apart, includes cuDNN's autotuning for the new shapes:
the cost a stage switch pays on a GPU); then each round times --steps steps of every entry in
turn, the start rotating, so noise hits all alike. No loader: this is the model's side of the
comparison (`benchmarks/multigrid.py` trains both end to end on a CPU, mAP included).

Projection: a stage's clips/s is its short cycle's clips over its steps' time; the multigrid run
takes sum over stages (epochs x clips per epoch / clips/s), the baseline MAX_EPOCH epochs at the
default shape's clips/s; their ratio is the speed-up for "the same epochs" in PySlowFast's sense
(multigrid's epochs are stretched by EPOCH_FACTOR 1.5).

    python benchmarks/multigrid_step.py [--size real|tiny] [--rounds 4] [--steps 5]
        [--out benchmarks/results/multigrid_step.json]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("model_step", ROOT / "benchmarks/model_step.py")
model_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(model_step)

GRID = ["MULTIGRID.LONG_CYCLE", "True", "MULTIGRID.SHORT_CYCLE", "True", "NUM_GPUS", "1"]
# config overrides; tiny: what the CPU test runs end to end in seconds
SIZES = {
    "real": ["TRAIN.BATCH_SIZE", "8"],
    "tiny": ["TRAIN.BATCH_SIZE", "1", "MULTIGRID.BN_BASE_SIZE", "1", "RESNET.WIDTH_PER_GROUP",
             "8", "DATA.NUM_FRAMES", "16", "DATA.TRAIN_CROP_SIZE", "48",
             "DATA.TRAIN_JITTER_SCALES", "[48, 60]"],
}
VARIANT = model_step.Variant("bf16_cl", "bf16", channels_last=True)


def build_plan(size: str):
    from slowfast_dist.config import load_config
    from slowfast_dist.train import multigrid

    cfg = load_config(str(ROOT / "configs/AVA/SLOWFAST_32x2_R50.yaml"), GRID + SIZES[size])
    spec = multigrid.MultigridSpec.from_cfg(cfg)
    s, d = cfg.SOLVER, cfg.DATA
    plan = multigrid.plan(spec, steps=list(s.STEPS), lrs=list(s.LRS), max_epoch=s.MAX_EPOCH,
                          gamma=s.GAMMA, frames=d.NUM_FRAMES, crop=d.TRAIN_CROP_SIZE,
                          sampling_rate=d.SAMPLING_RATE, per_rank_batch=cfg.TRAIN.BATCH_SIZE,
                          ranks=1, eval_period=cfg.TRAIN.EVAL_PERIOD,
                          checkpoint_period=cfg.TRAIN.CHECKPOINT_PERIOD)
    return cfg, plan


def key_of(batch, frames, crop, splits) -> str:
    return f"{batch}x{frames}x{crop}" + (f"/{splits}" if splits else "")


def entries_of(cfg, plan) -> list[dict]:
    """The baseline, then every distinct (batch, frames, crop, BN splits) of the plan's stages
    that have epochs (the LR steps repeat the long cycle's shapes)."""
    d = cfg.DATA
    b, t, c = cfg.TRAIN.BATCH_SIZE, d.NUM_FRAMES, d.TRAIN_CROP_SIZE
    out = {"baseline": {"name": "baseline", "batch": b, "frames": t, "crop": c,
                        "bn_splits": None}}
    for row in plan["stages"]:
        if row["epochs"][1] <= row["epochs"][0]:
            continue
        for it in row["short_cycle"]:
            k = key_of(it["batch_per_rank"], row["frames"], it["crop"], row["bn_splits"])
            out.setdefault(k, {"name": k, "batch": it["batch_per_rank"], "frames": row["frames"],
                               "crop": it["crop"], "bn_splits": row["bn_splits"]})
    return list(out.values())


def build_steps(cfg, entries, device: str, warmup: int) -> None:
    """Each entry's step on its own copy of the same initial weights; its first step's wall time
    (cuDNN autotuning included) and its peak memory."""
    from slowfast_dist.models import build_model
    from slowfast_dist.models.sub_batchnorm import set_bn_splits

    torch.manual_seed(0)
    base = build_model(cfg)
    gen = torch.Generator().manual_seed(0)
    for e in entries:
        print(f"multigrid_step: building {e['name']} ({e['batch']} x {e['frames']} frames x "
              f"{e['crop']} px)", file=sys.stderr, flush=True)
        model = base
        if e["bn_splits"] is not None:
            model = copy.deepcopy(base)
            set_bn_splits(model, e["bn_splits"], capacity=e["bn_splits"])
        batch = model_step.make_batch(e["batch"], e["crop"], e["frames"], gen)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        step = model_step.build_step(VARIANT, model, batch, device)
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        e["first_step_s"] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
            # this entry's model, optimizer, batch and activations (not the earlier entries')
            e["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
        e["step"] = step


def time_entries(entries, device: str, rounds: int, steps: int) -> str:
    clock = "cuda" if device == "cuda" else "cpu"
    times = {e["name"]: [] for e in entries}
    for r in range(rounds):
        k = r % len(entries)
        for e in entries[k:] + entries[:k]:
            times[e["name"]] += [model_step.timed(e["step"], device)[clock] for _ in range(steps)]
    for e in entries:
        ts = sorted(times[e["name"]])
        del e["step"]
        e["step_s"] = {"median": statistics.median(ts), "min": ts[0], "max": ts[-1]}
        e["clips_per_s"] = e["batch"] / e["step_s"]["median"]
    return clock


def project(cfg, plan, entries) -> dict:
    """Training time for the same epochs, relative: both in units of one epoch's clips."""
    by_name = {e["name"]: e for e in entries}
    base = by_name["baseline"]
    base_s = cfg.SOLVER.MAX_EPOCH / base["clips_per_s"]
    base_iters = cfg.SOLVER.MAX_EPOCH / base["batch"]
    stages, grid_s, grid_iters = [], 0.0, 0.0
    for i, row in enumerate(plan["stages"]):
        epochs = row["epochs"][1] - row["epochs"][0]
        if epochs <= 0:
            continue
        mine = [by_name[key_of(it["batch_per_rank"], row["frames"], it["crop"], row["bn_splits"])]
                for it in row["short_cycle"]]
        clips = sum(e["batch"] for e in mine)
        rate = clips / sum(e["step_s"]["median"] for e in mine)
        grid_s += epochs / rate
        grid_iters += epochs * len(mine) / clips
        stages.append({"stage": i + 1, "lr_step": row["lr_step"], "epochs": row["epochs"],
                       "frames": row["frames"], "crop": row["crop"],
                       "bn_splits": row["bn_splits"], "short_cycle": [e["name"] for e in mine],
                       "clips_per_s": rate, "x_baseline_clips_per_s": rate / base["clips_per_s"]})
    return {"stages": stages, "baseline_epochs": cfg.SOLVER.MAX_EPOCH,
            "multigrid_epochs": plan["solver"]["MAX_EPOCH"],
            "speedup_same_epochs": base_s / grid_s, "iterations_ratio": base_iters / grid_iters}


def run(size: str, device: str, rounds: int, steps: int, warmup: int) -> dict:
    cfg, plan = build_plan(size)
    entries = entries_of(cfg, plan)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer does: a few shapes per run
    build_steps(cfg, entries, device, warmup)
    clock = time_entries(entries, device, rounds, steps)
    return {"environment": model_step.environment(device), "size": size,
            "config": "configs/AVA/SLOWFAST_32x2_R50.yaml + " + " ".join(GRID + SIZES[size]),
            "variant": "bf16 autocast + channels_last_3d", "clock": clock, "rounds": rounds,
            "steps_per_round": steps, "warmup": warmup, "plan": plan, "entries": entries,
            "projection": project(cfg, plan, entries), "method": __doc__.split("\n\n")[1]}


def table(result: dict) -> str:
    lines = ["| batch x frames x crop | BN splits | step ms, median (min-max) | clips/s "
             "| first step s |", "|---|---|---|---|---|"]
    for e in result["entries"]:
        s = e["step_s"]
        lines.append(f"| {e['batch']} x {e['frames']} x {e['crop']} | "
                     f"{e['bn_splits'] or '- (baseline)'} | {s['median'] * 1e3:.1f} "
                     f"({s['min'] * 1e3:.1f}-"
                     f"{s['max'] * 1e3:.1f}) | {e['clips_per_s']:.1f} | {e['first_step_s']:.1f} |")
    p = result["projection"]
    lines += ["", "| stage | LR step | epochs | frames x crop | short cycle (BxTxS/splits) | "
              "clips/s | x baseline |", "|---|---|---|---|---|---|---|"]
    for s in p["stages"]:
        lines.append(f"| {s['stage']} | {s['lr_step']} | {s['epochs'][0] + 1}-{s['epochs'][1]} | "
                     f"{s['frames']} x "
                     f"{s['crop']} | {', '.join(s['short_cycle'])} | {s['clips_per_s']:.1f} | "
                     f"{s['x_baseline_clips_per_s']:.2f} |")
    lines.append(f"\nsame epochs ({p['baseline_epochs']} baseline, {p['multigrid_epochs']} "
                 f"stretched): {p['speedup_same_epochs']:.2f}x less training time, "
                 f"{p['iterations_ratio']:.2f}x fewer iterations")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="real")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per entry per round")
    ap.add_argument("--warmup", type=int, default=2, help="steps before timing, the first apart")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/multigrid_step.json")
    a = ap.parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(1)
    result = run(a.size, a.device, a.rounds, a.steps, a.warmup)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
