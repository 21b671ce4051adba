"""build_model(cfg): the one place that reads a CfgNode for models (PySlowFast key names)."""
import torch

from .resnet3d import VideoResNet


def _get(node, dotted, default):
    cur = node
    for part in dotted.split("."):
        if not hasattr(cur, part):
            return default
        cur = getattr(cur, part)
    return cur


def build_model(cfg):
    arch = cfg.MODEL.ARCH
    if arch not in ("slowfast", "slow"):
        from ..errors import UserError
        raise UserError(f"MODEL.ARCH: {arch!r} is not supported (slowfast, slow)")
    model = VideoResNet(
        arch=arch, num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH,
        num_groups=cfg.RESNET.NUM_GROUPS, width_per_group=cfg.RESNET.WIDTH_PER_GROUP,
        trans_func=cfg.RESNET.TRANS_FUNC, alpha=cfg.SLOWFAST.ALPHA, beta_inv=cfg.SLOWFAST.BETA_INV,
        fusion_ratio=cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO,
        fusion_kernel=cfg.SLOWFAST.FUSION_KERNEL_SZ,
        spatial_strides=cfg.RESNET.SPATIAL_STRIDES, spatial_dilations=cfg.RESNET.SPATIAL_DILATIONS,
        input_channels=cfg.DATA.INPUT_CHANNEL_NUM, bn_eps=_get(cfg, "BN.EPSILON", 1e-5), bn_mom=_get(cfg, "BN.MOMENTUM", 0.1),
        dropout=cfg.MODEL.DROPOUT_RATE, head_act=cfg.MODEL.HEAD_ACT,
        detection=cfg.DETECTION.ENABLE, roi_resolution=cfg.DETECTION.ROI_XFORM_RESOLUTION,
        spatial_scale=cfg.DETECTION.SPATIAL_SCALE_FACTOR, roi_aligned=cfg.DETECTION.ALIGNED,
        act_checkpoint=bool(_get(cfg, "MODEL.ACT_CHECKPOINT", False)),
    )
    if _get(cfg, "MODEL.CHANNELS_LAST", False):
        model = model.to(memory_format=torch.channels_last_3d)
    if _get(cfg, "MODEL.COMPILE", False):
        model = torch.compile(model)
    return model
