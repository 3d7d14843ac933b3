"""Built-in emulations: the supervisor does the call itself, for the workload.

The rule of every handler: a decision never rests on memory the workload can still
change. Register values are decided on as they are; a string (a path, a filesystem
type) is read once into the supervisor's own copy, and the supervisor then acts on that
copy itself -- it never lets the kernel re-read the workload's memory after deciding
(that would be the TOCTOU the seccomp_unotify(2) page warns about).

``open`` (open, openat, creat, openat2) resolves the path itself, inside the workload's
root (``/proc/<pid>/root``), from its cwd or dirfd, as its credentials (fsuid, fsgid,
groups, effective capabilities), first without side effects (O_PATH), decides on the
*resolved* path, then opens that very inode and installs the fd into the workload with
SECCOMP_IOCTL_NOTIF_ADDFD (SEND: the fd is the call's return value, atomically).

``mknod`` creates the harmless character devices (null, zero, full, random, urandom,
tty, console) with CAP_MKNOD lent for that one call, as the workload otherwise.
``mount`` mounts tmpfs or proc only, inside the workload's own mount namespace, on a
target resolved inside its root. ``uname`` answers from the policy's values.
``return`` answers a fixed value (a stub, and the benchmark's "answered" call).
"""

from __future__ import annotations

import os
from errno import EACCES, EBADF, EEXIST, EFAULT, EINVAL, ELOOP, ENOENT, ENOSYS, ENOTDIR, EPERM

from contain.errors import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any



class Result:
    """What a handler answers: ``value`` (a return value), ``error`` (a positive
    errno) or ``fd`` (to install in the workload, the call returning its number)."""

    __slots__ = ("cloexec", "creds", "detail", "error", "fd", "fifo", "value")

    def __init__(self, value: int = 0, error: int = 0, fd: int = -1, cloexec: bool = False,
                 detail: str = "", fifo: tuple[int, int] | None = None) -> None:
        self.value = value
        self.error = error
        self.fd = fd
        self.cloexec = cloexec
        self.detail = detail
        # an open that may block (a FIFO without O_NONBLOCK): (an O_PATH fd of the
        # decided inode, the open flags), opened later as ``creds`` -- by a worker, so
        # that the supervisor's other notifications keep flowing
        self.fifo = fifo
        self.creds: Any = None


class Gone(Exception):
    """The notification is no longer valid (the target died or was interrupted)."""


class Target:
    """The call being emulated, as a handler sees it. Subclassed by each supervisor."""

    pid: int
    nr: int
    name: str
    args: tuple[int, ...]
    can_install_fd = False
    hostname = "sandbox"

    def string(self, addr: int, limit: int = 4096) -> bytes | None:
        """A NUL-terminated string of the target's (our copy; None if unreadable)."""
        from contain.linux.unotify import read_string

        data = read_string(self.pid, addr, limit)
        self.check_valid()
        return data

    def memory(self, addr: int, size: int) -> bytes:
        from contain.linux.unotify import read_memory

        data = read_memory(self.pid, addr, size)
        self.check_valid()
        return data

    def write(self, addr: int, data: bytes) -> bool:
        """Write the call's output into the target's memory (as the kernel would)."""
        try:
            fd = _proc_open(self.pid, "mem", os.O_WRONLY)
        except OSError:
            return False
        try:
            return os.pwrite(fd, data, addr) == len(data)
        except OSError:
            return False
        finally:
            os.close(fd)

    def check_valid(self) -> None:
        """Raise Gone if the target is no longer in this call (NOTIF_ID_VALID)."""


