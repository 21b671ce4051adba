"""The PyAV video source: exact frame indices after seeks, agreement with JPEGs, bad files."""
import math
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from slowfast_dist.data import ava_files as af
from slowfast_dist.data import video as V
from slowfast_dist.data.synthetic import make_synthetic

N = 75  # 2.5 s at 30 fps
W, H = 64, 48


def _pattern(i):
    # the index in binary as 8 black/white columns: survives H.264 loss, unlike a grey level
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(8):
        if i >> b & 1:
            img[:, b * 8:(b + 1) * 8] = 255
    return img


def _index_of(img):
    return sum(1 << b for b in range(8) if img[:, b * 8:(b + 1) * 8].mean() > 128)


def _write(path, codec="libx264", pts_offset=0, n=N, rate=30):
    c = av.open(str(path), "w")
    st = c.add_stream(codec, rate=rate)
    st.width, st.height, st.pix_fmt = W, H, "yuv420p"
    if codec == "libx264":
        # a keyframe every 15 frames and no scene-cut keyframes, so reads really seek into GOPs
        st.options = {"g": "15", "sc_threshold": "0"}
    for i in range(n):
        f = av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")
        f.pts = i + pts_offset  # time base 1/rate
        for p in st.encode(f):
            c.mux(p)
    for p in st.encode():
        c.mux(p)
    c.close()
    return str(path)


INDEX_SETS = [
    [0, 1, 2, 3],                    # start
    [33, 35, 37, 39, 41, 43],        # middle, after two keyframes, inside a GOP
    [44, 45, 46],                    # straddles the keyframe at 45
    [N - 3, N - 2, N - 1],           # end
    [50, 50, 50, 51],                # repeated
    [0, 0, 0, 1, 3, 5],              # clamped at the start
    [70, 72, 74, 74, 74, 74],        # clamped at the end
    [60, 10, 31],                    # unsorted
]


@pytest.mark.parametrize("name,codec,offset", [
    ("v.mp4", "libx264", 0),
    ("v.mkv", "libx264", 0),
    ("late.mp4", "libx264", 45),   # first pts 1.5 s: index 0 is the first frame of the file
    ("late.mkv", "libx264", 45),
    ("v.webm", "libvpx-vp9", 0),
])
def test_read_frames_returns_exactly_the_requested_indices(tmp_path, name, codec, offset):
    path = _write(tmp_path / name, codec, offset)
    assert V.frame_count(path) == N
    for idx in INDEX_SETS:
        out = V.read_frames(path, idx)
        assert out.dtype == np.uint8 and out.shape == (len(idx), H, W, 3)
        assert [_index_of(f) for f in out] == idx


@pytest.mark.parametrize("rate", [Fraction(25), Fraction(30000, 1001), Fraction(50)])
def test_other_frame_rates_map_to_the_nearest_frame_of_each_30_fps_index(tmp_path, rate):
    # AVA's videos are not all 30 fps; PySlowFast's frames are extracted at 30 fps, so index i
    # is the source frame nearest to time i/30 (a tie goes to the earlier frame)
    n = 100
    path = _write(tmp_path / "r.mp4", n=n, rate=rate)
    covered = int(n / rate * 30)
    assert abs(V.frame_count(path) - covered) <= 1

    def nearest(i):  # smallest j with i/30 <= (j/rate + (j+1)/rate) / 2
        return min(n - 1, max(0, math.ceil(Fraction(i, 30) * rate - Fraction(1, 2))))

    for idx in ([0, 1, 2, 3, 4, 5, 6], [40, 42, 44, 46], [covered - 3, covered - 2, covered - 1]):
        got = [_index_of(f) for f in V.read_frames(path, idx)]
        assert got == [nearest(i) for i in idx], (idx, got)
    with pytest.raises(V.VideoError, match="past the end"):
        V.read_frames(path, [covered + 2])


class _Counting:
    """Wraps a PyAV container and its packets to count demuxed packets and decoded frames."""

    def __init__(self, c, packets, frames):
        self._c, self._packets, self._frames = c, packets, frames

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def demux(self, *a, **k):
        for p in self._c.demux(*a, **k):
            self._packets.append(p.pts)
            yield _CountingPacket(p, self._frames)

    def decode(self, *a, **k):
        for f in self._c.decode(*a, **k):
            self._frames.append(f.pts)
            yield f


