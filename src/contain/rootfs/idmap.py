"""ID-mapped bind mounts (runtime-spec 1.2 mount uidMappings/gidMappings).

The source tree is cloned with open_tree(OPEN_TREE_CLONE), given the mappings of a
throw-away user namespace with mount_setattr(MOUNT_ATTR_IDMAP), and attached at the
destination with move_mount.
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.linux import consts as c
from contain.linux.syscalls import mount_setattr, move_mount, open_tree, unshare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contain.spec.config import IDMapping, Mount

AT_FDCWD = -100


def userns_fd_for(uid_maps: list[IDMapping], gid_maps: list[IDMapping]) -> int:
    """An fd of a new user namespace with the given maps (made by a short-lived child:
    one that shares our memory and exits at once where linux.syscalls can make it, its
    maps written while it is a zombie; else a fork)."""
    from contain.linux.syscalls import clone_exited

    made = clone_exited(c.CLONE_NEWUSER)
    if made is not None:
        pid, stack = made
        try:
            return _write_maps(pid, uid_maps, gid_maps)
        finally:
            os.waitpid(pid, 0)
            del stack
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            unshare(c.CLONE_NEWUSER)
            os.read(r, 1)  # wait until the parent has read our namespace
        finally:
            os._exit(0)
    os.close(r)
    try:
        # the child must have unshared before we write: poll its user namespace
        me = os.readlink("/proc/self/ns/user")
        for _ in range(10000):
            if os.readlink(f"/proc/{pid}/ns/user") != me:
                break
            os.sched_yield()
        return _write_maps(pid, uid_maps, gid_maps)
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def _write_maps(pid: int, uid_maps: list[IDMapping], gid_maps: list[IDMapping]) -> int:
    """Write the maps of the (new) user namespace of child *pid* (through its /proc
    directory, held: the maps go to this child, a zombie or not); an fd of that
    namespace."""
    proc = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _write_maps_at(proc, uid_maps, gid_maps)
    finally:
        os.close(proc)


def _write_maps_at(proc: int, uid_maps: list[IDMapping], gid_maps: list[IDMapping]) -> int:
    for name, text in (
            ("uid_map", "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in uid_maps)),
            ("setgroups", "deny"),
            ("gid_map", "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in gid_maps))):
        fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return os.open("ns/user", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)


def mount_idmapped(source: str, target: str, m: Mount, recursive: bool, userns: int) -> None:
    """Attach an id-mapped clone of *source* at *target*; *userns* is an fd of a user
    namespace with the mount's mappings (made by the runtime on the host with
    :func:`userns_fd_for`: the init's /proc may not show its own children yet)."""
    flags = c.OPEN_TREE_CLONE | c.OPEN_TREE_CLOEXEC | (c.AT_RECURSIVE if recursive else 0)
    try:
        tree = open_tree(AT_FDCWD, source, flags)
    except OSError as exc:
        raise ContainError(f"idmapped mount {source}: {exc.strerror}") from exc
    try:
        try:
            mount_setattr(tree, "", c.AT_EMPTY_PATH | (c.AT_RECURSIVE if recursive else 0),
                          c.MOUNT_ATTR_IDMAP, userns_fd=userns)
        except OSError as exc:
            raise ContainError(f"idmapped mount {source} on {m.destination}: {exc.strerror} "
                               "(does the filesystem support id mapping?)") from exc
        # the target is /proc/self/fd/N: follow that (magic) link to the resolved directory
        move_mount(tree, "", AT_FDCWD, target,
                   c.MOVE_MOUNT_F_EMPTY_PATH | c.MOVE_MOUNT_T_SYMLINKS)
    finally:
        os.close(tree)
