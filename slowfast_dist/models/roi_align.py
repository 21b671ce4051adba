"""RoIAlign in plain torch, matching torchvision.ops.roi_align (aligned True/False, sampling_ratio
<=0 = adaptive, as PySlowFast calls it). Uses torchvision's op when it imports."""
import math

import torch


def _bilinear(feat, y, x):
    # feat [C,H,W]; y [Ny], x [Nx] -> [C,Ny,Nx]; same edge rules as torchvision's kernel.
    C, H, W = feat.shape
    vy = (y >= -1.0) & (y <= H)
    vx = (x >= -1.0) & (x <= W)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y0 = y.floor().long()
    x0 = x.floor().long()
    ey = y0 >= H - 1
    ex = x0 >= W - 1
    y0 = torch.where(ey, torch.full_like(y0, H - 1), y0)
    x0 = torch.where(ex, torch.full_like(x0, W - 1), x0)
    y = torch.where(ey, y0.to(y.dtype), y)
    x = torch.where(ex, x0.to(x.dtype), x)
    y1 = torch.where(ey, y0, y0 + 1)
    x1 = torch.where(ex, x0, x0 + 1)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    def g(yi, xi):
        return feat[:, yi][:, :, xi]
    out = (g(y0, x0) * (hy[:, None] * hx[None]) + g(y0, x1) * (hy[:, None] * lx[None])
           + g(y1, x0) * (ly[:, None] * hx[None]) + g(y1, x1) * (ly[:, None] * lx[None]))
    return out * (vy[:, None] & vx[None]).to(out.dtype)


def roi_align_torch(feat, rois, output_size, spatial_scale, sampling_ratio=0, aligned=True):
    """feat [B,C,H,W], rois [K,5] (batch idx, x1,y1,x2,y2) -> [K,C,ph,pw]."""
    ph, pw = output_size
    outs = []
    off = 0.5 if aligned else 0.0
    for r in rois:
        b = int(r[0])
        x1, y1, x2, y2 = [float(v) * spatial_scale - off for v in r[1:]]
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        if gh <= 0 or gw <= 0:
            outs.append(feat.new_zeros(feat.shape[1], ph, pw))
            continue
        dt = feat.dtype
        iy = (torch.arange(gh, dtype=dt, device=feat.device) + 0.5) * bh / gh
        ix = (torch.arange(gw, dtype=dt, device=feat.device) + 0.5) * bw / gw
        ys = (y1 + torch.arange(ph, dtype=dt, device=feat.device)[:, None] * bh + iy[None]).reshape(-1)
        xs = (x1 + torch.arange(pw, dtype=dt, device=feat.device)[:, None] * bw + ix[None]).reshape(-1)
        v = _bilinear(feat[b], ys, xs)  # [C, ph*gh, pw*gw]
        C = v.shape[0]
        outs.append(v.reshape(C, ph, gh, pw, gw).mean(dim=(2, 4)))
    if not outs:
        return feat.new_zeros(0, feat.shape[1], ph, pw)
    return torch.stack(outs)


def _tv_roi_align():
    try:
        from torchvision.ops import roi_align
        return roi_align
    except Exception:  # torchvision missing or broken (CPU machine): plain-torch path
        return None


class RoIAlign(torch.nn.Module):
    """Module with PySlowFast's arguments; no parameters."""

    def __init__(self, output_size, spatial_scale, sampling_ratio=0, aligned=True):
        super().__init__()
        self.output_size = tuple(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self._tv = _tv_roi_align()

    def forward(self, x, rois):
        if self._tv is not None:
            return self._tv(x, rois.to(x.dtype), self.output_size, self.spatial_scale,
                            self.sampling_ratio, self.aligned)
        return roi_align_torch(x, rois.to(x.dtype), self.output_size, self.spatial_scale,
                               self.sampling_ratio, self.aligned)
