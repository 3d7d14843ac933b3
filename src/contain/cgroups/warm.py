"""Keeping the kernel's cgroup-migration lock warm while a container is created.

Moving a task into a cgroup takes the global ``cgroup_threadgroup_rwsem`` for writing;
when that lock has been idle, taking it waits for a full RCU grace period (10-25 ms on
this project's machines), and the *first* attach of every ``create`` pays it -- about a
third of a container's start-up. The lock stays cheap for one grace period after each
use. So, from the start of create until the init has been attached, a thread of the
runtime re-writes its own pid into its *own* cgroup (a no-op move) every 2 ms: the first
such write absorbs the wait in parallel with the rest of create, and the real attach
then finds the lock warm (~1 ms instead of ~10-25).
"""

from __future__ import annotations

import os


def _own_procs_file() -> str | None:
    """cgroup.procs of the cgroup this process is in (a v1 hierarchy if there is one)."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
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
            if os.path.exists(candidate):
                return candidate
    return None


class AttachWarmer:
    """Start with :meth:`start`, stop with :meth:`stop` once the init is attached."""

    INTERVAL = 0.002

    def __init__(self) -> None:
        self.running = False

    def start(self) -> None:
        path = _own_procs_file()
        if path is None:
            return
        import _thread

        self.running = True
        _thread.start_new_thread(self._loop, (path, str(os.getpid()).encode()))

    def _loop(self, path: str, pid: bytes) -> None:
        import time

        # plain os calls only: the main thread may fork meanwhile, and the child must
        # not inherit a lock this thread held
        while self.running:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            except OSError:
                self.running = False
                return
            time.sleep(self.INTERVAL)

    def stop(self) -> None:
        self.running = False
