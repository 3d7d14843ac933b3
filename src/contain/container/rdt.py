"""linux.intelRdt: the container's resctrl group (Intel RDT / AMD PQoS), runtime-spec 1.3.

The spec's rules, in order: the group is ``closID`` (``/`` is the default group, the root
of resctrl), or the container's id when none is given; a group we make gets the schemata
(``l3CacheSchema``, then ``memBwSchema``, then each line of ``schemata``); an existing
``closID`` group with schemas given must already hold them; without schemas a ``closID``
group must exist. The init's pid goes to the group's ``tasks``; ``enableMonitoring``
makes ``mon_groups/<id>`` and puts the pid there too. On delete the monitoring group
goes, and the group itself only when we made it.

Where resctrl is not mounted (no RDT hardware, or a kernel without it) a config with
intelRdt fails at create, naming the field, as the spec asks.
"""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.spec.config import IntelRdt

FIELD = "$.linux.intelRdt"


def mountpoint(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where resctrl is mounted in our mount namespace, if it is."""
    try:
        with open(mountinfo) as f:
            for line in f:
                _, _, rest = line.partition(" - ")
                if rest.split(" ", 1)[0] == "resctrl":
                    return line.split()[4].replace("\\040", " ")
    except OSError:
        return None
    return None


def _kernel_has_resctrl() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "resctrl" for line in f if line.strip())
    except OSError:
        return False


def check(rdt: IntelRdt, root: str | None = None) -> str:
    """Before anything is created: resctrl is mounted; a closID group without schemas
    exists. The resctrl root."""
    from contain.spec.decode import fail

    root = root or mountpoint()
    if root is None:
        if _kernel_has_resctrl():
            raise fail(FIELD, "resctrl is not mounted (mount -t resctrl resctrl "
                       "/sys/fs/resctrl)")
        raise fail(FIELD, "this kernel has no resctrl filesystem (no Intel RDT / AMD "
                   "PQoS support)")
    if rdt.clos_id is not None and not rdt.has_schema() and \
            not os.path.isdir(_group_dir(root, rdt.clos_id)):
        raise fail(f"{FIELD}.closID", f"no resctrl group {rdt.clos_id!r} in {root}")
    if rdt.enable_monitoring and not os.path.isdir(os.path.join(root, "mon_groups")):
        raise fail(f"{FIELD}.enableMonitoring", "resctrl has no monitoring here "
                   "(no mon_groups)")
    return root


def _group_dir(root: str, clos_id: str) -> str:
    return root if clos_id == "/" else os.path.join(root, clos_id)


def _schema_lines(rdt: IntelRdt) -> list[str]:
    lines = []
    if rdt.l3_cache_schema:
        lines.append(rdt.l3_cache_schema)
    if rdt.mem_bw_schema:
        lines.append(rdt.mem_bw_schema)
    lines.extend(rdt.schemata)
    return lines


def _write(path: str, text: str, what: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise ContainError(f"linux.intelRdt: {what} ({path}): {exc.strerror}") from exc


def _matches(current: str, line: str) -> bool:
    """Whether the schemata file holds *line*: its resource's line, with the same value
    for every domain given (the file lists them all; the kernel may print hex wider)."""
    res, _, want = line.partition(":")
    for have in current.splitlines():
        hres, _, hval = have.strip().partition(":")
        if hres.strip() != res.strip():
            continue
        got = dict(p.split("=", 1) for p in hval.strip().split(";") if "=" in p)
        for part in want.strip().split(";"):
            dom, _, val = part.partition("=")
            old = got.get(dom.strip())
            if old is None:
                return False
            try:
                if int(old, 16) != int(val, 16):
                    return False
            except ValueError:
                if old.strip() != val.strip():
                    return False
        return True
    return False


def apply(rdt: IntelRdt, cid: str, pid: int, root: str | None = None) -> dict[str, Any]:
    """Put *pid* in the container's resctrl group (made and written as the spec says);
    what delete needs to undo it (kept in state.json)."""
    root = check(rdt, root)
    group = _group_dir(root, rdt.clos_id or cid)
    made = False
    done: dict[str, Any] = {"root": root, "group": group, "made": False, "mon": None}
    try:
        lines = _schema_lines(rdt)
        if lines:
            try:
                os.mkdir(group, 0o755)
                made = True
                done["made"] = True
            except FileExistsError:
                if rdt.clos_id is None:
                    raise ContainError(f"linux.intelRdt: resctrl group {group} exists "
                                       "already") from None
            except OSError as exc:
                raise ContainError(f"linux.intelRdt: mkdir {group}: {exc.strerror}") from exc
            schemata = os.path.join(group, "schemata")
            if made:
                for line in lines:  # one write per line: the kernel takes them in order
                    _write(schemata, line + "\n", "writing the schemata")
            else:
                with open(schemata) as f:
                    current = f.read()
                for line in lines:
                    if not _matches(current, line):
                        raise ContainError(f"linux.intelRdt: resctrl group {group} exists "
                                           f"with other schemata than {line!r}")
        elif rdt.clos_id is None:
            try:
                os.mkdir(group, 0o755)
            except OSError as exc:
                raise ContainError(f"linux.intelRdt: mkdir {group}: {exc.strerror}") from exc
            made = True
            done["made"] = True
        _write(os.path.join(group, "tasks"), str(pid), "adding the init to the group")
        if rdt.enable_monitoring:
            mon = os.path.join(group, "mon_groups", cid)
            try:
                os.mkdir(mon, 0o755)
            except OSError as exc:
                raise ContainError(f"linux.intelRdt.enableMonitoring: mkdir {mon}: "
                                   f"{exc.strerror}") from exc
            done["mon"] = mon
            _write(os.path.join(mon, "tasks"), str(pid), "adding the init to its "
                   "monitoring group")
    except BaseException:
        remove(done)
        raise
    return done


def remove(done: dict[str, Any] | None) -> None:
    """Undo :func:`apply`: the monitoring group, and the group when we made it (resctrl
    moves the tasks of a removed group to its parent)."""
    if not done:
        return
    for path, ours in ((done.get("mon"), True), (done.get("group"), done.get("made"))):
        if path and ours:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                from contain import log

                log.warning(f"linux.intelRdt: removing {path}: {exc.strerror}")
