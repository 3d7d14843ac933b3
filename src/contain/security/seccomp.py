"""OCI ``linux.seccomp`` -> a classic-BPF program, and loading it in the container's init.

The work is split in two on purpose:

* :func:`compile_filter` runs in the runtime's parent process at ``create``. It builds the
  filter with libseccomp (our own ctypes binding), exports it as raw BPF and prepends the
  same "-ENOSYS for syscalls newer than the profile" stub runc prepends, so that a libc
  probing a syscall the profile does not know (clone3, faccessat2 ...) falls back instead
  of failing with EPERM. A bad profile fails here, with the JSON path of the bad field,
  before anything is created.
* :func:`load_filter` runs in the init just before execve: one seccomp(2) call with the
  bytes, no libseccomp, no allocation beyond one buffer.

Rules follow runc's semantics: a rule whose action equals the default action is skipped
(libseccomp refuses it), syscall names unknown to libseccomp are skipped with a debug log,
several conditions on the same argument index become one rule per condition (OR) while
conditions on distinct indexes form one rule (AND), SCMP_ACT_KILL means KILL_THREAD,
ERRNO and TRACE default to EPERM, and SCMP_ACT_NOTIFY is refused for ``write`` and as the
default action.
"""

from __future__ import annotations

import errno

from contain.errors import ContainError, SpecError, message

# imported now, not in load_filter: the init calls load_filter after pivot_root, when the
# package's files may no longer be reachable
from contain.linux.seccomp import set_filter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.spec.config import Seccomp

EPERM = errno.EPERM
ENOSYS = errno.ENOSYS

# kernel filter flags (linux/seccomp.h); kept here so that compile_filter does not need
# contain.linux.seccomp and load_filter does not need anything but it
_FLAG_TSYNC = 1 << 0
_FLAG_NEW_LISTENER = 1 << 3
_FLAG_TSYNC_ESRCH = 1 << 4
_FLAG_WAIT_KILLABLE_RECV = 1 << 5
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": 1 << 1,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 1 << 2,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": _FLAG_WAIT_KILLABLE_RECV,
}

_OPS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# OCI architecture -> libseccomp's name for it
ARCHES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x", "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
           "SCMP_ACT_NOTIFY")

# runc enables libseccomp's binary tree only above this many rules: libseccomp <= 2.5.4
# misbehaves with the optimisation and no rules, and it builds nodes of 4 syscalls anyway.
OPTIMIZE_MIN_RULES = 32

BPF_MAXINSNS = 4096

SECCOMP_FD_NAME = "seccompFd"


class SeccompProgram:
    """A compiled filter: what the init needs to load it, and nothing that needs
    libseccomp. ``bpf`` is an array of struct sock_filter in host byte order."""

    __slots__ = ("bpf", "flags", "listener_metadata", "listener_path", "notify")

    def __init__(self, bpf: bytes, flags: int, notify: bool, listener_path: str | None = None,
                 listener_metadata: str | None = None) -> None:
        self.bpf = bpf
        self.flags = flags
        self.notify = notify
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata

    @property
    def instructions(self) -> int:
        return len(self.bpf) // 8

    @property
    def to_agent(self) -> bool:
        """Whether some call goes to a user-space agent: a notify listener, or a tracer
        (a SECCOMP_RET_TRACE return: BPF_RET|BPF_K with that action)."""
        if self.notify:
            return True
        import struct

        return any(code == 0x06 and k & 0xFFFF0000 == 0x7FF00000
                   for code, _, _, k in struct.iter_unpack("=HBBI", self.bpf))

    def __repr__(self) -> str:
        return (f"SeccompProgram({self.instructions} insns, flags={self.flags:#x}, "
                f"notify={self.notify})")


# -- compile (parent, at create) -------------------------------------------------------

# actions: the kernel's SECCOMP_RET_* values, which libseccomp's SCMP_ACT_* are (so that a
# cached program needs nothing of libseccomp)
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_NOTIFY = 0x7FC00000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000
_SIMPLE_ACTIONS = {"SCMP_ACT_KILL": _ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
                   "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS, "SCMP_ACT_TRAP": _ACT_TRAP,
                   "SCMP_ACT_ALLOW": _ACT_ALLOW, "SCMP_ACT_LOG": _ACT_LOG,
                   "SCMP_ACT_NOTIFY": _ACT_NOTIFY}


