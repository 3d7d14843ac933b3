"""Supervisor 1: seccomp user notification.

The kernel's filter returns SECCOMP_RET_USER_NOTIF only for the supervised calls; the
supervisor receives each (SECCOMP_IOCTL_NOTIF_RECV), decides on the register values
(the policy's per-argument rules), and answers (NOTIF_SEND): an errno, a return value,
an installed fd (NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND), or -- for ``allow`` and
``log``, decided on registers alone -- SECCOMP_USER_NOTIF_FLAG_CONTINUE. Whenever the
target's memory was read, NOTIF_ID_VALID is checked after the read (the pid might have
been reused), and the decision is carried out on the supervisor's own copy.

Fail closed: the supervisor PTRACE_SEIZEs every process it receives a listener for
with PTRACE_O_EXITKILL and nothing else (no syscall stops: only signal deliveries stop
it). If the supervisor dies, however it dies, the kernel SIGKILLs those processes (the
container's init: its PID namespace goes with it), and any call still racing to the
closed listener fails with ENOSYS.
"""

from __future__ import annotations

import errno
import os

from contain.sandbox.supervise.handlers import Gone, Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.sandbox.supervise.policy import Call, Rule, SyscallPolicy
    from contain.sandbox.supervise.record import Recorder, Report

ENOSYS = errno.ENOSYS


class NotifyTarget(Target):
    can_install_fd = True

    def __init__(self, listener: int, n: Any, name: str, hostname: str) -> None:
        self.listener = listener
        self.id = n.id
        self.pid = n.pid
        self.nr = n.nr
        self.name = name
        self.args = n.args
        self.hostname = hostname

    def check_valid(self) -> None:
        from contain.linux.unotify import notif_id_valid

        if not notif_id_valid(self.listener, self.id):
            raise Gone


def kill_caller(pid: int, check: Callable[[], bool]) -> None:
    """SIGKILL the process of thread *pid* through a pidfd, after *check* says the
    notification (so the thread) is still the one we decided about."""
    from contain.linux.syscalls import pidfd_send_signal
    from contain.linux.unotify import thread_pidfd

    try:
        pidfd = thread_pidfd(pid)
    except OSError:
        return
    try:
        if check():
            pidfd_send_signal(pidfd, 9)
    except OSError:
        pass
    finally:
        os.close(pidfd)


class _Received:
    """A received notification, for the slow path (the fields handlers expect)."""

    __slots__ = ("args", "id", "nr", "pid")

    def __init__(self, f: tuple[int, ...]) -> None:
        self.id = f[0]
        self.pid = f[1]
        self.nr = f[3]
        self.args = f[6:]


#: a fast-path answer: (value, negative errno, response flags, emit or None)
Fast = tuple[int, int, int, "Callable[[int, tuple[int, ...]], None] | None"]


