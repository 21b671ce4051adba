"""data/jpeg.py: every CPU decoder agrees with PIL (yuv420's planes, once converted, within
ffmpeg's IDCT difference), reduced-size decoding keeps the scale the sample needs, headers read
without decoding, bad files and decoders named in one line."""
import io

import numpy as np
import pytest
from PIL import Image

from slowfast_dist.data import jpeg
from slowfast_dist.errors import UserError
from support import needs_libjpeg


@pytest.fixture(scope="module")
def photo():
    """A photo-like 320x180 JPEG (smooth noise and edges): flat frames hide decoder errors."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((320, 180), Image.BICUBIC)).astype(np.int16)
    img[40:90, 100:160] = (230, 40, 30)  # a hard colour edge
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def needs(decoder):
    if decoder == "opencv":  # optional: not a dependency of the package
        pytest.importorskip("cv2")
    needs_libjpeg(decoder)


def pil_decode(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("decoder", ["libjpeg", "simplejpeg", "opencv", "pil"])
def test_each_cpu_decoder_agrees_with_pil(photo, decoder):
    needs(decoder)
    img, size = jpeg.decode(photo, "x.jpg", decoder)
    ref = pil_decode(photo)
    assert size == (180, 320) and img.shape == ref.shape and img.dtype == np.uint8
    diff = np.abs(img.astype(np.int16) - ref)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())


@pytest.mark.parametrize("decoder", ["libjpeg", "simplejpeg", "opencv", "pil"])
def test_reduced_decode_only_at_twice_the_needed_scale_and_never_below_it(photo, decoder):
    needs(decoder)
    full, _ = jpeg.decode(photo, "x.jpg", decoder, need_short=100)  # 180 < 2 x 100: in full
    assert full.shape[:2] == (180, 320)
    small, size = jpeg.decode(photo, "x.jpg", decoder, need_short=80)  # 180 >= 160: reduced
    assert size == (180, 320) and 80 <= small.shape[0] < 180
    assert small.shape[1] * 180 == pytest.approx(small.shape[0] * 320, rel=0.02)
    # the same picture at another size: a downscaled PIL decode agrees closely
    ref = np.asarray(Image.fromarray(pil_decode(photo).astype(np.uint8)).resize(
        (small.shape[1], small.shape[0]), Image.BOX)).astype(np.int16)
    assert np.abs(small.astype(np.int16) - ref).mean() < 6


def test_dali_cpu_backend_agrees_with_pil_and_names_a_bad_frame(photo):
    """DATA.DECODER dali on a machine without a GPU: DALI's CPU backend decodes the batch; a
    frame it cannot decode raises, and the decoder works again on the next batch."""
    pytest.importorskip("nvidia.dali.fn", reason="NVIDIA DALI not installed (make test installs "
                        "it where pip can; pip install 'slowfast-dist[dali]')")
    import torch

    assert jpeg.resolve_decoder("dali") == "dali"
    decode = jpeg.batch_decoder("dali")
    chunk = torch.frombuffer(bytearray(photo), dtype=torch.uint8)
    frames = decode([chunk, chunk.clone()], "cpu")
    ref = pil_decode(photo)
    assert len(frames) == 2
    for f in frames:
        assert f.shape == (3, 180, 320) and f.dtype == torch.uint8 and f.device.type == "cpu"
        diff = np.abs(f.permute(1, 2, 0).numpy().astype(np.int16) - ref)
        assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    cut = torch.frombuffer(bytearray(photo[: len(photo) // 3]), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="decode"):
        decode([chunk, cut], "cpu")
    big = decode([chunk] * 3, "cpu")  # a larger batch than the pipeline was built for
    assert len(big) == 3 and torch.equal(big[2], frames[0])


def test_header_size_without_decoding(photo):
    assert jpeg.header_size(photo, "x.jpg") == (180, 320)
    assert jpeg.check_complete(photo, "x.jpg") == (180, 320)
    sof = photo.index(b"\xff\xc0")  # fill bytes before a marker are allowed
    assert jpeg.header_size(photo[:sof] + b"\xff\xff" + photo[sof:], "x.jpg") == (180, 320)


@pytest.mark.parametrize("decoder", ["libjpeg", "simplejpeg", "opencv", "pil"])
def test_bad_files_are_decode_errors_naming_the_file(photo, decoder):
    needs(decoder)
    with pytest.raises(jpeg.DecodeError, match="^a.jpg: not a JPEG"):
        jpeg.decode(b"GIF89a" + photo, "a.jpg", decoder)
    with pytest.raises(jpeg.DecodeError, match="^b.jpg: "):
        jpeg.decode(photo[:200], "b.jpg", decoder)
    with pytest.raises(jpeg.DecodeError, match="^c.jpg: truncated JPEG"):
        jpeg.check_complete(photo[: len(photo) // 2], "c.jpg")
    with pytest.raises(jpeg.DecodeError, match="^c.jpg: truncated JPEG"):  # before its scan
        jpeg.check_complete(photo[:photo.index(b"\xff\xda")], "c.jpg")
    # bytes after the end marker (a padded copy) are no truncation; decoders ignore them
    assert jpeg.check_complete(photo + b"\0\0trailer", "t.jpg") == (180, 320)
    if decoder in ("libjpeg", "simplejpeg", "pil"):
        assert jpeg.decode(photo + b"\0\0trailer", "t.jpg", decoder)[0].shape == (180, 320, 3)
    with pytest.raises(jpeg.DecodeError, match="^z.jpg: the header gives a size of 320x0"):
        sof = photo.index(b"\xff\xc0")
        jpeg.header_size(photo[:sof + 5] + b"\0\0" + photo[sof + 7:], "z.jpg")
    with pytest.raises(jpeg.DecodeError, match="^d.jpg: "):
        jpeg.read_bytes("d.jpg")


def test_decoder_choice_errors_name_the_key(monkeypatch):
    assert jpeg.resolve_decoder("auto") == ("libjpeg" if jpeg.installed("libjpeg")
                                            else "simplejpeg")
    # where the C module was not built: auto falls back, naming it asks for what builds it
    real = jpeg.installed
    monkeypatch.setattr(jpeg, "installed", lambda d: d != "libjpeg" and real(d))
    assert jpeg.resolve_decoder("auto") == "simplejpeg"
    with pytest.raises(UserError, match="DATA.DECODER libjpeg: slowfast_dist.data._libjpeg does "
                                        "not import; install a C compiler and libjpeg-turbo's "
                                        "headers .* pip install -e . again"):
        jpeg.resolve_decoder("libjpeg")
    monkeypatch.undo()
    assert jpeg.resolve_decoder("yuv420") == "yuv420"
    with pytest.raises(UserError, match="DATA.DECODER: 'turbo' is not one of auto, .*yuv420"):
        jpeg.resolve_decoder("turbo")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="DATA.DECODER nvjpeg"):
            jpeg.resolve_decoder("nvjpeg")
    if not jpeg.installed("dali"):
        with pytest.raises(UserError, match="DATA.DECODER dali: .* install NVIDIA DALI"):
            jpeg.resolve_decoder("dali")


def _photo(rng, h, w, **save):
    small = rng.integers(0, 255, (h // 15 + 1, w // 15 + 1, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img if save.pop("colour", True) else img[:, :, 0]).save(
        buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


@pytest.mark.parametrize("save", [{}, {"subsampling": 0}, {"subsampling": 1},
                                  {"progressive": True}, {"colour": False}],
                         ids=["4:2:0", "4:4:4", "4:2:2", "progressive", "grey"])
def test_libjpeg_window_decode_is_bit_identical_to_the_whole_frame(save):
    """DATA.DECODER libjpeg decodes only a window (libjpeg-turbo's column crop and row skip):
    every window, at full and reduced scales, is exactly that part of the whole decode, which
    is PIL's and simplejpeg's pixels (same library; reduced: simplejpeg's scale). Without the
    C module's margin around the window, the chroma upsampling at its edges differs: 4:2:0
    windows mismatched in about half of the cases below."""
    needs("libjpeg")
    import simplejpeg

    rng = np.random.default_rng(len(save))
    data = _photo(rng, 183, 331, **save)  # sizes that are not whole MCUs
    whole, size = jpeg.decode(data, "x.jpg", "libjpeg")
    assert size == (183, 331) and np.array_equal(whole, pil_decode(data))
    assert np.array_equal(whole, simplejpeg.decode_jpeg(data, colorspace="RGB"))
    for need in (None, 45, 30, 20):  # full, then 1/2, 3/8, 1/4 (simplejpeg's choices)
        target = jpeg.reduced_target(*size, need)
        scale = jpeg.libjpeg_scale(size, target)
        frame, _ = jpeg.decode(data, "x.jpg", "libjpeg", need_short=need)
        assert frame.shape[:2] == jpeg.scaled_size(size, scale)
        if need:
            assert scale < 8 and np.array_equal(frame, jpeg.decode(
                data, "x.jpg", "simplejpeg", need_short=need)[0])
        h, w = frame.shape[:2]
        for _ in range(40):
            top, left = int(rng.integers(0, h)), int(rng.integers(0, w))
            oh, ow = int(rng.integers(1, h - top + 1)), int(rng.integers(1, w - left + 1))
            out = np.empty((oh, ow, 3), np.uint8)
            jpeg.decode_window(data, "x.jpg", out, top, left, scale)
            assert np.array_equal(out, frame[top:top + oh, left:left + ow]), (top, left, oh, ow)


def test_libjpeg_window_of_a_progressive_file_without_its_last_scans():
    """A progressive JPEG whose later scans are missing (the end marker kept) decodes at lower
    quality; libjpeg's block smoothing of such files differed at a column crop's edge (670
    pixels of this one, up to 13 grey levels) until it was turned off: the window is again
    exactly the whole decode's."""
    needs("libjpeg")
    data = _photo(np.random.default_rng(11), 120, 200, progressive=True)
    scans = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    data = data[:scans[3]] + b"\xff\xd9"  # the first 3 scans of 10
    whole, _ = jpeg.decode(data, "p.jpg", "libjpeg")
    for left in (8, 40, 77):
        out = np.empty((120, 200 - left, 3), np.uint8)
        jpeg.decode_window(data, "p.jpg", out, 0, left)
        assert np.array_equal(out, whole[:, left:]), left


def test_libjpeg_refuses_damaged_scans_and_windows_that_do_not_fit(photo):
    """libjpeg calls damaged entropy-coded data a warning and decodes grey blocks; DATA.DECODER
    libjpeg makes it an error naming the file, so the sample is skipped and counted."""
    needs("libjpeg")
    sos = photo.index(b"\xff\xda")
    damaged = bytearray(photo)
    damaged[sos + 400:sos + 402] = b"\xff\xd3"  # a stray restart marker inside the scan
    with pytest.raises(jpeg.DecodeError, match="^d.jpg: Corrupt JPEG data"):
        jpeg.decode(bytes(damaged), "d.jpg", "libjpeg")
    cut = photo[: len(photo) * 2 // 3]
    with pytest.raises(jpeg.DecodeError, match="^c.jpg: Premature end of JPEG file"):
        jpeg.decode(cut, "c.jpg", "libjpeg")
    # junk bytes inside the entropy-coded data: libjpeg skips to the next marker and decodes on
    # (a warning); refused, as simplejpeg refuses it, also when found at the end marker only
    good = _photo(np.random.default_rng(3), 64, 96)
    at = good.index(b"\xff\xda") + 700
    junk = good[:at] + b"DN\n\x13" + good[at:]
    with pytest.raises(jpeg.DecodeError, match="^j.jpg: Corrupt JPEG data: .* extraneous bytes"):
        jpeg.decode(junk, "j.jpg", "libjpeg")
    with pytest.raises(jpeg.DecodeError):
        jpeg.decode(junk, "j.jpg", "simplejpeg")
    out = np.empty((20, 30, 3), np.uint8)
    with pytest.raises(jpeg.DecodeError, match="^c.jpg: truncated JPEG"):
        jpeg.decode_window(cut, "c.jpg", out, 0, 0)  # cut below the rows it reads: all the same
    with pytest.raises(jpeg.DecodeError, match="^x.jpg: a 30x20 window at x=0, y=170 is "
                                               "outside the 320x180 frame$"):
        jpeg.decode_window(photo, "x.jpg", out, 170, 0)
    with pytest.raises(ValueError, match="bad window 70000x20"):
        from slowfast_dist.data import _libjpeg
        _libjpeg.decode(photo, out, 0, 0, 20, 70000, 8)  # sizes bounded before multiplying
    with pytest.raises(ValueError, match=r"out must be a writable contiguous buffer of 1800 "
                                         r"bytes \(got 1860\)"):
        from slowfast_dist.data import _libjpeg
        _libjpeg.decode(photo, np.empty((20, 31, 3), np.uint8), 0, 0, 20, 30, 8)


def _libjpeg_planes(data, window):
    """decode_yuv420_window: (luma, chroma) of `window` (top, bottom, left, right)."""
    from slowfast_dist.data.transforms import yuv420_bounds

    top, left, ctop, cleft, c_h, c_w = yuv420_bounds(window)
    luma = np.empty((window[1] - top, window[3] - left), np.uint8)
    chroma = np.empty((2, c_h, c_w), np.uint8)
    jpeg.decode_yuv420_window(data, "x.jpg", luma, chroma, top, left, ctop, cleft)
    return luma, chroma


def test_libjpeg_yuv420_windows_are_its_whole_planes_cut_and_one_grey_level_from_pil():
    """DATA.DECODER yuv420 where libjpeg was built: the planes come from libjpeg's raw data,
    windowed in C. Every window is exactly `yuv420_windows` of the whole planes (edge rows and
    columns repeated); converted on the device the frame is within one grey level of PIL's
    (libavcodec's planes: up to 3), and the planes within one level of libavcodec's (its
    IDCT)."""
    needs("libjpeg")
    import torch

    from slowfast_dist.data.device import yuv420_to_rgb
    from slowfast_dist.data.transforms import yuv420_windows

    rng = np.random.default_rng(5)
    data = _photo(rng, 183, 331)  # odd sizes: the chroma planes are ceil(size / 2)
    luma, chroma = _libjpeg_planes(data, (0, 183, 0, 331))
    y, cb, cr = luma, chroma[0, 1:-1, 1:-1], chroma[1, 1:-1, 1:-1]
    assert y.shape == (183, 331) and cb.shape == (92, 166)
    rgb = yuv420_to_rgb(torch.from_numpy(luma)[None, None], torch.from_numpy(chroma)[None, None])
    diff = np.abs(rgb[0, :, 0].permute(1, 2, 0).numpy().astype(np.int16) - pil_decode(data))
    assert diff.max() <= 1 and diff.mean() < 0.4, (diff.max(), diff.mean())
    for mine, theirs in zip((y, cb, cr), jpeg.decode_yuv420(data, "x.jpg")[:3]):
        step = np.abs(mine.astype(np.int16) - theirs)
        assert step.max() <= 1 and step.mean() < 0.05
    for _ in range(60):
        top, left = int(rng.integers(0, 183)), int(rng.integers(0, 331))
        bottom, right = int(rng.integers(top + 1, 184)), int(rng.integers(left + 1, 332))
        got = _libjpeg_planes(data, (top, bottom, left, right))
        want = yuv420_windows([y], [cb], [cr], (top, bottom, left, right))
        assert np.array_equal(got[0], want[0][0]) and np.array_equal(got[1], want[1][0])
    with pytest.raises(jpeg.DecodeError, match="^x.jpg: chroma subsampling 4:4:4; DATA.DECODER "
                                               "yuv420 needs 4:2:0"):
        _libjpeg_planes(_photo(rng, 64, 64, subsampling=0), (0, 8, 0, 8))


def _yuv420_rgb(data, need_short=None):
    """decode_yuv420, then the device's conversion of the whole frame: int16 [h, w, 3]."""
    import torch

    from slowfast_dist.data.device import yuv420_to_rgb
    from slowfast_dist.data.transforms import yuv420_windows

    y, cb, cr, size = jpeg.decode_yuv420(data, "x.jpg", need_short)
    luma, chroma, _, _ = yuv420_windows([y], [cb], [cr], (0, y.shape[0], 0, y.shape[1]))
    rgb = yuv420_to_rgb(torch.from_numpy(luma)[None], torch.from_numpy(chroma)[None])
    return rgb[0, :, 0].permute(1, 2, 0).numpy().astype(np.int16), size


def test_yuv420_planes_converted_are_pils_rgb_within_ffmpegs_idct_difference(photo):
    """DATA.DECODER yuv420: libavcodec's planes, upsampled and converted as the device does.
    Not bit-identical to libjpeg: ffmpeg's IDCT differs from libjpeg's by 1 on ~2 % of the
    samples, which the conversion turns into up to ~4 grey levels in B (1.772 x Cb). Measured
    here: mean 0.35, p99 1, max 3; on textured 360p/1080p frames mean 0.25/0.18, p99 1, max 4.
    Bounds with a margin; a wrong matrix, range or chroma offset is tens of grey levels."""
    rgb, size = _yuv420_rgb(photo)
    ref = pil_decode(photo)
    assert size == (180, 320) and rgb.shape == ref.shape
    diff = np.abs(rgb - ref)
    assert diff.mean() < 0.6 and np.percentile(diff, 99) <= 2 and diff.max() <= 5, (
        diff.mean(), np.percentile(diff, 99), diff.max())


def test_yuv420_reduced_decode_at_twice_the_needed_scale(photo):
    full, _ = _yuv420_rgb(photo, need_short=100)  # 180 < 2 x 100: in full
    assert full.shape[:2] == (180, 320)
    small, size = _yuv420_rgb(photo, need_short=80)  # libavcodec lowres 1: 90 x 160
    assert size == (180, 320) and small.shape[:2] == (90, 160)
    ref = np.asarray(Image.fromarray(pil_decode(photo).astype(np.uint8)).resize(
        (160, 90), Image.BOX)).astype(np.int16)
    assert np.abs(small - ref).mean() < 6


def test_yuv420_names_a_frame_that_is_not_4_2_0_and_bad_files(photo):
    img = pil_decode(photo).astype(np.uint8)
    for mode, sub, name in (("RGB", 0, "4:4:4"), ("RGB", 1, "4:2:2"), ("L", 0, "grey")):
        buf = io.BytesIO()
        Image.fromarray(img if mode == "RGB" else img[:, :, 0]).save(buf, format="JPEG",
                                                                     subsampling=sub)
        assert jpeg.subsampling(buf.getvalue(), "s.jpg") == name
        with pytest.raises(jpeg.DecodeError, match=f"^s.jpg: chroma subsampling {name}; "
                                                   "DATA.DECODER yuv420 needs 4:2:0 .*auto"):
            jpeg.decode_yuv420(buf.getvalue(), "s.jpg")
    assert jpeg.subsampling(photo, "x.jpg") == "4:2:0"
    # the same contract as the other decoders: one DecodeError naming the file
    with pytest.raises(jpeg.DecodeError, match="^a.jpg: not a JPEG"):
        jpeg.decode_yuv420(b"GIF89a" + photo, "a.jpg")
    with pytest.raises(jpeg.DecodeError, match="^b.jpg: "):
        jpeg.decode_yuv420(photo[:200], "b.jpg")
    # libavcodec would grey the missing rows without an error: the end marker is checked
    with pytest.raises(jpeg.DecodeError, match="^c.jpg: truncated JPEG"):
        jpeg.decode_yuv420(photo[: len(photo) // 2], "c.jpg")
    at = photo.index(b"\xff\xc4")
    with pytest.raises(jpeg.DecodeError, match="^d.jpg: libavcodec: Invalid data"):
        jpeg.decode_yuv420(photo[:at + 4] + b"\xff" * 16 + photo[at + 20:], "d.jpg")
    y, _, _, _ = jpeg.decode_yuv420(photo, "x.jpg")  # the decoder works again afterwards
    assert y.shape == (180, 320)
