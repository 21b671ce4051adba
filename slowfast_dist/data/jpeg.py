"""The one JPEG reader: frame files to uint8 RGB arrays, with the decoder chosen in the config
(`DATA.DECODER`), optionally decoded at a reduced size through the DCT.

Decoders: `libjpeg` (our own small C module over the system's libjpeg-turbo, `_libjpeg.c`, built
by `pip install` where a C compiler and libjpeg-turbo's headers are found: it decodes only the
window of the frame that the sample's crop needs, straight into the clip's buffer, with the same
pixels as a whole decode), `simplejpeg` (libjpeg-turbo, no extra copies), `pil`, `opencv`;
`auto` = libjpeg when it was built, else simplejpeg when it imports, else PIL (the fastest first:
benchmarks/loader_throughput.py).
Batch decoders run after collation, on the training device, on the whole frames of a batch:
`nvjpeg` (torchvision.io.decode_jpeg on the GPU) and `dali` (NVIDIA DALI's image decoder: its
"mixed" backend on a GPU, which uses the hardware JPEG engines of an A100/H100, and its CPU
backend, libjpeg-turbo, elsewhere). Workers then only read the bytes and draw the geometry.
Plane decoder: `yuv420` gives the frame's stored planes, full-range Y at full size and Cb, Cr at
half size (JPEG 4:2:0, what PIL, ffmpeg and cameras write by default), without upsampling or
colour conversion: a worker then ships 1.5 bytes per pixel instead of 3, and `data/device.py`
upsamples the chroma and converts to RGB batched on the training device. Where `libjpeg` was
built the planes are libjpeg's raw data, only the rows down to the window's and only the
window's columns kept (`decode_yuv420_window`); converted, within one grey level of PIL's RGB.
Elsewhere they come from libavcodec's mjpeg decoder through PyAV (`decode_yuv420`), whose IDCT
differs from libjpeg's by 1 on about 2 % of the samples: after the conversion the RGB is on
average 0.2-0.35 grey levels from PIL's, 99th percentile 1, at most 4, with 0.7 % of the
values more than 1 apart (textured 360p and 1080p frames; tests/test_jpeg.py). Frames that are
not 4:2:0 (4:4:4, 4:2:2, grey) are refused by name; use `auto` for them.

Reduced-size decode: when a frame's short side is at least twice the largest short side a
sample can be resized to, libjpeg scales each 8x8 DCT block while decoding (1/8 steps with
simplejpeg, 1/2, 1/4, 1/8 with PIL) to the smallest size whose short side is still at least that
large. That is several times cheaper at 1080p and changes the pixels only as a slightly different
anti-aliasing of the same downscale; below the 2x threshold every decoder decodes in full.
`yuv420` reduces by 1/2, 1/4, 1/8 through libavcodec's `lowres` (its scaled IDCT), under the same
rule.
"""

from __future__ import annotations

import numpy as np

CPU_DECODERS = ("libjpeg", "simplejpeg", "pil", "opencv")
BATCH_DECODERS = ("nvjpeg", "dali")
PLANE_DECODERS = ("yuv420",)
ALL_DECODERS = CPU_DECODERS + PLANE_DECODERS + BATCH_DECODERS
DALI_INSTALL = "pip install 'slowfast-dist[dali]'"  # from PyPI


class DecodeError(Exception):
    """A frame that cannot be read or decoded; the message names the file."""


