"""Video pixel source: decode the frames of a clip straight from the AVA video file with PyAV.

The file is the 15-minute cut that PySlowFast extracts its JPEG frames from, so the first
frame of the file is frame index 0 (second 900 of the original AVA video) and frame index i
sits at time i / fps. `read_frames` seeks once to the keyframe at or before the first needed
frame and decodes forward only as far as the last one; each decoded frame is placed by its
timestamp, not by counting, so a seek that lands early or late cannot shift the clip. Frames
that nothing refers to (most B-frames) are not decoded unless the clip needs them, which halves
the cost of the pre-roll from the keyframe.

Each process keeps its last few containers open (`KEEP_OPEN`): reopening a file and starting its
decoder cost 5-10 ms of a 32-frame clip at 360p (reads paired on the same clips, one thread:
1.07x per clip kept open). A container is never shared across a fork: a
process that finds containers opened by its parent leaves them alone and opens its own.
"""
import math
import os
from collections import OrderedDict

import numpy as np

EXTENSIONS = (".mp4", ".mkv", ".webm")


class VideoError(Exception):
    """A video that cannot give the requested frames; the message names the file (one line)."""


def find_video(video_dir, name):
    """Path of `<video_dir>/<name>.{mp4,mkv,webm}` (the first that exists)."""
    base = os.path.join(video_dir, name)
    for ext in EXTENSIONS:
        if os.path.isfile(base + ext):
            return base + ext
    raise VideoError(f"{base}.{{{','.join(e[1:] for e in EXTENSIONS)}}}: no such video file")


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


KEEP_OPEN = 4  # containers kept open per process (a worker reads a few videos in turn)
_open_here: "OrderedDict[str, tuple]" = OrderedDict()
_open_pid = None
_inherited = []  # a parent's containers: referenced, never used or closed, after a fork


