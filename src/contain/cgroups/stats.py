"""Cgroup statistics as typed objects, read from v1 or v2 files.

``Stats.to_json()`` has the shape of runc's ``types.Stats`` (what ``runc events`` prints
as the ``data`` of a stats event), field names and omissions included, plus the OOM
counters (``memory.oomEvents``, ``memory.oomKill``, ``memory.underOom``) that
consumers of runc's shape ignore and people want.
"""

from __future__ import annotations

import os

from contain.cgroups.fs import parse_list, read_int, read_keyed, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups import Manager


class _Obj:
    """Slots plus a JSON table: (attribute, key, omit-when-zero)."""

    __slots__ = ()
    _JSON: tuple[tuple[str, str, bool], ...] = ()

    def __init__(self, **kw: Any) -> None:
        for attr, _k, _o in self._JSON:
            setattr(self, attr, kw.get(attr, self._default(attr)))

    def _default(self, attr: str) -> Any:
        return 0

    def is_zero(self) -> bool:
        return all(_zero(getattr(self, a)) for a, _k, _o in self._JSON)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, key, omit in self._JSON:
            v = getattr(self, attr)
            if omit and _zero(v):
                continue
            out[key] = _enc(v)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{a}={getattr(self, a)!r}" for a, _k, _o in self._JSON)
        return f"{type(self).__name__}({inner})"


def _zero(v: Any) -> bool:
    if isinstance(v, _Obj):
        return v.is_zero()
    return not v


def _enc(v: Any) -> Any:
    if isinstance(v, _Obj):
        return v.to_json()
    if isinstance(v, list):
        return [_enc(x) for x in v]
    if isinstance(v, dict):
        return {k: _enc(x) for k, x in v.items()}
    return v


class CpuUsage(_Obj):
    """Nanoseconds."""
    total: int
    percpu: list[int]
    percpu_kernel: list[int]
    percpu_user: list[int]
    kernel: int
    user: int
    __slots__ = ("kernel", "percpu", "percpu_kernel", "percpu_user", "total", "user")
    _JSON = (("total", "total", True), ("percpu", "percpu", True),
             ("percpu_kernel", "percpu_kernel", True), ("percpu_user", "percpu_user", True),
             ("kernel", "kernel", False), ("user", "user", False))

    def _default(self, attr: str) -> Any:
        return [] if attr.startswith("percpu") else 0


class Throttling(_Obj):
    periods: int
    throttled_periods: int
    throttled_time: int
    __slots__ = ("periods", "throttled_periods", "throttled_time")
    _JSON = (("periods", "periods", True), ("throttled_periods", "throttledPeriods", True),
             ("throttled_time", "throttledTime", True))


class CpuStats(_Obj):
    usage: CpuUsage
    throttling: Throttling
    __slots__ = ("throttling", "usage")
    _JSON = (("usage", "usage", True), ("throttling", "throttling", True))

    def _default(self, attr: str) -> Any:
        return CpuUsage() if attr == "usage" else Throttling()


class CpusetStats(_Obj):
    cpus: list[int]
    mems: list[int]
    cpu_exclusive: int
    mem_hardwall: int
    mem_exclusive: int
    memory_migrate: int
    memory_spread_page: int
    memory_spread_slab: int
    memory_pressure: int
    sched_load_balance: int
    sched_relax_domain_level: int
    __slots__ = ("cpu_exclusive", "cpus", "mem_exclusive", "mem_hardwall", "memory_migrate",
                 "memory_pressure", "memory_spread_page", "memory_spread_slab", "mems",
                 "sched_load_balance", "sched_relax_domain_level")
    _JSON = (("cpus", "cpus", True), ("cpu_exclusive", "cpu_exclusive", False),
             ("mems", "mems", True), ("mem_hardwall", "mem_hardwall", False),
             ("mem_exclusive", "mem_exclusive", False),
             ("memory_migrate", "memory_migrate", False),
             ("memory_spread_page", "memory_spread_page", False),
             ("memory_spread_slab", "memory_spread_slab", False),
             ("memory_pressure", "memory_pressure", False),
             ("sched_load_balance", "sched_load_balance", False),
             ("sched_relax_domain_level", "sched_relax_domain_level", False))

    def _default(self, attr: str) -> Any:
        return [] if attr in ("cpus", "mems") else 0


