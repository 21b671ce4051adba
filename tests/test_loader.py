"""build_loader: per-epoch reshuffle, disjoint rank shards, same order persistent or not."""
import pytest
import torch
from torch.utils.data import Dataset

from slowfast_dist.data.loader import build_loader, collate_detection


class _Idx(Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        torch.set_num_threads(1)
        return torch.tensor(i)


def _epochs(persistent, workers, rank=0, world=1, n=3, dataset=None, shuffle=True):
    ld = build_loader(dataset or _Idx(), 4, shuffle=shuffle, drop_last=False, num_workers=workers,
                      pin_memory=False, persistent=persistent, rank=rank, world_size=world, seed=7)
    out = []
    for e in range(n):
        ld.set_epoch(e)
        out.append([int(x) for b in ld for x in b])
    return out


def test_new_permutation_each_epoch_and_same_order_persistent():
    torch.set_num_threads(1)
    base = _epochs(False, 0)
    assert base[0] != base[1] and sorted(base[0]) == list(range(20))
    assert _epochs(True, 2) == base  # persistent workers + set_epoch give the same order
    assert _epochs(False, 2) == base


def test_two_ranks_disjoint_and_cover():
    torch.set_num_threads(1)
    r0, r1 = _epochs(True, 0, 0, 2, 1)[0], _epochs(True, 0, 1, 2, 1)[0]
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(20))


class _Draw(_Idx):
    def __getitem__(self, i):  # what an augmentation draws in a worker
        import random
        return torch.tensor(random.randint(0, 10**9))


def _draws(rank):
    return _epochs(False, 2, rank, 2, n=2, dataset=_Draw(), shuffle=False)


def test_worker_augmentations_differ_across_ranks_and_epochs_but_repeat_per_run():
    torch.set_num_threads(1)
    torch.manual_seed(0)  # every rank seeds torch alike (identical model init)
    r0 = _draws(0)
    torch.manual_seed(0)
    r1 = _draws(1)
    assert not set(r0[0]) & set(r1[0])      # worker k of rank 0 and of rank 1 draw differently
    assert r0[0] != r0[1]                   # and a new epoch draws anew
    torch.manual_seed(123)
    assert _draws(0) == r0                  # the same run (or a resume at epoch e) draws the same


class _KeyedDraw(_Idx):
    keyed_draws = True  # as AvaDataset: the loader passes (index, epoch, seed)

    def __getitem__(self, key):
        import random
        idx, epoch, seed = key
        return torch.tensor([idx, random.Random(f"{seed}/{epoch}/{idx}").randint(0, 10**9)])


def _keyed_run(persistent, workers, start=None):
    """Batches as (index, draw) rows for epochs 0-2, or from epoch 1 step `start` on."""
    ld = build_loader(_KeyedDraw(), 4, shuffle=True, drop_last=False, num_workers=workers,
                      pin_memory=False, persistent=persistent, rank=0, world_size=1, seed=7)
    rows = []
    for e in ([0, 1, 2] if start is None else [1, 2]):
        ld.set_epoch(e, start if (start is not None and e == 1) else 0)
        rows.append([tuple(r.tolist()) for b in ld for r in b])
    return rows


def test_a_sample_draws_the_same_whatever_worker_builds_it_and_wherever_a_run_starts():
    """The keyed draws behind exact resume: a run started at epoch 1 step 2 (a resume) yields
    what the uninterrupted run yielded from there, persistent workers or not, 0, 1 or 2 workers."""
    torch.set_num_threads(1)
    base = _keyed_run(True, 2)
    assert base[0] != base[1] and len({d for _, d in base[0] + base[1]}) == 40
    assert _keyed_run(False, 0) == base and _keyed_run(True, 1) == base
    for persistent, workers in ((True, 2), (False, 2), (True, 0)):
        resumed = _keyed_run(persistent, workers, start=2)
        assert resumed == [base[1][2 * 4:], base[2]], (persistent, workers)


