"""The syscall policy of a supervised sandbox: per system call, and optionally per
argument value, what the supervisor does.

The policy is a table (JSON or TOML; the ``[syscalls]`` table of a sandbox policy file)::

    default = "allow"                       # for calls the table does not name
    mkdir = { action = "deny", errno = "EACCES" }
    getppid = "log"                         # allowed, and reported
    ptrace = "kill"
    uname = { action = "emulate", handler = "uname", release = "4.4.0-sandbox" }
    openat = { action = "emulate", handler = "open", paths = { "/" = "ro", "/tmp" = "rw" } }
    socket = [                              # per argument value: the first match wins
        { action = "allow", args = [{ index = 0, op = "SCMP_CMP_EQ", value = 1 }] },
        { action = "deny", errno = "EAFNOSUPPORT" },
    ]

Actions: ``allow``, ``deny`` (``errno``: a name such as ``"EACCES"`` or a number,
default EPERM), ``kill`` (the whole process), ``log`` (allowed and reported),
``emulate`` (``handler``: one of :data:`contain.sandbox.supervise.handlers.HANDLERS`, with
its options), and in the Python API ``ask`` (``callback``: called with a
:class:`Call`, returns a :class:`Decision` or an action name). Syscall names and argument
operators are those of OCI seccomp profiles (``SCMP_CMP_EQ`` ... ``SCMP_CMP_MASKED_EQ``).

:meth:`SyscallPolicy.decode` raises :class:`contain.errors.SpecError` naming the bad
field (``$.syscalls.mkdir.errno: unknown errno name 'EFOO'``).
"""

from __future__ import annotations

import errno as _errno

from contain.errors import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

ACTIONS = ("allow", "deny", "kill", "log", "emulate", "ask")
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
       "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
_RULE_KEYS = ("action", "errno", "handler", "args", "callback")

EPERM = _errno.EPERM


class ArgCond:
    """One OCI-style comparison of a syscall argument (a register value)."""

    __slots__ = ("index", "op", "value", "value_two")

    def __init__(self, index: int, op: str, value: int, value_two: int = 0) -> None:
        self.index = index
        self.op = op
        self.value = value
        self.value_two = value_two

    def matches(self, args: tuple[int, ...] | list[int]) -> bool:
        a = args[self.index] & 0xFFFFFFFFFFFFFFFF
        op, v = self.op, self.value
        if op == "SCMP_CMP_EQ":
            return a == v
        if op == "SCMP_CMP_NE":
            return a != v
        if op == "SCMP_CMP_LT":
            return a < v
        if op == "SCMP_CMP_LE":
            return a <= v
        if op == "SCMP_CMP_GT":
            return a > v
        if op == "SCMP_CMP_GE":
            return a >= v
        return (a & v) == self.value_two  # SCMP_CMP_MASKED_EQ

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "value": self.value, "op": self.op}
        if self.value_two:
            out["valueTwo"] = self.value_two
        return out


class Rule:
    """What to do with one system call (when its ``args`` all match)."""

    __slots__ = ("action", "args", "callback", "errno", "handler", "options", "where")

    def __init__(self, action: str, errno: int = EPERM, handler: str | None = None,
                 options: dict[str, Any] | None = None, args: list[ArgCond] | None = None,
                 callback: Callable[..., Any] | None = None, where: str = "") -> None:
        self.action = action
        self.errno = errno
        self.handler = handler
        self.options = options or {}
        self.args = args or []
        self.callback = callback
        self.where = where  # the JSON path it came from, for reports

    def matches(self, args: tuple[int, ...] | list[int]) -> bool:
        return all(c.matches(args) for c in self.args)

    def __repr__(self) -> str:
        extra = f", errno={self.errno}" if self.action == "deny" else ""
        if self.handler:
            extra += f", handler={self.handler!r}"
        return f"Rule({self.action!r}{extra}, args={len(self.args)})"


class Call:
    """What an ``ask`` callback sees: register values only, never workload memory
    (a pointer argument is just a number here: what it points to can change after
    any read, so no decision may rest on it)."""

    __slots__ = ("args", "name", "nr", "pid")

    def __init__(self, pid: int, name: str, nr: int, args: tuple[int, ...]) -> None:
        self.pid = pid
        self.name = name
        self.nr = nr
        self.args = args

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "syscall": self.name, "nr": self.nr, "args": list(self.args)}

    def __repr__(self) -> str:
        return f"Call(pid={self.pid}, {self.name}{tuple(hex(a) for a in self.args)})"


class Decision:
    """An ``ask`` callback's answer: ``Decision("deny", errno=13)``, ``Decision("allow")``,
    ``Decision("kill")``, ``Decision("log")`` or ``Decision("return", value=0)``."""

    __slots__ = ("action", "errno", "value")

    def __init__(self, action: str, errno: int | str = EPERM, value: int = 0) -> None:
        if action not in ("allow", "deny", "kill", "log", "return"):
            raise ValueError(f"ask decision {action!r}: allow, deny, kill, log or return")
        self.action = action
        self.errno = errno_number(errno, "errno") if isinstance(errno, str) else errno
        self.value = value


