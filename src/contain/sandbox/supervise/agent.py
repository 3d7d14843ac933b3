"""The supervisor process, and the runtime's handle on it.

The runtime forks the supervisor before it creates the container. For the notify
supervisor the container's profile names a unix socket of the supervisor as its
``listenerPath``: the runtime's ordinary OCI seccomp-agent hand-over (at create, and at
every ``exec``) brings each listener to it; nothing in the core knows about
supervision. For the ptrace supervisor the runtime tells it the init's pid after
create, while the init still waits for ``start`` (before its filter is loaded and
before it execs), and starts the container only once it is seized.

Lifetimes. In the foreground (``contain sandbox``, ``contain.run``) the supervisor is
the runtime's child and dies with it (PR_SET_PDEATHSIG); the runtime waits for it at
the end, and it prints the summary. Detached (an annotated ``contain create``), it is a
daemon whose pid and start time are kept in state.json; it ends by itself when the
container's last process is gone, and ``delete`` kills it. Either way, if it dies
first, PTRACE_O_EXITKILL has the kernel kill the processes it supervised.
"""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.sandbox.supervise.policy import SyscallPolicy

ANNOTATION_POLICY = "org.contain.supervise"
ANNOTATION_SUPERVISOR = "org.contain.supervisor"
ANNOTATION_REPORT = "org.contain.supervise.report"
ANNOTATION_RECORD = "org.contain.record"
STATE_KEY = "supervisor"


def _with_no_new_privs(config: dict[str, Any]) -> dict[str, Any]:
    """A supervised process runs with no_new_privs: its filter is then loaded as the
    last step before execve (ptrace: after the supervisor has seized it; notify: once the
    capabilities are dropped, which without no_new_privs the kernel refuses), and no
    setuid program gains privileges the policy did not plan for."""
    proc = config.get("process")
    if not isinstance(proc, dict) or proc.get("noNewPrivileges"):
        return config
    return dict(config, process=dict(proc, noNewPrivileges=True))


