"""Batch collation for detection samples (see DEVELOPERS.md, data contract)."""
from functools import partial

import numpy as np
import torch


def collate_detection(samples):
    """uint8 windows -> `clips` [B, T, H, W, 3] zero-padded to the largest, `geometry` [B, 11]
    (DATA.DECODER yuv420: `luma` [B, T, H, W] and `chroma` [B, T, 2, Hc, Wc], padded alike;
    float samples: `inputs` stacked per pathway); boxes -> [sum N, 5] with the batch index in
    column 0."""
    if "clip" in samples[0]:
        out = {"clips": _pad_stack([s["clip"] for s in samples]),
               "geometry": torch.stack([s["geometry"] for s in samples])}
    elif "luma" in samples[0]:
        out = {"luma": _pad_stack([s["luma"] for s in samples]),
               "chroma": _pad_stack([s["chroma"] for s in samples], height_dim=2),
               "geometry": torch.stack([s["geometry"] for s in samples])}
    elif "jpegs" in samples[0]:  # decoded on the GPU: the bytes of every frame, back to back
        out = {"jpegs": torch.cat([s["jpegs"] for s in samples]),
               "jpeg_sizes": torch.stack([s["jpeg_sizes"] for s in samples]),
               "geometry": torch.stack([s["geometry"] for s in samples]),
               "keyframes": torch.stack([s["metadata"][0] for s in samples])}
    else:
        n_path = len(samples[0]["inputs"])
        out = {"inputs": [torch.stack([s["inputs"][p] for s in samples]) for p in range(n_path)]}
    out["boxes"] = torch.cat([torch.cat([torch.full((len(s["boxes"]), 1), float(i)), s["boxes"]],
                                        1) for i, s in enumerate(samples)])
    for k in ("ori_boxes", "labels", "metadata"):
        out[k] = torch.cat([s[k] for s in samples])
    # unreadable samples replaced while building this batch, in whichever worker built it
    out["skipped"] = sum(int(s.get("skipped", 0)) for s in samples)
    return out


def _pad_stack(clips, height_dim=1):
    """[B, ...] with each clip at the top left of its height and width (dims `height_dim` and
    the next one of a sample: [T, H, W, C] windows, [T, H, W] luma, [T, 2, H, W] chroma); in a
    worker, built straight in shared memory (as torch's default collate does) so the hand-over
    to the main process copies nothing more."""
    shape = list(clips[0].shape)
    for d in (height_dim, height_dim + 1):
        shape[d] = max(x.shape[d] for x in clips)
    shape = (len(clips), *shape)
    if torch.utils.data.get_worker_info() is not None:
        numel = int(np.prod(shape))
        out = clips[0].new(clips[0]._typed_storage()._new_shared(numel)).view(shape)
    else:
        out = torch.empty(shape, dtype=clips[0].dtype)
    lead = (slice(None),) * height_dim
    for i, x in enumerate(clips):
        h, w = x.shape[height_dim], x.shape[height_dim + 1]
        out[i][lead + (slice(0, h), slice(0, w))] = x
        # padding is never sampled; zeroed to keep batches exact
        out[i][lead + (slice(h, None),)] = 0
        out[i][lead + (slice(0, h), slice(w, None))] = 0
    return out


from torch.utils.data import BatchSampler, DataLoader  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402


class _EpochBatches:
    """The batches of one epoch from `start` on. With `seed` (a dataset with `keyed_draws`),
    each index goes out as the key (index, epoch, seed), of which the sample's random draws are
    a function."""

    def __init__(self, batches, epoch, seed, start):
        self.batches, self.epoch, self.seed, self.start = batches, epoch, seed, start

    def __len__(self):
        return len(self.batches) - self.start

    def __iter__(self):
        for k, batch in enumerate(self.batches):
            if k >= self.start:
                yield batch if self.seed is None else [(i, self.epoch, self.seed) for i in batch]


