"""``contain classify --measure``: isolation measured on every axis, then ordered.

For each installed technology: the classifier's measurements (Table 1 marks, facts,
probe), the attack surface from them, interference between two instances with the same
limits inside a small machine (a cgroup), the start-up time and the overhead of a fixed
workload against running it natively; then the ordinal scale with the user's weights.
"""

from __future__ import annotations

import os
import subprocess

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.measure.runners import Tech, Work

SCHEMA = "contain.isolation/1"


class Plan:
    """Sizes of one measurement run: quick (seconds per technology, for the test suite)
    or full (minutes in all)."""

    def __init__(self, quick: bool) -> None:
        from contain.measure.interference import HOGS

        self.quick = quick
        self.hogs: tuple[str, ...] = ("cpu", "memory", "fork") if quick else tuple(HOGS)
        self.runs = 1 if quick else 3
        self.victim_mb = 60 if quick else 200
        self.victim_mem = 64 if quick else 128
        self.machine_memory = (512 if quick else 1024) << 20
        self.limits_memory = (192 if quick else 256) << 20
        self.settle = 0.7 if quick else 1.0
        self.startup_runs = 1 if quick else 5


def _native_seconds(tech: Tech, work: Work, plan: Plan) -> float | None:
    """The well-behaved workload with the same programs, no isolation at all: the host's
    own for a technology that runs the host's root, the busybox image's (chroot) else."""
    from contain.measure.interference import VICTIM
    from contain.measure.runners import ContainSandbox

    script = VICTIM.format(mb=plan.victim_mb, mem=plan.victim_mem)
    env = None
    cmd = ["/bin/sh", "-c", script]
    if not isinstance(tech, ContainSandbox):  # the image's applets link to /bin/busybox
        root = work.rootfs()
        env = {"PATH": ":".join(os.path.join(root, d) for d in ("bin", "sbin", "usr/bin",
                                                                  "usr/sbin"))}
        cmd = [os.path.join(root, "bin", "busybox"), "sh", "-c", script]
    times = []
    for _ in range(plan.runs):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=env).stdout
        for line in out.splitlines():
            if line.startswith("victim "):
                _, a, b = line.split()
                times.append(max(float(b) - float(a), 0.01))
    times.sort()
    return times[len(times) // 2] if times else None


def containment(itf: dict[str, Any], limit: int) -> float | None:
    """The memory hog's peak as a multiple of its limit; None when the peak was not seen
    where the technology keeps the workload (a hog that asks for twice the machine
    reaches its own limit at least: a peak under half of it means the cgroup read was
    not the workload's -- Podman's own cgroup parent, gVisor's Sentry)."""
    peak = (itf.get("hogs", {}).get("memory") or {}).get("hog_peak_mb")
    if peak is None or peak < (limit >> 20) / 2:
        return None
    return round(peak / (limit >> 20), 2)


def measure_isolation(names: list[str] | None = None, *, quick: bool = False,
                      weights: dict[str, float] | None = None,
                      progress: Callable[[str], None] | None = None,
                      techs: list[Tech] | None = None) -> dict[str, Any]:
    from contain.measure import rank, runners
    from contain.measure.classify import classify
    from contain.measure.interference import Limits
    from contain.measure.interference import measure as interference
    from contain.measure.surface import attack_surface

    say = progress or (lambda _m: None)
    plan = Plan(quick)
    if techs is None:
        techs = runners.select(names)
        if quick and not names:
            techs = [t for t in techs if t.key != "runsc-kvm"]
    doc = classify(quick=True, progress=say, techs=techs)
    by_key = {t.key: t for t in techs}
    limits = Limits(memory=plan.limits_memory, cpus=1.0, pids=128)
    measured: dict[str, dict[str, Any]] = {}
    work = runners.Work()
    try:
        for row in doc["rows"]:
            if row["status"] != "measured":
                continue
            tech = by_key[row["key"]]
            say(f"{tech.label}: attack surface, interference, start-up")
            entry: dict[str, Any] = {"surface": attack_surface(row)}
            entry["interference"] = interference(
                tech, work, limits=limits, hogs=plan.hogs, runs=plan.runs,
                victim_mb=plan.victim_mb, victim_mem=plan.victim_mem,
                machine_memory=plan.machine_memory, settle=plan.settle, say=say)
            entry["startup_ms"] = runners.startup_ms(tech, work, runs=plan.startup_runs)
            native = _native_seconds(tech, work, plan)
            alone = entry["interference"].get("alone_s")
            entry["native_s"] = native
            entry["overhead"] = (round(alone / native, 3) if alone and native else None)
            measured[row["key"]] = entry
    finally:
        work.close()
    axes: dict[str, dict[str, float | None]] = {a: {} for a in rank.AXES}
    for key, m in measured.items():
        itf = m["interference"]
        axes["surface"][key] = m["surface"]["score"]
        axes["interference"][key] = itf.get("mean_slowdown_pct")
        axes["containment"][key] = containment(itf, plan.limits_memory)
        axes["startup"][key] = m["startup_ms"]
        axes["overhead"][key] = m["overhead"]
    w = weights or rank.parse_weights("")
    labels = {r["key"]: r["label"] for r in doc["rows"]}
    ordered = rank.order(axes, w)
    for r in ordered:
        r["label"] = labels.get(r["key"], r["key"])
    return {"schema": SCHEMA, "quick": quick, "weights": w,
            "plan": {"hogs": list(plan.hogs), "runs": plan.runs,
                     "limits": limits.describe(),
                     "machine_memory_mb": plan.machine_memory >> 20,
                     "victim": {"md5_mb": plan.victim_mb, "memory_mb": plan.victim_mem}},
            "host": doc["host"], "classify": doc, "measured": measured, "order": ordered,
            "not_measured": [{"key": r["key"], "label": r["label"], "status": r["status"],
                              "reason": r.get("reason")}
                             for r in doc["rows"] if r["status"] != "measured"]}
