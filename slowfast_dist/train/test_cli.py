"""`slowfast-dist test --cfg X.yaml [KEY VALUE ...]`: distributed inference and the exact mAP."""

from __future__ import annotations

from slowfast_dist.train.cli import add_arguments, config_from_args  # noqa: F401


def run(args) -> int:
    from slowfast_dist.train.launch import launch
    from slowfast_dist.train.trainer import test

    return launch(test, config_from_args(args))
