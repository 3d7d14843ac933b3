"""Host-root sandboxes: a command in fresh namespaces over the host's own files, read-only.

``contain sandbox -- CMD`` and ``contain.run(CMD)`` build this spec in memory and run it
through the same core as ``contain run``: new pid, mount, ipc, uts, cgroup and (unless
asked otherwise) network namespaces; no capabilities, no_new_privs, the default seccomp
profile; memory, pids and cpu limits.

The root is the host's own, bound read-only (recursively), with private /tmp, /run,
/proc, /dev and /dev/shm over it. When a --bind targets a top-level path the host lacks,
the root is instead a private skeleton (in the runtime's state directory, never on the
host's own filesystem): the host's top-level symlinks copied, its top-level directories
bound read-only one by one, and the missing mount points made in the skeleton, which is
made read-only once set up.
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.process.init import INIT_ANNOTATION
from contain.spec.defaults import DEFAULT_PATH, MASKED_PATHS, READONLY_PATHS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# top-level directories the sandbox makes its own instead of binding the host's
PRIVATE = ("proc", "sys", "dev", "tmp", "run")


def host_directories() -> list[str]:
    """The host's top-level directories the sandbox binds (read-only)."""
    out = []
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if name not in PRIVATE and os.path.isdir(path) and not os.path.islink(path):
            out.append(name)
    return out


def needs_skeleton(binds: list[str] | tuple[str, ...]) -> bool:
    """Whether a bind targets a top-level path the host lacks: only then is the root a
    skeleton (see make_skeleton); otherwise the host's root is bound as a whole."""
    for text in binds:
        parts = text.split(":")
        if len(parts) > 1 and not os.path.lexists("/" + parts[1].strip("/").split("/")[0]):
            return True
    return False


