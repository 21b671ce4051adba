"""AVA detection dataset over the JPEG frame tree (PySlowFast's ava_dataset rules)."""
import random
import warnings

import numpy as np
import torch
from PIL import Image

from slowfast_dist.data import ava_files as af
from slowfast_dist.data import transforms as T


class AvaDataset(torch.utils.data.Dataset):
    """One sample per keyframe with boxes; unreadable samples are skipped and counted."""

    def __init__(self, frame_lists, frame_dir, box_csvs, label_map, *, train, num_frames,
                 sampling_rate, alpha, slowfast, mean, std, crop_size, jitter_scales=None,
                 detect_thresh=0.0, exclusions=None, full_test_on_val=True, fps=30):
        self.video_names, self.frames = af.read_frame_lists(frame_lists, frame_dir)
        self.class_ids = af.read_label_map(label_map)[1]
        boxes = af.read_box_csvs(box_csvs, train, detect_thresh, full_test_on_val,
                                 is_val=not train)
        self.keys = af.keyframe_index_list(boxes, self.video_names,
                                           af.read_exclusions(exclusions))
        self.train, self.num_frames, self.rate = train, num_frames, sampling_rate
        self.alpha, self.slowfast, self.mean, self.std = alpha, slowfast, mean, std
        self.crop_size, self.jitter = crop_size, jitter_scales
        self.fps = fps
        self.skipped = 0  # per process; see README note on aggregation

    def __len__(self):
        return len(self.keys)

    def frame_indices(self, vidx, sec):
        center = af.keyframe_index(sec, self.fps)
        return af.get_sequence(center, self.num_frames * self.rate // 2, self.rate,
                               len(self.frames[vidx]))

    def _load(self, idx):
        vidx, sec, boxes = self.keys[idx]
        paths = [self.frames[vidx][i] for i in self.frame_indices(vidx, sec)]
        imgs = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    imgs.append(np.asarray(im.convert("RGB")))
            except (OSError, ValueError) as e:
                raise _Skip(f"{p}: {e}") from None
        clip = torch.from_numpy(np.stack(imgs)).float()
        h, w = clip.shape[1:3]
        ori = torch.tensor([b for b, _ in boxes], dtype=torch.float32)
        pix = ori * torch.tensor([w, h, w, h], dtype=torch.float32)
        if self.train:
            clip, pix = T.resize_short_side(clip, pix, random.randint(*self.jitter))
            y0 = random.randint(0, clip.shape[1] - self.crop_size)
            x0 = random.randint(0, clip.shape[2] - self.crop_size)
            clip, pix = T.crop(clip, pix, x0, y0, self.crop_size)
            if random.random() < 0.5:
                clip, pix = T.hflip(clip, pix)
        else:
            clip, pix = T.resize_short_side(clip, pix, self.crop_size)
        labels = torch.zeros(len(boxes), len(self.class_ids))
        pos = {c: i for i, c in enumerate(self.class_ids)}
        for n, (_, ids) in enumerate(boxes):
            for c in ids:
                if c in pos:
                    labels[n, pos[c]] = 1.0
        x = T.normalize(clip, self.mean, self.std)
        return {"inputs": T.pack_pathway(x, self.alpha, self.slowfast), "boxes": pix,
                "ori_boxes": ori, "labels": labels,
                "metadata": torch.tensor([[vidx, sec]] * len(boxes), dtype=torch.long)}

    def __getitem__(self, idx):
        # a bad sample is replaced by the next readable one so batches stay full
        for k in range(len(self)):
            try:
                return self._load((idx + k) % len(self))
            except _Skip as e:
                self.skipped += 1
                warnings.warn(f"skipping unreadable sample: {e}")
        raise RuntimeError("no readable sample in the data set")


class _Skip(Exception):
    pass


def build_ava_dataset(cfg, split):
    """Thin adapter from a PySlowFast-keyed CfgNode (frames source only for now)."""
    import os
    a, d = cfg.AVA, cfg.DATA
    train = split == "train"
    j = lambda base, names: [os.path.join(base, n) for n in names]  # noqa: E731
    boxes = (j(a.ANNOTATION_DIR, a.TRAIN_GT_BOX_LISTS) + j(a.ANNOTATION_DIR, a.TRAIN_PREDICT_BOX_LISTS)
             if train else j(a.ANNOTATION_DIR, a.TEST_PREDICT_BOX_LISTS))
    return AvaDataset(
        j(a.FRAME_LIST_DIR, a.TRAIN_LISTS if train else a.TEST_LISTS), a.FRAME_DIR, boxes,
        os.path.join(a.ANNOTATION_DIR, a.LABEL_MAP_FILE), train=train,
        num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE, alpha=cfg.SLOWFAST.ALPHA,
        slowfast=cfg.MODEL.ARCH == "slowfast", mean=list(d.MEAN), std=list(d.STD),
        crop_size=d.TRAIN_CROP_SIZE if train else d.TEST_CROP_SIZE,
        jitter_scales=list(d.TRAIN_JITTER_SCALES),
        detect_thresh=a.DETECTION_SCORE_THRESH, full_test_on_val=a.FULL_TEST_ON_VAL)
