"""The cost of one cheap system call (getppid) under each runtime's seccomp filter.

A tiny static C program (compiled here with gcc, so no Python or libc of the rootfs is
involved) calls getppid N times and prints the mean nanoseconds per call. It runs
natively and, for every OCI runtime of the session, in a busybox container with no
seccomp profile and with contain's default profile (the same config.json for every
runtime, so the filters differ only by how each runtime compiles them). The rounds
interleave every (runtime, profile) pair.

What matters is the filter's cost: ``filter overhead`` = ns/call with the default
profile minus ns/call without a profile, for the same runtime. The goal is contain's
overhead at or below runc's.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    SRC,
    BenchError,
    OciRuntime,
    Result,
    Session,
    md_table,
    oci_config,
    rotate,
)

LOOP_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

/* argv[2], when given: a file of struct sock_filter to install first (no_new_privs set) */
static void load(const char *path) {
    static struct sock_filter insns[4096];
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    size_t n = fread(insns, sizeof insns[0], 4096, f);
    fclose(f);
    struct sock_fprog prog = { .len = (unsigned short)n, .filter = insns };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp"); exit(3);
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    if (argc > 2) load(argv[2]);
    long warm = n / 10, sink = 0;
    struct timespec a, b;
    for (long i = 0; i < warm; i++) sink += syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) sink += syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.2f %ld\n", ns / n, sink != 0);
    return 0;
}
"""

PROFILES = ("none", "default")


