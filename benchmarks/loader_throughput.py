"""CPU cost per AVA training clip in a loader worker, by stage, for each JPEG decoder and pixel
source at 360p and 1080p, against the float path this project shipped before and, with
--reference-dir, against PySlowFast's own Ava dataset on the same samples in the same run.

Input: photo-like textured frames and H.264 videos (make_synthetic(texture=True)), made once
per size and cached under --data-cache. Settings: AVA training, 32 frames at sampling rate 2,
scale jitter [256, 320], 224 crop, random flip, SlowFast alpha 4, 80 classes.

Worker cost per clip (one core, one thread, process CPU time): `dataset[i]` plus the collate
of that sample, which a worker also runs. For each sample index every variant runs in turn
(the start rotated per sample), each after seeding `random`, `numpy` and `torch` alike, so ours
draw the same scale, crop and flip (PySlowFast draws from numpy: same seed, its own draws;
both draw the scale as round(1 / uniform(1/320, 1/256)), so the scales differ per sample but
follow the same distribution).
Variants:
- today_float_pil: `output="float"`, PIL: what the project shipped until now (decode, float()
  of the whole clip, bilinear resize, crop, flip, normalise; float pathways shipped);
- uint8_pil / uint8_simplejpeg / uint8_opencv: `output="uint8"`, only the source window of the
  crop shipped (reduced DCT decode when the frame is at least twice the drawn scale; then, and
  for windows of twice the crop's area, the worker resamples it to the crop and ships that);
- uint8_libjpeg: `DATA.DECODER libjpeg` (the default where it is built): as the others, but
  only the crop's window of each frame is decoded, into the array that ships;
- uint8_yuv420: `DATA.DECODER yuv420`, the JPEGs' Y, Cb, Cr planes (libjpeg's raw data, each
  frame's window only, where libjpeg was built; uint8_yuv420_pyav: libavcodec through PyAV, the
  fallback) shipped at 1.5 bytes a pixel, converted to RGB by the device transform (frames of
  twice the drawn scale, as at 1080p, are decoded to RGB and resampled in the worker: by the
  libjpeg window path for uint8_yuv420, by whole reduced frames for uint8_yuv420_pyav);
- uint8_video_pyav: `AVA.PIXEL_SOURCE video`, frames decoded from the H.264 file by PyAV;
- pyslowfast_cv2 (--reference-dir): PySlowFast's `Ava` (cv2 backend, its default) and its
  `detection_collate`, in a child process fed the same (video, second) samples.
Stages: the same sample again, split by calling the library's steps in sequence with the same
draws (the staged result is checked equal to the sample); their sum is compared with the whole.
The device-side transform (`ClipBatchTransform`: resample, normalise, pack; on a GPU a few ms per
batch) is timed apart on CPU, per clip of a collated batch, for the fastest variant and for the
fastest of the other kind (RGB windows or yuv420 planes, which it converts first). Loader
level: wall clips/s of whole epochs through `build_loader` with 2 workers: float, uint8 as the
workers deliver it, and uint8 as CPU training runs it (the workers also run the batch
transform, since there is no GPU to do it), interleaved.

    .venv/bin/python benchmarks/loader_throughput.py [--sizes 640x360 1920x1080]
        [--samples 36 12] [--reference-dir /tmp/pyslowfast_ref] [--loader-clips 24 16]
        [--data-cache /tmp/slowfast_loader_bench] [--out benchmarks/results/loader_throughput.json]

A PySlowFast checkout for --reference-dir: `git clone https://github.com/facebookresearch/SlowFast
DIR` (only DIR/slowfast is imported; torchvision and scipy may be missing: see `_stub_missing`).
"""
import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import traceback
import types
import warnings

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; the children get 1

import numpy as np  # noqa: E402
import torch  # noqa: E402

from slowfast_dist.data import jpeg  # noqa: E402
from slowfast_dist.data import transforms as T  # noqa: E402
from slowfast_dist.data.dataset import AvaDataset, ClipSpec, WindowPlan  # noqa: E402
from slowfast_dist.data.device import ClipBatchTransform, DeviceLoader  # noqa: E402
from slowfast_dist.data.loader import build_loader, collate_detection  # noqa: E402
from slowfast_dist.data.video import find_video  # noqa: E402
from slowfast_dist.profiling import host  # noqa: E402

# AVA training settings (PySlowFast's SLOWFAST_32x2_R50 AVA config)
SETTINGS = {"num_frames": 32, "sampling_rate": 2, "jitter_scales": [256, 320], "crop_size": 224,
            "train": True, "random_flip": True, "alpha": 4, "slowfast": True,
            "mean": [0.45] * 3, "std": [0.225] * 3, "num_classes": 80}
TODAY = "today_float_pil"
# name -> (pixel source, decoder, output[, yuv420's plane reader])
OURS = {TODAY: ("frames", "pil", "float"),
        "uint8_pil": ("frames", "pil", "uint8"),
        "uint8_libjpeg": ("frames", "libjpeg", "uint8"),
        "uint8_simplejpeg": ("frames", "simplejpeg", "uint8"),
        "uint8_opencv": ("frames", "opencv", "uint8"),
        "uint8_yuv420": ("frames", "yuv420", "uint8"),
        "uint8_yuv420_pyav": ("frames", "yuv420", "uint8", "pyav"),
        "uint8_video_pyav": ("video", "auto", "uint8")}
try:
    import cv2
except ImportError:  # OpenCV is optional (PySlowFast's reference needs it too): left out
    cv2 = None
    del OURS["uint8_opencv"]
if not jpeg.installed("libjpeg"):  # our C module, not built where there is no compiler
    del OURS["uint8_libjpeg"], OURS["uint8_yuv420_pyav"]  # (uint8_yuv420 reads with PyAV)
