"""benchmarks/gpu_check.py (`make gpu-check`): without CUDA it refuses in one line; its stages run
end to end at toy sizes (--quick), so the GPU run finds no broken plumbing."""
import json
import subprocess
import sys

import pytest
import torch


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "benchmarks/gpu_check.py", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_without_cuda_one_line_and_exit_2(tmp_path):
    r = run("--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no CUDA GPU" in r.stderr
    assert not (tmp_path / "out").exists()


def test_quick_stages_run_end_to_end_and_write_the_json(tmp_path):
    out = tmp_path / "out"
    r = run("--out", str(out), "--quick", "--work", str(tmp_path / "work"),
            "--stages", "loader_fed,train_nccl,multigrid")  # model_step: test_model_step_bench
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert {"device", "torch", "cuda", "cudnn", "cpu_model"} <= set(report["environment"])
    stages = report["stages"]
    assert not [name for name, s in stages.items() if "error" in s], stages
    runs = stages["loader_fed"]["runs"]
    from slowfast_dist.data import jpeg

    assert [r["decoder"] for r in runs] == [jpeg.resolve_decoder("auto"), "yuv420"]
    assert all(r["fed_clips_per_s"] > 0 and r["resident_clips_per_s"] > 0 for r in runs)
    nccl = stages["train_nccl"]
    assert nccl["passed"], nccl  # finite loss, a checkpoint, an mAP, the phases in the trace
    assert "train nccl: passed True" in r.stdout
    grid = stages["multigrid"]["result"]
    assert grid["entries"][0]["name"] == "baseline" and len(grid["entries"]) > 4
    assert all(e["clips_per_s"] > 0 for e in grid["entries"])
    p = grid["projection"]  # the stages' epochs add up to the stretched run
    assert sum(s["epochs"][1] - s["epochs"][0] for s in p["stages"]) == p["multigrid_epochs"]
    assert p["speedup_same_epochs"] > 0 and "multigrid: stage 1 " in r.stdout
