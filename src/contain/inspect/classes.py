"""Table 1 of the survey, measured: each mark derived from inspector and probe facts.

The survey (seeds/004, Table 1) marks, per technology, the isolation enablers it uses:
hypervisor type (I, II) and abstraction (Full, Para, HWA); container enablers
(Namespaces, Cgroups, Capabilities); sandbox enablers (ptrace, seccomp-BPF, SUD).
Here each mark is a rule over measured facts, with its evidence, and a mark is
True (realised), False (measured absent) or None (cannot be measured here).

All comparisons are against a *baseline*: the inspector's reference process (the
initial namespaces) for ``contain inspect``, the classifier's own process for
``contain classify`` -- so that what the machine imposes on everybody (this machine
drops CAP_SYS_RESOURCE from every bounding set) is not credited to a technology.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COLUMNS: tuple[tuple[str, str], ...] = (
    ("Hypervisor", "I"), ("Hypervisor", "II"), ("Hypervisor", "Full"),
    ("Hypervisor", "Para"), ("Hypervisor", "HWA"),
    ("Container", "Namespaces"), ("Container", "Cgroups"), ("Container", "Capabilities"),
    ("Sandbox", "ptrace"), ("Sandbox", "BPF"), ("Sandbox", "SUD"),
)

CLASSES = ("host", "container", "sandbox", "hypervisor", "hybrid")


def _mark(value: bool | None, evidence: str) -> dict[str, Any]:
    return {"mark": value, "evidence": evidence}


def _cap_mask(facts: dict[str, Any], which: str) -> int:
    return int(facts["capabilities"]["sets"][which]["hex"], 16)


def baseline_from(facts: dict[str, Any] | None) -> dict[str, Any]:
    """What a baseline process has: its bounding set, filters, limits, cgroup paths."""
    if facts is None:
        from contain.inspect import caps

        last = caps.last_cap()
        return {"cap_bnd": caps.full_mask(last), "filters": 0, "enforced": [],
                "cgroups": {}, "name": "the initial namespaces (no limits, all capabilities)"}
    return {"cap_bnd": _cap_mask(facts, "bounding"), "filters": facts["seccomp"]["filters"],
            "enforced": list(facts["cgroups"]["enforced"]),
            "cgroups": {",".join(h["controllers"]): h["path"]
                        for h in facts["cgroups"]["hierarchies"]},
            "name": f"process {facts['pid']} ({facts['comm']})"}


def _probe_kernel(probe: dict[str, Any] | None, host_probe: dict[str, Any] | None
                  ) -> tuple[bool | None, str]:
    """Does the workload run on a kernel other than the host's?"""
    if not probe or not host_probe:
        return None, "no probe from inside"
    inside = probe.get("kernel") or {}
    outside = host_probe.get("kernel") or {}
    if not inside.get("version"):
        return None, "the probe could not read /proc/version"
    if inside.get("version") != outside.get("version"):
        return True, (f"kernel inside {inside.get('release')!r} differs from the host's "
                      f"{outside.get('release')!r}")
    return False, f"same kernel as the host ({outside.get('release')})"


