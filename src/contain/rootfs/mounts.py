"""Mounts of config.json: option parsing and each filesystem type, onto resolved fds."""

from __future__ import annotations

import errno
import os
import stat

from contain.errors import ContainError
from contain.linux import consts as c
from contain.linux.syscalls import mount
from contain.rootfs.paths import fd_path, is_dir_fd, open_in_root, resolve_in_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from contain.spec.config import Mount

# option -> (clear?, flag)
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, c.MS_SYNCHRONOUS), "atime": (True, c.MS_NOATIME),
    "bind": (False, c.MS_BIND), "defaults": (False, 0), "dev": (True, c.MS_NODEV),
    "diratime": (True, c.MS_NODIRATIME), "dirsync": (False, c.MS_DIRSYNC),
    "exec": (True, c.MS_NOEXEC), "iversion": (False, 1 << 23), "noiversion": (True, 1 << 23),
    "lazytime": (False, c.MS_LAZYTIME), "nolazytime": (True, c.MS_LAZYTIME),
    "loud": (True, c.MS_SILENT), "mand": (False, c.MS_MANDLOCK),
    "nomand": (True, c.MS_MANDLOCK), "noatime": (False, c.MS_NOATIME),
    "nodev": (False, c.MS_NODEV), "nodiratime": (False, c.MS_NODIRATIME),
    "noexec": (False, c.MS_NOEXEC), "nosuid": (False, c.MS_NOSUID),
    "nosymfollow": (False, c.MS_NOSYMFOLLOW), "symfollow": (True, c.MS_NOSYMFOLLOW),
    "rbind": (False, c.MS_BIND | c.MS_REC), "relatime": (False, c.MS_RELATIME),
    "norelatime": (True, c.MS_RELATIME), "remount": (False, c.MS_REMOUNT),
    "ro": (False, c.MS_RDONLY), "rw": (True, c.MS_RDONLY), "silent": (False, c.MS_SILENT),
    "strictatime": (False, c.MS_STRICTATIME), "nostrictatime": (True, c.MS_STRICTATIME),
    "suid": (True, c.MS_NOSUID), "sync": (False, c.MS_SYNCHRONOUS),
}
PROPAGATION: dict[str, int] = {
    "private": c.MS_PRIVATE, "rprivate": c.MS_PRIVATE | c.MS_REC,
    "shared": c.MS_SHARED, "rshared": c.MS_SHARED | c.MS_REC,
    "slave": c.MS_SLAVE, "rslave": c.MS_SLAVE | c.MS_REC,
    "unbindable": c.MS_UNBINDABLE, "runbindable": c.MS_UNBINDABLE | c.MS_REC,
}
# recursive attributes, applied with mount_setattr(AT_RECURSIVE): option -> (clear?, attr)
RECURSIVE: dict[str, tuple[bool, int]] = {
    "rro": (False, c.MOUNT_ATTR_RDONLY), "rrw": (True, c.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, c.MOUNT_ATTR_NOSUID), "rsuid": (True, c.MOUNT_ATTR_NOSUID),
    "rnodev": (False, c.MOUNT_ATTR_NODEV), "rdev": (True, c.MOUNT_ATTR_NODEV),
    "rnoexec": (False, c.MOUNT_ATTR_NOEXEC), "rexec": (True, c.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, c.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, c.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, c.MOUNT_ATTR_RELATIME), "rnorelatime": (True, c.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, c.MOUNT_ATTR_NOATIME), "ratime": (True, c.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, c.MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, c.MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, c.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, c.MOUNT_ATTR_NOSYMFOLLOW),
}
# options of our own, not passed to the kernel
EXTRA = ("tmpcopyup", "idmap", "ridmap", "copy-symlink")


class MountOptions:
    __slots__ = ("flags", "clear", "propagation", "data", "recursive_set", "recursive_clear",
                 "recursive", "extra")

    def __init__(self) -> None:
        self.flags = 0
        self.clear = 0
        self.propagation: list[int] = []
        self.data: list[str] = []
        self.recursive_set = 0
        self.recursive_clear = 0
        self.recursive = False  # a recursive option was given (rrelatime sets no bit)
        self.extra: set[str] = set()

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & c.MS_BIND)


