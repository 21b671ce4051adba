"""Exact AVA v2.2 frame-mAP, with the semantics of PySlowFast's evaluator
(slowfast/utils/ava_eval_helper.py + ava_evaluation/, PASCAL AP@0.5 IoU), vectorised with numpy.

Rules (as in the official code; each pinned by a test in tests/test_ava_map.py):
- Label map: only lines starting with exactly two spaces then `name:`, `id:` or `label_id:`
  count; name = text between the first two double quotes; id = last space-separated word.
  An id before any name gets the name "". Ids must be >= 1. Per-class output: ascending id,
  the last name given to an id wins.
- Frame key is ``"%s,%04d" % (video_id, int(timestamp))``: ``0902`` and ``902`` are one frame.
- Rows whose action id is not in the label map are dropped (their score is never parsed);
  GT and detections on frames listed in the exclusions file are dropped.
- Detections with x1 >= x2 or y1 >= y2 are dropped (official `_remove_invalid_boxes`, strict);
  degenerate GT boxes are kept and count as ground truth. An inverted GT box (x1 > x2 or
  y1 > y2) on a frame with a valid detection of its class crashes the official tool
  (BoxList check); we raise UserError there.
- Per frame and class, detections are taken in file order (no score sort, no per-frame cap);
  each takes the GT box of highest IoU (first on ties, NaN wins as in np.argmax); it is a TP if
  IoU >= 0.5 and that box is not yet taken, else FP. Detections on frames without GT are FP.
- Per class, detections are concatenated in order of the frame's first whitelisted row in the
  detections file, sorted with ``np.argsort(scores)[::-1]`` (numpy default kind, as official),
  precision/recall from cumulative sums, VOC AP with monotone precision envelope.
- A class without GT scores NaN (null in JSON); with GT but no detection, 0.0.
  mAP = nanmean over classes 1..max id.
Bad input the official tool crashes on (wrong column count, non-numeric fields, non-integer
timestamp, unparsable or empty label map, missing file) raises UserError("file:line: problem").
Boxes outside [0, 1] are tolerated by the official tool; we do too, with one warning.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from slowfast_dist import logs
from slowfast_dist.errors import UserError, where


def _warn(msg):
    # through the package's logging: in a training run the line gets its time and rank; the
    # prefix is in the text for `ava-eval`, which sets up no logging (logging's last resort)
    logs.get("eval").warning(f"warning: {msg}")


def _open_text(path, what, newline=None):
    """The file as text; bytes that are not UTF-8 are a UserError naming the line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot open {what} ({e.strerror})") from None
    try:
        return io.StringIO(raw.decode("utf-8"), newline=newline)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{where(path, line)}: not UTF-8 text ({what})") from None


MAX_LINE = 1 << 16  # characters; an AVA row is under 100, a label map line under 200


