"""The cgroup v2 back end.

Two kinds of tests, each saying which in its docstring:
- REAL: against this machine's cgroup2 tree at /sys/fs/cgroup/unified (hybrid host: the
  tree offers only hugetlb, but the core files, cgroup.freeze/cgroup.kill, cpu.stat and
  the eBPF device hook are all real kernel);
- FAKE: a temporary directory laid out like a v2 cgroup (the files the kernel makes,
  with their initial contents), for the controllers this host has on v1 only. They check
  which file gets which value, the v1->v2 conversions and the refusals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import unique_id
from contain.cgroups import Manager
from contain.cgroups.devices import apply_v2, fold, rules_from_spec
from contain.cgroups.resources import blkio_to_io_weight, shares_to_weight, swap_to_v2
from contain.errors import SpecError
from contain.linux import bpf
from contain.spec.config import DeviceRule, Resources

UNIFIED = Path("/sys/fs/cgroup/unified")
BUSYBOX = "/bin/busybox" if os.path.exists("/bin/busybox") else "/usr/bin/busybox"


def res(obj: dict) -> Resources:
    return Resources.decode(obj, "$.linux.resources")


# -- the fake tree -------------------------------------------------------------------------

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
LEAF_FILES = {
    "cgroup.controllers": CONTROLLERS, "cgroup.subtree_control": "", "cgroup.procs": "",
    "cgroup.freeze": "0", "cgroup.events": "populated 0\nfrozen 0", "cgroup.kill": "",
    "cgroup.type": "domain",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\n"
                "nr_throttled 3\nthrottled_usec 700\n",
    "cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.effective": "0-1",
    "cpuset.mems.effective": "0",
    "memory.max": "max", "memory.low": "0", "memory.high": "max", "memory.swap.max": "max",
    "memory.current": "4096", "memory.peak": "8192", "memory.swap.current": "0",
    "memory.events": "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
    "memory.swap.events": "high 0\nmax 0\nfail 0\n",
    "memory.stat": "anon 4096\nfile 12288\nkernel 0\n",
    "pids.max": "max", "pids.current": "3",
    "io.weight": "default 100", "io.max": "", "io.stat": "8:0 rbytes=4096 wbytes=8192 "
                                                        "rios=1 wios=2 dbytes=0 dios=0\n",
    "hugetlb.2MB.max": "max", "hugetlb.2MB.rsvd.max": "max", "hugetlb.2MB.current": "0",
    "hugetlb.2MB.events": "max 0\n", "rdma.max": "",
}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Manager]:
    """FAKE: a v2 tree root/ctr with the kernel's files; a Manager of layout v2 on it."""
    root = tmp_path / "cgroup2"
    leaf = root / "ctr"
    leaf.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(CONTROLLERS)
    (root / "cgroup.subtree_control").write_text("")
    for name, content in LEAF_FILES.items():
        (leaf / name).write_text(content)
    yield Manager("v2", {"unified": str(leaf)}, unified_mount=str(root))


def _f(mgr: Manager, name: str) -> str:
    return Path(mgr.paths()["unified"], name).read_text().strip()


def test_conversions() -> None:
    """runc/crun's v1->v2 maps: shares->weight (2->1, 1024->100, 262144->10000),
    blkio weight [10,1000] -> io.weight [1,10000], swap = (memory+swap) - memory."""
    assert [shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 100, 10000]
    assert shares_to_weight(512) < 100 < shares_to_weight(2048)
    assert [blkio_to_io_weight(w) for w in (10, 500, 1000)] == [1, 4950, 10000]
    assert swap_to_v2(200, 100, "$") == 100
    assert swap_to_v2(0, -1, "$") == -1
    assert swap_to_v2(-1, 100, "$") == -1
    with pytest.raises(SpecError):
        swap_to_v2(50, 100, "$")
    with pytest.raises(SpecError):
        swap_to_v2(50, 0, "$")


def test_fake_create_enables_controllers(fake: Manager) -> None:
    """FAKE: create on v2 writes +controller for everything the parent offers (runc)."""
    fake.create()
    root = Path(fake.unified_mount or "")
    assert (root / "cgroup.subtree_control").read_text().split() == \
        ["+" + c for c in CONTROLLERS.split()]


