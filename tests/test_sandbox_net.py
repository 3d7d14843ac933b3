"""The sandbox's network policy: ``--net none|host|allow=...|private`` and ``--publish``.

Only loopback and network namespaces the tests (or the sandbox) make are used: the test
HTTP server listens on the host's 127.0.0.1, and the sandbox reaches it, or not, from its
own namespace. No packet is sent to any other address outside a namespace we made.
"""

from __future__ import annotations

import http.server
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import contain_cmd, run_contain
from contain.errors import ContainError
from contain.sandbox.netproxy import Address, Network, Rules, is_public
from contain.sandbox.network import PROXY_PORT, parse_net, parse_publish, start_network
from test_rootless import (
    User,
    user,  # noqa: F401 (a fixture: a real unprivileged user)
)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def sh(root: Path, script: str, *opts: str, timeout: float = 60
       ) -> subprocess.CompletedProcess[str]:
    return run_contain(root, "sandbox", *opts, "--", "/bin/sh", "-c", script, timeout=timeout)


class Server:
    """An HTTP server on the host's 127.0.0.1 that counts the requests it answers."""

    def __init__(self) -> None:
        hits: list[str] = []
        hosts: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                hosts.append(self.headers.get("Host", ""))
                body = b"hello from the host\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.hosts = hosts
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


# curl inside the sandbox: the proxy variables apply to localhost too (NO_PROXY, set by
# the sandbox for the sandbox's own loopback, is emptied) and exit codes are kept
CURL = "curl -sS --max-time 20 -o /dev/null -w '%{http_code}\\n'"
NOPROXY_OFF = ("--env", "NO_PROXY=", "--env", "no_proxy=")


# -- the rules (no network at all) -------------------------------------------------------

def test_rules_names_wildcards_and_ports() -> None:
    rules = Rules(["pypi.org", "*.pythonhosted.org:443", "Example.COM.", "10.1.0.0/16:8080",
                   "[::1]:9000", "localhost:8000"])
    assert rules.check_name("pypi.org", 1234) is None  # listed: resolve next
    assert rules.check_name("PYPI.ORG.", 443) is None
    assert rules.check_name("files.pythonhosted.org", 443) is None
    assert rules.check_name("a.b.pythonhosted.org", 443) is None
    assert rules.check_name("example.com", 80) is None
    for host, port in (("pythonhosted.org", 443), ("files.pythonhosted.org", 80),
                       ("evilpypi.org", 443), ("pypi.org.evil.net", 443),
                       ("localhost", 8001), ("example.org", 80)):
        d = rules.check_name(host, port)
        assert d is not None and not d.allowed, (host, port)
    # IP literals: allowed when listed (an address or a block), whatever the range
    d = rules.check_name("10.1.2.3", 8080)
    assert d is not None and d.allowed
    for host, port in (("10.1.2.3", 80), ("10.2.0.1", 8080), ("127.0.0.1", 8000),
                       ("169.254.169.254", 80)):
        d = rules.check_name(host, port)
        assert d is not None and not d.allowed, (host, port)
    d = rules.check_name("[::1]", 9000)
    assert d is not None and d.allowed


