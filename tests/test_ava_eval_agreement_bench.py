"""benchmarks/ava_eval_agreement.py without PySlowFast: its cases are scorable and cover the rules
it claims to, and its comparison fails on any AP that differs. (The comparison with the official
code itself needs a PySlowFast checkout: README, Evaluation.)"""
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports official_ava_eval beside it
    try:
        import ava_eval_agreement
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return ava_eval_agreement


def test_cases_are_scorable_and_cover_every_rule(bench, tmp_path):
    from slowfast_dist.eval.ava_map import evaluate

    rnd, seen = random.Random(0), {}
    for _ in range(300):
        files, exercised = bench.draw_case(rnd)
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        excl = tmp_path / "exclusions.csv" if "exclusions.csv" in files else None
        result = evaluate(tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "labels.pbtxt", excl)
        assert set(result["per_class"]) == {line.split('"')[1] for line in files["labels.pbtxt"]
                                            .splitlines() if line.startswith("  name:")}
        for k, v in exercised.items():
            seen[k] = seen.get(k, 0) + bool(v)
        for name in files:
            (tmp_path / name).unlink()
    rules = {"classes_without_gt", "duplicated_detections", "duplicated_gt_rows", "exclusions",
             "ids_outside_map", "iou_exactly_half", "non_contiguous_ids",
             "padded_and_unpadded_seconds", "score_ties"}
    assert rules <= {k for k, n in seen.items() if n >= 10}, seen
    # the same seed draws the same cases
    assert bench.draw_case(random.Random(5)) == bench.draw_case(random.Random(5))


def test_comparison_fails_on_any_difference(bench):
    ours = {"mAP": 0.5, "per_class": {"a": 0.25, "b": 0.75, "c": None}}
    assert bench.compare(ours, (0.5, {"a": 0.25, "b": 0.75, "c": None})) == (True, True, 0.0)
    same, _, diff = bench.compare(ours, (0.5, {"a": 0.25, "b": 0.75 + 1e-9, "c": None}))
    assert not same and diff == pytest.approx(1e-9)
    assert not bench.compare(ours, (0.5, {"a": 0.25, "b": 0.75, "c": 0.0}))[0]  # undefined vs 0
    assert not bench.compare(ours, (0.5, {"a": 0.25, "b": 0.75}))[0]  # a class missing
    assert not bench.compare(ours, (0.6, {"a": 0.25, "b": 0.75, "c": None}))[0]
    nan = float("nan")
    assert bench.compare({"mAP": nan, "per_class": {"a": None}}, (nan, {"a": None}))[0]


def test_iou_of_exactly_half_is_found_across_padded_seconds(bench):
    gt = ["v,0902,0.0,0.0,1.0,1.0,1,0"]
    assert list(bench._ious(gt, ["v,902,0.0,0.0,0.5,1.0,1,0.9"])) == [0.5]
    assert list(bench._ious(gt, ["v,903,0.0,0.0,0.5,1.0,1,0.9"])) == []
