"""Thin typed wrappers over the system calls that :mod:`os` lacks.

Built on :mod:`contain.linux.native` (a lean subset of ctypes). Every failure in linux/
raises :class:`SyscallError`, the one OSError of this layer: errno, the syscall's name
and its target, so that callers above can turn it into a one-line message naming what
failed (and still catch it as the usual FileNotFoundError, PermissionError, ...).
"""

from __future__ import annotations

import os

from contain.linux import native as ctypes
from contain.linux.native import function

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ARCH = os.uname().machine
_NR: dict[str, dict[str, int]] = {
    "x86_64": {
        "pivot_root": 155, "setns": 308, "unshare": 272, "openat2": 437,
        "open_tree": 428, "move_mount": 429, "mount_setattr": 442, "close_range": 436,
        "capget": 125, "capset": 126, "keyctl": 250, "ioprio_set": 251,
        "pidfd_send_signal": 424, "bpf": 321, "seccomp": 317, "personality": 135,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "sched_setattr": 314, "set_mempolicy": 238,
    },
    "aarch64": {
        "pivot_root": 41, "setns": 268, "unshare": 97, "openat2": 437,
        "open_tree": 428, "move_mount": 429, "mount_setattr": 442, "close_range": 436,
        "capget": 90, "capset": 91, "keyctl": 219, "ioprio_set": 30,
        "pidfd_send_signal": 424, "bpf": 280, "seccomp": 277, "personality": 92,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "sched_setattr": 274, "set_mempolicy": 237,
    },
}


class SyscallNumbers(dict[str, int]):
    """The syscall numbers of one machine. A name it has no number for (every name, on a
    machine without a table) fails loudly: another architecture's numbers would call
    other syscalls with these arguments."""

    def __init__(self, machine: str) -> None:
        super().__init__(_NR.get(machine, {}))
        self.machine = machine

    def __missing__(self, name: str) -> int:
        from contain.errors import ContainError

        if self:
            raise ContainError(f"no syscall number for {name} on {self.machine}")
        raise ContainError(f"{name}: contain has no syscall numbers for this machine "
                           f"({self.machine}; known: {', '.join(_NR)})")


NR = SyscallNumbers(_ARCH)

_syscall = function("syscall", ctypes.c_long)


class SyscallError(OSError):
    """A system call (or a library call of linux/) failed.

    ``errno`` is OSError's, and an instance is also of that errno's OSError subclass
    (see :func:`syscall_error`); ``syscall`` names the call, ``target`` what it acted on
    (a path, "source on target", a pid; None if nothing in particular), ``detail`` what
    the kernel added (a verifier log). ``strerror`` reads "syscall target: reason[:
    detail]", the text that messages above quote."""

    def __init__(self, err: int, syscall: str, target: str | None = None,
                 detail: str | None = None) -> None:
        reason = os.strerror(err)
        text = f"{syscall} {target}: {reason}" if target else f"{syscall}: {reason}"
        super().__init__(err, f"{text}: {detail}" if detail else text)
        self.syscall = syscall
        self.target = target
        self.detail = detail

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return syscall_error, (self.errno, self.syscall, self.target, self.detail)


_KINDS: dict[type[OSError], type[SyscallError]] = {}


def syscall_error(err: int, syscall: str, target: object = None,
                  detail: str | None = None) -> SyscallError:
    """A :class:`SyscallError` that is also the OSError subclass Python gives *err*
    (ENOENT: FileNotFoundError, EPERM: PermissionError, ...)."""
    kind = type(OSError(err, ""))
    cls = _KINDS.get(kind)
    if cls is None:
        cls = SyscallError if kind is OSError else type(
            "SyscallError", (SyscallError, kind), {"__module__": __name__,
                                                  "__qualname__": f"SyscallError[{kind.__name__}]"})
        _KINDS[kind] = cls
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    return cls(err, syscall, None if target is None else str(target), detail)


class _Libc:
    """libc functions, looked up on first use."""

    def __getattr__(self, name: str) -> Any:
        func = function(name, ctypes.c_int)
        setattr(self, name, func)
        return func


_libc = _Libc()


def _check(ret: int, name: str, target: object = None) -> int:
    if ret < 0:
        raise syscall_error(ctypes.get_errno(), name, target)
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def syscall(name: str, *args: object) -> int:
    """Call syscall *name* (by its number on this architecture)."""
    return _check(_syscall(ctypes.c_long(NR[name]), *args), name)


