"""Writing the run's files: atomically, with the permissions the umask gives, and a failure that
names the file.

`tempfile.mkstemp` creates files mode 0600 whatever the umask, so a checkpoint written through it
and renamed into place could not be read by the rest of a group on a shared cluster; the mode is
set from the umask before the rename. A full disk or a read-only OUTPUT_DIR is the user's to fix:
`user_error_for` turns such an OSError into one line naming the path.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from slowfast_dist.errors import UserError

# what a user fixes (space, quota, permissions, a read-only mount), not a bug to trace
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
                errno.ENOTDIR, errno.EEXIST}
# what the system's own words leave unsaid about a path the user gave
_WHY = {errno.ENOTDIR: "a file where a folder is needed, on the way to this path",
        errno.EEXIST: "a file where a folder is needed",
        errno.EISDIR: "a folder where a file is needed"}


def umask_mode(base: int = 0o666) -> int:
    """`base` less the process umask (read without changing it for more than an instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def atomic_write(path, write: Callable, *, prefix: str = ".partial_", fsync: bool = True) -> Path:
    """`write(binary file)` into a temporary file in `path`'s folder, then rename it to `path`:
    a reader never sees half a file and a failed write leaves the old one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise user_error_for(err, path) or err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException as err:
        # torch.save reports a full disk as a RuntimeError of its zip writer ("unexpected pos"),
        # not as an OSError: look at the disk before the partial file frees its space
        full = isinstance(err, RuntimeError) and _nearly_full(path.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise UserError(f"{path}: cannot write: No space left on device") from None
        if isinstance(err, RuntimeError) and re.search(_TORCH_WRITE_FAILED, str(err)):
            # a quota, or one full storage target of a parallel file system: free space looks
            # fine from here, and torch says only that its write stopped short
            first = str(err).strip().splitlines()[0][:160]
            raise UserError(f"{path}: cannot write (a full disk or quota? torch: {first})") from None
        if isinstance(err, OSError):
            raise user_error_for(err, path) or err
        raise
    return path


_TORCH_WRITE_FAILED = r"unexpected pos|PytorchStreamWriter failed|file write failed"


def _nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # only a write meets these


def user_error_for(err: OSError, path=None, writing: bool | None = True) -> UserError | None:
    """A one-line UserError for an OSError a user fixes (no space, read-only, no permission).
    `writing`: the failed operation was a write (True), or may have been a read (False or None:
    "cannot write" only for the errors that only a write meets)."""
    if err.errno not in _USER_ERRNOS:
        return None
    where = path or err.filename or "output"
    why = f" ({_WHY[err.errno]})" if err.errno in _WHY else ""
    verb = "cannot write: " if writing or err.errno in _WRITE_ERRNOS else ""
    return UserError(f"{where}: {verb}{err.strerror or err}{why}")