def _action(name: str, errno_ret: int | None, path: str, errno_path: str) -> int:
    simple = _SIMPLE_ACTIONS.get(name)
    if simple is not None:
        return simple
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        code = EPERM if errno_ret is None else errno_ret
        if not 0 <= code <= 0xFFFF:
            raise SpecError(errno_path, f"{code} does not fit the 16 bits of the filter's data")
        return (_ACT_ERRNO if name == "SCMP_ACT_ERRNO" else _ACT_TRACE) | code
    raise SpecError(path, f"unknown seccomp action {name!r}")


def _lib_error(e: OSError) -> ContainError:
    return ContainError(message(e), errno=e.errno)


def _max_syscalls(seccomp: Seccomp, arch_tokens: list[int]) -> dict[int, dict[int, int]]:
    """For the -ENOSYS stub: audit arch -> {libseccomp arch token: largest syscall number
    any rule of the profile names}, as runc's patchbpf computes it."""
    from contain.linux import libseccomp as L

    out: dict[int, dict[int, int]] = {}
    names = {n for s in seccomp.syscalls for n in s.names if n}
    for token in arch_tokens:
        audit = L.AUDIT_ARCH_X86_64 if token == L.ARCH_X32 else token
        largest = 0
        for name in names:
            nr = L.syscall_resolve_name(name, token)
            if nr > largest:
                largest = nr
        if largest:
            out.setdefault(audit, {})[token] = largest
        else:
            from contain import log

            log.warning(f"seccomp: no syscall of the profile is known on arch {token:#x}")
    return out


# classic BPF opcodes
_LD_W_ABS = 0x20
_JA = 0x05
_JEQ_K = 0x15
_JGT_K = 0x25
_JSET_K = 0x45
_RET_K = 0x06
_X32_BIT = 0x40000000
_AUDIT_S390 = 0x16
_AUDIT_S390X = 0x80000016


def _enosys_stub(maxes: dict[int, dict[int, int]]) -> bytes:
    """Assemble the stub that returns -ENOSYS for syscall numbers above the largest one
    the profile names (per architecture; x86_64 and x32 told apart by bit 30), then
    falls through to the libseccomp program, which starts by reloading the arch itself."""
    import struct

    from contain.linux import libseccomp as L

    if not maxes:
        return b""
    code: list[tuple[int, object, object, object]] = []  # (op, jt, jf, k) with labels
    labels: dict[str, int] = {}

    def emit(op: int, jt: object = 0, jf: object = 0, k: object = 0) -> None:
        code.append((op, jt, jf, k))

    emit(_LD_W_ABS, k=4)  # seccomp_data.arch
    for audit in maxes:
        emit(_JEQ_K, f"arch{audit}", 0, audit)
    emit(_JA, k="filter")
    for audit, per_token in maxes.items():
        labels[f"arch{audit}"] = len(code)
        emit(_LD_W_ABS, k=0)  # seccomp_data.nr
        if audit in (_AUDIT_S390, _AUDIT_S390X):
            # unknown large syscalls are multiplexed through nr 0 (setup) on s390
            emit(_JEQ_K, "enosys", 0, 0)
        if audit == L.AUDIT_ARCH_X86_64:
            native, x32 = per_token.get(L.AUDIT_ARCH_X86_64), per_token.get(L.ARCH_X32)
            emit(_JSET_K, f"x32_{audit}", 0, _X32_BIT)
            if native is not None:
                emit(_JGT_K, "enosys", "filter", native)
            else:
                emit(_JA, k="filter")
            labels[f"x32_{audit}"] = len(code)
            if x32 is not None:
                emit(_JGT_K, "enosys", "filter", x32)
            else:
                emit(_JA, k="filter")
        else:
            emit(_JGT_K, "enosys", "filter", max(per_token.values()))
    labels["enosys"] = len(code)
    emit(_RET_K, k=0x00050000 | ENOSYS)
    labels["filter"] = len(code)

    out = bytearray()
    for i, (op, jt, jf, k) in enumerate(code):
        def rel(target: object, i: int = i) -> int:
            return labels[target] - i - 1 if isinstance(target, str) else int(target)  # type: ignore[call-overload]

        if op == _JA:
            out += struct.pack("=HBBI", op, 0, 0, rel(k))
            continue
        jt_off, jf_off = rel(jt), rel(jf)
        if not (0 <= jt_off <= 255 and 0 <= jf_off <= 255):  # pragma: no cover - tiny stub
            raise ContainError("seccomp: -ENOSYS stub jump out of range")
        out += struct.pack("=HBBI", op, jt_off, jf_off, int(k))  # type: ignore[call-overload]
    return bytes(out)