def errno_number(value: Any, path: str) -> int:
    """An errno from a name ("EACCES") or a number (1..4095)."""
    if isinstance(value, bool):
        raise SpecError(path, f"expected an errno name or number, got {value!r}")
    if isinstance(value, str):
        num = getattr(_errno, value.upper(), None) if value.upper().startswith("E") else None
        if not isinstance(num, int):
            raise SpecError(path, f"unknown errno name {value!r}")
        return num
    if isinstance(value, int):
        if not 1 <= value <= 4095:
            raise SpecError(path, f"errno {value} out of range [1, 4095]")
        return value
    raise SpecError(path, f"expected an errno name or number, got {type(value).__name__}")


def syscall_number(name: str) -> int | None:
    """The native number of a syscall name (None if the kernel's table lacks it)."""
    from contain.linux import libseccomp as L

    nr = L.syscall_resolve_name(name)
    return nr if nr >= 0 else None


_NAMES: dict[int, str] = {}


def syscall_name(nr: int) -> str:
    name = _NAMES.get(nr)
    if name is None:
        from contain.linux import libseccomp as L

        name = L.syscall_resolve_num(nr, L.arch_native()) or f"syscall_{nr}"
        _NAMES[nr] = name
    return name


def ready_answer(policy: Any, report: Any, name: str,
                 nr: int) -> tuple[bool, int, int, Any] | None:
    """For a call whose rule depends on its number alone and needs no handler (allow,
    log, deny, emulate ``return``): (goes on unchanged, value, errno, the report's
    emitter or None), which a supervisor compiles once per number into its own answer;
    None when each call must be looked at."""
    rules = policy.rules.get(name)
    rule = policy.default if rules is None else rules[0]
    if not (rules is None or (len(rules) == 1 and not rule.args)):
        return None
    if rule.action == "allow":
        return True, 0, 0, None
    if rule.action == "log":
        return True, 0, 0, report.emitter(name, nr, "log", rule=rule.where)
    if rule.action == "deny":
        return False, 0, rule.errno, report.emitter(name, nr, "deny", errno=rule.errno,
                                                    rule=rule.where)
    if rule.action == "emulate" and rule.handler == "return":
        err = int(rule.options.get("errno", 0))
        val = 0 if err else int(rule.options.get("value", 0))
        return False, val, err, report.emitter(name, nr, "emulate", handler="return",
                                               result=-err if err else val, rule=rule.where)
    return None


def all_syscalls() -> dict[str, int]:
    """Every syscall name of the native architecture that libseccomp knows."""
    from contain.linux import libseccomp as L

    arch = L.arch_native()
    out: dict[str, int] = {}
    for nr in range(0, 1024):
        name = L.syscall_resolve_num(nr, arch)
        if name:
            out[name] = nr
    return out


def _decode_args(obj: Any, path: str) -> list[ArgCond]:
    if not isinstance(obj, list):
        raise SpecError(path, f"expected an array, got {type(obj).__name__}")
    out = []
    seen: set[int] = set()
    for i, a in enumerate(obj):
        ap = f"{path}[{i}]"
        if not isinstance(a, dict):
            raise SpecError(ap, f"expected an object, got {type(a).__name__}")
        for key in a:
            if key not in ("index", "op", "value", "valueTwo"):
                raise SpecError(f"{ap}.{key}", "unknown field (index, op, value, valueTwo)")
        index = a.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
            raise SpecError(f"{ap}.index", f"expected an argument index 0..5, got {index!r}")
        if index in seen:
            raise SpecError(f"{ap}.index", f"argument {index} is compared twice (use two rules)")
        seen.add(index)
        op = a.get("op", "SCMP_CMP_EQ")
        if op not in OPS:
            raise SpecError(f"{ap}.op", f"unknown operator {op!r} ({', '.join(OPS)})")
        vals = []
        for key in ("value", "valueTwo"):
            v = a.get(key, 0)
            if key == "value" and "value" not in a:
                raise SpecError(f"{ap}.value", "required field is missing")
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**64:
                raise SpecError(f"{ap}.{key}", f"expected an unsigned 64-bit integer, got {v!r}")
            vals.append(v)
        out.append(ArgCond(index, op, vals[0], vals[1]))
    return out


def _rule_table(obj: Any, path: str) -> dict[str, Any]:
    """The table form of a rule: an action name or a callable stands for one."""
    if isinstance(obj, str):
        obj = {"action": obj}
    elif callable(obj):
        obj = {"action": "ask", "callback": obj}
    if not isinstance(obj, dict):
        raise SpecError(path, f"expected an action name or a table, got {type(obj).__name__}")
    action = obj.get("action")
    if action is None:
        raise SpecError(f"{path}.action", "required field is missing")
    if action not in ACTIONS:
        raise SpecError(f"{path}.action", f"unknown action {action!r} ({', '.join(ACTIONS)})")
    return obj


