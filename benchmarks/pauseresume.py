"""Pause / resume latency of a running idle container.

For each OCI runtime one detached ``sleep`` container is started; each round times
``pause`` then ``resume`` for every runtime in turn (interleaved, order rotated). The
floor writes FROZEN / THAWED to a cgroup v1 freezer holding one ``sleep`` directly and
waits for the state to read back, which is what a runtime has to do at least.
"""

from __future__ import annotations

import os
import time

from . import plots
from .common import (
    CGROUP_BASE,
    BenchError,
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

FLOOR = "freezer (floor)"


class FreezerFloor:
    """One ``sleep`` in a freezer cgroup of our own (removed by the session's cleanup)."""

    name = FLOOR

    def __init__(self, session: Session) -> None:
        base = CGROUP_BASE / "freezer"
        if not (base / "cgroup.procs").exists():
            raise BenchError("no cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer")
        self.path = base / f"{session.tag}-floor"
        self.path.mkdir()
        self.proc = session.spawn(["sleep", "3600"])
        (self.path / "cgroup.procs").write_text(str(self.proc.pid))

    def _set(self, state: str) -> float:
        t0 = time.perf_counter()
        (self.path / "freezer.state").write_text(state)
        deadline = time.monotonic() + 10
        while (self.path / "freezer.state").read_text().strip() != state:
            if time.monotonic() > deadline:
                raise BenchError(f"freezer did not reach {state}")
            time.sleep(0.0001)
        return time.perf_counter() - t0

    def pause(self) -> float:
        return self._set("FROZEN")

    def resume(self) -> float:
        return self._set("THAWED")

    def close(self) -> None:
        try:
            (self.path / "freezer.state").write_text("THAWED")
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait()
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def _container_state(rt: OciRuntime, cid: str) -> str:
    return str(rt.state(cid).get("status", "?"))


def _stopped(rt: OciRuntime, cid: str) -> bool:
    try:
        return _container_state(rt, cid) == "stopped"
    except BenchError:
        return False


def run(session: Session) -> Result:
    result = Result("pauseresume", "Pause / resume latency")
    rounds = session.each_round(default=30, quick=3)
    oci = [rt for rt in session.runtimes if isinstance(rt, OciRuntime) and rt.pausable]
    for rt in session.runtimes:
        if rt not in oci:
            result.errors[rt.name] = "no pause/resume (not an OCI runtime)"
    ids: dict[str, str] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    floor: FreezerFloor | None = None
    restarts = 0
    with stopwatch(result):
        session.progress.start("pauseresume", len(oci) + rounds)
        try:
            for rt in oci:
                cid = session.new_id(rt.name, "pr")
                try:
                    rt.start_detached(cid, session.bundle(rt.name, "sleep",
                                                          oci_config(["/bin/sleep", "3600"])))
                    ids[rt.name] = cid
                    samples[rt.name] = {"pause": [], "resume": []}
                except BenchError as exc:
                    result.errors[rt.name] = f"start: {exc}"
                session.progress.step(f"{rt.name} started")
            try:
                floor = FreezerFloor(session)
                samples[FLOOR] = {"pause": [], "resume": []}
            except (BenchError, OSError) as exc:
                result.errors[FLOOR] = str(exc)
            members: list[OciRuntime | FreezerFloor] = [rt for rt in oci if rt.name in ids]
            if floor is not None:
                members.append(floor)
            for r in range(rounds):
                for m in rotate(members, r):
                    if m.name in result.errors:
                        continue
                    try:
                        if isinstance(m, FreezerFloor):
                            p, q = m.pause(), m.resume()
                        else:
                            cid = ids[m.name]
                            c = m.pause(cid)
                            if c.rc != 0 and restarts < 3 and _stopped(m, cid):
                                # killed from outside (shared machine): a new container
                                restarts += 1
                                session.killed[m.name] = session.killed.get(m.name, 0) + 1
                                m.stop_detached(cid)
                                cid = ids[m.name] = session.new_id(m.name, "pr")
                                m.start_detached(cid, session.bundle(
                                    m.name, "sleep", oci_config(["/bin/sleep", "3600"])))
                                c = m.pause(cid)
                            p = c.check().elapsed
                            if r == 0 and _container_state(m, cid) != "paused":
                                raise BenchError("state after pause is not 'paused'")
                            q = m.resume(cid).check().elapsed
                        samples[m.name]["pause"].append(p)
                        samples[m.name]["resume"].append(q)
                    except BenchError as exc:
                        result.errors[m.name] = str(exc)
                    except OSError as exc:
                        result.errors[m.name] = f"{type(exc).__name__}: {exc}"
                session.progress.step(f"round {r}")
        finally:
            for name, cid in ids.items():
                rt = next(r for r in oci if r.name == name)
                rt.resume(cid)
                try:
                    rt.stop_detached(cid)
                except BenchError as exc:
                    result.errors.setdefault(name, f"delete: {exc}")
            if floor is not None:
                floor.close()
        session.progress.finish()
    summary = {name: {k: summarize(v) for k, v in per.items() if v}
               for name, per in samples.items()}
    result.data = {"rounds": rounds, "unit": "seconds", "samples": samples, "summary": summary}
    rows = []
    for name, per in summary.items():
        if not per:
            continue
        row = [name]
        for k in ("pause", "resume"):
            s = per.get(k)
            ref = summary.get("runc", {}).get(k, {}).get("median")
            cell = (f"**{fmt_ms(s['median'])}** ({fmt_ms(s['p10'])}..{fmt_ms(s['p90'])})"
                    if s else "n/a")
            if s and ref and name != "runc":
                cell += f" x{s['median'] / ref:.2f}"
            row.append(cell)
        rows.append(row)
    text = md_table(["runtime", "pause ms (p10..p90)", "resume ms (p10..p90)"], rows)
    text += "\nxN = median ratio to runc in the same run.\n"
    if result.errors:
        text += "\n" + md_table(["runtime", "error"], sorted(result.errors.items()))
    result.markdown = text
    result.notes.append(f"{rounds} rounds of pause + resume on an idle `sleep` container")
    if session.plot and any(summary.values()):
        groups = {k: {n: samples[n][k] for n in samples if samples[n][k]}
                  for k in ("pause", "resume")}
        path = session.out / "pauseresume.png"
        plots.latency_boxplots(path, "Pause / resume latency", groups)
        result.plots.append(path.name)
    return result

