"""data/device.py: the uint8 path (worker windows + batched resample on the device) equals the
float reference path, and so does the yuv420 path (planes converted on the device) within
ffmpeg's IDCT difference; the prefetcher yields the same batches in the same order."""
import random
import time

import pytest
import torch

from slowfast_dist.data import AvaDataset, ClipSpec, jpeg
from slowfast_dist.data import transforms as T
from slowfast_dist.data.device import ClipBatchTransform, DeviceLoader
from slowfast_dist.data.loader import build_loader, collate_detection
from slowfast_dist.data.synthetic import make_synthetic
from support import needs_libjpeg

MEAN, STD = (0.45, 0.4, 0.35), (0.225, 0.25, 0.2)
GREY = 1 / 255 / 0.2  # one grey level in normalised units (the smallest std)


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """Photo-like frames: flat ones would hide resampling errors."""
    root = tmp_path_factory.mktemp("tex")
    make_synthetic(str(root), videos=4, seconds=3, seed=2, width=96, height=64, texture=True)
    return root


def dataset(root, output, *, train=True, source="frames", center_crop=False, flip=True,
            decoder="pil"):
    return AvaDataset([str(root / "frame_lists/train.csv")], str(root / "frames"),
                      [str(root / "annotations/ava_train_v2.2.csv")],
                      str(root / "annotations/ava_action_list_v2.2.pbtxt"), train=train,
                      clip=ClipSpec(num_frames=8, sampling_rate=2, crop_size=40,
                                    jitter_scales=(40, 72), random_flip=flip,
                                    center_crop=center_crop, mean=MEAN, std=STD, decoder=decoder,
                                    output=output),
                      pixel_source=source, video_dir=str(root / "videos"))


def transform():
    return ClipBatchTransform(MEAN, STD, alpha=4, slowfast=True)


# the CPU decoders' large windows are resampled in the worker by torch's uint8 resize; the
# batch decoders resample on the device only, in float: the two are at most a level apart
WORKER_ROUNDING = 1.01


def resampled_in_worker(sample):
    """A window at least twice the output's area ships resampled, with the identity geometry."""
    identity = T.ClipGeometry.identity(*sample["clip"].shape[1:3]).as_array()
    return bool((sample["geometry"].numpy() == identity).all())


def assert_same_sample(ref, sample, tf):
    batch = collate_detection([sample])
    inputs = tf(batch["clips"], batch["geometry"])
    # resampled in the worker: torch's uint8 resize, within a grey level
    worst, mean = (WORKER_ROUNDING, 0.4) if resampled_in_worker(sample) else (0.05, 0.01)
    for x, y in zip(ref["inputs"], inputs):
        assert x.shape == y.shape[1:]
        diff = (x - y[0]).abs()
        assert diff.max() < worst * GREY and diff.mean() < mean * GREY, float(diff.max() / GREY)
    for key in ("boxes", "labels", "ori_boxes", "metadata"):
        assert torch.equal(ref[key], sample[key]), key


@pytest.mark.parametrize("source,decoder", [("frames", "pil"), ("frames", "libjpeg"),
                                            ("video", "pil")])
def test_uint8_path_equals_float_reference_in_training_with_pinned_draws(textured, source,
                                                                         decoder):
    needs_libjpeg(decoder)
    ref = dataset(textured, "float", source=source)
    fast = dataset(textured, "uint8", source=source, decoder=decoder)
    tf = transform()
    flips, in_worker = set(), set()
    for i in range(len(ref)):
        random.seed(100 + i)
        a = ref[i]
        random.seed(100 + i)
        b = fast[i]
        random.seed(100 + i)
        flips.add(fast._draw(*fast.read_pixels(0, [0]).shape[1:3])[3])  # the sample's draws
        in_worker.add(resampled_in_worker(b))
        assert b["clip"].dtype == torch.uint8
        assert_same_sample(a, b, tf)
    assert flips == {True, False}  # both branches were compared
    assert in_worker == {True, False}  # windows shipped as they are and resampled in the worker