REFERENCE = "pyslowfast_cv2"
PLANES = ("uint8_yuv420", "uint8_yuv420_pyav")
LABELS = {TODAY: "today: float, PIL", "uint8_pil": "uint8, PIL",
          "uint8_libjpeg": "uint8, libjpeg (window decode)", "uint8_simplejpeg":
          "uint8, simplejpeg", "uint8_opencv": "uint8, OpenCV", "uint8_yuv420":
          "uint8, yuv420 planes ({})".format("libjpeg" if "uint8_yuv420_pyav" in OURS else "PyAV"),
          "uint8_yuv420_pyav": "uint8, yuv420 planes (PyAV)", "uint8_video_pyav":
          "uint8, video (PyAV)", REFERENCE: "PySlowFast Ava (cv2)"}
TARGETS = {"per_clip_vs_pyslowfast_360p": 2.0,
           "per_clip_vs_pyslowfast_360p_yuv420": 2.0, "per_clip_vs_today_360p": 3.0,
           "per_clip_vs_today_1080p": 3.0, "bytes_per_clip_max_mb": 5.0}
LOADER_WORKERS = 2
METHOD = " ".join(" ".join(__doc__.split("\n\n")[1:3]).split())


# ---- data ----------------------------------------------------------------------------------

def parse_size(text):
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def set_shape(w, h, videos, seconds):
    """Videos and keyframe seconds of the generated set: small at 1080p (~1 min to make)."""
    big = w * h >= 1280 * 720
    return videos or (2 if big else 3), seconds or (3 if big else 4)


def prepare_data(cache, w, h, videos, seconds):
    """A textured AVA-layout set of w x h, made once and kept under `cache`."""
    from slowfast_dist.data.synthetic import make_synthetic

    path = os.path.join(cache, f"{w}x{h}_tex_v{videos}_s{seconds}")
    if not os.path.isfile(os.path.join(path, "complete")):
        t = time.perf_counter()
        make_synthetic(path, videos=videos, seconds=seconds, width=w, height=h, texture=True)
        open(os.path.join(path, "complete"), "w").close()
        print(f"made {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def keyframes(path):
    """Frames and keyframe positions of a video: a seek pre-rolls from the keyframe before."""
    import av
    with av.open(path) as c:
        flags = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]
    return {"frames": len(flags), "keyframe_positions": [i for i, k in enumerate(flags) if k]}


def build_ours(data, source, decoder, output, plane_reader=None):
    j = lambda p: os.path.join(data, p)  # noqa: E731
    s = SETTINGS
    clip = ClipSpec(num_frames=s["num_frames"], sampling_rate=s["sampling_rate"],
                    crop_size=s["crop_size"], jitter_scales=tuple(s["jitter_scales"]),
                    random_flip=s["random_flip"], alpha=s["alpha"], slowfast=s["slowfast"],
                    mean=tuple(s["mean"]), std=tuple(s["std"]), decoder=decoder, output=output)
    ds = AvaDataset([j("frame_lists/train.csv")], j("frames"), [],
                    j("annotations/ava_action_list_v2.2.pbtxt"), train=s["train"], clip=clip,
                    num_classes=s["num_classes"], pixel_source=source, video_dir=j("videos"),
                    gt_box_csvs=[j("annotations/ava_train_v2.2.csv")])
    if plane_reader:
        ds.plane_reader = plane_reader
    return ds


def data_info(data, ds):
    sizes = [os.path.getsize(p) for frames in ds.frames for p in frames[::10]]
    with open(ds.frames[0][0], "rb") as f:
        hw = jpeg.header_size(f.read(), ds.frames[0][0])
    return {"path": data, "videos": len(ds.video_names), "keyframes": len(ds),
            "frame_hw": list(hw), "jpeg_kb_median": statistics.median(sizes) / 1024,
            "video_keyframes": keyframes(find_video(os.path.join(data, "videos"),
                                                     ds.video_names[0]))}


# ---- timing --------------------------------------------------------------------------------

def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_ms(fn, *args):
    t = time.process_time()
    out = fn(*args)
    return (time.process_time() - t) * 1e3, out


def spread(values):
    """Median, extremes and quartiles (a neighbour on the shared machine moves min and max)."""
    values = list(values)
    q1 = q3 = values[0]
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q1, "q3": q3}


def shipped_bytes(sample):
    """Pixel bytes a worker hands over for one clip: uint8 window (or planes) + geometry, or
    the pathways."""
    if "clip" in sample:
        return sample["clip"].numel() + sample["geometry"].numel() * 8
    if "luma" in sample:
        return (sample["luma"].numel() + sample["chroma"].numel()
                + sample["geometry"].numel() * 8)
    return sum(x.numel() * x.element_size() for x in sample["inputs"])


def time_ours(ds, idx):
    """(getitem ms, collate ms, sample): what one worker spends on one clip."""
    get_ms, sample = cpu_ms(ds.__getitem__, idx)
    col_ms, _ = cpu_ms(collate_detection, [sample])
    return get_ms, col_ms, sample


class Stages:
    """Times named steps; a name used twice adds up."""

    def __init__(self):
        self.ms = {}

    def __call__(self, name, fn, *args):
        ms, out = cpu_ms(fn, *args)
        self.ms[name] = self.ms.get(name, 0.0) + ms
        return out


