"""Lifecycle latency: ``run`` of /bin/true in a busybox bundle, and create / start / delete
measured separately, for every runtime, interleaved within each round.

``run`` is timed from spawning the runtime's command to its exit (the container has run
/bin/true and been removed). For the OCI runtimes, a second container per round is taken
through ``create`` (timed), ``start`` (timed), an untimed wait for /bin/true to exit, and
``delete`` (timed). bubblewrap and the ``unshare`` floor have no such lifecycle: only
``run``. The first round is a warm-up and is not recorded.
"""

from __future__ import annotations

import math

from . import plots
from .common import (
    BenchError,
    Failures,
    OciRuntime,
    Result,
    Runtime,
    Session,
    fmt_ms,
    md_table,
    oci_config,
    rotate,
    stopwatch,
    summarize,
)

PHASES = ("run", "create", "start", "delete")


def one_round(session: Session, rt: Runtime, samples: dict[str, list[float]],
              lifecycle: bool) -> None:
    """One ``run`` and (when *lifecycle*) one create/start/delete of *rt*; raises
    BenchError for a failed ``run`` and LifecycleError for a failed lifecycle step."""
    bundle = session.bundle(rt.name, "true", oci_config(["/bin/true"]))
    cid = session.new_id(rt.name, "run")
    c = rt.run(cid, bundle)
    if c.rc != 0:
        if isinstance(rt, OciRuntime):
            rt.delete(cid, force=True)
        raise BenchError(c.describe())
    samples["run"].append(c.elapsed)
    if not (lifecycle and rt.lifecycle and isinstance(rt, OciRuntime)):
        return
    cid = session.new_id(rt.name, "lc")
    pid_file = session.scratch / f"{cid}.pid"
    try:
        create = rt.create(cid, bundle, pid_file).check()
        pid = int(pid_file.read_text().split()[0])
        start = rt.start(cid).check()
        rt.wait_stopped(pid)
        delete = rt.delete(cid).check()
    except BenchError as exc:
        rt.delete(cid, force=True)
        raise LifecycleError(str(exc)) from None
    except (OSError, ValueError) as exc:
        rt.delete(cid, force=True)
        raise LifecycleError(f"pid file: {exc}") from None
    except BaseException:
        rt.delete(cid, force=True)
        raise
    samples["create"].append(create.elapsed)
    samples["start"].append(start.elapsed)
    samples["delete"].append(delete.elapsed)
    samples["create+start+delete"].append(create.elapsed + start.elapsed + delete.elapsed)


class LifecycleError(BenchError):
    """``run`` works but create/start/delete does not."""


def run(session: Session) -> Result:
    result = Result("lifecycle", "Lifecycle latency: run, create, start, delete of /bin/true")
    rounds = session.each_round(default=40, quick=4)
    runtimes = list(session.runtimes)
    samples: dict[str, dict[str, list[float]]] = {
        rt.name: {p: [] for p in (*PHASES, "create+start+delete")} for rt in runtimes}
    fails = Failures(result)
    with stopwatch(result):
        session.progress.start("lifecycle", (rounds + 1) * len(runtimes))
        for r in range(rounds + 1):  # round 0 warms caches up and is dropped
            for rt in rotate(runtimes, r):
                if fails.given_up(rt.name):
                    session.progress.step(f"{rt.name} (failed)")
                    continue
                target = {k: [] for k in samples[rt.name]} if r == 0 else samples[rt.name]
                lc_key = f"{rt.name}/create-start-delete"
                try:
                    one_round(session, rt, target, lifecycle=not fails.given_up(lc_key))
                except LifecycleError as exc:
                    fails.record(lc_key, exc)
                except BenchError as exc:
                    fails.record(rt.name, exc)
                session.progress.step(f"round {r} {rt.name}")
        session.progress.finish()
    result.data["failures"] = fails.counts
    summary = {rt: {p: summarize(v) for p, v in ph.items() if v} for rt, ph in samples.items()}
    result.data.update({"rounds": rounds, "unit": "seconds", "samples": samples,
                        "summary": summary, "ratio_to_runc": ratios(summary)})
    result.markdown = table(summary, result.data["ratio_to_runc"], result.errors)
    result.notes.append(f"{rounds} rounds after one warm-up round; runtimes interleaved, "
                        "order rotated every round; spread = p10..p90")
    if session.plot:
        groups = {p: {rt: samples[rt][p] for rt in samples if samples[rt][p]} for p in PHASES}
        path = session.out / "lifecycle.png"
        plots.latency_boxplots(path, "Lifecycle latency per runtime", groups)
        result.plots.append(path.name)
    return result


def ratios(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median of each runtime / median of runc, per phase (empty without runc)."""
    ref = summary.get("runc", {})
    out: dict[str, dict[str, float]] = {}
    for rt, phases in summary.items():
        for p, s in phases.items():
            base = ref.get(p, {}).get("median")
            if base and s.get("median") is not None:
                out.setdefault(rt, {})[p] = s["median"] / base
    return out


def table(summary: dict[str, dict[str, dict[str, float]]],
          ratio: dict[str, dict[str, float]], errors: dict[str, str]) -> str:
    cols = (*PHASES, "create+start+delete")
    header = ["runtime", *[f"{p} ms (p10..p90)" for p in cols]]
    rows = []
    for rt, phases in summary.items():
        if not phases:
            continue
        row = [rt]
        for p in cols:
            s = phases.get(p)
            if not s:
                row.append("n/a")
                continue
            cell = f"**{fmt_ms(s['median'])}** ({fmt_ms(s['p10'])}..{fmt_ms(s['p90'])})"
            r = ratio.get(rt, {}).get(p)
            if r is not None and rt != "runc" and math.isfinite(r):
                cell += f" x{r:.2f}"
            row.append(cell)
        rows.append(row)
    text = md_table(header, rows)
    text += "\nxN = median ratio to runc in the same run (lower is faster).\n"
    if errors:
        text += "\n" + md_table(["runtime", "error"], sorted(errors.items()))
    return text
