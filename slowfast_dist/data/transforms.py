"""Clip transforms that move boxes with the pixels (PySlowFast cv2_transform rules), and the
resize-and-crop geometry that lets a worker ship only the source pixels a sample needs.

Float reference path: clips are float tensors [T, H, W, C]; `resize_short_side`, `crop`,
`hflip` transform the whole clip (the test reference of the uint8 path). Boxes are float tensors
[N, 4] (x1, y1, x2, y2) in pixels; the box rules are the same functions on both paths.

uint8 path: `ClipGeometry` says which output pixel comes from which source pixel; the worker
ships the uint8 source window that covers the output, and `data/device.py` resamples, converts
and normalises the whole batch on the training device. With `DATA.DECODER yuv420` the window is
the JPEG's planes instead (`yuv420_windows`): luma, and chroma at half size with the margin the
upsampling on the device needs. JPEG frames decoded at a reduced size (720p, 1080p sources) and
windows at least `WORKER_RESAMPLE_AREA` times the output's area are resampled in the worker
instead (`resample_frames`): fewer bytes to ship than the window, within a grey level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def resized_size(h, w, size):
    """(height, width) after scaling the short side to `size` (PySlowFast's floor rule)."""
    if h <= w:
        return size, int(math.floor(w * size / h))
    return int(math.floor(h * size / w)), size


def scale_boxes(boxes, h, w, nh, nw):
    b = boxes.clone()
    b[:, [0, 2]] *= nw / w
    b[:, [1, 3]] *= nh / h
    return b


def crop_boxes(boxes, x0, y0, size):
    """Shifted into a size x size window at (x0, y0) and clipped to it."""
    b = boxes.clone()
    b[:, [0, 2]] -= x0
    b[:, [1, 3]] -= y0
    return clip_boxes(b, size, size)


def flip_boxes(boxes, width):
    """x' = W - 1 - x as in PySlowFast's flip_boxes."""
    b = boxes.clone()
    b[:, 0] = width - 1 - boxes[:, 2]
    b[:, 2] = width - 1 - boxes[:, 0]
    return b


def clip_boxes(boxes, height, width):
    b = boxes.clone()
    b[:, [0, 2]] = b[:, [0, 2]].clamp(0, width - 1)
    b[:, [1, 3]] = b[:, [1, 3]].clamp(0, height - 1)
    return b


def resize_short_side(clip, boxes, size):
    """Scale so the short side equals `size`; boxes scaled by the same factors."""
    t, h, w, c = clip.shape
    nh, nw = resized_size(h, w, size)
    out = F.interpolate(clip.permute(0, 3, 1, 2), size=(nh, nw), mode="bilinear",
                        align_corners=False).permute(0, 2, 3, 1)
    return out, scale_boxes(boxes, h, w, nh, nw)


def crop(clip, boxes, x0, y0, size):
    """Crop a size x size window at (x0, y0); boxes shifted and clipped to the window."""
    return clip[:, y0:y0 + size, x0:x0 + size, :], crop_boxes(boxes, x0, y0, size)


def hflip(clip, boxes):
    return clip.flip(2), flip_boxes(boxes, clip.shape[2])


def pack_pathway(frames, alpha, slowfast=True, time_dim=1):
    """[.., C, T, H, W] -> [slow, fast]; slow picks T // alpha frames by torch.linspace indices."""
    if not slowfast:
        return [frames]
    t = frames.shape[time_dim]
    idx = torch.linspace(0, t - 1, t // alpha).long().to(frames.device)
    return [frames.index_select(time_dim, idx), frames]


def normalize(clip, mean, std):
    """uint8-range [T, H, W, C] -> normalised [C, T, H, W]."""
    x = clip / 255.0
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(3, 0, 1, 2).contiguous()


# ---- uint8 path: which source pixels an output needs ----------------------------------------

GEOMETRY_FIELDS = ("scale_y", "scale_x", "off_y", "off_x", "max_y", "max_x", "top", "left",
                   "flip", "out_h", "out_w")


@dataclass(frozen=True)
class ClipGeometry:
    """Output pixel (i, j) of a sample is the bilinear sample of the decoded frame at
    y = clamp((off_y + i + 0.5) * scale_y - 0.5, 0, max_y), and likewise x (j mirrored when
    flipped): torch's bilinear resize (align_corners False) of the whole frame to the resized
    size, then the crop at (off_y, off_x), then the flip. `top`, `left` place the shipped
    window in the decoded frame."""

    scale_y: float
    scale_x: float
    off_y: int
    off_x: int
    max_y: int
    max_x: int
    top: int
    left: int
    flip: bool
    out_h: int
    out_w: int

    @classmethod
    def plan(cls, decoded_hw, resized_hw, offset, out_hw, flip):
        """Geometry and window [top:bottom, left:right] of the decoded frame for an output of
        `out_hw` at `offset` (y, x) in the frame resized to `resized_hw`."""
        (dh, dw), (nh, nw) = decoded_hw, resized_hw
        sy, sx = dh / nh, dw / nw
        ys = source_coords(offset[0], out_hw[0], sy, dh - 1)
        xs = source_coords(offset[1], out_hw[1], sx, dw - 1)
        top, left = int(ys[0]), int(xs[0])
        bottom, right = min(int(ys[-1]) + 2, dh), min(int(xs[-1]) + 2, dw)
        geo = cls(sy, sx, offset[0], offset[1], dh - 1, dw - 1, top, left, bool(flip), *out_hw)
        return geo, (top, bottom, left, right)

    @classmethod
    def identity(cls, out_h: int, out_w: int) -> ClipGeometry:
        """The geometry of a clip already at the output size (resampled in the worker)."""
        return cls(1.0, 1.0, 0, 0, out_h - 1, out_w - 1, 0, 0, False, out_h, out_w)

    def as_array(self) -> np.ndarray:
        return np.array([float(getattr(self, f)) for f in GEOMETRY_FIELDS], dtype=np.float64)


# Where the worker resamples (`resamples_in_worker`). At 360p the windows of AVA's training crops
# are 1.3-2x the crop and ship as they are: the resample (20-30 ms a clip) would add a third to
# the worker's time. JPEG frames decoded through the DCT at a reduced size (k/8 of 720p, 1080p
# sources) have windows of 1-2.3x the crop, and their decode costs 10x the resample: the worker
# ships the crop, 4.8 MB for 32 x 224 x 224 instead of up to 12 MB. (Video frames are converted
# to the drawn scale itself: their window is the crop's size already.)
WORKER_RESAMPLE_AREA = 2.0


def resamples_in_worker(window_hw, out_hw, dct_reduced: bool) -> bool:
    """Whether a window of `window_hw` for an output of `out_hw` ships resampled: JPEG frames
    decoded at a reduced size, or a window of WORKER_RESAMPLE_AREA x the output's area."""
    return (dct_reduced
            or window_hw[0] * window_hw[1] >= WORKER_RESAMPLE_AREA * out_hw[0] * out_hw[1])


def resample_frames(frames: np.ndarray, resized_hw, offset, out_hw, flip) -> torch.Tensor:
    """uint8 [T, out_h, out_w, C]: the decoded uint8 `frames` [T, h, w, C] resized to
    `resized_hw`, cropped at `offset` (y, x) to `out_hw` and flipped; the float reference's
    steps, in torch's uint8 bilinear resize (its vectorised fixed-point kernel for
    channels-last input, which [T, h, w, C] is as an NCHW view). Within one grey level of the
    device's float resample (mean 0.3, `tests/test_transforms.py`), several times cheaper than
    any gather of the taps in Python: 23 ms for 32 frames of 405p to 224 here, against 105."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=tuple(resized_hw), mode="bilinear", align_corners=False,
                      antialias=False)
    (y0, x0), (h, w) = offset, out_hw
    x = x[:, :, y0:y0 + h, x0:x0 + w]
    return (x.flip(3) if flip else x).permute(0, 2, 3, 1).contiguous()


def yuv420_bounds(window):
    """For the luma window (top, bottom, left, right): the shipped luma window's even top and
    left, and the chroma window's first row and column (one sample before, so -1 at the
    frame's edge) and its height and width (`yuv420_windows`)."""
    top, bottom, left, right = window
    top, left = top - top % 2, left - left % 2
    ctop, cleft = top // 2 - 1, left // 2 - 1
    return top, left, ctop, cleft, (bottom + 1) // 2 + 1 - ctop, (right + 1) // 2 + 1 - cleft


def source_coords(offset, count, scale, max_index):
    """Source coordinates of `count` output pixels from `offset` (numpy float64, ascending)."""
    return np.clip((offset + np.arange(count) + 0.5) * scale - 0.5, 0.0, max_index)


def yuv420_windows(lumas, cbs, crs, window):
    """The shipped windows of a 4:2:0 clip for the luma window (top, bottom, left, right):
    (luma uint8 [T, h, w], chroma uint8 [T, 2, hc, wc] (Cb, Cr), top, left).

    The luma window is widened to an even top and left, so chroma sample k sits under luma
    pixels 2k, 2k+1 of the window. The chroma window starts one sample before the luma window's
    first one and ends one after its last one, taken from the edge where the frame has no such
    sample (what a bilinear upsampling of the whole plane does at the border): then the 2x
    upsampled chroma, offset by 2 pixels, equals the whole plane's upsampling cropped to the
    luma window, and every sample uses the same offset, so the device converts a padded batch
    in one go (`data/device.py`, `yuv420_to_rgb`)."""
    top, bottom, left, right = window
    top, left, ctop, cleft, c_h, c_w = yuv420_bounds(window)
    ch, cw = cbs[0].shape
    rows = np.clip(np.arange(ctop, ctop + c_h), 0, ch - 1)
    cols = np.clip(np.arange(cleft, cleft + c_w), 0, cw - 1)
    luma = np.stack([y[top:bottom, left:right] for y in lumas])
    chroma = np.empty((len(cbs), 2, len(rows), len(cols)), np.uint8)
    inner = slice(1, -1)  # the rows and columns inside the frame: a slice, not a gather
    for k, (cb, cr) in enumerate(zip(cbs, crs)):
        for c, plane in enumerate((cb, cr)):
            out = chroma[k, c]
            out[inner, inner] = plane[rows[1]:rows[-2] + 1, cols[1]:cols[-2] + 1]
            out[[0, -1]] = plane[rows[[0, -1], None], cols]
            out[:, [0, -1]] = plane[rows[:, None], cols[[0, -1]]]
    return luma, chroma, top, left
