"""Keeping the kernel's cgroup-migration lock warm while a container is created.

Moving a task into a cgroup takes the global ``cgroup_threadgroup_rwsem`` for writing;
when that lock has been idle, taking it waits for a full RCU grace period (10-25 ms on
this project's machines) -- while holding ``cgroup_mutex``, so a cgroup mkdir waits too.
The lock stays cheap for about one grace period after each use.

So the commands that will attach a process to a cgroup (``create``, ``run``, ``exec``,
a sandbox with limits) run, from their very first step, a thread that writes the
runtime's own pid into its *own* cgroup (a no-op move) every few milliseconds until the
container's process has been attached: the first write absorbs the grace period while
the command parses its config and imports its modules, and the real attach then finds
the lock warm (~1 ms instead of 10-25).

The thread belongs to the command that wants it: :func:`warming` is a context manager,
and leaving it stops the thread and waits for it, whatever happened in between (a
long-lived program calling the API keeps no thread behind). The library code that does
the attach ends the warming early with :func:`stop`, as soon as it is no longer useful.

The grace period is the longest single wait of a ``create`` (12-31 ms measured here, a
cgroup mkdir waits behind it), so the first write is issued as early as possible:
this module and the package's ``__init__`` import nothing but ``posix`` (``os`` alone
costs ~1 ms), and :meth:`warming.__enter__` returns only once the thread is about to
write, instead of leaving it to wait for the GIL behind the command's imports
(docs/performance.md, the third pass).
"""

from __future__ import annotations

import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_INTERVAL = 0.004


def _own_procs_file() -> str | None:
    """cgroup.procs of the cgroup this process is in (a v1 hierarchy if there is one)."""
    try:
        fd = posix.open("/proc/self/cgroup", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    data = b""
    try:
        while chunk := posix.read(fd, 4096):
            data += chunk
    except OSError:
        return None
    finally:
        posix.close(fd)
    lines = data.decode(errors="surrogateescape").splitlines()
    v2 = None
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if ctrls in ("pids", "freezer", "memory", "cpu"):
            return f"/sys/fs/cgroup/{ctrls}{path}/cgroup.procs"
        if hid == "0":
            v2 = path
    if v2 is not None:
        for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            candidate = f"{base}{v2.rstrip('/')}/cgroup.procs"
            try:
                posix.stat(candidate)
            except OSError:
                continue
            return candidate
    return None


class warming:
    """Warm the lock while the block runs (if *enabled*, we are root and our cgroup is
    known). At most one warming runs in a process: a nested one does nothing."""

    _current: warming | None = None

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._stop: Any = None
        self._done: Any = None

    def __enter__(self) -> warming:
        if not self.enabled or warming._current is not None or posix.geteuid() != 0:
            return self
        path = _own_procs_file()
        if path is None:
            return self
        try:
            fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
        except OSError:
            return self
        import _thread

        self._stop = _thread.allocate_lock()
        self._stop.acquire()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        going = _thread.allocate_lock()
        going.acquire()
        try:
            _thread.start_new_thread(_loop, (fd, str(posix.getpid()).encode(), self._stop,
                                             self._done, going))
        except BaseException:
            posix.close(fd)
            self._stop = self._done = None
            raise
        warming._current = self
        # until the thread is at its first write: started and left alone, it would wait
        # for the GIL behind our imports (up to the 5 ms switch interval) before it
        try:
            going.acquire()
        except BaseException:  # (a signal's exception): the block never runs, so stop here
            self.__exit__()
            raise
        return self

    def stop(self) -> None:
        """End the warming; the thread finishes on its own (within one write)."""
        if self._stop is not None and self._stop.locked():
            self._stop.release()
        if warming._current is self:
            warming._current = None

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._done is not None:
            self._done.acquire()  # the thread is gone
            self._done = None


def stop() -> None:
    """The process has been attached: end the warming in progress, if any (the block
    that started it still waits for its thread)."""
    if warming._current is not None:
        warming._current.stop()


def _loop(fd: int, pid: bytes, stop: Any, done: Any, going: Any) -> None:
    # plain posix calls and the locks only: the main thread may fork meanwhile, and the
    # child must not inherit a lock this thread held; one open fd (opened by warming, ours
    # to close), so each round is one syscall (each takes and gives back the GIL, which
    # the main thread needs); the pause is a wait on the stop lock, so that stop() ends
    # it at once. *going* is released just before the first write, which gives up the
    # GIL for the (long) syscall: the main thread goes on at once.
    try:
        going.release()
        while True:
            posix.write(fd, pid)
            if stop.acquire(timeout=_INTERVAL):
                break
    except OSError:
        pass
    finally:
        posix.close(fd)
        done.release()
