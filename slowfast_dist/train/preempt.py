"""Preemption: SIGTERM, SIGUSR1 and SIGUSR2 stop the run at a step boundary with a checkpoint.

Schedulers signal a job before they end it: SLURM sends SIGTERM at the time limit or on
preemption (and the signal of `--signal=USR1@120` earlier), Grid Engine SIGUSR1/SIGUSR2 under
`-notify`, PBS SIGTERM; Open MPI's mpirun forwards SIGUSR1/SIGUSR2 to every rank. The handler only
notes the signal. Ranks must stop at the same step, or one would wait in an allreduce for the
others forever, so the note travels in the one all-reduce the meter already makes every
LOG_PERIOD steps (`meters.py`): every rank learns it at the same step, finishes the gradient
accumulation window, and stops. So the stop comes within LOG_PERIOD steps: keep LOG_PERIOD x the
step time well inside the scheduler's grace period (SLURM's KillWait, torchrun's wait before
SIGKILL: 30 s by default), or ask for an early signal (`sbatch --signal=USR1@120`). Rank 0 then writes a mid-epoch checkpoint and every rank exits
with status 75 (EX_TEMPFAIL), which the launch scripts turn into a requeue; the relaunch resumes
at the next step.
"""

from __future__ import annotations

import signal
import sys

EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: stopped on request, resume by running it again
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint; run the same command to resume."""

    exit_code = EXIT_CODE


class StopSignals:
    """While installed, the stop signals are noted (`requested`) instead of ending the process.
    Only the main thread can install handlers; elsewhere this does nothing."""

    def __init__(self, announce: bool = True, stream=sys.stderr):
        """`announce`: say so when a signal arrives (rank 0; the others stay quiet)."""
        self.requested: str | None = None
        self._announce, self._stream, self._old = announce, stream, {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            return  # stopping: a second signal (a launcher passing it on) must not kill the exit
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _note(self, signum, _frame):
        if self.requested is None:
            self.requested = signal.Signals(signum).name
            if self._announce:
                print(f"slowfast-dist: {self.requested} received: stopping at the next logging "
                      "step with a checkpoint", file=self._stream, flush=True)

    def __call__(self) -> bool:
        return self.requested is not None
