"""spec, create, start, state, kill, delete, list, run, features: runc's commands."""

from __future__ import annotations

import sys

from contain.cli.args import Command, Flag
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cli.main import Context

_BUNDLE = Flag("--bundle,-b", default=None, help="path to the root of the bundle directory")
_PID_FILE = Flag("--pid-file", default=None, help="file to write the process id to")
_CONSOLE = Flag("--console-socket", default=None,
                help="unix socket to receive the pty master of a terminal")
_PRESERVE = Flag("--preserve-fds", "int", default=0,
                 help="pass N additional file descriptors to the container (3 ... 3+N-1)")
_NO_PIVOT = Flag("--no-pivot", "bool", help="do not use pivot_root (MS_MOVE + chroot instead)")
_NO_KEYRING = Flag("--no-new-keyring", "bool",
                   help="do not create a new session keyring for the container")
_PIDFD = Flag("--pidfd-socket", default=None,
               help="unix socket to receive a pidfd of the container's process")
_CREATE_FLAGS = (_BUNDLE, _CONSOLE, _PID_FILE, _PIDFD, _NO_PIVOT, _NO_KEYRING, _PRESERVE,
                 Flag("--no-subreaper", "bool", help="(ignored, for runc compatibility)"))

COMMANDS = {
    "spec": Command("spec", "cmd_spec", (
        _BUNDLE, Flag("--rootless", "bool", help="a configuration for a rootless container"),
        Flag("--seccomp", "bool", help="include the default seccomp profile"),
    ), "", "create a new specification file (config.json)", max_args=0),
    "create": Command("create", "cmd_create", _CREATE_FLAGS, "<container-id>",
                      "create a container", min_args=1, max_args=1),
    "start": Command("start", "cmd_start", (), "<container-id>",
                     "executes the user defined process in a created container",
                     min_args=1, max_args=1),
    "state": Command("state", "cmd_state", (), "<container-id>",
                     "output the state of a container", min_args=1, max_args=1),
    "kill": Command("kill", "cmd_kill", (
        Flag("--all,-a", "bool", help="send the signal to all processes in the container"),
    ), "<container-id> [signal]", "send a signal to the container's init process",
        min_args=1, max_args=2),
    "delete": Command("delete", "cmd_delete", (
        Flag("--force,-f", "bool", help="forcibly delete a running container (SIGKILL)"),
    ), "<container-id>", "delete any resources held by the container", min_args=1,
        max_args=1),
    "list": Command("list", "cmd_list", (
        Flag("--format,-f", default="table", help="table or json"),
        Flag("--quiet,-q", "bool", help="display only container ids"),
    ), "", "lists containers started by contain with the given root", max_args=0),
    "run": Command("run", "cmd_run", (
        *_CREATE_FLAGS,
        Flag("--detach,-d", "bool", help="detach from the container's process"),
        Flag("--keep", "bool", help="do not delete the container after it exits"),
    ), "<container-id>", "create and run a container", min_args=1, max_args=1),
    "features": Command("features", "cmd_features", (), "",
                        "show the enabled features (OCI features JSON)", max_args=0),
}


