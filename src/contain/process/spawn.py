"""The spawn driver: one way to start a process in a container, for create and exec.

A :class:`Plan` says what to start (built once, from the spec and the options, and
never changed after: what follows from it are properties); :class:`Handles` owns the
fds a spawn opens and closes them; :class:`Spawner` forks the child (process/init.py
runs its stages) and drives the parent's side of the protocol in process/sync.py,
killing and reaping whatever it forked when any step fails. The container layer
subclasses :class:`Spawner` for what only it knows (state.json, the hooks' state, the
seccomp agent).
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.linux import consts as c
from contain.process import sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups import Manager
    from contain.security.seccomp import SeccompProgram
    from contain.spec.config import Process, Spec

CREATE = "create"  # the container's init: new namespaces, the rootfs, hooks, exec.fifo
EXEC = "exec"      # a process joining a running container's namespaces


class Plan:
    """What the child does: decided by the parent before the fork, read by both sides.

    *join* lists (clone flag, namespace path) to enter; create makes the spec's other
    namespaces (*new_flags*)."""

    __slots__ = ("mode", "spec", "process", "cid", "bundle", "rootfs", "new_flags", "join",
                 "preserve_fds", "env_extra", "no_pivot", "no_new_keyring", "seccomp",
                 "stdio", "start_now", "host_binds", "keep_affinity")

    def __init__(self, mode: str, spec: Spec, process: Process, *, cid: str = "",
                 bundle: str = "", rootfs: str = "", new_flags: int = 0,
                 join: tuple[tuple[int, str], ...] = (), preserve_fds: int = 0,
                 env_extra: tuple[str, ...] = (), no_pivot: bool = False,
                 no_new_keyring: bool = False, seccomp: SeccompProgram | None = None,
                 stdio: tuple[int, int, int] | None = None, start_now: bool = True) -> None:
        self.mode = mode
        self.spec = spec
        self.process = process
        self.cid = cid
        self.bundle = bundle
        self.rootfs = rootfs
        self.new_flags = new_flags
        self.join = join
        self.preserve_fds = preserve_fds
        self.env_extra = env_extra
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.seccomp = seccomp
        self.stdio = stdio
        self.start_now = start_now  # GO says "start": no exec.fifo to wait on
        # create, in a user namespace, by root: the bind mounts the runtime may do from
        # the host when the init cannot (mount index -> the source's kind); see MOUNT
        self.host_binds: dict[int, str] = {}
        self.keep_affinity = False  # a sandbox's: no reset of the caller's CPU affinity

    @classmethod
    def for_create(cls, spec: Spec, cid: str, bundle: str, rootfs: str, *,
                   preserve_fds: int = 0, no_pivot: bool = False,
                   no_new_keyring: bool = False, seccomp: SeccompProgram | None = None,
                   stdio: tuple[int, int, int] | None = None,
                   start_now: bool = False) -> Plan:
        linux, proc = spec.linux, spec.process
        assert linux is not None and proc is not None
        new_flags = 0
        join = []
        for ns in linux.namespaces:
            flag = c.NAMESPACES[ns.type][0]
            if ns.path is None:
                new_flags |= flag
            else:
                join.append((flag, ns.path))
        env_extra: tuple[str, ...] = ()
        listen = os.environ.get("LISTEN_FDS", "")
        if listen.isdigit() and int(listen) > 0:  # socket activation: pass them on
            preserve_fds += int(listen)
            env_extra = (f"LISTEN_FDS={listen}", "LISTEN_PID=1")
        plan = cls(CREATE, spec, proc, cid=cid, bundle=bundle, rootfs=rootfs,
                   new_flags=new_flags, join=tuple(join), preserve_fds=preserve_fds,
                   env_extra=env_extra, no_pivot=no_pivot, no_new_keyring=no_new_keyring,
                   seccomp=seccomp, stdio=stdio, start_now=start_now)
        if plan.in_userns and os.geteuid() == 0 and spec.mounts:
            from contain.rootfs.mounts import host_kinds

            plan.host_binds = host_kinds(spec.mounts, bundle)
        return plan

    # -- derived --------------------------------------------------------------------------

    @property
    def new_userns(self) -> bool:
        return bool(self.new_flags & c.CLONE_NEWUSER)

    @property
    def in_userns(self) -> bool:
        """A user namespace made or joined."""
        return self.new_userns or any(flag == c.CLONE_NEWUSER for flag, _ in self.join)

    @property
    def pid_from_parent(self) -> bool:
        """Whether the parent forks the child straight into its PID namespace (a create
        with no user or time namespace in the way: see :func:`_fork`)."""
        if self.mode != CREATE or self.in_userns or self.new_flags & c.CLONE_NEWTIME:
            return False
        return bool(self.new_flags & c.CLONE_NEWPID) or any(
            flag == c.CLONE_NEWPID for flag, _ in self.join)

    @property
    def forks(self) -> bool:
        """Whether the first child (the stage) forks the process: a PID or time namespace
        it makes or joins applies only to its children."""
        if self.pid_from_parent:
            return False
        if self.new_flags & (c.CLONE_NEWPID | c.CLONE_NEWTIME):
            return True
        return any(flag in (c.CLONE_NEWPID, c.CLONE_NEWTIME) for flag, _ in self.join)

    @property
    def net_devices(self) -> bool:
        """linux.netDevices to move (create only): a NETDEV round in the protocol."""
        linux = self.spec.linux
        return self.mode == CREATE and linux is not None and bool(linux.net_devices)

    @property
    def parent_hooks(self) -> bool:
        hooks = self.spec.hooks if self.mode == CREATE else None
        return hooks is not None and bool(hooks.prestart or hooks.create_runtime)

    @property
    def container_hooks(self) -> bool:
        hooks = self.spec.hooks if self.mode == CREATE else None
        return hooks is not None and bool(hooks.create_container)

    @property
    def start_hooks(self) -> bool:
        hooks = self.spec.hooks if self.mode == CREATE else None
        return hooks is not None and bool(hooks.start_container)

    @property
    def hooks(self) -> bool:
        """Whether the init asks for the parent's hooks (HOOKS): the state it answers
        with is the one the container's own hooks get too."""
        return self.parent_hooks or self.container_hooks or self.start_hooks


