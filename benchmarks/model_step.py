"""Train-step time, clips/s, achieved TFLOP/s and MFU of the SlowFast R50 AVA detector (32x2,
224 px, batch 8) for each speed path: fp32 eager, bf16 autocast, bf16 + channels_last_3d,
bf16 + torch.compile, and fp16 on CUDA.

A train step is what training runs: forward, BCE loss, backward, SGD step. Every variant is built
once from the same weights and warmed up; then each round times one step of every variant in
turn, so machine noise hits all of them alike. Speed-ups are fp32's step time over the variant's
in the same round (median over rounds). On CPU the clock is process CPU time with one thread
(steadier than wall time on a shared machine) and the model is reduced (stated in the JSON).

    .venv/bin/python benchmarks/model_step.py [--rounds N] [--warmup 3] [--compile]
        [--size real|reduced|tiny] [--out benchmarks/results/model_step.json]

From another script (benchmarks/ is not a package; load the file by path):

    import importlib.util
    spec = importlib.util.spec_from_file_location("model_step", "benchmarks/model_step.py")
    model_step = importlib.util.module_from_spec(spec); spec.loader.exec_module(model_step)
    result = model_step.run("cuda", compile_=True, rounds=20, warmup=3, size="real")

(`from benchmarks.model_step import run` also works with the repository root on sys.path.)
"""

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from slowfast_dist.models import VideoResNet
from slowfast_dist.profiling import host, mfu

# name -> (width_per_group, crop px, fast frames, batch); "real" is the AVA training setting
SIZES = {
    "real": (64, 224, 32, 8),
    "reduced": (16, 96, 16, 2),
    "tiny": (8, 32, 8, 1),
}
ALPHA = 4  # 32x2: the Slow pathway sees every 4th of the Fast pathway's frames
NUM_CLASSES = 80
# AVA has about 3 persons per keyframe: a near, a middle and a far one (fraction of the crop)
BOX_HEIGHTS = (0.9, 0.6, 0.3)
AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Variant:
    name: str
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False


def variants_for(device: str, compile_: bool) -> list[Variant]:
    out = [Variant("fp32"), Variant("bf16", "bf16"), Variant("bf16_cl", "bf16", channels_last=True)]
    if compile_:
        out.append(Variant("bf16_compile", "bf16", compile=True))
    if device == "cuda":
        out.append(Variant("fp16", "fp16"))
    return out


def build_model(width: int) -> VideoResNet:
    # the AVA detector of PySlowFast's SLOWFAST_32x2_R50_SHORT config: dilated res5, RoI head
    return VideoResNet(arch="slowfast", num_classes=NUM_CLASSES, depth=50, width_per_group=width,
                       alpha=ALPHA, fusion_kernel=7, detection=True, head_act="sigmoid",
                       spatial_strides=((1, 1), (2, 2), (2, 2), (1, 1)),
                       spatial_dilations=((1, 1), (1, 1), (1, 1), (2, 2)))


