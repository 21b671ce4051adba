"""Batch collation for detection samples (see DEVELOPERS.md, data contract)."""
import re
from functools import partial

import numpy as np
import torch

from slowfast_dist.errors import UserError


def collate_detection(samples):
    """uint8 windows -> `clips` [B, T, H, W, 3] zero-padded to the largest, `geometry` [B, 11]
    (DATA.DECODER yuv420: `luma` [B, T, H, W] and `chroma` [B, T, 2, Hc, Wc], padded alike; a
    yuv420 batch whose large sources were decoded to RGB has both, its RGB samples first;
    float samples: `inputs` stacked per pathway); boxes -> [sum N, 5] with the batch index in
    column 0."""
    if any("luma" in s for s in samples):
        samples = sorted(samples, key=lambda s: "luma" in s)  # stable: the RGB samples first
    if "clip" in samples[0] or "luma" in samples[0]:
        out = {"geometry": torch.stack([s["geometry"] for s in samples])}
        clips = [s["clip"] for s in samples if "clip" in s]
        planes = [s for s in samples if "luma" in s]
        if clips:
            out["clips"] = _pad_stack(clips)
        if planes:
            out["luma"] = _pad_stack([s["luma"] for s in planes])
            out["chroma"] = _pad_stack([s["chroma"] for s in planes], height_dim=2)
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


from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402


def cut_batches(indices, sizes, drop_last):
    """`indices` cut into batches of sizes[0], sizes[1], ... and round again (PySlowFast's
    ShortCycleBatchSampler; one size: BatchSampler's batches); drop_last drops a partial last
    batch."""
    batches, start = [], 0
    while start < len(indices):
        size = sizes[len(batches) % len(sizes)]
        if drop_last and start + size > len(indices):
            break
        batches.append(indices[start:start + size])
        start += size
    return batches


def batch_count(n, sizes, drop_last) -> int:
    """len(cut_batches(n indices, sizes, drop_last)), from the numbers alone: it depends only on
    the shard length and the sizes, and DistributedSampler pads every shard to one length, so
    every rank counts the same steps (as DDP needs). PySlowFast's sampler reports
    n / mean(sizes), which can differ from what it iterates; this is what is iterated."""
    per_round = sum(sizes)
    count, rest = n // per_round * len(sizes), n % per_round
    for size in sizes:
        if rest == 0:
            break
        if rest < size:
            return count + (0 if drop_last else 1)
        count, rest = count + 1, rest - size
    return count


class _EpochBatches:
    """The batches of one epoch from `start` on: the sampler's indices (its epoch already set)
    cut as `plan` [(batch size, ClipShape or None)] says, round and round. With `seed` (a dataset
    with `keyed_draws`), each index goes out as the key (index, epoch, seed), of which the
    sample's random draws are a function, plus the batch's ClipShape when the plan gives one."""

    def __init__(self, sampler, plan, drop_last, epoch, seed, start):
        self.batches = cut_batches(list(sampler), [size for size, _ in plan], drop_last)
        self.shapes = [shape for _, shape in plan]
        self.epoch, self.seed, self.start = epoch, seed, start

    def __len__(self):
        return len(self.batches) - self.start

    def __iter__(self):
        for k in range(self.start, len(self.batches)):
            batch, shape = self.batches[k], self.shapes[k % len(self.shapes)]
            if self.seed is None:
                yield batch
            elif shape is None:
                yield [(i, self.epoch, self.seed) for i in batch]
            else:
                yield [(i, self.epoch, self.seed, shape) for i in batch]


class _RepeatBatchSampler:
    """Yields the batches of epoch e from step `start` on, then of e+1, ... forever (the study's
    RepeatSampler).

    Indices are drawn in the main process, so the epoch counter lives here: epoch k uses the
    same permutation as DistributedSampler.set_epoch(k), whatever the prefetch depth. For the
    same reason `plan_at(k)` is asked here when the prefetch reaches epoch k, and its shapes
    travel in the keys: a new multigrid stage needs no new workers.
    """

    def __init__(self, sampler, plan_at, drop_last, seed, start_epoch=0, start_step=0):
        self.sampler, self.plan_at, self.drop_last = sampler, plan_at, drop_last
        self.seed, self.epoch, self.start = seed, start_epoch, start_step

    def __iter__(self):
        while True:
            self.sampler.set_epoch(self.epoch)
            yield from _EpochBatches(self.sampler, self.plan_at(self.epoch), self.drop_last,
                                     self.epoch, self.seed, self.start)
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


