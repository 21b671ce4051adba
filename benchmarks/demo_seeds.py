"""How much the demo's mAP moves with the seed: `make demo`'s training, once per RNG_SEED.

The demo is deterministic for one seed on one machine (keyed augmentation draws, gloo on CPU),
but its figure is one draw of a small, noisy experiment: 16 epochs on 108 clips. This runs the
same command as `make demo` for several seeds and writes the spread, so the README can quote a
range that another machine should fall in rather than one number.

    .venv/bin/python benchmarks/demo_seeds.py [--seeds 0 1 2 3 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(seed: int, data: Path, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node",
           "2", "-m", "slowfast_dist.cli", "train", "--cfg", str(ROOT / "configs/demo.yaml"),
           "AVA.FRAME_DIR", str(data / "frames"), "AVA.FRAME_LIST_DIR", str(data / "frame_lists"),
           "AVA.ANNOTATION_DIR", str(data / "annotations"), "OUTPUT_DIR", str(out),
           "RNG_SEED", str(seed), "TENSORBOARD.ENABLE", "False"]
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {"seed": seed, "mAP": summary["mAP"], "wall_s": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--data", default=str(ROOT / "demo_data"),
                    help="the demo's synthetic set (made by make demo / make-synthetic)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/demo_seeds.json"))
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "annotations").is_dir():
        print(f"demo_seeds: {data}: no synthetic set (run make demo first)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append(train(seed, data, Path(tmp) / f"seed{seed}"))
            print(f"seed {seed}: mAP {rows[-1]['mAP']:.4f} ({rows[-1]['wall_s']} s)", flush=True)
    maps = [r["mAP"] for r in rows]
    out = {"command": "make demo's training with RNG_SEED varied (configs/demo.yaml, 2 gloo "
                      "ranks on CPU)",
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "python": platform.python_version()},
           "runs": rows, "median": statistics.median(maps), "min": min(maps), "max": max(maps),
           "stdev": statistics.stdev(maps) if len(maps) > 1 else 0.0}
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"mAP over {len(maps)} seeds: median {out['median']:.3f}, range {out['min']:.3f}-"
          f"{out['max']:.3f} (sd {out['stdev']:.3f}); {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
