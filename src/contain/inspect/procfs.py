"""Read the isolation facts of one process from /proc and cgroupfs.

Every file of the target is read through one directory fd on ``/proc/<pid>``, so a pid
reused mid-read cannot mix two processes; the start time is read before and after, and
a process that is gone (or a zombie) at either end -- or whose files vanish in between --
is reported as :class:`ProcessGone`, never as a partial result.

The reference for "private" and "host" is the inspector's view of the initial
namespaces: pid 1 when it can be read, else pid 2 (kthreadd, a kernel thread, which
always lives in the initial namespaces). On machines where pid 1 is protected (a
BPF LSM, a foreign supervisor), pid 2 is what answers.
"""

from __future__ import annotations

import errno
import os

from contain.errors import ContainError, NotFound
from contain.inspect import SCHEMA, caps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NS_KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
UNLIMITED_BYTES = 1 << 62  # v1 prints PAGE_COUNTER_MAX * PAGE_SIZE for "no limit"


class ProcessGone(NotFound):
    """The process does not exist, or exited while it was being read."""


class AccessDenied(ContainError):
    """The inspector may not read this process."""


class _Proc:
    """One process, read through a directory fd on /proc/<pid>."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ProcessGone(f"process {pid} does not exist") from exc
        except PermissionError as exc:
            raise AccessDenied(f"process {pid}: permission denied reading /proc/{pid}") from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _fail(self, exc: OSError, what: str) -> ContainError:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return ProcessGone(f"process {self.pid} exited while it was being inspected")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return AccessDenied(f"process {self.pid}: permission denied reading "
                                f"/proc/{self.pid}/{what}")
        return ContainError(f"process {self.pid}: reading /proc/{self.pid}/{what}: "
                            f"{exc.strerror}")

    def read(self, name: str, optional: bool = False) -> str | None:
        """The text of /proc/<pid>/<name>; None when *optional* and absent/unreadable."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if optional and exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM,
                                          errno.EINVAL, errno.ENOTDIR):
                return None
            raise self._fail(exc, name) from exc
        try:
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
        except OSError as exc:
            if optional and exc.errno in (errno.EINVAL, errno.EACCES, errno.EPERM,
                                          errno.ENOPROTOOPT):
                return None
            raise self._fail(exc, name) from exc
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8", "replace")

    def readlink(self, name: str, optional: bool = False) -> str | None:
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError as exc:
            if optional and exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
                return None
            raise self._fail(exc, name) from exc

    def stat(self, name: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=self.fd)
        except OSError as exc:
            raise self._fail(exc, name) from exc

    def listdir(self, name: str) -> list[str]:
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            raise self._fail(exc, name) from exc
        try:
            return os.listdir(sub)
        except OSError as exc:
            raise self._fail(exc, name) from exc
        finally:
            os.close(sub)

    def start_state(self) -> tuple[int, str]:
        """(start time in ticks, state letter) from stat."""
        text = self.read("stat")
        assert text is not None
        fields = text[text.rfind(")") + 2:].split()
        return int(fields[19]), fields[0]


# -- parsing helpers --------------------------------------------------------------------

def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def parse_idmap(text: str | None) -> list[list[int]]:
    if not text:
        return []
    return [[int(x) for x in line.split()] for line in text.splitlines() if line.strip()]


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) + 0 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[dict[str, Any]]:
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10:
            continue
        sep = parts.index("-", 6)
        mounts.append({
            "id": int(parts[0]), "parent": int(parts[1]), "dev": parts[2],
            "root": _unescape(parts[3]), "mountpoint": _unescape(parts[4]),
            "options": parts[5].split(","), "optional": parts[6:sep],
            "fstype": parts[sep + 1], "source": _unescape(parts[sep + 2]),
            "super": parts[sep + 3].split(",") if len(parts) > sep + 3 else [],
        })
    return mounts


