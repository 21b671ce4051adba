"""SlowFast / Slow 3D ResNets. Module names follow PySlowFast (video_model_builder.py,
resnet_helper.py, stem_helper.py, head_helper.py) so state-dict keys and shapes are identical."""
import torch
from torch import nn

from .roi_align import RoIAlign

STAGE_DEPTH = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Temporal kernel sizes per stage (conv1, res2..res5), per pathway, as in PySlowFast.
TEMPORAL_KERNELS = {
    "slowfast": [[1, 5], [1, 3], [1, 3], [3, 3], [3, 3]],
    "slow": [[1], [1], [1], [3], [3]],
}


def _bn(dim, eps, mom):
    return nn.BatchNorm3d(dim, eps=eps, momentum=mom)


class Stem(nn.Module):
    def __init__(self, dim_in, dim_out, tk, eps, mom):
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, (tk, 7, 7), (1, 2, 2), (tk // 2, 3, 3), bias=False)
        self.bn = _bn(dim_out, eps, mom)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x):
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class VideoModelStem(nn.Module):
    def __init__(self, dims_in, dims_out, tks, eps, mom):
        super().__init__()
        self.num_pathways = len(dims_in)
        for p in range(self.num_pathways):
            setattr(self, f"pathway{p}_stem", Stem(dims_in[p], dims_out[p], tks[p], eps, mom))

    def forward(self, xs):
        return [getattr(self, f"pathway{p}_stem")(xs[p]) for p in range(self.num_pathways)]


class FuseFastToSlow(nn.Module):
    """Time-strided conv from Fast to Slow, concatenated onto Slow's channels."""

    def __init__(self, dim_in, ratio, kernel, alpha, eps, mom):
        super().__init__()
        self.conv_f2s = nn.Conv3d(dim_in, dim_in * ratio, (kernel, 1, 1), (alpha, 1, 1),
                                  (kernel // 2, 0, 0), bias=False)
        self.bn = _bn(dim_in * ratio, eps, mom)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs):
        s, f = xs
        return [torch.cat([s, self.relu(self.bn(self.conv_f2s(f)))], 1), f]


class BottleneckTransform(nn.Module):
    def __init__(self, dim_in, dim_out, tk, stride, dim_inner, groups, dilation, eps, mom):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, (tk, 1, 1), 1, (tk // 2, 0, 0), bias=False)
        self.a_bn = _bn(dim_inner, eps, mom)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), (1, stride, stride),
                           (0, dilation, dilation), groups=groups, bias=False,
                           dilation=(1, dilation, dilation))
        self.b_bn = _bn(dim_inner, eps, mom)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn(dim_out, eps, mom)
        self.c_bn.transform_final_bn = True

    def forward(self, x):
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class BasicTransform(nn.Module):
    def __init__(self, dim_in, dim_out, tk, stride, dim_inner, groups, dilation, eps, mom):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_out, (tk, 3, 3), (1, stride, stride),
                           (tk // 2, 1, 1), bias=False)
        self.a_bn = _bn(dim_out, eps, mom)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim_out, dim_out, (1, 3, 3), 1, (0, dilation, dilation),
                           dilation=(1, dilation, dilation), bias=False)
        self.b_bn = _bn(dim_out, eps, mom)

    def forward(self, x):
        return self.b_bn(self.b(self.a_relu(self.a_bn(self.a(x)))))


TRANS_FUNCS = {"bottleneck_transform": BottleneckTransform, "basic_transform": BasicTransform}


class ResBlock(nn.Module):
    def __init__(self, dim_in, dim_out, tk, stride, trans, dim_inner, groups, dilation, eps, mom):
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, (1, stride, stride), bias=False)
            self.branch1_bn = _bn(dim_out, eps, mom)
        self.branch2 = trans(dim_in, dim_out, tk, stride, dim_inner, groups, dilation, eps, mom)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        sc = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return self.relu(sc + self.branch2(x))


class ResStage(nn.Module):
    def __init__(self, dims_in, dims_out, dims_inner, tks, stride, depth, trans, groups,
                 dilation, eps, mom, act_checkpoint=False):
        super().__init__()
        self.num_pathways = len(dims_in)
        self.depth = depth
        self.act_checkpoint = act_checkpoint
        for p in range(self.num_pathways):
            for i in range(depth):
                setattr(self, f"pathway{p}_res{i}", ResBlock(
                    dims_in[p] if i == 0 else dims_out[p], dims_out[p], tks[p],
                    stride[p] if i == 0 else 1, trans, dims_inner[p], groups, dilation[p],
                    eps, mom))

    def forward(self, xs):
        out = []
        for p in range(self.num_pathways):
            x = xs[p]
            for i in range(self.depth):
                m = getattr(self, f"pathway{p}_res{i}")
                if self.act_checkpoint and self.training:
                    x = torch.utils.checkpoint.checkpoint(m, x, use_reentrant=False)
                else:
                    x = m(x)
            out.append(x)
        return out


class ResNetBasicHead(nn.Module):
    """Global average pool per pathway, dropout, linear; activation at eval."""

    def __init__(self, dims_in, num_classes, dropout, act):
        super().__init__()
        self.num_pathways = len(dims_in)
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(dims_in), num_classes, bias=True)
        self.act = nn.Softmax(dim=1) if act == "softmax" else nn.Sigmoid()

    def forward(self, xs):
        x = torch.cat([x.mean(dim=(2, 3, 4)) for x in xs], 1)
        if hasattr(self, "dropout"):
            x = self.dropout(x)
        x = self.projection(x)
        return x if self.training else self.act(x)


