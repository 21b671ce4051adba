"""Clip transforms that move boxes with the pixels (PySlowFast cv2_transform rules).

Clips are float tensors [T, H, W, C]; boxes are float arrays [N, 4] (x1, y1, x2, y2) in pixels.
"""
import math

import torch
import torch.nn.functional as F


def resize_short_side(clip, boxes, size):
    """Scale so the short side equals `size`; boxes scaled by the same factors."""
    t, h, w, c = clip.shape
    if h <= w:
        nh, nw = size, int(math.floor(w * size / h))
    else:
        nh, nw = int(math.floor(h * size / w)), size
    out = F.interpolate(clip.permute(0, 3, 1, 2), size=(nh, nw), mode="bilinear",
                        align_corners=False).permute(0, 2, 3, 1)
    b = boxes.clone()
    b[:, [0, 2]] *= nw / w
    b[:, [1, 3]] *= nh / h
    return out, b


def crop(clip, boxes, x0, y0, size):
    """Crop a size x size window at (x0, y0); boxes shifted and clipped to the window."""
    out = clip[:, y0:y0 + size, x0:x0 + size, :]
    b = boxes.clone()
    b[:, [0, 2]] -= x0
    b[:, [1, 3]] -= y0
    return out, clip_boxes(b, size, size)


def hflip(clip, boxes):
    """Horizontal flip; x' = W - 1 - x as in PySlowFast's flip_boxes."""
    w = clip.shape[2]
    b = boxes.clone()
    b[:, 0] = w - 1 - boxes[:, 2]
    b[:, 2] = w - 1 - boxes[:, 0]
    return clip.flip(2), b


def clip_boxes(boxes, height, width):
    b = boxes.clone()
    b[:, [0, 2]] = b[:, [0, 2]].clamp(0, width - 1)
    b[:, [1, 3]] = b[:, [1, 3]].clamp(0, height - 1)
    return b


def pack_pathway(frames, alpha, slowfast=True):
    """[C, T, H, W] -> [slow, fast]; slow picks T // alpha frames by torch.linspace indices."""
    if not slowfast:
        return [frames]
    t = frames.shape[1]
    idx = torch.linspace(0, t - 1, t // alpha).long()
    return [frames.index_select(1, idx), frames]


def normalize(clip, mean, std):
    """uint8-range [T, H, W, C] -> normalised [C, T, H, W]."""
    x = clip / 255.0
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(3, 0, 1, 2).contiguous()