def propagation(optional: list[str]) -> str:
    """The mount's propagation type from mountinfo's optional fields."""
    kinds = []
    for field in optional:
        if field.startswith("shared:"):
            kinds.append("shared")
        elif field.startswith("master:"):
            kinds.append("slave")
        elif field == "unbindable":
            kinds.append("unbindable")
    return "+".join(kinds) if kinds else "private"


# -- the reference (host) view -----------------------------------------------------------

_REFERENCE: dict[str, Any] | None = None


def reference() -> dict[str, Any]:
    """The initial namespaces and root as this inspector can see them (cached)."""
    global _REFERENCE
    if _REFERENCE is not None:
        return _REFERENCE
    ref: dict[str, Any] | None = None
    notes = []
    # the kinds this kernel has (no time namespace before 5.6 or without CONFIG_TIME_NS)
    kinds = [k for k in NS_KINDS if os.path.lexists(f"/proc/self/ns/{k}")]
    for pid in (1, 2):
        try:
            ns = {k: os.readlink(f"/proc/{pid}/ns/{k}") for k in kinds}
            st = os.stat(f"/proc/{pid}/root")
        except OSError as exc:
            notes.append(f"pid {pid}: {exc.strerror}")
            continue
        ref = {"pid": pid, "ns": {k: _ns_inode(v) for k, v in ns.items()},
               "root": [st.st_dev, st.st_ino]}
        break
    if ref is None:  # fall back to ourselves
        st = os.stat("/")
        ref = {"pid": os.getpid(),
               "ns": {k: _ns_inode(os.readlink(f"/proc/self/ns/{k}")) for k in kinds},
               "root": [st.st_dev, st.st_ino]}
    ref["notes"] = notes
    _REFERENCE = ref
    return ref


def _ns_inode(link: str) -> int:
    return int(link[link.index("[") + 1:link.rindex("]")])


# -- cgroups ------------------------------------------------------------------------------

_CG_FLAGS = ("rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
             "nsdelegate", "memory_recursiveprot", "memory_localevents", "favordynmods")


def cgroup_mounts() -> dict[str, str]:
    """Hierarchy key -> mount point in our mount namespace: "memory", "cpu,cpuacct",
    "name=systemd", or "" for cgroup2."""
    with open("/proc/self/mountinfo") as f:
        mounts = parse_mountinfo(f.read())
    out: dict[str, str] = {}
    for m in mounts:
        if m["root"] != "/":
            continue
        if m["fstype"] == "cgroup2":
            out.setdefault("", m["mountpoint"])
        elif m["fstype"] == "cgroup":
            ctrls = [o for o in m["super"]
                     if o.startswith("name=") or ("=" not in o and o not in _CG_FLAGS)]
            out.setdefault(",".join(sorted(ctrls)), m["mountpoint"])
    return out


