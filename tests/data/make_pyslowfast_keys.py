"""Write the state-dict key -> shape lists of PySlowFast's SlowFast models, derived from its code.

Pure Python, no torch and no import of slowfast_dist: the lists are an independent statement of
what PySlowFast's constructors register (facebookresearch/SlowFast, slowfast/models/):
- video_model_builder.py `SlowFast._construct_network`: stage dims, `out_dim_ratio =
  BETA_INV // FUSION_CONV_CHANNEL_RATIO` for the fused Slow input, `_TEMPORAL_KERNEL_BASIS`,
  `_MODEL_STAGE_DEPTH`, module order s1, s1_fuse, s2, s2_fuse, pathway{p}_pool, s3, ... head;
- stem_helper.py `VideoModelStem` -> `pathway{p}_stem` = `ResNetBasicStem` (conv, bn, relu, pool_layer);
- video_model_builder.py `FuseFastToSlow` (conv_f2s, bn);
- resnet_helper.py `ResStage` (`pathway{p}_res{i}`, `pathway{p}_nonlocal{i}`, temporal kernel 1
  after NUM_BLOCK_TEMP_KERNEL blocks), `ResBlock` (branch1 + branch1_bn when dims or stride
  change, branch2), `BottleneckTransform` (a, a_bn, b, b_bn, c, c_bn);
- nonlocal_helper.py `Nonlocal` (conv_theta, conv_phi, conv_g, conv_out with bias, bn);
- head_helper.py `ResNetBasicHead` / `ResNetRoIHead`: only `projection` (Linear) has state.
nn.Module.state_dict order: a module's parameters, then its buffers, then its children in the
order they were registered. BatchNorm3d: weight, bias, running_mean, running_var,
num_batches_tracked (a 0-d tensor). PySlowFast saves `model.module.state_dict()` under DDP, so
there is no `module.` prefix.

Run from the repository root:  python tests/data/make_pyslowfast_keys.py
Output lines: `key [d0, d1, ...]` (`[]` for 0-d tensors).
"""
import json
import os

MODEL_STAGE_DEPTH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
TEMPORAL_KERNEL_BASIS_SLOWFAST = [[[1], [5]], [[1], [3]], [[1], [3]], [[3], [3]], [[3], [3]]]


def conv(out, name, c_out, c_in, k, bias=False):
    out.append((f"{name}.weight", [c_out, c_in, *k]))
    if bias:
        out.append((f"{name}.bias", [c_out]))


def bn(out, name, c):
    out += [(f"{name}.weight", [c]), (f"{name}.bias", [c]), (f"{name}.running_mean", [c]),
            (f"{name}.running_var", [c]), (f"{name}.num_batches_tracked", [])]


