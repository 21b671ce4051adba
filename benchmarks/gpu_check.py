"""`make gpu-check OUT=dir`: what only a GPU shows, in one command (about 10 minutes on one H100
or H200; a device call that allows less runs a subset with --stages).

Stages, each bounded in time, each result written to OUT/gpu_check.json as soon as it is known
(a stage that fails records its error and the others still run):
1. cuda_tests: the tests marked `cuda` (`pytest -m cuda`), which skip with a reason elsewhere.
2. model_step: the real-size SlowFast R50 32x2 AVA train step at batch 8 (benchmarks/model_step.py):
   fp32 eager, bf16, bf16 + channels_last_3d, bf16 + torch.compile, fp16; clips/s and MFU.
3. loader_fed: the same model trained by the real loop, fed by the real loader (uint8 workers,
   device-side resample, prefetch to the GPU) from photo-like 640x360 JPEG frames, against the
   same loop on one batch already in GPU memory; for the CPU decoder (`auto`: libjpeg where
   it was built, else simplejpeg), the 4:2:0 planes (DATA.DECODER yuv420) and nvJPEG on the
   GPU (DATA.DECODER nvjpeg), at most 12 loader processes.
4. train_nccl: `torchrun --nproc_per_node 1` training end to end with the nccl backend on a
   synthetic set: finite loss, a checkpoint, mAP, a profiler trace with the step phases.
5. multigrid: the real-size train step at every shape of PySlowFast's multigrid plan for the
   AVA config against the default shape (benchmarks/multigrid_step.py): clips/s per stage, the
   first step of each new shape (cuDNN autotuning), the time the plan saves for the same epochs.

Without CUDA it says so in one line and exits 2. `--quick` runs every stage at toy sizes (on CPU
too): that is how the test suite checks this script's plumbing (tests/test_gpu_check.py).

    make gpu-check OUT=gpu_out            # Python with a CUDA torch; other packages from .whl/
    python benchmarks/gpu_check.py --out gpu_out [--quick] [--stages model_step,loader_fed]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("cuda_tests", "model_step", "loader_fed", "train_nccl", "multigrid")


def environment() -> dict:
    import torch

    from slowfast_dist.profiling import host

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": host.cpu_model(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run_logged(cmd, log: Path, timeout: float, env=None) -> dict:
    """Run `cmd` with its output in `log`; rc 124 when it ran past `timeout`."""
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                cwd=ROOT, env=env).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    return {"rc": rc, "seconds": round(time.time() - t0, 1), "tail": tail}


# ---- stages -------------------------------------------------------------------------------

def cuda_tests(args) -> dict:
    # a test that hangs writes every thread's stack to the log after 60 s
    out = run_logged([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p",
                      "no:cacheprovider", "-o", "faulthandler_timeout=60", "tests"],
                     args.out / "cuda_tests.log", args.budget(240))
    out["passed"] = out["rc"] == 0
    return out


def run_benchmark(args, name: str, options: list, cap: float) -> dict:
    """benchmarks/NAME.py with `options`, its log and JSON in OUT; the JSON as "result"."""
    target = args.out / f"{name}.json"
    out = run_logged([sys.executable, f"benchmarks/{name}.py", "--out", str(target), *options],
                     args.out / f"{name}.log", args.budget(cap))
    if target.exists():
        out["result"] = json.loads(target.read_text())
    return out


def model_step(args) -> dict:
    quick = args.quick
    return run_benchmark(args, "model_step", [
        "--size", "tiny" if quick else "real", "--rounds", "2" if quick else "12",
        "--warmup", "1" if quick else "3",
        "--compile" if not quick and not args.no_compile else "--no-compile"], 300)


def multigrid(args) -> dict:
    quick = args.quick
    return run_benchmark(args, "multigrid_step", [
        "--size", "tiny" if quick else "real", "--rounds", "1" if quick else "4",
        "--steps", "1" if quick else "5", "--warmup", "1" if quick else "2"], 240)


def make_textured_set(args) -> subprocess.Popen:
    """Started first, in the background: photo-like 640x360 frames take a minute to write."""
    size, videos, seconds = ("64x48", 4, 2) if args.quick else ("640x360", 8, 8)
    args.textured = Path(args.work) / f"textured_{size}"
    if (args.textured / "annotations").is_dir():
        return None
    return subprocess.Popen([sys.executable, "-m", "slowfast_dist.cli", "make-synthetic",
                             str(args.textured), "--size", size, "--texture", "--videos",
                             str(videos), "--seconds", str(seconds)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


class Repeat:
    """`steps` batches from an epoch loader, running on into its next epochs."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps
        self.dataset = getattr(loader, "dataset", None)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        pass

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        n, epoch = 0, 0
        while True:
            self.loader.set_epoch(epoch)
            for batch in self.loader:
                yield batch
                n += 1
                if n == self.steps:
                    return
            epoch += 1