def resolve_decoder(name: str) -> str:
    """The decoder for DATA.DECODER `name`; a UserError naming the key when it cannot run."""
    from slowfast_dist.errors import UserError

    if name == "auto":
        return next(d for d in ("libjpeg", "simplejpeg", "pil") if installed(d))
    if name not in ALL_DECODERS:
        raise UserError(f"DATA.DECODER: {name!r} is not one of auto, {', '.join(ALL_DECODERS)}")
    if not installed(name):
        pkg = {"libjpeg": "a C compiler and libjpeg-turbo's headers (Debian: apt install gcc "
                          "libjpeg62-turbo-dev), then pip install -e . again to build it",
               "simplejpeg": "simplejpeg", "pil": "pillow", "opencv": "opencv-python-headless",
               "yuv420": "av",
               "nvjpeg": "torchvision (pip install 'slowfast-dist[gpu]')",
               "dali": f"NVIDIA DALI ({DALI_INSTALL})"}[name]
        raise UserError(f"DATA.DECODER {name}: {_MODULES[name]} does not import; install {pkg}")
    if name == "nvjpeg":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"DATA.DECODER {name} decodes on a GPU and this process has none; "
                            "use DATA.DECODER auto")
    return name


_MODULES = {"libjpeg": "slowfast_dist.data._libjpeg", "simplejpeg": "simplejpeg", "pil": "PIL",
            "opencv": "cv2", "yuv420": "av",
            "nvjpeg": "torchvision.io", "dali": "nvidia.dali.fn"}


def installed(decoder: str) -> bool:
    """Whether the decoder's package imports here."""
    import importlib

    try:
        importlib.import_module(_MODULES[decoder])
        return True
    except Exception:  # a broken install (torchvision with a CPU torch) counts as missing
        return False


def libjpeg_version() -> str | None:
    """The libjpeg-turbo DATA.DECODER libjpeg was built against ("2.1.5"), None if not built."""
    if not installed("libjpeg"):
        return None
    from slowfast_dist.data import _libjpeg

    v = _libjpeg.LIBJPEG_TURBO_VERSION
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DecodeError(f"{path}: {e.strerror or e}") from None


def header_size(data: bytes, path: str) -> tuple[int, int]:
    """(height, width) from the JPEG header, without decoding."""
    i = _frame_header(data, path)
    h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
    if not (h and w):  # (a height of 0 defers it to a DNL marker: no frame extraction does that)
        raise DecodeError(f"{path}: the header gives a size of {w}x{h}")
    return h, w


_SUBSAMPLING = {(2, 2): "4:2:0", (2, 1): "4:2:2", (1, 1): "4:4:4", (1, 2): "4:4:0",
                (4, 1): "4:1:1"}


def subsampling(data: bytes, path: str) -> str:
    """The chroma subsampling the header declares: '4:2:0', '4:2:2', '4:4:4', ..., 'grey'."""
    i = _frame_header(data, path)
    count = data[i + 9] if i + 9 < len(data) else 0
    factors = [(data[i + 11 + 3 * k] >> 4, data[i + 11 + 3 * k] & 15) for k in range(count)
               if i + 11 + 3 * k < len(data)]
    if count == 1:
        return "grey"
    if count == 3 and len(factors) == 3 and factors[1] == factors[2] == (1, 1):
        return _SUBSAMPLING.get(factors[0], "{}x{}".format(*factors[0]))
    return f"{count} components, sampling factors {factors}"


def _frame_header(data: bytes, path: str) -> int:
    """Offset of the start-of-frame marker, which carries the size and the components."""
    # scan the segments (a few dozen bytes usually)
    i, n = 2, len(data)
    if data[:2] != b"\xff\xd8":
        raise DecodeError(f"{path}: not a JPEG file")
    while i + 9 < n:
        if data[i] != 0xFF:
            raise DecodeError(f"{path}: corrupt JPEG header")
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before a marker (the standard allows any number)
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return i
        i += 2 + length
    raise DecodeError(f"{path}: no frame header in the JPEG")


def check_complete(data: bytes, path: str) -> tuple[int, int]:
    """(height, width) of a JPEG that is not decoded here (GPU decoders): its header must parse
    and its data must end with the end-of-image marker, which catches truncated and garbage
    files in the worker, where the sample can still be skipped and counted."""
    size = header_size(data, path)
    check_end(data, path)
    return size


