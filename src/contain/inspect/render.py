"""Output formats: the inspect report, and Table 1 as text, markdown, json and html."""

from __future__ import annotations

from contain.inspect import classes, taxonomy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SHORT = {"Namespaces": "NS", "Cgroups": "Cg", "Capabilities": "Cap"}


def _box(v: bool | None) -> str:
    return "x" if v else ("?" if v is None else "")


def _yes(v: bool | None) -> str:
    return "yes" if v else ("?" if v is None else "no")


# -- contain inspect ------------------------------------------------------------------------

def inspect_text(facts: dict[str, Any]) -> str:
    L: list[str] = []
    cls = facts["class"]
    L.append(f"process {facts['pid']} ({facts['comm']})  exe {facts.get('exe') or '?'}")
    if facts.get("container"):
        L.append(f"container {facts['container']['id']}")
    L.append(f"class: {cls['name']} -- {cls['why']}")
    ref = facts["reference"]
    L.append(f"compared with pid {ref['pid']} (the initial namespaces)"
             + (f"; {'; '.join(ref['notes'])}" if ref["notes"] else ""))
    L += _machine_lines(facts)
    L.append("")
    L.append("namespaces:")
    for kind, ns in facts["namespaces"].items():
        state = "private" if ns["private"] else ("shared " if ns["private"] is False else "?")
        line = f"  {kind:<7} {state:<8} {ns['inode']}"
        if kind == "user" and ns["private"]:
            line += f"  uid_map {ns['uid_map']} gid_map {ns['gid_map']}"
        if kind == "pid" and len(ns.get("nspid", [])) > 1:
            line += f"  pids {ns['nspid']}"
        L.append(line)
    cg = facts["cgroups"]
    L.append(f"cgroups ({cg['version']}):")
    for h in cg["hierarchies"]:
        L.append(f"  {','.join(h['controllers']) or '(v2)':<14} {h['path']}")
    L.append("  limits in force: " + (", ".join(cg["enforced"]) or "none"))
    lim = cg["limits"]
    for key in ("max", "high"):
        m = (lim.get("memory") or {}).get(key)
        if m and m.get("effective") is not None:
            L.append(f"    memory.{key} {m['effective']} bytes (set at {m['set_at']})")
    q = ((lim.get("cpu") or {}).get("quota_cpus") or {})
    if q.get("effective") is not None:
        L.append(f"    cpu quota {q['effective']} CPUs (set at {q['set_at']})")
    p = ((lim.get("pids") or {}).get("max") or {})
    if p.get("effective") is not None:
        L.append(f"    pids.max {p['effective']} (set at {p['set_at']})")
    d = lim.get("devices") or {}
    if d.get("restricted"):
        L.append(f"    devices: {len(d['rules'])} allow rule(s) (set at {d['set_at']})")
    cs = lim.get("cpuset") or {}
    if cs.get("restricted"):
        L.append(f"    cpuset {cs['cpus']} of {cs['host_cpus']}")
    capsf = facts["capabilities"]
    L.append("capabilities:")
    for name, s in capsf["sets"].items():
        names = ", ".join(n[4:].lower() for n in s["names"]) if s["count"] < capsf[
            "full_count"] - 8 else f"all but {capsf['full_count'] - s['count']}"
        L.append(f"  {name:<11} {s['hex']}  {s['count']:>2}  {names}")
    L.append("  missing from the bounding set: "
             + (", ".join(capsf["missing"]["bounding"]) or "none"))
    sc = facts["seccomp"]
    L.append(f"seccomp: {sc['mode_name']}, {sc['filters']} filter(s); no_new_privs "
             f"{_yes(sc['no_new_privs'])}" + (
                 f"; profile: {sc['profile']}" if sc.get("profile") else ""))
    if sc.get("kind_evidence") and sc.get("filters"):
        L.append(f"  {sc['kind']}: {sc['kind_evidence']}")
    tr = facts.get("tracer")
    L.append("tracer: " + (f"pid {tr['pid']} ({tr['comm']})" if tr else "none"))
    lsm = facts["lsm"]
    L.append(f"lsm: active {', '.join(lsm['active']) if lsm['active'] else 'unknown'}; "
             f"label {lsm['labels']['current'] or 'none'}; landlock ABI "
             f"{lsm['landlock']['kernel_abi']}, domain "
             f"{_yes(lsm['landlock']['domain'])}")
    fs = facts["filesystem"]
    r = fs["root"]
    L.append(f"root: {r['method']}{' (same as host)' if r['same_as_host'] else ''}, "
             f"{'read-only' if r['readonly'] else 'read-write'}, {r['fstype']}, "
             f"propagation {r['propagation']}")
    L.append("  masked: " + (", ".join(fs["masked_paths"]) or "none"))
    L.append("  read-only: " + (", ".join(fs["readonly_paths"]) or "none"))
    L.append("")
    L.append("evidence:")
    for e in cls["evidence"] or ["(none)"]:
        L.append(f"  {e}")
    return "\n".join(L) + "\n"