class Handler:
    """A built-in emulation: the syscalls it serves, its options, its function."""

    __slots__ = ("func", "options", "ptrace", "syscalls")

    def __init__(self, syscalls: tuple[str, ...], options: dict[str, Callable[[Any, str], Any]],
                 func: Callable[[Target, dict[str, Any]], Result], ptrace: bool = True) -> None:
        self.syscalls = syscalls
        self.options = options
        self.func = func
        self.ptrace = ptrace

    def decode(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            check = self.options.get(key)
            if check is None:
                known = ", ".join(sorted(self.options)) or "none"
                raise SpecError(f"{path}.{key}", f"unknown option (options: {known})")
            out[key] = check(value, f"{path}.{key}")
        return out


def _str_opt(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value.encode()) > 64 or "\0" in value:
        raise SpecError(path, "expected a string of at most 64 bytes")
    return value


def _int_opt(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -4095 <= value < 2**63:
        raise SpecError(path, f"expected an integer, got {value!r}")
    return value


def _errno_opt(value: Any, path: str) -> int:
    from contain.sandbox.supervise.policy import errno_number

    return errno_number(value, path)


PATH_MODES = ("ro", "rw", "deny")


def _paths_opt(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise SpecError(path, "expected a table of absolute path = \"ro\" | \"rw\" | \"deny\"")
    out = {}
    for p, mode in value.items():
        if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
            raise SpecError(f"{path}.{p}", "expected an absolute path")
        if mode not in PATH_MODES:
            raise SpecError(f"{path}.{p}", f"expected one of {', '.join(PATH_MODES)}, got {mode!r}")
        out[os.path.normpath(p) if p != "/" else "/"] = mode
    return out


def _fstypes_opt(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(v in ("tmpfs", "proc") for v in value):
        raise SpecError(path, "expected a list of \"tmpfs\" and/or \"proc\"")
    return list(value)


def _devices_opt(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(v in DEVICES for v in value):
        raise SpecError(path, f"expected a list of {', '.join(DEVICES)}")
    return list(value)


# -- uname ---------------------------------------------------------------------------------

def _uname(t: Target, opts: dict[str, Any]) -> Result:
    u = os.uname()
    fields = [opts.get("sysname", u.sysname), opts.get("nodename", t.hostname),
              opts.get("release", u.release), opts.get("version", u.version),
              opts.get("machine", u.machine), opts.get("domainname", "(none)")]
    data = b"".join(f.encode()[:64].ljust(65, b"\0") for f in fields)
    if not t.write(t.args[0], data):
        return Result(error=EFAULT)
    return Result(0)


# -- return ------------------------------------------------------------------------------

def _return(t: Target, opts: dict[str, Any]) -> Result:
    if "errno" in opts:
        return Result(error=opts["errno"])
    return Result(opts.get("value", 0))


# -- path work inside the workload's root ----------------------------------------------

class InRoot:
    """Enter the target's root and cwd, and its file credentials, for the calling
    thread (the supervisor is single-threaded, or this runs in a thread that has
    unshared its fs_struct); leave on exit."""

    def __init__(self, pid: int, extra_caps: int = 0, cwd: bool = True) -> None:
        self.pid = pid
        self.extra_caps = extra_caps
        self.cwd = cwd  # False: only absolute paths and dirfds follow (no chdir)
        self.entered = False
        self.creds: Any = None

    def __enter__(self) -> InRoot:
        from contain.linux.unotify import Credentials, become, proc_open

        self.creds = creds = Credentials.of(self.pid)
        _host_proc()  # opened now, outside: inside, /proc is the workload's
        _host_root()  # and the way back
        root = proc_open(self.pid, "root", os.O_PATH | os.O_DIRECTORY)
        cwd = -1
        try:
            if self.cwd:
                cwd = proc_open(self.pid, "cwd", os.O_PATH | os.O_DIRECTORY)
            os.fchdir(root)
            os.chroot(".")
            self.entered = True
            if cwd >= 0:
                os.fchdir(cwd)
        except BaseException:
            self.__exit__()
            raise
        finally:
            os.close(root)
            if cwd >= 0:
                os.close(cwd)
        try:
            become(creds, self.extra_caps)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from contain.linux.unotify import restore

        restore()
        if self.entered:
            # back to the host's root; the supervisor's cwd is left there (it uses no
            # relative paths)
            os.fchdir(_host_root())
            os.chroot(".")
            self.entered = False


_ROOT_FD: int = -1


def _host_root() -> int:
    global _ROOT_FD
    if _ROOT_FD < 0:
        _ROOT_FD = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return _ROOT_FD


_PROC_FD: int = -1


def _host_proc() -> int:
    """An fd of the host's /proc, usable from inside a chroot."""
    global _PROC_FD
    if _PROC_FD < 0:
        _PROC_FD = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return _PROC_FD


def _fd_path(fd: int) -> str:
    """The path of *fd* as seen from the current (entered) root."""
    return os.readlink(f"thread-self/fd/{fd}", dir_fd=_host_proc())


def _ns_ids(pid: int) -> tuple[int, int]:
    """(pid, tid) of host thread *pid* in its own PID namespace."""
    from contain.linux.unotify import proc_status, status_field

    data = proc_status(pid)
    nstid = int(status_field(data, b"NSpid")[-1])
    tgid = int(status_field(data, b"Tgid")[0])
    if tgid == pid:
        return nstid, nstid
    return int(status_field(proc_status(tgid), b"NSpid")[-1]), nstid


def _workload_path(t: Target, raw: bytes) -> str:
    """The path as the workload meant it: /proc/self and /proc/thread-self name the
    workload (the supervisor has no pid in its PID namespace)."""
    path = os.fsdecode(raw)
    for prefix in ("/proc/self/", "/proc/thread-self/", "/dev/fd/"):
        if path.startswith(prefix) or path == prefix[:-1]:
            nspid, nstid = _ns_ids(t.pid)
            rest = path[len(prefix):] if path.startswith(prefix) else ""
            if prefix == "/proc/self/":
                return f"/proc/{nspid}/{rest}".rstrip("/")
            if prefix == "/dev/fd/":
                return f"/proc/{nspid}/fd/{rest}".rstrip("/")
            return f"/proc/{nspid}/task/{nstid}/{rest}".rstrip("/")
    return path


def _own_fd(raw: bytes) -> int | None:
    for prefix in (b"/proc/self/fd/", b"/proc/thread-self/fd/", b"/dev/fd/"):
        if raw.startswith(prefix) and raw[len(prefix):].isdigit():
            return int(raw[len(prefix):])
    return None


def path_mode(paths: dict[str, str], path: str, default: str) -> str:
    """The mode of the longest configured prefix of *path*."""
    best, mode = -1, default
    for prefix, m in paths.items():
        inside = path == prefix or prefix == "/" or path.startswith(prefix + "/")
        if inside and len(prefix) > best:
            best, mode = len(prefix), m
    return mode


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
AT_FDCWD = -100


RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_CACHED = 0x08, 0x10, 0x20
RESOLVE_ALL = 0x3F
#: resolve flags that make the dirfd the limit (or the root) of every path
RESOLVE_SCOPED = RESOLVE_BENEATH | RESOLVE_IN_ROOT
_O_TMPFILE = 0o20000000 | os.O_DIRECTORY


def _open_args(t: Target) -> tuple[int, int, int, int, int] | Result:
    """(dirfd, path address, flags, mode, resolve) from the registers (openat2: from our
    copy of its struct open_how, checked as the kernel checks it)."""
    a = t.args
    if t.name == "open":
        return AT_FDCWD, a[0], a[1] & 0xFFFFFFFF, a[2] & 0o7777, 0
    if t.name == "creat":
        return AT_FDCWD, a[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, a[1] & 0o7777, 0
    if t.name == "openat2":
        return _open_how(t)
    return _signed32(a[0]), a[1], a[2] & 0xFFFFFFFF, a[3] & 0o7777, 0


def _open_how(t: Target) -> tuple[int, int, int, int, int] | Result:
    import struct
    from errno import E2BIG

    a = t.args
    size = a[3]
    if size < 24:  # OPEN_HOW_SIZE_VER0
        return Result(error=EINVAL)
    if size > 4096:
        return Result(error=E2BIG)
    raw = t.memory(a[2], size)
    if len(raw) < size:
        return Result(error=EFAULT)
    if raw[24:].strip(b"\0"):  # a newer struct's fields this kernel would not know
        return Result(error=E2BIG)
    flags, mode, resolve = struct.unpack_from("=QQQ", raw)
    if flags >> 32 or resolve & ~RESOLVE_ALL or \
            resolve & RESOLVE_SCOPED == RESOLVE_SCOPED or mode & ~0o7777 or \
            (mode and not (flags & os.O_CREAT or flags & _O_TMPFILE == _O_TMPFILE)):
        return Result(error=EINVAL)
    return _signed32(a[0]), a[1], flags, mode, resolve


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _open(t: Target, opts: dict[str, Any]) -> Result:
    if not t.can_install_fd:
        return Result(error=ENOSYS, detail="the open handler needs the notify supervisor")
    parsed = _open_args(t)
    if isinstance(parsed, Result):
        return parsed
    dirfd, addr, flags, mode, resolve = parsed
    raw = t.string(addr)
    if raw is None:
        return Result(error=EFAULT)
    if not raw:
        return Result(error=ENOENT)
    path = _workload_path(t, raw)
    deny_errno = opts.get("errno", EACCES)
    default = opts.get("default", "deny")
    paths = opts["paths"]
    base = -1
    own = None if resolve & RESOLVE_SCOPED else _own_fd(raw)
    if own is not None and resolve & (RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS):
        return Result(error=ELOOP, detail=os.fsdecode(raw))  # /proc/self/fd/N: a magic link
    if own is not None:
        # its own fd, reopened through /proc/self/fd: taken from the host's /proc (a
        # not-yet-exec'd init is non-dumpable: only the process itself could go there)
        try:
            base = _proc_open(t.pid, f"fd/{own}", os.O_PATH)
        except OSError:
            return Result(error=ENOENT)
        path = ""
    elif dirfd != AT_FDCWD and (not path.startswith("/") or resolve & RESOLVE_SCOPED):
        try:
            base = _proc_open(t.pid, f"fd/{dirfd}", os.O_PATH)
        except OSError:
            return Result(error=EBADF)
    try:
        # the workload's cwd matters only without a dirfd: to a relative path, or as
        # the limit of RESOLVE_BENEATH / IN_ROOT
        cwd = base < 0 and (not path.startswith("/") or bool(resolve & RESOLVE_SCOPED))
        with InRoot(t.pid, cwd=cwd) as inside:
            result = _open_in_root(base, path, flags, mode, paths, default, deny_errno,
                                   resolve)
            result.creds = inside.creds
            return result
    except OSError as e:
        return Result(error=e.errno or EACCES, detail=str(e))
    finally:
        if base >= 0:
            os.close(base)


def _resolve(path: str, flags: int, dfd: int, resolve: int) -> int:
    """An O_PATH fd of *path* (from *dfd*), resolved as the workload's call would resolve
    it: with openat2 and its RESOLVE_* flags when it gave some (they keep their meaning
    here: the supervisor is in the workload's root and cwd, *dfd* is the workload's)."""
    if not resolve:
        return os.open(path, flags, dir_fd=dfd)
    from contain.linux.syscalls import openat2

    return openat2(dfd, path, flags, 0, resolve)


def _open_in_root(base: int, path: str, flags: int, mode: int, paths: dict[str, str],
                  default: str, deny_errno: int, resolve: int = 0) -> Result:
    import stat

    dfd = base if base >= 0 else AT_FDCWD
    want_write = bool(flags & _WRITE_FLAGS) and (flags & os.O_ACCMODE or
                                                  flags & (os.O_TRUNC | os.O_CREAT))
    cloexec = bool(flags & os.O_CLOEXEC)
    probe = os.O_PATH | os.O_CLOEXEC | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY))
    try:
        pfd = _resolve(path, probe, dfd, resolve) if path else os.dup(base)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
        parent, name = os.path.split(path.rstrip("/") or "/")
        if not name or name in (".", ".."):
            return Result(error=EINVAL if name else EEXIST)
        pdir = _resolve(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dfd,
                        resolve)
        try:
            where = os.path.join(_fd_path(pdir), name)
            if path_mode(paths, where, default) != "rw":
                return Result(error=deny_errno, detail=f"create {where}")
            fd = os.open(name, (flags | os.O_NOFOLLOW | os.O_CLOEXEC), mode, dir_fd=pdir)
        finally:
            os.close(pdir)
        return Result(fd=fd, cloexec=cloexec, detail=where)
    try:
        where = _fd_path(pfd)
        need = "rw" if want_write else "ro"
        # an object with no name inside the root (a pipe, a socket, the runtime's
        # exec.fifo: reached through the workload's own /proc/<pid>/fd) is one it
        # already holds; a path policy is about names in the root
        got = path_mode(paths, where, default) if _named_in_root(where, pfd) else "rw"
        if got == "deny" or (need == "rw" and got != "rw"):
            return Result(error=deny_errno, detail=where)
        if flags & os.O_CREAT and flags & os.O_EXCL:
            return Result(error=EEXIST, detail=where)
        if flags & os.O_PATH:
            return Result(fd=os.dup(pfd), cloexec=cloexec, detail=where)
        st = os.fstat(pfd)
        if stat.S_ISLNK(st.st_mode):
            return Result(error=ELOOP, detail=where)
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
            return Result(error=ENOTDIR, detail=where)
        reopen = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)) | os.O_CLOEXEC
        if stat.S_ISFIFO(st.st_mode) and not flags & os.O_NONBLOCK and \
                flags & os.O_ACCMODE != os.O_RDWR:
            # this open waits for the other end: not here (see Result.fifo)
            return Result(fifo=(os.dup(pfd), reopen), cloexec=cloexec, detail=where)
        # reopen this very inode (not the path again) with the workload's flags; the
        # permission check happens now, with the workload's credentials
        fd = reopen_as(pfd, reopen)
        return Result(fd=fd, cloexec=cloexec, detail=where)
    finally:
        os.close(pfd)


def reopen_as(pfd: int, flags: int) -> int:
    """Open the inode of O_PATH fd *pfd* with *flags* (through the host's
    /proc/thread-self/fd: unaffected by a chroot of another thread), with the calling
    thread's credentials."""
    return os.open(f"thread-self/fd/{pfd}", flags, dir_fd=_host_proc())


def _named_in_root(where: str, fd: int) -> bool:
    if not where.startswith("/"):
        return False
    try:
        st = os.stat(where, follow_symlinks=False)
    except OSError:
        return False
    ref = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (ref.st_dev, ref.st_ino)


# -- mknod -------------------------------------------------------------------------------

DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0), "console": (5, 1)}
CAP_MKNOD = 27


