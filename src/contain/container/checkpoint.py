"""Checkpoint and restore a container with CRIU (runc's ``checkpoint`` and ``restore``).

checkpoint: ``criu dump`` of the container's process tree into an image directory. The
mounts that come from the host (every bind mount of config.json, the /dev/null bound over
masked files) are marked external with their destination as the key, a network namespace
joined by path is marked external, a terminal is marked external, and the links of the
init's fds 0-2 are kept in ``descriptors.json`` beside the images. Unless
``--leave-running`` (or ``--pre-dump``), CRIU kills the tree and the container is then
destroyed as runc does it (its cgroup and state go; poststop hooks run), so that restore
can take the id again.

restore: the id is claimed and the cgroup made as create does; the rootfs is bound on a
private directory of the container's state (CRIU wants a mount point as root), and
``criu restore`` brings the tree back as a sibling of itself (so a child of contain, which
is a subreaper when it stays in the foreground), in the new cgroup, with the external
mounts bound from their sources in config.json, the network namespace handed in by fd,
fds 0-2 of stdio pipes taken from ours and a terminal's slave from a new pty whose master
goes to --console-socket. state.json then names the restored init.
"""

from __future__ import annotations

import contextlib
import os

from contain.container import criu as _criu
from contain.container import store
from contain.errors import ContainError, NotFound, WrongState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from contain.cgroups import Manager
    from contain.container.store import ContainerRecord
    from contain.spec.config import Spec

DESCRIPTORS = "descriptors.json"  # fds 0-2 of the init at dump time (runc's name)
NETNS_KEY = "extRootNetNS"  # the key of a joined network namespace (as runc's)
TTY_KEY = "contain-tty-key"  # the key of the dumped terminal, for restore
CGROUP_BINDS = "contain-cgroup-binds.json"  # the container's binds of its own cgroup
DEV_BINDS = "contain-dev-binds.json"  # host device nodes bound in (a user namespace)


class CheckpointOptions:
    """The flags of ``contain checkpoint`` (and the ones restore shares)."""

    __slots__ = ("image_path", "work_path", "parent_path", "leave_running", "tcp_established",
                 "tcp_skip_in_flight", "link_remap", "ext_unix_sk", "shell_job", "file_locks",
                 "pre_dump", "manage_cgroups_mode", "lazy_pages", "status_fd", "page_server",
                 "empty_ns", "auto_dedup", "criu")

    def __init__(self, image_path: str = "", work_path: str = "", parent_path: str = "",
                 leave_running: bool = False, tcp_established: bool = False,
                 tcp_skip_in_flight: bool = False, link_remap: bool = False,
                 ext_unix_sk: bool = False, shell_job: bool = False, file_locks: bool = False,
                 pre_dump: bool = False, manage_cgroups_mode: str = "",
                 lazy_pages: bool = False, status_fd: int = -1, page_server: str = "",
                 empty_ns: tuple[str, ...] = (), auto_dedup: bool = False,
                 criu: str = "criu") -> None:
        self.image_path = image_path
        self.work_path = work_path
        self.parent_path = parent_path
        self.leave_running = leave_running
        self.tcp_established = tcp_established
        self.tcp_skip_in_flight = tcp_skip_in_flight
        self.link_remap = link_remap
        self.ext_unix_sk = ext_unix_sk
        self.shell_job = shell_job
        self.file_locks = file_locks
        self.pre_dump = pre_dump
        self.manage_cgroups_mode = manage_cgroups_mode
        self.lazy_pages = lazy_pages
        self.status_fd = status_fd
        self.page_server = page_server
        self.empty_ns = empty_ns
        self.auto_dedup = auto_dedup
        self.criu = criu


