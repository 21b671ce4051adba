"""The synthetic set is a readable AVA tree and deterministic for a seed."""
import filecmp

from slowfast_dist.data import AvaDataset
from slowfast_dist.data import ava_files as af
from slowfast_dist.data.synthetic import make_synthetic


def test_tree_readable_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_synthetic(str(a), videos=4, seconds=2, seed=3, width=64, height=48)
    make_synthetic(str(b), videos=4, seconds=2, seed=3, width=64, height=48)
    assert filecmp.cmp(a / "annotations/ava_train_v2.2.csv", b / "annotations/ava_train_v2.2.csv", shallow=False)
    assert af.read_label_map(str(a / "annotations/ava_action_list_v2.2.pbtxt"))[1] == [1, 2, 3, 4, 5, 6]
    ds = AvaDataset([str(a / "frame_lists/train.csv")], str(a / "frames"),
                    [str(a / "annotations/ava_train_v2.2.csv")],
                    str(a / "annotations/ava_action_list_v2.2.pbtxt"), train=True, num_frames=4,
                    sampling_rate=2, alpha=2, slowfast=True, mean=[0.45] * 3, std=[0.225] * 3,
                    crop_size=40, jitter_scales=[48, 56])
    assert len(ds) == 3 * 2  # 3 train videos x 2 keyframes
    s = ds[0]
    assert s["labels"].shape[1] == 6 and s["labels"].sum() >= 2
    assert (a / "videos/syn000.mp4").stat().st_size > 0


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    from slowfast_dist.cli import main

    assert main(["make-synthetic", str(tmp_path / "d"), "--seconds", "-3"]) == 2
    (tmp_path / "file").write_text("")
    assert main(["make-synthetic", str(tmp_path / "file" / "d"), "--videos", "1", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--seconds -3: must be at least 1" in err[0] and "cannot write the data set" in err[-1]
