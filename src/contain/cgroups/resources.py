"""linux.resources -> cgroup file writes, for v1, v2 and hybrid hosts.

:func:`plan` turns a Resources object into a list of :class:`Op` (file writes, plus the
device rules and controller enabling as actions), refusing with a SpecError naming the
field anything out of range or that the host cannot enforce. Nothing is written while
planning, so ``Manager.validate`` is ``plan`` alone. :func:`apply` runs the ops and, if
one fails, writes back the values the earlier ones replaced (whole or nothing, as far as
the kernel lets values be restored).

The v2 conversions are the ones runc and crun use: cpu shares -> cpu.weight (runc's
quadratic fit through 2->1, 1024->100, 262144->10000), blkio weight [10,1000] ->
io.weight [1,10000] (unless BFQ takes the raw weight), memory.swap = (memory+swap) -
memory, realtime and net_cls/net_prio refused (v2 has no such controllers).
"""

from __future__ import annotations

import errno
import os

from contain.cgroups.fs import parse_list, read_int, read_text, write_text
from contain.errors import ContainError, SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from contain.cgroups import Manager
    from contain.spec.config import DeviceRule, Resources

R = "$.linux.resources"
UNLIMITED_V1 = 9223372036854771712  # what v1 memory files read when unlimited


class Op:
    """One write (or action) of a plan."""

    __slots__ = (
        "action",
        "dir",
        "field",
        "name",
        "old",
        "restore",
        "retry_einval",
        "value",
    )

    def __init__(self, dir: str, name: str, value: str, field: str,
                 restore: Callable[[str], str | None] | bool = True,
                 retry_einval: bool = False,
                 action: Callable[[], None] | None = None) -> None:
        self.dir = dir
        self.name = name
        self.value = value
        self.field = field
        # True: read the file first and write that back; a function: compute the line
        # that restores from the old content; False: cannot be restored
        self.restore = restore
        self.retry_einval = retry_einval
        self.action = action
        self.old: str | None = None

    def __repr__(self) -> str:
        return f"Op({self.dir}/{self.name} <- {self.value!r} [{self.field}])"


def _fail(field: str, message: str) -> SpecError:
    return SpecError(field, message)


# -- host facts ----------------------------------------------------------------------------

def host_list(kind: str) -> list[int]:
    """Online cpus or memory nodes of the host."""
    path = ("/sys/devices/system/cpu/online" if kind == "cpus"
            else "/sys/devices/system/node/online")
    try:
        with open(path) as f:
            return parse_list(f.read())
    except FileNotFoundError:
        return [0] if kind == "mems" else list(range(os.cpu_count() or 1))


