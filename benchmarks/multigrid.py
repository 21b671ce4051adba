"""Multigrid training (MULTIGRID.LONG_CYCLE + SHORT_CYCLE) against the same training without it,
side by side: training time, clips/s by stage, and the mAP at the end.

Usage: .venv/bin/python benchmarks/multigrid.py [--epochs 8] [--seeds 0 1 2] [--jobs 2]
       [--lars none|multigrid|both] [--lr-scaling linear|sqrt|none] [--cycles both|long|short]
       [--schedule ava|finetune] [--spatial-strides LIST]
       [--out benchmarks/results/multigrid.json]
Writes benchmarks/results/multigrid.json and .png.

Each run is `slowfast-dist train` of configs/demo.yaml's tiny SlowFast on one process (one
thread) with one persistent loader worker, on make_synthetic's textured frames (--videos videos
of --seconds labelled seconds at 128x96, 3 of 4 train): the worker decodes while the step
computes, so the data path is not the bottleneck (the wait for data is reported as data_share).
The baseline trains --epochs epochs of --frames x --crop clips, batch --batch, with the study's
AVA LRs (PySlowFast's SLOWFAST_32x2_R50_SHORT: x0.1 at one half and three quarters of the run;
SOLVER.LR_POLICY steps_with_relative_lrs, which multigrid needs). The multigrid run has the same
keys plus PySlowFast's multigrid with its default factors and BN_BASE_SIZE = --batch (BN over as
many clips as the baseline's): epochs stretched by EPOCH_FACTOR 1.5, as PySlowFast does, so both
runs are "the same number of epochs" in PySlowFast's sense. --schedule finetune (the default)
writes SOLVER.STEPS [0, E/2, 3E/4] with MAX_EPOCH E: multigrid's last LR step is then its
fine-tuning phase at the default shape, as in PySlowFast's multigrid configs. --schedule ava
writes the study's [0, E/2, 3E/4, E], whose last step is MAX_EPOCH: the same LRs for the
baseline, and no fine-tuning phase for multigrid. Neither evaluates while training; after it,
`slowfast-dist test` scores the last checkpoint on the validation videos (the same command for
both). Both runs recompute BN's statistics at the default shape before each checkpoint
(BN.USE_PRECISE_STATS, as PySlowFast's multigrid configs do) over --precise-bn batches; with
--precise-bn 0 the multigrid run is scored with statistics gathered over the short cycle's mixed
crops. With --lars multigrid (or both), that run trains with PySlowFast's LARS (SOLVER.LARS_ON)
at --lars-lr-factor x the base LR, benchmarks/large_batch.py's recipe, which held mAP at 32x
batches there; a baseline without LARS is reused from an earlier run with the same settings.

Timing: `train_s` is the sum of the epochs' own times from the training log (no start-up,
checkpoints or scoring), `wall_s` and `cpu_s` the whole training process (its worker included).
The runs alternate, baseline then multigrid, seed after seed (--jobs 1: each run has the 2
cores of these machines to itself); speed-up and mAP difference are paired by seed (same
initial weights) and reported as median and range.
"""

from __future__ import annotations

import argparse
import json
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
VARIANTS = ("baseline", "multigrid")


