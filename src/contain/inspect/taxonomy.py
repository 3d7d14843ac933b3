"""The survey's virtualisation taxonomy (Figure 10) as a tree, and which leaves a
measured process realises.

Figure 10 is an image in the survey; this tree is rebuilt from the text that builds it
step by step: Section 4.2.3 (hypervisor: architecture type I/II; hardware abstraction
Full/Para/HWA), 4.3.3 with Figures 11 and 12 (container: the eight namespaces, the
cgroup controllers, capabilities), 4.4.3 with 5.5 (sandbox: syscall filtering by
ptrace, seccomp-BPF, SUD) and 4.5.2 (hybrid: a cross-section of the others). Inner
nodes are dimensions, leaves are options (Section 4.6); by Definition 2 a technology's
isolation is the degree to which it realises the option leaves.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAMESPACE_LEAVES = (("cgroup", "cgroup"), ("ipc", "IPC"), ("net", "network"),
                    ("mnt", "mount"), ("pid", "PID"), ("time", "time"), ("user", "user"),
                    ("uts", "UTS"))
# Figure 12 (cgroup v2 controllers) plus the v1 devices controller this machine has
CGROUP_LEAVES = ("cpu", "cpuset", "freezer", "hugetlb", "io", "memory", "perf_event", "pids",
                 "rdma", "devices")

# (id, label, children)
TREE: tuple[Any, ...] = (
    "virtualization", "Virtualization", (
        ("hypervisor", "Hypervisor-based", (
            ("hypervisor.type", "Architecture type", (
                ("hypervisor.type.I", "Type I (in or on the bare machine)", ()),
                ("hypervisor.type.II", "Type II (hosted, user space)", ()),
            )),
            ("hypervisor.abstraction", "Hardware abstraction", (
                ("hypervisor.abstraction.Full", "Full virtualisation", ()),
                ("hypervisor.abstraction.Para", "Paravirtualisation", ()),
                ("hypervisor.abstraction.HWA", "Hardware-assisted", ()),
            )),
        )),
        ("container", "Container-based", (
            ("container.namespaces", "Namespaces", tuple(
                (f"container.namespaces.{k}", label, ()) for k, label in NAMESPACE_LEAVES)),
            ("container.cgroups", "Cgroups", tuple(
                (f"container.cgroups.{c}", c, ()) for c in CGROUP_LEAVES)),
            ("container.capabilities", "Capabilities", (
                ("container.capabilities.reduced", "reduced capability sets", ()),
            )),
        )),
        ("sandbox", "Sandbox-based", (
            ("sandbox.syscalls", "System call filtering", (
                ("sandbox.syscalls.ptrace", "ptrace", ()),
                ("sandbox.syscalls.bpf", "Seccomp-BPF", ()),
                ("sandbox.syscalls.sud", "Syscall User Dispatch", ()),
            )),
        )),
        ("hybrid", "Hybrid (cross-section)", (
            ("hybrid.hypervisor+container", "hypervisor + container enablers", ()),
            ("hybrid.hypervisor+sandbox", "hypervisor + sandbox enablers", ()),
            ("hybrid.container+sandbox", "container + sandbox enablers", ()),
        )),
    ),
)


def leaves(node: tuple[Any, ...] = TREE) -> list[str]:
    nid, _, kids = node
    if not kids:
        return [nid]
    out: list[str] = []
    for k in kids:
        out.extend(leaves(k))
    return out


def _controller_of(limit: str) -> str:
    head = limit.split(".")[0]
    return {"blkio": "io"}.get(head, head)


def realised(facts: dict[str, Any] | None, marks: dict[str, dict[str, Any]]
             ) -> dict[str, bool | None]:
    """leaf id -> True (realised), False (measured not realised), None (unknown)."""
    out: dict[str, bool | None] = {leaf: False for leaf in leaves()}

    def m(key: str) -> bool | None:
        return marks.get(key, {}).get("mark")

    for col, leaf in (("I", "type.I"), ("II", "type.II"), ("Full", "abstraction.Full"),
                      ("Para", "abstraction.Para"), ("HWA", "abstraction.HWA")):
        out[f"hypervisor.{leaf}"] = m(f"Hypervisor/{col}")
    if facts is not None:
        for k, _ in NAMESPACE_LEAVES:
            out[f"container.namespaces.{k}"] = facts["namespaces"][k].get("private")
        enforced = {_controller_of(e) for e in facts["cgroups"]["enforced"]}
        for c in CGROUP_LEAVES:
            out[f"container.cgroups.{c}"] = c in enforced
        if m("Container/Cgroups") is False:
            for c in CGROUP_LEAVES:
                out[f"container.cgroups.{c}"] = False
    else:
        for leaf in out:
            if leaf.startswith(("container.namespaces", "container.cgroups")):
                out[leaf] = None
    out["container.capabilities.reduced"] = m("Container/Capabilities")
    out["sandbox.syscalls.ptrace"] = m("Sandbox/ptrace")
    out["sandbox.syscalls.bpf"] = m("Sandbox/BPF")
    out["sandbox.syscalls.sud"] = m("Sandbox/SUD")
    groups = {g: any(v for k, v in marks.items() if k.startswith(g + "/") and v.get("mark"))
              for g in ("Hypervisor", "Container", "Sandbox")}
    out["hybrid.hypervisor+container"] = groups["Hypervisor"] and groups["Container"]
    out["hybrid.hypervisor+sandbox"] = groups["Hypervisor"] and groups["Sandbox"]
    out["hybrid.container+sandbox"] = groups["Container"] and groups["Sandbox"]
    return out


def degree(real: dict[str, bool | None]) -> tuple[int, int]:
    """(options realised, options measured) -- Definition 2's degree of realisation."""
    known = [v for v in real.values() if v is not None]
    return sum(1 for v in known if v), len(known)


def render_text(real: dict[str, bool | None], ascii_only: bool = False) -> str:
    """The tree with [x] realised, [ ] not realised, [?] not measurable here."""
    tee, last, bar, gap = ("|- ", "`- ", "|  ", "   ") if ascii_only else \
        ("├─ ", "└─ ", "│  ", "   ")
    lines: list[str] = []

    def box(v: bool | None) -> str:
        return "[x]" if v else ("[?]" if v is None else "[ ]")

    def walk(node: tuple[Any, ...], prefix: str, is_last: bool, top: bool) -> None:
        nid, label, kids = node
        head = "" if top else prefix + (last if is_last else tee)
        if kids:
            sub = [real.get(leaf) for leaf in leaves(node)]
            n = sum(1 for v in sub if v)
            lines.append(f"{head}{label}  ({n}/{len(sub)})")
        else:
            lines.append(f"{head}{box(real.get(nid))} {label}")
        child_prefix = "" if top else prefix + (gap if is_last else bar)
        for i, k in enumerate(kids):
            walk(k, child_prefix, i == len(kids) - 1, False)

    walk(TREE, "", True, True)
    return "\n".join(lines) + "\n"


def to_json(real: dict[str, bool | None]) -> dict[str, Any]:
    def node(n: tuple[Any, ...]) -> dict[str, Any]:
        nid, label, kids = n
        if not kids:
            return {"id": nid, "label": label, "realised": real.get(nid)}
        return {"id": nid, "label": label, "children": [node(k) for k in kids]}

    return node(TREE)
