"""``exec``: a new process inside a running container.

The process to run is a copy of the container's decoded process with the command line
and the flags applied (or ``--process FILE``). It is started by the same spawn driver as
a container's init (process/spawn.py), in exec mode: the child joins the container's
cgroup and every namespace of its init (from /proc/<init>/ns, opened here while the init
is known to be alive; the user namespace last when we are root -- we can join the others
only while privileged on the host -- and first otherwise), forks once more when the PID
(or time) namespace applies to children only, then applies the same confinement as the
init (rlimits, user, capabilities, no_new_privs, seccomp) and execs. It is non-dumpable
until execve, like the init, and no fd of the runtime survives the exec.
"""

from __future__ import annotations

import os

from contain.container import store
from contain.errors import ContainError, WrongState
from contain.linux import consts as c
from contain.process.spawn import Spawner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from contain.cgroups import Manager
    from contain.process.spawn import Handles, Plan
    from contain.security.seccomp import SeccompProgram
    from contain.spec.config import Process, Spec
    from contain.spec.decode import Model

    M = TypeVar("M", bound=Model)


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
                 stdio: tuple[int, int, int] | None = None,
                 forward_signals: bool = False,
                 cgroup: list[str] | tuple[str, ...] = (),
                 pidfd_socket: str | None = None) -> None:
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
        # replace the caller's handlers to forward signals (the CLI; main thread only)
        self.forward_signals = forward_signals
        self.cgroup = list(cgroup)  # exec --cgroup: existing sub-cgroups (runc 1.2)
        self.pidfd_socket = pidfd_socket  # a unix socket to send the process's pidfd to


