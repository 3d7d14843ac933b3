"""The last exec into a container goes through a sealed, in-memory helper (CVE-2019-5736).

The threat: the runtime is the host's Python interpreter. If the program it execs in a
container is a script whose interpreter line is ``#!/proc/self/exe``, the kernel resolves
that link in the exec'ing process, which is still the runtime, and runs the *host's
interpreter* again inside the container, as a new (dumpable) image. Any process of the
container can then open ``/proc/<pid>/exe`` of it and reach the host's interpreter file
for writing (root in a container without a user namespace is root on the host).

The fix: the runtime never execs the container's program itself. It execs a tiny static
helper held in a sealed memfd (no write, grow or shrink, and the seals themselves sealed),
by file descriptor (``execveat(fd, "", AT_EMPTY_PATH)`` via ``os.execve(fd, ...)``), and
the helper does only ``execve(argv[0], argv + 1, envp)``. So the image that execs the
container's program is the helper, and ``/proc/self/exe`` in a ``#!/proc/self/exe`` script
names the sealed memfd, never a host file: running it again runs the helper (harmless; it
then exits 127 for want of a program), and opening it for writing gets nothing writable.
Cost: one small memfd per container process (made just before the fork, inherited by
the init or the exec'd process), and one more exec of a 248-byte static image.

Two execs and capabilities: the helper file carries no file capabilities and no set-id
bits, and the bounding, inheritable and ambient sets do not change across exec; so the
sets the container's program gets after helper + program are those it would get after a
direct exec of the program (ambient capabilities survive both execs; permitted ones that
are not ambient are dropped at the first exec for a non-root uid, as they would be at the
only one; uid 0 gets its legacy "all file capabilities" at each exec). no_new_privs stays
set across both. A set-id or file-capability program is exec'd by the helper exactly as
it would have been by the runtime.

Seccomp: the container's filter is loaded before the first exec, so it must allow
``execveat`` (for the helper) and ``execve`` (the helper's exec); OCI default profiles
allow both. When ``execveat`` is refused (EPERM/ENOSYS/EACCES), the helper is exec'd through
``/proc/self/fd/N`` with plain ``execve`` (needs /proc in the container); when that fails
too, the exec fails (exit 127 with a message): never a direct exec of the program.

vm.memfd_noexec: 0 and 1 allow an executable memfd asked for with MFD_EXEC; 2 refuses
it, and then every exec into a container fails with a message naming that sysctl (there
is no sound fallback that keeps the host's interpreter out of the container).

Architectures: helper bytes exist for x86_64 and aarch64. On any other machine the exec
fails closed with a message (no unguarded exec).

The runc project closed the same route first by re-executing itself from a memfd copy of
its binary (cost: a copy of ~10 MB per start), then by a read-only bind/overlay of its
binary, then by a tiny static "dmz" helper exec'd in between; this module takes the last
shape, without the copy, and it is independent of their code.
"""

from __future__ import annotations

import _thread
import errno
import os
import struct

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

