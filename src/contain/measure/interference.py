"""Noisy neighbours: how much a misbehaving instance slows a well-behaved one.

The method of the Isolation Benchmark Suite (Matthews et al., 2007): a well-behaved
workload runs in one instance of a technology, a misbehaving one (a CPU hog, a memory
hog, a disk writer, a fork bomb, a loopback network flood) in a second instance of the
same technology with the same limits; the well-behaved workload's slow-down against
running alone is the interference the technology lets through. The memory hog is also
measured by what it takes from the host (the fall of MemAvailable while it runs): with a
memory limit it is killed inside its cgroup, without one the host pays.

Everything is bounded: each workload has a fixed size, every hog is killed when its
measurement ends, a fork bomb only ever runs under a pids limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.measure.runners import Tech, Work

# The well-behaved workload: a fixed amount of CPU and memory traffic, timed from inside
# with /proc/uptime (10 ms resolution; the work takes ~0.3-1 s) so that start-up does
# not count.
VICTIM = ('read a _ < /proc/uptime; dd if=/dev/zero of=/dev/null bs={mem}M count=4 '
          '2>/dev/null && dd if=/dev/zero bs=1M count={mb} 2>/dev/null | md5sum >/dev/null; '
          'read b _ < /proc/uptime; echo "victim $a $b"')

HOGS: dict[str, str] = {
    "cpu": "while :; do :; done & while :; do :; done & while :; do :; done & wait",
    # dd's buffer is one block: MB of anonymous memory touched at once, again and again
    "memory": "while :; do dd if=/dev/zero of=/dev/null bs={hog_mb}M count=2 2>/dev/null; done",
    "io": ("while :; do dd if=/dev/zero of=/tmp/.contain-hog bs=1M count={io_mb} "
           "conv=fsync 2>/dev/null; done"),
    "fork": "f() {{ f | f & }}; f; wait",
    "network": ("while :; do nc -l -p 5555 >/dev/null 2>&1; done & sleep 0.3; while :; do "
                "dd if=/dev/zero bs=64k count=4000 2>/dev/null | nc 127.0.0.1 5555 "
                ">/dev/null 2>&1; done"),
}


class Limits:
    """The limits every instance gets (None: no limit of that kind)."""

    __slots__ = ("memory", "cpus", "pids")

    def __init__(self, memory: int | None = 256 << 20, cpus: float | None = 1.0,
                 pids: int | None = 128) -> None:
        self.memory = memory
        self.cpus = cpus
        self.pids = pids

    def none(self) -> bool:
        return self.memory is None and self.cpus is None and self.pids is None

    def describe(self) -> str:
        if self.none():
            return "no limits"
        parts = []
        if self.memory is not None:
            parts.append(f"memory {self.memory >> 20} MiB")
        if self.cpus is not None:
            parts.append(f"{self.cpus:g} CPU")
        if self.pids is not None:
            parts.append(f"{self.pids} pids")
        return ", ".join(parts)

    def resources(self) -> dict[str, Any]:
        """As OCI linux.resources."""
        out: dict[str, Any] = {}
        if self.memory is not None:
            out["memory"] = {"limit": self.memory, "swap": self.memory}
        if self.cpus is not None:
            out["cpu"] = {"quota": int(self.cpus * 100000), "period": 100000}
        if self.pids is not None:
            out["pids"] = {"limit": self.pids}
        return out


class Machine:
    """A small machine made of a cgroup: both instances of a measurement run inside it,
    so that a hog without limits presses on its neighbour (memory, pids) as it would on
    a host of that size, while the real host stays untouched."""

    def __init__(self, work: Work, memory: int, pids: int = 1024) -> None:
        from contain.cgroups import new_manager
        from contain.spec.config import Resources

        self.work = work
        self.rel = f"/contain-classify/machine-{os.getpid()}-{os.urandom(2).hex()}"
        self.mgr = new_manager(self.rel, "machine")
        self.mgr.create()
        self.mgr.set(Resources.decode({"memory": {"limit": memory, "swap": memory},
                                       "pids": {"limit": pids}}, "$"))
        self.procs = [os.path.join(p, "cgroup.procs") for p in self.mgr.paths().values()]
        self.memory = memory
        self.slots: dict[str, Any] = {}
        work.cgroup_parent = self.rel

    def peak_mb(self, slot: str) -> int | None:
        """The most memory the instance *slot* held at once (v1
        memory.max_usage_in_bytes, v2 memory.peak), in the cgroup its runtime made for
        it or else in its slot: what a hog took from the machine it shares with its
        neighbour -- at most its own limit when it has one, all the machine can give
        when not."""
        from contain.cgroups import new_manager

        best: int | None = None
        for rel in (f"{self.rel}/{slot}", f"{self.rel}/slot-{slot}"):
            for ctrl, path in new_manager(rel, "peak").paths().items():
                name = "memory.max_usage_in_bytes" if "memory" in ctrl else "memory.peak"
                try:
                    with open(os.path.join(path, name)) as f:
                        value = int(f.read()) >> 20
                except (OSError, ValueError):
                    continue
                best = value if best is None else max(best, value)
        return best

    def wrap(self, cmd: list[str], slot: str) -> list[str]:
        """*cmd* started inside the machine, in a sub-cgroup of its own (*slot*) so that
        everything it leaves can be killed by cgroup (a killed runtime may leave its
        workload running)."""
        from contain.cgroups import new_manager

        # (apart from the instance's own cgroup, which its runtime makes under the
        # machine with the instance's name: a runtime inside the cgroup it freezes
        # would freeze itself)
        mgr = new_manager(f"{self.rel}/slot-{slot}", f"slot-{slot}")
        mgr.create()
        self.slots[slot] = mgr
        procs = [os.path.join(p, "cgroup.procs") for p in mgr.paths().values()]
        join = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; '
                'exec "$@"')
        return ["/bin/sh", "-c", join, "sh", *procs, "--", *cmd]

    def end_slot(self, slot: str) -> None:
        mgr = self.slots.pop(slot, None)
        if mgr is None:
            return
        for _ in range(100):
            try:
                mgr.kill_all(9)
                mgr.destroy()
                return
            except Exception:  # busy while the killed tasks exit
                time.sleep(0.05)

    def close(self) -> None:
        for slot in list(self.slots):
            self.end_slot(slot)
        self.work.cgroup_parent = "/contain-classify"
        for _ in range(100):
            try:
                self.mgr.kill_all(9)
                self.mgr.destroy()
                return
            except Exception:  # busy while killed tasks exit, or nested cgroups remain
                from contain.measure.runners import remove_cgroup

                remove_cgroup(self.rel)
                time.sleep(0.05)


class _NoMachine:
    """Instances straight on the host (no machine cgroup): the same interface."""

    def wrap(self, cmd: list[str], slot: str) -> list[str]:
        return cmd

    def end_slot(self, slot: str) -> None:
        pass

    def peak_mb(self, slot: str) -> int | None:
        return None

    def close(self) -> None:
        pass


def _victim_seconds(tech: Tech, work: Work, name: str, machine: Machine | _NoMachine,
                    mb: int, mem: int, timeout: float) -> float | None:
    cmd = machine.wrap(tech.command(work, name, ["/bin/sh", "-c", VICTIM.format(mb=mb, mem=mem)]),
                       name)
    from contain.measure.runners import private_stdio

    try:
        with private_stdio() as stdin:
            proc = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True,
                                  timeout=timeout, cwd=work.dir, start_new_session=True)
    except subprocess.TimeoutExpired:
        return None
    finally:
        tech.cleanup(work, name)
        machine.end_slot(name)
    for line in proc.stdout.splitlines():
        if line.startswith("victim "):
            _, a, b = line.split()
            return max(float(b) - float(a), 0.01)
    return None  # killed (out of memory, pids) or failed


def _median(values: list[float | None]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    return vals[len(vals) // 2] if vals else None


def measure(tech: Tech, work: Work, *, limits: Limits, hogs: tuple[str, ...] = tuple(HOGS),
            runs: int = 3, victim_mb: int = 200, victim_mem: int = 128, hog_mb: int | None = None,
            io_mb: int = 128, machine_memory: int | None = 1 << 30, settle: float = 0.5,
            say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Interference through *tech* with *limits* on both instances, inside a machine of
    *machine_memory* bytes: the victim's time alone, then beside each hog; the slow-down
    in percent and how many of its runs did not complete."""
    say = say or (lambda _m: None)
    if hog_mb is None:  # twice the machine: without a limit of its own, the hog fills it
        hog_mb = 2 * (machine_memory >> 20) if machine_memory else 600
    limited = tech.with_limits(limits) if not limits.none() else tech
    tag = f"{os.getpid()}-{os.urandom(2).hex()}"
    machine: Machine | _NoMachine = (Machine(work, machine_memory) if machine_memory
                                     else _NoMachine())
    out: dict[str, Any] = {"limits": limits.describe(), "hogs": {},
                           "machine_memory_mb": machine_memory >> 20 if machine_memory else None}
    try:
        alone = _median([_victim_seconds(limited, work, f"ci-{tech.key}-a{i}-{tag}", machine,
                                         victim_mb, victim_mem, 120) for i in range(runs)])
        out["alone_s"] = alone
        if alone is None:
            out["error"] = "the well-behaved workload did not run"
            return out
        for hog in hogs:
            if hog == "fork" and limits.pids is None:
                out["hogs"][hog] = {"skipped": "a fork bomb runs only under a pids limit"}
                continue
            say(f"{tech.label}: {hog} hog ({limits.describe()})")
            out["hogs"][hog] = _beside(limited, work, hog, f"{tag}", machine, runs, alone,
                                       victim_mb, victim_mem, hog_mb, io_mb, settle)
    finally:
        machine.close()
    slow = [h["slowdown_pct"] for h in out["hogs"].values() if h.get("slowdown_pct") is not None]
    out["mean_slowdown_pct"] = round(sum(slow) / len(slow), 1) if slow else None
    out["victim_failures"] = sum(h.get("victim_failures", 0) for h in out["hogs"].values())
    return out


