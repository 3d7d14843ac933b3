"""Preparing the container's root filesystem inside its mount namespace.

Order (as the runtime spec and runc's behaviour require): root propagation, the rootfs
bound onto itself, config.json's mounts in order, /dev (default devices, linux.devices,
symlinks), then -- after the createRuntime/createContainer hooks -- pivot_root, masked and
read-only paths, and the read-only root.
"""

from __future__ import annotations

import errno
import os
import stat

from contain.errors import ContainError
from contain.linux import consts as c
from contain.linux.syscalls import mount, pivot_root, umount2
from contain.rootfs.mounts import MountContext, locked_flags, mount_entry, remount_bind
from contain.rootfs.paths import fd_path, open_in_root, resolve_in_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from contain.spec.config import Device, Spec

DEFAULT_DEVICES = (
    # path, type, major, minor, mode
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
)
DEV_SYMLINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))


def prepare(spec: Spec, rootfs: str, bundle: str, userns: bool, cgroupns: bool,
            before_cgroup: Callable[[], None] | None = None,
            idmap_userns: dict[int, int] | None = None,
            ask_host: Callable[[int, int], None] | None = None,
            host_kinds: dict[int, str] | None = None) -> None:
    """Everything before pivot_root: propagation, self-bind, mounts, /dev.
    *before_cgroup* is called before the first cgroup filesystem is mounted."""
    linux = spec.linux
    assert linux is not None
    prop = c.MS_SLAVE | c.MS_REC
    if linux.rootfs_propagation and "unbindable" not in linux.rootfs_propagation:
        from contain.rootfs.mounts import PROPAGATION

        prop = PROPAGATION[linux.rootfs_propagation]
    # (an unbindable tree could not be bound onto itself: it is applied after pivot_root)
    mount(None, "/", None, prop)
    _make_parent_private(rootfs)
    mount(rootfs, rootfs, None, c.MS_BIND | c.MS_REC)
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ctx = MountContext(userns, cgroupns, rootfs, idmap_userns, ask_host, host_kinds)
        dev_is_bind = False
        for i, m in enumerate(spec.mounts):
            if before_cgroup is not None and m.type in ("cgroup", "cgroup2"):
                before_cgroup()
            mount_entry(root_fd, m, i, bundle, ctx)
            if m.destination.strip("/") == "":  # a mount over the root itself (sandbox)
                os.close(root_fd)
                root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            if m.destination.rstrip("/") == "/dev" and (
                    m.type == "bind" or "bind" in m.options or "rbind" in m.options):
                dev_is_bind = True
        if not dev_is_bind:
            _setup_dev(root_fd, linux.devices, userns)
    finally:
        os.close(root_fd)


def _make_parent_private(rootfs: str) -> None:
    """pivot_root fails when the rootfs's parent mount is shared: make it private.
    (*rootfs* is already a real path: create resolved it.)"""
    best, shared = "", False
    with open("/proc/self/mountinfo") as f:  # one pass: mount point and its tags
        for line in f:
            fields = line.split(" - ")[0].split()
            mp = fields[4]
            if (rootfs == mp or rootfs.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best, shared = mp, any(t.startswith("shared:") for t in fields[6:])
    if best and shared:
        mount(None, best, None, c.MS_PRIVATE)


def _mknod(root_fd: int, path: str, kind: str, major: int, minor: int, mode: int,
           uid: int | None, gid: int | None, userns: bool, parent_fd: int = -1) -> None:
    """The node *path* (its directory resolved in the root, or *parent_fd*: that
    directory resolved already)."""
    parent, _, name = path.rpartition("/")
    pfd = resolve_in_root(root_fd, parent or "/", "dir") if parent_fd < 0 else parent_fd
    try:
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except IsADirectoryError as exc:
            raise ContainError(f"device {path}: a directory is in the way") from exc
        type_bits = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                     "p": stat.S_IFIFO}[kind]
        if userns and kind != "p":
            # no mknod in a user namespace: bind the host's node onto an empty file
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY
                             | os.O_CLOEXEC, 0o644, dir_fd=pfd))
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                mount(path, fd_path(fd), None, c.MS_BIND)
            finally:
                os.close(fd)
            return
        old = os.umask(0)
        try:
            os.mknod(name, type_bits | (mode & 0o7777), os.makedev(major, minor), dir_fd=pfd)
        finally:
            os.umask(old)
        if uid is not None or gid is not None:
            os.chown(name, uid if uid is not None else -1, gid if gid is not None else -1,
                     dir_fd=pfd, follow_symlinks=False)
    finally:
        if pfd != parent_fd:
            os.close(pfd)


