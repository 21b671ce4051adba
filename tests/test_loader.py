"""build_loader: per-epoch reshuffle, disjoint rank shards, same order persistent or not."""
import gc

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


def test_persistent_workers_end_at_close_or_as_soon_as_the_loader_is_dropped():
    import time

    def workers_of(ld):
        return list(ld._it._workers)  # torch's worker processes, held apart from the loader

    def ended(workers, within_s=3.0):
        t0 = time.time()
        while any(w.is_alive() for w in workers) and time.time() - t0 < within_s:
            time.sleep(0.05)
        return not any(w.is_alive() for w in workers)

    torch.set_num_threads(1)
    base = _epochs(False, 0)
    ld = build_loader(_Idx(), 4, shuffle=True, drop_last=False, num_workers=2, pin_memory=False,
                      persistent=True, rank=0, world_size=1, seed=7)
    ld.set_epoch(0)
    assert [int(x) for b in ld for x in b] == base[0]
    workers = workers_of(ld)
    ld.close()
    assert ended(workers, 0.5)
    alone = build_loader(_Idx(), 4, shuffle=True, drop_last=False, num_workers=0,
                         pin_memory=False, persistent=True, rank=0, world_size=1, seed=7)
    assert [int(x) for b in alone for x in b] == base[0]
    alone.close()  # no workers: nothing to end, and no error
    ld.set_epoch(1)  # a closed loader starts new workers, and draws as it would have
    assert [int(x) for b in ld for x in b] == base[1]
    workers = workers_of(ld)
    gc.disable()  # dropped in a reference cycle, it would wait for a collection, then 5 s a worker
    try:
        del ld
        assert ended(workers)
    finally:
        gc.enable()


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
    def __init__(self, release):
        super().__init__()
        self.release = release

    def __getitem__(self, i):
        import os
        import time
        torch.set_num_threads(1)
        # the file this sample reads hangs (a dead NFS server, say) until the test releases it
        while i == 13 and not os.path.exists(self.release):
            time.sleep(0.05)
        return torch.tensor(i)


@pytest.mark.parametrize("persistent", [True, False])
def test_a_stuck_loader_worker_is_named_after_the_timeout(persistent, tmp_path):
    import time

    from slowfast_dist.data.loader import LoaderTimeout

    release = tmp_path / "release"
    ld = build_loader(_Stuck(str(release)), 4, shuffle=False, drop_last=False, num_workers=2,
                      pin_memory=False, persistent=persistent, rank=0, world_size=1, seed=7,
                      timeout_s=2)
    ld.set_epoch(0)
    gc.collect()  # an earlier test's loaders are shut down now, not inside the timing
    it = iter(ld)
    t0 = time.time()
    got = []
    with pytest.raises(LoaderTimeout, match=r"^loader worker 1 \(pid \d+\) delivered no batch for "
                                            r"2 s \(DATA_LOADER.TIMEOUT_S\)") as e:
        for batch in it:
            got.append(batch)
    took = time.time() - t0
    # a worker still stuck would hold up the loader's shutdown by 5-10 s (the trainer ends the
    # process instead): released, it finishes its sample and shuts down at once
    release.touch()
    ld.close()  # the persistent workers end here
    del it, e  # the others with their iterator, which the error's traceback holds
    # batches 0-2 arrive; batch 3 (indices 12-15, worker 1 of 2) never does
    assert len(got) == 3 and took < 15


class _Killed(_Idx):
    def __getitem__(self, i):
        import os
        import signal
        if i == 5:  # what the kernel's out-of-memory killer does to a worker
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.tensor(i)


def test_a_killed_loader_worker_is_one_error_naming_it_and_the_signal():
    from slowfast_dist.data.loader import LoaderWorkerDied

    ld = build_loader(_Killed(), 4, shuffle=False, drop_last=False, num_workers=1,
                      pin_memory=False, persistent=False, rank=0, world_size=1, seed=7,
                      timeout_s=60)
    ld.set_epoch(0)
    with pytest.raises(LoaderWorkerDied, match=r"^loader worker \(pid \d+\) died \(killed by "
                                               r"signal: Killed\); .*DATA_LOADER.NUM_WORKERS"):
        for _ in ld:
            pass
    ld.close()


