"""Builds a run from the config and hands it to the loop (`loop.py`).

This is the one place where the training side reads a CfgNode; everything it builds takes
plain values. Batch size follows PySlowFast: TRAIN.BATCH_SIZE is per shard (node) and is split
over its NUM_GPUS processes, so the global batch is BATCH_SIZE / NUM_GPUS * world size.

The commands call `launch.launch(train, cfg)` (`launch.py`), which starts PySlowFast's local
workers when no launcher numbered the processes and maps errors to exit codes.
Training starts from, in order: the newest good checkpoint in OUTPUT_DIR (auto-resume), else
TRAIN.CHECKPOINT_FILE_PATH (fine-tuning, PySlowFast's rules), else the initialisation.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from slowfast_dist import logs
from slowfast_dist.errors import UserError
from slowfast_dist.train import checkpoint as ckpt
from slowfast_dist.train import history, multigrid, optim
from slowfast_dist.train.finetune import finetune_from, read_pretrained
from slowfast_dist.train.infer import gather_to_rank0, predict, score
from slowfast_dist.train.loop import fit
from slowfast_dist.train.meters import StepMeter
from slowfast_dist.train.preempt import Preempted, StopSignals


def seed_everything(seed: int, rank: int) -> None:
    # Same torch seed on every rank (identical init; DDP also broadcasts). Data RNGs differ per
    # rank: here for the main process, in loader.py for the workers.
    torch.manual_seed(seed)
    np.random.seed(seed + rank)
    random.seed(seed + rank)


def per_process_batch(batch_size: int, num_gpus: int, key: str = "TRAIN.BATCH_SIZE") -> int:
    per = batch_size // max(1, num_gpus)
    if per < 1:
        raise UserError(f"{key} {batch_size} is smaller than NUM_GPUS {num_gpus}")
    return per


def build_optimizer(model, *, lr, momentum, dampening, nesterov, weight_decay, bn_weight_decay):
    """SGD as PySlowFast builds it, BN parameters in their own group (`optim.py` has the rest)."""
    return optim.build_optimizer(model, optim.OptimizerSpec(
        method="sgd", lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
        weight_decay=weight_decay, bn_weight_decay=bn_weight_decay))


def freeze_batchnorm(model) -> None:
    """Frozen BN: running statistics and affine parameters stay as loaded."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, m=module: m  # stays in eval under model.train()
            for p in module.parameters():
                p.requires_grad_(False)


def make_loss(name: str):
    if name in ("bce", "bce_logit"):
        return torch.nn.BCEWithLogitsLoss()  # the model returns logits while training
    if name in ("cross_entropy", "soft_cross_entropy"):
        return torch.nn.CrossEntropyLoss()
    raise UserError(f"MODEL.LOSS_FUNC: {name!r} is not supported (bce, cross_entropy)")


def make_autocast(device, enabled: bool, dtype_name: str):
    if dtype_name not in ("bf16", "fp16"):
        raise UserError(f"TRAIN.AMP_DTYPE: {dtype_name!r} must be bf16 or fp16")
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float16
    return partial(torch.autocast, device.type, dtype=dtype, enabled=enabled)


def warmup_epochs(cfg, global_batch: int) -> float:
    """SOLVER.WARMUP_EPOCHS, grown with the batch under SOLVER.WARMUP_SCALES_WITH_BATCH."""
    from slowfast_dist.train import schedule

    s = cfg.SOLVER
    if not s.WARMUP_SCALES_WITH_BATCH:
        return s.WARMUP_EPOCHS
    if s.REFERENCE_GLOBAL_BATCH <= 0:
        raise UserError("SOLVER.WARMUP_SCALES_WITH_BATCH True needs SOLVER.REFERENCE_GLOBAL_BATCH "
                        "(the batch the configured warm-up was set for)")
    return schedule.warmup_epochs_for(s.WARMUP_EPOCHS, global_batch=global_batch,
                                      reference_global_batch=s.REFERENCE_GLOBAL_BATCH,
                                      max_epoch=s.MAX_EPOCH, policy=s.LR_POLICY,
                                      steps=list(s.STEPS))


