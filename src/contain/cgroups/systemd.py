"""The systemd cgroup driver (``--systemd-cgroup``): the container's cgroup is a transient
scope unit that systemd creates, over D-Bus, with the init's pid in it.

cgroupsPath is ``slice:prefix:name``: the unit is ``prefix-name.scope`` in *slice*
(default ``system.slice``, or ``user.slice`` rootless), and a nested slice is expanded
as systemd does (``a-b.slice`` lives at ``a.slice/a-b.slice``). The scope is started
with ``Delegate=yes`` and the resource properties systemd knows (MemoryMax, CPUWeight,
CPUQuotaPerSecUSec, TasksMax, AllowedCPUs..., and the device rules as DevicePolicy and
DeviceAllow), so that systemd's view agrees with the container's limits and a
``daemon-reload`` does not undo them; then every limit is also written to the cgroup
files, as with the cgroupfs driver (the files are the authority: the exact device
program, io, hugetlb and the rest are only there). ``update`` sets the unit's
properties (runtime) and writes the files; ``delete`` kills what is left, stops the unit
and resets it if it failed.

The scope cannot exist before the init's pid does, so :meth:`SystemdManager.create` and
the first :meth:`SystemdManager.set` only remember what to do: :meth:`join` starts the
unit with the pid, waits for systemd's job to finish, then writes the files.
"""

from __future__ import annotations

import os

from contain.cgroups import UNIFIED, Manager
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.linux.dbus import Bus
    from contain.spec.config import CPU, Resources

__all__ = ["SystemdManager", "device_properties", "expand_slice", "new_systemd_manager",
           "parse_cgroups_path", "unit_properties"]

FLAG = "--systemd-cgroup"
DEST = "org.freedesktop.systemd1"
OBJ = "/org/freedesktop/systemd1"
MGR = "org.freedesktop.systemd1.Manager"
INFINITY = (1 << 64) - 1
JOB_TIMEOUT = 30.0
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")


# -- names ----------------------------------------------------------------------------------

def parse_cgroups_path(path: str | None, cid: str, *, rootless: bool) -> tuple[str, str]:
    """(slice, unit) of a ``slice:prefix:name`` cgroupsPath (runc's defaults for the
    empty parts and for no cgroupsPath at all: ``system.slice:contain:ID``)."""
    default_slice = "user.slice" if rootless else "system.slice"
    if not path:
        slice_, prefix, name = default_slice, "contain", cid
    else:
        parts = path.split(":")
        if len(parts) != 3 or "/" in path or "\0" in path:
            raise ContainError(f"cgroupsPath {path!r}: with {FLAG}, expected the form "
                               "slice:prefix:name (e.g. system.slice:contain:ctr)")
        slice_, prefix, name = parts
        slice_ = slice_ or default_slice
    if not name:
        raise ContainError(f"cgroupsPath {path!r}: the name (slice:prefix:NAME) is empty")
    if name.endswith(".slice"):
        raise ContainError(f"cgroupsPath {path!r}: a container's own slice (a name ending "
                           "in .slice) is not supported; name a scope")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if not _valid_unit(unit):
        raise ContainError(f"cgroupsPath {path!r}: {unit!r} is not a valid systemd unit name")
    expand_slice(slice_, path or "")  # validated
    return slice_, unit


def _valid_unit(unit: str) -> bool:
    return len(unit) <= 255 and all(c in _UNIT_CHARS for c in unit) and not unit.startswith(".")


def expand_slice(slice_: str, path: str = "") -> str:
    """The cgroup path of a slice below systemd's root: ``a-b.slice`` ->
    ``/a.slice/a-b.slice``, ``-.slice`` -> ``/``."""
    where = f"cgroupsPath {path!r}: slice {slice_!r}"
    if not slice_.endswith(".slice") or not _valid_unit(slice_):
        raise ContainError(f"{where} is not a slice unit name (NAME.slice)")
    if slice_ == "-.slice":
        return "/"
    stem = slice_[:-len(".slice")]
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise ContainError(f"{where}: a dash may only separate two parts (a-b.slice)")
    out = ""
    prefix = ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        out += f"/{prefix}.slice"
    return out


