"""contain inspect / probe / classify: isolation measured on the live kernel."""

from __future__ import annotations

import sys

from contain.cli.args import Command, Flag, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COMMANDS = {
    "inspect": Command(
        "inspect", "cmd_inspect",
        flags=(Flag("--json", "bool", help="print the facts as JSON (schema contain.inspect/1)"),
               Flag("--tree", "bool", help="print the survey's taxonomy with the options this "
                                           "process realises marked")),
        usage="TARGET", min_args=1, max_args=1,
        help="Show the isolation confining a process: namespaces, cgroup limits, "
             "capabilities,\nseccomp, tracer, LSMs, root filesystem, and its class (host, "
             "container, sandbox,\nhybrid) with the evidence. TARGET is a host pid, a "
             "container id, or 'self'."),
    "probe": Command(
        "probe", "cmd_probe",
        flags=(Flag("--script", "bool", help="print the POSIX sh probe script (to copy "
                                             "into any image)"),
               Flag("--json", "bool", help="print the parsed facts as JSON"),
               Flag("--raw", "bool", help="print the probe's machine-readable lines")),
        max_args=0,
        help="Run the isolation self-check here, from inside: kernel, hypervisor, "
             "namespaces,\ncapabilities, seccomp, and which harmless system calls are "
             "denied."),
    "classify": Command(
        "classify", "cmd_classify",
        flags=(Flag("--runtimes", default="", help="comma-separated technologies (contain, "
                    "contain-run, contain-sandbox, runc, crun, runsc, runsc-ptrace, "
                    "runsc-kvm, bwrap, podman, containerd); default: all"),
               Flag("--format", default="table", help="table, markdown, json or html"),
               Flag("--quick", "bool", help="skip start-up timing (and runsc-kvm unless "
                                            "named); with --measure, small sizes"),
               Flag("--measure", "bool", help="also measure interference, attack surface "
                                              "and cost, and order the technologies"),
               Flag("--weights", default="", help="with --measure: axis weights, e.g. "
                    "isolation=3,startup=1 (surface, interference, containment, startup, "
                    "overhead; isolation = the first three)"),
               Flag("--output,-o", default="", help="write to this file instead of stdout")),
        max_args=0,
        help="Run the same probe workload under every isolation technology installed and "
             "print\nthe survey's Table 1 for them, every mark derived from measurements;\n"
             "with --measure, the isolation each achieves, measured, and an ordering."),
}


def cmd_inspect(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.inspect import classes, procfs, render, taxonomy

    pid, container = procfs.resolve_target(args[0], ctx.root)
    facts = procfs.inspect_pid(pid, descendants=True)
    if container is not None:
        facts["container"] = {"id": container["id"], "bundle": container["bundle"]}
        facts["seccomp"]["profile"] = procfs.profile_size(container["config"])
    marks = classes.table_marks(facts)
    facts["marks"] = marks
    real = taxonomy.realised(facts, marks)
    facts["taxonomy"] = {"realised": sorted(k for k, v in real.items() if v),
                         "degree": list(taxonomy.degree(real))}
    if opts["json"]:
        from contain.jsonio import dumps

        if opts["tree"]:
            facts["taxonomy"]["tree"] = taxonomy.to_json(real)
        sys.stdout.write(dumps(facts, indent=2) + "\n")
        return 0
    if opts["tree"]:
        n, total = taxonomy.degree(real)
        sys.stdout.write(f"process {facts['pid']} ({facts['comm']}): class "
                         f"{facts['class']['name']}; {n} of {total} measured options realised\n")
        sys.stdout.write(taxonomy.render_text(real))
        return 0
    sys.stdout.write(render.inspect_text(facts))
    return 0


def cmd_probe(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.inspect import probe

    if opts["script"]:
        sys.stdout.write(probe.script())
        return 0
    raw, facts = probe.run_here()
    if opts["raw"]:
        sys.stdout.write(raw)
        return 0
    if opts["json"]:
        from contain.jsonio import dumps

        sys.stdout.write(dumps(facts, indent=2) + "\n")
        return 0
    sys.stdout.write(probe_text(facts))
    return 0


def probe_text(f: dict[str, Any]) -> str:
    L = [f"kernel: {f['kernel']['release']}  ({f['kernel']['version'][:70]})",
         f"hostname: {f['hostname']}  pid 1: {f['pid1_comm']}  uid: {f['uid'][:1]}",
         f"cpu: {f['cpu']['model']}; hypervisor flag "
         + ("set" if f["cpu"]["hypervisor_flag"] else "clear"),
         "hardware seen: " + (", ".join(f["hardware_view"]) or "none"),
         "paravirtual: " + (", ".join(f["paravirt"]) or "none")]
    ns = f["namespaces"]
    L.append("namespaces same as pid 1's here: " + ", ".join(
        k for k, v in ns.items() if v["same_as_init"]) or "none")
    L.append(f"uid_map: {f['uid_map']}")
    eff = f["capabilities"]["effective"]
    L.append(f"capabilities: {eff['count']} effective ({eff['hex']}), bounding "
             f"{f['capabilities']['bounding']['count']}")
    sc = f["seccomp"]
    L.append(f"seccomp: mode {sc['mode']}, {sc['filters']} filter(s); no_new_privs "
             f"{'yes' if sc['no_new_privs'] else 'no'}; tracer pid {f['tracer_pid']}")
    if f["root"]:
        ro = "read-only" if f["root"]["readonly"] else "read-write"
        L.append(f"root: {f['root']['fstype']}, {ro}, {f['root']['propagation']}; "
                 f"{f['mounts']} mounts")
    d = f["dmesg"]
    L.append(f"dmesg: {'readable' if d['rc'] == 0 else 'denied' if d['rc'] else 'n/a'}"
             + (f": {d['head'][0][:70]}" if d["head"] else ""))
    s = f["syscalls"]
    L.append(f"syscalls: {s['reachable']} of {s['tried']} harmless calls reachable")
    for name, r in s["results"].items():
        if r["verdict"] == "absent":
            continue
        L.append(f"  {name:<13} {r['verdict']:<8} {r['errno'] or ''}")
    return "\n".join(L) + "\n"


def cmd_classify(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.inspect import render
    from contain.measure.classify import classify

    fmt = opts["format"]
    if fmt not in render.FORMATS:
        raise UsageError(f"unknown format {fmt!r}: table, markdown, json or html")
    names = [n.strip() for n in opts["runtimes"].split(",") if n.strip()] or None

    def progress(msg: str) -> None:
        sys.stderr.write(f"classify: {msg}\n")
        sys.stderr.flush()

    if opts["measure"]:
        from contain.measure import report
        from contain.measure.isolation import measure_isolation
        from contain.measure.rank import parse_weights

        weights = parse_weights(opts["weights"])
        measured = measure_isolation(names, quick=opts["quick"], weights=weights,
                                     progress=progress)
        text = report.FORMATS[fmt](measured)
    else:
        if opts["weights"]:
            raise UsageError("--weights goes with --measure")
        doc = classify(names, quick=opts["quick"], progress=progress)
        text = render.FORMATS[fmt](doc)
    if opts["output"]:
        with open(opts["output"], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
