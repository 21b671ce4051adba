"""Readers for AVA v2.2 files as PySlowFast lays them out (frame lists, box CSVs, label map).

Rules follow slowfast/datasets/ava_helper.py: keyframe seconds 902..1798, frame index of a
keyframe = (sec - 900) * 30, boxes grouped per (video, sec) with their label ids; a predicted box
(CSV row with a score) is kept only when score >= the detection threshold; an empty label
column means "no label" (-1) and adds no label id.
"""
import os
from collections import defaultdict

from slowfast_dist.errors import UserError, where
from slowfast_dist.eval.ava_map import csv_rows

FPS = 30
AVA_VALID_SECONDS = range(902, 1799)


def keyframe_index(sec: int, fps: int = FPS) -> int:
    """Frame index (0-based, in the 900..1800 s segment) of a keyframe second."""
    return (sec - 900) * fps


def get_sequence(center: int, half_len: int, sample_rate: int, num_frames: int) -> list:
    """Frame indices centred on `center`, clamped to [0, num_frames - 1] (PySlowFast's rule)."""
    return [min(max(i, 0), num_frames - 1)
            for i in range(center - half_len, center + half_len, sample_rate)]


def read_frame_lists(paths, frame_dir, warn=None):
    """Read frame lists; returns (video_names, frame_paths per video index). `warn(msg)` gets a
    line for a video whose frame ids skip some (a list cut short: clips near the gap would read
    other frames)."""
    name_to_idx, frames, gaps = {}, [], []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{where(path)}: frame list not found")
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                row = line.split()
                if not row or (lineno == 1 and not _frame_row(row)):  # the header
                    continue
                if len(row) not in (4, 5) or not _frame_row(row):
                    raise UserError(f"{where(path, lineno)}: expected "
                                    "'original_vido_id video_idx frame_id path labels'")
                vid = row[0]
                if vid not in name_to_idx:
                    name_to_idx[vid] = len(frames)
                    frames.append([])
                listed = frames[name_to_idx[vid]]
                if int(row[2]) != len(listed) and not gaps:
                    gaps.append(f"{where(path, lineno)}: frame_id {row[2]} of {vid} where "
                                f"{len(listed)} was next: frames missing from the list (or "
                                "out of order); clips near them read other frames")
                listed.append(os.path.join(frame_dir, row[3]))
    if gaps and warn is not None:
        warn(gaps[0])
    names = sorted(name_to_idx, key=name_to_idx.get)
    return names, frames


def _frame_row(row) -> bool:
    """A data row: integer video_idx and frame_id, and a path (not the empty labels `""`)."""
    return (len(row) >= 4 and row[1].isdigit() and row[2].isdigit()
            and row[3] not in ('""', "''"))


def read_box_csvs(paths, gt_paths=(), detect_thresh=0.0, full_test_on_val=True,
                  is_val=False, num_classes=None, bad=None):
    """Read GT / predicted box CSVs -> {video: {sec: [[box, [label ids]], ...]}}.

    Rows: video, sec, x1, y1, x2, y2, label[, score]. Files in `gt_paths` are ground truth: their
    8th column is AVA's person id, not a score, and no threshold applies (PySlowFast reads the
    GT lists first, then the predicted ones, keeping predicted rows with score >= threshold).
    Boxes with identical coordinates in the same keyframe are merged, their labels accumulated. A box outside [0,1] or inverted drops
    its whole keyframe (the sample is skipped, not the run); `bad` (a list) receives one
    "file:line: problem" per such row. A label id outside 1..num_classes is an error: PySlowFast
    puts label k in output column k-1, so it would silently train the wrong class.
    """
    out = defaultdict(lambda: defaultdict(dict))
    dropped = set()
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{where(path)}: annotation file not found")
        for lineno, row in csv_rows(path, "annotation CSV"):
            if not row:
                continue
            if len(row) not in (7, 8):
                raise UserError(f"{where(path, lineno)}: expected 7 or 8 columns, got {len(row)}")
            try:
                vid, sec = row[0], int(row[1])
                box = [float(v) for v in row[2:6]]
                label = -1 if row[6] == "" else int(row[6])
                score = float(row[7]) if len(row) == 8 and path not in gt_paths else None
            except ValueError as e:
                raise UserError(f"{where(path, lineno)}: {e}") from None
            if label != -1 and (label < 1 or (num_classes and label > num_classes)):
                raise UserError(f"{where(path, lineno)}: label id {label} outside "
                                f"1..{num_classes or 'inf'} (MODEL.NUM_CLASSES)")
            if score is not None and score < detect_thresh:
                continue
            if is_val and not full_test_on_val and sec % 4 != 0:
                continue  # PySlowFast evaluates every 4th second unless FULL_TEST_ON_VAL
            if not all(0.0 <= v <= 1.0 for v in box) or box[0] > box[2] or box[1] > box[3]:
                if bad is not None:
                    bad.append(f"{where(path, lineno)}: box {row[2:6]} outside [0,1] or "
                               "inverted; keyframe skipped")
                dropped.add((vid, sec))
                continue
            key = ",".join(row[2:6])
            entry = out[vid][sec].setdefault(key, [box, []])
            if label != -1:
                entry[1].append(label)
    return {v: {s: list(d.values()) for s, d in secs.items() if (v, s) not in dropped}
            for v, secs in out.items()}


def read_exclusions(path):
    """Set of (video, sec) keyframes to exclude, parsed by the evaluator's reader."""
    if not path:
        return set()
    from slowfast_dist.eval.ava_map import read_exclusions as parse

    return {(vid, int(sec)) for vid, sec in (key.rsplit(",", 1) for key in parse(path))}


def read_label_map(path):
    """Label map pbtxt -> ({id: name}, sorted ids), parsed by the evaluator's (official) rules."""
    from slowfast_dist.eval.ava_map import read_label_map as parse

    labels = dict(parse(path))
    return labels, sorted(labels)


def keyframe_index_list(boxes_and_labels, video_names, exclusions=(), valid=AVA_VALID_SECONDS):
    """List of (video_idx, sec, boxes) for keyframes with at least one box, in video order."""
    keys = []
    for vidx, vid in enumerate(video_names):
        for sec in sorted(boxes_and_labels.get(vid, {})):
            if sec not in valid or (vid, sec) in exclusions:
                continue
            boxes = boxes_and_labels[vid][sec]
            if boxes:
                keys.append((vidx, sec, boxes))
    return keys