class MemoryEntry(_Obj):
    """Bytes: limit, current usage, peak usage, times the limit was hit."""
    limit: int
    usage: int
    max: int
    failcnt: int
    __slots__ = ("failcnt", "limit", "max", "usage")
    _JSON = (("limit", "limit", False), ("usage", "usage", True), ("max", "max", True),
             ("failcnt", "failcnt", False))


class MemoryStats(_Obj):
    cache: int
    usage: MemoryEntry
    swap: MemoryEntry
    kernel: MemoryEntry
    kernel_tcp: MemoryEntry
    raw: dict[str, int]
    oom_events: int
    oom_kill: int
    under_oom: bool
    __slots__ = ("cache", "kernel", "kernel_tcp", "oom_events", "oom_kill", "raw", "swap",
                 "under_oom", "usage")
    _JSON = (("cache", "cache", True), ("usage", "usage", True), ("swap", "swap", True),
             ("kernel", "kernel", True), ("kernel_tcp", "kernelTCP", True),
             ("raw", "raw", True), ("oom_events", "oomEvents", True),
             ("oom_kill", "oomKill", True), ("under_oom", "underOom", True))

    def _default(self, attr: str) -> Any:
        if attr in ("usage", "swap", "kernel", "kernel_tcp"):
            return MemoryEntry()
        if attr == "raw":
            return {}
        if attr == "under_oom":
            return False
        return 0


class PidsStats(_Obj):
    current: int
    limit: int
    __slots__ = ("current", "limit")
    _JSON = (("current", "current", True), ("limit", "limit", True))


class BlkioEntry(_Obj):
    major: int
    minor: int
    op: str
    value: int
    __slots__ = ("major", "minor", "op", "value")
    _JSON = (("major", "major", True), ("minor", "minor", True), ("op", "op", True),
             ("value", "value", True))

    def _default(self, attr: str) -> Any:
        return "" if attr == "op" else 0


_BLKIO_KEYS = (("io_service_bytes_recursive", "ioServiceBytesRecursive"),
               ("io_serviced_recursive", "ioServicedRecursive"),
               ("io_queued_recursive", "ioQueueRecursive"),
               ("io_service_time_recursive", "ioServiceTimeRecursive"),
               ("io_wait_time_recursive", "ioWaitTimeRecursive"),
               ("io_merged_recursive", "ioMergedRecursive"),
               ("io_time_recursive", "ioTimeRecursive"),
               ("sectors_recursive", "sectorsRecursive"))


class BlkioStats(_Obj):
    io_service_bytes_recursive: list[BlkioEntry]
    io_serviced_recursive: list[BlkioEntry]
    io_queued_recursive: list[BlkioEntry]
    io_service_time_recursive: list[BlkioEntry]
    io_wait_time_recursive: list[BlkioEntry]
    io_merged_recursive: list[BlkioEntry]
    io_time_recursive: list[BlkioEntry]
    sectors_recursive: list[BlkioEntry]
    __slots__ = tuple(a for a, _k in _BLKIO_KEYS)
    _JSON = tuple((a, k, True) for a, k in _BLKIO_KEYS)

    def _default(self, attr: str) -> Any:
        return []


class HugetlbStats(_Obj):
    usage: int
    max: int
    failcnt: int
    __slots__ = ("failcnt", "max", "usage")
    _JSON = (("usage", "usage", True), ("max", "max", True), ("failcnt", "failcnt", False))


class Stats(_Obj):
    """Everything ``events --stats`` reports."""
    cpu: CpuStats
    cpuset: CpusetStats
    memory: MemoryStats
    pids: PidsStats
    blkio: BlkioStats
    hugetlb: dict[str, HugetlbStats]
    __slots__ = ("blkio", "cpu", "cpuset", "hugetlb", "memory", "pids")
    _JSON = (("cpu", "cpu", False), ("cpuset", "cpuset", False), ("memory", "memory", False),
             ("pids", "pids", False), ("blkio", "blkio", False), ("hugetlb", "hugetlb", False))

    def _default(self, attr: str) -> Any:
        return {"cpu": CpuStats, "cpuset": CpusetStats, "memory": MemoryStats,
                "pids": PidsStats, "blkio": BlkioStats, "hugetlb": dict}[attr]()

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["intel_rdt"] = {}
        out["network_interfaces"] = None
        return out


# -- collection ----------------------------------------------------------------------------

