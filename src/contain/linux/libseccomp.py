"""A thin ctypes binding of libseccomp.so.2: just what compiling a filter needs.

Only the runtime's parent process uses it, to turn an OCI ``linux.seccomp`` profile into
classic BPF at ``create`` time; the container's init loads the exported program with the
seccomp(2) system call and never touches the library. The shared object is opened on first
use, so importing this module costs nothing.

Every function raises :class:`LibseccompError` (an :class:`OSError`) carrying the errno
the library returned and the name of the call; a missing library raises
:class:`LibseccompMissing`, whose message tells the user what to install.
"""

from __future__ import annotations

import ctypes
import errno
import os

from contain.linux.syscalls import SyscallError, syscall_error

# seccomp.h: enum scmp_filter_attr
FLTATR_ACT_DEFAULT = 1
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_NNP = 3
FLTATR_CTL_TSYNC = 4
FLTATR_API_TSKIP = 5
FLTATR_CTL_LOG = 6
FLTATR_CTL_SSB = 7
FLTATR_CTL_OPTIMIZE = 8
FLTATR_API_SYSRAWRC = 9

# seccomp.h: enum scmp_compare
CMP_NE = 1
CMP_LT = 2
CMP_LE = 3
CMP_EQ = 4
CMP_GE = 5
CMP_GT = 6
CMP_MASKED_EQ = 7

# seccomp.h: actions (the same values as the kernel's SECCOMP_RET_*)
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_KILL = ACT_KILL_THREAD
ACT_TRAP = 0x00030000
ACT_NOTIFY = 0x7FC00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000


def act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


def act_trace(msg: int) -> int:
    return 0x7FF00000 | (msg & 0xFFFF)


NR_SCMP_ERROR = -1

# Architecture tokens libseccomp uses that are not the kernel's AUDIT_ARCH_* value.
ARCH_X32 = 0x4000003E          # EM_X86_64 | __AUDIT_ARCH_LE, without the 64-bit bit
AUDIT_ARCH_X86_64 = 0xC000003E

LIBRARY = "libseccomp.so.2"


# a libseccomp call failed: errno is set, the message names the call (linux/'s one error)
LibseccompError = SyscallError