def slowfast_keys(num_classes, depth, alpha, beta_inv, fusion_ratio, fusion_kernel,
                  num_block_temp_kernel, nonlocal_location, spatial_strides, width_per_group=64,
                  num_groups=1, input_channels=(3, 3)):
    """SlowFast with bottleneck_transform; the head's state is the same for Basic and RoI heads."""
    del alpha  # strides only: no shape depends on it
    out = []
    w = width_per_group
    dim_inner = num_groups * w
    out_dim_ratio = beta_inv // fusion_ratio
    tk = TEMPORAL_KERNEL_BASIS_SLOWFAST
    depths = MODEL_STAGE_DEPTH[depth]

    # s1: VideoModelStem, kernel [tk] + [7, 7]
    stem_out = [w, w // beta_inv]
    for p in range(2):
        conv(out, f"s1.pathway{p}_stem.conv", stem_out[p], input_channels[p], [tk[0][p][0], 7, 7])
        bn(out, f"s1.pathway{p}_stem.bn", stem_out[p])

    def fuse(stage_name, fast_dim):
        conv(out, f"{stage_name}.conv_f2s", fast_dim * fusion_ratio, fast_dim, [fusion_kernel, 1, 1])
        bn(out, f"{stage_name}.bn", fast_dim * fusion_ratio)

    fuse("s1_fuse", w // beta_inv)
    mult_in = [1, 4, 8, 16]
    mult_out = [4, 8, 16, 32]
    mult_inner = [1, 2, 4, 8]
    for si in range(4):
        name = f"s{si + 2}"
        d_in = [w * mult_in[si] + w * mult_in[si] // out_dim_ratio, w * mult_in[si] // beta_inv]
        d_out = [w * mult_out[si], w * mult_out[si] // beta_inv]
        d_inner = [dim_inner * mult_inner[si], dim_inner * mult_inner[si] // beta_inv]
        n = depths[si]
        for p in range(2):
            nbtk = num_block_temp_kernel[si][p]
            kernels = (tk[si + 1][p] * n)[:nbtk] + [1] * (n - nbtk)
            for i in range(n):
                blk = f"{name}.pathway{p}_res{i}"
                c_in = d_in[p] if i == 0 else d_out[p]
                stride = spatial_strides[si][p] if i == 0 else 1
                if c_in != d_out[p] or stride != 1:
                    conv(out, f"{blk}.branch1", d_out[p], c_in, [1, 1, 1])
                    bn(out, f"{blk}.branch1_bn", d_out[p])
                conv(out, f"{blk}.branch2.a", d_inner[p], c_in, [kernels[i], 1, 1])
                bn(out, f"{blk}.branch2.a_bn", d_inner[p])
                conv(out, f"{blk}.branch2.b", d_inner[p], d_inner[p] // num_groups, [1, 3, 3])
                bn(out, f"{blk}.branch2.b_bn", d_inner[p])
                conv(out, f"{blk}.branch2.c", d_out[p], d_inner[p], [1, 1, 1])
                bn(out, f"{blk}.branch2.c_bn", d_out[p])
                if i in nonlocal_location[si][p]:
                    nl = f"{name}.pathway{p}_nonlocal{i}"
                    for part in ("conv_theta", "conv_phi", "conv_g"):
                        conv(out, f"{nl}.{part}", d_out[p] // 2, d_out[p], [1, 1, 1], bias=True)
                    conv(out, f"{nl}.conv_out", d_out[p], d_out[p] // 2, [1, 1, 1], bias=True)
                    bn(out, f"{nl}.bn", d_out[p])
        if si < 3:
            fuse(f"{name}_fuse", d_out[1])
    head_in = w * 32 + w * 32 // beta_inv
    out += [("head.projection.weight", [num_classes, head_in]), ("head.projection.bias", [num_classes])]
    return out


NO_NONLOCAL = [[[], []]] * 4
MODELS = {
    # configs/Kinetics/SLOWFAST_8x8_R50.yaml
    "slowfast_r50_8x8_kinetics": dict(
        num_classes=400, depth=50, alpha=4, beta_inv=8, fusion_ratio=2, fusion_kernel=7,
        num_block_temp_kernel=[[3, 3], [4, 4], [6, 6], [3, 3]], nonlocal_location=NO_NONLOCAL,
        spatial_strides=[[1, 1], [2, 2], [2, 2], [2, 2]]),
    # configs/AVA/SLOWFAST_32x2_R50_SHORT.yaml (= c2/SLOWFAST_32x2_R50.yaml for the model)
    "slowfast_r50_32x2_ava": dict(
        num_classes=80, depth=50, alpha=4, beta_inv=8, fusion_ratio=2, fusion_kernel=7,
        num_block_temp_kernel=[[3, 3], [4, 4], [6, 6], [3, 3]], nonlocal_location=NO_NONLOCAL,
        spatial_strides=[[1, 1], [2, 2], [2, 2], [1, 1]]),
    # configs/AVA/c2/SLOWFAST_32x2_R101_50_50.yaml: non-local after res4 blocks 6, 13, 20 (Slow),
    # temporal kernels in the first 6 res4 blocks only.
    "slowfast_r101_32x2_ava_50_50": dict(
        num_classes=80, depth=101, alpha=4, beta_inv=8, fusion_ratio=2, fusion_kernel=5,
        num_block_temp_kernel=[[3, 3], [4, 4], [6, 6], [3, 3]],
        nonlocal_location=[[[], []], [[], []], [[6, 13, 20], []], [[], []]],
        spatial_strides=[[1, 1], [2, 2], [2, 2], [1, 1]]),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, kw in MODELS.items():
        path = os.path.join(here, f"pyslowfast_keys_{name}.txt")
        with open(path, "w") as f:
            for key, shape in slowfast_keys(**kw):
                f.write(f"{key} {json.dumps(shape)}\n")
        print(path)


if __name__ == "__main__":
    main()
