"""Writes tests/data/multigrid_reference.json: PySlowFast's own multigrid schedule, run on its code.

`tests/test_multigrid.py` checks `slowfast_dist/train/multigrid.py` against these values, so the
tests need no PySlowFast checkout. To regenerate (the JSON records the commit it was made from):

    .venv/bin/python tests/data/make_multigrid_reference.py --reference-dir PATH/TO/SlowFast

It loads PySlowFast's `slowfast/utils/multigrid.py`, `slowfast/utils/lr_policy.py` and
`slowfast/datasets/multigrid_helper.py` from the checkout as they are, and `is_eval_epoch` /
`is_checkpoint_epoch` out of `misc.py` / `checkpoint.py` (whose other imports need GPU-era
packages), with a plain namespace for the config. For each case it records what PySlowFast's
`train()` does: `init_multigrid`, then `update_long_cycle` before every epoch, the evaluation and
checkpoint epochs, the LR at every quarter epoch, and the short-cycle batch sizes.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import subprocess
import sys
import types
from pathlib import Path

CASES = {
    # PySlowFast's configs/Kinetics/SLOWFAST_8x8_R50_stepwise_multigrid.yaml
    "kinetics_stepwise": dict(LONG_CYCLE=True, SHORT_CYCLE=True, STEPS=[0, 94, 154, 196],
                              LRS=[1, 0.1, 0.01, 0.001, 0.0001, 0.00001], MAX_EPOCH=239,
                              BATCH_SIZE=64, NUM_GPUS=8, NUM_FRAMES=32, CROP=224,
                              SAMPLING_RATE=2, WARMUP_EPOCHS=34.0, BASE_LR=0.1),
    # our AVA config's schedule (SLOWFAST_32x2_R50_SHORT) under both cycles
    "ava_short": dict(LONG_CYCLE=True, SHORT_CYCLE=True, STEPS=[0, 10, 15, 20],
                      LRS=[1, 0.1, 0.01, 0.001], MAX_EPOCH=20, BATCH_SIZE=64, NUM_GPUS=8,
                      NUM_FRAMES=32, CROP=224, SAMPLING_RATE=2, WARMUP_EPOCHS=5.0, BASE_LR=0.1),
    "ava_short_epoch_factor_2": dict(LONG_CYCLE=True, SHORT_CYCLE=True, EPOCH_FACTOR=2.0,
                                     STEPS=[0, 10, 15, 20], LRS=[1, 0.1, 0.01, 0.001],
                                     MAX_EPOCH=20, BATCH_SIZE=16, NUM_GPUS=4, NUM_FRAMES=32,
                                     CROP=224, SAMPLING_RATE=2, WARMUP_EPOCHS=5.0, BASE_LR=0.1,
                                     BN_BASE_SIZE=4, EVAL_FREQ=2),
    "short_cycle_only": dict(LONG_CYCLE=False, SHORT_CYCLE=True, STEPS=[0, 10, 15, 20],
                             LRS=[1, 0.1, 0.01, 0.001], MAX_EPOCH=20, BATCH_SIZE=64, NUM_GPUS=8,
                             NUM_FRAMES=32, CROP=224, SAMPLING_RATE=2, WARMUP_EPOCHS=5.0,
                             BASE_LR=0.1),
    # PySlowFast indexes the third shape of the last long cycle for its fine-tuning phase,
    # which exists only with short cycles: long cycles alone raise IndexError there
    "long_cycle_only": dict(LONG_CYCLE=True, SHORT_CYCLE=False, STEPS=[0, 10, 15, 20],
                            LRS=[1, 0.1, 0.01, 0.001], MAX_EPOCH=20, BATCH_SIZE=64, NUM_GPUS=8,
                            NUM_FRAMES=32, CROP=224, SAMPLING_RATE=2, WARMUP_EPOCHS=5.0,
                            BASE_LR=0.1),
    # the demo's tiny model: 8 frames, 64 px crops
    "demo": dict(LONG_CYCLE=True, SHORT_CYCLE=True, STEPS=[0, 10, 14], LRS=[1, 0.1, 0.01],
                 MAX_EPOCH=16, BATCH_SIZE=8, NUM_GPUS=1, NUM_FRAMES=8, CROP=64, SAMPLING_RATE=2,
                 WARMUP_EPOCHS=2.0, BASE_LR=0.1, BN_BASE_SIZE=2),
}
DEFAULTS = dict(EPOCH_FACTOR=1.5, SHORT_CYCLE_FACTORS=[0.5, 0.5 ** 0.5],
                LONG_CYCLE_FACTORS=[(0.25, 0.5 ** 0.5), (0.5, 0.5 ** 0.5), (0.5, 1), (1, 1)],
                BN_BASE_SIZE=8, EVAL_FREQ=3, GAMMA=0.1, EVAL_PERIOD=10, CHECKPOINT_PERIOD=10,
                WARMUP_START_LR=0.01)


def ns(**kw):
    return types.SimpleNamespace(**kw)


def make_cfg(case: dict):
    c = {**DEFAULTS, **case}
    return ns(
        NUM_GPUS=c["NUM_GPUS"],
        MULTIGRID=ns(LONG_CYCLE=c["LONG_CYCLE"], SHORT_CYCLE=c["SHORT_CYCLE"],
                     EPOCH_FACTOR=c["EPOCH_FACTOR"], SHORT_CYCLE_FACTORS=c["SHORT_CYCLE_FACTORS"],
                     LONG_CYCLE_FACTORS=c["LONG_CYCLE_FACTORS"], BN_BASE_SIZE=c["BN_BASE_SIZE"],
                     EVAL_FREQ=c["EVAL_FREQ"], LONG_CYCLE_SAMPLING_RATE=0, DEFAULT_B=0,
                     DEFAULT_T=0, DEFAULT_S=0),
        SOLVER=ns(STEPS=list(c["STEPS"]), LRS=list(c["LRS"]), MAX_EPOCH=c["MAX_EPOCH"],
                  GAMMA=c["GAMMA"], LR_POLICY="steps_with_relative_lrs", BASE_LR=c["BASE_LR"],
                  WARMUP_EPOCHS=c["WARMUP_EPOCHS"], WARMUP_START_LR=c["WARMUP_START_LR"]),
        TRAIN=ns(BATCH_SIZE=c["BATCH_SIZE"], EVAL_PERIOD=c["EVAL_PERIOD"],
                 CHECKPOINT_PERIOD=c["CHECKPOINT_PERIOD"]),
        DATA=ns(NUM_FRAMES=c["NUM_FRAMES"], TRAIN_CROP_SIZE=c["CROP"],
                SAMPLING_RATE=c["SAMPLING_RATE"]),
        BN=ns(NORM_TYPE="batchnorm", NUM_SPLITS=1, NUM_SYNC_DEVICES=1),
    ), c


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_function(path: Path, name: str):
    """One top-level function out of a module whose imports cannot load here."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    scope = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), scope)
    return scope[name]


