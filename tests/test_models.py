import pytest
import torch

from slowfast_dist.models import VideoResNet

torch.set_num_threads(1)


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
