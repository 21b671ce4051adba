"""AVA detection dataset (PySlowFast's ava_dataset rules) over JPEG frames or the videos.

Pixels come from PySlowFast's frame tree (`AVA.PIXEL_SOURCE frames`) or straight from the
`.mp4/.mkv/.webm` files in `AVA.VIDEO_DIR` decoded with PyAV (`video`), which saves the frame
extraction; both give the same frame indices. A sample whose pixels cannot be read is replaced by
the next readable one, with one warning naming the file; the count travels with the batch
(`batch["skipped"]`) so the trainer can sum it over workers and ranks.

A sample leaves the worker in uint8 (`output="uint8"`, what training and testing use): the
scale, crop and flip are drawn and applied to the boxes here, but of the pixels only the source
window that the crop needs is shipped, with its `ClipGeometry`; `data/device.py` resamples and
normalises the batch on the training device (with `DATA.DECODER yuv420`, the windows of the
JPEG's Y, Cb, Cr planes instead: half the bytes, converted to RGB there). JPEG frames decoded at
a reduced size, and windows of twice the output's area or more, are resampled here instead and
ship at the output's size. `output="float"` is
the float reference: the whole clip resized, cropped, flipped and normalised here, as PySlowFast
does (the tests compare both).
"""
import functools
import math
import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from slowfast_dist.data import ava_files as af
from slowfast_dist.data import jpeg
from slowfast_dist.data import transforms as T
from slowfast_dist.errors import UserError


@dataclass(frozen=True)
class ClipSpec:
    """How a sample's clip is cut and shipped: PySlowFast's DATA.* keys, SLOWFAST.ALPHA and
    MODEL.ARCH (`slowfast`), plus DATA.DECODER and the output (uint8 for training and testing,
    float for the reference path)."""

    num_frames: int
    sampling_rate: int
    crop_size: int
    jitter_scales: tuple = ()
    random_flip: bool = True
    center_crop: bool = False  # PySlowFast's val split: the centre square after scaling
    alpha: int = 4
    slowfast: bool = True
    mean: tuple = (0.45, 0.45, 0.45)
    std: tuple = (0.225, 0.225, 0.225)
    decoder: str = "auto"
    output: str = "uint8"


@dataclass(frozen=True)
class ClipShape:
    """The clip of one training iteration when it differs from the dataset's own (multigrid):
    frames, sampling rate, crop and scale jitter. It travels in the loader's key (index, epoch,
    seed, shape), so the workers follow a new shape without being rebuilt."""

    num_frames: int
    sampling_rate: int
    crop_size: int
    jitter_scales: tuple


def multigrid_shape(clip: ClipSpec, *, num_frames: int, sampling_rate: int,
                    crop_size: int) -> ClipShape:
    """The shape of a multigrid iteration at `crop_size`, its jitter bounds scaled from the
    default ones by crop / default crop, rounded. PySlowFast's Kinetics loader scales only the
    lower bound (MULTIGRID.DEFAULT_S); for detection both are scaled, so the crop covers the same
    share of the frame at every size and the boxes keep their scale distribution."""
    factor = crop_size / clip.crop_size
    return ClipShape(num_frames, sampling_rate, crop_size,
                     tuple(int(round(s * factor)) for s in clip.jitter_scales))


def jitter_short_side(rng, min_size, max_size) -> int:
    """The training short side, drawn as PySlowFast's AVA draws it (the cv2 backend, its default:
    cv2_transform.random_short_side_scale_jitter_list): the inverse of the size is uniform, so
    small scales come up more often than under a uniform integer draw; rounded as it rounds.
    One draw from `rng`, so the crop offsets and the flip still follow it in the same order."""
    return int(round(1.0 / rng.uniform(1.0 / max_size, 1.0 / min_size)))


