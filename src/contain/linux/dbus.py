"""A small blocking D-Bus client over AF_UNIX: what the systemd cgroup driver needs.

EXTERNAL authentication, method calls with their replies and errors, and signals read
while a reply is awaited. Marshalling covers the basic types, arrays, structs,
dict entries and variants (enough for systemd's ``a(sv)`` properties and the replies
of ``Get``). A variant is given as a ``(signature, value)`` pair, a struct as a tuple,
an array as a list (``ay`` also as bytes), a dict entry array is read back as a dict.

It is stdlib only (the driver's whole need is ~a dozen calls, and a dependency would be
one more package on every host for a path that most containers never take); it is
imported only when ``--systemd-cgroup`` is used.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Bus", "DBusError", "Message", "connect"]

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
NO_REPLY_EXPECTED = 0x1
_F_PATH, _F_INTERFACE, _F_MEMBER, _F_ERROR, _F_REPLY, _F_DEST, _F_SENDER, _F_SIG = range(1, 9)
_FIELD_SIG = {_F_PATH: "o", _F_INTERFACE: "s", _F_MEMBER: "s", _F_ERROR: "s", _F_REPLY: "u",
              _F_DEST: "s", _F_SENDER: "s", _F_SIG: "g", 9: "u"}
_FIXED = {"y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4),
          "u": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4)}
_ALIGN = {**{k: v[1] for k, v in _FIXED.items()}, "s": 4, "o": 4, "g": 1, "a": 4, "(": 8,
          "{": 8, "v": 1}
_MAX_MESSAGE = 128 << 20


class DBusError(ContainError):
    """An error reply (its D-Bus name kept in :attr:`name`), or a broken connection."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{text} ({name})" if name else text)
        self.name = name


# -- signatures ---------------------------------------------------------------------------

def split_signature(sig: str) -> list[str]:
    """The complete types of a signature: 'sa(sv)u' -> ['s', 'a(sv)', 'u']."""
    out = []
    i = 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _type_end(sig: str, i: int) -> int:
    c = sig[i] if i < len(sig) else ""
    if c == "a":
        return _type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while j < len(sig) and sig[j] != close:
            j = _type_end(sig, j)
        if j >= len(sig):
            raise ValueError(f"bad D-Bus signature {sig!r}")
        return j + 1
    if c in _ALIGN and c not in "a({":
        return i + 1
    raise ValueError(f"bad D-Bus signature {sig!r}")


# -- marshalling --------------------------------------------------------------------------

