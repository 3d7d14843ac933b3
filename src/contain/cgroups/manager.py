"""The container's cgroup: :class:`Manager` over the v1, v2 and hybrid layouts, and its
construction (:func:`new_manager`, :func:`load_manager`). Imported through the package
(``from contain.cgroups import Manager``), which loads this module on first use."""

from __future__ import annotations

import errno
import os

from contain.cgroups.fs import detect_layout
from contain.errors import ContainError, message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups.stats import Stats
    from contain.spec.config import Resources

UNIFIED = "unified"  # the key of the cgroup2 directory in Manager.paths()
_PRIMARY = ("pids", "memory", "freezer", "devices", "cpu", UNIFIED)
_PERM_ERRNOS = (errno.EPERM, errno.EACCES, errno.EROFS)


class Manager:
    """A container's cgroup in every hierarchy of the host's layout."""

    __slots__ = ("_paths", "created", "layout", "path", "rootless", "unified_mount",
                 "undelegated")

    def __init__(self, layout: str, paths: dict[str, str], *, rootless: bool = False,
                 created: dict[str, int] | None = None, path: str = "",
                 unified_mount: str | None = None,
                 undelegated: dict[str, str] | None = None) -> None:
        self.layout = layout
        self._paths = paths
        self.rootless = rootless
        self.created: dict[str, int] = created or {}
        # rootless: the hierarchies left out because the user could not make the
        # cgroup there (controller -> why), for the errors of limits there
        self.undelegated: dict[str, str] = undelegated or {}
        self.path = path  # the cgroupsPath as resolved (absolute or relative)
        # where the cgroup2 tree is mounted (a fake tree in tests)
        self.unified_mount = unified_mount or (
            "/sys/fs/cgroup" if layout == "v2" else
            "/sys/fs/cgroup/unified" if UNIFIED in paths else None)

    # -- description ---------------------------------------------------------------

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layout": self.layout, "path": self.path, "paths": self._paths}
        if self.rootless:
            out["rootless"] = True
            out["undelegated"] = self.undelegated  # (live, as "created")
        # the live dict: a record that saved to_json() before create() still learns
        # which directories create() made (so destroy removes the parents it made)
        out["created"] = self.created
        if self.unified_mount and self.unified_mount not in ("/sys/fs/cgroup",
                                                             "/sys/fs/cgroup/unified"):
            out["unified_mount"] = self.unified_mount
        return out

    def primary(self) -> str:
        """The directory whose cgroup.procs lists the container's processes."""
        for key in _PRIMARY:
            d = self._paths.get(key)
            if d:
                return d
        for d in self._paths.values():
            return d
        raise ContainError("the container has no cgroup directory (rootless without one?)")

    def unified(self) -> str | None:
        return self._paths.get(UNIFIED)

    def exists(self) -> bool:
        return os.path.isdir(self.primary())

    def __repr__(self) -> str:
        return f"Manager({self.layout!r}, {self.primary()!r})"

    # -- lifecycle -----------------------------------------------------------------

    def create(self) -> None:
        """mkdir in every hierarchy (parents as needed). A new cpuset directory gets its
        parent's cpus and mems first (v1 starts them empty); on v2 the controllers the
        parent offers are enabled down the path, as runc does."""
        from contain.cgroups.fs import read_text, write_text

        made: list[str] = []
        try:
            for key, d in self._paths.items():
                new = _makedirs(d)
                if not new:
                    continue
                made.extend(new)
                self.created[key] = len(new)  # (kept in the same dict: see to_json)
                if key == "cpuset":
                    for nd in new:
                        parent = os.path.dirname(nd)
                        for f in ("cpuset.cpus", "cpuset.mems"):
                            if not read_text(nd, f).strip():
                                write_text(nd, f, read_text(parent, f).strip() or "\n")
            if self.layout == "v2" and self.unified_mount:
                _enable_controllers(self.unified_mount, self._paths[UNIFIED], None)
        except OSError as exc:
            if self.rootless and exc.errno in _PERM_ERRNOS:
                for d in reversed(made):
                    _rmdir_quiet(d)
                self.undelegated.update(_why_not_made(self._paths, made))
                self._paths = {k: v for k, v in self._paths.items() if os.path.isdir(v)}
                self.created.clear()
                return
            for d in reversed(made):
                _rmdir_quiet(d)
            self.created.clear()
            raise ContainError(f"cannot create cgroup: {_oserr(exc)}") from exc

    def enable(self, controllers: tuple[str, ...] | list[str]) -> None:
        """Enable *controllers* on the cgroup2 path down to this cgroup (hybrid hosts keep
        them off until a resource needs them)."""
        u = self.unified()
        mount = self.unified_mount
        if u and mount:
            _enable_controllers(mount, u, list(controllers))

    def join(self, pid: int) -> None:
        """Move *pid* (0: the calling process) into the cgroup in every hierarchy."""
        from contain.cgroups.fs import write_text

        value = str(pid)
        for key, d in self._paths.items():
            try:
                write_text(d, "cgroup.procs", value)
            except OSError as exc:
                if key == "name=systemd" or (self.rootless and exc.errno in _PERM_ERRNOS):
                    continue
                raise ContainError(f"cannot join cgroup {d}: {_oserr(exc)}") from exc

    def sub(self, specs: list[str]) -> Manager:
        """The existing sub-cgroup(s) named by runc's ``exec --cgroup``: each spec is
        SUBPATH (every controller) or CTRL[,CTRL]:SUBPATH, relative to this cgroup;
        controllers not named stay here. On a pure v2 host every spec names the one
        directory. Nothing is created: a missing sub-cgroup is an error."""
        subs: dict[str | None, str] = {}
        for spec in specs:
            ctrls, _, sub = spec.rpartition(":")
            sub = sub.strip("/")
            if not sub or ".." in sub.split("/") or "\0" in sub:
                raise ContainError(f"--cgroup {spec!r}: a relative path inside the "
                                   "container's cgroup is needed")
            for ctrl in ctrls.split(",") if ctrls else [None]:
                if ctrl is not None and not ctrl:
                    raise ContainError(f"--cgroup {spec!r}: empty controller name")
                if subs.get(ctrl, sub) != sub:
                    raise ContainError(f"--cgroup: two sub-cgroups for {ctrl or 'all'}")
                subs[ctrl] = sub
        paths = {}
        for key, d in self._paths.items():
            sub = subs.get(key) or subs.get(None)  # type: ignore[assignment]
            if key == UNIFIED and self.layout == "v2" and sub is None:
                named = set(subs.values())
                if len(named) > 1:
                    raise ContainError("--cgroup: a cgroup v2 host has one sub-cgroup for "
                                       f"all controllers, not {sorted(named)}")
                sub = next(iter(named))
            paths[key] = os.path.join(d, sub) if sub else d
            if sub and not os.path.isdir(paths[key]):
                raise ContainError(f"--cgroup: {paths[key]}: no such sub-cgroup")
        return Manager(self.layout, paths, rootless=self.rootless, path=self.path,
                       unified_mount=self.unified_mount)

    def validate(self, resources: Resources | None) -> None:
        """Refuse, naming the field, what this host cannot apply; writes nothing."""
        if resources is None:
            return
        from contain.cgroups.resources import plan

        plan(self, resources)

    def set(self, resources: Resources | None, *, skip_devices: bool = False,
            linux_device_paths: tuple[str, ...] | list[str] = ()) -> None:
        """Write every limit of *resources* (validated first). If a write fails, the files
        already written get their previous values back and the error names the field.
        Device rules get runc's default allowances appended (minus any redefined by a
        linux.devices entry of the same path); *skip_devices* leaves devices alone
        (what update does)."""
        from contain.cgroups.resources import apply, plan

        ops = plan(self, resources, skip_devices=skip_devices,
                   linux_device_paths=linux_device_paths, warn=True)
        apply(self, ops)

    def destroy(self) -> None:
        """Kill what is left (freeze, SIGKILL, thaw, wait), then rmdir every hierarchy
        (sub-cgroups first), retrying while the kernel says EBUSY."""
        if self.exists() and self.pids():  # freezing an empty cgroup costs for nothing
            self._kill_rest()
        errors = []
        for key, d in self._paths.items():
            err = _remove_tree(d)
            if err:
                errors.append(err)
                continue
            parent = d
            for _ in range(self.created.get(key, 1) - 1):
                parent = os.path.dirname(parent)
                if not _rmdir_quiet(parent):
                    break
        if errors:
            raise ContainError(f"cannot remove cgroup: {errors[0]}")

    def _kill_rest(self) -> None:
        """SIGKILL every process left and wait (10 s at most) for the cgroup to empty."""
        import time

        try:
            self.kill_all(9)
        except (OSError, ContainError):
            pass
        deadline = time.monotonic() + 10
        delay = 0.001
        while self.pids() and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- processes -----------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process of the cgroup and its sub-cgroups."""
        from contain.cgroups.fs import read_text

        out: list[int] = []
        stack = [self.primary()]
        while stack:
            d = stack.pop()
            try:
                text = read_text(d, "cgroup.procs")
            except (FileNotFoundError, NotADirectoryError):
                continue
            out.extend(int(x) for x in text.split())
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return out

    def kill_all(self, sig: int) -> None:
        """Signal every process, frozen meanwhile so that none forks away from it."""
        from contain.cgroups.fs import write_text

        u = self.unified()
        if sig == 9 and u and self.layout == "v2" and os.path.exists(u + "/cgroup.kill"):
            write_text(u, "cgroup.kill", "1")
            return
        frozen = False
        try:
            self.freeze()
            frozen = True
        except ContainError:
            pass
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.thaw()

    # -- freezer -------------------------------------------------------------------

    def _freezer(self) -> tuple[str, str]:
        d = self._paths.get("freezer")
        if d:
            return "v1", d
        u = self.unified()
        if u and os.path.exists(u + "/cgroup.freeze"):
            return "v2", u
        raise ContainError("the freezer is not available on this host (no freezer "
                           "hierarchy, no cgroup.freeze)")

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        import time

        from contain.cgroups.fs import read_text, write_text

        kind, d = self._freezer()
        try:
            if kind == "v1":
                want = "FROZEN" if frozen else "THAWED"
                delay = 0.0005
                deadline = time.monotonic() + 10
                while True:
                    write_text(d, "freezer.state", want)
                    if read_text(d, "freezer.state").strip() == want:
                        return
                    if time.monotonic() > deadline:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
                if frozen:
                    write_text(d, "freezer.state", "THAWED")
                raise ContainError(f"cannot {'freeze' if frozen else 'thaw'} cgroup {d}: "
                                   "timed out")
            write_text(d, "cgroup.freeze", "1" if frozen else "0")
            want_line = "frozen 1" if frozen else "frozen 0"
            delay = 0.0005
            deadline = time.monotonic() + 10
            while want_line not in read_text(d, "cgroup.events").splitlines():
                if time.monotonic() > deadline:
                    if frozen:
                        write_text(d, "cgroup.freeze", "0")
                    raise ContainError(f"cannot {'freeze' if frozen else 'thaw'} cgroup {d}: "
                                       "timed out")
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        except OSError as exc:
            raise ContainError(f"cannot {'freeze' if frozen else 'thaw'} cgroup {d}: "
                               f"{_oserr(exc)}") from exc

    def is_frozen(self) -> bool:
        try:
            kind, d = self._freezer()
        except ContainError:
            return False
        try:
            fd = os.open(d + ("/freezer.state" if kind == "v1" else "/cgroup.freeze"),
                         os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            text = os.read(fd, 64).strip()
        finally:
            os.close(fd)
        return text in (b"FROZEN", b"FREEZING") if kind == "v1" else text == b"1"

    # -- stats ---------------------------------------------------------------------

    def stats(self) -> Stats:
        from contain.cgroups.stats import collect

        return collect(self)


# -- construction ----------------------------------------------------------------------

def new_manager(cgroups_path: str | None, container_id: str, *,
                rootless: bool = False, systemd: bool = False) -> Manager:
    """The Manager for a new container (nothing is created yet: see :meth:`create`);
    with *systemd*, a transient scope of the systemd driver (cgroupsPath is then
    ``slice:prefix:name``)."""
    if systemd:
        from contain.cgroups.systemd import new_systemd_manager

        return new_systemd_manager(cgroups_path, container_id, rootless=rootless)
    from contain.cgroups.fs import (
        check_cgroups_path,
        join_under,
        own_cgroups,
        unified_mount,
        v1_mounts,
    )

    inner = check_cgroups_path(cgroups_path)
    if inner is None:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ContainError(f"invalid container id for a cgroup name: {container_id!r}")
        inner = container_id
    layout = detect_layout()
    own = own_cgroups()
    paths: dict[str, str] = {}
    if layout != "v2":
        for ctrl, (mnt, root) in v1_mounts().items():
            paths[ctrl] = join_under(mnt, root, own.get(ctrl, "/"), inner)
    umnt = unified_mount()
    if umnt:
        paths[UNIFIED] = join_under(umnt, "/", own.get("", "/"), inner)
    if not paths:
        raise ContainError("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return Manager(layout, paths, rootless=rootless, path=inner)


def load_manager(saved: dict[str, Any]) -> Manager:
    """Rebuild a Manager from what :meth:`Manager.to_json` saved (no probing)."""
    if saved.get("systemd"):
        from contain.cgroups.systemd import load_systemd_manager

        return load_systemd_manager(saved, saved.get("layout") or detect_layout())
    return Manager(saved.get("layout") or detect_layout(), dict(saved.get("paths") or {}),
                   rootless=bool(saved.get("rootless")), created=saved.get("created"),
                   path=saved.get("path", ""), unified_mount=saved.get("unified_mount"),
                   undelegated=saved.get("undelegated"))


# -- helpers ---------------------------------------------------------------------------

def _oserr(exc: OSError) -> str:
    return message(exc)


def _why_not_made(paths: dict[str, str], made: list[str]) -> dict[str, str]:
    """Rootless, after a cgroup directory could not be made: why each hierarchy whose
    directory is missing is left out (for the errors of limits there)."""
    out = {}
    for key, d in paths.items():
        if os.path.isdir(d):
            continue
        if d in made:
            out[key] = ("left out, as the container's cgroup could not be made in every "
                        "hierarchy")
            continue
        parent = os.path.dirname(d)
        while parent != "/" and not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        if os.access(parent, os.W_OK | os.X_OK):
            out[key] = f"left out, as the container's cgroup could not be made ({d})"
        else:
            out[key] = f"not delegated to this user ({d} cannot be made in {parent})"
    return out


def _makedirs(d: str) -> list[str]:
    """mkdir -p; return the directories made, top first."""
    try:  # the usual case: the parent exists, the directory does not (one syscall)
        os.mkdir(d, 0o755)
        return [d]
    except FileExistsError:
        return []
    except FileNotFoundError:
        pass
    missing = []
    p = d
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    made = []
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o755)
        except FileExistsError:
            continue
        made.append(p)
    return made


def _rmdir_quiet(d: str) -> bool:
    try:
        os.rmdir(d)
        return True
    except OSError:
        return False


def _remove_tree(d: str) -> str | None:
    """rmdir *d* and its sub-cgroups, deepest first, retrying EBUSY for a while."""
    try:  # the usual case, a leaf cgroup with no task left: one rmdir, no directory scan
        os.rmdir(d)
        return None
    except FileNotFoundError:
        return None
    except OSError:
        pass
    import time

    dirs: list[str] = []
    stack = [d]
    while stack:
        p = stack.pop()
        dirs.append(p)
        try:
            with os.scandir(p) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue
    for p in reversed(dirs):
        delay = 0.001
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(p)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return f"{p}: {exc.strerror}"
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
    return None


def _enable_controllers(mount: str, leaf: str, wanted: list[str] | None) -> None:
    """Write +controller to cgroup.subtree_control from the mount down to *leaf*'s parent.
    With *wanted* None, every controller each level offers (runc on v2); errors for a
    controller that cannot be enabled (a level with processes, a threaded tree) are left
    for the write of a resource to report."""
    from contain.cgroups.fs import read_text, write_text

    rel = leaf[len(mount):].strip("/").split("/")
    d = mount
    for comp in rel:
        try:
            avail = read_text(d, "cgroup.controllers").split()
            enabled = read_text(d, "cgroup.subtree_control").split()
        except OSError:
            return
        todo = [c for c in (avail if wanted is None else wanted)
                if c in avail and c not in enabled]
        if todo:
            try:
                write_text(d, "cgroup.subtree_control", " ".join("+" + c for c in todo))
            except OSError:
                for c in todo:
                    try:
                        write_text(d, "cgroup.subtree_control", "+" + c)
                    except OSError:
                        pass
        d = f"{d}/{comp}"