def hugepage_sizes() -> list[str]:
    """Huge page sizes in the names cgroup files use (2MB, 1GB, 64KB)."""
    try:
        entries = os.listdir("/sys/kernel/mm/hugepages")
    except FileNotFoundError:
        return []
    out = []
    for e in entries:
        if not e.startswith("hugepages-") or not e.endswith("kB"):
            continue
        kb = int(e[len("hugepages-"):-2])
        if kb >= 1 << 20 and kb % (1 << 20) == 0:
            out.append(f"{kb >> 20}GB")
        elif kb >= 1 << 10 and kb % (1 << 10) == 0:
            out.append(f"{kb >> 10}MB")
        else:
            out.append(f"{kb}KB")
    return out


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], as runc >= 1.3 and crun."""
    import math

    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return math.ceil(10 ** exponent)


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000], linearly (runc, crun)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_to_v2(swap: int, memory: int, field: str) -> int:
    """OCI swap is memory+swap; memory.swap.max is swap alone. 0 means leave as is."""
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0) or memory == -1:
        return swap
    if memory == 0:
        raise _fail(field, "cannot set a swap limit without a memory limit")
    if swap < memory:
        raise _fail(field, f"memory+swap limit {swap} is lower than the memory limit {memory}")
    return swap - memory


def _v2_available(mgr: Manager) -> set[str]:
    """Controllers the container's cgroup2 directory has or can be given: its own, plus
    what the tree's root offers (``Manager.enable`` pushes those down the path; a level
    that cannot take one makes that write fail, and the set is undone)."""
    out: set[str] = set()
    for d in (mgr.unified(), mgr.unified_mount):
        if not d:
            continue
        try:
            out.update(read_text(d, "cgroup.controllers").split())
        except OSError:
            continue
    return out


def _num(value: int) -> str:
    return "max" if value == -1 else str(value)


# -- planning ------------------------------------------------------------------------------

class _Plan:
    __slots__ = ("avail2", "enable2", "mgr", "ops", "v2", "warn")

    def __init__(self, mgr: Manager, warn: bool = False) -> None:
        self.mgr = mgr
        self.warn = warn
        self.ops: list[Op] = []
        self.v2 = mgr.layout == "v2"
        self.avail2: set[str] | None = None
        self.enable2: list[str] = []

    def available2(self) -> set[str]:
        if self.avail2 is None:
            self.avail2 = _v2_available(self.mgr) if self.mgr.unified() else set()
        return self.avail2

    def v1dir(self, ctrl: str, field: str, what: str) -> str:
        d = self.mgr.paths().get(ctrl)
        if not d:
            why = self.mgr.undelegated.get(ctrl)
            if why:  # rootless: mounted, but the user may not make a cgroup there
                raise _fail(field, f"{what} needs the {ctrl} cgroup controller, which is "
                                   f"{why}")
            raise _fail(field, f"{what} needs the {ctrl} cgroup controller, which is not "
                               "mounted on this host")
        return d

    def v2dir(self, ctrl: str, field: str, what: str) -> str:
        """The cgroup2 directory, checking that *ctrl* can be had there (on hybrid hosts
        it is enabled on the way down first)."""
        d = self.mgr.unified()
        why = self.mgr.undelegated.get("unified")  # (rootless: see Manager.create)
        if why:
            raise _fail(field, f"{what} needs the {ctrl} cgroup controller, whose cgroup "
                               f"v2 tree is {why}")
        if not d or ctrl not in self.available2():
            where = "cgroup v2 tree" if d else "host (no cgroup v2 tree)"
            raise _fail(field, f"{what} needs the {ctrl} controller, which this {where} "
                               "does not offer")
        if not self.v2 and ctrl not in self.enable2:
            self.enable2.append(ctrl)
        return d

    def write(self, d: str, name: str, value: str, field: str, **kw: object) -> None:
        self.ops.append(Op(d, name, value, field, **kw))  # type: ignore[arg-type]


def plan(mgr: Manager, res: Resources | None, *, skip_devices: bool = False,
         linux_device_paths: tuple[str, ...] | list[str] = (), warn: bool = False) -> list[Op]:
    p = _Plan(mgr, warn)
    if res is not None:
        _memory(p, res)
        _cpu(p, res)
        _cpuset(p, res)
        _pids(p, res)
        _blkio(p, res)
        _hugetlb(p, res)
        _network(p, res)
        _rdma(p, res)
        _unified(p, res)
        if p.enable2:
            ctrls = list(p.enable2)
            p.ops.insert(0, Op("", "", "", R, restore=False,
                               action=lambda: mgr.enable(ctrls)))
    if not skip_devices:
        # also without linux.resources: the default allowances, every other device
        # denied (as runc; a config that leaves resources out must not get them all)
        _devices(p, res.devices if res is not None else [], linux_device_paths)
    return p.ops


def _memory(p: _Plan, res: Resources) -> None:
    m = res.memory
    if m is None:
        return
    f = f"{R}.memory"
    limit = m.limit or 0
    swap = m.swap or 0
    reservation = m.reservation or 0
    if (m.kernel or m.kernel_tcp) and p.warn:
        from contain import log

        log.warning("kernel memory settings (memory.kernel, memory.kernelTCP) are ignored: "
                    "recent kernels dropped them")
    wants = (limit or swap or reservation or m.swappiness is not None or m.disable_oom_killer
             or m.use_hierarchy is not None)
    if not wants:
        return
    if p.v2:
        d = p.v2dir("memory", f, "a memory limit")
        if m.swappiness is not None:
            raise _fail(f"{f}.swappiness", "cgroup v2 has no per-cgroup swappiness")
        if m.disable_oom_killer:
            raise _fail(f"{f}.disableOOMKiller", "cgroup v2 cannot disable the OOM killer "
                                                 "for a cgroup")
        if m.use_hierarchy is False:
            raise _fail(f"{f}.useHierarchy", "cgroup v2 is always hierarchical")
        if m.check_before_update and limit > 0:
            usage = read_int(d, "memory.current", 0)
            if usage > limit:
                raise _fail(f"{f}.limit", f"{limit} is below the current usage {usage}")
        swap2 = swap_to_v2(swap, limit, f"{f}.swap")
        if swap2 != 0 or (swap > 0 and swap2 == 0):
            has_swap = os.path.exists(f"{d}/memory.swap.max") or not os.path.isdir(d)
            if swap2 in (-1, 0) and not has_swap:
                pass
            elif not has_swap:
                raise _fail(f"{f}.swap", "swap limits are not supported on this host "
                                         "(no memory.swap.max: swap accounting is off)")
            else:
                p.write(d, "memory.swap.max", _num(swap2), f"{f}.swap")
        if limit:
            p.write(d, "memory.max", _num(limit), f"{f}.limit")
        if reservation:
            p.write(d, "memory.low", _num(reservation), f"{f}.reservation")
        return
    d = p.v1dir("memory", f, "a memory limit")
    memsw = os.path.exists(f"{d}/memory.memsw.limit_in_bytes") or (
        not os.path.isdir(d) and os.path.exists(
            os.path.dirname(d) + "/memory.memsw.limit_in_bytes"))
    if limit == -1 and swap == 0 and memsw:
        swap = -1
    if swap not in (0, -1) and not memsw:
        raise _fail(f"{f}.swap", "swap limits are not supported on this host (no "
                                 "memory.memsw.limit_in_bytes: swap accounting is off)")
    if swap > 0 and limit > 0 and swap < limit:
        raise _fail(f"{f}.swap", f"memory+swap limit {swap} is lower than the memory "
                                 f"limit {limit}")
    if m.check_before_update and limit > 0:
        usage = read_int(d, "memory.usage_in_bytes", 0)
        if usage > limit:
            raise _fail(f"{f}.limit", f"{limit} is below the current usage {usage}")
    mem_op = (d, "memory.limit_in_bytes", str(limit), f"{f}.limit")
    swap_op = (d, "memory.memsw.limit_in_bytes", str(swap), f"{f}.swap")
    if limit and swap:
        current = read_int(d, "memory.limit_in_bytes", UNLIMITED_V1)
        if swap == -1 or (current != -1 and current < swap):
            order = [swap_op, mem_op]  # raising: memsw first (it must stay >= limit)
        else:
            order = [mem_op, swap_op]
    else:
        order = [op for op, v in ((mem_op, limit), (swap_op, swap)) if v]
    for op in order:
        p.write(*op, restore=_restore_v1_memory)
    if reservation:
        p.write(d, "memory.soft_limit_in_bytes", str(reservation), f"{f}.reservation",
                restore=_restore_v1_memory)
    if m.disable_oom_killer:
        p.write(d, "memory.oom_control", "1", f"{f}.disableOOMKiller",
                restore=lambda old: "1" if "oom_kill_disable 1" in old else "0")
    if m.swappiness is not None:
        p.write(d, "memory.swappiness", str(m.swappiness), f"{f}.swappiness")
    if m.use_hierarchy is not None:
        p.write(d, "memory.use_hierarchy", "1" if m.use_hierarchy else "0",
                f"{f}.useHierarchy")


def _restore_v1_memory(old: str) -> str | None:
    v = old.strip()
    return "-1" if v == str(UNLIMITED_V1) else v


def _cpu(p: _Plan, res: Resources) -> None:
    c = res.cpu
    if c is None:
        return
    f = f"{R}.cpu"
    if c.shares and not 2 <= c.shares <= 262144:
        raise _fail(f"{f}.shares", f"{c.shares} out of range [2, 262144]")
    if c.quota not in (None, 0, -1) and c.quota < 1000:
        raise _fail(f"{f}.quota", f"{c.quota} is below the kernel's minimum of 1000 "
                                  "(microseconds)")
    if c.period and not 1000 <= c.period <= 1000000:
        raise _fail(f"{f}.period", f"{c.period} out of range [1000, 1000000] (microseconds)")
    if c.burst and c.quota and c.quota > 0 and c.burst > c.quota:
        raise _fail(f"{f}.burst", f"{c.burst} is larger than the quota {c.quota}")
    if c.realtime_period and not 1 <= c.realtime_period <= 2**31 - 1:
        raise _fail(f"{f}.realtimePeriod", f"{c.realtime_period} out of range")
    if c.realtime_runtime is not None and c.realtime_runtime < -1:
        raise _fail(f"{f}.realtimeRuntime", f"{c.realtime_runtime} is negative")
    quota = c.quota or 0
    period = c.period or 0
    wants = (c.shares or quota or period or c.burst is not None or c.idle is not None
             or c.realtime_period or c.realtime_runtime)
    if not wants:
        return
    if p.v2:
        if c.realtime_period or c.realtime_runtime:
            raise _fail(f"{f}.realtimeRuntime" if c.realtime_runtime else
                        f"{f}.realtimePeriod",
                        "cgroup v2 has no realtime CPU bandwidth control")
        d = p.v2dir("cpu", f, "a CPU limit")
        if c.idle is not None:
            p.write(d, "cpu.idle", str(c.idle), f"{f}.idle")
        if c.shares:
            p.write(d, "cpu.weight", str(shares_to_weight(c.shares)), f"{f}.shares")
        if c.burst is not None:
            p.write(d, "cpu.max.burst", str(c.burst), f"{f}.burst", retry_einval=bool(quota))
        if quota or period:
            text = (str(quota) if quota > 0 else "max") + " " + str(period or 100000)
            p.write(d, "cpu.max", text, f"{f}.quota" if quota else f"{f}.period")
        return
    d = p.v1dir("cpu", f, "a CPU limit")
    if c.shares:
        p.write(d, "cpu.shares", str(c.shares), f"{f}.shares")
    if period:
        p.write(d, "cpu.cfs_period_us", str(period), f"{f}.period", retry_einval=bool(quota))
    if c.burst is not None:
        if not os.path.exists(f"{d}/cpu.cfs_burst_us") and os.path.isdir(d):
            raise _fail(f"{f}.burst", "this kernel has no CFS burst (cpu.cfs_burst_us)")
        p.write(d, "cpu.cfs_burst_us", str(c.burst), f"{f}.burst", retry_einval=bool(quota))
    if quota:
        p.write(d, "cpu.cfs_quota_us", str(quota), f"{f}.quota")
    if c.idle is not None:
        p.write(d, "cpu.idle", str(c.idle), f"{f}.idle")
    if c.realtime_period or c.realtime_runtime:
        if not os.path.exists(os.path.dirname(d) + "/cpu.rt_runtime_us") and \
                not os.path.exists(f"{d}/cpu.rt_runtime_us"):
            raise _fail(f"{f}.realtimeRuntime", "this kernel has no realtime group "
                                                "scheduling (CONFIG_RT_GROUP_SCHED)")
        if c.realtime_period:
            p.write(d, "cpu.rt_period_us", str(c.realtime_period), f"{f}.realtimePeriod",
                    retry_einval=bool(c.realtime_runtime))
        if c.realtime_runtime:
            p.write(d, "cpu.rt_runtime_us", str(c.realtime_runtime), f"{f}.realtimeRuntime")


def _cpuset(p: _Plan, res: Resources) -> None:
    c = res.cpu
    if c is None or not (c.cpus or c.mems):
        return
    f = f"{R}.cpu"
    for key, value in (("cpus", c.cpus), ("mems", c.mems)):
        if not value:
            continue
        try:
            wanted = parse_list(value)
        except ValueError as exc:
            raise _fail(f"{f}.{key}", f"invalid list {value!r} (e.g. 0-3,5)") from exc
        host = set(host_list(key))
        outside = sorted(set(wanted) - host)
        if outside:
            what = "cpus" if key == "cpus" else "memory nodes"
            raise _fail(f"{f}.{key}", f"{value!r} names {what} the host does not have "
                                      f"({','.join(map(str, outside))})")
    if p.v2:
        d = p.v2dir("cpuset", f, "a cpuset")
    else:
        d = p.v1dir("cpuset", f, "a cpuset")
    if c.cpus:
        p.write(d, "cpuset.cpus", c.cpus, f"{f}.cpus")
    if c.mems:
        p.write(d, "cpuset.mems", c.mems, f"{f}.mems")


def _pids(p: _Plan, res: Resources) -> None:
    if res.pids is None or res.pids.limit is None:
        return
    f = f"{R}.pids.limit"
    limit = res.pids.limit
    if limit < -1:
        raise _fail(f, f"{limit} is negative (use -1 for no limit)")
    d = p.v2dir("pids", f, "a pids limit") if p.v2 else p.v1dir("pids", f, "a pids limit")
    # runtime-spec 1.3: 0 is a real limit (runc 1.4 too), only -1 means none
    p.write(d, "pids.max", str(limit) if limit >= 0 else "max", f)


def _dev_restore(key: str, fmt: str) -> Callable[[str], str | None]:
    """Restore a per-device line of a keyed file: the old value, or the file's 'none'."""
    def restore(old: str) -> str | None:
        for line in old.splitlines():
            if line.startswith(key + " "):
                return line
        return f"{key} {fmt}"
    return restore