def collect(mgr: Manager) -> Stats:
    s = Stats()
    paths = mgr.paths()
    u = mgr.unified()
    if mgr.layout == "v2":
        if u:
            _v2_cpu(u, s)
            _v2_memory(u, s)
            _pids(u, s)
            _v2_io(u, s)
            _hugetlb(u, s, v2=True)
            _cpuset(u, s, v2=True)
        return s
    if "cpuacct" in paths:
        _v1_cpuacct(paths["cpuacct"], s)
    if "cpu" in paths:
        _v1_cpu(paths["cpu"], s)
    if "memory" in paths:
        _v1_memory(paths["memory"], s)
    if "pids" in paths:
        _pids(paths["pids"], s)
    if "blkio" in paths:
        _v1_blkio(paths["blkio"], s)
    if "cpuset" in paths:
        _cpuset(paths["cpuset"], s, v2=False)
    if "hugetlb" in paths:
        _hugetlb(paths["hugetlb"], s, v2=False)
    elif u:
        _hugetlb(u, s, v2=True)
    return s


def _ints(path: str, name: str) -> list[int]:
    try:
        return [int(x) for x in read_text(path, name).split()]
    except (OSError, ValueError):
        return []


def _v1_cpuacct(d: str, s: Stats) -> None:
    u = s.cpu.usage
    u.total = read_int(d, "cpuacct.usage")
    u.percpu = _ints(d, "cpuacct.usage_percpu")
    u.percpu_kernel = _ints(d, "cpuacct.usage_percpu_sys")
    u.percpu_user = _ints(d, "cpuacct.usage_percpu_user")
    st = read_keyed(d, "cpuacct.stat")
    tick = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
    u.user = st.get("user", 0) * tick
    u.kernel = st.get("system", 0) * tick


def _v1_cpu(d: str, s: Stats) -> None:
    st = read_keyed(d, "cpu.stat")
    t = s.cpu.throttling
    t.periods = st.get("nr_periods", 0)
    t.throttled_periods = st.get("nr_throttled", 0)
    t.throttled_time = st.get("throttled_time", 0)


def _v2_cpu(d: str, s: Stats) -> None:
    st = read_keyed(d, "cpu.stat")
    u = s.cpu.usage
    u.total = st.get("usage_usec", 0) * 1000
    u.user = st.get("user_usec", 0) * 1000
    u.kernel = st.get("system_usec", 0) * 1000
    t = s.cpu.throttling
    t.periods = st.get("nr_periods", 0)
    t.throttled_periods = st.get("nr_throttled", 0)
    t.throttled_time = st.get("throttled_usec", 0) * 1000


def _entry_v1(d: str, prefix: str) -> MemoryEntry:
    def num(name: str) -> int:
        v = read_int(d, f"{prefix}.{name}")
        return 0 if v < 0 else v
    return MemoryEntry(limit=num("limit_in_bytes"), usage=num("usage_in_bytes"),
                       max=num("max_usage_in_bytes"), failcnt=num("failcnt"))


def _v1_memory(d: str, s: Stats) -> None:
    m = s.memory
    m.raw = read_keyed(d, "memory.stat")
    m.cache = m.raw.get("cache", 0)
    m.usage = _entry_v1(d, "memory")
    m.swap = _entry_v1(d, "memory.memsw")
    m.kernel = _entry_v1(d, "memory.kmem")
    m.kernel_tcp = _entry_v1(d, "memory.kmem.tcp")
    oc = read_keyed(d, "memory.oom_control")
    m.oom_kill = oc.get("oom_kill", 0)
    m.under_oom = bool(oc.get("under_oom", 0))
    m.oom_events = m.oom_kill  # v1 counts kills only; events come through eventfd


def _v2_memory(d: str, s: Stats) -> None:
    m = s.memory
    m.raw = read_keyed(d, "memory.stat")
    m.cache = m.raw.get("file", 0)
    unlimited = 2**64 - 1

    def lim(name: str) -> int:
        v = read_int(d, name, -1)
        return unlimited if v == -1 else v

    usage = MemoryEntry(usage=read_int(d, "memory.current"), limit=lim("memory.max"),
                        max=read_int(d, "memory.peak"))
    ev = read_keyed(d, "memory.events")
    usage.failcnt = ev.get("max", 0)
    m.usage = usage
    swap_cur = read_int(d, "memory.swap.current")
    swap_lim = lim("memory.swap.max") if os.path.exists(f"{d}/memory.swap.max") else unlimited
    m.swap = MemoryEntry(usage=swap_cur + usage.usage,
                         limit=swap_lim if swap_lim == unlimited
                         else min(unlimited, swap_lim + usage.limit),
                         failcnt=read_keyed(d, "memory.swap.events").get("max", 0))
    m.oom_events = ev.get("oom", 0)
    m.oom_kill = ev.get("oom_kill", 0)


