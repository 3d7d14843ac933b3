"""The ``contain`` command line: runc's global flags and commands, dispatched lazily.

Each command lives in a ``contain.cli.cmd_*`` module that declares its flags in a
``COMMANDS`` table; only the module of the command being run is imported.
"""

from __future__ import annotations

import sys

from contain.cli.args import Command, Flag, UsageError, format_help, parse
from contain.errors import ContainError, message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# command name -> module under contain.cli (imported only when the command runs)
REGISTRY: dict[str, str] = {
    "spec": "cmd_lifecycle", "create": "cmd_lifecycle", "start": "cmd_lifecycle",
    "state": "cmd_lifecycle", "kill": "cmd_lifecycle", "delete": "cmd_lifecycle",
    "list": "cmd_lifecycle", "run": "cmd_lifecycle", "features": "cmd_lifecycle",
    "exec": "cmd_exec", "sandbox": "cmd_sandbox",
    "update": "cmd_resources", "pause": "cmd_resources", "resume": "cmd_resources",
    "events": "cmd_resources", "ps": "cmd_resources",
    "inspect": "cmd_inspect", "probe": "cmd_inspect", "classify": "cmd_inspect",
    "bench": "cmd_bench",
    "checkpoint": "cmd_checkpoint", "restore": "cmd_checkpoint",
}

# commands that set up or look at containers and exit: the cyclic garbage collector is
# kept off while they run (see _collector_off); run and sandbox turn it back on once
# their container runs (container/run.py), the others (bench, inspect, events, exec ...)
# keep it on throughout
SETUP_COMMANDS = frozenset(("create", "start", "state", "kill", "delete", "list", "spec",
                            "features", "pause", "resume", "update", "ps", "run", "sandbox"))

GLOBAL_FLAGS = (
    Flag("--root", default=None, help="root directory for storage of container state"),
    Flag("--log", default=None, help="set the log file to write runtime logs to"),
    Flag("--log-format", default="text", help="log format: text (default) or json"),
    Flag("--debug", "bool", help="enable debug logging and tracebacks"),
    Flag("--systemd-cgroup", "bool", help="systemd cgroup driver (slice:prefix:name)"),
    Flag("--rootless", default="auto", help="ignore cgroup permission errors (true, false, auto)"),
    Flag("--criu", default="criu", help="path to the criu binary (checkpoint, restore)"),
    Flag("--version,-v", "bool", help="print the version"),
    Flag("--help,-h", "bool", help="show help"),
)


class Context:
    """What the global flags decide, handed to every command."""

    __slots__ = ("_root", "root_given", "log", "log_format", "debug", "systemd_cgroup",
                 "rootless", "criu")

    def __init__(self, opts: dict[str, Any]) -> None:
        self._root: str | None = opts["root"]
        self.root_given = self._root is not None  # --root, not the default
        self.log: str | None = opts["log"]
        self.log_format: str = opts["log_format"]
        self.debug: bool = opts["debug"]
        self.systemd_cgroup: bool = opts["systemd_cgroup"]
        self.rootless: str = opts["rootless"]
        self.criu: str = opts["criu"]

    @property
    def root(self) -> str:
        """--root, or the state store's default (looked up only by the commands that
        use a root, which import the store anyway)."""
        if self._root is None:
            from contain.container.store import default_root

            self._root = default_root()
        return self._root


def version_text() -> str:
    """runc's shape: the version, then one "name: value" line per component."""
    from contain.meta import SPEC_VERSION, VERSION

    try:
        from contain.linux.libseccomp import version

        libseccomp = ".".join(map(str, version()))
    except Exception:  # libseccomp missing: say so rather than fail --version
        libseccomp = "not found"
    return (f"contain version {VERSION}\nspec: {SPEC_VERSION}\n"
            f"python: {sys.version.split()[0]}\nlibseccomp: {libseccomp}\n")


def _load(name: str) -> tuple[Command, Any]:
    # __import__ rather than importlib.import_module: importlib drags in `warnings`
    module = __import__(f"contain.cli.{REGISTRY[name]}", fromlist=["COMMANDS"])
    cmd: Command = module.COMMANDS[name]
    return cmd, getattr(module, cmd.target)


