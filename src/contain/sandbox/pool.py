"""A pool of ready sandboxes: ``contain.Pool``, the fast path of ``contain.run``.

A sandbox costs ~10 ms before its command can start (the state directory, the cgroup,
the fork, the namespaces, the mounts, the identity, Landlock's ruleset), and most of it
does not depend on the command. A :class:`Pool` does that work ahead, in a background
thread, for *size* sandboxes under one policy; :meth:`Pool.run` hands one of them its
command and the fds of its stdio over a SOCK_SEQPACKET socket (the init waits on it
after GO: process/init.py, ``_take_over``), and the init looks the program up, restricts
itself with Landlock, forks the command under its seccomp filter and execs it, exactly
as an unpooled sandbox's init does after ``start``. The thread then makes another one
and removes the used one (its state directory, cgroup, bundle) off the caller's path.

Each pooled sandbox runs one command and is gone: nothing (processes, files in /tmp,
the cgroup's counters) passes from one call to the next. The policy is fixed when the
pool is made; a call that asks for other options (cwd=..., env=...) runs unpooled
with them, as :meth:`contain.Sandbox.run` would. When the pool is empty the call waits
for the sandbox being made, or, when none is (the thread failed to make one: its error
is then raised by the unpooled run that follows), runs unpooled.

Nothing is left behind: :meth:`Pool.close` (the context manager's exit), the garbage
collection of an unclosed pool and the interpreter's exit stop the thread, kill and
reap the waiting sandboxes and remove them. A process that forks gets the pool's
object but not its sandboxes (they are its parent's children): in the child every call
runs unpooled and closing the pool removes nothing of the parent's. If the pool's
process dies without closing it (SIGKILL), each waiting init sees the end of its
handover socket and exits, and its namespaces go with it; its state directory and
cgroup are left, as those of a SIGKILLed ``contain run`` are (``contain delete``).
"""

from __future__ import annotations

import _socket
import _thread
import os
import time
import weakref

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.sandbox.policy import Policy
    from contain.sandbox.report import Reporter
    from contain.sandbox.runner import Result, _Run, _Stdio

# the command a pooled sandbox is built with: never looked up nor run (the handover
# brings the real one)
PLACEHOLDER = "contain-pool-handover"
MAX_SIZE = 64

_SIGKILL = 9


class _Ready:
    """One prepared sandbox: the created container (its init waiting on the handover
    socket), our end of that socket, and its reporter."""

    __slots__ = ("run", "sock", "reporter")

    def __init__(self, run: _Run, sock: _socket.socket, reporter: Reporter) -> None:
        self.run = run
        self.sock = sock
        self.reporter = reporter

    @property
    def pid(self) -> int:
        pid: int = self.run.record.pid
        return pid

    def deferrable(self) -> bool:
        """Whether its removal may wait for the thread: not when a proxy or a
        supervisor still has decisions to report (they reach the result on close)."""
        net = self.run.built.network
        return self.run.sup is None and (net is None or net[0] in ("none", "host"))

    def discard(self, kill: bool, failed: bool = False) -> None:
        """Remove the sandbox; with *kill*, kill its init first (it still waits, or
        runs) and reap it."""
        from contain.sandbox.runner import _wait4

        self.sock.close()
        if kill:
            try:
                os.kill(self.pid, _SIGKILL)
            except ProcessLookupError:
                pass
            _wait4(self.pid)
        try:
            self.run.close(failed or kill)
        finally:
            self.reporter.close()


