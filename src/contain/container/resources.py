"""Resource management of existing containers, for the CLI and the Python API.

pause/resume through the freezer, update of live limits (persisted into the container's
config so that exec and later updates see them), stats, the processes of the cgroup and
the event stream. Containers are found in the state store under *root*.
"""

from __future__ import annotations

from contain.errors import ContainError, WrongState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from contain.cgroups import Manager
    from contain.cgroups.stats import Stats
    from contain.container.store import ContainerRecord
    from contain.spec.config import Resources


def _manager(record: ContainerRecord) -> Manager:
    mgr = record.cgroup_manager()
    if mgr is None:
        raise ContainError(f"container {record.id} has no cgroup")
    return mgr


def _load(root: str, cid: str) -> ContainerRecord:
    from contain.container import store

    return store.load(root, cid)


def pause(root: str, cid: str) -> None:
    """Freeze every process of a running (or created) container, as runc does."""
    from contain.container import store

    record = _load(root, cid)
    with store.Lock(record.dir):
        status = record.status()
        if status not in ("running", "created"):
            raise WrongState(f"container {cid} is {status}, not running: cannot pause")
        _manager(record).freeze()


def resume(root: str, cid: str) -> None:
    """Thaw a paused container."""
    from contain.container import store

    record = _load(root, cid)
    with store.Lock(record.dir):
        mgr = _manager(record)
        status = record.status()
        if status != "paused" and not (status == "created" and mgr.is_frozen()):
            raise WrongState(f"container {cid} is {status}, not paused: cannot resume")
        mgr.thaw()


def stats(root: str, cid: str) -> Stats:
    record = _load(root, cid)
    status = record.status()
    if status in ("stopped", "creating"):
        raise WrongState(f"container {cid} is not running")
    return _manager(record).stats()


def processes(root: str, cid: str) -> list[int]:
    """Pids (as the host sees them) of every process in the container's cgroup."""
    record = _load(root, cid)
    mgr = _manager(record)
    if not mgr.exists():
        return []
    return sorted(mgr.pids())


def events(root: str, cid: str, interval: float = 5.0,
           stats: bool = True) -> Iterator[dict[str, Any]]:
    """runc's event stream (dicts): stats every *interval* seconds and OOM events, until
    the container's cgroup is removed."""
    from contain.cgroups.events import stream

    record = _load(root, cid)
    if record.status() in ("stopped", "creating"):
        raise WrongState(f"container with id {cid} is not running")
    return stream(_manager(record), cid, interval, stats=stats)


def update(root: str, cid: str, resources: dict[str, Any] | Resources) -> dict[str, Any]:
    """Change the live limits of a container; *resources* is a (partial) OCI
    linux.resources object: only the fields given change (runc's merge rules).
    The merged resources are applied as a whole (restored on failure) and saved in the
    container's state. Returns the merged linux.resources."""
    from contain.errors import SpecError

    try:
        return _update(root, cid, resources)
    except SpecError as exc:  # name the update, not config.json, as the source
        raise SpecError(exc.path, exc.message, document="update") from exc


def _update(root: str, cid: str, resources: dict[str, Any] | Resources) -> dict[str, Any]:
    from contain.container import store
    from contain.spec.config import Resources

    changes = resources if isinstance(resources, dict) else resources.to_json()
    if not isinstance(changes, dict):
        raise ContainError("resources must be a JSON object")
    Resources.decode(changes, "$.linux.resources")  # shape and ranges of what was given
    record = _load(root, cid)
    with store.Lock(record.dir):
        record = _load(root, cid)
        status = record.status()
        if status in ("stopped", "creating"):
            raise WrongState(f"container {cid} is {status}: cannot update its resources")
        mgr = _manager(record)
        linux = record.config.setdefault("linux", {})
        current = linux.get("resources") or {}
        merged = merge_resources(current, changes)
        res = Resources.decode(merged, "$.linux.resources")
        mgr.set(res, skip_devices=True)
        linux["resources"] = merged
        store.save(record)
    return merged


def merge_resources(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """runc update's merge: scalar fields replace, per-device throttles and hugepage limits
    are upserted, unified keys are upserted; devices, network and rdma are not changed by
    an update (runc ignores them too)."""
    import copy

    out = copy.deepcopy(current)
    mem = changes.get("memory")
    if mem:
        m = out.setdefault("memory", {})
        for k in ("limit", "reservation", "swap", "swappiness", "checkBeforeUpdate",
                  "disableOOMKiller"):
            if mem.get(k) is not None:
                m[k] = mem[k]
        if mem.get("limit") == -1 and mem.get("swap") is None:
            m.pop("swap", None)  # unlimited memory means unlimited swap (runc)
    cpu = changes.get("cpu")
    if cpu:
        c = out.setdefault("cpu", {})
        for k in ("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod",
                  "cpus", "mems", "idle"):
            if cpu.get(k) is not None and cpu.get(k) != "":
                c[k] = cpu[k]
    pids = changes.get("pids")
    if pids and pids.get("limit") is not None:
        out["pids"] = {"limit": pids["limit"]}
    bio = changes.get("blockIO")
    if bio:
        b = out.setdefault("blockIO", {})
        for k in ("weight", "leafWeight"):
            if bio.get(k) is not None:
                b[k] = bio[k]
        for k in ("weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
                  "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
            for dev in bio.get(k) or []:
                lst = b.setdefault(k, [])
                for i, old in enumerate(lst):
                    if (old.get("major"), old.get("minor")) == (dev.get("major"),
                                                                dev.get("minor")):
                        lst[i] = {**old, **dev} if k == "weightDevice" else dev
                        break
                else:
                    lst.append(dev)
    for h in changes.get("hugepageLimits") or []:
        lst = out.setdefault("hugepageLimits", [])
        for i, old in enumerate(lst):
            if old.get("pageSize") == h.get("pageSize"):
                lst[i] = h
                break
        else:
            lst.append(h)
    if changes.get("unified"):
        out.setdefault("unified", {}).update(changes["unified"])
    return out
