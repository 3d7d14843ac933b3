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
import os
import shutil
import statistics
import subprocess
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
from .syscall_overhead import build_loop, default_seccomp, parse_ns

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


OPEN_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* open + read + close of one file, N times: the file-I/O path a path policy governs */
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    const char *path = argc > 2 ? argv[2] : "/etc/passwd";
    char buf[512];
    long sink = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { perror(path); return 2; }
        sink += read(fd, buf, sizeof buf);
        close(fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.2f %ld\n", ns / n, sink != 0);
    return 0;
}
"""

#: a realistic policy (LXD/Incus-like interceptions), opens unsupervised
REALISTIC: dict[str, Any] = {
    "mkdir": {"action": "deny", "errno": "EROFS"},
    "mknodat": {"action": "emulate", "handler": "mknod"},
    "mount": {"action": "emulate", "handler": "mount", "types": ["tmpfs"]},
    "uname": {"action": "emulate", "handler": "uname"},
    "ptrace": "kill",
}
OPEN_CASES = (
    ("contain (container class, default profile)", None, None, False),
    ("notify, realistic policy, opens unsupervised", "notify", REALISTIC, False),
    ("notify, + open path policy (ADDFD)", "notify",
     {**REALISTIC, "openat": {"action": "emulate", "handler": "open", "default": "ro",
                              "paths": {"/etc/shadow": "deny", "/tmp": "rw"}}}, True),
    ("ptrace, realistic policy, opens unsupervised", "ptrace", REALISTIC, False),
    ("ptrace, + openat stopped and allowed (log)", "ptrace",
     {**REALISTIC, "openat": "log"}, True),
)


def _build(scratch: Any, name: str, source: str) -> Any:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc is not installed")
    src = scratch / f"{name}.c"
    out = scratch / name
    src.write_text(source)
    p = subprocess.run([gcc, "-O2", "-static", "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise BenchError(f"gcc -static failed: {p.stderr.strip()[-300:]}")
    return out


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

    runsc = _runsc_ptrace(session)
    med, counts, rows, samples = _table(session, result, contain, runsc, loop,
                                        "getppid_loop", CASES, n_fast, n_slow, rounds, "")
    native = med.get("native")
    gvisor = med.get(RUNSC_LABEL)
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
    cpu_rows, cpu_us = _cpu_table(session, result, contain, runsc, loop, n_slow, rounds)
    if cpu_us.get("notify, getppid emulated (return)") and cpu_us.get(RUNSC_LABEL):
        a, b = cpu_us["notify, getppid emulated (return)"], cpu_us[RUNSC_LABEL]
        notes.append(f"CPU time per answered getppid: notify {a:.1f} us, runsc-ptrace "
                     f"{b:.1f} us ({'at or below' if a <= b else 'above'})")
    open_loop = _build(session.scratch, "open_loop", OPEN_C)
    o_fast = 50_000 if session.quick else 200_000
    o_slow = 1_000 if session.quick else 5_000
    o_med, _, o_rows, o_samples = _table(session, result, contain, runsc, open_loop,
                                         "open_loop", OPEN_CASES, o_fast, o_slow, rounds,
                                         "open-")
    o_gv = o_med.get(RUNSC_LABEL)
    lbl = "notify, + open path policy (ADDFD)"
    if lbl in o_med and o_gv:
        notes.append(f"open+read+close with the path policy: {o_med[lbl] / 1000:.1f} us, "
                     f"runsc-ptrace {o_gv / 1000:.1f} us")
    header = ["case", "ns/call (median)", "min-max", "vs native (ns)", "vs runsc-ptrace",
              "calls per run"]
    result.markdown = "\n".join([
        "### getppid (a cheap call)", "", md_table(header, rows), "",
        "### CPU time per answered getppid (every process of the run, load-robust)", "",
        md_table(["case", "CPU us per call (median)", "min-max"], cpu_rows), "",
        "The CPU time (user + system) of the whole `run` -- the runtime, the supervisor "
        "or gVisor's sandbox, the workload, as wait4(2) counts the process tree -- for "
        f"{n_slow:,} calls minus that for {n_slow // 10:,}, per call: what a call costs "
        "in CPU, whatever the machine's load does to the wall clock.", "",
        "### open + read + close of /etc/passwd (file I/O under a path policy)", "",
        md_table(header, o_rows), "",
        f"Median of {rounds} interleaved rounds of `run` of static C loops (each reports "
        "its own ns per iteration); supervisors are turned on by the "
        "`org.contain.supervise` annotation; no report file is written. The realistic "
        "policy: mkdir denied, mknodat/mount/uname emulated, ptrace kills."])
    result.notes = notes
    result.data = {"median_ns": med, "calls": counts, "open_median_ns": o_med,
                   "cpu_us_per_call": cpu_us,
                   "samples_ns": samples, "open_samples_ns": o_samples,
                   "loadavg_after": list(os.getloadavg())}
    return result


RUNSC_LABEL = "runsc --platform=ptrace (every call intercepted)"
CPU_CASES = tuple(c for c in CASES if c[3])


def _cpu_run(rt: OciRuntime, cid: str, bundle: Any, timeout: float = 600) -> float:
    """The CPU seconds (user + system) of ``rt run`` and every process it waited for."""
    import select
    import tempfile

    rt.session.track(rt, cid)
    with tempfile.TemporaryFile(dir=rt.session.scratch) as out:
        proc = subprocess.Popen(rt.cmd("run", "--bundle", str(bundle.path), cid),
                                stdin=out, stdout=out, stderr=out)  # not /dev/null: runsc
                                # fchowns its stdio to the sandbox's user
        pidfd = os.pidfd_open(proc.pid)
        try:
            done, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not done:
            proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            rt.delete(cid, force=True)
            raise BenchError(f"{rt.name} run: exit {proc.returncode}: "
                             f"{out.read().decode(errors='replace')[-300:]}")
    rt.session.untrack(rt, cid)
    return float(usage.ru_utime + usage.ru_stime)


def _cpu_table(session: Session, result: Result, contain: OciRuntime,
               runsc: OciRuntime | None, loop: Any, n: int,
               rounds: int) -> tuple[list[list[str]], dict[str, float]]:
    """CPU time per answered call: (cpu(n) - cpu(n/10)) / (n - n/10), interleaved."""
    small = n // 10
    members: list[tuple[str, OciRuntime, dict[int, Any]]] = []
    for label, sup, policy, _ in CPU_CASES:
        bundles = {}
        for count in (small, n):
            cfg = oci_config(["/getppid_loop", str(count)])
            cfg["linux"]["seccomp"] = default_seccomp(cfg)
            cfg["annotations"] = {"org.contain.supervise": json.dumps(policy),
                                  "org.contain.supervisor": sup}
            b = session.bundle("contain", f"supervise-cpu-{len(members)}-{count}", cfg)
            if not (b.rootfs / "getppid_loop").exists():
                shutil.copy2(loop, b.rootfs / "getppid_loop")
            bundles[count] = b
        members.append((label, contain, bundles))
    if runsc is not None:
        bundles = {}
        for count in (small, n):
            b = session.bundle("runsc-ptrace", f"supervise-cpu-{count}",
                               oci_config(["/getppid_loop", str(count)]))
            if not (b.rootfs / "getppid_loop").exists():
                shutil.copy2(loop, b.rootfs / "getppid_loop")
            bundles[count] = b
        members.append((RUNSC_LABEL, runsc, bundles))
    per_call: dict[str, list[float]] = {m[0]: [] for m in members}
    session.progress.start("syscall supervisors (CPU time)", rounds * len(members))
    for rnd in range(rounds):
        for label, rt, bundles in rotate(members, rnd):
            session.progress.step(label)
            try:
                a = _cpu_run(rt, session.new_id(rt.name, "cpu"), bundles[small])
                b = _cpu_run(rt, session.new_id(rt.name, "cpu"), bundles[n])
            except BenchError as exc:
                result.errors[f"cpu: {label}"] = str(exc)
                continue
            per_call[label].append((b - a) / (n - small) * 1e6)
    session.progress.finish()
    med = {k: statistics.median(v) for k, v in per_call.items() if v}
    rows = [[k, f"{med[k]:.2f}", f"{min(v):.2f}-{max(v):.2f}"] if k in med else
            [k, "error", "-"] for k, v in per_call.items()]
    return rows, med


def _table(session: Session, result: Result, contain: OciRuntime, runsc: OciRuntime | None,
           loop: Any, binary: str, cases: tuple[tuple[str, str | None, Any, bool], ...],
           n_fast: int, n_slow: int, rounds: int,
           prefix: str) -> tuple[dict[str, float], dict[str, int], list[list[str]],
                                 dict[str, list[float]]]:
    """Measure *cases* (and native, runsc-ptrace) with the static *loop*."""
    bundles: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for label, sup, policy, answered in cases:
        n = n_slow if answered else n_fast
        cfg = oci_config([f"/{binary}", str(n)])
        cfg["linux"]["seccomp"] = default_seccomp(cfg)
        if sup is not None:
            cfg["annotations"] = {"org.contain.supervise": json.dumps(policy),
                                  "org.contain.supervisor": sup}
        b = session.bundle("contain", f"supervise-{prefix}{len(bundles)}", cfg)
        target = b.rootfs / binary
        if not target.exists():
            shutil.copy2(loop, target)
        bundles[label] = b
        counts[label] = n
    if runsc is not None:
        cfg = oci_config([f"/{binary}", str(n_slow * 5)])
        b = session.bundle("runsc-ptrace", f"supervise-{prefix}", cfg)
        target = b.rootfs / binary
        if not target.exists():
            shutil.copy2(loop, target)
        bundles[RUNSC_LABEL] = b
        counts[RUNSC_LABEL] = n_slow * 5
    else:
        result.errors[RUNSC_LABEL] = "runsc is not installed (scripts/extra-deps)"

    labels = ["native", *bundles]
    samples: dict[str, list[float]] = {k: [] for k in labels}
    session.progress.start(f"syscall supervisors ({binary})", rounds * len(labels))
    for rnd in range(rounds):
        for label in rotate(labels, rnd):
            session.progress.step(label)
            if label == "native":
                p = subprocess.run([str(loop), str(n_fast)], capture_output=True, text=True,
                                   timeout=300)
                samples[label].append(parse_ns(p.stdout))
                continue
            rt = runsc if label == RUNSC_LABEL else contain
            assert rt is not None
            cid = session.new_id(rt.name, "sup")
            c = rt.run(cid, bundles[label], timeout=600)
            if c.rc != 0:
                rt.delete(cid, force=True)
                result.errors[f"{binary}: {label}"] = c.describe()
                continue
            try:
                samples[label].append(parse_ns(c.out))
            except BenchError as exc:
                result.errors[f"{binary}: {label}"] = str(exc)
    session.progress.finish()

    med = {k: statistics.median(v) for k, v in samples.items() if v}
    native = med.get("native")
    gvisor = med.get(RUNSC_LABEL)
    rows = []
    for label in labels:
        if label not in med:
            rows.append([label, "error", "-", "-", "-", "-"])
            continue
        v = med[label]
        over = f"{v - native:+.1f}" if native is not None and label != "native" else "-"
        vs = f"{v / gvisor:.2f}x" if gvisor and label != RUNSC_LABEL else "-"
        spread = f"{min(samples[label]):,.1f}-{max(samples[label]):,.1f}"
        rows.append([label, f"{v:,.1f}", spread, over, vs, f"{counts.get(label, n_fast):,}"])
    return med, counts, rows, samples


if __name__ == "__main__":
    from .driver import cli

    sys.exit(cli(["--only", "supervise", *sys.argv[1:]]))
