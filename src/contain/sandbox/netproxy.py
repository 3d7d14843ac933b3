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

Stdlib only (asyncio, imported when the proxy runs). The proxy runs outside the sandbox;
its listening socket was bound inside the sandbox's network namespace (see network.py),
so the sandbox reaches it on its own loopback and has no other way out.
"""

from __future__ import annotations

import _socket
import ipaddress
import time

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    import socket
    from collections.abc import Callable, Iterable

    Address = ipaddress.IPv4Address | ipaddress.IPv6Address
    Network = ipaddress.IPv4Network | ipaddress.IPv6Network
    Report = Callable[[dict[str, object]], None]

# not public: refused unless listed (ipaddress's is_global misses some of these, and
# counts CGNAT as neither private nor global)
_BLOCKED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "fd00:ec2::254/128",
)]

MAX_HEAD = 65536


def is_public(addr: Address) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return not any(addr in net for net in _BLOCKED if net.version == addr.version)


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
            self.network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            pass
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
        mapped = getattr(addr, "ipv4_mapped", None)
        return addr in self.network or (mapped is not None and mapped in self.network)


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
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            if self._address_listed(literal, port):
                return Decision(True, "address listed", [literal])
            return Decision(False, "address not listed")
        if not any(r.matches_name(host, port) for r in self.rules):
            return Decision(False, "name not listed")
        return None

    def check_addresses(self, host: str, port: int, found: list[Address]) -> Decision:
        """The decision for a listed *host* that resolved to *found*."""
        host = host.lower().rstrip(".")
        ok: list[Address] = []
        refused: list[Address] = []
        for addr in found:
            if is_public(addr) or self._address_listed(addr, port) or (
                    addr.is_loopback and host == "localhost"):
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
        """Blocking form of the two steps (resolves with getaddrinfo)."""
        first = self.check_name(host, port)
        if first is not None:
            return first
        return self.check_addresses(host, port, resolve(host, port))


def resolve(host: str, port: int) -> list[Address]:
    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return _unique(str(info[4][0]) for info in infos)


def _unique(texts: Iterable[str]) -> list[Address]:
    out: list[Address] = []
    for text in texts:
        addr = ipaddress.ip_address(text.split("%")[0])
        if addr not in out:
            out.append(addr)
    return out


# -- serving ----------------------------------------------------------------------------

class _Refused(Exception):
    pass


class Proxy:
    """Serves the listening sockets given to :meth:`serve` until cancelled."""

    def __init__(self, rules: Rules, report: Report | None = None,
                 connect_timeout: float = 10.0) -> None:
        self.rules = rules
        self.report = report
        self.connect_timeout = connect_timeout

    def _log(self, allowed: bool, proto: str, host: str, port: int, reason: str,
             peer: object = None, address: object = None) -> None:
        if self.report is None:
            return
        event: dict[str, object] = {
            "type": "network", "action": "allow" if allowed else "deny", "protocol": proto,
            "host": host, "port": port, "reason": reason, "time": round(time.time(), 3)}
        if address is not None:
            event["address"] = str(address)
        try:
            self.report(event)
        except Exception:  # a broken reporter must not stop the proxy
            pass

    async def serve(self, listeners: list[socket.socket]) -> None:
        import asyncio

        servers = [await asyncio.start_server(self._client, sock=s) for s in listeners]
        try:
            await asyncio.gather(*(s.serve_forever() for s in servers))
        finally:
            for s in servers:
                s.close()

    async def _open(self, proto: str, host: str, port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Decide and connect; raise _Refused (logged) when not allowed or unreachable."""
        import asyncio

        decision = self.rules.check_name(host, port)
        if decision is None:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=_socket.SOCK_STREAM)
                found = _unique(str(info[4][0]) for info in infos)
            except (OSError, UnicodeError):
                found = []
            decision = self.rules.check_addresses(host, port, found)
        if not decision.allowed:
            self._log(False, proto, host, port, decision.reason)
            raise _Refused(decision.reason)
        error = "no address"
        for addr in decision.addresses:
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_connection(str(addr), port), self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                error = getattr(exc, "strerror", None) or "timed out"
                continue
            self._log(True, proto, host, port, decision.reason, address=addr)
            return conn
        self._log(False, proto, host, port, f"unreachable: {error}")
        raise _Refused(f"unreachable: {error}")

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x05":
                await self._socks5(reader, writer)
            else:
                await self._http(first, reader, writer)
        except (OSError, EOFError, ValueError, _Refused):
            pass
        except Exception:  # asyncio.IncompleteReadError, LimitOverrunError, ...
            pass
        finally:
            writer.close()

    # -- SOCKS5 (RFC 1928), no authentication, CONNECT only ----------------------------

    async def _socks5(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        n = (await reader.readexactly(1))[0]
        methods = await reader.readexactly(n)
        if 0 not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(b"\x05\x00")
        ver, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = _socket.inet_ntop(_socket.AF_INET, await reader.readexactly(4))
        elif atyp == 4:
            host = _socket.inet_ntop(_socket.AF_INET6, await reader.readexactly(16))
        elif atyp == 3:
            size = (await reader.readexactly(1))[0]
            host = (await reader.readexactly(size)).decode("ascii", errors="replace")
        else:
            writer.write(b"\x05\x08\x00\x01" + bytes(6))
            return
        port = int.from_bytes(await reader.readexactly(2), "big")
        if ver != 5 or cmd != 1:
            self._log(False, "socks5", host, port, f"SOCKS command {cmd} not supported")
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            return
        try:
            up_r, up_w = await self._open("socks5", host, port)
        except _Refused as exc:
            code = 4 if str(exc).startswith("unreachable") else 2
            writer.write(bytes([5, code, 0, 1]) + bytes(6))
            return
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await _relay(reader, writer, up_r, up_w)

    # -- HTTP: CONNECT tunnels and absolute-URI forwarding -----------------------------

    async def _http(self, first: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        head = first + await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return await _reply(writer, 431, "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return await _reply(writer, 400, "not an HTTP proxy request")
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _split_hostport(target, None)
            if not host or port is None:
                return await _reply(writer, 400, f"CONNECT {target}: HOST:PORT expected")
            try:
                up_r, up_w = await self._open("http-connect", host, port)
            except _Refused as exc:
                return await _reply(writer, 403, _refusal(host, port, str(exc)))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return await _relay(reader, writer, up_r, up_w)
        if not target.lower().startswith("http://"):
            return await _reply(writer, 400, "only http:// URLs are forwarded; use "
                                "CONNECT (HTTPS_PROXY) for https")
        rest = target[7:]
        slash = rest.find("/")
        authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        host, port = _split_hostport(authority.rpartition("@")[2], 80)
        if not host or port is None:
            return await _reply(writer, 400, f"bad URL {target}")
        try:
            up_r, up_w = await self._open("http", host, port)
        except _Refused as exc:
            return await _reply(writer, 403, _refusal(host, port, str(exc)))
        out = [f"{method} {path} {version}"]
        for line in lines[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if line and name not in ("proxy-connection", "proxy-authorization",
                                     "connection", "keep-alive"):
                out.append(line)
        # one request per connection: a second one could name another host
        out += ["Connection: close", "", ""]
        up_w.write("\r\n".join(out).encode("latin-1"))
        await _relay(reader, writer, up_r, up_w)


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


async def _reply(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
    body = f"contain: {text}\n".encode()
    writer.write(f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
                 f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    try:
        await writer.drain()
    except OSError:
        pass


async def _relay(c_r: asyncio.StreamReader, c_w: asyncio.StreamWriter,
                 u_r: asyncio.StreamReader, u_w: asyncio.StreamWriter) -> None:
    import asyncio

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except OSError:
            pass

    try:
        await c_w.drain()
        await asyncio.gather(pipe(c_r, u_w), pipe(u_r, c_w))
    finally:
        u_w.close()


def serve(listeners: list[socket.socket], rules: Rules,
          report: Report | None = None) -> None:
    """Serve until the process is killed (the proxy process of network.py)."""
    import asyncio

    asyncio.run(Proxy(rules, report).serve(listeners))
