"""The least a sandbox started by a fresh Python interpreter can cost.

Run as ``python3 -I -S sandbox_floor.py /bin/true`` (as root). It makes what the goals'
bubblewrap command makes -- new mount, PID, network, IPC, UTS and cgroup namespaces, the
host's root bound read-only, a fresh /proc, a /dev of six bound nodes with devpts, a
private /tmp, pivot_root, a new session, death with the parent -- with nothing else: no
configuration, no checks, no cgroup, no seccomp filter, no capability drop, no error
messages, no cleanup beyond the kernel's, and only ``posix`` and ``_ctypes`` imported.
It is a yardstick for the goals benchmark, not a sandbox: its time over
``python3 -I -S -c pass`` is the kernel's work for the sandbox plus the interpreter's
for a few dozen calls, and its ratio to bubblewrap is the lowest ratio any sandbox
started per command on this interpreter can reach (contain adds its safe defaults --
the cgroup, the filter, the capability drop, the masks -- on top).
"""

import _ctypes
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # nothing more is imported at run time: the floor stays a floor
    from collections.abc import Callable


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _Func(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Libc:
    _handle = _ctypes.dlopen(None, 0x2)  # type: ignore[arg-type]  # RTLD_NOW, the process


_libc = _Libc()


def _call(name: str) -> "Callable[..., None]":
    func = _Func((name, _libc))  # type: ignore[arg-type]  # a CFuncPtr looks name up in _handle

    def call(*args: object) -> None:
        if func(*args) != 0:
            raise OSError(_ctypes.get_errno(), f"{name}{args}")

    return call


mount, umount2, unshare, pivot_root = (_call(n) for n in ("mount", "umount2", "unshare",
                                                             "pivot_root"))
prctl = _call("prctl")

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x20000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 32, 4096, 16384, 1 << 19
MNT_DETACH, PR_SET_PDEATHSIG = 2, 1
BASE = b"/tmp"  # a tmpfs is mounted over it in the new mount namespace only
ROOT = BASE + b"/newroot"
NODES = (b"null", b"zero", b"full", b"random", b"urandom", b"tty")


def _sandbox(argv: "list[str]") -> None:
    mount(None, b"/", None, MS_SLAVE | MS_REC, None)
    mount(b"tmpfs", BASE, b"tmpfs", MS_NOSUID | MS_NODEV, None)
    posix.mkdir(ROOT)
    mount(b"/", ROOT, None, MS_BIND | MS_REC, None)
    mount(None, ROOT, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    mount(b"proc", ROOT + b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    dev = ROOT + b"/dev"
    mount(b"tmpfs", dev, b"tmpfs", MS_NOSUID, b"mode=0755")
    for node in NODES:
        posix.close(posix.open(dev + b"/" + node, posix.O_CREAT | posix.O_WRONLY, 0o666))
        mount(b"/dev/" + node, dev + b"/" + node, None, MS_BIND, None)
    posix.mkdir(dev + b"/pts")
    posix.mkdir(dev + b"/shm")
    mount(b"devpts", dev + b"/pts", b"devpts", MS_NOSUID | MS_NOEXEC,
          b"newinstance,ptmxmode=0666,mode=620")
    posix.symlink(b"pts/ptmx", dev + b"/ptmx")
    mount(b"tmpfs", ROOT + b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, None)
    posix.chdir(ROOT)
    pivot_root(b".", b".")
    umount2(b".", MNT_DETACH)
    posix.chdir(b"/")
    posix.setsid()
    prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    posix.execv(argv[0], argv)


def main() -> None:
    unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
            | CLONE_NEWCGROUP)
    pid = posix.fork()
    if pid == 0:
        try:
            _sandbox(sys.argv[1:])
        finally:
            posix._exit(127)
    _, status = posix.waitpid(pid, 0)
    posix._exit(posix.waitstatus_to_exitcode(status))


main()