# -- Table 1 ------------------------------------------------------------------------------

def _header() -> list[str]:
    return ["Name", "Version", "Comment"] + [SHORT.get(c, c) for _, c in classes.COLUMNS] + [
        "Class", "NS private", "Caps kept", "Syscalls", "Cgroup limits", "Start ms"]


def _cells(row: dict[str, Any]) -> list[str]:
    base = [row["label"], row.get("version") or "-"]
    if row["status"] != "measured":
        return [*base, f"{row['status']}: {row.get('reason') or ''}"] + [""] * (
            len(classes.COLUMNS)) + ["-", "-", "-", "-", "-", "-"]
    m = row["measured"]
    sys_r = m.get("syscalls_reachable")
    ns = m.get("namespaces_private")
    return [*base, row["comment"]] + [
        _box(row["marks"][f"{g}/{c}"]["mark"]) for g, c in classes.COLUMNS] + [
        row["class"]["name"],
        f"{len(ns)}/8" if ns is not None else "?",
        str(m["capabilities_kept"]) if m.get("capabilities_kept") is not None else "?",
        f"{sys_r[0]}/{sys_r[1]}" if sys_r else "?",
        ",".join(m.get("cgroup_limits") or []) or ("-" if m.get("cgroup_limits") is not None
                                                   else "?"),
        f"{m['startup_ms']:.0f}" if m.get("startup_ms") is not None else "-",
    ]