class Handles:
    """The fds of one spawn, opened by the parent and closed by :meth:`close` once the
    child has what it needs. Slots left at -1 are not in use."""

    __slots__ = ("lock", "fifo", "console", "console_sock", "idmap_userns", "ns", "pidfd_sock",
                 "handover")

    def __init__(self) -> None:
        self.lock = -1             # create: flock on the container directory
        self.fifo = -1             # create: exec.fifo, O_PATH (the init opens it to start)
        self.console = -1          # the console socket's fd (not owned when borrowed)
        self.console_sock: Any = None  # a console socket we connected (owned)
        self.idmap_userns: dict[int, int] = {}  # mount index -> user namespace fd
        self.ns: list[tuple[int, int]] = []     # exec: (clone flag, namespace fd) to join
        self.pidfd_sock: Any = None  # --pidfd-socket: connected, gets the process's pidfd
        # create of a pooled sandbox: the init's end of its handover socket (not owned:
        # the pool closes it), on which the command comes after GO (init._take_over)
        self.handover = -1

    def close(self) -> None:
        for fd in (self.lock, self.fifo, *self.idmap_userns.values(),
                   *(fd for _, fd in self.ns)):
            if fd >= 0:
                os.close(fd)
        if self.console_sock is not None:
            self.console_sock.close()
        if self.pidfd_sock is not None:
            self.pidfd_sock.close()
        self.lock = self.fifo = self.console = -1
        self.console_sock = self.pidfd_sock = None
        self.idmap_userns = {}
        self.ns = []


