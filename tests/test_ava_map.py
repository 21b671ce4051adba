"""Each official AVA evaluator rule pinned by a hand-derived case, plus a slow reference check."""

import math
import random

import numpy as np
import pytest

from slowfast_dist.errors import UserError
from slowfast_dist.eval.ava_map import evaluate, write_detections

LABELS = 'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\nitem {\n  name: "c"\n  id: 3\n}\n'


def _run(tmp_path, gt, det, excl=None, labels=LABELS):
    (tmp_path / "gt.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in gt))
    (tmp_path / "det.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in det))
    (tmp_path / "l.pbtxt").write_text(labels)
    e = None
    if excl is not None:
        (tmp_path / "e.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in excl))
        e = str(tmp_path / "e.csv")
    return evaluate(str(tmp_path / "gt.csv"), str(tmp_path / "det.csv"), str(tmp_path / "l.pbtxt"), e)


B = (0.0, 0.0, 0.5, 0.5)


def test_perfect_and_missing_classes(tmp_path):
    # class a: perfect (AP 1); b: GT but no detection (AP 0); c: detections without GT (NaN).
    r = _run(tmp_path, [("v", 902, *B, 1), ("v", 902, *B, 2)],
             [("v", "0902", *B, 1, 0.9), ("v", 902, *B, 3, 0.8)])
    assert r["per_class"] == {"a": 1.0, "b": 0.0, "c": None}
    assert r["mAP"] == 0.5  # nanmean over a and b; 0902 and 902 are one frame


def test_iou_exactly_half_is_tp(tmp_path):
    # det (0,0,0.5,0.5) vs GT (0,0,0.5,1.0): IoU = 0.25/0.5 = 0.5 exactly -> TP (>=).
    r = _run(tmp_path, [("v", 1, 0, 0, 0.5, 1.0, 1)], [("v", 1, *B, 1, 0.9)])
    assert r["per_class"]["a"] == 1.0


def test_duplicate_detection_is_fp(tmp_path):
    # Two dets on one GT: the higher-scored first-in-file one is TP, the second FP; AP = 1
    # since the FP ranks after the TP. If the FP ranks first: P=[0,1/2] -> AP 0.5.
    r = _run(tmp_path, [("v", 1, *B, 1)], [("v", 1, *B, 1, 0.9), ("v", 1, *B, 1, 0.8)])
    assert r["per_class"]["a"] == 1.0
    # Matching follows file order, not score: the first row (score 0.1) takes the GT.
    r = _run(tmp_path, [("v", 1, *B, 1)], [("v", 1, *B, 1, 0.1), ("v", 1, *B, 1, 0.8)])
    assert r["per_class"]["a"] == 0.5


def test_duplicate_gt_and_exclusions_and_unknown_ids(tmp_path):
    # Two identical GT boxes: one det matches one (recall 1/2 -> AP 0.5). Frame 2 excluded
    # removes its GT and its FP detection; id 7 is outside the map and ignored.
    gt = [("v", 1, *B, 1), ("v", 1, *B, 1), ("v", 2, *B, 1), ("v", 1, *B, 7)]
    det = [("v", 1, *B, 1, 0.5), ("v", 2, 0.5, 0.5, 1, 1, 1, 0.9), ("v", 1, *B, 7, 0.9)]
    r = _run(tmp_path, gt, det, excl=[("v", "0002")])
    assert r["per_class"]["a"] == 0.5
    r = _run(tmp_path, gt, det)
    # Without exclusion: FP at 0.9 first, TP at 0.5; 3 GT -> P=[0,1/2], R=[0,1/3] -> AP 1/6.
    assert r["per_class"]["a"] == pytest.approx(1 / 6, abs=1e-12)


def test_ties_use_numpy_default_argsort_reversed(tmp_path):
    # Equal scores: order = np.argsort(scores)[::-1] on file order; for small arrays this
    # reverses file order, so the later FP (frame 2) ranks before the TP -> AP 0.5.
    r = _run(tmp_path, [("v", 1, *B, 1)], [("v", 1, *B, 1, 0.5), ("v", 2, *B, 1, 0.5)])
    assert r["per_class"]["a"] == 0.5


def test_degenerate_detection_dropped(tmp_path, capsys):
    r = _run(tmp_path, [("v", 1, *B, 1)], [("v", 1, 0.5, 0, 0.5, 1, 1, 0.99), ("v", 1, *B, 1, 0.5)])
    assert r["per_class"]["a"] == 1.0
    err = capsys.readouterr().err
    assert "warning: " in err and "det.csv:1: 1 detection(s) with x1 >= x2 or y1 >= y2 dropped" in err


@pytest.mark.parametrize("row,msg", [
    (("v", 1, 0, 0, 1), "columns"), (("v", "1.5", *B, 1, 0.5), "timestamp"),
    (("v", 1, 0, "x", 1, 1, 1, 0.5), "numbers")])
def test_bad_rows(tmp_path, row, msg):
    with pytest.raises(UserError, match=r"det\.csv:1: .*" + msg):
        _run(tmp_path, [("v", 1, *B, 1)], [row])


def test_label_map_forms_and_errors(tmp_path):
    lm = 'label {\n  name: "x"\n  label_id: 2\n  label_type: PERSON_MOVEMENT\n}\n'
    r = _run(tmp_path, [("v", 1, *B, 2)], [("v", 1, *B, 2, 0.3)], labels=lm)
    assert r == {"mAP": 1.0, "per_class": {"x": 1.0}}
    with pytest.raises(UserError, match="l.pbtxt"):
        _run(tmp_path, [("v", 1, *B, 2)], [], labels="garbage\n")
    (tmp_path / "l.pbtxt").write_text(LABELS)
    with pytest.raises(UserError, match="missing"):
        evaluate(str(tmp_path / "missing.csv"), "x", str(tmp_path / "l.pbtxt"))


def _slow_reference(gt, det, ncls):
    """Plain-Python restatement of the official rules (file-order greedy, argsort ties)."""
    aps = []
    for c in range(1, ncls + 1):
        g = {}
        for v, t, *b, a in gt:
            if a == c:
                g.setdefault("%s,%04d" % (v, int(t)), []).append(b)
        ngt = sum(len(x) for x in g.values())
        frames = []
        for v, t, *rest in det:
            k = "%s,%04d" % (v, int(t))
            if k not in frames:
                frames.append(k)
        scores, labels = [], []
        for k in frames:
            taken = set()
            for v, t, x1, y1, x2, y2, a, s in det:
                if a != c or "%s,%04d" % (v, int(t)) != k or not (x1 < x2 and y1 < y2):
                    continue
                best, bi = -1.0, -1
                for j, (gx1, gy1, gx2, gy2) in enumerate(g.get(k, [])):
                    iw = max(0.0, min(x2, gx2) - max(x1, gx1))
                    ih = max(0.0, min(y2, gy2) - max(y1, gy1))
                    inter = iw * ih
                    iou = inter / ((y2 - y1) * (x2 - x1) + (gy2 - gy1) * (gx2 - gx1) - inter)
                    if iou > best:
                        best, bi = iou, j
                ok = best >= 0.5 and bi not in taken
                if ok:
                    taken.add(bi)
                scores.append(s)
                labels.append(ok)
        if ngt == 0:
            aps.append(float("nan"))
            continue
        order = list(np.argsort(np.array(scores, dtype=float))[::-1])
        tp = fp = 0
        prec, rec = [0.0], [0.0]
        for i in order:
            tp += labels[i]
            fp += not labels[i]
            prec.append(tp / (tp + fp))
            rec.append(tp / ngt)
        prec.append(0.0)
        rec.append(1.0)
        for i in range(len(prec) - 2, -1, -1):
            prec[i] = max(prec[i], prec[i + 1])
        aps.append(sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1]))
    return aps


def test_random_against_slow_reference(tmp_path):
    rnd = random.Random(0)
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]  # coarse grid: many exact IoU ties and 0.5 cases
    for case in range(30):
        def box():
            x1, x2 = sorted(rnd.sample(grid, 2))
            y1, y2 = sorted(rnd.sample(grid, 2))
            return x1, y1, x2, y2
        gt = [("v%d" % rnd.randint(0, 1), rnd.randint(0, 3), *box(), rnd.randint(1, 3)) for _ in range(rnd.randint(0, 8))]
        det = [("v%d" % rnd.randint(0, 1), rnd.randint(0, 3), *box(), rnd.randint(1, 3),
                rnd.choice([0.1, 0.5, 0.9, rnd.random()])) for _ in range(rnd.randint(0, 20))]
        if not gt:  # nothing to score: one line, not an mAP of NaN
            with pytest.raises(UserError, match="no ground-truth box of a class in"):
                _run(tmp_path, gt, det)
            continue
        r = _run(tmp_path, gt, det)
        ref = _slow_reference(gt, det, 3)
        for name, want in zip("abc", ref):
            got = r["per_class"][name]
            assert (got is None) == math.isnan(want), case
            if got is not None:
                assert got == pytest.approx(want, abs=1e-12), case


