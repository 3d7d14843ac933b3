"""What a seccomp user-notification supervisor needs beyond the listener ioctls of
:mod:`contain.linux.seccomp`: the synchronous wake-up flag, per-thread credentials (the
supervisor opens files *as the workload*), thread pidfds, and reads of a target's memory.

Per-thread on purpose: glibc's setresuid/setgroups change every thread of the process
(its "setxid broadcast"); the raw system calls change only the calling thread, which is
what a supervisor that acts for many workloads at once wants.
"""

from __future__ import annotations

import errno
import os

from contain.linux import native as ctypes
from contain.linux.seccomp import (  # noqa: F401  (re-exported for the supervisors)
    _NOTIF,
    _NOTIF_RESP,
    SECCOMP_ADDFD_FLAG_SEND,
    SECCOMP_ADDFD_FLAG_SETFD,
    SECCOMP_IOCTL_NOTIF_RECV,
    SECCOMP_IOCTL_NOTIF_SEND,
    SECCOMP_USER_NOTIF_FLAG_CONTINUE,
    Notification,
    _ioc,
    notif_addfd,
    notif_id_valid,
    notif_recv,
    notif_send,
)

SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
SECCOMP_IOCTL_NOTIF_SET_FLAGS = _ioc(1, 4, 8)  # _IOW('!', 4, __u64), Linux 6.6

_syscall = ctypes.function("syscall", ctypes.c_long)

_NR_X86_64 = {"setfsuid": 122, "setfsgid": 123, "setgroups": 116, "setresuid": 117,
              "setresgid": 119, "pidfd_open": 434, "process_madvise": 440}
_NR_AARCH64 = {"setfsuid": 151, "setfsgid": 152, "setgroups": 159, "setresuid": 147,
               "setresgid": 149, "pidfd_open": 434, "process_madvise": 440}
NR = _NR_AARCH64 if os.uname().machine == "aarch64" else _NR_X86_64

PIDFD_THREAD = os.O_EXCL  # Linux 6.9: a pidfd for a thread, not only a leader


def set_sync_wakeup(listener_fd: int) -> bool:
    """Ask the kernel to wake the target on the supervisor's CPU when it answers
    (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6+): the round trip becomes a
    context switch instead of a cross-CPU wake-up. False when the kernel lacks it."""
    import fcntl

    try:  # the flags are the ioctl's argument itself, not a pointer to them
        fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    except OSError:
        return False
    return True


class Receiver:
    """The supervisor's receive/answer pair without per-call buffers or wrappers: one
    preallocated struct seccomp_notif (zeroed before each receive, as the kernel
    insists), the raw ioctl (OSError as it comes: the loop handles ENOENT and EINTR),
    and the answer packed straight into its ioctl.

    ``recv(fd)`` returns the struct's fields as a tuple: (id, pid, flags, nr, arch,
    instruction_pointer, arg0..arg5)."""

    __slots__ = ("answer", "recv")

    def __init__(self) -> None:
        import fcntl

        buf = bytearray(_NOTIF.size)
        zero = bytes(_NOTIF.size)
        ioctl = fcntl.ioctl
        unpack = _NOTIF.unpack_from
        pack = _NOTIF_RESP.pack
        recv_req = SECCOMP_IOCTL_NOTIF_RECV
        send_req = SECCOMP_IOCTL_NOTIF_SEND

        def recv(fd: int) -> tuple[int, ...]:
            buf[:] = zero
            ioctl(fd, recv_req, buf, True)
            return unpack(buf)

        def answer(fd: int, nid: int, val: int, error: int, flags: int) -> None:
            """NOTIF_SEND: *error* is a negative errno (0: return *val*)."""
            ioctl(fd, send_req, pack(nid, val, error, flags))

        self.recv = recv
        self.answer = answer


def _raw(name: str, *args: int) -> int:
    ret = _syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return int(ret)


def thread_setfsuid(uid: int) -> int:
    """setfsuid(2) for the calling thread only; returns the previous fsuid."""
    return _raw("setfsuid", uid)


def thread_setfsgid(gid: int) -> int:
    return _raw("setfsgid", gid)


def thread_setgroups(groups: list[int]) -> None:
    """setgroups(2) for the calling thread only (the raw call: glibc's broadcasts)."""
    arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
    ret = _syscall(ctypes.c_long(NR["setgroups"]), ctypes.c_long(len(groups)), arr)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")


def thread_pidfd(tid: int) -> int:
    """A pidfd for thread *tid* (a notification names a thread, not a process);
    signalling it with SIGKILL still ends the whole thread group. Falls back to a
    process pidfd on kernels without PIDFD_THREAD."""
    try:
        return os.pidfd_open(tid, PIDFD_THREAD)
    except OSError as e:
        if e.errno != errno.EINVAL:  # no PIDFD_THREAD, or tid is not a leader
            raise
    return os.pidfd_open(tid)


