import math

import pytest
import torch

from slowfast_dist.models.roi_align import roi_align_torch

torch.set_num_threads(1)


def ref(feat, box, ph, pw, scale, aligned, grid=0):
    # Slow, scalar bilinear sampling written by hand (torchvision's CPU kernel rules).
    C, H, W = feat.shape
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = [v * scale - off for v in box]
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / ph, rw / pw
    gh, gw = (grid, grid) if grid > 0 else (math.ceil(rh / ph), math.ceil(rw / pw))
    out = torch.zeros(C, ph, pw, dtype=feat.dtype)

    def bil(y, x):
        if y < -1 or y > H or x < -1 or x > W:
            return torch.zeros(C, dtype=feat.dtype)
        y, x = max(y, 0.0), max(x, 0.0)
        yl, xl = int(y), int(x)
        if yl >= H - 1:
            yl = yh = H - 1
            y = float(yl)
        else:
            yh = yl + 1
        if xl >= W - 1:
            xl = xh = W - 1
            x = float(xl)
        else:
            xh = xl + 1
        ly, lx = y - yl, x - xl
        return ((1 - ly) * (1 - lx) * feat[:, yl, xl] + (1 - ly) * lx * feat[:, yl, xh]
                + ly * (1 - lx) * feat[:, yh, xl] + ly * lx * feat[:, yh, xh])

    for i in range(ph):
        for j in range(pw):
            acc = torch.zeros(C, dtype=feat.dtype)
            for a in range(gh):
                for b in range(gw):
                    acc += bil(y1 + i * bh + (a + 0.5) * bh / gh, x1 + j * bw + (b + 0.5) * bw / gw)
            out[:, i, j] = acc / max(gh * gw, 1)
    return out


@pytest.mark.parametrize("aligned", [True, False])
def test_matches_hand_reference(aligned):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 40.0], [1, -8.0, -4.0, 20.0, 90.0],
                         [1, 10.0, 10.0, 12.0, 13.0], [0, 70.0, 50.0, 88.0, 72.0]],
                        dtype=torch.float64)
    out = roi_align_torch(feat, rois, (3, 4), 1 / 8, 0, aligned)
    for k, r in enumerate(rois):
        expect = ref(feat[int(r[0])], r[1:].tolist(), 3, 4, 1 / 8, aligned)
        assert torch.allclose(out[k], expect, atol=1e-5), k


def _random_rois(g, n, batch, height, width, spread=1.0):
    """n boxes [n, 5] in pixels of a height x width image, some past its edges when spread > 1."""
    xy = torch.rand(n, 2, 2, generator=g, dtype=torch.float64) * spread - (spread - 1) / 2
    xy = xy.sort(dim=1).values * torch.tensor([width, height], dtype=torch.float64)
    b = torch.randint(0, batch, (n, 1), generator=g).double()
    return torch.cat([b, xy.reshape(n, 4)], 1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_random_boxes_value_and_gradient_match_the_reference(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(7 + aligned + 3 * sampling_ratio)
    feat = torch.randn(3, 2, 8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    # boxes of a 128 x 160 image at 1/16 (the detector's scale), some 1.5x past the edges
    rois = _random_rois(g, 12, 3, 128, 160, spread=1.5)
    out = roi_align_torch(feat, rois, (3, 3), 1 / 16, sampling_ratio, aligned)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * upstream).sum(), feat)

    feat_ref = feat.detach().clone().requires_grad_(True)
    expect = torch.stack([ref_sampled(feat_ref[int(r[0])], r[1:].tolist(), 3, 3, 1 / 16, aligned,
                                      sampling_ratio) for r in rois])
    (grad_ref,) = torch.autograd.grad((expect * upstream).sum(), feat_ref)
    assert torch.allclose(out, expect, atol=1e-5)
    assert torch.allclose(grad, grad_ref, atol=1e-5)


def ref_sampled(feat, box, ph, pw, scale, aligned, sampling_ratio):
    if sampling_ratio <= 0:
        return ref(feat, box, ph, pw, scale, aligned)
    return ref(feat, box, ph, pw, scale, aligned, grid=sampling_ratio)


def test_empty_and_degenerate_boxes():
    feat = torch.randn(1, 2, 5, 5)
    assert roi_align_torch(feat, torch.zeros(0, 5), (2, 2), 1.0).shape == (0, 2, 2, 2)
    flat = roi_align_torch(feat, torch.tensor([[0, 1.0, 1.0, 1.0, 3.0]]), (2, 2), 1.0)
    assert torch.equal(flat, torch.zeros(1, 2, 2, 2))  # zero width: no sample points


def test_detector_forward_backward_reads_nothing_to_the_host(monkeypatch):
    """24 boxes through the AVA detector head without torchvision: no value read back, no
    shape that depends on data (each would be a blocking sync on a GPU)."""
    from support import CountHostSyncs

    from slowfast_dist.models import roi_align
    from slowfast_dist.models.resnet3d import VideoResNet

    monkeypatch.setattr(roi_align, "_tv_roi_align", lambda: None)
    model = VideoResNet(arch="slowfast", num_classes=80, depth=18, width_per_group=8, alpha=4,
                        fusion_kernel=3, detection=True, head_act="sigmoid",
                        head_pool_size=[[2, 2, 2], [8, 2, 2]],
                        spatial_strides=((1, 1), (2, 2), (2, 2), (1, 1)),
                        spatial_dilations=((1, 1), (1, 1), (1, 1), (2, 2))).train()
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(8, 3, 2, 32, 32, generator=g), torch.randn(8, 3, 8, 32, 32, generator=g)]
    rois = _random_rois(g, 24, 8, 32, 32).float()
    with CountHostSyncs() as counted:
        model(inputs, rois).sum().backward()
    assert sum(counted.syncs.values()) == 0, counted.syncs


def test_torchvision_agrees_when_available():
    tv = pytest.importorskip("torchvision.ops")  # does not import on the CPU dev machine
    feat = torch.randn(2, 4, 10, 12)
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 40.0], [1, 1.0, 2.0, 30.0, 70.0]])
    for aligned in (True, False):
        a = tv.roi_align(feat, rois, (7, 7), 1 / 8, 0, aligned)
        assert torch.allclose(a, roi_align_torch(feat, rois, (7, 7), 1 / 8, 0, aligned), atol=1e-5)


@pytest.mark.cuda
def test_cuda_plain_torch_path_matches_reference_torchvision_and_never_syncs():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (make gpu-check)")
    g = torch.Generator().manual_seed(11)
    feat = torch.randn(4, 64, 14, 14, generator=g, dtype=torch.float64)
    rois = _random_rois(g, 24, 4, 224, 224)
    expect = roi_align_torch(feat, rois, (7, 7), 1 / 16)  # float64 on the CPU
    feat_cuda = feat.float().cuda().requires_grad_(True)
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        out = roi_align_torch(feat_cuda, rois.float().cuda(non_blocking=True), (7, 7), 1 / 16)
        out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.allclose(out.double().cpu(), expect, atol=1e-5)
    try:
        from torchvision.ops import roi_align as tv
    except Exception:  # noqa: BLE001
        return
    tv_feat = feat.float().cuda().requires_grad_(True)
    tv_out = tv(tv_feat, rois.float().cuda(), (7, 7), 1 / 16, 0, True)
    tv_out.sum().backward()
    assert torch.allclose(out, tv_out, atol=1e-5)
    assert torch.allclose(feat_cuda.grad, tv_feat.grad, atol=1e-5)