def compile_filter(seccomp: Seccomp, path: str = "$.linux.seccomp",
                   cache_dir: str | None = None) -> SeccompProgram:
    """Compile an OCI seccomp profile. Raises SpecError (with the JSON path) for bad input
    and ContainError when libseccomp is missing or refuses the filter.

    With *cache_dir* (a root-owned directory under the runtime's state root) a program
    compiled before for the same profile, libseccomp and kernel is reused."""
    default_errno_path = f"{path}.defaultErrnoRet"
    if seccomp.default_action not in ACTIONS:
        raise SpecError(f"{path}.defaultAction",
                        f"unknown seccomp action {seccomp.default_action!r}")
    if seccomp.default_action == "SCMP_ACT_NOTIFY":
        raise SpecError(f"{path}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")

    flags = 0
    for i, fname in enumerate(seccomp.flags):
        bit = _FLAGS.get(fname)
        if bit is None:
            raise SpecError(f"{path}.flags[{i}]", f"unknown seccomp flag {fname!r}")
        flags |= bit

    notify = False
    for i, rule in enumerate(seccomp.syscalls):
        rpath = f"{path}.syscalls[{i}]"
        if rule.action not in ACTIONS:
            raise SpecError(f"{rpath}.action", f"unknown seccomp action {rule.action!r}")
        for j, name in enumerate(rule.names):
            if not name:
                raise SpecError(f"{rpath}.names[{j}]", "empty syscall name")
            if rule.action == "SCMP_ACT_NOTIFY" and name == "write":
                # the init reports the listener fd to the runtime with write(2)
                raise SpecError(f"{rpath}.names[{j}]",
                                "SCMP_ACT_NOTIFY cannot be used for the write syscall")
        for j, arg in enumerate(rule.args):
            apath = f"{rpath}.args[{j}]"
            if not 0 <= arg.index <= 5:
                raise SpecError(f"{apath}.index", f"{arg.index} out of range [0, 5]")
            if arg.op not in _OPS:
                raise SpecError(f"{apath}.op", f"unknown seccomp operator {arg.op!r}")
            for attr, jkey in (("value", "value"), ("value_two", "valueTwo")):
                v = getattr(arg, attr)
                if not 0 <= v < 2**64:
                    raise SpecError(f"{apath}.{jkey}", f"{v} out of range for a 64-bit argument")
        if rule.action == "SCMP_ACT_NOTIFY":
            notify = True
    if notify:
        if not seccomp.listener_path:
            raise SpecError(f"{path}.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath")
        flags |= _FLAG_NEW_LISTENER
        if flags & _FLAG_TSYNC:
            flags |= _FLAG_TSYNC_ESRCH  # TSYNC and a listener are exclusive without it
    elif flags & _FLAG_WAIT_KILLABLE_RECV:
        raise SpecError(f"{path}.flags", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs "
                        "SCMP_ACT_NOTIFY rules (the kernel refuses it without a listener)")

    default = _action(seccomp.default_action, seccomp.default_errno_ret,
                      f"{path}.defaultAction", default_errno_path)
    actions = [_action(r.action, r.errno_ret, f"{path}.syscalls[{i}].action",
                       f"{path}.syscalls[{i}].errnoRet") for i, r in enumerate(seccomp.syscalls)]
    for i, arch in enumerate(seccomp.architectures):
        if arch not in ARCHES:
            raise SpecError(f"{path}.architectures[{i}]", f"unknown architecture {arch!r}")

    key: str | None = None
    if cache_dir:
        key = _cache_key(seccomp)
        program = _cache_get(cache_dir, key)
        if program is not None:
            return SeccompProgram(program, flags, notify, seccomp.listener_path,
                                  seccomp.listener_metadata)
    program = _build(seccomp, path, default, actions, notify)
    if cache_dir and key:
        _cache_put(cache_dir, key, program)
    return SeccompProgram(program, flags, notify, seccomp.listener_path,
                          seccomp.listener_metadata)