class Spawner:
    """The parent's side of one spawn (see the sequence in process/sync.py)."""

    what = "the container's init"  # named in errors: what died, and how

    def __init__(self, plan: Plan, handles: Handles, mgr: Manager | None) -> None:
        self.plan = plan
        self.handles = handles
        self.mgr = mgr
        self.pid = 0    # the process being set up, once known
        self.stage = 0  # the stage that forks it and exits, while it lives
        self.mount_helper: MountHelper | None = None  # bind mounts from the host

    # -- the container layer's steps ----------------------------------------------------------

    def setup_cgroup(self) -> Manager | None:
        """Make the cgroup (while the child works); the manager to join, if any."""
        return self.mgr

    def run_hooks(self) -> dict[str, Any]:
        """Run the runtime's hooks (prestart, createRuntime); the state for the init's."""
        raise sync.ProtocolError("sync: no hooks in this spawn")

    def commit(self, msg: dict[str, Any]) -> None:
        """The process is ready (READY): record it before it may go on."""

    def hand_listener(self, fd: int) -> None:
        """A seccomp notify listener taken from the process: give it to the agent."""
        os.close(fd)

    def move_net_devices(self, taken: list[str]) -> list[dict[str, Any]]:
        """linux.netDevices: the child has its network namespace (NETDEV; *taken*: the
        names in it); move them in, and say what the child is to set up there."""
        raise sync.ProtocolError("sync: no network devices in this spawn")

    # -- the driver --------------------------------------------------------------------------

    def spawn(self) -> int:
        """Fork the child and drive the protocol until it is ready and told to go; the
        pid of the process. On any failure, everything forked is killed and reaped."""
        from contain.process import init

        plan = self.plan
        init.preload(plan)
        parent, child = sync.Channel.pair()
        try:
            pid = _fork(plan)
        except BaseException:
            parent.close()
            child.close()
            raise
        if pid == 0:  # the child: never returns
            parent.close()
            init.child_main(child, plan, self.handles)
        child.close()
        # the stage, which forks the process and exits; or the process itself
        self.stage, self.pid = (pid, 0) if plan.forks else (0, pid)
        try:
            self._drive(parent)
        except BaseException as exc:
            closed = isinstance(exc, (sync.ChannelClosed, ConnectionError))
            why = self._how_it_ended() if closed else ""
            self._stop()
            # the child's own report, when it failed first (and a step of ours failed
            # for that: a cgroup join of a dead process, a send to a closed channel)
            reported = parent.pending_error() if isinstance(exc, Exception) else None
            if reported is not None and not isinstance(exc, sync.ChildError):
                raise reported from exc
            if closed:
                raise ContainError(f"{self.what} {why} before it was ready") from exc
            raise
        finally:
            parent.close()
        return self.pid

    def _enter_cgroup(self, mgr: Manager | None, initial: str | None, reset: bool) -> None:
        """The process into its cgroup, with execCPUAffinity's initial mask set before
        (the join keeps it) or every CPU the cpuset allows asked for after."""
        if initial:
            set_initial_affinity(self.pid, initial)
        if mgr is not None:
            mgr.join(self.pid)
        if reset:
            reset_affinity(self.pid)

    def _drive(self, ch: sync.Channel) -> None:
        plan = self.plan
        mgr = self.setup_cgroup()
        affinity = plan.process.exec_cpu_affinity if plan.mode == EXEC else None
        initial = affinity.initial if affinity is not None else None
        # not the runtime's own affinity: every CPU the cpuset allows (see reset_affinity)
        reset = (affinity is None or not (initial or affinity.final)) and not plan.keep_affinity
        if not plan.forks:
            self._enter_cgroup(mgr, initial, reset)
        if plan.new_userns:
            ch.expect(sync.USERNS)
            write_id_maps(self.stage or self.pid, plan.spec)
            ch.send(sync.USERNS_DONE)
        if plan.forks:
            self.pid = ch.expect(sync.PID)["pid"]
            os.waitpid(self.stage, 0)
            self.stage = 0
            self._enter_cgroup(mgr, initial, reset)
        if plan.net_devices:
            taken = ch.expect(sync.NETDEV).get("taken") or []
            ch.send(sync.NETDEV_DONE, devices=self.move_net_devices(taken))
        ch.send(sync.CGROUP)
        try:
            if plan.hooks:
                self._expect_serving(ch, sync.HOOKS)
                self._close_mount_helper()  # (the rootfs is done)
                ch.send(sync.HOOKS_DONE, state=self.run_hooks())
            msg = self._expect_serving(ch, sync.READY)
        finally:
            self._close_mount_helper()
        log_warnings(msg.get("warnings"))
        if "listener_fd" in msg:
            self.hand_listener(take_fd(self.pid, msg["listener_fd"]))
        self.commit(msg)
        if self.handles.pidfd_sock is not None:
            send_pidfd(self.handles.pidfd_sock, self.pid,
                       "standard" if plan.mode == CREATE else "setns")
        ch.send(sync.GO, start=plan.start_now)

    def _expect_serving(self, ch: sync.Channel, kind: str) -> dict[str, Any]:
        """The next message of *kind*, serving the init's MOUNT requests before it (a
        create in a user namespace, while its rootfs is set up)."""
        while True:
            msg = ch.recv()
            if msg["t"] != sync.MOUNT or not self.plan.host_binds:
                break
            index = msg.get("index")
            if not isinstance(index, int) or index not in self.plan.host_binds:
                raise sync.ProtocolError(f"sync: no bind mount {index!r} to do")
            if self.mount_helper is None:
                self.mount_helper = MountHelper(self.pid, self.plan, self.handles)
            ch.send(sync.MOUNT_DONE, error=self.mount_helper.bind(index, int(msg["fd"])))
        if msg["t"] == kind:
            return msg
        if msg["t"] == sync.ERROR:
            raise sync.child_error(msg)
        raise sync.ProtocolError(f"sync: expected {kind!r}, got {msg['t']!r}")

    def _close_mount_helper(self) -> None:
        if self.mount_helper is not None:
            self.mount_helper.close()
            self.mount_helper = None

    def _how_it_ended(self) -> str:
        """'was killed by signal N' / 'exited with status N' (or less, when the process
        is not our child)."""
        import time

        pid = self.stage or self.pid
        if not pid:
            return "died"
        for _ in range(50):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return "died"
            if done:
                if self.stage:
                    self.stage = 0
                else:
                    self.pid = 0
                if os.WIFSIGNALED(status):
                    return f"was killed by signal {os.WTERMSIG(status)}"
                return f"exited with status {os.WEXITSTATUS(status)}"
            time.sleep(0.002)
        return "closed its sync channel"

    def _stop(self) -> None:
        """The one kill-and-reap path: kill the stage and the process, reap the stage
        and the process when it is our child (it is, when we are its subreaper: left a
        zombie in a container's PID namespace, it would keep that namespace's PID 1 from
        finishing its exit)."""
        for pid in (self.stage, self.pid):
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        for pid in (self.stage, self.pid):
            if pid:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        self.stage = self.pid = 0


