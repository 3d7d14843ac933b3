"""ID-mapped bind mounts (runtime-spec 1.2 mount uidMappings/gidMappings), for real."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_contain, unique_id


def _idmapped_bundle(make_bundle, tmp_path: Path, options: list[str]):  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine").write_text("x")
    os.chown(data / "mine", 0, 0)
    (data / "theirs").write_text("y")
    os.chown(data / "theirs", 500, 500)
    bundle = make_bundle(["sh", "-c", "ls -ln /data; grep ' /data ' /proc/self/mountinfo"])
    bundle.config["mounts"].append({
        "destination": "/data", "type": "bind", "source": str(data), "options": options,
        "uidMappings": [{"containerID": 0, "hostID": 2000, "size": 1000}],
        "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 1000}],
    })
    return bundle.write()


def test_idmapped_mount_shifts_owners(make_bundle, state_root, tmp_path):  # type: ignore[no-untyped-def]
    """On-disk ids inside the mapping's container range appear as the host range."""
    bundle = _idmapped_bundle(make_bundle, tmp_path, ["rbind", "ro"])
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[-1]: line.split() for line in proc.stdout.splitlines()
             if line.startswith("-")}
    assert lines["mine"][2:4] == ["2000", "2000"]      # on-disk 0 -> 2000
    assert lines["theirs"][2:4] == ["2500", "2500"]    # on-disk 500 -> 2500
    assert "idmapped" in proc.stdout


def test_idmapped_mapping_without_gid_is_refused(make_bundle, state_root, tmp_path):  # type: ignore[no-untyped-def]
    bundle = _idmapped_bundle(make_bundle, tmp_path, ["rbind"])
    del bundle.config["mounts"][-1]["gidMappings"]
    bundle.write()
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 1
    assert "uidMappings and gidMappings must be given together" in proc.stderr
    assert "Traceback" not in proc.stderr


def _maps_seen_in(userns_fd: int) -> tuple[str, str]:
    """The uid_map and gid_map of a user namespace, read by a child that joins it."""
    from contain.linux import consts as c
    from contain.linux.syscalls import setns

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # (single-threaded: setns into a user namespace needs it)
        try:
            os.close(r)
            setns(userns_fd, c.CLONE_NEWUSER)
            with open("/proc/self/uid_map") as f1, open("/proc/self/gid_map") as f2:
                os.write(w, (f1.read() + "|" + f2.read()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read().decode()
    os.waitpid(pid, 0)
    uid_map, _, gid_map = data.partition("|")
    return " ".join(uid_map.split()), " ".join(gid_map.split())


def test_userns_for_an_idmap_has_the_maps_without_a_fork(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The namespace comes from a child that shares our memory and exits at once (its
    maps written while it is a zombie), or, where linux.syscalls cannot make one, from a
    fork: the same maps either way, and no process left behind (the leak check)."""
    from contain.linux import syscalls
    from contain.rootfs.idmap import userns_fd_for
    from contain.spec.config import IDMapping

    uid = [IDMapping(container_id=0, host_id=2000, size=1000)]
    gid = [IDMapping(container_id=0, host_id=3000, size=10)]
    ours = os.readlink("/proc/self/ns/user")
    made = []
    for _way in ("clone", "fork"):
        fd = userns_fd_for(uid, gid)
        try:
            assert os.readlink(f"/proc/self/fd/{fd}").startswith("user:[")
            assert os.readlink(f"/proc/self/fd/{fd}") != ours
            made.append(os.readlink(f"/proc/self/fd/{fd}"))
            assert _maps_seen_in(fd) == ("0 2000 1000", "0 3000 10")
        finally:
            os.close(fd)
        monkeypatch.setattr(syscalls, "_NR_GETPID", {})  # (the second way: the fork)
    assert made[0] != made[1]