def _build(seccomp: Seccomp, path: str, default: int, actions: list[int], notify: bool) -> bytes:
    """libseccomp's program for the profile, with the -ENOSYS stub in front."""
    from contain import log
    from contain.linux import libseccomp as L

    try:
        if notify and L.api_level() < 6:
            raise ContainError(
                f"seccomp notify unsupported: libseccomp API level {L.api_level()} < 6 "
                "(libseccomp >= 2.5.0 and Linux >= 5.7 are needed)")
        filt = L.Filter(default)
    except OSError as e:
        raise _lib_error(e) from e

    try:
        tokens = [L.arch_native()]
        for i, arch in enumerate(seccomp.architectures):
            apath = f"{path}.architectures[{i}]"
            token = L.arch_resolve_name(ARCHES[arch])
            if not token:
                raise SpecError(apath, f"architecture {arch!r} is not supported by "
                                f"libseccomp {'.'.join(map(str, L.version()))}")
            try:
                filt.add_arch(token)
            except OSError as e:
                raise SpecError(apath, f"cannot add architecture {arch}: {e.strerror}") from e
            if token not in tokens:
                tokens.append(token)

        # runc counts its per-name rules (its config has one name per rule)
        if sum(len(r.names) for r in seccomp.syscalls) > OPTIMIZE_MIN_RULES:
            try:
                filt.set_attr(L.FLTATR_CTL_OPTIMIZE, 2)
            except OSError as e:  # older libseccomp: not fatal
                log.debug(f"seccomp binary tree optimization not available: {e}")

        for i, rule in enumerate(seccomp.syscalls):
            act = actions[i]
            if act == default:
                continue  # redundant: libseccomp would refuse it
            conds = [(a.index, _OPS[a.op], a.value, a.value_two) for a in rule.args]
            counts = [0] * 6
            for a in rule.args:
                counts[a.index] += 1
            split = max(counts) > 1
            for j, name in enumerate(rule.names):
                nr = L.syscall_resolve_name(name)
                if nr == L.NR_SCMP_ERROR:
                    log.debug(f"unknown seccomp syscall {name!r} ignored")
                    continue
                try:
                    if split:  # runc: one rule per condition, so they OR
                        for c in conds:
                            filt.add_rule(act, nr, [c])
                    else:
                        filt.add_rule(act, nr, conds)
                except OSError as e:
                    raise SpecError(f"{path}.syscalls[{i}].names[{j}]",
                                    f"cannot add seccomp rule for {name}: {e.strerror}") from e

        try:
            program = filt.export_bpf()
        except OSError as e:
            raise _lib_error(e) from e
    finally:
        filt.release()

    if not _permissive(seccomp):
        program = _enosys_stub(_max_syscalls(seccomp, tokens)) + program
    if len(program) // 8 > BPF_MAXINSNS:
        raise SpecError(path, f"the filter has {len(program) // 8} BPF instructions, more than "
                        f"the kernel's limit of {BPF_MAXINSNS}")
    return program


# -- compiled-program cache ----------------------------------------------------------------
# Compiling the default profile costs libseccomp 15-25 ms, most of a create. The program
# depends only on the profile, the libseccomp build and the kernel, so it is cached under
# the runtime's root (root-owned, 0700: the bytes are trusted as a security filter).

_CACHE_FORMAT = b"contain-seccomp-1"


