"""The state store: ``<root>/<id>/state.json``, written atomically, read without locks.

``mkdir <root>/<id>`` claims an id (exactly one concurrent create wins); commands that
change a container hold ``flock`` on its directory. A container's status is derived from
the live kernel each time (is the init alive, with the same start time; does exec.fifo
still exist; is its cgroup frozen), never trusted from the file.
"""

from __future__ import annotations

# posix, not os: ``import os`` costs a light command ~1 ms of CPU (os, posixpath and
# _collections_abc), an eighth of the interpreter's whole start; state, kill, start and
# delete need nothing of it but the system calls, which posix has (os is imported where
# a create needs more)
import posix

from contain.errors import AlreadyExists, ContainError, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups import Manager
    from contain.spec.config import Spec

STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
MAX_ID_LEN = 1024


def join(directory: str, name: str) -> str:
    """os.path.join of a directory and a name that is no absolute path."""
    if not directory or directory.endswith("/"):
        return directory + name
    return f"{directory}/{name}"


def is_dir(path: str) -> bool:
    """os.path.isdir."""
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False


def _exists(path: str) -> bool:
    """os.path.exists."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def default_root() -> str:
    """Where the state lives without --root: /run/contain for root,
    $XDG_RUNTIME_DIR/contain for everybody else (as runc)."""
    if posix.geteuid() == 0:
        return "/run/contain"
    import os

    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "contain")
    return f"/tmp/contain-{os.geteuid()}"


def validate_id(cid: str) -> None:
    """Ids as runc accepts them: letters, digits and ``_+-.``, not starting with a dot."""
    if not cid:
        raise ContainError("container id cannot be empty")
    if len(cid) > MAX_ID_LEN:
        raise ContainError(f"invalid container id: longer than {MAX_ID_LEN} characters")
    if cid.startswith(".") or not all(c.isascii() and (c.isalnum() or c in "_+-.") for c in cid):
        raise ContainError(f"invalid container id {cid!r}: use letters, digits and _+-.")


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class ContainerRecord:
    """What state.json holds about one container."""

    __slots__ = ("root", "id", "pid", "bundle", "rootfs", "created", "owner", "init_start",
                 "config", "cgroup", "annotations", "extra")

    def __init__(self, root: str, cid: str, data: dict[str, Any]) -> None:
        self.root = root
        self.id = cid
        self.pid: int = data.get("pid") or 0
        self.bundle: str = data.get("bundle") or ""
        self.rootfs: str = data.get("rootfs") or ""
        self.created: str = data.get("created") or ""
        self.owner: str = data.get("owner") or ""
        self.init_start: int = data.get("init_start") or 0
        self.config: dict[str, Any] = data.get("config") or {}
        self.cgroup: dict[str, Any] | None = data.get("cgroup")
        self.annotations: dict[str, str] = data.get("annotations") or {}
        self.extra: dict[str, Any] = data.get("extra") or {}

    @property
    def dir(self) -> str:
        return join(self.root, self.id)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "bundle": self.bundle, "rootfs": self.rootfs,
                "created": self.created, "owner": self.owner, "init_start": self.init_start,
                "annotations": self.annotations, "cgroup": self.cgroup, "config": self.config,
                "extra": self.extra}

    # -- derived from the kernel ------------------------------------------------------

    def init_alive(self) -> bool:
        """True if the init process is alive and is the one we started (pid reuse)."""
        if self.pid <= 0:
            return False
        return process_start_time(self.pid) == self.init_start

    def status(self) -> str:
        if self.pid <= 0:
            return "creating"
        if not self.init_alive():
            return "stopped"
        if _exists(join(self.dir, FIFO_NAME)):
            return "created"
        if self.cgroup and _frozen(self.cgroup):
            return "paused"
        return "running"

    def oci_state(self, status: str | None = None) -> dict[str, Any]:
        """The state object of the OCI runtime spec (what `contain state` prints)."""
        status = status or self.status()
        out: dict[str, Any] = {
            "ociVersion": self.config.get("ociVersion", "1.2.0"),
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        return out

    def hook_state(self, status: str) -> dict[str, Any]:
        """The state handed to hooks on stdin (spec: ociVersion, id, status, pid, bundle)."""
        out: dict[str, Any] = {"ociVersion": self.config.get("ociVersion", "1.2.0"),
                               "id": self.id, "status": status, "pid": self.pid,
                               "bundle": self.bundle}
        if self.annotations:
            out["annotations"] = self.annotations
        return out

    def cgroup_manager(self) -> Manager | None:
        if not self.cgroup:
            return None
        from contain.cgroups import load_manager

        return load_manager(self.cgroup)

    def spec(self) -> Spec:
        from contain.spec.config import Spec

        return Spec.decode(self.config)


def _frozen(saved: dict[str, Any]) -> bool:
    """Whether the container's cgroup is frozen: ``Manager.is_frozen`` read straight from
    the saved paths, because status() runs on every state, kill and delete, which need no
    other part of the cgroup package (importing it costs them ~0.4 ms)."""
    paths = saved.get("paths") or {}
    frozen: tuple[bytes, ...]
    if paths.get("freezer"):
        name, frozen = paths["freezer"] + "/freezer.state", (b"FROZEN", b"FREEZING")
    elif paths.get("unified"):
        name, frozen = paths["unified"] + "/cgroup.freeze", (b"1",)
    else:
        return False
    try:
        fd = posix.open(name, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        return posix.read(fd, 64).strip() in frozen
    finally:
        posix.close(fd)


class CorruptState(ContainError):
    """state.json cannot be read as a container record (truncated, not JSON, or JSON of
    the wrong shape); *partial* is what could be parsed (a dict), for `delete --force`
    to find the container's processes and cgroup with."""

    def __init__(self, cid: str, why: str, partial: dict[str, Any] | None) -> None:
        super().__init__(f"container {cid}: state.json is corrupt: {why}")
        self.partial = partial or {}


