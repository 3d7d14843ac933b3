"""The OCI features document (``contain features``), generated from what contain supports.

It describes the runtime as a whole (mount options, capabilities, cgroups, seccomp), so
it lives at the layer that sees all of those, above rootfs/, cgroups/ and security/.
"""

from __future__ import annotations

import os

from contain.meta import SPEC_VERSION, VERSION
from contain.spec.config import (
    HOOK_KINDS,
    MPOL_FLAGS,
    MPOL_MODES,
    NAMESPACE_TYPES,
    SECCOMP_ACTIONS,
    SECCOMP_ARCHES,
    SECCOMP_FLAGS,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OPERATORS = ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
             "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]


def _mount_options() -> list[str]:
    from contain.rootfs.mounts import EXTRA, MOUNT_FLAGS, PROPAGATION, RECURSIVE

    return sorted({*MOUNT_FLAGS, *PROPAGATION, *RECURSIVE, *EXTRA})


def _capabilities() -> list[str]:
    from contain.security.capabilities import CAPS, last_cap

    top = last_cap()
    return [name for name, num in sorted(CAPS.items(), key=lambda kv: kv[1])
            if num <= top]


def _lsm_enabled(name: str) -> bool:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return name in f.read().split(",")
    except OSError:
        return False


def features() -> dict[str, Any]:
    from contain.cgroups import detect_layout

    layout = detect_layout()
    try:
        from contain.linux.libseccomp import version

        libseccomp = ".".join(map(str, version()))
    except Exception:  # no libseccomp: seccomp is then not offered
        libseccomp = None
    seccomp: dict[str, Any] = {"enabled": libseccomp is not None}
    if libseccomp is not None:
        seccomp.update({
            "actions": list(SECCOMP_ACTIONS),
            "operators": OPERATORS,
            "archs": list(SECCOMP_ARCHES),
            "knownFlags": list(SECCOMP_FLAGS),
            "supportedFlags": list(SECCOMP_FLAGS),
        })
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": _mount_options(),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": _capabilities(),
            "cgroup": {"v1": layout in ("v1", "hybrid"), "v2": layout in ("v2", "hybrid"),
                       "systemd": True, "systemdUser": True, "rdma": True},
            "seccomp": seccomp,
            "apparmor": {"enabled": _lsm_enabled("apparmor")},
            "selinux": {"enabled": _lsm_enabled("selinux")},
            # (what contain implements, whatever this host has: the spec's meaning)
            "intelRdt": {"enabled": True, "schemata": True, "monitoring": True},
            "memoryPolicy": {"modes": list(MPOL_MODES), "flags": list(MPOL_FLAGS)},
            "netDevices": {"enabled": True},
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {
            "io.github.contain.version": VERSION,
            "io.github.contain.libseccomp.version": libseccomp or "",
            "io.github.contain.arch": os.uname().machine,
        },
    }
