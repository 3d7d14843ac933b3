"""Throughput: containers per second, one after another and with as many in parallel as
there are cores.

Each round runs, for every runtime in turn, a batch of M ``run``s of /bin/true
sequentially and then the same batch spread over ``nproc`` worker threads (each thread
spawns the runtime's command and waits for it). The rate is M / wall-clock time of the
batch; one sample per round and mode.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from . import plots
from .common import (
    BenchError,
    Failures,
    OciRuntime,
    Result,
    Runtime,
    Session,
    md_table,
    oci_config,
    rotate,
    stopwatch,
    summarize,
)


def batch(session: Session, rt: Runtime, m: int, workers: int) -> float:
    """Run /bin/true *m* times with *workers* at once; return containers per second."""
    bundle = session.bundle(rt.name, "true", oci_config(["/bin/true"]))
    ids = [session.new_id(rt.name, "tp") for _ in range(m)]

    def one(cid: str) -> str | None:
        c = rt.run(cid, bundle)
        if c.rc != 0:
            if isinstance(rt, OciRuntime):
                rt.delete(cid, force=True)
            return c.describe()
        return None

    t0 = time.perf_counter()
    if workers == 1:
        errors = [one(cid) for cid in ids]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(one, ids))
    wall = time.perf_counter() - t0
    failed = [e for e in errors if e]
    if failed:
        mode = "parallel" if workers > 1 else "sequential"
        raise BenchError(f"{len(failed)}/{m} runs failed ({mode}): {failed[0]}")
    return m / wall


def run(session: Session) -> Result:
    result = Result("throughput", "Throughput: containers per second (run of /bin/true)")
    nproc = os.cpu_count() or 1
    rounds = session.each_round(default=5, quick=1)
    m = 4 if session.quick else 20
    m = max(m, nproc)
    modes = {"sequential": 1, f"parallel x{nproc}": nproc}
    runtimes = list(session.runtimes)
    samples: dict[str, dict[str, list[float]]] = {rt.name: {k: [] for k in modes}
                                                  for rt in runtimes}
    fails = Failures(result, limit=2)
    with stopwatch(result):
        session.progress.start("throughput", rounds * len(runtimes) * len(modes))
        for r in range(rounds):
            for rt in rotate(runtimes, r):
                for mode, workers in modes.items():
                    if not fails.given_up(rt.name):
                        try:
                            samples[rt.name][mode].append(batch(session, rt, m, workers))
                        except BenchError as exc:
                            fails.record(rt.name, exc)
                    session.progress.step(f"{rt.name} {mode}")
        session.progress.finish()
    summary = {rt: {mode: summarize(v) for mode, v in per.items() if v}
               for rt, per in samples.items()}
    result.data = {"rounds": rounds, "batch": m, "workers": nproc, "unit": "containers/s",
                   "samples": samples, "summary": summary}
    rows = []
    for rt, per in summary.items():
        if not per:
            continue
        row = [rt]
        for mode in modes:
            s = per.get(mode)
            row.append(f"**{s['median']:.1f}** ({s['min']:.1f}..{s['max']:.1f})" if s else "n/a")
        ref = summary.get("runc", {}).get("sequential", {}).get("median")
        mine = per.get("sequential", {}).get("median")
        row.append(f"{mine / ref:.2f}" if ref and mine else "-")
        rows.append(row)
    text = md_table(["runtime", *[f"{m_} /s (min..max)" for m_ in modes],
                     "sequential vs runc (higher is better)"], rows)
    if result.errors:
        text += "\n" + md_table(["runtime", "error"], sorted(result.errors.items()))
    result.markdown = text
    result.notes.append(f"{rounds} round(s) of {m} containers per runtime and mode")
    if session.plot and any(summary.values()):
        groups = {mode: {rt: per[mode]["median"] for rt, per in summary.items() if mode in per}
                  for mode in modes}
        path = session.out / "throughput.png"
        plots.bars(path, "Containers per second (median)", groups, "containers/s", log=True)
        result.plots.append(path.name)
    return result
