"""Does `slowfast-dist ava-eval` give the official evaluator's numbers? Random AVA-format cases.

Each case is a small label map, ground truth, detections and, in some cases, exclusions, drawn to
hit the rules that decide an AP: boxes on a coarse grid (IoU ties, IoU of exactly 0.5), repeated
scores (rank ties), duplicated rows, several detections of one person, action ids outside the
label map, non-contiguous ids, classes without ground truth, excluded frames, and seconds
written both as `0902` and `902`. Both evaluators score the same files in this process; a case
agrees when every per-class AP is equal (within 1e-12, or both undefined) and the mAP too.

    .venv/bin/python benchmarks/ava_eval_agreement.py --reference-dir <PySlowFast checkout>

Writes benchmarks/results/ava_eval_agreement.json, with the first disagreeing cases' files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import official_ava_eval

from slowfast_dist.eval.ava_map import evaluate

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
SCORES = (0.1, 0.5, 0.9)
TOLERANCE = 1e-12


def draw_case(rnd: random.Random) -> tuple[dict, Counter]:
    """The four files' text, and which of the rules above the case exercises."""
    seen = Counter()
    ids = sorted(rnd.sample(range(1, 12), rnd.randint(1, 5)))
    seen["non_contiguous_ids"] += ids != list(range(1, len(ids) + 1))
    label_map = "".join(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in ids)
    frames = [(f"vid{v}", s) for v in range(rnd.randint(1, 3)) for s in range(902, 902 + rnd.randint(1, 4))]

    def key():
        video, sec = rnd.choice(frames)
        padded = rnd.random() < 0.5
        return f"{video},{sec:04d}" if padded else f"{video},{sec}"

    def box():
        if rnd.random() < 0.8:  # the grid makes equal and exactly-0.5 IoUs common
            x1, x2 = sorted(rnd.sample(GRID, 2))
            y1, y2 = sorted(rnd.sample(GRID, 2))
        else:
            x1, x2 = sorted(rnd.uniform(0, 1) for _ in range(2))
            y1, y2 = sorted(rnd.uniform(0, 1) for _ in range(2))
            if x1 == x2 or y1 == y2:
                return box()
        return f"{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f}"

    def action():
        if rnd.random() < 0.1:
            seen["ids_outside_map"] += 1
            return rnd.choice([99, 0, 12])
        return rnd.choice(ids)

    gt = [f"{key()},{box()},{rnd.choice(ids)},{p}" for p in range(rnd.randint(1, 10))]
    if rnd.random() < 0.3:
        gt.append(rnd.choice(gt))
        seen["duplicated_gt_rows"] += 1
    dets = []
    for _ in range(rnd.randint(0, 25)):
        row = f"{key()},{box()},{action()}"
        if gt and rnd.random() < 0.4:  # a detection on a ground-truth box, maybe of another class
            g = rnd.choice(gt).split(",")
            row = ",".join(g[:6] + [str(action())])
        score = rnd.choice(SCORES) if rnd.random() < 0.6 else round(rnd.random(), 4)
        dets.append(f"{row},{score}")
    if dets and rnd.random() < 0.3:
        dets.append(rnd.choice(dets))
        seen["duplicated_detections"] += 1
    seen["iou_exactly_half"] += any(iou == 0.5 for iou in _ious(gt, dets))
    scores = [d.rsplit(",", 1)[1] for d in dets]
    seen["score_ties"] += len(scores) != len(set(scores))
    gt_classes = {int(g.split(",")[6]) for g in gt}
    seen["classes_without_gt"] += any(i not in gt_classes for i in ids)
    seen["padded_and_unpadded_seconds"] += any(",090" in r for r in gt + dets) and any(
        ",90" in r and ",090" not in r for r in gt + dets)
    files = {"labels.pbtxt": label_map, "gt.csv": "\n".join(gt) + "\n",
             "det.csv": "\n".join(dets) + "\n" if dets else ""}
    if rnd.random() < 0.3:
        files["exclusions.csv"] = "\n".join(key() for _ in range(rnd.randint(1, 2))) + "\n"
        seen["exclusions"] += 1
    return files, seen


