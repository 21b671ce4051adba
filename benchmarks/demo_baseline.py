"""How much the demo learned: its mAP against models that output constant scores.

Reads the detections CSV a run wrote (OUTPUT_DIR/detections_*.csv), rescores the same boxes
with one constant score, and scores both with the exact evaluator. (A per-class prior, each
class's training frequency, scores exactly the same: AP is computed per class, and within a
class it is a constant too.)

    .venv/bin/python benchmarks/demo_baseline.py demo_output demo_data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slowfast_dist.eval.ava_map import evaluate


def rescore(src: Path, dst: Path, score_of) -> None:
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            parts = line.rstrip("\n").split(",")
            parts[7] = f"{score_of(int(parts[6])):.6f}"
            out.write(",".join(parts) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output_dir")
    ap.add_argument("data_dir")
    ap.add_argument("--json", default="benchmarks/results/demo_baseline.json")
    args = ap.parse_args()
    out, ann = Path(args.output_dir), Path(args.data_dir) / "annotations"
    dets = sorted(out.glob("detections_*.csv"))
    if not dets:
        print(f"{out}: no detections_*.csv (run `make demo` first)", file=sys.stderr)
        return 2
    gt, labels = ann / "ava_val_v2.2.csv", ann / "ava_action_list_v2.2.pbtxt"
    result = {"detections": str(dets[-1]), "trained": evaluate(gt, dets[-1], labels)["mAP"]}
    path = out / "baseline_constant.csv"
    rescore(dets[-1], path, lambda c: 0.5)
    result["constant"] = evaluate(gt, path, labels)["mAP"]
    print(json.dumps(result, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