class AvaDataset(torch.utils.data.Dataset):
    """One sample per keyframe with boxes; unreadable samples are skipped and counted."""

    keyed_draws = True  # the loader asks for (index, epoch, seed): see __getitem__

    def __init__(self, frame_lists, frame_dir, box_csvs, label_map, *, train, clip: ClipSpec,
                 detect_thresh=0.0, exclusions=None, full_test_on_val=True, fps=30,
                 num_classes=None, pixel_source="frames", video_dir=None, gt_box_csvs=()):
        if clip.output not in ("uint8", "float"):
            raise ValueError(f"output must be uint8 or float, not {clip.output!r}")
        self.output = clip.output
        self.decoder = jpeg.resolve_decoder(clip.decoder)
        self.rgb_decoder = jpeg.resolve_decoder("auto")  # yuv420's large sources (_load_planes)
        # yuv420's planes: libjpeg's raw data where it was built (faster, libjpeg's own IDCT),
        # else libavcodec through PyAV
        self.plane_reader = "libjpeg" if jpeg.installed("libjpeg") else "pyav"
        if self.decoder in jpeg.BATCH_DECODERS and (pixel_source != "frames"
                                                  or clip.output != "uint8"):
            raise UserError(f"DATA.DECODER {clip.decoder} decodes JPEG frames after collation; "
                            f"AVA.PIXEL_SOURCE {pixel_source} needs a CPU decoder (auto)")
        if self.decoder in jpeg.PLANE_DECODERS and (pixel_source != "frames"
                                                  or clip.output != "uint8"):
            raise UserError(f"DATA.DECODER {clip.decoder} ships JPEG frames' planes to the "
                            f"device; AVA.PIXEL_SOURCE {pixel_source} (or the float reference "
                            "output) needs DATA.DECODER auto")
        if pixel_source not in ("frames", "video"):
            raise UserError(f"AVA.PIXEL_SOURCE must be 'frames' or 'video', got {pixel_source!r}")
        if pixel_source == "video" and not video_dir:
            raise UserError("AVA.PIXEL_SOURCE video needs AVA.VIDEO_DIR (the folder of the videos)")
        self.pixel_source, self.video_dir, self.fps = pixel_source, video_dir, fps
        lists_given = any(os.path.isfile(p) for p in frame_lists)
        if pixel_source == "frames" or lists_given:
            self.video_names, self.frames = af.read_frame_lists(
                frame_lists, frame_dir, warn=lambda msg: _warn(msg, every_rank=True))
            self.frame_counts = [len(f) for f in self.frames]
            if self.decoder == "yuv420":
                _check_yuv420(self.frames)
        self.class_ids = af.read_label_map(label_map)[1]
        # PySlowFast: label id k is output column k-1 of MODEL.NUM_CLASSES columns
        self.num_classes = num_classes or max(self.class_ids)
        if max(self.class_ids) > self.num_classes:
            raise UserError(f"{label_map}: label id {max(self.class_ids)} > MODEL.NUM_CLASSES "
                            f"{self.num_classes}")
        bad = []
        boxes = af.read_box_csvs(list(gt_box_csvs) + list(box_csvs), gt_box_csvs, detect_thresh,
                                 full_test_on_val,
                                 is_val=not train, num_classes=self.num_classes, bad=bad)
        for msg in bad[:3]:
            _warn(msg, every_rank=True)
        if len(bad) > 3:
            _warn(f"... and {len(bad) - 3} more rows with bad boxes", every_rank=True)
        self.bad_box_rows = len(bad)
        if not (pixel_source == "frames" or lists_given):
            # video source without frame lists: videos named by the CSVs, counts from the files
            _warn(f"no frame list among {', '.join(map(str, frame_lists)) or '[]'}; using the "
                  f"videos named in the box CSVs and their own frame counts", every_rank=True)
            self.video_names, self.frames = sorted(boxes), None
            self.frame_counts = [self._video_frame_count(v) for v in self.video_names]
        # PySlowFast's dataset does not drop AVA.EXCLUSION_FILE keyframes; only the evaluator does
        self.keys = af.keyframe_index_list(boxes, self.video_names,
                                           af.read_exclusions(exclusions))
        unlisted = sorted(set(boxes) - set(self.video_names))
        if unlisted:  # PySlowFast drops them without a word; a case or id typo drops them all
            n = sum(len(boxes[v]) for v in unlisted)
            listed = f"; the lists have e.g. {self.video_names[0]!r}" if self.video_names else ""
            _warn(f"{n} annotated keyframe(s) of {len(unlisted)} video(s) not in the frame "
                  f"lists, left out (e.g. {unlisted[0]!r}{listed})", every_rank=True)
        self.train, self.num_frames, self.rate = train, clip.num_frames, clip.sampling_rate
        self.alpha, self.slowfast = clip.alpha, clip.slowfast
        self.mean, self.std = list(clip.mean), list(clip.std)
        self.crop_size, self.jitter = clip.crop_size, list(clip.jitter_scales)
        self.random_flip, self.center_crop = clip.random_flip, clip.center_crop
        scales = self.jitter
        if train and not (len(scales) == 2 and self.crop_size <= scales[0] <= scales[1]):
            raise UserError(f"DATA.TRAIN_JITTER_SCALES {scales}: need [min, max] with "
                            f"DATA.TRAIN_CROP_SIZE {self.crop_size} <= min <= max")
        self.skipped = 0  # in this process only; the batches carry the per-sample counts
        self._rng = None  # the draws' RNG, set per sample by __getitem__ (None: `random`)
        self._shape = None  # the key's ClipShape, set per sample (None: the attributes above)
        self._bad, self._bad_epoch = set(), None  # indices that failed in this epoch, here

    def __len__(self):
        return len(self.keys)

    def _clip_shape(self) -> ClipShape:
        """The shape of the sample being built: the key's (multigrid) or the dataset's own."""
        return self._shape or ClipShape(self.num_frames, self.rate, self.crop_size,
                                        tuple(self.jitter))

    def frame_indices(self, vidx, sec):
        shape = self._clip_shape()
        center = af.keyframe_index(sec, self.fps)
        return af.get_sequence(center, shape.num_frames * shape.sampling_rate // 2,
                               shape.sampling_rate, self.frame_counts[vidx])

    def frame_path(self, vidx, sec, k):
        """The file of frame k of the clip at (video index, second): for messages about frames
        decoded after collation."""
        return self.frames[vidx][self.frame_indices(vidx, sec)[k]]

    def _video_frame_count(self, name):
        from slowfast_dist.data import video

        try:
            return video.frame_count(video.find_video(self.video_dir, name), self.fps)
        except video.VideoError as e:
            # its samples will fail to decode and be skipped, each with a warning
            _warn(f"{e}; its keyframes will be skipped")
            return 1

    def read_pixels(self, vidx, indices) -> np.ndarray:
        """uint8 [T, H, W, 3] RGB frames `indices` of video `vidx` from the configured source."""
        return self._read(vidx, indices, lambda size: None)[0]

    def _read(self, vidx, indices, need_short):
        """(uint8 [T, h, w, 3], full (H, W)). `need_short(full_hw)` is the short side the sample
        will be resized to, known before decoding (JPEG headers, the video stream's size), so
        frames at least twice that size are decoded (JPEG) or converted (video) smaller."""
        if self.pixel_source == "video":
            from slowfast_dist.data import video

            full = {}

            def size_for(full_hw):
                full["hw"] = tuple(full_hw)
                return video.reduced_size(full_hw, need_short(full_hw))

            try:
                path = video.find_video(self.video_dir, self.video_names[vidx])
                clip = video.read_frames(path, indices, fps=self.fps, size_for=size_for)
            except video.VideoError as e:
                raise _Skip(str(e)) from None
            return clip, full.get("hw", clip.shape[1:3])
        imgs, full = self._read_jpegs(vidx, indices, need_short,
                                      functools.partial(jpeg.decode, decoder=self.decoder))
        return np.stack([im for im, _ in imgs]), full

    def _read_jpegs(self, vidx, indices, need_short, decode):
        """(per-frame `decode(data, path, need_short=)` results, full (H, W)), RGB and yuv420
        alike: each result's first item is the image (one shape per clip), its last full (H, W)."""
        paths = [self.frames[vidx][i] for i in indices]
        try:
            data = [jpeg.read_bytes(p) for p in paths]
            full = jpeg.header_size(data[0], paths[0])
            need = need_short(full)
            frames = [decode(d, p, need_short=need) for d, p in zip(data, paths)]
        except jpeg.DecodeError as e:
            raise _Skip(str(e)) from None
        _same_size([(f[0].shape, f[-1]) for f in frames], paths, full)
        return frames, full

    def _draw(self, h, w):
        """(resized (nh, nw), crop offset (y, x), output (h, w), flip): the random draws in
        PySlowFast's order (scale, y, x, flip) in training; the deterministic ones otherwise."""
        shape, rng = self._clip_shape(), self._rng or random
        crop = shape.crop_size
        if self.train:
            nh, nw = T.resized_size(h, w, jitter_short_side(rng, *shape.jitter_scales))
            # PySlowFast's random_crop_list: randint(0, h - size) excludes its upper end
            y0 = rng.randrange(nh - crop) if nh > crop else 0
            x0 = rng.randrange(nw - crop) if nw > crop else 0
            flip = self.random_flip and rng.random() < 0.5
            return (nh, nw), (y0, x0), (crop, crop), flip
        nh, nw = T.resized_size(h, w, crop)
        if self.center_crop:  # PySlowFast's val split (evaluation during training)
            offset = (math.ceil((nh - crop) / 2), math.ceil((nw - crop) / 2))
            return (nh, nw), offset, (crop, crop), False
        return (nh, nw), (0, 0), (nh, nw), False

    def _boxes(self, ori, full_hw, resized, offset, out_hw, flip):
        """Boxes in pixels of the output clip; the same rules on the uint8 and float paths."""
        h, w = full_hw
        # PySlowFast clips boxes to the image ([0, W-1]) before and after the transforms
        pix = T.clip_boxes(ori * torch.tensor([w, h, w, h], dtype=torch.float32), h, w)
        pix = T.scale_boxes(pix, h, w, *resized)
        if out_hw != resized:  # cropped (training, val)
            pix = T.crop_boxes(pix, offset[1], offset[0], out_hw[0])
        if flip:
            pix = T.flip_boxes(pix, out_hw[1])
        return T.clip_boxes(pix, *out_hw)

    def _load(self, idx):
        vidx, sec, boxes = self.keys[idx]
        if self.decoder in jpeg.BATCH_DECODERS:
            return self._load_undecoded(vidx, sec, boxes)
        windowed = self.output != "float" and self.pixel_source == "frames" and (
            self.decoder == "libjpeg"
            or self.decoder in jpeg.PLANE_DECODERS and self.plane_reader == "libjpeg")
        if windowed:
            return self._load_window(vidx, sec, boxes)
        if self.decoder in jpeg.PLANE_DECODERS:
            return self._load_planes(vidx, sec, boxes)
        draws = {}

        def need_short(full_hw):
            # draw before decoding: the drawn scale decides whether a reduced decode will do
            draws["plan"] = self._draw(*full_hw)
            return None if self.output == "float" else min(draws["plan"][0])

        frames, full = self._read(vidx, self.frame_indices(vidx, sec), need_short)
        plan = draws.get("plan") or self._draw(*full)
        sample = self._targets(vidx, sec, boxes, full, plan)
        if self.output == "float":
            sample["inputs"] = self._float_pixels(frames, *plan)
            return sample
        return self._ship_rgb(sample, frames, plan, dct_reduced=self.pixel_source == "frames"
                              and frames.shape[1:3] != tuple(full))

    def _ship_rgb(self, sample, frames, plan, dct_reduced):
        """`sample` with its pixels from the decoded RGB `frames`: the uint8 window the output
        needs and its geometry, or the output itself, resampled here (`resamples_in_worker`)."""
        resized, offset, out_hw, flip = plan
        geo, (top, bottom, left, right) = T.ClipGeometry.plan(
            frames.shape[1:3], resized, offset, out_hw, flip)
        if T.resamples_in_worker((bottom - top, right - left), out_hw, dct_reduced):
            sample["clip"] = T.resample_frames(frames, *plan)  # fewer bytes than the window
            geo = T.ClipGeometry.identity(*out_hw)
        else:  # one contiguous copy of the window only; the slow pathway is an index, not a copy
            sample["clip"] = torch.from_numpy(
                np.ascontiguousarray(frames[:, top:bottom, left:right]))
        sample["geometry"] = torch.from_numpy(geo.as_array())
        return sample

    def _load_window(self, vidx, sec, boxes):
        """DATA.DECODER libjpeg, and yuv420 where libjpeg was built: the geometry is drawn from
        the first frame's header, then each frame's window alone is decoded, straight into the
        arrays that ship (no whole frames, no copies): RGB, or yuv420's planes. Frames decoded
        at a reduced size (RGB under yuv420 too, as `_load_planes` does), and RGB windows that
        are resampled here, go the way `_ship_rgb` sends them (`WindowPlan.whole`)."""
        paths = [self.frames[vidx][i] for i in self.frame_indices(vidx, sec)]
        try:
            data = [jpeg.read_bytes(p) for p in paths]
            full = jpeg.header_size(data[0], paths[0])
            _same_size([full] + [jpeg.header_size(d, p) for d, p in zip(data[1:], paths[1:])],
                       paths, full)
            plan = self._draw(*full)
            win = WindowPlan.of(full, plan)
            planes = self.decoder in jpeg.PLANE_DECODERS and win.scale == 8
            if planes:
                luma, chroma, top, left = win.decode_yuv420(data, paths)
            else:
                clip = win.decode(data, paths)
        except jpeg.DecodeError as e:
            raise _Skip(str(e)) from None
        sample = self._targets(vidx, sec, boxes, full, plan)
        if planes:
            sample["luma"], sample["chroma"] = torch.from_numpy(luma), torch.from_numpy(chroma)
            sample["geometry"] = torch.from_numpy(
                replace(win.geometry, top=top, left=left).as_array())
            return sample
        if win.whole:
            return self._ship_rgb(sample, clip, plan, dct_reduced=win.scale < 8)
        sample["clip"] = torch.from_numpy(clip)
        sample["geometry"] = torch.from_numpy(win.geometry.as_array())
        return sample

    def _load_undecoded(self, vidx, sec, boxes):
        """Batch decoders (nvjpeg, dali): the worker reads the JPEG bytes and draws the geometry
        from the headers; the whole frames are decoded and resampled on the device
        (data/device.py)."""
        paths = [self.frames[vidx][i] for i in self.frame_indices(vidx, sec)]
        try:
            data = [jpeg.read_bytes(p) for p in paths]
            sizes = [jpeg.check_complete(d, p) for d, p in zip(data, paths)]
        except jpeg.DecodeError as e:
            raise _Skip(str(e)) from None
        full = sizes[0]
        _same_size(sizes, paths, full)
        resized, offset, out_hw, flip = self._draw(*full)
        geo, _ = T.ClipGeometry.plan(full, resized, offset, out_hw, flip)
        return {"jpegs": torch.frombuffer(bytearray(b"".join(data)), dtype=torch.uint8),
                "jpeg_sizes": torch.tensor([len(d) for d in data]),
                "geometry": torch.from_numpy(replace(geo, top=0, left=0).as_array()),
                **self._targets(vidx, sec, boxes, full, (resized, offset, out_hw, flip))}

    def _load_planes(self, vidx, sec, boxes):
        """DATA.DECODER yuv420: the frames decoded to their Y, Cb, Cr planes, the same draws and
        boxes as the RGB path; the windows of the planes are shipped
        (`transforms.yuv420_windows`) and converted to RGB on the device. Sources at least
        twice the drawn scale (720p, 1080p) are decoded to RGB instead, reduced through the DCT
        and resampled here, as `auto` does: faster than libavcodec's reduced decode, and the
        crop ships in fewer bytes than the planes' window. A batch may mix both kinds
        (`loader.collate_detection`)."""
        draws = {}

        def need_short(full_hw):  # as in _load: the drawn scale decides the reduced decode
            draws["plan"] = self._draw(*full_hw)
            need = min(draws["plan"][0])
            draws["rgb"] = jpeg.reduced_target(*full_hw, need) is not None
            return need

        def decode(data, path, need_short):
            if draws["rgb"]:
                return jpeg.decode(data, path, self.rgb_decoder, need_short)
            return jpeg.decode_yuv420(data, path, need_short)

        planes, full = self._read_jpegs(vidx, self.frame_indices(vidx, sec), need_short, decode)
        resized, offset, out_hw, flip = plan = draws["plan"]
        sample = self._targets(vidx, sec, boxes, full, plan)
        if draws["rgb"]:
            return self._ship_rgb(sample, np.stack([p[0] for p in planes]), plan,
                                  dct_reduced=True)
        geo, window = T.ClipGeometry.plan(planes[0][0].shape, resized, offset, out_hw, flip)
        luma, chroma, top, left = T.yuv420_windows(*zip(*(p[:3] for p in planes)), window)
        sample["luma"], sample["chroma"] = torch.from_numpy(luma), torch.from_numpy(chroma)
        sample["geometry"] = torch.from_numpy(replace(geo, top=top, left=left).as_array())
        return sample

    def _targets(self, vidx, sec, boxes, full_hw, plan):
        """The fields every sample has besides its pixels: boxes moved by the drawn `plan`,
        the CSV's boxes, multi-hot labels, (video index, second) per box."""
        ori = torch.tensor([b for b, _ in boxes], dtype=torch.float32)
        return {"boxes": self._boxes(ori, full_hw, *plan), "ori_boxes": ori,
                "labels": self._labels(boxes),
                "metadata": torch.tensor([[vidx, sec]] * len(boxes), dtype=torch.long)}

    def _labels(self, boxes):
        labels = torch.zeros(len(boxes), self.num_classes)
        for n, (_, ids) in enumerate(boxes):
            for c in ids:
                labels[n, c - 1] = 1.0
        return labels

    def _float_pixels(self, frames, resized, offset, out_hw, flip):
        """The float reference: the whole clip resized, then cropped, flipped, normalised."""
        clip = torch.from_numpy(frames).float()
        dummy = torch.zeros(0, 4)
        clip, _ = T.resize_short_side(clip, dummy, min(resized))
        if out_hw != resized:
            clip, _ = T.crop(clip, dummy, offset[1], offset[0], out_hw[0])
        if flip:
            clip, _ = T.hflip(clip, dummy)
        return T.pack_pathway(T.normalize(clip, self.mean, self.std), self.alpha, self.slowfast)

    def __getitem__(self, key):
        """`key`: an index, drawing from Python's global `random`; or (index, epoch, seed), as
        the loader asks, drawing from an RNG seeded by exactly that. Then a sample's draws do not
        depend on which worker builds it or what that worker built before, so a run resumed at
        any step (persistent workers included) draws what the uninterrupted run drew.
        (index, epoch, seed, shape): the same, at the frames, rate, crop and jitter of `shape`
        (a ClipShape: a multigrid iteration) instead of the dataset's own; training only."""
        self._shape = None
        if isinstance(key, tuple):
            idx, epoch, seed, *shape = key
            self._rng = random.Random(f"{seed}/{epoch}/{idx}")
            if shape:
                self._shape = self._checked(shape[0])
            if self._bad_epoch != (epoch, seed):
                self._bad, self._bad_epoch = set(), (epoch, seed)
            bad = self._bad
        else:
            idx, self._rng = key, None  # a module would not pickle (spawned loader workers)
            epoch = seed = None
            bad = set()
        # A bad sample is replaced by the next readable one so batches stay full, and counted
        # once: the sample asked for, not each bad one passed over. The indices that failed in
        # this epoch are not tried again here, so a run of K bad samples (a missing video) costs
        # K failed reads and warnings, not K(K+1)/2; the next epoch tries them again.
        for k in range(len(self)):
            j = (idx + k) % len(self)
            if j in bad:
                continue
            if k and epoch is not None:  # draws that do not depend on what failed before
                self._rng = random.Random(f"{seed}/{epoch}/{idx}/{j}")
            try:
                sample = self._load(j)
                sample["skipped"] = int(k > 0)
                return sample
            except _Skip as e:
                bad.add(j)
                self.skipped += 1
                vidx, sec, _ = self.keys[j]
                _warn(f"skipping sample {self.video_names[vidx]} sec {sec}: {e}")
        raise UserError("no readable sample in the data set (every clip failed to load)")

    def _checked(self, shape: ClipShape) -> ClipShape:
        if not self.train:
            raise ValueError("a ClipShape in the key is for training; this is a test/val set")
        scales = tuple(shape.jitter_scales)
        if not (len(scales) == 2 and 0 < shape.crop_size <= scales[0] <= scales[1]
                and shape.num_frames >= 1 and shape.sampling_rate >= 1):
            raise ValueError(f"bad clip shape {shape}: need frames, rate >= 1 and "
                             "0 < crop <= min jitter <= max jitter")
        return shape


