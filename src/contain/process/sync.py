"""The parent/child sync channel: JSON messages, with fds, over a SOCK_SEQPACKET pair.

Built on the ``_socket`` C module: ``socket.py`` pulls in ``enum`` and ``selectors``
and costs several milliseconds to import.
"""

from __future__ import annotations

import _socket
import os
import sys

from contain.errors import ContainError
from contain.jsonio import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SCM_RIGHTS = 1
_SOL_SOCKET = 1
_MAX = 1 << 16


def _pack_fds(fds: tuple[int, ...] | list[int]) -> bytes:
    """fds as the C int array SCM_RIGHTS carries (without importing struct)."""
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


def _unpack_fds(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
            for i in range(0, len(data) - 3, 4)]


class ChannelClosed(ContainError):
    """The other side went away (exited or was killed)."""


class Channel:
    __slots__ = ("sock", "pending")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        # messages received while waiting for another kind (the parent's "cgroup" can
        # arrive before the "ok" to a user-namespace request): kept for their expect()
        self.pending: list[tuple[dict[str, Any], list[int]]] = []

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = _socket.socketpair(_socket.AF_UNIX,
                                  _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        return Channel(a), Channel(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: dict[str, Any], fds: tuple[int, ...] | list[int] = ()) -> None:
        data = dumps(msg).encode()
        if fds:
            anc = [(_SOL_SOCKET, _SCM_RIGHTS, _pack_fds(fds))]
            self.sock.sendmsg([data], anc)
        else:
            self.sock.send(data)

    def recv(self) -> tuple[dict[str, Any], list[int]]:
        data, anc, _flags, _addr = self.sock.recvmsg(_MAX, _socket.CMSG_SPACE(16 * 4),
                                                     _socket.MSG_CMSG_CLOEXEC)
        fds: list[int] = []
        for level, kind, payload in anc:
            if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
                n = len(payload) // 4
                fds.extend(_unpack_fds(payload[:n * 4]))
        if not data:
            for fd in fds:
                os.close(fd)
            raise ChannelClosed("the container's init exited before it was ready")
        return loads(data), fds

    def expect(self, kind: str) -> tuple[dict[str, Any], list[int]]:
        """The next message of *kind* (others are kept for later); an "error" message
        from the other side is raised."""
        for i, (msg, fds) in enumerate(self.pending):
            if msg.get("t") == kind:
                del self.pending[i]
                return msg, fds
        while True:
            msg, fds = self.recv()
            if msg.get("t") == "error":
                for fd in fds:
                    os.close(fd)
                raise ContainError(str(msg.get("msg")))
            if msg.get("t") == kind:
                return msg, fds
            self.pending.append((msg, fds))

    def close(self) -> None:
        self.sock.close()


def send_fd(sock_fd: int, fd: int, name: str) -> None:
    """Send *fd* with *name* as payload over a connected unix socket fd (the console
    socket protocol runc and its callers use)."""
    sock = _socket.socket(fileno=os.dup(sock_fd))
    try:
        sock.sendmsg([name.encode()], [(_SOL_SOCKET, _SCM_RIGHTS, _pack_fds([fd]))])
    finally:
        sock.close()


def recv_fd(sock: _socket.socket) -> tuple[int, str]:
    data, anc, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4),
                                            _socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in anc:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            return _unpack_fds(payload[:4])[0], data.decode(errors="replace")
    raise ContainError("console socket: no file descriptor received")


def connect_unix(path: str) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ContainError(f"connect to {path}: {exc.strerror}") from None
    return sock
