"""Cgroup filesystem plumbing: layout detection, mount points, own cgroup, path rules,
and file reads/writes with plain os.open/os.write (one syscall each, no buffering)."""

from __future__ import annotations

import os

from contain.errors import ContainError

CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED_HYBRID = "/sys/fs/cgroup/unified"

# v1 controllers a container joins, in the order runc's fs driver lists them
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "blkio", "pids",
                  "net_cls", "net_prio", "hugetlb", "perf_event", "rdma", "misc", "name=systemd")

_cache: dict[str, object] = {}


def detect_layout() -> str:
    """"v2" (cgroup2 at /sys/fs/cgroup), "hybrid" (v1 plus a cgroup2 tree at
    /sys/fs/cgroup/unified) or "v1". Cached for the life of the process."""
    layout = _cache.get("layout")
    if layout is None:
        if os.path.exists(CGROUP_ROOT + "/cgroup.controllers"):
            layout = "v2"
        elif os.path.exists(UNIFIED_HYBRID + "/cgroup.controllers"):
            layout = "hybrid"
        else:
            layout = "v1"
        _cache["layout"] = layout
    return str(layout)


def v1_mounts() -> dict[str, tuple[str, str]]:
    """controller -> (mount point, root of the mount) of the v1 hierarchies, first mount of
    each controller (combined mounts such as cpu,cpuacct list both names)."""
    cached = _cache.get("v1_mounts")
    if cached is not None:
        return cached  # type: ignore[return-value]
    out: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read().decode("utf-8", "replace")
    for line in data.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields = post.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        parts = pre.split()
        root, mnt = _unescape(parts[3]), _unescape(parts[4])
        for opt in fields[2].split(","):
            if opt in V1_CONTROLLERS and opt not in out:
                out[opt] = (mnt, root)
    _cache["v1_mounts"] = out
    return out


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def own_cgroups(pid: str = "self") -> dict[str, str]:
    """controller -> cgroup path of *pid* from /proc/<pid>/cgroup ("" for cgroup2)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup", "rb") as f:
        data = f.read().decode("utf-8", "replace")
    for line in data.splitlines():
        _hier, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if not ctrls:
            out[""] = path
            continue
        for c in ctrls.split(","):
            out[c] = path
    return out


def unified_mount() -> str | None:
    layout = detect_layout()
    if layout == "v2":
        return CGROUP_ROOT
    if layout == "hybrid":
        return UNIFIED_HYBRID
    return None


def check_cgroups_path(path: str | None) -> str | None:
    """Refuse the systemd "slice:prefix:name" form and '..' escaping; return the path
    normalised (no empty or '.' components), or None for the default."""
    if path is None or path == "":
        return None
    if "\0" in path:
        raise ContainError(f"invalid cgroupsPath {path!r}: contains a NUL byte")
    if not path.startswith("/") and path.count(":") == 2 and "/" not in path:
        raise ContainError(
            f"cgroupsPath {path!r} is in the systemd form slice:prefix:name, which needs the "
            "systemd cgroup driver (--systemd-cgroup); the cgroupfs driver takes a path such "
            "as /mygroup/ctr (absolute) or mygroup/ctr (relative)")
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise ContainError(f"invalid cgroupsPath {path!r}: '..' escapes the cgroup "
                                   "hierarchy")
            parts.pop()
            continue
        parts.append(comp)
    if not parts:
        raise ContainError(f"invalid cgroupsPath {path!r}: names the root cgroup itself")
    joined = "/".join(parts)
    return "/" + joined if path.startswith("/") else joined


def join_under(mount: str, mount_root: str, own: str, inner: str) -> str:
    """The directory of *inner* in a hierarchy mounted at *mount* whose mount root is
    *mount_root*: absolute paths hang from the mount, relative ones from the caller's own
    cgroup (runc's cgroupfs rule)."""
    if inner.startswith("/"):
        return mount + inner
    base = own
    if mount_root not in ("", "/") and (base == mount_root or base.startswith(mount_root + "/")):
        base = base[len(mount_root):]
    base = base.rstrip("/")
    return f"{mount}{base}/{inner}" if base else f"{mount}/{inner}"


# -- file io ------------------------------------------------------------------------------

def write_text(path: str, name: str, value: str) -> None:
    fd = os.open(f"{path}/{name}", os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_text(path: str, name: str) -> str:
    fd = os.open(f"{path}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def read_int(path: str, name: str, default: int = 0) -> int:
    """An integer file; "max" reads as -1, a missing file as *default*."""
    try:
        text = read_text(path, name).strip()
    except FileNotFoundError:
        return default
    if text == "max":
        return -1
    try:
        return int(text.split()[0]) if text else default
    except ValueError:
        return default


def read_keyed(path: str, name: str) -> dict[str, int]:
    """A flat keyed file ("key value" per line)."""
    out: dict[str, int] = {}
    try:
        text = read_text(path, name)
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def parse_list(text: str) -> list[int]:
    """A cpu/mem list such as "0-3,5" -> [0, 1, 2, 3, 5]; ValueError when malformed."""
    out: list[int] = []
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if dash:
            a, b = int(lo), int(hi)
            if a < 0 or b < a:
                raise ValueError(part)
            out.extend(range(a, b + 1))
        else:
            n = int(lo)
            if n < 0:
                raise ValueError(part)
            out.append(n)
    return out
