"""`slowfast-dist convert-checkpoint IN.pkl OUT.pyth [--cfg X.yaml] [KEY VALUE ...]`: a PySlowFast
zoo Caffe2 checkpoint as a .pyth, its names checked against the model the config builds."""

from slowfast_dist.cli import add_overrides

DEFAULT_CFG = "configs/AVA/SLOWFAST_32x2_R50.yaml"


def add_arguments(parser):
    parser.add_argument("input", help="Caffe2 .pkl from PySlowFast's model zoo (a 2D model's: "
                                      "add the override TRAIN.CHECKPOINT_INFLATE True)")
    parser.add_argument("output", help=".pyth to write (PySlowFast's checkpoint layout)")
    parser.add_argument("--cfg", default=None, help="YAML config of the model the weights are "
                                                     f"for (default {DEFAULT_CFG})")
    add_overrides(parser)  # parsed intermixed: `IN OUT --cfg X KEY VALUE` works


def _config_path(given):
    from pathlib import Path

    if given:
        return given
    here = Path(DEFAULT_CFG)
    if here.is_file():
        return str(here)
    beside = Path(__file__).resolve().parents[2] / DEFAULT_CFG  # run from outside a checkout
    return str(beside if beside.is_file() else here)


def run(args) -> int:
    import os
    import sys

    import torch

    from slowfast_dist.config import load_config
    from slowfast_dist.errors import UserError
    from slowfast_dist.files import atomic_write
    from slowfast_dist.models import build_model
    from slowfast_dist.models.caffe2_weights import read_caffe2_weights
    from slowfast_dist.train.finetune import pretrained_weights

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
        raise UserError(f"{args.output}: is the input checkpoint; writing it would replace the "
                        "Caffe2 file (give the .pyth another name)")
    cfg = load_config(_config_path(args.cfg), list(args.opts))
    cfg.defrost()
    cfg.MODEL.COMPILE = False  # only the state dict's names and shapes are needed
    own = build_model(cfg).state_dict()
    conv = read_caffe2_weights(args.input, own, log=log)
    # The same check as training from it: a UserError (exit 2) for a tensor that does not fit.
    fitted, left = pretrained_weights(conv.weights, own, inflate=cfg.TRAIN.CHECKPOINT_INFLATE,
                                      clear_name_patterns=[], path=args.input, log=log,
                                      source_names=conv.sources)
    inflated = sum(1 for k, v in conv.weights.items()
                   if k not in left and fitted[k].shape != v.shape)
    # The converted tensors as the file has them (a Kinetics head, 2D kernels): the .pyth path
    # then applies the same head and inflation rules as the .pkl would. No `epoch`: PySlowFast
    # would then also load an `optimizer_state`, which a zoo file does not have.
    state = {"model_state": conv.weights, "cfg": cfg.dump()}
    atomic_write(args.output, lambda f: torch.save(state, f))
    print(f"{args.input}: {conv.read} blobs read, {len(conv.weights)} mapped, "
          f"{len(conv.skipped)} skipped (training state), {len(conv.unmapped)} unmapped, "
          f"{inflated} inflated, {len(conv.reshaped)} reshaped; wrote {args.output}")
    return 0
