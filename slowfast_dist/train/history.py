"""A run's history in OUTPUT_DIR: every attempt's own copies of its files, `last` and `best`
pointers among the checkpoints, and at most TRAIN.CHECKPOINT_KEEP epoch checkpoints.

A resumed or repeated run in the same OUTPUT_DIR used to overwrite config.yaml, summary.json and
profile_summary.json. The top-level files are still the latest attempt's (what PySlowFast users
and scripts read); `attempts/NNN/` keeps each attempt's. The pointers are relative symlinks
`checkpoints/last.pyth` and `checkpoints/best.pyth` (by mAP, with `best.json` saying which
epoch): neither name contains "checkpoint", so neither PySlowFast's resume nor ours takes them for
a checkpoint of their own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from slowfast_dist import logs
from slowfast_dist.train import checkpoint as ckpt


def new_attempt(out) -> Path:
    """attempts/NNN for this run: one more than the attempts already there."""
    root = Path(out) / "attempts"
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    n = max(taken, default=0) + 1
    while True:  # two runs started at once in one OUTPUT_DIR: each gets its own
        try:
            path = root / f"{n:03d}"
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def keep(path, attempt) -> None:
    """A copy of `path` (written at the top level) in this attempt's folder."""
    if attempt is not None and Path(path).exists():
        shutil.copy2(path, Path(attempt) / Path(path).name)


def point(out, name: str, target: Path) -> None:
    """checkpoints/<name>.pyth -> target, replaced atomically."""
    folder = ckpt.checkpoint_dir(out)
    link, tmp = folder / f"{name}.pyth", folder / f".{name}.pyth.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(Path(target).name, tmp)
        os.replace(tmp, link)
    except OSError as err:  # a file system without symlinks: the run goes on without pointers
        logs.get("history").warning(
            f"{link}: cannot point it at {Path(target).name} ({err.strerror})")


def best_record(out) -> dict | None:
    try:
        return json.loads((ckpt.checkpoint_dir(out) / "best.json").read_text())
    except (OSError, ValueError):
        return None


def record_best(out, epoch: int, map_: float, target: Path) -> bool:
    """Point `best` at `target` when `map_` beats the best so far; True when it did."""
    best = best_record(out)
    if best is not None and best["mAP"] >= map_:
        return False
    text = json.dumps({"epoch": epoch, "mAP": map_, "file": Path(target).name}, indent=1)
    from slowfast_dist.files import atomic_write

    atomic_write(ckpt.checkpoint_dir(out) / "best.json", lambda f: f.write(text.encode()),
                 fsync=False)
    point(out, "best", target)
    return True


def forget_best(out) -> None:
    """A run that starts afresh (not a resume) owes nothing to an older run's best."""
    folder = ckpt.checkpoint_dir(out)
    for name in ("best.json", "best.pyth"):
        (folder / name).unlink(missing_ok=True)


def prune(out, keep_last: int, newest: Path) -> list[Path]:
    """Remove all but the `keep_last` end-of-epoch checkpoints up to `newest` (the one just
    saved, never removed), never the best one, nor any later one (an older run's, when
    AUTO_RESUME was off); returns what was removed. 0 keeps everything."""
    if keep_last <= 0:
        return []
    best = best_record(out)
    spared = {best["file"]} if best else set()
    epochs = [p for p in ckpt.list_checkpoints(out) if "_step_" not in p.name]
    upto = [p for p in epochs if p.name <= Path(newest).name]  # fixed-width numbers: name order
    removed = [p for p in upto[:-keep_last] if p.name not in spared and p.name != Path(newest).name]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
