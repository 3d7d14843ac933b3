"""``exec``: a new process inside a running container.

The runtime forks a child that joins the container's cgroup and every namespace of its
init (from /proc/<init>/ns, the user namespace last when we are root -- we can join the
others only while privileged on the host -- and first otherwise), forks once more so the
process is inside the PID (and time) namespace, then applies the same confinement as the
init (rlimits, user, capabilities, no_new_privs, seccomp) and execs. It is non-dumpable
until execve, like the init, and no fd of the runtime survives the exec.
"""

from __future__ import annotations

import os

from contain.container import store
from contain.errors import ContainError, WrongState
from contain.linux import consts as c

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from contain.cgroups import Manager
    from contain.process.sync import Channel
    from contain.spec.config import Process


class ExecOptions:
    """What `contain exec` was asked for (runc's flags)."""

    def __init__(self, args: list[str] | None = None, process_file: str | None = None,
                 tty: bool = False, console_socket: str | None = None,
                 detach: bool = False, pid_file: str | None = None, cwd: str | None = None,
                 env: list[str] | tuple[str, ...] = (), user: str | None = None,
                 additional_gids: list[int] | tuple[int, ...] = (),
                 caps: list[str] | tuple[str, ...] = (), no_new_privs: bool = False,
                 apparmor: str | None = None, process_label: str | None = None,
                 preserve_fds: int = 0, ignore_paused: bool = False,
                 stdio: tuple[int, int, int] | None = None) -> None:
        self.args = list(args or [])
        self.process_file = process_file
        self.tty = tty
        self.console_socket = console_socket
        self.detach = detach
        self.pid_file = pid_file
        self.cwd = cwd
        self.env = list(env)
        self.user = user
        self.additional_gids = list(additional_gids)
        self.caps = list(caps)
        self.no_new_privs = no_new_privs
        self.apparmor = apparmor
        self.process_label = process_label
        self.preserve_fds = preserve_fds
        self.ignore_paused = ignore_paused
        self.stdio = stdio


