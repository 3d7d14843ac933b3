"""The network of a sandbox: ``--net none|host|allow=DOMAIN[:PORT],...|private``.

:func:`start_network` makes the sandbox's network namespace (allow, private) before
the sandbox is created; the sandbox joins it by path (``NetworkHandle.namespace_path``, and
``userns_path`` when the namespace had to be made inside a user namespace: an
unprivileged caller, or a sandbox asked to use one).

- ``none``: a namespace of its own with only the loopback interface, up (made by the
  sandbox's init, which brings lo up: nothing to make here, ``namespace_path`` is None).
- ``host``: the host's network (no namespace made).
- ``allow=...``: as ``none``, plus the filtering proxy of netproxy.py on the sandbox's
  own 127.0.0.1:3128. Its listening socket is made inside the new namespace (a socket
  belongs to the namespace it was created in) and served by a small process forked from
  the runtime, outside the sandbox: the sandbox can reach nothing else. The proxy process
  dies with the runtime (PR_SET_PDEATHSIG) and with ``close()``. Its decisions reach
  *report* as dicts (on ``drain()`` and ``close()``).
- ``private``: a full user-mode network by pasta (Debian's ``passt``) in the namespace;
  ``--publish HOST_PORT:SANDBOX_PORT`` forwards the host's 127.0.0.1:HOST_PORT to the
  sandbox's SANDBOX_PORT, and nothing else of the host's is reachable (no forwarding
  from the namespace to the host, no gateway mapping to the host's loopback).
"""

from __future__ import annotations

import _socket
import os
import sys

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Report = Callable[[dict[str, object]], None]

PROXY_PORT = 3128
LOG_LIMIT = 32 << 20  # bytes of proxy decisions kept until drain()/close() reads them
MODES = ("none", "host", "allow", "private")


def parse_net(text: str) -> tuple[str, list[str]]:
    """``none`` | ``host`` | ``private`` | ``allow=A,B,...`` -> (mode, allow entries)."""
    mode, sep, rest = text.partition("=")
    mode = mode.strip()
    if mode == "allow":
        entries = [e.strip() for e in rest.split(",") if e.strip()]
        if not entries:
            raise ContainError("invalid --net allow=: give DOMAIN[:PORT],... "
                               "(e.g. allow=pypi.org,*.pythonhosted.org:443)")
        from contain.sandbox.netproxy import Rules

        Rules(entries)  # check every entry now
        return mode, entries
    if sep or mode not in MODES:
        raise ContainError(f"invalid --net {text!r}: none, host, private or "
                           "allow=DOMAIN[:PORT],...")
    return mode, []


def parse_publish(text: str) -> tuple[int, int]:
    """``HOST_PORT:SANDBOX_PORT`` or ``PORT`` (the same on both sides)."""
    host, sep, inner = text.partition(":")
    if not sep:
        inner = host
    ports = []
    for p in (host, inner):
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise ContainError(f"invalid --publish {text!r}: HOST_PORT:SANDBOX_PORT "
                               "(1-65535; the host side listens on 127.0.0.1 only)")
        ports.append(int(p))
    return ports[0], ports[1]


class NetworkHandle:
    """What :func:`start_network` made; ``close()`` undoes all of it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.namespace_path: str | None = None
        self.userns_path: str | None = None
        self.env: list[str] = []
        self.report: Report | None = None
        self._fds: list[int] = []
        self._pids: list[int] = []
        self._log_fd = -1
        self._log_off = 0
        self._partial = b""

    def drain(self) -> None:
        """Pass the proxy's decisions made since the last call to *report*."""
        if self._log_fd < 0:
            return
        from contain.jsonio import loads

        while True:
            data = os.pread(self._log_fd, 65536, self._log_off)
            if not data:
                break
            self._log_off += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                try:
                    event = loads(line)
                except ValueError:
                    continue
                if self.report is not None:
                    self.report(event)

    def close(self) -> None:
        """Stop the proxy and pasta, pass the last decisions on, release the
        namespaces (they end with the last process in them). Idempotent."""
        for pid in self._pids:
            try:
                os.kill(pid, 9)  # SIGKILL (the signal module would import enum)
            except ProcessLookupError:
                pass
            _reap(pid)
        self._pids = []
        try:
            self.drain()
        finally:
            for fd in self._fds + ([self._log_fd] if self._log_fd >= 0 else []):
                os.close(fd)
            self._fds = []
            self._log_fd = -1

    def __enter__(self) -> NetworkHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keep(self, fd: int) -> str:
        self._fds.append(fd)
        return f"/proc/{os.getpid()}/fd/{fd}"


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def start_network(mode: str, allow: Sequence[str] = (), publish: Sequence[str] = (),
                  report: Report | None = None, *,
                  userns: tuple[int, int, int, int] | None = None) -> NetworkHandle:
    """Make the network of a sandbox (see the module's text).

    *userns*, when given, is (uid inside, uid outside, gid inside, gid outside): the
    namespace is then made inside a new user namespace with that one-id mapping, which
    the sandbox joins as well (``userns_path``). Without it the caller must be root."""
    if mode not in MODES:
        raise ContainError(f"invalid --net {mode!r}: none, host, private or allow=...")
    ports = [parse_publish(p) for p in publish]
    if ports and mode != "private":
        raise ContainError("--publish needs --net private")
    if mode == "allow":
        from contain.sandbox.netproxy import Rules

        rules = Rules(allow)
    elif allow:
        raise ContainError(f"--net {mode}: allow entries need --net allow=...")
    handle = NetworkHandle(mode)
    handle.report = report
    if mode in ("host", "none"):
        # none: the sandbox makes its own namespace, and its init brings lo up
        return handle
    if mode == "private":
        _check_pasta()
    if userns is None and os.geteuid() != 0:
        raise ContainError("--net: making a network namespace needs root or a user "
                           "namespace (use --userns)")
    try:
        if userns is None:
            netns, listener = _make_here(mode == "allow")
        else:
            user, netns, listener = _make_in_child(userns, mode == "allow")
            handle.userns_path = handle._keep(user)
        handle.namespace_path = handle._keep(netns)
        if listener is not None:
            try:
                _start_proxy(handle, listener, rules)
            finally:
                listener.close()  # (the proxy has its own)
        if mode == "allow":
            proxy = f"http://127.0.0.1:{PROXY_PORT}"
            socks = f"socks5h://127.0.0.1:{PROXY_PORT}"
            handle.env = [f"{k}={proxy}" for k in ("HTTP_PROXY", "HTTPS_PROXY",
                                                   "http_proxy", "https_proxy")]
            handle.env += [f"ALL_PROXY={socks}", f"all_proxy={socks}",
                           "NO_PROXY=localhost,127.0.0.1,::1",
                           "no_proxy=localhost,127.0.0.1,::1"]
        if mode == "private":
            _start_pasta(handle, ports)
    except BaseException:
        handle.close()
        raise
    return handle


