"""update, pause, resume, events, ps: runc's flags and output shapes."""

from __future__ import annotations

import os
import sys

from contain.cli.args import Command, Flag, UsageError
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UPDATE_HELP = """update container resource constraints

Only the values given change. With --resources FILE (or - for standard input) the
other options are ignored; the file holds an OCI linux.resources object, e.g.
  {"memory": {"limit": 0, "reservation": 0, "swap": 0, "checkBeforeUpdate": true},
   "cpu": {"shares": 0, "quota": 0, "burst": 0, "period": 0, "realtimeRuntime": 0,
           "realtimePeriod": 0, "cpus": "", "mems": "", "idle": 0},
   "blockIO": {"weight": 0}, "pids": {"limit": 0}}"""

COMMANDS = {
    "update": Command(
        "update", "cmd_update", min_args=1, max_args=1, usage="<container-id>",
        help=_UPDATE_HELP,
        flags=(
            Flag("--resources,-r", help="path to a file with the resources to update, or - "
                                        "for standard input"),
            Flag("--blkio-weight", "int", help="per cgroup block I/O weight, 10 to 1000"),
            Flag("--cpu-period", help="CPU CFS period (microseconds); 0 for the default"),
            Flag("--cpu-quota", help="CPU CFS quota (microseconds) per period"),
            Flag("--cpu-burst", help="CPU CFS burst (microseconds) per period"),
            Flag("--cpu-share,--cpu-shares", help="CPU shares (relative weight)"),
            Flag("--cpu-rt-period", help="CPU realtime period (microseconds)"),
            Flag("--cpu-rt-runtime", help="CPU realtime runtime (microseconds) per period"),
            Flag("--cpuset-cpus", help="CPUs to use (e.g. 0-2,4)"),
            Flag("--cpuset-mems", help="memory nodes to use (e.g. 0)"),
            Flag("--cpu-idle", help="1: SCHED_IDLE for the cgroup, 0: default"),
            Flag("--kernel-memory", help="(obsolete, ignored)"),
            Flag("--kernel-memory-tcp", help="(obsolete, ignored)"),
            Flag("--memory", help="memory limit (bytes, or with a unit: 100M, 1g)"),
            Flag("--memory-reservation", help="memory reservation / soft limit"),
            Flag("--memory-swap", help="memory+swap limit; -1 for unlimited swap"),
            Flag("--pids-limit", "int", help="maximum number of pids in the container"),
            Flag("--l3-cache-schema", help="Intel RDT/CAT L3 cache schema"),
            Flag("--mem-bw-schema", help="Intel RDT/MBA memory bandwidth schema"),
        )),
    "pause": Command("pause", "cmd_pause", min_args=1, max_args=1, usage="<container-id>",
                     help="pause suspends all processes inside the container"),
    "resume": Command("resume", "cmd_resume", min_args=1, max_args=1, usage="<container-id>",
                      help="resumes all processes that have been previously paused"),
    "events": Command(
        "events", "cmd_events", min_args=1, max_args=1, usage="<container-id>",
        help="display container events such as OOM notifications, cpu, memory, and IO "
             "usage statistics",
        flags=(Flag("--interval", default="5s", help="set the stats collection interval"),
               Flag("--stats", "bool", help="display the container's stats then exit"))),
    "ps": Command(
        "ps", "cmd_ps", min_args=1, usage="<container-id> [ps options]",
        help="ps displays the processes running inside a container",
        interspersed=False,
        flags=(Flag("--format,-f", default="table", help="select one of: table or json"),)),
}


# -- value parsing -------------------------------------------------------------------------

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """Sizes as runc takes them (go-units RAMInBytes): 1024-based, "100M", "1.5g",
    "512KiB", "64mb", "10 k"; a plain number is bytes."""
    s = text.strip()
    i = 0
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    num, rest = s[:i], s[i:].lower()
    if rest.startswith(" "):
        rest = rest[1:]
    unit = rest[:1] if rest[:1] in ("k", "m", "g", "t", "p") else ""
    if not num or num.startswith(".") or rest[len(unit):] not in ("", "b", "i", "ib"):
        raise ValueError(text)
    value = float(num) if "." in num else int(num)
    return int(value * _UNITS[unit])


def _uint(name: str, text: str) -> int:
    try:
        v = int(text, 10)
    except ValueError as exc:
        raise UsageError(f"invalid value for {name}: {text!r} is not a number") from exc
    if v < 0:
        raise UsageError(f"invalid value for {name}: {text!r} is negative")
    return v


def _int(name: str, text: str) -> int:
    try:
        return int(text, 10)
    except ValueError as exc:
        raise UsageError(f"invalid value for {name}: {text!r} is not a number") from exc


def _size(name: str, text: str) -> int:
    if text.strip() == "-1":
        return -1
    try:
        return ram_in_bytes(text)
    except ValueError as exc:
        raise UsageError(f"invalid value for {name}: {text!r} (a size such as 512M, 1G, or "
                         "-1)") from exc


