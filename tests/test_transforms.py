"""Boxes must follow resize, crop and flip exactly; slow pathway uses linspace indices."""
import torch

from slowfast_dist.data import transforms as T
from slowfast_dist.data.loader import collate_detection


def _clip_with_box(h=20, w=30):
    clip = torch.zeros(2, h, w, 3)
    clip[:, 5:10, 4:12, :] = 255.0  # white rectangle == the box
    return clip, torch.tensor([[4.0, 5.0, 11.0, 9.0]])


def test_hflip_moves_box_with_pixels():
    clip, box = _clip_with_box()
    fc, fb = T.hflip(clip, box)
    ys, xs = torch.nonzero(fc[0, :, :, 0]).unbind(1)
    assert fb.tolist() == [[xs.min().item(), 5.0, xs.max().item(), 9.0]]


def test_crop_shifts_and_clips_box():
    clip, box = _clip_with_box()
    cc, cb = T.crop(clip, box, 6, 2, 10)
    ys, xs = torch.nonzero(cc[0, :, :, 0]).unbind(1)
    assert cb.tolist() == [[xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item()]]
    assert cc.shape[1:3] == (10, 10)


def test_resize_short_side_scales_boxes():
    clip, box = _clip_with_box()
    rc, rb = T.resize_short_side(clip, box, 40)
    assert rc.shape[1:3] == (40, 60)
    assert rb.tolist() == [[8.0, 10.0, 22.0, 18.0]]


def test_pack_pathway_linspace():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    slow, fast = T.pack_pathway(x, 4)
    assert slow.flatten().tolist() == [0.0, 7.0] and fast.shape[1] == 8


def test_collate_keeps_batch_index():
    s = lambda n: {"inputs": [torch.zeros(3, 2, 4, 4)], "boxes": torch.ones(n, 4),
                   "ori_boxes": torch.ones(n, 4), "labels": torch.zeros(n, 5),
                   "metadata": torch.zeros(n, 2, dtype=torch.long)}
    b = collate_detection([s(1), s(2)])
    assert b["inputs"][0].shape == (2, 3, 2, 4, 4)
    assert b["boxes"][:, 0].tolist() == [0.0, 1.0, 1.0] and b["boxes"].shape == (3, 5)
