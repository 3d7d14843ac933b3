"""``contain exec``: run a process inside a running container (runc's flags)."""

from __future__ import annotations

from contain.cli.args import Command, Flag
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cli.main import Context

COMMANDS = {
    "exec": Command("exec", "cmd_exec", (
        Flag("--console-socket", default=None, help="unix socket to receive the pty master"),
        Flag("--cwd", default=None, help="current working directory in the container"),
        Flag("--env,-e", "list", help="set an environment variable (repeatable)"),
        Flag("--tty,-t", "bool", help="allocate a pseudo-TTY"),
        Flag("--user,-u", default=None, help="UID[:GID] to run as"),
        Flag("--additional-gids,-g", "list", help="additional gids (repeatable)"),
        Flag("--process,-p", default=None, help="path to a process.json (OCI process)"),
        Flag("--detach,-d", "bool", help="detach from the container's process"),
        Flag("--pid-file", default=None, help="file to write the process id to"),
        Flag("--pidfd-socket", default=None,
             help="unix socket to receive a pidfd of the process"),
        Flag("--process-label", default=None, help="SELinux label for the process"),
        Flag("--apparmor", default=None, help="AppArmor profile for the process"),
        Flag("--no-new-privs", "bool", help="set no_new_privs for the process"),
        Flag("--cap,-c", "list", help="add a capability (repeatable)"),
        Flag("--preserve-fds", "int", default=0, help="pass N additional fds (3 ... 3+N-1)"),
        Flag("--ignore-paused", "bool", help="allow exec in a paused container"),
        Flag("--cgroup", "list", help="run in an existing sub-cgroup: [CTRL[,CTRL]:]PATH, "
             "relative to the container's (repeatable)"),
    ), "<container-id> <command> [command options]  ||  -p process.json <container-id>",
        "execute new process inside the container", interspersed=False, min_args=1),
}


def cmd_exec(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.cgroups import warm

    with warm.warming():  # the attach of the new process finds the cgroup lock warm
        return _exec(ctx, opts, args)


def _exec(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.exec import ExecOptions, exec_process

    if opts["preserve_fds"] < 0:
        raise ContainError("--preserve-fds must not be negative")
    if opts["user"] is not None:
        uid, colon, gid = opts["user"].partition(":")
        _check_id("--user", "uid", uid)
        if colon and gid:
            _check_id("--user", "gid", gid)
    gids = [_check_id("--additional-gids", "gid", g) for g in opts["additional_gids"]]
    if opts["pid_file"]:
        from contain.container.lifecycle import check_pid_file

        check_pid_file(opts["pid_file"])
    cid, command = args[0], args[1:]
    if command and command[0] == "--":
        command = command[1:]
    eo = ExecOptions(args=command, process_file=opts["process"], tty=opts["tty"],
                     console_socket=opts["console_socket"], detach=opts["detach"],
                     pid_file=opts["pid_file"], cwd=opts["cwd"], env=opts["env"],
                     user=opts["user"], additional_gids=gids, caps=opts["cap"],
                     no_new_privs=opts["no_new_privs"], apparmor=opts["apparmor"],
                     process_label=opts["process_label"], preserve_fds=opts["preserve_fds"],
                     ignore_paused=opts["ignore_paused"], forward_signals=True,
                     cgroup=opts["cgroup"], pidfd_socket=opts["pidfd_socket"])
    return exec_process(ctx.root, cid, eo)


def _check_id(flag: str, what: str, text: str) -> int:
    """A uid or gid given on the command line: a number in 0..2147483647 (4294967295 is
    (uid_t)-1, which setresuid reads as "unchanged": the runtime's root would stay)."""
    from contain.spec.decode import ID_MAX, show

    if not (text.isdigit() and text.isascii() and len(text) <= 18):
        raise ContainError(f"invalid {flag} {show(text)}: the {what} must be a number")
    value = int(text)
    if value > ID_MAX:
        raise ContainError(f"invalid {flag}: {what} {value} out of range [0, {ID_MAX}]")
    return value