class ProcDirs:
    """``/proc/<tid>`` directories, opened once and kept: lookups under a kept directory
    fd cost one path component instead of three. Safe against pid reuse: the fd stays
    bound to its task, and once that task is gone every lookup under it fails (ENOENT or
    ESRCH) -- :func:`proc_open` then drops it and opens the new task's directory."""

    def __init__(self, limit: int = 256) -> None:
        self.fds: dict[int, int] = {}
        self.limit = limit

    def get(self, tid: int) -> int:
        fd = self.fds.get(tid)
        if fd is None:
            if len(self.fds) >= self.limit:
                self.clear()
            fd = os.open(f"/proc/{tid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.fds[tid] = fd
        return fd

    def forget(self, tid: int) -> None:
        fd = self.fds.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def clear(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


PROC = ProcDirs()


def proc_open(tid: int, name: str, flags: int) -> int:
    """open(``/proc/<tid>/<name>``) through the kept directory of *tid*."""
    try:
        return os.open(name, flags | os.O_CLOEXEC, dir_fd=PROC.get(tid))
    except (FileNotFoundError, ProcessLookupError):
        PROC.forget(tid)  # a stale directory (an earlier task of that number): once more
        return os.open(name, flags | os.O_CLOEXEC, dir_fd=PROC.get(tid))


def read_memory(pid: int, addr: int, size: int) -> bytes:
    """Up to *size* bytes of process *pid*'s memory at *addr* (through /proc/pid/mem;
    a short read at an unmapped page ends the result there)."""
    fd = proc_open(pid, "mem", os.O_RDONLY)
    try:
        out = b""
        while len(out) < size:
            # never cross a page boundary in one read: the next page may be unmapped
            at = addr + len(out)
            n = min(size - len(out), 4096 - (at & 4095))
            try:
                chunk = os.pread(fd, n, at)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(fd)


def read_string(pid: int, addr: int, limit: int = 4096) -> bytes | None:
    """The NUL-terminated string at *addr* in *pid* (None: unreadable, or longer than
    *limit*, as PATH_MAX bounds a path)."""
    if addr == 0:
        return None
    data = b""
    fd = proc_open(pid, "mem", os.O_RDONLY)
    try:
        while len(data) < limit:
            at = addr + len(data)
            n = min(limit - len(data), 4096 - (at & 4095))
            try:
                chunk = os.pread(fd, n, at)
            except OSError:
                return None
            if not chunk:
                return None
            end = chunk.find(b"\0")
            if end >= 0:
                return data + chunk[:end]
            data += chunk
    finally:
        os.close(fd)
    return None


def proc_status(tid: int) -> bytes:
    fd = proc_open(tid, "status", os.O_RDONLY)
    try:
        return os.read(fd, 16384)
    finally:
        os.close(fd)


def status_field(data: bytes, name: bytes) -> list[bytes]:
    """The words of field *name* of a /proc/<pid>/status text."""
    i = data.find(b"\n" + name + b":")
    if i < 0:
        return []
    j = data.find(b"\n", i + 1)
    return data[i + len(name) + 2:j if j >= 0 else None].split()


_OWN_USERNS: list[int] = []


class Credentials:
    """A thread's filesystem identity as the host sees it (/proc/<tid>/status, and
    capget(2) for its effective capabilities)."""

    __slots__ = ("cap_eff", "fsgid", "fsuid", "groups", "same_userns", "umask")

    def __init__(self, fsuid: int, fsgid: int, groups: list[int], cap_eff: int,
                 same_userns: bool, umask: int = 0o022) -> None:
        self.fsuid = fsuid
        self.fsgid = fsgid
        self.groups = groups
        self.cap_eff = cap_eff
        self.same_userns = same_userns
        self.umask = umask

    @classmethod
    def of(cls, tid: int) -> Credentials:
        from contain.linux.syscalls import capget

        data = proc_status(tid)
        uids = status_field(data, b"Uid")
        gids = status_field(data, b"Gid")
        groups = [int(g) for g in status_field(data, b"Groups")]
        umask = status_field(data, b"Umask")
        cap_eff = capget(tid)[0]
        same = False
        if cap_eff:  # only then does it matter which user namespace they count in
            if not _OWN_USERNS:
                _OWN_USERNS.append(os.stat("/proc/self/ns/user").st_ino)
            try:
                same = os.stat("ns/user", dir_fd=PROC.get(tid)).st_ino == _OWN_USERNS[0]
            except OSError:
                same = False
        return cls(int(uids[3]), int(gids[3]), groups, cap_eff, same,
                   int(umask[0], 8) if umask else 0o022)


_OWN_CAPS: list[tuple[int, int]] = []


def _own_caps() -> tuple[int, int]:
    """The supervisor's (permitted, inheritable) sets: read once (it never changes
    them; become/restore move only the effective set, per thread)."""
    if not _OWN_CAPS:
        from contain.linux.syscalls import capget

        _, permitted, inheritable = capget()
        _OWN_CAPS.append((permitted, inheritable))
    return _OWN_CAPS[0]


def become(creds: Credentials, extra_caps: int = 0) -> None:
    """Make the calling thread act on files as *creds*: fsuid/fsgid, groups, and the
    workload's effective capabilities (only when it is in our user namespace: its
    capabilities elsewhere count for less, so it gets none here; never more than it
    has), plus *extra_caps* (CAP_MKNOD for an emulated mknod). Undo with :func:`restore`."""
    from contain.linux.syscalls import capset

    permitted, inheritable = _own_caps()
    thread_setgroups(creds.groups)
    thread_setfsgid(creds.fsgid)
    thread_setfsuid(creds.fsuid)
    caps = creds.cap_eff if creds.same_userns else 0
    capset((caps | extra_caps) & permitted, permitted, inheritable)


def restore() -> None:
    """Back to root for the calling thread (the supervisor runs as root): the whole
    permitted set effective first (the rest needs CAP_SETUID/SETGID), then the ids
    (setfsuid(0) can only add file capabilities to a full effective set)."""
    from contain.linux.syscalls import capset

    permitted, inheritable = _own_caps()
    capset(permitted, permitted, inheritable)
    thread_setfsuid(0)
    thread_setfsgid(0)
    thread_setgroups([])
