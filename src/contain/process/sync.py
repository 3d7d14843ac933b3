"""The parent/child sync protocol: every message kind, its order, and its framing.

The runtime (P) forks a child that sets up the process to run and then execs it. For a
create the child is the *stage* (S), which makes or joins the namespaces; when the
process must be inside a PID (or time) namespace that S cannot enter itself, S forks the
container's *init* (I) and exits, else S is I. An exec runs the same stages, joining
the container's namespaces instead of making them. The messages, in the only order in
which they may come (``[...]``: only when the plan says so; both sides know the plan)::

    P (runtime)                                      S / I (the child)
    fork -------------------------------------------> S: non-dumpable, stdio,
    [create the cgroup, write its limits]                joins namespaces given by path
    [join S to the cgroup (when S is I)]
                                                      [create: unshare(NEWUSER)]
            <---------------------------------------- [USERNS]
    [write uid_map/gid_map]
            ----------------------------------------> [USERNS_DONE]
                                                      S: unshare the other namespaces
                                                      [S forks I into the PID/time ns]
            <---------------------------------------- [PID {pid}]        (S exits)
    [reap S, join I to the cgroup]
            <---------------------------------------- [NETDEV]  (create, netDevices)
    [move linux.netDevices into I's network ns]
            ----------------------------------------> [NETDEV_DONE]
            ----------------------------------------> CGROUP
                                                      I: reads CGROUP at one point:
                                                         exec: before it forks I, or
                                                         before its own final stage;
                                                         create: before the first cgroup
                                                         mount (after the last mount
                                                         without one), then
                                                         unshare(NEWCGROUP)
                                                      create: rootfs mounts
            <---------------------------------------- [MOUNT {index, fd}]  (any number:
    [a helper in I's mount namespace, with the            a bind source I cannot reach,
     host's credentials, mounts onto I's fd]              an id-mapped bind in a userns)
            ----------------------------------------> [MOUNT_DONE {error?}]
            <---------------------------------------- [HOOKS]          (create, hooks)
    [prestart, createRuntime hooks]
            ----------------------------------------> [HOOKS_DONE {state}]
                                                      createContainer hooks,
                                                      pivot_root, ..., user, caps
            <---------------------------------------- READY {warnings, listener_fd}
    [take the seccomp listener (pidfd_getfd)]
    write state.json (create)
            ----------------------------------------> GO {start}
                                                      create without start: wait
                                                      on exec.fifo; startContainer
                                                      hooks; seccomp; execve

``run`` is a create whose GO says ``start``: the init goes on without exec.fifo.

Instead of the message it expects next, the child may send ERROR {kind, errno, path,
msg} and exit; the parent raises it (formatted once, by :func:`child_error`). Anything
else out of order is a :class:`ProtocolError`: no message is kept for later. When the
child goes away without a word, the receiver sees :class:`ChannelClosed`.

Framing: a message is JSON preceded by its length (4 bytes, little-endian); it travels
in packets of at most ``CHUNK`` bytes over a SOCK_SEQPACKET pair, so a value of any
size (a hook state with large annotations, a long error) gets through whole.

Built on the ``_socket`` C module: ``socket.py`` pulls in ``enum`` and ``selectors``
and costs several milliseconds to import; the kinds are plain strings for the same
reason (the hot path imports neither ``enum`` nor ``typing``).
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

# -- the message kinds (the "t" field), in protocol order -------------------------------------

USERNS = "userns"            # child -> parent: I unshared a user namespace; map its ids
USERNS_DONE = "userns-done"  # parent -> child: uid_map and gid_map are written
PID = "pid"                  # stage -> parent: {"pid"}: the process I forked; I exit now
MOUNT = "mount"              # init -> parent: {"index", "fd"}: bind mounts[index] from the
                             # host onto my fd (a source out of my reach, an id-mapped one)
MOUNT_DONE = "mount-done"    # parent -> init: {"error"?}: done (or why not)
NETDEV = "netdev"            # init -> parent: my network namespace exists; move devices in
NETDEV_DONE = "netdev-done"  # parent -> init: linux.netDevices are in it
CGROUP = "cgroup"            # parent -> child: you are in the container's cgroup (if any)
HOOKS = "hooks"              # init -> parent: rootfs mounted; run prestart, createRuntime
HOOKS_DONE = "hooks-done"    # parent -> init: {"state"}: they ran; the hooks' state
READY = "ready"              # child -> parent: {"warnings"?, "listener_fd"?}: set up
GO = "go"                    # parent -> child: {"start"}: committed; go on (start now?)
ERROR = "error"              # child -> parent: {"kind", "errno", "path", "msg"}: I failed
# a pooled sandbox's handover socket, after GO (contain.sandbox.pool): {"args"}, with
# the fds of its 0, 1, 2; the init answers only with an ERROR (then exits)
RUN = "run"

KINDS = (USERNS, USERNS_DONE, PID, NETDEV, NETDEV_DONE, CGROUP, MOUNT, MOUNT_DONE, HOOKS,
         HOOKS_DONE, READY, GO, ERROR, RUN)

CHUNK = 1 << 16  # bytes per packet (a message may take several)
_HEADER = 4


class ChannelClosed(ContainError):
    """The other side went away (exited or was killed) without a word."""


class ProtocolError(ContainError):
    """A message of a kind the protocol does not allow at this point."""


class ChildError(ContainError):
    """The child's ERROR message, formatted; *errno* is the failed call's, if any."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message, errno=errno)