def _mknod(t: Target, opts: dict[str, Any]) -> Result:
    import stat

    a = t.args
    if t.name == "mknod":
        dirfd, addr, mode, dev = AT_FDCWD, a[0], a[1] & 0xFFFFFFFF, a[2]
    else:
        dirfd, addr, mode, dev = _signed32(a[0]), a[1], a[2] & 0xFFFFFFFF, a[3]
    kind = stat.S_IFMT(mode)
    extra = 0
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        allowed = {DEVICES[n] for n in opts.get("devices", list(DEVICES))}
        if kind != stat.S_IFCHR or (os.major(dev), os.minor(dev)) not in allowed:
            return Result(error=EPERM, detail=f"device {os.major(dev)}:{os.minor(dev)}")
        extra = 1 << CAP_MKNOD
    elif kind not in (0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
        return Result(error=EINVAL)
    raw = t.string(addr)
    if raw is None:
        return Result(error=EFAULT)
    path = _workload_path(t, raw)
    base = -1
    if dirfd != AT_FDCWD and not path.startswith("/"):
        try:
            base = _proc_open(t.pid, f"fd/{dirfd}", os.O_PATH)
        except OSError:
            return Result(error=EBADF)
    umask = _umask_of(t.pid)
    try:
        with InRoot(t.pid, extra_caps=extra):
            parent, name = os.path.split(path.rstrip("/"))
            if not name or name in (".", ".."):
                return Result(error=EEXIST)
            pdir = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                           dir_fd=base if base >= 0 else AT_FDCWD)
            try:
                os.mknod(name, (mode & ~umask) if kind else (mode & ~umask) | stat.S_IFREG,
                         dev if extra else 0, dir_fd=pdir)
                where = os.path.join(_fd_path(pdir), name)
            finally:
                os.close(pdir)
    except OSError as e:
        return Result(error=e.errno or EPERM)
    finally:
        if base >= 0:
            os.close(base)
    return Result(0, detail=where)


