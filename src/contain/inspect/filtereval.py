"""Run a process's seccomp filters, offline, over every system call: the attack surface.

The filters a process is under are classic-BPF programs over ``struct seccomp_data``
(nr, arch, instruction pointer, six arguments). Evaluating them here for each system
call number of the native architecture tells, without making a single call, which
calls reach the host kernel's implementation (ALLOW, LOG), which are decided by a
process in user space (USER_NOTIF, TRACE), and which are refused in the kernel (ERRNO,
TRAP, KILL). With several filters the kernel takes the most restrictive answer.

Rules that depend on argument values (clone flags, socket families, ioctl requests)
are evaluated with two argument vectors, all zeros and all ones: a call allowed with
either counts as reachable ("with some arguments").
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# precedence of seccomp actions: the lowest wins when several filters answer
_PRECEDENCE = ("kill_process", "kill_thread", "trap", "errno", "notify", "trace", "log", "allow")
_ACTION = {0x80000000: "kill_process", 0x00000000: "kill_thread", 0x00030000: "trap",
           0x00050000: "errno", 0x7FC00000: "notify", 0x7FF00000: "trace",
           0x7FFC0000: "log", 0x7FFF0000: "allow"}
REACHES_KERNEL = ("allow", "log")
USER_SPACE = ("notify", "trace")

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "riscv64": 0xC00000F3,
              "s390x": 0x80000016, "ppc64le": 0xC0000015}


class FilterError(ValueError):
    """The program is not a valid seccomp BPF program (or reads beyond seccomp_data)."""


def _u32(x: int) -> int:
    return x & 0xFFFFFFFF


# classic BPF operations seccomp programs use (op field -> function of A and the operand)
_ALU = {0x00: lambda a, s: _u32(a + s), 0x10: lambda a, s: _u32(a - s),
        0x20: lambda a, s: _u32(a * s), 0x30: lambda a, s: a // s if s else 0,
        0x40: lambda a, s: a | s, 0x50: lambda a, s: a & s,
        0x60: lambda a, s: _u32(a << (s & 31)), 0x70: lambda a, s: a >> (s & 31),
        0x80: lambda a, s: _u32(-a), 0x90: lambda a, s: a % s if s else 0,
        0xA0: lambda a, s: a ^ s}
_JMP = {0x10: lambda a, s: a == s, 0x20: lambda a, s: a > s, 0x30: lambda a, s: a >= s,
        0x40: lambda a, s: bool(a & s)}


def _load(code: int, k: int, data: bytes, mem: list[int]) -> int:
    mode = code & 0xE0
    if mode == 0x20:  # ABS, word
        if k + 4 > len(data) or k % 4:
            raise FilterError(f"load at offset {k}")
        return int(struct.unpack_from("=I", data, k)[0])
    if mode in (0x00, 0x60, 0x80):
        return k if mode == 0x00 else mem[k & 15] if mode == 0x60 else len(data)
    raise FilterError(f"unsupported load 0x{code:02x}")


def run(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6,
        ip: int = 0) -> int:
    """The 32-bit value *program* returns for one call (classic BPF as seccomp runs it)."""
    data = struct.pack("=iIQ6Q", nr, arch, ip, *args)
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(4096):  # seccomp programs hold at most 4096 instructions, no loops
        if pc >= len(insns):
            raise FilterError("ran off the end of the program")
        code, jt, jf, k = insns[pc]
        pc += 1
        cls, op, src = code & 0x07, code & 0xF0, (x if code & 0x08 else k)
        if cls == 0x06:  # RET
            return k if code & 0x18 == 0x00 else a
        if cls == 0x00:  # LD
            a = _load(code, k, data, mem)
        elif cls == 0x01:  # LDX
            mode = code & 0xE0
            x = mem[k & 15] if mode == 0x60 else len(data) if mode == 0x80 else k
        elif cls in (0x02, 0x03):  # ST, STX
            mem[k & 15] = a if cls == 0x02 else x
        elif cls == 0x04:  # ALU
            if op not in _ALU:
                raise FilterError(f"unsupported alu 0x{code:02x}")
            a = _ALU[op](a, src)
        elif cls == 0x05:  # JMP
            if op == 0x00:
                pc += k
            elif op in _JMP:
                pc += jt if _JMP[op](a, src) else jf
            else:
                raise FilterError(f"unsupported jump 0x{code:02x}")
        else:  # MISC: TAX, TXA
            x, a = (a, a) if code & 0xF8 == 0x00 else (x, x)
    raise FilterError("program too long")


def action(programs: Iterable[bytes], nr: int, arch: int, args: tuple[int, ...]) -> str:
    """The action the kernel takes for one call under all *programs*."""
    best = len(_PRECEDENCE) - 1
    for prog in programs:
        ret = run(prog, nr, arch, args)
        name = _ACTION.get(ret & 0xFFFF0000, "kill_process")
        best = min(best, _PRECEDENCE.index(name))
    return _PRECEDENCE[best]


def syscall_table() -> dict[int, str]:
    """Number -> name of every system call of the native architecture (libseccomp)."""
    from contain.linux import libseccomp

    arch = libseccomp.arch_native()
    out = {}
    for nr in range(0, 1024):
        name = libseccomp.syscall_resolve_num(nr, arch)
        if name:
            out[nr] = name
    return out


def surface(programs: list[bytes], machine: str | None = None) -> dict[str, object]:
    """Which system calls of the native architecture reach the kernel under *programs*.

    {"total", "reach_kernel", "user_space", "refused", and the names of the refused and
    user-space ones}; no filter at all: everything reaches the kernel."""
    import os

    arch = AUDIT_ARCH.get(machine or os.uname().machine)
    if arch is None:
        raise FilterError(f"no seccomp audit arch known for {machine or os.uname().machine}")
    table = syscall_table()
    reach: list[str] = []
    user: list[str] = []
    refused: list[str] = []
    ones = (0xFFFFFFFFFFFFFFFF,) * 6
    for nr, name in sorted(table.items()):
        if not programs:
            reach.append(name)
            continue
        acts = {action(programs, nr, arch, (0,) * 6), action(programs, nr, arch, ones)}
        if acts & set(REACHES_KERNEL):
            reach.append(name)
        elif acts & set(USER_SPACE):
            user.append(name)
        else:
            refused.append(name)
    return {"total": len(table), "reach_kernel": len(reach), "user_space": len(user),
            "refused": len(refused), "user_space_names": user, "reach_names": reach}
