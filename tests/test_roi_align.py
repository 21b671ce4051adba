import math

import pytest
import torch

from slowfast_dist.models.roi_align import roi_align_torch

torch.set_num_threads(1)


def ref(feat, box, ph, pw, scale, aligned):
    # Slow, scalar bilinear sampling written by hand (torchvision's CPU kernel rules).
    C, H, W = feat.shape
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = [v * scale - off for v in box]
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / ph, rw / pw
    gh, gw = math.ceil(rh / ph), math.ceil(rw / pw)
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


def test_torchvision_agrees_when_available():
    tv = pytest.importorskip("torchvision.ops")  # does not import on the CPU dev machine
    feat = torch.randn(2, 4, 10, 12)
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 40.0], [1, 1.0, 2.0, 30.0, 70.0]])
    for aligned in (True, False):
        a = tv.roi_align(feat, rois, (7, 7), 1 / 8, 0, aligned)
        assert torch.allclose(a, roi_align_torch(feat, rois, (7, 7), 1 / 8, 0, aligned), atol=1e-5)