def _socket_path(root: str, name: str) -> str:
    """The supervisor's listener socket: in the state root (0700, root's), or -- when that
    path is too long for a unix socket (108 bytes; engines' roots are long) -- in a
    private directory under /run (or $XDG_RUNTIME_DIR)."""
    from _blake2 import blake2b

    short = blake2b(name.encode(), digest_size=8).hexdigest()
    d = os.path.join(root, ".supervise")
    if len(os.path.join(d, f"{short}.sock").encode()) > 100:
        base = "/run" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR", "/tmp")
        d = os.path.join(base, f"contain-supervise-{os.geteuid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ContainError(f"{d}: not a private directory of ours (mode {st.st_mode:o})")
    return os.path.join(d, f"{short}.sock")


def _send(sock: Any, msg: dict[str, Any]) -> None:
    from contain.jsonio import dumps

    sock.send(dumps(msg).encode())


def _recv(sock: Any, timeout: float | None = None) -> dict[str, Any] | None:
    from contain.jsonio import loads

    try:
        sock.settimeout(timeout)
        data = sock.recv(65536)
        sock.settimeout(None)
    except (TimeoutError, OSError):  # also: closed under us (the ask thread at the end)
        return None
    if not data:
        return None
    out = loads(data.decode())
    return out if isinstance(out, dict) else None


class Supervisor:
    """The runtime's handle: prepare the spec, start the supervisor, attach, finish."""

    def __init__(self, policy: SyscallPolicy, mode: str = "notify", *, root: str,
                 report: str | int | None = None, record: str | None = None,
                 enforce: dict[str, Any] | None = None, hostname: str = "sandbox",
                 detach: bool = False, name: str | None = None) -> None:
        from contain.sandbox.supervise.filter import check_policy

        check_policy(policy, mode)
        self.policy = policy
        self.mode = mode
        self.root = root
        # absolute: the supervisor changes directory while it emulates calls
        self.report = os.path.abspath(report) if isinstance(report, str) else report
        self.record = os.path.abspath(record) if record else None
        self.enforce = enforce
        self.hostname = hostname
        self.detach = detach
        self.pid = 0
        self.start_time = 0
        self.control: Any = None
        self.server: Any = None
        self.ask_sock: Any = None
        self.socket_path: str | None = None
        self.name = name or f"{os.getpid()}-{os.urandom(4).hex()}"
        self.sync_wakeup = False

    # -- the spec ---------------------------------------------------------------------

    def prepare(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config dict with the supervised seccomp profile."""
        from contain.sandbox.supervise import filter as F

        config = _with_no_new_privs(config)
        if self.mode == "notify":
            self.socket_path = _socket_path(self.root, self.name)
        if self.enforce is not None:
            from contain.sandbox.supervise.record import enforcing_profile

            out = dict(config)
            linux = dict(out.get("linux") or {})
            linux["seccomp"] = enforcing_profile(self.enforce, self.mode, self.socket_path)
            out["linux"] = linux
            return out
        return F.apply(config, self.policy, self.mode, self.socket_path)

    # -- the process ------------------------------------------------------------------

    def start(self) -> None:
        import socket

        from contain.container.store import process_start_time

        if self.mode == "notify":
            assert self.socket_path is not None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.server.bind(self.socket_path)
            os.chmod(self.socket_path, 0o600)
            self.server.listen(64)
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        ask_theirs = None
        if self.policy.needs_callbacks():
            self.ask_sock, ask_theirs = socket.socketpair(
                socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        report_fd = self.report if isinstance(self.report, int) else -1
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the supervisor process
            code = 1
            try:
                ours.close()
                if self.ask_sock is not None:
                    self.ask_sock.close()
                code = _supervisor_main(self, theirs, ask_theirs, report_fd)
            except BaseException as e:
                try:
                    os.write(2, f"contain: supervisor: {e}\n".encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        theirs.close()
        if ask_theirs is not None:
            ask_theirs.close()
        self.control = ours
        if self.server is not None:
            self.server.close()  # the supervisor has it
            self.server = None
        msg = _recv(ours, 30)
        if self.detach and msg is not None and "daemon" in msg:
            os.waitpid(pid, 0)  # the first fork: the daemon is its child
            pid = int(msg["daemon"])
            msg = _recv(ours, 30)
        elif not self.detach:
            pass
        if msg is None or msg.get("t") != "ready":
            self.kill()
            raise ContainError(f"the supervisor did not start: {(msg or {}).get('msg', 'died')}")
        self.pid = pid
        self.start_time = process_start_time(pid) or 0
        if self.ask_sock is not None:
            import threading

            threading.Thread(target=self._serve_ask, daemon=True,
                             name="contain-supervise-ask").start()

    def attach(self, pid: int) -> None:
        """Bind the container whose init is *pid* to the supervisor: it is seized with
        EXITKILL (and, for ptrace, with the tracing options) before it may start."""
        if self.mode == "ptrace":
            _send(self.control, {"t": "seize", "pid": pid})
        msg = _recv(self.control, 60)
        if msg is None or msg.get("t") != "attached":
            raise ContainError("the supervisor could not attach to the container: "
                               f"{(msg or {}).get('msg', 'it died')}")
        self.sync_wakeup = bool(msg.get("sync"))

    def state(self) -> dict[str, Any]:
        """What state.json keeps about the supervisor (so that delete can end it)."""
        return {"pid": self.pid, "start": self.start_time, "mode": self.mode,
                "socket": self.socket_path}

    def release(self) -> None:
        """Detached: let the supervisor live on its own."""
        if self.control is not None:
            self.control.close()
            self.control = None

    def finish(self, timeout: float = 10.0) -> int | None:
        """Foreground: the container has ended; let the supervisor write its report
        and summary, and reap it. Returns its exit status."""
        import time

        if self.control is not None:
            self.control.close()
            self.control = None
        status = None
        if self.pid:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    done, st = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    status = st
                    break
                if time.monotonic() > deadline:
                    self.kill()
                    break
                time.sleep(0.005)
            self.pid = 0
        self._cleanup()
        return status

    def kill(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0
        if self.control is not None:
            self.control.close()
            self.control = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
        if self.ask_sock is not None:
            try:
                self.ask_sock.close()
            except OSError:
                pass

    def _serve_ask(self) -> None:
        """Answer the supervisor's ``ask`` questions with the callbacks (which live in
        this process, with the caller's state)."""
        from contain.sandbox.supervise.notify import _decision
        from contain.sandbox.supervise.policy import Call

        rules = {r.where: r for rs in self.policy.rules.values() for r in rs}
        rules[self.policy.default.where] = self.policy.default
        sock = self.ask_sock
        while True:
            msg = _recv(sock)
            if msg is None:
                return
            rule = rules.get(msg.get("rule", ""))
            c = msg["call"]
            call = Call(c["pid"], c["syscall"], c["nr"], tuple(c["args"]))
            try:
                answer = _decision(rule.callback(call) if rule and rule.callback else None)
            except Exception as e:
                answer = ("deny", 1, 0, f"callback failed: {e}")
            try:
                _send(sock, {"d": list(answer)})
            except OSError:
                return


def _supervisor_main(sup: Supervisor, control: Any, ask_sock: Any, report_fd: int) -> int:
    """The supervisor process."""
    from contain.linux import consts as c
    from contain.linux.syscalls import prctl

    keep = {control.fileno(), 2}
    for extra in (sup.server, ask_sock):
        if extra is not None:
            keep.add(extra.fileno())
    if report_fd >= 0:
        keep.add(report_fd)
    daemon = _become_supervisor(sup, control)
    if daemon is not None:
        return daemon
    _close_others(keep)
    # the name `contain inspect` shows for the tracer of a supervised process
    prctl(c.PR_SET_NAME, _comm_buffer(COMM[sup.mode]))
    from contain.sandbox.supervise.record import Recorder, Report

    report = Report(sup.report if isinstance(sup.report, str) else
                    (report_fd if report_fd >= 0 else None), sup.mode)
    recorder = Recorder() if sup.record else None
    ask = _asker(ask_sock) if ask_sock is not None else None
    try:
        if sup.mode == "notify":
            code = _serve_notify(sup, control, report, recorder, ask)
        else:
            from contain.sandbox.supervise.ptrace import serve_ptrace

            code = serve_ptrace(sup, control, report, recorder, ask)
    finally:
        if recorder is not None and sup.record:
            always = ("write",) if sup.mode == "notify" else ()
            recorder.write(sup.record, always)
        text = report.summary()
        if text and not sup.detach:
            try:
                os.write(2, (text + "\n").encode())
            except OSError:
                pass
        report.close()
    return code


def _become_supervisor(sup: Supervisor, control: Any) -> int | None:
    """Signals, stdio and lifetime of the supervisor process: in the foreground it dies
    with the runtime; detached it is a daemon (the first fork's exit code is returned,
    None in the process that goes on)."""
    import signal

    from contain.linux import consts as c
    from contain.linux.syscalls import prctl

    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
                signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sup.detach:
        os.setsid()
        pid = os.fork()
        if pid:
            _send(control, {"daemon": pid})
            return 0
        to_null: tuple[int, ...] = (0, 1, 2)
    else:
        parent = os.getppid()
        prctl(c.PR_SET_PDEATHSIG, 9)
        if os.getppid() != parent:
            return 1
        to_null = (0, 1)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    for fd in to_null:
        os.dup2(null, fd)
    os.close(null)
    return None


def _asker(ask_sock: Any) -> Any:
    """``ask`` from the supervisor process: the callbacks live in the runtime's."""
    def ask(rule: Any, call: Any) -> Any:
        _send(ask_sock, {"rule": rule.where, "call": call.to_json()})
        msg = _recv(ask_sock)
        if msg is None:
            return ("deny", 1, 0, "the asking process is gone")
        return tuple(msg["d"])
    return ask


COMM = {"notify": "contain-notify", "ptrace": "contain-ptrace"}


def _comm_buffer(name: str) -> int:
    from contain.linux import native

    global _COMM_BUF
    _COMM_BUF = native.create_string_buffer(name.encode()[:15] + b"\0")
    return int(native.addressof(_COMM_BUF))


_COMM_BUF: Any = None


def _close_others(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def reap_traced(traced: set[int]) -> None:
    """Restart seized processes stopped by a signal delivery or a group stop; forget
    the ones that exited (notify mode: they are seized only for EXITKILL)."""
    from contain.linux import ptrace as P

    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG | P.WALL)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            traced.discard(pid)
            continue
        if not os.WIFSTOPPED(status):
            continue
        sig = os.WSTOPSIG(status)
        event = status >> 16
        try:
            if event == P.PTRACE_EVENT_STOP:
                if sig in (19, 20, 21, 22):  # a group stop: stay stopped, as asked
                    P.listen(pid)
                else:
                    P.cont(pid, 0)
            elif event:
                P.cont(pid, 0)
            else:
                P.cont(pid, sig)
        except OSError:
            traced.discard(pid)


def _serve_notify(sup: Supervisor, control: Any, report: Any, recorder: Any, ask: Any) -> int:
    return _NotifyLoop(sup, control, report, recorder, ask).run()


class _NotifyLoop:
    """The notify supervisor's event loop: listener hand-overs on the socket, the
    notifications of every listener, the runtime's control channel, and the stops of the
    processes seized for EXITKILL (SIGCHLD through a wake-up pipe)."""

    def __init__(self, sup: Supervisor, control: Any, report: Any, recorder: Any,
                 ask: Any) -> None:
        import select
        import signal

        from contain.sandbox.supervise.notify import NotifySupervisor

        assert sup.server is not None
        self.sup = sup
        self.server = sup.server
        self.control = control
        self.report = report
        self.wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.notify = NotifySupervisor(sup.policy, report, recorder, ask, sup.hostname)
        self.handle = self.notify.handle
        self.poller = select.poll()
        for fd in (self.server.fileno(), control.fileno(), self.wake_r):
            self.poller.register(fd, select.POLLIN)
        self.listeners: dict[int, int] = {}
        self.traced: set[int] = set()
        self.had = False
        self.control_open = True

    def run(self) -> int:
        import select
        import time

        _send(self.control, {"t": "ready"})
        started = time.monotonic()
        listeners = self.listeners
        handle = self.handle
        IN = select.POLLIN
        while True:
            if self.had and not listeners and not self.traced:
                return 0
            if not self.had and (not self.control_open or time.monotonic() - started > 300):
                return 0 if not self.control_open else 1
            waiting = self.notify.waiting
            if waiting:  # FIFO opens in workers: are their calls still there?
                self.notify.unblock()
            timeout = 1000 if not self.had else (250 if waiting else None)
            for fd, ev in self.poller.poll(timeout):
                if fd in listeners:
                    if ev & IN:
                        handle(fd)
                    elif ev:
                        self.poller.unregister(fd)
                        os.close(fd)
                        del listeners[fd]
                elif fd == self.server.fileno():
                    self.accept()
                elif fd == self.control.fileno():
                    if self.on_control():
                        return 0  # the runtime saw the container end
                elif fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 512)
                    except OSError:
                        pass
                    reap_traced(self.traced)

    def accept(self) -> None:
        """A listener handed over (the runtime's OCI seccomp-agent protocol): seize its
        process for EXITKILL, then watch it."""
        import select
        import socket

        from contain.jsonio import loads
        from contain.linux import ptrace as P
        from contain.linux.unotify import set_sync_wakeup

        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(10)
            try:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
            except OSError:
                return
        if not fds:
            return
        for extra in fds[1:]:
            os.close(extra)
        lfd = fds[0]
        try:
            pid = int(loads(data.decode()).get("pid", 0))
        except (ValueError, AttributeError):
            pid = 0
        sync = set_sync_wakeup(lfd)
        if pid:
            try:
                P.seize(pid, P.PTRACE_O_EXITKILL)
                self.traced.add(pid)
            except OSError as e:
                self.report.event(pid, "-", -1, (), "error",
                                  detail=f"cannot seize for fail-closed: {e.strerror}")
        self.listeners[lfd] = pid
        self.poller.register(lfd, select.POLLIN)
        self.had = True
        if self.control_open:
            try:
                _send(self.control, {"t": "attached", "pid": pid, "sync": sync})
            except OSError:
                pass

    def on_control(self) -> bool:
        """The runtime closed its end: True when that means the end (foreground)."""
        try:
            data = self.control.recv(4096)
        except OSError:
            data = b""
        if data:
            return False
        self.control_open = False
        self.poller.unregister(self.control.fileno())
        return not self.sup.detach and self.had