class Take:
    """The next `steps` batches of one running iterator: successive measurements share the
    loader's workers and prefetch queue, as the epochs of a training run do (a fresh iterator
    per measurement would time the workers' start-up)."""

    def __init__(self, it, steps: int):
        self.it, self.steps = it, steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        pass

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield next(self.it)


def _forever(batch):
    while True:
        yield batch


def loader_fed(args) -> dict:
    """clips/s of the real loop fed by the real loader / the same loop on a resident batch,
    in alternating rounds on one running loader; and the loader's supply rate on its own."""
    import statistics

    import torch

    from slowfast_dist.config import load_config
    from slowfast_dist.data import build_ava_dataset, build_loader, jpeg
    from slowfast_dist.data.device import DeviceLoader, build_device_transform
    from slowfast_dist.models import build_model
    from slowfast_dist.train import trainer
    from slowfast_dist.train.loop import train_one_epoch
    from slowfast_dist.train.meters import StepMeter

    if args.maker is not None and args.maker.wait(timeout=args.budget(240)) != 0:
        raise RuntimeError(f"make-synthetic failed with exit status {args.maker.returncode}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # as the trainer does on a GPU
    data = args.textured
    opts = ["AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
            "AVA.ANNOTATION_DIR", str(data / "annotations"), "AVA.TRAIN_PREDICT_BOX_LISTS", "[]",
            "AVA.LABEL_MAP_FILE", "ava_action_list_v2.2.pbtxt", "NUM_GPUS", "1",
            "TRAIN.BATCH_SIZE", "8", "TRAIN.MIXED_PRECISION", "True", "MODEL.CHANNELS_LAST", "True"]
    if args.quick:  # fp32: bf16 convolutions are slow on CPUs
        opts += ["RESNET.DEPTH", "18", "RESNET.WIDTH_PER_GROUP", "8", "DATA.NUM_FRAMES", "8",
                 "DATA.TRAIN_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
                 "TRAIN.BATCH_SIZE", "2", "TRAIN.MIXED_PRECISION", "False"]
    cfg = load_config(str(ROOT / "configs/AVA/SLOWFAST_32x2_R50.yaml"), opts)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer = trainer.build_optimizer(model, lr=0.01, momentum=0.9, dampening=0.0,
                                        nesterov=True, weight_decay=1e-4, bn_weight_decay=0.0)
    autocast = trainer.make_autocast(device, cfg.TRAIN.MIXED_PRECISION, "bf16")
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    dataset = build_ava_dataset(cfg, "train")
    batch = cfg.TRAIN.BATCH_SIZE
    warm, steps, rounds = (1, 2, 1) if args.quick else (24, 60, 3)

    def train(it, n) -> float:
        meter = StepMeter(rank=0, world_size=1, device=device, log_period=10 ** 6,
                          stream=open(os.devnull, "w"))
        return train_one_epoch(model, Take(it, n), optimizer, epoch=0, lr_at=lambda e: 0.01,
                               loss_fn=torch.nn.BCEWithLogitsLoss(), device=device,
                               autocast=autocast, scaler=scaler, accum_steps=1,
                               meter=meter)["samples_per_s"]

    def supply(it, n, queued) -> float:
        """clips/s the loader delivers with nothing else running, after the `queued` batches
        prefetched while nobody was consuming."""
        for _ in range(queued):
            next(it)
        t0 = time.perf_counter()
        for _ in range(n):
            x = next(it)
        x["inputs"][0].sum().item()  # the last batch's transform has finished on the device
        return n * batch / (time.perf_counter() - t0)

    transform = build_device_transform(cfg)
    result = {"config": "configs/AVA/SLOWFAST_32x2_R50.yaml, bf16 + channels_last_3d",
              "batch": batch, "frames": str(data), "warmup_steps": warm, "steps": steps,
              "rounds": rounds, "runs": [],
              "method": "per decoder: one persistent loader and one running device prefetcher. "
                        f"{warm} warm-up training steps; the loader alone for {steps} batches "
                        "after draining what it had queued (supply); "
                        f"{steps} steps on a batch already on the device (resident); "
                        f"{rounds + 1} back-to-back rounds of {steps} steps fed by the loader, "
                        "the first dropped (it starts on the batches queued meanwhile); "
                        f"{steps} resident steps again. fed_over_resident: median fed round "
                        "over the mean of the two resident rounds"}
    for decoder, workers in args.decoders:
        if time.time() > args.deadline - 60:
            result["runs"].append({"decoder": decoder, "workers": workers,
                                   "error": "skipped: out of the time budget"})
            continue
        dataset.decoder = decoder
        epoch_loader = build_loader(dataset, batch, shuffle=True, drop_last=True,
                                    num_workers=workers, pin_memory=device.type == "cuda",
                                    persistent=True, rank=0, world_size=1, seed=0)
        decode = jpeg.batch_decoder(decoder) if decoder in jpeg.BATCH_DECODERS else None
        prefetcher = DeviceLoader(Repeat(epoch_loader, 10 ** 9), device, transform, decode,
                                  thread=args.prefetch_thread)
        fed = iter(prefetcher)
        queued = 2 * max(workers, 1) + prefetcher.depth + 1  # DataLoader's prefetch_factor 2
        train(fed, warm)  # cudnn autotune, workers started
        rate_alone = supply(fed, steps, queued)
        resident_it = _forever(next(fed))
        resident = [train(resident_it, steps)]
        fed_rounds = [train(fed, steps) for _ in range(rounds + 1)][1:]
        resident.append(train(resident_it, steps))
        base = statistics.mean(resident)
        ratios = sorted(f / base for f in fed_rounds)
        result["runs"].append({
            "decoder": decoder, "workers": workers, "prefetch_thread": prefetcher.thread,
            "fed_clips_per_s": statistics.median(fed_rounds),
            "resident_clips_per_s": base,
            "fed_over_resident": statistics.median(ratios),
            "fed_over_resident_min_max": [ratios[0], ratios[-1]],
            "loader_alone_clips_per_s": rate_alone,
            "fed_rounds_clips_per_s": fed_rounds, "resident_rounds_clips_per_s": resident})
        fed.close()  # stops the prefetch thread
        epoch_loader.close()  # and the workers, before the next decoder's are forked
        del epoch_loader, prefetcher, fed, resident_it
        # anything else left in a reference cycle goes now, not inside the next loader's forked
        # workers, where its clean-up would act on processes that are not theirs
        gc.collect()
    return result


def train_nccl(args) -> dict:
    """A real 1-GPU run (torchrun, nccl) of the demo config with the profiler on."""
    data = Path(args.work) / "demo_set"
    if not (data / "annotations").is_dir():
        subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "make-synthetic", str(data),
                        "--videos", "4" if args.quick else "8", "--seconds", "4"], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    out = Path(args.work) / "train_nccl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           "-m", "slowfast_dist.cli", "train", "--cfg", "configs/demo.yaml",
           "AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
           "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out),
           "SOLVER.MAX_EPOCH", "2", "TRAIN.EVAL_PERIOD", "2", "TRAIN.CHECKPOINT_PERIOD", "1",
           "NUM_GPUS", "1", "TRAIN.BATCH_SIZE", "4", "PROFILE.ENABLE", "True", "LOG_PERIOD", "2",
           "DATA_LOADER.NUM_WORKERS", "2"]
    res = run_logged(cmd, args.out / "train_nccl.log", args.budget(180),
                     env={**os.environ, "OMP_NUM_THREADS": "1"})
    summary = _json(out / "summary.json")
    trace_names = set()
    for trace in (out / "profile").glob("rank0.*"):
        trace_names |= {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
    profile = _json(out / "profile_summary.json")
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("*.pyth"))
    res.update({
        "summary": summary, "checkpoints": checkpoints,
        "backend_nccl": "backend nccl" in (args.out / "train_nccl.log").read_text(),
        "phases_in_trace": sorted(trace_names & {"data_wait", "forward_backward",
                                                  "optimizer_step"}),
        "split": profile.get("split") if profile else None,
        "finite_loss": bool(summary and summary.get("last_loss") is not None
                            and math.isfinite(summary["last_loss"])),
    })
    res["passed"] = (res["rc"] == 0 and res["finite_loss"] and bool(checkpoints)
                     and summary.get("mAP") is not None and len(res["phases_in_trace"]) == 3)
    return res


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