def run_case(ref: Path, mods, case: dict) -> dict:
    mg, lr_policy, helper = mods
    is_eval = load_function(ref / "slowfast/utils/misc.py", "is_eval_epoch")
    is_ckpt = load_function(ref / "slowfast/utils/checkpoint.py", "is_checkpoint_epoch")
    cfg, values = make_cfg(case)
    out = {"keys": {k: v for k, v in values.items()}}
    multigrid = mg.MultigridSchedule()
    try:
        cfg = multigrid.init_multigrid(cfg)
        if cfg.MULTIGRID.LONG_CYCLE:
            cfg, _ = multigrid.update_long_cycle(cfg, cur_epoch=0)
    except Exception as err:  # noqa: BLE001 - recorded as PySlowFast's behaviour
        out["error"] = f"{type(err).__name__}: {err}"
        return out
    out["schedule"] = multigrid.schedule
    out["solver"] = {"STEPS": list(cfg.SOLVER.STEPS), "LRS": list(cfg.SOLVER.LRS),
                     "MAX_EPOCH": cfg.SOLVER.MAX_EPOCH}
    epochs = []
    import torch.utils.data as tud

    for epoch in range(cfg.SOLVER.MAX_EPOCH):
        changed = False
        if cfg.MULTIGRID.LONG_CYCLE:
            cfg, changed = multigrid.update_long_cycle(cfg, epoch)
        per_gpu = int(cfg.TRAIN.BATCH_SIZE / max(1, cfg.NUM_GPUS))  # build_loader's rule
        short = None
        if cfg.MULTIGRID.SHORT_CYCLE:
            sampler = helper.ShortCycleBatchSampler(tud.SequentialSampler(range(10000)), per_gpu,
                                                    True, cfg)
            short = {"batch_sizes": sampler.batch_sizes, "len_of_10000": len(sampler)}
        epochs.append({
            "epoch": epoch, "changed": changed, "batch_size": cfg.TRAIN.BATCH_SIZE,
            "frames": cfg.DATA.NUM_FRAMES, "crop": cfg.DATA.TRAIN_CROP_SIZE,
            "norm_type": cfg.BN.NORM_TYPE, "num_splits": cfg.BN.NUM_SPLITS,
            "num_sync_devices": cfg.BN.NUM_SYNC_DEVICES,
            "long_cycle_sampling_rate": cfg.MULTIGRID.LONG_CYCLE_SAMPLING_RATE,
            "eval": bool(is_eval(cfg, epoch, multigrid.schedule)),
            "checkpoint": bool(is_ckpt(cfg, epoch, multigrid.schedule)),
            "short_cycle": short,
            "lr": [lr_policy.get_lr_at_epoch(cfg, epoch + q / 4) for q in range(4)],
        })
    out["epochs"] = epochs
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-dir", required=True, help="a PySlowFast checkout")
    ap.add_argument("--commit", help="the checkout's commit, where it is not a git work tree")
    ap.add_argument("--out", default=str(Path(__file__).with_name("multigrid_reference.json")))
    args = ap.parse_args()
    ref = Path(args.reference_dir)
    for name in ("slowfast", "slowfast.utils", "slowfast.datasets"):
        sys.modules[name] = types.ModuleType(name)
    log = types.ModuleType("slowfast.utils.logging")
    log.get_logger = logging.getLogger
    sys.modules["slowfast.utils.logging"] = log
    mods = (load_module(ref / "slowfast/utils/multigrid.py", "slowfast.utils.multigrid"),
            load_module(ref / "slowfast/utils/lr_policy.py", "slowfast.utils.lr_policy"),
            load_module(ref / "slowfast/datasets/multigrid_helper.py",
                        "slowfast.datasets.multigrid_helper"))
    commit = args.commit or subprocess.run(["git", "-C", str(ref), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    result = {"pyslowfast_commit": commit, "generator": "tests/data/make_multigrid_reference.py",
              "cases": {name: run_case(ref, mods, case) for name, case in CASES.items()}}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({len(CASES)} cases, PySlowFast {commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
