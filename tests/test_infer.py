"""infer.predict: label id k takes output column k-1; each keyframe is scored once."""
from contextlib import nullcontext

import torch

from slowfast_dist.data.loader import collate_detection
from slowfast_dist.train.infer import gather_to_rank0, predict


class _ColumnModel(torch.nn.Module):
    """Scores column j of every box with j / 10, so a row's score tells which column it read."""

    def forward(self, inputs, boxes):
        return torch.arange(5.0).repeat(len(boxes), 1) / 10


def _sample(vidx, sec, n_boxes, skipped=0):
    return {"inputs": [torch.zeros(3, 1, 4, 4)], "boxes": torch.zeros(n_boxes, 4),
            "ori_boxes": torch.full((n_boxes, 4), 0.5), "labels": torch.zeros(n_boxes, 5),
            "metadata": torch.tensor([[vidx, sec]] * n_boxes), "skipped": skipped}


def test_keyframes_once_and_columns_by_label_id(capsys):
    batches = [
        # 902 twice in one batch: the second copy is a replaced unreadable sample
        collate_detection([_sample(0, 902, 2), _sample(0, 902, 2, skipped=1), _sample(0, 903, 1)]),
        # 903 again in a later batch (sampler padding)
        collate_detection([_sample(0, 903, 1), _sample(1, 902, 1)]),
    ]
    got = predict(_ColumnModel(), batches, device=torch.device("cpu"), autocast=nullcontext,
                  video_names=["a", "b"], class_ids=[1, 3, 5])
    assert sorted(got) == [(0, 902), (0, 903), (1, 902)]
    assert [len(got[k]) for k in sorted(got)] == [2 * 3, 1 * 3, 1 * 3]
    # label id 3 is column 2 (score 0.2), id 5 column 4 (0.4)
    assert {(r[6], round(r[7], 6)) for r in got[(0, 903)]} == {(1, 0.0), (3, 0.2), (5, 0.4)}
    assert got[(1, 902)][0][:2] == ("b", 902)
    assert "1 unreadable sample(s) skipped" in capsys.readouterr().err  # a logged warning
    rows = gather_to_rank0(got, world_size=1, rank=0)
    assert len(rows) == 12
