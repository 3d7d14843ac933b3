"""``contain classify --measure`` output: table, markdown, JSON, and one HTML page."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNITS = {"surface": "score", "interference": "% slower", "containment": "x limit",
          "startup": "ms", "overhead": "x native"}


def _cell(value: float | None, rank: int) -> str:
    if value is None:
        return f"- ({rank})"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} ({rank})"


def _rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    from contain.measure.rank import AXES

    head = ["#", "Technology", "Weighted rank"] + [f"{a} [{_UNITS[a]}]" for a in AXES]
    rows = []
    for r in doc["order"]:
        rows.append([str(r["place"]), r["label"], f"{r['score']:.2f}"] +
                    [_cell(r["values"][a], r["ranks"][a]) for a in AXES])
    return head, rows


def _notes(doc: dict[str, Any]) -> list[str]:
    plan = doc["plan"]
    w = ", ".join(f"{k}={v:g}" for k, v in doc["weights"].items())
    out = [f"Each cell: value (rank on that axis, 1 = best); lower values are better. "
           f"Weights: {w}.",
           f"Interference: {', '.join(plan['hogs'])} hogs beside a fixed workload, both "
           f"instances with {plan['limits']}, inside a {plan['machine_memory_mb']} MiB "
           f"machine (a cgroup); {plan['runs']} run(s) each"
           + (" (quick mode)" if doc["quick"] else "") + "."]
    for key, m in doc["measured"].items():
        for note in m["surface"]["notes"]:
            out.append(f"{key}: {note}")
    for r in doc["not_measured"]:
        out.append(f"{r['label']}: {r['status']} ({r.get('reason') or ''})")
    return out


def table_text(doc: dict[str, Any]) -> str:
    head, rows = _rows(doc)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows), ""]
    out += _notes(doc)
    return "\n".join(out) + "\n"


def table_markdown(doc: dict[str, Any]) -> str:
    head, rows = _rows(doc)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    out += _notes(doc)
    return "\n".join(out) + "\n"


def table_json(doc: dict[str, Any]) -> str:
    from contain.jsonio import dumps

    return dumps(doc, indent=2) + "\n"


def _esc(s: object) -> str:
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _plots(doc: dict[str, Any]) -> str:
    """One bar chart per axis as inline SVG (matplotlib when installed, else none)."""
    try:
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p>(plots need matplotlib)</p>"
    from contain.measure.rank import AXES

    order = doc["order"]
    fig, axs = plt.subplots(1, len(AXES), figsize=(3.2 * len(AXES), 3.2))
    for ax, axis in zip(axs, AXES, strict=True):
        labels = [r["label"] for r in order]
        values = [r["values"][axis] or 0 for r in order]
        ax.barh(labels, values, color="#4a7")
        ax.set_title(f"{axis} [{_UNITS[axis]}]", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def table_html(doc: dict[str, Any]) -> str:
    head, rows = _rows(doc)
    trs = "\n".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    notes = "".join(f"<li>{_esc(n)}</li>" for n in _notes(doc))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>contain classify --measure: isolation measured and ordered</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #bbb; padding: 3px 6px; }}
th {{ background: #eee; }}
</style></head><body>
<h1>Isolation measured and ordered on this machine</h1>
<p>Host kernel {_esc(doc['host']['kernel']['release'])}.</p>
<table><thead><tr>{''.join(f'<th>{_esc(h)}</th>' for h in head)}</tr></thead>
<tbody>
{trs}
</tbody></table>
<ul>{notes}</ul>
{_plots(doc)}
</body></html>
"""


FORMATS = {"table": table_text, "markdown": table_markdown, "json": table_json,
           "html": table_html}
