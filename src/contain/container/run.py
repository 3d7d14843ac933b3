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
    from contain.spec.config import Spec


def run_container(root: str, cid: str, bundle: str, spec: Spec, opts: CreateOptions,
                  detach: bool = False, keep: bool = False,
                  forward_signals: bool = False) -> int:
    """create + start (+ wait + delete unless detached); return the exit code.

    *forward_signals* replaces the caller's handlers of the usual termination signals
    while the container runs (the CLI asks for it; it needs the main thread)."""
    import _socket

    if spec.process is None:  # (create() says so too, but we look at it first)
        from contain.spec.decode import fail

        raise fail("$.process", "required field is missing")
    # with start_now the container runs as soon as create returns: handlers go in first,
    # and a signal that comes before the container exists waits for it
    forward = ForwardSignals().__enter__() if forward_signals and not detach else None
    try:
        local_tty = spec.process.terminal and not opts.console_socket and not detach
        pair = None
        if local_tty:
            pair = _socket.socketpair(_socket.AF_UNIX,
                                      _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            opts.console_fd = pair[1].fileno()
            size_from_caller(spec.process)
        if not detach:
            become_subreaper()
        opts.start_now = True
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
        master = -1
        try:
            if pair is not None:
                from contain.process.sync import recv_fd

                master, _ = recv_fd(pair[0])
                pair[0].close()
                pair = None
            run_poststart(record)
            if detach:
                return 0
            if master >= 0:
                if forward is not None:
                    forward.relay_winch_to(master)
                relay_tty(master, record.pid)
            code = wait(record)
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
