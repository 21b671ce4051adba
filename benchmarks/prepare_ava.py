"""What `prepare-ava` costs per hour of video, and what the GOP of a cut costs a clip read.

Usage: .venv/bin/python benchmarks/prepare_ava.py [--seconds 20] [--repeats 2]
Writes benchmarks/results/prepare_ava.json.

Input: a synthetic raw movie like AVA's downloads: photo-like textured 1920x1080 frames at 30
fps (make_synthetic's scene: 1/f texture, slow pan, camera noise), H.264 with x264's default GOP
(250). Variants, interleaved per repeat, each preparing the whole movie in one process (one
decoder thread; CPU time per stage from `prepare_one`'s own clocks, scaled to one hour of video):
- frames_360: JPEG frames at short side 360 (prepare-ava's default);
- frames_1080: JPEG frames at the source size (PySlowFast's recipe keeps it);
- video_360_gop32 / video_360_gop250: H.264 cuts at short side 360.
Then clip reads from the two cuts (`video.read_frames`, 32 frames at sampling rate 2 around
random keyframes, one thread, CPU ms per clip, the same clips for both, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_raw(path: Path, seconds: int, width=1920, height=1080, fps=30):
    import av
    import numpy as np

    from slowfast_dist.data.synthetic import _TexturedScene

    scene = _TexturedScene(np.random.default_rng(0), width, height, fps)
    container = av.open(str(path), "w")
    st = container.add_stream("libx264", rate=fps)
    st.width, st.height, st.pix_fmt = width, height, "yuv420p"
    st.options = {"preset": "superfast", "crf": "23"}  # x264's default GOP: 250
    for f in range(seconds * fps):
        for packet in st.encode(av.VideoFrame.from_ndarray(scene.frame(f), format="rgb24")):
            container.mux(packet)
    for packet in st.encode():
        container.mux(packet)
    container.close()


VARIANTS = {
    "frames_360": dict(formats=("frames",), short_side=360),
    "frames_1080": dict(formats=("frames",), short_side=None),
    "video_360_gop32": dict(formats=("video",), short_side=360, gop=32),
    "video_360_gop250": dict(formats=("video",), short_side=360, gop=250),
}


def prepare(raw: Path, work: Path, name: str, seconds: int) -> dict:
    import shutil

    from slowfast_dist.data.prepare_ava import PrepareOptions, prepare_one

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    opts = PrepareOptions(out_dir=str(out), window=(0.0, float(seconds)), **VARIANTS[name])
    return prepare_one(raw, opts)


def read_cost(cut: Path, clips: list) -> list:
    from slowfast_dist.data import video

    out = []
    for center in clips:
        idx = [min(max(i, 0), 10 ** 9) for i in range(center - 32, center + 32, 2)]
        t0 = time.process_time()
        video.read_frames(str(cut), idx)
        out.append(time.process_time() - t0)
        video._discard(str(cut))  # each clip from a fresh open, as a worker meets a new video
    return out


def summary(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--work", default="/tmp/slowfast_prepare_bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/prepare_ava.json"))
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"raw_1080p_{a.seconds}s.mp4"
    if not raw.exists():
        print(f"writing {raw} ...", flush=True)
        make_raw(raw, a.seconds)
    runs = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for r in range(a.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rec = prepare(raw, work, name, a.seconds)
            runs[name].append(rec)
            print(f"{name}: {rec['frames']} frames, cpu {rec['cpu_s']:.1f} s "
                  f"{rec['stage_cpu_s']}", flush=True)
    hour = 3600.0 / a.seconds
    result = {"command": "python benchmarks/prepare_ava.py " + " ".join(argv or sys.argv[1:]),
              "environment": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                              "platform": platform.platform(), "torch_threads": 1,
                              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
              "method": __doc__.split("\n\n", 2)[2].strip(),
              "raw": {"size": "1920x1080", "fps": 30, "seconds": a.seconds,
                      "bytes_per_hour": raw.stat().st_size * hour},
              "per_hour_of_video": {}}
    for name, recs in runs.items():
        stages = {k: summary([x["stage_cpu_s"][k] * hour for x in recs])
                  for k in recs[0]["stage_cpu_s"] if recs[0]["stage_cpu_s"][k] > 0}
        fmt = recs[0]["formats"][0]
        result["per_hour_of_video"][name] = {
            "cpu_s": summary([x["cpu_s"] * hour for x in recs]),
            "stage_cpu_s": stages,
            "gb_written": recs[0]["bytes"][fmt] * hour / 1e9,
            "files_per_hour": 3600 * 30 if fmt == "frames" else 1,
            "size": recs[0]["size"]}
    # clip reads: the same random keyframes from both cuts, interleaved
    frames = runs["video_360_gop32"][0]["frames"]
    rng = random.Random(0)
    clips = [rng.randrange(32, frames - 32) for _ in range(a.clips)]
    cost = {"gop32": [], "gop250": []}
    for k in range(0, len(clips), 5):
        for gop in (("gop32", "gop250") if k % 10 == 0 else ("gop250", "gop32")):
            cut = work / f"video_360_{gop}" / "videos" / f"{raw.stem}.mp4"
            cost[gop] += read_cost(cut, clips[k:k + 5])
    result["clip_read_cpu_ms"] = {g: summary([x * 1e3 for x in v]) for g, v in cost.items()}
    result["clip_read_gop250_over_gop32"] = (result["clip_read_cpu_ms"]["gop250"]["median"]
                                             / result["clip_read_cpu_ms"]["gop32"]["median"])
    Path(a.out).write_text(json.dumps(result, indent=1))
    for name, r in result["per_hour_of_video"].items():
        print(f"{name:18s} {r['cpu_s']['median'] / 3600:6.2f} CPU h per hour of video  "
              f"{r['gb_written']:6.1f} GB")
    print("clip read CPU ms (median):", {g: round(v["median"], 1)
                                         for g, v in result["clip_read_cpu_ms"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