class _Skip(Exception):
    pass


# pixels decoded around a window that the worker resamples, a guard: the resize computes its
# taps in float32, ClipGeometry.plan in float64 (no sample needed it in 60 draws at 360p and
# 1080p, and 2 pixels cost nothing measurable)
WINDOW_MARGIN = 2


@dataclass(frozen=True)
class WindowPlan:
    """What DATA.DECODER libjpeg decodes of each frame of a sample: the scale (k/8; below 8 for
    sources of twice the drawn scale, as `jpeg.reduced_target` says), the window
    [top:bottom, left:right] of the frame at that scale and its geometry; `whole` when the
    worker resamples the frame (`_ship_rgb`): the window is then decoded into a frame-size
    array."""

    scale: int
    geometry: T.ClipGeometry
    window: tuple  # (top, bottom, left, right) the output needs
    decoded_hw: tuple
    whole: bool

    @classmethod
    def of(cls, full_hw, plan) -> "WindowPlan":
        scale = jpeg.libjpeg_scale(full_hw, jpeg.reduced_target(*full_hw, min(plan[0])))
        decoded = jpeg.scaled_size(full_hw, scale)
        geo, window = T.ClipGeometry.plan(decoded, *plan)
        top, bottom, left, right = window
        whole = T.resamples_in_worker((bottom - top, right - left), plan[2], scale < 8)
        return cls(scale, geo, window, decoded, whole)

    def decode(self, data, paths) -> np.ndarray:
        """uint8 [T, h, w, 3] RGB: each frame's window decoded into one new array; when `whole`,
        a frame-size array (zeros elsewhere) in which only the window, with a margin, is
        decoded: the worker's resample of the whole frame then crops pixels that depend on
        the window alone (23 % less decoding at 1080p)."""
        top, bottom, left, right = self.window
        if self.whole:
            (h, w), m = self.decoded_hw, WINDOW_MARGIN
            top, bottom, left, right = (max(0, top - m), min(h, bottom + m), max(0, left - m),
                                        min(w, right + m))
            clip = np.zeros((len(data), h, w, 3), np.uint8)
            window = np.empty((bottom - top, right - left, 3), np.uint8)
        else:
            clip = np.empty((len(data), bottom - top, right - left, 3), np.uint8)
        for k, (d, p) in enumerate(zip(data, paths)):
            jpeg.decode_window(d, p, window if self.whole else clip[k], top, left, self.scale)
            if self.whole:
                clip[k, top:bottom, left:right] = window
        return clip

    def decode_yuv420(self, data, paths):
        """DATA.DECODER yuv420 at full scale: (luma uint8 [T, h, w], chroma uint8 [T, 2, hc, wc],
        top, left), the planes' windows as `transforms.yuv420_windows` cuts them."""
        top, left, ctop, cleft, c_h, c_w = T.yuv420_bounds(self.window)
        luma = np.empty((len(data), self.window[1] - top, self.window[3] - left), np.uint8)
        chroma = np.empty((len(data), 2, c_h, c_w), np.uint8)
        for k, (d, p) in enumerate(zip(data, paths)):
            jpeg.decode_yuv420_window(d, p, luma[k], chroma[k], top, left, ctop, cleft)
        return luma, chroma, top, left