def _io_max_restore(key: str, field: str) -> Callable[[str], str | None]:
    def restore(old: str) -> str | None:
        for line in old.splitlines():
            if line.startswith(key + " "):
                for item in line.split()[1:]:
                    if item.startswith(field + "="):
                        return f"{key} {item}"
        return f"{key} {field}=max"
    return restore


def _blkio(p: _Plan, res: Resources) -> None:
    b = res.block_io
    if b is None:
        return
    f = f"{R}.blockIO"
    if b.weight and not 10 <= b.weight <= 1000:
        raise _fail(f"{f}.weight", f"{b.weight} out of range [10, 1000]")
    if b.leaf_weight and not 10 <= b.leaf_weight <= 1000:
        raise _fail(f"{f}.leafWeight", f"{b.leaf_weight} out of range [10, 1000]")
    throttles = (("throttleReadBpsDevice", b.throttle_read_bps_device, "read_bps_device",
                  "rbps"),
                 ("throttleWriteBpsDevice", b.throttle_write_bps_device, "write_bps_device",
                  "wbps"),
                 ("throttleReadIOPSDevice", b.throttle_read_iops_device, "read_iops_device",
                  "riops"),
                 ("throttleWriteIOPSDevice", b.throttle_write_iops_device,
                  "write_iops_device", "wiops"))
    for i, wd in enumerate(b.weight_device):
        _check_dev(f"{f}.weightDevice[{i}]", wd.major, wd.minor)
        for name in ("weight", "leaf_weight"):
            v = getattr(wd, name)
            if v and not 10 <= v <= 1000:
                raise _fail(f"{f}.weightDevice[{i}].{name}", f"{v} out of range [10, 1000]")
    for key, lst, _v1, _v2 in throttles:
        for i, td in enumerate(lst):
            _check_dev(f"{f}.{key}[{i}]", td.major, td.minor)
    wants = (b.weight or b.leaf_weight or b.weight_device
             or any(lst for _k, lst, _a, _b in throttles))
    if not wants:
        return
    if p.v2:
        d = p.v2dir("io", f, "a block I/O limit")
        if b.leaf_weight or any(wd.leaf_weight for wd in b.weight_device):
            raise _fail(f"{f}.leafWeight", "cgroup v2 has no leaf weights")
        bfq = os.path.exists(f"{d}/io.bfq.weight")
        if b.weight:
            if bfq:
                p.write(d, "io.bfq.weight", str(b.weight), f"{f}.weight")
            else:
                p.write(d, "io.weight", str(blkio_to_io_weight(b.weight)), f"{f}.weight")
        for i, wd in enumerate(b.weight_device):
            if wd.weight:
                key = f"{wd.major}:{wd.minor}"
                if bfq:
                    p.write(d, "io.bfq.weight", f"{key} {wd.weight}",
                            f"{f}.weightDevice[{i}]", restore=_dev_restore(key, "default"))
                else:
                    p.write(d, "io.weight", f"{key} {blkio_to_io_weight(wd.weight)}",
                            f"{f}.weightDevice[{i}]", restore=_dev_restore(key, "default"))
        for jkey, lst, _v1name, v2name in throttles:
            for i, td in enumerate(lst):
                key = f"{td.major}:{td.minor}"
                p.write(d, "io.max", f"{key} {v2name}={td.rate or 'max'}", f"{f}.{jkey}[{i}]",
                        restore=_io_max_restore(key, v2name))
        return
    d = p.v1dir("blkio", f, "a block I/O limit")

    def exists(name: str) -> bool:
        return os.path.exists(f"{d}/{name}") or (
            not os.path.isdir(d) and os.path.exists(f"{os.path.dirname(d)}/{name}"))

    # CFQ's files when that scheduler exists, else BFQ's (kernels since 5.0 have no CFQ)
    weight_file = "blkio.weight" if exists("blkio.weight") else "blkio.bfq.weight"
    wdev_file = ("blkio.weight_device" if exists("blkio.weight_device")
                 else "blkio.bfq.weight_device")
    if b.weight:
        p.write(d, weight_file, str(b.weight), f"{f}.weight")
    if b.leaf_weight:
        if not exists("blkio.leaf_weight") and os.path.isdir(d):
            raise _fail(f"{f}.leafWeight", "leaf weights need the CFQ I/O scheduler, which "
                                           "this kernel does not have")
        p.write(d, "blkio.leaf_weight", str(b.leaf_weight), f"{f}.leafWeight")
    for i, wd in enumerate(b.weight_device):
        key = f"{wd.major}:{wd.minor}"
        if wd.weight:
            p.write(d, wdev_file, f"{key} {wd.weight}", f"{f}.weightDevice[{i}]",
                    restore=_dev_restore(key, "0"))
        if wd.leaf_weight:
            p.write(d, "blkio.leaf_weight_device", f"{key} {wd.leaf_weight}",
                    f"{f}.weightDevice[{i}].leafWeight", restore=_dev_restore(key, "0"))
    for jkey, lst, v1name, _v2name in throttles:
        for i, td in enumerate(lst):
            key = f"{td.major}:{td.minor}"
            p.write(d, f"blkio.throttle.{v1name}", f"{key} {td.rate}", f"{f}.{jkey}[{i}]",
                    restore=_dev_restore(key, "0"))