def _ious(gt: list[str], dets: list[str]):
    """IoU of every detection with every ground-truth box of its frame (`902` is `0902`)."""
    def parse(row):
        f = row.split(",")
        return (f[0], int(f[1])), [float(x) for x in f[2:6]]

    boxes = [parse(g) for g in gt]
    for d in dets:
        frame, (x1, y1, x2, y2) = parse(d)
        for other, (a1, b1, a2, b2) in boxes:
            if other == frame:
                inter = max(0.0, min(x2, a2) - max(x1, a1)) * max(0.0, min(y2, b2) - max(y1, b1))
                union = (x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter
                yield inter / union if union > 0 else 0.0


def compare(ours: dict, official: tuple) -> tuple[bool, bool, float]:
    """(every AP and the mAP agree, the mAP is bit-identical, largest AP difference)."""
    official_map, official_per_class = official
    worst, same = 0.0, ours["per_class"].keys() == official_per_class.keys()
    for name, want in official_per_class.items():
        got = ours["per_class"].get(name)
        if (got is None) != (want is None):
            same = False
        elif got is not None:
            worst = max(worst, abs(got - want))
    both_nan = math.isnan(ours["mAP"]) and math.isnan(official_map)
    map_same = both_nan or ours["mAP"] == official_map
    same = same and worst <= TOLERANCE and (map_same or abs(ours["mAP"] - official_map) <= TOLERANCE)
    return same, map_same, worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", required=True, help="a PySlowFast checkout")
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results/ava_eval_agreement.json")
    a = ap.parse_args(argv)
    helper = official_ava_eval.load(a.reference_dir)
    # a case whose every ground-truth frame is excluded has no AP: the official code's nanmean
    # warns about the empty mean at each one
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    rnd = random.Random(a.seed)
    coverage, agree, bit_identical, worst, failures = Counter(), 0, 0, 0.0, []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(a.cases):
            files, seen = draw_case(rnd)
            coverage.update({k: 1 for k, v in seen.items() if v})
            for name, text in files.items():
                Path(tmp, name).write_text(text)
            paths = [os.path.join(tmp, n) for n in ("gt.csv", "det.csv", "labels.pbtxt")]
            excl = os.path.join(tmp, "exclusions.csv") if "exclusions.csv" in files else None
            ours = evaluate(*paths, excl)
            official = official_ava_eval.evaluate(helper, paths[2], paths[0], paths[1], excl)
            same, map_same, diff = compare(ours, official)
            agree += same
            bit_identical += map_same
            worst = max(worst, diff)
            if not same and len(failures) < 5:
                failures.append({"case": case, "files": files, "ours": ours,
                                 "official": {"mAP": official[0], "per_class": official[1]}})
            if (case + 1) % 1000 == 0:
                print(f"{case + 1}/{a.cases} cases, {agree} agree", file=sys.stderr, flush=True)
            for name in files:
                os.remove(os.path.join(tmp, name))
    result = {
        "command": "benchmarks/ava_eval_agreement.py " + " ".join(argv or sys.argv[1:]),
        "reference": {"dir": a.reference_dir,
                      "revision": official_ava_eval.revision(a.reference_dir)},
        "cases": a.cases, "seed": a.seed, "agree": agree, "mAP_bit_identical": bit_identical,
        "max_per_class_ap_difference": worst, "tolerance": TOLERANCE,
        "cases_exercising": dict(sorted(coverage.items())),
        "seconds": round(time.time() - t0, 1), "disagreements": failures,
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("disagreements", "method")},
                     indent=1))
    return 0 if agree == a.cases else 1


if __name__ == "__main__":
    sys.exit(main())