class LoaderWorkerDied(LoaderTimeout):
    """A loader worker ended without its batch (killed, crashed); the rank stops as for a stuck
    one, with one line instead of torch's two chained tracebacks."""


# the usual cause by torch's name of the signal: the kernel's OOM killer sends SIGKILL; a full
# /dev/shm (batches pass through shared memory) gives SIGBUS
_WHY_WORKERS_DIE = {
    "Killed": "the kernel's out-of-memory killer is the usual cause: fewer "
              "DATA_LOADER.NUM_WORKERS or a smaller batch",
    "Bus error": "shared memory (/dev/shm) ran out: a larger /dev/shm (docker --shm-size) or "
                 "fewer DATA_LOADER.NUM_WORKERS",
    "": "a crash in the worker (a decoder, say): its own error, if any, is above",
}


def _next_batch(it, timeout_s):
    """next(it), a DataLoader's own timeout or a dead worker turned into one error naming the
    worker."""
    try:
        return next(it)
    except RuntimeError as err:
        chain = f"{err} {err.__context__ or ''}"
        died = "exited unexpectedly" in chain or "killed by signal" in chain
        if not died and "timed out" not in chain:
            raise
    # raised out here, not inside `except`: the frame would hold torch's error, whose
    # traceback holds the frame, a cycle that keeps the workers until a garbage collection
    if died:
        pids = re.search(r"pid\(s\) ([\d, ]+)", chain) or re.search(r"pid (\d+)", chain)
        how = re.search(r"killed by signal: ([\w ]+)", chain)
        signal = how.group(1).strip() if how else ""
        raise LoaderWorkerDied(
            f"loader worker (pid {pids.group(1).strip() if pids else '?'}) died"
            f"{f' (killed by signal: {signal})' if signal else ''}; "
            f"{_WHY_WORKERS_DIE.get(signal, _WHY_WORKERS_DIE[''])}; stopping this rank")
    who = "a loader worker"
    try:  # the worker that owns the awaited batch (torch's bookkeeping; may change)
        worker = it._task_info[it._rcvd_idx][0]
        who = f"loader worker {worker} (pid {it._workers[worker].pid})"
    except Exception:  # noqa: BLE001
        pass
    raise LoaderTimeout(f"{who} delivered no batch for {timeout_s:g} s (DATA_LOADER.TIMEOUT_S): "
                        "it is stuck, on a hung file system or a decoder; stopping this rank")


