"""Forward+backward clips/s and achieved TFLOP/s of the SlowFast R50 AVA model (32x2, 224 px)
for each speed path (channels_last_3d, autocast, compile). On CPU a reduced size is used
(stated in the JSON). Usage: python benchmarks/model_step.py [--out benchmarks/results/model_step.json]"""
import argparse
import itertools
import json
import time

import torch

from slowfast_dist.models import VideoResNet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/model_step.json")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    real = dev == "cuda"
    width, size, frames, batch = (64, 224, 32, 8) if real else (16, 96, 16, 2)
    kw = dict(arch="slowfast", num_classes=80, depth=50, width_per_group=width, alpha=4,
              fusion_kernel=7, detection=True, head_act="sigmoid",
              spatial_strides=((1, 1), (2, 2), (2, 2), (1, 1)),
              spatial_dilations=((1, 1), (1, 1), (1, 1), (2, 2)))
    # Forward FLOPs by fvcore convention (1 MAC = 1 flop); training step ~ 3x forward.
    from fvcore.nn import FlopCountAnalysis
    m0 = VideoResNet(**kw).eval()
    xs1 = [torch.zeros(1, 3, frames // 4, size, size), torch.zeros(1, 3, frames, size, size)]
    b1 = torch.tensor([[0, 10.0, 10.0, size - 10.0, size - 10.0]])
    fca = FlopCountAnalysis(m0, (xs1, b1))
    fca.unsupported_ops_warnings(False)
    fwd_flops = sum(v for k, v in fca.by_operator().items() if not k.endswith("norm"))
    results = []
    amps = [None, torch.bfloat16] + ([torch.float16] if real else [])
    for cl, amp, comp in itertools.product([False, True], amps, [False, True] if a.compile else [False]):
        m = VideoResNet(**kw).to(dev).train()
        if cl:
            m = m.to(memory_format=torch.channels_last_3d)
        step = torch.compile(m) if comp else m
        xs = [torch.randn(batch, 3, frames // 4, size, size, device=dev),
              torch.randn(batch, 3, frames, size, size, device=dev)]
        if cl:
            xs = [x.contiguous(memory_format=torch.channels_last_3d) for x in xs]
        boxes = torch.tensor([[i, 10.0, 10.0, size - 10.0, size - 10.0] for i in range(batch)], device=dev)
        def once():
            with torch.autocast(dev, dtype=amp, enabled=amp is not None):
                out = step(xs, boxes)
            out.float().sum().backward()
        once()  # warm-up
        if real:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(a.iters):
            once()
        if real:
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / a.iters
        results.append({"channels_last": cl, "amp": str(amp), "compile": comp,
                        "clips_per_s": batch / dt,
                        "tflops": 3 * fwd_flops * batch / dt / 1e12})
        print(results[-1], flush=True)
    name = torch.cuda.get_device_name() if real else "cpu"
    out = {"device": name, "torch": torch.__version__,
           "size": "real (R50, width 64, 32x2, 224 px)" if real else
                   f"reduced for CPU: R50 width {width}, {frames} fast frames, {size} px",
           "batch": batch, "forward_gflops_per_clip": fwd_flops / 1e9, "results": results}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