def test_write_detections_roundtrip(tmp_path):
    p = tmp_path / "d.csv"
    write_detections(p, [("vid", 902, 0.1, 0.2, 0.3, 0.4, 5, 0.75)])
    assert p.read_text().strip() == "vid,0902,0.100000,0.200000,0.300000,0.400000,5,0.75000000"


def test_frame_order_follows_first_whitelisted_row(tmp_path):
    # Official read_csv only creates a frame entry when a whitelisted row arrives, so frame 1
    # (first class-1 row) comes before frame 2 even though frame 2's unmapped id-7 row is first.
    # Concatenated scores [0.5 TP, 0.5 FP]; argsort()[::-1] on equal scores puts the FP first:
    # P=[0, 1/2], R=[0, 1] -> AP 0.5 (ordering frame 2 first would give AP 1.0).
    det = [("v", 2, *B, 7, 0.5), ("v", 1, *B, 1, 0.5), ("v", 2, *B, 1, 0.5)]
    r = _run(tmp_path, [("v", 1, *B, 1)], det)
    assert r["per_class"]["a"] == 0.5


def test_label_map_exact_two_space_rule(tmp_path):
    # "  id: 1" before any name gets name ""; four-space lines are ignored; so the map is
    # {1: "", 3: "b"} and rows with id 2 are dropped as unmapped.
    lm = 'item {\n  id: 1\n  name: "a"\n}\nitem {\n    name: "ignored"\n    id: 2\n  name: "b"\n  id: 3\n}\n'
    r = _run(tmp_path, [("v", 1, *B, 1), ("v", 1, *B, 2)],
             [("v", 1, *B, 2, 0.9), ("v", 1, *B, 1, 0.5)], labels=lm)
    assert r == {"mAP": 1.0, "per_class": {"": 1.0, "b": None}}
    with pytest.raises(UserError, match=">= 1"):
        _run(tmp_path, [], [], labels='item {\n  name: "z"\n  id: 0\n}\n')
    with pytest.raises(UserError, match="two spaces"):
        _run(tmp_path, [], [], labels='item {\n    name: "z"\n    id: 1\n}\n')


