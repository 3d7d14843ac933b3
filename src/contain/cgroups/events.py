"""OOM notification and the event stream of ``events``.

v1: an eventfd registered on memory.oom_control through cgroup.event_control (the kernel
signals it at every OOM of the cgroup, and once more when the cgroup is removed).
v2: memory.events, whose changes wake poll() with POLLPRI (kernfs notification); the
"oom_kill" and "oom" counters say whether an OOM happened.
"""

from __future__ import annotations

import os

from contain.cgroups.fs import write_text
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from contain.cgroups import Manager


class OOMWatcher:
    """A pollable fd that fires on OOM in the cgroup; :meth:`consume` counts the OOMs."""

    __slots__ = ("_counts", "_ctl", "_dir", "events_mask", "fd", "kind")

    def __init__(self, mgr: Manager) -> None:
        import select

        self._ctl = -1
        mem = mgr.paths().get("memory") if mgr.layout != "v2" else None
        if mem:
            self.kind = "v1"
            self._dir = mem
            self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            try:
                self._ctl = os.open(f"{mem}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
                write_text(mem, "cgroup.event_control", f"{self.fd} {self._ctl}")
            except OSError as exc:
                self.close()
                raise ContainError(f"cannot watch OOM events of {mem}: {exc.strerror}") \
                    from exc
            self.events_mask = select.POLLIN
            self._counts = (0, 0)
            return
        u = mgr.unified()
        if not u:
            raise ContainError("no memory controller to watch for OOM events")
        self.kind = "v2"
        self._dir = u
        try:
            self.fd = os.open(f"{u}/memory.events", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ContainError(f"cannot watch OOM events of {u}: {exc.strerror}") from exc
        self.events_mask = select.POLLPRI | select.POLLERR
        self._counts = self._read_counts()

    def _read_counts(self) -> tuple[int, int]:
        # read through the polled fd: that is what re-arms kernfs' POLLPRI
        os.lseek(self.fd, 0, os.SEEK_SET)
        ev: dict[str, int] = {}
        for line in os.read(self.fd, 4096).decode().splitlines():
            k, _, v = line.partition(" ")
            if v.isdigit():
                ev[k] = int(v)
        return ev.get("oom", 0), ev.get("oom_kill", 0)

    def consume(self) -> int:
        """How many OOMs happened since the last call (0 for a spurious wake-up)."""
        if self.kind == "v1":
            try:
                n = os.eventfd_read(self.fd)
            except BlockingIOError:
                return 0
            except OSError:
                return 0
            # the kernel also signals when the cgroup goes away: that is not an OOM
            return int(n) if os.path.isdir(self._dir) else 0
        try:
            counts = self._read_counts()
        except OSError:
            return 0
        new = max(counts[0] - self._counts[0], counts[1] - self._counts[1], 0)
        self._counts = counts
        return new

    def close(self) -> None:
        for fd in (self.fd, self._ctl):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self._ctl = -1


def stream(mgr: Manager, cid: str, interval: float, *, stats: bool = True,
           alive: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Yield runc-shaped events: {"type": "stats", "id", "data"} every *interval* seconds
    and {"type": "oom", "id"} at each OOM, until the cgroup is removed (or *alive* says
    the container is gone)."""
    import select
    import time

    watcher: OOMWatcher | None
    try:
        watcher = OOMWatcher(mgr)
    except ContainError:
        watcher = None
    poller = select.poll()
    if watcher is not None:
        poller.register(watcher.fd, watcher.events_mask)
    try:
        next_tick = time.monotonic() + interval
        while mgr.exists() and (alive is None or alive()):
            timeout = max(0.0, next_tick - time.monotonic())
            if watcher is not None:
                ready = poller.poll(timeout * 1000)
            else:
                time.sleep(timeout)
                ready = []
            if ready and watcher is not None:
                n = watcher.consume()
                for _ in range(min(n, 1000)):
                    yield {"type": "oom", "id": cid}
            if time.monotonic() >= next_tick:
                next_tick += interval
                if stats and mgr.exists():
                    try:
                        data = mgr.stats().to_json()
                    except OSError:
                        continue
                    yield {"type": "stats", "id": cid, "data": data}
    finally:
        if watcher is not None:
            watcher.close()
