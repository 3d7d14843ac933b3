"""The systemd cgroup driver (--systemd-cgroup, cgroupsPath slice:prefix:name).

The tests marked ``needs_systemd`` need systemd as PID 1: they run in the systemd lane
(tests/test_systemd_lane.py boots Debian's systemd as init of user-mode Linux, a pure
cgroup v2 kernel, with the system bus of dbus-daemon) and skip elsewhere. The others run
anywhere: names, bad input, and the clear error where no systemd answers.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Bundle, contain_cmd, fails, ok, run_contain, unique_id
from contain.errors import ContainError


def _systemd_is_init() -> bool:
    try:
        return os.path.basename(os.readlink("/proc/1/exe")) == "systemd"
    except OSError:
        return False


SYSTEMD = _systemd_is_init()
needs_systemd = pytest.mark.skipif(not SYSTEMD, reason="needs systemd as PID 1 (the "
                                   "systemd lane, tests/test_systemd_lane.py, runs these)")
CG = Path("/sys/fs/cgroup")


def _show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", "-p", ",".join(props), unit],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _detached(root: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """create / run -d with stdio on a file (the container's init keeps what it is given:
    a pipe would never see EOF); the output comes back as stderr."""
    with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out:
        proc = subprocess.run([*contain_cmd(), "--root", str(root), *args], stdin=null,
                              stdout=out, stderr=out, timeout=120, env=env)
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "",
                                           out.read().decode(errors="replace"))


def _bundle(make_bundle: Callable[..., Bundle], cgroups_path: str, **resources: object
            ) -> Bundle:
    b = make_bundle(["sleep", "1000"])
    b.config["linux"]["cgroupsPath"] = cgroups_path
    if resources:
        b.config["linux"]["resources"] = resources
    return b.write()


# -- anywhere ---------------------------------------------------------------------------------

def test_names() -> None:
    """slice:prefix:name as runc reads it: the defaults, the unit, nested slices."""
    from contain.cgroups.systemd import expand_slice, parse_cgroups_path

    assert parse_cgroups_path("system.slice:contain:abc", "x", rootless=False) == (
        "system.slice", "contain-abc.scope")
    assert parse_cgroups_path(":p:n", "x", rootless=False) == ("system.slice", "p-n.scope")
    assert parse_cgroups_path(":p:n", "x", rootless=True) == ("user.slice", "p-n.scope")
    assert parse_cgroups_path("a.slice::n", "x", rootless=False) == ("a.slice", "n.scope")
    assert parse_cgroups_path(None, "ctr", rootless=False) == ("system.slice",
                                                                 "contain-ctr.scope")
    assert expand_slice("system.slice") == "/system.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == "/"
    for bad in ("a--b.slice", "-a.slice", "a-.slice", "a.scope", "a/b.slice"):
        with pytest.raises(ContainError, match="slice"):
            expand_slice(bad)


def test_unit_properties() -> None:
    """Resources as systemd's properties, converted as runc does (cpu.shares to a weight,
    the quota per second rounded up to 10 ms, cpus as a bit mask, -1 as infinity)."""
    from contain.cgroups.systemd import INFINITY, unit_properties
    from contain.spec.config import Resources

    res = Resources.decode({"memory": {"limit": 64 << 20, "reservation": 32 << 20,
                                          "swap": 96 << 20},
                               "cpu": {"shares": 1024, "quota": 12345, "period": 100000,
                                       "cpus": "0,2-3,9"},
                               "pids": {"limit": -1}}, "$.linux.resources")
    props = dict(unit_properties(res, "v2"))
    assert props["MemoryMax"] == ("t", 64 << 20)
    assert props["MemoryLow"] == ("t", 32 << 20)
    assert props["MemorySwapMax"] == ("t", 32 << 20)
    assert props["CPUWeight"] == ("t", 39)
    assert props["CPUQuotaPerSecUSec"] == ("t", 130000)
    assert props["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert props["AllowedCPUs"] == ("ay", bytes([0b1101, 0b10]))
    assert props["TasksMax"] == ("t", INFINITY)
    v1 = dict(unit_properties(res, "hybrid"))
    assert "CPUWeight" not in v1 and "AllowedCPUs" not in v1 and "MemoryMax" in v1


DEFAULT_ALLOW = [("char-*", "m"), ("block-*", "m"), ("/dev/char/1:3", "rwm"),
                 ("/dev/char/1:8", "rwm"), ("/dev/char/1:7", "rwm"), ("/dev/char/5:0", "rwm"),
                 ("/dev/char/1:5", "rwm"), ("/dev/char/1:9", "rwm"), ("char-136", "rwm"),
                 ("/dev/char/5:2", "rwm"), ("/dev/char/10:200", "rwm")]


def test_device_properties(capfd: pytest.CaptureFixture[str]) -> None:
    """The device rules as the scope's DevicePolicy/DeviceAllow, as runc's systemd driver
    gives them: the list emptied first, then strict with the folded allow list (the
    config's rules, then the default allowances); a wildcard minor is char-MAJOR, both
    wildcards char-*; what systemd cannot say (a minor of every major, a deny list) is
    left to the cgroup files, with a warning; allow-all is DevicePolicy=auto."""
    from contain.cgroups.systemd import device_properties
    from contain.spec.config import Resources

    def props(rules: list[dict[str, object]], paths: tuple[str, ...] = ()) -> list[object]:
        res = Resources.decode({"devices": rules}, "$.linux.resources")
        return device_properties(res, paths)  # type: ignore[return-value]

    clear = ("DeviceAllow", ("a(ss)", []))
    strict = ("DevicePolicy", ("s", "strict"))
    deny_all = {"allow": False, "access": "rwm"}
    assert props([deny_all]) == [clear, strict, ("DeviceAllow", ("a(ss)", DEFAULT_ALLOW))]
    got = props([deny_all, {"allow": True, "type": "c", "major": 42, "minor": 1,
                            "access": "rw"},
                 {"allow": True, "type": "b", "major": 8, "access": "r"},
                 {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"}],
                ("/dev/null",))  # (a linux.devices /dev/null: its default rule is not added)
    allow = dict(got[2][1][1])  # type: ignore[index]
    assert allow["/dev/char/42:1"] == "rw" and allow["block-8"] == "r"
    assert allow["/dev/char/1:3"] == "r"
    assert capfd.readouterr().err == ""
    got = props([deny_all, {"allow": True, "type": "c", "minor": 7, "access": "rwm"}])
    assert "c *:7" in capfd.readouterr().err
    assert got == [clear, strict, ("DeviceAllow", ("a(ss)", DEFAULT_ALLOW))]
    # a deny list: deny-all for systemd, with a warning; allow-all: policy auto
    got = props([{"allow": True, "access": "rwm"},
                 {"allow": False, "type": "c", "major": 42, "minor": 2, "access": "rwm"}])
    assert got == [clear, strict] and "deny list" in capfd.readouterr().err
    assert props([{"allow": True, "access": "rwm"}]) == [clear, ("DevicePolicy", ("s", "auto"))]
    # no linux.resources at all: the default allowances alone, as the cgroup files get
    assert device_properties(None) == [clear, strict, ("DeviceAllow", ("a(ss)", DEFAULT_ALLOW))]


def test_dbus_marshalling_round_trip() -> None:
    """The D-Bus client's encoding of StartTransientUnit's arguments reads back equal
    (the real exchange with systemd is the lane's)."""
    from contain.linux.dbus import METHOD_CALL, decode, encode

    body = ("u.scope", "fail", [("PIDs", ("au", [1, 70000])), ("Delegate", ("b", True)),
                                ("MemoryMax", ("t", 1 << 40)), ("AllowedCPUs", ("ay", b"\x05")),
                                ("Slice", ("s", "system.slice"))], [("x", [("y", ("s", "z"))])])
    msg = decode(encode(METHOD_CALL, 7, {1: "/org/freedesktop/systemd1", 3: "Start"},
                        "ssa(sv)a(sa(sv))", body))
    assert msg.serial == 7 and msg.member == "Start" and msg.path == "/org/freedesktop/systemd1"
    assert tuple(msg.body) == (body[0], body[1], body[2], [("x", [("y", ("s", "z"))])])


@pytest.mark.parametrize("path,words", [
    ("/abs/ctr", ["cgroupsPath", "slice:prefix:name"]),
    ("system.slice:p:", ["cgroupsPath", "name"]),
    ("bad-.slice:p:n", ["cgroupsPath", "dash"]),
    ("machine:p:n", ["cgroupsPath", "slice unit name"]),
    ("system.slice:p:a b", ["cgroupsPath", "unit name"]),
    ("system.slice:p:n.slice", ["cgroupsPath", "scope"]),
])
def test_bad_cgroups_path_refused(make_bundle: Callable[..., Bundle], state_root: Path,
                                  path: str, words: list[str]) -> None:
    """A cgroupsPath the driver cannot use fails create in one line naming the field,
    before systemd is asked anything; nothing is left (the leak check: no cgroup)."""
    b = _bundle(make_bundle, path)
    cid = unique_id("sdbad")
    fails(run_contain(state_root, "--systemd-cgroup", "create", "--bundle", str(b.path), cid),
          *words)
    assert not (state_root / cid).exists()


@pytest.mark.skipif(SYSTEMD, reason="systemd is running here")
def test_no_systemd_is_a_clear_error(make_bundle: Callable[..., Bundle], state_root: Path,
                                     tmp_path: Path) -> None:
    """Without systemd on the bus, create fails in one line naming the flag, and leaves
    no state directory, process or cgroup."""
    b = _bundle(make_bundle, "system.slice:contain:x")
    cid = unique_id("sdnone")
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none"}
    err = fails(_detached(state_root, "--systemd-cgroup", "create", "--bundle", str(b.path),
                            cid, env=env), "--systemd-cgroup", "D-Bus")
    assert "is systemd running" in err
    assert not (state_root / cid).exists()


def test_cgroupfs_path_does_not_load_the_driver(make_bundle: Callable[..., Bundle],
                                                state_root: Path, tmp_path: Path) -> None:
    """`run` with the cgroupfs driver imports neither the driver nor the D-Bus client
    (-X importtime lists every module loaded); with --systemd-cgroup both are loaded."""
    b = make_bundle(["/bin/true"])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src"),
           "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none"}
    loaded = {}
    for flags in ([], ["--systemd-cgroup"]):
        cid = unique_id("sdimp")
        # (absolute for cgroupfs: under systemd the lane's pytest is in a service's cgroup,
        # where a v2 child cgroup cannot take a process; the default for the driver)
        b.config["linux"]["cgroupsPath"] = None if flags else f"/{cid}"
        b.write()
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "contain", "--root",
                               str(state_root), *flags, "run", "--bundle", str(b.path), cid],
                              capture_output=True, text=True, timeout=120, env=env,
                              stdin=subprocess.DEVNULL)
        loaded[bool(flags)] = {line.rsplit("|", 1)[-1].strip() for line in
                               proc.stderr.splitlines() if line.startswith("import time:")}
        if not flags:
            assert proc.returncode == 0, proc.stderr[-2000:]
    assert "contain.cgroups" in loaded[False]
    for mod in ("contain.cgroups.systemd", "contain.linux.dbus"):
        assert mod not in loaded[False]
        assert mod in loaded[True]