def test_rules_refuse_non_public_addresses_unless_listed() -> None:
    rules = Rules(["*.example.org", "localhost", "intranet.example:80", "10.9.9.9"])
    ip = Address
    for addr in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1",
                 "169.254.169.254", "169.254.1.1", "0.0.0.0", "::1", "fe80::1", "fd00::1",
                 "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1"):
        assert not is_public(ip(addr)), addr
        d = rules.check_addresses("www.example.org", 443, [ip(addr)])
        assert not d.allowed and "non-public" in d.reason, addr
    assert is_public(ip("93.184.215.14")) and is_public(ip("2606:4700::1"))
    d = rules.check_addresses("www.example.org", 443, [ip("93.184.215.14")])
    assert d.allowed and d.addresses == [ip("93.184.215.14")]
    # only the public one of a mixed answer is used
    d = rules.check_addresses("www.example.org", 443, [ip("10.0.0.1"), ip("93.184.215.14")])
    assert d.allowed and d.addresses == [ip("93.184.215.14")]
    # localhost, listed by that name, may be loopback; another name may not
    assert rules.check_addresses("localhost", 80, [ip("127.0.0.1")]).allowed
    assert not rules.check_addresses("a.example.org", 80, [ip("127.0.0.1")]).allowed
    # a listed address makes a name that resolves to it allowed
    assert rules.check_addresses("intranet.example", 80, [ip("10.9.9.9")]).allowed
    assert not rules.check_addresses("intranet.example", 80, [ip("10.9.9.8")]).allowed
    assert not rules.check_addresses("www.example.org", 443, []).allowed