def make_skeleton(rootfs: str, binds: list[str] | tuple[str, ...] = ()) -> None:
    """Fill the empty *rootfs* with the host's top-level layout: its symlinks copied,
    an empty directory for each directory (a mount point), and mount points for binds
    whose destination the host lacks. Only *rootfs* is written."""
    for name in os.listdir("/"):
        path = "/" + name
        try:
            if os.path.islink(path):
                os.symlink(os.readlink(path), os.path.join(rootfs, name))
            elif os.path.isdir(path):
                os.mkdir(os.path.join(rootfs, name), 0o755)
        except FileExistsError:
            pass
    for name in PRIVATE:
        os.makedirs(os.path.join(rootfs, name), 0o755, exist_ok=True)
    for text in binds:
        dst = text.split(":")[1]
        target = os.path.join(rootfs, dst.strip("/"))
        if not os.path.lexists("/" + dst.strip("/").split("/")[0]):
            src = os.path.abspath(text.split(":")[0])
            if os.path.isdir(src):
                os.makedirs(target, 0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
                open(target, "a").close()


def remove_skeleton(rootfs: str) -> None:
    """Undo make_skeleton: symlinks, empty directories and empty files only (nothing is
    mounted on the host's side of it: the mounts live in the sandbox's namespace)."""
    for dirpath, dirnames, filenames in os.walk(rootfs, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or os.path.getsize(path) == 0:
                os.unlink(path)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                try:
                    os.rmdir(path)
                except OSError:
                    pass
    try:
        os.rmdir(rootfs)
    except OSError:
        pass


# -- defaults (docs/security.md says what each one protects) -------------------------------

# the unprivileged host user a root caller's sandbox runs as (unless as_root)
SANDBOX_UID = 65534
SANDBOX_GID = 65534
DEFAULT_PIDS = 4096
MEMORY_SHARE = 2           # default memory bound: 1/MEMORY_SHARE of the host's RAM
RUN_SIZE = 64 << 20        # /run
SHM_SIZE = 64 << 20        # /dev/shm
# filesystems whose mounts can be id-mapped (a bind of one is shifted to the sandbox user)
IDMAP_FS = frozenset(("ext4", "ext3", "ext2", "xfs", "btrfs", "tmpfs", "f2fs", "vfat",
                      "exfat", "overlay", "erofs", "squashfs", "ntfs3", "hugetlbfs"))


def host_memory() -> int:
    """The host's RAM in bytes (MemTotal)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 4 << 30


def default_memory() -> int:
    return host_memory() // MEMORY_SHARE


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from '256M', '1g', '4096' (binary units, as docker/runc accept)."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ContainError(f"invalid {what} {str(text)[:50]!r} (e.g. 512M, 2G)")
    if isinstance(text, int):
        if text <= 0:
            raise ContainError(f"invalid {what} {text!r}: must be positive")
        return text
    t = text.strip().lower().rstrip("b")
    mult = 1
    if t and t[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t)
    except ValueError as exc:
        raise ContainError(f"invalid {what} {text[:50]!r} (e.g. 512M, 2G)") from exc
    if not value > 0 or value == float("inf"):
        raise ContainError(f"invalid {what} {text[:50]!r}: must be positive")
    return max(int(value * mult), 1)


def _unlimited(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("max", "unlimited")


def parse_bind(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ContainError(f"invalid --bind {text!r}: SRC:DST[:ro]")
    src, dst = os.path.abspath(parts[0]), parts[1]
    if not dst.startswith("/"):
        raise ContainError(f"invalid --bind {text!r}: DST must be absolute")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ContainError(f"invalid --bind {text!r}: mode must be ro or rw")
    if not os.path.exists(src):
        raise ContainError(f"--bind {text}: {src}: no such file or directory")
    top = dst.strip("/").split("/")[0]
    if top not in PRIVATE and os.path.isdir("/" + top) and not os.path.islink("/" + top) \
            and not os.path.exists(dst):
        # inside a host directory, which is bound read-only: nothing can be made there
        raise ContainError(f"--bind {text}: {dst} does not exist on the host, and "
                           f"/{top} is the host's own, read-only (bind onto an existing "
                           "path, under /tmp, or at a new top-level path)")
    # recursive attributes: a submount of the source is as read-only, nosuid and nodev
    return {"destination": dst, "type": "bind", "source": src,
            "options": ["rbind", "rro" if mode == "ro" else "rrw", "rnosuid", "rnodev"]}


def _fs_type(path: str) -> str:
    """The filesystem type of the mount that holds *path* (longest mount point prefix)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                sep = fields.index("-", 6)
                if (path == point or path.startswith(point.rstrip("/") + "/")) \
                        and len(point) >= len(best):
                    best, fstype = point, fields[sep + 1]
    except (OSError, ValueError, IndexError):
        return ""
    return fstype


def shift_to_sandbox_user(mount: dict[str, Any]) -> None:
    """Id-map a bind so that its owner is the sandbox's user (when its filesystem can be
    id-mapped): the caller granted it, so the unprivileged user may use it as its owner
    would; on disk nothing changes (new files get the owner's ids)."""
    st = os.stat(mount["source"])
    if st.st_uid == SANDBOX_UID and st.st_gid == SANDBOX_GID:
        return
    if _fs_type(mount["source"]) not in IDMAP_FS:
        return
    mount["uidMappings"] = [{"containerID": st.st_uid, "hostID": SANDBOX_UID, "size": 1}]
    mount["gidMappings"] = [{"containerID": st.st_gid, "hostID": SANDBOX_GID, "size": 1}]


_NOT_HOST = ("/proc/", "/sys/", "/dev/", "/tmp/", "/run/")


def host_unix_sockets(private: tuple[str, ...] = ()) -> list[str]:
    """Filesystem unix sockets bound in the caller's network namespace (/proc/net/unix)
    whose path the sandbox would reach through the host's root: those that are sockets
    on this root now, outside the sandbox's private directories and *private* paths."""
    try:
        with open("/proc/net/unix") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    import stat

    found: set[str] = set()
    skip = _NOT_HOST + tuple(p.rstrip("/") + "/" for p in private)
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8 or not fields[7].startswith("/"):
            continue  # unnamed or abstract
        path = fields[7]
        if (path + "/").startswith(skip) or path in found:
            continue
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                found.add(path)
        except OSError:
            pass
    return sorted(found)


def sandbox_spec(args: list[str], *, memory: str | int | None = None,
                 pids: int | None = None, cpus: float | None = None,
                 binds: list[str] | tuple[str, ...] = (), net: str = "none",
                 env: list[str] | tuple[str, ...] = (), cwd: str = "/",
                 hostname: str | None = None, userns: bool = False,
                 caps: list[str] | tuple[str, ...] = (), seccomp: bool = True,
                 terminal: bool = False, uid: int = 0, gid: int = 0,
                 as_root: bool = False, tmp_size: str | int | None = None,
                 shm_size: str | int | None = None, host_sockets: bool = False,
                 netns_path: str | None = None, userns_path: str | None = None,
                 net_env: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The in-memory config.json of a host-root sandbox.

    Defaults (each can be raised or turned off by an argument): the host's root read-only,
    nosuid and nodev on every submount; devices confined by the cgroup to the sandbox's
    own /dev nodes; memory 1/MEMORY_SHARE of the host's RAM, DEFAULT_PIDS processes; /tmp
    sized as the memory bound, /run and /dev/shm 64 MiB; the host's filesystem unix
    sockets masked (*host_sockets* keeps them); when the caller is root, the command runs
    as the unprivileged SANDBOX_UID (*as_root* keeps root; *userns* maps root to the
    caller in a user namespace instead).

    *net* is the mode of network.py (none, host, allow, private); the namespace it made
    is joined by *netns_path* (and *userns_path*: a user namespace that owns it), and
    *net_env* (the proxy variables) goes into the environment before --env."""
    if not args:
        raise ContainError("sandbox: no command given (contain sandbox -- CMD ...)")
    if net not in ("none", "host", "allow", "private"):
        raise ContainError(f"invalid --net {net!r}: none, host, private or allow=...")
    capset = [c if c.upper().startswith("CAP_") else f"CAP_{c}" for c in caps]
    capset = [c.upper() for c in capset]
    mapped = os.geteuid() == 0 and not as_root and not userns and not userns_path
    environment = [DEFAULT_PATH, f"TERM={os.environ.get('TERM', 'xterm')}",
                   "HOME=/tmp" if mapped else "HOME=/root"]
    environment += net_env
    for e in env:
        if "=" not in e:
            raise ContainError(f"invalid --env {e!r}: NAME=VALUE")
        key = e.split("=", 1)[0]
        environment = [x for x in environment if not x.startswith(key + "=")] + [e]
    namespaces = [{"type": t} for t in ("pid", "mount", "ipc", "uts", "cgroup")]
    if net != "host":
        namespaces.append({"type": "network", "path": netns_path} if netns_path
                          else {"type": "network"})
    memory_limit = None if _unlimited(memory) else \
        parse_size(memory, "--memory") if memory is not None else default_memory()
    user_binds = [parse_bind(b) for b in binds]
    if mapped:
        for m in user_binds:
            shift_to_sandbox_user(m)
    mounts = _mounts(binds, user_binds, net,
                     tmp_size=parse_size(tmp_size, "--tmp-size") if tmp_size is not None
                     else memory_limit or default_memory(),
                     shm_size=parse_size(shm_size, "--shm-size") if shm_size is not None
                     else SHM_SIZE)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "resources": _resources(memory_limit, pids, cpus),
    }
    if not host_sockets:
        linux["maskedPaths"] += host_unix_sockets(tuple(m["destination"] for m in user_binds))
    if userns_path:
        namespaces.append({"type": "user", "path": userns_path})
    elif userns:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": uid, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": gid, "hostID": os.getegid(), "size": 1}]
    elif mapped:
        uid, gid = SANDBOX_UID, SANDBOX_GID
    if seccomp:
        from contain.security.seccomp_default import default_profile

        linux["seccomp"] = default_profile(capset)
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": terminal,
            "user": {"uid": uid, "gid": gid},
            "args": list(args),
            "env": environment,
            "cwd": cwd,
            # (ambient needs inheritable: a non-root user keeps them across exec that way)
            "capabilities": {"bounding": capset, "effective": list(capset),
                             "permitted": list(capset), "inheritable": list(capset),
                             "ambient": list(capset)},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": hostname or "sandbox",
        "mounts": mounts,
        "linux": linux,
        # PID 1 is a small init that forwards signals to the command and reaps
        "annotations": {INIT_ANNOTATION: "true"},
    }


# the host's root: read-only, nosuid and nodev on every submount (a device node or a
# set-id program reachable anywhere under it is inert)
_HOST_ROOT_OPTIONS = ["rbind", "rro", "rnosuid", "rnodev", "rprivate"]


def _mounts(binds: list[str] | tuple[str, ...], user_binds: list[dict[str, Any]], net: str,
            *, tmp_size: int, shm_size: int) -> list[dict[str, Any]]:
    if needs_skeleton(binds):
        mounts: list[dict[str, Any]] = [
            {"destination": f"/{name}", "type": "bind", "source": f"/{name}",
             "options": list(_HOST_ROOT_OPTIONS)}
            for name in host_directories()
        ]
    else:  # the host's root in one recursive read-only bind: one mount instead of ~25
        mounts = [{"destination": "/", "type": "bind", "source": "/",
                   "options": list(_HOST_ROOT_OPTIONS)}]
    mounts += [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", f"size={tmp_size}"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=755", f"size={RUN_SIZE}"]},
    ]
    if net != "host":
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    mounts.extend(user_binds)
    return mounts


def _resources(memory: int | None, pids: int | None, cpus: float | None) -> dict[str, Any]:
    """Always a cgroup of the sandbox's own: bounded memory (no swap beyond it) and
    processes, and a device list that allows only the nodes of its own /dev."""
    resources: dict[str, Any] = {
        # deny all; the runtime appends the default nodes (null, zero, full, random,
        # urandom, tty, ptmx and pts) after this rule
        "devices": [{"allow": False, "access": "rwm"}],
    }
    if memory is not None:
        resources["memory"] = {"limit": memory, "swap": memory}
    if pids is None:
        pids = DEFAULT_PIDS
    if isinstance(pids, bool) or not isinstance(pids, int) or pids <= 0:
        raise ContainError(f"invalid --pids {pids!r}: a positive number")
    resources["pids"] = {"limit": pids}
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0 \
                or cpus == float("inf"):
            raise ContainError(f"invalid --cpus {cpus!r}: must be positive")
        resources["cpu"] = {"quota": max(int(cpus * 100000), 1000), "period": 100000}
    return resources
