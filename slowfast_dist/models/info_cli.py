"""`slowfast-dist model-info --cfg X.yaml [KEY VALUE ...]`: params, GFLOPs per view, stage shapes."""

from slowfast_dist.cli import add_overrides


def add_arguments(parser):
    parser.add_argument("--cfg", required=True, help="YAML config (PySlowFast files accepted)")
    parser.add_argument("--json", action="store_true", help="print params, gflops, state_dict as JSON")
    add_overrides(parser)


def input_shapes(arch, num_frames, alpha, crop, channels):
    """Per-pathway [1, C, T, H, W] for one view (Slow subsamples Fast by alpha)."""
    if arch == "slowfast":
        return [(1, channels[0], num_frames // alpha, crop, crop), (1, channels[1], num_frames, crop, crop)]
    return [(1, channels[0], num_frames, crop, crop)]


def run(args) -> int:
    import torch

    with torch.no_grad():  # scoped: callers in the same process keep autograd
        return _report(args)


def _report(args) -> int:
    import json

    import torch

    from slowfast_dist.config import cfg_ignored_keys, load_config
    from slowfast_dist.models import build_model
    from slowfast_dist.profiling.mfu import conv_macs, flop_analysis

    cfg = load_config(args.cfg, list(args.opts))
    cfg.defrost()
    cfg.MODEL.COMPILE = False  # FLOP counting traces the eager model
    model = build_model(cfg).eval()
    crop = cfg.DATA.TEST_CROP_SIZE
    shapes = input_shapes(cfg.MODEL.ARCH, cfg.DATA.NUM_FRAMES, cfg.SLOWFAST.ALPHA, crop,
                          cfg.DATA.INPUT_CHANNEL_NUM)
    xs = [torch.zeros(s) for s in shapes]
    boxes = torch.tensor([[0, 0.0, 0.0, crop - 1.0, crop - 1.0]]) if cfg.DETECTION.ENABLE else None
    params = sum(p.numel() for p in model.parameters())
    fca = flop_analysis(model, xs, boxes)
    # PySlowFast's figures (fvcore flop_count) count conv/linear/matmul, not normalisation;
    # the per-stage table below includes BN.
    gflops = conv_macs(fca) / 1e9
    sd = model.state_dict()
    if args.json:
        print(json.dumps({"params": params, "gflops": gflops,
                          "state_dict": [[k, list(v.shape)] for k, v in sd.items()]}))
        return 0
    trace = []
    model.forward_features(xs, trace)
    print(f"config: {args.cfg}")
    print(f"input per view: {shapes}")
    print(f"params: {params / 1e6:.3f} M   GFLOPs per view: {gflops:.2f}")
    by_mod = fca.by_module()
    print(f"{'stage':10s} {'GFLOPs':>8s}  output shapes")
    for name, out in trace:
        print(f"{name:10s} {by_mod.get(name, 0) / 1e9:8.2f}  {out}")
    print(f"{'head':10s} {by_mod.get('head', 0) / 1e9:8.2f}")
    ignored = cfg_ignored_keys(cfg)
    if ignored:
        print("ignored PySlowFast keys: " + ", ".join(sorted(ignored)))
    return 0
