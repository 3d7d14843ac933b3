"""The filtering proxy of ``--net allow=DOMAIN[:PORT],...``.

One listening port speaks three protocols, told apart by the first byte a client sends:
SOCKS5 (0x05), an HTTP ``CONNECT host:port`` tunnel, and a plain-HTTP forward proxy
(``GET http://host/...``). Every request names a host and a port; :class:`Rules` decides:

- the host must be listed: ``example.org`` (that name only), ``*.example.org`` (its
  subdomains, not the name itself), an IP address or a CIDR block; ``:PORT`` limits the
  entry to one port (no port: any port);
- a listed name is resolved here, once, and the connection goes to the address found (no
  second lookup a rebinding server could answer differently). An address that is not
  public (loopback, link-local, private, CGNAT, unique-local, the cloud metadata
  addresses 169.254.169.254 and fd00:ec2::254, multicast, reserved) is refused unless
  it is listed itself (an IP or a CIDR), or it is loopback and the name listed is
  ``localhost``;
- every decision, allowed or refused, is passed to *report* as a dict (one JSON line).

Stdlib only (the C modules _socket and _thread). The proxy runs outside the sandbox;
its listening socket was bound inside the sandbox's network namespace (see network.py),
so the sandbox reaches it on its own loopback and has no other way out.
"""

from __future__ import annotations

import _socket
import errno
import time

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    Report = Callable[[dict[str, object]], None]

MAX_HEAD = 65536


# -- addresses: (version, integer) pairs; _socket.inet_pton parses them (the ipaddress
# module costs a few milliseconds to import, on the runtime's path) ----------------------

class Address:
    """An IP address: its text (as given, without a zone), version and value."""

    __slots__ = ("text", "version", "value")

    def __init__(self, text: str) -> None:
        text = text.split("%")[0]
        for family, version in ((_socket.AF_INET, 4), (_socket.AF_INET6, 6)):
            try:
                packed = _socket.inet_pton(family, text)
            except OSError:
                continue
            self.text, self.version = text, version
            self.value = int.from_bytes(packed, "big")
            return
        raise ValueError(f"not an IP address: {text!r}")

    def unmapped(self) -> Address:
        """The IPv4 address of an IPv4-mapped IPv6 one (::ffff:a.b.c.d), else self."""
        if self.version == 6 and self.value >> 32 == 0xFFFF:
            return Address(_socket.inet_ntop(_socket.AF_INET,
                                             (self.value & 0xFFFFFFFF).to_bytes(4, "big")))
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and (self.version, self.value) == (
            other.version, other.value)

    def __hash__(self) -> int:
        return hash((self.version, self.value))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Address({self.text!r})"


class Network:
    """An address block (a single address is a /32 or /128)."""

    __slots__ = ("version", "prefix", "shift", "value")

    def __init__(self, text: str) -> None:
        addr, sep, length = text.partition("/")
        a = Address(addr)
        bits = 32 if a.version == 4 else 128
        if sep and not (length.isdigit() and 0 <= int(length) <= bits):
            raise ValueError(f"bad prefix length in {text!r}")
        self.version = a.version
        self.prefix = int(length) if sep else bits
        self.shift = bits - self.prefix
        self.value = a.value >> self.shift

    def __contains__(self, addr: Address) -> bool:
        return addr.version == self.version and addr.value >> self.shift == self.value


# not public: refused unless listed (loopback, "this network", private, CGNAT, IETF and
# documentation blocks, link-local with the metadata address, multicast, reserved;
# IPv6 unique-local with AWS's fd00:ec2::254, NAT64, discard, site-local)
_BLOCKED = [Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)]
_LOOPBACK = [Network("127.0.0.0/8"), Network("::1/128")]


def is_public(addr: Address | str) -> bool:
    a = (Address(addr) if isinstance(addr, str) else addr).unmapped()
    return not any(a in net for net in _BLOCKED)