def _acquire(path):
    """(container, stream, reused) for `path`, from this process's open ones when it can (the
    same file: a file rewritten since is opened again)."""
    global _open_pid, _open_here
    if _open_pid != os.getpid():
        _inherited.append(_open_here)
        _open_here, _open_pid = OrderedDict(), os.getpid()
    try:
        info = os.stat(path)
        key = (path, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        key = None  # _open names the missing file
    if key in _open_here:
        _open_here.move_to_end(key)
        return (*_open_here[key], True)
    for old in [k for k in _open_here if k[0] == path]:
        _open_here.pop(old)[0].close()
    container, st = _open(path)
    # one decoding thread: loader workers already decode clips in parallel, and FFmpeg's
    # automatic count would start a thread per core in every worker at every call
    st.codec_context.thread_count = 1
    _open_here[key] = (container, st)
    while len(_open_here) > max(1, KEEP_OPEN):  # never the one just opened
        _open_here.popitem(last=False)[1][0].close()
    return container, st, False


def _discard(path):
    """Close a container that failed: the next call opens the file afresh."""
    for key in [k for k in _open_here if k[0] == path]:
        _open_here.pop(key)[0].close()


def _open(path):
    import av
    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such video file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot open video: {_one_line(e)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container, container.streams.video[0]


def frame_count(path, fps=30):
    """Number of frame indices at `fps` the video covers (its duration times `fps`; the source
    may have another rate: PySlowFast's frames are extracted at 30 fps whatever the video's)."""
    container, st = _open(path)
    with container:
        if st.frames and st.average_rate:
            return int(round(st.frames / float(st.average_rate) * fps))
        if st.duration is not None and st.time_base is not None:
            return int(round(float(st.duration * st.time_base) * fps))
        if container.duration is not None:  # microseconds (AV_TIME_BASE), may include the start
            return int(round((container.duration - (container.start_time or 0)) / 1e6 * fps))
    raise VideoError(f"{path}: unknown duration")


def reduced_size(full_hw, need_short):
    """(height, width) with the short side `need_short`, or None: frames are converted to a
    smaller size only when their short side is at least twice what the sample needs."""
    h, w = full_hw
    if not need_short or min(h, w) < 2 * need_short:
        return None
    scale = need_short / min(h, w)
    return max(need_short, round(h * scale)), max(need_short, round(w * scale))


def read_frames(path, indices, fps=30, size_for=None):
    """RGB frames `uint8 [len(indices), H, W, 3]` for 0-based frame indices (repeats allowed).

    `size_for((height, width))`, when given, is called with the stream's frame size before
    decoding and may return a smaller (height, width): the frames are then scaled while being
    converted to RGB (swscale), which at 1080p costs less than converting them whole and ships
    a fraction of the bytes.

    Frame index i is what the video shows at time i / fps: the decoded frame nearest to that
    time (a tie goes to the earlier one), which is what extracting JPEGs at `fps` gives, so a
    25 or 29.97 fps video maps onto the same indices as its frame tree. Raises VideoError for a
    missing or unreadable file, a decode error, or an index that the stream does not reach (a
    truncated file).
    """
    import av
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("read_frames: no frame indices")
    if min(indices) < 0:
        raise VideoError(f"{path}: frame index {min(indices)} is negative")
    targets = sorted(set(indices))
    container, st, _ = _acquire(path)
    try:
        rate = float(st.average_rate) if st.average_rate else float(fps)
        size = size_for((st.codec_context.height, st.codec_context.width)) if size_for else None
        dec = _Decoder(st, targets, fps, rate, size)
        try:
            dec.run(container, seek_sec=targets[0] / fps)
            if dec.overshot:
                # the seek landed after the first frame (a container whose index lies): decode
                # again from the start of the file, slow but exact
                dec = _Decoder(st, targets, fps, rate, size)
                dec.run(container, seek_sec=0)
        except av.error.FFmpegError as e:
            _discard(path)
            raise VideoError(f"{path}: decode error: {_one_line(e)}") from None
    except BaseException:
        _discard(path)
        raise
    missing = [i for i in targets if i not in dec.got]
    if missing:
        if dec.last_t is None or missing[-1] / fps > dec.last_t:
            ends = 0 if dec.last_t is None else int(dec.last_t * fps + 0.5) + 1
            raise VideoError(f"{path}: frame index {missing[-1]} past the end of the stream "
                             f"(decoding stopped at {ends} frames)")
        raise VideoError(f"{path}: frame index {missing[0]} not found in the stream")
    return np.stack([dec.got[i] for i in indices])


class _Decoder:
    """Decodes forward from a seek and hands each target index the frame nearest its time."""

    def __init__(self, st, targets, fps, rate, size=None):
        self.st, self.targets, self.fps = st, targets, fps
        self.convert = {"format": "rgb24"}
        if size is not None:
            self.convert.update(height=size[0], width=size[1])
        self.start = st.start_time if st.start_time is not None else 0
        self.tick = float(st.time_base)
        self.half = 0.5 / rate  # half a source frame: how long a frame is nearest
        # Skipping frames nothing refers to is safe only when source frames and indices coincide.
        self.skip_ok = abs(rate - fps) < 1e-3
        self.got, self.last_t, self.overshot = {}, None, False

    def _time(self, pts):
        return (pts - self.start) * self.tick

    def run(self, container, seek_sec):
        # Always seek (a kept-open container is wherever its last clip left it); floor: at or
        # before the first frame's timestamp however the muxer rounded it.
        container.seek(self.start + math.floor(seek_sec / self.tick), stream=self.st,
                       backward=True)
        need = set(self.targets)
        k, prev = 0, None  # next target to place; previous frame (time, frame, array or None)
        ctx = self.st.codec_context
        for packet in container.demux(self.st):
            # a frame no other frame refers to (most B-frames) is decoded only if the clip needs
            # it: the pre-roll from the keyframe and the frames between sampled ones cost less
            skip = (self.skip_ok and packet.pts is not None
                    and round(self._time(packet.pts) * self.fps) not in need)
            ctx.skip_frame = "NONREF" if skip else "DEFAULT"
            for frame in packet.decode():
                t = (self._time(frame.pts) if frame.pts is not None
                     else (0.0 if prev is None else prev[0] + 2 * self.half))
                self.last_t = t if self.last_t is None else max(self.last_t, t)
                if prev is None and self.targets[0] / self.fps < t - self.half - 1e-9:
                    self.overshot = True  # the first frame decoded is already past the clip
                    return
                if prev is not None:
                    k = self._place(k, prev, (prev[0] + t) / 2)
                    if k == len(self.targets):
                        return
                prev = [t, frame, None]
        if prev is not None:  # end of stream: the last frame holds for half a frame
            self._place(k, prev, prev[0] + self.half)

    def _place(self, k, prev, until):
        """Give frame `prev` to the targets whose time is at most `until`; returns the next k."""
        while k < len(self.targets) and self.targets[k] / self.fps <= until + 1e-9:
            if prev[2] is None:
                prev[2] = prev[1].to_ndarray(**self.convert)
            self.got[self.targets[k]] = prev[2]
            k += 1
        return k