def test_address_blocks_agree_with_ipaddress() -> None:
    """The proxy's own small address arithmetic against the stdlib's, at the edges."""
    for block in ("10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
                  "127.0.0.0/8", "192.168.1.128/25", "0.0.0.0/0", "1.2.3.4/32",
                  "fc00::/7", "fe80::/10", "::1/128", "::ffff:0:0/96", "2001:db8::/32",
                  "::/0", "fd00:ec2::254/128"):
        ref = ipaddress.ip_network(block)
        net = Network(block)
        first, last = int(ref.network_address), int(ref.broadcast_address)
        top = 2 ** ref.max_prefixlen - 1
        for value in {first, last, max(first - 1, 0), min(last + 1, top), (first + last) // 2}:
            addr = ipaddress.ip_address(value) if ref.version == 4 else \
                ipaddress.IPv6Address(value)
            assert (Address(str(addr)) in net) == (addr in ref), (block, str(addr))
    assert Address("::ffff:10.1.2.3").unmapped() == Address("10.1.2.3")
    with pytest.raises(ValueError):
        Address("127.1")  # only the full forms are literals (a resolver may differ)


@pytest.mark.parametrize("text", ["", "allow=", "allow=,", "allow=exa mple.org",
                                  "allow=example.org:0", "allow=example.org:http",
                                  "allow=[::1", "allow=a..b", "bogus", "none=1",
                                  "allow=*.", "host,none"])
def test_bad_net_values_are_contain_errors(text: str, state_root: Path) -> None:
    with pytest.raises(ContainError):
        parse_net(text)
    proc = sh(state_root, "true", "--net", text)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "--net" in proc.stderr, proc.stderr


def test_bad_publish_is_refused(state_root: Path) -> None:
    assert parse_publish("8080:80") == (8080, 80)
    assert parse_publish("9000") == (9000, 9000)
    for text in ("", "0:80", "a:b", "1:2:3", "70000:80"):
        with pytest.raises(ContainError):
            parse_publish(text)
    for opts in (("--publish", "8080:80"), ("--net", "allow=localhost", "-p", "8080:80"),
                 ("--net", "private", "-p", "x")):
        proc = sh(state_root, "true", *opts)
        assert proc.returncode != 0 and "--publish" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_bad_input_after_the_network_is_made_leaves_nothing(state_root: Path,
                                                            tmp_path: Path) -> None:
    """A bad option with any network mode: a clear error, and no namespace, proxy
    process or fd is left (the leak check sees processes and fds)."""
    import contain

    for net in ("allow=localhost:1", "none", "private"):
        if net == "private" and shutil.which("pasta") is None:
            continue
        with pytest.raises(ContainError, match=r"(?i)bind"):
            contain.run(["/bin/true"], root=str(state_root), net=net,
                        binds=[f"{tmp_path}/missing:/x"])
        with pytest.raises(ContainError, match="pids"):
            contain.run(["/bin/true"], root=str(state_root), net=net, pids=-1)


# -- --net none and host -----------------------------------------------------------------

def test_net_none_has_only_loopback_and_it_is_up(state_root: Path) -> None:
    # the listener's stdin stays open: a background job's is /dev/null, and busybox nc
    # that sees its stdin end may exit before it has read what the client sent
    out = ok(sh(state_root, "ls /sys/class/net; cat /sys/class/net/lo/flags; "
                "(sleep 30 | busybox nc -l -p 7000 > /tmp/got) & "
                "for i in $(seq 100); do echo served | busybox nc 127.0.0.1 7000 "
                "2>/dev/null && break; sleep 0.1; done; "
                "for i in $(seq 100); do [ -s /tmp/got ] && break; sleep 0.1; done; "
                "cat /tmp/got"))
    lines = out.split()
    assert lines[0] == "lo" and int(lines[1], 16) & 1, out  # IFF_UP
    assert "served" in lines
    # the default is none
    assert ok(sh(state_root, "ls /sys/class/net", "--net", "none")).split() == ["lo"]


def test_net_none_reaches_nothing(state_root: Path, server: Server) -> None:
    proc = sh(state_root, f"curl -sS --max-time 5 http://127.0.0.1:{server.port}/")
    assert proc.returncode != 0 and not server.hits


def test_net_host_is_the_hosts_network(state_root: Path, server: Server) -> None:
    out = ok(sh(state_root, f"curl -sS --max-time 20 http://127.0.0.1:{server.port}/host",
                "--net", "host"))
    assert "hello from the host" in out and server.hits == ["/host"]


# -- --net allow ---------------------------------------------------------------------------

def test_allow_reaches_a_listed_server_by_each_protocol(state_root: Path,
                                                        server: Server) -> None:
    p = server.port
    script = (f"env | grep -i _proxy | sort; "
              f"{CURL} http://localhost:{p}/http; "                      # forward proxy
              f"{CURL} -p http://localhost:{p}/connect; "               # CONNECT tunnel
              f"{CURL} -x socks5h://127.0.0.1:{PROXY_PORT} http://localhost:{p}/socks")
    out = ok(sh(state_root, script, "--net", f"allow=localhost:{p}", *NOPROXY_OFF))
    assert out.splitlines()[-3:] == ["200", "200", "200"], out
    assert sorted(server.hits) == ["/connect", "/http", "/socks"]
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    proxy = f"http://127.0.0.1:{PROXY_PORT}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == proxy
    assert env["ALL_PROXY"] == env["all_proxy"] == f"socks5h://127.0.0.1:{PROXY_PORT}"


def test_allow_forwards_to_the_urls_host_only(state_root: Path, server: Server) -> None:
    """A plain-HTTP request goes to the URL's host with that Host header (not one the
    client chose to reach another site behind the same address)."""
    p = server.port
    out = ok(sh(state_root, f"{CURL} -H 'Host: other.example' http://localhost:{p}/h",
                "--net", f"allow=localhost:{p}", *NOPROXY_OFF))
    assert out.strip() == "200" and server.hosts == [f"localhost:{p}"]


def test_allow_refuses_what_is_not_listed(state_root: Path, server: Server) -> None:
    p = server.port
    # another port of a listed name, an unlisted name, an unlisted address: refused by the
    # proxy without a lookup or a connection
    script = (f"{CURL} http://localhost:{p + 1}/; "
              f"{CURL} http://example.org:{p}/; "
              f"{CURL} http://127.0.0.1:{p}/; "
              f"{CURL} -p http://example.org:{p}/; "
              f"{CURL} -x socks5h://127.0.0.1:{PROXY_PORT} http://example.org:{p}/; "
              f"curl -sS -x socks5h://127.0.0.1:{PROXY_PORT} http://example.org:{p}/ "
              "2>&1; "
              f"curl -sS http://example.org:{p}/ 2>&1")
    out = sh(state_root, script, "--net", f"allow=localhost:{p}", *NOPROXY_OFF).stdout
    lines = out.splitlines()
    assert lines[:3] == ["403", "403", "403"], out
    assert lines[3] in ("000", "403") and lines[4] == "000", out
    assert "not allowed by the sandbox's network policy" in out
    assert "name not listed" in out
    assert server.hits == []


def test_allow_refuses_a_name_that_resolves_to_a_private_address(state_root: Path,
                                                                 server: Server) -> None:
    name = socket.gethostname()
    found = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if not found or any(ipaddress.ip_address(a.split("%")[0]).is_global for a in found):
        pytest.skip(f"{name} does not resolve to loopback/private addresses only here")
    p = server.port
    url = f"http://{name}:{p}/"
    out = sh(state_root, f"curl -sS {url}", "--net", f"allow={name}:{p}", *NOPROXY_OFF)
    assert "non-public address" in out.stdout and server.hits == [], out
    # listed as well by address, it is allowed
    listed = ",".join(f"{a}:{p}" if ":" not in a else f"[{a}]:{p}" for a in found)
    out = sh(state_root, f"{CURL} {url}", "--net", f"allow={name}:{p},{listed}",
             *NOPROXY_OFF)
    assert out.stdout.strip() == "200" and server.hits == ["/"], out


def test_programs_ignoring_the_proxy_get_nothing(state_root: Path, server: Server) -> None:
    """Fail closed: no route but the proxy. The host's server is on 127.0.0.1, which in
    the sandbox is its own loopback; every other address is unreachable."""
    p = server.port
    # (not busybox wget: Debian's static build crashes on a refused connection)
    script = (f"curl -sS --noproxy '*' --max-time 5 http://localhost:{p}/ && echo reached; "
              f"busybox nc -w 3 127.0.0.1 {p} </dev/null && echo reached; "
              # the host's own address: no route in the sandbox (nothing leaves it)
              f"busybox nc -w 3 192.0.2.2 {p} </dev/null && echo reached; "
              "ip -o route; ls /sys/class/net; echo done")
    out = ok(sh(state_root, script, "--net", f"allow=localhost:{p}"))
    assert "reached" not in out and out.split()[-2:] == ["lo", "done"], out
    assert server.hits == []
    # and no descriptor of the runtime's (namespaces, listener, log) reached it
    for opts in ((), ("--userns",)):
        fds = ok(sh(state_root, "ls /proc/self/fd", *opts, "--net", f"allow=localhost:{p}"))
        assert fds.split() == ["0", "1", "2", "3"], fds  # (3: ls's own directory)


def test_allow_reports_every_decision(state_root: Path, server: Server,
                                      tmp_path: Path) -> None:
    """Every decision of the proxy reaches the sandbox's report: refusals as violations
    (on the result and in the JSON lines), allowed connections as events."""
    import json

    import contain

    p = server.port
    report = tmp_path / "report.jsonl"
    r = contain.run(
        ["/bin/sh", "-c", f"{CURL} http://localhost:{p}/a; {CURL} http://example.org/b; "
                          f"{CURL} -p http://localhost:{p + 1}/c; true"],
        root=str(state_root), capture_output=True, net=f"allow=localhost:{p}",
        env=["NO_PROXY=", "no_proxy="], report=str(report))
    assert r.returncode == 0, r.stderr
    assert r.stdout is not None and r.stdout.split()[:2] == [b"200", b"403"], r.stdout
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    proxy = [e for e in lines if e["source"] == "proxy"]
    assert [(e["kind"], e.get("target")) for e in proxy] == [
        ("event", f"localhost:{p}"), ("violation", "example.org:80"),
        ("violation", f"localhost:{p + 1}")], proxy
    assert proxy[1]["reason"] == "name not listed"
    assert [v["target"] for v in r.violations if v["source"] == "proxy"] == [
        "example.org:80", f"localhost:{p + 1}"]


def test_a_full_decision_log_is_reported_as_such(state_root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the proxy's log limit the report says the rest went unreported (a
    "log-full" event), not that some connection to ":" was allowed."""
    import json

    import contain
    import contain.sandbox.network as network

    monkeypatch.setattr(network, "LOG_LIMIT", 1500)
    report = tmp_path / "report.jsonl"
    tries = "; ".join(f"{CURL} http://example.org/{i}" for i in range(15))
    r = contain.run(["/bin/sh", "-c", tries + "; true"], root=str(state_root),
                    capture_output=True, net="allow=localhost:1", report=str(report),
                    env=["NO_PROXY=", "no_proxy="])
    assert r.returncode == 0, r.stderr
    proxy = [json.loads(x) for x in report.read_text().splitlines()]
    proxy = [e for e in proxy if e["source"] == "proxy"]
    assert proxy[-1]["event"] == "log-full" and "not reported" in proxy[-1]["reason"], proxy
    assert all(e["kind"] == "violation" for e in proxy[:-1]) and len(proxy) < 15, proxy


def test_allow_with_a_user_namespace(state_root: Path, server: Server) -> None:
    """With --userns the network namespace is made in a user namespace the sandbox
    joins (its root owns nothing of the host's); the proxy serves it the same."""
    p = server.port
    out = ok(sh(state_root, f"cat /proc/self/uid_map; ls /sys/class/net; "
                f"{CURL} http://localhost:{p}/u; {CURL} http://example.org/",
                "--userns", "--net", f"allow=localhost:{p}", *NOPROXY_OFF))
    assert out.split()[:3] == ["0", "0", "1"] and out.split()[-3:] == ["lo", "200", "403"]
    assert server.hits == ["/u"]


@pytest.mark.parametrize("mode", ["allow", "private"])
def test_the_helpers_die_with_the_runtime(mode: str, server: Server) -> None:
    """A runtime killed with SIGKILL takes its proxy process (allow) or pasta (private)
    with it (PDEATHSIG)."""
    if mode == "private" and shutil.which("pasta") is None:
        pytest.skip("pasta (Debian's passt) is not installed")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            h = start_network(mode, [f"localhost:{server.port}"] if mode == "allow" else [])
            os.write(w, str(h._pids[0]).encode())
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(w)
    proxy = int(os.read(r, 64))
    os.close(r)
    pidfd = os.pidfd_open(proxy)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        import select

        assert select.select([pidfd], [], [], 10)[0], f"the {mode} helper outlived the runtime"
    finally:
        os.close(pidfd)
    try:  # reparented to us (the test process is a subreaper): reap it
        os.waitpid(proxy, 0)
    except ChildProcessError:
        pass


def test_start_network_handle(server: Server) -> None:
    """The entry point on its own: a namespace path, the proxy variables, close()."""
    with start_network("allow", [f"localhost:{server.port}"]) as h:
        assert h.namespace_path is not None and h.userns_path is None
        assert os.readlink(h.namespace_path).startswith("net:[")
        assert os.readlink(h.namespace_path) != os.readlink("/proc/self/ns/net")
        assert f"HTTPS_PROXY=http://127.0.0.1:{PROXY_PORT}" in h.env
        proxy = h._pids[0]
    assert not os.path.exists(f"/proc/{proxy}")
    with start_network("host") as h:
        assert h.namespace_path is None and h.env == []
    with start_network("none") as h:  # (the sandbox makes it: its init brings lo up)
        assert h.namespace_path is None and h.env == [] and h._pids == []


def _connect_in(netns: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:*port* of the network namespace *netns* (the
    socket is made there, from this thread, which then comes back)."""
    from contain.linux import consts as c
    from contain.linux.syscalls import setns

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target, c.CLONE_NEWNET)
        try:
            s = socket.socket()
        finally:
            setns(home, c.CLONE_NEWNET)
    finally:
        os.close(home)
        os.close(target)
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    return s


def _exchange(netns: str, data: bytes) -> bytes:
    with _connect_in(netns, PROXY_PORT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_malformed_requests_are_answered_and_the_proxy_goes_on(server: Server) -> None:
    p = server.port
    events: list[dict[str, object]] = []
    with start_network("allow", [f"localhost:{p}"], report=events.append) as h:
        assert h.namespace_path is not None
        ns = h.namespace_path
        assert _exchange(ns, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _exchange(ns, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 400")  # not a proxy request
        assert _exchange(ns, b"GET https://localhost/ HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 400")  # https goes by CONNECT
        assert _exchange(ns, b"CONNECT localhost HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 400")  # no port
        big = b"GET http://localhost/ HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
        assert _exchange(ns, big).startswith(b"HTTP/1.1 431")
        assert _exchange(ns, b"\x05\x01\x02") == b"\x05\xff"  # no acceptable method
        # SOCKS5 BIND (2) and an unknown address type are refused
        assert _exchange(ns, b"\x05\x01\x00\x05\x02\x00\x01" + bytes(6))[2:4] == b"\x05\x07"
        assert _exchange(ns, b"\x05\x01\x00\x05\x01\x00\x09")[2:4] == b"\x05\x08"
        assert _exchange(ns, b"") == b"" and _exchange(ns, b"\x05") == b""
        # and it still serves, the request's body included
        body = _exchange(ns, f"GET http://localhost:{p}/after HTTP/1.0\r\n\r\n".encode())
        assert body.startswith(b"HTTP/1.0 200") and server.hits == ["/after"], body
    assert [e["action"] for e in events] == ["deny", "allow"], events


def test_the_decision_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decisions wait in memory until drain()/close(): past the limit they stop, with
    one line that says so; drain() passes them on while the sandbox runs."""
    import contain.sandbox.network as network

    monkeypatch.setattr(network, "LOG_LIMIT", 3000)
    events: list[dict[str, object]] = []
    with start_network("allow", ["localhost:1"], report=events.append) as h:
        assert h.namespace_path is not None
        for i in range(40):
            with _connect_in(h.namespace_path, PROXY_PORT) as s:
                s.sendall(f"GET http://example.org/{i} HTTP/1.0\r\n\r\n".encode())
                assert s.recv(100).startswith(b"HTTP/1.1 403")
            if i == 0:  # (the proxy logs a decision before it answers)
                h.drain()
                assert len(events) == 1 and events[0]["host"] == "example.org"
    assert 5 < len(events) < 40 and all(e["action"] == "deny" for e in events[:-1])
    assert events[-1]["action"] == "log-full", events[-1]
    # without a reader nothing is logged at all
    with start_network("allow", ["localhost:1"]) as h:
        assert h._log_fd == -1


def test_the_callers_thread_keeps_its_namespace_also_in_a_user_namespace() -> None:
    """Root inside a user namespace (contain nested in a rootless container) may make a
    network namespace but not setns back to the one it came from: the namespace is made
    by a short-lived thread, and the caller stays where it was."""
    import sys

    code = (f"import os, sys; sys.path.insert(0, {str(Path(__file__).parent.parent / 'src')!r});"
            "from contain.sandbox.network import start_network;"
            "before = os.readlink('/proc/thread-self/ns/net');"
            "h = start_network('allow', ['localhost:1']);"
            "made = os.readlink(h.namespace_path);"
            "print(before == os.readlink('/proc/thread-self/ns/net'), made != before);"
            "h.close()")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-I",
                           "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"], proc.stdout


# -- --net private -------------------------------------------------------------------------

needs_pasta = pytest.mark.skipif(shutil.which("pasta") is None,
                                 reason="pasta (Debian's passt) is not installed")


def _listening(port: int) -> set[str]:
    """The host addresses with a TCP socket listening on *port* (from /proc/net)."""
    out = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/net/{name}") as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, _, hexport = local.partition(":")
                if state == "0A" and int(hexport, 16) == port:
                    raw = bytes.fromhex(addr)
                    # /proc/net shows each 32-bit word in host (little-endian) order
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    out.add(socket.inet_ntop(family, raw))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_pasta
def test_private_publish_reaches_a_server_in_the_sandbox(state_root: Path,
                                                         server: Server) -> None:
    host_port = _free_port()
    script = (  # the host's loopback is not the sandbox's: its server is not reachable
        f"curl -sS --max-time 3 http://127.0.0.1:{server.port}/ && echo reached-host;"
        "trap 'exit 0' TERM; mkdir /tmp/www; echo inside > /tmp/www/index.html; "
        "busybox httpd -f -p 127.0.0.1:8000 -h /tmp/www & wait")
    cmd = [*contain_cmd(), "--root", str(state_root), "sandbox", "--net", "private",
           "--publish", f"{host_port}:8000", "--", "/bin/sh", "-c", script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", host_port), timeout=5) as c:
                    c.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := c.recv(4096):
                        data += chunk
                if b"inside" in data:
                    body = data
            except OSError:
                pass
            if body is None:
                time.sleep(0.1)
        assert body is not None, proc.stderr.read() if proc.poll() is not None else ""
        # the host side listens on the host's 127.0.0.1 only (read, not probed)
        assert _listening(host_port) == {"127.0.0.1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert "reached-host" not in out and server.hits == [], (out, err)
    # the published port is on the host's loopback only, and gone with the sandbox
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", host_port), timeout=2).close()


@needs_pasta
def test_private_has_a_configured_interface(state_root: Path) -> None:
    out = ok(sh(state_root, "ls /sys/class/net; ip -o route", "--net", "private"))
    assert len(out.split()) > 1 and "lo" in out.split()
    assert "default" in out, out


# -- an unprivileged caller ----------------------------------------------------------------


def test_rootless_allow_and_none(user: User, server: Server) -> None:  # noqa: F811
    """An ordinary user: the namespaces are made in a user namespace of the caller's,
    and the proxy (the caller's own process) serves the sandbox the same way."""
    p = server.port
    proc = user.contain("sandbox", "--userns", "--net", f"allow=localhost:{p}",
                        *NOPROXY_OFF, "--", "/bin/sh", "-c",
                        f"ls /sys/class/net; {CURL} http://localhost:{p}/r; "
                        f"{CURL} http://example.org/; "
                        f"curl -sS --noproxy '*' --max-time 5 http://localhost:{p}/ "
                        "&& echo reached; true")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lo", "200", "403"], proc.stdout + proc.stderr
    assert server.hits == ["/r"]
    proc = user.contain("sandbox", "--userns", "--", "/bin/sh", "-c",
                        "ls /sys/class/net; cat /sys/class/net/lo/flags")
    assert proc.returncode == 0 and proc.stdout.split() == ["lo", "0x9"], proc.stderr


@needs_pasta
def test_rootless_private(user: User) -> None:  # noqa: F811
    proc = user.contain("sandbox", "--userns", "--net", "private", "--", "/bin/sh", "-c",
                        "ls /sys/class/net; ip -o route")
    assert proc.returncode == 0, proc.stderr
    assert "lo" in proc.stdout.split() and "default" in proc.stdout, proc.stdout


def test_api_net_allow(state_root: Path, server: Server) -> None:
    import contain

    p = server.port
    r = contain.run(["/bin/sh", "-c", f"{CURL} http://localhost:{p}/api; "
                                      f"{CURL} http://example.org/"],
                    net=f"allow=localhost:{p}", env=["NO_PROXY=", "no_proxy="],
                    capture_output=True, root=str(state_root))
    assert r.returncode == 0 and r.stdout is not None
    assert r.stdout.split() == [b"200", b"403"] and server.hits == ["/api"]
    with pytest.raises(ContainError, match="--publish"):
        contain.run(["/bin/true"], publish=["8080:80"], root=str(state_root))
