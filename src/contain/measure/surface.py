"""Attack surface: how much of the host kernel a workload can reach, as counts.

From the classifier's measurements of one technology (the inspector's facts on the
host side, the probe's from inside):

- system calls that reach the host kernel's implementation: the workload's seccomp
  filters (or, for a technology with its own kernel, the filters of the process that
  makes host calls on its behalf, e.g. gVisor's Sentry) run offline over every call
  number (:mod:`contain.inspect.filtereval`);
- system calls decided by a supervisor in user space (notify, trace);
- capabilities in the effective set;
- kernel interfaces within reach from inside: writable files under /proc/sys, /sys/kernel
  and the cgroup tree, sensitive files (/proc/kcore, sysrq-trigger ...), device nodes
  that open; a separate kernel's interfaces are its own, so none of the host's;
- whether a user namespace can be created (the door to more of the kernel).

``score`` is the mean of these as fractions of what a plain host process has (1.0: as
exposed as the host; lower is less): one number for the ordinal scale.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

INTERFACES = ("procsys", "sysfs_kernel", "sysfs_cgroup", "sensitive", "devices")


def attack_surface(row: dict[str, Any]) -> dict[str, Any]:
    """The attack surface of one measured classify row."""
    facts, probe = row.get("facts"), row.get("probe")
    out: dict[str, Any] = {"syscalls_to_host_kernel": None, "syscalls_total": None,
                           "syscalls_user_space": None, "capabilities": None,
                           "interfaces": {}, "user_namespaces": None, "score": None,
                           "notes": []}
    separate = False
    if probe is not None:
        inside = (probe.get("kernel") or {}).get("version")
        separate = bool(inside) and inside != _host_kernel_version()
    icpt = ((facts or {}).get("seccomp") or {}).get("interception") or {}
    surface = icpt.get("surface")
    if surface and "error" not in surface:
        out["syscalls_to_host_kernel"] = surface["reach_kernel"]
        out["syscalls_total"] = surface["total"]
        out["syscalls_user_space"] = surface["user_space"]
        if separate:
            out["notes"].append("host system calls are those of the process serving the "
                                "workload's own kernel (its filters)")
    elif icpt.get("unknown"):
        out["notes"].append(f"filters not readable: {icpt['unknown']}")
    if probe is not None:
        out["capabilities"] = probe["capabilities"]["effective"]["count"]
        ifaces = probe.get("interfaces") or {}
        for name in INTERFACES:
            if name in ifaces:
                reach = 0 if separate else ifaces[name]["reachable"]
                out["interfaces"][name] = {"reachable": reach, "total": ifaces[name]["total"]}
        if separate:
            out["notes"].append("the kernel interfaces seen inside are the workload's own "
                                "kernel's, none of the host's")
        userns = ((probe.get("syscalls") or {}).get("results") or {}).get("unshare_user")
        if userns and userns["verdict"] != "absent":
            out["user_namespaces"] = userns["verdict"] == "allowed"
    out["score"] = _score(out)
    return out


def _host_kernel_version() -> str:
    try:
        with open("/proc/version") as f:
            return f.read().strip()
    except OSError:
        return ""


def _score(s: dict[str, Any]) -> float | None:
    """None when the host system calls could not be measured (a traced process's filters
    cannot be read): the other parts alone would flatter it."""
    parts: list[float] = []
    if s["syscalls_to_host_kernel"] is None or not s["syscalls_total"]:
        return None
    parts.append(s["syscalls_to_host_kernel"] / s["syscalls_total"])
    if s["capabilities"] is not None:
        from contain.inspect import caps

        parts.append(s["capabilities"] / (caps.last_cap() + 1))
    reach = sum(v["reachable"] for v in s["interfaces"].values())
    total = sum(v["total"] for v in s["interfaces"].values())
    if total:
        parts.append(reach / total)
    if s["user_namespaces"] is not None:
        parts.append(1.0 if s["user_namespaces"] else 0.0)
    return round(sum(parts) / len(parts), 3) if parts else None