def _same_size(keys, paths, size) -> None:
    """Skip the sample, naming the first frame whose `keys` entry (its size, as the caller
    reads it) is not the first frame's, whose (height, width) is `size`."""
    odd = next((p for key, p in zip(keys, paths) if key != keys[0]), None)
    if odd is not None:
        raise _Skip(f"{odd}: not the size of the clip's first frame ({size[1]}x{size[0]}, "
                    f"{os.path.basename(paths[0])}): frames of one clip differ in size")


def _check_yuv420(frames):
    """DATA.DECODER yuv420 on frames that are not 4:2:0 would skip every sample: say so at
    start-up, from the first frame's header, before the workers start."""
    path = next((f[0] for f in frames if f), None)
    if path is None:
        return
    try:
        data = jpeg.read_bytes(path)
        found = jpeg.subsampling(data, path)
    except jpeg.DecodeError:
        return  # a missing or bad first frame: its samples are skipped and named as usual
    if found != "4:2:0":
        raise UserError(f"{path}: JPEG chroma subsampling {found}, but DATA.DECODER yuv420 "
                        "needs 4:2:0 frames; use DATA.DECODER auto")


def _warn(msg, every_rank=False):
    """`every_rank`: a note every rank gives alike (built from the same files), said once."""
    from slowfast_dist import logs

    logs.get("data").warning(msg, extra=logs.EVERY_RANK if every_rank else None)


