"""The mechanisms of running a process in the foreground (`run`, `exec`, `sandbox`).

The calling process becomes a child subreaper before it forks, so the container's init
(a grandchild when a PID namespace needs the extra fork) is reparented to it and can be
waited for. Signals sent to the caller may be forwarded to the process (only the CLI
asks for it: handlers are process-wide, and only the main thread may set them); with a
terminal and no console socket, the caller relays the pty itself (raw mode, window size).
The orchestration that uses them is container/run.py and container/exec.py.
"""

from __future__ import annotations

import os

from contain.process.init import FORWARDED, SIGWINCH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def become_subreaper() -> None:
    from contain.linux import consts as c
    from contain.linux.syscalls import prctl

    prctl(c.PR_SET_CHILD_SUBREAPER, 1)


class ForwardSignals:
    """Forward the usual termination signals to the container's process (and SIGWINCH
    to a relayed pty). Signals that come before :meth:`attach` are kept for it."""

    def __init__(self, pid: int = 0, tty_master: int = -1) -> None:
        self.pid = pid
        self.master = tty_master
        self.pending: list[int] = []
        self.saved: dict[int, Any] = {}

    def _forward(self, signum: int, frame: Any) -> None:
        if not self.pid:
            self.pending.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def attach(self, pid: int) -> None:
        self.pid = pid
        for signum in self.pending:
            self._forward(signum, None)
        self.pending.clear()

    def _winch(self, signum: int, frame: Any) -> None:
        copy_winsize(0, self.master)

    def relay_winch_to(self, master: int) -> None:
        import _signal

        self.master = master
        self.saved.setdefault(SIGWINCH, _signal.signal(SIGWINCH, self._winch))

    def __enter__(self) -> ForwardSignals:
        import _signal

        try:
            for sig in FORWARDED:
                self.saved[sig] = _signal.signal(sig, self._forward)
            if self.master >= 0:
                self.relay_winch_to(self.master)
        except ValueError as exc:  # not the main thread: Python allows handlers only there
            self.__exit__()
            from contain.errors import ContainError

            raise ContainError("signal forwarding needs the main thread (it replaces the "
                               "process's signal handlers)") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        import _signal

        for sig, handler in self.saved.items():
            _signal.signal(sig, handler)
        self.saved.clear()


def size_from_caller(proc: Any) -> None:
    """The pty is made with the caller's window size (process.consoleSize), so that the
    process sees it from its first instruction, before the relay starts."""
    if proc.console_size is not None or not os.isatty(0):
        return
    from contain.process.console import get_winsize
    from contain.spec.config import Box

    try:
        rows, cols = get_winsize(0)
    except OSError:
        return
    if rows and cols:
        object.__setattr__(proc, "console_size", Box(height=rows, width=cols))


def copy_winsize(src: int, dst: int) -> None:
    from contain.process.console import get_winsize, set_winsize

    try:
        rows, cols = get_winsize(src)
        set_winsize(dst, rows, cols)
    except OSError:
        pass


def relay_tty(master: int, pid: int) -> None:
    """Copy between our stdio and the process's pty until process *pid* exits (the
    caller then reaps it)."""
    import termios
    import tty

    from contain.process.pump import Pump

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        copy_winsize(0, master)
    pidfd = os.pidfd_open(pid)
    pump = Pump()
    pump.copy(master, 1)
    if _readable_stdin():
        pump.copy(0, master, input=True)
    try:
        pump.run(exit_fd=pidfd, linger=0.05)
    finally:
        os.close(pidfd)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _readable_stdin() -> bool:
    try:
        os.fstat(0)
        return True
    except OSError:
        return False