class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def pad(self, n: int) -> None:
        self.buf.extend(b"\0" * (-len(self.buf) % n))

    def put(self, t: str, v: Any) -> None:
        c = t[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.pad(size)
            self.buf.extend(struct.pack("<" + fmt, int(v) if c != "d" else v))
        elif c in "so":
            data = v.encode()
            self.pad(4)
            self.buf.extend(struct.pack("<I", len(data)) + data + b"\0")
        elif c == "g":
            data = v.encode()
            self.buf.extend(bytes([len(data)]) + data + b"\0")
        elif c == "v":
            sig, value = v
            self.put("g", sig)
            self.put(sig, value)
        elif c == "(":
            self.pad(8)
            for sub, item in zip(split_signature(t[1:-1]), v, strict=True):
                self.put(sub, item)
        elif c == "a":
            elem = t[1:]
            self.pad(4)
            at = len(self.buf)
            self.buf.extend(b"\0\0\0\0")
            self.pad(_ALIGN[elem[0]])
            start = len(self.buf)
            if elem == "y":
                self.buf.extend(bytes(v))
            elif elem[0] == "{":
                k, val = split_signature(elem[1:-1])
                for key, item in (v.items() if isinstance(v, dict) else v):
                    self.pad(8)
                    self.put(k, key)
                    self.put(val, item)
            else:
                for item in v:
                    self.put(elem, item)
            struct.pack_into("<I", self.buf, at, len(self.buf) - start)
        else:
            raise ValueError(f"cannot marshal D-Bus type {t!r}")


class _Reader:
    __slots__ = ("data", "pos", "order")

    def __init__(self, data: bytes, pos: int = 0, order: str = "<") -> None:
        self.data = data
        self.pos = pos
        self.order = order

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def get(self, t: str) -> Any:
        c = t[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.align(size)
            (v,) = struct.unpack_from(self.order + fmt, self.data, self.pos)
            self.pos += size
            return bool(v) if c == "b" else v
        if c in "so":
            n = self.get("u")
            s = self.data[self.pos:self.pos + n].decode()
            self.pos += n + 1
            return s
        if c == "g":
            n = self.data[self.pos]
            s = self.data[self.pos + 1:self.pos + 1 + n].decode()
            self.pos += n + 2
            return s
        if c == "v":
            sig = self.get("g")
            return (sig, self.get(sig))
        if c == "(":
            self.align(8)
            return tuple(self.get(sub) for sub in split_signature(t[1:-1]))
        if c == "a":
            elem = t[1:]
            n = self.get("u")
            self.align(_ALIGN[elem[0]])
            end = self.pos + n
            if end > len(self.data):
                raise ValueError("D-Bus array runs past the message")
            if elem == "y":
                b = self.data[self.pos:end]
                self.pos = end
                return bytes(b)
            if elem[0] == "{":
                k, val = split_signature(elem[1:-1])
                out: dict[Any, Any] = {}
                while self.pos < end:
                    self.align(8)
                    key = self.get(k)
                    out[key] = self.get(val)
                return out
            items = []
            while self.pos < end:
                items.append(self.get(elem))
            return items
        raise ValueError(f"cannot read D-Bus type {t!r}")


class Message:
    """One D-Bus message: its type, header fields and body (decoded)."""

    __slots__ = ("kind", "serial", "fields", "body")

    def __init__(self, kind: int, serial: int, fields: dict[int, Any], body: list[Any]):
        self.kind = kind
        self.serial = serial
        self.fields = fields
        self.body = body

    @property
    def member(self) -> str:
        return str(self.fields.get(_F_MEMBER, ""))

    @property
    def interface(self) -> str:
        return str(self.fields.get(_F_INTERFACE, ""))

    @property
    def path(self) -> str:
        return str(self.fields.get(_F_PATH, ""))

    @property
    def reply_serial(self) -> int:
        return int(self.fields.get(_F_REPLY, 0))


def encode(kind: int, serial: int, fields: dict[int, Any], signature: str, body: tuple[Any, ...],
           flags: int = 0) -> bytes:
    b = _Writer()
    for t, v in zip(split_signature(signature), body, strict=True):
        b.put(t, v)
    if signature:
        fields = {**fields, _F_SIG: signature}
    h = _Writer()
    h.buf.extend(struct.pack("<cBBBII", b"l", kind, flags, 1, len(b.buf), serial))
    h.put("a(yv)", [(code, (_FIELD_SIG[code], v)) for code, v in fields.items()])
    h.pad(8)
    return bytes(h.buf) + bytes(b.buf)


def decode(data: bytes) -> Message:
    order = "<" if data[:1] == b"l" else ">"
    kind, _flags, _ver, _blen, serial = struct.unpack_from(order + "BBBII", data, 1)
    r = _Reader(data, 12, order)
    fields = {code: value for code, (_sig, value) in r.get("a(yv)")}
    r.align(8)
    sig = fields.get(_F_SIG, "")
    body = [r.get(t) for t in split_signature(sig)]
    return Message(kind, serial, fields, body)


def _message_size(head: bytes) -> int:
    order = "<" if head[:1] == b"l" else ">"
    blen, _serial, flen = struct.unpack_from(order + "III", head, 4)
    return 16 + flen + (-(16 + flen) % 8) + blen


# -- the connection -----------------------------------------------------------------------

class Bus:
    """A connection to a bus (or to systemd's private peer-to-peer socket)."""

    def __init__(self, sock: socket.socket, *, peer: bool) -> None:
        self.sock = sock
        self.peer = peer  # no bus daemon: no Hello, no AddMatch
        self.serial = 0
        self.buf = b""
        self.signals: list[Message] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self) -> None:
        """EXTERNAL, with BEGIN sent in the same write (as sd-bus's clients do): systemd
        252's private server left a first message that arrived in the same read as a
        late BEGIN unprocessed until more data came (a Subscribe waited forever)."""
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\nBEGIN\r\n")
        line = self._line()
        if not line.startswith(b"OK"):
            raise DBusError("", f"D-Bus authentication refused: {line.decode(errors='replace')}")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise DBusError("", "the D-Bus peer closed the connection during authentication")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _read_message(self, deadline: float, what: str) -> Message:
        while True:
            if len(self.buf) >= 16:
                size = _message_size(self.buf)
                if size > _MAX_MESSAGE:
                    raise DBusError("", "D-Bus message too large")
                if len(self.buf) >= size:
                    data, self.buf = self.buf[:size], self.buf[size:]
                    return decode(data)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise DBusError("", f"timed out waiting for {what}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DBusError("", "the D-Bus peer closed the connection")
            self.buf += chunk

    def send(self, dest: str | None, path: str, interface: str, member: str,
             signature: str = "", *body: Any, flags: int = 0) -> int:
        self.serial += 1
        fields: dict[int, Any] = {_F_PATH: path, _F_INTERFACE: interface, _F_MEMBER: member}
        if dest and not self.peer:
            fields[_F_DEST] = dest
        self.sock.sendall(encode(METHOD_CALL, self.serial, fields, signature, body, flags))
        return self.serial

    def call(self, dest: str | None, path: str, interface: str, member: str,
             signature: str = "", *body: Any, timeout: float = 30.0) -> list[Any]:
        """A method call; its reply's body. An error reply raises :class:`DBusError`;
        signals that arrive meanwhile are kept for :meth:`wait_signal`."""
        serial = self.send(dest, path, interface, member, signature, *body)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(deadline, f"the reply to {member}")
            if msg.kind == SIGNAL:
                self.signals.append(msg)
                continue
            if msg.reply_serial != serial:
                continue
            if msg.kind == ERROR:
                text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                raise DBusError(str(msg.fields.get(_F_ERROR, "")), text or "D-Bus error")
            return msg.body

    def wait_signal(self, interface: str, member: str, match: Any, timeout: float) -> Message:
        """The first signal *interface*.*member* for which ``match(msg)`` is true (kept
        ones first)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.signals):
                if msg.interface == interface and msg.member == member and match(msg):
                    return self.signals.pop(i)
            self.signals.clear()
            msg = self._read_message(deadline, f"the signal {member}")
            if msg.kind == SIGNAL:
                self.signals.append(msg)

    def add_match(self, rule: str) -> None:
        if not self.peer:
            self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                      "AddMatch", "s", rule)


def connect(path: str, *, peer: bool = False, timeout: float = 10.0) -> Bus:
    """Connect and authenticate to the socket at *path*; on a bus, say Hello."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        bus = Bus(sock, peer=peer)
        bus._auth()
        if not peer:
            bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                     "Hello", timeout=timeout)
    except BaseException:
        sock.close()
        raise
    return bus