class RestoreOptions(CheckpointOptions):
    __slots__ = ("console_socket", "pid_file", "detach", "no_pivot", "lsm_profile",
                 "lsm_mount_context", "rootless", "console_fd")

    def __init__(self, console_socket: str | None = None, pid_file: str | None = None,
                 detach: bool = False, no_pivot: bool = False, lsm_profile: str = "",
                 lsm_mount_context: str = "", rootless: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.console_socket = console_socket
        self.pid_file = pid_file
        self.detach = detach
        self.no_pivot = no_pivot
        self.lsm_profile = lsm_profile
        self.lsm_mount_context = lsm_mount_context
        self.rootless = rootless
        # a connected socket to send a terminal's master to (a foreground restore
        # relays it itself, as run does)
        self.console_fd = -1


# -- shared checks ---------------------------------------------------------------------


def _check_common(opts: CheckpointOptions) -> None:
    """Flag values checked before anything is touched."""
    if opts.manage_cgroups_mode and opts.manage_cgroups_mode not in _criu.CGROUP_MODES:
        raise ContainError(f"--manage-cgroups-mode {opts.manage_cgroups_mode!r}: expected "
                           f"one of {', '.join(_criu.CGROUP_MODES)}")
    for ns in opts.empty_ns:
        if ns != "network":
            raise ContainError(f"--empty-ns {ns!r}: only network is supported (as runc)")
    if opts.page_server:
        _, sep, port = opts.page_server.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ContainError(f"--page-server {opts.page_server!r}: expected ADDRESS:PORT")


def _work_dir(opts: CheckpointOptions, image: str) -> str:
    """--work-path (where CRIU writes its log), default the image directory; it must
    exist (runc creates it; so does contain, one level only)."""
    if not opts.work_path:
        return image
    work = os.path.abspath(opts.work_path)
    _make_dir(work, "--work-path")
    return work


def _make_dir(path: str, flag: str) -> bool:
    """mkdir *path* (0700) if missing; True if it was made here. Its parent must exist:
    a mistyped path fails instead of growing a tree of directories."""
    try:
        os.mkdir(path, 0o700)
        return True
    except FileExistsError:
        if not os.path.isdir(path):
            raise ContainError(f"{flag} {path}: not a directory") from None
        return False
    except OSError as exc:
        raise ContainError(f"{flag} {path}: {exc.strerror}") from exc


def _criu_common(opts: CheckpointOptions) -> list[str]:
    out = []
    if opts.tcp_established:
        out.append("--tcp-established")
    if opts.ext_unix_sk:
        out.append("--ext-unix-sk")
    if opts.shell_job:
        out.append("--shell-job")
    if opts.file_locks:
        out.append("--file-locks")
    if opts.manage_cgroups_mode:
        out.append(f"--manage-cgroups={opts.manage_cgroups_mode}")
    else:
        out.append("--manage-cgroups")
    if opts.auto_dedup:
        out.append("--auto-dedup")
    if opts.lazy_pages:
        out.append("--lazy-pages")
    return out


def _bind_mounts(spec: Spec, bundle: str) -> list[tuple[str, str]]:
    """(destination, host source) of every bind mount of config.json."""
    from contain.rootfs.mounts import parse_options

    out = []
    for m in spec.mounts:
        if m.type == "bind" or parse_options(m.options).is_bind:
            src = m.source or ""
            out.append((m.destination, src if src.startswith("/") else
                        os.path.join(bundle, src)))
    return out


def _masked_files(spec: Spec, pid: int) -> list[str]:
    """The masked paths that are files in the container (/dev/null is bound on them;
    directories get a tmpfs, which CRIU saves itself)."""
    linux = spec.linux
    out = []
    for path in (linux.masked_paths if linux is not None else []):
        try:
            st = os.stat(f"/proc/{pid}/root{path}")
        except OSError:
            continue
        import stat

        if not stat.S_ISDIR(st.st_mode):
            out.append(path)
    return out


def _dev_binds(pid: int) -> dict[str, str]:
    """Mount point -> host path of the host's device nodes bound into the container
    (with a user namespace, create binds them instead of mknod): external to CRIU."""
    out = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "devtmpfs" and fields[3] != "/":
                out[fields[4]] = "/dev" + fields[3]
    return out


def _read_json(image: str, name: str) -> Any:
    from contain.jsonio import loads

    try:
        with open(os.path.join(image, name), "rb") as f:
            return loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ContainError(f"{image}/{name}: {exc}") from exc


def _cgroup_binds(pid: int) -> list[str]:
    """Mount points of the container's cgroup filesystems that are binds of its own
    cgroup directories (no cgroup namespace: create binds them from the host's
    hierarchies, whose roots the container does not have): external to CRIU, bound
    again from the restored container's own cgroup."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] in ("cgroup", "cgroup2") and fields[3] != "/":
                out.append(fields[4])
    return out


def _cgroup_sources(image: str, spec: Spec, mgr: Manager | None) -> list[tuple[str, str]]:
    """(mount point, host directory) for the dumped cgroup binds: the same hierarchy's
    directory of the restored container's cgroup."""
    binds = _read_json(image, CGROUP_BINDS)
    if not binds:
        return []
    if mgr is None:
        raise ContainError("the checkpoint binds its cgroup, and the restored container "
                           "has none (rootless without a cgroupsPath)")
    dests = [m.destination.rstrip("/") for m in spec.mounts if m.type in ("cgroup",
                                                                           "cgroup2")]
    paths = mgr.paths()
    out = []
    for mp in binds:
        dest = next((d for d in dests if mp == d or mp.startswith(d + "/")), None)
        name = mp[len(dest):].strip("/") if dest is not None else ""
        if name:
            host = next((p for p in paths.values()
                         if p.startswith(f"/sys/fs/cgroup/{name}/")), None)
        else:
            host = mgr.unified() or mgr.primary()
        if host is None:
            raise ContainError(f"the checkpoint binds the cgroup hierarchy {name} at {mp}; "
                               "the restored container has no cgroup there")
        out.append((mp, host))
    return out


def _tty_key(st: os.stat_result) -> str:
    return f"tty[{st.st_rdev:x}:{st.st_dev:x}]"


# -- checkpoint ------------------------------------------------------------------------


def checkpoint(root: str, cid: str, opts: CheckpointOptions) -> None:
    """Dump container *cid* into opts.image_path (default ./checkpoint)."""
    _check_common(opts)
    record = store.load(root, cid)
    status = record.status()
    if status not in ("running", "paused"):
        raise WrongState(f"container {cid} is not running: {status}")
    criu = _criu.find(opts.criu)
    _criu.check(criu)
    if opts.pre_dump:
        _criu.check(criu, "mem_dirty_track")
    if opts.lazy_pages:
        _criu.check(criu, "uffd-noncoop")
    image = os.path.abspath(opts.image_path or "checkpoint")
    made_image = _make_dir(image, "--image-path")
    made_work = False
    try:
        work = image
        if opts.work_path:
            work = os.path.abspath(opts.work_path)
            made_work = _make_dir(work, "--work-path")
        spec = record.spec()
        argv = _dump_options(record, spec, opts, image, work)
        descriptors = _descriptors(record.pid)
        with store.Lock(record.dir):
            if record.status() not in ("running", "paused"):
                raise WrongState(f"container {cid} is not running")
            _write_descriptors(image, descriptors)
            pass_fds = (opts.status_fd,) if opts.status_fd >= 0 else ()
            _criu.run(criu, "pre-dump" if opts.pre_dump else "dump", argv, work,
                      "predump.log" if opts.pre_dump else "dump.log", pass_fds=pass_fds)
    except BaseException as exc:
        # a checkpoint that did not happen leaves no directory it made, except CRIU's
        # log when CRIU ran, which the error names
        keep = os.path.join(work, "predump.log" if opts.pre_dump else "dump.log") \
            if isinstance(exc, _criu.CriuError) else ""
        if made_image:
            _remove_tree(image, keep)
        if made_work:
            _remove_tree(work, keep)
        raise
    if opts.leave_running or opts.pre_dump:
        return
    # CRIU killed the tree: the container is gone; free its id for restore (runc
    # destroys it the same way)
    from contain.container.control import delete

    try:
        delete(root, cid, force=True)
    except NotFound:
        pass


def _dump_options(record: ContainerRecord, spec: Spec, opts: CheckpointOptions, image: str,
                  work: str) -> list[str]:
    argv = ["-t", str(record.pid), "-D", image, "-W", work, *_criu_common(opts)]
    if record.rootfs:
        argv += ["--root", record.rootfs]
    if not opts.pre_dump and opts.leave_running:
        argv.append("--leave-running")
    if opts.tcp_skip_in_flight:
        argv.append("--skip-in-flight")
    if opts.link_remap:
        argv.append("--link-remap")
    if opts.parent_path:
        argv += ["--prev-images-dir", opts.parent_path, "--track-mem"]
    if opts.pre_dump:
        argv.append("--track-mem")
    if opts.status_fd >= 0:
        argv += ["--status-fd", str(opts.status_fd)]
    if opts.page_server:
        host, _, port = opts.page_server.rpartition(":")
        argv += ["--page-server", "--address", host, "--port", port]
    return argv + _dump_externals(record, spec, image)


def _dump_externals(record: ContainerRecord, spec: Spec, image: str) -> list[str]:
    """The freezer, and what CRIU must leave to restore: the host's mounts, a joined
    network namespace, the terminal."""
    argv = []
    mgr = record.cgroup_manager()
    if mgr is not None:
        paths = mgr.paths()
        freezer = paths.get("freezer") or (paths.get("") if mgr.layout == "v2" else None)
        if freezer:
            argv += ["--freeze-cgroup", freezer]
    for dest, _src in _bind_mounts(spec, record.bundle):
        argv += ["--ext-mount-map", f"{dest}:{dest}"]
    for path in _masked_files(spec, record.pid):
        argv += ["--ext-mount-map", f"{path}:{path}"]
    dev_binds = {mp: host for mp, host in _dev_binds(record.pid).items()
                 if f"{mp}:{mp}" not in argv}
    for path in dev_binds:
        argv += ["--ext-mount-map", f"{path}:{path}"]
    if dev_binds:
        from contain.jsonio import dumps

        with open(os.path.join(image, DEV_BINDS), "w") as f:
            f.write(dumps(dev_binds))
    cgroup_binds = _cgroup_binds(record.pid)
    for path in cgroup_binds:
        argv += ["--ext-mount-map", f"{path}:{path}"]
    if cgroup_binds:
        from contain.jsonio import dumps

        with open(os.path.join(image, CGROUP_BINDS), "w") as f:
            f.write(dumps(cgroup_binds))
    linux = spec.linux
    netns = linux.namespace("network") if linux is not None else None
    if netns is not None and netns.path:
        ino = os.stat(f"/proc/{record.pid}/ns/net").st_ino
        argv += ["--external", f"net[{ino}]:{NETNS_KEY}"]
    if spec.process is not None and spec.process.terminal:
        import stat

        try:
            st = os.stat(f"/proc/{record.pid}/fd/0")
        except OSError:
            st = None
        if st is not None and stat.S_ISCHR(st.st_mode):
            argv += ["--external", _tty_key(st)]
            with open(os.path.join(image, TTY_KEY), "w") as f:
                f.write(_tty_key(st))
    return argv


def _descriptors(pid: int) -> list[str]:
    out = []
    for fd in range(3):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            out.append("")
    return out


def _write_descriptors(image: str, descriptors: list[str]) -> None:
    from contain.jsonio import dumps

    path = os.path.join(image, DESCRIPTORS)
    with open(path, "w") as f:
        f.write(dumps(descriptors))


def _remove_tree(path: str, keep: str = "") -> None:
    """Remove the image (or work) directory made by a checkpoint that failed; with
    *keep* (CRIU's log in it), remove everything else."""
    import shutil

    if not keep or os.path.dirname(keep) != path or not os.path.exists(keep):
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if full == keep:
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass


# -- restore ---------------------------------------------------------------------------


def restore(root: str, cid: str, bundle: str, opts: RestoreOptions) -> ContainerRecord:
    """Restore container *cid* of *bundle* from opts.image_path; return its record (the
    restored init is running). Nothing is left behind when it fails."""
    bundle, spec, rootfs, image = _restore_checks(root, cid, bundle, opts)
    descriptors = _read_descriptors(image)
    criu = _criu.find(opts.criu)
    _criu.check(criu)
    linux = spec.linux
    assert linux is not None
    mgr = _cgroup_manager(spec, cid, opts)
    if not opts.detach:
        from contain.process.foreground import become_subreaper

        become_subreaper()
    record = store.ContainerRecord(root, cid, {})
    record.bundle = bundle
    record.rootfs = rootfs
    record.cgroup = mgr.to_json() if mgr is not None else None
    lock = store.claim(record)
    criu_root = os.path.join(record.dir, "criu-root")
    mounted = False
    fds: list[int] = []
    master = -1
    try:
        work = _work_dir(opts, image)
        if mgr is not None:
            mgr.create()
            mgr.set(linux.resources, linux_device_paths=[d.path for d in linux.devices])
        os.mkdir(criu_root, 0o700)
        _bind_root(rootfs, criu_root)
        mounted = True
        argv = ["-D", image, "-W", work, "--root", criu_root, "--restore-detached",
                "--restore-sibling", "--pidfile", os.path.join(record.dir, "criu.pid"),
                *_restore_options(spec, bundle, image, opts, mgr, fds)]
        for i, link in enumerate(descriptors):
            if link.startswith(("pipe:", "socket:")):
                argv += ["--inherit-fd", f"fd[{i}]:{link}"]
        key = _dumped_tty_key(image)
        if key:
            master, slave = _pty()
            fds.append(slave)
            argv += ["--inherit-fd", f"fd[{slave}]:{key}"]
        _run_restore(criu, argv, work, fds, mgr, record, spec, image)
        _restored(record, spec, image)
        if master >= 0:
            _send_console(opts.console_socket, opts.console_fd, master)
        if opts.pid_file:
            from contain.container.lifecycle import write_pid_file

            write_pid_file(opts.pid_file, record.pid)
    except BaseException:
        if record.pid:
            from contain.process.spawn import kill_and_wait

            kill_and_wait(record.pid)
        if mounted:
            _unbind_root(criu_root)
        if mgr is not None:
            try:
                mgr.destroy()
            except Exception:
                pass
        store.remove_dir(record.dir)
        raise
    finally:
        for fd in fds:
            os.close(fd)
        if master >= 0:
            os.close(master)
        lock.__exit__()
    _unbind_root(criu_root)
    return record


def _cgroup_manager(spec: Spec, cid: str, opts: RestoreOptions) -> Manager | None:
    """The restored container's cgroup, as create would make it (None: rootless without
    a cgroupsPath)."""
    linux = spec.linux
    assert linux is not None
    rootless = opts.rootless or os.geteuid() != 0
    if rootless and not linux.cgroups_path:
        return None
    from contain.cgroups import new_manager

    mgr = new_manager(linux.cgroups_path, cid, rootless=rootless)
    mgr.validate(linux.resources)
    return mgr


def _run_restore(criu: str, argv: list[str], work: str, fds: list[int], mgr: Manager | None,
                 record: ContainerRecord, spec: Spec, image: str) -> None:
    import functools

    # CRIU itself in the new cgroup too (as runc puts it), then --cgroup-root
    preexec = functools.partial(mgr.join, 0) if mgr is not None else None
    hooks = _RestoreHooks(record, spec)
    with _open_to_container_root(image, spec):
        try:
            _criu.run(criu, "restore", argv, work, "restore.log", pass_fds=fds,
                      preexec=preexec, stdio=(0, 1, 2),
                      on_action=hooks if hooks.wanted else None, action_dir=record.dir)
        except _criu.CriuError:
            if hooks.error is not None:  # the hook's failure, not CRIU's "aborted"
                raise hooks.error from None
            raise


class _RestoreHooks:
    """The prestart and createRuntime hooks of config.json, run when CRIU has made the
    restored tasks and their namespaces and before they run (runc runs them at the same
    step), with the restored init's pid in the state."""

    __slots__ = ("record", "hooks", "error")

    def __init__(self, record: ContainerRecord, spec: Spec) -> None:
        self.record = record
        self.hooks = spec.hooks
        self.error: ContainError | None = None

    @property
    def wanted(self) -> bool:
        return self.hooks is not None and bool(self.hooks.prestart or
                                               self.hooks.create_runtime)

    def __call__(self, pid: str) -> bool:
        from contain.process.hooks import run_hooks

        assert self.hooks is not None
        try:
            self.record.pid = int(pid)
            state = self.record.hook_state("creating")
            run_hooks("prestart", self.hooks.prestart, state)
            run_hooks("createRuntime", self.hooks.create_runtime, state)
        except ContainError as exc:
            self.error = exc
            return False
        except ValueError:
            self.error = ContainError(f"criu's action script sent {pid!r}, not a pid")
            return False
        finally:
            self.record.pid = 0  # (set for real from CRIU's pid file)
        return True


@contextlib.contextmanager
def _open_to_container_root(image: str, spec: Spec) -> Iterator[None]:
    """While CRIU restores: with a new user namespace, the restored tasks read some
    images themselves as the container's root (a host id without CAP_DAC_OVERRIDE), so
    the image directory (0700, root's) gets that root's host group and search for it
    (0710), and goes back to what it was afterwards; no other user gains access."""
    linux = spec.linux
    userns = linux.namespace("user") if linux is not None else None
    if linux is None or userns is None or userns.path is not None:
        yield
        return
    from contain.container.lifecycle import _host_id

    gid = _host_id(linux.gid_mappings, 0)
    st = os.stat(image)
    if gid < 0 or st.st_mode & 0o001 or (st.st_gid == gid and st.st_mode & 0o010):
        yield
        return
    os.chown(image, -1, gid)
    os.chmod(image, (st.st_mode & 0o7700) | 0o010)
    try:
        yield
    finally:
        os.chown(image, -1, st.st_gid)
        os.chmod(image, st.st_mode & 0o7777)


def _restore_checks(root: str, cid: str, bundle: str,
                    opts: RestoreOptions) -> tuple[str, Spec, str, str]:
    """Everything restore checks before it makes anything: (bundle, spec, rootfs,
    image directory)."""
    from contain.container.lifecycle import check_console, check_pid_file, load_bundle, validate

    _check_common(opts)
    store.validate_id(cid)
    bundle, spec = load_bundle(bundle)
    rootfs = validate(spec, bundle)
    if opts.pid_file:
        check_pid_file(opts.pid_file)
    proc = spec.process
    assert proc is not None
    check_console(proc.terminal, opts.console_socket, opts.console_fd)
    image = os.path.abspath(opts.image_path or "checkpoint")
    if not os.path.isfile(os.path.join(image, "inventory.img")):
        what = "no such directory" if not os.path.isdir(image) else "no checkpoint in it"
        raise ContainError(f"--image-path {image}: {what} (inventory.img)")
    if os.path.lexists(store.container_dir(root, cid)):
        from contain.errors import AlreadyExists

        raise AlreadyExists(f"container with id exists: {cid}")
    return bundle, spec, rootfs, image


def _restore_options(spec: Spec, bundle: str, image: str, opts: RestoreOptions,
                     mgr: Manager | None, fds: list[int]) -> list[str]:
    """CRIU's options for the container's cgroup, mounts and namespaces; the fds it
    must inherit are appended to *fds*."""
    linux = spec.linux
    assert linux is not None
    argv = _criu_common(opts)
    if opts.empty_ns:
        argv += ["--empty-ns", "net"]
    if opts.lsm_profile:
        argv += ["--lsm-profile", opts.lsm_profile]
    if opts.lsm_mount_context:
        argv += ["--lsm-mount-context", opts.lsm_mount_context]
    if mgr is not None:
        argv += _cgroup_roots(mgr)
    for dest, src in _bind_mounts(spec, bundle):
        argv += ["--ext-mount-map", f"{dest}:{src}"]
    for path in linux.masked_paths:  # (keys not in the image are ignored)
        argv += ["--ext-mount-map", f"{path}:/dev/null"]
    for mp, host in _cgroup_sources(image, spec, mgr):
        argv += ["--ext-mount-map", f"{mp}:{host}"]
    dev_binds = _read_json(image, DEV_BINDS) or {}
    if not isinstance(dev_binds, dict):
        raise ContainError(f"{image}/{DEV_BINDS}: expected an object")
    for mp, host in dev_binds.items():
        argv += ["--ext-mount-map", f"{mp}:{host}"]
    netns = linux.namespace("network")
    if netns is not None and netns.path:
        try:
            fd = os.open(netns.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ContainError(f"network namespace {netns.path}: {exc.strerror}") from exc
        fds.append(fd)
        argv += ["--inherit-fd", f"fd[{fd}]:{NETNS_KEY}"]
    return argv


def _restored(record: ContainerRecord, spec: Spec, image: str) -> None:
    """state.json of the restored container (its init as CRIU's pid file names it)."""
    from contain.container.lifecycle import _now_rfc3339, _owner

    record.pid = _read_pid(os.path.join(record.dir, "criu.pid"))
    start = store.process_start_time(record.pid)
    if start is None:
        raise ContainError("the restored init exited at once")
    record.init_start = start
    record.created = _now_rfc3339()
    record.owner = _owner()
    record.annotations = spec.annotations
    record.config = spec.raw
    record.extra["restored_from"] = image
    store.save(record)


def _read_descriptors(image: str) -> list[str]:
    data = _read_json(image, DESCRIPTORS)
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise ContainError(f"{image}/{DESCRIPTORS}: expected a list of strings")
    return data


def _dumped_tty_key(image: str) -> str:
    """The tty[rdev:dev] key under which the terminal was dumped ("" if none was)."""
    try:
        with open(os.path.join(image, TTY_KEY)) as f:
            return f.read().strip()
    except OSError:
        return ""


def _cgroup_roots(mgr: Manager) -> list[str]:
    """--cgroup-root CONTROLLER:PATH for each hierarchy: the restored tree goes into the
    container's new cgroup, whatever its path was when it was dumped."""
    out = []
    mounts = _cgroup_mounts()
    for path in mgr.paths().values():
        for mp, ctrls in mounts:
            if path == mp or path.startswith(mp + "/"):
                rel = path[len(mp):] or "/"
                out += ["--cgroup-root", f"{ctrls}:{rel}" if ctrls else rel]
                break
    return out


def _cgroup_mounts() -> list[tuple[str, str]]:
    """(mount point, controllers as CRIU names them) of the host's cgroup hierarchies;
    the longest mount points first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, sopts = fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup":
                ctrls = [o for o in sopts.split(",") if o not in ("rw", "ro") and
                         not o.startswith(("release_agent=", "clone_children", "noprefix",
                                           "xattr", "cpuset_v2_mode", "nsdelegate"))]
                out.append((fields[4], ",".join(ctrls)))
            elif fstype == "cgroup2":
                out.append((fields[4], "unified" if _hybrid_unified(fields[4]) else ""))
    out.sort(key=lambda e: -len(e[0]))
    return out


def _hybrid_unified(mp: str) -> bool:
    return mp != "/sys/fs/cgroup"


def _bind_root(rootfs: str, target: str) -> None:
    from contain.linux import consts as c
    from contain.linux.syscalls import mount

    mount(rootfs, target, None, c.MS_BIND | c.MS_REC)
    mount(None, target, None, c.MS_PRIVATE | c.MS_REC)


def _unbind_root(target: str) -> None:
    from contain.linux import consts as c
    from contain.linux.syscalls import umount2

    try:
        umount2(target, c.MNT_DETACH)
    except OSError:
        pass
    try:
        os.rmdir(target)
    except OSError:
        pass


def _pty() -> tuple[int, int]:
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    return master, slave


def _send_console(path: str | None, fd: int, master: int) -> None:
    from contain.process.sync import connect_unix, send_fd

    if not path:
        if fd >= 0:
            send_fd(fd, master, "/dev/ptmx")
        return
    sock = connect_unix(path)
    try:
        send_fd(sock.fileno(), master, "/dev/ptmx")
    finally:
        sock.close()


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.unlink(path)
    except (OSError, ValueError) as exc:
        raise ContainError(f"criu restore wrote no pid file: {exc}") from exc
    return pid