# -- resources as unit properties -----------------------------------------------------------

def unit_properties(res: Resources | None, layout: str) -> list[tuple[str, tuple[str, Any]]]:
    """The properties of *res* that systemd knows, converted as runc's systemd driver
    does (the files are written afterwards anyway, with the exact values)."""
    props: list[tuple[str, tuple[str, Any]]] = []
    if res is None:
        return props
    v2 = layout == "v2"
    m = res.memory
    if m is not None:
        if m.limit:
            props.append(("MemoryMax", ("t", INFINITY if m.limit < 0 else m.limit)))
        if v2 and m.reservation and m.reservation > 0:
            props.append(("MemoryLow", ("t", m.reservation)))
        if v2 and m.swap:
            if m.swap < 0:
                props.append(("MemorySwapMax", ("t", INFINITY)))
            elif m.limit and m.limit > 0 and m.swap >= m.limit:
                props.append(("MemorySwapMax", ("t", m.swap - m.limit)))
    if res.cpu is not None:
        _cpu_properties(props, res.cpu, v2)
    p = res.pids
    if p is not None and p.limit:
        props.append(("TasksMax", ("t", INFINITY if p.limit < 0 else p.limit)))
    return props


def device_properties(res: Resources | None,
                      linux_device_paths: tuple[str, ...] | list[str] = ()
                      ) -> list[tuple[str, tuple[str, Any]]]:
    """The device rules (the config's, then the default allowances, as the files get
    them) as the scope's DevicePolicy and DeviceAllow, as runc's systemd driver gives
    them: otherwise systemd keeps its own policy for the unit (allow everything) and
    puts it back whenever it applies the unit's cgroup settings again. systemd has only
    an allow list ("strict"): a concrete device is /dev/{char,block}/MAJOR:MINOR, every
    minor of a major char-MAJOR (systemd 240 and later), every device char-*; a rule
    for one minor of every major cannot be said and is left to the cgroup files, as is
    a deny list, for which systemd gets deny-all (allow-all where that is the rule)."""
    from contain.cgroups.devices import _letters, fold, rules_from_spec

    # (no linux.resources: the default allowances alone, as the cgroup files get them)
    state = fold(rules_from_spec(res.devices if res is not None else [], linux_device_paths))
    clear: tuple[str, tuple[str, Any]] = ("DeviceAllow", ("a(ss)", []))  # empties the list
    if state.default_allow:
        if not state.exceptions:
            return [clear, ("DevicePolicy", ("s", "auto"))]
        _warn("systemd has no deny list for devices: the scope denies every device "
              "(DevicePolicy=strict), the container's cgroup has the rules")
        return [clear, ("DevicePolicy", ("s", "strict"))]
    allow = []
    for (typ, major, minor), bits in state.exceptions.items():
        kind = "char" if typ == "c" else "block"
        if major == -1 and minor != -1:
            _warn(f"systemd cannot allow device {typ} *:{minor} (every major): not in the "
                  "scope's DeviceAllow, the container's cgroup has it")
            continue
        path = (f"{kind}-*" if major == -1 else f"{kind}-{major}" if minor == -1 else
                f"/dev/{kind}/{major}:{minor}")
        allow.append((path, _letters(bits)))
    return [clear, ("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", allow))]


def _warn(text: str) -> None:
    from contain import log

    log.warning(f"{FLAG}: {text}")


