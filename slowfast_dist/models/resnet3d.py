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
        self.b_bn.transform_final_bn = True

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


class Nonlocal(nn.Module):
    """Non-local block (PySlowFast nonlocal_helper.py): theta/phi/g 1x1x1 convs with bias,
    affinity normalised by softmax or by the number of positions (dot_product), conv_out, BN,
    residual. `pool` (max, kernel = stride = pool_size) shrinks phi and g when any size > 1."""

    def __init__(self, dim, dim_inner, pool_size, instantiation, eps, mom):
        super().__init__()
        if instantiation not in ("softmax", "dot_product"):
            raise ValueError(f"non-local instantiation {instantiation!r} (softmax, dot_product)")
        self.dim_inner = dim_inner
        self.instantiation = instantiation
        self.conv_theta = nn.Conv3d(dim, dim_inner, 1)
        self.conv_phi = nn.Conv3d(dim, dim_inner, 1)
        self.conv_g = nn.Conv3d(dim, dim_inner, 1)
        self.conv_out = nn.Conv3d(dim_inner, dim, 1)
        self.bn = _bn(dim, eps, mom)  # PySlowFast's name (nonlocal_helper.py), for its checkpoints
        self.bn.transform_final_bn = True  # zeroed with RESNET.ZERO_INIT_FINAL_BN, as PySlowFast's
        if pool_size is not None and any(k > 1 for k in pool_size):
            self.pool = nn.MaxPool3d(list(pool_size), list(pool_size), 0)

    def forward(self, x):
        n, _, t, h, w = x.shape
        theta = self.conv_theta(x).flatten(2)
        y = self.pool(x) if hasattr(self, "pool") else x
        phi = self.conv_phi(y).flatten(2)
        g = self.conv_g(y).flatten(2)
        aff = torch.einsum("nct,ncp->ntp", theta, phi)
        if self.instantiation == "softmax":
            aff = (aff * self.dim_inner ** -0.5).softmax(dim=2)
        else:
            aff = aff / aff.shape[2]
        out = torch.einsum("ntp,ncp->nct", aff, g).reshape(n, self.dim_inner, t, h, w)
        return x + self.bn(self.conv_out(out))


class ResStage(nn.Module):
    """One res stage for every pathway: `pathway{p}_res{i}` blocks, `pathway{p}_nonlocal{i}` after
    block i when i is in nonlocal_inds[p]. tks[p] is the list of temporal kernels, one per block."""

    def __init__(self, dims_in, dims_out, dims_inner, tks, stride, depth, trans, groups,
                 dilation, eps, mom, act_checkpoint=False, nonlocal_inds=None, nonlocal_group=None,
                 nonlocal_pool=None, instantiation="dot_product"):
        super().__init__()
        self.num_pathways = len(dims_in)
        self.depth = depth
        self.act_checkpoint = act_checkpoint
        self.nonlocal_group = list(nonlocal_group or [1] * self.num_pathways)
        for p in range(self.num_pathways):
            for i in range(depth):
                setattr(self, f"pathway{p}_res{i}", ResBlock(
                    dims_in[p] if i == 0 else dims_out[p], dims_out[p], tks[p][i],
                    stride[p] if i == 0 else 1, trans, dims_inner[p], groups, dilation[p],
                    eps, mom))
                if nonlocal_inds and i in nonlocal_inds[p]:
                    setattr(self, f"pathway{p}_nonlocal{i}", Nonlocal(
                        dims_out[p], dims_out[p] // 2, nonlocal_pool[p] if nonlocal_pool else None,
                        instantiation, eps, mom))

    def _nonlocal(self, m, x, group):
        if group <= 1:
            return m(x)
        # Fold time into batch: the non-local block attends within T/group frames.
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * group, t // group, c, h, w).permute(0, 2, 1, 3, 4)
        y = m(y)
        return y.permute(0, 2, 1, 3, 4).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)

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
                nl = getattr(self, f"pathway{p}_nonlocal{i}", None)
                if nl is not None:
                    x = self._nonlocal(nl, x, self.nonlocal_group[p])
            out.append(x)
        return out