class ResNetRoIHead(nn.Module):
    """Temporal avg pool per pathway, RoIAlign, spatial max pool, dropout, linear, sigmoid at eval."""

    def __init__(self, dims_in, num_classes, resolution, scale, aligned, dropout, act):
        super().__init__()
        self.num_pathways = len(dims_in)
        for p in range(self.num_pathways):
            setattr(self, f"s{p}_roi", RoIAlign(resolution, 1.0 / scale, 0, aligned))
            setattr(self, f"s{p}_spool", nn.MaxPool2d(resolution, stride=1))
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(dims_in), num_classes, bias=True)
        self.act = nn.Softmax(dim=1) if act == "softmax" else nn.Sigmoid()

    def forward(self, xs, boxes):
        pooled = []
        for p in range(self.num_pathways):
            x = xs[p].mean(dim=2)  # temporal average over the whole clip
            x = getattr(self, f"s{p}_roi")(x.float(), boxes.float())
            pooled.append(getattr(self, f"s{p}_spool")(x))
        x = torch.cat(pooled, 1).flatten(1)
        if hasattr(self, "dropout"):
            x = self.dropout(x)
        x = self.projection(x.to(self.projection.weight.dtype) if not torch.is_autocast_enabled() else x)
        return x if self.training else self.act(x)


class VideoResNet(nn.Module):
    """SlowFast (2 pathways) or Slow-only (1 pathway) 3D ResNet; PySlowFast module layout."""

    def __init__(self, arch="slowfast", num_classes=400, depth=50, num_groups=1,
                 width_per_group=64, trans_func="bottleneck_transform", alpha=8, beta_inv=8,
                 fusion_ratio=2, fusion_kernel=5, spatial_strides=((1, 1), (2, 2), (2, 2), (2, 2)),
                 spatial_dilations=((1, 1), (1, 1), (1, 1), (1, 1)), input_channels=(3, 3),
                 bn_eps=1e-5, bn_mom=0.1, dropout=0.5, head_act="softmax", detection=False,
                 roi_resolution=7, spatial_scale=16, roi_aligned=True, act_checkpoint=False):
        super().__init__()
        if depth not in STAGE_DEPTH:
            raise ValueError(f"RESNET.DEPTH {depth} not in {sorted(STAGE_DEPTH)}")
        self.arch = arch
        self.detection = detection
        tk = TEMPORAL_KERNELS[arch]
        P = 2 if arch == "slowfast" else 1
        d2, d3, d4, d5 = STAGE_DEPTH[depth]
        trans = TRANS_FUNCS[trans_func]
        w = width_per_group
        di = num_groups * width_per_group
        eps, mom = bn_eps, bn_mom

        def dims(c):  # per-pathway channel count: Fast has 1/beta_inv of Slow
            return [c, c // beta_inv][:P]

        def fused(c):  # Slow input after lateral fusion gains Fast's channels * ratio
            if P == 1:
                return [c]
            return [c + c // beta_inv * fusion_ratio, c // beta_inv]

        self.s1 = VideoModelStem(list(input_channels)[:P], dims(w), [k for k in tk[0]], eps, mom)
        if P == 2:
            self.s1_fuse = FuseFastToSlow(w // beta_inv, fusion_ratio, fusion_kernel, alpha, eps, mom)
        outs = [w * 4, w * 8, w * 16, w * 32]
        ins = [w, w * 4, w * 8, w * 16]
        inner = [di, di * 2, di * 4, di * 8]
        for si, (n, st) in enumerate(zip((d2, d3, d4, d5), range(4))):
            stage = ResStage(fused(ins[si]), dims(outs[si]), dims(inner[si]), tk[si + 1],
                             list(spatial_strides[si])[:P], n, trans, num_groups,
                             list(spatial_dilations[si])[:P], eps, mom, act_checkpoint)
            setattr(self, f"s{si + 2}", stage)
            if P == 2 and si < 3:
                setattr(self, f"s{si + 2}_fuse", FuseFastToSlow(
                    outs[si] // beta_inv, fusion_ratio, fusion_kernel, alpha, eps, mom))
            if si == 0:
                for p in range(P):  # PySlowFast's pathway pools after res2 (identity, 1x1x1)
                    setattr(self, f"pathway{p}_pool", nn.MaxPool3d(1, 1, 0))
        if detection:
            self.head = ResNetRoIHead(dims(w * 32), num_classes, (roi_resolution, roi_resolution),
                                      spatial_scale, roi_aligned, dropout, head_act)
        else:
            self.head = ResNetBasicHead(dims(w * 32), num_classes, dropout, head_act)
        self._init_weights()

    def _init_weights(self):
        # PySlowFast's init_weights: kaiming conv, BN gamma 1 (0 for final BN of a block), linear N(0, .01)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 0.0 if getattr(m, "transform_final_bn", False) else 1.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def stage_names(self):
        names = ["s1"]
        if hasattr(self, "s1_fuse"):
            names.append("s1_fuse")
        for s in range(2, 6):
            names.append(f"s{s}")
            if hasattr(self, f"s{s}_fuse"):
                names.append(f"s{s}_fuse")
        return names

    def forward_features(self, inputs, trace=None):
        x = list(inputs)
        for name in self.stage_names():
            x = getattr(self, name)(x)
            if name == "s2":
                x = [getattr(self, f"pathway{p}_pool")(t) for p, t in enumerate(x)]
            if trace is not None:
                trace.append((name, [tuple(t.shape) for t in x]))
        return x

    def forward(self, inputs, boxes=None):
        x = self.forward_features(inputs)
        if self.detection:
            if boxes is None:
                raise ValueError("a detection model needs boxes [K, 5]")
            return self.head(x, boxes)
        return self.head(x)
