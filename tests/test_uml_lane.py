"""The second lane: the suite's cgroup, lifecycle, security and sandbox tests on a real
pure cgroup v2 kernel, Debian's user-mode Linux (Linux 6.1 as a process, no KVM).

UML boots once per session with the host's filesystem as its root (hostfs); its init
(a script written here) mounts proc, sysfs, /run and a cgroup2 hierarchy at
/sys/fs/cgroup with cpu, io, memory and pids enabled, then runs an inner pytest over
INNER with a JUnit XML report under this session's temporary directory (hostfs writes
land on the host's disk; everything the inner run writes goes there or to UML's own
tmpfs). The outer tests read that report: one fails listing the inner failures, one
checks the kernel and the layout the inner run saw. What UML's kernel cannot do is in
docs/hosts.md.

Inside UML the environment variable CONTAIN_UML_LANE is set, so this file skips itself
there (no lane within the lane) and the inner tests can tell where they are.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO

UML = shutil.which("linux.uml") or "/usr/bin/linux.uml"
INSIDE = os.environ.get("CONTAIN_UML_LANE") == "1"

# The test files the lane runs inside UML (what the kernel allows there for real; the
# tests that need what UML lacks skip themselves, saying why).
INNER = [
    "tests/test_uml_kernel.py",
    "tests/test_cgroups_v2.py",
    "tests/test_resources_cli.py",
    "tests/test_lifecycle.py",
    "tests/test_security.py",
    "tests/test_sandbox.py",
    "tests/test_runc_parity.py",
]
# ~3.5 minutes on an idle 2-core machine; UML's system calls slow down most of all
# when the host is loaded
BOOT_TIMEOUT = float(os.environ.get("CONTAIN_UML_TIMEOUT", "1200"))

pytestmark = pytest.mark.skipif(INSIDE, reason="already inside the user-mode Linux lane")

INIT = """#!/bin/sh
# init of the user-mode Linux lane (PID 1): written by tests/test_uml_lane.py
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 CONTAIN_UML_LANE=1
out={out}
trap 'poweroff -f' EXIT
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
ip link set lo up 2>/dev/null
hostname uml
cd {repo}
{{
  printf '{{"uname": "%s", "controllers": "%s", "subtree": "%s", "fstype": "%s"}}\\n' \\
    "$(uname -r)" "$(cat /sys/fs/cgroup/cgroup.controllers)" \\
    "$(cat /sys/fs/cgroup/cgroup.subtree_control)" "$(stat -f -c %T /sys/fs/cgroup)"
}} > "$out/boot.json"
{python} -c 'from contain.cgroups import detect_layout; print(detect_layout())' \\
  > "$out/layout" 2>&1
{command} > "$out/pytest.log" 2>&1
echo $? > "$out/rc"
"""
PYTEST = ('{python} -m pytest -p no:cacheprovider -o addopts= -q -rs --basetemp="$out/tmp" '
          '--junitxml="$out/junit.xml" {args}')


@dataclass
class Lane:
    """What the inner run left in its directory."""

    out: Path
    returncode: int
    console: str
    boot: dict[str, str] = field(default_factory=dict)
    layout: str = ""
    cases: list[tuple[str, str, str]] = field(default_factory=list)  # (name, outcome, msg)

    def log(self, tail: int = 60) -> str:
        p = self.out / "pytest.log"
        text = p.read_text(errors="replace") if p.exists() else "(no pytest.log)"
        return "\n".join(text.splitlines()[-tail:])


def _parse_junit(path: Path) -> list[tuple[str, str, str]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, msg = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[
                    child.tag]
                msg = (child.get("message") or "").splitlines()[0:1]
                msg = msg[0] if msg else ""
                break
        cases.append((name, outcome, msg))
    return cases


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the pytest that started UML dies (killed by
    a CI timeout, say), so that the lane stops running. (UML's idle helper processes
    outlive their kernel then; the normal paths kill UML's whole group.)"""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def boot(out: Path, args: list[str], timeout: float = BOOT_TIMEOUT,
         command: str | None = None) -> Lane:
    """Boot UML with an init running the inner pytest over *args* (or a shell
    *command*); kill it (its whole process group) if it outlives *timeout* seconds."""
    out.mkdir(parents=True, exist_ok=True)
    init = out / "init.sh"
    python = shlex.quote(sys.executable)
    if command is None:
        command = PYTEST.format(python=python, args=" ".join(shlex.quote(a) for a in args))
    init.write_text(INIT.format(out=shlex.quote(str(out)), repo=shlex.quote(str(REPO)),
                                python=python, command=command))
    init.chmod(0o755)
    console = out / "console.log"
    # a small sparse disk, so that the kernel has a block device (ubd0, 98:0) for io.max
    disk = out / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    cmd = [UML, "mem=1G", f"ubd0={disk}", "rootfstype=hostfs", "rootflags=/", "rw",
           f"init={init}", "con=null", "con0=fd:0,fd:1"]
    with open(console, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, preexec_fn=_die_with_parent)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -signal.SIGKILL
        # UML's helper processes share its group; none may outlive it. Orphans come to
        # us (the suite is a subreaper): reap them, or they would stay in the group.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            try:
                while os.waitpid(-proc.pid, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
            time.sleep(0.05)
    lane = Lane(out, rc, console.read_text(errors="replace"))
    if (out / "boot.json").exists():
        lane.boot = json.loads((out / "boot.json").read_text())
    if (out / "layout").exists():
        lane.layout = (out / "layout").read_text().strip()
    if (out / "junit.xml").exists():
        lane.cases = _parse_junit(out / "junit.xml")
    return lane


@pytest.fixture(scope="session")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Lane:
    if not os.path.exists(UML):
        pytest.fail("user-mode Linux is not installed (linux.uml; run `make deps`)")
    args = os.environ.get("CONTAIN_UML_TESTS", "").split() or INNER
    return boot(tmp_path_factory.mktemp("uml"), args)


def test_lane_booted_pure_v2(lane: Lane) -> None:
    """UML booted, its cgroup2 tree offers cpu, io, memory and pids, and contain detects
    the layout as pure v2 there."""
    assert lane.returncode != -signal.SIGKILL, \
        f"user-mode Linux killed after {BOOT_TIMEOUT:.0f}s\n{lane.console[-3000:]}"
    assert lane.boot, f"the lane's init did not run\n{lane.console[-3000:]}"
    assert lane.boot["fstype"] == "cgroup2fs"
    assert set(lane.boot["subtree"].split()) >= {"cpu", "io", "memory", "pids"}
    assert lane.layout == "v2", lane.layout


def test_lane_inner_tests_pass(lane: Lane) -> None:
    """Every inner test passed or skipped (saying why); a lane that ran no test fails."""
    if not lane.cases:
        pytest.fail(f"the inner pytest wrote no report\n{lane.log()}\n{lane.console[-2000:]}")
    bad = [c for c in lane.cases if c[1] in ("failed", "error")]
    passed = sum(1 for c in lane.cases if c[1] == "passed")
    skipped = [c for c in lane.cases if c[1] == "skipped"]
    print(f"\nUML lane: {passed} passed, {len(skipped)} skipped, {len(bad)} failed")
    for name, _, msg in skipped:
        print(f"  skipped {name}: {msg}")
    if bad:
        lines = "\n".join(f"  {o} {n}: {m}" for n, o, m in bad)
        pytest.fail(f"{len(bad)} inner test(s) failed in the UML lane:\n{lines}\n"
                    f"--- inner pytest log (tail) ---\n{lane.log()}")
    assert passed > 0


def test_lane_timeout_kills_uml(tmp_path: Path) -> None:
    """A lane that hangs is killed at its timeout, UML's helper processes with it, and
    the result says so (the outer tests report it instead of waiting forever)."""
    if not os.path.exists(UML):
        pytest.fail("user-mode Linux is not installed (linux.uml; run `make deps`)")
    lane = boot(tmp_path / "hang", [], timeout=15, command="sleep 600")
    assert lane.returncode == -signal.SIGKILL
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and
                 _cmdline(p).startswith(UML) and str(tmp_path) in _cmdline(p)]
    assert leftovers == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
