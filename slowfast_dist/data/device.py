"""The half of the data path that runs on the training device, batched: resample, convert,
normalise, pack the pathways; and the prefetcher that moves the next batch there while the
current step runs.

Workers ship uint8 source windows and their `ClipGeometry` (`transforms.py`); `collate` pads the
windows to one [B, T, H, W, 3] uint8 tensor. `ClipBatchTransform` turns that into the model's
float pathway tensors [B, 3, T, h, w] with one `grid_sample` for the whole batch: on a GPU this
is a few milliseconds, where the same work in the workers cost about half their CPU time.
With `DATA.DECODER yuv420` the workers ship the JPEG's planes (`luma` [B, T, H, W] and `chroma`
[B, T, 2, Hc, Wc]); `yuv420_to_rgb` upsamples the chroma and converts to RGB first, batched.
"""

from __future__ import annotations

import itertools
import queue
import threading

import torch
import torch.nn.functional as F

from slowfast_dist import logs
from slowfast_dist.data.transforms import GEOMETRY_FIELDS, pack_pathway

_G = {name: k for k, name in enumerate(GEOMETRY_FIELDS)}


class ClipBatchTransform:
    def __init__(self, mean, std, alpha: int, slowfast: bool, channels_last: bool = False):
        self.mean, self.std = list(mean), list(std)
        self.alpha, self.slowfast, self.channels_last = alpha, slowfast, channels_last

    def __call__(self, clips: torch.Tensor, geometry: torch.Tensor) -> list[torch.Tensor]:
        """clips uint8 [B, T, H, W, 3] (windows, zero-padded), geometry float64 [B, 11] ->
        pathway tensors [B, 3, T', h, w], normalised with DATA.MEAN / DATA.STD."""
        # the copy to [B, 3, T, H, W] in uint8, before the float conversion: 4x fewer bytes
        return self._resample(clips.permute(0, 4, 1, 2, 3).contiguous().float(), geometry)

    def from_yuv420(self, luma: torch.Tensor, chroma: torch.Tensor,
                    geometry: torch.Tensor) -> list[torch.Tensor]:
        """The same from the planes of DATA.DECODER yuv420 (`collate_detection`'s `luma`,
        `chroma`): converted to RGB, then resampled as above."""
        return self._resample(yuv420_to_rgb(luma, chroma), geometry)

    def from_batch(self, batch: dict, move=lambda t: t) -> list[torch.Tensor]:
        """The pathways of a collated uint8 batch (`collate_detection`): RGB windows (`clips`),
        yuv420 planes (`luma`, `chroma`), or both, the RGB samples first; `move` takes the
        pixels to the device."""
        if "clips" in batch and "luma" in batch:  # each kind checks its own; both together too
            _one_size(batch["geometry"])
        parts, n = [], 0
        if "clips" in batch:
            n = batch["clips"].shape[0]
            parts.append(self(move(batch["clips"]), batch["geometry"][:n]))
        if "luma" in batch:
            parts.append(self.from_yuv420(move(batch["luma"]), move(batch["chroma"]),
                                          batch["geometry"][n:]))
        return parts[0] if len(parts) == 1 else [torch.cat(p) for p in zip(*parts)]

    def _resample(self, x: torch.Tensor, geometry: torch.Tensor) -> list[torch.Tensor]:
        """x float [B, 3, T, H, W] in grey levels -> the pathways."""
        b, c, t, h, w = x.shape
        out_h, out_w = _one_size(geometry)
        grid = _sampling_grid(geometry.to(x.device, non_blocking=True), out_h, out_w, h, w)
        x = x.reshape(b, c * t, h, w)
        # align_corners=True: grid -1..1 spans pixel centres 0..size-1, so the coordinates in
        # the geometry are used as they are; 'border' never reads the zero padding.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        x = x.view(b, c, t, out_h, out_w)
        mean, std = self._scales(x.device, c)
        x = (x - mean) / std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return pack_pathway(x, self.alpha, self.slowfast, time_dim=2)


    def _scales(self, device, c):
        """DATA.MEAN / DATA.STD in grey levels, made on the device once (no copy per batch)."""
        if getattr(self, "_scale_device", None) != device:
            self._mean = torch.tensor(self.mean, device=device).view(1, c, 1, 1, 1) * 255.0
            self._std = torch.tensor(self.std, device=device).view(1, c, 1, 1, 1) * 255.0
            self._scale_device = device
        return self._mean, self._std