def parse_duration(text: str) -> float:
    """Go durations: "5s", "500ms", "1m30s", "2h", "1.5s", "250us"; bare numbers are
    seconds."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    units = (("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0),
             ("m", 60.0), ("h", 3600.0))
    total = 0.0
    i = 0
    if not s:
        raise ValueError(text)
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == "."):
            j += 1
        if j == i:
            raise ValueError(text)
        num = float(s[i:j])
        for name, mult in units:
            if s.startswith(name, j) and not (name == "m" and s.startswith("ms", j)):
                total += num * mult
                i = j + len(name)
                break
        else:
            raise ValueError(text)
    return total


# -- update --------------------------------------------------------------------------------

def _read_resources(source: str) -> dict[str, Any]:
    from contain.jsonio import loads

    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise ContainError(f"cannot read resources {source}: {exc.strerror}") from exc
    try:
        obj = loads(data)
    except (ValueError, SystemError) as exc:  # (the C scanner can raise SystemError)
        raise ContainError(f"resources {source}: invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ContainError(f"resources {source}: expected a JSON object")
    return obj


def resources_from_flags(opts: dict[str, Any]) -> dict[str, Any]:
    """The linux.resources object the single-value flags of update describe."""
    from contain import log

    mem: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if opts.get("blkio_weight"):
        out["blockIO"] = {"weight": opts["blkio_weight"]}
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if opts.get(flag):
            cpu[key] = opts[flag]
    if opts.get("cpu_idle"):
        cpu["idle"] = _int("cpu-idle", opts["cpu_idle"])
    for flag, key in (("cpu_burst", "burst"), ("cpu_period", "period"),
                      ("cpu_rt_period", "realtimePeriod"), ("cpu_share", "shares")):
        if opts.get(flag):
            cpu[key] = _uint(flag.replace("_", "-"), opts[flag])
    for flag, key in (("cpu_quota", "quota"), ("cpu_rt_runtime", "realtimeRuntime")):
        if opts.get(flag):
            cpu[key] = _int(flag.replace("_", "-"), opts[flag])
    for flag, key in (("memory", "limit"), ("memory_swap", "swap"),
                      ("memory_reservation", "reservation")):
        if opts.get(flag):
            mem[key] = _size(flag.replace("_", "-"), opts[flag])
    if opts.get("kernel_memory") or opts.get("kernel_memory_tcp"):
        for flag in ("kernel_memory", "kernel_memory_tcp"):
            if opts.get(flag):
                _size(flag.replace("_", "-"), opts[flag])
        log.warning("Kernel memory settings are ignored and will be removed")
    if opts.get("pids_limit") is not None:
        out["pids"] = {"limit": opts["pids_limit"]}
    if mem:
        out["memory"] = mem
    if cpu:
        out["cpu"] = cpu
    return out


def cmd_update(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import resources as api

    for flag, what in (("l3_cache_schema", "Intel RDT/CAT: l3 cache schema"),
                       ("mem_bw_schema", "Intel RDT/MBA: memory bandwidth schema")):
        if opts.get(flag):
            if not os.path.exists("/sys/fs/resctrl/schemata"):
                raise ContainError(f"{what} is not enabled")
            raise ContainError(f"{what}: updating Intel RDT is not supported by contain")
    if opts.get("resources"):
        changes = _read_resources(opts["resources"])
    else:
        changes = resources_from_flags(opts)
    api.update(ctx.root, args[0], changes)
    return 0


# -- pause / resume ------------------------------------------------------------------------

def cmd_pause(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import resources as api

    api.pause(ctx.root, args[0])
    return 0


def cmd_resume(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import resources as api

    api.resume(ctx.root, args[0])
    return 0


# -- events --------------------------------------------------------------------------------

def cmd_events(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import resources as api
    from contain.jsonio import dumps

    try:
        interval = parse_duration(opts["interval"])
    except ValueError as exc:
        raise UsageError(f"invalid value {opts['interval']!r} for flag --interval: "
                         "a duration such as 5s or 500ms") from exc
    if interval <= 0:
        raise ContainError("duration interval must be greater than 0")
    cid = args[0]
    out = sys.stdout
    if opts["stats"]:
        s = api.stats(ctx.root, cid)
        out.write(dumps({"type": "stats", "id": cid, "data": s.to_json()}) + "\n")
        out.flush()
        return 0
    try:
        for event in api.events(ctx.root, cid, interval):
            out.write(dumps(event) + "\n")
            out.flush()
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - quiet exit on a closed pipe
        except OSError:
            pass
    return 0


# -- ps ------------------------------------------------------------------------------------

def cmd_ps(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import resources as api

    cid, rest = args[0], list(args[1:])
    fmt = opts["format"]
    # flags after the id, before the ps options: --format/-f, then an optional "--"
    while rest:
        head = rest[0]
        if head in ("--format", "-f") and len(rest) > 1:
            fmt = rest[1]
            rest = rest[2:]
        elif head.startswith(("--format=", "-f=")):
            fmt = head.split("=", 1)[1]
            rest = rest[1:]
        elif head == "--":
            rest = rest[1:]
            break
        else:
            break
    if fmt not in ("table", "json"):
        raise ContainError("invalid format option")
    pids = api.processes(ctx.root, cid)
    if fmt == "json":
        from contain.jsonio import dumps

        sys.stdout.write(dumps(pids) + "\n")
        return 0
    import subprocess

    ps_args = rest or ["-ef"]
    try:
        proc = subprocess.run(["ps", *ps_args], capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ContainError("ps: command not found") from exc
    if proc.returncode != 0:
        raise ContainError(f"ps {' '.join(ps_args)}: exit status {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()}")
    lines = proc.stdout.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ContainError("couldn't find PID field in ps output")
    index = titles.index("PID")
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[index])
        except (ValueError, IndexError) as exc:
            raise ContainError(f"unable to parse pid from ps output: {line!r}") from exc
        if pid in wanted:
            out.append(line)
    sys.stdout.write("\n".join(out) + "\n")
    return 0
