"""A small init for sandboxes: PID 1 forwards signals to the command and reaps.

A PID namespace's first process gets only the signals it has a handler for (the kernel
drops the others, even from outside the namespace), so a command that is PID 1 and
installs no handler -- ``sleep``, ``sh -c ...`` -- ignores Ctrl-C, TERM and HUP. Instead,
the init (the runtime's own forked process, in the sandbox, with the command's
identity and no capabilities, not dumpable) forks once more just before the exec:

- the child puts itself in a process group of its own (with a terminal, it makes that
  group the terminal's foreground group, so that ^C from the pty reaches the command
  only), then execs the command;
- PID 1 stays: it forwards HUP, INT, QUIT, TERM, USR1 and USR2 to the command's process
  group (as a terminal would deliver ^C), reaps every orphan, and exits with the
  command's status (128 + the signal number when a signal ended it), which ends the
  namespace and every process left in it;
- a second HUP, INT, QUIT or TERM kills every process of the sandbox (SIGKILL);
- when the runtime that started the sandbox dies (even by SIGKILL), PID 1 sees its pidfd
  become readable and kills the sandbox: it is never left running orphaned.

The forwarded signals are blocked from the fork of the init on (see :func:`arm`), so a
signal sent before PID 1 has its handlers is held and forwarded, not dropped; in the
command's process they keep their default action until the exec.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

FORWARDED = (1, 2, 3, 10, 12, 15)   # HUP INT QUIT USR1 USR2 TERM
STOPPING = (1, 2, 3, 15)            # the second of these kills the tree
SIGCHLD = 17
SIGKILL = 9
SIGTTOU = 22

# What the next fork of this thread hands to a sandbox's init (see arm): thread-local, so
# that sandboxes started from several threads do not share them.
import _thread  # noqa: E402  (a builtin: no import cost)

_local = _thread._local()
_hooked = False


def arm() -> None:
    """Just before the fork of a sandbox's init (in the runtime): block the signals the
    init will forward, so that one sent to the init before it can forward is held, not
    dropped (an init without a handler loses it); and open a pidfd of this process for
    the init to watch. The child inherits both; after the fork, the parent unblocks and
    closes its copy (an at-fork hook; :func:`disarm` also does it when no fork came)."""
    global _hooked
    import _signal as signal
    import select  # noqa: F401  (the init's loop: after the switch to the sandbox's user
    #                 the interpreter's own library may be out of reach, e.g. under /root)

    disarm()
    if not _hooked:
        os.register_at_fork(after_in_parent=disarm)
        _hooked = True
    _local.owner = os.getpid()
    _local.fd = os.pidfd_open(os.getpid())
    _local.mask = signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, SIGCHLD))


def disarm() -> None:
    if getattr(_local, "owner", 0) != os.getpid():
        return  # a fork inside the sandbox's init: what it inherited is its own now
    mask = getattr(_local, "mask", None)
    fd = getattr(_local, "fd", -1)
    _local.mask = None
    _local.fd = -1
    if mask is not None:
        import _signal as signal

        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if fd >= 0:
        os.close(fd)


def fork_command(terminal: bool) -> None:
    """In the sandbox's init, just before the exec: fork; return in the child (which goes
    on to exec the command); the parent becomes the sandbox's init and never returns."""
    import _signal as signal

    watch = getattr(_local, "fd", -1)
    old_mask = getattr(_local, "mask", None)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, SIGCHLD))
    if old_mask is None:
        old_mask = blocked
    pid = os.fork()
    if pid == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        if watch >= 0:
            os.close(watch)
        _local.fd = -1
        os.setpgid(0, 0)
        if terminal:
            _take_terminal()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return
    try:
        _reap(pid, watch, old_mask)
    except BaseException as exc:  # never return into the caller's exec path
        _kill_all()
        try:  # one line for whoever reads the sandbox's stderr: the init itself failed
            os.write(2, f"contain: the sandbox's init failed: {type(exc).__name__}: "
                        f"{exc}\n".encode(errors="replace"))
        except OSError:
            pass
        os._exit(255)


def _take_terminal() -> None:
    import _signal as signal

    prev = signal.signal(SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass
    finally:
        signal.signal(SIGTTOU, prev)


def _kill_all() -> None:
    try:
        os.kill(-1, SIGKILL)  # as PID 1: every other process of the namespace
    except OSError:
        pass


class _Forward:
    """The handler of the forwarded signals: to the command's process group (as a
    terminal delivers ^C); the second stopping signal kills every process instead."""

    def __init__(self, child: int) -> None:
        self.child = child
        self.stops = 0

    def __call__(self, signum: int, frame: object) -> None:
        if signum in STOPPING:
            self.stops += 1
            if self.stops > 1:
                _kill_all()
                return
        for target in (-self.child, self.child):  # the group, or the command if it left it
            try:
                os.kill(target, signum)
                return
            except ProcessLookupError:
                pass


def _let_go_of_inherited(watch: int) -> None:
    """Nothing inherited from the runtime stays open here (the runtime's ends of the
    command's stdio pipes among them: a reader would never see EOF), and the command's
    stdio is not ours to hold either."""
    if watch >= 0:
        os.closerange(3, watch)
        os.closerange(watch + 1, 1 << 20)
    else:
        os.closerange(3, 1 << 20)
    try:
        fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        for std in (0, 1, 2):
            os.dup2(fd, std)
        os.close(fd)
    except OSError:
        pass


def _reap_all(child: int) -> None:
    """Reap every exited child; exit with the command's status once it is among them."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            os._exit(255)
        if pid == 0:
            return
        if pid == child:
            if os.WIFEXITED(status):
                os._exit(os.WEXITSTATUS(status))
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else 255)


def _reap(child: int, watch: int, old_mask: Any) -> NoReturn:
    import _signal as signal
    import select

    _let_go_of_inherited(watch)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    forward = _Forward(child)
    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.signal(SIGCHLD, lambda signum, frame: None)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    watched = [r] + ([watch] if watch >= 0 else [])
    while True:
        _reap_all(child)
        ready, _, _ = select.select(watched, [], [])
        if watch in ready:  # the runtime is gone: nothing may run on unsupervised
            _kill_all()
            os._exit(128 + SIGKILL)
        try:
            while os.read(r, 512):
                pass
        except BlockingIOError:
            pass