def usage_text() -> str:
    lines = ["Usage: contain [global options] command [command options] [arguments...]", "",
             "Commands:"]
    for name in REGISTRY:
        try:
            cmd, _ = _load(name)
        except (ImportError, KeyError, AttributeError):
            continue
        if not cmd.hidden:
            lines.append(f"   {name:<10} {cmd.help.splitlines()[0] if cmd.help else ''}")
    lines += ["", "Global options:"]
    for f in GLOBAL_FLAGS:
        lines.append(f"   {', '.join(f.names):<22} {f.help}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The command line's work (the caller exits with the status it returns: a setup
    command leaves the garbage collector off, see _collector_off)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = False
    try:
        gopts, rest = parse(argv, GLOBAL_FLAGS, stop_at_first=True)
        debug = gopts["debug"]
        if gopts["log_format"] not in ("text", "json"):
            raise UsageError(f"invalid log format {gopts['log_format']!r}: text or json")
        _configure_log(gopts["log"], gopts["log_format"], debug)
        if gopts["version"]:
            sys.stdout.write(version_text())
            return 0
        if not rest or gopts["help"] or rest[0] == "help":
            if len(rest) > 1 and rest[1] in REGISTRY:
                cmd, _ = _load(rest[1])
                sys.stdout.write(format_help("contain", cmd))
            else:
                sys.stdout.write(usage_text())
            return 0 if (gopts["help"] or rest) else 1
        name = rest[0]
        if name not in REGISTRY:
            raise UsageError(f"unknown command {name!r} (see contain --help)")
        if name in SETUP_COMMANDS:
            _collector_off()
        cmd, handler = _load(name)
        flags = (*cmd.flags, Flag("--help,-h", "bool", help="show help"))
        opts, args = parse(rest[1:], flags, interspersed=cmd.interspersed)
        if opts.pop("help"):
            sys.stdout.write(format_help("contain", cmd))
            return 0
        if len(args) < cmd.min_args:
            raise UsageError(f"{name}: expected at least {cmd.min_args} argument(s): "
                             f"{name} {cmd.usage}".rstrip())
        if cmd.max_args is not None and len(args) > cmd.max_args:
            raise UsageError(f"{name}: too many arguments: {name} {cmd.usage}".rstrip())
        ctx = Context(gopts)
        return int(handler(ctx, opts, args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; with --debug, the traceback
        if debug and not isinstance(exc, ContainError):
            raise
        text = message(exc)
        if not isinstance(exc, (ContainError, OSError)):  # a bug of ours
            text += " (run with --debug for details)"
        from contain import log

        log.error(one_line(text))
        return 1


def _collector_off() -> None:
    """No cyclic garbage collection in this process, for a command that sets up and
    exits: importing its ~40-55 modules (code objects, functions, classes) triggers
    collections that walk every object made so far, ~1-1.5 ms of CPU for a create or a
    sandbox (docs/performance.md), and the few cycles such a command makes are freed
    when it exits. A forked child that stays a Python process (a sandbox's init, a
    supervisor, the network's helpers) gets the collector back at once, with what
    exists at the fork frozen (gc.freeze: the module-level objects of the imports,
    which live until the exit anyway, are then never walked again)."""
    import gc
    import posix

    if gc.isenabled():
        gc.disable()
        _collector["off"] = True
        if not _collector["hooked"]:
            posix.register_at_fork(after_in_child=_child_collector)
            _collector["hooked"] = True


_collector = {"off": False, "hooked": False}


def _child_collector() -> None:
    if _collector["off"]:  # (a fork while the collector was off for the set-up)
        _collector["off"] = False
        import gc

        gc.freeze()  # what the set-up made: kept, never walked (no first full collection)
        gc.enable()


def run() -> None:
    """The entry point of the ``contain`` command (the launcher and the packaged
    script): :func:`main`, then :func:`leave`."""
    leave(main())


def leave(status: int) -> None:
    """Exit with *status*, without the interpreter's finalization when nothing needs it.

    Tearing down the modules, the objects and the allocator at exit costs a light
    command ~1.5 ms of CPU, a fifth of what the interpreter's start costs
    (docs/performance.md). The command's output is flushed first; when something may
    still want to run at exit (an ``atexit`` callback, a ``threading`` thread to join)
    or a flush fails (the interpreter then reports it, as usual), the normal exit is
    taken."""
    import posix  # (os costs ~1 ms to import: see container/store.py)

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        sys.exit(status)
    if "atexit" in sys.modules or "threading" in sys.modules:
        sys.exit(status)
    posix._exit(status & 0xFF)


def _configure_log(path: str | None, fmt: str, debug: bool) -> None:
    if path:
        _check_log(path)
    if path or fmt != "text" or debug:  # else the log's defaults: imported when a line is due
        from contain import log

        log.configure(path, fmt, debug)


def _check_log(path: str) -> None:
    """A --log file that cannot be opened fails the command (runc), instead of the
    messages going to stderr where the engine does not look."""
    import posix

    try:
        posix.close(posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT
                               | posix.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise ContainError(f"--log {path}: {exc.strerror}") from exc


MAX_ERROR = 1000  # characters of an error line (the values it quotes are cut at 200)


def one_line(text: str) -> str:
    """An error as one line of bounded length, whatever it quotes: the middle goes (the
    field comes first and the cause last)."""
    if "\n" in text or "\r" in text:
        text = " ".join(text.split())
    if len(text) > MAX_ERROR:
        keep = MAX_ERROR // 3
        text = f"{text[:2 * keep]} ...({len(text) - 3 * keep} characters)... {text[-keep:]}"
    return text