def check_420(data: bytes, path: str) -> None:
    found = subsampling(data, path)
    if found != "4:2:0":
        raise DecodeError(f"{path}: chroma subsampling {found}; DATA.DECODER yuv420 needs 4:2:0 "
                          "JPEGs (use DATA.DECODER auto)")


def check_end(data: bytes, path: str) -> None:
    """A JPEG cut short (a copy that did not finish) has no end-of-image marker after its last
    scan (entropy-coded data holds neither marker; bytes after the end marker are allowed, as
    decoders allow them, and an embedded thumbnail's end marker comes before the scans)."""
    if data.endswith(b"\xff\xd9"):  # the usual case, without scanning the file
        return
    sos = data.rfind(b"\xff\xda")
    if sos < 0 or data.rfind(b"\xff\xd9") < sos:
        raise DecodeError(f"{path}: truncated JPEG (no end-of-image marker)")


def batch_decoder(name: str):
    """For a batch decoder: a callable (list of 1-D uint8 CPU tensors of JPEG bytes, torch
    device) -> list of uint8 [3, H, W] tensors on that device. It raises RuntimeError when a
    frame does not decode (the caller then decodes frame by frame to find it)."""
    if name == "nvjpeg":
        return decode_on_gpu
    if name == "dali":
        return DaliDecoder()
    raise ValueError(f"{name} is not a batch decoder ({', '.join(BATCH_DECODERS)})")


def decode_on_gpu(datas, device):
    """nvJPEG through torchvision, the batch as one call; it uses the GPU's JPEG engines where
    it has them."""
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


class DaliDecoder:
    """DALI's image decoder fed the batch's bytes through an external source. The pipeline is
    built on first use for the device it is called with, for the largest batch seen so far, and
    built again after a failed decode (DALI leaves a pipeline unusable after an error)."""

    def __init__(self, num_threads: int = 2):
        self.num_threads = num_threads
        self._pipe, self._key = None, None

    def __call__(self, datas, device):
        import torch

        device = torch.device(device)
        pipe = self._pipeline(device, len(datas))
        try:
            pipe.feed_input("jpegs", [d.numpy() for d in datas])
            (out,) = pipe.run()
        except RuntimeError as e:
            self._pipe = None
            text = " ".join(str(e).split())
            start = text.find("Failed to decode")  # DALI's own line, after its traceback
            raise RuntimeError(f"DALI: {text[start if start >= 0 else 0:][:200]}") from None
        if device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            frames = []
            stream = torch.cuda.current_stream(device)
            for k in range(len(out)):
                t = torch.empty(tuple(out[k].shape()), dtype=torch.uint8, device=device)
                frames.append(feed_ndarray(out[k], t, cuda_stream=stream))
        else:  # a copy: the pipeline's output buffers are reused by its next run
            frames = [torch.from_numpy(np.array(out.at(k))) for k in range(len(out))]
        return [f.permute(2, 0, 1) for f in frames]

    def _pipeline(self, device, batch):
        key = (str(device), batch)
        if self._pipe is not None and self._key[0] == key[0] and self._key[1] >= batch:
            return self._pipe
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import Pipeline

        cuda = device.type == "cuda"
        if cuda and device.index is None:
            import torch

            device = torch.device("cuda", torch.cuda.current_device())
        pipe = Pipeline(batch_size=batch, num_threads=self.num_threads,
                        device_id=device.index if cuda else None,
                        prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        with pipe:
            data = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            pipe.set_outputs(fn.decoders.image(data, device="mixed" if cuda else "cpu",
                                               output_type=types.RGB))
        pipe.build()
        self._pipe, self._key = pipe, key
        return pipe


def reduced_target(height: int, width: int, need_short: int | None) -> tuple[int, int] | None:
    """(min height, min width) for a reduced decode, or None for a full one: only when the short
    side is at least twice `need_short`."""
    if not need_short or min(height, width) < 2 * need_short:
        return None
    if height <= width:
        return need_short, 0
    return 0, need_short


def decode(data: bytes, path: str, decoder: str, need_short: int | None = None):
    """uint8 [h, w, 3] RGB and the frame's full (height, width) from its header."""
    size = header_size(data, path)
    target = reduced_target(*size, need_short)
    try:
        if decoder == "libjpeg":
            img = _decode_libjpeg(data, size, target)
        elif decoder == "simplejpeg":
            import simplejpeg

            mh, mw = target or (0, 0)
            img = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=mh, min_width=mw,
                                         min_factor=2.0 if target else 1.0)
        elif decoder == "pil":
            img = _decode_pil(data, size, target)
        elif decoder == "opencv":
            img = _decode_opencv(data, size, target)
        else:
            raise ValueError(f"{decoder} is not a CPU JPEG decoder")
    except (OSError, ValueError, RuntimeError) as e:
        raise DecodeError(f"{path}: {e}") from None
    if img is None:  # OpenCV's way of saying the bytes did not decode
        raise DecodeError(f"{path}: {decoder} could not decode it (not a JPEG, or damaged)")
    if img.ndim != 3 or img.shape[2] != 3:
        raise DecodeError(f"{path}: decoded to an unexpected shape {img.shape}")
    return img, size