def test_fake_all_files(fake: Manager) -> None:
    """FAKE: every resource lands in its v2 file with the v2 value."""
    fake.set(res({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
        "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "burst": 1000, "idle": 0,
                "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [
            {"major": 8, "minor": 0, "rate": 1048576}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}],
        "rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 100}},
        "unified": {"memory.high": "50331648"},
    }), skip_devices=True)
    assert _f(fake, "memory.max") == str(64 << 20)
    assert _f(fake, "memory.swap.max") == str(64 << 20)  # 128M total - 64M memory
    assert _f(fake, "memory.low") == str(32 << 20)
    assert _f(fake, "memory.high") == "50331648"
    assert _f(fake, "cpu.weight") == "100"
    assert _f(fake, "cpu.max") == "50000 200000"
    assert _f(fake, "cpu.max.burst") == "1000"
    assert _f(fake, "cpu.idle") == "0"
    assert _f(fake, "cpuset.cpus") == "0" and _f(fake, "cpuset.mems") == "0"
    assert _f(fake, "pids.max") == "42"
    assert _f(fake, "io.weight") == "4950"
    assert _f(fake, "io.max") == "8:0 rbps=1048576"
    assert _f(fake, "hugetlb.2MB.max") == str(4 << 21)
    assert _f(fake, "hugetlb.2MB.rsvd.max") == str(4 << 21)
    assert _f(fake, "rdma.max") == "mlx5_0 hca_handle=3 hca_object=100"


def test_fake_unlimited_values(fake: Manager) -> None:
    """FAKE: -1 is "max"; unlimited memory without swap means unlimited swap; a quota of
    -1 keeps the period."""
    Path(fake.paths()["unified"], "memory.swap.max").write_text("0")
    fake.set(res({"memory": {"limit": -1}, "cpu": {"quota": -1, "period": 50000},
                  "pids": {"limit": 0}}), skip_devices=True)
    assert _f(fake, "memory.max") == "max"
    assert _f(fake, "memory.swap.max") == "max"
    assert _f(fake, "cpu.max") == "max 50000"
    assert _f(fake, "pids.max") == "max"


@pytest.mark.parametrize(("obj", "field"), [
    ({"memory": {"swappiness": 10}}, "$.linux.resources.memory.swappiness"),
    ({"memory": {"disableOOMKiller": True}}, "$.linux.resources.memory.disableOOMKiller"),
    ({"memory": {"useHierarchy": False}}, "$.linux.resources.memory.useHierarchy"),
    ({"cpu": {"realtimeRuntime": 1000}}, "$.linux.resources.cpu.realtimeRuntime"),
    ({"network": {"classID": 7}}, "$.linux.resources.network"),
    ({"blockIO": {"leafWeight": 100}}, "$.linux.resources.blockIO.leafWeight"),
    ({"unified": {"cgroup.procs": "1"}}, "$.linux.resources.unified.cgroup.procs"),
    ({"unified": {"../memory.max": "1"}}, "$.linux.resources.unified.../memory.max"),
    ({"unified": {"nosuch.knob": "1"}}, "$.linux.resources.unified.nosuch.knob"),
])
def test_fake_refusals(fake: Manager, obj: dict, field: str) -> None:
    """FAKE: what v2 has no file for is refused, naming the field, nothing written."""
    before = {n: _f(fake, n) for n in LEAF_FILES}
    with pytest.raises(SpecError) as info:
        fake.set(res(obj), skip_devices=True)
    assert info.value.path == field
    assert {n: _f(fake, n) for n in LEAF_FILES} == before


def test_fake_missing_controller(fake: Manager) -> None:
    """FAKE: a controller the tree does not offer is refused before any write."""
    Path(fake.paths()["unified"], "cgroup.controllers").write_text("memory pids")
    Path(fake.unified_mount or "", "cgroup.controllers").write_text("memory pids")
    with pytest.raises(SpecError, match="io controller") as info:
        fake.set(res({"pids": {"limit": 5}, "blockIO": {"weight": 100}}), skip_devices=True)
    assert info.value.path == "$.linux.resources.blockIO"
    assert _f(fake, "pids.max") == "max"