@pytest.mark.parametrize("decoder", ["pil", "libjpeg"])
@pytest.mark.parametrize("center_crop", [False, True])
def test_uint8_path_equals_float_reference_in_test_and_val_mode(textured, center_crop, decoder):
    needs_libjpeg(decoder)
    ref = dataset(textured, "float", train=False, center_crop=center_crop)
    fast = dataset(textured, "uint8", train=False, center_crop=center_crop, decoder=decoder)
    tf = transform()
    for i in range(0, len(ref), 3):
        assert_same_sample(ref[i], fast[i], tf)


@pytest.mark.parametrize("mode", ["train", "test", "val", "reduced"])
def test_libjpeg_decodes_only_the_window_and_ships_the_whole_decoders_sample(textured, mode,
                                                                            monkeypatch):
    """DATA.DECODER libjpeg decodes each frame's window straight into the clip; the sample is
    exactly simplejpeg's (which decodes whole frames and copies the window out), in training,
    test and val, and for sources of twice the drawn scale (decoded reduced, resampled here).
    Its worker decodes no whole frame: every decode is a window no larger than the shipped
    clip's (or, resampled here, than the sample's share of the frame plus a margin)."""
    needs_libjpeg("libjpeg")
    windows, real = [], jpeg.decode_window
    monkeypatch.setattr(jpeg, "decode_window", lambda d, p, out, *a: windows.append(
        out.shape[:2]) or real(d, p, out, *a))
    monkeypatch.setattr(jpeg, "_decode_libjpeg", None)  # the whole-frame decode: not called
    kw = {"train": mode in ("train", "reduced"), "center_crop": mode == "val"}
    whole, window = (dataset(textured, "uint8", decoder=d, **kw) for d in ("simplejpeg",
                                                                            "libjpeg"))
    if mode == "reduced":
        whole, window = _small_crop(whole, [24, 28]), _small_crop(window, [24, 28])
    elif mode != "train":  # a scale at which the whole frame's window ships as it is
        whole.crop_size = window.crop_size = 56
    kinds = set()
    for i in range(len(whole)):
        random.seed(i)
        a = whole[i]
        random.seed(i)
        b = window[i]
        kinds.add(resampled_in_worker(b))
        for key in ("clip", "geometry", "boxes", "labels", "ori_boxes", "metadata"):
            assert torch.equal(a[key], b[key]), (i, key)
        decoded, windows[:] = set(windows), []
        assert len(decoded) == 1, decoded  # one window for all the clip's frames
        if not resampled_in_worker(b):
            assert decoded == {tuple(b["clip"].shape[1:3])}
    # training ships windows as they are and resampled in the worker; reduced ones resampled
    assert kinds == {"train": {True, False}, "reduced": {True}}.get(mode, {False})


def test_a_batch_of_windows_of_different_sizes_equals_one_by_one(textured):
    ds, tf = dataset(textured, "uint8"), transform()
    random.seed(3)
    samples = [ds[i] for i in range(6)]
    assert len({s["clip"].shape for s in samples}) > 1  # padding is exercised
    batch = collate_detection(samples)
    together = tf(batch["clips"], batch["geometry"])
    for k, s in enumerate(samples):
        alone = tf(*(lambda b: (b["clips"], b["geometry"]))(collate_detection([s])))
        for x, y in zip(together, alone):
            assert torch.allclose(x[k], y[0], atol=1e-4)


def test_mixed_output_sizes_in_a_test_batch_are_a_clear_error():
    geometry = torch.zeros(2, 11, dtype=torch.float64)
    geometry[:, 9] = 8
    geometry[0, 10], geometry[1, 10] = 8, 10
    with pytest.raises(ValueError, match="mixes output sizes"):
        transform()(torch.zeros(2, 4, 8, 10, 3, dtype=torch.uint8), geometry)


def _loader(ds, workers):
    return build_loader(ds, 3, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=False, persistent=True, rank=0, world_size=1, seed=5)


