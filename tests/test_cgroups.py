"""The cgroup Manager on this host's real hierarchies (hybrid: v1 controllers plus a
cgroup2 tree holding only hugetlb). Every test here runs against the kernel: real
directories, real limits, real processes killed by real OOMs."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import unique_id, wait_for
from contain.cgroups import Manager, detect_layout, load_manager, new_manager
from contain.cgroups.devices import fold, rules_from_spec, state_from_v1_list
from contain.cgroups.events import OOMWatcher
from contain.errors import ContainError, SpecError
from contain.spec.config import DeviceRule, Resources

BUSYBOX = "/bin/busybox" if os.path.exists("/bin/busybox") else "/usr/bin/busybox"

pytestmark = pytest.mark.skipif(detect_layout() == "v2", reason="needs v1 controllers")


def res(obj: dict) -> Resources:
    return Resources.decode(obj, "$.linux.resources")


@pytest.fixture
def make_mgr() -> Iterator[Callable[..., Manager]]:
    """Managers with unique names, destroyed (and their processes killed) afterwards."""
    made: list[Manager] = []
    procs: list[subprocess.Popen[bytes]] = []

    def make(path: str | None = None, create: bool = True) -> Manager:
        mgr = new_manager(path, unique_id("ctest-"))
        made.append(mgr)
        if create:
            mgr.create()
        return mgr

    make.procs = procs  # type: ignore[attr-defined]
    yield make
    for mgr in made:
        try:
            mgr.destroy()
        except ContainError:
            pass
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def spawn(make_mgr: Callable[..., Manager], mgr: Manager, argv: list[str],
          **kw: object) -> subprocess.Popen[bytes]:
    """Start *argv* already inside *mgr* (the child joins before it execs)."""
    p = subprocess.Popen(argv, preexec_fn=lambda: mgr.join(0), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    make_mgr.procs.append(p)  # type: ignore[attr-defined]
    return p


def _read(d: str, name: str) -> str:
    return Path(d, name).read_text().strip()


# -- paths ---------------------------------------------------------------------------------

def test_warming_starts_before_os_and_the_manager() -> None:
    """create and run start the warming thread first thing: its first write waits for a
    grace period that the rest of the command then overlaps (docs/performance.md, the
    third pass), so neither the package nor warm.py may import os (~1 ms) or the
    manager before it; the package's names still come on first use. The thread is
    running (and stops) as the command's block says."""
    from conftest import SRC

    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from contain.cgroups import warm\n"
            "early = sorted(m for m in ('os', 'contain.cgroups.manager', 'contain.cgroups.fs') "
            "if m in sys.modules)\n"
            "import posix\n"
            "with warm.warming():\n"
            "    during = len(posix.listdir('/proc/self/task'))\n"
            "from contain.cgroups import Manager, UNIFIED, detect_layout, new_manager\n"
            "print(early, during, Manager.__module__, UNIFIED, detect_layout() in "
            "('v1', 'v2', 'hybrid'), new_manager(None, 'x').paths()['pids'].endswith('/x'))\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.stdout.split() == ["[]", "2", "contain.cgroups.manager", "unified", "True",
                                  "True"], out.stdout + out.stderr


def test_layout_is_hybrid_here() -> None:
    """This machine: v1 controllers plus /sys/fs/cgroup/unified."""
    assert detect_layout() == "hybrid"
    mgr = new_manager(None, "x")
    assert "memory" in mgr.paths() and "unified" in mgr.paths()
    assert mgr.paths()["unified"].startswith("/sys/fs/cgroup/unified/")


