"""``contain classify``: the survey's Table 1, measured for every installed technology."""

from __future__ import annotations

import os

from contain.inspect import SCHEMA, classes, taxonomy
from contain.measure import runners

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CLASSIFY_SCHEMA = "contain.classify/1"


def measured_columns(facts: dict[str, Any] | None, probe: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """The extra columns the survey calls for, from the same measurements."""
    out: dict[str, Any] = {"namespaces_private": None, "capabilities_kept": None,
                           "syscalls_reachable": None, "cgroup_limits": None,
                           "seccomp": None}
    if facts is not None:
        # filtering (a kernel-only deny list) or interception (calls handed to user space)
        out["seccomp"] = facts["seccomp"].get("kind")
        out["namespaces_private"] = sorted(k for k, v in facts["namespaces"].items()
                                           if v.get("private"))
        out["capabilities_kept"] = facts["capabilities"]["sets"]["effective"]["count"]
        out["cgroup_limits"] = list(facts["cgroups"]["enforced"])
    if probe is not None:
        sc = probe["syscalls"]
        out["syscalls_reachable"] = [sc["reachable"], sc["tried"]]
        if facts is None:
            out["capabilities_kept"] = probe["capabilities"]["effective"]["count"]
    return out


def row_for(tech: runners.Tech, result: dict[str, Any], host_probe: dict[str, Any] | None,
            baseline: dict[str, Any]) -> dict[str, Any]:
    facts, probe = result.get("facts"), result.get("probe")
    row: dict[str, Any] = {"key": tech.key, "label": tech.label, "comment": tech.comment,
                           "version": result.get("version"), "status": result["status"],
                           "reason": result.get("reason")}
    if result["status"] != "measured":
        return row
    marks = classes.table_marks(facts, probe, host_probe, baseline)
    separate, _ = classes._probe_kernel(probe, host_probe)
    real = taxonomy.realised(facts, marks)
    row.update({
        "marks": marks,
        "class": classes.class_of(marks, separate),
        "measured": measured_columns(facts, probe),
        "taxonomy": real,
        "degree": list(taxonomy.degree(real)),
        "facts": facts,
        "probe": probe,
    })
    from contain.inspect.survey import compare

    row["survey"] = compare(row)
    return row


def classify(names: list[str] | None = None, quick: bool = False,
             progress: Callable[[str], None] | None = None,
             techs: list[runners.Tech] | None = None) -> dict[str, Any]:
    """Measure every selected technology (by *names*, or the given *techs*); return the
    document ``--format json`` prints."""
    from contain.inspect import probe as probe_mod
    from contain.inspect import procfs

    say = progress or (lambda _msg: None)
    if techs is None:
        techs = runners.select(names)
    if quick and not names:  # the KVM platform can only time out on a machine without KVM
        techs = [t for t in techs if t.key != "runsc-kvm"]
    from contain.inspect import virt

    _, host_probe = probe_mod.run_here()
    machine = virt.detect()
    me = procfs.inspect_pid(os.getpid())
    baseline = classes.baseline_from(me)
    work = runners.Work()
    rows = []
    try:
        for tech in techs:
            why = tech.missing()
            if why:
                rows.append({"key": tech.key, "label": tech.label, "comment": tech.comment,
                             "version": None, "status": "not installed"
                             if "not installed" in why else "unavailable", "reason": why})
                say(f"{tech.label}: {why}")
                continue
            say(f"{tech.label}: running the probe")
            result = runners.run_probe(tech, work, baseline, host_probe)
            result["version"] = tech.version()
            row = row_for(tech, result, host_probe, baseline)
            if row["status"] == "measured" and not quick:
                row["measured"]["startup_ms"] = runners.startup_ms(tech, work)
            elif row["status"] == "measured":
                row["measured"]["startup_ms"] = None
            rows.append(row)
            say(f"{tech.label}: {row['status']}"
                + (f" ({row['reason']})" if row.get("reason") else ""))
    finally:
        work.close()
    return {
        "schema": CLASSIFY_SCHEMA,
        "inspect_schema": SCHEMA,
        "host": {"kernel": host_probe["kernel"], "virtualised":
                 bool(machine["guest"]), "machine": machine, "hardware_view":
                 host_probe["hardware_view"], "paravirt": host_probe["paravirt"],
                 "syscalls_reachable": [host_probe["syscalls"]["reachable"],
                                        host_probe["syscalls"]["tried"]]},
        "baseline": {k: v for k, v in baseline.items() if k != "cgroups"},
        "quick": quick,
        "columns": [f"{g}/{c}" for g, c in classes.COLUMNS],
        "rows": rows,
    }
