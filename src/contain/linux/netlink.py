"""A small rtnetlink client (NETLINK_ROUTE over ``_socket``): what linux.netDevices needs.

Links: look one up, set it up or down, move it (and rename it in the same request) into
the network namespace of an fd. Addresses: list a link's, add one. Every request asks
for an acknowledgement; a negative one raises :class:`SyscallError` naming the request.

Messages are packed by hand with :mod:`struct` (``struct nlmsghdr``, ``ifinfomsg``,
``ifaddrmsg`` and ``rtattr``, native byte order as the kernel reads them); the socket
belongs to the network namespace of the thread that made it, so a socket made before a
setns or unshare still talks to the old namespace.
"""

from __future__ import annotations

import _socket
import struct

from contain.linux.syscalls import syscall_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AF_NETLINK = 16
NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_GETADDR = 22
IFLA_IFNAME = 3
IFLA_NET_NS_FD = 28
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
IFA_FLAGS = 8
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")     # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")   # ifaddrmsg: family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")         # rtattr: len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, data: bytes) -> bytes:
    size = _RTA.size + len(data)
    return _RTA.pack(size, kind) + data + bytes(_align(size) - size)


def _attrs(buf: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + _RTA.size <= len(buf):
        size, kind = _RTA.unpack_from(buf, pos)
        if size < _RTA.size:
            break
        out[kind & 0x3FFF] = buf[pos + _RTA.size:pos + size]
        pos += _align(size)
    return out


class Address:
    """One address of a link, as the kernel reported it (its raw attributes)."""

    __slots__ = ("family", "prefixlen", "flags", "scope", "attrs")

    def __init__(self, family: int, prefixlen: int, flags: int, scope: int,
                 attrs: dict[int, bytes]) -> None:
        self.family = family
        self.prefixlen = prefixlen
        self.flags = flags
        self.scope = scope
        self.attrs = attrs

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "prefixlen": self.prefixlen,
                "attrs": {str(k): v.hex() for k, v in self.attrs.items()
                          if k in (IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST)}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Address:
        return cls(int(data["family"]), int(data["prefixlen"]), 0, RT_SCOPE_UNIVERSE,
                   {int(k): bytes.fromhex(v) for k, v in data["attrs"].items()})


class Route:
    """A NETLINK_ROUTE socket of the caller's network namespace (close it, or use
    ``with``)."""

    def __init__(self) -> None:
        self.sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Route:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """Send one request; the payloads of the answers (a dump's, or none for an
        acknowledged change)."""
        self.seq += 1
        seq = self.seq
        msg = _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body
        self.sock.send(msg)
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + _HDR.size <= len(data):
                size, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, pos)
                if size < _HDR.size:
                    return out
                payload = data[pos + _HDR.size:pos + size]
                pos += _align(size)
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise syscall_error(err, what)
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append(payload)

    def set_up(self, index: int, up: bool) -> None:
        body = _IFINFO.pack(0, 0, index, IFF_UP if up else 0, IFF_UP)
        self._request(RTM_NEWLINK, NLM_F_ACK, body, f"netlink: link {index} "
                      f"{'up' if up else 'down'}")

    def move(self, index: int, name: str, netns_fd: int) -> None:
        """Move link *index* into the network namespace of *netns_fd*, named *name* there
        (one request: the rename cannot clash with a name on this side)."""
        body = (_IFINFO.pack(0, 0, index, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
                + _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd)))
        self._request(RTM_NEWLINK, NLM_F_ACK, body, f"netlink: move link {index} as {name}")

    def addresses(self, index: int) -> list[Address]:
        body = _IFADDR.pack(0, 0, 0, 0, 0)
        out = []
        for payload in self._request(RTM_GETADDR, NLM_F_DUMP, body, "netlink: list addresses"):
            family, prefixlen, flags, scope, ifindex = _IFADDR.unpack_from(payload)
            if ifindex != index:
                continue
            attrs = _attrs(payload[_IFADDR.size:])
            if IFA_FLAGS in attrs:  # (the 32-bit flags; ifa_flags holds the low 8)
                flags = struct.unpack("=I", attrs[IFA_FLAGS][:4])[0]
            out.append(Address(family, prefixlen, flags, scope, attrs))
        return out

    def add_address(self, index: int, addr: Address) -> None:
        body = _IFADDR.pack(addr.family, addr.prefixlen, 0, addr.scope, index)
        for kind in (IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST):
            if kind in addr.attrs:
                body += _attr(kind, addr.attrs[kind])
        self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body,
                      f"netlink: add an address to link {index}")


def link_index(name: str) -> int:
    """The index of link *name* in the caller's network namespace; ENODEV if none."""
    try:
        return int(_socket.if_nametoindex(name))
    except OSError as exc:
        raise syscall_error(exc.errno or 19, "if_nametoindex", name) from exc


def link_name(index: int) -> str | None:
    try:
        return str(_socket.if_indextoname(index))
    except OSError:
        return None

