"""Reports (violations as JSON lines, a summary on stderr) and recording (every system
call seen, turned into an OCI ``linux.seccomp`` profile that allows exactly that).

Recorded arguments are those OCI profiles can usefully match: clone's flags, socket's
address family, ioctl's request, personality's persona. Each distinct value becomes
one SCMP_CMP_EQ rule; every other call is allowed by name.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# syscall -> index of the argument a recorded profile matches
RECORDED_ARGS = {"clone": 0, "socket": 0, "ioctl": 1, "personality": 0, "socketpair": 0}
_MAX_VALUES = 32  # more distinct values than this: allow the call by name


class Report:
    """Decisions worth telling: JSON lines to a file or fd, counts for a summary."""

    def __init__(self, target: str | int | None, supervisor: str) -> None:
        self.supervisor = supervisor
        self.fd = -1
        self.own_fd = False
        self.counts: dict[str, dict[str, int]] = {}
        if isinstance(target, int):
            self.fd = target
        elif target:
            self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                              0o600)
            self.own_fd = True

    def event(self, pid: int, name: str, nr: int, args: tuple[int, ...], action: str,
              **extra: Any) -> None:
        from contain.jsonio import dumps

        per = self.counts.setdefault(action, {})
        per[name] = per.get(name, 0) + 1
        if self.fd < 0:
            return
        ev: dict[str, Any] = {"time": time.time(), "supervisor": self.supervisor, "pid": pid,
                              "syscall": name, "nr": nr, "args": list(args), "action": action}
        ev.update({k: v for k, v in extra.items() if v is not None and v != ""})
        try:
            os.write(self.fd, (dumps(ev) + "\n").encode())
        except OSError:
            pass

    def emitter(self, name: str, nr: int, action: str,
                **extra: Any) -> Callable[[int, tuple[int, ...]], None]:
        """A function ``emit(pid, args)`` that does what ``event(pid, name, nr, args,
        action, **extra)`` does, for the supervisor's fast path: the constant part of the
        JSON line is encoded once (the same text ``event`` writes)."""
        from contain.jsonio import dumps

        counts = self.counts
        fd = self.fd
        if fd < 0:
            def count(pid: int, args: tuple[int, ...]) -> None:
                per = counts.setdefault(action, {})
                per[name] = per.get(name, 0) + 1
            return count
        head = f',"supervisor":{dumps(self.supervisor)},"pid":'
        mid = f',"syscall":{dumps(name)},"nr":{nr},"args":['
        rest = {k: v for k, v in extra.items() if v is not None and v != ""}
        tail = f'],"action":{dumps(action)}' + "".join(
            f",{dumps(k)}:{dumps(v)}" for k, v in rest.items()) + "}\n"
        now = time.time
        write = os.write

        def emit(pid: int, args: tuple[int, ...]) -> None:
            per = counts.setdefault(action, {})
            per[name] = per.get(name, 0) + 1
            line = f'{{"time":{now()!r}{head}{pid}{mid}{",".join(map(str, args))}{tail}'
            try:
                write(fd, line.encode())
            except OSError:
                pass
        return emit

    def summary(self) -> str:
        if not self.counts:
            return ""
        words = {"deny": "denied", "log": "logged", "kill": "killed", "emulate": "emulated",
                 "ask": "asked", "allow": "allowed"}
        parts = []
        for action in ("deny", "kill", "log", "ask", "emulate"):
            per = self.counts.get(action)
            if not per:
                continue
            total = sum(per.values())
            top = sorted(per.items(), key=lambda kv: -kv[1])[:6]
            names = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in top)
            parts.append(f"{total} {words[action]} ({names})")
        return f"contain: supervisor ({self.supervisor}): " + "; ".join(parts)

    def close(self) -> None:
        if self.own_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class Recorder:
    """Every call seen, with the recorded argument of the calls in RECORDED_ARGS."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.values: dict[str, set[int]] = {}

    def add(self, name: str, args: tuple[int, ...]) -> None:
        index = RECORDED_ARGS.get(name)
        if index is None:
            self.names.add(name)
            return
        vals = self.values.setdefault(name, set())
        if len(vals) <= _MAX_VALUES:
            vals.add(args[index] & 0xFFFFFFFFFFFFFFFF)

    def profile(self, always: tuple[str, ...] = ()) -> dict[str, Any]:
        """The OCI linux.seccomp profile allowing exactly what was recorded (and the
        calls in *always*, which the recorder could not see)."""
        from contain.sandbox.supervise.filter import ALWAYS_KERNEL

        rules: list[dict[str, Any]] = []
        # calls the recorder never sees: kept with the kernel while recording
        names = sorted(self.names | set(always) | set(ALWAYS_KERNEL))
        if names:
            rules.append({"names": names, "action": "SCMP_ACT_ALLOW"})
        for name in sorted(self.values):
            vals = self.values[name]
            if len(vals) > _MAX_VALUES:
                rules.append({"names": [name], "action": "SCMP_ACT_ALLOW"})
                continue
            index = RECORDED_ARGS[name]
            for v in sorted(vals):
                rules.append({"names": [name], "action": "SCMP_ACT_ALLOW",
                              "args": [{"index": index, "value": v, "op": "SCMP_CMP_EQ"}]})
        arch = {"x86_64": ["SCMP_ARCH_X86_64"], "aarch64": ["SCMP_ARCH_AARCH64"]}.get(
            os.uname().machine, [])
        return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                "architectures": arch, "syscalls": rules}

    def write(self, path: str, always: tuple[str, ...] = ()) -> None:
        from contain.jsonio import dumps

        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(dumps(self.profile(always), indent=2) + "\n")
        os.replace(tmp, path)


def enforcing_profile(profile: dict[str, Any], mode: str,
                      listener_path: str | None) -> dict[str, Any]:
    """A recorded (or any allow-list) profile whose denials go to the supervisor, to be
    reported: the ptrace supervisor takes the default action (SCMP_ACT_TRACE); the notify
    one every syscall the profile does not name (the kernel refuses a NOTIFY default)."""
    from contain.sandbox.supervise.filter import ALWAYS_KERNEL, NOT_NOTIFIABLE
    from contain.sandbox.supervise.policy import all_syscalls

    out = dict(profile)
    rules = list(profile.get("syscalls") or [])
    if mode == "ptrace":
        named = {n for r in rules for n in r.get("names") or []}
        keep = [n for n in ALWAYS_KERNEL if n not in named]
        if keep:
            rules.append({"names": keep, "action": "SCMP_ACT_ALLOW"})
        out["defaultAction"] = "SCMP_ACT_TRACE"
        out.pop("defaultErrnoRet", None)
    else:
        named = {n for r in rules for n in r.get("names") or []}
        rest = sorted(n for n in all_syscalls() if n not in named and n not in NOT_NOTIFIABLE
                      and n not in ALWAYS_KERNEL)
        rules.append({"names": rest, "action": "SCMP_ACT_NOTIFY"})
        keep = [n for n in ALWAYS_KERNEL if n not in named]
        if keep:
            rules.append({"names": keep, "action": "SCMP_ACT_ALLOW"})
        out["listenerPath"] = listener_path
    out["syscalls"] = rules
    return out
