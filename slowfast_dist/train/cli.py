"""`slowfast-dist train --cfg X.yaml [KEY VALUE ...]`: the same command under every launcher.

Two layouts, as in the study:
- one process per GPU, started by a launcher (torchrun, mpirun, srun, qsub): the launcher's
  ranks are used as they are;
- one process per node that starts NUM_GPUS workers itself (PySlowFast's `tools/run_net.py`):
  `--num_shards N --shard_id I --init_method tcp://HOST:PORT`, global rank =
  SHARD_ID * NUM_GPUS + local worker. On CPU, NUM_GPUS is the number of local worker processes.
PySlowFast's flags and its `--opts KEY VALUE ...` are accepted, so its launch lines keep working.
"""

from __future__ import annotations

from slowfast_dist.cli import add_overrides


def add_arguments(parser) -> None:
    parser.add_argument("--cfg", "--cfg_file", dest="cfg", required=True, help="YAML config")
    parser.add_argument("--init-method", "--init_method", dest="init_method",
                        help="tcp://host:port rendezvous (PySlowFast's INIT_METHOD); on one node "
                             "a free local port is used when it is not given")
    parser.add_argument("--num-shards", "--num_shards", dest="num_shards", type=int,
                        help="number of nodes in PySlowFast's one-process-per-node layout")
    parser.add_argument("--shard-id", "--shard_id", dest="shard_id", type=int,
                        help="this node's index in that layout (0..num_shards-1)")
    add_overrides(parser, pyslowfast_opts=True)


def config_from_args(args):
    from slowfast_dist.config import load_config

    opts = list(args.opts) + list(getattr(args, "more_opts", None) or [])
    for key, value in (("INIT_METHOD", args.init_method), ("NUM_SHARDS", args.num_shards),
                       ("SHARD_ID", args.shard_id)):
        if value is not None:
            opts += [key, str(value)]
    return load_config(args.cfg, opts)


def entry(cfg):
    """What `train` runs for `cfg`: training, or with TRAIN.ENABLE False the test pass only, as
    PySlowFast's run_net does (its test-only recipe sets TRAIN.ENABLE False)."""
    from functools import partial

    from slowfast_dist.errors import UserError
    from slowfast_dist.train.trainer import test, train

    if cfg.TRAIN.ENABLE:
        return train
    if not cfg.TEST.ENABLE:
        raise UserError("TRAIN.ENABLE False and TEST.ENABLE False: nothing to run")
    return partial(test, why="TRAIN.ENABLE False: testing only, as PySlowFast's run_net does")


def run(args) -> int:
    from slowfast_dist.train.launch import launch

    cfg = config_from_args(args)
    return launch(entry(cfg), cfg)
