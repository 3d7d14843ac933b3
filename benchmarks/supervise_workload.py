"""The sandbox class under load: the workload benchmarks (cpu, memory, file I/O, a
syscall-bound loop: benchmarks/workload.py's) under contain's syscall supervisors with a
realistic policy, next to contain's container class and gVisor's runsc on its ptrace
platform.

Members, each round interleaved (rotated):

* native;
* contain, container class (the default profile);
* the notify supervisor with a realistic policy (LXD/Incus-like interceptions: mknod and
  mount emulated, uname emulated, ptrace/bpf/kexec/module loading refused; the
  workload's own calls all decided in the kernel);
* the same plus the ``open`` path policy (every open, openat and creat resolved by the
  supervisor and installed with ADDFD);
* the ptrace supervisor with the realistic policy;
* ``runsc --platform=ptrace`` (every call of the workload intercepted).

Supervisors are turned on by the OCI annotations, so these are ``contain run`` of an
annotated container; no report file is written. The result is throughput relative to
native (1.00 = no overhead; for the syscall loop: native ns / ns).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from typing import Any

from .common import (
    BenchError,
    OciRuntime,
    Result,
    Session,
    md_table,
    oci_config,
    rotate,
)
from .workload import (
    DD_CALIBRATION,
    NATIVE,
    WORKLOADS,
    Workload,
    dd_args,
    parse_dd,
    run_native,
    scratch_dir,
)

#: a realistic policy for a general workload: what container managers intercept
POLICY: dict[str, Any] = {
    "mknod": {"action": "emulate", "handler": "mknod"},
    "mknodat": {"action": "emulate", "handler": "mknod"},
    "mount": {"action": "emulate", "handler": "mount", "types": ["tmpfs", "proc"]},
    "uname": {"action": "emulate", "handler": "uname"},
    "ptrace": "kill",
    "bpf": {"action": "deny", "errno": "EPERM"},
    "kexec_load": {"action": "deny", "errno": "EPERM"},
    "init_module": {"action": "deny", "errno": "EPERM"},
    "finit_module": {"action": "deny", "errno": "EPERM"},
}
OPEN_RULE = {"action": "emulate", "handler": "open", "default": "ro",
             "paths": {"/etc/shadow": "deny", "/tmp": "rw", "/dev": "rw", "/proc": "rw",
                       "/scratch": "rw"}}
WITH_OPENS: dict[str, Any] = {**POLICY, "open": OPEN_RULE, "openat": OPEN_RULE,
                              "creat": OPEN_RULE}

CONTAINER = "contain (container class)"
RUNSC = "runsc --platform=ptrace"
#: (label, supervisor, policy); None: no supervisor
MEMBERS: tuple[tuple[str, str | None, dict[str, Any] | None], ...] = (
    (CONTAINER, None, None),
    ("notify, realistic policy", "notify", POLICY),
    ("notify, + open path policy", "notify", WITH_OPENS),
    ("ptrace, realistic policy", "ptrace", POLICY),
)


def _config(session: Session, w: Workload, who: str, count: int | None) -> dict[str, Any]:
    if w.name == "syscalls":
        return oci_config(dd_args(session, count))
    return oci_config(w.args(session), cwd="/scratch", readonly=True,
                      binds=[("/usr", "/usr", True),
                             (str(scratch_dir(session, who)), "/scratch", False)])


class _Member:
    def __init__(self, label: str, rt: OciRuntime, supervisor: str | None,
                 policy: dict[str, Any] | None) -> None:
        self.label = label
        self.rt = rt
        self.supervisor = supervisor
        self.policy = policy
        self.slug = "".join(ch if ch.isalnum() else "-" for ch in label)[:40]
        self.dd_bytes: int | None = None

    def run(self, session: Session, w: Workload, count: int | None = None) -> float:
        cfg = _config(session, w, self.slug, count)
        if self.supervisor is not None:
            cfg["annotations"] = {"org.contain.supervise": json.dumps(self.policy),
                                  "org.contain.supervisor": self.supervisor}
        b = session.bundle(self.rt.name, f"swl-{self.slug}-{w.name}-{count}", cfg,
                           base=w.base)
        cid = session.new_id(self.rt.name, f"swl{w.name[:3]}")
        c = self.rt.run(cid, b, timeout=600)
        if c.rc != 0:
            self.rt.delete(cid, force=True)
            raise BenchError(c.describe())
        if w.name == "syscalls":
            return parse_dd(c.out + "\n" + c.err, session, count)
        return w.parse(c.out + "\n" + c.err, session)


def _native(session: Session, w: Workload, count: int | None = None) -> float:
    c = run_native(session, w, count)
    if c.rc != 0:
        raise BenchError(c.describe())
    if w.name == "syscalls":
        return parse_dd(c.out + "\n" + c.err, session, count)
    return w.parse(c.out + "\n" + c.err, session)


def _dd_count(session: Session, m: _Member | None, full: int) -> int:
    """Bytes for a member's dd loop: about as long as the full count takes natively
    (runsc and the ptrace-supervised loops are far slower per call)."""
    if m is not None and m.dd_bytes is not None:
        return m.dd_bytes
    dd = WORKLOADS[-1]
    try:
        ns = _native(session, dd, DD_CALIBRATION) if m is None else \
            m.run(session, dd, DD_CALIBRATION)
    except BenchError:
        ns = 0.0
    native_ns = 350.0
    count = full if ns <= 3 * native_ns else max(DD_CALIBRATION, int(full * native_ns / ns))
    if m is not None:
        m.dd_bytes = count
    return count


def run(session: Session) -> Result:
    result = Result("supervise_workload",
                    "Workloads under syscall supervisors (sandbox class) and runsc-ptrace")
    contain = next((rt for rt in session.runtimes
                    if isinstance(rt, OciRuntime) and rt.name == "contain"), None)
    if contain is None:
        raise BenchError("contain is not among the session's runtimes")
    members: list[_Member | None] = [None]
    members += [_Member(label, contain, sup, pol) for label, sup, pol in MEMBERS]
    runsc = shutil.which("runsc")
    if runsc is not None:
        rt = OciRuntime(session, "runsc-ptrace", [runsc], ["--network=none",
                                                           "--platform=ptrace"])
        members.append(_Member(RUNSC, rt, None, None))
    else:
        result.errors[RUNSC] = "runsc is not installed (scripts/extra-deps)"
    have_sysbench = shutil.which("sysbench") is not None
    workloads = [w for w in WORKLOADS if w.base == "busybox" or have_sysbench]
    if not have_sysbench:
        result.notes.append("sysbench is not installed: cpu, memory and fileio skipped")
    rounds = session.each_round(default=3, quick=1)
    full_dd = 500_000 if session.quick else 3_000_000
    labels = [NATIVE if m is None else m.label for m in members]
    samples: dict[str, dict[str, list[float]]] = {w.name: {k: [] for k in labels}
                                                  for w in workloads}
    session.progress.start("workloads under supervisors", rounds * len(members) * len(workloads))
    for rnd in range(rounds):
        for w in workloads:
            for m in rotate(members, rnd):
                label = NATIVE if m is None else m.label
                session.progress.step(f"{w.name} {label}")
                try:
                    count = _dd_count(session, m, full_dd) if w.name == "syscalls" else None
                    value = _native(session, w, count) if m is None else \
                        m.run(session, w, count)
                    samples[w.name][label].append(value)
                except BenchError as exc:
                    result.errors[f"{w.name}: {label}"] = str(exc)[:300]
    session.progress.finish()

    med = {w: {k: statistics.median(v) for k, v in per.items() if v}
           for w, per in samples.items()}
    relative: dict[str, dict[str, float]] = {}
    for w in workloads:
        base = med[w.name].get(NATIVE)
        for label, v in med[w.name].items():
            if base:
                relative.setdefault(w.name, {})[label] = \
                    v / base if w.higher_is_better else base / v
    rows = []
    for label in labels:
        row = [label]
        for w in workloads:
            v = med[w.name].get(label)
            if v is None:
                row.append("error")
                continue
            vals = samples[w.name][label]
            spread = f" [{min(vals):.4g}-{max(vals):.4g}]" if len(vals) > 1 else ""
            rel = relative.get(w.name, {}).get(label)
            rel_text = f" (**{rel:.2f}**)" if rel is not None and label != NATIVE else ""
            row.append(f"{v:.4g}{spread}{rel_text}")
        rows.append(row)
    result.markdown = "\n".join([
        md_table(["member", *[f"{w.name} {w.unit}" for w in workloads]], rows), "",
        f"Median of {rounds} interleaved round(s) [min-max]; (**x**) = relative to native "
        "(1.00 = no overhead; syscalls: native ns / ns). The realistic policy: mknod, "
        "mknodat, mount (tmpfs, proc) and uname emulated, ptrace kills, bpf, kexec_load, "
        "init_module, finit_module denied; the open path policy adds open, openat and creat "
        "resolved by the supervisor (default ro; /tmp, /dev, /proc, /scratch rw). The "
        "syscall loop's byte count is calibrated per member (runsc-ptrace and ptrace are "
        "slower per call)."])
    result.data = {"rounds": rounds, "samples": samples, "median": med,
                   "relative_to_native": relative,
                   "dd_bytes": {m.label: m.dd_bytes for m in members if m is not None}}
    return result


if __name__ == "__main__":
    from .driver import cli

    sys.exit(cli(["--only", "supervise_workload", *sys.argv[1:]]))