def test_path_forms() -> None:
    """Absolute paths hang from each mount; relative ones (and the default, the id) from
    the runtime's own cgroup in each hierarchy, as runc's cgroupfs driver does."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _h, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            own[c] = path
    absolute = new_manager("/a/b", "id1").paths()
    assert absolute["pids"] == "/sys/fs/cgroup/pids/a/b"
    assert absolute["memory"] == "/sys/fs/cgroup/memory/a/b"
    default = new_manager(None, "id1").paths()
    assert default["memory"] == f"/sys/fs/cgroup/memory{own['memory'].rstrip('/')}/id1"
    relative = new_manager("x/y", "id1").paths()
    assert relative["pids"] == f"/sys/fs/cgroup/pids{own['pids'].rstrip('/')}/x/y"
    assert new_manager("/a/./b//c/../d", "id").paths()["pids"] == "/sys/fs/cgroup/pids/a/b/d"


@pytest.mark.parametrize("bad", ["/..", "/a/../../b", "../x", "a/../.."])
def test_path_escaping_refused(bad: str) -> None:
    with pytest.raises(ContainError, match="escapes"):
        new_manager(bad, "id")


def test_systemd_form_refused() -> None:
    with pytest.raises(ContainError, match="systemd"):
        new_manager("system.slice:docker:1234", "id")


def test_create_join_destroy(make_mgr: Callable[..., Manager]) -> None:
    """Directories in every hierarchy (cpuset filled from the parent), the process in all
    of them, and after destroy nothing left and the process killed."""
    mgr = make_mgr()
    for d in mgr.paths().values():
        assert os.path.isdir(d)
    assert _read(mgr.paths()["cpuset"], "cpuset.cpus")
    p = spawn(make_mgr, mgr, [BUSYBOX, "sleep", "60"])
    deadline = time.monotonic() + 10
    while p.pid not in mgr.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mgr.pids() == [p.pid]
    cg = Path(f"/proc/{p.pid}/cgroup").read_text()
    for ctrl in ("memory", "pids", "freezer", "devices", "cpuset"):
        assert mgr.paths()[ctrl].endswith(
            next(line.split(":", 2)[2] for line in cg.splitlines()
                 if ctrl in line.split(":")[1].split(",")))
    mgr.destroy()
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in mgr.paths().values())
    assert not mgr.exists()


def test_nested_path_removes_created_parents(make_mgr: Callable[..., Manager]) -> None:
    """An absolute path with new parents: destroy removes what create made, no more."""
    top = f"/{unique_id('ctest-')}"
    mgr = make_mgr(f"{top}/inner/leaf")
    assert os.path.isdir(f"/sys/fs/cgroup/pids{top}/inner/leaf")
    saved = load_manager(mgr.to_json())
    saved.destroy()
    assert not os.path.exists(f"/sys/fs/cgroup/pids{top}")
    assert not os.path.exists(f"/sys/fs/cgroup/memory{top}")


def test_join_existing_cgroup(make_mgr: Callable[..., Manager]) -> None:
    """Two managers on the same path share it (joining an existing cgroup)."""
    path = f"/{unique_id('ctest-')}"
    a = make_mgr(path)
    b = new_manager(path, "other")
    b.create()  # already there: nothing made
    assert b.created == {}
    assert a.paths() == b.paths()


def test_load_manager_roundtrip(make_mgr: Callable[..., Manager]) -> None:
    mgr = make_mgr()
    again = load_manager(mgr.to_json())
    assert again.paths() == mgr.paths()
    assert again.layout == "hybrid"
    assert again.is_frozen() is False


# -- limits --------------------------------------------------------------------------------

def test_memory_limit_oom_kills_and_is_reported(make_mgr: Callable[..., Manager]) -> None:
    """A 32M limit (no swap on top): dd with a 128M buffer is OOM-killed, the v1 eventfd
    fires and the stats count the kill."""
    mgr = make_mgr()
    mgr.set(res({"memory": {"limit": 32 << 20, "swap": 32 << 20}}))
    assert _read(mgr.paths()["memory"], "memory.limit_in_bytes") == str(32 << 20)
    watcher = OOMWatcher(mgr)
    try:
        p = spawn(make_mgr, mgr, [BUSYBOX, "dd", "if=/dev/zero", "of=/dev/null", "bs=128M",
                                  "count=1"])
        assert p.wait(timeout=60) == -signal.SIGKILL
        ready = select.select([watcher.fd], [], [], 10)[0]
        assert ready, "no OOM notification"
        assert watcher.consume() >= 1
    finally:
        watcher.close()
    stats = mgr.stats()
    assert stats.memory.oom_kill >= 1
    assert stats.memory.usage.limit == 32 << 20
    assert stats.memory.usage.max == 32 << 20  # it reached the limit
    assert stats.to_json()["memory"]["oomKill"] >= 1


def test_pids_limit_stops_fork_bomb(make_mgr: Callable[..., Manager]) -> None:
    """pids.max 8: a shell trying to start 40 sleeps gets fork failures, the cgroup never
    holds more than 8 tasks, and the host is fine (we are still here)."""
    mgr = make_mgr()
    mgr.set(res({"pids": {"limit": 8}}))
    p = spawn(make_mgr, mgr, [BUSYBOX, "sh", "-c",
                              "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; "
                              "echo done >&2; sleep 30"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if int(_read(mgr.paths()["pids"], "pids.current")) >= 8:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert int(_read(mgr.paths()["pids"], "pids.current")) <= 8
    events = _read(mgr.paths()["pids"], "pids.events")
    assert int(events.split()[1]) > 0  # "max N": forks refused
    s = mgr.stats()
    assert s.pids.limit == 8 and 1 <= s.pids.current <= 8
    mgr.destroy()
    p.wait(timeout=10)
    assert not mgr.exists()


def _cpu_ns(mgr: Manager) -> int:
    return int(_read(mgr.paths()["cpuacct"], "cpuacct.usage"))


def test_cpu_quota_holds_busy_loop(make_mgr: Callable[..., Manager]) -> None:
    """quota 5ms per 100ms: a busy loop gets at most about a twentieth of a CPU, and is
    throttled. (A small quota, so that even a loaded machine, where the loop gets only a
    few percent of a CPU anyway, lets it reach the quota and be throttled.)"""
    mgr = make_mgr()
    mgr.set(res({"cpu": {"quota": 5000, "period": 100000}}))
    assert _read(mgr.paths()["cpu"], "cpu.cfs_quota_us") == "5000"
    spawn(make_mgr, mgr, [BUSYBOX, "sh", "-c", "while :; do :; done"])
    wait_for(lambda: mgr.stats().cpu.throttling.throttled_periods > 0)
    t0, c0 = time.monotonic(), _cpu_ns(mgr)
    time.sleep(1.5)
    share = (_cpu_ns(mgr) - c0) / 1e9 / (time.monotonic() - t0)
    assert 0 < share < 0.15, share


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cpus")
def test_cpuset_pins(make_mgr: Callable[..., Manager]) -> None:
    mgr = make_mgr()
    mgr.set(res({"cpu": {"cpus": "1", "mems": "0"}}))
    p = spawn(make_mgr, mgr, [BUSYBOX, "sleep", "30"])
    time.sleep(0.2)
    status = Path(f"/proc/{p.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    assert line.split()[1] == "1"
    assert mgr.stats().cpuset.cpus == [1]


def test_freeze_stops_progress_and_thaw_resumes(make_mgr: Callable[..., Manager]) -> None:
    mgr = make_mgr()
    spawn(make_mgr, mgr, [BUSYBOX, "sh", "-c", "while :; do :; done"])
    time.sleep(0.2)
    mgr.freeze()
    assert mgr.is_frozen()
    assert _read(mgr.paths()["freezer"], "freezer.state") == "FROZEN"
    c0 = _cpu_ns(mgr)
    time.sleep(0.5)
    assert _cpu_ns(mgr) - c0 < 5_000_000  # (nothing runs: a few ms of slack)
    mgr.thaw()
    assert not mgr.is_frozen()
    c1 = _cpu_ns(mgr)
    time.sleep(0.5)
    assert _cpu_ns(mgr) - c1 > 20_000_000


def test_kill_all(make_mgr: Callable[..., Manager]) -> None:
    mgr = make_mgr()
    p = spawn(make_mgr, mgr, [BUSYBOX, "sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while len(mgr.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(mgr.pids()) == 3
    mgr.kill_all(signal.SIGKILL)
    assert p.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while mgr.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mgr.pids() == []
    assert not mgr.is_frozen()


# -- devices -------------------------------------------------------------------------------

def _try_open(mgr: Manager, make_mgr: Callable[..., Manager], path: str, flags: str) -> str:
    code = (f"import os\ntry:\n    os.close(os.open({path!r}, os.{flags}))\n    print('ok')\n"
            "except OSError as e:\n    print(e.errno)\n")
    p = subprocess.Popen([sys.executable, "-c", code], preexec_fn=lambda: mgr.join(0),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    make_mgr.procs.append(p)  # type: ignore[attr-defined]
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return out.decode().strip()


def test_device_rules_deny(make_mgr: Callable[..., Manager], tmp_path: Path) -> None:
    """A deny-all config plus runc's defaults: /dev/null-like 1:3 opens, a 1:11 node made
    in a temp dir does not (EPERM); an explicit read rule for it allows reading only."""
    null = tmp_path / "mynull"
    other = tmp_path / "kmsg"
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(other, 0o600 | 0o020000, os.makedev(1, 11))
    mgr = make_mgr()
    mgr.set(res({"devices": [{"allow": False, "access": "rwm"}]}))
    listing = _read(mgr.paths()["devices"], "devices.list")
    assert "c 1:3 rwm" in listing and "a *:* rwm" not in listing
    assert _try_open(mgr, make_mgr, str(null), "O_RDWR") == "ok"
    assert _try_open(mgr, make_mgr, str(other), "O_RDONLY") == "1"  # EPERM
    mgr.set(res({"devices": [{"allow": False, "access": "rwm"},
                             {"allow": True, "type": "c", "major": 1, "minor": 11,
                              "access": "r"}]}))
    assert _try_open(mgr, make_mgr, str(other), "O_RDONLY") == "ok"
    assert _try_open(mgr, make_mgr, str(other), "O_WRONLY") == "1"


def test_device_fold_matches_kernel(make_mgr: Callable[..., Manager]) -> None:
    """What we compute for a rule list is what the kernel's devices.list then says."""
    rules = [DeviceRule.decode(r, "$") for r in (
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 4, "access": "rw"},
        {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"},
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"},
    )]
    state = fold(rules_from_spec(rules))
    mgr = make_mgr()
    mgr.set(res({"devices": [r.to_json() for r in rules]}))
    assert state_from_v1_list(_read(mgr.paths()["devices"], "devices.list")) == state
    assert state.exceptions[("c", 4, -1)] == 2 | 4  # rw
    assert state.exceptions[("c", 1, 5)] == 7  # runc's defaults come last: zero is rwm


