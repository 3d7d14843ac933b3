"""Workload overhead: CPU, memory, file I/O and a syscall-bound loop, natively and in
each runtime.

- cpu: ``sysbench cpu`` (primes), events per second, one thread;
- memory: ``sysbench memory`` (1 MiB blocks), MiB/s;
- fileio: ``sysbench fileio`` random read/write on a scratch directory bind-mounted
  from the host disk (the same file system for every runtime and for native), ops/s;
- syscalls: busybox ``dd bs=1`` from /dev/zero to /dev/null: two cheap syscalls
  (read, write) per byte, timed inside the container with busybox ``time -p``; ns per
  syscall. (The seccomp-profile variants are benchmarks/syscall_overhead.py's.)

sysbench runs from the host's /usr, bind-mounted read-only into a rootfs of links; the
syscall loop runs in the busybox bundle. Each round runs every workload natively and in
every runtime, interleaved. The result is the throughput relative to native (1.00 = no
overhead).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import plots
from .common import (
    BUSYBOX,
    BenchError,
    Bundle,
    Call,
    OciRuntime,
    Result,
    Runtime,
    Session,
    UnshareRuntime,
    md_table,
    oci_config,
    rotate,
    stopwatch,
    summarize,
    timed,
)

NATIVE = "native"


@dataclass
class Workload:
    name: str
    unit: str
    base: str  # "hostusr" (sysbench from the host's /usr) or "busybox"
    args: Callable[[Session], list[str]]
    parse: Callable[[str, Session], float]
    higher_is_better: bool = True


def _seconds(session: Session) -> int:
    return 1 if session.quick else 3


def _dd_bytes(session: Session) -> int:
    return 500_000 if session.quick else 3_000_000


def _fileio_size(session: Session) -> str:
    return "8M" if session.quick else "128M"


def _find(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text)
    if not m:
        tail = " / ".join(text.strip().splitlines()[-3:])
        raise BenchError(f"no {what} in the output: {tail[:300]}")
    return float(m.group(1))


def _limit(s: Session, quick_events: int) -> list[str]:
    """Full mode runs for a fixed time; quick mode for a fixed (small) amount of work."""
    if s.quick:
        return ["--time=0", f"--events={quick_events}"]
    return [f"--time={_seconds(s)}"]


def cpu_args(s: Session) -> list[str]:
    return ["sysbench", "cpu", "--threads=1", "--cpu-max-prime=20000", *_limit(s, 400), "run"]


def mem_args(s: Session) -> list[str]:
    total = "3G" if s.quick else "1000G"
    return ["sysbench", "memory", "--threads=1", "--memory-block-size=1M",
            f"--memory-total-size={total}", *([] if s.quick else _limit(s, 0)), "run"]


def fileio_args(s: Session) -> list[str]:
    common = f"--file-total-size={_fileio_size(s)} --file-num=4"
    limit = " ".join(_limit(s, 4000))
    script = (f"sysbench fileio {common} prepare >/dev/null && "
              f"sysbench fileio {common} --file-test-mode=rndrw {limit} run; "
              f"rc=$?; sysbench fileio {common} cleanup >/dev/null; exit $rc")
    return ["/bin/sh", "-c", script]


def dd_args(s: Session, count: int | None = None) -> list[str]:
    return ["/bin/busybox", "time", "-p", "/bin/busybox", "dd", "if=/dev/zero",
            "of=/dev/null", "bs=1", f"count={count or _dd_bytes(s)}"]


#: bytes for the dd loop per runtime, calibrated by a short first run so that a runtime
#: with slow syscalls (gVisor: ~100x native) runs about as long as the others
DD_CALIBRATION = 20_000



def parse_cpu(out: str, s: Session) -> float:
    return _find(r"events per second:\s*([\d.]+)", out, "events per second")


def parse_mem(out: str, s: Session) -> float:
    return _find(r"\(([\d.]+) MiB/sec\)", out, "MiB/sec")


def parse_fileio(out: str, s: Session) -> float:
    return (_find(r"reads/s:\s*([\d.]+)", out, "reads/s")
            + _find(r"writes/s:\s*([\d.]+)", out, "writes/s"))


def parse_dd(out: str, s: Session, count: int | None = None) -> float:
    real = _find(r"real\s+([\d.]+)", out, "time -p output")
    if real <= 0:
        raise BenchError("dd loop too short to time (real 0.00)")
    return real * 1e9 / (2 * (count or _dd_bytes(s)))


WORKLOADS = (
    Workload("cpu", "events/s", "hostusr", cpu_args, parse_cpu),
    Workload("memory", "MiB/s", "hostusr", mem_args, parse_mem),
    Workload("fileio", "ops/s", "hostusr", fileio_args, parse_fileio),
    Workload("syscalls", "ns/syscall", "busybox", dd_args, parse_dd, higher_is_better=False),
)


def scratch_dir(session: Session, who: str) -> Path:
    path = session.tmp / "work-scratch" / who
    path.mkdir(parents=True, exist_ok=True)
    return path


def workload_bundle(session: Session, rt: Runtime, w: Workload,
                    count: int | None = None) -> Bundle:
    if w.name == "syscalls":
        return session.bundle(rt.name, f"wl-{w.name}-{count}",
                              oci_config(dd_args(session, count)))
    if w.base == "hostusr":
        cfg = oci_config(w.args(session), cwd="/scratch", readonly=True,
                         binds=[("/usr", "/usr", True),
                                (str(scratch_dir(session, rt.name)), "/scratch", False)])
    else:
        cfg = oci_config(w.args(session))
    return session.bundle(rt.name, f"wl-{w.name}", cfg, base=w.base)


def run_native(session: Session, w: Workload, count: int | None = None) -> Call:
    argv = dd_args(session, count) if w.name == "syscalls" else w.args(session)
    if argv[0] == "/bin/busybox":
        argv = [BUSYBOX, *argv[1:]]
        argv[3] = BUSYBOX
    return timed(argv, timeout=300, scratch=session.scratch, cwd=str(scratch_dir(session, NATIVE)))


def one(session: Session, who: Runtime | None, w: Workload, retried: list[str]) -> float:
    """One run of *w*; a run killed by SIGKILL from outside (on a shared machine, another
    test suite's leak checker kills processes of foreign containers) is retried twice."""
    for attempt in range(3):
        try:
            return _one(session, who, w)
        except Killed as exc:
            if attempt == 2:
                raise BenchError(f"killed by SIGKILL three times: {exc}") from None
            retried.append(f"{NATIVE if who is None else who.name}/{w.name}")
    raise AssertionError("unreachable")


class Killed(BenchError):
    pass


DD_COUNTS: dict[str, int] = {}


def _dd_calibrated(session: Session, who: Runtime | None) -> int:
    """Bytes for *who*'s dd loop: about as long as the full count takes natively."""
    name = NATIVE if who is None else who.name
    if name not in DD_COUNTS:
        DD_COUNTS[name] = _dd_bytes(session)
        try:
            ns = _one(session, who, WORKLOADS[-1], DD_CALIBRATION)
        except BenchError:
            return DD_COUNTS[name]  # the measured runs will say what is wrong
        native_ns = 350.0  # order of magnitude of a read+write pair here, per syscall
        if ns > 3 * native_ns:
            DD_COUNTS[name] = max(DD_CALIBRATION, int(_dd_bytes(session) * native_ns / ns))
    return DD_COUNTS[name]


def _one(session: Session, who: Runtime | None, w: Workload, count: int | None = None) -> float:
    if w.name == "syscalls" and count is None:
        count = _dd_calibrated(session, who)
    if who is None:
        c = run_native(session, w, count)
    else:
        bundle = workload_bundle(session, who, w, count)
        cid = session.new_id(who.name, f"wl{w.name[:3]}")
        c = who.run(cid, bundle, timeout=300)
        if c.rc != 0 and isinstance(who, OciRuntime):
            who.delete(cid, force=True)
    if c.rc in (137, -9):
        raise Killed(c.describe())
    if c.rc != 0:
        raise BenchError(c.describe())
    if w.name == "syscalls":
        return parse_dd(c.out + "\n" + c.err, session, count)
    return w.parse(c.out + "\n" + c.err, session)


def run(session: Session) -> Result:
    result = Result("workload", "Workload overhead: CPU, memory, file I/O, syscalls")
    rounds = session.each_round(default=3, quick=1)
    members: list[Runtime | None] = [None]
    for rt in session.runtimes:
        if isinstance(rt, UnshareRuntime):
            result.errors[rt.name] = ("the unshare floor has no /dev and no mounts; "
                                      "native is the floor here")
        else:
            members.append(rt)
    retried: list[str] = []
    have_sysbench = shutil.which("sysbench") is not None
    workloads = [w for w in WORKLOADS if w.base == "busybox" or have_sysbench]
    if not have_sysbench:
        result.notes.append("sysbench is not installed (apt-get install sysbench): cpu, "
                            "memory and fileio skipped")
    errors: dict[tuple[str, str], str] = {}
    counts: dict[tuple[str, str], int] = {}
    samples: dict[str, dict[str, list[float]]] = {w.name: {} for w in workloads}
    DD_COUNTS.clear()
    with stopwatch(result):
        session.progress.start("workload", rounds * len(members) * len(workloads))
        for r in range(rounds):
            for w in workloads:
                for who in rotate(members, r):
                    name = NATIVE if who is None else who.name
                    if counts.get((name, w.name), 0) < 2:
                        try:
                            value = one(session, who, w, retried)
                            samples[w.name].setdefault(name, []).append(value)
                        except BenchError as exc:
                            counts[(name, w.name)] = counts.get((name, w.name), 0) + 1
                            errors[(name, w.name)] = f"{exc} (failure {counts[(name, w.name)]})"
                    session.progress.step(f"{w.name} {name}")
        session.progress.finish()
    summary = {w: {name: summarize(v) for name, v in per.items() if v}
               for w, per in samples.items()}
    relative: dict[str, dict[str, float]] = {}
    for w in workloads:
        base = summary[w.name].get(NATIVE, {}).get("median")
        for name, s in summary[w.name].items():
            if base:
                rel = s["median"] / base if w.higher_is_better else base / s["median"]
                relative.setdefault(w.name, {})[name] = rel
    for (name, wname), err in errors.items():
        result.errors.setdefault(name, f"{wname}: {err}")
    result.data = {"rounds": rounds, "units": {w.name: w.unit for w in workloads},
                   "samples": samples, "summary": summary, "relative_to_native": relative,
                   "errors": {f"{n}/{w}": e for (n, w), e in errors.items()},
                   "retried_after_sigkill": retried}
    names = [NATIVE, *[rt.name for rt in members if rt is not None]]
    rows = []
    for name in names:
        row = [name]
        for w in workloads:
            stats = summary[w.name].get(name)
            if not stats:
                row.append("error" if (name, w.name) in errors else "n/a")
                continue
            ratio = relative.get(w.name, {}).get(name)
            cell = f"{stats['median']:.4g}"
            if ratio is not None and name != NATIVE:
                cell += f" (**{ratio:.2f}**)" if ratio >= 0.1 else f" (**{ratio:.3f}**)"
            row.append(cell)
        rows.append(row)
    text = md_table(["runtime", *[f"{w.name} {w.unit}" for w in workloads]], rows)
    text += ("\n(**x**) = performance relative to native, 1.00 = no overhead, lower = slower "
             "(for syscalls: native ns / runtime ns).\n")
    if retried:
        result.notes.append(f"retried after an outside SIGKILL: {', '.join(retried)}")
    for name in sorted(result.errors):
        if not any(n == name for n, _ in errors):
            text += f"\n{name}: {result.errors[name]}\n"
    if errors:
        text += "\n" + md_table(["runtime", "workload", "error"],
                                [(n, w, e) for (n, w), e in sorted(errors.items())])
    result.markdown = text
    result.data["dd_bytes"] = dict(DD_COUNTS)
    size = ("400 cpu events, 3 GiB memory, 4000 file ops" if session.quick
            else f"--time={_seconds(session)}s each")
    result.notes.append(f"{rounds} round(s); sysbench {size}, fileio on "
                        f"{_fileio_size(session)}; dd of {_dd_bytes(session)} bytes (fewer for a "
                        "runtime whose syscalls are much slower, calibrated by a short run)")
    if session.plot and relative:
        path = session.out / "workload.png"
        plots.bars(path, "Workload performance relative to native", relative,
                   "relative to native (1.0 = no overhead)", reference=1.0)
        result.plots.append(path.name)
    return result
