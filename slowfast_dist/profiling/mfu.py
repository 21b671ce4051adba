"""Model FLOPs utilisation: FLOPs per clip of a model, and the device's peak rate.

MFU = achieved model FLOP/s / peak FLOP/s, with the model's FLOPs counted for forward + backward
as 3x the forward (backward ~ 2x forward). fvcore, and so PySlowFast's and `model-info`'s
"GFLOPs", counts one multiply-add as one flop; peaks are quoted in real flops (a multiply-add
is two), so `clip_train_flops` doubles fvcore's count.

Peaks are the dense (no sparsity) datasheet figures of the precision the step runs in. fp32 on
NVIDIA GPUs since Ampere runs convolutions in TF32 (torch's default `cudnn.allow_tf32`), so an
fp32 step is measured against the TF32 peak there. `PROFILE.PEAK_TFLOPS` overrides the table.
"""

from __future__ import annotations

# (substring of torch.cuda.get_device_name(), {precision: dense TFLOP/s}); first match wins,
# so the more specific names come first.
PEAK_TFLOPS = [
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM
    ("H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("GH200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("B200", {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp32": 75.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("A10G", {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 31.2}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),  # the study's GPU: no bf16, no TF32
]


def step_precision(amp_dtype: str | None, device_name: str, tf32_convs: bool = True) -> str:
    """Which peak applies: bf16/fp16 under autocast, tf32 for fp32 convolutions on GPUs that
    have it (Ampere and newer, where torch uses it by default), else fp32."""
    if amp_dtype in ("bf16", "fp16"):
        return amp_dtype
    table = peak_table(device_name)
    return "tf32" if tf32_convs and table and "tf32" in table else "fp32"


def peak_table(device_name: str) -> dict | None:
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks
    return None


def peak_tflops(device_name: str, precision: str, override: float = 0.0) -> float | None:
    """Dense peak TFLOP/s of `device_name` at `precision`; `override` > 0 wins; None if unknown
    (a CPU, or a GPU missing from the table: then no MFU is shown)."""
    if override > 0:
        return float(override)
    table = peak_table(device_name)
    return None if table is None else table.get(precision)


def flop_analysis(model, inputs, boxes=None):
    """fvcore's analysis of one forward pass in eval mode, traced here with its warnings
    silenced; its per-operator and per-module counts are then read without tracing again."""
    import logging
    import warnings

    import torch
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fca = FlopCountAnalysis(model, (inputs, boxes) if boxes is not None else (inputs,))
            fca.unsupported_ops_warnings(False)
            fca.uncalled_modules_warnings(False)
            fca.by_operator()  # the trace runs now, inside the silenced block
            return fca
    finally:
        model.train(was_training)


def conv_macs(fca) -> float:
    """Multiply-adds counted as PySlowFast's GFLOPs are: conv, linear, matmul; not norms."""
    return float(sum(v for k, v in fca.by_operator().items() if not k.endswith("norm")))


def forward_macs(model, inputs, boxes=None) -> float:
    """Multiply-adds of one forward pass (fvcore's 'flops'), the convention of `model-info`."""
    return conv_macs(flop_analysis(model, inputs, boxes))


def clip_train_flops(forward_macs_per_clip: float) -> float:
    """Real flops of one training clip: forward + backward = 3 forwards, 2 flops per MAC."""
    return 3 * 2 * forward_macs_per_clip


def mfu(clips_per_s: float, train_flops_per_clip: float, peak: float | None) -> float | None:
    """Fraction of the peak (None when the peak is unknown)."""
    if not peak:
        return None
    return clips_per_s * train_flops_per_clip / (peak * 1e12)
