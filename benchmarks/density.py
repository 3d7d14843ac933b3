"""Density: host memory per idle container for N containers, and what each runtime leaves
resident per container.

For each runtime in turn (memory deltas cannot be interleaved), N containers running
``sleep 3600`` are started detached, one after the other. At checkpoints (1, N/4, N/2,
3N/4, N) we record:

- host memory in use (MemTotal - MemAvailable) above the baseline taken just before the
  first container: the density curve (noisy on a shared machine: other work moves it);
- the workload's proportional set size (PSS): the container's processes;
- the runtime's residue: processes still alive whose command line names this benchmark's
  directory (a monitor, shim, bwrap's or unshare's waiting parent, runsc's sandbox and
  gofer), with their count and PSS. A runtime that hands the container over and exits,
  as runc does, leaves nothing.

Then every container is stopped (in parallel) before the next runtime starts.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import plots
from .common import (
    BenchError,
    Result,
    Runtime,
    Session,
    all_pids,
    children_map,
    cmdline,
    descendants,
    md_table,
    meminfo_used_kib,
    oci_config,
    pss_kib,
    stopwatch,
)


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def measure(session: Session, roots: list[int], baseline_kib: int) -> dict[str, Any]:
    marker = str(session.tmp)
    kids = children_map()
    residue = {pid for pid in all_pids() if marker in cmdline(pid)}
    workload: set[int] = set()
    for root in roots:
        workload.update(p for p in descendants(root, kids) if p not in residue)
    return {
        "used_kib": meminfo_used_kib() - baseline_kib,
        "workload_procs": len(workload),
        "workload_pss_kib": sum(pss_kib(p) for p in workload),
        "residue_procs": len(residue),
        "residue_pss_kib": sum(pss_kib(p) for p in residue),
        "residue_names": dict(Counter(comm(p) for p in residue)),
    }


def one_runtime(session: Session, rt: Runtime, n: int, checkpoints: list[int],
                settle: float) -> list[dict[str, Any]]:
    bundle = session.bundle(rt.name, "sleep", oci_config(["/bin/sleep", "3600"]))
    started: dict[str, int] = {}
    points: list[dict[str, Any]] = []
    time.sleep(settle)
    baseline = meminfo_used_kib()
    try:
        for i in range(1, n + 1):
            for attempt in range(3):  # a failed start on a busy machine is retried
                cid = session.new_id(rt.name, "dn")
                try:
                    started[cid] = rt.start_detached(cid, bundle)
                    break
                except BenchError:
                    try:
                        rt.stop_detached(cid)
                    except (BenchError, KeyError):
                        pass
                    if attempt == 2:
                        raise
            session.progress.step(f"{rt.name} {i}/{n}")
            if i in checkpoints:
                time.sleep(settle)
                point = measure(session, list(started.values()), baseline)
                point["n"] = i
                points.append(point)
    finally:
        teardown(rt, list(started))
        session.progress.step(f"{rt.name} stopped")
    return points


def teardown(rt: Runtime, ids: list[str]) -> None:
    def stop(cid: str) -> None:
        try:
            rt.stop_detached(cid)
        except BenchError:
            pass  # the session's cleanup retries with delete --force

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(stop, ids))


def run(session: Session) -> Result:
    result = Result("density", "Density: host memory per idle container, runtime residue")
    n = session.density_n or (4 if session.quick else 100)
    if session.quick:
        checkpoints = sorted({1, n})
    else:
        checkpoints = sorted({1, max(1, n // 4), max(1, n // 2), max(1, 3 * n // 4), n})
    settle = 0.1 if session.quick else 0.5
    runtimes = list(session.runtimes)
    curves: dict[str, list[dict[str, Any]]] = {}
    with stopwatch(result):
        session.progress.start("density", len(runtimes) * (n + 1))
        for rt in runtimes:
            try:
                curves[rt.name] = one_runtime(session, rt, n, checkpoints, settle)
            except BenchError as exc:
                result.errors[rt.name] = str(exc)
        session.progress.finish()
    per_container: dict[str, dict[str, float]] = {}
    rows = []
    for name, points in curves.items():
        if not points:
            continue
        last = points[-1]
        k = last["n"]
        pc = {
            "host_kib": last["used_kib"] / k,
            "workload_pss_kib": last["workload_pss_kib"] / k,
            "residue_pss_kib": last["residue_pss_kib"] / k,
            "residue_procs": last["residue_procs"] / k,
        }
        per_container[name] = pc
        names = ", ".join(f"{c} x{v}" for c, v in sorted(last["residue_names"].items())) or "-"
        rows.append([name, k, f"**{pc['host_kib'] / 1024:.2f}**",
                     f"{pc['workload_pss_kib'] / 1024:.2f}",
                     f"{pc['residue_procs']:.2f}", f"{pc['residue_pss_kib'] / 1024:.2f}",
                     names[:120]])
    result.data = {"n": n, "checkpoints": checkpoints, "unit": "KiB", "curves": curves,
                   "per_container": per_container}
    text = md_table(["runtime", "N", "host MiB/container", "workload PSS MiB/container",
                     "runtime procs left/container", "runtime PSS MiB/container",
                     "runtime processes left"], rows)
    ref = per_container.get("runc", {}).get("host_kib")
    mine = per_container.get("contain", {}).get("host_kib")
    if ref and mine is not None:
        text += (f"\ncontain vs runc, host memory per idle container: {mine / ref:.2f}x; "
                 f"contain leaves {per_container['contain']['residue_procs']:.2f} "
                 "runtime processes per container (target: 0, as runc).\n")
    if result.errors:
        text += "\n" + md_table(["runtime", "error"], sorted(result.errors.items()))
    result.markdown = text
    result.notes.append(f"N={n} idle `sleep` containers per runtime, measured at {checkpoints};"
                        " host memory = MemTotal - MemAvailable above the baseline (noisy on a "
                        "shared machine); PSS from /proc/PID/smaps_rollup")
    if session.plot and curves:
        series = {name: [(float(p["n"]), p["used_kib"] / 1024) for p in pts]
                  for name, pts in curves.items() if pts}
        path = session.out / "density.png"
        plots.curves(path, "Host memory used by N idle containers", series,
                     "containers", "MiB above baseline")
        result.plots.append(path.name)
    return result
