"""Terminals: the pty made inside the container and the console-socket protocol.

As runc does: the init opens a pty on the container's own devpts, sends the master over
the console socket with SCM_RIGHTS (payload: the pty's name), and makes the slave its
controlling terminal and stdio. The receiver (containerd's shim, conmon, or `contain
run` itself) does the I/O on the master.
"""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contain.spec.config import Process


def set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_winsize(fd: int) -> tuple[int, int]:
    import fcntl
    import struct
    import termios

    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def setup_console(console_fd: int, proc: Process) -> None:
    """Make a pty in the container, send its master to *console_fd*, become its slave."""
    import fcntl
    import termios

    from contain.process.sync import send_fd

    if console_fd < 0:
        raise ContainError("process.terminal is true but no console socket was given "
                           "(use --console-socket)")
    try:
        master, slave = os.openpty()
    except OSError as exc:
        raise ContainError(f"process.terminal: cannot open a pty in the container: "
                           f"{exc.strerror} (is /dev/pts mounted?)") from exc
    try:
        name = os.ttyname(slave)
        if proc.console_size is not None:
            set_winsize(slave, proc.console_size.height, proc.console_size.width)
        # the user's, with the group the devpts mount gives (gid=5, tty, in runc's
        # default config): runc 1.4 leaves the gid alone, which need not be mapped
        os.fchown(slave, proc.user.uid, -1)
        send_fd(console_fd, master, name)
    finally:
        os.close(master)
        os.close(console_fd)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