def yuv420_to_rgb(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """luma uint8 [B, T, H, W], chroma uint8 [B, T, 2, Hc, Wc] (Cb, Cr windows with one sample
    of margin: `transforms.yuv420_windows`) -> float RGB [B, 3, T, H, W], rounded to grey
    levels 0..255 as a JPEG decoder's uint8 output would be.

    The chroma is upsampled 2x by bilinear interpolation (align_corners False: libjpeg's
    "fancy" 3/4, 1/4 weights) and converted with JFIF's full-range BT.601 matrix, PIL's and
    libjpeg's conversion."""
    b, t, h, w = luma.shape
    uv = F.interpolate(chroma.flatten(0, 1).float(), scale_factor=2, mode="bilinear",
                       align_corners=False)
    # the margin: upsampled sample 2 lies under the first luma pixel of every window
    uv = uv[:, :, 2:2 + h, 2:2 + w].reshape(b, t, 2, h, w) - 128.0
    cb, cr = uv[:, :, 0], uv[:, :, 1]
    y = luma.float()
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return rgb.round_().clamp_(0.0, 255.0)


def _one_size(geometry: torch.Tensor) -> tuple[int, int]:
    # geometry stays on the host until here (collate builds it): reading it costs no sync
    sizes = {(int(g[_G["out_h"]]), int(g[_G["out_w"]])) for g in geometry.cpu().tolist()}
    if len(sizes) != 1:
        raise ValueError(f"one batch mixes output sizes {sorted(sizes)} (frames of different "
                         "aspect ratios in a test batch; use TEST.BATCH_SIZE 1 per GPU)")
    return sizes.pop()


def _sampling_grid(geometry, out_h, out_w, h, w):
    """[B, out_h, out_w, 2] grid_sample coordinates (x, y) in -1..1 over the padded windows."""
    def coords(scale, off, max_index, start, count, size):
        i = torch.arange(count, dtype=torch.float64, device=geometry.device)
        src = ((off[:, None] + i + 0.5) * scale[:, None] - 0.5).clamp(min=0.0)
        src = torch.minimum(src, max_index[:, None]) - start[:, None]
        return (2.0 * src / max(size - 1, 1) - 1.0).float()

    g = geometry.double()
    ys = coords(g[:, _G["scale_y"]], g[:, _G["off_y"]], g[:, _G["max_y"]], g[:, _G["top"]],
                out_h, h)
    xs = coords(g[:, _G["scale_x"]], g[:, _G["off_x"]], g[:, _G["max_x"]], g[:, _G["left"]],
                out_w, w)
    flip = g[:, _G["flip"]] > 0.5
    xs = torch.where(flip[:, None], xs.flip(1), xs)
    b = geometry.shape[0]
    return torch.stack([xs[:, None, :].expand(b, out_h, out_w),
                        ys[:, :, None].expand(b, out_h, out_w)], dim=-1)


class DeviceLoader:
    """Wraps an EpochLoader: each batch moves to `device` (pinned host memory, a side CUDA
    stream and a thread, so batches k+1.. are copied and transformed while step k runs) and goes
    through `transform`. Yields the batch dict with `inputs`, `boxes`, `labels` on the device;
    the rest stays on the host. On a CPU it works in line."""

    def __init__(self, loader, device, transform: ClipBatchTransform, decode_jpegs=None,
                 depth: int = 2, thread: bool | None = None):
        """`decode_jpegs`: for batches of JPEG bytes (DATA.DECODER nvjpeg or dali), the
        callable from `jpeg.batch_decoder`."""
        from slowfast_dist.data import jpeg

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # the thread sets it by index
            device = torch.device("cuda", torch.cuda.current_device())
        self.loader, self.device, self.transform = loader, device, transform
        self.depth = depth  # batches moved ahead of the step
        self.decode_jpegs = decode_jpegs or jpeg.decode_on_gpu
        self.dataset = getattr(loader, "dataset", None)
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.thread = self._stream is not None if thread is None else thread
        self._running: list = []  # (stop event, thread) of each open threaded iteration

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.loader.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return len(self.loader)

    def steps(self, epoch: int) -> int:
        return self.loader.steps(epoch)

    def close(self) -> None:
        """Ends the loader's persistent workers now (EpochLoader.close). A prefetch thread still
        running is stopped first (it could wait forever on workers that are gone); an iteration
        still open then raises at its next batch."""
        for stop, thread in list(self._running):
            stop.set()
            thread.join(timeout=120)  # it finishes the batch it is reading, then sees `stop`
        if hasattr(self.loader, "close"):
            self.loader.close()

    def __iter__(self):
        if not self.thread:
            for batch in self.loader:
                yield self._to_device(batch)
            return
        # On a GPU a thread moves and transforms the next batches: the copy's wait and the
        # transform's launches then never hold up the main thread, which is queueing the step.
        items: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        # The first batch is read here, so a loader starting its workers forks them from this
        # thread: a fork from a helper thread of a process with CUDA up can leave the children
        # holding locks that thread's siblings had.
        source = iter(self.loader)
        first = next(source, None)
        if first is None:
            return
        thread = threading.Thread(target=self._produce, args=(first, source, items, stop),
                                  daemon=True, name="slowfast-device-prefetch")
        thread.start()
        self._running.append((stop, thread))
        try:
            while True:
                if stop.is_set():  # only close() sets it while this iteration is open
                    raise RuntimeError("the loader was closed during this epoch's iteration")
                item = _get_while_alive(items, thread)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, ready = item
                if ready is not None:
                    torch.cuda.current_stream(self.device).wait_event(ready)
                yield batch
        finally:
            stop.set()
            thread.join(timeout=120)  # it finishes the batch it is reading, then sees `stop`
            self._running.remove((stop, thread))

    def _produce(self, first, source, items: queue.Queue, stop: threading.Event) -> None:
        """Batches, then None (the end) or the exception, each handed over unless the consumer
        has stopped: a put never blocks a thread nobody will read from."""
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            if self._stream is not None:
                torch.cuda.set_device(self.device)
            for batch in itertools.chain([first], source):
                if not put(self._enqueue(batch)):
                    return
            put(None)
        except BaseException as e:  # noqa: BLE001 - raised again in the consuming thread
            put(e)

    def _enqueue(self, batch):
        if self._stream is None:
            return self._to_device(batch), None
        with torch.cuda.stream(self._stream):
            out = self._to_device(batch)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        main = torch.cuda.default_stream(self.device)  # where the training step runs
        for t in [*out["inputs"], out["boxes"], out["labels"]]:
            t.record_stream(main)  # made on the side stream, freed after use on the main one
        return out, ready

    def _to_device(self, batch: dict) -> dict:
        nb = self.device.type == "cuda"
        out = dict(batch)
        if "jpegs" in batch:  # DATA.DECODER nvjpeg or dali: whole frames decoded here, batched
            clips = self._decode(batch["jpegs"], batch["jpeg_sizes"], batch["keyframes"])
            out["inputs"] = self.transform(clips, batch["geometry"])
            del out["jpegs"], out["jpeg_sizes"], out["keyframes"]
        elif "clips" in batch or "luma" in batch:  # RGB windows and/or yuv420 planes
            out["inputs"] = self.transform.from_batch(
                batch, lambda t: t.to(self.device, non_blocking=nb))
            for key in ("clips", "luma", "chroma"):
                out.pop(key, None)
        else:  # float batches (the reference path)
            out["inputs"] = [x.to(self.device, non_blocking=nb) for x in batch["inputs"]]
        out["boxes"] = batch["boxes"].to(self.device, non_blocking=nb)
        out["labels"] = batch["labels"].to(self.device, non_blocking=nb)
        return out

    def _decode(self, data, sizes, keyframes):
        """[B, T, H, W, 3] uint8 on the device from the batch's JPEG bytes (`sizes` [B, T])."""
        b, t = sizes.shape
        chunks = list(torch.split(data, sizes.flatten().tolist()))
        try:
            frames = self.decode_jpegs(chunks, self.device)
        except RuntimeError:
            frames = self._decode_one_by_one(chunks, t, keyframes)
        h = max(f.shape[1] for f in frames)
        w = max(f.shape[2] for f in frames)
        if all(f.shape[1:] == (h, w) for f in frames):
            # the usual case, one video's frames: one copy, not one small kernel per frame
            # launched from this thread (which holds the GIL the training thread needs)
            return torch.stack(frames).view(b, t, 3, h, w).permute(0, 1, 3, 4, 2)
        clips = torch.zeros((b, t, h, w, 3), dtype=torch.uint8, device=self.device)
        for k, f in enumerate(frames):
            clips[k // t, k % t, :f.shape[1], :f.shape[2]] = f.permute(1, 2, 0)
        return clips

    def _decode_one_by_one(self, chunks, t, keyframes):
        """A frame the worker's checks passed but the decoder refused: each frame alone; a bad
        one is replaced by the nearest good frame of its clip, with one warning naming it."""
        
        frames = []
        for k, chunk in enumerate(chunks):
            try:
                frames.append(self.decode_jpegs([chunk], self.device)[0])
            except RuntimeError as e:
                vidx, sec = (int(v) for v in keyframes[k // t])
                where = (self.dataset.frame_path(vidx, sec, k % t)
                         if hasattr(self.dataset, "frame_path") else
                         f"video index {vidx} second {sec}: frame {k % t} of the clip")
                logs.get("data").warning(
                    f"warning: {where} does not decode ({' '.join(str(e).split())[:160]}); "
                    "the nearest good frame of the clip stands in")
                frames.append(None)
        for k, f in enumerate(frames):
            if f is None:
                clip = range(k - k % t, k - k % t + t)
                good = [j for j in clip if frames[j] is not None]
                if not good:
                    raise RuntimeError(f"no frame of video index {int(keyframes[k // t][0])} "
                                       f"second {int(keyframes[k // t][1])} decodes")
                frames[k] = frames[min(good, key=lambda j: abs(j - k))]
        return frames


def _get_while_alive(items: queue.Queue, thread: threading.Thread):
    """The next item; a producer that died without handing over a batch, the end or its error
    (a bug) is raised here rather than waited for."""
    while True:
        try:
            return items.get(timeout=1.0)
        except queue.Empty:
            if not thread.is_alive() and items.empty():
                raise RuntimeError(f"the device prefetch thread ({thread.name}) ended without "
                                   "handing over a batch, the end of the epoch or an error")


def build_device_transform(cfg) -> ClipBatchTransform:
    """From a PySlowFast-keyed CfgNode (DATA.MEAN/STD, SLOWFAST.ALPHA, MODEL.ARCH)."""
    return ClipBatchTransform(cfg.DATA.MEAN, cfg.DATA.STD, cfg.SLOWFAST.ALPHA,
                              cfg.MODEL.ARCH == "slowfast", bool(cfg.MODEL.CHANNELS_LAST))
