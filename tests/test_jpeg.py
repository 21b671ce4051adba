"""data/jpeg.py: every CPU decoder agrees with PIL, reduced-size decoding keeps the scale the
sample needs, headers read without decoding, bad files and decoders named in one line."""
import io

import numpy as np
import pytest
from PIL import Image

from slowfast_dist.data import jpeg
from slowfast_dist.errors import UserError


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


def pil_decode(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv", "pil"])
def test_each_cpu_decoder_agrees_with_pil(photo, decoder):
    needs(decoder)
    img, size = jpeg.decode(photo, "x.jpg", decoder)
    ref = pil_decode(photo)
    assert size == (180, 320) and img.shape == ref.shape and img.dtype == np.uint8
    diff = np.abs(img.astype(np.int16) - ref)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())


@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv", "pil"])
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


@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv", "pil"])
def test_bad_files_are_decode_errors_naming_the_file(photo, decoder):
    needs(decoder)
    with pytest.raises(jpeg.DecodeError, match="^a.jpg: not a JPEG"):
        jpeg.decode(b"GIF89a" + photo, "a.jpg", decoder)
    with pytest.raises(jpeg.DecodeError, match="^b.jpg: "):
        jpeg.decode(photo[:200], "b.jpg", decoder)
    with pytest.raises(jpeg.DecodeError, match="^c.jpg: truncated JPEG"):
        jpeg.check_complete(photo[: len(photo) // 2], "c.jpg")
    with pytest.raises(jpeg.DecodeError, match="^d.jpg: "):
        jpeg.read_bytes("d.jpg")


def test_decoder_choice_errors_name_the_key():
    assert jpeg.resolve_decoder("auto") == "simplejpeg"
    with pytest.raises(UserError, match="DATA.DECODER: 'turbo' is not one of auto"):
        jpeg.resolve_decoder("turbo")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="DATA.DECODER nvjpeg"):
            jpeg.resolve_decoder("nvjpeg")
    if not jpeg.installed("dali"):
        with pytest.raises(UserError, match="DATA.DECODER dali: .* install NVIDIA DALI"):
            jpeg.resolve_decoder("dali")
