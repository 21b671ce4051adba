"""AvaDataset: the frames and the video pixel sources give the same clips; bad input is skipped."""
import pytest
import torch

from slowfast_dist.config import get_cfg
from slowfast_dist.data import AvaDataset, ClipSpec
from slowfast_dist.data.dataset import build_ava_dataset
from slowfast_dist.data.synthetic import make_synthetic
from slowfast_dist.errors import UserError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    make_synthetic(str(root), videos=4, seconds=3, seed=1, width=64, height=48)
    return root


def _ds(root, source, **kw):
    return AvaDataset([str(root / "frame_lists/val.csv")], str(root / "frames"),
                      [str(root / "annotations/ava_val_predicted_boxes.csv")],
                      str(root / "annotations/ava_action_list_v2.2.pbtxt"), train=False,
                      clip=ClipSpec(num_frames=8, sampling_rate=2, crop_size=48,
                                    output=kw.pop("output", "float"),
                                    decoder=kw.pop("decoder", "auto")),
                      detect_thresh=0.8, pixel_source=source, video_dir=str(root / "videos"),
                      **kw)


def test_frames_and_video_sources_agree(tree):
    frames, video = _ds(tree, "frames"), _ds(tree, "video")
    assert len(frames) == len(video) == 3  # one val video (every 4th), 3 keyframes
    for i in range(len(frames)):
        a, b = frames[i], video[i]
        for x, y in zip(a["inputs"], b["inputs"]):
            assert x.shape == y.shape
            # normalised units: 1/255/0.225 per grey level; JPEG + H.264 loss stays a few levels
            assert (x - y).abs().mean() < 4 / 255 / 0.225
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["metadata"], b["metadata"])


def test_video_source_frame_indices_match_frames_not_a_neighbour(tree):
    # content agreement alone could hide an off-by-a-few shift; compare against shifted frames
    ds = _ds(tree, "video")
    vidx, sec, _ = ds.keys[1]
    idx = ds.frame_indices(vidx, sec)
    vid = torch.from_numpy(ds.read_pixels(vidx, idx)).float()
    ds.pixel_source = "frames"
    same = (vid - torch.from_numpy(ds.read_pixels(vidx, idx)).float()).abs().mean()
    shifted = (vid - torch.from_numpy(ds.read_pixels(vidx, [i + 3 for i in idx])).float()).abs().mean()
    assert same < 4 and shifted > 2 * same


