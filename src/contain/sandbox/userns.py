"""Why a user namespace cannot be made here, precisely, and how to lift it.

A rootless sandbox needs an unprivileged user namespace. When making one fails, the
command is not run (never unsandboxed); :func:`explain` probes in a throw-away child
which step fails (unshare, the setgroups/uid_map/gid_map writes, a mount inside) and
with which errno, reads the knobs that cause it, and names the one that applies:

- ``user.max_user_namespaces`` = 0 (ENOSPC; per user namespace, also set by a parent);
- the count or the nesting depth (32) of user namespaces exhausted (ENOSPC, EUSERS);
- ``kernel.unprivileged_userns_clone`` = 0 (Debian's and older Ubuntu's switch; EPERM);
- Ubuntu 23.10+'s AppArmor restriction ``kernel.apparmor_restrict_unprivileged_userns``
  (the namespace is made, but holds no capabilities: the maps or the mounts fail);
- a seccomp filter of an outer container (Docker's and Podman's default profiles refuse
  unshare(CLONE_NEWUSER) to a process without CAP_SYS_ADMIN: EPERM, Seccomp: 2);
- the gid map refused because setgroups was not denied first (EPERM on gid_map);
- a chrooted caller (EPERM), or a kernel without user namespaces (no /proc/self/ns/user).
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
TAIL = "The command was not run: contain does not run it unsandboxed."


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def probe() -> tuple[str, int]:
    """('ok', 0), or the step that failed and its errno, tried in a forked child."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        stage, err = "ok", 0
        try:
            from contain.linux.syscalls import mount, unshare

            uid, gid = os.geteuid(), os.getegid()
            stage = "unshare"
            unshare(CLONE_NEWUSER)
            stage = "setgroups"
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            stage = "uid_map"
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            stage = "gid_map"
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
            stage = "mount"
            unshare(CLONE_NEWNS)
            mount("none", "/", None, 0x40000 | 0x4000, None)  # MS_PRIVATE|MS_REC
            stage = "ok"
        except OSError as exc:
            err = exc.errno or errno.EPERM
        except BaseException:
            err = errno.EINVAL
        os.write(w, f"{stage} {err}".encode())
        os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 100).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    stage, _, num = data.partition(" ")
    return (stage or "unshare"), int(num or errno.EPERM)


def _chrooted(proc: str) -> bool:
    try:
        a, b = os.stat("/"), os.stat(os.path.join(proc, "1", "root"))
    except OSError:
        return False
    return (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino)


