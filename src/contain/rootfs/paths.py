"""Symlink-safe path resolution inside a root filesystem.

Every path that comes from config.json (mount destinations, device paths, masked and
read-only paths, cwd) is resolved with ``openat2(RESOLVE_IN_ROOT)``: a symlink, however
hostile, is resolved as if the rootfs were ``/`` and can never lead out of it. Callers get
an ``O_PATH`` fd and act on ``/proc/self/fd/N`` so that nothing re-resolves the string
(a path that races to become a symlink after the check changes nothing).
"""

from __future__ import annotations

import errno
import os
import stat

from contain.linux import consts
from contain.linux.syscalls import openat2

_RESOLVE = consts.RESOLVE_IN_ROOT | consts.RESOLVE_NO_MAGICLINKS
_MAX_LINKS = 40


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _split(path: str) -> tuple[str, str]:
    path = path.rstrip("/") or "/"
    parent, _, name = path.rpartition("/")
    return parent or "/", name


def _normalize(path: str) -> str:
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open *path* inside the tree at *root_fd*; symlinks cannot leave the tree."""
    return openat2(root_fd, path.lstrip("/") or ".", flags, 0, _RESOLVE)


def resolve_in_root(root_fd: int, path: str, create: str | None = None, mode: int = 0o755,
                    _depth: int = 0) -> int:
    """Return an O_PATH fd for *path* inside the root; with *create* ("dir" or "file"),
    make the missing components (parents as directories) without ever following a
    symlink out of the root: a dangling symlink is followed inside it."""
    path = _normalize(path)
    try:
        return open_in_root(root_fd, path)
    except OSError as exc:
        if exc.errno != errno.ENOENT or create is None:
            raise
    if _depth > _MAX_LINKS:
        raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links")
    parent, name = _split(path)
    if not name:
        raise OSError(errno.ENOENT, f"{path}: cannot create the root")
    pfd = resolve_in_root(root_fd, parent, "dir", 0o755, _depth + 1)
    try:
        try:
            if create == "dir":
                os.mkdir(name, mode, dir_fd=pfd)
            else:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY
                                 | os.O_CLOEXEC, 0o644, dir_fd=pfd))
        except FileExistsError:
            # Either a race with another creator or a dangling symlink: follow it inside.
            try:
                target = os.readlink(name, dir_fd=pfd)
            except OSError:
                target = None
            if target is not None:
                if not target.startswith("/"):
                    target = f"{parent}/{target}"
                return resolve_in_root(root_fd, target, create, mode, _depth + 1)
    finally:
        os.close(pfd)
    return open_in_root(root_fd, path)


def is_dir_fd(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)
