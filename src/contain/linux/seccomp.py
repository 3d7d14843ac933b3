"""The seccomp(2) system call and the user-notification ioctls.

``set_filter`` is what a container's init calls just before execve: it loads an already
compiled classic-BPF program, so it needs neither libseccomp nor anything heavier than
the syscall layer's lean ctypes subset (:mod:`contain.linux.native`). The notify helpers
serve seccomp agents and supervisors: they are plain ioctls on the listener fd.
"""

from __future__ import annotations

import errno
import os
import struct

from contain.linux import native as ctypes
from contain.linux.syscalls import syscall, syscall_error

SECCOMP_SET_MODE_STRICT = 0
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3

SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

# OCI flag name -> kernel flag
FILTER_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000

SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2

# struct seccomp_notif: id u64, pid u32, flags u32, data {nr i32, arch u32, ip u64, args u64[6]}
_NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp: id u64, val s64, error s32, flags u32
_NOTIF_RESP = struct.Struct("=QqiI")
# struct seccomp_notif_addfd: id u64, flags u32, srcfd u32, newfd u32, newfd_flags u32
_NOTIF_ADDFD = struct.Struct("=QIIII")


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


SECCOMP_IOCTL_NOTIF_RECV = _ioc(3, 0, _NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = _ioc(3, 1, _NOTIF_RESP.size)
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(1, 2, 8)
SECCOMP_IOCTL_NOTIF_ADDFD = _ioc(1, 3, _NOTIF_ADDFD.size)

SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def set_filter(program: bytes, flags: int = 0) -> int | None:
    """Install a classic-BPF seccomp filter on the calling thread (or all threads with
    TSYNC). Returns the user-notification listener fd when *flags* has NEW_LISTENER.

    The caller must have no_new_privs set or CAP_SYS_ADMIN in its user namespace."""
    n = len(program) // SOCK_FILTER_SIZE
    if n == 0 or n > 0xFFFF or len(program) % SOCK_FILTER_SIZE:
        raise syscall_error(errno.EINVAL, "seccomp", f"a BPF program of {len(program)} bytes")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(n, ctypes.addressof(buf))
    ret = syscall("seccomp", ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                  ctypes.byref(prog))
    if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER:
        return ret
    return None


def libseccomp_version() -> tuple[int, int, int]:
    """libseccomp's version (seccomp_version()), through the lean native layer: ~0.1 ms
    where the full binding (contain.linux.libseccomp) costs ``import ctypes``, ~2-3 ms.
    The compiled-filter cache keys on it, and a cache hit needs nothing else of the
    library. Raises OSError when libseccomp.so.2 cannot be loaded."""
    try:  # (a missing library is an OSError, a missing symbol an AttributeError)
        ptr = ctypes.function("seccomp_version", ctypes.c_void_p, "libseccomp.so.2")()
    except (OSError, AttributeError) as exc:
        raise syscall_error(errno.ENOENT, "seccomp_version", "libseccomp.so.2",
                            str(exc)) from exc
    if not ptr:
        raise syscall_error(errno.EINVAL, "seccomp_version", "NULL")
    major, minor, micro = (ctypes.c_uint * 3).from_address(ptr)
    return int(major), int(minor), int(micro)


def action_available(action: int) -> bool:
    """Whether the kernel knows a SECCOMP_RET_* action."""
    val = ctypes.c_uint32(action)
    try:
        syscall("seccomp", ctypes.c_uint(SECCOMP_GET_ACTION_AVAIL), ctypes.c_uint(0),
                ctypes.byref(val))
    except OSError:
        return False
    return True


def flag_supported(flag: int) -> bool:
    """Whether the kernel accepts a SECCOMP_FILTER_FLAG_* (probe: a NULL program gives
    EFAULT for a known flag, EINVAL for an unknown one)."""
    try:
        syscall("seccomp", ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flag), None)
    except OSError as e:
        return e.errno == errno.EFAULT
    return True  # not reached: a NULL program is never accepted


