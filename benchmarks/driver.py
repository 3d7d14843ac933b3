"""The ``contain bench`` driver: pick runtimes, run every benchmark, write the report.

Output in ``--out``: ``report.md`` (the markdown tables), ``results.json`` (every sample,
the machine, the runtimes' versions and errors) and one PNG per plot. A runtime that
fails its first /bin/true is reported with its error and left out; a benchmark that
fails is reported with its error and the rest go on.
"""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import plots
from .common import (
    KNOWN_RUNTIMES,
    BenchError,
    OciRuntime,
    Progress,
    Result,
    Session,
    make_runtime,
    oci_config,
)

#: our own benchmarks, in order
OWN = ("goals", "lifecycle", "api_spawn", "throughput", "density", "pauseresume", "workload")
#: benchmarks other modules of the project contribute, used when their file exists
EXTERNAL = ("syscall_overhead", "cgroups", "engines", "isolation", "sandbox_policy",
            "sandbox_net", "supervise", "supervise_workload")
ALL = (*OWN, *EXTERNAL)
ALIASES = {"api": "api_spawn", "pause": "pauseresume", "syscall": "syscall_overhead",
           "syscalls": "syscall_overhead", "workloads": "workload", "net": "sandbox_net",
           "supervisors": "supervise", "sandbox-class": "supervise"}


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kib / 1048576, 1),
        "python": sys.version.split()[0],
        "loadavg": os.getloadavg(),
    }


def probe(session: Session, name: str) -> None:
    """Make runtime *name* and run /bin/true once; record it or its error on the session."""
    try:
        rt = make_runtime(session, name)
        bundle = session.bundle(rt.name, "true", oci_config(["/bin/true"]))
        for attempt in range(3):  # a flaky first run on a busy machine is not a verdict
            cid = session.new_id(rt.name, "probe")
            c = rt.run(cid, bundle, timeout=60)
            if c.rc == 0:
                break
            if isinstance(rt, OciRuntime):
                rt.delete(cid, force=True)
            if attempt == 2 or "not supported" in c.err:
                raise BenchError(c.describe())
            session.progress.message(f"runtime {name}: probe failed, retrying: {c.describe()}")
    except BenchError as exc:
        session.failed[name] = str(exc)
        session.progress.message(f"runtime {name}: left out: {exc}")
        return
    session.runtimes.append(rt)
    session.progress.message(f"runtime {name}: {rt.version} ({c.elapsed * 1000:.1f} ms "
                             "first run)")


def benchmark_module(name: str) -> Any:
    """The module for benchmark *name*, or None when an external one does not exist."""
    if name in EXTERNAL and not (Path(__file__).parent / f"{name}.py").exists():
        return None
    return importlib.import_module(f"{__package__}.{name}")


def as_result(name: str, value: Any) -> Result:
    """Accept what an external benchmark returns: a Result, a dict, or markdown text."""
    if isinstance(value, Result):
        return value
    if isinstance(value, str):
        return Result(name, name, markdown=value)
    if isinstance(value, dict):
        return Result(name, str(value.get("title", name)),
                      markdown=str(value.get("markdown", value.get("table", ""))),
                      data=value.get("data", {k: v for k, v in value.items()
                                              if k not in ("markdown", "table", "title")}),
                      errors=dict(value.get("errors", {})),
                      plots=list(value.get("plots", [])), notes=list(value.get("notes", [])))
    raise BenchError(f"benchmark {name} returned {type(value).__name__}, not a Result")


def run_benchmark(session: Session, name: str) -> Result | None:
    module = benchmark_module(name)
    if module is None:
        return None
    entry = getattr(module, "run", None)
    if not callable(entry):
        return Result(name, name, errors={"*": f"benchmarks/{name}.py has no run(session)"})
    t0 = time.monotonic()
    try:
        result = as_result(name, entry(session))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken benchmark must not stop the others
        detail = traceback.format_exc(limit=3) if session.progress.enabled else ""
        session.progress.message(f"benchmark {name} failed: {type(exc).__name__}: {exc}")
        result = Result(name, name, errors={"*": f"{type(exc).__name__}: {exc}"},
                        notes=[detail] if detail else [])
    if not result.seconds:
        result.seconds = time.monotonic() - t0
    for rt, err in session.failed.items():
        result.errors.setdefault(rt, f"left out: {err}")
    return result