def test_score_parsed_only_for_mapped_rows(tmp_path):
    # A non-numeric score on an unmapped id is never parsed by the official reader.
    r = _run(tmp_path, [("v", 1, *B, 1)], [("v", 1, *B, 7, "junk"), ("v", 1, *B, 1, 0.5)])
    assert r["per_class"]["a"] == 1.0
    with pytest.raises(UserError, match=r"det\.csv:1: score"):
        _run(tmp_path, [("v", 1, *B, 1)], [("v", 1, *B, 1, "junk")])


def test_inverted_gt_box(tmp_path):
    inv = ("v", 1, 0.5, 0.0, 0.2, 0.5, 1)  # x1 > x2
    # Official BoxList raises when a class-1 detection shares the frame; we refuse the same input.
    with pytest.raises(UserError, match=r"gt\.csv:1: .*x1 > x2"):
        _run(tmp_path, [inv, ("v", 1, *B, 1)], [("v", 1, *B, 1, 0.9)])
    # Elsewhere it is still counted: 2 GT, the only detection is an FP on frame 2 -> AP 0.
    r = _run(tmp_path, [inv, ("v", 1, *B, 1)], [("v", 2, *B, 1, 0.9)])
    assert r["per_class"]["a"] == 0.0


def test_a_byte_order_mark_is_dropped_with_a_warning(tmp_path, capsys):
    gt = [("v", 902, 0.1, 0.1, 0.5, 0.5, 1)]
    det = [("v", 902, 0.1, 0.1, 0.5, 0.5, 1, 0.9)]
    plain = _run(tmp_path, gt, det)["mAP"]
    g = tmp_path / "gt.csv"
    g.write_bytes(b"\xef\xbb\xbf" + g.read_bytes())
    assert evaluate(g, tmp_path / "det.csv", tmp_path / "l.pbtxt")["mAP"] == plain == 1.0
    assert "starts with a UTF-8 byte-order mark; ignored" in capsys.readouterr().err
