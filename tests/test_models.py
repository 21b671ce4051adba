import importlib.util
import json
from pathlib import Path

import pytest
import torch

from slowfast_dist.config import load_config
from slowfast_dist.errors import UserError
from slowfast_dist.models import VideoResNet, build_model

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# Shrinks any shipped config to a model that runs in well under a second on one core.
TINY = ["RESNET.DEPTH", "18", "RESNET.TRANS_FUNC", "basic_transform", "RESNET.WIDTH_PER_GROUP", "8",
        "DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "64"]


def tiny(**kw):
    args = dict(depth=18, trans_func="basic_transform", width_per_group=8, num_classes=5,
                dropout=0.0)
    args.update(kw)
    return VideoResNet(**args)


@pytest.mark.parametrize("frames,alpha", [(8, 8), (4, 16), (32, 2)])
def test_stage_shapes(frames, alpha):
    # Slow sees T frames, Fast alpha*T; spatial /4 after stem, /32 after s5.
    m = tiny(alpha=alpha).eval()
    xs = [torch.randn(1, 3, frames, 64, 64), torch.randn(1, 3, frames * alpha, 64, 64)]
    trace = []
    m.forward_features(xs, trace)
    shapes = dict(trace)
    assert shapes["s1"] == [(1, 8, frames, 16, 16), (1, 1, frames * alpha, 16, 16)]
    assert shapes["s1_fuse"][0] == (1, 8 + 2, frames, 16, 16)
    assert shapes["s2"] == [(1, 32, frames, 16, 16), (1, 4, frames * alpha, 16, 16)]
    assert shapes["s5"] == [(1, 256, frames, 2, 2), (1, 32, frames * alpha, 2, 2)]
    out = m(xs)
    assert out.shape == (1, 5)
    assert torch.allclose(out.sum(1), torch.ones(1))  # softmax at eval


def test_tiny_detection_trains_one_step():
    torch.manual_seed(0)  # an unlucky init with a large step saturates sigmoid to exactly 1.0
    m = tiny(detection=True, head_act="sigmoid", spatial_scale=32, roi_resolution=2)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    xs = [torch.randn(2, 3, 4, 64, 64), torch.randn(2, 3, 32, 64, 64)]
    boxes = torch.tensor([[0, 4.0, 4, 40, 50], [1, 10, 0, 63, 63], [1, 0, 0, 20, 20]])
    logits = m(xs, boxes)
    assert logits.shape == (3, 5)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(3, 5))
    before = m.head.projection.weight.clone()
    loss.backward()
    opt.step()
    assert not torch.equal(before, m.head.projection.weight)
    m.eval()
    p = m(xs, boxes)
    assert ((p > 0) & (p < 1)).all()  # sigmoid at eval