# x86_64 Linux, position independent (only rip-relative addressing). At entry: [rsp] is
# argc, then argv[0..argc-1], NULL, envp... Assembled with GNU as, bytes checked with
# objdump -d; the listing is the source:
#
#   00  48 8b 0c 24           mov    rcx, [rsp]            ; argc
#   04  48 83 f9 02           cmp    rcx, 2
#   08  0f 82 83 00 00 00     jb     usage                 ; need path and argv[0]
#   0e  48 8b 5c 24 08        mov    rbx, [rsp+8]          ; path = argv[0]
#   13  48 8d 74 24 10        lea    rsi, [rsp+16]         ; argv + 1
#   18  48 8d 54 cc 10        lea    rdx, [rsp+rcx*8+16]   ; envp
#   1d  48 89 df              mov    rdi, rbx
#   20  b8 3b 00 00 00        mov    eax, 59               ; execve
#   25  0f 05                 syscall
#   27  f7 d8                 neg    eax                   ; errno
#   29  41 89 c4              mov    r12d, eax
#   2c  48 8d 35 88 00 00 00  lea    rsi, [rip+pre]        ; "contain: exec "
#   33  ba 0e 00 00 00        mov    edx, 14
#   38  e8 71 00 00 00        call   out
#   3d  48 89 de              mov    rsi, rbx              ; the path, strlen'd
#   40  31 d2                 xor    edx, edx
#   42  80 3c 16 00           cmp    byte [rsi+rdx], 0
#   46  74 04                 je     +4
#   48  ff c2                 inc    edx
#   4a  eb f6                 jmp    42
#   4c  e8 5d 00 00 00        call   out
#   51  48 8d 35 71 00 00 00  lea    rsi, [rip+mid]        ; ": errno "
#   58  ba 08 00 00 00        mov    edx, 8
#   5d  e8 4c 00 00 00        call   out
#   62  48 8d 74 24 f0        lea    rsi, [rsp-16]         ; decimal errno + "\n",
#   67  c6 06 0a              mov    byte [rsi], 10        ; built downwards below the
#   6a  44 89 e0              mov    eax, r12d             ; stack pointer (the calls
#   6d  b9 0a 00 00 00        mov    ecx, 10               ; only use [rsp-8, rsp))
#   72  31 d2                 xor    edx, edx
#   74  f7 f1                 div    ecx
#   76  80 c2 30              add    dl, '0'
#   79  48 ff ce              dec    rsi
#   7c  88 16                 mov    [rsi], dl
#   7e  85 c0                 test   eax, eax
#   80  75 f0                 jnz    72
#   82  48 8d 54 24 f1        lea    rdx, [rsp-15]
#   87  48 29 f2              sub    rdx, rsi
#   8a  e8 1f 00 00 00        call   out
#   8f  eb 11                 jmp    quit
#   91  48 8d 35 39 00 00 00  usage: lea rsi, [rip+use]   ; "contain: exec helper: ..."
#   98  ba 27 00 00 00        mov    edx, 39
#   9d  e8 0c 00 00 00        call   out
#   a2  bf 7f 00 00 00        quit: mov edi, 127
#   a7  b8 e7 00 00 00        mov    eax, 231              ; exit_group(127)
#   ac  0f 05                 syscall
#   ae  bf 02 00 00 00        out: mov edi, 2              ; write(2, rsi, rdx)
#   b3  b8 01 00 00 00        mov    eax, 1
#   b8  0f 05                 syscall
#   ba  c3                    ret
#   bb  pre, c9 mid, d1 use: the three strings
_X86_64 = bytes.fromhex(
    "488b0c244883f9020f8283000000488b5c2408488d742410488d54cc104889dfb83b0000000f05"
    "f7d84189c4488d3588000000ba0e000000e8710000004889de31d2803c16007404ffc2ebf6e85d"
    "000000488d3571000000ba08000000e84c000000488d7424f0c6060a4489e0b90a00000031d2f7"
    "f180c23048ffce881685c075f0488d5424f14829f2e81f000000eb11488d3539000000ba270000"
    "00e80c000000bf7f000000b8e70000000f05bf02000000b8010000000f05c3"
) + b"contain: exec " + b": errno " + b"contain: exec helper: no program given\n"

