"""prepare-ava (data/prepare_ava.py, data/prepare_ava_cli.py): raw movies longer than 1800 s (tiny
frames, 5 fps) -> a tree both pixel sources read alike; the 30 fps resampling picks the nearest
source frame; a killed run resumes without redoing finished movies; bad movies are one line each."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from slowfast_dist.config import load_config
from slowfast_dist.data import build_ava_dataset
from slowfast_dist.data.prepare_ava import FPS, WINDOW, output_size

RAW_FPS, RAW_W, RAW_H = 5, 160, 90


def band(i):
    """The grey level of the top band of raw frame i: neighbours differ by 7 levels."""
    return (i * 7) % 200 + 20


def make_raw(path, seconds, seed=0):
    """A smooth pattern that pans, with the frame number coded in a top band."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:RAW_H, 0:2 * RAW_W]
    base = np.stack([(xx * 2 + yy) % 256, (yy * 3) % 256, (xx + 40 * rng.random()) % 256], -1)
    base = base.astype(np.uint8)
    container = av.open(str(path), "w")
    st = container.add_stream("libx264", rate=RAW_FPS)
    st.width, st.height, st.pix_fmt = RAW_W, RAW_H, "yuv420p"
    st.options = {"preset": "ultrafast", "crf": "10"}
    for i in range(int(seconds * RAW_FPS)):
        img = np.ascontiguousarray(base[:, i % RAW_W:i % RAW_W + RAW_W])
        img[:16] = band(i)
        for packet in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in st.encode():
        container.mux(packet)
    container.close()


def make_audio_only(path):
    container = av.open(str(path), "w")
    st = container.add_stream("pcm_s16le", rate=8000)
    st.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for packet in [*st.encode(frame), *st.encode()]:
        container.mux(packet)
    container.close()


def annotations(folder, train, val):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("ava_train_v2.2.csv", train), ("ava_val_v2.2.csv", val)):
        (folder / name).write_text("".join(f"{r}\n" for r in rows))
    (folder / "ava_action_list_v2.2.pbtxt").write_text(
        "".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in (1, 2, 3)))


def prepare(raw, out, *args, wait=True):
    cmd = [sys.executable, "-m", "slowfast_dist.cli", "prepare-ava", str(raw), str(out), *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    raw = root / "raw"
    raw.mkdir()
    make_raw(raw / "movA.mp4", WINDOW[1] + 1, seed=1)
    make_raw(raw / "movB.mkv", WINDOW[1] + 1, seed=2)
    (raw / "broken.mp4").write_bytes(b"not a movie at all")
    make_raw(raw / "short.mp4", 20)
    make_audio_only(raw / "sound.mkv")
    rows = ["movA,902,0.1,0.1,0.5,0.9,1,0", "movA,902,0.1,0.1,0.5,0.9,2,0",
            "movA,1500,0.3,0.2,0.7,0.8,3,1", "movA,1798,0.2,0.1,0.6,0.9,2,1",
            "absent,905,0.1,0.1,0.5,0.9,1,0", "absent,906,0.1,0.1,0.5,0.9,1,0"]
    annotations(root / "out" / "annotations", rows, ["movB,903,0.1,0.1,0.5,0.9,1,0"])
    r = prepare(raw, root / "out", "--format", "both", "--short-side", "72", "--jobs", "2")
    return root, r


def test_bad_movies_are_one_line_each_and_the_others_go_on(prepared):
    root, r = prepared
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    broken = [x for x in lines if "broken.mp4" in x]
    short = [x for x in lines if "short.mp4" in x]
    assert len(broken) == 1 and "unreadable" in broken[0], r.stderr
    assert len(short) == 1 and "20 s long" in short[0] and "1800" in short[0], r.stderr
    sound = [x for x in lines if "sound.mkv" in x]
    assert len(sound) == 1 and "no video stream" in sound[0], r.stderr
    report = json.loads((root / "out" / "prepare_report.json").read_text())
    assert sorted(f["video"] for f in report["failed"]) == ["broken", "short", "sound"]
    assert sorted(report["prepared_now"]) == ["movA", "movB"]
    # an annotated video absent from the tree is counted and listed, not a crash
    train = report["check"]["splits"]["train"]
    assert train["missing_videos"] == ["absent"] and train["labels_lost"] == 2
    assert train["labels"] == 6 and report["check"]["splits"]["val"]["labels_lost"] == 0
    assert "2 of 6 labels lost" in r.stdout and "missing: absent" in r.stdout


def test_frames_are_the_nearest_source_frame_at_30_fps(prepared):
    root, _ = prepared
    frames = root / "out" / "frames" / "movA"
    names = sorted(os.listdir(frames))
    assert len(names) == round((WINDOW[1] - WINDOW[0]) * FPS) == 27030
    assert names[0] == "movA_000001.jpg" and names[-1] == "movA_027030.jpg"
    from PIL import Image

    from slowfast_dist.data import video

    ks = [0, 1, 2, 3, 4, 5, 6, 9, 3000, 27029]
    cut = video.read_frames(str(root / "out" / "videos" / "movA.mp4"), ks)
    for k, from_cut in zip(ks, cut):
        # nearest raw frame to second 900 + k/30; a tie (k % 6 == 3) goes to the earlier one
        i = WINDOW[0] * RAW_FPS + (k * RAW_FPS) // FPS + (1 if (k * RAW_FPS) % FPS > FPS / 2
                                                          else 0)
        img = np.asarray(Image.open(frames / f"movA_{k + 1:06d}.jpg"))
        assert img.shape == from_cut.shape == (72, 128, 3)
        for source, got in (("frames", img), ("video", from_cut)):
            level = float(got[2:8, 20:-20].mean())
            assert abs(level - band(int(i))) < 2.5, (source, k, i, level, band(int(i)))


