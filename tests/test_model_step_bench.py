"""benchmarks/model_step.py: `run()` on a tiny model returns a complete, consistent result."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_step():
    # benchmarks/ is not a package: load the script by path, as a GPU check script would
    spec = importlib.util.spec_from_file_location("model_step", ROOT / "benchmarks/model_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(model_step):
    return model_step.run("cpu", compile_=False, rounds=2, warmup=1, size="tiny")


def test_every_cpu_variant_is_timed(result):
    assert set(result["variants"]) == {"fp32", "bf16", "bf16_cl"}
    for name, r in result["variants"].items():
        assert r["error"] is None, name
        for key in ("step_s", "wall_step_s"):
            s = r[key]
            assert 0 < s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"], (name, key)
        assert r["clips_per_s"] == pytest.approx(result["batch"] / r["step_s"]["median"])
        assert r["achieved_tflops"] > 0


def test_speedups_are_per_round_ratios_to_fp32(result):
    speedups = result["speedup_vs_fp32"]
    assert set(speedups) == set(result["variants"])
    assert speedups["fp32"] == {"median": 1.0, "min": 1.0, "max": 1.0, "q1": 1.0, "q3": 1.0}
    for s in speedups.values():
        assert 0 < s["min"] <= s["median"] <= s["max"]


def test_cpu_has_no_peak_so_no_mfu(result):
    assert result["cuda"] is None and result["cudnn"] is None
    assert result["clock"] == "cpu" and result["threads"] == 1
    for r in result["variants"].values():
        assert r["peak_tflops"] is None and r["mfu"] is None and r["cuda_peak_mib"] is None


def test_flops_and_description_are_reported(result, model_step):
    assert result["forward_gmacs_per_clip"] > 0
    assert result["train_gflops_per_clip"] == pytest.approx(6 * result["forward_gmacs_per_clip"])
    assert result["model"]["crop_px"] == model_step.SIZES["tiny"][1]
    assert result["rounds"] == 2 and "round" in result["method"]
    json.dumps(result)  # the script writes it as JSON


def test_failing_variant_records_error_and_others_continue(model_step, monkeypatch):
    real_build = model_step.build_step

    def build(variant, *args):
        if variant.name == "bf16":
            raise RuntimeError("no kernel for this variant")
        return real_build(variant, *args)

    monkeypatch.setattr(model_step, "build_step", build)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = model_step.run("cpu", compile_=False, rounds=1, warmup=1, size="tiny")
        assert torch.get_num_threads() == 2  # run() times on one thread, then gives it back
    finally:
        torch.set_num_threads(threads)
    assert out["variants"]["bf16"]["error"] == "RuntimeError: no kernel for this variant"
    assert out["variants"]["bf16"]["step_s"] is None
    assert "bf16" not in out["speedup_vs_fp32"]
    assert out["variants"]["bf16_cl"]["step_s"]["median"] > 0
