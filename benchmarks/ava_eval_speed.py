"""Time `slowfast-dist ava-eval` as a whole process on ~50k detections / 4k GT boxes.

With --reference-dir DIR (a PySlowFast checkout), also time the official evaluator
(slowfast.utils.ava_eval_helper.evaluate_ava_from_files, through official_ava_eval.py) on the
same files, interleaved with ours, and compare the mAPs. Writes
benchmarks/results/ava_eval_speed.json.
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
import official_ava_eval

from slowfast_dist.profiling import host


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


def timed_once(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return seconds, p.stdout


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
        ours = [sys.executable, "-m", "slowfast_dist.cli", "ava-eval", *files, "--label-map", lm,
                "--json"]
        # the official evaluator as a whole process too: import, read, score
        code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import official_ava_eval as o; "
                "m, pc = o.evaluate(o.load(sys.argv[2]), *sys.argv[3:]); "
                "print(json.dumps({'mAP': m, 'per_class': pc}))")
        here = os.path.dirname(os.path.abspath(__file__))
        official = [sys.executable, "-c", code, here, a.reference_dir or "", lm, *files]
        times, rtimes = [], []
        for _ in range(a.repeats):  # interleaved: the machine's load moves both alike
            seconds, out = timed_once(ours)
            times.append(seconds)
            if a.reference_dir:
                seconds, rout = timed_once(official)
                rtimes.append(seconds)
        med = statistics.median(times)
        res = {"command": "benchmarks/ava_eval_speed.py " + " ".join(sys.argv[1:]),
               "gt_boxes": a.gt, "detections": a.detections, "seed": a.seed, "ours_median_s": med,
               "ours_times_s": times, "ours_mAP": json.loads(out)["mAP"],
               "machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpu": host.describe_cpu()}}
        if a.reference_dir:
            ref = json.loads(rout.strip().splitlines()[-1])
            ours_pc = json.loads(out)["per_class"]
            diffs = [abs(v - ours_pc[k]) for k, v in ref["per_class"].items() if v is not None]
            rmed = statistics.median(rtimes)
            pairs = sorted(r / o for r, o in zip(rtimes, times))
            res.update(reference_median_s=rmed, reference_times_s=rtimes, reference_mAP=ref["mAP"],
                       speedup=statistics.median(pairs), speedup_min_max=[pairs[0], pairs[-1]],
                       mAP_abs_diff=abs(ref["mAP"] - res["ours_mAP"]),
                       per_class_max_abs_diff=max(diffs) if diffs else 0.0,
                       reference_command="python -c <official_ava_eval.evaluate: "
                                         "evaluate_ava_from_files replayed>",
                       reference_revision=official_ava_eval.revision(a.reference_dir),
                       ours_command="python -m slowfast_dist.cli ava-eval GT DET --label-map LM "
                                    "--json")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
