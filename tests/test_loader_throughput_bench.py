"""benchmarks/loader_throughput.py: `main()` on a tiny textured set writes a complete JSON in
which every variant was timed on the same samples with the same draws."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    # benchmarks/ is not a package: load the script by path
    spec = importlib.util.spec_from_file_location("loader_throughput",
                                                  ROOT / "benchmarks/loader_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "loader_throughput.json"
    returned = bench.main(["--sizes", "128x96", "--samples", "2", "--videos", "1", "--seconds",
                           "2", "--loader-clips", "4", "--loader-epochs", "1", "--batch-size",
                           "2", "--data-cache", str(tmp / "data"), "--out", str(out)])
    return returned, json.loads(out.read_text()), out


def test_json_and_png_are_written(run):
    returned, result, out = run
    assert result == json.loads(json.dumps(returned))
    assert out.with_suffix(".png").stat().st_size > 0
    for key in ("environment", "settings", "method", "sizes", "targets", "table_markdown"):
        assert key in result
    assert result["environment"]["torch_threads"] == 1
    assert result["environment"]["cpu_model"]
    assert result["settings"]["num_frames"] == 32 and result["settings"]["crop_size"] == 224
    assert result["reference"] is None


def test_every_variant_timed_on_the_same_samples(run, bench):
    _, result, _ = run
    size = result["sizes"]["128x96"]
    assert set(size["variants"]) == set(bench.OURS)  # no --reference-dir: no PySlowFast row
    ids = size["variants"][bench.TODAY]["sample_ids"]
    assert len(ids) == 2 and ids == size["samples"]
    for name, v in size["variants"].items():
        assert v["error"] is None, name
        assert v["sample_ids"] == ids, name
        w = v["worker_ms"]
        assert 0 < w["min"] <= w["q1"] <= w["median"] <= w["q3"] <= w["max"], name
        assert v["clips_per_s_per_core"] == pytest.approx(1e3 / w["median"])
        assert len(v["per_sample_worker_ms"]) == 2


def test_stages_reproduce_the_sample_and_add_up(run, bench):
    _, result, _ = run
    variants = result["sizes"]["128x96"]["variants"]
    assert {"jpeg_decode", "float", "resize", "normalise_pack"} <= set(
        variants[bench.TODAY]["stages_ms"])
    assert {"file_read", "jpeg_decode", "window_copy", "collate", "boxes_labels"} <= set(
        variants["uint8_simplejpeg"]["stages_ms"])
    assert "video_decode" in variants["uint8_video_pyav"]["stages_ms"]
    if "uint8_libjpeg" in bench.OURS:  # decoded into the window: no copy out of a whole frame
        assert "jpeg_decode" in variants["uint8_libjpeg"]["stages_ms"]
        assert "window_copy" not in variants["uint8_libjpeg"]["stages_ms"]
    for name, v in variants.items():
        assert v["staged_equals_sample"], name  # the staged run made the same clip
        assert v["stages_over_whole"]["median"] > 0


def test_bytes_uint8_window_vs_float_pathways(run, bench):
    _, result, _ = run
    variants = result["sizes"]["128x96"]["variants"]
    # float: [3, 8, 224, 224] + [3, 32, 224, 224] float32
    assert variants[bench.TODAY]["bytes_per_clip"]["max"] == 3 * 40 * 224 * 224 * 4
    u8 = variants["uint8_pil"]["bytes_per_clip"]
    assert 0 < u8["median"] <= u8["max"] <= 32 * 96 * 128 * 3 + 11 * 8  # at most whole frames


def test_ratios_device_transform_loader_and_targets(run, bench):
    _, result, _ = run
    size = result["sizes"]["128x96"]
    best = size["best_uint8"]
    assert best in bench.OURS and best != bench.TODAY
    ratio = size["ratios"]["best_uint8_vs_today"]
    v = size["variants"]
    assert ratio["clips_per_s_ratio"] == pytest.approx(
        v[bench.TODAY]["worker_ms"]["median"] / v[best]["worker_ms"]["median"])
    assert size["ratios"]["best_uint8_vs_pyslowfast"] is None
    assert size["device_transform"]["ms_per_clip"]["median"] > 0
    assert size["device_transform"]["batch"] == 2
    loader = size["loader"]
    assert set(loader["variants"]) == {bench.TODAY, best,
                                       f"{best}+transform in workers (CPU training)"}
    for r in loader["variants"].values():
        assert r["clips_per_s"]["median"] > 0
    # 360p / 1080p targets are not measured at 128x96; the bytes target is, per size
    met = {t["target"]: t["met"] for t in result["targets"]}
    assert met["per_clip_vs_today_360p"] is None and met["per_clip_vs_pyslowfast_360p"] is None
    assert isinstance(met["bytes_per_clip_128x96"], bool)
    assert "| 128x96 |" in result["table_markdown"]


def test_reference_that_cannot_run_is_reported_not_fatal(run, bench, tmp_path):
    _, result, out = run
    data_cache = str(Path(result["sizes"]["128x96"]["data"]["path"]).parent)
    empty = tmp_path / "not_pyslowfast"
    empty.mkdir()
    got = bench.main(["--sizes", "128x96", "--samples", "1", "--videos", "1", "--seconds", "2",
                      "--loader-clips", "0", "--data-cache", data_cache, "--reference-dir",
                      str(empty), "--out", str(tmp_path / "r.json")])
    ref = got["sizes"]["128x96"]["variants"][bench.REFERENCE]
    assert "slowfast" in ref["error"] and not ref.get("worker_ms")
    assert got["sizes"]["128x96"]["variants"][bench.TODAY]["worker_ms"]["median"] > 0
    assert "loader" not in got["sizes"]["128x96"]