def mode(pid: int | str = "self") -> int:
    """The Seccomp: field of /proc/<pid>/status (0 none, 1 strict, 2 filter)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"Seccomp:"):
                return int(line.split()[1])
    return 0


# -- user notification -----------------------------------------------------------------

class Notification:
    """A struct seccomp_notif: which process called which syscall with which arguments."""

    __slots__ = ("arch", "args", "flags", "id", "instruction_pointer", "nr", "pid")

    def __init__(self, raw: bytes) -> None:
        (self.id, self.pid, self.flags, self.nr, self.arch, self.instruction_pointer,
         *args) = _NOTIF.unpack(raw)
        self.args: tuple[int, ...] = tuple(args)

    def __repr__(self) -> str:
        return (f"Notification(id={self.id:#x}, pid={self.pid}, nr={self.nr}, "
                f"arch={self.arch:#x}, args={self.args})")


def _ioctl(fd: int, request: int, buf: bytearray, what: str) -> None:
    import fcntl

    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError as e:
        raise syscall_error(e.errno or errno.EIO, f"ioctl({what})", f"fd {fd}") from e


def notif_recv(listener_fd: int) -> Notification:
    """Block until a notification arrives (poll the fd for POLLIN to wait with a timeout).

    Raises OSError ENOENT when the target died before we read its request."""
    buf = bytearray(_NOTIF.size)  # the kernel insists on a zeroed buffer
    _ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_RECV, buf, "SECCOMP_IOCTL_NOTIF_RECV")
    return Notification(bytes(buf))


def notif_send(listener_fd: int, notif_id: int, val: int = 0, error: int = 0,
               flags: int = 0) -> None:
    """Answer a notification: return *val*, or fail with -*error* (a positive errno),
    or with SECCOMP_USER_NOTIF_FLAG_CONTINUE let the syscall run as if allowed."""
    buf = bytearray(_NOTIF_RESP.pack(notif_id, val, -error if error > 0 else error, flags))
    _ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_SEND, buf, "SECCOMP_IOCTL_NOTIF_SEND")


def notif_id_valid(listener_fd: int, notif_id: int) -> bool:
    """Whether the notification is still pending (the target has not died or been
    interrupted): check it after reading the target's memory, against TOCTOU."""
    buf = bytearray(struct.pack("=Q", notif_id))
    try:
        _ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, buf, "SECCOMP_IOCTL_NOTIF_ID_VALID")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def notif_addfd(listener_fd: int, notif_id: int, srcfd: int, newfd: int = 0, flags: int = 0,
                newfd_flags: int = 0) -> int:
    """Install *srcfd* into the target process; returns the fd number it got there."""
    buf = bytearray(_NOTIF_ADDFD.pack(notif_id, flags, srcfd, newfd, newfd_flags))
    import fcntl

    try:
        return int(fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_ADDFD, buf, True))
    except OSError as e:
        raise syscall_error(e.errno or errno.EIO, "ioctl(SECCOMP_IOCTL_NOTIF_ADDFD)",
                            f"fd {listener_fd}") from e


_NR_PIDFD_GETFD = 438  # the same number on every architecture (added after the unification)


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """Duplicate fd *targetfd* of the process behind *pidfd* into the caller (O_CLOEXEC).

    This is how the runtime takes the notify listener from the init without a sendmsg
    in the init (which the container's own filter could hold up): the init write()s the
    fd number, the parent copies it. Needs ptrace access to the target."""
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(ctypes.c_long(_NR_PIDFD_GETFD), ctypes.c_int(pidfd),
                       ctypes.c_int(targetfd), ctypes.c_uint(0))
    if ret < 0:
        raise syscall_error(ctypes.get_errno(), "pidfd_getfd", f"fd {targetfd}")
    return int(ret)


_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_DETACH = 17
_PTRACE_SECCOMP_GET_FILTER = 0x420C
_PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG = 0x4211  # Linux 6.4+
_WALL = 0x40000000
_SUD_CONFIG = struct.Struct("=QQQQ")  # struct ptrace_sud_config: mode, selector, offset, len


