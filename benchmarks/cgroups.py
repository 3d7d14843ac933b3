"""Cgroup setup / teardown and pause / resume, against runc in the same run.

Setup and teardown: for every OCI runtime, each round takes two never-started /bin/true
containers through ``create`` and ``delete`` (both timed): one whose config has only
runc spec's device rule, one with a full resources block (memory + swap, cpu shares,
quota and cpuset, pids, blkio weight). The difference of the medians is what the runtime
pays for writing limits; the whole create/delete includes making and removing the cgroup
in every hierarchy. Two in-process figures put it in scale: contain's Manager
(new_manager + validate + create + set + destroy, the library calls the runtime makes)
and a floor of bare mkdir/rmdir in the same hierarchies.

Pause / resume: one detached ``sleep`` per runtime, ``pause`` then ``resume`` timed in
turn; plus contain's Manager.freeze/thaw in process (what the Python API costs) on a
cgroup holding one ``sleep``. Rounds interleave the runtimes (order rotated).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from .common import (
    SRC,
    BenchError,
    Failures,
    OciRuntime,
    Result,
    Session,
    fmt_ms,
    md_table,
    oci_config,
    rotate,
    stopwatch,
    summarize,
)

RESOURCES: dict[str, Any] = {
    "devices": [{"allow": False, "access": "rwm"}],
    "memory": {"limit": 256 << 20, "swap": 512 << 20, "reservation": 128 << 20},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 256},
    "blockIO": {"weight": 200},
}
MANAGER = "contain Manager (in-process)"
FLOOR = "mkdir/rmdir (floor)"
FREEZE = "contain Manager.freeze/thaw (in-process)"


def _config(limits: bool) -> dict[str, Any]:
    cfg = oci_config(["/bin/true"])
    cfg.setdefault("linux", {})["resources"] = (
        dict(RESOURCES) if limits else {"devices": [{"allow": False, "access": "rwm"}]})
    return cfg


def _import_contain() -> Any:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    import contain.cgroups as cg
    from contain.spec.config import Resources

    return cg, Resources


def _manager_cycle(session: Session, n: int) -> tuple[float, float]:
    """(setup, teardown) seconds of contain's Manager for one cgroup with limits."""
    cg, Resources = _import_contain()
    res = Resources.decode(RESOURCES, "$.linux.resources")
    t0 = time.perf_counter()
    mgr = cg.new_manager(f"{session.tag}-mgr-{n}", "x")
    mgr.validate(res)
    mgr.create()
    mgr.set(res)
    t1 = time.perf_counter()
    mgr.destroy()
    return t1 - t0, time.perf_counter() - t1


def _floor_cycle(session: Session, n: int) -> tuple[float, float]:
    """mkdir then rmdir of one directory in each hierarchy the Manager would use."""
    cg, _ = _import_contain()
    dirs = list(cg.new_manager(f"{session.tag}-floor-{n}", "x").paths().values())
    t0 = time.perf_counter()
    for d in dirs:
        os.mkdir(d)
    t1 = time.perf_counter()
    for d in dirs:
        os.rmdir(d)
    return t1 - t0, time.perf_counter() - t1


def run(session: Session) -> Result:
    result = Result("cgroups", "Cgroup setup / teardown and pause / resume")
    rounds = session.each_round(default=20, quick=3)
    oci = [rt for rt in session.runtimes if isinstance(rt, OciRuntime)]
    fails = Failures(result)
    setup: dict[str, dict[str, list[float]]] = {}
    pr: dict[str, dict[str, list[float]]] = {}
    with stopwatch(result):
        session.progress.start("cgroups", 2 * rounds)
        for rt in oci:
            setup[rt.name] = {"create": [], "delete": [], "create+limits": [],
                              "delete+limits": []}
        setup[MANAGER] = {"create+limits": [], "delete+limits": []}
        setup[FLOOR] = {"create": [], "delete": []}
        members: list[Any] = [*oci, MANAGER, FLOOR]
        for r in range(rounds + 1):  # round 0 warms up
            for m in rotate(members, r):
                name = m if isinstance(m, str) else m.name
                if fails.given_up(name):
                    continue
                try:
                    if m == MANAGER:
                        a, b = _manager_cycle(session, r)
                        got = {"create+limits": a, "delete+limits": b}
                    elif m == FLOOR:
                        a, b = _floor_cycle(session, r)
                        got = {"create": a, "delete": b}
                    else:
                        got = {}
                        for limits in (False, True):
                            suffix = "+limits" if limits else ""
                            bundle = session.bundle(m.name, f"cg{suffix or '-none'}",
                                                    _config(limits))
                            cid = session.new_id(m.name, "cg")
                            c = m.create(cid, bundle).check()
                            d = m.delete(cid, force=True).check()
                            got["create" + suffix] = c.elapsed
                            got["delete" + suffix] = d.elapsed
                    if r:
                        for k, v in got.items():
                            setup[name][k].append(v)
                except (BenchError, OSError) as exc:
                    fails.record(name, exc)
                except Exception as exc:  # a contain library error: report, go on
                    fails.record(name, f"{type(exc).__name__}: {exc}")
            session.progress.step(f"setup round {r}")
        _pause_resume(session, oci, rounds, pr, fails)
        session.progress.finish()
    summary = {
        "setup": {n: {k: summarize(v) for k, v in per.items() if v} for n, per in setup.items()},
        "pauseresume": {n: {k: summarize(v) for k, v in per.items() if v}
                        for n, per in pr.items()},
    }
    result.data = {"rounds": rounds, "unit": "seconds", "resources": RESOURCES,
                   "setup": setup, "pauseresume": pr, "summary": summary}
    result.markdown = _report(summary)
    if result.errors:
        result.markdown += "\n" + md_table(["who", "error"], sorted(result.errors.items()))
    result.notes.append(f"{rounds} rounds; create/delete of never-started /bin/true "
                        "containers with and without a resources block")
    return result