def render(meta: dict[str, Any], session: Session, results: list[Result],
           plot_note: str | None) -> str:
    m = meta["machine"]
    lines = [
        "# contain bench",
        "",
        f"{m['date']} on {m['host']}: Linux {m['kernel']}, {m['cpu']}, {m['nproc']} cpus, "
        f"{m['mem_gib']} GiB, Python {m['python']}, load {m['loadavg'][0]:.2f}; "
        f"{'quick' if session.quick else 'full'} mode.",
        "",
        "## Runtimes",
        "",
        "| runtime | version | status |",
        "|---|---|---|",
    ]
    for rt in session.runtimes:
        lines.append(f"| {rt.name} | {rt.version} | ok: {rt.describe()} |")
    for name, err in session.failed.items():
        lines.append(f"| {name} | | **left out**: {err.replace('|', '/')} |")
    if plot_note:
        lines += ["", f"Plots skipped: {plot_note}."]
    if session.killed:
        lines += ["", "Runs killed by SIGKILL from outside and retried (another workload on "
                  "this machine kills processes in foreign namespaces): "
                  + ", ".join(f"{k} {v}" for k, v in session.killed.items()) + "."]
    for r in results:
        lines += ["", f"## {r.title}", ""]
        lines += [f"_{n.strip()}_" for n in r.notes if n.strip() and "Traceback" not in n]
        if r.notes:
            lines.append("")
        if r.markdown:
            lines.append(r.markdown.rstrip())
        extra = {k: v for k, v in r.errors.items()
                 if k not in session.failed and v not in r.markdown}
        if extra and "| error |" not in r.markdown:
            lines += ["", "Errors:", ""]
            lines += [f"- {k}: {v}" for k, v in extra.items()]
        for p in r.plots:
            lines += ["", f"![{r.name}]({p})"]
        lines += ["", f"({r.seconds:.1f} s)"]
    return "\n".join(lines) + "\n"


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write null for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def main(runtimes: Sequence[str] | None = None, quick: bool = False,
         out: str | os.PathLike[str] = "bench-out", only: Sequence[str] | None = None,
         rounds: int | None = None, density_n: int | None = None,
         progress: bool = True) -> int:
    """Run the benchmarks; return 0 when the report was written."""
    if os.geteuid() != 0:
        raise BenchError("contain bench runs containers: run it as root")
    names = [r.strip() for r in runtimes or KNOWN_RUNTIMES if r.strip()]
    selected = [ALIASES.get(b, b) for b in (only or ALL)]
    unknown = [b for b in selected if b not in ALL]
    if unknown:
        raise BenchError(f"unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(ALL)})")
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_note = plots.available()
    bar = Progress(enabled=progress)
    results: list[Result] = []
    interrupted = False
    t0 = time.monotonic()
    session = Session(quick=quick, out=out_dir, progress=bar, rounds=rounds,
                      density_n=density_n, plot=plot_note is None)
    with session:
        try:
            for name in names:
                probe(session, name)
            for b in selected:
                r = run_benchmark(session, b)
                if r is not None:
                    results.append(r)
        except KeyboardInterrupt:
            interrupted = True
            bar.message("interrupted: cleaning up and writing what was measured")
    leftovers = session.close()
    runtime_info: dict[str, dict[str, Any]] = {
        rt.name: {"ok": True, "version": rt.version, "description": rt.describe(),
                  "argv": list(rt.argv) if isinstance(rt, OciRuntime) else []}
        for rt in session.runtimes}
    for name, err in session.failed.items():
        runtime_info[name] = {"ok": False, "error": err}
    meta: dict[str, Any] = {"machine": machine(), "quick": quick, "seconds": time.monotonic() - t0,
            "interrupted": interrupted, "cleanup_problems": leftovers,
            "plots_skipped": plot_note, "runtimes": runtime_info,
            "retried_after_outside_sigkill": session.killed, "tmp": str(session.tmp)}
    doc = {"meta": meta, "benchmarks": {r.name: r.to_json() for r in results}}
    (out_dir / "results.json").write_text(json.dumps(_clean(doc), indent=1) + "\n")
    text = render(meta, session, results, plot_note)
    (out_dir / "report.md").write_text(text)
    sys.stdout.write(text)
    if plot_note:
        bar.message(f"plots skipped: {plot_note}")
    bar.message(f"wrote {out_dir}/report.md, results.json"
                + ("" if plot_note else " and plots"))
    return 130 if interrupted else 0


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks``: the same options as ``contain bench``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--runtimes", default=",".join(KNOWN_RUNTIMES))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--only", default="")
    p.add_argument("--rounds", type=int)
    p.add_argument("--density", type=int)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        return main(a.runtimes.split(","), a.quick, a.out,
                    [b for b in a.only.split(",") if b] or None, a.rounds, a.density,
                    not a.no_progress)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