# aarch64 Linux, the same program (execve 221, write 64, exit_group 94); assembled with
# GNU as for aarch64, checked with objdump -d and run under qemu-aarch64 in the tests:
#
#   00  f94003e9  ldr  x9, [sp]              ; argc
#   04  f100093f  cmp  x9, #2
#   08  540004e3  b.lo usage
#   0c  f94007f3  ldr  x19, [sp, #8]         ; path = argv[0]
#   10  910043e1  add  x1, sp, #16           ; argv + 1
#   14  8b296fe2  add  x2, sp, x9, lsl #3
#   18  91004042  add  x2, x2, #16           ; envp
#   1c  aa1303e0  mov  x0, x19
#   20  d2801ba8  mov  x8, #221              ; execve
#   24  d4000001  svc  #0
#   28  cb0003f4  neg  x20, x0               ; errno
#   2c  d10083ff  sub  sp, sp, #32           ; room for the digits (no red zone here)
#   30  100004e1  adr  x1, pre
#   34  d28001c2  mov  x2, #14
#   38  94000021  bl   out
#   3c  aa1303e1  mov  x1, x19               ; the path, strlen'd
#   40  d2800002  mov  x2, #0
#   44  38626823  ldrb w3, [x1, x2]
#   48  34000063  cbz  w3, 54
#   4c  91000442  add  x2, x2, #1
#   50  17fffffd  b    44
#   54  9400001a  bl   out
#   58  50000401  adr  x1, mid
#   5c  d2800102  mov  x2, #8
#   60  94000017  bl   out
#   64  91007fe1  add  x1, sp, #31           ; "\n", then the digits downwards
#   68  52800143  mov  w3, #10
#   6c  39000023  strb w3, [x1]
#   70  aa1403e4  mov  x4, x20
#   74  d2800145  mov  x5, #10
#   78  9ac50886  udiv x6, x4, x5
#   7c  9b0590c7  msub x7, x6, x5, x4        ; remainder
#   80  9100c0e7  add  x7, x7, #'0'
#   84  d1000421  sub  x1, x1, #1
#   88  39000027  strb w7, [x1]
#   8c  aa0603e4  mov  x4, x6
#   90  b5ffff44  cbnz x4, 78
#   94  910083e2  add  x2, sp, #32
#   98  cb010042  sub  x2, x2, x1
#   9c  94000008  bl   out
#   a0  14000004  b    quit
#   a4  500001e1  usage: adr x1, use
#   a8  d28004e2  mov  x2, #39
#   ac  94000004  bl   out
#   b0  d2800fe0  quit: mov x0, #127
#   b4  d2800bc8  mov  x8, #94               ; exit_group(127)
#   b8  d4000001  svc  #0
#   bc  d2800040  out: mov x0, #2            ; write(2, x1, x2)
#   c0  d2800808  mov  x8, #64
#   c4  d4000001  svc  #0
#   c8  d65f03c0  ret
#   cc  pre, da mid, e2 use: the three strings
_AARCH64 = bytes.fromhex(
    "e90340f93f0900f1e3040054f30740f9e1430091e26f298b42400091e00313aaa81b80d2010000d4"
    "f40300cbff8300d1e1040010c20180d221000094e10313aa020080d2236862386300003442040091"
    "fdffff171a00009401040050020180d217000094e17f00914301805223000039e40314aa450180d2"
    "8608c59ac790059be7c00091210400d127000039e40306aa44ffffb5e2830091420001cb08000094"
    "04000014e1010050e20480d204000094e00f80d2c80b80d2010000d4400080d2080880d2010000d4"
    "c0035fd6"
) + b"contain: exec " + b": errno " + b"contain: exec helper: no program given\n"

# machine -> (code, ELF e_machine, segment alignment)
_CODE = {"x86_64": (_X86_64, 62, 0x1000), "aarch64": (_AARCH64, 183, 0x10000)}

_BASE = 0x400000
_MFD_CLOEXEC = 0x1
_MFD_ALLOW_SEALING = 0x2
_MFD_EXEC = 0x10  # Linux 6.3+: executable even under vm.memfd_noexec=1
_SEALS = 0x0001 | 0x0002 | 0x0004 | 0x0008  # F_SEAL_SEAL, SHRINK, GROW, WRITE
_F_ADD_SEALS = 1033