# --- multigrid: a per-epoch plan of batch sizes and clip shapes ---

def test_cut_batches_and_batch_count_agree_for_every_length():
    from slowfast_dist.data.loader import batch_count, cut_batches

    for sizes in ([4, 2, 1], [3], [1, 5], [2, 2, 7]):
        for n in range(30):
            for drop_last in (True, False):
                batches = cut_batches(list(range(n)), sizes, drop_last)
                assert batch_count(n, sizes, drop_last) == len(batches)
                for k, batch in enumerate(batches):  # sizes round and round; a short last one
                    full = sizes[k % len(sizes)]
                    assert len(batch) == full or (not drop_last and k == len(batches) - 1
                                                  and len(batch) < full)
                assert sum(batches, []) == list(range(n))[:sum(map(len, batches))]


class _KeyedShape(_Idx):
    keyed_draws = True

    def __len__(self):
        return 21  # two shards of 11 after DistributedSampler's padding

    def __getitem__(self, key):
        import random
        torch.set_num_threads(1)
        idx, epoch, seed, shape = key  # the plan's shapes are opaque to the loader: ints here
        return torch.tensor([idx, shape, random.Random(f"{seed}/{epoch}/{idx}").randint(0, 10**9)])


def _two_stage_plan(epoch):
    """A short cycle in epoch 0, one larger shape from epoch 1 on."""
    return [(4, 16), (2, 24), (1, 32)] if epoch == 0 else [(3, 24)]


def _plan_run(persistent, workers, rank=0, start=None):
    """Per epoch 0 and 1 (or from epoch 0 step `start` on): (len, batches as rows)."""
    ld = build_loader(_KeyedShape(), 99, shuffle=True, drop_last=True, num_workers=workers,
                      pin_memory=False, persistent=persistent, rank=rank, world_size=2, seed=7,
                      cycle=_two_stage_plan)
    out = []
    for e in (0, 1):
        ld.set_epoch(e, start if (start is not None and e == 0) else 0)
        out.append((len(ld), [[tuple(r.tolist()) for r in b] for b in ld]))
    return out


def test_a_plan_cuts_each_epoch_by_its_batch_sizes_alike_on_every_rank_and_resumes_exactly():
    torch.set_num_threads(1)
    base = _plan_run(True, 2)
    # shard of 11: 4, 2, 1, 4 (then 0 left) in epoch 0; 3, 3, 3 (2 left, dropped) in epoch 1
    assert [len(b) for b in base[0][1]] == [4, 2, 1, 4] and base[0][0] == 4
    assert [{r[1] for r in b} for b in base[0][1]] == [{16}, {24}, {32}, {16}]
    assert [len(b) for b in base[1][1]] == [3, 3, 3] and base[1][0] == 3
    assert {r[1] for b in base[1][1] for r in b} == {24}  # prefetched into epoch 1: its plan
    # the same batches whatever builds them; rank 1 counts the same steps (DDP needs it)
    assert _plan_run(False, 0) == base
    other = _plan_run(True, 0, rank=1)
    assert [n for n, _ in other] == [4, 3] and [len(b) for b in other[0][1]] == [4, 2, 1, 4]
    mine, theirs = ({r[0] for b in run[0][1] for r in b} for run in (base, other))
    assert mine | theirs == set(range(21)) and len(mine & theirs) <= 1  # one padded index
    for persistent, workers in ((True, 2), (False, 2), (True, 0)):
        resumed = _plan_run(persistent, workers, start=2)  # a resume at epoch 0 step 2
        assert resumed == [(4, base[0][1][2:]), base[1]], (persistent, workers)


def test_a_plan_is_refused_with_simulated_ranks_or_a_dataset_without_keyed_draws():
    from slowfast_dist.errors import UserError

    kw = dict(shuffle=True, drop_last=True, num_workers=0, pin_memory=False, persistent=True,
              rank=0, world_size=1, seed=7, cycle=_two_stage_plan)
    with pytest.raises(UserError, match="DIST.SIMULATE_WORLD_SIZE > 1"):
        build_loader(_KeyedShape(), 2, simulate=2, **kw)
    with pytest.raises(ValueError, match="keyed_draws"):
        build_loader(_Idx(), 2, **kw)


