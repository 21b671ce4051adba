"""Video pixel source: decode the frames of a clip straight from the AVA video file with PyAV.

The file is the 15-minute cut that PySlowFast extracts its JPEG frames from, so the first
frame of the file is frame index 0 (second 900 of the original AVA video) and frame index i
sits at time i / fps. `read_frames` seeks once to the keyframe at or before the first needed
frame and decodes forward only as far as the last one; each decoded frame is placed by its
timestamp, not by counting, so a seek that lands early or late cannot shift the clip. Frames
that nothing refers to (most B-frames) are not decoded unless the clip needs them, which halves
the cost of the pre-roll from the keyframe.

A container is opened and closed inside each call: nothing is shared between DataLoader worker
processes after fork.
"""
import math
import os

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
    """Number of frames in the video (from the stream header, else from its duration)."""
    container, st = _open(path)
    with container:
        if st.frames:
            return int(st.frames)
        if st.duration is not None and st.time_base is not None:
            return int(round(float(st.duration * st.time_base) * fps))
        if container.duration is not None:  # microseconds (AV_TIME_BASE), may include the start
            return int(round((container.duration - (container.start_time or 0)) / 1e6 * fps))
    raise VideoError(f"{path}: unknown duration")


def read_frames(path, indices, fps=30):
    """RGB frames `uint8 [len(indices), H, W, 3]` for 0-based frame indices (repeats allowed).

    Raises VideoError for a missing or unreadable file, a decode error, or an index that the
    stream does not reach (a truncated file).
    """
    import av
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("read_frames: no frame indices")
    if min(indices) < 0:
        raise VideoError(f"{path}: frame index {min(indices)} is negative")
    need = set(indices)
    first, last = min(need), max(need)
    container, st = _open(path)
    with container:
        # one decoding thread: loader workers already decode clips in parallel, and FFmpeg's
        # automatic count would start a thread per core in every worker at every call
        st.codec_context.thread_count = 1
        start = st.start_time if st.start_time is not None else 0
        try:
            got, lo, hi = _decode_range(container, st, start, need, last, fps, seek_to=first)
            if first not in got and lo is not None and lo > first:
                # the seek landed after the first frame (a container whose index lies): decode
                # again from the start of the file, slow but exact
                container.seek(start, stream=st, backward=True)
                got, lo, hi = _decode_range(container, st, start, need, last, fps, seek_to=0)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decode error: {_one_line(e)}") from None
    missing = sorted(need - got.keys())
    if missing:
        if hi is None or missing[-1] > hi:
            ends = 0 if hi is None else hi + 1
            raise VideoError(f"{path}: frame index {missing[-1]} past the end of the stream "
                             f"(decoding stopped at {ends} frames)")
        raise VideoError(f"{path}: frame index {missing[0]} not found in the stream")
    return np.stack([got[i] for i in indices])


def _decode_range(container, st, start, need, last, fps, seek_to):
    """Decode from the keyframe at or before frame `seek_to` up to frame `last`.

    Returns ({index: rgb array} for the indices in `need`, lowest and highest index decoded).
    """
    tb = st.time_base
    if seek_to > 0:
        # floor: at or before the first frame's timestamp however the muxer rounded it
        container.seek(start + math.floor(seek_to / (fps * tb)), stream=st, backward=True)
    sec_per_tick = float(tb)

    def index(pts):
        return int(round((pts - start) * sec_per_tick * fps))

    got, lo, hi = {}, None, None
    ctx = st.codec_context
    for packet in container.demux(st):
        # a frame no other frame refers to (most B-frames) is decoded only if the clip needs it:
        # the pre-roll from the keyframe and the frames between sampled ones cost less
        skip = packet.pts is not None and index(packet.pts) not in need
        ctx.skip_frame = "NONREF" if skip else "DEFAULT"
        for frame in packet.decode():
            if frame.pts is not None:
                idx = index(frame.pts)
            else:  # no timestamp (rare raw streams): the frame after the previous one
                idx = 0 if hi is None else hi + 1
            lo = idx if lo is None else min(lo, idx)
            hi = idx if hi is None else max(hi, idx)
            if idx in need and idx not in got:
                got[idx] = frame.to_ndarray(format="rgb24")
                if len(got) == len(need):
                    return got, lo, hi
            if idx > last:
                return got, lo, hi
    return got, lo, hi
