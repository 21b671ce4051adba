"""scaling-model against the study's figures (paper.md, 'Scaling' list = Fig. 3, and Table 4).

Checked here (each within 15 %): the 1-node run time, the 32/64-node run times before and after the
RepeatSampler fix, the 19.7x and 34.5x speed-ups at 64 nodes, Table 4's compute/communication shares
at 32, 64 and 128 nodes, and "communication time at 128 nodes ~1.8x that at 64" read per step (Table
4 comes from per-iteration profiles). Not reproduced, so not claimed: "128 nodes worse than 64". It
needs the 1.8x read as run totals instead (T128 = 1.8 * 0.597 / 0.781 * T64 ~ 1.38 * T64), hence a
per-step cost at 128 nodes of 2.75x that at 64; any per-step cost growing at most linearly with the GPU count (ring latency
2(P-1)*alpha, bytes, per-rank overheads) gives at most 2x, and halving the steps then always makes
128 nodes faster (model: 12.7 min against 15.8 at 64). See README, "scaling-model".
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slowfast_dist.errors import UserError
from slowfast_dist.profiling.scaling_model import table
from slowfast_dist.profiling.scaling_model_cli import load_params

CFG = Path(__file__).parents[1] / "configs" / "scaling" / "abci_v100.yaml"
TOL = 0.15


def _rows(persistent):
    return {r["nodes"]: r for r in table(load_params(str(CFG)), persistent)}


def test_run_times_match_fig3():
    base, fixed = _rows(False), _rows(True)
    assert base[1]["run_time_s"] == pytest.approx(9 * 3600 + 4 * 60, rel=TOL)  # 1 node: ~9 h 04 min
    assert base[32]["run_time_s"] == pytest.approx(30 * 60, rel=TOL)          # before fix, 8 workers
    assert base[64]["run_time_s"] == pytest.approx(27 * 60, rel=TOL)
    assert fixed[32]["run_time_s"] == pytest.approx(22 * 60, rel=TOL)         # RepeatSampler, 6 workers
    assert fixed[64]["run_time_s"] == pytest.approx(15.5 * 60, rel=TOL)
    assert fixed[64]["speedup"] == pytest.approx(34.5, rel=TOL)               # ~34.5x at 64 nodes
    assert base[64]["speedup"] == pytest.approx(19.7, rel=TOL)                # ~19.7x before the fix


def test_shares_match_table4():
    r = _rows(True)
    for n, compute in ((32, 0.562), (64, 0.403), (128, 0.219)):                # Table 4
        assert r[n]["compute_share"] == pytest.approx(compute, rel=TOL)
        assert r[n]["comm_share"] == pytest.approx(1 - compute, rel=TOL)
    assert r[128]["comm_s"] / r[64]["comm_s"] == pytest.approx(1.8, rel=TOL)   # per step


def test_cli_json_no_torch_and_bad_config(tmp_path):
    code = ("import sys, argparse; from slowfast_dist.profiling import scaling_model_cli as c;"
            "p=argparse.ArgumentParser(); c.add_arguments(p); rc=c.run(p.parse_args(sys.argv[1:]));"
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(CFG), "--json"], capture_output=True,
                         text=True, check=True).stdout
    rows = json.loads(out)["rows"]
    assert [r["nodes"] for r in rows] == [1, 16, 32, 64, 128]
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus_per_node: 4\n")
    with pytest.raises(UserError, match="missing key"):
        load_params(str(bad))