def test_features_say_systemd() -> None:
    from contain.container.features import features

    assert features()["linux"]["cgroup"]["systemd"] is True


# -- under systemd ----------------------------------------------------------------------------

@needs_systemd
@pytest.mark.skipif(os.environ.get("CONTAIN_SYSTEMD_LANE") != "1", reason="the lane's guard")
def test_lane_leaves_the_host_alone() -> None:
    """In the systemd lane (UML with the host's filesystem as its root) the host's tree is
    read-only and the units that write to it (tmpfiles, which empties /tmp at boot;
    journald; logind) are masked: a test that pulls one in cannot touch the host."""
    with pytest.raises(OSError) as err:
        open("/etc/contain-systemd-lane-probe", "w").close()
    assert err.value.errno == errno.EROFS
    with pytest.raises(OSError):
        open("/var/lib/contain-systemd-lane-probe", "w").close()
    for unit in ("sysinit.target", "systemd-tmpfiles-setup.service", "systemd-logind.service"):
        assert _show(unit, "LoadState")["LoadState"] == "masked", unit
    assert os.statvfs("/tmp").f_blocks != os.statvfs("/").f_blocks  # its own tmpfs


@needs_systemd
def test_scope_lifecycle(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """create makes the scope (active, delegated, the init in it, systemd's limits and
    the files agree), exec joins it, update changes both, delete removes the unit."""
    cid = unique_id("sd")
    unit = f"contain-{cid}.scope"
    b = _bundle(make_bundle, f"system.slice:contain:{cid}",
                memory={"limit": 64 << 20}, pids={"limit": 50},
                cpu={"quota": 50000, "period": 100000})
    ok(_detached(state_root, "--systemd-cgroup", "create", "--bundle", str(b.path), cid))
    try:
        cg = CG / "system.slice" / unit
        props = _show(unit, "ActiveState", "ControlGroup", "Delegate", "MemoryMax", "TasksMax",
                      "CPUQuotaPerSecUSec")
        assert props["ActiveState"] == "active", props
        assert props["ControlGroup"] == f"/system.slice/{unit}"
        assert props["Delegate"] == "yes"
        assert props["MemoryMax"] == str(64 << 20) and props["TasksMax"] == "50", props
        assert props["CPUQuotaPerSecUSec"] == "500ms", props
        assert (cg / "memory.max").read_text().strip() == str(64 << 20)
        assert (cg / "pids.max").read_text().strip() == "50"
        assert (cg / "cpu.max").read_text().split() == ["50000", "100000"]
        state = json.loads(ok(run_contain(state_root, "state", cid)))
        assert state["status"] == "created"
        pid = state["pid"]
        assert Path(f"/proc/{pid}/cgroup").read_text().strip() == f"0::/system.slice/{unit}"
        ok(run_contain(state_root, "start", cid))
        assert json.loads(ok(run_contain(state_root, "state", cid)))["status"] == "running"
        inside = ok(run_contain(state_root, "exec", cid, "cat", "/proc/self/cgroup"))
        assert inside.strip() == "0::/"  # its own cgroup namespace, rooted at the scope
        ok(run_contain(state_root, "--systemd-cgroup", "update", "--memory", "128M",
                       "--pids-limit", "80", cid))
        assert (cg / "memory.max").read_text().strip() == str(128 << 20)
        assert (cg / "pids.max").read_text().strip() == "80"
        props = _show(unit, "MemoryMax", "TasksMax")
        assert props == {"MemoryMax": str(128 << 20), "TasksMax": "80"}, props
    finally:
        deleted = run_contain(state_root, "--systemd-cgroup", "delete", "--force", cid)
    assert deleted.returncode == 0 and deleted.stderr == "", deleted.stderr  # no warning
    assert not (CG / "system.slice" / unit).exists()
    assert _show(unit, "LoadState")["LoadState"] == "not-found"


def _device_programs(cg: Path) -> int:
    """How many device programs are attached to the cgroup2 directory *cg* itself."""
    from contain.linux import bpf

    fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return len(bpf.prog_query(fd, bpf.BPF_CGROUP_DEVICE))
    finally:
        os.close(fd)


@needs_systemd
def test_scope_device_rules(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """The device rules are the scope's DevicePolicy=strict and DeviceAllow list (as runc
    gives them to systemd), so that when systemd applies the unit's settings again (a
    daemon-reload) it enforces the same rules, not its default allow-all: /dev/null
    works, the allowed node gets as far as its (absent) driver, the other is refused."""
    cid = unique_id("sddev")
    unit = f"contain-{cid}.scope"
    b = _bundle(make_bundle, f"system.slice:contain:{cid}",
                devices=[{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 42, "minor": 1,
                          "access": "rw"}])
    b.config["linux"]["devices"] = [
        {"path": "/dev/allowed", "type": "c", "major": 42, "minor": 1, "fileMode": 0o666},
        {"path": "/dev/denied", "type": "c", "major": 42, "minor": 2, "fileMode": 0o666}]
    b.write()
    ok(_detached(state_root, "--systemd-cgroup", "run", "-d", "--bundle", str(b.path), cid))
    try:
        assert _show(unit, "DevicePolicy") == {"DevicePolicy": "strict"}
        out = subprocess.run(["systemctl", "show", "-p", "DeviceAllow", unit],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        allowed = [ln.split("=", 1)[1] for ln in out.splitlines()
                   if ln.startswith("DeviceAllow=") and ln != "DeviceAllow="]
        # (systemd lists the entries last first)
        assert sorted(allowed) == sorted(["/dev/char/42:1 rw"] + [
            f"{path} {access}" for path, access in DEFAULT_ALLOW]), out
        cg = CG / "system.slice" / unit
        script = ("echo x > /dev/null && echo null-ok; cat /dev/allowed; cat /dev/denied; "
                  "true")
        for when in ("created", "after daemon-reload"):
            if when != "created":  # systemd's own program is back, beside contain's:
                assert _device_programs(cg) >= 2  # each must allow what is allowed
            proc = run_contain(state_root, "exec", cid, "sh", "-c", script)
            assert "null-ok" in proc.stdout, (when, proc.stdout, proc.stderr)
            assert "/dev/allowed': No such device or address" in proc.stderr, (when, proc.stderr)
            assert "/dev/denied': Operation not permitted" in proc.stderr, (when, proc.stderr)
            if when == "created":
                subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=60)
    finally:
        deleted = run_contain(state_root, "--systemd-cgroup", "delete", "--force", cid)
    assert deleted.returncode == 0 and deleted.stderr == "", deleted.stderr
    assert _show(unit, "LoadState")["LoadState"] == "not-found"


@needs_systemd
def test_nested_slice_and_private_socket(make_bundle: Callable[..., Bundle],
                                         state_root: Path, tmp_path: Path) -> None:
    """A nested slice is expanded as systemd does (a-b.slice under a.slice); with no
    system bus the driver talks to systemd's private socket."""
    cid = unique_id("sdn")
    unit = f"p-{cid}.scope"
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none"}
    b = _bundle(make_bundle, f"ctest-inner.slice:p:{cid}", pids={"limit": 20})
    ok(_detached(state_root, "--systemd-cgroup", "run", "-d", "--bundle", str(b.path), cid,
                   env=env))
    try:
        cg = CG / "ctest.slice" / "ctest-inner.slice" / unit
        assert (cg / "pids.max").read_text().strip() == "20"
        assert _show(unit, "ActiveState")["ActiveState"] == "active"
    finally:
        deleted = run_contain(state_root, "delete", "--force", cid, env=env)
    # (no warning: StopUnit answered over the private socket too)
    assert deleted.returncode == 0 and deleted.stderr == "", deleted.stderr
    assert not cg.exists()
    assert _show(unit, "LoadState")["LoadState"] == "not-found"


@needs_systemd
def test_same_unit_twice_refused(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """A second container with the same slice:prefix:name is refused naming the unit;
    it leaves nothing, and the first one's scope is untouched."""
    cid, cid2 = unique_id("sd1"), unique_id("sd2")
    path = f"system.slice:contain:{cid}"
    ok(_detached(state_root, "--systemd-cgroup", "create", "--bundle",
                   str(_bundle(make_bundle, path).path), cid))
    try:
        err = fails(_detached(state_root, "--systemd-cgroup", "create", "--bundle",
                                str(_bundle(make_bundle, path).path), cid2),
                    "--systemd-cgroup", f"contain-{cid}.scope", "already exists")
        assert err
        assert not (state_root / cid2).exists()
        assert _show(f"contain-{cid}.scope", "ActiveState")["ActiveState"] == "active"
        pid = json.loads(ok(run_contain(state_root, "state", cid)))["pid"]
        assert f"contain-{cid}.scope" in Path(f"/proc/{pid}/cgroup").read_text()
    finally:
        run_contain(state_root, "delete", "--force", cid)

