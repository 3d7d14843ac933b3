"""A small command-line parser with runc's conventions.

argparse costs ~13 ms to import here, more than all of ``contain state``'s own work.
This parser covers what runc's command line uses: long and short flags, ``--flag value``
and ``--flag=value``, booleans (``--detach``, ``--detach=false``), repeated flags, and
flag parsing that stops at the first positional argument for commands that take a
command line after the id (exec, sandbox), as urfave/cli does for runc.
"""

from __future__ import annotations

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class UsageError(ContainError):
    """Wrong command-line usage (exit code 1, like runc)."""


class Flag:
    __slots__ = ("names", "dest", "kind", "default", "help", "metavar")

    def __init__(self, names: str, kind: str = "str", default: Any = None, help: str = "",
                 dest: str | None = None, metavar: str = "value") -> None:
        # kind: "bool", "str", "int", "list" (repeatable str)
        self.names = tuple(names.split(","))
        self.dest = dest or self.names[0].lstrip("-").replace("-", "_")
        self.kind = kind
        self.default = [] if kind == "list" and default is None else default
        if kind == "bool" and default is None:
            self.default = False
        self.help = help
        self.metavar = metavar


class Command:
    __slots__ = ("name", "target", "flags", "usage", "help", "interspersed", "min_args",
                 "max_args", "hidden")

    def __init__(self, name: str, target: str, flags: tuple[Flag, ...] = (), usage: str = "",
                 help: str = "", interspersed: bool = True, min_args: int = 0,
                 max_args: int | None = None, hidden: bool = False) -> None:
        self.name = name
        self.target = target  # "module:function", imported only when the command runs
        self.flags = flags
        self.usage = usage
        self.help = help
        self.interspersed = interspersed
        self.min_args = min_args
        self.max_args = max_args
        self.hidden = hidden


def _bool(text: str, flag: str) -> bool:
    low = text.lower()
    if low in ("1", "t", "true", "yes"):
        return True
    if low in ("0", "f", "false", "no"):
        return False
    raise UsageError(f"invalid boolean value {text!r} for flag {flag}")


def parse(argv: list[str], flags: tuple[Flag, ...], interspersed: bool = True,
          stop_at_first: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Parse *argv* against *flags*; return (options, positional arguments).

    With *stop_at_first*, parsing ends at the first positional argument and the rest
    is returned untouched (the global flags before a command name)."""
    by_name = {n: f for f in flags for n in f.names}
    opts: dict[str, Any] = {f.dest: (list(f.default) if f.kind == "list" else f.default)
                            for f in flags}
    pos: list[str] = []
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--":
            pos.extend(argv[i + 1:])
            break
        if arg.startswith("-") and arg != "-":
            name, eq, inline = arg.partition("=")
            flag = by_name.get(name)
            if flag is None:
                raise UsageError(f"flag provided but not defined: {name}")
            if flag.kind == "bool":
                opts[flag.dest] = _bool(inline, name) if eq else True
                i += 1
                continue
            if eq:
                value = inline
                i += 1
            else:
                if i + 1 >= n:
                    raise UsageError(f"flag needs an argument: {name}")
                value = argv[i + 1]
                i += 2
            if flag.kind == "int":
                try:
                    opts[flag.dest] = int(value, 0)
                except ValueError as exc:
                    raise UsageError(f"invalid value {value!r} for flag {name}: "
                                     "expected an integer") from exc
            elif flag.kind == "list":
                opts[flag.dest].append(value)
            else:
                opts[flag.dest] = value
            continue
        if stop_at_first or not interspersed:
            pos.extend(argv[i:])
            break
        pos.append(arg)
        i += 1
    return opts, pos


def format_help(prog: str, cmd: Command) -> str:
    lines = [f"Usage: {prog} {cmd.name} {cmd.usage}".rstrip(), "", cmd.help, ""]
    if cmd.flags:
        lines.append("Options:")
        for f in cmd.flags:
            names = ", ".join(f.names)
            if f.kind != "bool":
                names += f" {f.metavar}"
            lines.append(f"   {names:<32} {f.help}")
    return "\n".join(lines) + "\n"