def _pid_ava(root):
    """The training set of the session's synthetic tree; each sample's metadata carries the pid
    of the process that built it (a third column)."""
    import os

    from slowfast_dist.data import AvaDataset, ClipSpec

    class PidAva(AvaDataset):
        def __getitem__(self, key):
            torch.set_num_threads(1)
            sample = super().__getitem__(key)
            pid = torch.full((len(sample["metadata"]), 1), os.getpid(), dtype=torch.long)
            sample["metadata"] = torch.cat([sample["metadata"], pid], 1)
            return sample

    clip = ClipSpec(num_frames=8, sampling_rate=2, crop_size=32, jitter_scales=(32, 40))
    return PidAva([str(root / "frame_lists/train.csv")], str(root / "frames"),
                  [str(root / "annotations/ava_train_v2.2.csv")],
                  str(root / "annotations/ava_action_list_v2.2.pbtxt"), train=True,
                  clip=clip), clip


def test_multigrid_shapes_reach_the_samples_through_the_same_persistent_workers(data):
    """Batch sizes, frames, rate and crop change per iteration and per epoch, the persistent
    workers stay the same processes, and each batch equals its keys built one by one here."""
    import os

    from slowfast_dist.data import multigrid_shape
    from slowfast_dist.data.device import ClipBatchTransform
    from slowfast_dist.data.loader import batch_count

    torch.set_num_threads(1)
    ds, clip = _pid_ava(data)

    def shape(frames, rate, crop):
        return multigrid_shape(clip, num_frames=frames, sampling_rate=rate, crop_size=crop)

    plans = {0: [(4, shape(8, 2, 16)), (2, shape(8, 2, 24)), (1, shape(8, 2, 32))],
             1: [(3, shape(4, 4, 24))]}
    ld = build_loader(ds, 2, shuffle=True, drop_last=True, num_workers=2, pin_memory=False,
                      persistent=True, rank=0, world_size=1, seed=7,
                      cycle=lambda epoch: plans[min(epoch, 1)])  # prefetch asks for epoch 2
    tf = ClipBatchTransform(clip.mean, clip.std, alpha=4, slowfast=True)
    index_of = {(v, s): i for i, (v, s, _) in enumerate(ds.keys)}
    pids = []
    for epoch, plan in plans.items():
        ld.set_epoch(epoch)
        assert len(ld) == batch_count(len(ds), [b for b, _ in plan], True) == 4
        batches = list(ld)
        assert len(batches) == len(ld)
        pids.append({int(p) for b in batches for p in b["metadata"][:, 2]})
        for step, batch in enumerate(batches):
            size, want = plan[step % len(plan)]
            assert len(batch["geometry"]) == size and batch["clips"].shape[1] == want.num_frames
            assert {tuple(g[9:11].tolist()) for g in batch["geometry"]} == {(want.crop_size,) * 2}
            # the device transform follows the geometry whatever the previous batch's crop
            slow, fast = tf(batch["clips"], batch["geometry"])
            assert fast.shape == (size, 3, want.num_frames, want.crop_size, want.crop_size)
            assert slow.shape[2] == want.num_frames // 4
            # the keys, rebuilt from (video, second): the same samples, one by one, here
            firsts = [int((batch["boxes"][:, 0] == j).nonzero()[0]) for j in range(size)]
            keys = [(index_of[tuple(batch["metadata"][r, :2].tolist())], epoch, 7, want)
                    for r in firsts]
            alone = collate_detection([ds[k] for k in keys])
            for name in ("clips", "geometry", "boxes", "labels", "ori_boxes"):
                assert torch.equal(alone[name], batch[name]), name
            assert torch.equal(alone["metadata"][:, :2], batch["metadata"][:, :2])
    assert pids[0] == pids[1] and len(pids[0]) == 2 and os.getpid() not in pids[0]
