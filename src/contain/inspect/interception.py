"""Filtering or interception: who decides a process's system calls.

A seccomp filter that only allows, denies or kills decides every call in the kernel: it
is a deny list, the container class's own tool (Docker and Podman load one; the survey's
Table 1 gives them no BPF mark). A filter that returns USER_NOTIF or TRACE hands calls to
a process in user space -- a supervisor that sees and decides them: that, or a tracer
stopping every call, is the sandbox class's interception (survey 4.4, 5.5).

The filters themselves are read with PTRACE_SECCOMP_GET_FILTER during a short ptrace stop
(root only); Syscall User Dispatch with PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG (Linux
6.4+) in the same stop. A process that is already traced cannot be stopped by us: its
tracer is the evidence then.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HANDED_TO_USER_SPACE = ("notify", "trace")


def _read_stopped(pid: int, filters: int) -> dict[str, Any]:
    from contain.linux.seccomp import StoppedProcess, filter_actions

    out: dict[str, Any] = {"returns": None, "sud": None, "unknown": None, "programs": []}
    try:
        with StoppedProcess(pid) as stopped:
            if filters:
                actions: set[str] = set()
                for index in range(filters):
                    program = stopped.seccomp_filter(index)
                    out["programs"].append(program)
                    actions |= filter_actions(program)
                out["returns"] = sorted(actions)
            else:
                out["returns"] = []
            try:
                out["sud"] = stopped.syscall_user_dispatch()
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EINVAL):
                    raise
                out["sud_unknown"] = "this kernel cannot report it (Linux 6.4+ can)"
    except OSError as exc:
        why = {errno.EPERM: "another tracer holds it, or no ptrace access (root needed)",
               errno.ESRCH: "it exited", errno.EACCES: "no ptrace access"}
        out["unknown"] = why.get(exc.errno or 0, exc.strerror or str(exc))
    return out


def _read_self(filters: int) -> dict[str, Any]:
    """A process cannot stop itself: a forked child has the same filters and SUD off
    (fork clears it), so read the child's filters and report SUD as off."""
    import signal

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only waits to be read
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
            os.kill(os.getpid(), signal.SIGSTOP)
            signal.sigwait([signal.SIGTERM])
        finally:
            os._exit(0)
    try:
        os.waitpid(pid, os.WUNTRACED)
        out = _read_stopped(pid, filters)
        out["sud"] = None
        out["sud_unknown"] = "not readable for the inspector's own process"
        return out
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def notify_listeners() -> list[dict[str, Any]]:
    """Processes holding a seccomp user-notification listener (a supervisor or an OCI
    seccomp agent), with how many."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        n = 0
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                try:
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == "anon_inode:seccomp notify":
                        n += 1
                except OSError:
                    continue
            if n:
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
                out.append({"pid": int(entry), "comm": comm, "listeners": n})
        except OSError:
            continue
    return out


def seccomp_interception(pid: int, filters: int, tracer: int, surface: bool = False
                         ) -> dict[str, Any]:
    """What *pid*'s filters return, whether a live process in user space receives any of
    its calls, and its Syscall User Dispatch setting; with *surface*, which system calls
    reach the kernel under those filters (see filtereval: ~0.1-0.5 s of evaluation)."""
    if os.geteuid() != 0:
        read: dict[str, Any] = {"returns": None, "sud": None,
                                "unknown": "reading filters needs root (CAP_SYS_ADMIN)"}
    elif pid == os.getpid():
        read = _read_self(filters)
    elif tracer:
        read = {"returns": None, "sud": None,
                "unknown": f"traced by pid {tracer}, which decides its calls"}
    else:
        read = _read_stopped(pid, filters)
    returns = read["returns"]
    out: dict[str, Any] = {"returns": returns, "unknown": read["unknown"],
                           "sud": read["sud"], "sud_unknown": read.get("sud_unknown"),
                           "handed_to_user_space": None, "supervisors": [],
                           "surface": None}
    if returns is None:
        return out
    if surface:
        from contain.inspect.filtereval import FilterError
        from contain.inspect.filtereval import surface as evaluate

        try:
            out["surface"] = evaluate(read.get("programs") or [])
        except (FilterError, OSError) as exc:
            out["surface"] = {"error": str(exc)}
    handed = [r for r in returns if r in HANDED_TO_USER_SPACE]
    out["handed_to_user_space"] = handed
    if "notify" in handed:
        out["supervisors"] = [p for p in notify_listeners() if p["pid"] != pid]
    if "trace" in handed and tracer:
        out["supervisors"].append({"pid": tracer, "comm": _comm(tracer), "tracer": True})
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def kind_of(icpt: dict[str, Any] | None, filters: int) -> tuple[str, str]:
    """('interception' | 'filter' | 'none' | 'unknown', one line of evidence)."""
    if not icpt:
        return ("filter", f"{filters} seccomp filter(s)") if filters else ("none", "no filter")
    returns = icpt.get("returns")
    if returns is None:
        return ("unknown" if filters else "none",
                f"{filters} seccomp filter(s); their returns cannot be read: {icpt['unknown']}"
                if filters else "no filter")
    if not filters:
        return "none", "no seccomp filter"
    handed = icpt.get("handed_to_user_space") or []
    sup = icpt.get("supervisors") or []
    if handed and sup:
        who = ", ".join(f"{s['pid']} ({s['comm']})" for s in sup)
        return "interception", (f"the filter returns {'/'.join(handed).upper()} for some calls; "
                                f"received in user space by {who}")
    if handed:
        return "filter", (f"the filter returns {'/'.join(handed).upper()} but no live process "
                          "receives it (those calls fail: fail closed)")
    return "filter", ("a kernel-only filter (returns " + ", ".join(returns)
                      + "): filtering, not interception")
