"""`slowfast-dist ava-eval`: AVA v2.2 frame-mAP@0.5 exactly as PySlowFast's evaluator (no torch)."""

from __future__ import annotations

import json
import math


def add_arguments(parser):
    parser.add_argument("gt_csv", help="AVA ground-truth CSV (video,sec,x1,y1,x2,y2,action[,person])")
    parser.add_argument("detections_csv", help="detections CSV (video,sec,x1,y1,x2,y2,action,score)")
    parser.add_argument("--label-map", required=True, help="label map .pbtxt")
    parser.add_argument("--exclusions", default=None, help="excluded frames CSV (video,sec)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from slowfast_dist.eval.ava_map import evaluate

    res = evaluate(args.gt_csv, args.detections_csv, args.label_map, args.exclusions)
    if args.json:
        out = dict(res)
        if math.isnan(out["mAP"]):
            out["mAP"] = None
        print(json.dumps(out))
        return 0
    width = max([len(n) for n in res["per_class"]] + [10])
    for name, ap in res["per_class"].items():
        print(f"{name:<{width}}  {'n/a (no GT)' if ap is None else f'{ap:.4f}'}")
    print(f"{'mAP@0.5IoU':<{width}}  {res['mAP']:.4f}")
    return 0