class NotifySupervisor:
    """Decides the notifications of any number of listeners with one policy.

    The hot path: calls whose rule is decided on the syscall number alone (no argument
    rules) and answered without the workload's memory -- allow, log, deny, the
    ``return`` emulation -- are compiled once per syscall number into a ready answer;
    a notification of such a call costs a receive, a dict lookup and an answer (no
    objects, no /proc reads, no logging unless a report file is open). Everything else
    takes the general path."""

    def __init__(self, policy: SyscallPolicy, report: Report, recorder: Recorder | None = None,
                 ask: Callable[[Rule, Call], Any] | None = None,
                 hostname: str = "sandbox") -> None:
        from contain.linux.unotify import Receiver
        from contain.sandbox.supervise.policy import syscall_name

        self.policy = policy
        self.report = report
        self.recorder = recorder
        self.ask = ask
        self.hostname = hostname
        self.name_of = syscall_name
        rx = Receiver()
        self.recv = rx.recv
        self.answer = rx.answer
        # syscall number -> its ready answer, or None: the general path
        self.fast: dict[int, Fast | None] = {}
        # FIFO opens in workers: (listener, notification id) -> (O_PATH fd, flags)
        self.waiting: dict[tuple[int, int], tuple[int, int]] = {}
        import threading

        self.lock = threading.Lock()

    def _compile(self, nr: int) -> Fast | None:
        """The ready answer for every call of *nr*, when there is one."""
        from contain.linux.unotify import SECCOMP_USER_NOTIF_FLAG_CONTINUE as CONTINUE
        from contain.sandbox.supervise.policy import ready_answer

        out: Fast | None = None
        ready = None if self.recorder is not None else \
            ready_answer(self.policy, self.report, self.name_of(nr), nr)
        if ready is not None:
            goes_on, val, err, emit = ready
            out = (val, -err, CONTINUE if goes_on else 0, emit)
        self.fast[nr] = out
        return out

    def handle(self, listener: int) -> None:
        """Receive and answer one notification of *listener*."""
        try:
            f = self.recv(listener)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):  # the target died first
                return
            raise
        nr = f[3]
        try:
            fast = self.fast[nr]
        except KeyError:
            fast = self._compile(nr)
        if fast is None:
            self._general(listener, _Received(f))
            return
        val, err, flags, emit = fast
        if emit is not None:
            emit(f[1], f[6:])
        try:
            self.answer(listener, f[0], val, err, flags)
        except OSError as e:
            if e.errno != errno.ENOENT:  # the target went away meanwhile
                raise

    def _general(self, listener: int, n: _Received) -> None:
        from contain.linux import unotify as u

        name = self.name_of(n.nr)
        if self.recorder is not None:
            self.recorder.add(name, n.args)
        rule = self.policy.decide(name, n.args)
        action = rule.action
        try:
            if action == "allow":
                self._send(listener, n.id, flags=u.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            elif action == "log":
                self.report.event(n.pid, name, n.nr, n.args, "log", rule=rule.where)
                self._send(listener, n.id, flags=u.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            elif action == "deny":
                self.report.event(n.pid, name, n.nr, n.args, "deny", errno=rule.errno,
                                  rule=rule.where)
                self._send(listener, n.id, error=rule.errno)
            elif action == "kill":
                self.report.event(n.pid, name, n.nr, n.args, "kill", rule=rule.where)
                kill_caller(n.pid, lambda: u.notif_id_valid(listener, n.id))
                self._send(listener, n.id, error=ENOSYS)
            elif action == "emulate":
                self._emulate(listener, n, name, rule)
            else:
                self._ask(listener, n, name, rule)
        except Gone:
            return

    def _send(self, listener: int, nid: int, val: int = 0, error: int = 0,
              flags: int = 0) -> None:
        from contain.linux.unotify import notif_send

        try:
            notif_send(listener, nid, val, error, flags)
        except OSError as e:
            if e.errno != errno.ENOENT:  # the target went away meanwhile: nothing to answer
                raise

    def _emulate(self, listener: int, n: _Received, name: str, rule: Rule) -> None:
        from contain.sandbox.supervise.handlers import run

        assert rule.handler is not None
        target = NotifyTarget(listener, n, name, self.hostname)
        result = run(rule.handler, target, rule.options)
        if result.fifo is not None:
            self._open_later(listener, n, name, rule, result)
            return
        self._install(listener, n, name, rule, result)

    def _install(self, listener: int, n: _Received, name: str, rule: Rule,
                 result: Any) -> None:
        """Answer an emulation with its result (installing its fd, if any)."""
        from contain.linux import unotify as u

        if result.fd >= 0:
            try:
                fd = u.notif_addfd(listener, n.id, result.fd, 0, u.SECCOMP_ADDFD_FLAG_SEND,
                                   os.O_CLOEXEC if result.cloexec else 0)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EINTR):  # gone, or interrupted by a signal
                    return
                self._send(listener, n.id, error=e.errno or 24)
                return
            finally:
                os.close(result.fd)
            self.report.event(n.pid, name, n.nr, n.args, "emulate", handler=rule.handler,
                              result=fd, detail=result.detail, rule=rule.where)
            return
        self.report.event(n.pid, name, n.nr, n.args, "emulate", handler=rule.handler,
                          result=-result.error if result.error else result.value,
                          detail=result.detail, rule=rule.where)
        if result.error:
            self._send(listener, n.id, error=result.error)
        else:
            self._send(listener, n.id, val=result.value)

    def _open_later(self, listener: int, n: _Received, name: str, rule: Rule,
                    result: Any) -> None:
        """An open that waits for the FIFO's other end, done by a worker thread (as
        the workload's credentials: they are per thread) so that the other
        notifications keep flowing; the worker answers the notification itself when the
        open returns. If the call goes away meanwhile (the workload was interrupted or
        died), the loop's :meth:`unblock` opens the other end once, so the worker ends."""
        import threading

        pfd, flags = result.fifo
        creds = result.creds
        key = (listener, n.id)
        with self.lock:
            self.waiting[key] = (pfd, flags)

        def work() -> None:
            from contain.linux.unotify import become, restore
            from contain.sandbox.supervise.handlers import Result, reopen_as

            try:
                try:
                    become(creds)
                    fd = reopen_as(pfd, flags)
                    done = Result(fd=fd, cloexec=result.cloexec, detail=result.detail)
                except OSError as e:
                    done = Result(error=e.errno or errno.EACCES, detail=result.detail)
                finally:
                    restore()
                    with self.lock:  # from now on unblock() leaves this one alone
                        self.waiting.pop(key, None)
                self._install(listener, n, name, rule, done)
            except Exception:  # the notification is gone: nothing to answer
                pass
            finally:
                with self.lock:
                    self.waiting.pop(key, None)
                os.close(pfd)

        threading.Thread(target=work, daemon=True, name="contain-fifo-open").start()

    def unblock(self) -> None:
        """Workers waiting on a FIFO for a call that is no longer there (the workload
        was interrupted, or died): open the other end once, non-blocking, which lets
        their open return. Under the lock, so never after a worker's open returned."""
        from contain.linux.unotify import notif_id_valid
        from contain.sandbox.supervise.handlers import reopen_as

        with self.lock:
            for (listener, nid), (pfd, flags) in self.waiting.items():
                try:
                    if notif_id_valid(listener, nid):
                        continue
                    other = os.O_RDONLY if flags & os.O_ACCMODE == os.O_WRONLY else os.O_WRONLY
                    os.close(reopen_as(pfd, other | os.O_NONBLOCK | os.O_CLOEXEC))
                except OSError:  # nobody at the other end any more
                    pass

    def _ask(self, listener: int, n: _Received, name: str, rule: Rule) -> None:
        from contain.linux import unotify as u
        from contain.sandbox.supervise.policy import Call

        call = Call(n.pid, name, n.nr, n.args)
        try:
            decision = self.ask(rule, call) if self.ask is not None else None
        except Exception as e:  # a failing callback denies
            decision = ("deny", 1, 0, f"callback failed: {e}")
        action, errno, value, detail = _decision(decision)
        self.report.event(n.pid, name, n.nr, n.args, "ask", decision=action,
                          errno=errno if action == "deny" else None, detail=detail,
                          rule=rule.where)
        if action in ("allow", "log"):
            self._send(listener, n.id, flags=u.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        elif action == "return":
            self._send(listener, n.id, val=value)
        elif action == "kill":
            kill_caller(n.pid, lambda: u.notif_id_valid(listener, n.id))
            self._send(listener, n.id, error=ENOSYS)
        else:
            self._send(listener, n.id, error=errno or 1)


def _decision(d: Any) -> tuple[str, int, int, str]:
    """(action, errno, value, detail) from a callback's answer."""
    if isinstance(d, tuple):
        return d
    if d is None:
        return "deny", 1, 0, "no answer"
    if isinstance(d, str):
        return (d, 1, 0, "") if d in ("allow", "deny", "kill", "log") else \
            ("deny", 1, 0, f"bad answer {d!r}")
    action = getattr(d, "action", None)
    if action in ("allow", "deny", "kill", "log", "return"):
        return action, int(getattr(d, "errno", 1)), int(getattr(d, "value", 0)), ""
    return "deny", 1, 0, f"bad answer {d!r}"