def csv_rows(path, what):
    """(line number, row) of a CSV file, streamed a line at a time: a line longer than MAX_LINE,
    bytes that are not UTF-8 or a malformed quote are a UserError naming file:line, read in
    memory bounded by MAX_LINE (a 1 GB line is not read whole)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"{path}: cannot open {what} ({e.strerror})") from None
    n = 0

    def lines():
        nonlocal n
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                return
            n += 1
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                # a spreadsheet's export: left in, the mark joins the first video's name and
                # its rows match nothing (the official reader keeps it)
                _warn(f"{path}: starts with a UTF-8 byte-order mark; ignored")
                raw = raw[3:]
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                raise UserError(f"{where(path, n)}: line longer than {MAX_LINE} characters "
                                f"(not a {what} row)")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{where(path, n)}: not UTF-8 text ({what})") from None

    with f:
        try:
            for row in csv.reader(lines()):
                yield n, row
        except csv.Error as e:
            raise UserError(f"{where(path, n)}: {e} ({what})") from None


def read_label_map(path):
    """Return [(id, name), ...] in file order, parsed line by line as the official tool does.

    Only lines starting with exactly two spaces and `name:`, `id:` or `label_id:` count; the
    name is the text after the first double quote up to the next one; the id is the last
    space-separated word of the stripped line. An id before any name gets the name ""."""
    items, name = [], ""
    with _open_text(path, "label map") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("  name:"):
                parts = line.split('"')
                if len(parts) < 2:
                    raise UserError(f"{where(path, n)}: name is not a quoted string")
                name = parts[1]
            elif line.startswith("  id:") or line.startswith("  label_id:"):
                try:
                    cid = int(line.strip().split(" ")[-1])
                except ValueError:
                    raise UserError(f"{where(path, n)}: id is not an integer") from None
                if cid < 1:
                    raise UserError(f"{where(path, n)}: class ids must be >= 1, got {cid}")
                items.append((cid, name))
    if not items:
        raise UserError(f"{path}: no `  name:` / `  id:` items found in label map "
                        "(fields must be indented by exactly two spaces)")
    return items


def _frame_key(path, n, vid, ts):
    try:
        return "%s,%04d" % (vid, int(ts))
    except ValueError:
        raise UserError(f"{where(path, n)}: timestamp {ts!r} is not an integer") from None


def read_boxes(path, with_score, whitelist=None):
    """Read an AVA GT (7/8 columns) or detections (8 columns) CSV.

    Returns (keys list, boxes [N,4] x1,y1,x2,y2, action ids [N], scores [N], line numbers [N]).
    As in the official reader, a score is only parsed on rows whose id is in `whitelist`
    (others get NaN and are dropped later)."""
    fast = _read_boxes_fast(path, with_score)
    if fast is not None:
        return fast
    keys, boxes, ids, scores, lines = [], [], [], [], []
    for n, row in csv_rows(path, "box CSV"):
        ok = len(row) == 8 if with_score else len(row) in (7, 8)
        if not ok:
            raise UserError(f"{where(path, n)}: expected {'8' if with_score else '7 or 8'} "
                            f"columns, got {len(row)}")
        keys.append(_frame_key(path, n, row[0], row[1]))
        try:
            boxes.append([float(v) for v in row[2:6]])
        except ValueError:
            raise UserError(f"{where(path, n)}: box coordinates must be numbers") from None
        try:
            ids.append(int(row[6]))
        except ValueError:
            raise UserError(f"{where(path, n)}: action id {row[6]!r} is not an integer") from None
        if with_score:
            try:
                scores.append(float(row[7]))
            except ValueError:
                if whitelist is None or ids[-1] in whitelist:
                    raise UserError(f"{where(path, n)}: score {row[7]!r} is not a number") from None
                scores.append(float("nan"))
        lines.append(n)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores if with_score else [1.0] * len(keys), dtype=np.float64)
    return keys, b, np.asarray(ids, dtype=np.int64), s, np.asarray(lines, dtype=np.int64)


def _read_boxes_fast(path, with_score):
    """Vectorised parse of a clean file; None sends the caller to the exact, slow path."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    if '"' in text or "\r" in text or text.startswith("\ufeff"):
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or max(map(len, lines)) > MAX_LINE:
        return None  # the streamed reader names the line
    rows = [ln.split(",") for ln in lines]
    widths = {len(r) for r in rows}
    if widths - ({8} if with_score else {7, 8}):
        return None
    try:
        cols = list(zip(*[r[:7] for r in rows])) if len(widths) > 1 else list(zip(*rows))
        ts = np.array(list(map(int, cols[1])), dtype=np.int64)
        boxes = np.array([list(map(float, cols[i])) for i in range(2, 6)], dtype=np.float64).T.copy()
        ids = np.array(list(map(int, cols[6])), dtype=np.int64)
        scores = (np.array(list(map(float, cols[7])), dtype=np.float64) if with_score
                  else np.ones(len(rows)))
    except (ValueError, OverflowError):
        return None
    keys = ["%s,%04d" % (v, t) for v, t in zip(cols[0], ts.tolist())]
    return keys, boxes, ids, scores, np.arange(1, len(rows) + 1, dtype=np.int64)


def read_exclusions(path):
    out = set()
    for n, row in csv_rows(path, "exclusions"):
        if not row:  # blank line, e.g. a trailing newline
            continue
        if len(row) != 2:
            raise UserError(f"{where(path, n)}: expected 2 columns (video,sec), got {len(row)}")
        out.add(_frame_key(path, n, row[0], row[1]))
    return out


def _check_boxes(path, b, lines):
    bad = ~np.all((b >= 0) & (b <= 1), axis=1)
    if bad.any():
        _warn(f"{where(path, int(lines[bad][0]))}: {int(bad.sum())} box(es) outside [0, 1] "
              "(kept, as the official evaluator does)")