def _umask_of(pid: int) -> int:
    from contain.linux.unotify import proc_status, status_field

    try:
        words = status_field(proc_status(pid), b"Umask")
    except OSError:
        return 0o022
    return int(words[0], 8) if words else 0o022


def _proc_open(pid: int, name: str, flags: int) -> int:
    from contain.linux.unotify import proc_open

    return proc_open(pid, name, flags)


# -- mount -------------------------------------------------------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
_MOUNT_OK_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | 0x400 | 0x800 | 0x1000000
_TMPFS_OPTS = ("size", "mode", "nr_inodes", "nr_blocks", "uid", "gid")


def _mount(t: Target, opts: dict[str, Any]) -> Result:
    a = t.args
    flags = a[3] & 0xFFFFFFFF
    if flags & ~_MOUNT_OK_FLAGS:
        return Result(error=EPERM, detail=f"mount flags {flags:#x}")
    fstype_raw = t.string(a[2], 64)
    if fstype_raw is None:
        return Result(error=EFAULT)
    fstype = fstype_raw.decode(errors="replace")
    if fstype not in opts.get("types", ["tmpfs", "proc"]):
        return Result(error=EPERM, detail=f"mount type {fstype!r}")
    data = ""
    if a[4]:
        raw = t.string(a[4], 256)
        if raw is None:
            return Result(error=EFAULT)
        data = raw.decode(errors="replace")
    if fstype == "tmpfs":
        for item in filter(None, data.split(",")):
            if item.split("=", 1)[0] not in _TMPFS_OPTS:
                return Result(error=EPERM, detail=f"tmpfs option {item!r}")
    elif data:
        return Result(error=EPERM, detail="proc options")
    target_raw = t.string(a[1])
    if target_raw is None:
        return Result(error=EFAULT)
    target = _workload_path(t, target_raw)
    flags |= MS_NOSUID | MS_NODEV  # never devices or setuid files from an emulated mount
    return _mount_in_namespaces(t.pid, fstype, target, flags, data)


