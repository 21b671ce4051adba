"""Raw AVA movies -> the tree the frames and video sources read, checked against the annotations.

PySlowFast's recipe (slowfast/datasets/DATASET.md) is two ffmpeg commands per movie: cut
`-ss 900 -t 901`, then extract `-r 30 -q:v 1` JPEGs named `<video>_%06d.jpg` from 1. Here one
decoding pass per movie does both, and optionally writes the cut as short-GOP H.264 for the
video source: output frame k is the source frame nearest to second 900 + k/30 (a tie goes to the
earlier one), the rule `video.read_frames` maps a frame index to a time with, so both sources
show the same frames. Frames are downscaled (swscale, area) to a short side on the way.

Each movie is written under a temporary name and renamed when complete, then a manifest
(`.prepare/<video>.json`) marks it done: a killed run is started again with the same command and
skips what is finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

FPS = 30
WINDOW = (900.0, 1801.0)  # PySlowFast's cut: -ss 900 -t 901
MIN_DURATION = 1800.0
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv")
STAGES = ("decode", "resize", "jpeg", "h264")
_FRAME_TIME = Fraction(1, FPS)


class PrepareError(Exception):
    """A raw movie that cannot be prepared; the message is one line and names the file."""


@dataclass(frozen=True)
class PrepareOptions:
    out_dir: str
    formats: tuple = ("frames",)  # "frames" and/or "video"
    short_side: int | None = 360  # None: keep the source size
    gop: int = 32
    quality: int = 95
    chroma: str = "444"  # JPEG chroma subsampling: "444", or "420" for DATA.DECODER yuv420
    crf: int = 18
    window: tuple = WINDOW
    decoder_threads: int = 1


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` (never larger than the source), both
    even (H.264 yuv420p)."""
    scale = 1.0 if not short_side else min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def manifest_path(out_dir, vid) -> Path:
    return Path(out_dir) / ".prepare" / f"{vid}.json"


def read_manifest(out_dir, vid) -> dict | None:
    """A finished video's record, or None when it is not finished (or its outputs are gone)."""
    path = manifest_path(out_dir, vid)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for fmt in record.get("formats", []):
        if not (Path(out_dir) / record["outputs"][fmt]).exists():
            return None
    return record


def options_of(opts: PrepareOptions) -> dict:
    """What decides the pixels a movie was prepared with (a change means preparing it again)."""
    return {"short_side": opts.short_side, "quality": opts.quality, "gop": opts.gop,
            "crf": opts.crf, "window": list(opts.window),
            # only when not the default, so trees prepared before the option stay finished
            **({"chroma": opts.chroma} if opts.chroma != "444" else {})}


def finished(out_dir, vid, opts: PrepareOptions) -> dict | None:
    """The movie's record when it was prepared with these options in every requested format."""
    record = read_manifest(out_dir, vid)
    if (record is None or record.get("options") != options_of(opts)
            or not set(opts.formats) <= set(record["formats"])):
        return None
    return record


def video_id(path) -> str:
    return Path(path).stem