class EpochLoader:
    """Iterable over one epoch of batches; call set_epoch(e) (or set_epoch(e, k) to start at
    step k, as a resumed run does) before iterating epoch e.

    `cycle(epoch)` (multigrid), when given, is the epoch's plan: [(batch size, ClipShape)], the
    1 or 3 iterations that repeat through it; its sizes replace `batch_size`. It must be a pure
    function of the epoch: persistent workers prefetch into the next epoch, asking its plan
    before this one ends."""

    def __init__(self, dataset, batch_size, *, shuffle, drop_last, num_workers, pin_memory,
                 persistent, rank, world_size, seed, batch_transform=None, timeout_s=0.0,
                 simulate=1, cycle=None):
        self.dataset, self.persistent, self.epoch, self.start = dataset, persistent, 0, 0
        self.timeout_s = timeout_s if num_workers else 0.0  # 0: wait as long as it takes
        if cycle is not None and simulate > 1:
            # each simulated rank's batches interleave at one fixed size (SimulatedShards)
            raise UserError("MULTIGRID short or long cycles with DIST.SIMULATE_WORLD_SIZE > 1 "
                            "are not supported; set one of them off")
        if cycle is not None and not getattr(dataset, "keyed_draws", False):
            raise ValueError("a multigrid plan needs a dataset with keyed_draws: the clip shape "
                             "travels in the key")
        # epoch -> [(batch size, ClipShape or None)]; a partial, not a bound method, so the
        # persistent iterator's sampler does not hold the loader (a reference cycle would leave
        # its workers to the garbage collector, whose clean-up then waits 5 s per worker)
        self._plan = partial(_epoch_plan, cycle, batch_size)
        if simulate > 1:  # this process stands for ranks rank*k .. rank*k + k-1 of world*k
            if not drop_last:
                raise ValueError("simulated ranks need drop_last (whole batches per rank)")
            self.sampler = SimulatedShards(
                dataset, world_size * simulate, range(rank * simulate, (rank + 1) * simulate),
                shuffle=shuffle, seed=seed, batch_size=batch_size)
        else:
            self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                              shuffle=shuffle, seed=seed, drop_last=False)
        self._kw = dict(num_workers=num_workers, pin_memory=pin_memory,
                        collate_fn=partial(collate_detection_or_default,
                                           batch_transform=batch_transform),
                        worker_init_fn=_worker_init if num_workers else None,
                        timeout=self.timeout_s)
        self._drop_last = drop_last
        self._seed, self._rank = seed, rank
        self._key_seed = seed if getattr(dataset, "keyed_draws", False) else None
        self._it = None
        self._next = None  # (epoch, step) the persistent iterator yields next

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start = epoch, start_step

    def __len__(self):
        """Batches in the whole of the epoch set by set_epoch (a resumed epoch yields
        len - start_step of them); under a multigrid plan it changes with the epoch."""
        return self.steps(self.epoch)

    def steps(self, epoch: int) -> int:
        """Batches in the whole of `epoch` (the same on every rank)."""
        sizes = [size for size, _ in self._plan(epoch)]
        return batch_count(len(self.sampler), sizes, self._drop_last)

    def __iter__(self):
        if not self.persistent:
            self.sampler.set_epoch(self.epoch)
            # a fresh DataLoader (and fresh workers) per epoch: the study's baseline
            batches = _EpochBatches(self.sampler, self._plan(self.epoch), self._drop_last,
                                    self.epoch, self._key_seed, self.start)
            it = iter(DataLoader(self.dataset, batch_sampler=batches,
                                 generator=self._worker_seeds(), **self._kw))
            for _ in range(len(batches)):
                yield _next_batch(it, self.timeout_s)
            return
        if self._it is None or self._next != (self.epoch, self.start):
            # first epoch, or a jump (resume): start the one persistent iterator here
            rs = _RepeatBatchSampler(self.sampler, self._plan, self._drop_last,
                                     self._key_seed, self.epoch, self.start)
            self._it = iter(DataLoader(self.dataset, batch_sampler=rs,
                                       generator=self._worker_seeds(), **self._kw))
        it = self._it
        for _ in range(len(self) - self.start):
            if self._it is not it:  # close() ended the workers this iteration reads from
                raise RuntimeError("the loader was closed during this epoch's iteration")
            yield _next_batch(it, self.timeout_s)
        self._next = (self.epoch + 1, 0)

    def close(self) -> None:
        """Ends the persistent workers now, rather than when the iterator is dropped or
        collected; a closed loader starts new workers if iterated again."""
        it, self._it, self._next = self._it, None, None
        if hasattr(it, "_shutdown_workers"):  # none without workers (NUM_WORKERS 0)
            it._shutdown_workers()  # what torch's own __del__ runs

    def _worker_seeds(self):
        # Workers seed their RNGs from this generator. The default (torch's global RNG, seeded
        # alike on every rank) would give worker k of every rank the same augmentations.
        state = np.random.SeedSequence([self._seed, self._rank, self.epoch]).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))


def _epoch_plan(cycle, batch_size, epoch):
    """[(batch size, ClipShape or None)] of `epoch`: the multigrid cycle's, or one size at the
    dataset's own shape."""
    if cycle is None:
        return [(batch_size, None)]
    plan = list(cycle(epoch))
    if not plan or any(not isinstance(size, int) or size < 1 for size, _ in plan):
        raise ValueError(f"multigrid plan of epoch {epoch}: need [(batch size >= 1, "
                         f"ClipShape)], got {plan}")
    return plan


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
    if batch_transform is not None and ("clips" in batch or "luma" in batch):
        batch["inputs"] = batch_transform.from_batch(batch)
        for key in ("clips", "luma", "chroma"):
            batch.pop(key, None)
    return batch


def build_loader(dataset, batch_size, *, shuffle, drop_last, num_workers, pin_memory,
                 persistent, rank, world_size, seed, batch_transform=None, timeout_s=0.0,
                 simulate=1, cycle=None):
    """See DEVELOPERS.md: an iterable with set_epoch(epoch) and len(). `batch_transform`
    (data/device.py), when given, runs in the workers: the choice for CPU training, where there
    is no GPU to do it. `simulate` k > 1: this process yields the batches of k simulated ranks
    in turn (SimulatedShards). `cycle(epoch)` -> [(batch size, ClipShape)]: multigrid's batch
    sizes and clip shapes of each epoch (EpochLoader)."""
    return EpochLoader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last,
                       num_workers=num_workers, pin_memory=pin_memory, persistent=persistent,
                       rank=rank, world_size=world_size, seed=seed,
                       batch_transform=batch_transform, timeout_s=timeout_s, simulate=simulate,
                       cycle=cycle)
