"""contain on an older, smaller kernel: Linux 6.1 of Debian's user-mode Linux, which lacks
time namespaces, Landlock, PSI, cpuset, hugetlb and CRIU's kernel support (the list is
in docs/hosts.md). Feature detection must degrade with a clear one-line message, never a
traceback. These tests run only inside the UML lane (tests/test_uml_lane.py); on the
host they skip.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Bundle, run_contain, unique_id

pytestmark = pytest.mark.skipif(os.environ.get("CONTAIN_UML_LANE") != "1",
                                reason="runs inside the user-mode Linux lane only")


def test_the_lane_kernel() -> None:
    """The lane is what it claims: Linux 6.1, pure cgroup v2, no time namespaces."""
    from contain.cgroups.fs import detect_layout

    assert platform.release().startswith("6.1."), platform.release()
    assert detect_layout() == "v2"
    assert not os.path.exists("/proc/self/ns/time")


def test_time_namespace_refused_clearly(make_bundle: Callable[..., Bundle],
                                        state_root: Path) -> None:
    """A config asking for a time namespace on a kernel without them: one line naming
    the field (unshare alone would say EINVAL), exit 1, no state directory."""
    bundle = make_bundle(["/bin/true"])
    bundle.config["linux"]["namespaces"].append({"type": "time"})
    bundle.write()
    cid = unique_id("tns")
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "$.linux.namespaces[" in proc.stderr and "no time namespaces" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (state_root / cid).exists()


def test_inspect_without_time_namespaces(state_root: Path) -> None:
    """`contain inspect self` reads what the kernel has and reports the time namespace
    as absent (it raised FileNotFoundError on /proc/self/ns/time)."""
    proc = run_contain(state_root, "inspect", "--json", "self")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["namespaces"]["time"]["inode"] is None
    assert facts["namespaces"]["pid"]["private"] is False


def test_features_and_a_container_run(make_bundle: Callable[..., Bundle],
                                      state_root: Path) -> None:
    """`features` answers, and a default container (seccomp, eBPF device filter, all the
    namespaces the kernel has) runs, in its own cgroup2 directory with the limits."""
    proc = run_contain(state_root, "features")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["linux"]["cgroup"]["v2"] is True
    bundle = make_bundle(["/bin/sh", "-c", "grep Seccomp: /proc/self/status; "
                          "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids.max"])
    bundle.config["linux"]["resources"] = {"pids": {"limit": 17}}
    bundle.config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mknod"], "action": "SCMP_ACT_ERRNO"}]}
    bundle.write()
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id("ft"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Seccomp:", "2", "0::/", "17"], proc.stdout