def build_ava_dataset(cfg, split):
    """Thin adapter from a PySlowFast-keyed CfgNode; split is train, val (evaluation during
    training) or test (the test command). As in PySlowFast, val and test read the same lists and
    scale the short side to TEST_CROP_SIZE; only val then takes the centre square, and only val
    keeps every 4th second when AVA.FULL_TEST_ON_VAL is False."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    a, d = cfg.AVA, cfg.DATA
    train = split == "train"
    j = lambda base, names: [os.path.join(base, n) for n in names]  # noqa: E731
    # PySlowFast: training reads GT and predicted lists, test/val only the predicted ones
    gt = j(a.ANNOTATION_DIR, a.TRAIN_GT_BOX_LISTS) if train else []
    pred = j(a.ANNOTATION_DIR, a.TRAIN_PREDICT_BOX_LISTS if train else a.TEST_PREDICT_BOX_LISTS)
    clip = ClipSpec(num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE,
                    crop_size=d.TRAIN_CROP_SIZE if train else d.TEST_CROP_SIZE,
                    jitter_scales=tuple(d.TRAIN_JITTER_SCALES), random_flip=d.RANDOM_FLIP,
                    center_crop=split == "val", alpha=cfg.SLOWFAST.ALPHA,
                    slowfast=cfg.MODEL.ARCH == "slowfast", mean=tuple(d.MEAN), std=tuple(d.STD),
                    decoder=d.DECODER)
    return AvaDataset(
        j(a.FRAME_LIST_DIR, a.TRAIN_LISTS if train else a.TEST_LISTS), a.FRAME_DIR, pred,
        os.path.join(a.ANNOTATION_DIR, a.LABEL_MAP_FILE), train=train, clip=clip,
        detect_thresh=a.DETECTION_SCORE_THRESH,
        full_test_on_val=a.FULL_TEST_ON_VAL if split == "val" else True,
        num_classes=cfg.MODEL.NUM_CLASSES, pixel_source=a.PIXEL_SOURCE, video_dir=a.VIDEO_DIR,
        gt_box_csvs=gt)