class ResNetBasicHead(nn.Module):
    """Average pool per pathway, dropout, linear; activation at eval (PySlowFast head_helper.py).

    pool_size[p] = (T, H, W) window, stride 1, as PySlowFast sets it from the training clip
    (NUM_FRAMES, TRAIN_CROP_SIZE // 32); None = global average. A larger test clip gives several
    windows: the linear layer runs on each, and at eval the activated scores are averaged over
    them (PySlowFast's fully-convolutional testing); in training the logits are averaged. A window
    larger than the feature map is cut to the map (PySlowFast would fail there)."""

    def __init__(self, dims_in, num_classes, dropout, act, pool_size=None):
        super().__init__()
        self.num_pathways = len(dims_in)
        self.pool_size = list(pool_size) if pool_size is not None else [None] * self.num_pathways
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(dims_in), num_classes, bias=True)
        self.act = nn.Softmax(dim=-1) if act == "softmax" else nn.Sigmoid()

    def _pool(self, x, k):
        if k is None:
            return x.mean(dim=(2, 3, 4), keepdim=True)
        k = [min(a, b) for a, b in zip(k, x.shape[2:])]
        return nn.functional.avg_pool3d(x, k, stride=1)

    def forward(self, xs):
        x = torch.cat([self._pool(x, k) for x, k in zip(xs, self.pool_size)], 1)
        x = x.permute(0, 2, 3, 4, 1)  # N, T, H, W, C: the linear layer runs at every window
        if hasattr(self, "dropout"):
            x = self.dropout(x)
        x = self.projection(x)
        if not self.training:
            x = self.act(x)
        return x.mean(dim=(1, 2, 3))


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


def _per_pathway(values, P):
    """A per-pathway list from a config entry; a 1-entry list (PySlowFast's defaults) is shared."""
    values = list(values)
    return values * P if len(values) == 1 else values[:P]


def channel_problems(arch, width_per_group, num_groups, beta_inv, fusion_ratio):
    """Channel arithmetic that would give zero or fractional widths: one line per problem, naming
    the config keys and their values.

    PySlowFast builds Slow width c, Fast width c // BETA_INV, inner width NUM_GROUPS *
    WIDTH_PER_GROUP (x2, x4, x8 per stage), and the fused Slow input c + c // (BETA_INV //
    FUSION_CONV_CHANNEL_RATIO); it silently floors, which breaks the model or the checkpoint."""
    if width_per_group < 1 or num_groups < 1:
        return [f"RESNET.WIDTH_PER_GROUP {width_per_group}, RESNET.NUM_GROUPS {num_groups}: "
                "both must be >= 1"]
    if arch != "slowfast":
        return []
    if beta_inv < 1 or fusion_ratio < 1:
        return [f"SLOWFAST.BETA_INV {beta_inv}, SLOWFAST.FUSION_CONV_CHANNEL_RATIO {fusion_ratio}: "
                "both must be >= 1"]
    rows = []
    # A whole WIDTH_PER_GROUP / BETA_INV also makes every Fast stage width and the Fast inner
    # width (NUM_GROUPS * WIDTH_PER_GROUP * 2^k / BETA_INV) whole multiples of NUM_GROUPS.
    if width_per_group % beta_inv:
        rows.append(f"RESNET.WIDTH_PER_GROUP {width_per_group} / SLOWFAST.BETA_INV {beta_inv} = "
                    f"{width_per_group / beta_inv:g} Fast-pathway stem channels "
                    "(must be a whole number >= 1)")
    if beta_inv % fusion_ratio:
        rows.append(f"SLOWFAST.BETA_INV {beta_inv} / SLOWFAST.FUSION_CONV_CHANNEL_RATIO "
                    f"{fusion_ratio} = {beta_inv / fusion_ratio:g}: PySlowFast's fused Slow input "
                    "width would not match the lateral connection's output (must divide evenly)")
    return rows