# -- validation and whole-or-nothing -------------------------------------------------------

@pytest.mark.parametrize(("obj", "field"), [
    ({"cpu": {"shares": 1}}, "$.linux.resources.cpu.shares"),
    ({"cpu": {"quota": 10}}, "$.linux.resources.cpu.quota"),
    ({"cpu": {"period": 10}}, "$.linux.resources.cpu.period"),
    ({"cpu": {"cpus": "0-4095"}}, "$.linux.resources.cpu.cpus"),
    ({"cpu": {"cpus": "one"}}, "$.linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "7"}}, "$.linux.resources.cpu.mems"),
    ({"memory": {"limit": 64 << 20, "swap": 32 << 20}}, "$.linux.resources.memory.swap"),
    ({"pids": {"limit": -5}}, "$.linux.resources.pids.limit"),
    ({"blockIO": {"weight": 5}}, "$.linux.resources.blockIO.weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 9999, "minor": 0, "rate": 1}]}},
     "$.linux.resources.blockIO.throttleReadBpsDevice[0].major"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]},
     "$.linux.resources.hugepageLimits[0].pageSize"),
    ({"network": {"classID": 1}}, "$.linux.resources.network.classID"),
    ({"rdma": {"mlx5_0": {"hcaHandles": 1}}}, "$.linux.resources.rdma"),
    ({"unified": {"memory.high": "1M"}}, "$.linux.resources.unified.memory.high"),
    ({"unified": {"cgroup.procs": "1"}}, "$.linux.resources.unified.cgroup.procs"),
])
def test_validate_refuses(obj: dict, field: str) -> None:
    """Out-of-range values and what this host cannot enforce (net_cls/net_prio and rdma
    are not mounted here; memory is a v1 controller so unified memory.* is refused)."""
    mgr = new_manager(None, "never-created")
    with pytest.raises(SpecError) as info:
        mgr.validate(res(obj))
    assert info.value.path == field
    assert not mgr.exists()


