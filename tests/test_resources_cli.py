"""update, pause, resume, events, ps and kill --all on real containers (contain run -d),
plus the Python API of the same. All real: the containers' cgroups are the host's
hybrid hierarchies, or a pure cgroup v2 tree in the user-mode Linux lane
(tests/test_uml_lane.py), where each test reads the v2 files instead."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, fails, run_contain, unique_id, wait_for
from contain.cgroups.fs import detect_layout
from contain.cgroups.resources import shares_to_weight
from contain.cli.cmd_resources import parse_duration, ram_in_bytes

V2 = detect_layout() == "v2"
IN_UML = os.environ.get("CONTAIN_UML_LANE") == "1"


def _v2_has(name: str) -> bool:
    return name in Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()


class Ctr:
    def __init__(self, root: Path, cid: str, bundle: Bundle) -> None:
        self.root = root
        self.id = cid
        self.bundle = bundle

    def state(self) -> dict[str, Any]:
        return json.loads(run_contain(self.root, "state", self.id, check=True).stdout)

    def saved(self) -> dict[str, Any]:
        return json.loads((self.root / self.id / "state.json").read_text())

    def cg(self, ctrl: str) -> Path:
        return Path(self.saved()["cgroup"]["paths"]["unified" if V2 else ctrl])

    def knob(self, ctrl: str, v1: str, v2: str) -> str:
        """The value of a resource file: the v1 file of *ctrl*, or the v2 file."""
        return (self.cg(ctrl) / (v2 if V2 else v1)).read_text().strip()


@pytest.fixture
def start(make_bundle: Callable[..., Bundle], state_root: Path) -> Iterator[Callable[..., Ctr]]:
    """Start detached containers (stdio on a file: a pipe would never see EOF); every one
    is deleted at the end."""
    made: list[Ctr] = []

    def start_(script: str, resources: dict[str, Any] | None = None,
               cgroups_path: str | None = None) -> Ctr:
        bundle = make_bundle(["/bin/sh", "-c", script])
        bundle.config["root"]["readonly"] = False
        if resources is not None:
            bundle.config["linux"]["resources"] = {
                "devices": [{"allow": False, "access": "rwm"}], **resources}
        if cgroups_path is not None:
            bundle.config["linux"]["cgroupsPath"] = cgroups_path
        bundle.write()
        cid = unique_id("res")
        with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out:
            proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d",
                                   "--bundle", str(bundle.path), cid],
                                  stdin=null, stdout=out, stderr=out, timeout=60)
            out.seek(0)
            assert proc.returncode == 0, out.read().decode()
        c = Ctr(state_root, cid, bundle)
        made.append(c)
        return c

    yield start_
    for c in made:
        run_contain(c.root, "delete", "--force", c.id)


# -- parsing -------------------------------------------------------------------------------

def test_units() -> None:
    assert ram_in_bytes("100") == 100
    assert ram_in_bytes("100M") == 100 << 20
    assert ram_in_bytes("1.5g") == 3 << 29
    assert ram_in_bytes("512KiB") == 512 << 10
    assert ram_in_bytes("64mb") == 64 << 20
    assert ram_in_bytes("10 k") == 10 << 10
    for bad in ("", "M", "12x", "-5", "1e6", "5 MBs"):
        with pytest.raises(ValueError):
            ram_in_bytes(bad)
    assert parse_duration("5s") == 5
    assert parse_duration("1m30s") == 90
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("5 parsecs")


# -- pause / resume ------------------------------------------------------------------------

def test_pause_resume(start: Callable[..., Ctr]) -> None:
    """pause freezes (status paused in state and list; a counter in the rootfs stops);
    resume thaws; each refuses the wrong state."""
    c = start("i=0; while :; do i=$((i+1)); echo $i > /tmp/count; done")
    count = c.bundle.rootfs / "tmp" / "count"
    wait_for(lambda: count.exists() and count.read_text().strip() != "")
    run_contain(c.root, "pause", c.id, check=True)
    assert c.state()["status"] == "paused"
    assert c.knob("freezer", "freezer.state", "cgroup.freeze") == ("1" if V2 else "FROZEN")
    listing = run_contain(c.root, "list", check=True).stdout
    assert any(c.id in line and "paused" in line for line in listing.splitlines())
    fails(run_contain(c.root, "pause", c.id), "not running")
    frozen_at = count.read_text()
    time.sleep(0.5)
    assert count.read_text() == frozen_at
    run_contain(c.root, "resume", c.id, check=True)
    assert c.state()["status"] == "running"
    wait_for(lambda: count.read_text() != frozen_at)
    fails(run_contain(c.root, "resume", c.id), "not paused")


def test_paused_container_can_be_deleted(start: Callable[..., Ctr]) -> None:
    c = start("exec sleep 100", {"pids": {"limit": 10}})
    run_contain(c.root, "pause", c.id, check=True)
    paths = c.saved()["cgroup"]["paths"]
    run_contain(c.root, "delete", "--force", c.id, check=True)
    assert not any(os.path.exists(p) for p in paths.values())


# -- update --------------------------------------------------------------------------------

def test_update_flags(start: Callable[..., Ctr]) -> None:
    """Single-value flags change the live files and the saved config."""
    c = start("exec sleep 100", {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    cpuset = not V2 or _v2_has("cpuset")
    # io.weight needs an io scheduler with weights (BFQ or iocost), absent under UML
    blkio = not V2 or (c.cg("unified") / "io.weight").exists()
    run_contain(c.root, "update", "--memory", "100M", "--memory-swap", "200m",
                "--memory-reservation", "50M", "--pids-limit", "30", "--cpu-share", "512",
                "--cpu-quota", "20000", "--cpu-period", "100000",
                *(["--cpuset-cpus", "0"] if cpuset else []),
                *(["--blkio-weight", "300"] if blkio else []), c.id, check=True)
    mem = c.knob("memory", "memory.limit_in_bytes", "memory.max")
    assert mem == str(100 << 20)
    if V2:  # swap is memory+swap on v1, swap alone on v2
        assert c.knob("memory", "", "memory.swap.max") == str(100 << 20)
        assert c.knob("memory", "", "memory.low") == str(50 << 20)
        assert c.knob("cpu", "", "cpu.weight") == str(shares_to_weight(512))
        assert c.knob("cpu", "", "cpu.max") == "20000 100000"
    else:
        assert c.knob("memory", "memory.memsw.limit_in_bytes", "") == str(200 << 20)
        assert c.knob("memory", "memory.soft_limit_in_bytes", "") == str(50 << 20)
        assert c.knob("cpu", "cpu.shares", "") == "512"
        assert c.knob("cpu", "cpu.cfs_quota_us", "") == "20000"
    assert c.knob("pids", "pids.max", "pids.max") == "30"
    if cpuset:
        assert c.knob("cpuset", "cpuset.cpus", "cpuset.cpus") == "0"
    saved = c.saved()["config"]["linux"]["resources"]
    assert saved["memory"] == {"limit": 100 << 20, "swap": 200 << 20,
                               "reservation": 50 << 20}
    assert saved["pids"] == {"limit": 30}
    assert saved["cpu"]["shares"] == 512 and saved["cpu"].get("cpus", "0") == "0"
    assert saved["devices"] == [{"allow": False, "type": "a", "access": "rwm"}] or \
        saved["devices"][0]["allow"] is False
    # a later update of one field keeps the others
    run_contain(c.root, "update", "--pids-limit", "40", c.id, check=True)
    assert c.saved()["config"]["linux"]["resources"]["memory"]["limit"] == 100 << 20
    assert c.knob("memory", "memory.limit_in_bytes", "memory.max") == str(100 << 20)


def test_update_resources_file_and_stdin(start: Callable[..., Ctr], tmp_path: Path) -> None:
    c = start("exec sleep 100", {"pids": {"limit": 50}})
    run_contain(c.root, "update", "-r", "-", c.id, check=True,
                input=json.dumps({"pids": {"limit": 12}, "cpu": {"shares": 300}}))
    assert c.knob("pids", "pids.max", "pids.max") == "12"
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"memory": {"limit": 80 << 20}}))
    run_contain(c.root, "update", "--resources", str(f), c.id, check=True)
    assert c.knob("memory", "memory.limit_in_bytes", "memory.max") == str(80 << 20)
    assert c.knob("pids", "pids.max", "pids.max") == "12"


def test_update_errors_change_nothing(start: Callable[..., Ctr]) -> None:
    c = start("exec sleep 100", {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    before = c.saved()["config"]
    fails(run_contain(c.root, "update", "--memory", "lots", c.id), "invalid value for memory")
    fails(run_contain(c.root, "update", "--pids-limit", "20", "--cpuset-cpus", "0-999",
                      c.id), "$.linux.resources.cpu.cpus")
    fails(run_contain(c.root, "update", "--cpu-share", "1", c.id),
          "$.linux.resources.cpu.shares")
    fails(run_contain(c.root, "update", "-r", "-", c.id, input="{not json"), "invalid JSON")
    fails(run_contain(c.root, "update", "--l3-cache-schema", "L3:0=f", c.id), "Intel RDT")
    if not V2:  # v1 refuses a limit below the usage (EBUSY); v2 takes it and reclaims
        fails(run_contain(c.root, "update", "--memory", "1k", c.id), "memory.limit")
    assert c.knob("pids", "pids.max", "pids.max") == "50"
    assert c.knob("memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert c.saved()["config"] == before
    fails(run_contain(c.root, "update", "--memory", "1M", "nosuch"), "does not exist")


def test_update_stopped_container_fails(start: Callable[..., Ctr]) -> None:
    c = start("exit 0")
    wait_for(lambda: c.state()["status"] == "stopped")
    fails(run_contain(c.root, "update", "--pids-limit", "5", c.id), "stopped")
    fails(run_contain(c.root, "pause", c.id), "not running")


# -- ps ------------------------------------------------------------------------------------

def test_ps(start: Callable[..., Ctr]) -> None:
    c = start("sleep 100 & exec sleep 101")
    pid = c.state()["pid"]
    wait_for(lambda: len(json.loads(
        run_contain(c.root, "ps", "--format", "json", c.id, check=True).stdout)) == 2)
    pids = json.loads(run_contain(c.root, "ps", "-f", "json", c.id, check=True).stdout)
    assert pid in pids
    if IN_UML:  # (the JSON form above is contain's own; the tables are procps's)
        pytest.skip("procps's ps cannot find the boot time under user-mode Linux")
    table = run_contain(c.root, "ps", c.id, check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["UID", "PID", "PPID"]
    assert sorted(int(line.split()[1]) for line in table[1:]) == sorted(pids)
    custom = run_contain(c.root, "ps", c.id, "--", "-eo", "pid,comm", check=True).stdout
    lines = custom.splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    assert {line.split()[1] for line in lines[1:]} == {"sleep"}
    assert json.loads(run_contain(c.root, "ps", c.id, "--format", "json",
                                  check=True).stdout) == pids
    fails(run_contain(c.root, "ps", "--format", "yaml", c.id), "invalid format")


# -- events --------------------------------------------------------------------------------

def test_events_stats(start: Callable[..., Ctr]) -> None:
    c = start("exec sleep 100", {"memory": {"limit": 64 << 20}, "pids": {"limit": 20}})
    out = run_contain(c.root, "events", "--stats", c.id, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    assert ev["type"] == "stats" and ev["id"] == c.id
    data = ev["data"]
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["pids"]["current"] >= 1 and data["pids"]["limit"] == 20
    assert data["cpu"]["usage"]["total"] > 0
    fails(run_contain(c.root, "events", "--interval", "0s", c.id), "greater than 0")


def test_events_reports_oom_and_ends_with_the_container(start: Callable[..., Ctr]) -> None:
    """A 32M container whose dd wants 128M: the stream carries an "oom" event and stats
    events; once the container is deleted the stream ends by itself, exit 0."""
    c = start("sleep 2; dd if=/dev/zero of=/dev/null bs=128M count=1; exec sleep 100",
              {"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    proc = subprocess.Popen([*contain_cmd(), "--root", str(c.root), "events", "--interval",
                             "500ms", c.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        # (UML runs every system call through ptrace: slow on a loaded host)
        deadline = time.monotonic() + (180 if IN_UML else 60)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if any(e["type"] == "oom" for e in seen) and \
                    any(e["type"] == "stats" for e in seen):
                break
        assert {"type": "oom", "id": c.id} in seen, seen[-3:]
        stats = [e for e in seen if e["type"] == "stats"]
        assert stats and stats[0]["data"]["memory"]["usage"]["limit"] == 32 << 20
        run_contain(c.root, "delete", "--force", c.id, check=True)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# -- kill --all, cgroupsPath, delete -------------------------------------------------------

def test_kill_all(start: Callable[..., Ctr]) -> None:
    c = start("sleep 100 & sleep 101 & exec sleep 102")
    wait_for(lambda: len(json.loads(
        run_contain(c.root, "ps", "-f", "json", c.id, check=True).stdout)) == 3)
    run_contain(c.root, "kill", "--all", c.id, "KILL", check=True)
    wait_for(lambda: json.loads(
        run_contain(c.root, "ps", "-f", "json", c.id, check=True).stdout) == [])
    assert c.state()["status"] == "stopped"


def test_absolute_cgroups_path_and_delete(start: Callable[..., Ctr]) -> None:
    """An absolute cgroupsPath with a new parent: the container is there in every
    hierarchy, and delete removes it and the parent it made."""
    top = f"/ctest-{unique_id()}"
    c = start("exec sleep 100", {"pids": {"limit": 9}}, cgroups_path=f"{top}/ctr")
    if V2:
        assert c.cg("unified") == Path(f"/sys/fs/cgroup{top}/ctr")
        pid = c.state()["pid"]
        assert f"0::{top}/ctr" in Path(f"/proc/{pid}/cgroup").read_text()
        run_contain(c.root, "delete", "--force", c.id, check=True)
        assert not Path(f"/sys/fs/cgroup{top}").exists()
        return
    for ctrl in ("memory", "pids", "cpu", "freezer", "devices", "blkio", "cpuset"):
        assert c.cg(ctrl) == Path(f"/sys/fs/cgroup/{ctrl}{top}/ctr")
    assert Path(f"/sys/fs/cgroup/unified{top}/ctr").is_dir()
    pid = c.state()["pid"]
    assert f"pids:{top}/ctr" in Path(f"/proc/{pid}/cgroup").read_text()
    run_contain(c.root, "delete", "--force", c.id, check=True)
    for base in Path("/sys/fs/cgroup").iterdir():
        assert not (base / top.lstrip("/")).exists(), base


def test_bad_resources_fail_create_cleanly(make_bundle: Callable[..., Bundle],
                                           state_root: Path) -> None:
    """Out-of-range resources and an escaping cgroupsPath: create fails naming the field;
    no state directory and (the leak check says) no cgroup is left."""
    for change, text in (
            ({"resources": {"cpu": {"cpus": "0-999"}}}, "$.linux.resources.cpu.cpus"),
            ({"resources": {"pids": {"limit": -7}}}, "$.linux.resources.pids.limit"),
            ({"resources": {"network": {"classID": 3}}}, "net_cls"),
            ({"cgroupsPath": "/../../etc"}, "escapes"),
            ({"cgroupsPath": "machine.slice:contain:x"}, "systemd")):
        bundle = make_bundle(["/bin/true"])
        bundle.config["linux"].update(change)
        bundle.write()
        cid = unique_id("bad")
        proc = run_contain(state_root, "create", "--bundle", str(bundle.path), cid)
        fails(proc, text)
        assert not (state_root / cid).exists()


# -- the Python API ------------------------------------------------------------------------

def test_python_api(start: Callable[..., Ctr]) -> None:
    from contain.cgroups.stats import Stats
    from contain.container import resources as api

    c = start("exec sleep 100", {"memory": {"limit": 64 << 20}})
    root = str(c.root)
    assert api.processes(root, c.id) == [c.state()["pid"]]
    api.pause(root, c.id)
    assert c.state()["status"] == "paused"
    api.resume(root, c.id)
    merged = api.update(root, c.id, {"memory": {"limit": 96 << 20}, "pids": {"limit": 7}})
    assert merged["memory"]["limit"] == 96 << 20
    s = api.stats(root, c.id)
    assert isinstance(s, Stats)
    assert s.memory.usage.limit == 96 << 20 and s.pids.limit == 7
