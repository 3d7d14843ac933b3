"""Python API spawn: ``contain.run(["/bin/true"])`` many times inside one process.

No CLI start-up: one interpreter imports contain once and calls the API in a loop. The
floor, interleaved call by call in the same process, is ``subprocess.run(["/bin/true"])``
(a plain fork/exec from Python, no isolation). The loop runs in a child interpreter so
that a crash or a leak of the API cannot take the driver down; it prints its samples as
JSON on stdout.
"""

from __future__ import annotations

import json
import sys

from . import plots
from .common import (
    SRC,
    Result,
    Session,
    fmt_ms,
    md_table,
    stopwatch,
    summarize,
    timed,
)

CHILD = r"""
import json, subprocess, sys, time
sys.path.insert(0, @SRC@)
n = @N@
t0 = time.perf_counter()
try:
    import contain
except Exception as exc:
    print(json.dumps({"error": f"import contain: {type(exc).__name__}: {exc}"}))
    sys.exit(0)
import_s = time.perf_counter() - t0
if not callable(getattr(contain, "run", None)):
    print(json.dumps({"error": "contain.run is not available yet (the Python API has not "
                               "landed)", "import_s": import_s}))
    sys.exit(0)

def status(value):
    for attr in ("returncode", "exit_code", "status", "code"):
        if hasattr(value, attr):
            return getattr(value, attr)
    if isinstance(value, tuple) and value:
        return value[0]
    return value

api, floor, first, killed = [], [], None, 0
try:
    for i in range(n + 2):  # two warm-up calls
        for attempt in range(3):  # an outside SIGKILL (shared machine) is retried
            t = time.perf_counter()
            value = contain.run(["/bin/true"])
            dt = time.perf_counter() - t
            rc = status(value)
            if rc not in (137, -9):
                break
            killed += 1
        if first is None:
            first = repr(value)[:200]
        if rc not in (0, None):
            print(json.dumps({"error": f"contain.run(['/bin/true']) returned {value!r}"}))
            sys.exit(0)
        t = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        df = time.perf_counter() - t
        if i >= 2:
            api.append(dt)
            floor.append(df)
except Exception as exc:
    print(json.dumps({"error": f"contain.run: {type(exc).__name__}: {exc}"}))
    sys.exit(0)
print(json.dumps({"api": api, "floor": floor, "import_s": import_s, "first": first,
                  "killed": killed}))
"""


def run(session: Session) -> Result:
    result = Result("api_spawn", "Python API: contain.run(['/bin/true']) in one process")
    n = session.each_round(default=200, quick=10)
    code = CHILD.replace("@SRC@", repr(str(SRC))).replace("@N@", str(n))
    with stopwatch(result):
        session.progress.start("api_spawn", 1)
        c = timed([sys.executable, "-I", "-S", "-c", code], timeout=60 + 5 * n,
                  scratch=session.scratch)
        session.progress.finish()
    try:
        doc = json.loads(c.out.strip().splitlines()[-1]) if c.out.strip() else {}
    except ValueError:
        doc = {}
    if c.rc != 0 or not doc:
        result.errors["contain"] = f"API child failed: {c.describe()}"
    elif "error" in doc:
        result.errors["contain"] = doc["error"]
    samples = {"contain.run": doc.get("api", []), "subprocess.run (floor)": doc.get("floor", [])}
    summary = {k: summarize(v) for k, v in samples.items() if v}
    result.data = {"calls": n, "unit": "seconds", "samples": samples, "summary": summary,
                   "import_contain_s": doc.get("import_s"), "first_return": doc.get("first"),
                   "retried_after_outside_sigkill": doc.get("killed", 0)}
    rows = [[k, s["n"], f"**{fmt_ms(s['median'])}**", fmt_ms(s["p10"]), fmt_ms(s["p90"])]
            for k, s in summary.items()]
    text = md_table(["call", "n", "median ms", "p10", "p90"], rows) if rows else ""
    api = summary.get("contain.run", {}).get("median")
    if api is not None:
        verdict = "met" if api < 0.005 else "not met"
        text += f"\nTarget: median under 5 ms: **{verdict}** ({fmt_ms(api)} ms).\n"
    if doc.get("import_s") is not None:
        text += f"\n`import contain`: {doc['import_s'] * 1000:.1f} ms (once per process).\n"
    if result.errors:
        text += "\n" + md_table(["runtime", "error"], sorted(result.errors.items()))
    result.markdown = text
    result.notes.append(f"{n} calls after 2 warm-up calls, each followed by the floor call")
    if session.plot and summary:
        path = session.out / "api_spawn.png"
        plots.latency_boxplots(path, "Python API spawn of /bin/true",
                               {"spawn": {k: v for k, v in samples.items() if v}})
        result.plots.append(path.name)
    return result