def test_set_is_whole_or_nothing(make_mgr: Callable[..., Manager]) -> None:
    """A set whose last write fails (a throttle on a device that does not exist) leaves
    the memory limit and cpu shares it had written at their previous values."""
    mgr = make_mgr()
    mgr.set(res({"memory": {"limit": 64 << 20}, "cpu": {"shares": 512}}))
    bad = res({"memory": {"limit": 128 << 20}, "cpu": {"shares": 2048},
               "blockIO": {"throttleReadBpsDevice": [{"major": 250, "minor": 250,
                                                      "rate": 1 << 20}]}})
    with pytest.raises(SpecError) as info:
        mgr.set(bad)
    assert "throttleReadBpsDevice[0]" in info.value.path
    assert _read(mgr.paths()["memory"], "memory.limit_in_bytes") == str(64 << 20)
    assert _read(mgr.paths()["cpu"], "cpu.shares") == "512"


def test_memory_limit_below_usage_refused(make_mgr: Callable[..., Manager]) -> None:
    """checkBeforeUpdate refuses before writing; without it the kernel's EBUSY is named."""
    mgr = make_mgr()
    spawn(make_mgr, mgr, [BUSYBOX, "sh", "-c",
                          "x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 30"])
    time.sleep(0.5)
    with pytest.raises(SpecError, match="current usage") as info:
        mgr.set(res({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
    assert info.value.path == "$.linux.resources.memory.limit"


def test_all_v1_files(make_mgr: Callable[..., Manager]) -> None:
    """Every v1 knob this host has, written where runc writes it."""
    mgr = make_mgr()
    dev = os.stat("/").st_dev
    bdev = f"{os.major(dev)}:{os.minor(dev)}"
    mgr.set(res({
        "memory": {"limit": 100 << 20, "reservation": 50 << 20, "swap": 200 << 20,
                   "swappiness": 10, "disableOOMKiller": False},
        "cpu": {"shares": 256, "quota": 30000, "period": 60000, "burst": 1000, "idle": 0,
                "cpus": "0", "mems": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 300, "throttleWriteBpsDevice": [
            {"major": os.major(dev), "minor": os.minor(dev), "rate": 1 << 20}]},
    }))
    p = mgr.paths()
    assert _read(p["memory"], "memory.limit_in_bytes") == str(100 << 20)
    assert _read(p["memory"], "memory.memsw.limit_in_bytes") == str(200 << 20)
    assert _read(p["memory"], "memory.soft_limit_in_bytes") == str(50 << 20)
    assert _read(p["memory"], "memory.swappiness") == "10"
    assert _read(p["cpu"], "cpu.shares") == "256"
    assert _read(p["cpu"], "cpu.cfs_period_us") == "60000"
    assert _read(p["cpu"], "cpu.cfs_quota_us") == "30000"
    assert _read(p["cpu"], "cpu.cfs_burst_us") == "1000"
    assert _read(p["pids"], "pids.max") == "100"
    assert _read(p["blkio"], "blkio.bfq.weight").split()[-1] == "300"
    assert f"{bdev} {1 << 20}" in _read(p["blkio"], "blkio.throttle.write_bps_device")
    # unlimited again: -1 memory with no swap given means unlimited swap too (runc)
    mgr.set(res({"memory": {"limit": -1}, "pids": {"limit": -1}}))
    assert int(_read(p["memory"], "memory.limit_in_bytes")) > 1 << 60
    assert int(_read(p["memory"], "memory.memsw.limit_in_bytes")) > 1 << 60
    assert _read(p["pids"], "pids.max") == "max"


def test_stats_shape(make_mgr: Callable[..., Manager]) -> None:
    """runc's types.Stats keys, with real numbers in them."""
    mgr = make_mgr()
    mgr.set(res({"memory": {"limit": 64 << 20}, "pids": {"limit": 20}}))
    spawn(make_mgr, mgr, [BUSYBOX, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do "
                                              "i=$((i+1)); done; sleep 30"])
    time.sleep(0.5)
    data = mgr.stats().to_json()
    assert set(data) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                         "network_interfaces"}
    assert data["cpu"]["usage"]["total"] > 0
    assert len(data["cpu"]["usage"]["percpu"]) == os.cpu_count()
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["usage"]["usage"] > 0
    assert "cache" in data["memory"]["raw"]
    assert data["pids"] == {"current": 2, "limit": 20} or data["pids"]["limit"] == 20
    assert data["cpuset"]["cpus"] == list(range(os.cpu_count() or 1))
