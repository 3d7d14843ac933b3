"""The Landlock extension of config.json: runtime-spec proposal #1241's ``process.landlock``.

No OCI runtime implements the proposal yet (it is open); contain takes its shape as is,
plus ``ruleset.scoped`` (Landlock ABI 6 scoping, which the proposal predates)::

    "process": {"landlock": {
        "ruleset": {"handledAccessFS": ["execute", "write_file", "read_file", ...],
                    "handledAccessNetwork": ["bind_tcp", "connect_tcp"],
                    "scoped": ["abstract_unix_socket", "signal"]},
        "rules": {"pathBeneath": [{"allowedAccess": ["read_file"], "paths": ["/usr"]}],
                  "netPort": [{"allowedAccess": ["connect_tcp"], "ports": [443]}]},
        "disableBestEffort": false}}

Engines that pass annotations but drop unknown fields can give the same object as JSON
in the ``run.contain.landlock`` annotation. Rights are the kernel's names in lower case
(``LANDLOCK_ACCESS_FS_READ_FILE`` may be written ``read_file``). Enforcement is
:mod:`contain.security.landlock`.
"""

from __future__ import annotations

from contain.errors import SpecError
from contain.jsonio import loads
from contain.linux import landlock as ll
from contain.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ANNOTATION = "run.contain.landlock"


class Landlock(Record):
    __slots__ = ("handled_fs", "handled_net", "scoped", "path_rules", "port_rules",
                 "best_effort")
    DEFAULTS = {"handled_fs": list, "handled_net": list, "scoped": list,
                "path_rules": list, "port_rules": list, "best_effort": True}
    handled_fs: list[str]
    handled_net: list[str]
    scoped: list[str]
    path_rules: list[tuple[list[str], list[str]]]
    port_rules: list[tuple[list[str], list[int]]]
    best_effort: bool

    def to_json(self) -> dict[str, Any]:
        ruleset: dict[str, Any] = {"handledAccessFS": list(self.handled_fs)}
        if self.handled_net:
            ruleset["handledAccessNetwork"] = list(self.handled_net)
        if self.scoped:
            ruleset["scoped"] = list(self.scoped)
        rules: dict[str, Any] = {}
        if self.path_rules:
            rules["pathBeneath"] = [{"allowedAccess": list(a), "paths": list(p)}
                                    for a, p in self.path_rules]
        if self.port_rules:
            rules["netPort"] = [{"allowedAccess": list(a), "ports": list(p)}
                                for a, p in self.port_rules]
        out: dict[str, Any] = {"ruleset": ruleset, "rules": rules}
        if not self.best_effort:
            out["disableBestEffort"] = True
        return out


def _fail(path: str, message: str) -> SpecError:
    return SpecError(path, message)


def _names(value: Any, path: str, table: dict[str, tuple[int, int]]) -> list[str]:
    if not isinstance(value, list):
        raise _fail(path, f"expected an array of strings, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _fail(f"{path}[{i}]", f"expected a string, got {type(item).__name__}")
        name = item.lower().removeprefix("landlock_access_fs_").removeprefix(
            "landlock_access_net_").removeprefix("landlock_scope_")
        if name not in table:
            raise _fail(f"{path}[{i}]", f"unknown right {item!r} (one of "
                        f"{', '.join(table)})")
        out.append(name)
    return out


def _object(value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    for key in value:
        if key not in keys:
            raise _fail(f"{path}.{key}", f"unknown field (one of {', '.join(keys)})")
    return value


def decode(value: Any, path: str = "$.process.landlock") -> Landlock:
    """The model from its JSON form; a bad field fails with its path."""
    obj = _object(value, path, ("ruleset", "rules", "disableBestEffort"))
    out = Landlock()
    ruleset = _object(obj.get("ruleset", {}), f"{path}.ruleset",
                      ("handledAccessFS", "handledAccessNetwork", "scoped"))
    out.handled_fs = _names(ruleset.get("handledAccessFS", []),
                            f"{path}.ruleset.handledAccessFS", ll.FS)
    out.handled_net = _names(ruleset.get("handledAccessNetwork", []),
                             f"{path}.ruleset.handledAccessNetwork", ll.NET)
    out.scoped = _names(ruleset.get("scoped", []), f"{path}.ruleset.scoped", ll.SCOPE)
    rules = _object(obj.get("rules", {}), f"{path}.rules", ("pathBeneath", "netPort"))
    beneath = rules.get("pathBeneath", [])
    if not isinstance(beneath, list):
        raise _fail(f"{path}.rules.pathBeneath", "expected an array")
    for i, rule in enumerate(beneath):
        p = f"{path}.rules.pathBeneath[{i}]"
        rule = _object(rule, p, ("allowedAccess", "paths"))
        allowed = _names(rule.get("allowedAccess", []), f"{p}.allowedAccess", ll.FS)
        extra = sorted(set(allowed) - set(out.handled_fs))
        if extra:
            raise _fail(f"{p}.allowedAccess", f"{', '.join(extra)} not in "
                        "ruleset.handledAccessFS")
        paths = rule.get("paths", [])
        if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
            raise _fail(f"{p}.paths", "expected an array of strings")
        for j, x in enumerate(paths):
            if not x.startswith("/") or "\0" in x:
                raise _fail(f"{p}.paths[{j}]", f"{x!r}: not an absolute path")
        out.path_rules.append((allowed, list(paths)))
    ports = rules.get("netPort", [])
    if not isinstance(ports, list):
        raise _fail(f"{path}.rules.netPort", "expected an array")
    for i, rule in enumerate(ports):
        p = f"{path}.rules.netPort[{i}]"
        rule = _object(rule, p, ("allowedAccess", "ports"))
        allowed = _names(rule.get("allowedAccess", []), f"{p}.allowedAccess", ll.NET)
        extra = sorted(set(allowed) - set(out.handled_net))
        if extra:
            raise _fail(f"{p}.allowedAccess", f"{', '.join(extra)} not in "
                        "ruleset.handledAccessNetwork")
        nums = rule.get("ports", [])
        if not isinstance(nums, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 65535
                for n in nums):
            raise _fail(f"{p}.ports", "expected an array of port numbers (0-65535)")
        out.port_rules.append((allowed, list(nums)))
    best = obj.get("disableBestEffort", False)
    if not isinstance(best, bool):
        raise _fail(f"{path}.disableBestEffort", "expected a boolean")
    out.best_effort = not best
    return out


def from_spec(spec: Any) -> Landlock | None:
    """The Landlock model of a decoded config: ``process.landlock`` (the proposal's
    field), else the ``run.contain.landlock`` annotation holding the same object as
    JSON (for engines that pass annotations but not unknown fields)."""
    raw = getattr(spec, "raw", None) or {}
    proc = raw.get("process") if isinstance(raw, dict) else None
    if isinstance(proc, dict) and "landlock" in proc:
        return decode(proc["landlock"], "$.process.landlock")
    text = (getattr(spec, "annotations", None) or {}).get(ANNOTATION)
    if text is None:
        return None
    try:
        value = loads(text)
    except ValueError as exc:
        raise _fail(f"$.annotations[{ANNOTATION!r}]", f"not JSON: {exc}") from exc
    return decode(value, f"$.annotations[{ANNOTATION!r}]")