class StoppedProcess:
    """A process held in a ptrace group-stop for a few reads (PTRACE_SEIZE, then
    PTRACE_INTERRUPT; detached, and so resumed, on exit). Needs ptrace access to it
    (CAP_SYS_PTRACE) and fails with EPERM when another tracer has it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ptrace = ctypes.function("ptrace", ctypes.c_long, None,
                                       (ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                                        ctypes.c_void_p))

    def call(self, req: int, addr: int | None, data: int | None, what: str) -> int:
        ret = self._ptrace(req, self.pid, addr, data)
        if ret < 0:
            raise syscall_error(ctypes.get_errno(), f"ptrace({what})", f"of {self.pid}")
        return int(ret)

    def __enter__(self) -> StoppedProcess:
        self.call(_PTRACE_SEIZE, None, None, "PTRACE_SEIZE")
        try:
            self.call(_PTRACE_INTERRUPT, None, None, "PTRACE_INTERRUPT")
            os.waitpid(self.pid, _WALL)
        except BaseException:
            self._ptrace(_PTRACE_DETACH, self.pid, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._ptrace(_PTRACE_DETACH, self.pid, None, None)

    def seccomp_filter(self, index: int) -> bytes:
        """The classic-BPF program of filter *index* (0: the newest); needs
        CAP_SYS_ADMIN."""
        n = self.call(_PTRACE_SECCOMP_GET_FILTER, index, None, "PTRACE_SECCOMP_GET_FILTER")
        buf = ctypes.create_string_buffer(n * SOCK_FILTER_SIZE)
        self.call(_PTRACE_SECCOMP_GET_FILTER, index, ctypes.addressof(buf),
                  "PTRACE_SECCOMP_GET_FILTER")
        return bytes(buf.raw)

    def syscall_user_dispatch(self) -> dict[str, int]:
        """The thread's Syscall User Dispatch setting (mode 0: off, 1: on; the selector
        address and the allowed code range)."""
        buf = ctypes.create_string_buffer(_SUD_CONFIG.size)
        self.call(_PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, _SUD_CONFIG.size,
                  ctypes.addressof(buf), "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG")
        mode, selector, offset, length = _SUD_CONFIG.unpack(bytes(buf.raw))
        return {"mode": mode, "selector": selector, "offset": offset, "len": length}


def read_filter(pid: int, index: int = 0) -> bytes:
    """The classic-BPF program of seccomp filter *index* (0: the newest) of process *pid*,
    read with PTRACE_SECCOMP_GET_FILTER (needs CAP_SYS_ADMIN and ptrace access). The
    process is stopped for the moment of the read and resumed."""
    with StoppedProcess(pid) as stopped:
        return stopped.seccomp_filter(index)


RET_ACTIONS = {SECCOMP_RET_KILL_PROCESS: "kill_process", SECCOMP_RET_KILL_THREAD: "kill_thread",
               SECCOMP_RET_TRAP: "trap", SECCOMP_RET_ERRNO: "errno",
               SECCOMP_RET_USER_NOTIF: "notify", SECCOMP_RET_TRACE: "trace",
               SECCOMP_RET_LOG: "log", SECCOMP_RET_ALLOW: "allow"}


def filter_actions(program: bytes) -> set[str]:
    """The actions a classic-BPF seccomp program can return (its constant RET
    instructions; a RET of the accumulator is reported as "computed")."""
    out: set[str] = set()
    for i in range(0, len(program) - SOCK_FILTER_SIZE + 1, SOCK_FILTER_SIZE):
        code, _jt, _jf, k = struct.unpack_from("=HBBI", program, i)
        if code == 0x06:  # BPF_RET | BPF_K
            out.add(RET_ACTIONS.get(k & 0xFFFF0000, f"0x{k & 0xFFFF0000:08x}"))
        elif code == 0x16:  # BPF_RET | BPF_A
            out.add("computed")
    return out