def resolve_lr(cfg, world_size: int, global_batch: int):
    """The LRs after the linear scaling rule, and the per-iteration schedule built on them."""
    from slowfast_dist.train import schedule

    s = cfg.SOLVER
    lr = schedule.scaled_lr(s.BASE_LR, s.WARMUP_START_LR, s.COSINE_END_LR,
                            num_shards=max(1, world_size // max(1, cfg.NUM_GPUS)),
                            scale_num_shards=s.BASE_LR_SCALE_NUM_SHARDS, global_batch=global_batch,
                            reference_global_batch=s.REFERENCE_GLOBAL_BATCH)
    warmup = warmup_epochs(cfg, global_batch)
    lr_at = partial(schedule.lr_at, base_lr=lr.base_lr, policy=s.LR_POLICY, steps=list(s.STEPS),
                    lrs=list(s.LRS), max_epoch=s.MAX_EPOCH, warmup_epochs=warmup,
                    warmup_start_lr=lr.warmup_start_lr, cosine_end_lr=lr.cosine_end_lr,
                    cosine_after_warmup=s.COSINE_AFTER_WARMUP)
    return lr, lr_at


class Run:
    """Everything a training or test run needs, built once from the config."""

    def __init__(self, cfg, info=None):
        from slowfast_dist.config import cfg_ignored_keys
        from slowfast_dist.dist.env import init_distributed
        from slowfast_dist.models import build_model

        self.cfg, self.t0 = cfg, time.time()
        self.attempt = None  # attempts/NNN under OUTPUT_DIR, on rank 0 (train and test)
        self.dry_run = cfg.DIST.DRY_RUN_WORLD_SIZE > 0
        # `info` is given when `launch` already joined the group (PySlowFast's layout).
        self.info = info or init_distributed(init_method=cfg.INIT_METHOD or None,
                                             timeout_s=cfg.DIST.TIMEOUT_S,
                                             dry_run_world_size=cfg.DIST.DRY_RUN_WORLD_SIZE,
                                             rendezvous_dir=cfg.OUTPUT_DIR)
        self.rank, self.world = self.info.rank, self.info.world_size
        # time and rank on every line; a dry run only prints (it writes nothing to OUTPUT_DIR)
        self.logger = logs.setup(self.rank, None if self.dry_run else cfg.OUTPUT_DIR)
        ignored = cfg_ignored_keys(cfg)
        if ignored:
            self.warn(f"PySlowFast config keys not used by slowfast-dist (ignored): "
                      f"{', '.join(ignored)}")
        sim = cfg.DIST.SIMULATE_WORLD_SIZE
        if sim and (sim < self.world or sim % self.world):
            raise UserError(f"DIST.SIMULATE_WORLD_SIZE {sim}: must be a multiple of the "
                            f"{self.world} processes")
        self.simulate = sim // self.world if sim else 1  # simulated ranks per process
        self.ranks = self.world * self.simulate  # the world this run trains as
        self.heartbeat = None
        if self.world > 1 and not self.dry_run:  # names a rank that hangs or dies (dist/)
            from slowfast_dist.dist.heartbeat import Heartbeat

            self.heartbeat = Heartbeat(dist.distributed_c10d._get_default_store(), self.rank,
                                       self.world, cfg.DIST.TIMEOUT_S).start()
        self.device = torch.device(self.info.device)
        if self.device.type == "cuda":
            # the clip shapes are fixed within a run (a few per multigrid stage): let cuDNN pick
            # the fastest 3D convolutions for each
            torch.backends.cudnn.benchmark = True
        seed_everything(cfg.RNG_SEED, self.rank)
        self.out = Path(cfg.OUTPUT_DIR)
        self.model = build_model(cfg).to(self.device)
        if cfg.BN.FREEZE:
            freeze_batchnorm(self.model)
        self.autocast = make_autocast(self.device, cfg.TRAIN.MIXED_PRECISION, cfg.TRAIN.AMP_DTYPE)
        if self.device.type == "cpu" and cfg.TRAIN.MIXED_PRECISION and \
                cfg.TRAIN.AMP_DTYPE == "bf16":
            self._warn_few_frames_bf16(cfg)
        self.hosts = self._gather_hosts()
        self.multigrid_plan = None  # set by multigrid()

    def _gather_hosts(self) -> list[str]:
        hosts = [socket.gethostname()] * self.world
        if self.world > 1 and not self.dry_run:  # a fake group moves no data
            dist.all_gather_object(hosts, socket.gethostname())
        return hosts

    def log(self, msg: str) -> None:
        """INFO: shown for rank 0 (every rank with SLOWFAST_DIST_LOG_ALL_RANKS=1)."""
        self.logger.info(msg)

    def _warn_few_frames_bf16(self, cfg) -> None:
        """Measured with torch 2.13 on an AMD EPYC with AVX512-BF16: oneDNN's bf16 weight
        gradient of a 3x1x1 convolution over fewer than 3 frames is often inf or NaN."""
        slowfast = cfg.MODEL.ARCH == "slowfast"
        frames = cfg.DATA.NUM_FRAMES
        if cfg.MULTIGRID.LONG_CYCLE:  # its stages train on fewer frames
            frames = int(frames * min(t for t, _ in cfg.MULTIGRID.LONG_CYCLE_FACTORS))
        slow = frames // (cfg.SLOWFAST.ALPHA if slowfast else 1)
        if slow < 3:
            where = "slow-pathway frame(s)" if slowfast else "frame(s)"
            self.warn(f"bf16 on CPU with {slow} {where} (DATA.NUM_FRAMES"
                      f"{' / SLOWFAST.ALPHA' if slowfast else ''}"
                      f"{', at the smallest long-cycle stage' if cfg.MULTIGRID.LONG_CYCLE else ''}"
                      "): CPUs with native bf16 can give non-finite gradients for the temporal "
                      "3x1x1 convolutions; use 3 or more, or fp32")

    def warn(self, msg: str) -> None:
        """A warning every rank would give alike (from the config or the files): said once."""
        self.logger.warning(msg, extra=logs.EVERY_RANK)

    def wrap_ddp(self):
        if self.world == 1:
            return self.model
        if self.cfg.BN.NORM_TYPE == "sync_batchnorm" and not self.cfg.BN.FREEZE:
            if self.cfg.MULTIGRID.LONG_CYCLE:
                # PySlowFast sets BN per long-cycle stage, whatever BN.NORM_TYPE says
                self.warn("BN.NORM_TYPE sync_batchnorm: not used under MULTIGRID.LONG_CYCLE, "
                          "whose stages set BN (see the plan)")
            elif self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:
                # torch's SyncBatchNorm runs on GPUs only. A CPU run of a cluster config is a
                # rehearsal: it should run, and say plainly what differs from the real one.
                self.warn(f"BN.NORM_TYPE sync_batchnorm needs CUDA; on CPU each of the "
                         f"{self.world} processes normalises over its own batch (batchnorm)")
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = self.cfg.DDP
        return torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=ids, bucket_cap_mb=ddp.BUCKET_CAP_MB,
            static_graph=ddp.STATIC_GRAPH, find_unused_parameters=ddp.FIND_UNUSED_PARAMETERS,
            gradient_as_bucket_view=ddp.GRADIENT_AS_BUCKET_VIEW)

    def comm_timer(self, model):
        """DDP's gradient allreduce: the C++ default, torch's bf16/fp16 compression hook, or the
        timing probe (PROFILE.COMM_PROBE), which also compresses when asked."""
        from slowfast_dist.profiling.comm import CommTimer

        hook = self.cfg.DDP.COMM_HOOK
        if hook not in ("none", "bf16", "fp16"):
            raise UserError(f"DDP.COMM_HOOK: {hook!r} must be none, bf16 or fp16")
        if model is self.model:  # one process: no allreduce
            return None
        if hook == "bf16" and self.info.backend != "nccl":
            raise UserError(f"DDP.COMM_HOOK bf16 needs the nccl backend (this run uses "
                            f"{self.info.backend}); use fp16 or none")
        if self.cfg.PROFILE.COMM_PROBE:
            comm = CommTimer(self.world, self.device.type == "cuda", compress=hook)
            comm.register(model)
            return comm
        if hook != "none":
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            model.register_comm_hook(None, getattr(default_hooks, f"{hook}_compress_hook"))
        return None

    def flops_and_peak(self):
        """(training FLOPs per clip, device peak TFLOP/s) for the MFU in the log; (None, None)
        where the peak is unknown (CPUs, GPUs missing from profiling/mfu.py's table)."""
        from slowfast_dist.models.info_cli import input_shapes
        from slowfast_dist.profiling import mfu

        cfg, device = self.cfg, self.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        amp = cfg.TRAIN.AMP_DTYPE if cfg.TRAIN.MIXED_PRECISION else None
        peak = mfu.peak_tflops(name, mfu.step_precision(amp, name), cfg.PROFILE.PEAK_TFLOPS)
        if not peak or self.rank != 0:  # only rank 0 logs
            return None, None
        crop = cfg.DATA.TRAIN_CROP_SIZE
        xs = [torch.zeros(shape, device=device) for shape in input_shapes(
            cfg.MODEL.ARCH, cfg.DATA.NUM_FRAMES, cfg.SLOWFAST.ALPHA, crop,
            cfg.DATA.INPUT_CHANNEL_NUM)]
        boxes = (torch.tensor([[0, 0.0, 0.0, crop - 1.0, crop - 1.0]], device=device)
                 if cfg.DETECTION.ENABLE else None)
        macs = mfu.forward_macs(ckpt.unwrap(self.model), xs, boxes)
        return mfu.clip_train_flops(macs), peak

    def multigrid(self, spec, batch: int):
        """Log the multigrid plan; the config with PySlowFast's re-derived solver keys.
        Under a long cycle, BN layers become SubBatchNorm3d with room for the most splits a
        stage uses (before DDP, which keeps the buffers); each epoch sets its stage's."""
        cfg, s, d = self.cfg, self.cfg.SOLVER, self.cfg.DATA
        self.multigrid_plan = multigrid.plan(
            spec, steps=list(s.STEPS), lrs=list(s.LRS), max_epoch=s.MAX_EPOCH, gamma=s.GAMMA,
            frames=d.NUM_FRAMES, crop=d.TRAIN_CROP_SIZE, sampling_rate=d.SAMPLING_RATE,
            per_rank_batch=batch, ranks=self.ranks, eval_period=cfg.TRAIN.EVAL_PERIOD,
            checkpoint_period=cfg.TRAIN.CHECKPOINT_PERIOD)
        if cfg.MODEL.ARCH == "slowfast":
            multigrid.check_frames([r["frames"] for r in self.multigrid_plan["stages"]],
                                   cfg.SLOWFAST.ALPHA)
        for line in multigrid.plan_lines(spec, self.multigrid_plan, s.MAX_EPOCH):
            self.log(line)
        if spec.long_cycle and self.multigrid_plan["finetune_epochs"] < 1:
            kept = [x for x in s.STEPS if x < s.MAX_EPOCH]
            fix = (f"; SOLVER.STEPS {kept} with SOLVER.LRS {list(s.LRS)[:len(kept)]} keeps the "
                   "LRs of a run without multigrid and fine-tunes over the last step"
                   if len(kept) >= 2 else "")  # the long cycle needs two steps
            why = (f"SOLVER.MAX_EPOCH {s.MAX_EPOCH} is not past the last SOLVER.STEPS "
                   f"{s.STEPS[-1]}" if s.MAX_EPOCH <= s.STEPS[-1] else
                   f"the epochs past the last SOLVER.STEPS {s.STEPS[-1]} round to none")
            self.warn(f"multigrid: no fine-tuning phase at the default shape ({d.NUM_FRAMES} "
                      f"frames x {d.TRAIN_CROP_SIZE} px, the shape that is evaluated), as {why}. "
                      "PySlowFast's multigrid configs train past that step (Kinetics: STEPS "
                      f"[0, 94, 154, 196], MAX_EPOCH 239){fix}")
        most = max(r["bn_splits"] for r in self.multigrid_plan["stages"])
        if most > 1 and not cfg.BN.FREEZE:
            from slowfast_dist.models.sub_batchnorm import set_bn_splits

            set_bn_splits(self.model, 1, capacity=most)
        if any(r["norm_type"] == "sync_batchnorm" for r in self.multigrid_plan["stages"]):
            # a synchronised BN per stage would need its own process groups
            self.warn(f"multigrid: stages whose per-rank batch is below MULTIGRID.BN_BASE_SIZE "
                      f"{spec.bn_base_size} normalise over their own batch (batchnorm), not "
                      "PySlowFast's sync_batchnorm over NUM_SYNC_DEVICES")
        derived = cfg.clone()
        derived.defrost()
        for key, value in self.multigrid_plan["solver"].items():
            derived.SOLVER[key] = value
        derived.freeze()
        return derived

    def board(self, start_step: int, global_batch: int, base_lr: float):
        """Rank 0's TensorBoard run (`board.py`): the config, and the figures that define the
        run as hparams, so runs at different scales can be compared side by side."""
        from slowfast_dist.train.board import Board, log_dir

        cfg = self.cfg
        board = Board(log_dir(self.out, cfg.TENSORBOARD.LOG_DIR), start_step)
        s, d = cfg.SOLVER, cfg.DATA
        board.describe_run(cfg.dump(), {
            "ranks": self.ranks, "processes": self.world, "nodes": len(set(self.hosts)),
            "global_batch": global_batch, "base_lr": base_lr, "optimizer": s.OPTIMIZING_METHOD,
            "lars": bool(s.LARS_ON), "max_epoch": s.MAX_EPOCH, "lr_policy": s.LR_POLICY,
            "warmup_epochs": float(s.WARMUP_EPOCHS), "arch": cfg.MODEL.ARCH,
            "frames": d.NUM_FRAMES, "sampling_rate": d.SAMPLING_RATE,
            "crop": d.TRAIN_CROP_SIZE, "decoder": d.DECODER,
            "multigrid": "+".join(k for k, on in (("long", cfg.MULTIGRID.LONG_CYCLE),
                                                  ("short", cfg.MULTIGRID.SHORT_CYCLE)) if on)
            or "off",
            "precision": cfg.TRAIN.AMP_DTYPE if cfg.TRAIN.MIXED_PRECISION else "fp32",
            "seed": cfg.RNG_SEED}, start_step,
            comm_probe=bool(cfg.PROFILE.COMM_PROBE) and self.world > 1,
            cuda=self.device.type == "cuda")
        return board

    def multigrid_cycle(self):
        """For the loader: epoch -> [(batch per rank, ClipShape)] of the plan's stage, the short
        cycle's iterations in order (one without a short cycle)."""
        from slowfast_dist.data.dataset import ClipSpec, multigrid_shape

        d = self.cfg.DATA
        default = ClipSpec(d.NUM_FRAMES, d.SAMPLING_RATE, d.TRAIN_CROP_SIZE,
                           tuple(d.TRAIN_JITTER_SCALES))

        def cycle(epoch):
            row = multigrid.row_at(self.multigrid_plan, epoch)
            return [(c["batch_per_rank"], multigrid_shape(default, num_frames=row["frames"],
                                                          sampling_rate=row["sampling_rate"],
                                                          crop_size=c["crop"]))
                    for c in row["short_cycle"]]
        return cycle

    def loader(self, split: str, cycle=None, persistent: bool | None = None):
        """(dataset, loader of batches already on the device, per-process batch size).
        `cycle`: the multigrid plan for training (`multigrid_cycle`). `persistent`: the workers
        outlive an epoch (default: DATA_LOADER.PERSISTENT_WORKERS for training)."""
        from slowfast_dist.data import build_ava_dataset, build_loader, jpeg
        from slowfast_dist.data.device import DeviceLoader, build_device_transform

        cfg, train = self.cfg, split == "train"
        dataset = build_ava_dataset(cfg, split)
        batch = per_process_batch(cfg.TRAIN.BATCH_SIZE if train else cfg.TEST.BATCH_SIZE,
                                  cfg.NUM_GPUS, "TRAIN.BATCH_SIZE" if train else "TEST.BATCH_SIZE")
        if train and len(dataset) < batch * self.ranks:
            raise UserError(f"training set has {len(dataset)} keyframes, fewer than one global "
                            f"batch ({batch} x {self.ranks} ranks)")
        if not train and not len(dataset):  # an mAP of NaN on nothing, otherwise
            a = cfg.AVA
            raise UserError(f"the {split} set has no keyframe to score: AVA.TEST_LISTS "
                            f"{list(a.TEST_LISTS)}, AVA.TEST_PREDICT_BOX_LISTS "
                            f"{list(a.TEST_PREDICT_BOX_LISTS)} at AVA.DETECTION_SCORE_THRESH "
                            f"{a.DETECTION_SCORE_THRESH:g}")
        cuda = self.device.type == "cuda"
        transform = build_device_transform(cfg)
        loader = build_loader(
            dataset, batch, shuffle=train, drop_last=train,
            num_workers=cfg.DATA_LOADER.NUM_WORKERS,
            pin_memory=cfg.DATA_LOADER.PIN_MEMORY and cuda,
            persistent=(train and cfg.DATA_LOADER.PERSISTENT_WORKERS if persistent is None
                        else persistent),
            rank=self.rank, world_size=self.world, seed=cfg.RNG_SEED,
            batch_transform=None if cuda else transform,  # no GPU: the workers resample
            timeout_s=cfg.DATA_LOADER.TIMEOUT_S, simulate=self.simulate if train else 1,
            cycle=cycle)
        decode = (jpeg.batch_decoder(dataset.decoder)
                  if dataset.decoder in jpeg.BATCH_DECODERS else None)
        return dataset, DeviceLoader(loader, self.device, transform, decode), batch

    def checked_eval_files(self) -> dict:
        """`eval_files`, read and checked on every rank at start-up: a typo or a bad row fails
        before hours of training or inference (and before the other ranks wait in a barrier
        for a rank 0 that died scoring)."""
        from slowfast_dist.eval.ava_map import check_inputs

        files = self.eval_files(warn=True)
        check_inputs(**files)
        return files

    def eval_files(self, warn: bool = False) -> dict:
        """The evaluator's inputs (paths; missing ones are UserErrors)."""
        a = self.cfg.AVA
        files = {"gt_csv": os.path.join(a.ANNOTATION_DIR, a.GROUNDTRUTH_FILE),
                 "label_map": os.path.join(a.ANNOTATION_DIR, a.LABEL_MAP_FILE), "exclusions": None}
        for key, name in (("gt_csv", "AVA.GROUNDTRUTH_FILE"), ("label_map", "AVA.LABEL_MAP_FILE")):
            if not os.path.isfile(files[key]):
                raise UserError(f"{files[key]}: {name} not found (needed to score mAP)")
        if a.EXCLUSION_FILE:
            path = os.path.join(a.ANNOTATION_DIR, a.EXCLUSION_FILE)
            if os.path.isfile(path):
                files["exclusions"] = path
            elif warn:
                self.warn(f"{path}: AVA.EXCLUSION_FILE not found; mAP is scored without "
                         "exclusions")
        return files

    def evaluate(self, model, dataset, loader, tag: str, label: str | None = None) -> float:
        """Distributed inference, gathered to rank 0, scored by the exact AVA evaluator."""
        by_frame = predict(model, loader, device=self.device, autocast=self.autocast,
                           video_names=dataset.video_names, class_ids=dataset.class_ids)
        rows = gather_to_rank0(by_frame, self.world, self.rank)
        result = {"mAP": math.nan}
        if self.rank == 0:
            result = score(rows, self.out / f"detections_{tag}.csv", **self.eval_files())
            from slowfast_dist.files import atomic_write

            text = json.dumps(result, indent=1).encode()  # whole or absent: a rerun reads it
            atomic_write(self.out / f"map_{tag}.json", lambda f: f.write(text), fsync=False)
            if tag == "test":  # every test run writes these names; an epoch's are its own
                for name in (f"detections_{tag}.csv", f"map_{tag}.json"):
                    history.keep(self.out / name, self.attempt)
            self.log(f"{label or tag}: mAP {result['mAP']:.4f} on {len(dataset)} keyframes")
        return result["mAP"]

    def start_attempt(self) -> None:
        """attempts/NNN for this run's own copies of its files (rank 0), its config first."""
        from slowfast_dist.config import dump_config

        self.out.mkdir(parents=True, exist_ok=True)
        self.attempt = history.new_attempt(self.out)
        dump_config(self.cfg, str(self.attempt / "config.yaml"))

    def final_map(self, path: Path) -> float | None:
        """The mAP a finished run recorded at `path`, as rank 0 reads it, on every rank: all
        must agree on whether to evaluate again, a collective (file systems can show ranks
        different views)."""
        value = [None]
        if self.rank == 0:
            try:
                value = [float(json.loads(path.read_text())["mAP"])]
            except (OSError, ValueError, KeyError, TypeError):
                pass  # absent or unreadable: evaluate it again
        if self.world > 1:
            dist.broadcast_object_list(value, src=0)
        return value[0]

    def finish(self) -> None:
        """This rank is done: the others' watchers stop expecting its heartbeat."""
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def summary(self, last_loss: float, map_: float | None) -> dict:
        s = {"nodes": len(set(self.hosts)), "ranks": self.world, "simulated_ranks": self.ranks,
             "wall_time_s": round(time.time() - self.t0, 2),
             "last_loss": None if last_loss is None or math.isnan(last_loss) else last_loss,
             "mAP": None if map_ is None or math.isnan(map_) else map_}
        if self.rank == 0:
            (self.out / "summary.json").write_text(json.dumps(s, indent=1))
            history.keep(self.out / "summary.json", self.attempt)
            print(f"JOB SUMMARY nodes={s['nodes']} ranks={s['ranks']} wall={s['wall_time_s']}s "
                  f"last_loss={s['last_loss']} mAP={s['mAP']}", flush=True)
        return s