class _CountingPacket:
    def __init__(self, p, frames):
        self.pts, self._p, self._frames = p.pts, p, frames

    def decode(self):
        out = self._p.decode()
        self._frames.extend(f.pts for f in out)
        return out


def test_read_frames_seeks_to_the_keyframe_before_and_skips_unneeded_frames(tmp_path,
                                                                            monkeypatch):
    path = _write(tmp_path / "v.mp4")
    packets, frames, real_open = [], [], av.open
    monkeypatch.setattr(av, "open", lambda p, *a, **k: _Counting(real_open(p, *a, **k),
                                                                 packets, frames))
    assert [_index_of(f) for f in V.read_frames(path, [62, 66])] == [62, 66]
    # packets from keyframe 60 to 66 plus B-frame reordering; decoding from 0 would be 67+
    assert 7 <= len(packets) <= 15, packets
    # B-frames that the clip does not need are not decoded (skip_frame NONREF)
    assert len(frames) < 7, frames
    packets.clear()
    frames.clear()
    assert _index_of(V.read_frames(path, [20])[0]) == 20
    assert 6 <= len(packets) <= 15, packets


class _LateSeek(_Counting):
    """A container whose first seek lands one second late (an index that lies)."""

    def seek(self, offset, **k):
        late = 0 if self._packets else int(1 / self._c.streams.video[0].time_base)
        self._packets.append("seek")
        return self._c.seek(offset + late, **k)


def test_a_seek_that_lands_after_the_clip_start_falls_back_to_the_file_start(tmp_path,
                                                                              monkeypatch):
    path = _write(tmp_path / "v.mp4")
    calls, real_open = [], av.open
    monkeypatch.setattr(av, "open", lambda p, *a, **k: _LateSeek(real_open(p, *a, **k),
                                                                 calls, []))
    idx = [16, 20, 47, 47]
    assert [_index_of(f) for f in V.read_frames(path, idx)] == idx
    assert calls.count("seek") == 2


def test_video_agrees_with_frame_tree_of_the_synthetic_set(tmp_path):
    make_synthetic(str(tmp_path), videos=1, seconds=1, persons=3, seed=0)
    names, frames = af.read_frame_lists([str(tmp_path / "frame_lists" / "train.csv")],
                                        str(tmp_path / "frames"))
    path = V.find_video(str(tmp_path / "videos"), names[0])
    assert path.endswith(".mp4")
    n = len(frames[0])

    def jpegs(idx):
        return np.stack([np.asarray(Image.open(frames[0][i]).convert("RGB")) for i in idx]
                        ).astype(np.float32)

    # the clip the dataset reads for keyframe second 902: 16 frames at rate 2
    idx = af.get_sequence(af.keyframe_index(902), 16, 2, n)
    jp = jpegs(idx)
    vid = V.read_frames(path, idx).astype(np.float32)
    assert vid.shape == jp.shape
    # measured 1.4 grey levels (JPEG q95 + H.264 crf 23 on a flat background)
    assert np.abs(vid - jp).mean() < 4
    # the shapes move only on ~2% of the pixels, so compare where frame i and i+s differ:
    # measured 4-7 at the true index against 82-96 at a shift of 1-3 frames
    for s in (1, 2, 3, -1, -2, -3):
        moving = np.abs(jp - jpegs([i + s for i in idx])).max(-1) > 40
        assert moving.sum() > 500
        shifted = V.read_frames(path, [i + s for i in idx]).astype(np.float32)
        same = np.abs(vid - jp).mean(-1)[moving].mean()
        other = np.abs(shifted - jp).mean(-1)[moving].mean()
        assert same < 20 and other > 40, (s, same, other)


def test_find_video_tries_each_extension(tmp_path):
    (tmp_path / "a.webm").write_bytes(b"")
    (tmp_path / "b.mkv").write_bytes(b"")
    assert V.find_video(str(tmp_path), "a") == str(tmp_path / "a.webm")
    assert V.find_video(str(tmp_path), "b") == str(tmp_path / "b.mkv")
    with pytest.raises(V.VideoError, match=r"c\.\{mp4,mkv,webm\}: no such video file"):
        V.find_video(str(tmp_path), "c")