def _check_dev(field: str, major: int, minor: int) -> None:
    if not 0 <= major < 2**12:
        raise _fail(f"{field}.major", f"{major} is not a block device major number")
    if not 0 <= minor < 2**20:
        raise _fail(f"{field}.minor", f"{minor} is not a block device minor number")


def _hugetlb(p: _Plan, res: Resources) -> None:
    if not res.hugepage_limits:
        return
    sizes = hugepage_sizes()
    f = f"{R}.hugepageLimits"
    for i, h in enumerate(res.hugepage_limits):
        if h.page_size not in sizes:
            raise _fail(f"{f}[{i}].pageSize", f"{h.page_size!r} is not a huge page size of "
                                              f"this host ({', '.join(sorted(sizes))})")
    v1 = p.mgr.paths().get("hugetlb") if not p.v2 else None
    if v1:
        for i, h in enumerate(res.hugepage_limits):
            p.write(v1, f"hugetlb.{h.page_size}.limit_in_bytes", str(h.limit), f"{f}[{i}]")
            if os.path.exists(f"{v1}/hugetlb.{h.page_size}.rsvd.limit_in_bytes"):
                p.write(v1, f"hugetlb.{h.page_size}.rsvd.limit_in_bytes", str(h.limit),
                        f"{f}[{i}]")
        return
    d = p.v2dir("hugetlb", f, "a huge page limit")
    for i, h in enumerate(res.hugepage_limits):
        p.write(d, f"hugetlb.{h.page_size}.max", str(h.limit), f"{f}[{i}]")
        # the reservation limit too, when the kernel has it (runc does the same)
        p.write(d, f"hugetlb.{h.page_size}.rsvd.max", str(h.limit), f"{f}[{i}]",
                restore=_optional)


