"""RoIAlign in plain torch, matching torchvision.ops.roi_align (aligned True/False, sampling_ratio
<=0 = adaptive, as PySlowFast calls it). Uses torchvision's op when it imports.

The plain-torch path is vectorised over all boxes and never reads a value to the host (on a GPU
every such read is a blocking sync). It uses that bilinear sampling on a regular grid is
separable: each bin's average over its gh x gw sample points is A_y[bin_row] . F . A_x[bin_col]^T,
with A_y [K, ph, H] and A_x [K, pw, W] the per-box sampling weights averaged over the points of a
bin (the validity mask of a sample, -1 <= y <= H, is separable too). The output is then two small
batched matrix products per box instead of gathers of every sample point.

The adaptive grid ceil(roi_h / ph) differs per box; it is masked inside a fixed number of sample
slots (`max_grid`) known from the shapes alone. The default covers boxes up to 4x the feature
map's size, exact for every box the data pipeline gives (boxes are clipped to the image); a
larger box is averaged over `max_grid` points per bin instead of ceil(roi_h / ph).
"""
import math

import torch


def _axis_weights(start, bin_size, grid, max_grid, bins, size):
    """[K, bins, size] weights: the mean over a bin's `grid` sample points of their bilinear
    interpolation weights along one axis (torchvision's edge rules). `grid` is [K] (adaptive)
    or an int; sample slots at or past `grid` are masked out."""
    k = start.shape[0]
    dt = start.dtype
    slot = torch.arange(max_grid, dtype=dt, device=start.device)
    bins_i = torch.arange(bins, dtype=dt, device=start.device)
    grid_t = grid.to(dt) if torch.is_tensor(grid) else torch.full((k,), float(grid), dtype=dt,
                                                                  device=start.device)
    g = grid_t.clamp(min=1.0)[:, None, None]
    # sample a of bin i: start + i * bin + (a + 0.5) * bin / grid      -> [K, bins, max_grid]
    pos = start[:, None, None] + bins_i[None, :, None] * bin_size[:, None, None] \
        + (slot[None, None, :] + 0.5) * bin_size[:, None, None] / g
    used = (slot[None, None, :] < grid_t[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    pos = torch.where(at_edge, low, pos)
    frac = pos - low
    high = torch.where(at_edge, low, low + 1)
    cells = torch.arange(size, dtype=dt, device=start.device)
    weights = ((cells == low[..., None]) * (1 - frac)[..., None]
               + (cells == high[..., None]) * frac[..., None])  # [K, bins, max_grid, size]
    weights = weights * used[..., None]
    return weights.sum(dim=2) / g


def roi_align_torch(feat, rois, output_size, spatial_scale, sampling_ratio=0, aligned=True,
                    max_grid=None):
    """feat [B,C,H,W], rois [K,5] (batch idx, x1,y1,x2,y2) -> [K,C,ph,pw]."""
    ph, pw = output_size
    _, _, H, W = feat.shape
    off = 0.5 if aligned else 0.0
    coords = rois[:, 1:].to(feat.dtype) * spatial_scale - off
    x1, y1, x2, y2 = coords.unbind(1)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bh, bw = rh / ph, rw / pw
    if sampling_ratio > 0:
        gh = gw = sampling_ratio
        max_h = max_w = sampling_ratio
    else:
        # torchvision: ceil(roi / bins) points per bin; a degenerate box gets none (zeros)
        gh, gw = torch.ceil(bh), torch.ceil(bw)
        max_h = max_grid or math.ceil(4 * (H + 1) / ph)
        max_w = max_grid or math.ceil(4 * (W + 1) / pw)
        gh, gw = gh.clamp(max=max_h), gw.clamp(max=max_w)
    wy = _axis_weights(y1, bh, gh, max_h, ph, H)  # [K, ph, H]
    wx = _axis_weights(x1, bw, gw, max_w, pw, W)  # [K, pw, W]
    per_box = feat.index_select(0, rois[:, 0].long())  # [K, C, H, W]
    return torch.einsum("kph,kchw,kqw->kcpq", wy, per_box, wx)


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
