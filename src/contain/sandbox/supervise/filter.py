"""The kernel half of a supervised sandbox: an OCI ``linux.seccomp`` profile in which
the supervised calls return SCMP_ACT_NOTIFY (or SCMP_ACT_TRACE for the ptrace
supervisor) and everything else is decided in the kernel, as before.

How the policy merges with the container's own profile (the default profile of a
sandbox, or ``linux.seccomp`` of a config.json):

* a syscall the policy names is the policy's alone: the profile's rules for it are
  dropped, and it is allowed in the kernel when all its rules say ``allow``, otherwise
  it goes to the supervisor (which also answers per-argument ``allow`` rules, on
  register values);
* with ``default = "allow"`` the profile decides every other call, unchanged;
* with another default, the profile's ``SCMP_ACT_ALLOW`` rules become supervised rules
  (same argument conditions): what the profile allowed now reaches the supervisor,
  what it denied stays denied in the kernel. With no profile, or one whose default
  allows, every syscall the kernel knows is supervised.

``write`` cannot be supervised by the notify supervisor: the runtime hands the listener
over with a write(2) made after the filter is loaded (a notify filter is loaded before
the runtime knows the listener). It is refused when the policy names it, and otherwise
decided by the profile.
"""

from __future__ import annotations

import copy
import os

from contain.errors import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.sandbox.supervise.policy import SyscallPolicy

NOT_NOTIFIABLE = ("write",)
#: never sent to the supervisor unless the policy names them: a process that cannot exit
#: or return from a signal handler cannot even die cleanly (it faults in a loop)
ALWAYS_KERNEL = ("exit", "exit_group", "rt_sigreturn", "restart_syscall")
_ALLOWING = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")


#: handlers that act as the workload inside its root: chroot, setfsuid/setgroups to its
#: ids, CAP_MKNOD lent, a mount in its namespaces -- root's privileges on the host
ROOT_HANDLERS = ("open", "mknod", "mount")


def check_policy(policy: SyscallPolicy, mode: str, machine: str | None = None,
                 euid: int | None = None) -> None:
    """Refuse what the chosen supervisor cannot do, naming the field (*machine* and
    *euid*: this one's and ours, by default)."""
    euid = os.geteuid() if euid is None else euid
    from contain.sandbox.supervise.handlers import HANDLERS

    path, doc = policy.path, policy.document
    if mode not in ("notify", "ptrace"):
        raise SpecError("supervisor", f"unknown supervisor {mode!r}: notify or ptrace",
                        document="options")
    if mode == "ptrace":
        from contain.linux.ptrace import SYSCALL_REGISTERS

        machine = machine or os.uname().machine
        if machine not in SYSCALL_REGISTERS:
            known = ", ".join(SYSCALL_REGISTERS)
            raise SpecError("supervisor", f"the ptrace supervisor knows the registers of "
                            f"{known} only, not {machine}: use the notify supervisor",
                            document="options")
    for name, rules in policy.rules.items():
        for i, rule in enumerate(rules):
            where = f"{path}.{name}" + (f"[{i}]" if len(rules) > 1 else "")
            if mode == "notify" and name in NOT_NOTIFIABLE and rule.action != "allow":
                raise SpecError(f"{where}.action", f"{name} cannot be supervised by the "
                                "notify supervisor (the runtime hands the listener over "
                                "with it); use --supervisor ptrace", document=doc)
            if rule.handler in ROOT_HANDLERS and euid != 0:
                raise SpecError(f"{where}.handler", f"handler {rule.handler!r} needs a "
                                "supervisor running as root (it enters the workload's root "
                                "and takes its credentials); a rootless supervisor can "
                                "allow, deny, log, kill, ask and emulate uname and return",
                                document=doc)
            if mode == "ptrace" and rule.handler and not HANDLERS[rule.handler].ptrace:
                raise SpecError(f"{where}.handler", f"handler {rule.handler!r} needs the "
                                "notify supervisor (ptrace cannot install a file descriptor)",
                                document=doc)


def supervised_profile(seccomp: dict[str, Any] | None, policy: SyscallPolicy, mode: str,
                       listener_path: str | None) -> dict[str, Any]:
    """The OCI seccomp profile for a supervised container."""
    from contain.sandbox.supervise.policy import all_syscalls

    action = "SCMP_ACT_NOTIFY" if mode == "notify" else "SCMP_ACT_TRACE"
    base: dict[str, Any] = (copy.deepcopy(seccomp) if seccomp
                            else {"defaultAction": "SCMP_ACT_ALLOW"})
    named = set(policy.rules)
    skip = named | set(ALWAYS_KERNEL) | (set(NOT_NOTIFIABLE) if mode == "notify" else set())
    default_allows = base.get("defaultAction") in _ALLOWING
    supervise_rest = policy.default.action != "allow" or policy.route_all
    rules, covered = _profile_rules(base, named, mode, action, supervise_rest, default_allows)
    if supervise_rest and default_allows:
        rest = sorted(n for n in all_syscalls() if n not in skip and n not in covered)
        rules.append({"names": rest, "action": action})
    if supervise_rest and not default_allows:
        keep = [n for n in ALWAYS_KERNEL if n not in named]
        rules.append({"names": keep, "action": "SCMP_ACT_ALLOW"})
    kernel_allowed = []
    to_supervisor = []
    for name in sorted(named):
        if policy.supervised(name):
            to_supervisor.append(name)
        else:
            kernel_allowed.append(name)
    if kernel_allowed:
        rules.append({"names": kernel_allowed, "action": "SCMP_ACT_ALLOW"})
    if to_supervisor:
        rules.append({"names": to_supervisor, "action": action})
    base["syscalls"] = rules
    if mode == "notify":
        base["listenerPath"] = listener_path
        base.pop("listenerMetadata", None)
    return base


def _profile_rules(base: dict[str, Any], named: set[str], mode: str, action: str,
                   supervise_rest: bool, default_allows: bool
                   ) -> tuple[list[dict[str, Any]], set[str]]:
    """The profile's own rules, for the syscalls the policy does not name: unchanged, or
    (a supervised default) their ALLOW rules turned into supervised ones; and the names
    kept denied in the kernel."""
    rules: list[dict[str, Any]] = []
    covered: set[str] = set()
    for rule in base.get("syscalls") or []:
        names = [n for n in rule.get("names") or [] if n not in named]
        if not names:
            continue
        r = dict(rule, names=names)
        if not supervise_rest:
            rules.append(r)
        elif default_allows:
            # everything is enumerated by the caller; keep only unconditional denials
            if r.get("action") not in _ALLOWING and not r.get("args"):
                covered.update(names)
                rules.append(r)
        elif r.get("action") not in _ALLOWING:
            rules.append(r)
        else:
            supervised = [n for n in names if n not in ALWAYS_KERNEL and
                          (n not in NOT_NOTIFIABLE or mode != "notify")]
            keep = [n for n in names if n not in supervised]
            if keep:
                rules.append(dict(r, names=keep))
            if supervised:
                sr: dict[str, Any] = {"names": supervised, "action": action}
                if rule.get("args"):
                    sr["args"] = rule["args"]
                rules.append(sr)
    return rules, covered


def apply(spec: dict[str, Any], policy: SyscallPolicy, mode: str,
          listener_path: str | None) -> dict[str, Any]:
    """A copy of the config dict *spec* whose linux.seccomp is the supervised profile."""
    out = dict(spec)
    linux = dict(out.get("linux") or {})
    linux["seccomp"] = supervised_profile(linux.get("seccomp"), policy, mode, listener_path)
    out["linux"] = linux
    return out
