"""The synthetic set is a readable AVA tree and deterministic for a seed, at any size, flat or
textured."""
import filecmp

import av
import numpy as np
import pytest
from PIL import Image

from slowfast_dist.data import AvaDataset, ClipSpec
from slowfast_dist.data import ava_files as af
from slowfast_dist.data.synthetic import make_synthetic


def test_tree_readable_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_synthetic(str(a), videos=4, seconds=2, seed=3, width=64, height=48)
    make_synthetic(str(b), videos=4, seconds=2, seed=3, width=64, height=48)
    assert filecmp.cmp(a / "annotations/ava_train_v2.2.csv", b / "annotations/ava_train_v2.2.csv", shallow=False)
    assert af.read_label_map(str(a / "annotations/ava_action_list_v2.2.pbtxt"))[1] == [1, 2, 3, 4, 5, 6]
    ds = AvaDataset([str(a / "frame_lists/train.csv")], str(a / "frames"),
                    [str(a / "annotations/ava_train_v2.2.csv")],
                    str(a / "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                    clip=ClipSpec(num_frames=4, sampling_rate=2, crop_size=40, alpha=2,
                                  jitter_scales=(48, 56)))
    assert len(ds) == 3 * 2  # 3 train videos x 2 keyframes
    s = ds[0]
    assert s["labels"].shape[1] == 6 and s["labels"].sum() >= 2
    assert (a / "videos/syn000.mp4").stat().st_size > 0


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    from slowfast_dist.cli import main

    assert main(["make-synthetic", str(tmp_path / "d"), "--seconds", "-3"]) == 2
    (tmp_path / "file").write_text("")
    assert main(["make-synthetic", str(tmp_path / "file" / "d"), "--videos", "1", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--seconds -3: must be at least 1" in err[0] and "cannot write the data set" in err[-1]


@pytest.fixture(scope="module")
def sized_sets(tmp_path_factory):
    """One video, 1 keyframe second (120 frames) each: 128x96 flat, 256x192 flat, 256x192 textured
    (written through the CLI)."""
    from slowfast_dist.cli import main

    root = tmp_path_factory.mktemp("sized")
    make_synthetic(str(root / "flat128"), videos=1, seconds=1)
    make_synthetic(str(root / "flat256"), videos=1, seconds=1, width=256, height=192)
    assert main(["make-synthetic", str(root / "tex256"), "--size", "256x192", "--texture",
                 "--videos", "1", "--seconds", "1"]) == 0
    return root


def _frames(root):
    paths = sorted((root / "frames" / "syn000").glob("*.jpg"))
    assert len(paths) == 4 * 30
    return paths


def test_size_is_honoured_by_frames_and_video_and_boxes_stay_normalised(sized_sets):
    for name in ("flat256", "tex256"):
        with Image.open(_frames(sized_sets / name)[0]) as im:
            assert im.size == (256, 192)
        with av.open(str(sized_sets / name / "videos/syn000.mp4")) as container:
            assert container.streams.video[0].frames == 120
            frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
        assert frame.shape == (192, 256, 3)
    # the person and its motions scale by exactly 2, so the normalised boxes, the labels and the
    # "near" pairs are those of 128x96; the texture draws from its own generator and changes
    # only the pixels
    for csv in ("ava_train_v2.2.csv", "ava_train_predicted_boxes.csv"):
        for name in ("flat256", "tex256"):
            assert filecmp.cmp(sized_sets / "flat128/annotations" / csv,
                               sized_sets / name / "annotations" / csv, shallow=False), (name, csv)
    # ... and the persons are drawn twice as big: the brightest blob covers ~4x the pixels
    person = [(np.asarray(Image.open(_frames(sized_sets / name)[0])) > 150).all(-1).sum()
              for name in ("flat128", "flat256")]
    assert 3 < person[1] / person[0] < 5, person


def test_textured_frames_are_photo_like(sized_sets):
    def stats(name):
        paths = _frames(sized_sets / name)
        pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[::8]]
                          ).astype(np.float32)
        return {"bytes": np.median([p.stat().st_size for p in paths]),
                "variance": pixels.var(axis=(1, 2, 3)).mean(),
                "detail": np.abs(np.diff(pixels, axis=2)).mean(),  # neighbouring pixels differ
                "change": np.abs(np.diff(pixels[:4], axis=0)).mean(axis=(1, 2, 3)).min()}

    flat, tex = stats("flat256"), stats("tex256")
    # measured at 256x192: 8x the JPEG bytes, 3x the variance, 8x the neighbour differences
    assert tex["bytes"] > 4 * flat["bytes"], (flat, tex)
    assert tex["variance"] > 2 * flat["variance"], (flat, tex)
    assert tex["detail"] > 4 * flat["detail"], (flat, tex)
    assert tex["change"] > 1, tex  # pan + camera noise: no two frames alike


def test_texture_is_deterministic_for_a_seed(tmp_path):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        make_synthetic(str(tmp_path / name), videos=2, seconds=1, seed=seed, width=64, height=48,
                       texture=True)
    a, b = tmp_path / "a/frames/syn001", tmp_path / "b/frames/syn001"
    names = sorted(p.name for p in a.glob("*.jpg"))
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors and len(names) == 120
    assert not filecmp.cmp(a / names[0], tmp_path / "c/frames/syn001" / names[0], shallow=False)


@pytest.mark.parametrize("size, why", [
    ("127x96", "must be even"),
    ("128x95", "must be even"),
    ("62x48", "at least 64x48"),
    ("128", "expected WIDTHxHEIGHT"),
    ("640x360x3", "expected WIDTHxHEIGHT"),
    ("8000x4000", "at most 7680"),
])
def test_bad_size_is_a_one_line_error(tmp_path, capsys, size, why):
    from slowfast_dist.cli import main

    assert main(["make-synthetic", str(tmp_path / "d"), "--size", size, "--texture"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--size {size}: " in err and why in err, err
    assert not (tmp_path / "d").exists()
