"""The one logging set-up of the training commands.

Every line: `2026-11-26 17:45:02 [rank 0] message`. Rank 0 logs at INFO, the others at WARNING
(SLOWFAST_DIST_LOG_ALL_RANKS=1 in the environment shows every rank's INFO too), so a 2-rank
run reads as one. A message that every rank would say alike (a data-set note built from
the same files) is logged with `extra=EVERY_RANK` and appears once, from rank 0. Rank 0's lines
also go to OUTPUT_DIR/train.log (appended: a resumed run continues it).

The one-line fatal errors stay outside logging (`dist/failure.py`): their wording and the
"said once" rule are a contract with the launch scripts and the tests.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

NAME = "slowfast_dist"
EVERY_RANK = {"every_rank": True}  # `extra=`: the same on every rank, said by rank 0 only


def get(name: str | None = None) -> logging.Logger:
    return logging.getLogger(f"{NAME}.{name}" if name else NAME)


class _Format(logging.Formatter):
    def __init__(self, rank: int):
        super().__init__("%(asctime)s [rank " + str(rank) + "] %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record):
        text = super().format(record)
        if record.levelno >= logging.WARNING and not record.getMessage().startswith("warning"):
            head, _, rest = text.partition("] ")
            return f"{head}] warning: {rest}"
        return text


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test's capture, a redirect
    made after the set-up), as logging's own last-resort handler does."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _OnRankZero(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record):
        return self.rank == 0 or not getattr(record, "every_rank", False)


def setup(rank: int, out_dir=None, all_ranks: bool = False) -> logging.Logger:
    """(Re)configure the package's logger for this process; returns it."""
    logger = get()
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    all_ranks = all_ranks or os.environ.get("SLOWFAST_DIST_LOG_ALL_RANKS") == "1"
    console = _Stderr()
    console.setLevel(logging.INFO if rank == 0 or all_ranks else logging.WARNING)
    handlers = [console]
    if out_dir is not None and rank == 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(out_dir) / "train.log", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(_Format(rank))
        h.addFilter(_OnRankZero(rank))
        logger.addHandler(h)
    return logger


def _before_setup() -> None:
    """Until `setup` runs (the CLIs other than train and test, library use, a worker started
    before it), warnings go to stderr as bare lines, as logging's last resort would print them,
    and not to whatever handlers the root logger has: the same lines in every process, forked
    loader workers included, whoever configured logging around us."""
    logger = get()
    if not logger.handlers:
        console = _Stderr()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
        logger.propagate = False


_before_setup()


def format_duration(seconds: float) -> str:
    """'45s', '12m05s', '3h07m'; '?' for an unknown (infinite) time."""
    if seconds == float("inf"):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineStream:
    """A file-like `stream` for code that writes whole lines (the progress meter): each line is
    an INFO record."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.info(line)
        return len(text)

    def flush(self) -> None:
        pass