class MountHelper:
    """A child of the runtime in the init's mount namespace, with the host's
    credentials, which binds what the init cannot (process/sync.py: MOUNT): made on
    the first request, gone when the rootfs is done. (A setns of the mount namespace
    needs a process of its own: the runtime's threads share its root and cwd.)"""

    def __init__(self, pid: int, plan: Plan, handles: Handles) -> None:
        ours, theirs = sync.Channel.pair()
        self.pid = os.fork()
        if self.pid == 0:  # the helper: never returns
            ours.close()
            code = 1
            try:
                _helper_main(theirs, pid, plan, handles)
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        self.ch = ours

    def bind(self, index: int, fd: int) -> str | None:
        """mounts[index] onto the init's fd *fd*; why not, or None when done."""
        self.ch.send(sync.MOUNT, index=index, fd=fd)
        try:
            return self.ch.expect(sync.MOUNT_DONE).get("error")
        except sync.ChannelClosed:
            return "the runtime's mount helper died"

    def close(self) -> None:
        self.ch.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _helper_main(ch: sync.Channel, pid: int, plan: Plan, handles: Handles) -> None:
    from contain.linux.syscalls import setns
    from contain.rootfs.mounts import bind_from_host

    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, c.CLONE_NEWNS)
        finally:
            os.close(fd)
    except OSError as exc:
        failed: str | None = f"entering the container's mount namespace: {exc.strerror}"
    else:
        failed = None
    while True:
        try:
            msg = ch.expect(sync.MOUNT)
        except sync.ChannelClosed:
            return
        if failed is not None:
            ch.send(sync.MOUNT_DONE, error=failed)
            continue
        index = int(msg["index"])
        try:
            bind_from_host(plan.spec.mounts[index], index, plan.bundle,
                           f"/proc/{pid}/fd/{int(msg['fd'])}",
                           handles.idmap_userns.get(index, -1))
        except ContainError as exc:
            ch.send(sync.MOUNT_DONE, error=str(exc))
        except OSError as exc:
            ch.send(sync.MOUNT_DONE, error=f"mounts[{index}]: {exc.strerror or exc}")
        else:
            ch.send(sync.MOUNT_DONE)


def reset_affinity(pid: int) -> None:
    """Let *pid* run on every CPU its cgroup's cpuset allows, not only those of the
    runtime's caller (a unit's CPUAffinity=, taskset), as runc does since 1.2.7/1.3.1.
    Joining a cpuset used to do this; since Linux 6.2 the kernel keeps a mask set by
    sched_setaffinity across the join. The kernel bounds the mask by the cpuset, and
    remembers the wide request, so a cpuset widened later widens the process's CPUs.
    A failure is a warning (runc's too): the process only keeps the caller's CPUs."""
    from contain.linux.syscalls import allow_every_cpu  # (loaded: init.preload)

    try:
        allow_every_cpu(pid)
    except OSError as exc:
        from contain import log

        log.warning(f"cannot reset the CPU affinity ({exc.strerror or exc}): the "
                    "process keeps the runtime's")