def find_raw_videos(raw_dir) -> list[Path]:
    return sorted(p for p in Path(raw_dir).iterdir()
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


# ---- one movie ---------------------------------------------------------------------------

_progress = None  # frames written, shared by the jobs of a run (multiprocessing.Value)


def _init_job(counter) -> None:
    global _progress
    _progress = counter


def _advance(n: int) -> None:
    if _progress is not None and n:
        with _progress.get_lock():
            _progress.value += n


def _one_line(err) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def prepare_one(raw, opts: PrepareOptions) -> dict:
    """Prepare one movie; returns its record (status "done" or "skipped"), or raises
    PrepareError naming the file."""
    raw, vid = Path(raw), video_id(raw)
    done = finished(opts.out_dir, vid, opts)
    if done is not None:
        return {**done, "status": "skipped"}
    before = read_manifest(opts.out_dir, vid)  # other formats made with the same options stay
    kept = ([f for f in before["formats"] if f not in opts.formats]
            if before is not None and before.get("options") == options_of(opts) else [])
    import av

    out = Path(opts.out_dir)
    partial = {"frames": out / "frames" / f".{vid}.partial",
               "video": out / "videos" / f".{vid}.partial.mp4"}
    final = {"frames": out / "frames" / vid, "video": out / "videos" / f"{vid}.mp4"}
    for fmt in opts.formats:
        _remove(partial[fmt])  # a killed run's leftovers
    t0, cpu0 = time.time(), time.process_time()
    try:
        container = av.open(str(raw))
    except (av.FFmpegError, OSError) as e:
        raise PrepareError(f"{raw}: unreadable ({_one_line(e)})") from None
    try:
        if not container.streams.video:
            raise PrepareError(f"{raw}: no video stream")
        st = container.streams.video[0]
        duration = _duration(container, st)
        if duration is not None and duration < MIN_DURATION and opts.window == WINDOW:
            raise PrepareError(f"{raw}: {duration:.0f} s long; AVA's cut needs {MIN_DURATION:.0f} "
                               f"s (PySlowFast cuts seconds {WINDOW[0]:.0f}-{WINDOW[1]:.0f})")
        st.thread_type = "AUTO"
        st.codec_context.thread_count = opts.decoder_threads
        size = output_size(st.codec_context.width, st.codec_context.height, opts.short_side)
        writer = _Writer(partial, opts, size)
        try:
            frames = writer.run(_resampled(container, st, *opts.window))
        except (av.FFmpegError, OSError) as e:
            writer.abandon()
            raise PrepareError(f"{raw}: {_one_line(e)}") from None
    finally:
        container.close()
    if frames == 0:
        writer.abandon()
        raise PrepareError(f"{raw}: no frame between seconds {opts.window[0]:.0f} and "
                           f"{opts.window[1]:.0f}")
    for fmt in opts.formats:
        _remove(final[fmt])
        os.replace(partial[fmt], final[fmt])
    formats = [*kept, *opts.formats]
    record = {"video": vid, "source": str(raw), "source_seconds": duration,
              "formats": formats, "frames": frames, "fps": FPS, "size": list(size),
              "options": options_of(opts), "window": list(opts.window), "gop": opts.gop,
              "outputs": {fmt: str(final[fmt].relative_to(out)) for fmt in formats},
              "bytes": {fmt: _size_of(final[fmt]) for fmt in formats},
              "wall_s": round(time.time() - t0, 3),
              "cpu_s": round(time.process_time() - cpu0, 3),
              "stage_cpu_s": {k: round(v, 3) for k, v in writer.stage_s.items()}}
    from slowfast_dist.files import atomic_write

    atomic_write(manifest_path(out, vid), lambda f: f.write(json.dumps(record).encode()),
                 fsync=False)
    return {**record, "status": "done"}


def _duration(container, st) -> float | None:
    if st.duration is not None and st.time_base is not None:
        return float(st.duration * st.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return None


def _resampled(container, st, start: float, end: float, fps: int = FPS):
    """(k, frame) for output frame k = 0.. of [start, end) at `fps`: the decoded frame nearest
    to start + k/fps, a tie (within 1e-9 s) to the earlier one, as `video.read_frames` maps an
    index to a frame; the last frame stands for the targets up to half a frame after it. A seek
    that lands after `start` (a lying index) is redone from the start of the file."""
    first = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
    n = round((end - start) * fps)
    for attempt in ("seek", "from the start"):
        if start > 0 and attempt == "seek":
            container.seek(int((start + first) / st.time_base), stream=st, backward=True)
        elif attempt != "seek":
            container.seek(0, stream=st, backward=True)
        k, prev, prev_t, step = 0, None, None, None
        for frame in container.decode(st):
            if frame.pts is None:
                continue
            t = float(frame.pts * st.time_base) - first
            if prev is None and t > start + 0.5 / fps and attempt == "seek" and start > 0:
                break  # landed past the first target: decode again from the beginning
            if prev_t is not None and t > prev_t:
                step = t - prev_t
            while k < n and start + k / fps < t:
                target = start + k / fps
                if prev is not None and target - prev_t <= t - target + 1e-9:
                    yield k, prev
                else:
                    yield k, frame
                k += 1
            if k >= n:
                return
            prev, prev_t = frame, t
        else:
            break  # the stream ended (not an overshoot)
    half = (step or 1.0 / fps) / 2
    while prev is not None and k < n and start + k / fps <= prev_t + half + 1e-9:
        yield k, prev
        k += 1


class _Writer:
    """JPEG frames and/or an H.264 cut from the resampled frames, with CPU time per stage."""

    def __init__(self, partial: dict, opts: PrepareOptions, size):
        self.partial, self.opts, self.size = partial, opts, size
        self.stage_s = dict.fromkeys(STAGES, 0.0)

    def run(self, frames) -> int:
        import av
        import simplejpeg

        opts, (w, h) = self.opts, self.size
        vid_dir, out = None, None
        if "frames" in opts.formats:
            vid_dir = self.partial["frames"]
            vid_dir.mkdir(parents=True)
            name = vid_dir.name[1:-len(".partial")]
        if "video" in opts.formats:
            self.partial["video"].parent.mkdir(parents=True, exist_ok=True)
            out = av.open(str(self.partial["video"]), "w", format="mp4")
            enc = out.add_stream("libx264", rate=FPS)
            enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
            enc.codec_context.gop_size = opts.gop
            # a keyframe every `gop` frames exactly: a clip read seeks at most gop-1 frames back
            enc.options = {"preset": "veryfast", "crf": str(opts.crf),
                           "x264-params": f"keyint={opts.gop}:min-keyint={opts.gop}:scenecut=0"}
        from av.video.reformatter import VideoReformatter

        # one scaler per output format, reused (a new one per frame costs 15x the scaling); a
        # source frame shown again (a lower source rate) reuses its JPEG and scaled picture
        to_rgb, to_yuv = VideoReformatter(), VideoReformatter()
        last, data, yuv = None, None, None
        count, pending, clock = 0, 0, time.process_time
        try:
            it = iter(frames)
            while True:
                c0 = clock()
                item = next(it, None)
                c1 = clock()
                self.stage_s["decode"] += c1 - c0
                if item is None:
                    break
                k, frame = item
                new, last = frame is not last, frame
                if vid_dir is not None:
                    c2 = c1
                    if new:
                        rgb = to_rgb.reformat(frame, w, h, "rgb24", interpolation="AREA")
                        c2 = clock()
                        data = simplejpeg.encode_jpeg(rgb.to_ndarray(), quality=opts.quality,
                                                      colorspace="RGB",
                                                      colorsubsampling=opts.chroma)
                    (vid_dir / f"{name}_{k + 1:06d}.jpg").write_bytes(data)
                    c3 = clock()
                    self.stage_s["resize"] += c2 - c1
                    self.stage_s["jpeg"] += c3 - c2
                    c1 = c3
                if out is not None:
                    if new:
                        yuv = to_yuv.reformat(frame, w, h, "yuv420p", interpolation="AREA")
                        yuv.time_base, yuv.pict_type = _FRAME_TIME, 0
                    # the cut's own clock, and x264 picks the frame types (not the source's)
                    yuv.pts = k
                    c2 = clock()
                    for packet in enc.encode(yuv):
                        out.mux(packet)
                    self.stage_s["resize"] += c2 - c1
                    self.stage_s["h264"] += clock() - c2
                count, pending = count + 1, pending + 1
                if pending == 64:
                    _advance(pending)
                    pending = 0
            if out is not None:
                c0 = clock()
                for packet in enc.encode():
                    out.mux(packet)
                out.close()
                out = None
                self.stage_s["h264"] += clock() - c0
        except BaseException:
            if out is not None:
                out.close()
            self.abandon()
            raise
        _advance(pending)
        return count

    def abandon(self) -> None:
        for fmt in self.opts.formats:
            _remove(self.partial[fmt])


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


# ---- the set: frame lists and the check against the annotations ------------------------

SPLIT_CSVS = {"train": ("ava_train_v2.2.csv", "ava_train_v2.1.csv"),
              "val": ("ava_val_v2.2.csv", "ava_val_v2.1.csv")}


def annotation_files(ann_dir) -> dict:
    """{split: path} of the ground-truth CSVs found in `ann_dir` (v2.2 preferred)."""
    found = {}
    for split, names in SPLIT_CSVS.items():
        for name in names:
            if (Path(ann_dir) / name).is_file():
                found[split] = Path(ann_dir) / name
                break
    return found


def check_and_list(out_dir, ann_dir) -> dict:
    """Write frame_lists/{train,val}.csv for the prepared videos each split's CSV names, and
    count what the annotations lose: videos not prepared, keyframes beyond a video's frames,
    and their labels."""
    from slowfast_dist.data.ava_files import keyframe_index
    from slowfast_dist.eval.ava_map import csv_rows
    from slowfast_dist.files import atomic_write

    out = Path(out_dir)
    records = {}
    if (out / ".prepare").is_dir():
        for path in sorted((out / ".prepare").glob("*.json")):
            record = read_manifest(out, path.stem)
            if record is not None:
                records[path.stem] = record
    report, named = {}, set()
    for split, csv in annotation_files(ann_dir).items():
        per_keyframe: dict = {}  # (video, second) -> label rows
        for _, row in csv_rows(csv, "annotation CSV"):
            if len(row) >= 7:
                key = (row[0], int(row[1]))
                per_keyframe[key] = per_keyframe.get(key, 0) + 1
        labels: dict = {}
        for (vid, _), n in per_keyframe.items():
            labels[vid] = labels.get(vid, 0) + n
        named |= set(labels)
        missing_videos = sorted(v for v in labels if v not in records)
        late = sorted((v, s) for v, s in per_keyframe if v in records
                      and keyframe_index(s) >= records[v]["frames"])
        lost = sum(labels[v] for v in missing_videos) + sum(per_keyframe[k] for k in late)
        vids = sorted(v for v in labels if v in records)
        lines = ["original_vido_id video_idx frame_id path labels"]
        for idx, vid in enumerate(vids):
            lines += [f'{vid} {idx} {k} {vid}/{vid}_{k + 1:06d}.jpg ""'
                      for k in range(records[vid]["frames"])]
        text = "\n".join(lines) + "\n"
        atomic_write(out / "frame_lists" / f"{split}.csv", lambda f: f.write(text.encode()),
                     fsync=False)
        report[split] = {"csv": str(csv), "videos": len(labels), "videos_prepared": len(vids),
                         "missing_videos": missing_videos, "keyframes": len(per_keyframe),
                         "keyframes_beyond_frames": [f"{v},{s}" for v, s in late],
                         "labels": sum(labels.values()), "labels_lost": lost}
    return {"splits": report, "prepared": len(records),
            "not_in_annotations": sorted(set(records) - named)}