def test_slowfast_r50_kinetics_state_dict_layout():
    # SLOWFAST_8x8_R50 (FUSION_KERNEL_SZ 7): PySlowFast reports 34.57 M parameters.
    with torch.device("meta"):
        m = VideoResNet(fusion_kernel=7)
    n = sum(p.numel() for p in m.parameters())
    assert 34.5e6 <= n <= 34.6e6
    sd = m.state_dict()
    expect = {
        "s1.pathway0_stem.conv.weight": (64, 3, 1, 7, 7),
        "s1.pathway1_stem.conv.weight": (8, 3, 5, 7, 7),
        "s1_fuse.conv_f2s.weight": (16, 8, 7, 1, 1),
        "s2.pathway0_res0.branch1.weight": (256, 80, 1, 1, 1),
        "s2.pathway0_res0.branch2.a_bn.running_mean": (64,),
        "s2.pathway0_res0.branch2.a.weight": (64, 80, 1, 1, 1),
        "s2.pathway1_res0.branch2.a.weight": (8, 8, 3, 1, 1),
        "s4.pathway0_res0.branch2.a.weight": (256, 640, 3, 1, 1),
        "s5.pathway0_res0.branch1.weight": (2048, 1280, 1, 1, 1),
        "head.projection.weight": (400, 2304),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert "s5.pathway1_res2.branch2.c_bn.num_batches_tracked" in sd
    assert not any("pool" in k for k in sd)


def test_checkpoint_load_strict_head_skip_and_errors(tmp_path):
    from slowfast_dist.errors import UserError
    from slowfast_dist.models import load_pyslowfast_checkpoint

    src = tiny(num_classes=400)
    path = tmp_path / "k400.pyth"
    torch.save({"model_state": src.state_dict(), "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)
    same = tiny(num_classes=400)
    assert load_pyslowfast_checkpoint(same, str(path)) == "MODEL:\n  ARCH: slowfast\n"
    assert torch.equal(same.s1.pathway0_stem.conv.weight, src.s1.pathway0_stem.conv.weight)
    told = []
    det = tiny(num_classes=80, detection=True)
    load_pyslowfast_checkpoint(det, str(path), log=told.append)
    assert torch.equal(det.s5.pathway1_res1.branch2.b.weight, src.s5.pathway1_res1.branch2.b.weight)
    assert len(told) == 1 and "head" in told[0]
    (tmp_path / "bad.pyth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_pyslowfast_checkpoint(det, str(tmp_path / "bad.pyth"))
    with pytest.raises(UserError):
        load_pyslowfast_checkpoint(det, str(tmp_path / "missing.pyth"))


def _read_key_list(name):
    rows = []
    for line in (DATA / f"pyslowfast_keys_{name}.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        rows.append((key, json.loads(shape)))
    return rows


@pytest.mark.parametrize("cfg_path,name", [
    ("configs/Kinetics/SLOWFAST_8x8_R50.yaml", "slowfast_r50_8x8_kinetics"),
    ("configs/AVA/SLOWFAST_32x2_R50.yaml", "slowfast_r50_32x2_ava"),
    ("configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml", "slowfast_r50_32x2_ava"),
    ("configs/AVA/SLOWFAST_32x2_R101.yaml", "slowfast_r101_32x2_ava_50_50"),
])
def test_state_dict_equals_list_derived_from_pyslowfast(cfg_path, name):
    # The lists come from tests/data/make_pyslowfast_keys.py, which follows PySlowFast's
    # constructors without importing this package: same keys (no `module.` prefix, BN buffers
    # included), same shapes, same order, nothing missing and nothing extra.
    cfg = load_config(str(ROOT / cfg_path), [])
    with torch.device("meta"):
        model = build_model(cfg)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    ref = _read_key_list(name)
    ours_d, ref_d = dict(ours), dict(ref)
    assert [k for k in ref_d if k not in ours_d] == [], "missing"
    assert [k for k in ours_d if k not in ref_d] == [], "extra"
    assert [(k, ours_d[k], ref_d[k]) for k in ref_d if ours_d[k] != ref_d[k]] == [], "shapes"
    assert [k for k, _ in ours] == [k for k, _ in ref], "order"


def test_key_lists_are_the_generator_output():
    # The committed lists must be what the generator writes now (no hand edits).
    spec = importlib.util.spec_from_file_location("make_keys", DATA / "make_pyslowfast_keys.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, kw in gen.MODELS.items():
        assert [(k, s) for k, s in gen.slowfast_keys(**kw)] == _read_key_list(name), name


def test_r101_nonlocal_and_block_temporal_kernels():
    # PySlowFast's R101_50_50: res4 blocks 6.. use temporal kernel 1, non-local after 6, 13, 20.
    cfg = load_config(str(ROOT / "configs/AVA/SLOWFAST_32x2_R101.yaml"), [])
    with torch.device("meta"):
        m = build_model(cfg)
    sd = m.state_dict()
    assert sd["s4.pathway0_res5.branch2.a.weight"].shape[2] == 3
    assert sd["s4.pathway0_res6.branch2.a.weight"].shape[2] == 1
    assert sd["s4.pathway0_nonlocal13.conv_theta.weight"].shape == (512, 1024, 1, 1, 1)
    assert not any(k.startswith("s4.pathway1_nonlocal") for k in sd)


@pytest.mark.parametrize("over,named", [
    (["RESNET.WIDTH_PER_GROUP", "12"], "RESNET.WIDTH_PER_GROUP 12 / SLOWFAST.BETA_INV 8 = 1.5"),
    (["RESNET.WIDTH_PER_GROUP", "4"], "RESNET.WIDTH_PER_GROUP 4 / SLOWFAST.BETA_INV 8 = 0.5"),
    (["SLOWFAST.FUSION_CONV_CHANNEL_RATIO", "3"],
     "SLOWFAST.BETA_INV 8 / SLOWFAST.FUSION_CONV_CHANNEL_RATIO 3 = 2.66667"),
    (["RESNET.NUM_GROUPS", "0"], "RESNET.WIDTH_PER_GROUP 64, RESNET.NUM_GROUPS 0"),
    (["SLOWFAST.BETA_INV", "0"], "SLOWFAST.BETA_INV 0, SLOWFAST.FUSION_CONV_CHANNEL_RATIO 2"),
])
def test_bad_channel_arithmetic_is_a_user_error(over, named):
    cfg = load_config(str(ROOT / "configs/Kinetics/SLOWFAST_8x8_R50.yaml"), over)
    with pytest.raises(UserError) as e:
        build_model(cfg)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_detection_head_runs_at_train_and_test_crop_sizes():
    # RoIAlign works on whatever res5 map it gets: TEST_CROP_SIZE 96 != TRAIN_CROP_SIZE 64.
    torch.manual_seed(0)
    cfg = load_config(str(ROOT / "configs/AVA/SLOWFAST_32x2_R50.yaml"),
                      TINY + ["DATA.TEST_CROP_SIZE", "96", "DETECTION.ROI_XFORM_RESOLUTION", "2"])
    m = build_model(cfg).eval()
    for size in (64, 96):
        xs = [torch.randn(2, 3, 2, size, size), torch.randn(2, 3, 8, size, size)]
        trace = []
        feats = m.forward_features(xs, trace)
        assert feats[0].shape[-2:] == (size // 16, size // 16)  # res5 stride 1 in AVA configs
        boxes = torch.tensor([[0, 0.0, 0, size - 1, size - 1], [1, 5, 5, size / 2, size / 2]])
        p = m(xs, boxes)
        assert p.shape == (2, 80)
        assert ((p > 0) & (p < 1)).all() and not torch.allclose(p.sum(1), torch.ones(2))  # sigmoid


def test_classification_head_is_fully_convolutional_at_larger_test_crop():
    # PySlowFast's ResNetBasicHead pools with a fixed (T, TRAIN_CROP/32, TRAIN_CROP/32) window,
    # stride 1; at a larger test crop it scores every window and averages the softmax outputs.
    torch.manual_seed(0)
    cfg = load_config(str(ROOT / "configs/Kinetics/SLOWFAST_8x8_R50.yaml"),
                      TINY + ["DATA.TEST_CROP_SIZE", "96", "MODEL.DROPOUT_RATE", "0.0"])
    m = build_model(cfg).eval()
    for size, windows in ((64, 1), (96, 4)):
        xs = [torch.randn(2, 3, 2, size, size), torch.randn(2, 3, 8, size, size)]
        out = m(xs)
        assert out.shape == (2, 400)
        assert torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
        feats = m.forward_features(xs)
        pooled = [torch.nn.functional.avg_pool3d(f, (f.shape[2], 2, 2), stride=1) for f in feats]
        assert pooled[0].shape[-3:].numel() == windows
        logits = m.head.projection(torch.cat(pooled, 1).permute(0, 2, 3, 4, 1))
        assert torch.allclose(out, logits.softmax(-1).mean(dim=(1, 2, 3)), atol=1e-6)
    m.train()
    assert m(xs).shape == (2, 400)  # training at the larger size: logits averaged over windows


def test_nonlocal_block_residual_and_time_folding():
    # NONLOCAL.GROUP g: the block attends within each of g consecutive chunks of frames.
    torch.manual_seed(0)
    m = tiny(alpha=4, nonlocal_location=[[[], []], [[], []], [[0], []], [[], []]],
             nonlocal_group=[[1, 1], [1, 1], [2, 1], [1, 1]],
             nonlocal_pool=[[[1, 2, 2], [1, 2, 2]]] * 4).eval()
    nl = m.s4.pathway0_nonlocal0
    assert nl.pool.kernel_size == [1, 2, 2] and not hasattr(m.s4, "pathway1_nonlocal0")
    x = torch.randn(2, nl.conv_theta.in_channels, 4, 4, 4)
    nn_init = torch.nn.init
    nn_init.ones_(nl.bn.weight)
    folded = m.s4._nonlocal(nl, x, 2)
    assert torch.allclose(folded, torch.cat([nl(x[:, :, :2]), nl(x[:, :, 2:])], 2), atol=1e-5)
    assert not torch.allclose(folded, nl(x), atol=1e-3)
    nn_init.zeros_(nl.bn.weight)
    nn_init.zeros_(nl.bn.bias)
    assert torch.equal(nl(x), x)  # residual: a zeroed final BN leaves the input unchanged
    out = m([torch.randn(1, 3, 4, 64, 64), torch.randn(1, 3, 16, 64, 64)])
    assert out.shape == (1, 5)