class VideoResNet(nn.Module):
    """SlowFast (2 pathways) or Slow-only (1 pathway) 3D ResNet; PySlowFast module layout.

    num_block_temp_kernel[stage][pathway]: blocks after that many use temporal kernel 1 (None: all
    use the stage's kernel). nonlocal_location[stage][pathway]: block indices followed by a
    non-local block. head_pool_size: per-pathway (T, H, W) window of the classification head
    (None: global average)."""

    def __init__(self, arch="slowfast", num_classes=400, depth=50, num_groups=1,
                 width_per_group=64, trans_func="bottleneck_transform", alpha=8, beta_inv=8,
                 fusion_ratio=2, fusion_kernel=5, spatial_strides=((1, 1), (2, 2), (2, 2), (2, 2)),
                 spatial_dilations=((1, 1), (1, 1), (1, 1), (1, 1)), input_channels=(3, 3),
                 bn_eps=1e-5, bn_mom=0.1, dropout=0.5, head_act="softmax", detection=False,
                 roi_resolution=7, spatial_scale=16, roi_aligned=True, act_checkpoint=False,
                 num_block_temp_kernel=None, nonlocal_location=None, nonlocal_group=None,
                 nonlocal_pool=None, nonlocal_instantiation="dot_product", head_pool_size=None,
                 zero_init_final_bn=True, fc_init_std=0.01):
        super().__init__()
        if depth not in STAGE_DEPTH:
            raise ValueError(f"RESNET.DEPTH {depth} not in {sorted(STAGE_DEPTH)}")
        problems = channel_problems(arch, width_per_group, num_groups, beta_inv, fusion_ratio)
        if problems:
            raise ValueError(problems[0])
        self.arch = arch
        self.detection = detection
        self.zero_init_final_bn = zero_init_final_bn
        self.fc_init_std = fc_init_std
        tk = TEMPORAL_KERNELS[arch]
        P = 2 if arch == "slowfast" else 1
        depths = STAGE_DEPTH[depth]
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

        def block_kernels(si, n):  # PySlowFast's ResStage: kernel for the first k blocks, then 1
            ks = []
            for p in range(P):
                k = n if num_block_temp_kernel is None else min(
                    n, _per_pathway(num_block_temp_kernel[si], P)[p])
                ks.append([tk[si + 1][p]] * k + [1] * (n - k))
            return ks

        self.s1 = VideoModelStem(list(input_channels)[:P], dims(w), [k for k in tk[0]], eps, mom)
        if P == 2:
            self.s1_fuse = FuseFastToSlow(w // beta_inv, fusion_ratio, fusion_kernel, alpha, eps, mom)
        outs = [w * 4, w * 8, w * 16, w * 32]
        ins = [w, w * 4, w * 8, w * 16]
        inner = [di, di * 2, di * 4, di * 8]
        for si, n in enumerate(depths):
            nl = None if nonlocal_location is None else _per_pathway(nonlocal_location[si], P)
            stage = ResStage(
                fused(ins[si]), dims(outs[si]), dims(inner[si]), block_kernels(si, n),
                _per_pathway(spatial_strides[si], P), n, trans, num_groups,
                _per_pathway(spatial_dilations[si], P), eps, mom, act_checkpoint,
                nonlocal_inds=nl,
                nonlocal_group=None if nonlocal_group is None else _per_pathway(nonlocal_group[si], P),
                nonlocal_pool=None if nonlocal_pool is None else _per_pathway(nonlocal_pool[si], P),
                instantiation=nonlocal_instantiation)
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
            self.head = ResNetBasicHead(dims(w * 32), num_classes, dropout, head_act, head_pool_size)
        self._init_weights()

    def _init_weights(self):
        # PySlowFast's init_weights: kaiming conv (bias 0), BN gamma 1 (0 for the final BN of a
        # block when ZERO_INIT_FINAL_BN), linear N(0, FC_INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                final = getattr(m, "transform_final_bn", False) and self.zero_init_final_bn
                nn.init.constant_(m.weight, 0.0 if final else 1.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=self.fc_init_std)
                nn.init.zeros_(m.bias)

    @property
    def _pool_after(self):
        return "s2_fuse" if hasattr(self, "s2_fuse") else "s2"

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
            if name == self._pool_after:  # PySlowFast: after s2_fuse (SlowFast), s2 (Slow)
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