def train_opts(variant: str, seed: int, a, data: Path, out: Path) -> list:
    e = a.epochs
    opts = ["AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
            "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out),
            "NUM_GPUS", "1", "TRAIN.BATCH_SIZE", str(a.batch), "TEST.BATCH_SIZE", "8",
            "DATA.NUM_FRAMES", str(a.frames), "DATA.SAMPLING_RATE", str(a.rate),
            "DATA.TRAIN_CROP_SIZE", str(a.crop), "DATA.TEST_CROP_SIZE", str(a.crop),
            "DATA.TRAIN_JITTER_SCALES", f"[{a.crop}, {a.crop * 5 // 4}]",
            "SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.MAX_EPOCH", str(e),
            # the baseline's LRs are the same either way; multigrid's last LR step is its
            # fine-tuning phase at the default shape, of no length when it starts at MAX_EPOCH
            "SOLVER.STEPS", (f"[0, {e // 2}, {3 * e // 4}, {e}]" if a.schedule == "ava"
                             else f"[0, {e // 2}, {3 * e // 4}]"),
            "SOLVER.LRS", "[1, 0.1, 0.01, 0.001]" if a.schedule == "ava" else "[1, 0.1, 0.01]",
            "SOLVER.BASE_LR", f"{a.base_lr:g}", "SOLVER.WARMUP_EPOCHS", "1",
            "SOLVER.WARMUP_START_LR", f"{a.base_lr / 10:g}",
            "TRAIN.EVAL_PERIOD", "0", "TRAIN.CHECKPOINT_PERIOD", "1000", "TRAIN.AUTO_RESUME",
            "False", "TENSORBOARD.ENABLE", "False", "DATA_LOADER.NUM_WORKERS", "1",
            "DATA_LOADER.PERSISTENT_WORKERS", "True",
            "LOG_PERIOD", "1000000", "RNG_SEED", str(seed)]
    if a.spatial_strides:
        opts += ["RESNET.SPATIAL_STRIDES", a.spatial_strides]
    if a.precise_bn:
        opts += ["BN.USE_PRECISE_STATS", "True", "BN.NUM_BATCHES_PRECISE", str(a.precise_bn)]
    if variant == "multigrid":
        opts += ["MULTIGRID.LONG_CYCLE", str(a.cycles != "short"),
                 "MULTIGRID.SHORT_CYCLE", str(a.cycles != "long"),
                 "MULTIGRID.BN_BASE_SIZE", str(a.batch), "MULTIGRID.LR_SCALING", a.lr_scaling]
    if uses_lars(variant, a):  # #19's recipe: PySlowFast's LARS at --lars-lr-factor x the LR
        lr = a.base_lr * a.lars_lr_factor
        opts += ["SOLVER.LARS_ON", "True", "SOLVER.BASE_LR", f"{lr:g}",
                 "SOLVER.WARMUP_START_LR", f"{lr / 10:g}"]
    return opts


def uses_lars(variant: str, a) -> bool:
    return a.lars == "both" or a.lars == variant


