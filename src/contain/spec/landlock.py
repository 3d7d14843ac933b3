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
    from collections.abc import Callable
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
    out.path_rules = _rules(rules, "pathBeneath", "paths", f"{path}.rules", ll.FS,
                            out.handled_fs, "ruleset.handledAccessFS", _absolute_paths)
    out.port_rules = _rules(rules, "netPort", "ports", f"{path}.rules", ll.NET,
                            out.handled_net, "ruleset.handledAccessNetwork", _port_numbers)
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




def _rules(rules: dict[str, Any], key: str, what: str, path: str, rights: Any,
           handled: list[str], handled_name: str,
           check: Callable[[Any, str], list[Any]]) -> list[tuple[list[str], list[Any]]]:
    """The rules under *key*: each an object of allowedAccess (a subset of the handled
    rights) and *what* (checked by *check*)."""
    items = rules.get(key, [])
    if not isinstance(items, list):
        raise _fail(f"{path}.{key}", "expected an array")
    out: list[tuple[list[str], list[Any]]] = []
    for i, rule in enumerate(items):
        p = f"{path}.{key}[{i}]"
        rule = _object(rule, p, ("allowedAccess", what))
        allowed = _names(rule.get("allowedAccess", []), f"{p}.allowedAccess", rights)
        extra = sorted(set(allowed) - set(handled))
        if extra:
            raise _fail(f"{p}.allowedAccess", f"{', '.join(extra)} not in {handled_name}")
        out.append((allowed, check(rule.get(what, []), f"{p}.{what}")))
    return out


def _absolute_paths(paths: Any, path: str) -> list[str]:
    if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
        raise _fail(path, "expected an array of strings")
    for j, x in enumerate(paths):
        if not x.startswith("/") or "\0" in x:
            raise _fail(f"{path}[{j}]", f"{x!r}: not an absolute path")
    return list(paths)


def _port_numbers(nums: Any, path: str) -> list[int]:
    if not isinstance(nums, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 65535 for n in nums):
        raise _fail(path, "expected an array of port numbers (0-65535)")
    return list(nums)