def _cache_key(seccomp: Seccomp) -> str:
    import os
    from _blake2 import blake2b

    from contain.linux.seccomp import libseccomp_version

    try:  # (the lean way: a cache hit never loads the ctypes binding)
        libver = libseccomp_version()
    except OSError:
        libver = (0, 0, 0)
    u = os.uname()
    canon = repr((
        seccomp.default_action, seccomp.default_errno_ret, seccomp.architectures,
        [(r.names, r.action, r.errno_ret,
          [(a.index, a.value, a.value_two, a.op) for a in r.args]) for r in seccomp.syscalls],
        libver, u.release, u.machine,
    )).encode()
    return blake2b(_CACHE_FORMAT + canon, digest_size=20).hexdigest()


def _cache_get(cache_dir: str, key: str) -> bytes | None:
    import os

    try:
        fd = os.open(f"{cache_dir}/{key}.bpf", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size % 8 or not st.st_size:
            return None
        data = os.read(fd, st.st_size)
    finally:
        os.close(fd)
    return data if len(data) == st.st_size else None


def _cache_put(cache_dir: str, key: str, program: bytes) -> None:
    import os

    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{cache_dir}/.{key}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, program)
        finally:
            os.close(fd)
        os.replace(tmp, f"{cache_dir}/{key}.bpf")
    except OSError:
        pass  # a cache only


def _permissive(seccomp: Seccomp) -> bool:
    """No -ENOSYS stub when unknown syscalls are allowed anyway, or already get ENOSYS."""
    if seccomp.default_action in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        return True
    return seccomp.default_action == "SCMP_ACT_ERRNO" and seccomp.default_errno_ret == ENOSYS


def compile_config(config: Any, cache_dir: str | None = None) -> SeccompProgram | None:
    """The program for a decoded Spec (``config.linux.seccomp``), or None without one."""
    linux = getattr(config, "linux", None)
    sc = getattr(linux, "seccomp", None) if linux is not None else None
    return compile_filter(sc, cache_dir=cache_dir) if sc is not None else None


# -- load (init, just before execve) -----------------------------------------------------

def load_filter(program: SeccompProgram) -> int | None:
    """Install the filter on the calling process; returns the user-notification listener
    fd when the profile uses SCMP_ACT_NOTIFY (the fd is O_CLOEXEC), else None.

    Call it as the last step before execve when no_new_privs is set; without
    no_new_privs the caller needs CAP_SYS_ADMIN, so call it before dropping capabilities
    (as runc does)."""
    try:
        return set_filter(program.bpf, program.flags)
    except OSError as e:
        raise ContainError(f"error loading seccomp filter into kernel: {e.strerror}") from e


# -- notify listener -> seccomp agent ------------------------------------------------------

def process_state(state: dict[str, Any], metadata: str | None,
                  pid: int | None = None) -> dict[str, Any]:
    """The message runc sends to a seccomp agent (runtime-spec ContainerProcessState):
    ``fds`` names the descriptors passed with SCM_RIGHTS, in order."""
    msg: dict[str, Any] = {
        "ociVersion": state.get("ociVersion", "1.2.0"),
        "fds": [SECCOMP_FD_NAME],
        "pid": state.get("pid", 0) if pid is None else pid,
    }
    if metadata:
        msg["metadata"] = metadata
    msg["state"] = state
    return msg


def send_listener(listener_path: str, listener_fd: int, state: dict[str, Any],
                  metadata: str | None, pid: int | None = None) -> None:
    """Hand the notify fd to the seccomp agent listening on the unix socket at
    *listener_path*, as runc does: one message whose data is the ContainerProcessState
    JSON and whose SCM_RIGHTS carries the fd. *state* is the container's OCI state dict
    (runc sends status "running" there); *pid* is the process the fd belongs to (the
    init's pid by default)."""
    import socket

    from contain.jsonio import dumps

    payload = dumps(process_state(state, metadata, pid)).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(30)
            s.connect(listener_path)
            socket.send_fds(s, [payload], [listener_fd])
    except OSError as e:
        raise ContainError(f"cannot send seccomp fd to {listener_path}: "
                           f"{e.strerror or e}") from e
