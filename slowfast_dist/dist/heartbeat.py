"""Naming the rank that stopped answering, and ending the job in bounded time.

A rank that hangs (SIGSTOP, a stuck file system, a deadlock) or dies shows up on the others only as
a collective that times out after DIST.TIMEOUT_S, which names nobody, and launchers then blame
whichever rank exited first. So every rank bumps a counter in the rendezvous store every few
seconds from a thread of its own (`hb/<rank>`: one `add` per interval, a few requests per second
at 512 ranks). Rank 0 reads every counter (one `multi_get`) and the other ranks read rank 0's.
A counter that has not moved for DIST.TIMEOUT_S means that process stopped: the watcher prints one
line naming its rank, host and pid, and ends its own process, which makes every launcher
(torchrun, mpirun, srun, our spawn) end the rest. A collective that times out first is named the
same way (`describe_stalled`). A silent rank on the watcher's own host is killed (SIGKILL) first:
a stopped process does not act on the SIGTERM a launcher sends, and a launcher that waits for it
would hold the job.
"""

from __future__ import annotations

import datetime
import os
import signal
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
        self.rank, self.world = rank, world_size
        self.timeout_s = float(timeout_s)
        self.interval_s = interval_s or max(0.5, min(5.0, self.timeout_s / 6))
        # A connection of its own (the thread never waits behind the main thread's requests),
        # with a short timeout: a store whose host stopped must not hold the watcher for long.
        self.store = store.clone() if hasattr(store, "clone") else store
        if hasattr(self.store, "set_timeout"):
            self.store.set_timeout(datetime.timedelta(seconds=max(1.0, 2 * self.interval_s)))
        self.stream, self.on_stalled = stream, on_stalled or self._end_process
        self._watched = list(range(world_size)) if rank == 0 else [0]
        self._seen: dict[int, tuple[int, float]] = {}  # rank -> (counter, when it last moved)
        # rank -> (host, pid), read while the store answers
        self._where: dict[int, tuple[str, int]] = {}
        self._last_answer = time.monotonic()
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
        self._last_answer = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    self._beat()
                    stalled = self.stalled()
                    message = self.describe(stalled) if stalled else None
            except Exception:  # noqa: BLE001 - the store did not answer
                stalled, message = [], self._store_silent(self.timeout_s)
            if message and not self._stop.is_set():
                self.on_stalled(message + self._kill_local(stalled))
                return

    def _store_silent(self, bar: float) -> str | None:
        """The store has not answered for `bar` seconds: the process serving it (rank 0, or
        torchrun's agent) hangs or died; None while that is more recent."""
        silent = time.monotonic() - self._last_answer
        if silent < bar:
            return None
        who = f" ({self._who(0)})" if 0 in self._where else ""
        return (f"the rendezvous store has not answered for {silent:.0f} s: rank 0{who}, or "
                f"the launcher serving it, hangs or died (DIST.TIMEOUT_S {self.timeout_s:g}). "
                "Ending the job")

    def stalled(self, now: float | None = None) -> list[tuple[int, float]]:
        """[(rank, seconds without a heartbeat)] of the watched ranks silent for the timeout."""
        now = time.monotonic() if now is None else now
        keys = [f"hb/{r}" for r in self._watched]
        values = self.store.multi_get(keys)
        self._learn_who()
        out = []
        for r, raw in zip(self._watched, values):
            count = int(raw or b"0")
            last = self._seen.get(r)
            if last is None or last[0] != count:
                self._seen[r] = (count, now)
            elif now - last[1] >= self.timeout_s and not self.store.check([f"hb/done/{r}"]):
                out.append((r, now - last[1]))
        return out

    def _learn_who(self) -> None:
        """Host and pid of the watched ranks, read once they are all in the store (later the
        store may not answer: its host may be the rank that stopped)."""
        if len(self._where) == len(self._watched):
            return
        keys = [f"hb/who/{r}" for r in self._watched]
        if self.store.check(keys):
            for r, raw in zip(self._watched, self.store.multi_get(keys)):
                host, pid = raw.decode().split()
                self._where[r] = (host, int(pid))

    def _who(self, rank: int) -> str:
        return "host {}, pid {}".format(*self._where[rank])

    def _kill_local(self, stalled) -> str:
        """SIGKILL the silent ranks that run beside this one: on this host, not this process,
        and children of this process's parent (the launcher's agent or proxy, or the spawning
        process), so a pid of another container or a reused pid is never hit. Silent for half
        of DIST.TIMEOUT_S at least: a beat comes every sixth of it from a thread of its own, and
        after a collective timed out the silence is seen from its first unanswered poll, up to a
        beat after it began. What was done, as the end of the message."""
        here, killed = socket.gethostname(), []
        for r, age in stalled:
            host, pid = self._where.get(r, (None, None))
            if (age < self.timeout_s / 2 or host != here or pid == os.getpid()
                    or _parent_of(pid) != os.getppid()):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(str(pid))
            except OSError:  # gone already, or not ours
                pass
        return f" (killed pid {', '.join(killed)} on this host)" if killed else ""

    def describe(self, stalled) -> str:
        parts = [f"rank {r}" + (f" ({self._who(r)})" if r in self._where else "")
                 for r, _ in stalled]
        age = max(a for _, a in stalled)
        return (f"{', '.join(parts)} stopped answering: no heartbeat for {age:.0f} s "
                f"(DIST.TIMEOUT_S {self.timeout_s:g}); it hangs or died. Ending the job")

    def describe_stalled(self) -> str | None:
        """After a collective failed here: who went silent, or None. A collective that timed
        out already waited DIST.TIMEOUT_S, and one whose peer died fails at once, so a rank
        counts as silent after two missed beats; this waits up to three beats to see it."""
        deadline = time.monotonic() + 3 * self.interval_s
        while True:
            if self._lock.acquire(timeout=3 * self.interval_s):
                try:
                    now = time.monotonic()
                    self.stalled(now)
                    self._last_answer = now
                    silent = [(r, now - t) for r, (_, t) in self._seen.items()
                              if r != self.rank and now - t >= 2 * self.interval_s
                              and not self.store.check([f"hb/done/{r}"])]
                    if silent:
                        return self.describe(silent) + self._kill_local(silent)
                except Exception:  # noqa: BLE001 - the store itself does not answer
                    return self._store_silent(0)
                finally:
                    self._lock.release()
            if time.monotonic() > deadline:
                return self._store_silent(2 * self.interval_s)
            time.sleep(self.interval_s / 2)

    def _end_process(self, message: str) -> None:
        from slowfast_dist.dist.failure import end_now

        end_now(f"slowfast-dist: error: rank {self.rank}: {message}", EXIT_CODE, self.stream)


def _parent_of(pid: int) -> int | None:
    """The parent pid of `pid` from /proc (None where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
