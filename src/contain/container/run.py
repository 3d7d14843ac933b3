"""Running a container in the foreground: create + start (+ wait + delete), as `contain
run`, `contain sandbox` and the Python API do it.

The mechanisms (subreaper, signal forwarding, the pty relay) are process/foreground.py;
this module puts them in order around the lifecycle.
"""

from __future__ import annotations

import os

from contain.container.control import delete, run_poststart, wait
from contain.container.lifecycle import CreateOptions, create
from contain.process.foreground import (
    ForwardSignals,
    become_subreaper,
    relay_tty,
    size_from_caller,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.container.store import ContainerRecord
    from contain.spec.config import Spec


def run_container(root: str, cid: str, bundle: str, spec: Spec, opts: CreateOptions,
                  detach: bool = False, keep: bool = False,
                  forward_signals: bool = False,
                  after_create: Callable[[ContainerRecord], None] | None = None) -> int:
    """create + start (+ wait + delete unless detached); return the exit code.

    *forward_signals* replaces the caller's handlers of the usual termination signals
    while the container runs (the CLI asks for it; it needs the main thread). With
    *after_create* (a syscall supervisor attaching: sandbox/supervise), the container
    is created waiting on exec.fifo, *after_create* is called, and only then started."""
    if spec.process is None:  # (create() says so too, but we look at it first)
        from contain.spec.decode import fail

        raise fail("$.process", "required field is missing")
    # with start_now the container runs as soon as create returns: handlers go in first,
    # and a signal that comes before the container exists waits for it
    forward = ForwardSignals().__enter__() if forward_signals and not detach else None
    try:
        # (a local pty: the console fd goes to create, the master comes back on pair[0])
        pair = _console_pair(spec) if spec.process.terminal and not opts.console_socket \
            and not detach else None
        if pair is not None:
            opts.console_fd = pair[1].fileno()
        if not detach:
            become_subreaper()
        opts.start_now = after_create is None
        try:
            record = create(root, cid, bundle, opts, spec=spec)
        except BaseException:
            if pair is not None:
                pair[0].close()
            raise
        finally:
            if pair is not None:
                pair[1].close()
        if forward is not None:
            forward.attach(record.pid)
        # the container runs, maybe for long (a pty relayed, a network proxy served):
        # the garbage collector the CLI kept off during the set-up is back, what the
        # set-up made frozen rather than walked once more (cli/main.py)
        import gc

        if not gc.isenabled():
            gc.freeze()
            gc.enable()
        try:
            if after_create is not None:
                from contain.container.control import start

                after_create(record)
                start(root, cid, poststart=False)
            code = _follow(record, pair, forward, detach)
        except BaseException:
            delete(root, cid, force=True)
            raise
    finally:
        if forward is not None:
            forward.__exit__()
    if detach:
        return 0
    if not keep:
        delete(root, cid, force=True)
    return code


def _console_pair(spec: Spec) -> tuple[Any, Any]:
    import _socket

    pair = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    size_from_caller(spec.process)
    return pair


def _follow(record: ContainerRecord, pair: tuple[Any, Any] | None,
            forward: ForwardSignals | None, detach: bool) -> int:
    """After create: take the pty master (if relayed), run the poststart hooks, then
    (unless detached) relay the pty until the process exits and reap it."""
    master = -1
    try:
        if pair is not None:
            from contain.process.sync import recv_fd

            master, _ = recv_fd(pair[0])
        run_poststart(record)
        if detach:
            return 0
        if master >= 0:
            if forward is not None:
                forward.relay_winch_to(master)
            relay_tty(master, record.pid)
        return wait(record)
    finally:
        if master >= 0:
            os.close(master)
        if pair is not None:
            pair[0].close()