def test_prefetcher_yields_the_same_batches_in_the_same_order(textured):
    ds, tf = dataset(textured, "uint8"), transform()
    direct = _loader(ds, 2)
    direct.set_epoch(1)
    expected = [tf(b["clips"], b["geometry"]) for b in direct]
    wrapped = DeviceLoader(_loader(ds, 2), "cpu", tf)
    wrapped.set_epoch(1)
    got = list(wrapped)
    assert len(got) == len(expected) == len(wrapped) > 1
    for g, e in zip(got, expected):
        assert all(torch.equal(x, y) for x, y in zip(g["inputs"], e))


def test_prefetch_thread_keeps_the_order_stops_early_and_raises_in_the_consumer(textured):
    """The GPU prefetcher's thread, run on the CPU: same batches, same order; a consumer that
    stops mid-epoch stops the thread; an error in the data raises where the batches are used."""
    ds, tf = dataset(textured, "uint8"), transform()
    inline = DeviceLoader(_loader(ds, 2), "cpu", tf)
    threaded = DeviceLoader(_loader(ds, 2), "cpu", tf, thread=True)
    for epoch in (0, 1):
        inline.set_epoch(epoch)
        threaded.set_epoch(epoch)
        for a, b in zip(inline, threaded, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a["inputs"], b["inputs"]))
    first = next(iter(threaded))  # abandoned after one batch
    assert first["inputs"][0].shape[0] == 3
    import threading
    assert not [t for t in threading.enumerate() if t.name == "slowfast-device-prefetch"]

    class Broken:
        def set_epoch(self, epoch, start_step=0):
            pass

        def __len__(self):
            return 2

        def __iter__(self):
            yield collate_detection([ds[0]])
            raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        list(DeviceLoader(Broken(), "cpu", tf, thread=True))


def test_closing_mid_epoch_ends_the_workers_and_the_open_iteration_says_so(textured):
    """close() with an epoch still being read, inline and with the prefetch thread: no hang
    (a thread left waiting on workers that are gone would never return)."""
    import threading
    import time

    ds, tf = dataset(textured, "uint8"), transform()
    for thread in (False, True):
        ld = DeviceLoader(_loader(ds, 2), "cpu", tf, thread=thread)
        ld.set_epoch(0)
        it = iter(ld)
        next(it)
        workers = list(ld.loader._it._workers)
        t0 = time.time()
        ld.close()
        with pytest.raises(RuntimeError, match="closed during this epoch's iteration"):
            next(it)
        assert time.time() - t0 < 30 and not any(w.is_alive() for w in workers), thread
        assert not [t for t in threading.enumerate() if t.name == "slowfast-device-prefetch"]


def test_worker_ships_uint8_windows_a_fifth_of_the_float_clip(textured):
    """The hand-over per clip: uint8 window against the float pathways of the reference."""
    # seed 1 draws short side 65 of [40, 72], about the frames' own 64: the window is then about
    # the crop (a small drawn scale needs a wider source window for the same 40-pixel crop)
    random.seed(1)
    fast, ref = dataset(textured, "uint8")[0], None
    random.seed(1)
    ref = dataset(textured, "float")[0]
    shipped = fast["clip"].numel()
    float_bytes = sum(x.numel() * 4 for x in ref["inputs"])
    assert shipped * 4 < float_bytes  # at this toy scale; the benchmark measures real sizes


@pytest.mark.cuda
def test_cuda_transform_and_prefetcher_equal_the_cpu_ones(textured):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (make gpu-check)")
    ds, tf = dataset(textured, "uint8"), transform()
    cpu = DeviceLoader(_loader(ds, 2), "cpu", tf)
    gpu = DeviceLoader(_loader(ds, 2), "cuda", tf)
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        for a, b in zip(cpu, gpu, strict=True):
            assert b["inputs"][0].is_cuda and b["boxes"].is_cuda
            for x, y in zip(a["inputs"], b["inputs"]):
                assert (x - y.cpu()).abs().max() < 0.05 * GREY
            assert torch.equal(a["boxes"], b["boxes"].cpu())