def build_process(base: Process | None, opts: ExecOptions) -> Process:
    """The process to run: --process FILE as given, or a copy of the container's
    process (*base*, decoded from its config) with the command line and the flags
    applied; the flags' values go through the spec's own field checks."""
    from contain.spec.config import Capabilities, Process, User

    if opts.process_file:
        from contain.jsonio import loads
        from contain.spec.decode import SpecError

        try:
            with open(opts.process_file, "rb") as f:
                raw = loads(f.read())
        except OSError as exc:
            raise ContainError(f"--process {opts.process_file}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ContainError(f"--process {opts.process_file}: malformed JSON: {exc}") from exc
        try:
            return Process.decode(raw, "$")
        except SpecError as exc:
            raise ContainError(f"{opts.process_file}: {exc.path}: {exc.message}") from exc
    if not opts.args:
        raise ContainError("exec: no command given (contain exec ID -- CMD ...)")
    if base is None:
        raise ContainError("exec: the container's config has no process to start from")
    try:
        proc = _copy(base)
        proc.args = _field(Process, "args", opts.args, "--")
        proc.terminal = opts.tty
        proc.console_size = None
        env = list(base.env)
        for e in opts.env:
            if "=" not in e:
                raise ContainError(f"invalid --env {e!r}: NAME=VALUE")
            key = e.split("=", 1)[0] + "="
            env = [x for x in env if not x.startswith(key)] + [e]
        proc.env = _field(Process, "env", env, "--env")
        if opts.cwd:
            proc.cwd = _field(Process, "cwd", opts.cwd, "--cwd")
        if opts.user or opts.additional_gids:
            user = _copy(base.user)
            if opts.user:
                uid, _, gid = opts.user.partition(":")
                try:
                    uid_n, gid_n = int(uid), int(gid) if gid else None
                except ValueError as exc:
                    raise ContainError(f"invalid --user {opts.user!r}: uid[:gid] as "
                                       "numbers") from exc
                user.uid = _field(User, "uid", uid_n, "--user")
                if gid_n is not None:
                    user.gid = _field(User, "gid", gid_n, "--user")
            if opts.additional_gids:
                user.additional_gids = _field(User, "additional_gids",
                                              list(opts.additional_gids), "--additional-gids")
            proc.user = user
        if opts.caps:
            caps = _copy(base.capabilities) if base.capabilities is not None \
                else Capabilities()
            for kind in ("bounding", "effective", "permitted", "ambient", "inheritable"):
                have = list(getattr(caps, kind))
                if kind != "inheritable":
                    have += [cap for cap in opts.caps if cap not in have]
                setattr(caps, kind, _field(Capabilities, kind, have, "--cap"))
            proc.capabilities = caps
        if opts.no_new_privs:
            proc.no_new_privileges = True
        if opts.apparmor:
            proc.apparmor_profile = opts.apparmor
        if opts.process_label:
            proc.selinux_label = opts.process_label
        proc.validate("$.process")
    except ContainError as exc:
        raise ContainError(f"exec: {exc}") from exc
    return proc


def _copy(obj: M) -> M:
    """A shallow copy of a spec object (its lists are replaced, never changed in place)."""
    new = type(obj).__new__(type(obj))
    for attr, *_ in obj.FIELDS:
        object.__setattr__(new, attr, getattr(obj, attr))
    return new


def _field(cls: type[Model], attr: str, value: Any, what: str) -> Any:
    """*value* through the codec of field *attr* of *cls*: a flag's value gets the
    checks the same field of config.json gets."""
    from contain.spec.decode import SpecError

    for name, _key, codec, _default in cls.FIELDS:
        if name == attr:
            try:
                return codec(value, what)
            except SpecError as exc:
                raise ContainError(f"{what}: {exc.message}") from exc
    raise AssertionError(f"{cls.__name__} has no field {attr}")


def exec_process(root: str, cid: str, opts: ExecOptions) -> int:
    """Run a process in container *cid*; its exit code (0 at once when detached)."""
    record = store.load(root, cid)
    status = record.status()
    if status == "stopped":
        raise WrongState("cannot exec in a stopped container")
    if status == "paused" and not opts.ignore_paused:
        raise WrongState("cannot exec in a paused container (use --ignore-paused to override)")
    if status == "creating":
        raise WrongState("cannot exec in a container that is still being created")
    spec = record.spec()  # decoded once: the process to start from, seccomp, personality
    proc = build_process(spec.process, opts)
    if proc.apparmor_profile or proc.selinux_label:
        from contain.security.lsm import check

        check(proc)
    if proc.terminal and opts.detach and not opts.console_socket:
        raise ContainError("cannot allocate tty if contain will detach without setting "
                           "console socket")
    if not proc.terminal and opts.console_socket:
        raise ContainError("cannot use console socket if contain will not detach or "
                           "allocate tty")
    seccomp = None
    if spec.linux is not None and spec.linux.seccomp is not None:
        from contain.container.lifecycle import seccomp_cache
        from contain.security.seccomp import compile_filter

        seccomp = compile_filter(spec.linux.seccomp, cache_dir=seccomp_cache(root))
    from contain.process.foreground import become_subreaper
    from contain.process.spawn import Handles

    if not opts.detach:
        become_subreaper()
    import _socket

    fds = Handles()
    pair = None
    try:
        if proc.terminal and not opts.console_socket:
            from contain.process.foreground import size_from_caller

            pair = _socket.socketpair(_socket.AF_UNIX,
                                      _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            fds.console = pair[1].fileno()
            size_from_caller(proc)
        elif opts.console_socket:
            from contain.process.sync import connect_unix

            fds.console_sock = connect_unix(opts.console_socket)
            fds.console = fds.console_sock.fileno()
        if opts.pidfd_socket:
            from contain.process.sync import connect_unix

            fds.pidfd_sock = connect_unix(opts.pidfd_socket, "--pidfd-socket")
        from contain.process.foreground import ForwardSignals

        # the process runs as soon as it is spawned: forwarding is in place before that
        forward = ForwardSignals() if opts.forward_signals and not opts.detach else None
        if forward is not None:
            forward.__enter__()
        try:
            return _spawn_and_wait(root, cid, record, spec, proc, seccomp, fds, opts, pair,
                                   forward)
        finally:
            if forward is not None:
                forward.__exit__()
    finally:
        fds.close()
        if pair is not None:
            pair[0].close()
            pair[1].close()


def _spawn_and_wait(root: str, cid: str, record: store.ContainerRecord, spec: Spec,
                    proc: Process, seccomp: SeccompProgram | None, fds: Handles,
                    opts: ExecOptions, pair: Any, forward: Any) -> int:
    from contain.cgroups import warm

    try:
        pid = _spawn(record, spec, proc, seccomp, fds, opts)
    finally:
        warm.stop()
        fds.close()
        if pair is not None:
            pair[1].close()
    if forward is not None:
        forward.attach(pid)
    if opts.pid_file:
        from contain.container.lifecycle import write_pid_file

        try:
            write_pid_file(opts.pid_file, pid)
        except ContainError:  # the process must not outlive a failed exec
            from contain.process.spawn import kill_and_wait

            kill_and_wait(pid)
            raise
    master = -1
    if pair is not None:
        from contain.process.sync import recv_fd

        master, _ = recv_fd(pair[0])
    if opts.detach:
        if master >= 0:
            os.close(master)
        return 0
    from contain.container.control import wait
    from contain.process.foreground import relay_tty

    proc_record = store.ContainerRecord(root, cid, {"pid": pid})
    try:
        if master >= 0:
            if forward is not None:
                forward.relay_winch_to(master)
            relay_tty(master, pid)
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


def _spawn(record: store.ContainerRecord, spec: Spec, proc: Process,
           seccomp: SeccompProgram | None, fds: Handles, opts: ExecOptions) -> int:
    from contain.process.spawn import EXEC, Plan

    # open the namespaces now: once the init is gone its /proc entry cannot be trusted
    if not record.init_alive():
        raise WrongState("cannot exec in a stopped container")
    join = _join_order(record.pid)
    for flag, path in join:
        fds.ns.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    if not record.init_alive():  # the pid was reused between the check and the opens
        raise WrongState("cannot exec in a stopped container")
    plan = Plan(EXEC, spec, proc, cid=record.id, join=tuple(join),
                preserve_fds=opts.preserve_fds, seccomp=seccomp, stdio=opts.stdio)
    mgr = record.cgroup_manager()
    if opts.cgroup:
        if mgr is None:
            raise ContainError("--cgroup: the container has no cgroup")
        mgr = mgr.sub(opts.cgroup)
    return _ExecSpawner(plan, fds, mgr, record).spawn()


class _ExecSpawner(Spawner):
    what = "the exec'd process"

    def __init__(self, plan: Plan, fds: Handles, mgr: Manager | None,
                 record: store.ContainerRecord) -> None:
        super().__init__(plan, fds, mgr)
        self.record = record

    def hand_listener(self, fd: int) -> None:
        from contain.security.seccomp import send_listener

        linux = self.plan.spec.linux
        assert linux is not None and linux.seccomp is not None
        try:
            send_listener(linux.seccomp.listener_path or "", fd,
                          self.record.hook_state("running"), linux.seccomp.listener_metadata,
                          pid=self.pid)
        finally:
            os.close(fd)