def set_initial_affinity(pid: int, cpus: str) -> None:
    """process.execCPUAffinity.initial: the CPUs the process runs on before it joins the
    container's cgroup (set here, by the parent, before the join)."""
    from contain.spec.config import parse_cpulist

    try:
        os.sched_setaffinity(pid, parse_cpulist(cpus))
    except OSError as exc:
        raise ContainError(f"process.execCPUAffinity.initial {cpus!r}: "
                           f"{exc.strerror}") from exc


def send_pidfd(sock: Any, pid: int, name: str) -> None:
    """--pidfd-socket: a pidfd of *pid* over the connected unix socket (SCM_RIGHTS, with
    *name* as the payload: "standard" for a container's init, "setns" for an exec'd
    process, the names runc sends), so the receiver can signal and wait on the process
    without the race of a reused pid."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        raise ContainError(f"--pidfd-socket: pidfd_open {pid}: {exc.strerror}") from exc
    try:
        sync.send_fd(sock.fileno(), pidfd, name)
    except OSError as exc:
        raise ContainError(f"--pidfd-socket: sending the pidfd: {exc.strerror}") from exc
    finally:
        os.close(pidfd)


def kill_and_wait(pid: int) -> None:
    """Kill *pid* (a process spawned here that must not outlive a failed command) and
    wait until it is gone, also when it is not our child; reap it when it is."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        select.select([pidfd], [], [], 10.0)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    finally:
        os.close(pidfd)


def _fork(plan: Plan) -> int:
    """Fork the child; when it needs a PID namespace and no user namespace, enter that
    namespace for our children first (unshare or setns affects only the children), so
    that the child is the namespace's PID 1 without a second fork, then come back.

    With a user namespace the PID namespace must belong to it (for /proc to be
    mountable inside), so the child makes it and forks once more; a time namespace
    needs a single-threaded setns to come back from, so it goes the same way."""
    if not plan.pid_from_parent:
        return os.fork()
    from contain.linux.syscalls import setns, unshare

    ours = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        joined = [path for flag, path in plan.join if flag == c.CLONE_NEWPID]
        if joined:
            fd = os.open(joined[0], os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, c.CLONE_NEWPID)
            except OSError as exc:
                raise ContainError(f"setns {joined[0]}: {exc.strerror}") from exc
            finally:
                os.close(fd)
        else:
            unshare(c.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            setns(ours, c.CLONE_NEWPID)
            raise
        if pid:  # only the parent goes back: the child is the new namespace's PID 1
            setns(ours, c.CLONE_NEWPID)
        return pid
    finally:
        os.close(ours)


def write_id_maps(pid: int, spec: Spec) -> None:
    linux = spec.linux
    assert linux is not None
    uid_lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in linux.uid_mappings)
    gid_lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in linux.gid_mappings)
    if os.geteuid() != 0:
        from contain.security.rootless import needs_helpers, write_maps_with_helpers

        if needs_helpers(linux.uid_mappings, linux.gid_mappings):
            write_maps_with_helpers(pid, linux.uid_mappings, linux.gid_mappings)
            return
    try:
        if os.geteuid() != 0:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(uid_lines)
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(gid_lines)
    except OSError as exc:
        raise ContainError(f"linux.uidMappings/gidMappings: writing the id maps: "
                           f"{exc.strerror}") from exc


def log_warnings(warnings: list[str] | None) -> None:
    """Warnings the child met (capabilities it could not raise ...), logged by us: the
    child's stderr is the container's."""
    if warnings:
        from contain import log

        for warning in warnings:
            text = str(warning)
            # configs written by `runc spec` list ambient capabilities without the
            # inheritable ones the kernel needs to raise them; runc 1.1 says nothing,
            # and engines show the runtime's stderr to users: keep it for --debug
            if "ambient" in text:
                log.debug(text)
            else:
                log.warning(text)


def take_fd(pid: int, fd: int) -> int:
    """Copy fd *fd* out of process *pid* (pidfd_getfd): the seccomp listener, which the
    child reports with a plain write() -- a sendmsg() could be held by its own filter."""
    from contain.linux.seccomp import pidfd_getfd

    pidfd = os.pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, fd)
    except OSError as exc:
        raise ContainError(f"cannot take the seccomp listener from {pid}: "
                           f"{exc.strerror}") from exc
    finally:
        os.close(pidfd)