def frame_ap(gt_keys, gt_boxes, gt_ids, det_keys, det_boxes, det_ids, det_scores,
             class_ids, excluded=frozenset(), det_path="detections", det_lines=None,
             gt_path="ground truth", gt_lines=None):
    """Per-class AP array (index c-1 for class id c, length max id) and mAP."""
    whitelist = set(class_ids)
    num_class = max(class_ids)
    # Frame indices: shared dictionary over both files.
    frames = {}
    gt_f = np.array([frames.setdefault(k, len(frames)) for k in gt_keys], dtype=np.int64)
    det_f = np.array([frames.setdefault(k, len(frames)) for k in det_keys], dtype=np.int64)
    excl = np.zeros(len(frames), dtype=bool)
    for k in excluded:
        if k in frames:
            excl[frames[k]] = True
    wl = np.array(sorted(whitelist), dtype=np.int64)
    gkeep = np.isin(gt_ids, wl) & ~excl[gt_f]
    dkeep = np.isin(det_ids, wl) & ~excl[det_f]
    valid = (det_boxes[:, 0] < det_boxes[:, 2]) & (det_boxes[:, 1] < det_boxes[:, 3])
    if (dkeep & ~valid).any():
        first = int(det_lines[dkeep & ~valid][0]) if det_lines is not None else None
        _warn(f"{where(det_path, first)}: {int((dkeep & ~valid).sum())} detection(s) with "
              "x1 >= x2 or y1 >= y2 dropped (as the official evaluator does)")
    dkeep &= valid
    gf, gc, gb = gt_f[gkeep], gt_ids[gkeep], gt_boxes[gkeep]
    df, dc, db, ds = det_f[dkeep], det_ids[dkeep], det_boxes[dkeep], det_scores[dkeep]
    # The official tool builds a BoxList of a frame's GT boxes of a class only when a valid
    # detection of that class is on the frame, and BoxList rejects x1 > x2 or y1 > y2 (ValueError).
    inverted = (gb[:, 0] > gb[:, 2]) | (gb[:, 1] > gb[:, 3])
    if inverted.any():
        nf0 = len(frames) + 1
        hit = np.isin((gc * nf0 + gf)[inverted], dc * nf0 + df)
        if hit.any():
            line = int(gt_lines[gkeep][inverted][hit][0]) if gt_lines is not None else None
            raise UserError(f"{where(gt_path, line)}: ground-truth box with x1 > x2 or y1 > y2 "
                            "on a frame with a detection of its class (the official evaluator "
                            "crashes here)")
    num_gt = np.bincount(gc - 1, minlength=num_class)

    # Order detections as the official per-class concatenation: frame by first appearance in
    # the detections file, then file order within the frame.
    # Only whitelisted rows create a frame entry in the official reader's dict.
    det_first = {}
    for i in np.nonzero(np.isin(det_ids, wl))[0].tolist():
        det_first.setdefault(det_keys[i], i)
    frame_rank = np.full(len(frames), 0, dtype=np.int64)
    for k, i in det_first.items():
        frame_rank[frames[k]] = i
    order = np.lexsort((np.arange(len(df)), frame_rank[df], dc))
    df, dc, db, ds = df[order], dc[order], db[order], ds[order]

    # Join each detection with the GT boxes of its frame and class.
    nf = len(frames) + 1
    ggroup = gc * nf + gf
    gorder = np.argsort(ggroup, kind="stable")
    ggroup, gb = ggroup[gorder], gb[gorder]
    dgroup = dc * nf + df
    start = np.searchsorted(ggroup, dgroup, "left")
    cnt = np.searchsorted(ggroup, dgroup, "right") - start
    tp = np.zeros(len(df), dtype=bool)
    has = cnt > 0
    if has.any():
        di = np.repeat(np.nonzero(has)[0], cnt[has])
        offs = np.arange(len(di)) - np.repeat(np.cumsum(cnt[has]) - cnt[has], cnt[has])
        gi = np.repeat(start[has], cnt[has]) + offs
        d, g = db[di], gb[gi]
        # Official IoU arithmetic on (y1,x1,y2,x2): areas, clipped intersection.
        ih = np.maximum(0.0, np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1]))
        iw = np.maximum(0.0, np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0]))
        inter = ih * iw
        ad = (d[:, 3] - d[:, 1]) * (d[:, 2] - d[:, 0])
        ag = (g[:, 3] - g[:, 1]) * (g[:, 2] - g[:, 0])
        iou = inter / (ad + ag - inter)
        seg = np.cumsum(cnt[has]) - cnt[has]
        best = np.maximum.reduceat(iou, seg)
        is_best = iou == np.repeat(best, cnt[has])
        # First index reaching the max within each segment (np.argmax tie rule).
        pos = np.where(is_best, np.arange(len(iou)), len(iou))
        first = np.minimum.reduceat(pos, seg)
        matched = best >= 0.5
        dets = np.nonzero(has)[0][matched]
        gt_taken = gi[first[matched]]
        # Greedy in file order: the first detection claiming a GT box is the TP.
        _, firsts = np.unique(gt_taken, return_index=True)
        tp[dets[firsts]] = True

    ap = np.full(num_class, np.nan)
    bounds = np.searchsorted(dc, np.arange(1, num_class + 2))
    for c in range(1, num_class + 1):
        if num_gt[c - 1] == 0:
            continue
        s, t = ds[bounds[c - 1]:bounds[c]], tp[bounds[c - 1]:bounds[c]]
        idx = np.argsort(s)[::-1]
        t = t[idx]
        ctp = np.cumsum(t)
        cfp = np.cumsum(~t)
        recall = ctp / num_gt[c - 1]
        precision = ctp.astype(float) / (ctp + cfp)
        precision = np.concatenate([[0.0], precision, [0.0]])
        recall = np.concatenate([[0.0], recall, [1.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        ind = np.where(recall[1:] != recall[:-1])[0] + 1
        ap[c - 1] = np.sum((recall[ind] - recall[ind - 1]) * precision[ind])
    mean = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
    return ap, mean


def _ground_truth(gt_csv, label_map):
    """(label map, (keys, boxes, ids, lines)) of the ground truth, checked as `evaluate` needs."""
    labels = read_label_map(label_map)
    gk, gb, gi, _, gl = read_boxes(gt_csv, with_score=False)
    _check_boxes(gt_csv, gb, gl)
    _check_scorable(gt_csv, gi, labels, label_map)
    return labels, (gk, gb, gi, gl)


def check_inputs(gt_csv, label_map, exclusions=None) -> None:
    """Read what `evaluate` reads besides the detections, under its rules (a UserError naming
    the file and line): training and testing check their evaluation files before they run."""
    _ground_truth(gt_csv, label_map)
    if exclusions:
        read_exclusions(exclusions)


def _check_scorable(gt_csv, gt_ids, labels, label_map) -> None:
    """No ground truth of any class in the map: every AP would be undefined, the mAP NaN."""
    if not np.isin(gt_ids, [c for c, _ in labels]).any():
        raise UserError(f"{gt_csv}: no ground-truth box of a class in {label_map} (of "
                        f"{len(gt_ids)} rows): nothing to score")


def evaluate(gt_csv, detections_csv, label_map_pbtxt, exclusions_csv=None):
    """Score an AVA detections CSV: {"mAP": float, "per_class": {name: float | None}}."""
    labels, (gk, gb, gi, gl) = _ground_truth(gt_csv, label_map_pbtxt)
    dk, db, di, ds, dl = read_boxes(detections_csv, with_score=True,
                                    whitelist={c for c, _ in labels})
    _check_boxes(detections_csv, db, dl)
    gbad = (gb[:, 0] >= gb[:, 2]) | (gb[:, 1] >= gb[:, 3])
    if gbad.any():
        _warn(f"{where(gt_csv, int(gl[gbad][0]))}: {int(gbad.sum())} GT box(es) with x1 >= x2 "
              "or y1 >= y2 (kept and counted, as the official evaluator does)")
    excluded = read_exclusions(exclusions_csv) if exclusions_csv else frozenset()
    ap, mean = frame_ap(gk, gb, gi, dk, db, di, ds, [c for c, _ in labels], excluded,
                        det_path=detections_csv, det_lines=dl, gt_path=gt_csv, gt_lines=gl)
    # Official naming: one entry per id in ascending id order, the last name given to an id
    # wins, and a later id with the same name overwrites the earlier one.
    names = dict(labels)
    per_class = {}
    for cid in sorted(names):
        v = ap[cid - 1]
        per_class[names[cid]] = None if math.isnan(v) else float(v)
    return {"mAP": mean, "per_class": per_class}


def write_detections(path, rows):
    """Write (video_id, second, x1, y1, x2, y2, action_id, score) rows as an AVA detections CSV."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        for vid, sec, x1, y1, x2, y2, aid, score in rows:
            w.writerow([vid, "%04d" % int(sec), "%.6f" % x1, "%.6f" % y1, "%.6f" % x2,
                        "%.6f" % y2, int(aid), "%.8f" % score])