def elf_image(machine: str | None = None) -> bytes:
    """A static ELF64 executable of one read+execute segment holding the helper's code."""
    code, e_machine, align = _CODE[machine or os.uname().machine]
    ehsize, phsize = 64, 56
    entry = _BASE + ehsize + phsize
    header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,   # 64-bit, little endian, version 1, System V ABI
        2, e_machine, 1,             # ET_EXEC, machine, version
        entry, ehsize, 0,            # entry point, program headers, no section headers
        0, ehsize, phsize, 1, 0, 0, 0)
    size = ehsize + phsize + len(code)
    segment = struct.pack(
        "<IIQQQQQQ",
        1, 5,                        # PT_LOAD, PF_R | PF_X
        0, _BASE, _BASE,             # the whole file, mapped at _BASE
        size, size, align)
    return header + segment + code


class ExecGuardError(ContainError):
    """The sealed helper cannot be made here (reason in the message)."""


# Each container (each init, each exec'd process) gets a memfd of its own: a process in a
# container that reopened its helper's memfd for writing (the open succeeds; the seals
# refuse the writes) would make every later exec of that same file fail with ETXTBSY.
# arm() makes it in the forking thread just before fork; the child inherits it; the
# parent closes its copy right after the fork (an at-fork hook), so no fd stays open in
# the runtime (nor in a long-lived program that uses the API).
_local = _thread._local()
_hooked = False


def arm() -> int:
    """Make a fresh sealed helper for the next fork of this thread; return its fd."""
    global _hooked
    disarm()
    if not _hooked:
        os.register_at_fork(after_in_parent=disarm)
        _hooked = True
    fd = make_helper()
    _local.fd = fd
    return fd


def disarm() -> None:
    """Close this thread's armed helper (the parent's copy, after fork)."""
    fd = getattr(_local, "fd", -1)
    if fd >= 0:
        _local.fd = -1
        os.close(fd)


def helper_fd() -> int:
    """This thread's armed helper (in the child: the one inherited through fork), or a
    new one when none was armed."""
    fd = getattr(_local, "fd", -1)
    return fd if fd >= 0 else arm()


def make_helper() -> int:
    """A new sealed memfd holding the helper (close-on-exec, mode 0555)."""
    machine = os.uname().machine
    if machine not in _CODE:
        raise ExecGuardError(f"no exec helper for the {machine} architecture: refusing to "
                             "exec into a container unguarded (CVE-2019-5736)")
    image = elf_image(machine)
    import fcntl

    try:
        fd = os.memfd_create("contain-exec", _MFD_CLOEXEC | _MFD_ALLOW_SEALING | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a kernel before MFD_EXEC (6.3)
            raise ExecGuardError(_memfd_refused(exc)) from exc
        try:
            fd = os.memfd_create("contain-exec", _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
        except OSError as exc2:
            raise ExecGuardError(_memfd_refused(exc2)) from exc2
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o555)
        fcntl.fcntl(fd, _F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _memfd_refused(exc: OSError) -> str:
    try:
        with open("/proc/sys/vm/memfd_noexec") as f:
            noexec = f.read().strip()
    except OSError:
        noexec = "?"
    if noexec == "2":
        return ("vm.memfd_noexec=2 forbids executable memfds, which contain needs to exec "
                "into a container safely (CVE-2019-5736); set it to 0 or 1")
    return f"memfd_create for the exec helper: {exc.strerror}"


def exec_guarded(path: str, args: list[str], env: dict[str, str]) -> NoReturn:
    """execve(*path*, *args*, *env*) through the sealed helper; never returns. On failure
    the process writes a message to stderr and exits 127."""
    name = (args[0] if args else path)[:200]
    try:
        fd = helper_fd()
    except (ExecGuardError, OSError) as exc:
        os.write(2, f"contain: exec {name}: {exc}\n".encode())
        os._exit(127)
    argv = [path, *args]
    try:
        os.execve(fd, argv, env)  # fexecve: execveat(fd, "", ..., AT_EMPTY_PATH)
    except OSError as exc:
        first = exc
    if first.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):  # execveat refused
        try:
            os.execve(f"/proc/self/fd/{fd}", argv, env)
        except OSError:
            pass
    os.write(2, f"contain: exec {name}: exec helper: {first.strerror}\n".encode())
    os._exit(127)