def libjpeg_scale(size, target) -> int:
    """DATA.DECODER libjpeg decodes at scale/8 of the frame: 8 in full; for a reduced decode the
    smallest of 1/8, 1/4, 3/8, 1/2 whose size reaches `target`, as simplejpeg picks with
    `min_factor=2`."""
    if not target:
        return 8
    return next(m for m in (1, 2, 3, 4) if scaled_size(size, m)[0] >= target[0]
                and scaled_size(size, m)[1] >= target[1])


def scaled_size(size, scale: int) -> tuple[int, int]:
    """libjpeg's output size at scale/8 (it rounds up)."""
    return -(-size[0] * scale // 8), -(-size[1] * scale // 8)


def _decode_libjpeg(data, size, target):
    from slowfast_dist.data import _libjpeg

    scale = libjpeg_scale(size, target)
    h, w = scaled_size(size, scale)
    img = np.empty((h, w, 3), np.uint8)
    _libjpeg.decode(data, img, 0, 0, h, w, scale)  # a ValueError: named by decode()
    return img


def decode_window(data: bytes, path: str, out: np.ndarray, top: int, left: int,
                  scale: int = 8) -> None:
    """DATA.DECODER libjpeg: rows `top`.. and columns `left`.. of the frame decoded at scale/8,
    as many as `out` (uint8 [h, w, 3], C-contiguous) holds, written into `out`. A file cut
    short is an error even when the rows below the window, which are not read, are the ones
    missing: as under the other decoders. (Damaged data below the window is not seen.)"""
    from slowfast_dist.data import _libjpeg

    check_end(data, path)
    _named(path, _libjpeg.decode, data, out, top, left, out.shape[0], out.shape[1], scale)


def _named(path, fn, *args):
    """`fn(*args)`, its ValueError (libjpeg's message) a DecodeError naming the file."""
    try:
        return fn(*args)
    except ValueError as e:
        raise DecodeError(f"{path}: {e}") from None


def decode_yuv420_window(data: bytes, path: str, luma: np.ndarray, chroma: np.ndarray,
                         top: int, left: int, ctop: int, cleft: int) -> None:
    """DATA.DECODER yuv420 where libjpeg was built: the stored planes of a 4:2:0 frame (libjpeg's
    own IDCT, no upsampling or colour conversion), the luma window from (top, left) into `luma`
    (uint8 [h, w]) and the Cb, Cr windows from (ctop, cleft), the plane's edge repeated
    outside it, into `chroma` (uint8 [2, hc, wc]): what `transforms.yuv420_windows` cuts from
    whole planes."""
    from slowfast_dist.data import _libjpeg

    check_420(data, path)
    check_end(data, path)
    _named(path, _libjpeg.decode_yuv420, data, luma, chroma, top, left, *luma.shape, ctop,
           cleft, *chroma.shape[1:])


def _decode_pil(data, size, target):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if target:
            mh, mw = target
            # draft picks the largest 1/2^k reduction that keeps the size at least this
            scale = (mh / size[0]) if mh else (mw / size[1])
            im.draft("RGB", (max(1, int(np.ceil(size[1] * scale))),
                             max(1, int(np.ceil(size[0] * scale)))))
        return np.asarray(im.convert("RGB"))


def _decode_opencv(data, size, target):
    import cv2

    flag = cv2.IMREAD_COLOR
    if target:
        mh, mw = target
        factor = (size[0] / mh) if mh else (size[1] / mw)
        flag = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4,
                2: cv2.IMREAD_REDUCED_COLOR_2}.get(max(k for k in (1, 2, 4, 8) if k <= factor),
                                                   cv2.IMREAD_COLOR)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_yuv420(data: bytes, path: str, need_short: int | None = None):
    """(Y uint8 [h, w], Cb, Cr uint8 [ceil(h/2), ceil(w/2)], the frame's full (height, width)):
    the stored planes of a 4:2:0 JPEG, as read-only views into the decoded frame."""
    size = header_size(data, path)
    check_420(data, path)
    # libavcodec decodes a truncated file without an error (grey rows): catch it as the batch
    # decoders' workers do
    check_complete(data, path)
    target = reduced_target(*size, need_short)
    lowres = 0
    if target:  # the largest 1/2^k whose size still reaches the target
        mh, mw = target

        def reaches(k):  # libavcodec's size at lowres k: ceil(size / 2^k)
            return -(-size[0] >> k) >= mh and -(-size[1] >> k) >= mw

        while lowres < 3 and reaches(lowres + 1):
            lowres += 1
    import av

    try:
        frames = _mjpeg_context(lowres).decode(av.Packet(data))
    except (av.error.FFmpegError, ValueError) as e:
        why = getattr(e, "strerror", None) or " ".join(str(e).split())[:160]
        raise DecodeError(f"{path}: libavcodec: {why}") from None
    if not frames:
        raise DecodeError(f"{path}: the JPEG decoded to no picture")
    frame = frames[0]
    # full range (JPEG) is colour_range 2; a limited-range frame would need another conversion.
    # ffmpeg is deprecating the yuvj* names for yuv* with the range set, so accept both.
    if frame.format.name not in ("yuvj420p", "yuv420p") or frame.color_range != 2:
        raise DecodeError(f"{path}: decoded as {frame.format.name} (colour range "
                          f"{frame.color_range}), not full-range 4:2:0")
    y, cb, cr = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                 for p in frame.planes)
    if cb.shape != ((y.shape[0] + 1) // 2, (y.shape[1] + 1) // 2) or cr.shape != cb.shape:
        raise DecodeError(f"{path}: chroma planes {cb.shape} do not halve the luma {y.shape}")
    return y, cb, cr, size


_CONTEXTS: dict = {}


def _mjpeg_context(lowres: int):
    """One libavcodec mjpeg decoder per process and reduction, made on first use: a context is
    neither picklable nor to be shared across a fork, and reusing one gives the same pixels as
    a fresh one at 15 % less CPU per frame."""
    import os

    key = (os.getpid(), lowres)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        import av

        ctx = av.CodecContext.create("mjpeg", "r")
        ctx.thread_count, ctx.thread_type = 1, "NONE"  # one loader worker = one core
        if lowres:
            ctx.options = {"lowres": str(lowres)}
        for stale in [k for k in _CONTEXTS if k[0] != key[0]]:  # the parent's, after a fork
            del _CONTEXTS[stale]
        _CONTEXTS[key] = ctx
    return ctx
