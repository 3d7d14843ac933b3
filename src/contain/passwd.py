"""Looking a uid up in a passwd file (the host's, or the container's once pivoted)."""

from __future__ import annotations


def entry(uid: int, path: str = "/etc/passwd") -> list[str] | None:
    """The fields of *uid*'s line (name, password, uid, gid, gecos, home, shell)."""
    key = str(uid)
    try:
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 5 and fields[2] == key:
                    return fields
    except OSError:
        pass
    return None


def name_of(uid: int) -> str | None:
    fields = entry(uid)
    return fields[0] if fields else None


def home_of(uid: int) -> str:
    fields = entry(uid)
    return (fields[5] if fields else "") or "/"