class _RepeatBatchSampler:
    """Yields the batches of epoch e from step `start` on, then of e+1, ... forever (the study's
    RepeatSampler).

    Indices are drawn in the main process, so the epoch counter lives here: epoch k uses the
    same permutation as DistributedSampler.set_epoch(k), whatever the prefetch depth.
    """

    def __init__(self, sampler, batch_size, drop_last, seed, start_epoch=0, start_step=0):
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.seed, self.epoch, self.start = seed, start_epoch, start_step

    def __iter__(self):
        while True:
            self.sampler.set_epoch(self.epoch)
            batches = BatchSampler(self.sampler, self.batch_size, self.drop_last)
            yield from _EpochBatches(batches, self.epoch, self.seed, self.start)
            self.epoch, self.start = self.epoch + 1, 0


class SimulatedShards(torch.utils.data.Sampler):
    """The indices of simulated ranks `ranks` of `num_replicas`, interleaved batch by batch:
    batch t of the first, batch t of the second, ..., then batch t + 1 of each. Each shard is
    DistributedSampler's for that rank (same permutation per epoch, same padding), cut to whole
    batches, so a BatchSampler over this order gives every simulated rank's batches."""

    def __init__(self, dataset, num_replicas, ranks, *, shuffle, seed, batch_size):
        self.shards = [DistributedSampler(dataset, num_replicas=num_replicas, rank=r,
                                          shuffle=shuffle, seed=seed, drop_last=False)
                       for r in ranks]
        self.batch_size = batch_size
        self.batches = len(self.shards[0]) // batch_size

    def set_epoch(self, epoch):
        for shard in self.shards:
            shard.set_epoch(epoch)

    def __len__(self):
        return self.batches * self.batch_size * len(self.shards)

    def __iter__(self):
        lists = [list(shard) for shard in self.shards]
        b = self.batch_size
        for t in range(self.batches):
            for indices in lists:
                yield from indices[t * b:(t + 1) * b]


class LoaderTimeout(RuntimeError):
    """A loader worker did not deliver a batch within DATA_LOADER.TIMEOUT_S; names the worker."""


def _next_batch(it, timeout_s):
    """next(it), a DataLoader's own timeout turned into a LoaderTimeout naming the worker."""
    try:
        return next(it)
    except RuntimeError as err:
        if "timed out" not in str(err):
            raise
        who = "a loader worker"
        try:  # the worker that owns the awaited batch (torch's bookkeeping; may change)
            worker = it._task_info[it._rcvd_idx][0]
            who = f"loader worker {worker} (pid {it._workers[worker].pid})"
        except Exception:  # noqa: BLE001
            pass
        raise LoaderTimeout(f"{who} delivered no batch for {timeout_s:g} s "
                            "(DATA_LOADER.TIMEOUT_S): it is stuck, on a hung file system or "
                            "a decoder; stopping this rank") from None