def cmd_spec(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    import os

    from contain.jsonio import dumps
    from contain.spec.defaults import default_spec

    bundle = opts["bundle"] or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise ContainError("File config.json exists. Remove it first.")
    spec = default_spec(rootless=opts["rootless"])
    if opts["seccomp"]:
        from contain.security.seccomp_default import default_profile_for_spec

        spec["linux"]["seccomp"] = default_profile_for_spec(spec)
    try:
        with open(path, "w") as f:
            f.write(dumps(spec, indent=2) + "\n")
    except OSError as exc:
        raise ContainError(f"{path}: {exc.strerror}") from exc
    return 0


def _create_options(ctx: Context, opts: dict[str, Any]) -> Any:
    from contain.container.lifecycle import CreateOptions

    if opts["preserve_fds"] < 0:
        raise ContainError("--preserve-fds must not be negative")
    options = CreateOptions(console_socket=opts["console_socket"],
                            pid_file=opts["pid_file"], preserve_fds=opts["preserve_fds"],
                            no_pivot=opts["no_pivot"], no_new_keyring=opts["no_new_keyring"],
                            rootless=ctx.rootless == "true", pidfd_socket=opts["pidfd_socket"])
    options.systemd_cgroup = ctx.systemd_cgroup
    return options


def _cwd() -> str:
    import posix  # (os is not imported at module level: the light commands need none of it)

    return posix.getcwd()


def _supervised(spec: Any) -> bool:
    """An annotation asks for a syscall supervisor (docs/supervise.md)."""
    ann = spec.annotations
    return bool(ann) and ("org.contain.supervise" in ann or "org.contain.record" in ann)


def cmd_create(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.cgroups import warm

    with warm.warming():  # first: the cgroup-attach lock warms while we parse and import
        from contain.container.lifecycle import create, load_bundle

        options = _create_options(ctx, opts)  # (bad flags first, before the bundle)
        bundle, spec = load_bundle(opts["bundle"] or _cwd())
        if _supervised(spec):
            from contain.sandbox.supervise.oci import create_supervised

            create_supervised(ctx.root, args[0], bundle, spec, options)
            return 0
        create(ctx.root, args[0], bundle, options, spec=spec)
    return 0


def cmd_start(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.control import start

    start(ctx.root, args[0])
    return 0


def cmd_state(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import store
    from contain.jsonio import dumps

    state = store.load(ctx.root, args[0]).oci_state()
    state["owner"] = ""  # runc's state prints an empty owner (list shows the user)
    sys.stdout.write(dumps(state, indent=2))
    return 0


def cmd_kill(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.control import kill, parse_signal

    sig = parse_signal(args[1]) if len(args) > 1 else 15
    kill(ctx.root, args[0], sig, all_processes=opts["all"])
    return 0


def cmd_delete(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.control import delete
    from contain.errors import NotFound

    try:
        delete(ctx.root, args[0], force=opts["force"])
    except NotFound:
        if opts["force"]:  # runc: deleting a missing container with --force succeeds
            return 0
        raise
    return 0


def cmd_list(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container import store
    from contain.errors import NotFound

    # runc 1.5: a --root that does not exist is an error; the default one lists nothing
    # (no container made yet)
    try:
        ids = store.list_ids(ctx.root, missing_ok=not ctx.root_given)
    except OSError as exc:
        raise ContainError(f"--root {ctx.root}: {exc.strerror or exc}") from exc
    records = []
    for cid in ids:
        try:
            records.append(store.load(ctx.root, cid).oci_state())
        except NotFound:  # deleted meanwhile
            continue
        except (ContainError, OSError, ValueError, KeyError, TypeError) as exc:
            # one bad entry must not hide the others: say so and go on
            from contain import log
            from contain.cli.main import one_line

            if not isinstance(exc, ContainError):
                exc = ContainError(f"container {cid}: {type(exc).__name__}: {exc}")
            log.warning(one_line(f"skipped: {exc}"))
    if opts["quiet"]:
        sys.stdout.write("".join(f"{r['id']}\n" for r in records))
        return 0
    if opts["format"] == "json":
        from contain.jsonio import dumps

        sys.stdout.write((dumps(records) if records else "null") + "\n")
        return 0
    if opts["format"] != "table":
        raise ContainError(f"invalid format option {opts['format']!r}: table or json")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"])
             for r in records]
    widths = [max(12, max(len(row[i]) for row in rows) + 3) for i in range(5)]
    out = []
    for row in rows:
        out.append("".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
                   + row[5] + "\n")
    sys.stdout.write("".join(out))
    return 0


def cmd_run(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.cgroups import warm

    with warm.warming():  # first: the cgroup-attach lock warms while we parse and import
        from contain.container.lifecycle import load_bundle
        from contain.container.run import run_container

        cid = args[0]
        bundle, spec = load_bundle(opts["bundle"] or _cwd())
        if _supervised(spec):
            from contain.sandbox.supervise.oci import run_supervised

            return run_supervised(ctx.root, cid, bundle, spec, _create_options(ctx, opts),
                                  detach=opts["detach"], keep=opts["keep"])
        return run_container(ctx.root, cid, bundle, spec, _create_options(ctx, opts),
                             detach=opts["detach"], keep=opts["keep"], forward_signals=True)


def cmd_features(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.features import features
    from contain.jsonio import dumps

    sys.stdout.write(dumps(features(), indent=4) + "\n")
    return 0
