"""Host-root sandboxes: a command in fresh namespaces over the host's own files, read-only.

``contain sandbox -- CMD`` and ``contain.run(CMD)`` build this spec in memory and run it
through the same core as ``contain run``: new pid, mount, ipc, uts, cgroup and (unless
asked otherwise) network namespaces; the host's root bound read-only (recursively);
private /tmp, /run, /proc, /dev and /dev/shm; no capabilities, no_new_privs, the default
seccomp profile when libseccomp is present; memory, pids and cpu limits.
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.spec.defaults import DEFAULT_PATH, MASKED_PATHS, READONLY_PATHS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
    except ValueError:
        raise ContainError(f"invalid size {text!r} (e.g. 512M, 2G)") from None
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
    mounts: list[dict[str, Any]] = [
        {"destination": "/", "type": "bind", "source": "/",
         "options": ["rbind", "rro", "nosuid", "rprivate"]},
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
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname or "sandbox",
        "mounts": mounts,
        "linux": linux,
    }