def table_marks(facts: dict[str, Any] | None, probe: dict[str, Any] | None = None,
                host_probe: dict[str, Any] | None = None,
                baseline: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The Table 1 marks for one technology, keyed "Group/Column"."""
    base = baseline or baseline_from(None)
    out: dict[str, dict[str, Any]] = {}
    desc = (facts or {}).get("descendants") or {}

    # -- hypervisor -------------------------------------------------------------------
    separate, kernel_ev = _probe_kernel(probe, host_probe)
    kvm = ((facts or {}).get("hypervisor") or {}).get("kvm_fds", 0) + desc.get("kvm_fds", 0)
    traced = bool(facts and (facts.get("tracer") or desc.get("traced")))
    hw_inside = bool(probe and probe.get("hardware_view"))
    host_hw = bool(host_probe and host_probe.get("hardware_view"))
    if facts is None and probe is None:
        for grp, col in COLUMNS:
            out[f"{grp}/{col}"] = _mark(None, "not measured")
        return out
    if kvm:
        out["Hypervisor/HWA"] = _mark(True, f"{kvm} KVM file descriptor(s) held by the "
                                            "runtime's processes (hardware-assisted VM)")
        out["Hypervisor/I"] = _mark(True, "the hypervisor is KVM, part of the host kernel")
        out["Hypervisor/II"] = _mark(False, "no user-space hypervisor: KVM is in use")
    else:
        out["Hypervisor/HWA"] = _mark(False if facts else None,
                                      "no KVM file descriptor in the runtime's processes")
        typ2 = bool(separate) and not traced
        out["Hypervisor/I"] = _mark(False if facts else None, "no in-kernel hypervisor in use")
        out["Hypervisor/II"] = _mark(
            typ2 if separate is not None else None,
            "a separate kernel runs without KVM and without a tracer: a user-space "
            "hypervisor/emulator" if typ2 else kernel_ev)
    if separate:
        para_ev = list((probe or {}).get("paravirt") or [])
        out["Hypervisor/Full"] = _mark(
            hw_inside, ("the guest kernel sees a machine: " + ", ".join(
                (probe or {}).get("hardware_view") or [])) if hw_inside else
            "the guest kernel sees no emulated machine (no DMI, no PCI devices)")
        if not hw_inside and kvm:
            para_ev.append("a purpose-built guest kernel without a hardware view runs on KVM")
        out["Hypervisor/Para"] = _mark(bool(para_ev), ("paravirtual interface: " + "; ".join(
            para_ev)) if para_ev else "no paravirtual interface seen inside")
    else:
        out["Hypervisor/Full"] = _mark(False if separate is False else None, kernel_ev)
        out["Hypervisor/Para"] = _mark(False if separate is False else None, kernel_ev)
    if host_hw and not separate:
        out["Hypervisor/Full"]["evidence"] += " (the host itself is a virtual machine; "\
                                              "that is not the technology's doing)"

    # -- container ------------------------------------------------------------------------
    if facts is None:
        for col in ("Namespaces", "Cgroups", "Capabilities", "ptrace", "BPF"):
            grp = "Container" if col in ("Namespaces", "Cgroups", "Capabilities") else "Sandbox"
            out[f"{grp}/{col}"] = _mark(None, "no host-side process to inspect")
    else:
        private = [k for k, v in facts["namespaces"].items() if v.get("private")]
        out["Container/Namespaces"] = _mark(
            bool(private), f"private: {', '.join(private)}" if private else
            "all eight namespaces shared with the host")
        enforced = [e for e in facts["cgroups"]["enforced"] if e not in base["enforced"]]
        out["Container/Cgroups"] = _mark(
            bool(enforced), f"limits in force: {', '.join(enforced)}" if enforced else
            "no cgroup limit beyond the baseline's")
        bnd = _cap_mask(facts, "bounding")
        eff = _cap_mask(facts, "effective")
        dropped = base["cap_bnd"] & ~bnd
        n_eff = bin(eff).count("1")
        if dropped:
            ev = (f"bounding set lacks {bin(dropped).count('1')} of the baseline's "
                  f"{bin(base['cap_bnd']).count('1')}; {n_eff} effective")
        else:
            ev = f"bounding set as the baseline's; {n_eff} effective"
            if facts["capabilities"]["in_user_namespace"]:
                ev += " (relative to a private user namespace)"
        out["Container/Capabilities"] = _mark(bool(dropped), ev)

        # -- sandbox ----------------------------------------------------------------------
        tr = facts.get("tracer")
        if tr and tr.get("notify_listeners"):
            # a seccomp-notify supervisor: it traces only to take the workload down with it
            out["Sandbox/ptrace"] = _mark(False, f"traced by pid {tr['pid']} ({tr['comm']}) "
                                                 "only to be killed with it (EXITKILL)")
        elif tr:
            out["Sandbox/ptrace"] = _mark(True, f"traced by pid {tr['pid']} ({tr['comm']})"
                                                + (": syscalls stop at its seccomp TRACE "
                                                   "returns" if tr["comm"] == "contain-ptrace"
                                                   else ""))
        elif desc.get("traced"):
            out["Sandbox/ptrace"] = _mark(True, f"{len(desc['traced'])} helper process(es) "
                                                "traced by the runtime (ptrace interception)")
        else:
            out["Sandbox/ptrace"] = _mark(False, "TracerPid 0")
        out["Sandbox/BPF"] = _bpf_mark(facts, base, desc)
    out["Sandbox/SUD"] = (_sud_mark(facts) if facts is not None else
                          _mark(None, "no host-side process to inspect"))
    if probe and (probe.get("syscalls") or {}).get("tried"):
        sc = probe["syscalls"]
        out["Sandbox/BPF"]["evidence"] += (f"; probe: {sc['reachable']} of {sc['tried']} "
                                           "harmless syscalls reachable")
    return {f"{g}/{c}": out[f"{g}/{c}"] for g, c in COLUMNS}


def _bpf_mark(facts: dict[str, Any], base: dict[str, Any], desc: dict[str, Any]
              ) -> dict[str, Any]:
    """Seccomp-BPF as the survey's sandbox enabler: calls handed to user space (a filter
    returning USER_NOTIF with a live receiver). A kernel-only deny list is filtering, the
    container class's tool (Table 1 gives Docker and Podman no BPF mark): measured and
    shown, but no mark."""
    sc = facts["seccomp"]
    filters = sc["filters"] - base["filters"]
    kind = sc.get("kind")
    tr = facts.get("tracer") or {}
    if tr.get("notify_listeners") and sc["mode"] == 2 and kind != "interception":
        # the filter cannot be read (its supervisor traces the process, for EXITKILL),
        # but the tracer holding notify listeners is the live receiver
        return _mark(True, "seccomp filter with user-notification returns: supervisor pid "
                           f"{tr['pid']} ({tr['comm']}) holds {tr['notify_listeners']} "
                           "listener(s)")
    ev = sc.get("kind_evidence") or f"seccomp {sc['mode_name']}"
    if sc["mode"] != 2 or filters <= 0:
        if desc.get("seccomp_filtered"):
            return _mark(False, "the runtime's helper processes run under seccomp filters "
                                "(the runtime protecting itself, not interception)")
        return _mark(False, f"seccomp {sc['mode_name']}, no filter beyond the baseline's")
    if kind == "interception":
        return _mark(True, ev)
    if kind == "unknown":
        return _mark(None, ev)
    return _mark(False, ev)


def _sud_mark(facts: dict[str, Any]) -> dict[str, Any]:
    icpt = facts["seccomp"].get("interception") or {}
    sud = icpt.get("sud")
    if sud is None:
        why = icpt.get("sud_unknown") or icpt.get("unknown") or "not read"
        return _mark(None, f"syscall user dispatch unknown: {why}")
    if sud.get("mode"):
        return _mark(True, f"syscall user dispatch on (selector at 0x{sud['selector']:x}, "
                           f"allowed code 0x{sud['offset']:x}+{sud['len']})")
    return _mark(False, "syscall user dispatch off (read with a ptrace stop)")


def class_of(marks: dict[str, dict[str, Any]], separate_kernel: bool | None = None
             ) -> dict[str, Any]:
    """The survey's class from the marks, with the evidence that decided it.

    hypervisor enablers and any other -> hybrid; hypervisor alone -> hypervisor;
    syscall interception/filtering -> sandbox (a container "extended by sandboxing
    methods", survey 4.4.1, when namespaces are private too); private namespaces ->
    container; none of these -> host process."""
    def on(key: str) -> bool:
        return bool(marks.get(key, {}).get("mark"))

    hyp = [c for g, c in COLUMNS if g == "Hypervisor" and on(f"{g}/{c}")]
    sbx = [c for g, c in COLUMNS if g == "Sandbox" and on(f"{g}/{c}")]
    ctr = [c for g, c in COLUMNS if g == "Container" and on(f"{g}/{c}")]
    evidence = [f"{k}: {v['evidence']}" for k, v in marks.items() if v.get("mark")]
    if separate_kernel:
        evidence.append("the workload runs on its own kernel (seen by the probe)")
    if hyp and (sbx or ctr):
        name, why = "hybrid", "hypervisor enablers combined with container/sandbox enablers"
    elif hyp:
        name, why = "hypervisor", "hypervisor enablers only"
    elif sbx:
        name = "sandbox"
        why = ("system calls filtered or intercepted (" + ", ".join(sbx) + ")" +
               ("; a container extended by sandboxing (survey 4.4.1)" if on(
                   "Container/Namespaces") else ""))
    elif on("Container/Namespaces"):
        name, why = "container", "container enablers: " + ", ".join(ctr)
    else:
        name = "host"
        why = "no private namespace, no syscall interception, no hypervisor of its own"
        if ctr:
            why += " (only " + ", ".join(ctr) + ": resource or privilege limits of a host "\
                   "process)"
    return {"name": name, "why": why, "evidence": evidence}


def classify_facts(facts: dict[str, Any], probe: dict[str, Any] | None = None,
                   host_probe: dict[str, Any] | None = None,
                   baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    marks = table_marks(facts, probe, host_probe, baseline)
    out = class_of(marks)
    out["marks"] = {k: v["mark"] for k, v in marks.items()}
    return out