def table_text(doc: dict[str, Any]) -> str:
    head = _header()
    rows = [_cells(r) for r in doc["rows"]]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    widths[2] = min(widths[2], 40)

    def fmt(cells: list[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    groups = "".ljust(sum(widths[:3]) + 6) + "  " + "Hypervisor".ljust(
        sum(widths[3:8]) + 8) + "  " + "Container".ljust(sum(widths[8:11]) + 4) + "  Sandbox"
    out = [groups.rstrip(), fmt(head), fmt(["-" * w for w in widths])]
    out += [fmt(r) for r in rows]
    out.append("")
    out.append("x realised, blank measured absent, ? not measurable here. "
               f"Host kernel {doc['host']['kernel']['release']}"
               + (f" (itself {_machine_text(doc)})" if doc["host"]["virtualised"] else "")
               + ".")
    out.append(_footnotes(doc))
    from contain.inspect.survey import comparison_text

    out.append(comparison_text(doc))
    return "\n".join(out).rstrip("\n") + "\n"


def _footnotes(doc: dict[str, Any]) -> str:
    notes = []
    for r in doc["rows"]:
        if r["status"] == "measured" and r.get("reason"):
            notes.append(f"{r['label']}: {r['reason']}")
    return "\n".join(notes)


def table_markdown(doc: dict[str, Any]) -> str:
    head = _header()
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    out.append("")
    out.append("Marks: x realised, blank measured absent, ? not measurable here. "
               "Groups: I, II, Full, Para, HWA = Hypervisor; NS, Cg, Cap = Container; "
               "ptrace, BPF, SUD = Sandbox.")
    notes = _footnotes(doc)
    if notes:
        out += ["", notes]
    from contain.inspect.survey import comparison_text

    compared = comparison_text(doc)
    if compared:
        out += ["", compared.replace("\n  ", "\n- ").replace("\n    ", "\n    - ")]
    return "\n".join(out) + "\n"


def table_json(doc: dict[str, Any]) -> str:
    from contain.jsonio import dumps

    return dumps(doc, indent=2) + "\n"


def _esc(s: object) -> str:
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def table_html(doc: dict[str, Any]) -> str:
    head = _header()
    rows_html = []
    for r in doc["rows"]:
        cells = _cells(r)
        tds = []
        for i, c in enumerate(cells):
            title = ""
            if r["status"] == "measured" and 3 <= i < 3 + len(classes.COLUMNS):
                g, col = classes.COLUMNS[i - 3]
                title = f' title="{_esc(r["marks"][f"{g}/{col}"]["evidence"])}"'
            cls = ' class="mark"' if 3 <= i < 3 + len(classes.COLUMNS) else ""
            tds.append(f"<td{cls}{title}>{_esc(c)}</td>")
        rows_html.append("<tr>" + "".join(tds) + "</tr>")
    ncol = len(classes.COLUMNS)
    group_row = ('<tr><th colspan="3"></th><th colspan="5">Hypervisor</th>'
                 '<th colspan="3">Container</th><th colspan="3">Sandbox</th>'
                 f'<th colspan="{len(head) - 3 - ncol}">Measured</th></tr>')
    tree = _tree_html(doc)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>contain classify: isolation measured</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #bbb; padding: 3px 6px; vertical-align: top; }}
th {{ background: #eee; }}
td.mark {{ text-align: center; font-weight: bold; }}
ul.tree, ul.tree ul {{ list-style: none; padding-left: 1.2em; }}
ul.tree li {{ margin: 2px 0; }}
.techs {{ color: #06c; font-size: 12px; }}
.none {{ color: #999; }}
</style></head><body>
<h1>Isolation measured on this machine</h1>
<p>Host kernel {_esc(doc['host']['kernel']['release'])}{' (a virtual machine)' if
    doc['host']['virtualised'] else ''}. Each mark is derived from what the probe (inside)
and the inspector (/proc and cgroupfs, outside) measured; hover a mark for its evidence.
x realised, blank measured absent, ? not measurable here.</p>
<table>
<thead>{group_row}<tr>{''.join(f'<th>{_esc(h)}</th>' for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows_html)}
</tbody></table>
<h2>The survey's Table 1 beside the measurements</h2>
<pre>{_esc(_comparison(doc))}</pre>
<h2>Taxonomy (survey Figure 10) with the technologies realising each option</h2>
{tree}
</body></html>
"""


def _tree_html(doc: dict[str, Any]) -> str:
    measured = [r for r in doc["rows"] if r["status"] == "measured"]

    def node(n: tuple[Any, ...]) -> str:
        nid, label, kids = n
        if not kids:
            who = [r["label"] for r in measured if r["taxonomy"].get(nid)]
            tag = (f'<span class="techs">{_esc(", ".join(who))}</span>' if who
                   else '<span class="none">none</span>')
            return f"<li>{_esc(label)}: {tag}</li>"
        return f"<li><b>{_esc(label)}</b><ul>" + "".join(node(k) for k in kids) + "</ul></li>"

    return '<ul class="tree">' + node(taxonomy.TREE) + "</ul>"


FORMATS = {"table": table_text, "markdown": table_markdown, "json": table_json,
           "html": table_html}


def _machine_text(doc: dict[str, Any]) -> str:
    machine = doc["host"].get("machine") or {}
    name = machine.get("hypervisor")
    return f"a virtual machine on {name}" if name else "a virtual machine"


def _comparison(doc: dict[str, Any]) -> str:
    from contain.inspect.survey import comparison_text

    return comparison_text(doc) or "(no measured technology corresponds to a survey row)"


def _machine_lines(facts: dict[str, Any]) -> list[str]:
    if not facts.get("machine"):
        return []
    from contain.inspect.virt import summary

    return [f"machine: {summary(facts['machine'])} (context, not the process's class)"]