def _pids(d: str, s: Stats) -> None:
    s.pids.current = read_int(d, "pids.current")
    limit = read_int(d, "pids.max", -1)
    s.pids.limit = 0 if limit < 0 else limit


def _blkio_file(d: str, name: str) -> list[BlkioEntry]:
    try:
        text = read_text(d, name)
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) < 3 or fields[0] == "Total":
            continue
        try:
            if len(fields) == 4:
                out.append(BlkioEntry(major=int(fields[0]), minor=int(fields[1]), op=fields[2],
                                      value=int(fields[3])))
            else:
                out.append(BlkioEntry(major=int(fields[0]), minor=int(fields[1]),
                                      value=int(fields[2])))
        except ValueError:
            continue
    return out


def _v1_blkio(d: str, s: Stats) -> None:
    b = s.blkio
    # CFQ's files, else BFQ's, else the throttle layer's (what runc falls back to)
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        b.io_service_bytes_recursive = _blkio_file(d, prefix + "io_service_bytes_recursive")
        b.io_serviced_recursive = _blkio_file(d, prefix + "io_serviced_recursive")
        if prefix == "blkio.":
            for attr, name in (("io_queued_recursive", "io_queued_recursive"),
                               ("io_service_time_recursive", "io_service_time_recursive"),
                               ("io_wait_time_recursive", "io_wait_time_recursive"),
                               ("io_merged_recursive", "io_merged_recursive"),
                               ("io_time_recursive", "time_recursive"),
                               ("sectors_recursive", "sectors_recursive")):
                setattr(b, attr, _blkio_file(d, prefix + name))
        if b.io_service_bytes_recursive or b.io_serviced_recursive:
            return


def _v2_io(d: str, s: Stats) -> None:
    try:
        text = read_text(d, "io.stat")
    except OSError:
        return
    names = {"rbytes": ("io_service_bytes_recursive", "Read"),
             "wbytes": ("io_service_bytes_recursive", "Write"),
             "rios": ("io_serviced_recursive", "Read"),
             "wios": ("io_serviced_recursive", "Write")}
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        for item in parts[1:]:
            k, _, v = item.partition("=")
            if k in names:
                attr, op = names[k]
                getattr(s.blkio, attr).append(
                    BlkioEntry(major=int(major), minor=int(minor), op=op, value=int(v)))


def _hugetlb(d: str, s: Stats, v2: bool) -> None:
    from contain.cgroups.resources import hugepage_sizes

    for size in hugepage_sizes():
        if v2:
            if not os.path.exists(f"{d}/hugetlb.{size}.current"):
                continue
            s.hugetlb[size] = HugetlbStats(
                usage=read_int(d, f"hugetlb.{size}.current"),
                failcnt=read_keyed(d, f"hugetlb.{size}.events").get("max", 0))
        else:
            if not os.path.exists(f"{d}/hugetlb.{size}.usage_in_bytes"):
                continue
            s.hugetlb[size] = HugetlbStats(
                usage=read_int(d, f"hugetlb.{size}.usage_in_bytes"),
                max=read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
                failcnt=read_int(d, f"hugetlb.{size}.failcnt"))


def _cpuset(d: str, s: Stats, v2: bool) -> None:
    c = s.cpuset
    cpus = "cpuset.cpus.effective" if v2 else "cpuset.cpus"
    mems = "cpuset.mems.effective" if v2 else "cpuset.mems"
    for attr, name in (("cpus", cpus), ("mems", mems)):
        try:
            setattr(c, attr, parse_list(read_text(d, name)))
        except (OSError, ValueError):
            pass
    if v2:
        return
    for attr in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                 "memory_spread_page", "memory_spread_slab", "memory_pressure",
                 "sched_load_balance", "sched_relax_domain_level"):
        setattr(c, attr, read_int(d, f"cpuset.{attr}"))
