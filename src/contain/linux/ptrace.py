"""ptrace(2) for the ptrace supervisor and for inspection: seize, stop handling, the
x86_64 register file (struct user_regs_struct), and the Syscall User Dispatch setting
of a process (PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, Linux 6.4+)."""

from __future__ import annotations

import os

from contain.linux import native as ctypes

PTRACE_TRACEME = 0
PTRACE_PEEKDATA = 2
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG = 0x4211

PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACEFORK = 1 << 1
PTRACE_O_TRACEVFORK = 1 << 2
PTRACE_O_TRACECLONE = 1 << 3
PTRACE_O_TRACEEXEC = 1 << 4
PTRACE_O_TRACEVFORKDONE = 1 << 5
PTRACE_O_TRACEEXIT = 1 << 6
PTRACE_O_TRACESECCOMP = 1 << 7
PTRACE_O_EXITKILL = 1 << 20

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_VFORK_DONE = 5
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

WALL = 0x40000000  # __WALL

SUD_MODES = {0: "off", 1: "on"}  # PR_SYS_DISPATCH_OFF / PR_SYS_DISPATCH_ON

_ptrace = ctypes.function("ptrace", ctypes.c_long)


def ptrace(request: int, pid: int, addr: int = 0, data: object = 0, what: str = "") -> int:
    ret = _ptrace(ctypes.c_long(request), ctypes.c_long(pid), ctypes.c_void_p(addr),
                  data if not isinstance(data, int) else ctypes.c_void_p(data))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({what or hex(request)}) of {pid}: {os.strerror(err)}")
    return int(ret)


def seize(pid: int, options: int) -> None:
    ptrace(PTRACE_SEIZE, pid, 0, options, "PTRACE_SEIZE")


def cont(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, pid, 0, sig, "PTRACE_CONT")


def listen(pid: int) -> None:
    ptrace(PTRACE_LISTEN, pid, 0, 0, "PTRACE_LISTEN")


def detach(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_DETACH, pid, 0, sig, "PTRACE_DETACH")


def interrupt(pid: int) -> None:
    ptrace(PTRACE_INTERRUPT, pid, 0, 0, "PTRACE_INTERRUPT")


def event_message(pid: int) -> int:
    out = ctypes.c_ulong(0)
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.byref(out), "PTRACE_GETEVENTMSG")
    return int(out.value)


#: The machines whose register file the ptrace supervisor knows: where a stopped system
#: call keeps its number, its arguments and its return value. x86_64 only:
#: PTRACE_GETREGS/SETREGS of struct user_regs_struct, the number in orig_rax (set to -1
#: to skip the call), arguments rdi, rsi, rdx, r10, r8, r9, the return in rax. aarch64
#: would read struct user_pt_regs with PTRACE_GETREGSET NT_PRSTATUS (arguments x0-x5,
#: the number in x8, the return in x0) but can change the number only through
#: PTRACE_SETREGSET NT_ARM_SYSTEM_CALL; that path is not built, since it cannot be
#: tested on the machines here: the supervisor refuses other machines by name.
SYSCALL_REGISTERS = {
    "x86_64": {"number": "orig_rax", "args": ("rdi", "rsi", "rdx", "r10", "r8", "r9"),
               "return": "rax"},
}


# struct user_regs_struct (x86_64): 27 unsigned longs, in this order
REG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
             "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
             "fs_base", "gs_base", "ds", "es", "fs", "gs")


class Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulong) for name in REG_NAMES]

    def syscall_args(self) -> tuple[int, ...]:
        """The six syscall arguments of the x86_64 ABI."""
        return (self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9)


def get_regs(pid: int) -> Regs:
    regs = Regs()
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.byref(regs), "PTRACE_GETREGS")
    return regs


def set_regs(pid: int, regs: Regs) -> None:
    ptrace(PTRACE_SETREGS, pid, 0, ctypes.byref(regs), "PTRACE_SETREGS")


class RegsIO:
    """The ptrace supervisor's hot path: one preallocated register file and ptrace(2)
    with declared argument types (no ctypes objects made per call).

    ``get(pid)`` reads the stopped tracee's registers into ``regs`` and returns it;
    ``put(pid)`` writes ``regs`` back; ``cont(pid, sig)`` resumes it. OSError as
    :func:`ptrace` raises it."""

    __slots__ = ("cont", "get", "put", "regs")

    def __init__(self) -> None:
        raw = ctypes.function("ptrace", ctypes.c_long, argtypes=(
            ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p))
        regs = Regs()
        addr = ctypes.addressof(regs)

        def fail(what: str, pid: int) -> OSError:
            err = ctypes.get_errno()
            return OSError(err, f"ptrace({what}) of {pid}: {os.strerror(err)}")

        def get(pid: int) -> Regs:
            if raw(PTRACE_GETREGS, pid, None, addr) < 0:
                raise fail("PTRACE_GETREGS", pid)
            return regs

        def put(pid: int) -> None:
            if raw(PTRACE_SETREGS, pid, None, addr) < 0:
                raise fail("PTRACE_SETREGS", pid)

        def cont(pid: int, sig: int = 0) -> None:
            if raw(PTRACE_CONT, pid, None, sig or None) < 0:
                raise fail("PTRACE_CONT", pid)

        self.regs = regs
        self.get = get
        self.put = put
        self.cont = cont


class _SudConfig(ctypes.Structure):
    """struct ptrace_sud_config."""

    _fields_ = [("mode", ctypes.c_uint64), ("selector", ctypes.c_uint64),
                ("offset", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def sud_config_of_stopped(pid: int) -> dict[str, int | str]:
    """The SUD setting of a tracee we have stopped."""
    cfg = _SudConfig()
    ptrace(PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, pid, ctypes.sizeof(cfg), ctypes.byref(cfg),
           "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG")
    return {"mode": SUD_MODES.get(int(cfg.mode), str(cfg.mode)), "selector": int(cfg.selector),
            "offset": int(cfg.offset), "len": int(cfg.len)}


def syscall_user_dispatch(pid: int) -> dict[str, int | str]:
    """Syscall User Dispatch of process *pid*: {"mode": "off"|"on", "selector": address
    of the selector byte, "offset"/"len": the always-allowed code region}.

    Needs ptrace access (root) and that *pid* is not traced already: it is seized,
    interrupted for the moment of the read, and released. Raises OSError: EPERM when
    it is traced by someone else (a supervisor: TracerPid in /proc/<pid>/status tells
    who), EIO/EINVAL on kernels before 6.4 (the request is unknown there)."""
    seize(pid, 0)
    try:
        interrupt(pid)
        while True:
            try:
                os.waitpid(pid, WALL)
                break
            except InterruptedError:
                continue
        return sud_config_of_stopped(pid)
    finally:
        try:
            detach(pid)
        except OSError:
            pass
