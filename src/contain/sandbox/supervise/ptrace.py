"""Supervisor 2: ptrace (the survey's gVisor-ptrace column).

The workload's init is PTRACE_SEIZEd before it loads its filter and execs, with
EXITKILL (the supervisor's death kills it), TRACECLONE/FORK/VFORK (children and threads
are traced from their first instruction), TRACEEXEC and TRACESECCOMP. Its filter returns
SECCOMP_RET_TRACE for the supervised calls only, so no other call ever stops. At a
seccomp stop the supervisor reads the registers (x86_64 user_regs_struct), decides with
the same policy, and:

* allow / log: resumes; the call runs;
* deny: sets the syscall number (orig_rax) to -1, which skips the call, and the return
  register (rax) to -errno;
* emulate: runs the same handler as the notify supervisor (not ``open``: ptrace cannot
  install a file descriptor race-free) and skips the call with its result in rax;
* kill: SIGKILLs the process.

Registers are the tracee's own and cannot change while it is stopped; its other threads
can still change memory, so handlers act only on their own copy (see handlers).
"""

from __future__ import annotations

import errno as _errno
import os

from contain.sandbox.supervise.handlers import Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STOP_SIGNALS = (19, 20, 21, 22)
MASK64 = 0xFFFFFFFFFFFFFFFF


class PtraceTarget(Target):
    can_install_fd = False

    def __init__(self, pid: int, nr: int, name: str, args: tuple[int, ...],
                 hostname: str) -> None:
        self.pid = pid
        self.nr = nr
        self.name = name
        self.args = args
        self.hostname = hostname


OPTIONS = None


def options() -> int:
    from contain.linux import ptrace as P

    return (P.PTRACE_O_EXITKILL | P.PTRACE_O_TRACECLONE | P.PTRACE_O_TRACEFORK |
            P.PTRACE_O_TRACEVFORK | P.PTRACE_O_TRACEEXEC | P.PTRACE_O_TRACESECCOMP)


def serve_ptrace(sup: Any, control: Any, report: Any, recorder: Any, ask: Any) -> int:
    from contain.linux import ptrace as P
    from contain.sandbox.supervise.agent import _recv, _send

    _send(control, {"t": "ready"})
    msg = _recv(control)
    if msg is None or msg.get("t") != "seize":
        return 0
    pid = int(msg["pid"])
    try:
        P.seize(pid, options())
    except OSError as e:
        _send(control, {"t": "error", "msg": e.strerror})
        return 1
    _send(control, {"t": "attached", "pid": pid, "sync": False})
    return Tracer(sup, report, recorder, ask).loop()


