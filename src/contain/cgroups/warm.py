"""Keeping the kernel's cgroup-migration lock warm while a container is created.

Moving a task into a cgroup takes the global ``cgroup_threadgroup_rwsem`` for writing;
when that lock has been idle, taking it waits for a full RCU grace period (10-25 ms on
this project's machines) -- while holding ``cgroup_mutex``, so a cgroup mkdir waits too.
The lock stays cheap for about one grace period after each use.

So ``create``, ``run`` and ``exec`` start, as their very first step, a thread that writes
the runtime's own pid into its *own* cgroup (a no-op move) every few milliseconds until
the container's process has been attached: the first write absorbs the grace period
while the command parses its config and imports its modules, and the real attach then
finds the lock warm (~1 ms instead of 10-25).
"""

from __future__ import annotations

import os

_INTERVAL = 0.004
_state = {"running": False}


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


def start() -> None:
    """Start warming (once per process; only root may move itself)."""
    if _state["running"] or os.geteuid() != 0:
        return
    path = _own_procs_file()
    if path is None:
        return
    import _thread

    _state["running"] = True
    _thread.start_new_thread(_loop, (path, str(os.getpid()).encode()))


def _loop(path: str, pid: bytes) -> None:
    import time

    # plain os calls only: the main thread may fork meanwhile, and the child must not
    # inherit a lock this thread held; one open fd, so each round is one syscall (each
    # takes and gives back the GIL, which the main thread needs)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        _state["running"] = False
        return
    try:
        while _state["running"]:
            os.write(fd, pid)
            time.sleep(_INTERVAL)
    except OSError:
        _state["running"] = False
    finally:
        os.close(fd)


def stop() -> None:
    _state["running"] = False