def _cpu_decode(chunks, device):
    """Stands in for nvJPEG on machines without a GPU: the same plumbing, a CPU decoder."""
    import simplejpeg

    return [torch.from_numpy(simplejpeg.decode_jpeg(c.numpy().tobytes(), colorspace="RGB"))
            .permute(2, 0, 1).to(device) for c in chunks]


def test_gpu_decoding_plumbing_equals_the_cpu_path(textured):
    """DATA.DECODER nvjpeg: workers ship the JPEG bytes and the geometry drawn from the headers;
    decoded whole on the device, the batch equals the CPU decoder's (same decoder here)."""
    cpu_ds = dataset(textured, "uint8")
    cpu_ds.decoder = "simplejpeg"
    gpu_ds = dataset(textured, "uint8")
    gpu_ds.decoder = "nvjpeg"  # what resolve_decoder allows only where CUDA and torchvision are
    tf = transform()
    ref = DeviceLoader(_loader(cpu_ds, 2), "cpu", tf)  # same workers: the same draws
    got = DeviceLoader(_loader(gpu_ds, 2), "cpu", tf, decode_jpegs=_cpu_decode)
    sample = gpu_ds[0]
    assert "clip" not in sample and sample["jpegs"].dtype == torch.uint8
    for epoch in (0, 1):
        ref.set_epoch(epoch)
        got.set_epoch(epoch)
        for a, b in zip(ref, got, strict=True):
            for x, y in zip(a["inputs"], b["inputs"]):
                assert (x - y).abs().max() < WORKER_ROUNDING * GREY
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_dali_pipeline_on_its_cpu_backend_equals_the_cpu_path(textured, tmp_path, capfd):
    """DATA.DECODER dali without a GPU (DALI's CPU backend): the same draws, the same batches as
    the CPU decoder, pixels within one grey level (WORKER_ROUNDING) and boxes exactly; a
    frame DALI refuses is replaced by its clip's nearest frame, with one warning naming it."""
    pytest.importorskip("nvidia.dali.fn", reason="NVIDIA DALI not installed (make test installs "
                        "it where pip can; pip install 'slowfast-dist[dali]')")
    from slowfast_dist.data import jpeg

    cpu_ds, dali_ds = dataset(textured, "uint8"), dataset(textured, "uint8")
    cpu_ds.decoder = "simplejpeg"
    dali_ds.decoder = jpeg.resolve_decoder("dali")
    tf = transform()
    ref = DeviceLoader(_loader(cpu_ds, 2), "cpu", tf)
    got = DeviceLoader(_loader(dali_ds, 2), "cpu", tf, decode_jpegs=jpeg.batch_decoder("dali"))
    for epoch in (0, 1):
        ref.set_epoch(epoch)
        got.set_epoch(epoch)
        n = 0
        for a, b in zip(ref, got, strict=True):
            for x, y in zip(a["inputs"], b["inputs"]):
                assert x.shape == y.shape and (x - y).abs().max() < WORKER_ROUNDING * GREY
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
            n += 1
        assert n == len(ref) > 0
    # a frame whose Huffman table is garbage passes the worker's check (header, end marker)
    def garbage_huffman_table(data):
        at = data.index(b"\xff\xc4")
        return data[:at + 4] + b"\xff" * 16 + data[at + 20:]

    bad_ds, path = _damaged_copy(textured, tmp_path, "dali", 2, garbage_huffman_table)
    capfd.readouterr()
    batches = list(DeviceLoader(_loader(bad_ds, 0), "cpu", tf,
                                decode_jpegs=jpeg.batch_decoder("dali")))
    assert all(b["inputs"][1].shape[0] == 3 for b in batches)
    err = capfd.readouterr().err
    assert f"warning: {path} does not decode (DALI: " in err and err.count(str(path)) == 1