def staged_ours(ds, idx):
    """The sample `ds[idx]` again, step by step through the library's functions (the order of
    AvaDataset._load), each step timed: {stage: ms} and the sample."""
    st, planes_kept, libjpeg_planes, win = Stages(), False, False, None
    vidx, sec, boxes = ds.keys[idx]
    indices = ds.frame_indices(vidx, sec)
    if ds.pixel_source == "video":
        from slowfast_dist.data import video

        drawn = {}

        def size_for(full_hw):  # as AvaDataset._read: drawn first, converted smaller if it can
            drawn["full"], drawn["plan"] = tuple(full_hw), ds._draw(*full_hw)
            return video.reduced_size(full_hw, min(drawn["plan"][0]))

        frames = st("video_decode", lambda: video.read_frames(
            video.find_video(ds.video_dir, ds.video_names[vidx]), indices, fps=ds.fps,
            size_for=size_for))
        full, plan = drawn["full"], drawn["plan"]
    else:
        paths = [ds.frames[vidx][i] for i in indices]
        data = st("file_read", lambda: [jpeg.read_bytes(p) for p in paths])
        full = st("draw", jpeg.header_size, data[0], paths[0])
        plan = st("draw", ds._draw, *full)
        need = None if ds.output == "float" else min(plan[0])
        # yuv420 decodes sources of twice the drawn scale to RGB (AvaDataset._load_planes)
        planes_kept = ds.decoder == "yuv420" and jpeg.reduced_target(*full, need) is None
        libjpeg_planes = planes_kept and ds.plane_reader == "libjpeg"
        windowed = ds.decoder == "libjpeg" or (ds.decoder == "yuv420"
                                               and ds.plane_reader == "libjpeg")
        if need and windowed:  # AvaDataset._load_window
            win = WindowPlan.of(full, plan)
            if libjpeg_planes:
                planes = st("jpeg_decode", win.decode_yuv420, data, paths)
            else:
                frames = st("jpeg_decode", win.decode, data, paths)
        elif planes_kept:
            planes = st("jpeg_decode", lambda: [jpeg.decode_yuv420(d, p, need)[:3]
                                                for d, p in zip(data, paths)])
        else:
            rgb = ds.rgb_decoder if ds.decoder == "yuv420" else ds.decoder
            frames = st("jpeg_decode", lambda: np.stack(
                [jpeg.decode(d, p, rgb, need)[0] for d, p in zip(data, paths)]))
    resized, offset, out_hw, flip = plan

    def boxes_labels():
        ori = torch.tensor([b for b, _ in boxes], dtype=torch.float32)
        return {"boxes": ds._boxes(ori, full, resized, offset, out_hw, flip), "ori_boxes": ori,
                "labels": ds._labels(boxes),
                "metadata": torch.tensor([[vidx, sec]] * len(boxes), dtype=torch.long)}

    sample = st("boxes_labels", boxes_labels)
    if ds.output == "float":
        dummy = torch.zeros(0, 4)
        clip = st("float", lambda: torch.from_numpy(frames).float())
        clip = st("resize", lambda: T.resize_short_side(clip, dummy, min(resized))[0])

        def crop_flip(clip):
            if out_hw != resized:
                clip, _ = T.crop(clip, dummy, offset[1], offset[0], out_hw[0])
            return T.hflip(clip, dummy)[0] if flip else clip

        clip = st("crop_flip", crop_flip, clip)
        sample["inputs"] = st("normalise_pack", lambda: T.pack_pathway(
            T.normalize(clip, ds.mean, ds.std), ds.alpha, ds.slowfast))
    elif libjpeg_planes:  # decoded into the windows: nothing to copy
        luma, chroma, top, left = planes
        sample["luma"], sample["chroma"] = torch.from_numpy(luma), torch.from_numpy(chroma)
        sample["geometry"] = torch.from_numpy(
            dataclasses.replace(win.geometry, top=top, left=left).as_array())
    elif planes_kept:
        def plane_windows():
            geo, win = T.ClipGeometry.plan(planes[0][0].shape, resized, offset, out_hw, flip)
            luma, chroma, top, left = T.yuv420_windows(*zip(*planes), win)
            return (torch.from_numpy(luma), torch.from_numpy(chroma),
                    torch.from_numpy(dataclasses.replace(geo, top=top, left=left).as_array()))
        sample["luma"], sample["chroma"], sample["geometry"] = st("window_copy", plane_windows)
    elif win is not None and not win.whole:  # decoded into the window: nothing to copy
        sample["clip"] = torch.from_numpy(frames)
        sample["geometry"] = torch.from_numpy(win.geometry.as_array())
    else:
        geo, (top, bottom, left, right) = T.ClipGeometry.plan(frames.shape[1:3], resized,
                                                              offset, out_hw, flip)
        if T.resamples_in_worker((bottom - top, right - left), out_hw,
                                 dct_reduced=ds.pixel_source == "frames"
                                 and frames.shape[1:3] != tuple(full)):
            sample["clip"] = st("worker_resample", T.resample_frames, frames, *plan)
            geo = T.ClipGeometry.identity(*out_hw)
        else:
            sample["clip"] = st("window_copy", lambda: torch.from_numpy(
                np.ascontiguousarray(frames[:, top:bottom, left:right])))
        sample["geometry"] = torch.from_numpy(geo.as_array())
    sample["skipped"] = 0
    st("collate", collate_detection, [sample])
    return st.ms, sample


def same_sample(a, b):
    keys = ["boxes", "labels"] + [k for k in ("clip", "luma", "chroma", "geometry") if k in a]
    pairs = [(a[k], b[k]) for k in keys]
    pairs += list(zip(a.get("inputs", []), b.get("inputs", [])))
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in pairs)


# ---- PySlowFast, in a child process --------------------------------------------------------