def _optional(old: str) -> str | None:
    return old.strip() or None


def _network(p: _Plan, res: Resources) -> None:
    n = res.network
    if n is None or (n.class_id is None and not n.priorities):
        return
    f = f"{R}.network"
    if p.v2:
        raise _fail(f, "cgroup v2 has no net_cls/net_prio controllers (use eBPF or "
                       "nftables on the cgroup path instead)")
    if n.class_id is not None:
        d = p.v1dir("net_cls", f"{f}.classID", "a network class id")
        p.write(d, "net_cls.classid", str(n.class_id), f"{f}.classID")
    if n.priorities:
        d = p.v1dir("net_prio", f"{f}.priorities", "network priorities")
        for i, pr in enumerate(n.priorities):
            if not pr.name or "/" in pr.name or " " in pr.name:
                raise _fail(f"{f}.priorities[{i}].name", f"invalid interface name {pr.name!r}")
            p.write(d, "net_prio.ifpriomap", f"{pr.name} {pr.priority}",
                    f"{f}.priorities[{i}]", restore=_dev_restore(pr.name, "0"))


def _rdma(p: _Plan, res: Resources) -> None:
    if not res.rdma:
        return
    f = f"{R}.rdma"
    if p.v2 or ("rdma" not in p.mgr.paths() and p.mgr.unified()
                and "rdma" in p.available2()):
        d = p.v2dir("rdma", f, "an RDMA limit")
    else:
        d = p.v1dir("rdma", f, "an RDMA limit")
    for dev, lim in res.rdma.items():
        if not dev or " " in dev or "/" in dev:
            raise _fail(f"{f}.{dev}", f"invalid RDMA device name {dev!r}")
        parts = []
        if lim.hca_handles is not None:
            parts.append(f"hca_handle={lim.hca_handles}")
        if lim.hca_objects is not None:
            parts.append(f"hca_object={lim.hca_objects}")
        if parts:
            p.write(d, "rdma.max", f"{dev} {' '.join(parts)}", f"{f}.{dev}",
                    restore=_dev_restore(dev, "hca_handle=max hca_object=max"))