def _setup_dev(root_fd: int, devices: list[Device], userns: bool) -> None:
    configured = {d.path for d in devices}
    dev_fd = resolve_in_root(root_fd, "/dev", "dir")  # (the default nodes' directory)
    try:
        for path, kind, major, minor, mode in DEFAULT_DEVICES:
            if path not in configured:
                _mknod(root_fd, path, kind, major, minor, mode, 0, 0, userns, dev_fd)
        for d in devices:
            mode = d.file_mode if d.file_mode is not None else 0o666
            _mknod(root_fd, d.path, d.type, d.major or 0, d.minor or 0, mode, d.uid, d.gid,
                   userns)
        links = [*DEV_SYMLINKS, ("pts/ptmx", "/dev/ptmx")]
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "/dev/core"))
        for target, link in links:
            name = link.rpartition("/")[2]
            if name == "ptmx" and "/dev/ptmx" in configured:
                continue
            if name == "ptmx":  # an empty file or node left by the image
                try:
                    os.unlink(name, dir_fd=dev_fd)
                except (FileNotFoundError, IsADirectoryError):
                    pass
            try:
                os.symlink(target, name, dir_fd=dev_fd)
            except FileExistsError:
                pass
    finally:
        os.close(dev_fd)


def enter_root(rootfs: str, no_pivot: bool) -> None:
    """Make *rootfs* the root: pivot_root, or MS_MOVE + chroot with --no-pivot."""
    if no_pivot:
        os.chdir(rootfs)
        mount(rootfs, "/", None, c.MS_MOVE)
        os.chroot(".")
        os.chdir("/")
        return
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        pivot_root(".", ".")
        # the old root is now stacked under the new one: detach it without letting the
        # unmount propagate back to the host
        os.fchdir(old)
        mount(None, ".", None, c.MS_SLAVE | c.MS_REC)
        umount2(".", c.MNT_DETACH)
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def reopen_dev_null() -> None:
    """After pivot_root: stdio that is the host's /dev/null (an engine's stdin) becomes
    the container's own /dev/null, as runc does: an fd of a mount outside the
    container is one CRIU cannot checkpoint ("Can't lookup mount")."""
    null = -1
    try:
        for fd in range(3):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
                continue
            if null < 0:
                try:
                    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                except OSError:
                    return  # no /dev/null in the container: leave stdio as it is
            os.dup2(null, fd)
    finally:
        if null >= 0:
            os.close(null)


def finish(spec: Spec) -> None:
    """After pivot_root: propagation of /, masked and read-only paths, read-only root."""
    linux = spec.linux
    assert linux is not None
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    null = -1
    try:
        for path in linux.readonly_paths:
            _readonly(root_fd, path)
        for path in linux.masked_paths:
            if null < 0:
                null = _dev_null(root_fd)
            _mask(root_fd, path, null)
    finally:
        os.close(root_fd)
        if null >= 0:
            os.close(null)
    if linux.rootfs_propagation in ("shared", "rshared", "unbindable", "runbindable"):
        from contain.rootfs.mounts import PROPAGATION

        mount(None, "/", None, PROPAGATION[linux.rootfs_propagation])
    if spec.root is not None and spec.root.readonly:
        # keep the root's nosuid/nodev/noexec (a bind remount sets the flags it is given)
        remount_bind("/", c.MS_RDONLY | (locked_flags("/") & ~c.MS_RELATIME))


def _readonly(root_fd: int, path: str) -> None:
    try:
        fd = open_in_root(root_fd, path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise ContainError(f"readonlyPaths {path}: {exc.strerror}") from exc
    try:
        target = fd_path(fd)
        mount(target, target, None, c.MS_BIND | c.MS_REC)
    finally:
        os.close(fd)
    # the old fd names the dentry below the new mount: open the new mount to remount it
    fd = open_in_root(root_fd, path)
    try:
        remount_bind(fd_path(fd), c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC)
    finally:
        os.close(fd)


def _dev_null(root_fd: int) -> int:
    """An O_PATH fd of the container's /dev/null, checked to be the null device: a file is
    masked by binding it, and a /dev/null that is a symlink (a /dev bound from the image)
    would bind whatever it names -- /proc/sys/kernel/core_pattern, writable (runc's
    CVE-2025-31133)."""
    try:
        fd = open_in_root(root_fd, "/dev/null")
    except OSError as exc:
        raise ContainError(f"maskedPaths: /dev/null: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise ContainError("maskedPaths: the container's /dev/null is not the null device "
                           "(1:3); refused to mask with it")
    return fd


def _mask(root_fd: int, path: str, null: int) -> None:
    try:
        fd = open_in_root(root_fd, path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise ContainError(f"maskedPaths {path}: {exc.strerror}") from exc
    try:
        target = fd_path(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            mount("tmpfs", target, "tmpfs", c.MS_RDONLY, "size=0k")
        else:
            try:
                mount(fd_path(null), target, None, c.MS_BIND)
            except OSError as exc:
                raise ContainError(f"maskedPaths {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