# -- namespaces --------------------------------------------------------------------

def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, ctypes.c_size_t(len(b))), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, ctypes.c_size_t(len(b))), "setdomainname")


# -- mounts ------------------------------------------------------------------------

def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    if ret < 0:
        _check(ret, "mount", f"{source or fstype or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(ctypes.c_long(NR["pivot_root"]), _b(new_root), _b(put_old)), "pivot_root",
           new_root)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def rename_noreplace(old: str, new: str) -> None:
    """renameat2(RENAME_NOREPLACE): EEXIST rather than replacing *new* (os.rename would
    replace an empty directory)."""
    at_fdcwd, rename_noreplace_flag = -100, 1
    ret = _libc.renameat2(ctypes.c_int(at_fdcwd), _b(old), ctypes.c_int(at_fdcwd), _b(new),
                          ctypes.c_uint(rename_noreplace_flag))
    _check(ret, "renameat2", new)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _syscall(ctypes.c_long(NR["openat2"]), ctypes.c_int(dirfd), _b(path),
                   ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(ret, "openat2", path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    ret = _syscall(ctypes.c_long(NR["open_tree"]), ctypes.c_int(dirfd), _b(path),
                   ctypes.c_uint(flags))
    return _check(ret, "open_tree", path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str,
               flags: int) -> None:
    ret = _syscall(ctypes.c_long(NR["move_mount"]), ctypes.c_int(from_dirfd), _b(from_path),
                   ctypes.c_int(to_dirfd), _b(to_path), ctypes.c_uint(flags))
    _check(ret, "move_mount", to_path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    ret = _syscall(ctypes.c_long(NR["mount_setattr"]), ctypes.c_int(dirfd), _b(path),
                   ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(ret, "mount_setattr", path)


# -- processes -------------------------------------------------------------------------

def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                      ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    return _check(ret, "prctl")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    ret = _syscall(ctypes.c_long(NR["close_range"]), ctypes.c_uint(first), ctypes.c_uint(last),
                   ctypes.c_uint(flags))
    _check(ret, "close_range")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    ret = _syscall(ctypes.c_long(NR["pidfd_send_signal"]), ctypes.c_int(pidfd), ctypes.c_int(sig),
                   None, ctypes.c_uint(0))
    _check(ret, "pidfd_send_signal")


def keyctl_join_session_keyring(name: str | None) -> int:
    ret = _syscall(ctypes.c_long(NR["keyctl"]), ctypes.c_int(1), _b(name))
    return _check(ret, "keyctl(JOIN_SESSION_KEYRING)")


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    ret = _syscall(ctypes.c_long(NR["ioprio_set"]), ctypes.c_int(which), ctypes.c_int(who),
                   ctypes.c_int(ioprio))
    _check(ret, "ioprio_set")


_EVERY_CPU = b"\xff" * 1024  # a cpumask of 8192 CPUs, the kernel's most (NR_CPUS)


def allow_every_cpu(pid: int) -> None:
    """sched_setaffinity(2) of *pid* to every CPU there may be: the kernel keeps those the
    task's cpuset allows, and remembers the request if the cpuset widens later. (One
    call with a ready mask: os.sched_setaffinity builds one from 8192 ints, ~50 times
    the cost.)"""
    _check(_libc.sched_setaffinity(ctypes.c_int(pid), ctypes.c_size_t(len(_EVERY_CPU)),
                                   _EVERY_CPU), "sched_setaffinity", str(pid))


# sched_attr.sched_flags (linux/sched.h), by the names runtime-spec uses
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}


def sched_setattr(policy: int, *, flags: int = 0, nice: int = 0, priority: int = 0,
                  runtime: int = 0, deadline: int = 0, period: int = 0) -> None:
    """sched_setattr(2) for the calling thread: the only way to SCHED_DEADLINE (runtime,
    deadline and period in nanoseconds)."""
    import struct

    # struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes)
    attr = struct.pack("=IIQiIQQQ", 48, policy, flags, nice, priority, runtime, deadline,
                       period)
    ret = _syscall(ctypes.c_long(NR["sched_setattr"]), ctypes.c_int(0), attr,
                   ctypes.c_uint(0))
    _check(ret, "sched_setattr")


MPOL_NODE_BITS = 1024  # the node mask handed to set_mempolicy: MAX_NUMNODES at most


def set_mempolicy(mode: int, nodes: set[int] | frozenset[int] = frozenset()) -> None:
    """set_mempolicy(2) for the calling thread (inherited by its children, kept across
    execve): *mode* with its MPOL_F_* flags or-ed in, *nodes* the node numbers."""
    import sys

    mask = 0
    for node in nodes:
        mask |= 1 << node
    words = [(mask >> (64 * i)) & (2**64 - 1) for i in range(MPOL_NODE_BITS // 64)]
    buf = b"".join(w.to_bytes(8, sys.byteorder) for w in words)
    ret = _syscall(ctypes.c_long(NR["set_mempolicy"]), ctypes.c_int(mode),
                   buf if nodes else None, ctypes.c_ulong(MPOL_NODE_BITS + 1 if nodes else 0))
    _check(ret, "set_mempolicy")


def loopback_up(name: str = "lo") -> None:
    """Set IFF_UP on interface *name* of the caller's network namespace (a new one has
    its loopback down): SIOCGIFFLAGS then SIOCSIFFLAGS on a datagram socket.

    ``_socket`` and a hand-built ``struct ifreq`` (16-byte name, native short flags, 22
    bytes of padding): the ``socket`` module would import enum, selectors and
    collections, ~2 ms of every container's start."""
    import _socket
    import fcntl
    import sys

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        ifname = name.encode()[:15].ljust(16, b"\0")
        ifr = fcntl.ioctl(s.fileno(), 0x8913, ifname + bytes(24))  # SIOCGIFFLAGS
        flags = int.from_bytes(ifr[16:18], sys.byteorder)
        if not flags & 0x1:  # IFF_UP
            fcntl.ioctl(s.fileno(), 0x8914,  # SIOCSIFFLAGS
                        ifname + (flags | 0x1).to_bytes(2, sys.byteorder) + bytes(22))
    finally:
        s.close()


def personality(persona: int) -> int:
    ret = _syscall(ctypes.c_long(NR["personality"]), ctypes.c_ulong(persona))
    return _check(ret, "personality")


# -- capabilities ------------------------------------------------------------------------

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_syscall(ctypes.c_long(NR["capget"]), ctypes.byref(hdr), data), "capget")
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        sh = 32 * i
        data[i].effective = (effective >> sh) & 0xFFFFFFFF
        data[i].permitted = (permitted >> sh) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> sh) & 0xFFFFFFFF
    _check(_syscall(ctypes.c_long(NR["capset"]), ctypes.byref(hdr), data), "capset")



# -- a child in new namespaces, without a copy of the caller -------------------------

_NR_GETPID = {"x86_64": 39, "aarch64": 172}
_CLONE_VM = 0x100
_SIGCHLD = 17
_CHILD_STACK = 16384


def clone_exited(flags: int) -> tuple[int, Any] | None:
    """A child made by clone(2) with CLONE_VM and *flags* (CLONE_NEWUSER: a user namespace
    whose maps the caller then writes) that exits at once: the caller reads and writes
    its /proc files while it is a zombie (a zombie keeps its credentials, and with them
    its user namespace, until it is reaped). Unlike fork, nothing of the caller is copied
    (no page tables, then no copy-on-write fault per page the caller writes: a whole
    interpreter here), and the child runs no code of ours: libc's syscall(getpid) on a
    small stack of its own, every signal blocked. (pid, stack): the caller reaps the
    child, and keeps the stack referenced until then. None on a machine without the
    syscall's number here (fork a child instead)."""
    nr = _NR_GETPID.get(_ARCH)
    if nr is None:
        return None
    import _ctypes
    import _signal

    clone = function("clone", ctypes.c_int, argtypes=(
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_long))
    entry = _ctypes.dlsym(_ctypes.dlopen(None, 0x100 | 0x2), "syscall")  # type: ignore[arg-type]
    stack = ctypes.create_string_buffer(_CHILD_STACK)
    top = (ctypes.addressof(stack) + _CHILD_STACK - 64) & ~15
    # the child inherits the mask: no signal handler of ours can run in it
    old = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    try:
        pid = clone(entry, top, _CLONE_VM | flags | _SIGCHLD, nr)
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old)
    _check(pid, "clone")
    return pid, stack
