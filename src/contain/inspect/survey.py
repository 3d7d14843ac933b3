"""The survey's own Table 1 rows, set beside the measured ones, every difference explained.

The survey (seeds/004, Table 1) marked technologies from their documentation; here the
same columns are measured on the live kernel. A measured technology is compared with the
survey row it corresponds to (runc is Docker's and containerd's runtime; bubblewrap is
Flatpak's sandbox; runsc is gVisor), and each column where the two disagree gets one line
saying why -- from the measurement's own evidence and what is known of the mechanism.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Table 1 as printed: name, version, comment, and the columns it marks with "x"
TABLE_1: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("KVM", "2.3", "with Cgroups",
     frozenset({"Hypervisor/I", "Hypervisor/Full", "Hypervisor/Para", "Hypervisor/HWA",
                "Container/Cgroups"})),
    ("XEN", "4.15", "", frozenset({"Hypervisor/I", "Hypervisor/Full", "Hypervisor/Para",
                                   "Hypervisor/HWA"})),
    ("VirtualBox", "6.1", "", frozenset({"Hypervisor/II", "Hypervisor/Full",
                                         "Hypervisor/Para", "Hypervisor/HWA"})),
    ("Docker", "20.10", "", frozenset({"Container/Namespaces", "Container/Cgroups",
                                       "Container/Capabilities"})),
    ("Podman", "4.1", "", frozenset({"Container/Namespaces", "Container/Cgroups",
                                     "Container/Capabilities"})),
    ("Flatpak", "1.14", "", frozenset({"Container/Namespaces", "Container/Cgroups",
                                       "Container/Capabilities"})),
    ("gVisor", "2022", "with KVM",
     frozenset({"Hypervisor/I", "Hypervisor/Para", "Hypervisor/HWA", "Container/Namespaces",
                "Container/Cgroups", "Container/Capabilities"})),
    ("gVisor", "2022", "with ptrace",
     frozenset({"Container/Namespaces", "Container/Cgroups", "Container/Capabilities",
                "Sandbox/ptrace"})),
    ("bpfContain", "2021", "", frozenset({"Container/Namespaces", "Container/Cgroups",
                                          "Container/Capabilities", "Sandbox/BPF"})),
)

# measured technology key -> (survey name, survey comment), and why they correspond
CORRESPONDS: dict[str, tuple[str, str, str]] = {
    "runc": ("Docker", "", "runc is the runtime Docker runs containers with"),
    "containerd": ("Docker", "", "containerd with runc is Docker's container stack"),
    "contain-run": ("Docker", "", "an OCI runtime driven as Docker drives runc"),
    "crun": ("Podman", "", "crun is Podman's default OCI runtime on most distributions"),
    "podman": ("Podman", "", "the same technology"),
    "bwrap": ("Flatpak", "", "bubblewrap is the sandbox Flatpak runs applications in"),
    "contain-sandbox": ("Flatpak", "", "a host-root sandbox of bubblewrap's kind"),
    "runsc-ptrace": ("gVisor", "with ptrace", "the same technology and platform"),
    "contain-supervise-ptrace": ("gVisor", "with ptrace", "a ptrace supervisor, as "
                                 "gVisor's ptrace platform (without its own kernel)"),
    "contain-supervise-notify": ("bpfContain", "", "system calls policed through "
                                 "seccomp-BPF with decisions in user space"),
    "runsc-kvm": ("gVisor", "with KVM", "the same technology and platform"),
}

# why a mark may differ, per column, when the measurement does not say more
_WHY_ABSENT: dict[str, str] = {
    "Container/Cgroups": "no cgroup limit is in force for this run: the technology sets "
                         "limits only when asked (the survey marks what it can do)",
    "Container/Capabilities": "the bounding set is the caller's: capabilities are dropped "
                              "only inside a private user namespace, or not at all",
    "Container/Namespaces": "no private namespace seen from the host",
    "Sandbox/ptrace": "no tracer attached to the workload in this run",
    "Sandbox/BPF": "its seccomp filter decides every call in the kernel (a deny list), "
                   "which is filtering, not interception",
    "Hypervisor/I": "no KVM file descriptor held by the runtime in this run",
    "Hypervisor/Para": "no paravirtual interface seen from inside",
    "Hypervisor/HWA": "no KVM file descriptor held by the runtime in this run",
}
_WHY_PRESENT: dict[str, str] = {
    "Container/Cgroups": "limits are in force in this run that the survey did not record",
    "Container/Capabilities": "capabilities are dropped from the bounding set",
    "Sandbox/BPF": "system calls are handed to a supervisor in user space",
    "Sandbox/ptrace": "a tracer is attached",
}


def survey_row(name: str, comment: str) -> tuple[str, str, str, frozenset[str]] | None:
    return next((r for r in TABLE_1 if r[0] == name and r[2] == comment), None)


def compare(row: dict[str, Any]) -> dict[str, Any] | None:
    """The survey row for a measured row, and one line per column where they differ."""
    match = CORRESPONDS.get(row["key"])
    if match is None or row.get("status") != "measured":
        return None
    ref = survey_row(match[0], match[1])
    if ref is None:
        return None
    name, version, comment, marked = ref
    diffs = []
    for col, m in row["marks"].items():
        survey = col in marked
        measured = m["mark"]
        if measured is None or bool(measured) == survey:
            continue
        if survey:
            why = _WHY_ABSENT.get(col, "not seen in this run")
            line = f"{col}: survey x, measured absent -- {why} ({m['evidence']})"
        else:
            why = _WHY_PRESENT.get(col, "seen in this run")
            line = f"{col}: survey blank, measured x -- {why} ({m['evidence']})"
        diffs.append(line)
    unknown = [col for col, m in row["marks"].items() if m["mark"] is None]
    return {"survey": {"name": name, "version": version, "comment": comment,
                       "marks": sorted(marked)},
            "because": match[2], "differences": diffs, "not_measurable": unknown}


def comparison_text(doc: dict[str, Any]) -> str:
    out = ["The survey's Table 1 beside the measurements:"]
    for row in doc["rows"]:
        cmp = row.get("survey")
        if not cmp:
            continue
        s = cmp["survey"]
        label = f"{s['name']} {s['version']}" + (f" ({s['comment']})" if s["comment"] else "")
        if not cmp["differences"]:
            out.append(f"  {row['label']} ~ {label} [{cmp['because']}]: the same marks")
            continue
        out.append(f"  {row['label']} ~ {label} [{cmp['because']}]:")
        out += [f"    {d}" for d in cmp["differences"]]
    return "\n".join(out) + "\n" if len(out) > 1 else ""