def _pause_resume(session: Session, oci: list[OciRuntime], rounds: int,
                  pr: dict[str, dict[str, list[float]]], fails: Failures) -> None:
    ids: dict[str, str] = {}
    mgr = None
    sleeper = None
    try:
        for rt in oci:
            if not rt.pausable:
                continue
            cid = session.new_id(rt.name, "cgpr")
            try:
                rt.start_detached(cid, session.bundle(rt.name, "sleep",
                                                      oci_config(["/bin/sleep", "3600"])))
                ids[rt.name] = cid
                pr[rt.name] = {"pause": [], "resume": []}
            except BenchError as exc:
                fails.record(rt.name, f"start: {exc}")
        try:
            cg, _ = _import_contain()
            mgr = cg.new_manager(f"{session.tag}-freeze", "x")
            mgr.create()
            sleeper = session.spawn(["sleep", "3600"])
            mgr.join(sleeper.pid)
            pr[FREEZE] = {"pause": [], "resume": []}
        except Exception as exc:
            fails.record(FREEZE, f"{type(exc).__name__}: {exc}")
        members: list[Any] = [rt for rt in oci if rt.name in ids]
        if FREEZE in pr:
            members.append(FREEZE)
        for r in range(rounds):
            for m in rotate(members, r):
                name = m if isinstance(m, str) else m.name
                if fails.given_up(name):
                    continue
                try:
                    if m == FREEZE:
                        assert mgr is not None
                        t0 = time.perf_counter()
                        mgr.freeze()
                        t1 = time.perf_counter()
                        mgr.thaw()
                        p, q = t1 - t0, time.perf_counter() - t1
                    else:
                        p = m.pause(ids[name]).check().elapsed
                        q = m.resume(ids[name]).check().elapsed
                    pr[name]["pause"].append(p)
                    pr[name]["resume"].append(q)
                except (BenchError, OSError) as exc:
                    fails.record(name, exc)
                except Exception as exc:
                    fails.record(name, f"{type(exc).__name__}: {exc}")
            session.progress.step(f"pause round {r}")
    finally:
        for name, cid in ids.items():
            rt = next(x for x in oci if x.name == name)
            rt.resume(cid)
            try:
                rt.stop_detached(cid)
            except BenchError as exc:
                fails.record(name, f"delete: {exc}")
        if mgr is not None:
            try:
                mgr.destroy()
            except Exception as exc:
                fails.record(FREEZE, f"destroy: {exc}")
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()


def _cell(s: dict[str, float] | None, ref: float | None, ratio: bool) -> str:
    if not s:
        return "n/a"
    text = f"**{fmt_ms(s['median'])}** ({fmt_ms(s['p10'])}..{fmt_ms(s['p90'])})"
    if ratio and ref:
        text += f" x{s['median'] / ref:.2f}"
    return text


def _report(summary: dict[str, Any]) -> str:
    setup = summary["setup"]
    runc = setup.get("runc", {})
    rows = []
    for name, per in setup.items():
        cols = [name]
        for k in ("create", "create+limits", "delete", "delete+limits"):
            ref = runc.get(k, {}).get("median")
            cols.append(_cell(per.get(k), ref, name != "runc" and name in _oci_names(setup)))
        dc = _delta(per, "create")
        dd = _delta(per, "delete")
        cols.append(f"{fmt_ms(dc)} / {fmt_ms(dd)}" if dc is not None and dd is not None
                    else "n/a")
        rows.append(cols)
    text = "### Cgroup setup and teardown\n\n"
    text += md_table(["who", "create ms", "create + limits ms", "delete ms",
                      "delete + limits ms", "limits cost (create / delete)"], rows)
    text += ("\nxN = median ratio to runc in the same run; the in-process rows are the "
             "library calls alone (no process start).\n\n")
    rows = []
    prs = summary["pauseresume"]
    ref_p = prs.get("runc", {}).get("pause", {}).get("median")
    ref_r = prs.get("runc", {}).get("resume", {}).get("median")
    for name, per in prs.items():
        rows.append([name, _cell(per.get("pause"), ref_p, name != "runc"),
                     _cell(per.get("resume"), ref_r, name != "runc")])
    text += "### Pause / resume\n\n"
    text += md_table(["who", "pause ms (p10..p90)", "resume ms (p10..p90)"], rows)
    return text


def _oci_names(setup: dict[str, Any]) -> set[str]:
    return {n for n in setup if n not in (MANAGER, FLOOR)}


def _delta(per: dict[str, dict[str, float]], key: str) -> float | None:
    a, b = per.get(key), per.get(key + "+limits")
    if not a or not b:
        return None
    return b["median"] - a["median"]