class Rule:
    __slots__ = ("text", "name", "wildcard", "network", "port")

    def __init__(self, text: str) -> None:
        self.text = text
        entry = text.strip()
        port: int | None = None
        host = entry
        if entry.startswith("["):  # [v6]:port or [v6]
            end = entry.find("]")
            if end < 0:
                raise ContainError(f"invalid --net allow entry {text!r}: unclosed '['")
            host, rest = entry[1:end], entry[end + 1:]
            if rest:
                if not rest.startswith(":"):
                    raise ContainError(f"invalid --net allow entry {text!r}")
                port = _port(rest[1:], text)
        elif entry.count(":") == 1:
            host, _, p = entry.partition(":")
            port = _port(p, text)
        self.port = port
        self.network: Network | None = None
        self.wildcard = False
        host = host.lower().rstrip(".")
        try:
            self.network = Network(host)
        except ValueError as exc:
            if "/" in host:
                raise ContainError(f"invalid --net allow entry {text!r}: not a CIDR "
                                   "block") from exc
        if self.network is None:
            if host.startswith("*."):
                self.wildcard = True
                host = host[2:]
            labels = host.split(".")
            if not host or any(not lbl or len(lbl) > 63 or not _label_ok(lbl)
                               for lbl in labels):
                raise ContainError(f"invalid --net allow entry {text!r}: not a domain, "
                                   "*.domain, IP address or CIDR block")
        self.name = host

    def matches_name(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return False
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name

    def matches_address(self, addr: Address, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is None:
            return False
        return addr in self.network or addr.unmapped() in self.network


def _label_ok(label: str) -> bool:
    return all(ch.isalnum() or ch in "-_" for ch in label) and label.isascii()


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ContainError(f"invalid --net allow entry {entry!r}: port must be 1-65535")
    return int(text)


class Decision:
    __slots__ = ("allowed", "reason", "addresses")

    def __init__(self, allowed: bool, reason: str,
                 addresses: Iterable[Address] = ()) -> None:
        self.allowed = allowed
        self.reason = reason
        self.addresses = list(addresses)


class Rules:
    """The allow-list of ``--net allow=``: parse once, ask :meth:`check` per request."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.rules = [Rule(e) for e in entries if e.strip()]
        if not self.rules:
            raise ContainError("--net allow=: give at least one DOMAIN[:PORT]")

    def _address_listed(self, addr: Address, port: int) -> bool:
        return any(r.matches_address(addr, port) for r in self.rules)

    def check_name(self, host: str, port: int) -> Decision | None:
        """The decision that needs no lookup, or None when the name must be resolved."""
        host = host.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            literal: Address | None = Address(host)
        except ValueError:
            literal = None
        if literal is not None:
            if self._address_listed(literal, port):
                return Decision(True, "address listed", [literal])
            return Decision(False, "address not listed")
        if not any(r.matches_name(host, port) for r in self.rules):
            return Decision(False, "name not listed")
        return None

    def check_addresses(self, host: str, port: int,
                        found: Iterable[Address | str]) -> Decision:
        """The decision for a listed *host* that resolved to *found*."""
        host = host.lower().rstrip(".")
        ok: list[Address] = []
        refused: list[Address] = []
        for item in found:
            addr = Address(item) if isinstance(item, str) else item
            loopback = any(addr.unmapped() in net for net in _LOOPBACK)
            if is_public(addr) or self._address_listed(addr, port) or (
                    loopback and host == "localhost"):
                ok.append(addr)
            else:
                refused.append(addr)
        if ok:
            return Decision(True, "name listed", ok)
        if refused:
            return Decision(False, f"resolves to a non-public address ({refused[0]}) "
                                   "that is not listed", refused)
        return Decision(False, "name does not resolve")

    def check(self, host: str, port: int) -> Decision:
        """Decide, resolving a listed name (getaddrinfo) once: the connection goes to
        the addresses found here."""
        first = self.check_name(host, port)
        if first is not None:
            return first
        return self.check_addresses(host, port, resolve(host, port))


def resolve(host: str, port: int) -> list[Address]:
    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    out: list[Address] = []
    for info in infos:
        try:
            addr = Address(str(info[4][0]))
        except ValueError:
            continue
        if addr not in out:
            out.append(addr)
    return out


# -- serving ----------------------------------------------------------------------------
#
# A thread per connection (and one more while it relays), on the C modules only
# (_socket, _thread): the proxy process starts serving in a few milliseconds, where
# importing asyncio alone takes tens (it is on the path of the sandbox's first request).

HANDSHAKE_TIMEOUT = 60.0
_SHUT_WR, _SHUT_RDWR = 1, 2


class _Refused(Exception):
    pass


class _Conn:
    """A socket with a read buffer (what came after the request head is kept)."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise _Refused("request head too large")
            self._more()
        end = self.buf.index(marker) + len(marker)
        if end > limit:
            raise _Refused("request head too large")
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class Proxy:
    """Serves listening sockets (:meth:`serve` blocks); one decision per request."""

    def __init__(self, rules: Rules, report: Report | None = None,
                 connect_timeout: float = 10.0) -> None:
        import _thread

        self.rules = rules
        self.report = report
        self.connect_timeout = connect_timeout
        self._lock = _thread.allocate_lock()

    def _log(self, allowed: bool, proto: str, host: str, port: int, reason: str,
             address: object = None) -> None:
        if self.report is None:
            return
        event: dict[str, object] = {
            "type": "network", "action": "allow" if allowed else "deny", "protocol": proto,
            "host": host, "port": port, "reason": reason, "time": round(time.time(), 3)}
        if address is not None:
            event["address"] = str(address)
        try:
            with self._lock:
                self.report(event)
        except Exception:  # a broken reporter must not stop the proxy
            pass

    def serve(self, listeners: list[_socket.socket]) -> None:
        import _thread

        for extra in listeners[1:]:
            _thread.start_new_thread(self._accept_loop, (extra,))
        self._accept_loop(listeners[0])

    def _accept_loop(self, listener: _socket.socket) -> None:
        import _thread

        listener.settimeout(None)
        while True:
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)
                    continue
                raise
            _thread.start_new_thread(self._client, (fd,))

    def _open(self, proto: str, host: str, port: int) -> _socket.socket:
        """Decide and connect; raise _Refused (logged) when not allowed or unreachable."""
        decision = self.rules.check(host, port)
        if not decision.allowed:
            self._log(False, proto, host, port, decision.reason)
            raise _Refused(decision.reason)
        error = "no address"
        for addr in decision.addresses:
            family = _socket.AF_INET6 if addr.version == 6 else _socket.AF_INET
            up = _socket.socket(family, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            up.settimeout(self.connect_timeout)
            try:
                up.connect((str(addr), port))
            except OSError as exc:
                up.close()
                error = exc.strerror or "timed out"
                continue
            self._log(True, proto, host, port, decision.reason, address=addr)
            return up
        self._log(False, proto, host, port, f"unreachable: {error}")
        raise _Refused(f"unreachable: {error}")

    def _client(self, fd: int) -> None:
        sock = _socket.socket(fileno=fd)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT)
            conn = _Conn(sock)
            first = conn.exact(1)
            if first == b"\x05":
                self._socks5(conn)
            else:
                conn.buf = first + conn.buf
                self._http(conn)
        except (OSError, EOFError, ValueError, _Refused):
            pass
        finally:
            sock.close()

    # -- SOCKS5 (RFC 1928), no authentication, CONNECT only ----------------------------

    def _socks5(self, conn: _Conn) -> None:
        n = conn.exact(1)[0]
        methods = conn.exact(n)
        if 0 not in methods:
            return conn.send(b"\x05\xff")
        conn.send(b"\x05\x00")
        ver, cmd, _, atyp = conn.exact(4)
        if atyp == 1:
            host = _socket.inet_ntop(_socket.AF_INET, conn.exact(4))
        elif atyp == 4:
            host = _socket.inet_ntop(_socket.AF_INET6, conn.exact(16))
        elif atyp == 3:
            host = conn.exact(conn.exact(1)[0]).decode("ascii", errors="replace")
        else:
            return conn.send(b"\x05\x08\x00\x01" + bytes(6))
        port = int.from_bytes(conn.exact(2), "big")
        if ver != 5 or cmd != 1:
            self._log(False, "socks5", host, port, f"SOCKS command {cmd} not supported")
            return conn.send(b"\x05\x07\x00\x01" + bytes(6))
        try:
            up = self._open("socks5", host, port)
        except _Refused as exc:
            code = 4 if str(exc).startswith("unreachable") else 2
            return conn.send(bytes([5, code, 0, 1]) + bytes(6))
        conn.send(b"\x05\x00\x00\x01" + bytes(6))
        _relay(conn, up)

    # -- HTTP: CONNECT tunnels and absolute-URI forwarding -----------------------------

    def _http(self, conn: _Conn) -> None:
        try:
            head = conn.until(b"\r\n\r\n", MAX_HEAD)
        except _Refused as exc:
            return _reply(conn, 431, str(exc))
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _reply(conn, 400, "not an HTTP proxy request")
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _split_hostport(target, None)
            if not host or port is None:
                return _reply(conn, 400, f"CONNECT {target}: HOST:PORT expected")
            try:
                up = self._open("http-connect", host, port)
            except _Refused as exc:
                return _reply(conn, 403, _refusal(host, port, str(exc)))
            conn.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return _relay(conn, up)
        if not target.lower().startswith("http://"):
            return _reply(conn, 400, "only http:// URLs are forwarded; use CONNECT "
                                     "(HTTPS_PROXY) for https")
        rest = target[7:]
        slash = rest.find("/")
        authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        authority = authority.rpartition("@")[2]
        host, port = _split_hostport(authority, 80)
        if not host or port is None:
            return _reply(conn, 400, f"bad URL {target}")
        try:
            up = self._open("http", host, port)
        except _Refused as exc:
            return _reply(conn, 403, _refusal(host, port, str(exc)))
        out = [f"{method} {path} {version}", f"Host: {authority}"]
        for line in lines[1:]:
            name = line.split(":", 1)[0].strip().lower()
            # the Host is the URL's (the request goes to that host and no other); one
            # request per connection: a second one could name another host
            if line and name not in ("host", "proxy-connection", "proxy-authorization",
                                     "connection", "keep-alive"):
                out.append(line)
        out += ["Connection: close", "", ""]
        conn.buf = "\r\n".join(out).encode("latin-1") + conn.buf
        _relay(conn, up)


def _refusal(host: str, port: int, reason: str) -> str:
    return f"{host}:{port} is not allowed by the sandbox's network policy ({reason})"


def _split_hostport(text: str, default: int | None) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
    elif text.count(":") == 1:
        host, rest = text.split(":")[0], ":" + text.split(":")[1]
    else:
        host, rest = text, ""
    if rest.startswith(":"):
        p = rest[1:]
        return host, int(p) if p.isdigit() and 0 < int(p) < 65536 else None
    return host, default


def _reply(conn: _Conn, status: int, text: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
    body = f"contain: {text}\n".encode()
    conn.send(f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
              f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
              "Connection: close\r\n\r\n".encode() + body)


def _relay(conn: _Conn, up: _socket.socket) -> None:
    """Copy both ways until both are done: the client's side on this thread, the
    upstream's on another. A clean end half-closes the other side; an error ends both."""
    import _thread

    client = conn.sock
    done = _thread.allocate_lock()
    done.acquire()

    def pump(src: _socket.socket, dst: _socket.socket, first: bytes) -> None:
        try:
            if first:
                dst.sendall(first)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(_SHUT_WR)
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(_SHUT_RDWR)
                except OSError:
                    pass

    def upstream_side() -> None:
        try:
            pump(up, client, b"")
        finally:
            done.release()

    try:
        client.settimeout(None)
        up.settimeout(None)
        _thread.start_new_thread(upstream_side, ())
    except BaseException:
        up.close()
        raise
    try:
        pump(client, up, conn.buf)
        conn.buf = b""
        done.acquire()
    finally:
        up.close()


def serve(listeners: list[_socket.socket], rules: Rules,
          report: Report | None = None) -> None:
    """Serve until the process is killed: the proxy process of network.py, which is
    its own (small stacks for its many threads: a process-wide setting)."""
    import _thread

    _thread.stack_size(256 * 1024)
    Proxy(rules, report).serve(listeners)