def lr_schedule_line(cfg, lr_at) -> str:
    """The start-up plan's LR line, read off `lr_at` (the schedule the training calls)."""
    from slowfast_dist.train import schedule

    s = cfg.SOLVER
    return schedule.schedule_line(lr_at, policy=s.LR_POLICY, steps=list(s.STEPS),
                                  max_epoch=s.MAX_EPOCH,
                                  warmup_epochs=lr_at.keywords["warmup_epochs"])


def check_every_epoch_steps(loader, max_epoch: int, keyframes: int, ranks: int) -> None:
    """A multigrid stage's batches are up to 8x (long cycle) x 4x (short cycle) the configured
    one: refuse a plan with an epoch too small for one of its iterations, before training."""
    for epoch in range(max_epoch):
        if loader.steps(epoch) == 0:
            raise UserError(f"multigrid: epoch {epoch + 1}'s batches do not fit once in an epoch "
                            f"of {keyframes} keyframes over {ranks} ranks; use more data or a "
                            "smaller TRAIN.BATCH_SIZE (the plan above gives the batches)")


class StageSwitch:
    """Multigrid: at the start of each epoch, its stage's BN splits (the clip shapes and batches
    travel with the loader's keys). Nothing is rebuilt; the switch is timed and logged."""

    def __init__(self, plan: dict, model, log, bn_frozen: bool):
        self.plan, self.model, self.log, self.row = plan, model, log, None
        self.bn_frozen = bn_frozen

    def __call__(self, epoch: int) -> None:
        from slowfast_dist.models.sub_batchnorm import SubBatchNorm3d, set_bn_splits

        row = multigrid.row_at(self.plan, epoch)
        if row is self.row:
            return
        t0 = time.perf_counter()
        if any(isinstance(m, SubBatchNorm3d) for m in self.model.modules()):
            set_bn_splits(self.model, row["bn_splits"])
        cycle = ", ".join(f"{c['batch_per_rank']}@{c['crop']}" for c in row["short_cycle"])
        self.row = row
        self.log(f"multigrid stage of epochs {row['epochs'][0] + 1}-{row['epochs'][1]}: "
                 f"{row['frames']} frames at rate {row['sampling_rate']}, per rank "
                 f"(batch@crop) {cycle}, BN {'frozen (BN.FREEZE)' if self.bn_frozen else row['bn']}"
                 f"; switched in {(time.perf_counter() - t0) * 1e3:.1f} ms, nothing rebuilt")