def _damaged_copy(textured, tmp_path, decoder, k, damage):
    """A copy of the set in which frame k of the first keyframe is `damage(bytes)`d; the test
    dataset over it and that frame's path."""
    import shutil

    root = tmp_path / "t"
    shutil.copytree(textured, root)
    ds = dataset(root, "uint8", train=False)
    ds.decoder = decoder
    vidx, sec, _ = ds.keys[0]
    path = ds.frame_path(vidx, sec, k)
    path_bytes = open(path, "rb").read()
    open(path, "wb").write(damage(path_bytes))
    return ds, path


def test_libjpeg_skips_a_sample_with_a_damaged_or_cut_frame_naming_it(textured, tmp_path,
                                                                    capfd):
    """A frame whose scan data is damaged (libjpeg would decode grey blocks) or cut short skips
    its sample with one warning naming the file, and is counted."""
    needs_libjpeg("libjpeg")

    def stray_marker(data):
        sos = data.index(b"\xff\xda")
        return data[:sos + 200] + b"\xff\xd3" + data[sos + 202:]

    for damage, said in ((stray_marker, "Corrupt JPEG data"),
                         (lambda d: d[:len(d) // 2], "truncated JPEG")):
        ds, path = _damaged_copy(textured, tmp_path / said[:7], "libjpeg", 3, damage)
        capfd.readouterr()
        sample = ds[0]
        assert sample["skipped"] == 1 and ds.skipped == 1
        err = capfd.readouterr().err
        assert err.count("skipping sample") == 1 and f"{path}: {said}" in err, err


def test_gpu_decoding_skips_truncated_frames_in_the_worker(textured, tmp_path, capfd):
    ds, _ = _damaged_copy(textured, tmp_path, "nvjpeg", 3, lambda data: data[: len(data) // 2])
    sample = ds[0]
    assert sample["skipped"] >= 1 and "truncated JPEG" in capfd.readouterr().err


def test_a_frame_the_gpu_decoder_refuses_is_replaced_and_named(textured, capfd):
    ds = dataset(textured, "uint8", train=False)
    ds.decoder = "nvjpeg"
    calls = []

    def flaky(chunks, device):
        calls.append(len(chunks))
        if len(chunks) > 1:
            raise RuntimeError("nvjpeg: bad huffman table")
        if len(calls) == 3:  # the second frame of the first clip
            raise RuntimeError("nvjpeg: bad huffman table")
        return _cpu_decode(chunks, device)

    loader = DeviceLoader(_loader(ds, 0), "cpu", transform(), decode_jpegs=flaky)
    batch = next(iter(loader))
    assert batch["inputs"][1].shape[0] == 3
    first = batch["metadata"][0].tolist()  # the first box's (video index, second)
    path = ds.frame_path(*first, 1)
    assert f"warning: {path} does not decode (nvjpeg: bad huffman table)" in capfd.readouterr().err


@pytest.mark.cuda
def test_cuda_nvjpeg_decoding_close_to_the_cpu_decoder(textured):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (make gpu-check)")
    cpu_ds, gpu_ds = dataset(textured, "uint8"), dataset(textured, "uint8")
    gpu_ds.decoder = "nvjpeg"
    tf = transform()
    ref = DeviceLoader(_loader(cpu_ds, 2), "cpu", tf)
    got = DeviceLoader(_loader(gpu_ds, 2), "cuda", tf)
    for a, b in zip(ref, got, strict=True):
        for x, y in zip(a["inputs"], b["inputs"]):
            diff = (x - y.cpu()).abs()
            # two decoders: on one H100, 1.3 grey levels apart on average and up to 60 at hard
            # colour edges (chroma upsampling differs); a wrong or shifted frame is far more
            assert diff.mean() < 2 * GREY and diff.max() < 96 * GREY, float(diff.mean() / GREY)
        assert torch.equal(a["boxes"], b["boxes"].cpu())


@pytest.mark.parametrize("source", ["frames", "video"])
def test_reduced_decoding_is_an_antialiased_downscale_and_ships_less(textured, source):
    """Frames at least twice the drawn scale are decoded (JPEG DCT) or converted (video) smaller:
    the batch is then within a few grey levels of an anti-aliased resize of the full frames,
    and the window shipped is smaller than the full-size decode's."""
    import torch.nn.functional as F

    def small_crop(output):
        ds = dataset(textured, output, source=source)
        ds.crop_size, ds.jitter, ds.decoder = 24, [24, 28], "simplejpeg"  # 64 >= 2 x 28
        return ds

    fast, tf = small_crop("uint8"), transform()
    for i in range(3):
        random.seed(i)
        sample = fast[i]
        vidx, sec, _ = fast.keys[i]
        frames = torch.from_numpy(fast.read_pixels(vidx, fast.frame_indices(vidx, sec))).float()
        random.seed(i)
        (nh, nw), (y0, x0), (oh, ow), flip = fast._draw(*frames.shape[1:3])
        ref = F.interpolate(frames.permute(0, 3, 1, 2), size=(nh, nw), mode="bilinear",
                            antialias=True, align_corners=False)[:, :, y0:y0 + oh, x0:x0 + ow]
        ref = ref.flip(3) if flip else ref
        mean = torch.tensor(MEAN).view(3, 1, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1, 1)
        ref = (ref.permute(1, 0, 2, 3) / 255 - mean) / std
        batch = collate_detection([sample])
        got = tf(batch["clips"], batch["geometry"])[1][0]
        assert (got - ref).abs().mean() < 5 * GREY
        assert sample["clip"].shape[1] < 0.75 * frames.shape[1]  # a reduced window was shipped
        # JPEGs decoded reduced are resampled in the worker (the crop's size ships); video
        # frames are converted to the drawn scale, so their window is about the crop already
        assert resampled_in_worker(sample) == (source == "frames")
        assert sample["clip"].shape[1:3] == (24, 24) or source == "video"


def _after_and_in_workers(ds, tf):
    """The loader's two places for the batch transform: after collation (the device) and in
    the workers (CPU-only training), over the same draws."""
    after = DeviceLoader(_loader(ds, 2), "cpu", tf)
    inside = DeviceLoader(build_loader(ds, 3, shuffle=True, drop_last=True, num_workers=2,
                                       pin_memory=False, persistent=True, rank=0, world_size=1,
                                       seed=5, batch_transform=tf), "cpu", tf)
    return after, inside


def test_on_cpus_the_workers_resample_and_the_batches_are_the_same(textured):
    """Without a GPU the batch transform runs in the loader workers (the main process would be
    the bottleneck); the batches equal those transformed after collation."""
    ds, tf = dataset(textured, "uint8"), transform()
    after, inside = _after_and_in_workers(ds, tf)
    for a, b in zip(after, inside, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a["inputs"], b["inputs"]))


def test_a_consumer_that_stops_while_the_queue_is_full_does_not_wait(textured):
    """The step raises while the prefetcher holds a full queue and has reached the end: the
    thread must end at once, not block on its last hand-over."""
    ds, tf = dataset(textured, "uint8"), transform()
    two = [collate_detection([ds[0]]), collate_detection([ds[1]])]

    class TwoBatches:
        def set_epoch(self, epoch, start_step=0):
            pass

        def __iter__(self):
            return iter(two)

    loader = DeviceLoader(TwoBatches(), "cpu", tf, thread=True, depth=1)
    it = iter(loader)
    next(it)
    time.sleep(1.0)  # the thread fills the queue and then waits to hand over the rest
    t0 = time.perf_counter()
    it.close()
    assert time.perf_counter() - t0 < 5


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_prefetch_thread_that_dies_is_an_error_not_a_hang(textured, monkeypatch):
    """A producer that dies before its own error handling (as torch.cuda.set_device on an
    index-less 'cuda' once did) must not leave the training thread waiting forever."""
    ds, tf = dataset(textured, "uint8"), transform()

    def dies(self, *args):
        raise ValueError("died before handing anything over")

    monkeypatch.setattr(DeviceLoader, "_produce", dies)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="prefetch thread .* ended without"):
        list(DeviceLoader(_loader(ds, 0), "cpu", tf, thread=True))
    assert time.perf_counter() - t0 < 10


# ---- DATA.DECODER yuv420: planes shipped, converted to RGB on the device ----------------------

# libavcodec's IDCT is not libjpeg's: the converted frames are 0.37 grey levels from PIL's on
# average, up to ~4 (tests/test_jpeg.py); resampled to the crop, measured here mean 0.33 and
# max 3.0 grey levels (libjpeg's planes: less). A chroma window off by one pixel or a wrong
# matrix is far more.
YUV_MEAN, YUV_MAX = 0.6 * GREY, 5 * GREY


def assert_close_yuv420(ref, sample, tf):
    batch = collate_detection([sample])
    inputs = tf.from_yuv420(batch["luma"], batch["chroma"], batch["geometry"])
    for x, y in zip(ref["inputs"], inputs):
        assert x.shape == y.shape[1:]
        diff = (x - y[0]).abs()
        assert diff.mean() < YUV_MEAN and diff.max() < YUV_MAX, float(diff.max() / GREY)
    for key in ("boxes", "labels", "ori_boxes", "metadata"):
        assert torch.equal(ref[key], sample[key]), key


def planes_dataset(root, reader, **kw):
    """DATA.DECODER yuv420 with its planes read by `reader`: libjpeg's raw data (where it was
    built, the default) or libavcodec through PyAV (the fallback)."""
    needs_libjpeg(reader)
    ds = dataset(root, "uint8", decoder="yuv420", **kw)
    ds.plane_reader = reader
    return ds


@pytest.mark.parametrize("reader", ["libjpeg", "pyav"])
def test_yuv420_path_equals_float_reference_in_training_with_pinned_draws(textured, reader):
    ref, planes = dataset(textured, "float"), planes_dataset(textured, reader)
    tf, flips = transform(), set()
    for i in range(len(ref)):
        random.seed(100 + i)
        a = ref[i]
        random.seed(100 + i)
        b = planes[i]
        assert "clip" not in b and b["luma"].dtype == b["chroma"].dtype == torch.uint8
        flips.add(bool(b["geometry"][8]))
        assert_close_yuv420(a, b, tf)
    assert flips == {True, False}


@pytest.mark.parametrize("reader", ["libjpeg", "pyav"])
@pytest.mark.parametrize("center_crop", [False, True])
def test_yuv420_path_equals_float_reference_in_test_and_val_mode(textured, center_crop, reader):
    ref = dataset(textured, "float", train=False, center_crop=center_crop)
    planes = planes_dataset(textured, reader, train=False, center_crop=center_crop)
    tf = transform()
    for i in range(0, len(ref), 3):
        assert_close_yuv420(ref[i], planes[i], tf)


def test_yuv420_ships_about_half_the_bytes_of_the_rgb_window(textured):
    rgb, planes = dataset(textured, "uint8"), dataset(textured, "uint8", decoder="yuv420")
    compared = 0
    for i in range(12):
        random.seed(i)
        a = rgb[i]
        random.seed(i)
        b = planes[i]
        if resampled_in_worker(a):  # the RGB window itself is not what ships then
            continue
        compared += 1
        # 1.5 bytes a pixel against 3, plus the chroma margin (relatively large at this toy
        # size: 0.55; at 360p 0.51, tests/test_transforms.py)
        assert (b["luma"].numel() + b["chroma"].numel()) < 0.58 * a["clip"].numel()
    assert compared >= 3


def test_yuv420_batches_in_workers_after_collation_and_through_the_device_loader(textured):
    """The loader's two places for the transform (the device; the workers on CPU-only runs)
    give the same batches, and they agree with the RGB decoder's batches (same draws)."""
    planes, rgb, tf = dataset(textured, "uint8", decoder="yuv420"), dataset(textured, "uint8"), \
        transform()
    after, inside = _after_and_in_workers(planes, tf)
    ref = DeviceLoader(_loader(rgb, 2), "cpu", tf)
    n = 0
    for a, b, r in zip(after, inside, ref, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a["inputs"], b["inputs"]))
        for x, y in zip(a["inputs"], r["inputs"]):
            assert (x - y).abs().mean() < YUV_MEAN and (x - y).abs().max() < YUV_MAX
        assert torch.equal(a["boxes"], r["boxes"]) and torch.equal(a["labels"], r["labels"])
        n += 1
    assert n == len(after) > 1


def _small_crop(ds, jitter):
    ds.crop_size, ds.jitter = 24, jitter  # the 64-pixel frames are twice a scale up to 32
    return ds


def test_yuv420_decodes_large_sources_to_rgb_as_auto_does(textured):
    """Frames at least twice the drawn scale: DATA.DECODER yuv420 decodes them to RGB, reduced
    through the DCT, and ships the crop resampled in the worker: the very sample of `auto`
    (simplejpeg) for the same draws, fewer bytes than the planes' window."""
    planes = _small_crop(dataset(textured, "uint8", decoder="yuv420"), [24, 28])
    rgb = _small_crop(dataset(textured, "uint8", decoder="simplejpeg"), [24, 28])
    for i in range(4):
        random.seed(i)
        a = planes[i]
        random.seed(i)
        b = rgb[i]
        assert "luma" not in a and resampled_in_worker(a)
        for key in ("clip", "geometry", "boxes", "labels", "metadata"):
            assert torch.equal(a[key], b[key]), key


def test_a_yuv420_batch_mixing_planes_and_rgb_samples_equals_them_one_by_one(textured):
    """Scales up to 32 decode RGB, larger ones ship planes: one batch holds both kinds, the RGB
    samples first (boxes renumbered with them), in the device loader and in the workers."""
    ds, tf = _small_crop(dataset(textured, "uint8", decoder="yuv420"), [24, 40]), transform()
    samples = []
    for i in range(8):
        random.seed(i)
        samples.append(ds[i])
    kinds = ["luma" in s for s in samples]
    assert True in kinds and False in kinds
    batch = collate_detection(samples)
    inputs = tf.from_batch(batch)
    ordered = sorted(samples, key=lambda s: "luma" in s)
    for k, sample in enumerate(ordered):
        one = collate_detection([sample])
        for x, y in zip(inputs, tf.from_batch(one)):
            assert torch.allclose(x[k], y[0], atol=1e-4)
        mine = batch["boxes"][:, 0] == k
        assert torch.equal(batch["boxes"][mine, 1:], sample["boxes"])
        assert torch.equal(batch["metadata"][mine], sample["metadata"])
    after, inside = _after_and_in_workers(ds, tf)
    for a, b in zip(after, inside, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a["inputs"], b["inputs"]))
        assert torch.equal(a["boxes"], b["boxes"])
    raw = _loader(ds, 0)
    raw.set_epoch(0)
    assert any("clips" in b and "luma" in b for b in raw)  # the loader made mixed batches


@pytest.mark.cuda
def test_cuda_yuv420_conversion_equals_the_cpu_one(textured):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (make gpu-check)")
    ds, tf = dataset(textured, "uint8", decoder="yuv420"), transform()
    cpu = DeviceLoader(_loader(ds, 2), "cpu", tf)
    gpu = DeviceLoader(_loader(ds, 2), "cuda", tf)
    for a, b in zip(cpu, gpu, strict=True):
        assert b["inputs"][0].is_cuda
        for x, y in zip(a["inputs"], b["inputs"]):
            # rounding to grey levels can flip by one where CPU and GPU float math differ
            assert (x - y.cpu()).abs().mean() < 0.05 * GREY
            assert (x - y.cpu()).abs().max() < 1.05 * GREY
        assert torch.equal(a["boxes"], b["boxes"].cpu())