def test_fake_rollback(fake: Manager) -> None:
    """FAKE: when a write fails (a knob file missing), the earlier writes are undone."""
    os.unlink(Path(fake.paths()["unified"], "hugetlb.2MB.max"))
    with pytest.raises(SpecError) as info:
        fake.set(res({"memory": {"limit": 1 << 20}, "pids": {"limit": 9},
                      "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}),
                 skip_devices=True)
    assert info.value.path == "$.linux.resources.hugepageLimits[0]"
    assert _f(fake, "memory.max") == "max"
    assert _f(fake, "pids.max") == "max"


def test_fake_check_before_update(fake: Manager) -> None:
    """FAKE: checkBeforeUpdate compares with memory.current."""
    with pytest.raises(SpecError, match="current usage"):
        fake.set(res({"memory": {"limit": 1024, "checkBeforeUpdate": True}}),
                 skip_devices=True)


def test_fake_stats(fake: Manager) -> None:
    """FAKE: v2 stat files -> runc's stats (usec -> ns, memory.events counters)."""
    s = fake.stats()
    assert s.cpu.usage.total == 1_500_000 and s.cpu.usage.user == 1_000_000
    assert s.cpu.throttling.throttled_periods == 3
    assert s.cpu.throttling.throttled_time == 700_000
    assert s.memory.usage.usage == 4096 and s.memory.usage.max == 8192
    assert s.memory.usage.limit == 2**64 - 1
    assert s.memory.usage.failcnt == 5
    assert (s.memory.oom_events, s.memory.oom_kill) == (2, 1)
    assert s.memory.cache == 12288
    assert (s.pids.current, s.pids.limit) == (3, 0)
    assert [(e.op, e.value) for e in s.blkio.io_service_bytes_recursive] == \
        [("Read", 4096), ("Write", 8192)]
    assert s.cpuset.cpus == [0, 1]
    data = s.to_json()
    assert data["memory"]["oomKill"] == 1
    assert data["pids"] == {"current": 3}


def test_fake_freezer_state(fake: Manager) -> None:
    """FAKE: freeze writes cgroup.freeze and waits for cgroup.events to say frozen."""
    Path(fake.paths()["unified"], "cgroup.events").write_text("populated 1\nfrozen 1\n")
    fake.freeze()
    assert _f(fake, "cgroup.freeze") == "1"
    assert fake.is_frozen()


# -- the real cgroup2 tree -----------------------------------------------------------------

needs_unified = pytest.mark.skipif(not (UNIFIED / "cgroup.controllers").exists(),
                                   reason="no cgroup2 tree at /sys/fs/cgroup/unified")


@pytest.fixture
def real() -> Iterator[Manager]:
    """REAL: a cgroup in this host's cgroup2 tree, driven as a pure v2 Manager; the
    controllers create enables at the tree's root are switched off again afterwards."""
    before = (UNIFIED / "cgroup.subtree_control").read_text().split()
    mgr = Manager("v2", {"unified": str(UNIFIED / unique_id("ctest-"))},
                  unified_mount=str(UNIFIED))
    mgr.create()
    try:
        yield mgr
    finally:
        mgr.destroy()
        for c in (UNIFIED / "cgroup.subtree_control").read_text().split():
            if c not in before:
                try:
                    (UNIFIED / "cgroup.subtree_control").write_text("-" + c)
                except OSError:
                    pass


def _start(mgr: Manager, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, preexec_fn=lambda: mgr.join(0),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@needs_unified
def test_real_hugetlb_limit(real: Manager) -> None:
    """REAL: hugetlb, the one controller of this tree: limits written to hugetlb.*.max."""
    sizes = [e.name for e in os.scandir("/sys/kernel/mm/hugepages")]
    if "hugepages-2048kB" not in sizes:
        pytest.skip("no 2MB huge pages")
    real.set(res({"hugepageLimits": [{"pageSize": "2MB", "limit": 8 << 20}]}),
             skip_devices=True)
    assert _f(real, "hugetlb.2MB.max") == str(8 << 20)
    assert real.stats().hugetlb["2MB"].usage == 0
    with pytest.raises(SpecError, match="memory controller"):
        real.validate(res({"memory": {"limit": 1 << 20}}))


@needs_unified
def test_real_freeze_kill_stats(real: Manager) -> None:
    """REAL: cgroup.freeze stops a busy loop (cpu.stat stops advancing), thaw resumes it,
    cgroup.kill ends it; pids() and cpu stats come from the real files."""
    p = _start(real, [BUSYBOX, "sh", "-c", "while :; do :; done"])
    try:
        deadline = time.monotonic() + 10
        while p.pid not in real.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert real.pids() == [p.pid]
        time.sleep(0.2)
        real.freeze()
        assert real.is_frozen()
        u0 = real.stats().cpu.usage.total
        time.sleep(0.4)
        assert real.stats().cpu.usage.total - u0 < 5_000_000
        real.thaw()
        assert not real.is_frozen()
        u1 = real.stats().cpu.usage.total
        time.sleep(0.4)
        assert real.stats().cpu.usage.total - u1 > 20_000_000
        real.kill_all(signal.SIGKILL)  # cgroup.kill
        assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


@needs_unified
def test_real_ebpf_device_filter(real: Manager, tmp_path: Path) -> None:
    """REAL: the generated BPF_PROG_TYPE_CGROUP_DEVICE program, loaded with bpf() and
    attached to a real cgroup2 directory: deny-all + runc's defaults lets a 1:3 node
    open and refuses a 1:11 node; a read-only rule allows reading, not writing; a second
    set replaces the program instead of stacking a new one."""
    null = tmp_path / "null"
    kmsg = tmp_path / "kmsg"
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(kmsg, 0o600 | 0o020000, os.makedev(1, 11))

    def try_open(path: Path, flags: str) -> str:
        code = (f"import os\ntry:\n    os.close(os.open({str(path)!r}, os.{flags}))\n"
                "    print('ok')\nexcept OSError as e:\n    print(e.errno)\n")
        out = subprocess.run([sys.executable, "-c", code], preexec_fn=lambda: real.join(0),
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()

    d = real.paths()["unified"]
    real.set(res({"devices": [{"allow": False, "access": "rwm"}]}))
    assert try_open(null, "O_RDWR") == "ok"
    assert try_open(kmsg, "O_RDONLY") == "1"
    real.set(res({"devices": [{"allow": False, "access": "rwm"},
                              {"allow": True, "type": "c", "major": 1, "minor": 11,
                               "access": "r"}]}))
    assert try_open(kmsg, "O_RDONLY") == "ok"
    assert try_open(kmsg, "O_WRONLY") == "1"
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(bpf.prog_query(fd, bpf.BPF_CGROUP_DEVICE)) == 1
    finally:
        os.close(fd)


@needs_unified
def test_real_ebpf_blacklist(real: Manager, tmp_path: Path) -> None:
    """REAL: an allow-all list with one deny: only that device (and only the denied
    access: any requested bit in the rule denies) is refused."""
    kmsg = tmp_path / "kmsg"
    os.mknod(kmsg, 0o600 | 0o020000, os.makedev(1, 11))
    rules = [DeviceRule.decode(r, "$") for r in (
        {"allow": True, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "w"})]
    apply_v2(real.paths()["unified"], fold(rules_from_spec(rules, defaults=False)))
    code = (f"import os\nfor fl in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):\n    try:\n"
            f"        os.close(os.open({str(kmsg)!r}, fl)); print('ok')\n"
            "    except OSError as e:\n        print(e.errno)\n")
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=lambda: real.join(0),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["ok", "1", "1"]


def test_program_shape() -> None:
    """The program is whole instructions and ends with the default verdict."""
    state = fold(rules_from_spec([DeviceRule.decode({"allow": False, "access": "rwm"}, "$")]))
    prog = state.program()
    assert len(prog) % 8 == 0
    assert prog[-8:] == bpf.insn(bpf.BPF_JMP_EXIT)
    assert prog[-16:-8] == bpf.insn(bpf.BPF_ALU64_MOV_K, dst=0, imm=0)


@needs_unified
def test_real_hybrid_manager_hugetlb() -> None:
    """REAL: the hybrid Manager (v1 controllers + this cgroup2 tree) puts huge page limits
    in the cgroup2 directory, enabling hugetlb down the path only because it is asked
    for; every directory is gone after destroy."""
    from contain.cgroups import new_manager

    if not os.path.exists("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages")
    before = (UNIFIED / "cgroup.subtree_control").read_text().split()
    mgr = new_manager(None, unique_id("ctest-"))
    assert mgr.layout == "hybrid"
    limits = res({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}],
                  "pids": {"limit": 10}})
    mgr.validate(limits)
    mgr.create()
    try:
        mgr.set(limits)
        assert _f(mgr, "hugetlb.2MB.max") == str(4 << 21)
        assert Path(mgr.paths()["pids"], "pids.max").read_text().strip() == "10"
        assert "2MB" in mgr.stats().to_json()["hugetlb"]
    finally:
        mgr.destroy()
        for c in (UNIFIED / "cgroup.subtree_control").read_text().split():
            if c not in before:
                (UNIFIED / "cgroup.subtree_control").write_text("-" + c)
    assert not any(os.path.exists(p) for p in mgr.paths().values())