def test_frame_lists_and_the_cut_cover_the_same_frames(prepared):
    root, _ = prepared
    lines = (root / "out" / "frame_lists" / "train.csv").read_text().splitlines()
    assert lines[0] == "original_vido_id video_idx frame_id path labels"
    assert lines[1] == 'movA 0 0 movA/movA_000001.jpg ""' and len(lines) == 1 + 27030
    val = (root / "out" / "frame_lists" / "val.csv").read_text().splitlines()
    assert val[1].startswith("movB 0 0 movB/movB_000001.jpg")
    from slowfast_dist.data import video

    cut = root / "out" / "videos" / "movA.mp4"
    assert video.frame_count(str(cut)) == 27030
    with av.open(str(cut)) as c:  # keyframes every --gop frames (32 by default)
        keys = [p.pts for p in c.demux(c.streams.video[0]) if p.is_keyframe and p.pts is not None]
    step = keys[1] - keys[0]
    assert all(b - a == step for a, b in zip(keys, keys[1:])) and len(keys) == -(-27030 // 32)


def test_the_frames_and_the_video_source_give_the_same_samples(prepared):
    root, _ = prepared
    out = root / "out"
    common = ["AVA.FRAME_DIR", str(out / "frames"), "AVA.FRAME_LIST_DIR", str(out / "frame_lists"),
              "AVA.ANNOTATION_DIR", str(out / "annotations")]
    frames = build_ava_dataset(load_config("configs/demo.yaml", common), "train")
    videos = build_ava_dataset(load_config("configs/demo.yaml", common + [
        "AVA.PIXEL_SOURCE", "video", "AVA.VIDEO_DIR", str(out / "videos")]), "train")
    assert len(frames) == len(videos) == 3  # movA's three keyframes; `absent` has no frames
    for idx in range(len(frames)):
        a, b = frames[(idx, 0, 7)], videos[(idx, 0, 7)]  # keyed draws: the same crop and flip
        for key in ("boxes", "labels", "metadata", "geometry"):
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
        diff = np.abs(np.asarray(a["clip"], np.float32) - np.asarray(b["clip"], np.float32))
        # JPEG q95 (4:4:4) against H.264 crf 18 (4:2:0) on a pattern of sharp colour edges;
        # that both show the same source frame is checked on the frame band above
        assert diff.mean() < 5.0, diff.mean()


def test_a_killed_run_resumes_without_redoing_finished_movies(tmp_path):
    # 5 minutes of each movie (9000 frames, a few seconds to prepare), not AVA's 15
    movies = 5  # killed after the first is done: on a fast machine one movie takes 0.5 s
    raw, out = _short_movies(tmp_path, [f"m{n}.mp4" for n in range(movies)], seconds=301)
    window = ["--window", "0", "300"]
    proc = prepare(raw, out, "--jobs", "1", "--short-side", "36", *window, wait=False)
    manifests = out / ".prepare"
    deadline = time.time() + 300
    while not (manifests.is_dir() and any(manifests.glob("*.json"))):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # into the second movie
    proc.wait()
    done = {p.stem: p.stat().st_mtime_ns for p in manifests.glob("*.json")}
    assert 1 <= len(done) < movies
    r = prepare(raw, out, "--jobs", "1", "--short-side", "36", *window)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(done)} of {movies} movies already prepared" in r.stderr
    assert {p.stem: p.stat().st_mtime_ns for p in manifests.glob("*.json") if p.stem in done} \
        == done  # finished movies untouched
    names = [f"m{n}" for n in range(movies)]
    assert sorted(os.listdir(out / "frames")) == names  # no partial folder left
    assert all(len(os.listdir(out / "frames" / name)) == 300 * FPS for name in names)
    report = json.loads((out / "prepare_report.json").read_text())
    assert sorted(report["skipped"]) == sorted(done)
    assert len(report["prepared_now"]) == movies - len(done)


