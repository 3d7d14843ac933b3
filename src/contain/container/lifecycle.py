"""The OCI lifecycle: create, start, state, kill, delete (and run = create + start + wait).

Create follows DESIGN.md: validate everything first (a bad config fails before anything
exists), claim the id, set up the cgroup, fork the init (process/init.py) and answer
its requests (id maps, hooks), write state.json once, and undo all of it on any failure.
"""

from __future__ import annotations

import os
import time

from contain.container import store
from contain.errors import ContainError, NotFound
from contain.linux import consts as c

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups import Manager
    from contain.container.store import ContainerRecord
    from contain.process.init import InitConfig
    from contain.spec.config import Spec

# sysctl prefixes and the namespace that makes them the container's own
_SYSCTL_NS = (("kernel.shm", "ipc"), ("kernel.msg", "ipc"), ("kernel.sem", "ipc"),
              ("fs.mqueue.", "ipc"), ("net.", "network"), ("kernel.hostname", "uts"),
              ("kernel.domainname", "uts"))


class CreateOptions:
    __slots__ = ("console_socket", "pid_file", "preserve_fds", "no_pivot", "no_new_keyring",
                 "console_fd", "rootless", "stdio", "start_now", "no_cgroup")

    def __init__(self, console_socket: str | None = None, pid_file: str | None = None,
                 preserve_fds: int = 0, no_pivot: bool = False, no_new_keyring: bool = False,
                 console_fd: int = -1, rootless: bool = False) -> None:
        self.console_socket = console_socket
        self.pid_file = pid_file
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.console_fd = console_fd  # an already connected console socket (run -t)
        self.rootless = rootless
        self.stdio: tuple[int, int, int] | None = None  # fds for the init's 0, 1, 2
        # run: the init goes on as soon as state.json is written, told so over the sync
        # channel -- no exec.fifo round trip (call run_poststart afterwards)
        self.start_now = False
        self.no_cgroup = False  # sandboxes without limits: no cgroup at all


def load_bundle(bundle: str) -> tuple[str, Spec]:
    from contain.spec.config import load_spec

    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if not os.path.isdir(bundle):
            raise NotFound(f"bundle {bundle}: no such directory") from None
        raise NotFound(f"{path}: no such file") from None
    except OSError as exc:
        raise ContainError(f"{path}: {exc.strerror}") from None
    return bundle, load_spec(data)


def validate(spec: Spec, bundle: str) -> str:
    """Checks that need the host (paths, namespaces, sysctls); return the rootfs path."""
    from contain.spec.decode import fail

    if spec.process is None:
        raise fail("$.process", "required field is missing")
    assert spec.root is not None
    rootfs = spec.root.path
    if not rootfs.startswith("/"):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise fail("$.root.path", f"{rootfs}: no such directory")
    linux = spec.linux
    if linux is None:
        raise fail("$.linux", "required field is missing (namespaces, ...)")
    mnt = linux.namespace("mount")
    if mnt is None:  # (runc would mount on the host's own tree, then chroot)
        raise fail("$.linux.namespaces", "a mount namespace is required")
    if mnt.path is not None and os.path.exists(mnt.path) and \
            os.stat(mnt.path).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
        # joining one by path is allowed (runc): the rootfs is set up inside it, so not
        # the runtime's own, which is the host's tree
        raise fail(f"$.linux.namespaces[{linux.namespaces.index(mnt)}].path",
                   "refused: this is the runtime's own mount namespace")
    for i, ns in enumerate(linux.namespaces):
        if ns.path is not None and not os.path.exists(ns.path):
            raise fail(f"$.linux.namespaces[{i}].path", f"{ns.path}: no such file")
        if ns.path is None and not os.path.lexists(f"/proc/self/ns/{c.NAMESPACES[ns.type][1]}"):
            # (an older or smaller kernel: no time namespace before 5.6, or one built
            # without it, as user-mode Linux is; unshare would only say EINVAL)
            raise fail(f"$.linux.namespaces[{i}].type",
                       f"this kernel has no {ns.type} namespaces")
    for key in linux.sysctl:
        if key == "kernel.hostname":  # (runc refuses it too; kernel.domainname has no field)
            raise fail(f"$.linux.sysctl.{key}", "refused: set the hostname with the "
                       "hostname field")
        owner = next((ns for prefix, ns in _SYSCTL_NS if key.startswith(prefix)), None)
        if owner is None or linux.namespace(owner) is None:
            why = ("it is not in a namespace of its own" if owner is None else
                   f"the container has no {owner} namespace of its own")
            raise fail(f"$.linux.sysctl.{key}", f"refused: {why}")
    if spec.process.apparmor_profile or spec.process.selinux_label:
        from contain.security.lsm import check

        check(spec.process)
    if os.geteuid() != 0 and linux.namespace("user") is not None:
        from contain.security.rootless import check_mappings

        check_mappings(linux.uid_mappings, os.geteuid(), "/etc/subuid", "$.linux.uidMappings")
        check_mappings(linux.gid_mappings, os.getegid(), "/etc/subgid", "$.linux.gidMappings")
    return rootfs