class EpochLoader:
    """Iterable over one epoch of batches; call set_epoch(e) (or set_epoch(e, k) to start at
    step k, as a resumed run does) before iterating epoch e."""

    def __init__(self, dataset, batch_size, *, shuffle, drop_last, num_workers, pin_memory,
                 persistent, rank, world_size, seed, batch_transform=None, timeout_s=0.0,
                 simulate=1):
        self.dataset, self.persistent, self.epoch, self.start = dataset, persistent, 0, 0
        self.timeout_s = timeout_s if num_workers else 0.0  # 0: wait as long as it takes
        if simulate > 1:  # this process stands for ranks rank*k .. rank*k + k-1 of world*k
            if not drop_last:
                raise ValueError("simulated ranks need drop_last (whole batches per rank)")
            self.sampler = SimulatedShards(
                dataset, world_size * simulate, range(rank * simulate, (rank + 1) * simulate),
                shuffle=shuffle, seed=seed, batch_size=batch_size)
        else:
            self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                              shuffle=shuffle, seed=seed, drop_last=False)
        self._batches = BatchSampler(self.sampler, batch_size, drop_last)
        self._kw = dict(num_workers=num_workers, pin_memory=pin_memory,
                        collate_fn=partial(collate_detection_or_default,
                                           batch_transform=batch_transform),
                        worker_init_fn=_worker_init if num_workers else None,
                        timeout=self.timeout_s)
        self._batch_size, self._drop_last = batch_size, drop_last
        self._seed, self._rank = seed, rank
        self._key_seed = seed if getattr(dataset, "keyed_draws", False) else None
        self._it = None
        self._next = None  # (epoch, step) the persistent iterator yields next

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start = epoch, start_step

    def __len__(self):
        """Batches in a whole epoch (a resumed epoch yields len - start_step of them)."""
        return len(self._batches)

    def __iter__(self):
        if not self.persistent:
            self.sampler.set_epoch(self.epoch)
            # a fresh DataLoader (and fresh workers) per epoch: the study's baseline
            batches = _EpochBatches(self._batches, self.epoch, self._key_seed, self.start)
            it = iter(DataLoader(self.dataset, batch_sampler=batches,
                                 generator=self._worker_seeds(), **self._kw))
            for _ in range(len(batches)):
                yield _next_batch(it, self.timeout_s)
            return
        if self._it is None or self._next != (self.epoch, self.start):
            # first epoch, or a jump (resume): start the one persistent iterator here
            rs = _RepeatBatchSampler(self.sampler, self._batch_size, self._drop_last,
                                     self._key_seed, self.epoch, self.start)
            self._it = iter(DataLoader(self.dataset, batch_sampler=rs,
                                       generator=self._worker_seeds(), **self._kw))
        for _ in range(len(self) - self.start):
            yield _next_batch(self._it, self.timeout_s)
        self._next = (self.epoch + 1, 0)

    def _worker_seeds(self):
        # Workers seed their RNGs from this generator. The default (torch's global RNG, seeded
        # alike on every rank) would give worker k of every rank the same augmentations.
        state = np.random.SeedSequence([self._seed, self._rank, self.epoch]).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))


def _worker_init(_worker_id):
    """Loader workers leave the stop signals to their rank's main process, which checkpoints and
    then ends them: SIGUSR1/SIGUSR2 are ignored, and SIGTERM ends a worker only when its parent
    sends it (multiprocessing's clean-up), not when a scheduler signals every process of the job
    (a worker killed mid-batch would take the rank down before it could checkpoint)."""
    import os
    import signal
    import threading

    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later too

    def wait_for_sigterm():
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=wait_for_sigterm, daemon=True, name="sigterm-from-parent").start()


def collate_detection_or_default(samples, batch_transform=None):
    if not (isinstance(samples[0], dict) and "boxes" in samples[0]):
        return torch.utils.data.default_collate(samples)
    batch = collate_detection(samples)
    # training on CPUs: the workers, not the main process, resample their own batches
    if batch_transform is not None and "clips" in batch:
        batch["inputs"] = batch_transform(batch.pop("clips"), batch["geometry"])
    elif batch_transform is not None and "luma" in batch:
        batch["inputs"] = batch_transform.from_yuv420(batch.pop("luma"), batch.pop("chroma"),
                                                      batch["geometry"])
    return batch


def build_loader(dataset, batch_size, *, shuffle, drop_last, num_workers, pin_memory,
                 persistent, rank, world_size, seed, batch_transform=None, timeout_s=0.0,
                 simulate=1):
    """See DEVELOPERS.md: an iterable with set_epoch(epoch) and len(). `batch_transform`
    (data/device.py), when given, runs in the workers: the choice for CPU training, where there
    is no GPU to do it. `simulate` k > 1: this process yields the batches of k simulated ranks
    in turn (SimulatedShards)."""
    return EpochLoader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last,
                       num_workers=num_workers, pin_memory=pin_memory, persistent=persistent,
                       rank=rank, world_size=world_size, seed=seed,
                       batch_transform=batch_transform, timeout_s=timeout_s, simulate=simulate)