def diagnose(stage: str, err: int, proc: str = "/proc") -> str | None:
    """The cause and its remedy for a failed *stage* with *err* (None when it worked);
    *proc* is where /proc is (a test may point it at a copy)."""
    if stage == "ok":
        return None
    sysctl = os.path.join(proc, "sys")
    maxns = _read(os.path.join(sysctl, "user", "max_user_namespaces"))
    clone = _read(os.path.join(sysctl, "kernel", "unprivileged_userns_clone"))
    apparmor = _read(os.path.join(sysctl, "kernel", "apparmor_restrict_unprivileged_userns"))
    status = _read(os.path.join(proc, "self", "status")) or ""
    seccomp = next((line.split(":", 1)[1].strip() for line in status.splitlines()
                    if line.startswith("Seccomp:")), "0")
    what = f"making a user namespace failed at {stage} ({errno.errorcode.get(err, err)})"
    if not os.path.exists(os.path.join(proc, "self", "ns", "user")):
        return (f"{what}: this kernel has no user namespaces (CONFIG_USER_NS is off). "
                f"Run contain as root, or on a kernel built with user namespaces. {TAIL}")
    if stage == "unshare" and err == errno.ENOSPC:
        if maxns == "0":
            return (f"{what}: user namespaces are disabled by user.max_user_namespaces=0 "
                    "(in this user namespace or a parent one). Lift it with "
                    "'sysctl -w user.max_user_namespaces=15000' as root (where it was "
                    f"set). {TAIL}")
        return (f"{what}: the limit of user namespaces is reached "
                f"(user.max_user_namespaces={maxns}). Raise it with 'sysctl -w "
                f"user.max_user_namespaces=...' as root, or end idle sandboxes. {TAIL}")
    if stage == "unshare" and err == errno.EUSERS:
        return (f"{what}: user namespaces are nested 32 deep already (the kernel's "
                f"limit). Run contain from a shallower namespace. {TAIL}")
    if stage == "unshare" and err == errno.EPERM:
        if clone == "0":
            return (f"{what}: unprivileged user namespaces are disabled by "
                    "kernel.unprivileged_userns_clone=0. Lift it with 'sysctl -w "
                    "kernel.unprivileged_userns_clone=1' as root (and in "
                    f"/etc/sysctl.d/ to keep it), or run contain as root. {TAIL}")
        if seccomp == "2":
            return (f"{what}: a seccomp filter on this process (Seccomp: 2 in "
                    "/proc/self/status; typically the default profile of the container "
                    "this runs in) refuses unshare(CLONE_NEWUSER). Lift it by running the "
                    "outer container with a profile that allows unshare and clone with "
                    "CLONE_NEWUSER (e.g. docker/podman run --security-opt "
                    f"seccomp=unconfined, or a custom profile). {TAIL}")
        if _chrooted(proc):
            return (f"{what}: this process is in a chroot, where the kernel refuses new "
                    f"user namespaces. Run contain outside the chroot. {TAIL}")
    if apparmor == "1":
        return (f"{what}: AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu 23.10+). Lift "
                "it with an AppArmor profile for contain's interpreter that has "
                "'userns,' (see /etc/apparmor.d/ and 'man apparmor.d'), or system-wide "
                "with 'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' as "
                f"root. {TAIL}")
    if stage in ("setgroups", "gid_map") and err == errno.EPERM:
        return (f"{what}: the gid map needs setgroups denied first, and this process "
                "may not deny it (/proc/self/setgroups is not writable here: a parent "
                "user namespace fixed it, or /proc is mounted read-only). Run contain "
                "where /proc/self/setgroups can be set to 'deny', or as root. "
                f"{TAIL}")
    if stage == "uid_map":
        return (f"{what}: the uid map was refused (only your own uid may be mapped "
                "without newuidmap; /proc may be read-only here). "
                f"{TAIL}")
    if stage == "mount":
        return (f"{what}: the new user namespace holds no capabilities to mount (an LSM "
                "such as AppArmor or SELinux restricts it, or /proc/sys/kernel/"
                f"unprivileged_userns_apparmor_policy). {TAIL}")
    if stage == "unshare" and err == errno.EINVAL:
        return f"{what}: the caller is multi-threaded at unshare time. {TAIL}"
    return f"{what}. {TAIL}"


def explain(exc: BaseException | None = None) -> str | None:
    """The precise cause, when a sandbox needing a user namespace failed because none
    can be made here (probed now); None when user namespaces work (then *exc* is about
    something else)."""
    stage, err = probe()
    return diagnose(stage, err)


def check() -> None:
    """Refuse (ContainError) now when no user namespace can be made."""
    why = explain()
    if why:
        from contain.errors import ContainError

        raise ContainError(why)


def facts(proc: str = "/proc") -> dict[str, Any]:
    """The knobs :func:`diagnose` reads, for reports and tests."""
    sysctl = os.path.join(proc, "sys")
    return {
        "max_user_namespaces": _read(os.path.join(sysctl, "user", "max_user_namespaces")),
        "unprivileged_userns_clone": _read(os.path.join(sysctl, "kernel",
                                                        "unprivileged_userns_clone")),
        "apparmor_restrict_unprivileged_userns": _read(
            os.path.join(sysctl, "kernel", "apparmor_restrict_unprivileged_userns")),
    }