def _bad_files(tmp_path):
    good = _write(tmp_path / "good.mp4")
    mkv = _write(tmp_path / "good.mkv")
    rnd = tmp_path / "random.mp4"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    data = open(good, "rb").read()
    cut = tmp_path / "truncated.mp4"  # the moov atom is at the end: cannot be opened
    cut.write_bytes(data[:len(data) // 2])
    data = open(mkv, "rb").read()
    cut_mkv = tmp_path / "truncated.mkv"  # opens, but the stream ends early
    cut_mkv.write_bytes(data[:len(data) // 2])
    audio = tmp_path / "audio.wav"
    c = av.open(str(audio), "w")
    st = c.add_stream("pcm_s16le", rate=8000)
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    fr.sample_rate = 8000
    for p in st.encode(fr):
        c.mux(p)
    c.close()
    return [
        (tmp_path / "missing.mp4", [0], "no such video file"),
        (rnd, [0], "cannot open video"),
        (cut, [0], "cannot open video"),
        (cut_mkv, [0, 70], "frame index 70 past the end"),
        (audio, [0], "no video stream"),
        (good, [N], f"frame index {N} past the end"),
        (good, [3, 500], "frame index 500 past the end"),
    ]


def test_bad_videos_raise_one_line_video_error_naming_the_file(tmp_path):
    for path, idx, problem in _bad_files(tmp_path):
        with pytest.raises(V.VideoError) as e:
            V.read_frames(str(path), idx)
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and problem in msg and "\n" not in msg, msg
    with pytest.raises(V.VideoError, match="no such video file"):
        V.frame_count(str(tmp_path / "missing.mp4"))


def test_kept_open_containers_give_the_same_frames_and_reopen_rewritten_files(tmp_path,
                                                                           monkeypatch):
    """Clips read in any order through the per-process open containers equal fresh reads; at
    most KEEP_OPEN stay open; a file rewritten on disk is opened again, not read stale."""
    from collections import OrderedDict

    paths = [_write(tmp_path / f"v{k}.mp4", pts_offset=15 * k) for k in range(3)]
    clips = [(60, 68), (0, 8), (30, 38)]
    fresh = {}
    for p in paths:
        for a, b in clips:
            monkeypatch.setattr(V, "_open_here", OrderedDict())
            fresh[p, a] = V.read_frames(p, range(a, b))
            assert [_index_of(x) for x in fresh[p, a]] == list(range(a, b))
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *x, **k: opened.append(x[0]) or real_open(*x, **k))
    monkeypatch.setattr(V, "KEEP_OPEN", 2)
    monkeypatch.setattr(V, "_open_here", OrderedDict())
    for p in paths[:2] * 3:  # two videos, three clips each, interleaved
        for a, b in clips:
            assert np.array_equal(V.read_frames(p, range(a, b)), fresh[p, a])
    assert len(opened) == 2 and len(V._open_here) == 2
    V.read_frames(paths[2], range(8))
    assert len(V._open_here) == 2  # the least recently used one was closed
    _write(tmp_path / "v0.mp4", n=40)  # rewritten, shorter
    with pytest.raises(V.VideoError, match="past the end"):
        V.read_frames(paths[0], range(60, 68))


def _read_in_child(path, out):
    frames = V.read_frames(path, range(30, 38))
    out.put(([_index_of(x) for x in frames], len(V._inherited), len(V._open_here)))


def test_a_forked_worker_opens_its_own_container(tmp_path):
    import multiprocessing as mp

    path = _write(tmp_path / "v.mp4")
    V.read_frames(path, range(8))  # the parent has it open now
    parent_open = dict(V._open_here)
    q = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_read_in_child, args=(path, q))
    child.start()
    indices, inherited, own = q.get(timeout=60)
    child.join(60)
    assert indices == list(range(30, 38)) and inherited >= 1 and own == 1
    assert V._open_here == parent_open  # the parent's container is untouched
    assert [_index_of(x) for x in V.read_frames(path, range(40, 44))] == [40, 41, 42, 43]