def _read_file(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ancestors(mount: str, path: str) -> list[tuple[str, str]]:
    """(cgroup path, directory) from the leaf up to the hierarchy root."""
    out = []
    rel = path.rstrip("/") or "/"
    while True:
        out.append((rel, os.path.join(mount, rel.lstrip("/"))))
        if rel == "/":
            break
        rel = os.path.dirname(rel) or "/"
    return out


def _int_or_none(text: str | None, unlimited: tuple[str, ...] = ("max", "-1")) -> int | None:
    if text is None or text in unlimited:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED_BYTES else value


def _min_limit(chain: list[tuple[str, str]], fname: str,
               conv: Any = _int_or_none) -> dict[str, Any] | None:
    """Leaf value and the effective (smallest) value walking up, with where it is set."""
    leaf: Any = None
    best: Any = None
    where = None
    seen = False
    for i, (cg, d) in enumerate(chain):
        raw = _read_file(os.path.join(d, fname))
        if raw is None:
            continue
        seen = True
        value = conv(raw)
        if i == 0:
            leaf = value
        if value is not None and (best is None or value < best):
            best, where = value, cg
    if not seen:
        return None
    return {"value": leaf, "effective": best, "set_at": where}


def _cpu_quota_v1(d: str) -> float | None:
    q = _int_or_none(_read_file(os.path.join(d, "cpu.cfs_quota_us")))
    p = _int_or_none(_read_file(os.path.join(d, "cpu.cfs_period_us")))
    if q is None or not p:
        return None
    return round(q / p, 3)


def _cpu_quota_v2(d: str) -> float | None:
    raw = _read_file(os.path.join(d, "cpu.max"))
    if not raw:
        return None
    quota, _, period = raw.partition(" ")
    if quota == "max" or not period:
        return None
    return round(int(quota) / int(period), 3)


def _chain_min(chain: list[tuple[str, str]], fn: Any) -> dict[str, Any] | None:
    leaf: Any = None
    best: Any = None
    where = None
    for i, (cg, d) in enumerate(chain):
        if not os.path.isdir(d):
            continue
        value = fn(d)
        if i == 0:
            leaf = value
        if value is not None and (best is None or value < best):
            best, where = value, cg
    return {"value": leaf, "effective": best, "set_at": where}


def _cpus(text: str | None) -> int:
    """Number of CPUs in a cpuset list like 0-3,6."""
    n = 0
    for part in (text or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _hierarchy_limits(key: str, mount: str, path: str) -> dict[str, Any]:
    """The limits one hierarchy imposes on cgroup *path* (only controllers it holds)."""
    chain = _ancestors(mount, path)
    leaf = chain[0][1]
    root = chain[-1][1]
    ctrls = set(key.split(",")) if key else set()
    v2 = key == ""
    if v2:
        have = _read_file(os.path.join(root, "cgroup.controllers")) or ""
        ctrls = set(have.split())
    out: dict[str, Any] = {}
    if "memory" in ctrls:
        if v2:
            out["memory"] = {"max": _min_limit(chain, "memory.max"),
                             "high": _min_limit(chain, "memory.high"),
                             "swap_max": _min_limit(chain, "memory.swap.max")}
        else:
            out["memory"] = {"max": _min_limit(chain, "memory.limit_in_bytes"),
                             "memsw_max": _min_limit(chain, "memory.memsw.limit_in_bytes"),
                             "soft": _min_limit(chain, "memory.soft_limit_in_bytes")}
    if "cpu" in ctrls:
        if v2:
            w = _read_file(os.path.join(leaf, "cpu.weight"))
            out["cpu"] = {"quota_cpus": _chain_min(chain, _cpu_quota_v2),
                          "weight": int(w) if w else None, "weight_default": 100}
        else:
            s = _read_file(os.path.join(leaf, "cpu.shares"))
            out["cpu"] = {"quota_cpus": _chain_min(chain, _cpu_quota_v1),
                          "weight": int(s) if s else None, "weight_default": 1024}
    if "cpuset" in ctrls:
        fname = "cpuset.cpus.effective" if v2 else "cpuset.effective_cpus"
        mname = "cpuset.mems.effective" if v2 else "cpuset.effective_mems"
        cpus = _read_file(os.path.join(leaf, fname))
        all_cpus = _read_file(os.path.join(root, fname)) or _read_file(
            os.path.join(root, "cpuset.cpus"))
        out["cpuset"] = {"cpus": cpus, "mems": _read_file(os.path.join(leaf, mname)),
                         "host_cpus": all_cpus,
                         "restricted": bool(cpus) and _cpus(cpus) < _cpus(all_cpus)}
    if "pids" in ctrls:
        out["pids"] = {"max": _min_limit(chain, "pids.max")}
    if "blkio" in ctrls or "io" in ctrls:
        rules: list[str] = []
        if v2:
            for cg, d in chain:
                for line in (_read_file(os.path.join(d, "io.max")) or "").splitlines():
                    if any(not part.endswith("=max") for part in line.split()[1:]):
                        rules.append(f"{cg}: {line}")
            w = _read_file(os.path.join(leaf, "io.weight"))
        else:
            for cg, d in chain:
                for fname in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
                              "blkio.throttle.read_iops_device",
                              "blkio.throttle.write_iops_device"):
                    for line in (_read_file(os.path.join(d, fname)) or "").splitlines():
                        rules.append(f"{cg}: {fname.split('.', 2)[2]} {line}")
            w = _read_file(os.path.join(leaf, "blkio.weight")) or _read_file(
                os.path.join(leaf, "blkio.bfq.weight"))
        out["io"] = {"throttle": rules, "weight": w}
    if "hugetlb" in ctrls:
        sizes: dict[str, Any] = {}
        try:
            names = os.listdir(leaf)
        except OSError:
            names = []
        suffix = ".max" if v2 else ".limit_in_bytes"
        for n in sorted(names):
            if n.startswith("hugetlb.") and n.endswith(suffix) and n.count(".") == 2:
                size = n.split(".")[1]
                sizes[size] = _min_limit(chain, n)
        out["hugetlb"] = sizes
    if "devices" in ctrls and not v2:
        restricted = None
        for cg, d in chain:
            rules_text = _read_file(os.path.join(d, "devices.list"))
            if rules_text is None:
                continue
            lines = rules_text.splitlines()
            if lines != ["a *:* rwm"]:
                restricted = {"set_at": cg, "rules": lines}
                break
        out["devices"] = {"restricted": restricted is not None,
                          "rules": restricted["rules"] if restricted else ["a *:* rwm"],
                          "set_at": restricted["set_at"] if restricted else None}
    if "freezer" in ctrls and not v2:
        state = _read_file(os.path.join(leaf, "freezer.state"))
        out["freezer"] = {"state": state or ("THAWED" if leaf == root else None)}
    if v2:
        frozen = any(_read_file(os.path.join(d, "cgroup.freeze")) == "1" for _, d in chain)
        out.setdefault("freezer", {"state": "FROZEN" if frozen else "THAWED"})
    return out


def read_cgroups(text: str) -> dict[str, Any]:
    """Hierarchies from /proc/<pid>/cgroup, joined to our mounts, with their limits."""
    mounts = cgroup_mounts()
    hierarchies = []
    limits: dict[str, Any] = {}
    v1 = v2 = False
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        ctrl, _, path = rest.partition(":")
        key = ",".join(sorted(ctrl.split(","))) if ctrl else ""
        mount = mounts.get(key)
        if mount is None and key:  # a co-mounted hierarchy listed in another order
            for k, m in mounts.items():
                if set(k.split(",")) == set(key.split(",")):
                    mount = m
        entry = {"id": int(hid), "controllers": ctrl.split(",") if ctrl else [],
                 "path": path, "mount": mount}
        hierarchies.append(entry)
        if key:
            v1 = v1 or not key.startswith("name=")
        else:
            v2 = True
        if mount is None or not os.path.isdir(os.path.join(mount, path.lstrip("/"))):
            continue
        for name, value in _hierarchy_limits(key, mount, path).items():
            limits.setdefault(name, value)
    # on hybrid machines an empty cgroup2 tree must not hide the v1 controllers
    version = "hybrid" if v1 and v2 else ("v2" if v2 else "v1")
    return {"version": version, "hierarchies": hierarchies, "limits": limits,
            "enforced": enforced_limits(limits)}


def enforced_limits(limits: dict[str, Any]) -> list[str]:
    """Names of the limits in force (a value other than the kernel's "no limit")."""
    out = []
    mem = limits.get("memory") or {}
    for k in ("max", "high", "swap_max", "memsw_max"):
        if (mem.get(k) or {}).get("effective") is not None:
            out.append(f"memory.{k}")
    cpu = limits.get("cpu") or {}
    if (cpu.get("quota_cpus") or {}).get("effective") is not None:
        out.append("cpu.quota")
    if cpu.get("weight") is not None and cpu.get("weight") != cpu.get("weight_default"):
        out.append("cpu.weight")
    if (limits.get("cpuset") or {}).get("restricted"):
        out.append("cpuset")
    if ((limits.get("pids") or {}).get("max") or {}).get("effective") is not None:
        out.append("pids.max")
    io = limits.get("io") or {}
    if io.get("throttle"):
        out.append("io.throttle")
    for size, lim in (limits.get("hugetlb") or {}).items():
        if lim and lim.get("effective") is not None:
            out.append(f"hugetlb.{size}")
    if (limits.get("devices") or {}).get("restricted"):
        out.append("devices")
    if (limits.get("freezer") or {}).get("state") in ("FROZEN", "FREEZING"):
        out.append("freezer")
    return out


# -- filesystem -------------------------------------------------------------------------

_DEV_BIND_MASKS = ("/null",)


def filesystem_facts(proc: _Proc, ref: dict[str, Any], mnt_private: bool) -> dict[str, Any]:
    mounts = parse_mountinfo(proc.read("mountinfo") or "")
    st = proc.stat("root")
    same = [st.st_dev, st.st_ino] == ref["root"]
    root_mounts = [m for m in mounts if m["mountpoint"] == "/"]
    root_mount = root_mounts[-1] if root_mounts else None
    if same:
        method = "host"
    elif root_mount is not None and mnt_private:
        method = "pivot_root"
    else:
        method = "chroot"
    masked = []
    readonly = []
    for m in mounts:
        mp = m["mountpoint"]
        if not (mp.startswith(("/proc/", "/sys/")) or mp == "/sys"):
            continue
        ro = "ro" in m["options"]
        if (m["fstype"] in ("devtmpfs", "tmpfs") and m["root"].endswith(_DEV_BIND_MASKS)) or \
                (m["fstype"] == "tmpfs" and ro and mp != "/sys"):
            masked.append(mp)
        elif m["fstype"] in ("proc", "sysfs") and ro:
            readonly.append(mp)
    out: dict[str, Any] = {
        "root": {
            "same_as_host": same,
            "method": method,
            "path_from_host": proc.readlink("root", optional=True),
            "readonly": bool(root_mount and "ro" in root_mount["options"]),
            "fstype": root_mount["fstype"] if root_mount else None,
            "source_root": root_mount["root"] if root_mount else None,
            "propagation": propagation(root_mount["optional"]) if root_mount else None,
        },
        "mounts": len(mounts),
        "masked_paths": sorted(masked),
        "readonly_paths": sorted(readonly),
        "propagation": _propagation_summary(mounts),
    }
    return out


def _propagation_summary(mounts: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in mounts:
        p = propagation(m["optional"])
        counts[p] = counts.get(p, 0) + 1
    return counts


# -- LSMs -------------------------------------------------------------------------------

def _active_lsms() -> list[str] | None:
    text = _read_file("/sys/kernel/security/lsm")
    return text.split(",") if text else None


def landlock_abi() -> int | None:
    """The kernel's Landlock ABI version (0 when the syscall exists but is disabled)."""
    try:
        from contain.linux.syscalls import syscall

        return syscall("landlock_create_ruleset", None, 0, 1)
    except (OSError, KeyError, AttributeError):
        return None


def lsm_facts(proc: _Proc) -> dict[str, Any]:
    labels: dict[str, str | None] = {}
    for name, rel in (("current", "attr/current"), ("apparmor", "attr/apparmor/current"),
                      ("smack", "attr/smack/current")):
        text = proc.read(rel, optional=True)
        labels[name] = text.strip("\x00\n ") or None if text is not None else None
    return {"active": _active_lsms(), "labels": labels,
            "landlock": {"kernel_abi": landlock_abi(), "domain": None,
                         "how": "the kernel does not expose a task's Landlock domain in /proc; "
                                "known only for processes contain confined itself"}}


# -- the whole process ----------------------------------------------------------------------

def _tracer(pid: int) -> dict[str, Any] | None:
    """Who traces the process, and whether that tracer is a syscall supervisor: it
    holds seccomp user-notification listeners (contain's notify supervisor seizes its
    workload only to kill it if it dies), or it is contain's ptrace supervisor."""
    if not pid:
        return None
    comm = _read_file(f"/proc/{pid}/comm")
    listeners = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:seccomp notify":
                    listeners += 1
            except OSError:
                continue
    except OSError:
        pass
    return {"pid": pid, "comm": comm, "notify_listeners": listeners}


def _kvm_fds(proc: _Proc) -> int:
    n = 0
    try:
        names = proc.listdir("fd")
    except AccessDenied:
        return 0
    for fd in names:
        target = proc.readlink(f"fd/{fd}", optional=True) or ""
        if target.startswith(("anon_inode:kvm", "/dev/kvm")):
            n += 1
    return n


def inspect_pid(pid: int, *, descendants: bool = False, surface: bool = False
                ) -> dict[str, Any]:
    """All facts about process *pid* (the ``--json`` document of ``contain inspect``).

    Raises ProcessGone / AccessDenied (both ContainError) with a one-line message."""
    if pid <= 0:
        raise ProcessGone(f"process {pid} does not exist")
    ref = reference()
    proc = _Proc(pid)
    try:
        start, state = proc.start_state()
        if state in ("Z", "X"):
            raise ProcessGone(f"process {pid} has exited (zombie)")
        facts = _collect(proc, ref, surface)
        facts["start_time"] = start
        end_start, end_state = proc.start_state()
        if end_start != start or end_state in ("Z", "X"):
            raise ProcessGone(f"process {pid} exited while it was being inspected")
    finally:
        proc.close()
    if descendants:
        facts["descendants"] = descendant_summary(pid)
    from contain.inspect import virt

    # context for every process here, apart from the process's own class
    facts["machine"] = virt.detect()
    from contain.inspect.classes import classify_facts

    facts["class"] = classify_facts(facts)
    return facts


def _collect(proc: _Proc, ref: dict[str, Any], surface: bool = False) -> dict[str, Any]:
    status = parse_status(proc.read("status") or "")
    namespaces: dict[str, Any] = {}
    for kind in NS_KINDS:
        link = proc.readlink(f"ns/{kind}", optional=kind == "time")
        if link is None:
            namespaces[kind] = {"inode": None, "host_inode": ref["ns"].get(kind),
                                "private": None}
            continue
        inode = _ns_inode(link)
        host = ref["ns"].get(kind)
        namespaces[kind] = {"inode": inode, "host_inode": host,
                            "private": None if host is None else inode != host}
    namespaces["user"]["uid_map"] = parse_idmap(proc.read("uid_map", optional=True))
    namespaces["user"]["gid_map"] = parse_idmap(proc.read("gid_map", optional=True))
    namespaces["pid"]["nspid"] = [int(x) for x in status.get("NSpid", "").split()]
    for kind in ("pid", "time"):
        link = proc.readlink(f"ns/{kind}_for_children", optional=True)
        if link is not None:
            namespaces[kind]["for_children"] = _ns_inode(link)

    last = caps.last_cap()
    full = caps.full_mask(last)
    sets: dict[str, Any] = {}
    for name, key in caps.SETS:
        mask = int(status.get(key, "0"), 16)
        sets[name] = {"hex": f"{mask:016x}", "names": caps.decode(mask),
                      "count": bin(mask).count("1")}
    eff = int(status.get("CapEff", "0"), 16)
    bnd = int(status.get("CapBnd", "0"), 16)
    capabilities = {
        "last_cap": last, "full_count": last + 1, "sets": sets,
        "missing": {"effective": caps.decode(full & ~eff), "bounding": caps.decode(full & ~bnd)},
        "in_user_namespace": namespaces["user"]["private"],
    }

    mode = int(status.get("Seccomp", "0") or 0)
    tracer = int(status.get("TracerPid", "0") or 0)
    seccomp = {"mode": mode, "mode_name": {0: "disabled", 1: "strict", 2: "filter"}.get(mode, "?"),
               "filters": int(status.get("Seccomp_filters", "0") or 0),
               "no_new_privs": status.get("NoNewPrivs") == "1", "profile": None}
    from contain.inspect.interception import kind_of, seccomp_interception

    n_filters = int(status.get("Seccomp_filters", "0") or 0) if mode == 2 else 0
    interception = seccomp_interception(proc.pid, n_filters, tracer, surface)
    seccomp["interception"] = interception
    seccomp["kind"], seccomp["kind_evidence"] = kind_of(interception, n_filters)
    cg_text = proc.read("cgroup") or ""
    cmdline = (proc.read("cmdline", optional=True) or "").split("\x00")
    facts: dict[str, Any] = {
        "schema": SCHEMA,
        "pid": proc.pid,
        "comm": (proc.read("comm") or "").strip(),
        "cmdline": [a for a in cmdline if a] if cmdline else [],
        "exe": proc.readlink("exe", optional=True),
        "ppid": int(status.get("PPid", "0") or 0),
        "uid": [int(x) for x in status.get("Uid", "").split()],
        "gid": [int(x) for x in status.get("Gid", "").split()],
        "reference": {"pid": ref["pid"], "notes": ref["notes"]},
        "namespaces": namespaces,
        "cgroups": read_cgroups(cg_text),
        "capabilities": capabilities,
        "seccomp": seccomp,
        "tracer": _tracer(tracer),
        "lsm": lsm_facts(proc),
        "filesystem": filesystem_facts(proc, ref, bool(namespaces["mnt"]["private"])),
        "hypervisor": {"kvm_fds": _kvm_fds(proc)},
    }
    return facts


def children(pid: int) -> list[int]:
    """Direct children of *pid* (all threads' children files)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        text = _read_file(f"/proc/{pid}/task/{tid}/children")
        if text:
            out.extend(int(x) for x in text.split())
    return out


def descendants_of(pid: int) -> list[int]:
    out = []
    todo = children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def descendant_summary(pid: int) -> dict[str, Any]:
    """Tracing, seccomp and KVM use anywhere below *pid* (a sandbox's helpers: gVisor's
    stub processes are traced by the Sentry, its Gofer runs under its own filters)."""
    traced = []
    filtered = []
    kvm = 0
    for p in descendants_of(pid):
        status = _read_file(f"/proc/{p}/status")
        if status is None:
            continue
        st = parse_status(status)
        if st.get("TracerPid", "0") != "0":
            traced.append(p)
        if st.get("Seccomp") == "2":
            filtered.append(p)
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    if os.readlink(f"/proc/{p}/fd/{fd}").startswith(("anon_inode:kvm",
                                                                     "/dev/kvm")):
                        kvm += 1
                except OSError:
                    pass
        except OSError:
            pass
    return {"count": len(descendants_of(pid)), "traced": traced, "seccomp_filtered": filtered,
            "kvm_fds": kvm}


def resolve_target(target: str, root: str) -> tuple[int, dict[str, Any] | None]:
    """TARGET of ``contain inspect``: a pid, ``self``, or a contain container id.
    Returns (pid, the container's state record as a dict or None)."""
    if target == "self":
        return os.getpid(), None
    if target.isdigit():
        return int(target), None
    from contain.container import store

    try:
        rec = store.load(root, target)
    except NotFound as exc:
        raise NotFound(f"no process or container {target!r} (not a pid, and no such "
                       f"container in {root})") from exc
    if rec.pid <= 0 or not rec.init_alive():
        raise ProcessGone(f"container {target} has no running process")
    return rec.pid, {"id": rec.id, "config": rec.config, "bundle": rec.bundle}


def profile_size(config: dict[str, Any]) -> dict[str, Any] | None:
    """The seccomp profile of a contain container's config, sized."""
    sec = (config.get("linux") or {}).get("seccomp")
    if not sec:
        return None
    default = sec.get("defaultAction", "")
    allowed: set[str] = set()
    denied: set[str] = set()
    for rule in sec.get("syscalls") or []:
        names = rule.get("names") or []
        if rule.get("action") in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG"):
            allowed.update(names)
        else:
            denied.update(names)
    return {"source": "container config", "default_action": default,
            "allowed_syscalls": len(allowed) if default not in ("SCMP_ACT_ALLOW",
                                                               "SCMP_ACT_LOG") else None,
            "denied_syscalls": len(denied), "rules": len(sec.get("syscalls") or [])}