# what save() writes: key -> accepted types (bool is no integer here)
_SHAPE: dict[str, tuple[type, ...]] = {
    "id": (str,), "pid": (int,), "bundle": (str,), "rootfs": (str,), "created": (str,),
    "owner": (str,), "init_start": (int,), "config": (dict,), "cgroup": (dict, type(None)),
    "annotations": (dict,), "extra": (dict,),
}
_REQUIRED = ("id", "pid")


def check_shape(cid: str, data: Any) -> str | None:
    """Why *data* is not a record of container *cid*, or None if it is one."""
    if not isinstance(data, dict):
        return f"expected an object, got {type(data).__name__}"
    for k in _REQUIRED:
        if k not in data:
            return f"{k} is missing"
    for k, types in _SHAPE.items():
        v = data.get(k)
        if v is None and k != "cgroup" and k not in _REQUIRED:
            continue
        if not isinstance(v, types) or isinstance(v, bool):
            return f"{k}: unexpected {type(v).__name__}"
    if data["id"] != cid:
        return "it names another container"
    if data["pid"] < 0 or (data.get("init_start") or 0) < 0:
        return "negative pid"
    cgroup = data.get("cgroup")
    if cgroup is not None:
        paths = cgroup.get("paths")
        if not isinstance(paths, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.startswith("/")
                for k, v in paths.items()):
            return "cgroup.paths: expected an object of absolute paths"
        if not isinstance(cgroup.get("layout", ""), str):
            return "cgroup.layout: expected a string"
    return None


def container_dir(root: str, cid: str) -> str:
    validate_id(cid)
    return join(root, cid)