def parse_options(options: list[str]) -> MountOptions:
    out = MountOptions()
    for opt in options:
        known = MOUNT_FLAGS.get(opt)
        if known is not None:
            clear, flag = known
            if clear:
                out.flags &= ~flag
                out.clear |= flag
            else:
                out.flags |= flag
                out.clear &= ~flag
        elif opt in PROPAGATION:
            out.propagation.append(PROPAGATION[opt])
        elif opt in RECURSIVE:
            clear, attr = RECURSIVE[opt]
            if clear:
                out.recursive_clear |= attr
                out.recursive_set &= ~attr
            else:
                out.recursive_set |= attr
                out.recursive_clear &= ~attr
            if attr & c.MOUNT_ATTR__ATIME == attr:
                # an access-time mode is set with the whole mask cleared (mount_setattr(2))
                out.recursive_clear |= c.MOUNT_ATTR__ATIME
            out.recursive = True
        elif opt in EXTRA:
            out.extra.add(opt)
        else:
            out.data.append(opt)
    return out


_STATVFS_FLAGS = ((os.ST_RDONLY, c.MS_RDONLY), (os.ST_NOSUID, c.MS_NOSUID),
                  (os.ST_NODEV, c.MS_NODEV), (os.ST_NOEXEC, c.MS_NOEXEC),
                  (os.ST_NOATIME, c.MS_NOATIME), (os.ST_NODIRATIME, c.MS_NODIRATIME),
                  (os.ST_RELATIME, c.MS_RELATIME))


def locked_flags(path: str) -> int:
    """The flags a bind remount must keep (in a user namespace, the kernel refuses to
    clear nosuid/nodev/noexec/ro/atime flags inherited from a more privileged mount)."""
    st = os.statvfs(path)
    return sum(ms for st_flag, ms in _STATVFS_FLAGS if st.f_flag & st_flag)


def remount_bind(target: str, flags: int) -> None:
    flags |= c.MS_BIND | c.MS_REMOUNT
    try:
        mount(None, target, None, flags)
    except PermissionError:
        keep = locked_flags(target) & ~c.MS_RELATIME
        mount(None, target, None, flags | keep)


def _host_source(source: str, bundle: str) -> str:
    return source if source.startswith("/") else os.path.join(bundle, source)


def mount_entry(root_fd: int, m: Mount, index: int, bundle: str, ctx: MountContext) -> None:
    """Mount config.json's mounts[index] inside the root at *root_fd*.

    The first mount goes onto the resolved fd; everything after it (remount flags,
    propagation, recursive attributes, content) acts on a fresh fd of the new mount:
    the first fd still names the directory underneath."""
    opts = parse_options(m.options)
    fstype = m.type or ""
    if fstype == "bind":
        opts.flags |= c.MS_BIND
    is_bind = opts.is_bind
    where = f"mounts[{index}] ({m.destination})"
    source = ""
    kind = "dir"
    if fstype == "tmpfs" and not any(d.startswith("mode=") for d in opts.data):
        # a tmpfs without mode= takes the mode of the directory it covers (runc), not
        # the kernel's 1777; a directory made here leaves the kernel's default
        try:
            fd = open_in_root(root_fd, m.destination)
        except OSError:
            pass
        else:
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                opts.data.append(f"mode={stat.S_IMODE(st.st_mode):o}")
    from_host = False
    if is_bind:
        source = _host_source(m.source or "", bundle)
        host_kind = ctx.host_kinds.get(index) if ctx.ask_host is not None else None
        # in a user namespace: an id-mapped bind needs the host's CAP_SYS_ADMIN (over the
        # filesystem), and a source our root cannot reach the host's access to it
        from_host = host_kind is not None and bool(m.uid_mappings)
        src_st: os.stat_result | None = None
        try:
            if not from_host:
                src_st = os.stat(source)
        except PermissionError as exc:
            if host_kind is None:
                raise ContainError(f"{where}: bind source {source}: {exc.strerror}") from exc
            from_host = True
        except OSError as exc:
            raise ContainError(f"{where}: bind source {source}: {exc.strerror}") from exc
        if src_st is not None:
            kind = "dir" if stat.S_ISDIR(src_st.st_mode) else "file"
        else:
            kind = host_kind or "dir"
    try:
        dest_fd = resolve_in_root(root_fd, m.destination, kind)
    except OSError as exc:
        raise ContainError(f"{where}: destination: {exc.strerror or exc}") from exc
    below = -1
    try:
        target = fd_path(dest_fd)
        if not is_bind and not is_dir_fd(dest_fd):
            raise ContainError(f"{where}: destination is not a directory")
        if from_host:
            assert ctx.ask_host is not None
            ctx.ask_host(index, dest_fd)
        elif is_bind:
            _mount_bind(source, target, opts, m, where, ctx.idmap_userns.get(index, -1))
        elif fstype == "sysfs" or fstype == "mqueue":
            try:
                _mount_fs(m.source or fstype, fstype, target, opts, where)
            except ContainError:
                if not ctx.userns:
                    raise
                # in a user namespace the kernel may refuse these (sysfs without a
                # network namespace of its own): bind the host's instead, as runc does
                host = "/sys" if fstype == "sysfs" else "/dev/mqueue"
                mount(host, target, None, c.MS_BIND | c.MS_REC)
                opts.flags |= c.MS_BIND
        elif fstype == "cgroup":
            mount("tmpfs", target, "tmpfs", opts.flags & ~(c.MS_RDONLY | c.MS_BIND | c.MS_REC),
                  "mode=755")
        else:
            if "tmpcopyup" in opts.extra:
                below = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            _mount_fs(m.source or fstype, fstype, target, opts, where)
    finally:
        os.close(dest_fd)
    new_fd = ctx.reopen(root_fd, m.destination)
    try:
        top = fd_path(new_fd)
        if fstype == "cgroup":
            _populate_cgroup(top, opts, ctx)
        if below >= 0:
            _copy_up(below, top)
        rest = opts.flags & ~(c.MS_BIND | c.MS_REC | c.MS_REMOUNT)
        if opts.flags & c.MS_BIND and (rest or opts.clear):
            remount_bind(top, rest)
        for prop in opts.propagation:
            mount(None, top, None, prop)
        if opts.recursive:
            from contain.linux.syscalls import mount_setattr

            mount_setattr(new_fd, "", c.AT_EMPTY_PATH | c.AT_RECURSIVE,
                          opts.recursive_set, opts.recursive_clear)
    finally:
        os.close(new_fd)
        if below >= 0:
            os.close(below)


