"""Clips per second from the JPEG frame tree and from the videos (PyAV), per loader worker count.

Usage: .venv/bin/python benchmarks/loader_throughput.py [--workers 0 2 4] [--clips 48]
           [--data DIR] [--out benchmarks/results/loader_throughput.json]
Without --data a synthetic set (make_synthetic, 320x240 H.264) is generated into a temporary
folder; with --data, DIR has make_synthetic's layout (frames/, videos/, frame_lists/train.csv,
annotations/ava_train_v2.2.csv, annotations/ava_action_list_v2.2.pbtxt).

Two figures per source:
- `read`: the clip's pixels only (`AvaDataset.read_pixels`), in this process, no transforms;
- `loader`: whole samples (decode + training transforms + collate) through `build_loader` with
  persistent workers, counted from the first batch (worker start-up is reported apart).
"""
import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time
import warnings

import torch

from slowfast_dist.data import AvaDataset, build_loader
from slowfast_dist.data.synthetic import make_synthetic


def keyframe_interval(path):
    """Mean number of frames between keyframes of a video: the most a seek can cost."""
    import av
    with av.open(path) as c:
        keys = [i for i, p in enumerate(p for p in c.demux(c.streams.video[0]) if p.size)
                if p.is_keyframe]
    return (keys[-1] - keys[0]) / (len(keys) - 1) if len(keys) > 1 else None


def build_dataset(data, source, num_frames, rate, short_side):
    if "pixel_source" not in inspect.signature(AvaDataset).parameters:
        sys.exit("loader_throughput: AvaDataset has no pixel_source argument yet "
                 "(the video source is not wired into the dataset)")
    j = lambda p: os.path.join(data, p)  # noqa: E731
    return AvaDataset([j("frame_lists/train.csv")], j("frames"), [],
                      j("annotations/ava_action_list_v2.2.pbtxt"), train=True,
                      num_frames=num_frames, sampling_rate=rate, alpha=4, slowfast=True,
                      mean=[0.45] * 3, std=[0.225] * 3, crop_size=short_side * 7 // 8,
                      jitter_scales=[short_side, short_side], pixel_source=source,
                      video_dir=j("videos"), gt_box_csvs=[j("annotations/ava_train_v2.2.csv")])


def measure_read(ds, clips):
    t = time.perf_counter()
    for k in range(clips):
        vidx, sec, _ = ds.keys[k % len(ds)]
        ds.read_pixels(vidx, ds.frame_indices(vidx, sec))
    return clips / (time.perf_counter() - t)


def measure_loader(ds, workers, clips, batch_size):
    ld = build_loader(ds, batch_size, shuffle=True, drop_last=True, num_workers=workers,
                      pin_memory=False, persistent=True, rank=0, world_size=1, seed=0)
    t0 = time.perf_counter()
    first = None
    seen = skipped = epoch = 0
    while seen < clips + batch_size:
        ld.set_epoch(epoch)
        for batch in ld:
            if first is None:
                first = time.perf_counter()  # workers up and the first batch made
            else:
                seen += batch["inputs"][0].shape[0]
            skipped += int(torch.as_tensor(batch.get("skipped", 0)).sum())
            if seen >= clips:
                break
        if seen >= clips:
            break
        epoch += 1
    end = time.perf_counter()
    del ld  # shuts the persistent workers down before the next measurement
    return {"workers": workers, "clips": seen, "clips_per_s": seen / (end - first),
            "startup_s": first - t0, "skipped": skipped}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--clips", type=int, default=48, help="clips timed per measurement")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--num-frames", type=int, default=32, help="DATA.NUM_FRAMES (study: 32)")
    ap.add_argument("--sampling-rate", type=int, default=2, help="DATA.SAMPLING_RATE (study: 2)")
    ap.add_argument("--data", default=None, help="AVA-format tree; default: a synthetic one")
    ap.add_argument("--size", default="320x240", help="WxH of the generated synthetic videos")
    ap.add_argument("--out", default="benchmarks/results/loader_throughput.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    # more workers than cores is the point of the sweep on a small machine
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    tmp = None
    if a.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="loader_throughput_")
        a.data = tmp.name
    try:
        if tmp is not None:
            w, h = (int(x) for x in a.size.split("x"))
            t = time.perf_counter()
            make_synthetic(a.data, videos=4, seconds=8, width=w, height=h)
            print(f"generated a synthetic set ({w}x{h}) in {time.perf_counter() - t:.1f} s",
                  flush=True)
        from PIL import Image

        from slowfast_dist.data.ava_files import read_frame_lists
        from slowfast_dist.data.video import find_video
        names, frames = read_frame_lists([os.path.join(a.data, "frame_lists/train.csv")],
                                         os.path.join(a.data, "frames"))
        video0 = find_video(os.path.join(a.data, "videos"), names[0])
        with Image.open(frames[0][0]) as im:
            frame_hw = [im.height, im.width]
        datasets = {s: build_dataset(a.data, s, a.num_frames, a.sampling_rate, min(frame_hw))
                    for s in ("frames", "video")}
        rows = []
        for source, ds in datasets.items():
            r = {"source": source, "read_clips_per_s": measure_read(ds, a.clips)}
            print(r, flush=True)
            rows.append(r)
            for workers in a.workers:
                r = {"source": source, **measure_loader(ds, workers, a.clips, a.batch_size)}
                print(r, flush=True)
                rows.append(r)
        data_info = {"path": None if tmp else a.data, "synthetic": tmp is not None,
                     "clips_in_set": len(datasets["frames"]), "frame_hw": frame_hw,
                     "video_keyframe_interval_frames": keyframe_interval(video0)}
    finally:
        if tmp is not None:
            tmp.cleanup()
    import av
    result = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_avg_1m": os.getloadavg()[0], "python": platform.python_version(),
                    "torch": torch.__version__, "av": av.__version__},
        "data": data_info,
        "clip": {"num_frames": a.num_frames, "sampling_rate": a.sampling_rate,
                 "batch_size": a.batch_size, "clips_timed": a.clips},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