def dry_run_report(run, model, optimizer, lr_at, global_batch: int, steps: int) -> dict:
    """What a run of this size would do, built on a fake process group; nothing is trained."""
    s = run.cfg.SOLVER
    report = {
        "world_size": run.world, "nodes": run.world // max(1, run.cfg.NUM_GPUS),
        "simulated_world_size": run.ranks,
        "global_batch": global_batch, "steps_per_epoch_per_rank": steps,
        "params": sum(p.numel() for p in ckpt.unwrap(model).parameters()),
        "lr_at_epoch": {f"{e:g}": lr_at(float(e))
                        for e in sorted({0, lr_at.keywords["warmup_epochs"], *s.STEPS})
                        if e < s.MAX_EPOCH},
        "lr_schedule": lr_schedule_line(run.cfg, lr_at),
        "ddp_buckets_mb": run.cfg.DDP.BUCKET_CAP_MB,
        "param_groups": len(optimizer.param_groups),
        # each group's LR and decay as the optimizer holds them (LARS/LAMB scale it per tensor)
        "param_group_lr": {g.get("name", str(k)): {"lr": g["lr"], "weight_decay": g["weight_decay"],
                                                   "lars": bool(g.get("lars")),
                                                   "lamb_trust": bool(g.get("trust"))}
                           for k, g in enumerate(optimizer.param_groups)},
    }
    if getattr(run, "multigrid_plan", None):
        report["multigrid"] = run.multigrid_plan
    run.log("dry run: " + json.dumps(report))
    return report