def build_loop(scratch: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc is not installed: cannot build the getppid loop")
    src = scratch / "getppid_loop.c"
    out = scratch / "getppid_loop"
    src.write_text(LOOP_C)
    proc = subprocess.run([gcc, "-O2", "-static", "-o", str(out), str(src)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"gcc -static failed: {proc.stderr.strip()[-300:]}")
    return out


def _src_on_path() -> None:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def default_seccomp(config: dict[str, Any]) -> dict[str, Any]:
    _src_on_path()
    from contain.security.seccomp_default import default_profile_for_spec

    return default_profile_for_spec(config)


def parse_ns(out: str) -> float:
    try:
        return float(out.split()[0])
    except (IndexError, ValueError):
        raise BenchError(f"unexpected output of the loop: {out.strip()[:200]!r}") from None


def contain_filter(profile: dict[str, Any]) -> bytes:
    """The program contain compiles for *profile* (what its init loads)."""
    _src_on_path()
    from contain.security.seccomp import compile_filter
    from contain.spec.config import Seccomp

    return compile_filter(Seccomp.decode(profile, "$.linux.seccomp")).bpf


def filter_of_container(session: Session, rt: OciRuntime, config: dict[str, Any]) -> bytes:
    """The filter *rt* really installed: run a detached container (sleep) with *config*
    and read its newest filter back with PTRACE_SECCOMP_GET_FILTER."""
    _src_on_path()
    from contain.linux.seccomp import read_filter

    cfg = dict(config)
    cfg["process"] = dict(cfg["process"], args=["/bin/sleep", "60"])
    b = session.bundle(rt.name, "syscall-filter-probe", cfg)
    cid = session.new_id(rt.name, "sysfilter")
    pid = rt.start_detached(cid, b)
    try:
        for attempt in range(5):  # ptrace can race the runtime's last steps: retry
            try:
                return read_filter(pid)
            except OSError:
                if attempt == 4:
                    raise
                time.sleep(0.2)
        raise AssertionError("not reached")
    finally:
        rt.stop_detached(cid)


def filter_only(session: Session, result: Result, loop: Path, n: int, rounds: int,
                runtimes: list[OciRuntime]) -> dict[str, list[float]]:
    """The same static loop on the host, with no filter and with each runtime's own
    compiled default-profile filter loaded first: the filter's cost without container
    start-up noise."""
    cfg = oci_config(["/getppid_loop"])
    profile = default_seccomp(cfg)
    cfg["linux"]["seccomp"] = profile
    programs: dict[str, bytes] = {}
    for rt in runtimes:
        try:
            programs[rt.name] = (contain_filter(profile) if rt.name == "contain"
                                 else filter_of_container(session, rt, cfg))
        except (BenchError, OSError) as exc:
            result.errors[f"filter/{rt.name}"] = f"cannot get its filter: {exc}"
    files: dict[str, Path] = {}
    for name, prog in programs.items():
        files[name] = session.scratch / f"filter-{name}.bpf"
        files[name].write_bytes(prog)
    result.data["filter_instructions"] = {k: len(v) // 8 for k, v in programs.items()}
    cases = ["no filter", *files]
    samples: dict[str, list[float]] = {c: [] for c in cases}
    session.progress.start("syscall overhead (filter only)", rounds * len(cases))
    for rnd in range(rounds):
        for case in rotate(cases, rnd):
            session.progress.step(case)
            argv = [str(loop), str(n)] + ([str(files[case])] if case in files else [])
            p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                result.errors[f"filter/{case}"] = p.stderr.strip()[-200:]
                continue
            samples[case].append(parse_ns(p.stdout))
    session.progress.finish()
    return samples


def run(session: Session) -> Result:
    result = Result("syscall_overhead", "Per-syscall cost (getppid) with and without seccomp")
    n = 500_000 if session.quick else 3_000_000
    rounds = session.each_round(default=7, quick=3)
    loop = build_loop(session.scratch)
    runtimes = [rt for rt in session.runtimes if isinstance(rt, OciRuntime)]

    bundles: dict[tuple[str, str], Any] = {}
    for rt in runtimes:
        for prof in PROFILES:
            cfg = oci_config(["/getppid_loop", str(n)])
            if prof == "default":
                cfg["linux"]["seccomp"] = default_seccomp(cfg)
            else:
                cfg["linux"].pop("seccomp", None)
            b = session.bundle(rt.name, f"syscall-{prof}", cfg)
            target = b.rootfs / "getppid_loop"
            if not target.exists():
                shutil.copy2(loop, target)
            bundles[(rt.name, prof)] = b

    samples: dict[str, list[float]] = {"native": []}
    for rt in runtimes:
        for prof in PROFILES:
            samples[f"{rt.name}/{prof}"] = []

    cases: list[tuple[Any, str]] = [(None, "native")]
    cases += [(rt, prof) for rt in runtimes for prof in PROFILES]
    failures: dict[str, int] = {}
    session.progress.start("syscall overhead", rounds * len(cases))
    for rnd in range(rounds):
        for rt, prof in rotate(cases, rnd):
            key = "native" if rt is None else f"{rt.name}/{prof}"
            session.progress.step(key)
            if failures.get(key, 0) > rounds // 2:
                continue  # give up on a case that keeps failing
            if rt is None:
                p = subprocess.run([str(loop), str(n)], capture_output=True, text=True,
                                   timeout=300)
                samples[key].append(parse_ns(p.stdout))
                continue
            cid = session.new_id(rt.name, f"sys{prof}")
            c = rt.run(cid, bundles[(rt.name, prof)], timeout=300)
            if c.rc != 0:
                # on this shared machine a run is now and then killed from outside:
                # count it, keep the other rounds
                rt.delete(cid, force=True)
                failures[key] = failures.get(key, 0) + 1
                result.errors[key] = f"{failures[key]} failed run(s), last: {c.describe()}"
                continue
            try:
                samples[key].append(parse_ns(c.out))
            except BenchError as exc:
                failures[key] = failures.get(key, 0) + 1
                result.errors[key] = str(exc)
    session.progress.finish()

    fo = filter_only(session, result, loop, n, rounds, runtimes)
    fo_med = {k: statistics.median(v) for k, v in fo.items() if v}
    fo_min = {k: min(v) for k, v in fo.items() if v}
    fo_rows = []
    base, base_min = fo_med.get("no filter"), fo_min.get("no filter")
    fo_over = {k: v - base for k, v in fo_med.items() if base is not None and k != "no filter"}
    insns = result.data.get("filter_instructions", {})
    for k in fo:
        if k not in fo_med:
            continue
        over = fo_over.get(k)
        ratio = "-"
        if over is not None and fo_over.get("runc") and fo_over["runc"] > 0.05:
            ratio = f"{over / fo_over['runc']:.2f}x"
        best = (f"{fo_min[k] - base_min:+.1f}" if base_min is not None and k != "no filter"
                else "-")
        fo_rows.append([k if k == "no filter" else f"{k}'s filter", str(insns.get(k, "-")),
                        f"{fo_med[k]:.1f}", f"{over:+.1f}" if over is not None else "-", ratio,
                        best])

    med = {k: statistics.median(v) for k, v in samples.items() if v}
    spread = {k: (min(v), max(v)) for k, v in samples.items() if v}
    rows = []
    native = med.get("native")
    if native is not None:
        rows.append(["native", f"{native:.1f}", "-", "-", "-"])
    overhead: dict[str, float] = {}
    best_overhead: dict[str, float] = {}
    for rt in runtimes:
        none, dflt = med.get(f"{rt.name}/none"), med.get(f"{rt.name}/default")
        if none is not None and dflt is not None:
            overhead[rt.name] = dflt - none
            best_overhead[rt.name] = spread[f"{rt.name}/default"][0] - \
                spread[f"{rt.name}/none"][0]
    runc_over = overhead.get("runc")
    for rt in runtimes:
        none, dflt = med.get(f"{rt.name}/none"), med.get(f"{rt.name}/default")
        over = overhead.get(rt.name)
        ratio = "-"
        if over is not None and runc_over:
            ratio = f"{over / runc_over:.2f}x" if runc_over > 0.05 else "-"
        best = best_overhead.get(rt.name)
        rows.append([rt.name,
                     f"{none:.1f}" if none is not None else "error",
                     f"{dflt:.1f}" if dflt is not None else "error",
                     f"{over:+.1f}" if over is not None else "-", ratio,
                     f"{best:+.1f}" if best is not None else "-"])
    if native is not None:
        rows[0].append("-")
    md = ["### The filter alone: the same host process, each runtime's compiled default profile",
          "",
          md_table(["filter", "BPF instructions", "ns/call", "filter overhead (ns)",
                    "overhead vs runc", "overhead, best runs (ns)"], fo_rows),
          "",
          "### In a container: `run` of the loop",
          "",
          md_table(["runtime", "no profile (ns/call)", "default profile (ns/call)",
                    "filter overhead (ns)", "overhead vs runc",
                    "overhead, best runs (ns)"], rows),
          "",
          f"{n:,} getppid calls per run (static C loop), median of {rounds} interleaved "
          "rounds (best runs: the difference of the minima); the default profile is "
          "contain's (`contain spec --seccomp`), the same config.json for every runtime."]
    notes = []
    if "runc" in fo_over and "contain" in fo_over:
        verdict = "at or below" if fo_over["contain"] <= fo_over["runc"] + 0.5 else "above"
        notes.append(f"filter alone: contain's overhead is {verdict} runc's "
                     f"({fo_over['contain']:+.1f} ns vs {fo_over['runc']:+.1f} ns per call)")
    if "runc" in overhead and "contain" in overhead:
        verdict = "at or below" if overhead["contain"] <= overhead["runc"] + 0.5 else "above"
        notes.append(f"in a container: contain's filter overhead is {verdict} runc's "
                     f"({overhead['contain']:+.1f} ns vs {overhead['runc']:+.1f} ns per call)")
    result.markdown = "\n".join(md)
    result.notes = notes
    result.data.update({"filter_only_samples_ns": fo, "filter_only_overhead_ns": fo_over})
    result.data |= {"n": n, "rounds": rounds, "samples_ns": samples, "median_ns": med,
                   "range_ns": spread, "overhead_ns": overhead,
                   "best_overhead_ns": best_overhead}
    return result


if __name__ == "__main__":
    from .driver import cli

    sys.exit(cli(["--only", "syscall_overhead", *sys.argv[1:]]))
