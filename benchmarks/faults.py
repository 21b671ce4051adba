"""The faults of README's Reliability table, injected into real runs, timed: a stop signal mid-epoch
(torchrun, and the mpirun launch script), kill -9 of a rank, SIGSTOP of a rank with
DIST.TIMEOUT_S 20 (torchrun, mpirun). 2 gloo ranks with 2 persistent loader workers each.

The fault tests (tests/test_preempt.py, tests/test_heartbeat.py) are the harness: they assert the
behaviour and, with SFD_FIGURES_JSON set, add what they measured. This runs them and writes
benchmarks/results/faults.json. About 4 minutes on 2 cores.

    .venv/bin/python benchmarks/faults.py [--out benchmarks/results/faults.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_preempt.py", "tests/test_heartbeat.py"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.json"
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", *TESTS], cwd=ROOT,
                           env=dict(os.environ, SFD_FIGURES_JSON=str(figures)))
        measured = json.loads(figures.read_text()) if figures.exists() else {}
    report = {"command": "python benchmarks/faults.py", "tests_passed": p.returncode == 0,
              "seconds": round(time.time() - t0), "machine": platform.platform(),
              "cores": os.cpu_count(), "faults": measured}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, values in measured.items():
        print(f"{name:24s} " + "  ".join(f"{k}={v}" for k, v in values.items()))
    print(f"wrote {args.out}")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