def _prepare(pol: Policy, root: str) -> _Ready:
    """Make one sandbox under *pol*, up to its init waiting for the command."""
    from contain.sandbox.report import Reporter
    from contain.sandbox.runner import _Run, _Stdio, build

    built = build(pol, [PLACEHOLDER], root)
    reporter = Reporter(pol.report.target)
    null = -1
    ours = theirs = None
    run = None
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # the init's stdio until the handover brings the caller's
        io = _Stdio(False, False, None, null, null, null)
        ours, theirs = _socket.socketpair(_socket.AF_UNIX,
                                          _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        run = _Run(built, root, reporter, io)
        run.opts.handover = theirs.fileno()
        run.start(False)
        if run.warming is not None:  # the attach is done: no need to keep it warm
            run.warming.__exit__(None, None, None)
            run.warming = None
    except BaseException:
        try:
            if run is not None:
                run.close(True)
        finally:
            reporter.close()
            if ours is not None:
                ours.close()
        raise
    finally:
        if theirs is not None:
            theirs.close()
        if null >= 0:
            os.close(null)
    return _Ready(run, ours, reporter)


class _State:
    """What the pool's thread, its finalizer and its calls share (never the Pool object
    itself, so that an unclosed pool can be collected)."""

    def __init__(self, policy: Policy, root: str, size: int) -> None:
        self.policy = policy
        self.root = root
        self.size = size
        self.owner = os.getpid()
        self.lock = _thread.allocate_lock()
        self.ready: list[_Ready] = []
        self.used: list[_Ready] = []   # handed over and done: to remove
        self.making = True             # the thread is making one (it starts so)
        self.closed = False
        self.error: BaseException | None = None
        self.wake = _thread.allocate_lock()  # released to wake the thread
        self.wake.acquire()
        self.got = _thread.allocate_lock()   # released when a sandbox is made or given up
        self.got.acquire()
        self.thread: Any = None

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        import threading

        self.thread = threading.Thread(target=self._loop, name="contain-pool",
                                       daemon=True)
        self.thread.start()

    def _poke(self, lock: Any) -> None:
        try:
            lock.release()
        except RuntimeError:  # (already released: one wake-up is enough)
            pass

    def _loop(self) -> None:
        failures = 0
        while True:
            with self.lock:
                if self.closed:
                    self.making = False
                    return
                want = len(self.ready) < self.size and failures < 3
                # an empty pool first gets a sandbox, then the used ones are removed
                if self.ready or not want:
                    used, self.used = self.used, []
                else:
                    used = []
                self.making = want
            for ready in used:
                try:
                    ready.discard(kill=False)
                except Exception:  # (best effort: delete --force finds what is left)
                    pass
            if want:
                try:
                    made = _prepare(self.policy, self.root)
                except Exception as exc:  # the caller's unpooled run will meet it too
                    failures += 1
                    with self.lock:
                        self.error = exc
                        self.making = False
                    self._poke(self.got)
                    self.wake.acquire(timeout=0.5 * failures)
                    continue
                failures = 0
                with self.lock:
                    keep = not self.closed
                    if keep:
                        self.ready.append(made)
                    self.error = None
                    self.making = False
                self._poke(self.got)
                if not keep:
                    made.discard(kill=True)
                    return
                continue
            if not used:
                self.wake.acquire(timeout=-1 if failures < 3 else 5.0)
                if failures >= 3:
                    failures = 2  # one more try now and then

    # -- the calls ---------------------------------------------------------------------

    def take(self) -> _Ready | None:
        """A ready sandbox, waiting for the one being made if the pool is empty; None
        when there is none to wait for (closed, or the thread failed to make one)."""
        while True:
            with self.lock:
                if self.ready:
                    # (the thread is woken when the call is done: a refill now would
                    # compete with it for the CPU and the GIL)
                    ready = self.ready.pop(0)
                    if not self.ready:
                        self._poke(self.wake)
                    return ready
                self._poke(self.wake)
                if self.closed or (not self.making and self.error is not None) or \
                        self.thread is None or not self.thread.is_alive():
                    return None
            self.got.acquire(timeout=0.5)

    def refill(self) -> None:
        self._poke(self.wake)

    def done(self, ready: _Ready) -> None:
        """A used sandbox, for the thread to remove."""
        with self.lock:
            if not self.closed:
                self.used.append(ready)
                self._poke(self.wake)
                return
        ready.discard(kill=False)

    def close(self) -> None:
        """Stop the thread; kill and remove every sandbox not handed over. In a forked
        child, only forget them (they are the parent's)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            ready, self.ready = self.ready, []
            used, self.used = self.used, []
        if os.getpid() != self.owner:
            return  # (the fds were closed at the fork)
        self._poke(self.wake)
        thread = self.thread
        if thread is not None and thread.ident != _thread.get_ident():
            thread.join()
        for r in ready:
            r.discard(kill=True)
        for r in used:
            r.discard(kill=False)

    def forget(self) -> None:
        """In the child of a fork: the sandboxes are the parent's; close our copies of
        their sockets and of the reporters' fds, keep no lock the fork froze."""
        self.lock = _thread.allocate_lock()
        self.closed = True
        for r in (*self.ready, *self.used):
            r.sock.close()
        self.ready = []
        self.used = []
        self.thread = None


_states: weakref.WeakSet[_State] = weakref.WeakSet()
_hooked = False


def _forget_all() -> None:
    for state in list(_states):
        state.forget()


def _close_state(state: _State) -> None:
    state.close()


class Pool:
    """The machinery of :class:`contain.Pool` (contain/api.py): *size* sandboxes under
    the validated *policy*, made ahead; *unpooled* runs a call the pool cannot take
    (:meth:`contain.Sandbox.run` of the same policy)."""

    def __init__(self, policy: Policy, root: str, size: int,
                 unpooled: Callable[..., Result]) -> None:
        from contain.sandbox.policy import PolicyTypeError

        if isinstance(size, bool) or not isinstance(size, int):
            raise PolicyTypeError("size", f"expected an integer, got {type(size).__name__}")
        if not 1 <= size <= MAX_SIZE:
            raise ContainError(f"size: {size} is out of range (1 to {MAX_SIZE})")
        self.policy = policy
        self.root = root
        self.size = size
        self.unpooled = unpooled
        self._state = _State(policy, root, size)
        global _hooked
        if not _hooked:
            os.register_at_fork(after_in_child=_forget_all)
            _hooked = True
        _states.add(self._state)
        self._finalizer = weakref.finalize(self, _close_state, self._state)
        self._state.start()

    def run(self, args: list[str], *, input: bytes | str | None = None,
            timeout: float | None = None, capture_output: bool = False,
            stdin: Any = None, stdout: Any = None, stderr: Any = None,
            on_output: Any = None, check: bool = False, forward_signals: bool = False,
            **options: Any) -> Result:
        """Run *args* in one of the pool's sandboxes; the arguments are those of
        :meth:`contain.Sandbox.run`. With *options* (other policy for this call), in
        a new sandbox instead (unpooled)."""
        state = self._state
        if state.closed and state.owner == os.getpid():
            raise ContainError("pool: closed")
        kwargs = {"input": input, "timeout": timeout, "capture_output": capture_output,
                  "stdin": stdin, "stdout": stdout, "stderr": stderr,
                  "on_output": on_output, "check": check,
                  "forward_signals": forward_signals}
        if options or state.owner != os.getpid():
            return self._unpooled(args, kwargs, options)
        from contain.sandbox.policy import check_run_call
        from contain.sandbox.runner import _Stdio, checked

        _check_args(args)
        data, seconds = check_run_call(
            input, timeout, {"capture_output": capture_output, "check": check,
                             "forward_signals": forward_signals}, on_output)
        packet = _packet(args)
        if packet is None:  # (an argument list over 64 KiB: the unpooled way)
            return self._unpooled(args, kwargs, {})
        while True:
            ready = state.take()
            if ready is None:
                return self._unpooled(args, kwargs, {})
            io = _Stdio(capture_output, on_output is not None, data, stdin, stdout,
                        stderr)
            try:
                ready.sock.sendmsg([packet], [(1, 1, _pack(io.fds))])  # SCM_RIGHTS
            except OSError:  # its init is gone (killed from outside): the next one
                io.close()
                ready.discard(kill=True)
                continue
            break
        return checked(_serve(state, ready, list(args), io, data, seconds, capture_output,
                              on_output, forward_signals), args, timeout, check)

    def _unpooled(self, args: list[str], kwargs: dict[str, Any],
                  options: dict[str, Any]) -> Result:
        return self.unpooled(args, **kwargs, **options)

    @property
    def ready(self) -> int:
        """How many sandboxes are ready now."""
        return len(self._state.ready)

    def close(self) -> None:
        """Stop making sandboxes, kill and remove the ready ones (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._state.closed



def _check_args(args: Any) -> None:
    """What build() refuses in a command, refused the same way."""
    from contain.sandbox.runner import check_command
    from contain.spec.decode import check_text

    check_command(args)
    for i, a in enumerate(args):
        check_text(a, f"$.process.args[{i}]")


def _packet(args: list[str]) -> bytes | None:
    from contain.process.sync import RUN, frame

    packets = frame({"t": RUN, "args": list(args)})
    return packets[0] if len(packets) == 1 else None


def _pack(fds: tuple[int, int, int]) -> bytes:
    from contain.process.sync import pack_fds

    return pack_fds(fds)


def _serve(state: _State, ready: _Ready, args: list[str], io: _Stdio, data: bytes | None,
           seconds: float | None, capture: bool, on_output: Any,
           forward_signals: bool) -> Result:
    """The rest of :func:`contain.sandbox.runner.execute`, for a sandbox handed its
    command: serve its stdio until it exits, its result; then its removal."""
    from contain.process.sync import Channel
    from contain.sandbox.runner import _cgroup_stats, _wait4, result_of, serving

    run = ready.run
    run.io = io
    io.close_theirs()
    reporter = ready.reporter
    built = run.built
    started = time.monotonic()
    pump, outputs = serving(built, reporter, io, capture, on_output)
    forward = None
    failed = True
    reaped = False
    try:
        if forward_signals:
            from contain.process.foreground import ForwardSignals

            forward = ForwardSignals(ready.pid)
            forward.__enter__()
        finished = run.serve(pump, data, None if seconds is None else started + seconds)
        code, usage = _wait4(ready.pid)
        reaped = True
        error = Channel(ready.sock).pending_error()  # the init's, before the exec
        if error is not None:
            raise error
        cgroup = _cgroup_stats(run.record)
        failed = False
    finally:
        if forward is not None:
            forward.__exit__(None, None, None)
        io.close()
        if failed or not ready.deferrable():
            ready.discard(kill=not reaped, failed=failed)
            state.refill()
        else:
            ready.sock.close()
            state.done(ready)
    return result_of(built, reporter, args, code, finished, started, usage, cgroup,
                     outputs if capture else None)