def make_boxes(batch: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    """[3 * batch, 5] person-shaped boxes (batch index, x1, y1, x2, y2) in crop pixels."""
    rows = []
    for b in range(batch):
        for frac in BOX_HEIGHTS:
            h, w = frac * crop, 0.5 * frac * crop
            x1 = float(torch.rand(1, generator=gen)) * (crop - w)
            y1 = float(torch.rand(1, generator=gen)) * (crop - h)
            rows.append([b, x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows)


def make_batch(batch: int, crop: int, frames: int, gen: torch.Generator):
    """Random clips (never zeros: some kernels shortcut them), boxes and multi-hot labels."""
    inputs = [torch.randn(batch, 3, frames // ALPHA, crop, crop, generator=gen),
              torch.randn(batch, 3, frames, crop, crop, generator=gen)]
    boxes = make_boxes(batch, crop, gen)
    labels = (torch.rand(len(boxes), NUM_CLASSES, generator=gen) < 0.05).float()
    return inputs, boxes, labels


def build_step(variant: Variant, base: torch.nn.Module, batch, device: str):
    """A closure running one train step of `variant` on its own copy of the model and inputs."""
    model = copy.deepcopy(base).to(device).train()
    inputs, boxes, labels = batch
    inputs, boxes, labels = [x.to(device) for x in inputs], boxes.to(device), labels.to(device)
    if variant.channels_last:  # both, or the convolutions convert back and forth
        model = model.to(memory_format=torch.channels_last_3d)
        inputs = [x.contiguous(memory_format=torch.channels_last_3d) for x in inputs]
    forward = torch.compile(model) if variant.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-7)
    # fp16 needs loss scaling to train; a disabled scaler is a plain backward + step
    scaler = torch.amp.GradScaler(device, enabled=variant.amp == "fp16")
    dtype = AMP_DTYPES[variant.amp]

    def step():
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = forward(inputs, boxes)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, device: str) -> dict:
    """Seconds of one step: by CUDA events (GPU time) or process CPU time, plus wall time."""
    if device == "cuda":
        torch.cuda.synchronize()  # the previous variant's work is not counted here
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        wall = time.perf_counter()
        start.record()
        step()
        end.record()
        end.synchronize()
        return {"cuda": start.elapsed_time(end) / 1e3, "wall": time.perf_counter() - wall}
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def error_text(exc: BaseException) -> str:
    """The exception's type and first line (compile errors run to pages)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"


def prepare(variants, base, batch, device, warmup):
    """Build and warm up each variant in turn: {name: step} and {name: error or peak memory}."""
    steps, info = {}, {}
    for v in variants:
        print(f"model_step: building and warming up {v.name}", file=sys.stderr, flush=True)
        info[v.name] = {"error": None, "cuda_peak_mib": None}
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        try:
            step = build_step(v, base, batch, device)
            for _ in range(warmup):
                step()
        except Exception as exc:  # e.g. torch.compile without a working toolchain
            info[v.name]["error"] = error_text(exc)
            continue
        if device == "cuda":  # this variant's model, optimizer, inputs and activations
            torch.cuda.synchronize()
            info[v.name]["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        steps[v.name] = step
    return steps, info


def time_rounds(steps: dict, device: str, rounds: int, info: dict) -> dict:
    """{name: [per-round {clock: s}]}; the start rotates each round so no variant always follows
    the same one. A variant that fails mid-run is dropped with its error recorded."""
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            try:
                times[name].append(timed(steps[name], device))
            except Exception as exc:
                info[name]["error"] = error_text(exc)
                del times[name]
        names = [n for n in names if n in times]
        if (r + 1) % max(1, rounds // 5) == 0:
            print(f"model_step: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return times


def spread(values) -> dict:
    """Median, extremes and quartiles: on a shared machine a few rounds hit by a neighbour set
    min and max, while the quartiles show where most rounds fall."""
    q1, q3 = values[0], values[0]
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q1, "q3": q3}


def speedups(times: dict, clock: str, baseline: str = "fp32") -> dict:
    """Per round, baseline step time / variant step time (>1: faster than fp32)."""
    if baseline not in times:
        return {name: None for name in times}
    base = [t[clock] for t in times[baseline]]
    return {name: spread([b / t[clock] for b, t in zip(base, ts)]) for name, ts in times.items()}


def summarise(v: Variant, ts, info, clock, batch, train_flops, device_name) -> dict:
    precision = mfu.step_precision(v.amp, device_name)
    peak = mfu.peak_tflops(device_name, precision) if clock == "cuda" else None
    out = {"amp": v.amp, "channels_last": v.channels_last, "compile": v.compile,
           "precision": precision, "step_s": None, "wall_step_s": None, "clips_per_s": None,
           "achieved_tflops": None, "peak_tflops": peak, "mfu": None, **info}
    if ts:
        out["step_s"] = spread([t[clock] for t in ts])
        out["wall_step_s"] = spread([t["wall"] for t in ts])
        clips = batch / out["step_s"]["median"]
        out.update(clips_per_s=clips, achieved_tflops=clips * train_flops / 1e12,
                   mfu=mfu.mfu(clips, train_flops, peak))
    return out


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({host.cpu_model()})"


def environment(device: str) -> dict:
    cuda = device == "cuda"
    return {"device": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "threads": torch.get_num_threads()}


def size_info(size: str) -> dict:
    width, crop, frames, batch = SIZES[size]
    return {"size": size, "batch": batch, "boxes_per_clip": len(BOX_HEIGHTS),
            "model": {"arch": "slowfast 32x2 AVA detector", "depth": 50, "width_per_group": width,
                      "crop_px": crop, "fast_frames": frames, "slow_frames": frames // ALPHA}}


def method(device: str, warmup: int, rounds: int) -> str:
    clock = ("CUDA events around each step (synchronized before it)" if device == "cuda"
             else "process CPU time, 1 thread")
    return (f"train step = forward + BCE loss backward + SGD step; variants built once from the "
            f"same weights, {warmup} warm-up steps each, then {rounds} rounds timing one step of "
            f"every variant in turn (start rotated per round); clock: {clock}; speed-up = fp32 "
            f"step time / variant step time in the same round, median, quartiles and extremes over "
            f"rounds; clips/s and TFLOP/s from the median step time")


def run(device: str, *, compile_: bool, rounds: int, warmup: int, size: str) -> dict:
    """Build the variants, time them interleaved, and return the result (the JSON's dict)."""
    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if device == "cpu":
        torch.set_num_threads(1)  # steadier per-step times than two threads on a shared machine
    else:
        torch.backends.cudnn.benchmark = True  # as the trainer does: the clip shapes are fixed
    try:
        return _run(device, compile_, rounds, warmup, size)
    finally:  # the caller's settings come back
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _run(device, compile_, rounds, warmup, size):
    width, crop, frames, batch_size = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    base = build_model(width)
    clip_inputs, clip_boxes, _ = make_batch(1, crop, frames, gen)
    macs = mfu.forward_macs(base.to(device), [x.to(device) for x in clip_inputs],
                            clip_boxes.to(device))
    train_flops = mfu.clip_train_flops(macs)
    variants = variants_for(device, compile_)
    steps, info = prepare(variants, base, make_batch(batch_size, crop, frames, gen), device, warmup)
    clock = "cuda" if device == "cuda" else "cpu"
    times = time_rounds(steps, device, rounds, info)
    env = environment(device)
    results = {v.name: summarise(v, times.get(v.name), info[v.name], clock, batch_size,
                                 train_flops, env["device"]) for v in variants}
    return {**env, **size_info(size), "rounds": rounds, "warmup": warmup, "clock": clock,
            "forward_gmacs_per_clip": macs / 1e9, "train_gflops_per_clip": train_flops / 1e9,
            "variants": results, "speedup_vs_fp32": speedups(times, clock),
            "method": method(device, warmup, rounds)}


def fmt_spread(s, scale=1.0, digits=2) -> str:
    if not s:
        return "-"
    return (f"{s['median'] * scale:.{digits}f} [{s['min'] * scale:.{digits}f}, "
            f"{s['max'] * scale:.{digits}f}]")


def table(result: dict) -> str:
    head = (f"{'variant':<13} {'step ms median [min, max]':<28} {'clips/s':>8} "
            f"{'speed-up vs fp32':<24} {'TFLOP/s':>8} {'MFU':>6} {'MiB':>7}")
    lines = [f"{result['device']}, size {result['size']}, clock {result['clock']}", head]
    for name, r in result["variants"].items():
        if r["error"]:
            lines.append(f"{name:<13} failed: {r['error']}")
            continue
        mfu_text = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['cuda_peak_mib']:.0f}" if r["cuda_peak_mib"] is not None else "-"
        lines.append(f"{name:<13} {fmt_spread(r['step_s'], 1e3, 1):<28} {r['clips_per_s']:>8.2f} "
                     f"{fmt_spread(result['speedup_vs_fp32'].get(name), 1.0, 3):<24} "
                     f"{r['achieved_tflops']:>8.4f} {mfu_text:>6} {mem:>7}")
    for i, medians in enumerate(result.get("repeats", {}).get("median_speedups", [])):
        lines.append(f"run {i + 1} median speed-ups: "
                     + ", ".join(f"{n} {v:.3f}" for n, v in medians.items()))
    return "\n".join(lines)


def repeat_summary(results: list[dict]) -> dict:
    """Each run's median speed-ups, and how far the runs lie apart (largest / smallest - 1)."""
    medians = [{n: s["median"] for n, s in r["speedup_vs_fp32"].items() if s} for r in results]
    names = [n for n in medians[-1] if all(n in m for m in medians)]
    return {"median_speedups": medians,
            "relative_range": {n: max(m[n] for m in medians) / min(m[n] for m in medians) - 1
                               for n in names}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/model_step.json")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed rounds (default: 30 on CUDA; 120 on CPU, whose steps vary more)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="time bf16 + torch.compile (default: on CUDA only; slow to start on CPU)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the whole benchmark N times; the JSON is the last run's plus each "
                         "run's median speed-ups, to check they agree")
    ap.add_argument("--size", choices=sorted(SIZES), default=None,
                    help="model size (default: real on CUDA, reduced on CPU)")
    a = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compile_ = device == "cuda" if a.compile is None else a.compile
    size = a.size or ("real" if device == "cuda" else "reduced")
    rounds = a.rounds or (30 if device == "cuda" else 120)
    results = [run(device, compile_=compile_, rounds=rounds, warmup=a.warmup, size=size)
               for _ in range(a.repeats)]
    result = results[-1]
    if a.repeats > 1:
        result["repeats"] = repeat_summary(results)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result))


if __name__ == "__main__":
    main()
