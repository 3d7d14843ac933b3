"""``contain sandbox [options] -- CMD ...``: a command in a sandbox, no image needed."""

from __future__ import annotations

from contain.cli.args import Command, Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cli.main import Context

COMMANDS = {
    "sandbox": Command("sandbox", "cmd_sandbox", (
        Flag("--policy", default=None, help="policy file (TOML or JSON); flags add to it"),
        Flag("--rw", "list", help="make PATH writable (repeatable)"),
        Flag("--ro", "list", help="keep PATH read-only, also inside a writable tree"),
        Flag("--deny", "list", help="hide PATH: an empty file or directory instead"),
        Flag("--deny-secrets", "bool", help="also hide ~/.ssh, ~/.aws, ~/.gnupg, cloud "
             "and registry credentials, browser profiles (see docs/sandbox.md)"),
        Flag("--tmpfs", "list", help="a private tmpfs on PATH[:SIZE] (repeatable)"),
        Flag("--protect", "list", help="also keep PATH read-only inside writable trees "
             "(default: .git/hooks, .git/config, shell rc files)"),
        Flag("--memory,-m", default=None,
             help="memory limit (e.g. 256M; max: none); default: half the host's RAM"),
        Flag("--pids", default=None, help="maximum number of processes (default 4096)"),
        Flag("--cpus", default=None, help="CPU limit in cores (e.g. 0.5)"),
        Flag("--tmp-size", default=None, help="size of the private /tmp (e.g. 256M)"),
        Flag("--shm-size", default=None, help="size of the private /dev/shm"),
        Flag("--bind", "list", help="bind SRC:DST[:ro] into the sandbox (repeatable)"),
        Flag("--net", default=None, help="network: none (own namespace), host, "
             "allow=DOMAIN[:PORT],..., private"),
        Flag("--publish,-p", "list", help="with --net private: forward the host's "
             "127.0.0.1:HOST_PORT to SANDBOX_PORT (HOST_PORT:SANDBOX_PORT, repeatable)"),
        Flag("--landlock", default=None, help="best-effort (default), strict (refuse "
             "when the kernel lacks a feature) or off"),
        Flag("--report", default=None, help="write violations as JSON lines to FILE "
             "or fd N"),
        Flag("--env,-e", "list", help="set NAME=VALUE in the environment (repeatable)"),
        Flag("--cwd", default=None, help="working directory inside the sandbox"),
        Flag("--hostname", default=None, help="hostname inside the sandbox"),
        Flag("--userns", "bool", help="use a new user namespace even as root (it is "
             "automatic for other users)"),
        Flag("--as-root", "bool", help="as root, run the command as root (default: an "
             "unprivileged uid, where this build has it)"),
        Flag("--host-sockets", "bool", help="leave the host's filesystem unix sockets "
             "reachable (where this build masks them)"),
        Flag("--cap", "list", help="keep this capability (repeatable; default: none)"),
        Flag("--no-seccomp", "bool", help="do not apply the default seccomp profile"),
        Flag("--tty,-t", "bool", help="allocate a terminal"),
        Flag("--supervise", default=None, help="supervise system calls by this policy "
             "(a TOML/JSON file or inline JSON; or [syscalls] in --policy)"),
        Flag("--supervisor", default=None, help="the syscall supervisor: notify "
             "(default) or ptrace"),
        Flag("--supervise-report", default=None, help="the supervisor's own decisions "
             "log (FILE or fd; by default they join --report)"),
        Flag("--record", default=None, help="record every system call into an OCI "
             "seccomp profile written to FILE"),
        Flag("--enforce", default=None, help="run under an OCI seccomp profile FILE, "
             "reporting what it refuses"),
    ), "[options] -- CMD [ARG...]",
        "run a command in fresh namespaces over the read-only host root",
        interspersed=False, min_args=1),
}


def cmd_sandbox(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.cgroups import warm

    # first: the sandbox has a cgroup of its own (as root), and attaching to it waits for
    # the cgroup-migration lock's grace period (10-25 ms on v1, cgroups/warm.py) unless
    # that has passed while the policy is built; the runner's own warming is then a no-op
    with warm.warming():
        return _sandbox(ctx, opts, args)


def _sandbox(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    import sys

    from contain.sandbox.policy import Policy, apply_options
    from contain.sandbox.report import Reporter
    from contain.sandbox.runner import build, run_foreground

    pol = Policy.load(opts["policy"]) if opts["policy"] else Policy()
    options: dict[str, Any] = {
        "rw": opts["rw"], "ro": opts["ro"], "deny": opts["deny"], "tmpfs": opts["tmpfs"],
        "protected": opts["protect"], "memory": opts["memory"], "pids": opts["pids"],
        "cpus": opts["cpus"], "tmp_size": opts["tmp_size"], "shm_size": opts["shm_size"],
        "binds": opts["bind"], "net": opts["net"], "publish": opts["publish"],
        "landlock": opts["landlock"],
        "report": opts["report"], "env": opts["env"], "cwd": opts["cwd"],
        "hostname": opts["hostname"], "caps": opts["cap"],
        "userns": True if opts["userns"] else None,
        "seccomp": False if opts["no_seccomp"] else None,
        "deny_secrets": True if opts["deny_secrets"] else None,
        "as_root": True if opts["as_root"] else None,
        "host_sockets": True if opts["host_sockets"] else None,
        "supervise": opts["supervise"], "supervisor": opts["supervisor"],
        "supervise_report": opts["supervise_report"], "record": opts["record"],
        "enforce": opts["enforce"],
    }
    apply_options(pol, {k: v for k, v in options.items() if v not in (None, [])}, flag=True)
    built = build(pol, args, ctx.root, terminal=opts["tty"])
    reporter = Reporter(pol.report.target)
    try:
        return run_foreground(built, ctx.root, reporter)
    finally:
        reporter.close()
        summary = reporter.summary()
        if summary and pol.report.summary:
            print(summary, file=sys.stderr)