class MountContext:
    """What the mount code needs to know about the container being set up."""

    __slots__ = ("userns", "cgroupns", "rootfs", "idmap_userns", "ask_host", "host_kinds")

    def __init__(self, userns: bool, cgroupns: bool, rootfs: str,
                 idmap_userns: dict[int, int] | None = None,
                 ask_host: Callable[[int, int], None] | None = None,
                 host_kinds: dict[int, str] | None = None) -> None:
        self.userns = userns
        self.cgroupns = cgroupns
        self.rootfs = rootfs
        self.idmap_userns = idmap_userns or {}  # mount index -> user namespace fd
        # bind mounts the runtime on the host may do for us (a user namespace, a root
        # runtime): mount index -> the source's kind as the host sees it; *ask_host*
        # (index, destination fd) has it done
        self.ask_host = ask_host
        self.host_kinds = host_kinds or {}

    def reopen(self, root_fd: int, destination: str) -> int:
        """An O_PATH fd of the mount now on *destination*."""
        if destination.strip("/") == "":
            # nothing to walk into from root_fd: the path string crosses the new mount
            return os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return open_in_root(root_fd, destination)


def _mount_fs(source: str, fstype: str, target: str, opts: MountOptions, where: str) -> None:
    data = ",".join(opts.data) or None
    flags = opts.flags & ~(c.MS_BIND | c.MS_REC)
    try:
        mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise ContainError(f"{where}: mount {fstype}: {exc.strerror}") from exc


def _mount_bind(source: str, target: str, opts: MountOptions, m: Mount, where: str,
                userns: int) -> None:
    if m.uid_mappings:
        from contain.rootfs.idmap import mount_idmapped

        mount_idmapped(source, target, m, opts.flags & c.MS_REC != 0, userns)
        return
    try:
        mount(source, target, None, c.MS_BIND | (opts.flags & c.MS_REC))
    except OSError as exc:
        raise ContainError(f"{where}: bind mount {source}: {exc.strerror}") from exc


def is_bind_mount(m: Mount) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def host_kinds(mounts: list[Mount], bundle: str) -> dict[int, str]:
    """For the runtime on the host, before the container exists: each bind mount's
    index -> "dir" or "file" (its source as the host sees it; "dir" when the host
    cannot see it either: the bind then fails with the host's reason)."""
    out = {}
    for i, m in enumerate(mounts):
        if is_bind_mount(m):
            try:
                st = os.stat(_host_source(m.source or "", bundle))
            except OSError:
                out[i] = "dir"
                continue
            out[i] = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return out