# -- the namespace ---------------------------------------------------------------------

def _make_here(listen: bool) -> tuple[int, _socket.socket | None]:
    """A new network namespace (root): its fd, and the proxy's listening socket made
    inside it. A short-lived thread makes it and ends in it: the caller's threads never
    change namespace (coming back could fail: inside a user namespace, setns to the
    namespace we came from is not allowed)."""
    import _thread

    from contain.linux import consts as c
    from contain.linux.syscalls import loopback_up, unshare

    done = _thread.allocate_lock()
    done.acquire()
    out: list[Any] = []

    def work() -> None:
        try:
            try:
                unshare(c.CLONE_NEWNET)
            except OSError as exc:
                raise ContainError("--net: cannot make the sandbox's network namespace: "
                                   f"unshare: {exc.strerror} (--net host shares the "
                                   "host's)") from exc
            netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                loopback_up()
                out.append((netns, _listen() if listen else None))
            except BaseException:
                os.close(netns)
                raise
        except BaseException as exc:
            out.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(work, ())
    done.acquire()
    if isinstance(out[0], BaseException):
        raise out[0]
    netns, listener = out[0]
    return netns, listener


def _make_in_child(ids: tuple[int, int, int, int], listen: bool
                   ) -> tuple[int, int, _socket.socket | None]:
    """A user namespace mapping one id (as given) and a network namespace it owns, made
    by a short-lived child: (user ns fd, net ns fd, listening socket or None)."""
    from contain.linux import consts as c
    from contain.linux.syscalls import loopback_up, unshare
    from contain.process.sync import send_fd

    parent, child = _socket.socketpair(_socket.AF_UNIX,
                                       _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            parent.close()
            unshare(c.CLONE_NEWUSER | c.CLONE_NEWNET)
            loopback_up()
            if listen:
                sock = _listen()
                send_fd(child.fileno(), sock.fileno(), "ok")
            else:
                child.send(b"ok")
            child.recv(1)  # the parent has opened our namespaces
            code = 0
        except BaseException as exc:
            try:
                child.send(str(exc).encode())
            except OSError:
                pass
        os._exit(code)
    child.close()
    listener = None
    fds: list[int] = []
    try:
        data, anc, _flags, _addr = parent.recvmsg(4096, _socket.CMSG_SPACE(4),
                                                  _socket.MSG_CMSG_CLOEXEC)
        for level, ctype, payload in anc:
            if level == _socket.SOL_SOCKET and ctype == _socket.SCM_RIGHTS:
                listener = _socket.socket(fileno=int.from_bytes(payload[:4], sys.byteorder))
        text = data.decode(errors="replace")
        if text != "ok" or (listen and listener is None):
            raise ContainError("--net: could not make the sandbox's network namespace "
                               f"in a new user namespace: {text or 'the helper died'}")
        for kind in ("user", "net"):
            fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
        uid_in, uid_out, gid_in, gid_out = ids
        try:
            if os.geteuid() != 0:
                with open(f"/proc/{pid}/setgroups", "w") as f:
                    f.write("deny")
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write(f"{uid_in} {uid_out} 1\n")
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write(f"{gid_in} {gid_out} 1\n")
        except OSError as exc:
            raise ContainError(f"--net: mapping {uid_in}->{uid_out}, {gid_in}->{gid_out} "
                               f"in the network's user namespace: {exc.strerror}") from exc
        parent.send(b"k")
    except BaseException:
        for fd in fds:
            os.close(fd)
        if listener is not None:
            listener.close()
        raise
    finally:
        parent.close()
        _reap(pid)
    return fds[0], fds[1], listener


def _listen() -> _socket.socket:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", PROXY_PORT))
    s.listen(128)
    return s


# -- the proxy process -----------------------------------------------------------------

def _start_proxy(handle: NetworkHandle, listener: _socket.socket, rules: object) -> None:
    """Fork the process that serves *listener* (outside the sandbox); the decisions go
    as JSON lines to an anonymous file that drain() reads."""
    log = -1
    if handle.report is not None:  # (no reader, no log)
        log = os.memfd_create("contain-netproxy-log", os.MFD_CLOEXEC)
        handle._log_fd = log
    ppid = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the proxy process
        code = 1
        try:
            _proxy_main(listener, rules, log, ppid)
            code = 0
        finally:
            os._exit(code)
    handle._pids.append(pid)


def _proxy_main(listener: _socket.socket, rules: object, log: int, ppid: int) -> None:
    import _signal
    import fcntl

    from contain.linux import consts as c
    from contain.linux.syscalls import close_range, prctl

    prctl(c.PR_SET_PDEATHSIG, 9)  # SIGKILL when the runtime goes
    if os.getppid() != ppid:
        return
    os.setsid()  # no terminal signals: the runtime decides when the proxy ends
    for sig in (1, 2, 3, 15):  # HUP INT QUIT TERM: the runtime's handlers are not ours
        _signal.signal(sig, _signal.SIG_DFL)
    null = os.open("/dev/null", os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    # only the listener and the log survive, as 3 and 4
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (listener.fileno(), log) if fd >= 0]
    for target, fd in enumerate(high, start=3):
        os.dup2(fd, target)
    close_range(3 + len(high))
    from contain.jsonio import dumps
    from contain.sandbox.netproxy import Rules, serve

    written = 0

    def report(event: dict[str, object]) -> None:
        # the log is memory until the runtime reads it: bounded, and says so when full
        nonlocal written
        if written >= LOG_LIMIT:
            return
        line = dumps(event).encode() + b"\n"
        if written + len(line) > LOG_LIMIT - 512:
            line = dumps({"type": "network", "action": "log-full", "time": event["time"],
                          "reason": f"over {LOG_LIMIT} bytes of decisions: the rest are "
                                    "not reported"}).encode() + b"\n"
            written = LOG_LIMIT
        else:
            written += len(line)
        os.write(4, line)

    assert isinstance(rules, Rules)
    serve([_socket.socket(fileno=3)], rules, report if log >= 0 else None)


# -- pasta -----------------------------------------------------------------------------

def _check_pasta() -> str:
    import shutil

    path = shutil.which("pasta") or ""
    if not path:
        raise ContainError("--net private needs pasta (Debian/Ubuntu: apt install passt)")
    return path


def _start_pasta(handle: NetworkHandle, ports: list[tuple[int, int]]) -> None:
    import subprocess
    import tempfile
    import time

    from contain.linux import consts as c
    from contain.linux.syscalls import prctl

    def die_with_us() -> None:
        prctl(c.PR_SET_PDEATHSIG, 9)  # SIGKILL when the runtime goes

    tcp = ",".join(f"127.0.0.1/{h}:{s}" for h, s in ports) or "none"
    with tempfile.TemporaryDirectory(prefix="contain-pasta-") as tmp:
        pidfile = os.path.join(tmp, "pid")
        args = [_check_pasta(), "--foreground", "--config-net", "--quiet", "--no-map-gw",
                "--runas", f"{os.geteuid()}:{os.getegid()}",
                "-t", tcp, "-u", "none", "-T", "none", "-U", "none", "-P", pidfile]
        if handle.userns_path is not None:
            args += ["--userns", f"/proc/self/fd/{handle._fds[-2]}"]
        else:
            args += ["--netns-only"]
        args += ["--netns", f"/proc/self/fd/{handle._fds[-1]}"]
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=errors,
                                    pass_fds=handle._fds, preexec_fn=die_with_us,
                                    start_new_session=True)
            handle._pids.append(proc.pid)
            # the pid file is written once the namespace is configured
            deadline = time.monotonic() + 30
            while not os.path.exists(pidfile) or not os.path.getsize(pidfile):
                if proc.poll() is not None or time.monotonic() > deadline:
                    handle._pids.remove(proc.pid)
                    if proc.returncode is None:
                        proc.kill()
                    proc.wait()
                    errors.seek(0)
                    msg = errors.read().decode(errors="replace").strip()
                    raise ContainError("--net private: pasta failed: "
                                       f"{msg.splitlines()[-1] if msg else proc.returncode}")
                time.sleep(0.002)
        proc.returncode = 0  # reaped by close(), not by the Popen object