class Tracer:
    """The seccomp stops of every tracee, decided with the policy. As in the notify
    supervisor, a call whose rule depends on the syscall number alone and needs no
    handler (log, deny, the ``return`` emulation) is compiled once per number into a
    ready answer: a stop then costs GETREGS, a dict lookup, SETREGS and CONT, through
    a preallocated register file."""

    def __init__(self, sup: Any, report: Any, recorder: Any, ask: Any) -> None:
        from contain.linux.ptrace import RegsIO
        from contain.sandbox.supervise.policy import syscall_name

        self.policy = sup.policy
        self.hostname = sup.hostname
        self.report = report
        self.recorder = recorder
        self.ask = ask
        self.name_of = syscall_name
        self.io = RegsIO()
        # syscall number -> (skip it?, its return value, emit or None); None: general
        self.fast: dict[int, tuple[bool, int, Any] | None] = {}

    def _compile(self, nr: int) -> tuple[bool, int, Any] | None:
        from contain.sandbox.supervise.policy import ready_answer

        out: tuple[bool, int, Any] | None = None
        ready = None if self.recorder is not None else \
            ready_answer(self.policy, self.report, self.name_of(nr), nr)
        if ready is not None:
            goes_on, val, err, emit = ready
            out = (not goes_on, -err if err else val, emit)
        self.fast[nr] = out
        return out

    def loop(self) -> int:
        from contain.linux import ptrace as P

        waitpid = os.waitpid
        cont = self.io.cont
        seen: set[int] = set()
        while True:
            try:
                pid, status = waitpid(-1, P.WALL)
            except ChildProcessError:
                return 0
            except InterruptedError:
                continue
            if not os.WIFSTOPPED(status):
                seen.discard(pid)
                continue  # exited or killed
            sig = os.WSTOPSIG(status)
            event = status >> 16
            first = pid not in seen
            if first:
                seen.add(pid)
            try:
                if event == P.PTRACE_EVENT_SECCOMP:
                    self.syscall(pid)
                    cont(pid, 0)
                elif event == P.PTRACE_EVENT_STOP:
                    # a new child's or thread's first stop (auto-attached: it starts
                    # stopped), or a group stop, which it keeps until SIGCONT
                    if first or sig not in STOP_SIGNALS:
                        cont(pid, 0)
                    else:
                        try:
                            P.listen(pid)
                        except OSError:
                            cont(pid, 0)
                elif event:
                    cont(pid, 0)  # fork/clone/exec: the new task is traced already
                else:
                    cont(pid, sig)  # a signal for the tracee: deliver it
            except OSError:
                pass  # it died meanwhile (ESRCH)

    def syscall(self, pid: int) -> None:
        regs = self.io.get(pid)
        nr = regs.orig_rax
        if nr >= 1 << 63:
            return
        try:
            fast = self.fast[nr]
        except KeyError:
            fast = self._compile(nr)
        if fast is not None:
            skip, value, emit = fast
            if emit is not None:
                emit(pid, regs.syscall_args())
            if skip:
                regs.orig_rax = MASK64
                regs.rax = value & MASK64
                self.io.put(pid)
            return
        self._general(pid, regs, nr)

    def _general(self, pid: int, regs: Any, nr: int) -> None:
        args = regs.syscall_args()
        name = self.name_of(nr)
        if self.recorder is not None:
            self.recorder.add(name, args)
        rule = self.policy.decide(name, args)
        action = rule.action
        if action == "allow":
            return
        if action == "log":
            self.report.event(pid, name, nr, args, "log", rule=rule.where)
            return
        if action == "deny":
            self.report.event(pid, name, nr, args, "deny", errno=rule.errno, rule=rule.where)
            self._skip(pid, regs, -rule.errno)
            return
        if action == "kill":
            self.report.event(pid, name, nr, args, "kill", rule=rule.where)
            self._skip(pid, regs, -_errno.ENOSYS)
            os.kill(pid, 9)
            return
        if action == "emulate":
            from contain.sandbox.supervise.handlers import run

            assert rule.handler is not None
            result = run(rule.handler, PtraceTarget(pid, nr, name, args, self.hostname),
                         rule.options)
            value = -result.error if result.error else result.value
            self.report.event(pid, name, nr, args, "emulate", handler=rule.handler,
                              result=value, detail=result.detail, rule=rule.where)
            self._skip(pid, regs, value)
            return
        from contain.sandbox.supervise.notify import _decision
        from contain.sandbox.supervise.policy import Call

        try:
            answer = self.ask(rule, Call(pid, name, nr, args)) if self.ask else None
        except Exception as e:
            answer = ("deny", 1, 0, f"callback failed: {e}")
        act, errno, value, detail = _decision(answer)
        self.report.event(pid, name, nr, args, "ask", decision=act,
                          errno=errno if act == "deny" else None, detail=detail,
                          rule=rule.where)
        if act == "deny":
            self._skip(pid, regs, -(errno or 1))
        elif act == "return":
            self._skip(pid, regs, value)
        elif act == "kill":
            self._skip(pid, regs, -_errno.ENOSYS)
            os.kill(pid, 9)

    def _skip(self, pid: int, regs: Any, ret: int) -> None:
        """Skip the call (syscall number -1) and make it return *ret*."""
        regs.orig_rax = MASK64
        regs.rax = ret & MASK64
        self.io.put(pid)
