"""Rootless containers: id maps for an unprivileged user.

A single mapping of the caller's own uid/gid is written directly (the kernel allows it
once setgroups is denied). Anything more -- several ranges, or ids other than the
caller's -- goes through the setuid helpers newuidmap/newgidmap, which check the user's
subordinate ranges in /etc/subuid and /etc/subgid; we check them first too, so a bad
mapping fails at create with the field named.
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.passwd import name_of
from contain.spec.decode import ID_MAX, fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contain.spec.config import IDMapping


def subordinate_ranges(path: str, uid: int) -> list[tuple[int, int]]:
    """(start, count) ranges granted to *uid* (by name or number) in /etc/subuid-style files."""
    name = name_of(uid)
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)):
                    start, count = int(parts[1]), int(parts[2])
                    # a range that reaches past the largest id (or 4294967295, which
                    # is no id) grants nothing here
                    if start >= 0 and count > 0 and start + count - 1 <= ID_MAX:
                        out.append((start, count))
    except (OSError, ValueError):
        pass
    return out


def check_mappings(maps: list[IDMapping], own_id: int, subfile: str, field: str) -> None:
    """Each mapping must be the caller's own id or inside a subordinate range."""
    ranges = subordinate_ranges(subfile, os.geteuid())
    for i, m in enumerate(maps):
        if m.host_id == own_id and m.size == 1:
            continue
        if not any(start <= m.host_id and m.host_id + m.size <= start + count
                   for start, count in ranges):
            raise fail(f"{field}[{i}]",
                       f"host ids {m.host_id}-{m.host_id + m.size - 1} are neither yours "
                       f"nor in your subordinate ranges ({subfile})")


def needs_helpers(uid_maps: list[IDMapping], gid_maps: list[IDMapping]) -> bool:
    simple_uid = len(uid_maps) == 1 and uid_maps[0].host_id == os.geteuid() \
        and uid_maps[0].size == 1
    simple_gid = len(gid_maps) == 1 and gid_maps[0].host_id == os.getegid() \
        and gid_maps[0].size == 1
    return not (simple_uid and simple_gid)


def write_maps_with_helpers(pid: int, uid_maps: list[IDMapping],
                            gid_maps: list[IDMapping]) -> None:
    import shutil
    import subprocess

    for tool, maps in (("newuidmap", uid_maps), ("newgidmap", gid_maps)):
        exe = shutil.which(tool)
        if exe is None:
            raise ContainError(f"{tool} is needed for multi-range id mappings "
                               "(install the uidmap package)")
        argv = [exe, str(pid)]
        for m in maps:
            argv += [str(m.container_id), str(m.host_id), str(m.size)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            raise ContainError(f"{tool} failed: {msg or f'exit status {proc.returncode}'}")
