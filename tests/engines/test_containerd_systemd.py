"""containerd's runc v2 shim with the systemd cgroup driver (SystemdCgroup = true): the
shim passes --systemd-cgroup and a slice:prefix:name cgroupsPath to contain, whose
container becomes a systemd scope. Needs systemd as PID 1: the systemd lane
(tests/test_systemd_lane.py) runs this file; elsewhere it skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import IMAGE_NAME, Containerd, subcommand, unique
from .test_containerd import _remove, _wait_status

pytestmark = [pytest.mark.engines,
              pytest.mark.skipif(not Path("/run/systemd/system").is_dir(),
                                 reason="needs systemd as PID 1 (the systemd lane, "
                                        "tests/test_systemd_lane.py, runs this)")]


def _show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", "-p", ",".join(props), unit],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_shim_with_systemd_cgroup(containerd: Containerd) -> None:
    """`ctr run --runc-systemd-cgroup` (the shim option SystemdCgroup, which CRI's
    runtime config sets): the task runs in the scope system.slice/ctd-ID.scope with its
    memory limit, exec works, and deleting the task removes the scope."""
    cid = unique("ctdsd")
    unit = f"ctd-{cid}.scope"
    scope = Path("/sys/fs/cgroup/system.slice") / unit
    mark = containerd.session.mark()
    proc = containerd.ctr("run", "--detach", *containerd.run_flags(), "--runc-systemd-cgroup",
                          "--cgroup", f"system.slice:ctd:{cid}",
                          "--memory-limit", str(64 << 20), IMAGE_NAME, cid, "sleep", "600")
    try:
        assert proc.returncode == 0, f"{proc.stderr}\n{containerd.diagnose(mark)}"
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING", containerd.diagnose(mark)
        props = _show(unit, "ActiveState", "MemoryMax", "ControlGroup")
        assert props["ActiveState"] == "active", props
        assert props["MemoryMax"] == str(64 << 20), props
        assert (scope / "memory.max").read_text().strip() == str(64 << 20)
        out = containerd.exec(cid, "cat", "/proc/self/cgroup")
        assert out.returncode == 0, f"{out.stderr}\n{containerd.diagnose(mark)}"
    finally:
        _remove(containerd, cid)
    calls = containerd.session.calls_since(mark, "containerd-runtime")
    create = next(c for c in calls if subcommand(c) == "create")
    assert "--systemd-cgroup" in create, create
    assert not scope.exists()
    assert _show(unit, "LoadState")["LoadState"] == "not-found"