# ---- driver -------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and logs")
    ap.add_argument("--work", default="/tmp/slowfast_gpu_check", help="synthetic data, runs")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    ap.add_argument("--quick", action="store_true", help="toy sizes; runs without CUDA too")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--minutes", type=float, default=11, help="time budget for all stages")
    ap.add_argument("--decoders", dest="decoders_arg",
                    help="loader_fed runs as DECODER:WORKERS,... (default: AUTO:12,"
                         "yuv420:12,nvjpeg:6, and dali:6 where installed; AUTO is what "
                         "DATA.DECODER auto picks)")
    ap.add_argument("--prefetch-thread", choices=("on", "off"),
                    help="loader_fed: the device prefetcher's thread (default: on with CUDA)")
    args = ap.parse_args(argv)
    args.prefetch_thread = None if args.prefetch_thread is None else args.prefetch_thread == "on"
    import torch

    if not torch.cuda.is_available() and not args.quick:
        print("gpu-check: no CUDA GPU visible to this Python (torch "
              f"{torch.__version__}); nothing to check", file=sys.stderr)
        return 2
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        print(f"gpu-check: unknown stage(s) {sorted(unknown)}; choose from {STAGES}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    args.deadline = time.time() + args.minutes * 60
    args.budget = lambda cap: max(10.0, min(cap, args.deadline - time.time()))
    # (decoder, loader processes); nvjpeg workers only read bytes, so fewer of them suffice
    # yuv420: the workers ship 4:2:0 planes (half the bytes), converted on the GPU
    from slowfast_dist.data import jpeg

    cpu = jpeg.resolve_decoder("auto")  # libjpeg where it was built, else simplejpeg
    args.decoders = ([(cpu, 2), ("yuv420", 2)] if args.quick else
                     [(cpu, 12), ("yuv420", 12), ("nvjpeg", 6)])

    if not args.quick and jpeg.installed("dali"):  # where DALI is installed (1 GB)
        args.decoders += [("dali", 6)]
    if args.decoders_arg:
        args.decoders = [(d, int(n)) for d, n in
                         (x.split(":") for x in args.decoders_arg.split(","))]
    args.maker = make_textured_set(args) if "loader_fed" in stages else None
    report = {"environment": environment(), "quick": args.quick, "stages": {}}
    path = args.out / "gpu_check.json"
    for name in stages:
        t0 = time.time()
        print(f"gpu-check: {name} ...", flush=True)
        try:
            result = globals()[name](args)
        except Exception as e:  # noqa: BLE001 - one broken stage must not hide the others
            result = {"error": f"{type(e).__name__}: {e}"}
        result["stage_seconds"] = round(time.time() - t0, 1)
        report["stages"][name] = result
        path.write_text(json.dumps(report, indent=1, default=str))
        print(f"gpu-check: {name} done in {result['stage_seconds']} s"
              + (f" ({result['error']})" if "error" in result else ""), flush=True)
    print(summary_table(report))
    return 0


def summary_table(report: dict) -> str:
    env, st = report["environment"], report["stages"]
    lines = [f"{env['device']}  torch {env['torch']}  CUDA {env['cuda']}  cuDNN {env['cudnn']}"]
    if "cuda_tests" in st:
        lines.append(f"cuda tests: rc {st['cuda_tests'].get('rc')}  "
                     f"{' '.join(st['cuda_tests'].get('tail', [])[-1:])}")
    step = st.get("model_step", {}).get("result") or {}
    for name, r in step.get("variants", {}).items():
        if r.get("error"):
            lines.append(f"step {name:10s} error: {r['error'][:100]}")
            continue
        m = r.get("mfu")
        x = (step.get("speedup_vs_fp32", {}).get(name) or {}).get("median")
        lines.append(f"step {name:10s} {r.get('clips_per_s', 0):8.1f} clips/s  "
                     f"MFU {'-' if m is None else f'{m:.1%}'}  x fp32 "
                     f"{'-' if x is None else f'{x:.2f}'}")
    for r in st.get("loader_fed", {}).get("runs", []):
        if "error" in r:
            lines.append(f"fed {r['decoder']:10s} x{r['workers']:<2d} {r['error']}")
            continue
        lines.append(f"fed {r['decoder']:10s} x{r['workers']:<2d} {r['fed_clips_per_s']:8.1f} "
                     f"clips/s vs resident {r['resident_clips_per_s']:.1f} "
                     f"({r['fed_over_resident']:.0%}); loader alone "
                     f"{r['loader_alone_clips_per_s']:.1f}")
    if "train_nccl" in st:
        t = st["train_nccl"]
        lines.append(f"train nccl: passed {t.get('passed')}  mAP "
                     f"{(t.get('summary') or {}).get('mAP')}  phases {t.get('phases_in_trace')}")
    grid = ((st.get("multigrid") or {}).get("result") or {}).get("projection")
    if grid:
        lines.append("multigrid: " + ", ".join(f"stage {s['stage']} {s['clips_per_s']:.0f} clips/s"
                                               for s in grid["stages"])
                     + f"; same epochs {grid['speedup_same_epochs']:.2f}x less time")
    for name, r in st.items():
        if "error" in r:
            lines.append(f"{name}: ERROR {r['error'][:200]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