def seccomp_cache(root: str) -> str:
    """Compiled seccomp programs are kept under the state root (libseccomp takes
    15-25 ms to compile the default profile; a cached program is one read)."""
    return os.path.join(root, ".seccomp-cache")


def _now_rfc3339() -> str:
    t = time.time()
    ns = int((t % 1) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ns:09d}Z"


def _owner() -> str:
    uid = os.geteuid()
    if uid == 0:
        return "root"
    from contain.passwd import name_of

    return name_of(uid) or str(uid)


def create(root: str, cid: str, bundle: str, opts: CreateOptions | None = None,
           spec: Spec | None = None) -> ContainerRecord:
    """Create container *cid* from *bundle* (or from *spec*, with *bundle* as its
    directory); the init is left blocked on exec.fifo until start()."""
    opts = opts or CreateOptions()
    store.validate_id(cid)
    if spec is None:
        bundle, spec = load_bundle(bundle)
    else:
        bundle = os.path.abspath(bundle)
    rootfs = validate(spec, bundle)
    proc = spec.process
    linux = spec.linux
    assert proc is not None and linux is not None
    if proc.terminal and not opts.console_socket and opts.console_fd < 0:
        raise ContainError("cannot allocate tty if contain will detach without setting "
                           "console socket")
    if not proc.terminal and opts.console_socket:
        raise ContainError("cannot use console socket if contain will not detach or "
                           "allocate tty")
    if proc.capabilities is not None:
        from contain import log
        from contain.security.capabilities import check_capabilities

        # a name that is no capability at all is refused; one this kernel lacks is
        # warned about and skipped, as runc does
        for warning in check_capabilities(proc.capabilities, "$.process.capabilities",
                                          strict=True):
            log.warning(warning)
    seccomp = None
    if linux.seccomp is not None:
        from contain.security.seccomp import compile_filter

        seccomp = compile_filter(linux.seccomp, cache_dir=seccomp_cache(root))
    cfg = _init_config(spec, cid, bundle, rootfs, opts, seccomp)
    rootless = opts.rootless or os.geteuid() != 0
    mgr = None
    if (not rootless or linux.cgroups_path) and not opts.no_cgroup:
        from contain.cgroups import new_manager

        try:
            mgr = new_manager(linux.cgroups_path, cid, rootless=rootless)
            mgr.validate(linux.resources)
        except ContainError as exc:
            if not rootless:
                raise
            # as runc's rootless mode: without a delegated cgroup, run without one
            from contain import log

            log.warning(f"rootless: running without a cgroup, resources not applied ({exc})")
            mgr = None
        if not rootless:
            from contain.cgroups import warm

            warm.start()  # if the command has not already
    try:
        return _create(root, cid, bundle, opts, spec, rootfs, cfg, mgr, rootless)
    finally:
        if mgr is not None:
            from contain.cgroups import warm

            warm.stop()


def _create(root: str, cid: str, bundle: str, opts: CreateOptions, spec: Spec, rootfs: str,
            cfg: InitConfig, mgr: Manager | None, rootless: bool) -> ContainerRecord:
    path = store.claim(root, cid)
    record = store.ContainerRecord(root, cid, {})
    pid = 0
    console_sock = None
    # Held until create is done (the child closes its copy at once): a concurrent
    # start/delete waits for us; if we are killed halfway, the lock goes with us and
    # `delete` finds the cgroup to remove in the provisional state.json.
    lock = store.Lock(path).__enter__()
    cfg.close_in_child = lock.fd
    try:
        record.bundle = bundle
        record.rootfs = rootfs
        record.cgroup = mgr.to_json() if mgr is not None else None
        store.save(record)
        if not opts.start_now:
            fifo = os.path.join(path, store.FIFO_NAME)
            os.mkfifo(fifo, 0o600)
            _hand_fifo_to_process(fifo, spec)
            cfg.fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        if opts.console_socket:
            from contain.process.sync import connect_unix

            console_sock = connect_unix(opts.console_socket)
            cfg.console_fd = console_sock.fileno()
        elif opts.console_fd >= 0:
            cfg.console_fd = opts.console_fd
        if any(m.uid_mappings for m in spec.mounts):
            from contain.rootfs.idmap import userns_fd_for

            for i, m in enumerate(spec.mounts):
                if m.uid_mappings:
                    cfg.idmap_userns[i] = userns_fd_for(m.uid_mappings, m.gid_mappings)
        record.created = _now_rfc3339()
        record.owner = _owner()
        record.annotations = spec.annotations
        record.config = spec.raw
        pid = _spawn(cfg, record, spec, mgr, rootless)
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        if record.cgroup is not None and mgr is not None:
            try:
                mgr.destroy()
            except Exception:
                pass
        store.remove_dir(path)
        raise
    finally:
        lock.__exit__()
        for fd in cfg.idmap_userns.values():
            os.close(fd)
        if cfg.fifo_fd >= 0:
            os.close(cfg.fifo_fd)
        if console_sock is not None:
            console_sock.close()
    if opts.pid_file:
        write_pid_file(opts.pid_file, record.pid)
    return record


def _hand_fifo_to_process(fifo: str, spec: Spec) -> None:
    """The init opens exec.fifo for writing after it has become process.user: give the
    fifo to that user's host ids (0600), or make it writable by all (0622, as runc) when
    they cannot be known (a joined user namespace) or given (rootless)."""
    proc, linux = spec.process, spec.linux
    assert proc is not None and linux is not None
    uid, gid = proc.user.uid, proc.user.gid
    userns = linux.namespace("user")
    if userns is not None:
        if userns.path is not None:
            os.chmod(fifo, 0o622)
            return
        uid = _host_id(linux.uid_mappings, uid)
        gid = _host_id(linux.gid_mappings, gid)
    if uid == os.geteuid() and gid == os.getegid():
        return
    try:
        if uid < 0 or gid < 0:
            raise PermissionError
        os.chown(fifo, uid, gid)
    except PermissionError:
        os.chmod(fifo, 0o622)


def _host_id(maps: Any, cid: int) -> int:
    for m in maps:
        if m.container_id <= cid < m.container_id + m.size:
            return int(m.host_id + cid - m.container_id)
    return -1


def _init_config(spec: Spec, cid: str, bundle: str, rootfs: str, opts: CreateOptions,
                 seccomp: Any) -> InitConfig:
    from contain.process.init import InitConfig

    linux = spec.linux
    assert linux is not None
    cfg = InitConfig(spec, cid, bundle, rootfs)
    for ns in linux.namespaces:
        flag = c.NAMESPACES[ns.type][0]
        if ns.path is None:
            cfg.new_flags |= flag
        else:
            cfg.join.append((flag, ns.path))
    cfg.new_userns = bool(cfg.new_flags & c.CLONE_NEWUSER)
    cfg.preserve_fds = opts.preserve_fds
    listen = os.environ.get("LISTEN_FDS", "")
    if listen.isdigit() and int(listen) > 0:
        cfg.preserve_fds += int(listen)
        cfg.env_extra = [f"LISTEN_FDS={listen}", "LISTEN_PID=1"]
    cfg.no_pivot = opts.no_pivot
    cfg.stdio = opts.stdio
    cfg.no_new_keyring = opts.no_new_keyring
    cfg.seccomp = seccomp
    hooks = spec.hooks
    if hooks is not None:
        cfg.parent_hooks = bool(hooks.prestart or hooks.create_runtime)
        cfg.container_hooks = bool(hooks.create_container)
        cfg.start_hooks = bool(hooks.start_container)
    return cfg


def _fork_into_pid_namespace(cfg: InitConfig) -> int:
    """Fork the child; when it needs a PID namespace and no user namespace, enter that
    namespace for our children first (unshare or setns affects only the children), so
    that the child is the namespace's PID 1 without a second fork, then come back.

    With a user namespace the PID namespace must belong to it (for /proc to be
    mountable inside), so the child makes it and forks once more; a time namespace
    needs a single-threaded setns to come back from, so it goes the same way."""
    if not cfg.pid_from_parent():
        return os.fork()
    from contain.linux.syscalls import setns, unshare

    ours = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        joined = [path for flag, path in cfg.join if flag == c.CLONE_NEWPID]
        if joined:
            fd = os.open(joined[0], os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, c.CLONE_NEWPID)
            except OSError as exc:
                raise ContainError(f"setns {joined[0]}: {exc.strerror}") from None
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


def _setup_cgroup(mgr: Manager, spec: Spec, record: ContainerRecord, rootless: bool) -> bool:
    """Create the cgroup and write its limits (while the child unshares); False when a
    rootless user cannot have one (then the container runs without, with a warning)."""
    linux = spec.linux
    assert linux is not None
    record.cgroup = mgr.to_json()
    try:
        mgr.create()
        mgr.set(linux.resources, linux_device_paths=[d.path for d in linux.devices])
    except (PermissionError, ContainError) as exc:
        if not rootless:
            raise
        from contain import log

        log.warning(f"rootless: running without a cgroup, resources not applied ({exc})")
        try:
            mgr.destroy()
        except (OSError, ContainError):
            pass
        record.cgroup = None
        return False
    return True


def _spawn(cfg: InitConfig, record: ContainerRecord, spec: Spec, mgr: Manager | None,
           rootless: bool) -> int:
    """Fork the init and drive the sync protocol until it is ready; return its pid.

    The cgroup is made, limited and joined here in the parent while the child works:
    attaching a task to a v1 hierarchy waits for an RCU grace period (~10 ms), which
    then overlaps the child's namespace and mount work instead of adding to it."""
    from contain.process.init import preload
    from contain.process.sync import Channel, ChannelClosed

    cfg.cgroup_sync = mgr is not None
    preload(cfg)
    parent, child = Channel.pair()
    pid = _fork_into_pid_namespace(cfg)
    if pid == 0:  # the child: never returns
        parent.close()
        from contain.process.init import child_main

        child_main(child, cfg)
    child.close()
    init_pid = pid
    # the intermediate child that forks the init and exits (0: the child is the init,
    # which must not be reaped here: `run` waits for its exit status)
    stage_pid = pid if cfg.forks() else 0
    joined = False
    try:
        if mgr is not None and not _setup_cgroup(mgr, spec, record, rootless):
            mgr = None
            parent.send({"t": "cgroup"})
        if mgr is not None and not cfg.forks():
            mgr.join(init_pid)
            parent.send({"t": "cgroup"})
            joined = True
        while True:
            msg, fds = parent.recv()
            kind = msg.get("t")
            if kind == "userns":
                _write_id_maps(pid, spec)
                parent.send({"t": "ok"})
            elif kind == "pid":
                init_pid = msg["pid"]
                if mgr is not None and not joined:
                    mgr.join(init_pid)
                    parent.send({"t": "cgroup"})
                    joined = True
                os.waitpid(stage_pid, 0)
                stage_pid = 0
            elif kind == "hooks":
                record.pid = init_pid
                state = record.hook_state("creating")
                hooks = spec.hooks
                if hooks is not None:
                    from contain.process.hooks import run_hooks

                    run_hooks("prestart", hooks.prestart, state)
                    run_hooks("createRuntime", hooks.create_runtime, state)
                parent.send({"t": "ok", "state": record.hook_state("created")})
            elif kind == "ready":
                record.pid = init_pid
                start = store.process_start_time(init_pid)
                if start is None:
                    raise ContainError("the container's init exited before it was ready")
                record.init_start = start
                log_warnings(msg)
                if "listener_fd" in msg:
                    _hand_to_seccomp_agent(spec, record, take_fd(init_pid, msg["listener_fd"]))
                store.save(record)
                parent.send({"t": "committed", "start": cfg.fifo_fd < 0})
                return init_pid
            elif kind == "error":
                for fd in fds:
                    os.close(fd)
                raise ContainError(str(msg.get("msg")))
            else:
                raise ContainError(f"sync: unexpected message {kind!r} from init")
    except (ConnectionError, ContainError) as exc:
        if isinstance(exc, ContainError) and not isinstance(exc, ChannelClosed):
            _stop_child(stage_pid, init_pid)
            raise
        # the child went away without a word: say how it ended
        why = _how_it_ended(stage_pid or init_pid)
        _stop_child(stage_pid, init_pid)
        raise ContainError(f"the container's init {why} before it was ready") from None
    except BaseException:
        _stop_child(stage_pid, init_pid)
        raise
    finally:
        parent.close()
        if stage_pid:
            try:
                os.waitpid(stage_pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _stop_child(stage_pid: int, init_pid: int) -> None:
    """Kill what create forked; reap what is ours (the stage, or the init when there is
    no stage: a grandchild init is reaped by whoever it was reparented to)."""
    if stage_pid:
        _kill_and_reap(stage_pid)
        if init_pid != stage_pid:
            _kill(init_pid)
    else:
        _kill_and_reap(init_pid)


def _how_it_ended(pid: int) -> str:
    """'was killed by signal N' / 'exited with status N' for our child *pid*."""
    import time

    for _ in range(50):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "died"
        if done:
            if os.WIFSIGNALED(status):
                return f"was killed by signal {os.WTERMSIG(status)}"
            return f"exited with status {os.WEXITSTATUS(status)}"
        time.sleep(0.002)
    return "closed its channel"


def log_warnings(msg: dict[str, Any]) -> None:
    """Warnings the child met (capabilities it could not raise ...), logged by us: the
    child's stderr is the container's."""
    if msg.get("warnings"):
        from contain import log

        for warning in msg["warnings"]:
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
        raise ContainError(f"cannot take the seccomp listener from the init: "
                           f"{exc.strerror}") from None
    finally:
        os.close(pidfd)


def _hand_to_seccomp_agent(spec: Spec, record: ContainerRecord, fd: int) -> None:
    from contain.security.seccomp import send_listener

    linux = spec.linux
    assert linux is not None and linux.seccomp is not None
    try:
        send_listener(linux.seccomp.listener_path or "", fd, record.hook_state("running"),
                      linux.seccomp.listener_metadata)
    finally:
        os.close(fd)


def _write_id_maps(pid: int, spec: Spec) -> None:
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
                           f"{exc.strerror}") from None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _kill_and_reap(pid: int) -> None:
    _kill(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def write_pid_file(path: str, pid: int) -> None:
    """Write the pid file atomically (engines read it as soon as create returns)."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)
