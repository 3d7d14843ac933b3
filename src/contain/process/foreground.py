"""Running a container in the foreground: `run`, `sandbox` and the Python API.

The calling process becomes a child subreaper before it forks, so the container's init
(a grandchild when a PID namespace needs the extra fork) is reparented to it and can be
waited for. Signals sent to the caller are forwarded to the container; with a terminal
and no console socket, the caller relays the pty itself (raw mode, window size).
"""

from __future__ import annotations

import os

from contain.container.control import delete, run_poststart, wait
from contain.container.lifecycle import CreateOptions, create
from contain.process.init import FORWARDED, SIGWINCH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.container.store import ContainerRecord
    from contain.spec.config import Spec



def become_subreaper() -> None:
    from contain.linux import consts as c
    from contain.linux.syscalls import prctl

    prctl(c.PR_SET_CHILD_SUBREAPER, 1)


def run_container(root: str, cid: str, bundle: str, spec: Spec, opts: CreateOptions,
                  detach: bool = False, keep: bool = False,
                  after_create: Callable[[ContainerRecord], None] | None = None) -> int:
    """create + start (+ wait + delete unless detached); return the exit code.

    With *after_create* (a syscall supervisor attaching), the container is created
    waiting on exec.fifo, *after_create* is called, and only then started."""
    import _socket

    if spec.process is None:  # (create() says so too, but we look at it first)
        from contain.spec.decode import fail

        raise fail("$.process", "required field is missing")
    local_tty = spec.process.terminal and not opts.console_socket and not detach
    pair = None
    if local_tty:
        pair = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        opts.console_fd = pair[1].fileno()
        size_from_caller(spec.process)
    if not detach:
        become_subreaper()
    opts.start_now = after_create is None
    # with start_now the container runs as soon as create returns: handlers go in first,
    # and a signal that comes before the container exists waits for it
    forward = ForwardSignals() if not detach else None
    if forward is not None:
        forward.__enter__()
    try:
        try:
            record = create(root, cid, bundle, opts, spec=spec)
        finally:
            if pair is not None:
                pair[1].close()
        if forward is not None:
            forward.attach(record.pid)
        master = -1
        try:
            if pair is not None:
                from contain.process.sync import recv_fd

                master, _ = recv_fd(pair[0])
                pair[0].close()
                pair = None
            if after_create is not None:
                from contain.container.control import start

                after_create(record)
                start(root, cid)
            else:
                run_poststart(record)
            if detach:
                return 0
            if master >= 0 and forward is not None:
                forward.relay_winch_to(master)
            code = relay_tty(master, record) if master >= 0 else wait(record)
        except BaseException:
            delete(root, cid, force=True)
            raise
        finally:
            if master >= 0:
                os.close(master)
            if pair is not None:
                pair[0].close()
    finally:
        if forward is not None:
            forward.__exit__()
    if not keep:
        delete(root, cid, force=True)
    return code


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

        for sig in FORWARDED:
            self.saved[sig] = _signal.signal(sig, self._forward)
        if self.master >= 0:
            self.relay_winch_to(self.master)
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


def relay_tty(master: int, record: ContainerRecord) -> int:
    """Copy between our stdio and the container's pty until the init exits."""
    import select
    import termios
    import tty

    stdin_tty = os.isatty(0)
    saved = None
    if stdin_tty:
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        copy_winsize(0, master)
    pidfd = os.pidfd_open(record.pid)
    watch = [master, pidfd] + ([0] if _readable_stdin() else [])
    try:
        while True:
            ready, _, _ = select.select(watch, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    watch.remove(master)
                else:
                    _write_all(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    watch.remove(0)
                else:
                    _write_all(master, data)
            if pidfd in ready:
                _drain(master)
                break
    finally:
        os.close(pidfd)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return wait(record)


def _readable_stdin() -> bool:
    try:
        os.fstat(0)
        return True
    except OSError:
        return False


def _drain(master: int) -> None:
    import select

    while True:
        ready, _, _ = select.select([master], [], [], 0.05)
        if not ready:
            return
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        _write_all(1, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