def _tree(tmp_path):
    import numpy as np
    from PIL import Image
    (tmp_path / "f" / "v").mkdir(parents=True)
    lines = ["original_vido_id video_idx frame_id path labels"]
    for i in range(100):  # seconds 900..903.3 at 30 fps
        Image.fromarray(np.full((12, 16, 3), i, np.uint8)).save(tmp_path / "f" / "v" / f"v_{i + 1:06d}.jpg")
        lines.append(f'v 0 {i} v/v_{i + 1:06d}.jpg ""')
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "gt.csv").write_text("v,902,0.1,0.2,0.5,0.9,3\nv,903,0.0,0.0,1.0,1.0,1\n")
    (tmp_path / "lm.pbtxt").write_text('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 3\n}\n')
    from slowfast_dist.data import AvaDataset, ClipSpec
    return AvaDataset([str(tmp_path / "train.csv")], str(tmp_path / "f"), [str(tmp_path / "gt.csv")],
                      str(tmp_path / "lm.pbtxt"), train=False,
                      clip=ClipSpec(num_frames=4, sampling_rate=2, crop_size=24, alpha=2,
                                    mean=(0.5,) * 3, std=(0.5,) * 3))


def test_dataset_sample_contract(tmp_path):
    ds = _tree(tmp_path)
    s = ds[0]
    # a worker ships the uint8 window and its geometry; the device transform makes the pathways
    assert s["clip"].dtype == torch.uint8 and s["clip"].shape == (4, 12, 16, 3)
    from slowfast_dist.data.device import ClipBatchTransform
    batch = collate_detection([s])
    inputs = ClipBatchTransform([0.5] * 3, [0.5] * 3, 2, True)(batch["clips"], batch["geometry"])
    assert [x.shape for x in inputs] == [(1, 3, 2, 24, 32), (1, 3, 4, 24, 32)]
    assert ds.frame_indices(0, 902) == [56, 58, 60, 62]  # (902-900)*30 centred, rate 2
    # label id k -> column k-1 of NUM_CLASSES (PySlowFast), not the position in the label map
    assert s["labels"].tolist() == [[0.0, 0.0, 1.0]] and s["metadata"].tolist() == [[0, 902]]
    assert torch.allclose(s["boxes"], torch.tensor([[3.2, 4.8, 16.0, 21.6]]))


def test_missing_frame_skipped_and_counted(tmp_path, capsys):
    ds = _tree(tmp_path)
    (tmp_path / "f" / "v" / "v_000091.jpg").unlink()  # used by the 903 keyframe only
    s = ds[1]
    assert "v_000091.jpg" in capsys.readouterr().err
    assert s["metadata"].tolist() == [[0, 902]] and s["skipped"] == 1 and ds.skipped == 1


def test_skipped_counts_reach_the_batches_from_worker_processes(tmp_path, capfd):
    # with workers the dataset copies live in other processes; the count must travel in the batch
    ds = _tree(tmp_path)
    (tmp_path / "f" / "v" / "v_000091.jpg").unlink()
    (tmp_path / "f" / "v" / "v_000092.jpg").write_bytes(b"not a jpeg")
    ld = build_loader(ds, 1, shuffle=False, drop_last=False, num_workers=2, pin_memory=False,
                      persistent=True, rank=0, world_size=1, seed=0)
    for epoch in range(2):
        ld.set_epoch(epoch)
        assert sum(b["skipped"] for b in ld) == 1  # 903 replaced by 902, once per epoch
    assert ds.skipped == 0  # the main process's copy never loaded anything
    assert "v_00009" in capfd.readouterr().err


class _Stuck(_Idx):
    def __getitem__(self, i):
        import time
        torch.set_num_threads(1)
        if i == 13:  # the file this sample reads hangs (a dead NFS server, say)
            time.sleep(3600)
        return torch.tensor(i)


@pytest.mark.parametrize("persistent", [True, False])
def test_a_stuck_loader_worker_is_named_after_the_timeout(persistent):
    import time

    from slowfast_dist.data.loader import LoaderTimeout

    ld = build_loader(_Stuck(), 4, shuffle=False, drop_last=False, num_workers=2,
                      pin_memory=False, persistent=persistent, rank=0, world_size=1, seed=7,
                      timeout_s=2)
    ld.set_epoch(0)
    it = iter(ld)
    t0 = time.time()
    got = []
    with pytest.raises(LoaderTimeout, match=r"^loader worker 1 \(pid \d+\) delivered no batch for "
                                            r"2 s \(DATA_LOADER.TIMEOUT_S\)"):
        for batch in it:
            got.append(batch)
    # batches 0-2 arrive; batch 3 (indices 12-15, worker 1 of 2) never does
    assert len(got) == 3 and time.time() - t0 < 15
