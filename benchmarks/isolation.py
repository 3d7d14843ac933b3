"""Isolation measured (``contain bench --only isolation``, = ``contain classify --measure``).

For every installed technology: interference between two instances with the same limits
(noisy neighbours inside a small machine made of a cgroup), attack surface (host system
calls from the workload's filters, capabilities, kernel interfaces in reach), start-up
and overhead; then the ordinal scale with equal weights. Writes isolation.md, .json and
.html (with plots) next to the report.
"""

from __future__ import annotations

import sys
from typing import Any

from .common import SRC, Result, Session

# the technologies of contain classify, by the names contain bench uses for runtimes
_KEYS = {"contain": ("contain-run", "contain-sandbox"), "runc": ("runc",), "crun": ("crun",),
         "runsc": ("runsc-ptrace",), "bwrap": ("bwrap",)}


def run(session: Session) -> Result:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from contain.measure import report, runners
    from contain.measure.isolation import measure_isolation

    names = [k for rt in session.runtimes for k in _KEYS.get(rt.name, ())]
    techs = runners.select(names) if names else []
    doc: dict[str, Any] = measure_isolation(
        quick=session.quick, techs=techs,
        progress=lambda m: session.progress.message(f"isolation: {m}"))
    out = session.out
    (out / "isolation.json").write_text(report.table_json(doc))
    (out / "isolation.html").write_text(report.table_html(doc))
    md = report.table_markdown(doc)
    (out / "isolation.md").write_text(md)
    return Result("isolation", "Isolation measured and ordered (classify --measure)",
                  markdown=md, data={"order": doc["order"], "measured": doc["measured"]},
                  notes=["Full page with plots: isolation.html"])
