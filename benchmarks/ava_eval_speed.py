"""Time `slowfast-dist ava-eval` as a whole process on ~50k detections / 4k GT boxes.

With --reference-dir DIR (a PySlowFast checkout), also time the official evaluator
(slowfast.utils.ava_eval_helper.evaluate_ava_from_files) on the same files and compare mAPs.
Writes benchmarks/results/ava_eval_speed.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_case(d, seed, n_gt, n_det, n_cls=80):
    rng = np.random.default_rng(seed)
    frames = [(f"vid{v:03d}", 902 + s) for v in range(20) for s in range(n_gt // 40)]
    with open(os.path.join(d, "labels.pbtxt"), "w") as f:
        for c in range(1, n_cls + 1):
            f.write(f'item {{\n  name: "action {c}"\n  id: {c}\n}}\n')
    gt = []
    with open(os.path.join(d, "gt.csv"), "w") as f:
        for i in range(n_gt):
            v, s = frames[rng.integers(len(frames))]
            x1, y1 = rng.uniform(0, 0.6, 2)
            w, h = rng.uniform(0.1, 0.4, 2)
            c = int(rng.integers(1, n_cls + 1))
            gt.append((v, s, x1, y1, x1 + w, y1 + h, c))
            f.write(f"{v},{s:04d},{x1:.3f},{y1:.3f},{x1 + w:.3f},{y1 + h:.3f},{c},{i}\n")
    with open(os.path.join(d, "det.csv"), "w") as f:
        for _ in range(n_det):
            v, s, x1, y1, x2, y2, c = gt[rng.integers(len(gt))]
            j = rng.normal(0, 0.05, 4)
            if rng.random() < 0.5:
                c = int(rng.integers(1, n_cls + 1))
            f.write(f"{v},{s:04d},{max(0, x1 + j[0]):.3f},{max(0, y1 + j[1]):.3f},"
                    f"{min(1, x2 + j[2]):.3f},{min(1, y2 + j[3]):.3f},{c},{rng.random():.4f}\n")


def timed(cmd, repeats, env=None):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
        out = p.stdout
    return statistics.median(times), times, out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gt", type=int, default=4000)
    ap.add_argument("--detections", type=int, default=50000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reference-dir", default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ava_eval_speed.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        make_case(d, a.seed, a.gt, a.detections)
        files = [os.path.join(d, n) for n in ("gt.csv", "det.csv")]
        lm = os.path.join(d, "labels.pbtxt")
        ours = [sys.executable, "-m", "slowfast_dist.cli", "ava-eval", *files, "--label-map", lm, "--json"]
        med, times, out = timed(ours, a.repeats)
        res = {"gt_boxes": a.gt, "detections": a.detections, "seed": a.seed, "ours_median_s": med,
               "ours_times_s": times, "ours_mAP": json.loads(out)["mAP"],
               "machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpus": os.cpu_count()}}
        if a.reference_dir:
            # evaluate_ava_from_files returns None, so replay its body (same calls, same order)
            # and print run_evaluation's metrics dict as JSON on the last line.
            code = ("import sys, json; from slowfast.utils import ava_eval_helper as h; "
                    "c, w = h.read_labelmap(sys.argv[1]); e = h.read_exclusions(None); "
                    "m = h.run_evaluation(c, h.read_csv(sys.argv[2], w), "
                    "h.read_csv(sys.argv[3], w, load_score=True), e); "
                    "print(json.dumps({k: float(v) for k, v in m.items()}))")
            env = dict(os.environ, PYTHONPATH=a.reference_dir)
            rmed, rtimes, rout = timed([sys.executable, "-c", code, lm, files[0], files[1]], a.repeats, env)
            ref = json.loads(rout.strip().splitlines()[-1])
            ref_map = ref["PascalBoxes_Precision/mAP@0.5IOU"]
            pre = "PascalBoxes_PerformanceByCategory/AP@0.5IOU/"
            ours_pc = json.loads(out)["per_class"]
            diffs = [abs(v - ours_pc[k[len(pre):]]) for k, v in ref.items()
                     if k.startswith(pre) and v == v]
            res.update(reference_median_s=rmed, reference_times_s=rtimes, reference_mAP=ref_map,
                       speedup=rmed / med, ratio_ours_over_reference=med / rmed,
                       mAP_abs_diff=abs(ref_map - res["ours_mAP"]),
                       per_class_max_abs_diff=max(diffs) if diffs else 0.0,
                       reference_command=f"PYTHONPATH={a.reference_dir} python -c <replay of "
                                         "evaluate_ava_from_files>",
                       ours_command="python -m slowfast_dist.cli ava-eval GT DET --label-map LM --json")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