def frame(msg: dict[str, Any]) -> list[bytes]:
    """*msg* as the packets that carry it."""
    data = dumps(msg).encode()
    data = len(data).to_bytes(_HEADER, "little") + data
    if len(data) <= CHUNK:
        return [data]
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


class Channel:
    __slots__ = ("sock",)

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = _socket.socketpair(_socket.AF_UNIX,
                                  _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        return Channel(a), Channel(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, /, **fields: Any) -> None:
        fields["t"] = kind
        for packet in frame(fields):
            self.sock.send(packet)

    def write(self, kind: str, /, **fields: Any) -> None:
        """send() with plain write(2) calls (see init.send_ready: a sendmsg could be held
        by the child's own seccomp filter)."""
        fields["t"] = kind
        fd = self.sock.fileno()
        for packet in frame(fields):
            os.write(fd, packet)

    def recv(self) -> dict[str, Any]:
        """The next message, of any kind."""
        packet = self.sock.recv(CHUNK)
        if not packet:
            raise ChannelClosed("the other side of the sync channel went away")
        size = int.from_bytes(packet[:_HEADER], "little")
        data = packet[_HEADER:]
        if len(data) < size:
            parts = [data]
            have = len(data)
            while have < size:
                packet = self.sock.recv(CHUNK)
                if not packet:
                    raise ChannelClosed("the other side of the sync channel went away")
                parts.append(packet)
                have += len(packet)
            data = b"".join(parts)
        return _checked(loads(data))

    def expect(self, kind: str) -> dict[str, Any]:
        """The next message, which must be of *kind*; the other side's ERROR is raised
        as a :class:`ChildError`, any other kind is a :class:`ProtocolError`."""
        msg = self.recv()
        got = msg["t"]
        if got == kind:
            return msg
        if got == ERROR:
            raise child_error(msg)
        raise ProtocolError(f"sync: expected {kind!r}, got {got!r}")

    def pending_error(self) -> ChildError | None:
        """After a failure on our side (the child may have failed first and said so:
        then its report is the cause), the ERROR among what is left unread, if any.
        Call it once the child is dead, so that all it sent is there."""
        self.sock.setblocking(False)
        try:
            while True:
                msg = self.recv()
                if msg["t"] == ERROR:
                    return child_error(msg)
        except (OSError, ValueError, ContainError):  # drained, closed, or garbage
            return None
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


# -- structured errors ---------------------------------------------------------------------

def error_fields(exc: BaseException) -> dict[str, Any]:
    """The ERROR message's fields for a failure in the child: its kind ("contain": a
    message for the user already; "os": a failed call; "internal": a bug), errno, the
    path or field it concerns, and the message (without the path, which is its own
    field)."""
    errno = getattr(exc, "errno", None)
    if isinstance(exc, ContainError):
        return {"kind": "contain", "errno": errno if isinstance(errno, int) else None,
                "path": None, "msg": str(exc)}
    if isinstance(exc, OSError):
        # our syscall wrappers put "name detail: strerror" in args[1]
        msg = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        path = exc.filename
        if path is not None and str(path) in msg:
            path = None
        return {"kind": "os", "errno": exc.errno, "path": None if path is None else str(path),
                "msg": msg}
    return {"kind": "internal", "errno": None, "path": None,
            "msg": f"{type(exc).__name__}: {exc}"}


def child_error(msg: dict[str, Any]) -> ChildError:
    """The one place an ERROR message becomes the line the user reads."""
    text = str(msg.get("msg") or "failed")
    path = msg.get("path")
    if path:
        text = f"{path}: {text}"
    if msg.get("kind") == "internal":
        text = f"internal error in the container's setup: {text}"
    errno = msg.get("errno")
    return ChildError(text, errno if isinstance(errno, int) else None)


# -- fd passing (console sockets) -----------------------------------------------------------

_SCM_RIGHTS = 1
_SOL_SOCKET = 1


def _pack_fds(fds: tuple[int, ...] | list[int]) -> bytes:
    """fds as the C int array SCM_RIGHTS carries (without importing struct)."""
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


def parse(packet: bytes) -> dict[str, Any]:
    """The message of one whole packet (one that :func:`frame` made alone)."""
    size = int.from_bytes(packet[:_HEADER], "little")
    if len(packet) - _HEADER != size:
        raise ProtocolError("sync: a message in more than one packet")
    return _checked(loads(packet[_HEADER:]))


def _checked(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict) or msg.get("t") not in KINDS:
        raise ProtocolError(f"sync: malformed message {str(msg)[:80]!r}")
    return msg


def pack_fds(fds: tuple[int, ...] | list[int]) -> bytes:
    return _pack_fds(fds)


def unpack_fds(data: bytes) -> list[int]:
    return _unpack_fds(data)


def _unpack_fds(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
            for i in range(0, len(data) - 3, 4)]


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


def connect_unix(path: str, what: str = "") -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        prefix = f"{what}: " if what else ""
        raise ContainError(f"{prefix}connect to {path}: {exc.strerror}") from exc
    return sock