class LibseccompMissing(SyscallError):
    """libseccomp.so.2 cannot be loaded."""


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as e:
        raise LibseccompMissing(
            errno.ENOENT, "seccomp: cannot load", LIBRARY,
            f"{e}; install libseccomp (Debian/Ubuntu: libseccomp2, Fedora: libseccomp) "
            "to use linux.seccomp") from e
    vp = ctypes.c_void_p
    u32 = ctypes.c_uint32
    cint = ctypes.c_int
    cstr = ctypes.c_char_p
    sigs: dict[str, tuple[object, list[object]]] = {
        "seccomp_init": (vp, [u32]),
        "seccomp_release": (None, [vp]),
        "seccomp_arch_add": (cint, [vp, u32]),
        "seccomp_arch_exist": (cint, [vp, u32]),
        "seccomp_arch_native": (u32, []),
        "seccomp_arch_resolve_name": (u32, [cstr]),
        "seccomp_attr_set": (cint, [vp, cint, u32]),
        "seccomp_attr_get": (cint, [vp, cint, ctypes.POINTER(u32)]),
        "seccomp_syscall_resolve_name": (cint, [cstr]),
        "seccomp_syscall_resolve_name_arch": (cint, [u32, cstr]),
        "seccomp_syscall_resolve_num_arch": (vp, [u32, cint]),
        "seccomp_rule_add_array": (cint, [vp, u32, cint, ctypes.c_uint, ctypes.POINTER(ArgCmp)]),
        "seccomp_export_bpf": (cint, [vp, cint]),
        "seccomp_export_pfc": (cint, [vp, cint]),
        "seccomp_api_get": (ctypes.c_uint, []),
        "seccomp_version": (ctypes.POINTER(_Version), []),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


def available() -> bool:
    try:
        _load()
    except LibseccompMissing:
        return False
    return True


def _check(ret: int, call: str) -> int:
    if ret < 0:
        raise syscall_error(-ret, call)
    return ret


def version() -> tuple[int, int, int]:
    v = _load().seccomp_version().contents
    return (v.major, v.minor, v.micro)


def api_level() -> int:
    return int(_load().seccomp_api_get())


def arch_native() -> int:
    return int(_load().seccomp_arch_native())


def arch_resolve_name(name: str) -> int:
    """libseccomp's token for an architecture name ("x86_64", "aarch64" ...); 0 if unknown."""
    return int(_load().seccomp_arch_resolve_name(name.encode()))


def syscall_resolve_name(name: str, arch: int | None = None) -> int:
    """The syscall number of *name* (native arch by default); NR_SCMP_ERROR if unknown.

    Names the architecture lacks but libseccomp knows (socketcall on x86_64 ...) give a
    negative pseudo-number, which rules accept."""
    lib = _load()
    b = name.encode()
    if arch is None:
        return int(lib.seccomp_syscall_resolve_name(b))
    return int(lib.seccomp_syscall_resolve_name_arch(arch, b))


def syscall_resolve_num(num: int, arch: int) -> str | None:
    lib = _load()
    p = lib.seccomp_syscall_resolve_num_arch(arch, num)
    if not p:
        return None
    name = ctypes.string_at(p).decode()
    ctypes.CDLL(None).free(ctypes.c_void_p(p))
    return name


class Filter:
    """An owned scmp_filter_ctx; use as a context manager or call :meth:`release`."""

    __slots__ = ("_ctx", "_lib")

    def __init__(self, default_action: int) -> None:
        self._ctx: int | None = None
        self._lib = _load()
        ctx = self._lib.seccomp_init(default_action)
        if not ctx:
            raise LibseccompError(22, f"seccomp_init: invalid default action {default_action:#x}")
        self._ctx = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.release()

    def add_arch(self, token: int) -> None:
        """Add an architecture; adding one already present is not an error."""
        ret = self._lib.seccomp_arch_add(self._ctx, token)
        if ret == -17:  # -EEXIST
            return
        _check(ret, f"seccomp_arch_add({token:#x})")

    def set_attr(self, attr: int, value: int) -> None:
        _check(self._lib.seccomp_attr_set(self._ctx, attr, value), f"seccomp_attr_set({attr})")

    def get_attr(self, attr: int) -> int:
        out = ctypes.c_uint32(0)
        _check(self._lib.seccomp_attr_get(self._ctx, attr, ctypes.byref(out)),
               f"seccomp_attr_get({attr})")
        return out.value

    def add_rule(self, action: int, syscall: int,
                 conds: list[tuple[int, int, int, int]] | None = None) -> None:
        """Add a rule; *conds* are (arg index, CMP_* op, datum_a, datum_b), all ANDed."""
        n = len(conds) if conds else 0
        arr = (ArgCmp * max(n, 1))()
        for i, (arg, op, a, b) in enumerate(conds or ()):
            arr[i].arg, arr[i].op, arr[i].datum_a, arr[i].datum_b = arg, op, a, b
        _check(self._lib.seccomp_rule_add_array(self._ctx, action, syscall, n, arr),
               "seccomp_rule_add")

    def _export(self, fn_name: str, label: str) -> bytes:
        fd = os.memfd_create(f"contain-{label}", os.MFD_CLOEXEC)
        try:
            _check(getattr(self._lib, fn_name)(self._ctx, fd), fn_name)
            size = os.lseek(fd, 0, os.SEEK_CUR)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def export_bpf(self) -> bytes:
        """The classic BPF program (struct sock_filter array, host byte order)."""
        return self._export("seccomp_export_bpf", "seccomp-bpf")

    def export_pfc(self) -> str:
        """The pseudo-C listing of the filter (for debugging)."""
        return self._export("seccomp_export_pfc", "seccomp-pfc").decode()