def test_truncated_video_skips_the_sample_naming_the_file(tree, tmp_path, capfd):
    import shutil
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    mp4 = root / "videos" / "syn003.mp4"  # the only val video (every 4th, index 3)
    data = mp4.read_bytes()
    mp4.write_bytes(data[: len(data) // 3])
    ds = _ds(root, "video")
    with pytest.raises(UserError, match="no readable sample"):
        ds[0]  # the only val video is broken: every keyframe fails, then a clear error
    assert mp4.name in capfd.readouterr().err and ds.skipped == len(ds)


def test_video_source_without_frame_lists_reads_names_and_counts_from_the_videos(tree):
    # a user who skipped the frame extraction has neither frames nor frame lists
    with_lists = _ds(tree, "video")
    ds = AvaDataset([str(tree / "no_such_list.csv")], "", [str(tree / "annotations/ava_val_predicted_boxes.csv")],
                    str(tree / "annotations/ava_action_list_v2.2.pbtxt"), train=False,
                    clip=ClipSpec(num_frames=8, sampling_rate=2, crop_size=48), detect_thresh=0.8,
                    pixel_source="video", video_dir=str(tree / "videos"))
    assert ds.video_names == with_lists.video_names and ds.frame_counts == with_lists.frame_counts
    assert torch.equal(ds[2]["clip"], _ds(tree, "video", output="uint8")[2]["clip"])


def test_frames_source_still_requires_the_frame_lists(tree):
    with pytest.raises(UserError, match="no_such_list.csv: frame list not found"):
        AvaDataset([str(tree / "no_such_list.csv")], "", [], str(tree / "annotations/ava_action_list_v2.2.pbtxt"),
                   train=False, clip=ClipSpec(num_frames=4, sampling_rate=2, crop_size=32, alpha=2))


def test_video_source_needs_a_video_dir(tree):
    with pytest.raises(UserError, match="AVA.VIDEO_DIR"):
        AvaDataset([str(tree / "frame_lists/val.csv")], "", [], str(tree / "annotations/ava_action_list_v2.2.pbtxt"),
                   train=False, clip=ClipSpec(num_frames=4, sampling_rate=2, crop_size=32, alpha=2),
                   pixel_source="video")


def test_build_from_config_uses_gt_and_predicted_lists_and_num_classes(tree):
    cfg = get_cfg()
    cfg.AVA.FRAME_DIR, cfg.AVA.FRAME_LIST_DIR = str(tree / "frames"), str(tree / "frame_lists")
    cfg.AVA.ANNOTATION_DIR = str(tree / "annotations")
    cfg.AVA.TRAIN_LISTS, cfg.AVA.TEST_LISTS = ["train.csv"], ["val.csv"]
    cfg.AVA.TRAIN_GT_BOX_LISTS = ["ava_train_v2.2.csv"]
    cfg.AVA.TRAIN_PREDICT_BOX_LISTS = ["ava_train_predicted_boxes.csv"]
    cfg.AVA.TEST_PREDICT_BOX_LISTS = ["ava_val_predicted_boxes.csv"]
    cfg.AVA.LABEL_MAP_FILE = "ava_action_list_v2.2.pbtxt"
    cfg.AVA.DETECTION_SCORE_THRESH = 0.8
    cfg.AVA.PIXEL_SOURCE, cfg.AVA.VIDEO_DIR = "video", str(tree / "videos")
    cfg.MODEL.NUM_CLASSES, cfg.MODEL.ARCH = 80, "slowfast"
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.SLOWFAST.ALPHA = 4, 2, 2
    cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_JITTER_SCALES = 32, [40, 48]
    train = build_ava_dataset(cfg, "train")
    s = train[0]
    assert s["labels"].shape[1] == 80 and train.pixel_source == "video"
    # GT rows (8th column = person id, never thresholded) plus the predicted rows above 0.8;
    # the synthetic predictions repeat the GT boxes, so each keyframe has its persons' boxes
    assert all(len(b) == 2 for _, _, b in train.keys)


def test_only_val_keeps_every_fourth_second_without_full_test_on_val(tree):
    cfg = get_cfg()
    cfg.AVA.FRAME_DIR, cfg.AVA.FRAME_LIST_DIR = str(tree / "frames"), str(tree / "frame_lists")
    cfg.AVA.ANNOTATION_DIR, cfg.AVA.TEST_LISTS = str(tree / "annotations"), ["val.csv"]
    cfg.AVA.TEST_PREDICT_BOX_LISTS = ["ava_val_predicted_boxes.csv"]
    cfg.AVA.LABEL_MAP_FILE = "ava_action_list_v2.2.pbtxt"
    cfg.AVA.FULL_TEST_ON_VAL, cfg.MODEL.NUM_CLASSES = False, 80
    secs = lambda split: [s for _, s, _ in build_ava_dataset(cfg, split).keys]  # noqa: E731
    assert secs("test") == [902, 903, 904] and secs("val") == [904]  # PySlowFast's test mode


def test_val_takes_the_centre_square_test_the_whole_frame_boxes_clipped(tree):
    cfg = get_cfg()
    cfg.AVA.FRAME_DIR, cfg.AVA.FRAME_LIST_DIR = str(tree / "frames"), str(tree / "frame_lists")
    cfg.AVA.ANNOTATION_DIR, cfg.AVA.TEST_LISTS = str(tree / "annotations"), ["val.csv"]
    cfg.AVA.TEST_PREDICT_BOX_LISTS = ["ava_val_predicted_boxes.csv"]
    cfg.AVA.LABEL_MAP_FILE, cfg.MODEL.NUM_CLASSES = "ava_action_list_v2.2.pbtxt", 80
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.SLOWFAST.ALPHA = 4, 2, 2
    cfg.DATA.TEST_CROP_SIZE = 24  # frames are 64 x 48: scaled to 32 x 24
    cfg.AVA.FULL_TEST_ON_VAL = True  # the same keyframes in both splits
    val, test = build_ava_dataset(cfg, "val")[0], build_ava_dataset(cfg, "test")[0]
    out_hw = lambda s: tuple(int(v) for v in s["geometry"][9:11])  # noqa: E731  (out_h, out_w)
    assert out_hw(val) == (24, 24) and out_hw(test) == (24, 32)
    # the centre crop starts at x = ceil((32 - 24) / 2) = 4 (PySlowFast's spatial_shift_crop_list)
    both = test["boxes"][:, [0, 2]] - 4
    torch.testing.assert_close(val["boxes"][:, [0, 2]], both.clamp(0, 23))
    assert (test["boxes"][:, [0, 2]] <= 31).all() and (test["boxes"][:, [1, 3]] <= 23).all()


def _train_ds(root, **kw):
    return AvaDataset([str(root / "frame_lists/train.csv")], str(root / "frames"),
                      [str(root / "annotations/ava_train_predicted_boxes.csv")],
                      str(root / "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                      clip=ClipSpec(num_frames=4, sampling_rate=2, crop_size=32, alpha=2, **kw),
                      detect_thresh=0.8)


def test_data_random_flip_false_never_flips(tree, monkeypatch):
    flipped = lambda ds: [bool(ds[0]["geometry"][8]) for _ in range(12)]  # noqa: E731
    assert any(flipped(_train_ds(tree, jitter_scales=[32, 40])))  # about half of the draws flip
    assert not any(flipped(_train_ds(tree, jitter_scales=[32, 40], random_flip=False)))


@pytest.mark.parametrize("scales", [[24, 28], [40, 36], [40]])
def test_jitter_scales_must_cover_the_crop(tree, scales):
    with pytest.raises(UserError, match="DATA.TRAIN_JITTER_SCALES"):
        _train_ds(tree, jitter_scales=scales)


def _max_cdf_gap(a, b, lo, hi):
    """Largest difference between the two samples' CDFs over the integers lo..hi."""
    import numpy as np

    edges = np.arange(lo, hi + 2)
    ca = np.cumsum(np.histogram(a, edges)[0]) / len(a)
    cb = np.cumsum(np.histogram(b, edges)[0]) / len(b)
    return float(np.abs(ca - cb).max())


def test_scale_jitter_follows_pyslowfasts_inverse_uniform_draw(tree):
    """PySlowFast's AVA training (cv2 backend, its default) draws the short side in
    cv2_transform.random_short_side_scale_jitter_list as round(1 / uniform(1/max, 1/min))."""
    import random

    import numpy as np

    n, lo, hi = 20000, 256, 320
    ds = _train_ds(tree, jitter_scales=[lo, hi])
    ds._rng = random.Random(0)
    ours = [min(ds._draw(480, 640)[0]) for _ in range(n)]  # the dataset's own draw code
    ref = np.random.RandomState(0)
    pyslowfast = [int(round(1.0 / ref.uniform(1.0 / hi, 1.0 / lo))) for _ in range(n)]
    old = random.Random(1)
    uniform_int = [old.randint(lo, hi) for _ in range(n)]  # what the dataset drew before
    assert min(ours) >= lo and max(ours) <= hi
    # two-sample Kolmogorov-Smirnov at n = m = 20000: 0.02 is above its 0.1 % critical value
    # (1.95 * sqrt(2 / n) = 0.0195); the uniform draw is ~0.055 away, so this test can tell
    assert _max_cdf_gap(ours, pyslowfast, lo, hi) < 0.02
    assert _max_cdf_gap(uniform_int, pyslowfast, lo, hi) > 0.04


def test_training_draws_keep_their_order_scale_crop_flip(tree):
    # reproducibility: one keyed RNG, drawn scale first, then y, x, then the flip
    import random

    from slowfast_dist.data.dataset import jitter_short_side

    ds = _train_ds(tree, jitter_scales=[32, 40])
    for seed in range(20):
        ds._rng, r = random.Random(seed), random.Random(seed)
        size = jitter_short_side(r, 32, 40)
        nh, nw = size, 640 * size // 480
        # offsets as PySlowFast's randint(0, h - size): the upper end excluded
        y0 = r.randrange(nh - 32) if nh > 32 else 0
        x0 = r.randrange(nw - 32) if nw > 32 else 0
        want = ((nh, nw), (y0, x0), (32, 32), r.random() < 0.5)
        assert ds._draw(480, 640) == want


def _resave(path, **save):
    from PIL import Image

    with Image.open(path) as im:
        im.convert("L" if save.pop("grey", False) else "RGB").save(path, format="JPEG", **save)


def test_yuv420_on_frames_that_are_not_4_2_0_fails_at_build_naming_the_fix(tree, tmp_path):
    """DATA.DECODER yuv420 reads the first frame's header when the data set is built: frames
    of another subsampling are one UserError (exit 2) naming the file, the subsampling found
    and the fix, before any worker starts."""
    import shutil

    root = tmp_path / "t"
    shutil.copytree(tree, root)
    ds = _ds(root, "frames", output="uint8", decoder="yuv420")
    first = ds.frames[0][0]  # the frame list's first frame
    for save, found in (({"subsampling": 0}, "4:4:4"), ({"grey": True}, "grey")):
        _resave(first, **save)
        with pytest.raises(UserError, match=f"^{first}: JPEG chroma subsampling {found}, but "
                                            "DATA.DECODER yuv420 needs 4:2:0 frames; use "
                                            "DATA.DECODER auto$"):
            _ds(root, "frames", output="uint8", decoder="yuv420")
    with pytest.raises(UserError, match="DATA.DECODER yuv420 .* AVA.PIXEL_SOURCE video"):
        _ds(tree, "video", output="uint8", decoder="yuv420")


@pytest.mark.parametrize("reader", ["libjpeg", "pyav"])
def test_yuv420_skips_a_sample_with_a_bad_frame_naming_it(tree, tmp_path, capfd, reader):
    """As under the other decoders: a frame that does not decode, or (past the first frame's
    check) is not 4:2:0, skips its sample with one warning naming the file; whether the planes
    come from libjpeg or from libavcodec."""
    import shutil

    from support import needs_libjpeg

    needs_libjpeg(reader)
    root = tmp_path / "t"
    shutil.copytree(tree, root)
    ds = _ds(root, "frames", output="uint8", decoder="yuv420")
    ds.plane_reader = reader
    vidx, sec, _ = ds.keys[0]
    bad = ds.frame_path(vidx, sec, 2)
    _resave(bad, subsampling=1)  # 4:2:2
    sample = ds[0]
    assert sample["skipped"] == 1 and ds.skipped == 1 and sample["luma"].dtype == torch.uint8
    assert f"{bad}: chroma subsampling 4:2:2" in capfd.readouterr().err
    cut = ds.frame_path(vidx, sec, 1)  # read before the 4:2:2 one
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    assert ds[0]["skipped"] == 1
    assert f"{cut}: truncated JPEG" in capfd.readouterr().err


def test_multigrid_shape_scales_both_jitter_bounds_with_the_crop():
    from slowfast_dist.data import ClipShape, multigrid_shape

    clip = ClipSpec(num_frames=32, sampling_rate=2, crop_size=224, jitter_scales=(256, 320))
    # 256 x 158/224 = 180.6, 320 x 158/224 = 225.7: the crop keeps its share of the frame
    assert multigrid_shape(clip, num_frames=8, sampling_rate=8, crop_size=158) == \
        ClipShape(8, 8, 158, (181, 226))
    assert multigrid_shape(clip, num_frames=32, sampling_rate=2, crop_size=224).jitter_scales \
        == (256, 320)


def test_a_key_with_a_clip_shape_sets_the_frames_rate_crop_and_jitter(tree):
    from slowfast_dist.data import ClipShape

    ds = _train_ds(tree, jitter_scales=[32, 40])  # 4 frames at rate 2, crop 32
    read = []
    real_indices = ds.frame_indices  # the frames a sample reads, whatever the decoder
    ds.frame_indices = lambda vidx, sec: read.append(real_indices(vidx, sec)) or read[-1]
    shape = ClipShape(num_frames=2, sampling_rate=6, crop_size=16, jitter_scales=(16, 20))
    for seed in range(8):
        s = ds[(1, 0, seed, shape)]
        geo = s["geometry"]
        assert s["clip"].shape[0] == 2 and tuple(geo[9:11].tolist()) == (16, 16)
        assert read[-1][1] - read[-1][0] == 6  # the key's rate
        short = (float(geo[4]) + 1) / float(geo[0])  # the drawn short side (frames are 64 x 48)
        assert 16 <= round(short) <= 20
    s = ds[(1, 0, 0)]  # a key without a shape: the dataset's own again
    assert s["clip"].shape[0] == 4 and tuple(s["geometry"][9:11].tolist()) == (32, 32)
    assert read[-1][1] - read[-1][0] == 2
    with pytest.raises(ValueError, match="bad clip shape"):
        ds[(1, 0, 0, ClipShape(2, 6, 24, (16, 20)))]  # the crop is larger than the scales
    with pytest.raises(ValueError, match="for training"):
        _ds(tree, "frames", output="uint8")[(0, 0, 0, shape)]


@pytest.mark.parametrize("crop", [16, 24])
def test_boxes_and_pixels_at_a_multigrid_crop_equal_the_float_reference(tree, crop, monkeypatch):
    """uint8 windows (RGB and yuv420 planes) at a smaller crop, through the device transform,
    equal the float reference path for the same key; the boxes exactly."""
    from dataclasses import replace

    from slowfast_dist.data import jpeg, multigrid_shape
    from slowfast_dist.data.device import ClipBatchTransform
    from slowfast_dist.data.loader import collate_detection

    def train_ds(output, decoder="auto"):
        return AvaDataset([str(tree / "frame_lists/train.csv")], str(tree / "frames"),
                          [str(tree / "annotations/ava_train_v2.2.csv")],
                          str(tree / "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                          clip=replace(clip, output=output, decoder=decoder))

    clip = ClipSpec(num_frames=8, sampling_rate=2, crop_size=32, jitter_scales=(32, 40))
    shape = multigrid_shape(clip, num_frames=4, sampling_rate=4, crop_size=crop)
    # whole frames, as the float path decodes them: at these small scales the uint8 paths would
    # decode them reduced (the DCT's own downscale), which differs from a resize in pixels
    monkeypatch.setattr(jpeg, "reduced_target", lambda *size_and_need: None)
    ref, rgb, yuv = train_ds("float"), train_ds("uint8"), train_ds("uint8", "yuv420")
    tf = ClipBatchTransform(clip.mean, clip.std, alpha=4, slowfast=True)
    grey = 1 / 255 / 0.225
    for i in range(0, len(ref), 2):
        key = (i, 3, 7, shape)
        want, a, b = ref[key], rgb[key], yuv[key]
        assert want["inputs"][1].shape == (3, 4, crop, crop)
        for sample in (a, b):
            for name in ("boxes", "labels", "ori_boxes", "metadata"):
                assert torch.equal(want[name], sample[name]), name
        batch = collate_detection([a])
        for x, y in zip(want["inputs"], tf(batch["clips"], batch["geometry"])):
            diff = (x - y[0]).abs()
            # windows of 2x the crop's area or more are resampled in the worker (uint8)
            assert diff.max() < 1.01 * grey, float(diff.max() / grey)
        batch = collate_detection([b])  # planes: within the IDCT's few grey levels
        fast = tf.from_yuv420(batch["luma"], batch["chroma"], batch["geometry"])[1][0]
        assert fast.shape == want["inputs"][1].shape
        assert (fast - want["inputs"][1]).abs().mean() < 3 * grey


def test_a_run_of_bad_samples_is_read_warned_and_counted_once_per_epoch(tree, tmp_path, capfd):
    import shutil

    root = tmp_path / "t"
    shutil.copytree(tree, root)
    mp4 = root / "videos" / "syn000.mp4"
    mp4.write_bytes(mp4.read_bytes()[:1000])  # a training video cut short: all its keyframes
    ds = AvaDataset([str(root / "frame_lists/train.csv")], str(root / "frames"),
                    [str(root / "annotations/ava_train_predicted_boxes.csv")],
                    str(root / "annotations/ava_action_list_v2.2.pbtxt"), train=False,
                    clip=ClipSpec(num_frames=8, sampling_rate=2, crop_size=48, output="uint8"),
                    detect_thresh=0.8, pixel_source="video", video_dir=str(root / "videos"))
    bad = [i for i, (v, _, _) in enumerate(ds.keys) if ds.video_names[v] == "syn000"]
    assert len(bad) >= 2 and len(bad) < len(ds)
    capfd.readouterr()
    for epoch in (0, 1):  # tried again in the next epoch: a file may have been mended
        skipped = sum(ds[(i, epoch, 0)]["skipped"] for i in range(len(ds)))
        warned = [line for line in capfd.readouterr().err.splitlines()
                  if "skipping sample syn000" in line]
        assert skipped == len(bad) and len(warned) == len(bad), (epoch, skipped, warned)


def test_a_frame_of_another_size_is_named_itself(tree, tmp_path, capfd):
    import shutil

    from PIL import Image

    root = tmp_path / "t"
    shutil.copytree(tree, root)
    ds = _ds(root, "frames", output="uint8")
    vidx, sec, _ = ds.keys[0]
    odd = ds.frame_path(vidx, sec, 5)
    Image.new("RGB", (80, 60), (90, 120, 30)).save(odd, quality=90)
    assert ds[0]["skipped"] == 1
    err = capfd.readouterr().err
    assert f"{odd}: not the size of the clip's first frame (64x48, " in err


def test_annotated_videos_missing_from_the_frame_lists_are_counted(tmp_path, caplog):
    import logging

    from slowfast_dist.data.dataset import AvaDataset, ClipSpec
    from slowfast_dist.data.synthetic import make_synthetic

    make_synthetic(str(tmp_path), videos=4, seconds=2, seed=0)
    ann = tmp_path / "annotations" / "ava_train_predicted_boxes.csv"
    ann.write_text(ann.read_text().replace("syn000,", "SYN000,"))  # an id in another case
    with caplog.at_level(logging.WARNING):
        ds = AvaDataset([str(tmp_path / "frame_lists/train.csv")], str(tmp_path / "frames"),
                        [str(ann)], str(tmp_path / "annotations/ava_action_list_v2.2.pbtxt"),
                        train=False, clip=ClipSpec(num_frames=4, sampling_rate=2, crop_size=48),
                        detect_thresh=0.8)
    said = [r.getMessage() for r in caplog.records if "not in the frame lists" in r.getMessage()]
    assert len(said) == 1 and "of 1 video(s)" in said[0] and "'SYN000'" in said[0], said
    assert all(ds.video_names[v] != "syn000" for v, _, _ in ds.keys)


def test_a_replacement_sample_draws_the_same_whatever_failed_before_it(tree, tmp_path, capfd):
    """Workers meet bad samples in different orders (the memo of one epoch's failures is per
    worker): the sample that replaces a bad one must not depend on which were tried."""
    import shutil

    root = tmp_path / "t"
    shutil.copytree(tree, root)
    for jpg in (root / "frames" / "syn000").iterdir():  # JPEGs fail after the draws are made
        jpg.write_bytes(jpg.read_bytes()[:200])

    def dataset():
        return AvaDataset([str(root / "frame_lists/train.csv")], str(root / "frames"),
                          [str(root / "annotations/ava_train_v2.2.csv")],
                          str(root / "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                          clip=ClipSpec(num_frames=8, sampling_rate=2, crop_size=32,
                                        jitter_scales=(32, 48)))

    fresh, worn = dataset(), dataset()
    bad = [i for i, (v, _, _) in enumerate(fresh.keys) if fresh.video_names[v] == "syn000"]
    assert len(bad) >= 2
    for i in bad[1:]:  # this worker has already failed on the later bad samples this epoch
        worn[(i, 3, 11)]
    a, b = fresh[(bad[0], 3, 11)], worn[(bad[0], 3, 11)]
    assert a["skipped"] == b["skipped"] == 1 and a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]) if torch.is_tensor(value) else value == b[key], key