def train(cfg, info=None) -> dict:
    from slowfast_dist.config import dump_config

    run = Run(cfg, info)
    cfg, out = run.cfg, run.out
    grid = multigrid.MultigridSpec.from_cfg(cfg)
    if run.rank == 0 and not run.dry_run:
        run.start_attempt()
    batch = per_process_batch(cfg.TRAIN.BATCH_SIZE, cfg.NUM_GPUS)
    given, cfg_dump = cfg, cfg.dump()  # as given, not multigrid's derived SOLVER
    if grid.enabled:  # SOLVER.STEPS, LRS and MAX_EPOCH re-derived over the stretched epochs
        cfg = run.cfg = run.multigrid(grid, batch)
    if run.dry_run and not os.path.isdir(cfg.AVA.FRAME_LIST_DIR):
        # Checking a 512-GPU config on a laptop: the data set is usually not there.
        train_set, train_loader = None, []
        run.log(f"dry run: {cfg.AVA.FRAME_LIST_DIR} not found; data not checked")
    else:
        train_set, train_loader, batch = run.loader(
            "train", run.multigrid_cycle() if grid.enabled else None)
        if grid.enabled:
            check_every_epoch_steps(train_loader, cfg.SOLVER.MAX_EPOCH, len(train_set), run.ranks)
    global_batch = batch * run.ranks * max(1, cfg.TRAIN.GRAD_ACCUM_STEPS)  # samples per update
    lr, lr_at = resolve_lr(cfg, run.ranks, global_batch)
    base_lr = lr.base_lr
    run.log(f"{run.world} rank(s) on {len(set(run.hosts))} node(s), backend {run.info.backend}; "
            f"global batch {global_batch} ({batch}/rank); "
            f"LR {lr.describe(cosine=cfg.SOLVER.LR_POLICY == 'cosine')}")
    if run.simulate > 1:
        run.log(f"simulating {run.ranks} ranks (DIST.SIMULATE_WORLD_SIZE): {run.simulate} per "
                f"process, their batches of {batch} in turn, gradients accumulated, BatchNorm "
                f"over each {batch}-clip batch")
    run.log(lr_schedule_line(cfg, lr_at))
    if train_set is not None:  # the decoder `auto` resolved to, here
        pixels = (f"JPEG frames, DATA.DECODER {train_set.decoder}"
                  if train_set.pixel_source == "frames" else "videos (PyAV)")
        if train_set.pixel_source == "frames" and train_set.decoder == "yuv420":
            pixels += f" (planes read by {train_set.plane_reader})"
        workers = cfg.DATA_LOADER.NUM_WORKERS
        run.log(f"data: {len(train_set)} training clips from {pixels}, {workers} loader "
                f"worker{'' if workers == 1 else 's'} per rank")
    s = cfg.SOLVER
    spec = optim.OptimizerSpec.from_cfg(cfg, base_lr)
    optimizer = optim.build_optimizer(run.model, spec)
    for line in optim.describe(optimizer, spec):
        run.log(line)
    fp16 = cfg.TRAIN.MIXED_PRECISION and cfg.TRAIN.AMP_DTYPE == "fp16"
    scaler = torch.amp.GradScaler(run.device.type, enabled=fp16)

    start_epoch, start_step = 0, 0
    layout = {"ranks": run.ranks, "simulate": run.simulate, "batch": batch}  # what a step is
    if grid.enabled:
        layout["multigrid"] = multigrid.digest(run.multigrid_plan)
    found = ckpt.latest_good_checkpoint(out) if cfg.TRAIN.AUTO_RESUME else None
    if not found and run.rank == 0 and not run.dry_run:
        history.forget_best(out)
    if found:  # auto-resume wins over TRAIN.CHECKPOINT_FILE_PATH, as in PySlowFast
        start_epoch, _ = ckpt.restore(found[1], model=run.model, optimizer=optimizer,
                                      scaler=scaler, rank=run.rank, world_size=run.world,
                                      log=run.log, path=found[0])
        start_step = ckpt.resume_step(found[1], layout, found[0])
        at = f", step {start_step + 1}" if start_step else ""
        run.log(f"resumed from {found[0]} (starting epoch {start_epoch + 1}{at})")
    elif cfg.TRAIN.CHECKPOINT_FILE_PATH:
        t = cfg.TRAIN
        own = ckpt.unwrap(run.model).state_dict()  # a Caffe2 .pkl's names are read against it
        start_epoch = finetune_from(read_pretrained(t.CHECKPOINT_FILE_PATH, t.CHECKPOINT_TYPE,
                                                    t.CHECKPOINT_FULL_UNPICKLE, log=run.log,
                                                    model_state=own),
                                    t.CHECKPOINT_FILE_PATH, model=run.model, optimizer=optimizer,
                                    scaler=scaler, inflate=t.CHECKPOINT_INFLATE,
                                    epoch_reset=t.CHECKPOINT_EPOCH_RESET,
                                    clear_name_patterns=list(t.CHECKPOINT_CLEAR_NAME_PATTERN),
                                    log=run.log)
    if run.rank == 0 and not run.dry_run:
        # only once the checkpoints have loaded: a resume refused above (another model config)
        # leaves the config that wrote them
        dump_config(given, str(out / "config.yaml"))
    test, precise = {}, {}
    if cfg.TRAIN.EVAL_PERIOD > 0 and not run.dry_run:
        run.checked_eval_files()  # and the val set's own files, read by its loader now
        test["set"], test["loader"], _ = run.loader("val")
    model = run.wrap_ddp()
    if run.dry_run:
        return dry_run_report(run, model, optimizer, lr_at, global_batch, len(train_loader))
    from slowfast_dist.profiling.profiler import Nvtx, StepTimers, maybe_profile, write_summary

    p = cfg.PROFILE
    comm = run.comm_timer(model)
    nvtx = Nvtx(p.NVTX)
    nvtx.attach_optimizer(optimizer)
    timers = StepTimers(rank=run.rank, world_size=run.world, comm=comm, nvtx=nvtx)

    flops, peak = (None, None) if grid.enabled else run.flops_and_peak()
    if grid.enabled and run.device.type == "cuda":
        run.log("MFU is not reported under multigrid (the clip shape changes every iteration)")
    stop = StopSignals(announce=run.rank == 0)
    meter = StepMeter(rank=run.rank, world_size=run.world, device=run.device,
                      max_epoch=s.MAX_EPOCH, stream=logs.LineStream(run.logger),
                      log_period=cfg.LOG_PERIOD, timers=timers,
                      train_flops_per_clip=flops, peak_tflops=peak, stop_requested=stop)
    meter.global_step = sum(train_loader.steps(e) for e in range(start_epoch)) + start_step
    if grid.enabled:
        meter.epoch_steps = train_loader.steps
    if run.rank == 0 and cfg.TENSORBOARD.ENABLE:
        meter.board = run.board(meter.global_step, global_batch, base_lr)
        meter.watch_gradients(optimizer)
    last = {"mAP": None}

    def save(epoch, step=0):
        """Every rank hands in its RNG states; rank 0 writes (`step` > 0: inside `epoch`)."""
        rng = ckpt.gather_rng_states(run.world)
        if run.rank == 0:
            path = ckpt.save_checkpoint(ckpt.checkpoint_path(out, epoch, step), model=model,
                                        optimizer=optimizer, epoch=epoch - 1 if step else epoch,
                                        cfg_dump=cfg_dump, scaler=scaler, epoch_step=step,
                                        global_step=meter.global_step, rng_states=rng,
                                        layout=layout)
            run.log(f"checkpoint: {path}")
            history.point(out, "last", path)
            if not step:
                for old in history.prune(out, cfg.TRAIN.CHECKPOINT_KEEP, path):
                    run.log(f"removed {old.name} (TRAIN.CHECKPOINT_KEEP "
                            f"{cfg.TRAIN.CHECKPOINT_KEEP})")
        if run.world > 1:
            dist.barrier()  # no rank goes on (or exits) before the checkpoint is on disk

    def preempted(where: str) -> Preempted:
        return Preempted(f"stopped on {stop.requested or 'a signal to another rank'} {where}; "
                         "checkpoint saved, run the same command to resume")

    def period_epoch(epoch, period, planned):
        """PySlowFast's rule (`multigrid.is_period_epoch`): every `period` epochs and the last;
        under multigrid, the plan's epochs, which the same rule made."""
        if run.multigrid_plan:
            return epoch + 1 in run.multigrid_plan[planned]
        return multigrid.is_period_epoch(epoch, s.MAX_EPOCH, None, 1, period)

    def precise_bn(epoch):
        """BN.USE_PRECISE_STATS: BN statistics over training batches at the default shape."""
        from slowfast_dist.train.loop import to_device
        from slowfast_dist.train.precise_bn import update_bn_stats

        if "loader" not in precise:  # the first few batches of an epoch: no workers kept
            precise["loader"] = run.loader("train", persistent=False)[1]
        loader, t0 = precise["loader"], time.perf_counter()
        loader.set_epoch(epoch)

        def forward(m, batch):
            inputs, boxes, _ = to_device(batch, run.device)
            with run.autocast():
                m(inputs, boxes)
        n = update_bn_stats(ckpt.unwrap(model), iter(loader),
                            min(cfg.BN.NUM_BATCHES_PRECISE, len(loader)), forward, run.world)
        run.log(f"precise BN: statistics over {n} batches at the default shape "
                f"({time.perf_counter() - t0:.1f} s)")

    def evaluate(epoch):
        last["mAP"] = run.evaluate(model, test["set"], test["loader"], f"epoch{epoch + 1:05d}",
                                   f"epoch {epoch + 1}/{s.MAX_EPOCH}")
        saved = ckpt.checkpoint_path(out, epoch)
        if run.rank == 0 and saved.exists() and not math.isnan(last["mAP"]):
            if history.record_best(out, epoch + 1, last["mAP"], saved):
                run.log(f"best so far: {saved.name} (mAP {last['mAP']:.4f})")
        if meter.board is not None:
            meter.board.evaluated(meter.global_step, last["mAP"])

    def on_epoch_end(epoch, stats):
        final = epoch + 1 == s.MAX_EPOCH
        if stats["stopped_at"]:
            save(epoch, stats["stopped_at"])
            raise preempted(f"in epoch {epoch + 1} after step {stats['stopped_at']} of "
                            f"{len(train_loader)}")
        mfu = f" (MFU {stats['mfu']:.1%})" if stats["mfu"] is not None else ""
        run.log(f"epoch {epoch + 1}/{s.MAX_EPOCH}: loss {stats['loss']:.4f} in "
                f"{stats['time_s']:.1f} s, "
                f"{stats['samples_per_s']:.1f} clips/s, {stats['samples_per_s_per_gpu']:.1f} "
                f"clips/s per GPU{mfu}, boundary {stats['epoch_boundary_s']:.3f} s, "
                f"skipped samples {stats['skipped_samples']}")
        saving = (period_epoch(epoch, cfg.TRAIN.CHECKPOINT_PERIOD, "checkpoint_epochs")
                  or meter.stop_agreed)
        evaluating = (cfg.TRAIN.EVAL_PERIOD > 0
                      and period_epoch(epoch, cfg.TRAIN.EVAL_PERIOD, "eval_epochs"))
        if cfg.BN.USE_PRECISE_STATS and not cfg.BN.FREEZE and (saving or evaluating):
            precise_bn(epoch)  # before the checkpoint, as PySlowFast
        if saving:
            save(epoch)
        if meter.stop_agreed and not final:
            raise preempted(f"at the end of epoch {epoch + 1}")
        if evaluating:
            evaluate(epoch)
        if run.world > 1:
            dist.barrier()  # no rank starts the next epoch while rank 0 is still scoring

    if found and start_epoch == s.MAX_EPOCH and not start_step and test:
        scored = run.final_map(out / f"map_epoch{s.MAX_EPOCH:05d}.json")
        if scored is not None:  # a finished run started again: its summary keeps its mAP
            last["mAP"] = scored
            run.log(f"epoch {s.MAX_EPOCH} was trained and evaluated already (mAP "
                    f"{scored:.4f}); nothing to do")
        else:
            # the run before trained to the end and stopped while scoring it (a file it could
            # not read, a node lost): score that last checkpoint now, not end without an mAP
            run.log(f"epoch {s.MAX_EPOCH} was trained but not evaluated: evaluating it now")
            evaluate(s.MAX_EPOCH - 1)
    with stop, maybe_profile(p.ENABLE, out, run.rank, p.WAIT, p.WARMUP, p.ACTIVE,
                             p.REPEAT) as prof:
        meter.profiler = prof
        fit(model, train_loader, optimizer, start_epoch=start_epoch, start_step=start_step,
            max_epoch=s.MAX_EPOCH, on_epoch_end=on_epoch_end, lr_at=lr_at,
            on_epoch_start=(StageSwitch(run.multigrid_plan, model, run.log, cfg.BN.FREEZE)
                            if grid.enabled else None),
            loss_fn=make_loss(cfg.MODEL.LOSS_FUNC), device=run.device, autocast=run.autocast,
            scaler=scaler, accum_steps=run.simulate * max(1, cfg.TRAIN.GRAD_ACCUM_STEPS),
            meter=meter)
    meter.profiler = None
    if hasattr(train_loader, "close"):
        train_loader.close()  # its persistent workers, now rather than when collected
    write_summary(timers, out / "profile_summary.json")
    history.keep(out / "profile_summary.json", run.attempt)
    if meter.board is not None:
        meter.board.close()
    run.finish()
    return run.summary(meter.last_loss, last["mAP"])


