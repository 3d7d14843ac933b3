"""The one I/O pump: move bytes between fds with ``select`` until the work is done.

Three places need it: a hook (feed the state on stdin, keep the tail of stdout and
stderr, a timeout), a captured sandbox (feed the input, collect stdout and stderr until
the process exits, a timeout) and the pty relay (copy the caller's stdin to the pty and
the pty to the caller's stdout until the process exits). Each says what to copy, feed
or collect, then calls :meth:`Pump.run`.

Without an exit fd, the pump runs until every source is at end of file and every feed
is written. With one (a pidfd), it runs until the process has exited, then drains what
the outputs still hold for as long as they keep yielding within *linger* seconds (a
stray process that inherited a pipe must not keep us forever). A deadline ends it early.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_CHUNK = 65536


def write_all(fd: int, data: bytes) -> None:
    """Write all of *data* to the blocking fd *fd*."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Pump:
    """The fds to serve; :meth:`run` serves them."""

    def __init__(self) -> None:
        # source fd -> (what to do with a chunk, is it an input of the process?)
        self._sources: dict[int, tuple[Callable[[bytes], None], bool]] = {}
        self._feeds: dict[int, memoryview] = {}

    def copy(self, src: int, dst: int, *, input: bool = False) -> None:
        """Copy what *src* yields to the blocking fd *dst*. An *input* source (what
        goes to the process) is no longer read once the process has exited."""
        self._sources[src] = (lambda data: write_all(dst, data), input)

    def collect(self, src: int, keep: int | None = None) -> bytearray:
        """Collect what *src* yields into the returned buffer (its last *keep* bytes)."""
        buf = bytearray()

        def sink(data: bytes) -> None:
            buf.extend(data)
            if keep is not None:
                del buf[:-keep]

        self._sources[src] = (sink, False)
        return buf

    def feed(self, fd: int, data: bytes) -> None:
        """Write *data* to *fd*, then close it (the reader sees end of file). The pump
        owns *fd* from now on: :meth:`run` closes it, written or not. A reader that
        goes away (EPIPE) ends the feed."""
        os.set_blocking(fd, False)
        self._feeds[fd] = memoryview(data)

    def run(self, exit_fd: int = -1, deadline: float | None = None,
            linger: float = 0.05) -> bool:
        """Serve the fds (see the module's docstring); False if *deadline* (a
        ``time.monotonic()`` value) came first."""
        import select
        import time

        exited = False
        try:
            for fd in [fd for fd, data in self._feeds.items() if not data]:
                self._end_feed(fd)
            while True:
                if exited:  # nothing reads the feeds any more
                    for fd in list(self._feeds):
                        self._end_feed(fd)
                readers = [fd for fd, (_, is_input) in self._sources.items()
                           if not (exited and is_input)]
                if not readers and (exited or (exit_fd < 0 and not self._feeds)):
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if exited:
                    left = linger if left is None else min(left, linger)
                watch = readers if exited or exit_fd < 0 else [*readers, exit_fd]
                ready, writable, _ = select.select(watch, list(self._feeds), [], left)
                if exited and not ready:
                    return True  # quiet for `linger`: what is left belongs to a stray
                for fd in ready:
                    if fd == exit_fd:
                        exited = True
                    else:
                        self._read(fd)
                for fd in writable:
                    self._write_feed(fd)
        finally:
            for fd in list(self._feeds):
                self._end_feed(fd)

    def _read(self, fd: int) -> None:
        import errno

        try:
            data = os.read(fd, _CHUNK)
        except OSError as exc:  # a pty whose other side is all closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            self._sources[fd][0](data)
        else:
            del self._sources[fd]

    def _write_feed(self, fd: int) -> None:
        pending = self._feeds[fd]
        try:
            pending = pending[os.write(fd, pending[:_CHUNK]):]
        except BlockingIOError:
            return
        except BrokenPipeError:  # the reader does not read (all) its input
            pending = pending[:0]
        self._feeds[fd] = pending
        if not pending:
            self._end_feed(fd)

    def _end_feed(self, fd: int) -> None:
        del self._feeds[fd]
        os.close(fd)
