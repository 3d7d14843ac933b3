"""The systemd lane: the systemd cgroup driver's tests under a real systemd.

This machine's PID 1 is not systemd, so the lane boots Debian's systemd (252) as the
init of user-mode Linux (the kernel of tests/test_uml_lane.py: Linux 6.1 as a process,
the host's filesystem as its root, a pure cgroup v2 hierarchy). A first stage writes
the units into UML's own /run (a tmpfs: nothing of the host's systemd configuration is
read or changed) and execs systemd with ``--unit=contain-test.service``; that unit and
the D-Bus system bus it needs (Debian's dbus.socket/dbus.service, with drop-ins that cut
their default dependencies) are all systemd starts, so it is up in about 2 s. The unit
runs the inner pytest over tests/test_systemd.py and containerd's shim with
SystemdCgroup (tests/engines/test_containerd_systemd.py), then powers UML off. The outer test
reads the JUnit report: each inner test must pass (none may skip for want of systemd).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

import pytest

from conftest import REPO
from test_uml_lane import INSIDE, PYTEST, UML, Lane, boot

pytestmark = pytest.mark.skipif(INSIDE or os.environ.get("CONTAIN_SYSTEMD_LANE") == "1",
                                reason="already inside a user-mode Linux lane")

INNER_TESTS = ["tests/test_systemd.py", "tests/engines/test_containerd_systemd.py"]
TIMEOUT = float(os.environ.get("CONTAIN_SYSTEMD_LANE_TIMEOUT", "600"))

UNIT = """[Unit]
Description=contain's systemd lane
DefaultDependencies=no
Requires=dbus.socket dbus.service
After=dbus.socket dbus.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Environment=HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 CONTAIN_SYSTEMD_LANE=1
# UML's kernel has no overlayfs built in, and its module would sit on hostfs: ctr's
# images and containers use the native snapshotter (copies)
Environment=CONTAINERD_SNAPSHOTTER=native
WorkingDirectory={repo}
ExecStart=/bin/sh {out}/inner.sh
TimeoutStartSec=infinity
"""
NO_DEFAULT_DEPS = "[Unit]\nDefaultDependencies=no\n"
INNER = """#!/bin/sh
out={out}
# systemd takes its bus name as soon as dbus.service is up; wait for it (10 s at most)
i=0
until busctl --system status org.freedesktop.systemd1 >/dev/null 2>&1 || [ $i -ge 100 ]; do
  sleep 0.1; i=$((i+1))
done
{pytest} > "$out/pytest.log" 2>&1
echo $? > "$out/rc"
sync
"""
# Units that must never start in the lane: with the host's filesystem as UML's root, a
# unit that pulls in sysinit.target runs systemd-tmpfiles --remove --boot, which empties
# the host's /tmp (and journald, udev, logind write to /var). They are masked, and the
# host's tree is read-only in the lane anyway (see STAGE).
MASKED = ("sysinit.target", "basic.target", "sockets.target", "timers.target",
          "local-fs.target", "systemd-tmpfiles-setup.service",
          "systemd-tmpfiles-setup-dev.service", "systemd-tmpfiles-clean.service",
          "systemd-tmpfiles-clean.timer", "systemd-logind.service", "systemd-journald.service",
          "systemd-journald.socket", "systemd-journald-dev-log.socket",
          "systemd-udevd.service", "systemd-sysusers.service", "systemd-update-utmp.service",
          "ldconfig.service", "user@.service", "user-runtime-dir@.service")
# The lane's first stage (after test_uml_lane's init has mounted /proc, /sys, /run and
# a cgroup2 tree, which systemd mounts itself: given back to it). The host's tree is
# made read-only for the whole lane (a read-only bind of /), with tmpfs on /tmp and
# /var/tmp; only the lane's own directory is bound back writable, and the checkout
# (which may itself live under /tmp or /var/tmp) is bound back read-only.
STAGE = """set -e
mkdir -p /run/lane-out /run/lane-repo
mount --bind {out} /run/lane-out
mount --bind {repo} /run/lane-repo
mount -o remount,bind,ro /
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mkdir -p {out} {repo}
mount --bind /run/lane-out {out}
mount --bind /run/lane-repo {repo}
mount -o remount,bind,ro {repo}
for u in dbus.service dbus.socket; do
  mkdir -p /run/systemd/system/$u.d
  cp {out}/no-default-deps.conf /run/systemd/system/$u.d/
done
for u in {masked}; do ln -sf /dev/null /run/systemd/system/$u; done
cp {out}/contain-test.service /run/systemd/system/
umount /sys/fs/cgroup
set +e
exec /lib/systemd/systemd --unit=contain-test.service --log-target=console --show-status=0"""


@pytest.fixture(scope="module")
def sd_lane(tmp_path_factory: pytest.TempPathFactory) -> Lane:
    if not os.path.exists(UML):
        pytest.fail("user-mode Linux is not installed (linux.uml; run `make deps`)")
    if not os.path.exists("/lib/systemd/systemd") or not os.path.exists("/usr/bin/dbus-daemon"):
        pytest.fail("systemd and dbus are needed for the systemd lane (run `make deps`)")
    out = tmp_path_factory.mktemp("sdlane")
    q = shlex.quote(str(out))
    python = shlex.quote(sys.executable)
    (out / "contain-test.service").write_text(UNIT.format(repo=REPO, out=out))
    (out / "no-default-deps.conf").write_text(NO_DEFAULT_DEPS)
    tests = os.environ.get("CONTAIN_SYSTEMD_LANE_TESTS") or " ".join(INNER_TESTS)
    (out / "inner.sh").write_text(INNER.format(
        out=q, pytest=PYTEST.format(python=python, args=tests)))
    return boot(out, [], timeout=TIMEOUT, command=STAGE.format(out=q, repo=shlex.quote(str(REPO)),
                                                               masked=" ".join(MASKED)))


def test_systemd_lane(sd_lane: Lane) -> None:
    """systemd booted as init, and every test of tests/test_systemd.py passed under it:
    none failed, and none skipped for want of systemd."""
    assert sd_lane.returncode != -signal.SIGKILL, \
        f"user-mode Linux killed after {TIMEOUT:.0f}s\n{sd_lane.console[-3000:]}"
    assert "systemd 2" in sd_lane.console, \
        f"systemd did not start as init\n{sd_lane.console[-3000:]}"
    if not sd_lane.cases:
        pytest.fail(f"the inner pytest wrote no report\n{sd_lane.log()}\n"
                    f"{sd_lane.console[-3000:]}")
    bad = [c for c in sd_lane.cases if c[1] != "passed" and "systemd is running" not in c[2]]
    if bad:
        lines = "\n".join(f"  {o} {n}: {m}" for n, o, m in bad)
        pytest.fail(f"{len(bad)} inner test(s) did not pass under systemd:\n{lines}\n"
                    f"--- inner pytest log (tail) ---\n{sd_lane.log()}")
    names = {n.rsplit("::", 1)[-1] for n, o, _ in sd_lane.cases if o == "passed"}
    assert {"test_scope_lifecycle", "test_scope_device_rules", "test_shim_with_systemd_cgroup",
            "test_lane_leaves_the_host_alone"} <= names, names
    print(f"\nsystemd lane: {len(names)} passed")