def test_usage_errors_are_one_line_exit_2(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    r = prepare(raw, tmp_path / "out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--annotations" in r.stderr
    annotations(tmp_path / "out" / "annotations", [], [])
    r = prepare(raw, tmp_path / "out")
    assert r.returncode == 2 and "no movie files" in r.stderr
    r = prepare(tmp_path / "nope", tmp_path / "out")
    assert r.returncode == 2 and "not a folder" in r.stderr


def test_output_size_keeps_the_aspect_with_even_sides_and_never_upscales():
    assert output_size(1920, 1080, 360) == (640, 360)
    assert output_size(1280, 720, 360) == (640, 360)
    assert output_size(720, 480, 360) == (540, 360)
    assert output_size(480, 360, 720) == (480, 360)
    assert output_size(1920, 800, 360) == (864, 360)
    assert output_size(1920, 1080, None) == (1920, 1080)


def _short_movies(tmp_path, names, seconds=5):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    for n, name in enumerate(names):
        make_raw(raw / name, seconds, seed=n)
    out = tmp_path / "out"
    annotations(out / "annotations", [f"{Path(x).stem},902,0.1,0.1,0.5,0.9,1,0"
                                      for x in names], [])
    return raw, out


def test_a_worker_that_dies_fails_its_movie_and_the_others_go_on(tmp_path):
    raw, out = _short_movies(tmp_path, ["m0.mp4", "m1.mp4", "m2.mp4"])
    env = dict(os.environ, SLOWFAST_DIST_FAULT_PREPARE_DIE="m1")
    r = subprocess.run([sys.executable, "-m", "slowfast_dist.cli", "prepare-ava", str(raw),
                        str(out), "--window", "0", "4", "--jobs", "2"], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 1, r.stderr
    died = [x for x in r.stderr.splitlines() if "worker process died" in x]
    assert len(died) == 1 and "m1.mp4" in died[0], r.stderr
    report = json.loads((out / "prepare_report.json").read_text())
    assert sorted(report["prepared_now"]) == ["m0", "m2"]
    assert [f["video"] for f in report["failed"]] == ["m1"]


def test_changed_options_prepare_again_and_formats_add_up(tmp_path):
    raw, out = _short_movies(tmp_path, ["m0.mp4"])
    args = ["--window", "0", "4", "--jobs", "1"]
    assert prepare(raw, out, *args, "--short-side", "36").returncode == 0
    assert prepare(raw, out, *args, "--short-side", "36").stderr.count("already prepared") == 1
    r = prepare(raw, out, *args, "--short-side", "48")  # other pixels: prepared again
    assert r.returncode == 0 and "1 prepared, 0 already done" in r.stdout, r.stdout
    assert json.loads((out / ".prepare/m0.json").read_text())["size"] == [86, 48]
    r = prepare(raw, out, *args, "--short-side", "48", "--format", "video")
    record = json.loads((out / ".prepare/m0.json").read_text())
    assert r.returncode == 0 and sorted(record["formats"]) == ["frames", "video"]
    r = prepare(raw, out, *args, "--short-side", "48", "--format", "both")
    assert "1 of 1 movies already prepared" in r.stderr  # both formats are there


def test_chroma_420_frames_are_what_the_yuv420_decoder_reads(tmp_path):
    from slowfast_dist.data import jpeg

    raw, out = _short_movies(tmp_path, ["m0.mp4"])
    args = ["--window", "0", "2", "--jobs", "1", "--short-side", "36"]
    assert prepare(raw, out, *args).returncode == 0
    first = sorted((out / "frames" / "m0").glob("*.jpg"))[0]
    assert jpeg.subsampling(first.read_bytes(), str(first)) == "4:4:4"  # the default
    r = prepare(raw, out, *args, "--chroma", "420")  # other pixels: prepared again
    assert r.returncode == 0 and "1 prepared, 0 already done" in r.stdout, r.stdout
    data = first.read_bytes()
    assert jpeg.subsampling(data, str(first)) == "4:2:0"
    y, cb, _, _ = jpeg.decode_yuv420(data, str(first))
    assert y.shape == (36, 64) and cb.shape == (18, 32)


def test_two_files_of_one_video_id_are_refused(tmp_path):
    raw, out = _short_movies(tmp_path, ["m0.mp4", "m0.mkv"])
    r = prepare(raw, out, "--window", "0", "4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "m0.mkv and m0.mp4 are one video id" in r.stderr