def bind_from_host(m: Mount, index: int, bundle: str, target: str, userns: int) -> None:
    """Bind mounts[index] onto *target* (a /proc/<pid>/fd/N of the container's init) as
    a process with the host's credentials, in the container's mount namespace (so the
    source is resolved in the init's copy of the host's mounts, whose submounts stay
    locked): the source need not be reachable from the container's user namespace,
    and MOUNT_ATTR_IDMAP, which needs CAP_SYS_ADMIN over the filesystem, can be set."""
    _mount_bind(_host_source(m.source or "", bundle), target, parse_options(m.options), m,
                f"mounts[{index}] ({m.destination})", userns)


def _copy_up(below: int, top: str) -> None:
    """tmpcopyup: the directory's previous content, copied into the new tmpfs."""
    import shutil

    src = fd_path(below)
    for entry in os.listdir(src):
        s = os.path.join(src, entry)
        d = os.path.join(top, entry)
        if os.path.isdir(s) and not os.path.islink(s):
            shutil.copytree(s, d, symlinks=True)
        else:
            shutil.copy2(s, d, follow_symlinks=False)


def _cgroup_hierarchies() -> list[tuple[str, str, str, str]]:
    """(mount point, fstype, super options, root) of the host's cgroup mounts, as this
    process's mount table shows them."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if rfields[0] in ("cgroup", "cgroup2"):
                out.append((fields[4], rfields[0], rfields[2], fields[3]))
    return out


def _populate_cgroup(target: str, opts: MountOptions, ctx: MountContext) -> None:
    """The cgroup filesystem at *target* (a fresh tmpfs): on a pure v2 host cgroup2 over
    it; on v1 and hybrid hosts one mount per hierarchy, as the host has them."""
    flags = opts.flags & ~(c.MS_BIND | c.MS_REC)
    hierarchies = _cgroup_hierarchies()
    if any(mp == "/sys/fs/cgroup" and t == "cgroup2" for mp, t, _, _ in hierarchies):
        _cgroup_mount_one("cgroup2", "/sys/fs/cgroup", target, "", flags, ctx, None)
        return
    own: list[str] | None = None  # /proc/self/cgroup, read once for every hierarchy
    for mp, fstype, sopts, _root in hierarchies:
        if not mp.startswith("/sys/fs/cgroup/"):
            continue
        name = mp[len("/sys/fs/cgroup/"):]
        if "/" in name:
            continue
        sub = os.path.join(target, name)
        os.mkdir(sub, 0o755)
        kernel_opts = ",".join(o for o in sopts.split(",") if o not in ("rw", "ro"))
        if own is None and not ctx.cgroupns:
            own = _own_cgroups()
        _cgroup_mount_one(fstype, mp, sub, kernel_opts, flags, ctx, own)
    if flags & c.MS_RDONLY:
        mount(None, target, None, c.MS_REMOUNT | flags)


def _cgroup_mount_one(fstype: str, host_mp: str, target: str, kernel_opts: str, flags: int,
                      ctx: MountContext, own: list[str] | None) -> None:
    if ctx.cgroupns:
        try:
            mount("cgroup", target, fstype, flags, kernel_opts or None)
            return
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EBUSY, errno.EINVAL):
                raise
    # no cgroup namespace (or the kernel refused): bind the container's own cgroup
    sub = _own_cgroup(fstype, kernel_opts, own if own is not None else _own_cgroups())
    source = host_mp + sub if sub != "/" else host_mp
    if not os.path.isdir(source):
        source = host_mp
    mount(source, target, None, c.MS_BIND | c.MS_REC)
    remount_bind(target, flags)


def _own_cgroups() -> list[str]:
    """The lines of /proc/self/cgroup (we are in the container's cgroup by now)."""
    with open("/proc/self/cgroup") as f:
        return f.read().splitlines()


def _own_cgroup(fstype: str, kernel_opts: str, own: list[str]) -> str:
    """Our cgroup in the hierarchy of *fstype* with *kernel_opts*, from the lines of
    /proc/self/cgroup."""
    wanted = set(kernel_opts.split(",")) if kernel_opts else set()
    for line in own:
        hid, ctrls, path = line.split(":", 2)
        if fstype == "cgroup2" and hid == "0":
            return path
        if fstype == "cgroup" and ctrls and wanted & set(ctrls.split(",")):
            return path
    return "/"