def _mount_in_namespaces(pid: int, fstype: str, target: str, flags: int, data: str) -> Result:
    """Mount in the target's mount namespace, with the target's root and cwd, from a
    helper process that joins its mount and PID namespaces (a proc mount belongs to the
    PID namespace of the process that makes it)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    cwd_fd = os.open(f"/proc/{pid}/cwd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    mnt_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    pid_fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the helper
        code = 126
        try:
            os.close(r)
            from contain.linux.syscalls import mount, setns

            setns(mnt_fd, 0x00020000)
            setns(pid_fd, 0x20000000)
            os.fchdir(root_fd)  # the workload's root, even when it is chroot()ed
            os.chroot(".")
            os.fchdir(cwd_fd)
            grandchild = os.fork()
            if grandchild == 0:
                err = 0
                try:
                    # the target resolves inside the workload's root and mount
                    # namespace: whatever a symlink says, it lands in the container
                    mount(fstype, target, fstype, flags, data or None)
                except OSError as e:
                    err = e.errno or EPERM
                os.write(w, str(err).encode())
                os._exit(0)
            os.waitpid(grandchild, 0)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    for fd in (cwd_fd, mnt_fd, pid_fd, root_fd):
        os.close(fd)
    try:
        out = os.read(r, 16)
    finally:
        os.close(r)
        os.waitpid(child, 0)
    err = int(out or b"1")
    return Result(error=err, detail=f"{fstype} on {target}") if err else \
        Result(0, detail=f"{fstype} on {target}")


HANDLERS: dict[str, Handler] = {
    "uname": Handler(("uname",), {k: _str_opt for k in (
        "sysname", "nodename", "release", "version", "machine", "domainname")}, _uname),
    "return": Handler((), {"value": _int_opt, "errno": _errno_opt}, _return),
    "open": Handler(("open", "openat", "openat2", "creat"),
                    {"paths": _paths_opt, "default": lambda v, p: _mode_opt(v, p),
                     "errno": _errno_opt}, _open, ptrace=False),
    "mknod": Handler(("mknod", "mknodat"), {"devices": _devices_opt}, _mknod),
    "mount": Handler(("mount",), {"types": _fstypes_opt}, _mount),
}


def _mode_opt(value: Any, path: str) -> str:
    if value not in PATH_MODES:
        raise SpecError(path, f"expected one of {', '.join(PATH_MODES)}, got {value!r}")
    return str(value)


def check_options(handler: str, opts: dict[str, Any], path: str) -> None:
    if handler == "open" and "paths" not in opts:
        raise SpecError(f"{path}.paths", "required for handler 'open'")


def run(handler: str, target: Target, opts: dict[str, Any]) -> Result:
    try:
        return HANDLERS[handler].func(target, opts)
    except Gone:
        raise
    except OSError as e:
        return Result(error=e.errno or EPERM, detail=str(e))
