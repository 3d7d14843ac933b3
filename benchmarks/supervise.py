"""The sandbox class measured: the cost of a system call under contain's syscall
supervisors, next to gVisor's runsc on its ptrace platform.

The same static getppid loop (benchmarks/syscall_overhead.py's) runs in the same busybox
bundle:

* natively, and under ``contain run`` with its default profile (the container class);
* under contain's notify and ptrace supervisors, with getppid *not* supervised (a policy
  that supervises mkdir only): the filter alone, every call decided in the kernel;
* with getppid supervised and answered by the supervisor: ``emulate`` (the ``return``
  handler: the supervisor answers a value) and ``log`` (allowed: the notify supervisor
  answers CONTINUE, the ptrace one resumes the call), no report file;
* under ``runsc --platform=ptrace``, where every call of the workload is intercepted.

Supervisors are turned on by the OCI annotations (docs/supervise.md), so the figures are
those of ``contain run`` of an annotated container. The goal: unsupervised calls within
100 ns of native, and the notify supervisor's answered call at or below runsc-ptrace's
cost per call.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.common import (
    BenchError,
    OciRuntime,
    Result,
    Session,
    md_table,
    oci_config,
    rotate,
)
from benchmarks.syscall_overhead import build_loop, default_seccomp, parse_ns

CASES = (
    # (label, supervisor, policy, answered)
    ("contain (container class, default profile)", None, None, False),
    ("notify, getppid unsupervised", "notify", {"mkdir": "deny"}, False),
    ("ptrace, getppid unsupervised", "ptrace", {"mkdir": "deny"}, False),
    ("notify, getppid emulated (return)", "notify",
     {"getppid": {"action": "emulate", "handler": "return", "value": 1}}, True),
    ("ptrace, getppid emulated (return)", "ptrace",
     {"getppid": {"action": "emulate", "handler": "return", "value": 1}}, True),
    ("notify, getppid logged (CONTINUE)", "notify", {"getppid": "log"}, True),
    ("ptrace, getppid logged (resumed)", "ptrace", {"getppid": "log"}, True),
)


def _runsc_ptrace(session: Session) -> OciRuntime | None:
    path = shutil.which("runsc")
    if path is None:
        return None
    rt = OciRuntime(session, "runsc-ptrace", [path], ["--network=none", "--platform=ptrace"])
    return rt


def run(session: Session) -> Result:
    result = Result("supervise", "System calls under syscall supervisors (sandbox class)")
    contain = next((rt for rt in session.runtimes
                    if isinstance(rt, OciRuntime) and rt.name == "contain"), None)
    if contain is None:
        raise BenchError("contain is not among the session's runtimes")
    n_fast = 300_000 if session.quick else 2_000_000
    n_slow = 3_000 if session.quick else 20_000
    rounds = session.each_round(default=5, quick=2)
    loop = build_loop(session.scratch)

    bundles: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for label, sup, policy, answered in CASES:
        n = n_slow if answered else n_fast
        cfg = oci_config(["/getppid_loop", str(n)])
        cfg["linux"]["seccomp"] = default_seccomp(cfg)
        if sup is not None:
            cfg["annotations"] = {"org.contain.supervise": json.dumps(policy),
                                  "org.contain.supervisor": sup}
        b = session.bundle("contain", f"supervise-{len(bundles)}", cfg)
        target = b.rootfs / "getppid_loop"
        if not target.exists():
            shutil.copy2(loop, target)
        bundles[label] = b
        counts[label] = n
    runsc = _runsc_ptrace(session)
    runsc_label = "runsc --platform=ptrace (every call intercepted)"
    if runsc is not None:
        cfg = oci_config(["/getppid_loop", str(n_slow * 5)])
        b = session.bundle("runsc-ptrace", "supervise", cfg)
        target = b.rootfs / "getppid_loop"
        if not target.exists():
            shutil.copy2(loop, target)
        bundles[runsc_label] = b
        counts[runsc_label] = n_slow * 5
    else:
        result.errors[runsc_label] = "runsc is not installed (scripts/extra-deps)"

    labels = ["native", *bundles]
    samples: dict[str, list[float]] = {k: [] for k in labels}
    session.progress.start("syscall supervisors", rounds * len(labels))
    for rnd in range(rounds):
        for label in rotate(labels, rnd):
            session.progress.step(label)
            if label == "native":
                p = subprocess.run([str(loop), str(n_fast)], capture_output=True, text=True,
                                   timeout=300)
                samples[label].append(parse_ns(p.stdout))
                continue
            rt = runsc if label == runsc_label else contain
            assert rt is not None
            cid = session.new_id(rt.name, "sup")
            c = rt.run(cid, bundles[label], timeout=600)
            if c.rc != 0:
                rt.delete(cid, force=True)
                result.errors[label] = c.describe()
                continue
            try:
                samples[label].append(parse_ns(c.out))
            except BenchError as exc:
                result.errors[label] = str(exc)
    session.progress.finish()

    med = {k: statistics.median(v) for k, v in samples.items() if v}
    native = med.get("native")
    gvisor = med.get(runsc_label)
    rows = []
    for label in labels:
        if label not in med:
            rows.append([label, "error", "-", "-", "-"])
            continue
        v = med[label]
        over = f"{v - native:+.1f}" if native is not None and label != "native" else "-"
        vs = f"{v / gvisor:.2f}x" if gvisor and label != runsc_label else "-"
        rows.append([label, f"{v:,.1f}", over, vs, f"{counts.get(label, n_fast):,}"])
    notes = []
    for label in ("notify, getppid unsupervised", "ptrace, getppid unsupervised"):
        if label in med and native is not None:
            d = med[label] - native
            notes.append(f"{label}: {d:+.1f} ns per call vs native "
                         f"({'within' if d <= 100 else 'above'} the 100 ns goal)")
    for label in ("notify, getppid emulated (return)", "ptrace, getppid emulated (return)"):
        if label in med and gvisor:
            verdict = "at or below" if med[label] <= gvisor else "above"
            notes.append(f"{label}: {med[label] / 1000:.1f} us per call, {verdict} "
                         f"runsc-ptrace's {gvisor / 1000:.1f} us")
    result.markdown = "\n".join([
        md_table(["case", "ns/call", "vs native (ns)", "vs runsc-ptrace", "calls per run"],
                 rows),
        "",
        f"Median of {rounds} interleaved rounds of `run` of a static getppid loop (the "
        "loop reports its own ns/call); supervisors are turned on by the "
        "`org.contain.supervise` annotation; no report file is written."])
    result.notes = notes
    result.data = {"samples_ns": samples, "median_ns": med, "calls": counts}
    return result


if __name__ == "__main__":
    from benchmarks.driver import cli

    sys.exit(cli(["--only", "supervise", *sys.argv[1:]]))