def build_process(config: dict[str, Any], opts: ExecOptions) -> Process:
    """The process to run: --process FILE as given, or the container's process with
    the command line and the flags applied."""
    from contain.spec.config import Process

    if opts.process_file:
        from contain.jsonio import loads
        from contain.spec.decode import SpecError

        try:
            with open(opts.process_file, "rb") as f:
                raw = loads(f.read())
        except OSError as exc:
            raise ContainError(f"--process {opts.process_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise ContainError(f"--process {opts.process_file}: malformed JSON: {exc}") from None
        try:
            return Process.decode(raw, "$")
        except SpecError as exc:
            raise ContainError(f"{opts.process_file}: {exc.path}: {exc.message}") from None
    if not opts.args:
        raise ContainError("exec: no command given (contain exec ID -- CMD ...)")
    base = dict(config.get("process") or {})
    base["args"] = opts.args
    base["terminal"] = opts.tty
    base.pop("consoleSize", None)
    env = list(base.get("env") or [])
    for e in opts.env:
        if "=" not in e:
            raise ContainError(f"invalid --env {e!r}: NAME=VALUE")
        key = e.split("=", 1)[0] + "="
        env = [x for x in env if not x.startswith(key)] + [e]
    base["env"] = env
    if opts.cwd:
        base["cwd"] = opts.cwd
    user = dict(base.get("user") or {})
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        try:
            user["uid"] = int(uid)
            if gid:
                user["gid"] = int(gid)
        except ValueError:
            raise ContainError(f"invalid --user {opts.user!r}: uid[:gid] as numbers") from None
    if opts.additional_gids:
        user["additionalGids"] = list(opts.additional_gids)
    base["user"] = user
    if opts.caps:
        caps = dict(base.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted", "ambient", "inheritable"):
            have = list(caps.get(kind) or [])
            if kind != "inheritable":
                have += [cap for cap in opts.caps if cap not in have]
            caps[kind] = have
        base["capabilities"] = caps
    if opts.no_new_privs:
        base["noNewPrivileges"] = True
    if opts.apparmor:
        base["apparmorProfile"] = opts.apparmor
    if opts.process_label:
        base["selinuxLabel"] = opts.process_label
    try:
        return Process.decode(base, "$.process")
    except ContainError as exc:
        raise ContainError(f"exec: {exc}") from None


def exec_process(root: str, cid: str, opts: ExecOptions) -> int:
    """Run a process in container *cid*; its exit code (0 at once when detached)."""
    from contain.cgroups import warm

    warm.start()  # the attach of the new process finds the cgroup lock warm
    record = store.load(root, cid)
    status = record.status()
    if status == "stopped":
        raise WrongState("cannot exec in a stopped container")
    if status == "paused" and not opts.ignore_paused:
        raise WrongState("cannot exec in a paused container (use --ignore-paused to override)")
    if status == "creating":
        raise WrongState("cannot exec in a container that is still being created")
    proc = build_process(record.config, opts)
    if proc.apparmor_profile or proc.selinux_label:
        from contain.security.lsm import check

        check(proc)
    if proc.terminal and opts.detach and not opts.console_socket:
        raise ContainError("cannot allocate tty if contain will detach without setting "
                           "console socket")
    if not proc.terminal and opts.console_socket:
        raise ContainError("cannot use console socket if contain will not detach or "
                           "allocate tty")
    spec = record.spec()
    seccomp = None
    if spec.linux is not None and spec.linux.seccomp is not None:
        from contain.container.lifecycle import seccomp_cache
        from contain.security.seccomp import compile_filter

        seccomp = compile_filter(spec.linux.seccomp, cache_dir=seccomp_cache(root))
    from contain.process.foreground import become_subreaper

    if not opts.detach:
        become_subreaper()
    import _socket

    local_tty = proc.terminal and not opts.console_socket
    pair = None
    console_fd = -1
    console_sock = None
    if local_tty:
        from contain.process.foreground import size_from_caller

        pair = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        console_fd = pair[1].fileno()
        size_from_caller(proc)
    elif opts.console_socket:
        from contain.process.sync import connect_unix

        console_sock = connect_unix(opts.console_socket)
        console_fd = console_sock.fileno()
    from contain.process.foreground import ForwardSignals

    # the process runs as soon as it is spawned: forwarding is in place before that
    forward = ForwardSignals() if not opts.detach else None
    if forward is not None:
        forward.__enter__()
    try:
        return _spawn_and_wait(root, cid, record, proc, seccomp, console_fd, opts, pair,
                               console_sock, forward)
    finally:
        if forward is not None:
            forward.__exit__()


def _spawn_and_wait(root: str, cid: str, record: store.ContainerRecord, proc: Process,
                    seccomp: Any, console_fd: int, opts: ExecOptions, pair: Any,
                    console_sock: Any, forward: Any) -> int:
    try:
        pid = _spawn(record, proc, seccomp, console_fd, opts)
    finally:
        from contain.cgroups import warm

        warm.stop()
        if pair is not None:
            pair[1].close()
        if console_sock is not None:
            console_sock.close()
    if forward is not None:
        forward.attach(pid)
    if opts.pid_file:
        from contain.container.lifecycle import write_pid_file

        write_pid_file(opts.pid_file, pid)
    master = -1
    if pair is not None:
        from contain.process.sync import recv_fd

        master, _ = recv_fd(pair[0])
        pair[0].close()
    if opts.detach:
        if master >= 0:
            os.close(master)
        return 0
    from contain.container.control import wait
    from contain.process.foreground import relay_tty

    proc_record = store.ContainerRecord(root, cid, {"pid": pid})
    try:
        if master >= 0:
            forward.relay_winch_to(master)
            return relay_tty(master, proc_record)
        return wait(proc_record)
    finally:
        if master >= 0:
            os.close(master)


def _join_order(init_pid: int) -> list[tuple[int, str]]:
    """The init's namespaces that differ from ours, in the order we can join them."""
    out = []
    for _kind, (flag, name) in c.NAMESPACES.items():
        theirs = f"/proc/{init_pid}/ns/{name}"
        try:
            if os.readlink(theirs) == os.readlink(f"/proc/self/ns/{name}"):
                continue
        except OSError:
            continue
        out.append((flag, theirs))
    user_first = os.geteuid() != 0
    out.sort(key=lambda item: (item[0] == c.CLONE_NEWUSER) != user_first)
    return out


def _spawn(record: store.ContainerRecord, proc: Process, seccomp: Any, console_fd: int,
           opts: ExecOptions) -> int:
    from contain.process.init import preload_modules
    from contain.process.sync import Channel

    mgr = record.cgroup_manager()
    # open the namespaces now: once the init is gone its /proc entry cannot be trusted
    if not record.init_alive():
        raise WrongState("cannot exec in a stopped container")
    ns_fds = []
    try:
        for flag, path in _join_order(record.pid):
            ns_fds.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        if not record.init_alive():  # the pid was reused between the check and the opens
            raise WrongState("cannot exec in a stopped container")
        preload_modules(terminal=proc.terminal, hooks=False, seccomp=seccomp is not None,
                        lsm=bool(proc.apparmor_profile or proc.selinux_label))
        parent, child = Channel.pair()
        pid = os.fork()
        if pid == 0:
            parent.close()
            _child(child, record, proc, seccomp, console_fd, opts, mgr, ns_fds)
        child.close()
    finally:
        for _, fd in ns_fds:
            os.close(fd)
    stage = pid
    try:
        while True:
            msg, _fds = parent.recv()
            kind = msg.get("t")
            if kind == "pid":
                pid = msg["pid"]
                os.waitpid(stage, 0)
                stage = 0
            elif kind == "ready":
                from contain.container.lifecycle import log_warnings, take_fd

                log_warnings(msg)
                if "listener_fd" in msg:
                    _hand_listener(record, take_fd(pid, msg["listener_fd"]), pid)
                    # the process waits for this before it execs: its listener fd is
                    # close-on-exec, and must still be there when we take it
                    parent.send({"t": "committed"})
                return pid
            elif kind == "error":
                raise ContainError(str(msg.get("msg")))
    except BaseException:
        _reap_after_failure(stage, pid)
        raise
    finally:
        parent.close()


def _reap_after_failure(stage: int, pid: int) -> None:
    """Kill and reap what exec forked. The process that failed may have reported before
    the stage said its pid, so it is unknown here; it is inside the container's PID
    namespace and, once the stage is gone, our child (we are a subreaper): left a
    zombie, it would keep the container's PID 1 from ever finishing its exit."""
    import time

    for p in {stage, pid} - {0}:
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass
    for p in {stage, pid} - {0}:
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            pass
    deadline = time.monotonic() + 1.0  # the unknown one is already on its way out
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if done == 0:
            time.sleep(0.001)


def _hand_listener(record: store.ContainerRecord, fd: int, pid: int) -> None:
    from contain.security.seccomp import send_listener

    seccomp = (record.config.get("linux") or {}).get("seccomp") or {}
    try:
        send_listener(seccomp.get("listenerPath", ""), fd, record.hook_state("running"),
                      seccomp.get("listenerMetadata"), pid=pid)
    finally:
        os.close(fd)


def _child(ch: Channel, record: store.ContainerRecord, proc: Process, seccomp: Any,
           console_fd: int, opts: ExecOptions, mgr: Manager | None,
           ns_fds: list[tuple[int, int]]) -> NoReturn:
    from contain.linux.syscalls import prctl, setns
    from contain.process.init import report_failure, reset_signals

    try:
        prctl(c.PR_SET_DUMPABLE, 0)
        reset_signals()
        if opts.stdio is not None:
            for target, fd in enumerate(opts.stdio):
                if fd != target:
                    os.dup2(fd, target)
        if mgr is not None:
            mgr.join(0)
        forks = False
        for flag, fd in ns_fds:
            setns(fd, flag)
            os.close(fd)
            forks = forks or flag in (c.CLONE_NEWPID, c.CLONE_NEWTIME)
        if forks:
            pid = os.fork()
            if pid:
                ch.send({"t": "pid", "pid": pid})
                os._exit(0)
        _final(ch, record, proc, seccomp, console_fd, opts)
    except BaseException as exc:
        report_failure(ch, exc)
    os._exit(1)


def _final(ch: Channel, record: store.ContainerRecord, proc: Process, seccomp: Any,
           console_fd: int, opts: ExecOptions) -> NoReturn:
    from contain.process.init import exec_process as do_exec
    from contain.process.init import lookup_executable, prepare_process, send_ready

    if proc.terminal:
        os.setsid()
        from contain.process.console import setup_console

        setup_console(console_fd, proc)
    linux = record.config.get("linux") or {}
    personality = None
    if linux.get("personality"):
        from contain.spec.config import Personality

        personality = Personality.decode(linux["personality"], "$.linux.personality")
    warnings: list[str] = []
    env = prepare_process(proc, seccomp, opts.preserve_fds, personality=personality,
                          warnings=warnings)
    path = lookup_executable(proc.args[0], env)
    send_ready(ch, seccomp, warnings)
    if seccomp is not None and seccomp.notify:
        ch.expect("committed")  # the runtime has taken the listener (pidfd_getfd)
    ch.close()
    do_exec(path, proc, env, seccomp)