def run(cmd: list, what: str) -> tuple[str, float, float]:
    """(stderr, wall s, CPU s of the child) of one command, one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0, c0 = time.time(), os.times()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    c1 = os.times()
    if p.returncode != 0:
        raise RuntimeError(f"{what}: exit {p.returncode}: {p.stderr[-2000:]}")
    # children times are summed over every finished child: right while each job has one child
    return p.stderr, time.time() - t0, (c1.children_user + c1.children_system
                                        - c0.children_user - c0.children_system)


def run_one(variant: str, seed: int, a, data: Path) -> dict:
    out = Path(a.work) / f"{variant}_s{seed}_{settings_tag(a, variant)}"
    if (out / "result.json").exists() and not a.rerun:
        return json.loads((out / "result.json").read_text())
    cli = [sys.executable, "-m", "slowfast_dist.cli"]
    opts = train_opts(variant, seed, a, data, out)
    log, wall, cpu = run([*cli, "train", "--cfg", "configs/demo.yaml", *opts],
                         f"{variant} seed {seed}")
    test_log, _, _ = run([*cli, "test", "--cfg", "configs/demo.yaml", *opts],
                         f"{variant} seed {seed} (test)")
    epochs = [{"epoch": int(e), "loss": float(loss), "time_s": float(t), "clips_per_s": float(r)}
              for e, loss, t, r in re.findall(
                  r"epoch (\d+)/\d+: loss ([0-9.naif]+) in ([0-9.]+) s, ([0-9.]+) clips/s", log)]
    stages = [{"epochs": [int(a0), int(b0)], "frames": int(t), "batch_at_crop": cyc,
               "bn": bn, "switch_ms": float(ms)}
              for a0, b0, t, cyc, bn, ms in re.findall(
                  r"multigrid stage of epochs (\d+)-(\d+): (\d+) frames at rate \d+, per rank "
                  r"\(batch@crop\) ([0-9@, ]+), BN ([^;]+); switched in ([0-9.]+) ms", log)]
    for st in stages:
        st["clips_per_s"] = statistics.median(
            [e["clips_per_s"] for e in epochs if st["epochs"][0] <= e["epoch"] <= st["epochs"][1]]
            or [float("nan")])
    # each epoch's last progress line: the step time and the wait for data in it
    data_share = [float(d) / float(t) for t, d in
                  re.findall(r"step ([0-9.]+) ms  data ([0-9.]+) ms", log) if float(t) > 0]
    m = re.search(r"test: mAP ([0-9.]+)", test_log)
    result = {"variant": variant, "seed": seed, "mAP": float(m.group(1)) if m else None,
              "epochs_run": len(epochs), "train_s": round(sum(e["time_s"] for e in epochs), 2),
              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "clips_per_s": statistics.median(e["clips_per_s"] for e in epochs),
              "clips_seen": round(sum(e["time_s"] * e["clips_per_s"] for e in epochs)),
              "data_share": statistics.median(data_share) if data_share else None,
              "epochs": epochs, "stages": stages,
              "plan": [ln.split("] ", 1)[-1] for ln in log.splitlines()
                       if "] multigrid (" in ln or "] lr schedule" in ln]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def settings_tag(a, variant: str) -> str:
    """Finished runs are reused only under the same settings (a baseline without LARS is the
    same run whatever the multigrid run uses)."""
    import hashlib

    keys = ("epochs", "frames", "rate", "crop", "batch", "base_lr", "videos", "seconds")
    tag = hashlib.sha1(repr([getattr(a, k) for k in keys]).encode()).hexdigest()[:8]
    return (tag + (f"_pbn{a.precise_bn}" if a.precise_bn else "")
            + (f"_{a.schedule}" if a.schedule != "ava" else "")
            + ("_st" + "".join(c for c in a.spatial_strides if c.isdigit())
               if a.spatial_strides else "")
            + (f"_lars{a.lars_lr_factor:g}" if uses_lars(variant, a) else "")
            + (f"_lr{a.lr_scaling}" if variant == "multigrid" and a.lr_scaling != "linear"
               else "")
            + (f"_{a.cycles}" if variant == "multigrid" and a.cycles != "both" else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rate", type=int, default=2)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--base-lr", type=float, default=0.025)
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=16)
    ap.add_argument("--precise-bn", type=int, default=50, metavar="BATCHES",
                    help="BN.USE_PRECISE_STATS with this BN.NUM_BATCHES_PRECISE, both runs "
                         "(0: off)")
    ap.add_argument("--lars", choices=("none", "multigrid", "both"), default="none",
                    help="PySlowFast's LARS (SOLVER.LARS_ON) for these runs")
    ap.add_argument("--lars-lr-factor", type=float, default=20.0,
                    help="with LARS, BASE_LR is this x --base-lr (benchmarks/large_batch.py's)")
    ap.add_argument("--lr-scaling", choices=("linear", "sqrt", "none"), default="linear",
                    help="MULTIGRID.LR_SCALING of the multigrid run: its long-cycle stages' LR "
                         "per batch factor (linear: PySlowFast's)")
    ap.add_argument("--schedule", choices=("ava", "finetune"), default="finetune",
                    help="ava: SOLVER.STEPS [0, E/2, 3E/4, E] (the study's AVA configs: the "
                         "last step at MAX_EPOCH, so multigrid gets no fine-tuning phase); "
                         "finetune: [0, E/2, 3E/4], the same LRs for the baseline, and "
                         "multigrid fine-tunes at the default shape from 3E/4, as PySlowFast's "
                         "multigrid configs do (their MAX_EPOCH is past the last step)")
    ap.add_argument("--cycles", choices=("both", "long", "short"), default="both",
                    help="the multigrid run's MULTIGRID.LONG_CYCLE / SHORT_CYCLE (both: the "
                         "paper's and PySlowFast's default multigrid)")
    ap.add_argument("--spatial-strides", metavar="LIST",
                    help="RESNET.SPATIAL_STRIDES of both runs (default: configs/demo.yaml's, "
                         "a stride of 16 at res5); \"[[1, 1], [1, 1], [2, 2], [1, 1]]\" gives 8, "
                         "so multigrid's smallest crop keeps a feature map of 4x4, not 2x2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--rerun", action="store_true", help="ignore finished runs in --work")
    ap.add_argument("--work", default="/tmp/slowfast_multigrid")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/multigrid.json"))
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from benchmarks.large_batch import spread
    from slowfast_dist.data.synthetic import make_synthetic

    data = Path(a.work) / f"data_v{a.videos}_s{a.seconds}"
    if not (data / "annotations").is_dir():
        make_synthetic(str(data), videos=a.videos, seconds=a.seconds, seed=3, texture=True)
    # a seed's two runs side by side (one core each), seed after seed
    jobs = [(v, s) for s in a.seeds for v in VARIANTS]
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(lambda job: run_one(*job, a, data), jobs))
    by = {(r["variant"], r["seed"]): r for r in results}
    for r in results:
        print(f"{r['variant']:9s} seed {r['seed']}  train {r['train_s']:7.1f} s  wall "
              f"{r['wall_s']:7.1f} s  {r['clips_per_s']:6.1f} clips/s  mAP {r['mAP']:.4f}",
              flush=True)
    speedup = [by["baseline", s]["train_s"] / by["multigrid", s]["train_s"] for s in a.seeds]
    wall_speedup = [by["baseline", s]["wall_s"] / by["multigrid", s]["wall_s"] for s in a.seeds]
    diff = [by["multigrid", s]["mAP"] - by["baseline", s]["mAP"] for s in a.seeds]
    summary = {
        "train_time_speedup": spread(speedup), "wall_time_speedup": spread(wall_speedup),
        "mAP_multigrid_minus_baseline": spread(diff),
        "mAP": {v: spread([by[v, s]["mAP"] for s in a.seeds]) for v in VARIANTS},
        "train_s": {v: spread([by[v, s]["train_s"] for s in a.seeds]) for v in VARIANTS},
        "epochs_run": {v: by[v, a.seeds[0]]["epochs_run"] for v in VARIANTS},
        "train_s_per_epoch": {v: spread([by[v, s]["train_s"] / by[v, s]["epochs_run"]
                                         for s in a.seeds]) for v in VARIANTS},
        "clips_per_s": {v: spread([by[v, s]["clips_per_s"] for s in a.seeds]) for v in VARIANTS},
        "data_share": {v: spread([by[v, s]["data_share"] for s in a.seeds]) for v in VARIANTS},
        "multigrid_stages": by["multigrid", a.seeds[0]]["stages"],
        "goal": "train time >= 2x shorter; mAP no more than 0.02 below the baseline",
    }
    summary["goal_met"] = {"speedup": summary["train_time_speedup"]["median"] >= 2.0,
                           "mAP": summary["mAP_multigrid_minus_baseline"]["median"] >= -0.02}
    report = {"command": "python benchmarks/multigrid.py " + " ".join(argv or sys.argv[1:]),
              "environment": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
              "method": __doc__.split("\n\n", 2)[2].strip(),
              "settings": {k: v for k, v in vars(a).items() if k not in ("work", "out")},
              "summary": summary, "runs": results}
    Path(a.out).write_text(json.dumps(report, indent=1))
    _plot(report, Path(a.out).with_suffix(".png"), a)
    print(json.dumps(summary["train_time_speedup"]), json.dumps(
        summary["mAP_multigrid_minus_baseline"]), flush=True)
    return 0


def _plot(report, path, a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colours = {"baseline": "tab:blue", "multigrid": "tab:orange"}
    for r in report["runs"]:
        t, done = 0.0, [0.0]
        for e in r["epochs"]:
            t += e["time_s"]
            done.append(t)
        left.plot(done, range(len(done)), color=colours[r["variant"]], alpha=0.8,
                  label=r["variant"] if r["seed"] == a.seeds[0] else None)
        right.scatter([r["seed"] + (0.1 if r["variant"] == "multigrid" else -0.1)], [r["mAP"]],
                      color=colours[r["variant"]],
                      label=r["variant"] if r["seed"] == a.seeds[0] else None)
    left.set_xlabel("training time (s; one thread and one loader worker)")
    left.set_ylabel("epochs done")
    left.set_title("multigrid stretches the epochs x1.5 and still ends first", fontsize=9)
    right.set_xlabel("seed")
    right.set_ylabel("frame-mAP (test command, validation videos)")
    right.set_xticks(a.seeds)
    s = report["summary"]
    right.set_title(f"speed-up {s['train_time_speedup']['median']:.2f}x, mAP difference "
                    f"{s['mAP_multigrid_minus_baseline']['median']:+.3f} (medians)", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"tiny SlowFast, synthetic AVA (textured), {a.frames}x{a.crop} clips, "
                 f"{a.epochs} epochs, {len(a.seeds)} seed(s)"
                 + ("" if a.lars == "none" else f"; LARS: {a.lars}")
                 + ("" if a.lr_scaling == "linear" else f"; LR scaling: {a.lr_scaling}")
                 + ("" if a.cycles == "both" else f"; {a.cycles} cycle only")
                 + ("" if a.cycles == "short" else "; no fine-tuning phase"
                    if a.schedule == "ava" else "; fine-tuning phase")
                 + (f"; strides {a.spatial_strides}" if a.spatial_strides else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
