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


def parse_size(text: str | int) -> int:
    """Bytes from '256M', '1g', '4096' (binary units, as docker/runc accept)."""
    if isinstance(text, int):
        return text
    t = text.strip().lower().rstrip("b")
    mult = 1
    if t and t[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t)
    except ValueError as exc:
        raise ContainError(f"invalid size {text!r} (e.g. 512M, 2G)") from exc
    if value <= 0:
        raise ContainError(f"invalid size {text!r}: must be positive")
    return int(value * mult)


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
    return {"destination": dst, "type": "bind", "source": src,
            "options": ["rbind", mode, "nosuid", "nodev"]}


def sandbox_spec(args: list[str], *, memory: str | int | None = None,
                 pids: int | None = None, cpus: float | None = None,
                 binds: list[str] | tuple[str, ...] = (), net: str = "none",
                 env: list[str] | tuple[str, ...] = (), cwd: str = "/",
                 hostname: str | None = None, userns: bool = False,
                 caps: list[str] | tuple[str, ...] = (), seccomp: bool = True,
                 terminal: bool = False, uid: int = 0, gid: int = 0) -> dict[str, Any]:
    """The in-memory config.json of a host-root sandbox."""
    if not args:
        raise ContainError("sandbox: no command given (contain sandbox -- CMD ...)")
    if net not in ("none", "host"):
        raise ContainError(f"invalid --net {net!r}: none or host")
    capset = [c if c.upper().startswith("CAP_") else f"CAP_{c}" for c in caps]
    capset = [c.upper() for c in capset]
    environment = [DEFAULT_PATH, f"TERM={os.environ.get('TERM', 'xterm')}", "HOME=/root"]
    for e in env:
        if "=" not in e:
            raise ContainError(f"invalid --env {e!r}: NAME=VALUE")
        key = e.split("=", 1)[0]
        environment = [x for x in environment if not x.startswith(key + "=")] + [e]
    namespaces = [{"type": t} for t in ("pid", "mount", "ipc", "uts", "cgroup")]
    if net == "none":
        namespaces.append({"type": "network"})
    if needs_skeleton(binds):
        mounts: list[dict[str, Any]] = [
            {"destination": f"/{name}", "type": "bind", "source": f"/{name}",
             "options": ["rbind", "rro", "rprivate"]}
            for name in host_directories()
        ]
    else:  # the host's root in one recursive read-only bind: one mount instead of ~25
        mounts = [{"destination": "/", "type": "bind", "source": "/",
                   "options": ["rbind", "rro", "rprivate"]}]
    mounts += [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=755"]},
    ]
    if net == "none":
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    mounts.extend(parse_bind(b) for b in binds)
    resources: dict[str, Any] = {}
    if memory is not None:
        limit = parse_size(memory)
        resources["memory"] = {"limit": limit, "swap": limit}
    if pids is not None:
        if pids <= 0:
            raise ContainError(f"invalid --pids {pids}: must be positive")
        resources["pids"] = {"limit": pids}
    if cpus is not None:
        if cpus <= 0:
            raise ContainError(f"invalid --cpus {cpus}: must be positive")
        resources["cpu"] = {"quota": int(cpus * 100000), "period": 100000}
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if resources:
        linux["resources"] = resources
    if userns:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": uid, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": gid, "hostID": os.getegid(), "size": 1}]
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
            "capabilities": {"bounding": capset, "effective": list(capset),
                             "permitted": list(capset), "ambient": list(capset)},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": hostname or "sandbox",
        "mounts": mounts,
        "linux": linux,
    }