def _unified(p: _Plan, res: Resources) -> None:
    if not res.unified:
        return
    f = f"{R}.unified"
    if not p.mgr.unified():
        raise _fail(f, "unified (cgroup v2) settings need a cgroup v2 tree, which this host "
                       "does not have")
    for key, value in res.unified.items():
        field = f"{f}.{key}"
        if not key or "/" in key or key.startswith(".") or "." not in key:
            raise _fail(field, f"invalid cgroup v2 file name {key!r}")
        ctrl = key.split(".", 1)[0]
        if ctrl == "cgroup":
            if key in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control",
                       "cgroup.kill", "cgroup.freeze"):
                raise _fail(field, f"{key} is managed by the runtime, not a resource")
            d = p.mgr.unified() or ""
        else:
            if not p.v2 and ctrl in p.mgr.paths():
                raise _fail(field, f"the {ctrl} controller is on cgroup v1 on this host; "
                                   "set it with the v1 fields of linux.resources")
            d = p.v2dir(ctrl, field, f"{key}")
        p.write(d, key, value, field, restore=_optional)


def _devices(p: _Plan, rules: list[DeviceRule],
             linux_device_paths: tuple[str, ...] | list[str]) -> None:
    from contain.cgroups.devices import apply_v1, apply_v2, fold, rules_from_spec

    mgr = p.mgr
    if mgr.rootless or _in_user_namespace():
        return  # device cgroups cannot be changed from a user namespace (runc skips too)
    state = fold(rules_from_spec(rules, linux_device_paths))
    f = f"{R}.devices"
    v1 = mgr.paths().get("devices")
    if v1 and not p.v2:
        p.ops.append(Op(v1, "devices.*", "", f, restore=False,
                        action=lambda: apply_v1(v1, state)))
        return
    u = mgr.unified()
    if not u:
        raise _fail(f, "device rules need the devices controller or cgroup v2")
    p.ops.append(Op(u, "(bpf device program)", "", f, restore=False,
                    action=lambda: apply_v2(u, state)))


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as fh:
            first = fh.readline().split()
    except OSError:
        return False
    return first[:3] != ["0", "0", "4294967295"]