def _cpu_properties(props: list[tuple[str, tuple[str, Any]]], c: CPU, v2: bool) -> None:
    if v2 and c.shares:
        weight = 1 + ((c.shares - 2) * 9999) // 262142 if c.shares > 2 else 1
        props.append(("CPUWeight", ("t", min(weight, 10000))))
    if c.quota or c.period:
        period = c.period or 100000
        if c.period:
            props.append(("CPUQuotaPeriodUSec", ("t", period)))
        if c.quota and c.quota > 0:
            per_sec = c.quota * 1_000_000 // period
            per_sec = -(-per_sec // 10000) * 10000  # systemd's granularity: 10 ms
            props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
        elif c.quota is not None and c.quota < 0:
            props.append(("CPUQuotaPerSecUSec", ("t", INFINITY)))
    if v2 and c.cpus:
        props.append(("AllowedCPUs", ("ay", _bitmask(c.cpus))))
    if v2 and c.mems:
        props.append(("AllowedMemoryNodes", ("ay", _bitmask(c.mems))))


def _bitmask(cpus: str) -> bytes:
    """A cpu list ("0-2,4") as systemd's byte array: bit j of byte i is cpu 8i+j."""
    bits: set[int] = set()
    for item in cpus.split(","):
        item = item.strip()
        if not item:
            continue
        lo, _, hi = item.partition("-")
        bits.update(range(int(lo), int(hi or lo) + 1))
    out = bytearray((max(bits) // 8 + 1) if bits else 0)
    for b in bits:
        out[b // 8] |= 1 << (b % 8)
    return bytes(out)


# -- the bus --------------------------------------------------------------------------------

def _address_path(address: str) -> tuple[str, bool] | None:
    """The socket of the first unix: address of a D-Bus address list."""
    for entry in address.split(";"):
        kind, _, params = entry.partition(":")
        if kind != "unix":
            continue
        kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if "path" in kv:
            return kv["path"], False
        if "abstract" in kv:
            return "\0" + kv["abstract"], False
    return None


def _candidates(rootless: bool) -> list[tuple[str, bool]]:
    """Where systemd may be reached: the bus (system, or the user's session), then
    systemd's own private socket (peer to peer)."""
    out: list[tuple[str, bool]] = []
    if rootless:
        env = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
        found = _address_path(env) if env else None
        out.append(found or (f"{runtime}/bus", False))
        out.append((f"{runtime}/systemd/private", True))
    else:
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        found = _address_path(env) if env else None
        out.append(found or ("/run/dbus/system_bus_socket", False))
        out.append(("/run/systemd/private", True))
    return out


def connect(rootless: bool = False) -> Bus:
    """A connection to systemd, or one clear error naming the flag."""
    from contain.linux.dbus import DBusError
    from contain.linux.dbus import connect as dbus_connect

    tried = []
    for path, peer in _candidates(rootless):
        try:
            return dbus_connect(path, peer=peer)
        except (OSError, DBusError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            tried.append(f"{path.lstrip(chr(0))}: {why}")
    raise ContainError(f"{FLAG}: cannot reach systemd over D-Bus ({'; '.join(tried)}); "
                       "is systemd running? (or omit the flag for the cgroupfs driver)")


def _call(bus: Bus, member: str, signature: str = "", *args: Any) -> list[Any]:
    return bus.call(DEST, OBJ, MGR, member, signature, *args, timeout=JOB_TIMEOUT)


def _subscribe(bus: Bus) -> None:
    bus.add_match(f"type='signal',sender='{DEST}',path='{OBJ}',interface='{MGR}',"
                  "member='JobRemoved'")
    _call(bus, "Subscribe")


def _wait_job(bus: Bus, job: str, what: str) -> None:
    msg = bus.wait_signal(MGR, "JobRemoved", lambda m: len(m.body) > 3 and m.body[1] == job,
                          JOB_TIMEOUT)
    result = msg.body[3]
    if result != "done":
        raise ContainError(f"{FLAG}: systemd could not {what}: job {result}")


def _retry_unknown(call: Any, props: list[tuple[str, tuple[str, Any]]]) -> Any:
    """Call with *props*; a property this systemd does not know (an older one) is
    dropped and the call made again, as runc does."""
    from contain.linux.dbus import DBusError

    props = list(props)
    while True:
        try:
            return call(props)
        except DBusError as exc:
            bad = [p for p in props if p[0] in str(exc)]
            if not bad or exc.name not in ("org.freedesktop.DBus.Error.PropertyReadOnly",
                                           "org.freedesktop.DBus.Error.InvalidArgs"):
                raise
            from contain import log

            log.warning(f"{FLAG}: systemd refused property {bad[0][0]} ({exc}); "
                        "the cgroup file is written instead")
            props.remove(bad[0])


# -- the manager ----------------------------------------------------------------------------

class SystemdManager(Manager):
    """A container's cgroup as a transient systemd scope (see the module's text)."""

    __slots__ = ("unit", "slice", "started", "_pending", "_props")

    def __init__(self, layout: str, paths: dict[str, str], *, unit: str, slice_: str,
                 started: bool, **kw: Any) -> None:
        super().__init__(layout, paths, **kw)
        self.unit = unit
        self.slice = slice_
        self.started = started  # False until join() has made the scope
        self._pending: tuple[Resources | None, dict[str, Any]] | None = None
        self._props: list[tuple[str, tuple[str, Any]]] = []

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["systemd"] = {"unit": self.unit, "slice": self.slice}
        return out

    def __repr__(self) -> str:
        return f"SystemdManager({self.unit!r} in {self.slice!r})"

    def create(self) -> None:
        """Nothing yet: the scope needs the init's pid (see :meth:`join`)."""
        if self.started:
            super().create()

    def set(self, resources: Resources | None, *, skip_devices: bool = False,
            linux_device_paths: tuple[str, ...] | list[str] = ()) -> None:
        if not self.started:
            self.validate(resources)
            self._pending = (resources, {"skip_devices": skip_devices,
                                         "linux_device_paths": linux_device_paths})
            self._props = unit_properties(resources, self.layout)
            if not skip_devices:
                self._props += device_properties(resources, linux_device_paths)
            return
        props = unit_properties(resources, self.layout)
        if not skip_devices:
            props += device_properties(resources, linux_device_paths)
        if props:
            from contain.linux.dbus import DBusError

            self.validate(resources)  # (bad values are refused before systemd sees them)
            try:
                with connect(self.rootless) as bus:
                    _retry_unknown(lambda ps: _call(bus, "SetUnitProperties", "sba(sv)",
                                                    self.unit, True, ps), props)
            except DBusError as exc:
                raise ContainError(f"{FLAG}: cannot set the properties of {self.unit}: "
                                   f"{exc}") from exc
        super().set(resources, skip_devices=skip_devices,
                    linux_device_paths=linux_device_paths)

    def join(self, pid: int) -> None:
        if self.started:
            super().join(pid)
            return
        self._start(pid)
        super().create()  # the hierarchies systemd does not manage (v1), if any
        super().join(pid)
        if self._pending is not None:
            resources, kw = self._pending
            self._pending = None
            super().set(resources, **kw)

    def _start(self, pid: int) -> None:
        from contain.linux.dbus import DBusError

        base: list[tuple[str, tuple[str, Any]]] = [
            ("Description", ("s", f"contain container {self.unit}")),
            ("Slice", ("s", self.slice)),
            ("PIDs", ("au", [pid])),
            ("Delegate", ("b", True)),
            ("DefaultDependencies", ("b", False)),
            ("MemoryAccounting", ("b", True)),
            ("CPUAccounting", ("b", True)),
            ("TasksAccounting", ("b", True)),
        ]
        try:
            with connect(self.rootless) as bus:
                self._start_on(bus, base, pid)
        except DBusError as exc:
            raise ContainError(f"{FLAG}: systemd could not start {self.unit}: "
                               f"{exc}") from exc

    def _start_on(self, bus: Bus, base: list[tuple[str, tuple[str, Any]]], pid: int) -> None:
        from contain.linux.dbus import DBusError

        _subscribe(bus)

        def start(props: list[tuple[str, tuple[str, Any]]]) -> str:
            try:
                return str(_call(bus, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                                 self.unit, "fail", base + props, [])[0])
            except DBusError as exc:
                if exc.name != "org.freedesktop.systemd1.UnitExists":
                    raise
            # a failed scope of an earlier container of that name: reset it, once
            try:
                _call(bus, "ResetFailedUnit", "s", self.unit)
            except DBusError:
                pass
            try:
                return str(_call(bus, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                                 self.unit, "fail", base + props, [])[0])
            except DBusError as exc:
                if exc.name == "org.freedesktop.systemd1.UnitExists":
                    raise ContainError(f"{FLAG}: unit {self.unit} already exists (another "
                                       "container with that cgroupsPath?)") from exc
                raise

        job = _retry_unknown(start, self._props)
        self.started = True
        _wait_job(bus, job, f"start {self.unit}")
        self._adopt(_control_group(bus, self.unit))

    def _adopt(self, cgroup: str) -> None:
        """Take the scope's cgroup as systemd reports it (kept in the same dict, which
        the container's record holds)."""
        if not cgroup:
            return
        from contain.cgroups.fs import unified_mount, v1_mounts

        paths: dict[str, str] = {}
        if self.layout != "v2":
            for ctrl, (mnt, _root) in v1_mounts().items():
                paths[ctrl] = mnt + cgroup
        umnt = unified_mount()
        if umnt:
            paths[UNIFIED] = umnt + cgroup
        if paths and paths != self._paths:
            self._paths.clear()
            self._paths.update(paths)

    def destroy(self) -> None:
        """Kill what is left, stop the unit (and reset it if it failed), then remove
        the directories systemd does not own."""
        from contain.linux.dbus import DBusError

        if not self.started:
            return  # nothing was made (the path may be another container's scope)
        if self.exists() and self.pids():
            self._kill_rest()
        try:
            with connect(self.rootless) as bus:
                _subscribe(bus)
                try:
                    job = str(_call(bus, "StopUnit", "ss", self.unit, "replace")[0])
                    _wait_job(bus, job, f"stop {self.unit}")
                except DBusError as exc:
                    if exc.name not in ("org.freedesktop.systemd1.NoSuchUnit",
                                        "org.freedesktop.DBus.Error.UnknownObject"):
                        raise
                try:
                    _call(bus, "ResetFailedUnit", "s", self.unit)
                except DBusError:
                    pass  # not failed, or already gone
        except (DBusError, ContainError) as exc:
            from contain import log

            log.warning(f"{FLAG}: cannot stop {self.unit}: {exc}")
        super().destroy()


def _control_group(bus: Bus, unit: str) -> str:
    from contain.linux.dbus import DBusError

    try:
        (path,) = _call(bus, "GetUnit", "s", unit)
        (value,) = bus.call(DEST, path, "org.freedesktop.DBus.Properties", "Get", "ss",
                            "org.freedesktop.systemd1.Scope", "ControlGroup")
    except DBusError:
        return ""
    return str(value[1])


def new_systemd_manager(cgroups_path: str | None, cid: str, *, rootless: bool = False
                        ) -> SystemdManager:
    """The manager of a new container's scope (nothing is made before join())."""
    from contain.cgroups import detect_layout
    from contain.cgroups.fs import unified_mount, v1_mounts

    slice_, unit = parse_cgroups_path(cgroups_path, cid, rootless=rootless)
    cgroup = expand_slice(slice_, cgroups_path or "").rstrip("/") + "/" + unit
    layout = detect_layout()
    paths: dict[str, str] = {}
    if layout != "v2":
        for ctrl, (mnt, _root) in v1_mounts().items():
            paths[ctrl] = mnt + cgroup
    umnt = unified_mount()
    if umnt:
        paths[UNIFIED] = umnt + cgroup
    if not paths:
        raise ContainError("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return SystemdManager(layout, paths, unit=unit, slice_=slice_, started=False,
                          rootless=rootless, path=cgroups_path or f"{slice_}:contain:{cid}")


def load_systemd_manager(saved: dict[str, Any], layout: str) -> SystemdManager:
    sd = saved.get("systemd") or {}
    return SystemdManager(layout, dict(saved.get("paths") or {}),
                          unit=str(sd.get("unit", "")), slice_=str(sd.get("slice", "")),
                          started=True, rootless=bool(saved.get("rootless")),
                          created=saved.get("created"), path=saved.get("path", ""),
                          unified_mount=saved.get("unified_mount"))