def claim(record: ContainerRecord) -> Lock:
    """Publish the container's directory, already locked and holding *record* (the
    provisional state.json), and return the held lock.

    The directory is made, locked and filled under a temporary dot-name (which `list`
    and every id lookup ignore) and renamed into place with RENAME_NOREPLACE, so that
    no other command ever sees it unlocked or empty: a `delete` that came between a
    plain mkdir and its flock removed it under the create. The rename is the claim:
    exactly one concurrent create of an id wins."""
    import os

    root, cid = record.root, record.id
    final = container_dir(root, cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    if os.path.lexists(final):
        raise AlreadyExists(f"container with id exists: {cid}")
    _sweep_abandoned_claims(root)
    tmp = os.path.join(root, f"{_CLAIM_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(tmp, 0o711)
    lock = Lock(tmp)
    try:
        lock.__enter__()
        save(record, tmp)
        from contain.linux.syscalls import rename_noreplace

        try:
            rename_noreplace(tmp, final)
        except FileExistsError as exc:
            raise AlreadyExists(f"container with id exists: {cid}") from exc
        except OSError as exc:
            import errno

            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            # a filesystem without RENAME_NOREPLACE: mkdir is the claim, then lock
            # (the short window this scheme closes is open there)
            remove_dir(tmp)
            lock.__exit__()
            return _claim_by_mkdir(record, final)
    except BaseException:
        remove_dir(tmp)
        lock.__exit__()
        raise
    lock.path = final
    return lock


_CLAIM_PREFIX = ".new-"


def _sweep_abandoned_claims(root: str) -> None:
    """Remove the temporary claim directories of creates that were killed before their
    rename (named after the creator's pid: gone when that pid is)."""
    try:
        names = [n for n in posix.listdir(root) if n.startswith(_CLAIM_PREFIX)]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name[len(_CLAIM_PREFIX):].split("-", 1)[0])
            posix.kill(pid, 0)
        except ValueError:
            continue  # not ours
        except ProcessLookupError:
            remove_dir(join(root, name))
        except PermissionError:
            pass  # alive, another user's


def _claim_by_mkdir(record: ContainerRecord, final: str) -> Lock:
    try:
        posix.mkdir(final, 0o711)
    except FileExistsError as exc:
        raise AlreadyExists(f"container with id exists: {record.id}") from exc
    lock = Lock(final)
    try:
        lock.__enter__()
        save(record)
    except BaseException:
        remove_dir(final)
        lock.__exit__()
        raise
    return lock


def load(root: str, cid: str) -> ContainerRecord:
    from contain.jsonio import loads

    path = container_dir(root, cid)
    try:
        with open(join(path, STATE_FILE), "rb") as f:
            data = loads(f.read())
    except FileNotFoundError as exc:
        if is_dir(path):
            return ContainerRecord(root, cid, {})  # still being created (or a create died)
        raise NotFound("container does not exist") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptState(cid, str(exc), None) from exc
    why = check_shape(cid, data)
    if why is not None:
        raise CorruptState(cid, why, data if isinstance(data, dict) else None)
    return ContainerRecord(root, cid, data)


def save(record: ContainerRecord, directory: str | None = None) -> None:
    """Write state.json atomically: a temporary file renamed over the old one, so a
    reader sees the old or the new record, never half of one.

    No fsync: the state describes processes, which do not survive a crash either (runc
    does not sync its state file either); on a disk-backed /run it cost 1-2 ms a create."""
    from contain.jsonio import dumps

    final = join(directory or record.dir, STATE_FILE)
    tmp = final + ".tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC,
                    0o600)
    try:
        posix.write(fd, dumps(record.to_json()).encode())
    finally:
        posix.close(fd)
    posix.rename(tmp, final)


def list_ids(root: str, missing_ok: bool = True) -> list[str]:
    """The ids under *root*; none when it does not exist, unless not *missing_ok*."""
    try:
        return sorted(e for e in posix.listdir(root)
                      if not e.startswith(".") and is_dir(join(root, e)))
    except FileNotFoundError:
        if not missing_ok:
            raise
        return []


class Lock:
    """flock on the container directory, serialising commands that change it."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> Lock:
        import fcntl

        try:
            self.fd = posix.open(self.path, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound("container does not exist") from exc
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1


def remove_dir(path: str) -> None:
    """Remove a container directory (flat: state.json, exec.fifo, temporaries)."""
    try:
        entries = posix.listdir(path)
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            posix.unlink(join(path, entry))
        except IsADirectoryError:
            posix.rmdir(join(path, entry))  # never recursive: nothing may be mounted
        except FileNotFoundError:
            pass
    try:
        posix.rmdir(path)
    except FileNotFoundError:
        pass
