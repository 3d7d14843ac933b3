"""Linux security modules: AppArmor profiles and SELinux labels for the process.

Both are applied on exec (written to /proc/self/attr/.../exec just before execve), so
the runtime's own code never runs confined by them. When a config asks for a profile or
a label and that LSM is not enabled on the host, create fails with a clear message (as
runc does for SELinux labels and youki for AppArmor profiles) rather than run the
container less confined than asked. ``linux.mountLabel`` only changes mount options
when SELinux is enabled; otherwise it is ignored, as runc's SELinux library does.

Landlock (enabled on many current kernels) belongs to the sandbox layer, not here; it is
not applied yet.
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.spec.decode import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contain.spec.config import Process


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read(1) == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def check(proc: Process, path: str = "$.process") -> None:
    """Refuse, before anything is created, a profile or label this host cannot apply."""
    if proc.apparmor_profile and not apparmor_enabled():
        raise fail(f"{path}.apparmorProfile",
                   f"profile {proc.apparmor_profile!r} requested but AppArmor is not enabled "
                   "on this host")
    if proc.selinux_label and not selinux_enabled():
        raise fail(f"{path}.selinuxLabel",
                   f"label {proc.selinux_label!r} requested but SELinux is not enabled on "
                   "this host")


def _write_attr(paths: tuple[str, ...], value: str, what: str) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ContainError(f"{what}: {p}: {exc.strerror}") from exc
        try:
            os.write(fd, value.encode())
            return
        except OSError as exc:
            raise ContainError(f"{what} {value!r}: {exc.strerror}") from exc
        finally:
            os.close(fd)
    raise ContainError(f"{what}: no /proc/self/attr interface (is /proc mounted?)")


def apply_on_exec(proc: Process) -> None:
    """Arrange for the next execve to enter the process's profile and label."""
    if proc.apparmor_profile:
        _write_attr(("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"),
                    f"exec {proc.apparmor_profile}", "process.apparmorProfile")
    if proc.selinux_label:
        _write_attr(("/proc/self/attr/exec",), proc.selinux_label, "process.selinuxLabel")
