"""build_model(cfg): the one place that reads a CfgNode for models (PySlowFast key names)."""
import torch

from ..errors import UserError
from .resnet3d import STAGE_DEPTH, VideoResNet, channel_problems


def _get(node, dotted, default):
    cur = node
    for part in dotted.split("."):
        if not hasattr(cur, part):
            return default
        cur = getattr(cur, part)
    return cur


def head_pool_size(arch, num_frames, alpha, train_crop_size):
    """PySlowFast's ResNetBasicHead window per pathway: the training clip's res5 size
    (T, TRAIN_CROP_SIZE // 32, TRAIN_CROP_SIZE // 32); Slow sees NUM_FRAMES // ALPHA frames."""
    s = train_crop_size // 32
    if arch == "slowfast":
        return [[num_frames // alpha, s, s], [num_frames, s, s]]
    return [[num_frames, s, s]]


def head_activation(detection, head_act, loss_func):
    """The detection head is trained with BCE on independent labels: PySlowFast's AVA models
    use a sigmoid there whatever MODEL.HEAD_ACT says (its AVA YAMLs leave the softmax default)."""
    if detection and loss_func in ("bce", "bce_logit"):
        return "sigmoid"
    return head_act


def check_model_keys(cfg):
    """UserError for values that would build a broken or checkpoint-incompatible model."""
    arch = cfg.MODEL.ARCH
    if arch not in ("slowfast", "slow"):
        raise UserError(f"MODEL.ARCH: {arch!r} is not supported (slowfast, slow)")
    if cfg.RESNET.DEPTH not in STAGE_DEPTH:
        raise UserError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not supported "
                        f"({', '.join(map(str, sorted(STAGE_DEPTH)))})")
    problems = channel_problems(arch, cfg.RESNET.WIDTH_PER_GROUP, cfg.RESNET.NUM_GROUPS,
                                cfg.SLOWFAST.BETA_INV, cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO)
    if problems:
        raise UserError(problems[0])
    if cfg.MODEL.HEAD_ACT not in ("softmax", "sigmoid"):
        raise UserError(f"MODEL.HEAD_ACT: {cfg.MODEL.HEAD_ACT!r} is not supported (softmax, sigmoid)")
    pathways = 2 if arch == "slowfast" else 1
    for key in ("RESNET.SPATIAL_STRIDES", "RESNET.SPATIAL_DILATIONS",
                "RESNET.NUM_BLOCK_TEMP_KERNEL", "NONLOCAL.LOCATION", "NONLOCAL.GROUP",
                "NONLOCAL.POOL"):
        value = _get(cfg, key, None)
        if value is None:
            continue
        # One entry per pathway, or one shared entry; PySlowFast reads NONLOCAL.POOL by pathway
        # index only, so its 2-entry default also serves Slow-only models.
        ok = (1, pathways) if key != "NONLOCAL.POOL" else range(1, 3)
        if len(value) != 4 or any(len(v) not in ok for v in value):
            raise UserError(f"{key}: {list(value)} must list 4 stages (res2..res5), each with "
                            f"{pathways} pathway entr{'ies' if pathways > 1 else 'y'}")


def build_model(cfg):
    check_model_keys(cfg)
    arch = cfg.MODEL.ARCH
    model = VideoResNet(
        arch=arch, num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH,
        num_groups=cfg.RESNET.NUM_GROUPS, width_per_group=cfg.RESNET.WIDTH_PER_GROUP,
        trans_func=cfg.RESNET.TRANS_FUNC, alpha=cfg.SLOWFAST.ALPHA, beta_inv=cfg.SLOWFAST.BETA_INV,
        fusion_ratio=cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO,
        fusion_kernel=cfg.SLOWFAST.FUSION_KERNEL_SZ,
        spatial_strides=cfg.RESNET.SPATIAL_STRIDES, spatial_dilations=cfg.RESNET.SPATIAL_DILATIONS,
        num_block_temp_kernel=_get(cfg, "RESNET.NUM_BLOCK_TEMP_KERNEL", None),
        nonlocal_location=_get(cfg, "NONLOCAL.LOCATION", None),
        nonlocal_group=_get(cfg, "NONLOCAL.GROUP", None),
        nonlocal_pool=_get(cfg, "NONLOCAL.POOL", None),
        nonlocal_instantiation=_get(cfg, "NONLOCAL.INSTANTIATION", "dot_product"),
        input_channels=cfg.DATA.INPUT_CHANNEL_NUM, bn_eps=_get(cfg, "BN.EPSILON", 1e-5),
        bn_mom=_get(cfg, "BN.MOMENTUM", 0.1),
        dropout=cfg.MODEL.DROPOUT_RATE,
        head_act=head_activation(cfg.DETECTION.ENABLE, cfg.MODEL.HEAD_ACT, cfg.MODEL.LOSS_FUNC),
        head_pool_size=head_pool_size(arch, cfg.DATA.NUM_FRAMES, cfg.SLOWFAST.ALPHA,
                                      cfg.DATA.TRAIN_CROP_SIZE),
        detection=cfg.DETECTION.ENABLE, roi_resolution=cfg.DETECTION.ROI_XFORM_RESOLUTION,
        spatial_scale=cfg.DETECTION.SPATIAL_SCALE_FACTOR, roi_aligned=cfg.DETECTION.ALIGNED,
        act_checkpoint=bool(_get(cfg, "MODEL.ACT_CHECKPOINT", False)),
        fc_init_std=_get(cfg, "MODEL.FC_INIT_STD", 0.01),
        zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
    )
    if _get(cfg, "MODEL.CHANNELS_LAST", False):
        model = model.to(memory_format=torch.channels_last_3d)
    if _get(cfg, "MODEL.COMPILE", False):
        model = torch.compile(model)
    return model
