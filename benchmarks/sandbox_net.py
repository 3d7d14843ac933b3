"""Sandbox networks: the start-up of each ``--net`` mode next to bubblewrap, and what the
filtering proxy of ``--net allow`` adds to each connection.

Start-up: ``contain sandbox --net MODE -- /bin/true`` for none (own namespace, lo up),
allow (plus the proxy process), private (plus pasta) and host, interleaved round by
round with ``bwrap --unshare-all`` (its own network namespace, lo up) and bwrap sharing
the host's network, timed from spawn to exit.

Per connection: a Python client inside the sandbox makes HTTP/1.0 requests to a
server on the host's 127.0.0.1 (started here), directly (``--net host``) and through
the proxy (``--net allow=127.0.0.1:PORT`` and ``localhost:PORT``: plain-HTTP forward,
CONNECT, SOCKS5); the median per request.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import sys
import threading

from .common import (
    Result,
    Session,
    contain_argv,
    fmt_ms,
    md_table,
    rotate,
    stopwatch,
    summarize,
    timed,
)

CLIENT = r"""
import json, socket, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def once():
    if mode == "direct":
        s = socket.create_connection((host, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    elif mode == "http":
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(f"GET http://{host}:{port}/ HTTP/1.0\r\n\r\n".encode())
    elif mode == "connect":
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    else:
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(b"\x05\x01\x00")
        s.recv(2)
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode()
                  + port.to_bytes(2, "big"))
        s.recv(10)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    if not data.startswith(b"HTTP/1.0 200"):
        raise SystemExit(f"{mode}: {data[:80]!r}")
for _ in range(10):
    once()
out = []
for _ in range(n):
    t = time.perf_counter()
    once()
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")


def startup_commands(root: str, port: int) -> dict[str, list[str]]:
    contain = [*contain_argv(), "--root", root, "sandbox"]
    out = {f"contain --net {m}": [*contain, "--net", m, "--", "/bin/true"]
           for m in ("none", f"allow=localhost:{port}", "host")}
    if shutil.which("pasta"):
        out["contain --net private"] = [*contain, "--net", "private", "--", "/bin/true"]
    bwrap = shutil.which("bwrap")
    if bwrap:
        base = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                "--tmpfs", "/tmp", "--die-with-parent", "--new-session"]
        out["bwrap --unshare-all"] = [*base, "--unshare-all", "/bin/true"]
        out["bwrap --unshare-all --share-net"] = [*base, "--unshare-all", "--share-net",
                                                  "/bin/true"]
    return out


def run(session: Session) -> Result:
    result = Result("sandbox_net", "Sandbox network modes: start-up, and the proxy's cost "
                                   "per connection")
    rounds = session.each_round(default=20, quick=3)
    requests = session.each_round(default=300, quick=20)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    root = str(session.tmp / "sandbox-net-root")
    os.makedirs(root, exist_ok=True)
    cmds = startup_commands(root, port)
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    latency: dict[str, list[float]] = {}
    py = os.path.realpath(sys.executable)
    clients = {
        "direct (--net host)": ("host", "direct", "127.0.0.1"),
        "proxy, HTTP forward, listed address": (f"allow=127.0.0.1:{port}", "http",
                                                "127.0.0.1"),
        "proxy, HTTP forward, listed name": (f"allow=localhost:{port}", "http",
                                             "localhost"),
        "proxy, CONNECT": (f"allow=localhost:{port}", "connect", "localhost"),
        "proxy, SOCKS5": (f"allow=localhost:{port}", "socks", "localhost"),
    }
    try:
        with stopwatch(result):
            session.progress.start("sandbox_net", rounds * len(cmds) + len(clients))
            for r in range(rounds):
                for name in rotate(list(cmds), r):
                    c = timed(cmds[name], scratch=session.scratch, timeout=120)
                    session.progress.step()
                    if c.rc != 0:
                        result.errors.setdefault(name, c.describe())
                        continue
                    samples[name].append(c.elapsed)
            for name, (net, mode, host) in clients.items():
                c = timed([*contain_argv(), "--root", root, "sandbox", "--net", net, "--",
                           py, "-I", "-S", "-c", CLIENT, mode, host, str(port),
                           str(requests)], scratch=session.scratch, timeout=300)
                session.progress.step()
                try:
                    latency[name] = json.loads(c.out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    result.errors.setdefault(name, c.describe())
            session.progress.finish()
    finally:
        server.shutdown()
        server.server_close()
    start = {k: summarize(v) for k, v in samples.items() if v}
    per = {k: summarize(v) for k, v in latency.items() if v}
    result.data = {"rounds": rounds, "requests": requests, "unit": "seconds",
                   "startup": {"samples": samples, "summary": start},
                   "per_connection": {"samples": latency, "summary": per}}
    none = start.get("contain --net none", {}).get("median")
    rows = [[k, s["n"], f"**{fmt_ms(s['median'])}**", fmt_ms(s["p10"]), fmt_ms(s["p90"]),
             f"{s['median'] / none:.2f}x" if none else ""] for k, s in start.items()]
    text = "Start-up of `/bin/true`:\n\n" + md_table(
        ["command", "n", "median ms", "p10", "p90", "vs --net none"], rows)
    direct = per.get("direct (--net host)", {}).get("median")
    rows = [[k, s["n"], f"**{fmt_ms(s['median'])}**", fmt_ms(s["p90"]),
             f"+{fmt_ms(s['median'] - direct)}" if direct else ""] for k, s in per.items()]
    text += "\nOne HTTP request on a new connection, from inside the sandbox:\n\n" + md_table(
        ["path", "n", "median ms", "p90", "added ms"], rows)
    if result.errors:
        text += "\n" + md_table(["command", "error"], sorted(result.errors.items()))
    result.markdown = text
    result.notes.append(f"{rounds} interleaved rounds; {requests} requests per client "
                        "after 10 of warm-up")
    return result