def test(cfg, info=None, why: str = "") -> dict:
    """Score a checkpoint (TEST.CHECKPOINT_FILE_PATH, else the newest in OUTPUT_DIR); `why`, a
    line for the log, says why a `train` command runs this."""
    run = Run(cfg, info)
    if why:
        run.log(why)
    if run.rank == 0:  # its summary, detections and mAP are kept there as a training run's are
        run.start_attempt()
    run.checked_eval_files()
    path = cfg.TEST.CHECKPOINT_FILE_PATH
    if path and cfg.TEST.CHECKPOINT_TYPE == "caffe2":  # a PySlowFast zoo .pkl
        from slowfast_dist.train.finetune import load_caffe2_for_test

        load_caffe2_for_test(run.model, path, log=run.log)
    elif path:
        from slowfast_dist.models import load_pyslowfast_checkpoint

        load_pyslowfast_checkpoint(run.model, path, skip_head=False, log=run.log,  # no random head
                                   full_unpickle=cfg.TEST.CHECKPOINT_FULL_UNPICKLE,
                                   switch="TEST.CHECKPOINT_FULL_UNPICKLE")
    else:
        found = ckpt.latest_good_checkpoint(run.out)
        if not found:
            raise UserError(f"{ckpt.checkpoint_dir(run.out)}: no checkpoint to test "
                            "(set TEST.CHECKPOINT_FILE_PATH)")
        ckpt.load_weights(run.model, found[1]["model_state"], found[0])
        run.log(f"testing {found[0]}")
    dataset, loader, _ = run.loader("test")
    map_ = run.evaluate(run.model, dataset, loader, "test")
    run.finish()
    return run.summary(None, map_)