class _Missing(types.ModuleType):
    """A stand-in for an optional package PySlowFast imports at module level but whose functions
    the AVA cv2 path never calls; any use raises."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name}: stubbed by loader_throughput.py "
                               f"(the package is not installed)")
        return missing


def _stub_missing():
    """Stub the packages that slowfast/datasets/{transform,utils}.py import at module level but
    the Ava cv2 path does not use (torchvision: transforms for Kinetics/ImageNet; scipy:
    a Gaussian blur), only when they do not import. Returns the names stubbed."""
    import importlib

    stubbed = []
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                 "scipy", "scipy.ndimage"):
        try:
            importlib.import_module(name)
        except Exception:
            sys.modules[name] = _Missing(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
            stubbed.append(name)
    return stubbed


def _import_pyslowfast(reference_dir):
    """PySlowFast's Ava dataset, get_cfg and detection_collate from the checkout. Its
    slowfast/datasets/__init__.py imports every dataset (Kinetics, Charades, ImageNet, SSv2,
    PyTorchVideo); an empty package with the same __path__ stands in for it, so only the AVA
    modules (ava_dataset, ava_helper, cv2_transform, utils, transform, build, loader) load."""
    sys.path.insert(0, reference_dir)
    stubbed = _stub_missing()
    import slowfast  # noqa: F401  (its __init__ only sets up the iopath environment)

    pkg = types.ModuleType("slowfast.datasets")
    pkg.__path__ = [os.path.join(reference_dir, "slowfast", "datasets")]
    sys.modules["slowfast.datasets"] = pkg
    from slowfast.config.defaults import get_cfg
    from slowfast.datasets.ava_dataset import Ava
    from slowfast.datasets.loader import detection_collate
    return Ava, get_cfg, detection_collate, stubbed


def _pyslowfast_cfg(get_cfg, data):
    s = SETTINGS
    cfg = get_cfg()
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = s["num_frames"], s["sampling_rate"]
    cfg.DATA.TRAIN_JITTER_SCALES, cfg.DATA.TRAIN_CROP_SIZE = s["jitter_scales"], s["crop_size"]
    cfg.DATA.RANDOM_FLIP, cfg.DATA.MEAN, cfg.DATA.STD = s["random_flip"], s["mean"], s["std"]
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.SLOWFAST.ALPHA = "slowfast", s["num_classes"], 4
    cfg.AVA.FRAME_DIR = os.path.join(data, "frames")
    cfg.AVA.FRAME_LIST_DIR = os.path.join(data, "frame_lists")
    cfg.AVA.ANNOTATION_DIR = os.path.join(data, "annotations")
    cfg.AVA.TRAIN_LISTS, cfg.AVA.TRAIN_GT_BOX_LISTS = ["train.csv"], ["ava_train_v2.2.csv"]
    cfg.AVA.TRAIN_PREDICT_BOX_LISTS = []
    cfg.AVA.IMG_PROC_BACKEND = "cv2"  # its default
    cfg.AVA.TRAIN_USE_COLOR_AUGMENTATION = False  # its default, and ours has none
    return cfg


def reference_worker(reference_dir, data):
    """Child process: build PySlowFast's Ava on `data`, then for each JSON request line
    {video, sec, seed, stages} print one JSON line with its CPU ms (and stages when asked)."""
    import logging

    torch.set_num_threads(1)
    logging.disable(logging.INFO)
    out = sys.stdout
    sys.stdout = sys.stderr  # its prints must not mix with the replies
    try:
        Ava, get_cfg, detection_collate, stubbed = _import_pyslowfast(reference_dir)
        import cv2  # PySlowFast's AVA path decodes and transforms with OpenCV

        cv2.setNumThreads(1)
        from slowfast.datasets import utils as su
        cfg = _pyslowfast_cfg(get_cfg, data)
        ds = Ava(cfg, "train")
        index = {(ds._video_idx_to_name[v], sec): i
                 for i, (v, _, sec, _) in enumerate(ds._keyframe_indices)}
    except Exception:
        print(json.dumps({"error": traceback.format_exc(limit=3)}), file=out, flush=True)
        return
    print(json.dumps({"ready": True, "keyframes": len(ds), "stubbed": stubbed}), file=out,
          flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            idx = index[(req["video"], req["sec"])]
            seed_all(req["seed"])
            get_ms, item = cpu_ms(ds.__getitem__, idx)
            col_ms, _ = cpu_ms(detection_collate, [item])
            reply = {"getitem_ms": get_ms, "collate_ms": col_ms,
                     "bytes": sum(x.numel() * x.element_size() for x in item[0])}
            if req.get("stages"):
                seed_all(req["seed"])
                reply["stages_ms"] = _pyslowfast_stages(ds, idx, su, detection_collate)
        except Exception:
            reply = {"error": traceback.format_exc(limit=3)}
        print(json.dumps(reply), file=out, flush=True)


def _pyslowfast_stages(ds, idx, su, detection_collate):
    """Ava.__getitem__'s steps in its order, each timed: decode (cv2.imread of the frames), the
    cv2 transforms to normalised float, labels and pathways, collate."""
    st = Stages()
    video_idx, sec_idx, sec, center_idx = ds._keyframe_indices[idx]
    seq = su.get_sequence(center_idx, ds._seq_len // 2, ds._sample_rate,
                          num_frames=len(ds._image_paths[video_idx]))
    boxes = np.array([b[0] for b in ds._keyframe_boxes_and_labels[video_idx][sec_idx]])[:, :4]
    boxes = boxes.copy()
    labels = [b[1] for b in ds._keyframe_boxes_and_labels[video_idx][sec_idx]]
    paths = [ds._image_paths[video_idx][f] for f in seq]
    imgs = st("read_decode", su.retry_load_images, paths, 10, "cv2")
    imgs, boxes = st("transforms", ds._images_and_boxes_preprocessing_cv2, imgs, boxes)

    def labels_pack():
        arr = np.zeros((len(labels), ds._num_classes), dtype=np.int32)
        for i, ids in enumerate(labels):
            for label in ids:
                if label != -1:
                    arr[i][label - 1] = 1
        return su.pack_pathway_output(ds.cfg, imgs), arr

    pathways, arr = st("labels_pack", labels_pack)
    extra = {"boxes": boxes, "ori_boxes": boxes, "metadata": [[video_idx, sec]] * len(boxes)}
    st("collate", detection_collate, [(pathways, arr, idx, torch.zeros(1), extra)])
    return st.ms


class Reference:
    """The parent's handle on the PySlowFast child."""

    def __init__(self, reference_dir, data):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_reference-worker", reference_dir,
             data], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        first = self.proc.stdout.readline()
        info = json.loads(first) if first.strip() else {"error": self._stderr()}
        self.error = info.get("error")
        self.stubbed = info.get("stubbed", [])
        if self.error:
            self.close()

    def _stderr(self):
        self.proc.kill()
        return (self.proc.stderr.read() or "child exited without a reply")[-2000:]

    def ask(self, video, sec, seed, stages=False):
        self.proc.stdin.write(json.dumps({"video": video, "sec": sec, "seed": seed,
                                          "stages": stages}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        return json.loads(line) if line.strip() else {"error": self._stderr()}

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


# ---- one size ------------------------------------------------------------------------------

def run_size(data, samples, reference_dir, seed, batch_size, loader_clips, loader_epochs):
    datasets = {name: build_ours(data, *spec) for name, spec in OURS.items()}
    base = datasets[TODAY]
    info = data_info(data, base)
    ids = [{"index": k % len(base), "video": base.video_names[base.keys[k % len(base)][0]],
            "sec": base.keys[k % len(base)][1], "seed": seed + k} for k in range(samples)]
    ref = Reference(reference_dir, data) if reference_dir else None
    names = list(OURS) + ([REFERENCE] if ref and not ref.error else [])
    rows = {n: [] for n in names}

    def whole(name, sid):
        """One clip as a worker makes it: {getitem_ms, collate_ms, bytes, sample}."""
        if name == REFERENCE:
            r = ref.ask(sid["video"], sid["sec"], sid["seed"])
        else:
            seed_all(sid["seed"])
            get_ms, col_ms, sample = time_ours(datasets[name], sid["index"])
            r = {"getitem_ms": get_ms, "collate_ms": col_ms, "bytes": shipped_bytes(sample),
                 "clip": sample}
        if "error" in r:
            raise RuntimeError(r["error"])
        return {**r, "sample": sid}

    def staged(name, sid):
        """The same clip, the same draws, split into timed stages: ({stage: ms}, sample)."""
        if name == REFERENCE:
            r = ref.ask(sid["video"], sid["sec"], sid["seed"], stages=True)
            if "error" in r:
                raise RuntimeError(r["error"])
            return r["stages_ms"], None
        seed_all(sid["seed"])
        return staged_ours(datasets[name], sid["index"])

    errors = {}
    try:
        for name in names:  # warm-up: imports, first-call costs, page cache
            try:
                whole(name, ids[0])
                staged(name, ids[0])
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
        live = [n for n in names if n not in errors]
        # whole and staged runs of every variant, in an order rotated per sample, so neither
        # always follows the other (a run right after the same clip finds it in the caches)
        for k, sid in enumerate(ids):
            runs = [(n, False) for n in live] + [(n, True) for n in live]
            got = {}
            for name, split in runs[k % len(runs):] + runs[:k % len(runs)]:
                if name not in live:
                    continue
                try:
                    got[name, split] = staged(name, sid) if split else whole(name, sid)
                except Exception as e:  # drop the variant, keep the others paired
                    errors[name] = f"sample {k}: {type(e).__name__}: {e}"
                    live.remove(name)
                    rows[name].clear()
            for name in live:
                row = got[name, False]
                row["stages_ms"], staged_sample = got[name, True]
                clip = row.pop("clip", None)
                if staged_sample is not None:
                    row["staged_equal"] = same_sample(clip, staged_sample)
                rows[name].append(row)
            print(f"  sample {k + 1}/{len(ids)} {sid['video']} {sid['sec']}: " + ", ".join(
                f"{n} {rows[n][-1]['getitem_ms'] + rows[n][-1]['collate_ms']:.0f}"
                for n in live) + " ms", flush=True)
    finally:
        if ref:
            ref.close()
    variants = {n: summarise(n, rows[n], errors.get(n)) for n in names}
    if ref and ref.error:
        variants[REFERENCE] = {"label": LABELS[REFERENCE], "error": ref.error}
    if ref:
        variants.get(REFERENCE, {})["stubbed_imports"] = ref.stubbed
    best = min((n for n in OURS if n != TODAY and variants[n].get("worker_ms")),
               key=lambda n: variants[n]["worker_ms"]["median"])
    out = {"data": info, "samples": ids, "variants": variants, "best_uint8": best,
           "ratios": ratios(variants, rows, best),
           "device_transform": device_transform_cost(best, datasets[best], ids, batch_size)}
    # the other kind of batch too (RGB windows or yuv420 planes): the planes' conversion
    # costs the device (or, training on CPUs, the workers) more
    other = [n for n in OURS if n != TODAY and OURS[n][0] == "frames"
             and (n in PLANES) != (best in PLANES) and variants[n].get("worker_ms")]
    if other:
        alt = min(other, key=lambda n: variants[n]["worker_ms"]["median"])
        out["device_transform_alt"] = device_transform_cost(alt, datasets[alt], ids, batch_size)
    if loader_clips:
        out["loader"] = loader_level(datasets[TODAY], datasets[best], best, loader_clips,
                                     loader_epochs, batch_size, seed)
    return out


def summarise(name, rows, error):
    spec = OURS.get(name, ("frames", "cv2", "float"))
    out = {"label": LABELS[name], "source": spec[0], "decoder": spec[1], "output": spec[2],
           "error": error}
    if not rows:
        return out
    worker = [r["getitem_ms"] + r["collate_ms"] for r in rows]
    stage_names = list(rows[0]["stages_ms"])
    stage_sum = [sum(r["stages_ms"].values()) for r in rows]
    out.update({
        "sample_ids": [r["sample"] for r in rows],
        "worker_ms": spread(worker),
        "getitem_ms": spread([r["getitem_ms"] for r in rows]),
        "collate_ms": spread([r["collate_ms"] for r in rows]),
        "clips_per_s_per_core": 1e3 / statistics.median(worker),
        "bytes_per_clip": {"median": statistics.median(r["bytes"] for r in rows),
                           "max": max(r["bytes"] for r in rows)},
        "stages_ms": {s: spread([r["stages_ms"][s] for r in rows]) for s in stage_names},
        "stages_sum_ms": spread(stage_sum),
        # per sample: staged run / whole run (the same sample, the same draws)
        "stages_over_whole": spread([s / w for s, w in zip(stage_sum, worker)]),
        "per_sample_worker_ms": worker,
    })
    if "staged_equal" in rows[0]:
        out["staged_equals_sample"] = all(r["staged_equal"] for r in rows)
    return out


def ratios(variants, rows, best):
    """Speed-ups in worker clips/s per core: ratio of medians, and the per-sample ratios."""
    def pair(fast, slow):
        if not (variants.get(fast, {}).get("worker_ms") and
                variants.get(slow, {}).get("worker_ms")):
            return None
        per_sample = [s["getitem_ms"] + s["collate_ms"] for s in rows[slow]]
        per_fast = [f["getitem_ms"] + f["collate_ms"] for f in rows[fast]]
        return {"clips_per_s_ratio": (variants[slow]["worker_ms"]["median"]
                                      / variants[fast]["worker_ms"]["median"]),
                "per_sample": spread([s / f for s, f in zip(per_sample, per_fast)])}

    out = {f"{n}_vs_today": pair(n, TODAY) for n in OURS if n != TODAY}
    out["best_uint8_vs_today"] = pair(best, TODAY)
    out["best_uint8_vs_pyslowfast"] = pair(best, REFERENCE)
    out["yuv420_vs_pyslowfast"] = pair(PLANES[0], REFERENCE)  # the decoder of the bytes target
    out["today_vs_pyslowfast"] = pair(TODAY, REFERENCE)
    return out


def device_transform_cost(name, ds, ids, batch_size, repeats=5):
    """CPU ms of ClipBatchTransform per clip, on a batch collated from the first samples."""
    samples = []
    for sid in ids[:batch_size]:
        seed_all(sid["seed"])
        samples.append(ds[sid["index"]])
    made = len(samples)
    while len(samples) < batch_size:  # fewer samples than a batch: repeat them
        samples.append(samples[len(samples) % made])
    batch = collate_detection(samples)
    s = SETTINGS
    transform = ClipBatchTransform(s["mean"], s["std"], s["alpha"], s["slowfast"])
    # RGB windows, yuv420 planes (the chroma upsampling and the conversion come first), or both
    shape = {f"padded_{key}_shape": list(batch[key].shape)
             for key in ("clips", "luma", "chroma") if key in batch}
    transform.from_batch(batch)  # warm-up
    per_batch = [cpu_ms(transform.from_batch, batch)[0] for _ in range(repeats)]
    return {"variant": name, "batch": batch_size, **shape,
            "ms_per_batch": spread(per_batch),
            "ms_per_clip": spread([t / batch_size for t in per_batch]),
            "note": "CPU, 1 thread; on a GPU this runs on the device (a few ms per batch); on CPU "
                    "it would run in the main process, not the workers"}


def loader_level(float_ds, uint8_ds, uint8_name, clips, epochs, batch_size, seed):
    """Wall clips/s through build_loader with LOADER_WORKERS workers: the float path, the uint8
    path as the workers deliver it (the device transform left to a GPU), and the uint8 path as
    CPU training runs it (the workers also run ClipBatchTransform); epochs interleaved, the order
    reversed every epoch."""
    s = SETTINGS
    transform = ClipBatchTransform(s["mean"], s["std"], s["alpha"], s["slowfast"])
    # whole rounds of batches (every worker makes as many), at least two
    per_round = LOADER_WORKERS * batch_size
    n = max(-(-clips // per_round), 2) * per_round

    def make(ds, batch_transform=None):
        return build_loader(torch.utils.data.Subset(ds, [i % len(ds) for i in range(n)]),
                            batch_size, shuffle=True, drop_last=True,
                            num_workers=LOADER_WORKERS, pin_memory=False, persistent=False,
                            rank=0, world_size=1, seed=seed, batch_transform=batch_transform)

    loaders = {TODAY: make(float_ds), uint8_name: make(uint8_ds),
               f"{uint8_name}+transform in workers (CPU training)": DeviceLoader(
                   make(uint8_ds, transform), "cpu", transform)}
    runs = {name: [] for name in loaders}
    for epoch in range(epochs):
        for name in (list(loaders) if epoch % 2 == 0 else list(loaders)[::-1]):
            ld = loaders[name]
            ld.set_epoch(epoch)
            t0, c0 = time.perf_counter(), time.process_time()
            first, seen = None, 0
            for batch in ld:
                first = first or time.perf_counter()
                seen += len(batch["geometry"] if "geometry" in batch else batch["inputs"][0])
            wall = time.perf_counter() - t0
            runs[name].append({"clips_per_s": seen / wall, "first_batch_s": first - t0,
                               "main_cpu_ms_per_clip": (time.process_time() - c0) * 1e3 / seen})
    return {"workers": LOADER_WORKERS, "batch_size": batch_size, "clips_per_epoch": n,
            "epochs": epochs,
            "variants": {name: {key: spread([r[key] for r in rs]) for key in rs[0]}
                         for name, rs in runs.items()},
            "note": f"wall time of whole epochs on this machine ({os.cpu_count()} cores shared "
                    "by the workers and the main process, and with other users), from creating "
                    "the iterator (fresh forked workers each epoch: persistent=False, so an idle "
                    "loader prefetches nothing) to the last batch; main_cpu_ms_per_clip is the "
                    "main process's CPU time"}


# ---- the whole run -------------------------------------------------------------------------

def environment():
    import av
    import PIL
    import simplejpeg
    return {"device": "cpu", "cpu_model": host.cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "simplejpeg": simplejpeg.__version__, "opencv": cv2.__version__ if cv2 else None,
            "av": av.__version__, "libjpeg_turbo": jpeg.libjpeg_version(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1m_start": os.getloadavg()[0]}


def reference_info(reference_dir):
    if not reference_dir:
        return None
    rev_file = os.path.join(reference_dir, "REVISION")
    rev = None
    if os.path.isfile(rev_file):
        rev = open(rev_file).read().strip()
    elif os.path.isdir(os.path.join(reference_dir, ".git")):
        rev = subprocess.run(["git", "-C", reference_dir, "rev-parse", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or None
    return {"dir": os.path.abspath(reference_dir), "revision": rev}


def targets(sizes):
    """The issue's targets, from the results (None where a size or the reference is missing)."""
    def ratio(size, key):
        r = sizes.get(size, {}).get("ratios", {}).get(key)
        return r["clips_per_s_ratio"] if r else None

    small = next((s for s in sizes if s == "640x360"), None)
    big = next((s for s in sizes if s == "1920x1080"), None)
    rows = []
    for key, size, ratio_key in (("per_clip_vs_pyslowfast_360p", small,
                                  "best_uint8_vs_pyslowfast"),
                                 ("per_clip_vs_pyslowfast_360p_yuv420", small,
                                  "yuv420_vs_pyslowfast"),
                                 ("per_clip_vs_today_360p", small, "best_uint8_vs_today"),
                                 ("per_clip_vs_today_1080p", big, "best_uint8_vs_today")):
        got = ratio(size, ratio_key) if size else None
        rows.append({"target": key, "want": f">= {TARGETS[key]:g}x worker clips/s per core",
                     "got": got, "met": None if got is None else got >= TARGETS[key]})
    for size, r in sizes.items():
        got = {n: {"median_mb": v["bytes_per_clip"]["median"] / 1e6,
                   "max_mb": v["bytes_per_clip"]["max"] / 1e6}
               for n, v in r["variants"].items() if n in OURS and n != TODAY
               and v.get("bytes_per_clip")}
        # judged on yuv420 where it runs (planes at 360p, the crop resampled in the worker at
        # 1080p: under 5 MB at both); else on the JPEG variant that ships the fewest bytes
        frames = [n for n in got if OURS[n][0] == "frames"] or list(got)
        smallest = ("uint8_yuv420" if "uint8_yuv420" in got
                    else min(frames, key=lambda n: got[n]["max_mb"]))
        rows.append({"target": f"bytes_per_clip_{size}",
                     "want": f"<= {TARGETS['bytes_per_clip_max_mb']:g} MB shipped per clip "
                             f"(met: judged on {smallest})",
                     "got": got,
                     "met": got[smallest]["max_mb"] <= TARGETS["bytes_per_clip_max_mb"]})
    return rows


def run(sizes, samples, *, reference_dir=None, cache="/tmp/slowfast_loader_bench", seed=0,
        batch_size=4, loader_clips=(), loader_epochs=3, videos=None, seconds=None):
    """Every size in turn; returns the result (the JSON's dict)."""
    torch.set_num_threads(1)
    if cv2 is not None:
        cv2.setNumThreads(1)
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    result = {"command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
              "environment": environment(), "settings": {**SETTINGS, "seed": seed,
                                                         "batch_size": batch_size},
              "reference": reference_info(reference_dir), "method": METHOD,
              "sizes": {}}
    for k, size in enumerate(sizes):
        w, h = parse_size(size)
        data = prepare_data(cache, w, h, *set_shape(w, h, videos, seconds))
        print(f"{size}: {samples[k]} samples", flush=True)
        result["sizes"][size] = run_size(
            data, samples[k], reference_dir, seed, batch_size,
            loader_clips[k] if k < len(loader_clips) else 0, loader_epochs)
    result["targets"] = targets(result["sizes"])
    result["environment"]["load_avg_1m_end"] = os.getloadavg()[0]
    result["table_markdown"] = table(result)
    return result


# ---- report --------------------------------------------------------------------------------

def fmt_ms(s):
    return f"{s['median']:.0f} ({s['q1']:.0f}-{s['q3']:.0f})"


def table(result):
    lines = ["| size | variant | worker CPU ms/clip, median (IQR) | clips/s per core | "
             "vs today | MB shipped/clip, median (max) |", "|---|---|---|---|---|---|"]
    for size, r in result["sizes"].items():
        today = r["variants"][TODAY].get("worker_ms")
        for name, v in r["variants"].items():
            if not v.get("worker_ms"):
                lines.append(f"| {size} | {v['label']} | failed: {(v['error'] or '')[:60]} "
                             "| | | |")
                continue
            vs = today["median"] / v["worker_ms"]["median"] if today else float("nan")
            b = v["bytes_per_clip"]
            lines.append(f"| {size} | {v['label']} | {fmt_ms(v['worker_ms'])} | "
                         f"{v['clips_per_s_per_core']:.1f} | {vs:.2f}x | "
                         f"{b['median'] / 1e6:.1f} ({b['max'] / 1e6:.1f}) |")
        for key in ("device_transform", "device_transform_alt"):
            if r.get(key):
                d = r[key]
                lines.append(f"| {size} | device transform on CPU ({LABELS[d['variant']]}; per "
                             f"clip, batch {d['batch']}) | {fmt_ms(d['ms_per_clip'])} | | | |")
    stage_lines = ["", "| size | variant | stages, CPU ms/clip (median) | sum / whole |",
                   "|---|---|---|---|"]
    for size, r in result["sizes"].items():
        for name, v in r["variants"].items():
            if v.get("stages_ms"):
                stages = ", ".join(f"{s} {x['median']:.1f}" for s, x in v["stages_ms"].items())
                stage_lines.append(f"| {size} | {v['label']} | {stages} | "
                                   f"{v['stages_over_whole']['median']:.2f} |")
    loader_lines = []
    for size, r in result["sizes"].items():
        if r.get("loader"):
            if not loader_lines:
                loader_lines = ["", f"| size | loader ({LOADER_WORKERS} workers, wall) | "
                                "clips/s, median (min-max) |", "|---|---|---|"]
            for name, v in r["loader"]["variants"].items():
                c = v["clips_per_s"]
                loader_lines.append(f"| {size} | {name} | {c['median']:.2f} "
                                    f"({c['min']:.2f}-{c['max']:.2f}) |")
    target_lines = ["", "| target | got | met |", "|---|---|---|"]
    for t in result["targets"]:
        got = t["got"]
        text = ("n/a" if got is None else f"{got:.2f}x" if isinstance(got, float) else
                "; ".join(f"{n.removeprefix('uint8_')} {b['median_mb']:.1f} ({b['max_mb']:.1f})"
                          for n, b in got.items()) + " MB median (max)")
        met = {None: "not measured", True: "yes", False: "no"}[t["met"]]
        target_lines.append(f"| {t['target']} ({t['want']}) | {text} | {met} |")
    return "\n".join(lines + stage_lines + loader_lines + target_lines)


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(result["sizes"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        variants = {n: v for n, v in result["sizes"][size]["variants"].items()
                    if v.get("worker_ms")}
        names = list(variants)
        rate = [v["clips_per_s_per_core"] for v in variants.values()]
        # error bars: clips/s at the worker ms quartiles
        lo = [r - 1e3 / v["worker_ms"]["q3"] for r, v in zip(rate, variants.values())]
        hi = [1e3 / v["worker_ms"]["q1"] - r for r, v in zip(rate, variants.values())]
        colours = ["#888888" if n == TODAY else "#c44e52" if n == REFERENCE else "#4c72b0"
                   for n in names]
        ax.bar(range(len(names)), rate, yerr=[lo, hi], color=colours, capsize=3)
        for x, r in enumerate(rate):
            ax.text(x, r / 2, f"{r:.1f}", ha="center", va="center", fontsize=9,
                    color="white", fontweight="bold")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([LABELS[n] for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("clips/s per core (worker CPU; bars: IQR)")
        ax.set_title(f"{size} textured, 32x2 frames, 224 crop")
    fig.suptitle(f"AVA loader worker cost, 1 thread, {result['environment']['cpu_model']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["640x360", "1920x1080"], metavar="WxH")
    ap.add_argument("--samples", type=int, nargs="+", default=[36, 12],
                    help="timed samples per size (one value: every size)")
    ap.add_argument("--reference-dir", default=None,
                    help="PySlowFast checkout (the folder holding slowfast/); timed alongside")
    ap.add_argument("--loader-clips", type=int, nargs="+", default=[24, 16],
                    help="clips per loader epoch per size (0: skip the loader level)")
    ap.add_argument("--loader-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--videos", type=int, default=None, help="videos in each generated set")
    ap.add_argument("--seconds", type=int, default=None, help="keyframe seconds per video")
    ap.add_argument("--data-cache", default="/tmp/slowfast_loader_bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/loader_throughput.json")
    ap.add_argument("--png", default=None, help="default: --out with .png")
    ap.add_argument("--_reference-worker", nargs=2, default=None, help=argparse.SUPPRESS,
                    dest="reference_worker")
    a = ap.parse_args(argv)
    if a.reference_worker:
        reference_worker(*a.reference_worker)
        return None
    samples = a.samples * len(a.sizes) if len(a.samples) == 1 else a.samples
    loader_clips = (a.loader_clips * len(a.sizes) if len(a.loader_clips) == 1
                    else a.loader_clips)
    if len(samples) != len(a.sizes):
        ap.error("--samples: one value, or one per size")
    result = run(a.sizes, samples, reference_dir=a.reference_dir, cache=a.data_cache,
                 seed=a.seed, batch_size=a.batch_size, loader_clips=loader_clips,
                 loader_epochs=a.loader_epochs, videos=a.videos, seconds=a.seconds)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    png = a.png or os.path.splitext(a.out)[0] + ".png"
    plot(result, png)
    print(result["table_markdown"])
    print(f"wrote {a.out} and {png}")
    return result


if __name__ == "__main__":
    main()
