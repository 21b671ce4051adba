"""Pins the PySlowFast AVA file rules implemented in slowfast_dist.data.ava_files."""
import pytest

from slowfast_dist.data import ava_files as af
from slowfast_dist.errors import UserError


def test_keyframe_index_and_clamped_sequence():
    # second 900 is frame 0 of the segment; 30 fps
    assert af.keyframe_index(902) == 60
    # 4 frames at rate 2 centred on 1 -> clamped at 0 on the left edge
    assert af.get_sequence(1, 4, 2, 100) == [0, 0, 1, 3]
    assert af.get_sequence(98, 4, 2, 100) == [94, 96, 98, 99]


def test_boxes_grouped_with_threshold_and_no_label(tmp_path):
    p = tmp_path / "pred.csv"
    p.write_text("v1,902,0.1,0.1,0.5,0.5,3,0.9\n"
                 "v1,902,0.1,0.1,0.5,0.5,5,0.9\n"
                 "v1,902,0.2,0.2,0.6,0.6,,0.95\n"
                 "v1,903,0.1,0.1,0.5,0.5,3,0.5\n")
    got = af.read_box_csvs([str(p)], detect_thresh=0.8)
    assert 903 not in got["v1"]  # below score threshold
    boxes = got["v1"][902]
    assert boxes[0] == [[0.1, 0.1, 0.5, 0.5], [3, 5]]
    assert boxes[1] == [[0.2, 0.2, 0.6, 0.6], []]  # empty label = -1, no label id


def test_val_every_fourth_second_unless_full_test(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("v1,904,0,0,1,1,1\nv1,905,0,0,1,1,1\n")
    assert set(af.read_box_csvs([str(p)], is_val=True, full_test_on_val=False)["v1"]) == {904}
    assert set(af.read_box_csvs([str(p)], is_val=True, full_test_on_val=True)["v1"]) == {904, 905}


def test_gt_eighth_column_is_person_id_not_score(tmp_path):
    # AVA's GT CSVs carry a person id in column 8; PySlowFast applies the threshold to the
    # predicted lists only, so person 0 must not be dropped by a 0.8 threshold.
    gt, pred = tmp_path / "gt.csv", tmp_path / "pred.csv"
    gt.write_text("v1,902,0.1,0.1,0.5,0.5,3,0\n")
    pred.write_text("v1,902,0.2,0.2,0.6,0.6,4,0.5\nv1,903,0.2,0.2,0.6,0.6,4,0.9\n")
    got = af.read_box_csvs([str(gt), str(pred)], gt_paths=[str(gt)], detect_thresh=0.8)
    assert got["v1"][902] == [[[0.1, 0.1, 0.5, 0.5], [3]]]
    assert got["v1"][903] == [[[0.2, 0.2, 0.6, 0.6], [4]]]


def test_box_outside_unit_square_drops_its_keyframe_with_a_message(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("v1,902,0.1,0.1,0.5,0.5,1\nv1,902,0.1,0.1,1.5,0.5,2\nv1,903,0.1,0.1,0.5,0.5,1\n"
                 "v1,904,0.6,0.1,0.5,0.5,1\n")
    bad = []
    got = af.read_box_csvs([str(p)], bad=bad)
    assert set(got["v1"]) == {903}  # 902 has an out-of-range box, 904 an inverted one
    assert len(bad) == 2 and bad[0].startswith(f"{p}:2:") and bad[1].startswith(f"{p}:4:")


def test_label_id_beyond_num_classes_names_file_and_line(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("v1,902,0.1,0.1,0.5,0.5,1\nv1,902,0.1,0.1,0.5,0.5,81\n")
    with pytest.raises(UserError, match=r"gt.csv:2: label id 81 outside 1..80"):
        af.read_box_csvs([str(p)], num_classes=80)


def test_frame_list_label_map_and_keyframes(tmp_path):
    fl = tmp_path / "train.csv"
    fl.write_text("original_vido_id video_idx frame_id path labels\n"
                  "a 0 0 a/a_000001.jpg \"\"\nb 1 0 b/b_000001.jpg \"\"\n")
    names, frames = af.read_frame_lists([str(fl)], "/F")
    assert names == ["a", "b"] and frames[1] == ["/F/b/b_000001.jpg"]
    lm = tmp_path / "lm.pbtxt"
    lm.write_text('item {\n  name: "walk"\n  id: 1\n}\nitem {\n  name: "wave"\n  id: 2\n}\n')
    assert af.read_label_map(str(lm)) == ({1: "walk", 2: "wave"}, [1, 2])
    bl = {"a": {901: [[[0, 0, 1, 1], [1]]], 902: [[[0, 0, 1, 1], [1]]]}, "b": {903: [[[0, 0, 1, 1], [2]]]}}
    keys = af.keyframe_index_list(bl, names, exclusions={("b", 903)})
    assert [(v, s) for v, s, _ in keys] == [(0, 902)]  # 901 outside 902..1798, b excluded


def test_bad_input_raises_user_error_naming_file_and_line(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("v1,902,0,0,1,1,1\nv1,abc,0,0,1,1,1\n")
    with pytest.raises(UserError, match=r"gt.csv:2:"):
        af.read_box_csvs([str(p)])
    with pytest.raises(UserError, match="missing.csv"):
        af.read_box_csvs([str(tmp_path / "missing.csv")])


def test_exclusions_read_by_the_evaluator_rules(tmp_path):
    ex = tmp_path / "excl.csv"
    ex.write_text("b,0903\n\nc,1000\n")  # zero-padded seconds, a blank line
    assert af.read_exclusions(str(ex)) == {("b", 903), ("c", 1000)}
    assert af.read_exclusions(None) == set()
    ex.write_text("b,0903\nc,1000,x\n")
    with pytest.raises(UserError, match=r"excl.csv:2: expected 2 columns"):
        af.read_exclusions(str(ex))
    with pytest.raises(UserError, match="nope.csv"):
        af.read_exclusions(str(tmp_path / "nope.csv"))


def test_frame_lists_without_header_gaps_and_missing_paths(tmp_path):
    rows = [f'v1 0 {i} v1/v1_{i + 1:06d}.jpg ""' for i in range(4)]
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(rows) + "\n")  # no header: the first frame is a frame
    names, frames = af.read_frame_lists([str(bare)], "/f")
    assert names == ["v1"] and frames[0][0] == "/f/v1/v1_000001.jpg" and len(frames[0]) == 4
    cut = tmp_path / "cut.csv"  # lines lost from the middle: said once, naming file and line
    cut.write_text("original_vido_id video_idx frame_id path labels\n"
                   + "\n".join(rows[:1] + rows[3:]) + "\n")
    said = []
    af.read_frame_lists([str(cut)], "/f", warn=said.append)
    assert said == [f"{cut}:3: frame_id 3 of v1 where 1 was next: frames missing from the list "
                    "(or out of order); clips near them read other frames"]
    no_path = tmp_path / "no_path.csv"  # the path column left out: the labels are no path
    no_path.write_text('original_vido_id video_idx frame_id path labels\nv1 0 0 ""\n')
    with pytest.raises(UserError, match=rf"^{no_path}:2: expected 'original_vido_id"):
        af.read_frame_lists([str(no_path)], "/f")