# -- applying ------------------------------------------------------------------------------

def apply(mgr: Manager, ops: list[Op]) -> None:
    """Run *ops*; on a failure, restore what was written and raise naming the field."""
    done: list[Op] = []
    deferred: list[Op] = []
    try:
        for op in ops:
            try:
                _run(op)
                done.append(op)
            except OSError as exc:
                if op.retry_einval and exc.errno == errno.EINVAL:
                    deferred.append(op)
                    continue
                raise _op_error(mgr, op, exc) from exc
        for op in deferred:
            try:
                _run(op)
                done.append(op)
            except OSError as exc:
                raise _op_error(mgr, op, exc) from exc
    except BaseException:
        for op in reversed(done):
            _undo(op)
        raise


def _run(op: Op) -> None:
    if op.action is not None:
        op.action()
        return
    if op.restore is not False and op.old is None:
        try:
            op.old = read_text(op.dir, op.name)
        except OSError:
            op.old = None
    write_text(op.dir, op.name, op.value)


def _undo(op: Op) -> None:
    if op.action is not None or op.old is None or op.restore is False:
        return
    value = op.old.strip() if op.restore is True else op.restore(op.old)
    if not value:
        return
    try:
        write_text(op.dir, op.name, value)
    except OSError:
        pass


def _op_error(mgr: Manager, op: Op, exc: OSError) -> ContainError:
    if op.action is not None:
        return SpecError(op.field, f"cannot apply ({exc.strerror or exc})")
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        reason = f"{op.name} does not exist (the kernel lacks this knob)"
    elif exc.errno == errno.EBUSY and op.name.startswith("memory."):
        usage = read_int(op.dir, "memory.usage_in_bytes", 0)
        reason = f"the current usage ({usage}) is above it"
    elif exc.errno == errno.EINVAL:
        reason = "the kernel rejected the value (Invalid argument)"
    return SpecError(op.field, f"cannot set {op.name} to {op.value!r}: {reason}")

