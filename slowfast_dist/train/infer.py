"""Distributed inference for AVA: every rank scores its shard, rank 0 writes the CSV and the mAP.

A detection row is (video_id, second, x1, y1, x2, y2, action_id, score) with the box normalised,
one row per box and class, exactly what the official evaluator reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from slowfast_dist import logs
from slowfast_dist.train.loop import to_device


@torch.no_grad()
def predict(model, loader, *, device, autocast, video_names, class_ids) -> dict:
    """{(video_idx, second): rows} for this rank's keyframes, each keyframe once.

    A keyframe can arrive twice: sampler padding, or an unreadable sample replaced by the next
    readable one. Only its first sample is kept, so no detection is counted twice."""
    model.eval()
    by_frame: dict[tuple[int, int], list] = {}
    skipped = 0
    for batch in loader:
        inputs, boxes, _ = to_device(batch, device)
        skipped += int(batch.get("skipped", 0))
        with autocast():
            scores = model(inputs, boxes).float().cpu()
        owner: dict[tuple[int, int], int] = {}  # keyframe -> sample of this batch that gives it
        for sample, box, meta, row_scores in zip(batch["boxes"][:, 0].tolist(),
                                                 batch["ori_boxes"].tolist(),
                                                 batch["metadata"].tolist(), scores.tolist()):
            key = (int(meta[0]), int(meta[1]))
            if key in by_frame and key not in owner:
                continue  # given by an earlier batch
            if owner.setdefault(key, sample) != sample:
                continue  # given by another sample of this batch
            rows = by_frame.setdefault(key, [])
            name = video_names[key[0]]
            # output column k-1 scores label id k (PySlowFast); only ids in the label map are kept
            rows.extend((name, key[1], *box, cid, row_scores[cid - 1]) for cid in class_ids)
    if skipped:
        logs.get("infer").warning(f"evaluation: {skipped} unreadable sample(s) skipped on "
                                  "this rank; their keyframes have no detections")
    return by_frame


def gather_to_rank0(by_frame: dict, world_size: int, rank: int) -> list | None:
    """All ranks' rows on rank 0, one copy per keyframe, sorted; None on the other ranks."""
    parts = [None] * world_size if rank == 0 else None
    if world_size > 1:
        dist.gather_object(by_frame, parts, dst=0)
    else:
        parts = [by_frame]
    if rank != 0:
        return None
    merged: dict = {}
    for part in parts:
        for key, rows in part.items():
            merged.setdefault(key, rows)  # a sampler pads shards by repeating keyframes
    return [row for key in sorted(merged) for row in merged[key]]


def score(rows: list, out_csv: Path, *, gt_csv, label_map, exclusions=None) -> dict:
    """Write the detections CSV and score it with the exact evaluator."""
    from slowfast_dist.eval.ava_map import evaluate, write_detections

    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_detections(out_csv, rows)
    return evaluate(gt_csv, out_csv, label_map, exclusions)
