"""`slowfast-dist train --cfg X.yaml [KEY VALUE ...]`: the same command under every launcher.

PySlowFast's flags are accepted too (`--init_method`, `--num_shards`, `--shard_id`), so its
launch lines keep working.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--cfg", "--cfg_file", dest="cfg", required=True, help="YAML config")
    parser.add_argument("--init-method", "--init_method", dest="init_method",
                        help="tcp://host:port rendezvous (PySlowFast's INIT_METHOD)")
    parser.add_argument("--num-shards", "--num_shards", dest="num_shards", type=int,
                        help="number of nodes in PySlowFast's one-process-per-node layout")
    parser.add_argument("--shard-id", "--shard_id", dest="shard_id", type=int,
                        help="this node's index in that layout")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def config_from_args(args):
    from slowfast_dist.config import load_config

    opts = list(args.opts)
    for key, value in (("INIT_METHOD", args.init_method), ("NUM_SHARDS", args.num_shards),
                       ("SHARD_ID", args.shard_id)):
        if value is not None:
            opts += [key, str(value)]
    return load_config(args.cfg, opts)


def run(args) -> int:
    from slowfast_dist.train.trainer import guarded, train

    return guarded(train, config_from_args(args))
