"""How a failing rank says why: once for the job, and in a form launchers pass on.

Every rank usually meets the same user error (a bad key, a missing file): printed by each, a
512-rank job buries the one line under 511 copies. So a rank whose process group is up posts
its message to the rendezvous store, and only the first rank with a given message prints it; a
rank that meets a different one prints its own. Before the group is up (config errors), only
rank 0 prints: those errors are the same on every rank.

Under torchrun the message also goes to the rank's error file (TORCHELASTIC_ERROR_FILE), which
torchrun shows as the root cause instead of its own traceback, with the rank's exit status, and
copies into its own error file when the launch script sets one (launch/torchrun.sh reads the
status back from there: torchrun itself exits 1 whatever its workers returned).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time


def say_once(message: str, exit_code: int, stream=None) -> None:
    """Print `message` unless another rank of this job printed the same; record it for torchrun."""
    stream = stream or sys.stderr
    if _first_to_say(message):
        print(message, file=stream, flush=True)
    record_for_torchrun(message, exit_code)


def _first_to_say(message: str) -> bool:
    if "torch" not in sys.modules:  # no process group without torch (the evaluator's CLI)
        return _env_rank() == 0
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            store = dist.distributed_c10d._get_default_store()
            key = "failure/" + hashlib.sha1(message.encode()).hexdigest()  # same text, same key
            return store.add(key, 1) == 1
    except Exception:  # noqa: BLE001 - a broken store: say it rather than stay silent
        return True
    return _env_rank() == 0


def _env_rank() -> int:
    """This process's rank as its launcher numbered it (0 without one), read as
    init_distributed reads it."""
    from slowfast_dist.dist.env import world_info_from_env

    try:
        return world_info_from_env(os.environ).rank
    except Exception:  # noqa: BLE001 - an environment it cannot read: say the error anyway
        return 0


def end_now(message: str, exit_code: int, stream=None) -> None:
    """Say `message` (and record it for torchrun), then end this process at once: an orderly
    exit could wait on what failed (a silent rank in MPI_Finalize, a stuck loader worker)."""
    print(message, file=stream or sys.stderr, flush=True)
    record_for_torchrun(message, exit_code)
    os._exit(exit_code)


def record_for_torchrun(message: str, exit_code: int) -> None:
    """Write torchrun's error file for this rank (no-op elsewhere)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": message, "errorCode": exit_code,
                        # torchrun prints py_callstack as the failure's "traceback"
                        "extraInfo": {"py_callstack": message,
                                      "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass
