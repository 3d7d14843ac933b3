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
from contain.process.spawn import Spawner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups import Manager
    from contain.container.store import ContainerRecord
    from contain.process.spawn import Handles, Plan
    from contain.spec.config import Spec

# sysctl prefixes and the namespace that makes them the container's own
# OCI namespace type -> /proc/self/ns entry (linux.consts.NAMESPACES has the same)
NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
            "user": "user", "cgroup": "cgroup", "time": "time"}
_SYSCTL_NS = (("kernel.shm", "ipc"), ("kernel.msg", "ipc"), ("kernel.sem", "ipc"),
              ("fs.mqueue.", "ipc"), ("net.", "network"), ("kernel.hostname", "uts"),
              ("kernel.domainname", "uts"), ("user.", "user"))


class CreateOptions:
    __slots__ = ("console_socket", "pid_file", "preserve_fds", "no_pivot", "no_new_keyring",
                 "console_fd", "rootless", "stdio", "start_now", "no_cgroup", "pidfd_socket",
                 "handover", "systemd_cgroup", "keep_affinity")

    def __init__(self, console_socket: str | None = None, pid_file: str | None = None,
                 preserve_fds: int = 0, no_pivot: bool = False, no_new_keyring: bool = False,
                 console_fd: int = -1, rootless: bool = False,
                 pidfd_socket: str | None = None) -> None:
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
        self.pidfd_socket = pidfd_socket  # a unix socket to send the init's pidfd to
        # a pooled sandbox (contain.sandbox.pool): the init's end of a SOCK_SEQPACKET
        # pair, on which it waits after GO for its command and stdio (not closed here)
        self.handover = -1
        self.systemd_cgroup = False  # --systemd-cgroup: the cgroup is a systemd scope
        # a sandbox: the command keeps its caller's CPU affinity (`taskset ... contain
        # sandbox` pins it, as it would any command); an engine's container does not
        self.keep_affinity = False


def load_bundle(bundle: str) -> tuple[str, Spec]:
    from contain.spec.config import load_spec

    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        if not os.path.isdir(bundle):
            raise NotFound(f"bundle {bundle}: no such directory") from exc
        raise NotFound(f"{path}: no such file") from exc
    except OSError as exc:
        raise ContainError(f"{path}: {exc.strerror}") from exc
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
        if ns.path is None and not os.path.lexists(f"/proc/self/ns/{NS_FILES[ns.type]}"):
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
    if linux.net_devices:
        netns = linux.namespace("network")
        _check_net_devices(linux.net_devices, new_netns=netns is not None and not netns.path)
    if linux.memory_policy is not None:
        _check_memory_policy(linux.memory_policy)
    if linux.intel_rdt is not None:
        from contain.container import rdt

        rdt.check(linux.intel_rdt)
    if spec.process.apparmor_profile or spec.process.selinux_label:
        from contain.security.lsm import check

        check(spec.process)
    if os.geteuid() != 0 and linux.namespace("user") is not None:
        from contain.security.rootless import check_mappings

        check_mappings(linux.uid_mappings, os.geteuid(), "/etc/subuid", "$.linux.uidMappings")
        check_mappings(linux.gid_mappings, os.getegid(), "/etc/subgid", "$.linux.gidMappings")
    return rootfs


def _check_net_devices(devices: dict[str, Any], new_netns: bool) -> None:
    """linux.netDevices: the runtime (root) moves them from its own network namespace,
    so each must be there now. The kernel renames a device after it has moved it: a name
    taken inside fails only then, and the device is lost with the namespace; a new
    namespace holds only lo, so that case is refused here."""
    from contain.spec.decode import fail, key

    for host, dev in devices.items():
        if new_netns and (dev.name or host) == "lo":
            raise fail(f"$.linux.netDevices.{key(host)}" + (".name" if dev.name else ""),
                       "lo is the name of the new network namespace's loopback")

    if os.geteuid() != 0:
        raise fail("$.linux.netDevices", "moving network devices needs root (not "
                   "supported for rootless containers)")
    from contain.linux.netlink import link_index

    for host in devices:
        try:
            link_index(host)
        except OSError as exc:
            raise fail(f"$.linux.netDevices.{key(host)}", "no such network device in the "
                       "runtime's network namespace") from exc


def _check_memory_policy(policy: Any) -> None:
    """linux.memoryPolicy: the nodes must exist here (set_mempolicy would say only
    EINVAL); relative nodes (MPOL_F_RELATIVE_NODES) are positions, not node numbers."""
    from contain.spec.decode import fail

    if not policy.nodes or "MPOL_F_RELATIVE_NODES" in policy.flags:
        return
    try:
        with open("/sys/devices/system/node/online") as f:
            online_text = f.read().strip()
    except OSError as exc:
        raise fail("$.linux.memoryPolicy", "this kernel has no NUMA support "
                   "(/sys/devices/system/node is missing)") from exc
    from contain.spec.config import parse_cpulist

    online = parse_cpulist(online_text)
    missing = sorted(policy.node_set() - online)
    if missing:
        raise fail("$.linux.memoryPolicy.nodes", f"node {missing[0]} is not online on this "
                   f"host (online: {online_text})")


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
    if opts.pid_file:
        check_pid_file(opts.pid_file)
    proc = spec.process
    linux = spec.linux
    assert proc is not None and linux is not None
    check_console(proc.terminal, opts.console_socket, opts.console_fd)
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
    from contain.process.spawn import Plan

    plan = Plan.for_create(spec, cid, bundle, rootfs, preserve_fds=opts.preserve_fds,
                           no_pivot=opts.no_pivot, no_new_keyring=opts.no_new_keyring,
                           seccomp=seccomp, stdio=opts.stdio, start_now=opts.start_now)
    plan.keep_affinity = opts.keep_affinity
    rootless = opts.rootless or os.geteuid() != 0
    mgr = None
    if (not rootless or linux.cgroups_path) and not opts.no_cgroup:
        from contain.cgroups import new_manager

        try:
            mgr = new_manager(linux.cgroups_path, cid, rootless=rootless,
                              systemd=opts.systemd_cgroup)
            mgr.validate(linux.resources)
        except ContainError as exc:
            if not rootless:
                raise
            # as runc's rootless mode: without a delegated cgroup, run without one
            from contain import log

            log.warning(f"rootless: running without a cgroup, resources not applied ({exc})")
            mgr = None
    try:
        return _create(root, plan, opts, mgr, rootless)
    finally:
        import sys

        # the command's warming, if any (then its module is loaded): attached, or given up
        warm = sys.modules.get("contain.cgroups.warm")
        if warm is not None:
            warm.stop()


def _create(root: str, plan: Plan, opts: CreateOptions, mgr: Manager | None,
            rootless: bool) -> ContainerRecord:
    from contain.process.spawn import Handles

    spec, cid = plan.spec, plan.cid
    record = store.ContainerRecord(root, cid, {})
    record.bundle = plan.bundle
    record.rootfs = plan.rootfs
    record.cgroup = mgr.to_json() if mgr is not None else None
    # Published locked, with the provisional state.json, and held until create is done
    # (the child closes its copy at once): a concurrent start/delete waits for us; if
    # we are killed halfway, the lock goes with us and `delete` finds the cgroup to
    # remove in the provisional state.json.
    lock = store.claim(record)
    path = record.dir
    # every fd of this create: closed below, whatever happens
    fds = Handles()
    fds.lock, lock.fd = lock.fd, -1
    fds.handover = opts.handover
    try:
        if not plan.start_now:
            fifo = os.path.join(path, store.FIFO_NAME)
            os.mkfifo(fifo, 0o600)
            _hand_fifo_to_process(fifo, spec)
            fds.fifo = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        if opts.console_socket:
            from contain.process.sync import connect_unix

            fds.console_sock = connect_unix(opts.console_socket)
            fds.console = fds.console_sock.fileno()
        elif opts.console_fd >= 0:
            fds.console = opts.console_fd
        if opts.pidfd_socket:
            from contain.process.sync import connect_unix

            fds.pidfd_sock = connect_unix(opts.pidfd_socket, "--pidfd-socket")
        if any(m.uid_mappings for m in spec.mounts):
            from contain.rootfs.idmap import userns_fd_for

            for i, m in enumerate(spec.mounts):
                if m.uid_mappings:
                    fds.idmap_userns[i] = userns_fd_for(m.uid_mappings, m.gid_mappings)
        record.created = _now_rfc3339()
        record.owner = _owner()
        record.annotations = spec.annotations
        record.config = spec.raw
        _CreateSpawner(plan, fds, mgr, record, rootless).spawn()
        if opts.pid_file:  # a failure here undoes the container like any other
            write_pid_file(opts.pid_file, record.pid)
    except BaseException:
        if record.pid:  # spawned, then something after it failed (the pid file)
            from contain.process.spawn import kill_and_wait

            kill_and_wait(record.pid)
        if record.cgroup is not None and mgr is not None:
            try:
                mgr.destroy()
            except Exception:
                pass
        if record.extra.get("rdt"):
            from contain.container.rdt import remove

            remove(record.extra["rdt"])
        store.remove_dir(path)
        raise
    finally:
        fds.close()
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


class _CreateSpawner(Spawner):
    """create's steps in the spawn: the cgroup made while the child unshares, the
    runtime's hooks, state.json written before the init may go on."""

    def __init__(self, plan: Plan, fds: Handles, mgr: Manager | None, record: ContainerRecord,
                 rootless: bool) -> None:
        super().__init__(plan, fds, mgr)
        self.record = record
        self.rootless = rootless

    def setup_cgroup(self) -> Manager | None:
        """Create the cgroup and write its limits (while the child unshares): attaching
        a task to a v1 hierarchy waits for an RCU grace period (~10 ms), which then
        overlaps the child's namespace and mount work instead of adding to it. None when
        a rootless user cannot have one (then the container runs without, with a
        warning)."""
        mgr = self.mgr
        if mgr is None:
            return None
        linux = self.plan.spec.linux
        assert linux is not None
        try:
            mgr.create()
            mgr.set(linux.resources, linux_device_paths=[d.path for d in linux.devices])
        except (PermissionError, ContainError) as exc:
            if not self.rootless:
                raise
            from contain import log

            log.warning(f"rootless: running without a cgroup, resources not applied ({exc})")
            try:
                mgr.destroy()
            except (OSError, ContainError):
                pass
            self.record.cgroup = None
            return None
        return mgr

    def run_hooks(self) -> dict[str, Any]:
        record = self.record
        record.pid = self.pid
        hooks = self.plan.spec.hooks
        if hooks is not None and (hooks.prestart or hooks.create_runtime):
            from contain.process.hooks import run_hooks

            state = record.hook_state("creating")
            run_hooks("prestart", hooks.prestart, state)
            run_hooks("createRuntime", hooks.create_runtime, state)
        return record.hook_state("created")

    def move_net_devices(self, taken: list[str]) -> list[dict[str, Any]]:
        linux = self.plan.spec.linux
        assert linux is not None
        return move_net_devices(self.pid, linux.net_devices, taken)

    def hand_listener(self, fd: int) -> None:
        from contain.security.seccomp import send_listener

        linux = self.plan.spec.linux
        assert linux is not None and linux.seccomp is not None
        self.record.pid = self.pid
        try:
            send_listener(linux.seccomp.listener_path or "", fd,
                          self.record.hook_state("running"), linux.seccomp.listener_metadata)
        finally:
            os.close(fd)

    def commit(self, msg: dict[str, Any]) -> None:
        record = self.record
        record.pid = self.pid
        start = store.process_start_time(self.pid)
        if start is None:
            raise ContainError(f"{self.what} exited before it was ready")
        record.init_start = start
        linux = self.plan.spec.linux
        if linux is not None and linux.intel_rdt is not None:
            from contain.container.rdt import apply

            record.extra["rdt"] = apply(linux.intel_rdt, record.id, self.pid)
        store.save(record)


def move_net_devices(pid: int, devices: dict[str, Any],
                     taken: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """linux.netDevices: move each device from our network namespace into that of *pid*
    (renamed in the same request), as runc does: down first, its permanent global
    addresses noted (the kernel drops them on the move), for the init to add back and
    set the device up. A failure leaves the devices already moved where they are: the
    kernel returns physical devices to the host when the namespace goes (virtual ones
    go with it), as the spec says."""
    from contain.linux.netlink import IFA_F_PERMANENT, RT_SCOPE_UNIVERSE, Route, link_index

    for host, dev in devices.items():  # (before any move: the kernel renames after it)
        name = dev.name or host
        if "%d" not in name and name in taken:
            raise ContainError(f"linux.netDevices.{host}: {name} exists in the container's "
                               "network namespace already")
    out = []
    ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with Route() as route:
            for host, dev in devices.items():
                name = dev.name or host
                try:
                    index = link_index(host)
                    addrs = [a.to_json() for a in route.addresses(index)
                             if a.flags & IFA_F_PERMANENT and a.scope == RT_SCOPE_UNIVERSE]
                    route.set_up(index, False)
                    route.move(index, name, ns_fd)
                except OSError as exc:
                    raise ContainError(f"linux.netDevices.{host}: moving it into the "
                                       f"container as {name}: {exc.strerror}") from exc
                out.append({"host": host, "name": name, "index": index, "addrs": addrs})
    finally:
        os.close(ns_fd)
    return out


def check_console(terminal: bool, console_socket: str | None, console_fd: int) -> None:
    """A terminal needs a console socket (or run's own console), and a socket a terminal."""
    if terminal and not console_socket and console_fd < 0:
        raise ContainError("cannot allocate tty if contain will detach without setting "
                           "console socket")
    if not terminal and console_socket:
        raise ContainError("cannot use console socket if contain will not detach or "
                           "allocate tty")


def check_pid_file(path: str) -> None:
    """Before anything is created: the pid file's directory must exist."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ContainError(f"--pid-file {path}: no such directory {parent}")


def write_pid_file(path: str, pid: int) -> None:
    """Write the pid file atomically (engines read it as soon as create returns)."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ContainError(f"--pid-file {path}: {exc.strerror}") from exc