def decode_rule(obj: Any, path: str, name: str | None = None) -> Rule:
    """One rule: an action name, or a table with ``action`` and its fields."""
    obj = _rule_table(obj, path)
    action = obj["action"]
    rule = Rule(action, where=path)
    handler_opts: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _RULE_KEYS:
            continue
        if action != "emulate":
            raise SpecError(f"{path}.{key}", f"unknown field for action {action!r}")
        handler_opts[key] = value
    if "errno" in obj:
        if action != "deny":
            raise SpecError(f"{path}.errno", "errno is only for action 'deny'")
        rule.errno = errno_number(obj["errno"], f"{path}.errno")
    if "args" in obj:
        rule.args = _decode_args(obj["args"], f"{path}.args")
    if action == "emulate":
        _decode_emulate(rule, obj.get("handler"), handler_opts, path, name)
    elif "handler" in obj:
        raise SpecError(f"{path}.handler", "handler is only for action 'emulate'")
    if action == "ask":
        cb = obj.get("callback")
        if not callable(cb):
            raise SpecError(f"{path}.callback", "action 'ask' needs a Python callable "
                            "(only in the Python API)")
        rule.callback = cb
    elif "callback" in obj:
        raise SpecError(f"{path}.callback", "callback is only for action 'ask'")
    return rule


def _decode_emulate(rule: Rule, handler: Any, opts: dict[str, Any], path: str,
                    name: str | None) -> None:
    from contain.sandbox.supervise.handlers import HANDLERS, check_options

    if handler is None:
        raise SpecError(f"{path}.handler", "required for action 'emulate' "
                        f"({', '.join(sorted(HANDLERS))})")
    spec = HANDLERS.get(handler)
    if spec is None:
        raise SpecError(f"{path}.handler",
                        f"unknown handler {handler!r} ({', '.join(sorted(HANDLERS))})")
    if name is not None and spec.syscalls and name not in spec.syscalls:
        raise SpecError(f"{path}.handler", f"handler {handler!r} emulates "
                        f"{', '.join(spec.syscalls)}, not {name}")
    rule.handler = handler
    rule.options = spec.decode(opts, path)
    check_options(handler, rule.options, path)


class SyscallPolicy:
    """The decoded policy: a default rule and, per syscall name, its rules in order."""

    __slots__ = ("default", "document", "numbers", "path", "route_all", "rules")

    def __init__(self, default: Rule | None = None,
                 rules: dict[str, list[Rule]] | None = None) -> None:
        self.default = default or Rule("allow", where="default")
        self.rules: dict[str, list[Rule]] = rules or {}
        self.numbers: dict[int, str] = {}
        self.route_all = False  # recording: every call reaches the supervisor
        self.path = "$"  # where it came from, for errors found later
        self.document = "policy"
        for name in self.rules:
            nr = syscall_number(name)
            if nr is not None:
                self.numbers[nr] = name

    @classmethod
    def decode(cls, obj: Any, path: str = "$.syscalls") -> SyscallPolicy:
        """Decode the policy table; a SpecError names the bad field."""
        if isinstance(obj, SyscallPolicy):
            return obj
        if not isinstance(obj, dict):
            raise SpecError(path, f"expected a table, got {type(obj).__name__}")
        default = Rule("allow", where=f"{path}.default")
        if "default" in obj:
            default = decode_rule(obj["default"], f"{path}.default")
            if default.args:
                raise SpecError(f"{path}.default.args", "the default rule takes no args")
            if default.action == "emulate":
                raise SpecError(f"{path}.default.action", "the default cannot be 'emulate'")
        rules: dict[str, list[Rule]] = {}
        for name, value in obj.items():
            if name == "default":
                continue
            rp = f"{path}.{name}"
            if not isinstance(name, str) or not name:
                raise SpecError(rp, "empty syscall name")
            if syscall_number(name) is None:
                raise SpecError(rp, f"unknown system call {name!r}")
            if isinstance(value, list):
                if not value:
                    raise SpecError(rp, "an empty list of rules")
                rules[name] = [decode_rule(v, f"{rp}[{i}]", name) for i, v in enumerate(value)]
            else:
                rules[name] = [decode_rule(value, rp, name)]
        out = cls(default, rules)
        out.path = path
        return out

    def rules_for(self, name: str) -> list[Rule]:
        return self.rules.get(name, [])

    def decide(self, name: str, args: tuple[int, ...] | list[int]) -> Rule:
        """The rule for a call: the first of its syscall's rules whose args match,
        else the default."""
        for rule in self.rules.get(name, ()):
            if rule.matches(args):
                return rule
        return self.default

    def supervised(self, name: str) -> bool:
        """Whether calls of *name* must reach the supervisor (anything but a plain
        allow, for some argument values)."""
        if self.route_all:
            return True
        rules = self.rules.get(name)
        if rules is None:
            return self.default.action != "allow"
        if any(r.action != "allow" for r in rules):
            return True
        return bool(all(r.args for r in rules)) and self.default.action != "allow"

    def needs_callbacks(self) -> bool:
        return any(r.action == "ask" for rs in self.rules.values() for r in rs) or \
            self.default.action == "ask"
