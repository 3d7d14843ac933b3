"""The cgroup v2 back end.

Three kinds of tests, each saying which in its docstring:
- PURE: on a real pure cgroup v2 kernel (/sys/fs/cgroup is cgroup2 with cpu, io, memory
  and pids). This host is hybrid, so they run in the user-mode Linux lane
  (tests/test_uml_lane.py boots Linux 6.1 and runs this file there) and skip here;
- REAL: against the cgroup2 tree this host has (the hybrid host's /sys/fs/cgroup/unified,
  which offers only hugetlb, or the pure tree in the lane): the core files,
  cgroup.freeze/cgroup.kill, cpu.stat and the eBPF device hook are all real kernel;
- FAKE: a temporary directory laid out like a v2 cgroup, kept only for what neither
  kernel offers: cpuset, hugetlb and rdma (not built into Debian's UML kernel, v1-only
  here), io.weight (needs BFQ or iocost: neither in UML), and a knob file that vanishes
  mid-update (the rollback path).
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
from contain.cgroups import Manager, new_manager
from contain.cgroups.devices import apply_v2, fold, rules_from_spec
from contain.cgroups.fs import detect_layout
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


def test_fake_v2_only_files(fake: Manager) -> None:
    """FAKE: the controllers no kernel here offers on v2 (cpuset, hugetlb, rdma, io.weight)
    land in their files with the v2 values; the rest is PURE below."""
    hugetlb = os.path.exists("/sys/kernel/mm/hugepages/hugepages-2048kB")  # (validated)
    fake.set(res({
        "cpu": {"cpus": "0", "mems": "0"},
        "blockIO": {"weight": 500},
        **({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}]} if hugetlb else {}),
        "rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 100}},
    }), skip_devices=True)
    assert _f(fake, "cpuset.cpus") == "0" and _f(fake, "cpuset.mems") == "0"
    assert _f(fake, "io.weight") == "4950"
    if hugetlb:
        assert _f(fake, "hugetlb.2MB.max") == str(4 << 21)
        assert _f(fake, "hugetlb.2MB.rsvd.max") == str(4 << 21)
    assert _f(fake, "rdma.max") == "mlx5_0 hca_handle=3 hca_object=100"


def test_fake_rollback(fake: Manager) -> None:
    """FAKE: when a write fails (a knob file vanished), the earlier writes are undone."""
    os.unlink(Path(fake.paths()["unified"], "rdma.max"))
    with pytest.raises(SpecError) as info:
        fake.set(res({"memory": {"limit": 1 << 20}, "pids": {"limit": 9},
                      "rdma": {"mlx5_0": {"hcaHandles": 3}}}), skip_devices=True)
    assert info.value.path.startswith("$.linux.resources.rdma")
    assert _f(fake, "memory.max") == "max"
    assert _f(fake, "pids.max") == "max"


def test_fake_stats(fake: Manager) -> None:
    """FAKE: v2 stat files -> runc's stats (usec -> ns, memory.events counters), exact
    values (the real files are read by the PURE and REAL tests)."""
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


# -- a real pure cgroup v2 kernel (the UML lane) -------------------------------------------

PURE = detect_layout() == "v2"
needs_pure = pytest.mark.skipif(not PURE, reason="needs a pure cgroup v2 kernel "
                                "(runs in the user-mode Linux lane, tests/test_uml_lane.py)")
V2ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def pure() -> Iterator[Manager]:
    """PURE: a container cgroup made by new_manager (relative to ours) on the pure tree."""
    mgr = new_manager(None, unique_id("ctest"))
    assert mgr.layout == "v2"
    mgr.create()
    try:
        yield mgr
    finally:
        mgr.destroy()


def _wait_in(mgr: Manager, pid: int) -> None:
    deadline = time.monotonic() + 20
    while pid not in mgr.pids():
        assert time.monotonic() < deadline, "process never showed up in cgroup.procs"
        time.sleep(0.01)


@needs_pure
def test_pure_create_enables_controllers() -> None:
    """PURE: a nested cgroupsPath: create makes the parent and enables in it every
    controller the tree offers (runc), so the leaf has cpu, io, memory and pids; destroy
    removes the leaf and the parent it made."""
    top = unique_id("ctest")
    mgr = new_manager(f"/{top}/ctr", "x")
    mgr.create()
    try:
        offered = set((V2ROOT / "cgroup.controllers").read_text().split())
        assert set((V2ROOT / top / "cgroup.subtree_control").read_text().split()) == offered
        leaf = Path(mgr.paths()["unified"])
        assert leaf == V2ROOT / top / "ctr"
        assert {"cpu", "io", "memory", "pids"} <= set(
            (leaf / "cgroup.controllers").read_text().split())
    finally:
        mgr.destroy()
    assert not (V2ROOT / top).exists()


@needs_pure
def test_pure_all_files(pure: Manager) -> None:
    """PURE: every resource the kernel has lands in its v2 file with the v2 value, and
    the kernel takes it (a value it refuses would raise)."""
    disk = _block_device()
    pure.set(res({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
        "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "burst": 1000, "idle": 0},
        "pids": {"limit": 42},
        **({"blockIO": {"throttleReadBpsDevice": [
            {"major": disk[0], "minor": disk[1], "rate": 1048576}]}} if disk else {}),
        "unified": {"memory.high": "50331648"},
    }), skip_devices=True)
    assert _f(pure, "memory.max") == str(64 << 20)
    assert _f(pure, "memory.swap.max") == str(64 << 20)  # 128M total - 64M memory
    assert _f(pure, "memory.low") == str(32 << 20)
    assert _f(pure, "memory.high") == "50331648"
    assert _f(pure, "cpu.weight") == "100"
    assert _f(pure, "cpu.max") == "50000 200000"
    assert _f(pure, "cpu.max.burst") == "1000"
    assert _f(pure, "cpu.idle") == "0"
    assert _f(pure, "pids.max") == "42"
    if disk:
        assert _f(pure, "io.max") == f"{disk[0]}:{disk[1]} rbps=1048576 wbps=max " \
                                     "riops=max wiops=max"


def _block_device() -> tuple[int, int] | None:
    """A block device of this kernel (the lane gives UML one: ubd0, 98:0)."""
    for entry in sorted(os.listdir("/sys/dev/block")) if os.path.isdir("/sys/dev/block") else []:
        major, minor = (int(x) for x in entry.split(":"))
        if minor == 0:
            return major, minor
    return None


@needs_pure
def test_pure_unlimited_values(pure: Manager) -> None:
    """PURE: -1 is "max"; unlimited memory without swap means unlimited swap; a quota of
    -1 keeps the period; a pids limit of 0 is a limit (runtime-spec 1.3)."""
    pure.set(res({"memory": {"limit": 1 << 30, "swap": 1 << 30}, "pids": {"limit": 5}}),
             skip_devices=True)
    assert _f(pure, "memory.swap.max") == "0"
    pure.set(res({"memory": {"limit": -1}, "cpu": {"quota": -1, "period": 50000},
                  "pids": {"limit": -1}}), skip_devices=True)
    assert _f(pure, "memory.max") == "max"
    assert _f(pure, "memory.swap.max") == "max"
    assert _f(pure, "cpu.max") == "max 50000"
    assert _f(pure, "pids.max") == "max"
    pure.set(res({"pids": {"limit": 0}}), skip_devices=True)
    assert _f(pure, "pids.max") == "0"


KNOBS = ("memory.max", "memory.low", "memory.high", "memory.swap.max", "cpu.weight",
         "cpu.max", "pids.max", "io.max")


@needs_pure
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
    ({"pids": {"limit": 5}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]},
     "$.linux.resources.hugepageLimits"),
    ({"pids": {"limit": 5}, "cpu": {"cpus": "0"}}, "$.linux.resources.cpu"),
])
def test_pure_refusals(pure: Manager, obj: dict, field: str) -> None:
    """PURE: what v2 (or this kernel: no hugetlb, no cpuset in UML) has no file for is
    refused, naming the field, before anything is written."""
    before = {n: _f(pure, n) for n in KNOBS}
    with pytest.raises(SpecError) as info:
        pure.validate(res(obj))
        pure.set(res(obj), skip_devices=True)
    assert info.value.path.startswith(field), info.value.path
    assert {n: _f(pure, n) for n in KNOBS} == before


@needs_pure
def test_pure_rollback(pure: Manager) -> None:
    """PURE: the kernel refuses a write half-way (io.max of a device that does not
    exist: ENODEV): the earlier writes are undone."""
    with pytest.raises(SpecError) as info:
        pure.set(res({"memory": {"limit": 8 << 20}, "pids": {"limit": 9},
                      "blockIO": {"throttleReadBpsDevice": [
                          {"major": 250, "minor": 99, "rate": 1}]}}), skip_devices=True)
    assert info.value.path.startswith("$.linux.resources.blockIO")
    assert _f(pure, "memory.max") == "max"
    assert _f(pure, "pids.max") == "max"


@needs_pure
def test_pure_limits_hold_and_stats(pure: Manager) -> None:
    """PURE: a process in the cgroup: checkBeforeUpdate compares with the real
    memory.current; pids.max stops a fork; stats come from the real files."""
    p = _start(pure, [BUSYBOX, "sh", "-c", "exec sleep 100"])
    try:
        _wait_in(pure, p.pid)
        with pytest.raises(SpecError, match="current usage"):
            pure.set(res({"memory": {"limit": 4096, "checkBeforeUpdate": True}}),
                     skip_devices=True)
        pure.set(res({"memory": {"limit": 64 << 20}, "pids": {"limit": 1}}),
                 skip_devices=True)
        s = pure.stats()
        assert s.memory.usage.limit == 64 << 20 and s.memory.usage.usage > 0
        assert (s.pids.current, s.pids.limit) == (1, 1)
        assert s.cpu.usage.total > 0
        assert s.to_json()["pids"] == {"current": 1, "limit": 1}
        # the one allowed task is taken: a fork from inside fails
        code = "import os\ntry:\n    os.fork()\nexcept OSError as e:\n    print(e.errno)\n"
        out = subprocess.run([sys.executable, "-c", code],
                             preexec_fn=lambda: pure.join(0), capture_output=True,
                             text=True, timeout=60)
        assert out.returncode != 0 or out.stdout.strip() == "11", out
    finally:
        p.kill()
        p.wait()


@needs_pure
def test_pure_memory_limit_oom_kills(pure: Manager) -> None:
    """PURE: a 16M cgroup without swap: a process that wants 64M is OOM-killed; the
    memory.events counters reach the stats."""
    pure.set(res({"memory": {"limit": 16 << 20, "swap": 16 << 20}}), skip_devices=True)
    code = "b = bytearray(64 << 20)\nprint('survived')\n"
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=lambda: pure.join(0),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out
    s = pure.stats()
    assert s.memory.oom_kill >= 1 and s.memory.usage.failcnt >= 1


# -- the real cgroup2 tree -----------------------------------------------------------------

needs_unified = pytest.mark.skipif(not (UNIFIED / "cgroup.controllers").exists(),
                                   reason="no cgroup2 tree at /sys/fs/cgroup/unified")
# the REAL tests' tree: the hybrid host's unified tree, or the pure one in the UML lane
TREE = V2ROOT if PURE else UNIFIED
needs_tree = pytest.mark.skipif(not (TREE / "cgroup.controllers").exists(),
                                reason="no cgroup2 tree")


@pytest.fixture
def real() -> Iterator[Manager]:
    """REAL: a cgroup in this host's cgroup2 tree, driven as a pure v2 Manager; the
    controllers create enables at the tree's root are switched off again afterwards."""
    before = (TREE / "cgroup.subtree_control").read_text().split()
    mgr = Manager("v2", {"unified": str(TREE / unique_id("ctest"))},
                  unified_mount=str(TREE))
    mgr.create()
    try:
        yield mgr
    finally:
        mgr.destroy()
        for c in (TREE / "cgroup.subtree_control").read_text().split():
            if c not in before:
                try:
                    (TREE / "cgroup.subtree_control").write_text("-" + c)
                except OSError:
                    pass


def _start(mgr: Manager, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, preexec_fn=lambda: mgr.join(0),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@needs_tree
def test_real_hugetlb_limit(real: Manager) -> None:
    """REAL: hugetlb, the one controller of this tree: limits written to hugetlb.*.max."""
    sizes = [e.name for e in os.scandir("/sys/kernel/mm/hugepages")] \
        if os.path.isdir("/sys/kernel/mm/hugepages") else []
    if "hugepages-2048kB" not in sizes:
        pytest.skip("no 2MB huge pages")
    real.set(res({"hugepageLimits": [{"pageSize": "2MB", "limit": 8 << 20}]}),
             skip_devices=True)
    assert _f(real, "hugetlb.2MB.max") == str(8 << 20)
    assert real.stats().hugetlb["2MB"].usage == 0
    with pytest.raises(SpecError, match="memory controller"):
        real.validate(res({"memory": {"limit": 1 << 20}}))


@needs_tree
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


@needs_tree
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


@needs_tree
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
