"""Rootless containers, run by a real unprivileged user made for these tests (useradd,
removed afterwards): `spec --rootless` with its single-id mapping and no helpers, the
whole lifecycle, the default state root under $XDG_RUNTIME_DIR, multi-range mappings
through newuidmap/newgidmap with /etc/subuid and /etc/subgid, and mappings the user does
not own refused at create.

The user runs the system's Python (/usr/bin/python3.11) on the source tree: the
virtualenv's interpreter lives under /root, which other users cannot enter."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SRC, unique_id

SYSTEM_PYTHON = Path("/usr/bin/python3.11")
SUB_START = 1_300_000
SUB_COUNT = 65536

pytestmark = [
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3.11"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd"),
]


class User:
    def __init__(self, name: str, home: Path) -> None:
        pw = pwd.getpwnam(name)
        self.name = name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.home = home
        self.runtime_dir = home / "run"

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home),
               "USER": self.name, "XDG_RUNTIME_DIR": str(self.runtime_dir),
               "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(extra)
        return env

    def run(self, *argv: str, cwd: Path | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
        """Run argv as this user, with no capabilities (stdio in files: a detached
        container would hold a pipe open)."""
        out_path = self.home / f".out-{uuid.uuid4().hex}"
        err_path = self.home / f".err-{uuid.uuid4().hex}"
        with open(out_path, "w+") as out, open(err_path, "w+") as err:
            proc = subprocess.run(
                ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                 "--inh-caps=-all", *argv], stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, env=self.env(**env), cwd=cwd or self.home, timeout=timeout)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(),
                                                 err.read())
        out_path.unlink()
        err_path.unlink()
        return result

    def contain(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(str(SYSTEM_PYTHON), "-m", "contain", *args, **kw)


def _drop_lines(path: str, name: str) -> None:
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return
    keep = [line for line in lines if not line.startswith(f"{name}:")]
    if keep != lines:
        with open(path, "w") as f:
            f.writelines(keep)


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    name = f"ctest{uuid.uuid4().hex[:8]}"
    # outside pytest-of-root, which another root pytest on the machine may make 0700
    base = Path(tempfile.mkdtemp(prefix="contain-rootless-", dir="/tmp"))
    base.chmod(0o711)
    home = base / "home"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell",
                    "/bin/sh", "--user-group", name], check=True, capture_output=True)
    try:
        # subordinate ids of our own choosing (useradd may have added some too)
        for path in ("/etc/subuid", "/etc/subgid"):
            _drop_lines(path, name)
            with open(path, "a") as f:
                f.write(f"{name}:{SUB_START}:{SUB_COUNT}\n")
        u = User(name, home)
        home.mkdir()
        u.runtime_dir.mkdir(mode=0o700)
        for p in (home, u.runtime_dir):
            os.chown(p, u.uid, u.gid)
        yield u
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)
        for path in ("/etc/subuid", "/etc/subgid"):
            _drop_lines(path, name)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def bundle(user: User, busybox_rootfs: Path) -> Iterator[Path]:
    """A bundle the user owns (the rootfs files stay root's, as in an unpacked image
    made by root), with the config `contain spec --rootless` writes as that user."""
    path = user.home / f"bundle-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    shutil.copytree(busybox_rootfs, path / "rootfs", symlinks=True, copy_function=os.link)
    os.chown(path, user.uid, user.gid)
    proc = user.contain("spec", "--rootless", cwd=path)
    assert proc.returncode == 0, proc.stderr
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def edit(bundle: Path, **process: Any) -> dict[str, Any]:
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"].update(process)
    (bundle / "config.json").write_text(json.dumps(cfg))
    return cfg


def test_spec_rootless_shape(user: User, bundle: Path) -> None:
    cfg = json.loads((bundle / "config.json").read_text())
    linux = cfg["linux"]
    assert {"type": "user"} in linux["namespaces"]
    assert all(ns["type"] != "network" for ns in linux["namespaces"])
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
    assert "resources" not in linux


def test_rootless_run_single_mapping(user: User, bundle: Path) -> None:
    edit(bundle, args=["/bin/sh", "-c", "id -u; id -g; cat /proc/self/uid_map "
                       "/proc/self/gid_map; hostname; grep CapEff /proc/$$/status; "
                       "ls /sys/class/net | head -3; echo pid=$$"])
    proc = user.contain("run", unique_id(), cwd=bundle)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert lines[0] == ["0"] and lines[1] == ["0"]
    assert lines[2] == ["0", str(user.uid), "1"]
    assert lines[3] == ["0", str(user.gid), "1"]
    assert lines[4] == ["contain"]
    assert ["pid=1"] in lines
    assert "Traceback" not in proc.stderr
    # the default state root: $XDG_RUNTIME_DIR/contain, left empty
    root = user.runtime_dir / "contain"
    assert root.is_dir() and list(root.iterdir()) == []


def test_rootless_lifecycle(user: User, bundle: Path) -> None:
    edit(bundle, args=["/bin/sleep", "1000"])
    cid = unique_id()
    assert user.contain("create", "--bundle", str(bundle), cid).returncode == 0
    try:
        st = json.loads(user.contain("state", cid).stdout)
        assert st["status"] == "created"
        assert (user.runtime_dir / "contain" / cid / "state.json").exists()
        with open(f"/proc/{st['pid']}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(user.uid)] * 4  # never root on the host
        assert user.contain("start", cid).returncode == 0
        assert json.loads(user.contain("state", cid).stdout)["status"] == "running"
        listed = user.contain("list", "-q").stdout.split()
        assert listed == [cid]
        assert user.contain("kill", cid, "KILL").returncode == 0
        for _ in range(500):
            if json.loads(user.contain("state", cid).stdout)["status"] == "stopped":
                break
        assert json.loads(user.contain("state", cid).stdout)["status"] == "stopped"
        assert user.contain("delete", cid).returncode == 0
        assert not (user.runtime_dir / "contain" / cid).exists()
    finally:
        user.contain("delete", "--force", cid)


def test_rootless_user_cannot_see_roots_containers(user: User, bundle: Path,
                                                   state_root: Path) -> None:
    proc = user.contain("--root", str(state_root), "list")
    assert proc.returncode in (0, 1)
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("newuidmap") is None, reason="newuidmap missing (uidmap)")
def test_rootless_multi_range_through_newuidmap(user: User, bundle: Path) -> None:
    cfg = edit(bundle, args=["/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; "
                             "id -u; id -g"], user={"uid": 1000, "gid": 1000})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": user.uid, "size": 1},
                                   {"containerID": 1, "hostID": SUB_START, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": user.gid, "size": 1},
                                   {"containerID": 1, "hostID": SUB_START, "size": 65536}]
    (bundle / "config.json").write_text(json.dumps(cfg))
    proc = user.contain("run", unique_id(), cwd=bundle)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert ["0", str(user.uid), "1"] in lines
    assert ["1", str(SUB_START), "65536"] in lines
    assert lines[-2:] == [["1000"], ["1000"]]


@pytest.mark.parametrize("mapping, field", [
    ([{"containerID": 0, "hostID": 0, "size": 1}], "$.linux.uidMappings[0]"),
    ([{"containerID": 0, "hostID": "own", "size": 1},
      {"containerID": 1, "hostID": SUB_START + SUB_COUNT - 10, "size": 100}],
     "$.linux.uidMappings[1]"),
])
def test_rootless_mapping_not_owned_is_refused(user: User, bundle: Path,
                                               mapping: list[dict[str, Any]],
                                               field: str) -> None:
    cfg = edit(bundle, args=["/bin/true"])
    for m in mapping:
        if m["hostID"] == "own":
            m["hostID"] = user.uid
    cfg["linux"]["uidMappings"] = mapping
    (bundle / "config.json").write_text(json.dumps(cfg))
    cid = unique_id()
    proc = user.contain("run", cid, cwd=bundle)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert field in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (user.runtime_dir / "contain" / cid).exists()


def test_rootless_resources_without_a_delegated_cgroup(user: User, bundle: Path) -> None:
    """The controllers are mounted but the user may not make a cgroup in them: the
    warning says so (not delegated), naming the controller and the cgroup, never "not
    mounted"."""
    cfg = edit(bundle, args=["/bin/true"])
    cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 100}}
    cfg["linux"]["cgroupsPath"] = "/contain-rootless-test"
    (bundle / "config.json").write_text(json.dumps(cfg))
    proc = user.contain("run", unique_id(), cwd=bundle)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "level=warning" in err, err
    assert "resources not applied" in err and "not mounted" not in err, err
    mount = ("/sys/fs/cgroup/memory" if os.path.isdir("/sys/fs/cgroup/memory")
             else "/sys/fs/cgroup")  # (v1 or hybrid; pure v2)
    assert "memory" in err and "not delegated to this user" in err, err
    assert f"{mount}/contain-rootless-test cannot be made in {mount}" in err, err


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/cpuacct"),
                    reason="needs cgroup v1 with cpu and cpuacct mounted apart")
def test_rootless_cgroup_delegated_in_one_hierarchy_only(user: User, bundle: Path) -> None:
    """The user may make the cgroup in the cpu hierarchy (its parent is theirs) but not in
    the next one: the cpu directory is given up too, and a CPU limit says that, not
    "not delegated" nor "not mounted"."""
    parent = Path(f"/sys/fs/cgroup/cpu/{unique_id('deleg')}")
    parent.mkdir()
    try:
        os.chown(parent, user.uid, user.gid)
        cfg = edit(bundle, args=["/bin/true"])
        cfg["linux"]["resources"] = {"cpu": {"shares": 512}}
        cfg["linux"]["cgroupsPath"] = f"/{parent.name}/c"
        (bundle / "config.json").write_text(json.dumps(cfg))
        proc = user.contain("run", unique_id(), cwd=bundle)
        assert proc.returncode == 0, proc.stderr
        err = proc.stderr.strip()
        assert "a CPU limit needs the cpu cgroup controller, which is left out, as the " \
               "container's cgroup could not be made in every hierarchy" in err, err
        assert not (parent / "c").exists()
    finally:
        parent.rmdir()
