"""``contain sandbox [options] -- CMD ...``: a command in a sandbox, no image needed."""

from __future__ import annotations

from contain.cli.args import Command, Flag
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cli.main import Context

COMMANDS = {
    "sandbox": Command("sandbox", "cmd_sandbox", (
        Flag("--memory,-m", default=None, help="memory limit (e.g. 256M)"),
        Flag("--pids", "int", default=None, help="maximum number of processes"),
        Flag("--cpus", default=None, help="CPU limit in cores (e.g. 0.5)"),
        Flag("--bind", "list", help="bind SRC:DST[:ro] into the sandbox (repeatable)"),
        Flag("--net", default="none", help="network: none (own namespace) or host"),
        Flag("--env,-e", "list", help="set NAME=VALUE in the environment (repeatable)"),
        Flag("--cwd", default="/", help="working directory inside the sandbox"),
        Flag("--hostname", default=None, help="hostname inside the sandbox"),
        Flag("--userns", "bool", help="also use a new user namespace (root maps to you)"),
        Flag("--cap", "list", help="keep this capability (repeatable; default: none)"),
        Flag("--no-seccomp", "bool", help="do not apply the default seccomp profile"),
        Flag("--tty,-t", "bool", help="allocate a terminal"),
        Flag("--supervise", default=None,
             help="supervise system calls with this policy (TOML/JSON file or inline JSON)"),
        Flag("--supervisor", default=None, help="notify (default) or ptrace"),
        Flag("--supervise-report", default=None,
             help="write the supervisor's decisions as JSON lines to FILE or FD"),
        Flag("--record", default=None,
             help="record every system call; write an OCI seccomp profile to PROFILE"),
        Flag("--enforce", default=None,
             help="run under an OCI seccomp profile; report (and deny) what it does not allow"),
    ), "[options] -- CMD [ARG...]",
        "run a command in fresh namespaces over the read-only host root",
        interspersed=False, min_args=1),
}


def cmd_sandbox(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.sandbox.run import run_sandbox

    cpus = None
    if opts["cpus"] is not None:
        try:
            cpus = float(opts["cpus"])
        except ValueError as exc:
            raise ContainError(f"invalid --cpus {opts['cpus']!r}: a number of cores") from exc
    code, _, _ = run_sandbox(
        args, root=ctx.root, terminal=opts["tty"], memory=opts["memory"], pids=opts["pids"],
        cpus=cpus, binds=opts["bind"], net=opts["net"], env=opts["env"], cwd=opts["cwd"],
        hostname=opts["hostname"], userns=opts["userns"], caps=opts["cap"],
        seccomp=not opts["no_seccomp"], forward_signals=True, supervise=opts["supervise"],
        supervisor=opts["supervisor"], supervise_report=opts["supervise_report"],
        record=opts["record"], enforce=opts["enforce"])
    return code