def _beside(tech: Tech, work: Work, hog: str, tag: str, machine: Machine | _NoMachine,
            runs: int, alone: float, victim_mb: int, victim_mem: int, hog_mb: int, io_mb: int,
            settle: float) -> dict[str, Any]:
    script = HOGS[hog].format(hog_mb=hog_mb, io_mb=io_mb)
    name = f"ch-{tech.key}-{hog}-{tag}"
    from contain.measure.runners import private_stdio

    with private_stdio() as stdio:
        proc = subprocess.Popen(
            machine.wrap(tech.command(work, name, ["/bin/sh", "-c", script]), name),
            stdin=stdio, stdout=stdio, stderr=stdio, cwd=work.dir, start_new_session=True)
    try:
        time.sleep(settle)
        times = [_victim_seconds(tech, work, f"ci-{tech.key}-{hog}{i}-{tag}", machine,
                                 victim_mb, victim_mem, 120) for i in range(runs)]
    finally:
        # TERM first: a runtime that forwards it (contain sandbox) removes its state;
        # SIGKILL of the runtime would leave its state directory behind
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        peak = machine.peak_mb(name)
        tech.cleanup(work, name)
        machine.end_slot(name)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    t = _median(times)
    return {"victim_s": t, "victim_failures": sum(1 for x in times if x is None),
            "hog_peak_mb": peak,
            "slowdown_pct": None if t is None else round((t / alone - 1) * 100, 1)}
