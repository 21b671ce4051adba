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
import tempfile
from pathlib import Path
from typing import Callable

from slowfast_dist.errors import UserError

# what a user fixes (space, quota, permissions, a read-only mount), not a bug to trace
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


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
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise user_error_for(err, path) or err
        raise
    return path


def user_error_for(err: OSError, path=None) -> UserError | None:
    """A one-line UserError for an OSError a user fixes (no space, read-only, no permission)."""
    if err.errno not in _USER_ERRNOS:
        return None
    where = path or err.filename or "output"
    return UserError(f"{where}: cannot write: {err.strerror or err}")
