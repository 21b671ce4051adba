"""Naming the rank that stopped answering, and ending the job in bounded time.

A rank that hangs (SIGSTOP, a stuck file system, a deadlock) or dies shows up on the others only as
a collective that times out after DIST.TIMEOUT_S, which names nobody, and launchers then blame
whichever rank exited first. So every rank bumps a counter in the rendezvous store every few
seconds from a thread of its own (`hb/<rank>`: one `add` per interval, a few requests per second
at 512 ranks). Rank 0 reads every counter (one `multi_get`) and the other ranks read rank 0's.
A counter that has not moved for DIST.TIMEOUT_S means that process stopped: the watcher prints one
line naming its rank, host and pid, and ends its own process, which makes every launcher
(torchrun, mpirun, srun, our spawn) end the rest. A collective that times out first is named the
same way (`describe_stalled`).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

EXIT_CODE = 1
_current: "Heartbeat | None" = None


def current() -> "Heartbeat | None":
    """This process's running heartbeat, if any."""
    return _current


class Heartbeat:
    def __init__(self, store, rank: int, world_size: int, timeout_s: float,
                 interval_s: float | None = None, stream=sys.stderr, on_stalled=None):
        """`store`: the process group's (c10d Store). `on_stalled(message)`: what the watcher does
        when a rank stopped answering (default: print it and end this process)."""
        # a connection of its own: the thread never waits behind the main thread's requests
        self.store = store.clone() if hasattr(store, "clone") else store
        self.rank, self.world = rank, world_size
        self.timeout_s = float(timeout_s)
        self.interval_s = interval_s or max(0.5, min(5.0, self.timeout_s / 6))
        self.stream, self.on_stalled = stream, on_stalled or self._end_process
        self._watched = list(range(world_size)) if rank == 0 else [0]
        self._seen: dict[int, tuple[int, float]] = {}  # rank -> (counter, when it last moved)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one store connection, two threads
        self._thread = None
        self.store.set(f"hb/who/{rank}", f"{socket.gethostname()} {os.getpid()}")

    def start(self) -> "Heartbeat":
        global _current
        for r in self._watched:  # create the counters: a get of a missing key would block
            self.store.add(f"hb/{r}", 0)
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True, name="slowfast-heartbeat")
        self._thread.start()
        _current = self
        return self

    def stop(self) -> None:
        """This rank finished: the watchers stop expecting it."""
        global _current
        self._stop.set()
        _current = None
        try:
            with self._lock:
                self.store.set(f"hb/done/{self.rank}", "1")
        except Exception:  # noqa: BLE001 - the store may be gone already
            pass

    def _beat(self) -> None:
        self.store.add(f"hb/{self.rank}", 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    self._beat()
                    stalled = self.stalled()
                    message = self.describe(stalled) if stalled else None
            except Exception:  # noqa: BLE001 - the store is gone: the job is ending anyway
                return
            if message:
                self.on_stalled(message)
                return

    def stalled(self, now: float | None = None) -> list[tuple[int, float]]:
        """[(rank, seconds without a heartbeat)] of the watched ranks silent for the timeout."""
        now = time.monotonic() if now is None else now
        keys = [f"hb/{r}" for r in self._watched]
        values = self.store.multi_get(keys)
        out = []
        for r, raw in zip(self._watched, values):
            count = int(raw or b"0")
            last = self._seen.get(r)
            if last is None or last[0] != count:
                self._seen[r] = (count, now)
            elif now - last[1] >= self.timeout_s and not self.store.check([f"hb/done/{r}"]):
                out.append((r, now - last[1]))
        return out

    def describe(self, stalled) -> str:
        parts = []
        for r, age in stalled:
            where = ""
            try:
                if self.store.check([f"hb/who/{r}"]):
                    host, pid = self.store.get(f"hb/who/{r}").decode().split()
                    where = f" (host {host}, pid {pid})"
            except Exception:  # noqa: BLE001
                pass
            parts.append(f"rank {r}{where}")
        age = max(a for _, a in stalled)
        return (f"{', '.join(parts)} stopped answering: no heartbeat for {age:.0f} s "
                f"(DIST.TIMEOUT_S {self.timeout_s:g}); it hangs or died. Ending the job")

    def describe_stalled(self) -> str | None:
        """After a collective failed here: who went silent, or None. A collective that timed
        out already waited DIST.TIMEOUT_S, and one whose peer died fails at once, so a rank
        counts as silent after two missed beats; this waits up to three beats to see it."""
        deadline = time.monotonic() + 3 * self.interval_s
        while True:
            try:
                with self._lock:
                    now = time.monotonic()
                    self.stalled(now)
                    silent = [(r, now - t) for r, (_, t) in self._seen.items()
                              if r != self.rank and now - t >= 2 * self.interval_s
                              and not self.store.check([f"hb/done/{r}"])]
                    if silent:
                        return self.describe(silent)
            except Exception:  # noqa: BLE001 - the store itself is gone (rank 0 died?)
                return None
            if time.monotonic() > deadline:
                return None
            time.sleep(self.interval_s / 2)

    def _end_process(self, message: str) -> None:
        from slowfast_dist.dist.failure import record_for_torchrun

        message = f"slowfast-dist: error: rank {self.rank}: {message}"
        print(message, file=self.stream, flush=True)
        record_for_torchrun(message, EXIT_CODE)
        os._exit(EXIT_CODE)  # no clean-up that could wait on the silent rank (MPI_Finalize)
