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
