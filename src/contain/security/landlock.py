"""Landlock rulesets: the OCI extension's model (runtime-spec proposal #1241) and its
enforcement, best effort or strict.

The model is :mod:`contain.spec.landlock` (the proposal's ``process.landlock``).
Best effort (the default) drops what the running kernel's ABI lacks and says what was
dropped; ``disableBestEffort`` refuses instead. :func:`apply` runs in the container's
init just before execve (and before the seccomp filter, which may deny Landlock's own
system calls); it needs no_new_privs, which the caller has set by then.
"""

from __future__ import annotations

import os

from contain.errors import ContainError
from contain.linux import landlock as ll
from contain.records import Record
from contain.spec.landlock import ANNOTATION, Landlock, decode, from_spec  # noqa: F401

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

class LandlockError(ContainError):
    """Strict mode meets a kernel that lacks a feature, or the kernel refuses a rule."""


class Enforced(Record):
    """What :func:`apply` enforced on this kernel, and what it had to drop."""

    __slots__ = ("abi", "fs", "net", "scoped", "dropped", "missing_paths")
    DEFAULTS = {"fs": list, "net": list, "scoped": list, "dropped": list,
                "missing_paths": list}
    abi: int
    fs: list[str]
    net: list[str]
    scoped: list[str]
    dropped: list[str]
    missing_paths: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"abi": self.abi, "fs": self.fs, "net": self.net, "scoped": self.scoped,
                "dropped": self.dropped, "missing_paths": self.missing_paths}


def plan(cfg: Landlock, abi: int | None = None) -> Enforced:
    """What applying *cfg* on a kernel of *abi* (default: this one) enforces; in strict
    mode, a LandlockError for any right the kernel lacks."""
    if abi is None:
        abi = ll.abi_version()
    out = Enforced(abi)
    for table, wanted, kept in ((ll.FS, cfg.handled_fs, out.fs),
                                (ll.NET, cfg.handled_net, out.net),
                                (ll.SCOPE, cfg.scoped, out.scoped)):
        for name in wanted:
            if abi >= table[name][1]:
                if name not in kept:
                    kept.append(name)
            else:
                out.dropped.append(f"{name} (ABI {table[name][1]})")
    if not cfg.best_effort and (out.dropped or abi == 0):
        what = ", ".join(out.dropped) if out.dropped else "Landlock itself"
        raise LandlockError(f"landlock (strict): this kernel (Landlock ABI {abi}) lacks "
                            f"{what}")
    return out


def prepare(cfg: Landlock) -> tuple[int, Enforced]:
    """Build the ruleset of *cfg* (its paths opened now, in the caller's root): the
    ruleset's fd (-1 when nothing is enforced: no Landlock, or nothing handled) and what
    it enforces. Strict mode refuses a kernel that lacks a feature (LandlockError)."""
    done = plan(cfg)
    if done.abi == 0:
        return -1, done
    fs = ll.bits(ll.FS, done.fs)
    net = ll.bits(ll.NET, done.net)
    scoped = ll.bits(ll.SCOPE, done.scoped)
    if not (fs or net or scoped):
        return -1, done
    try:
        ruleset = ll.create_ruleset(fs, net, scoped)
    except OSError as exc:
        raise LandlockError(f"landlock: {exc.strerror}") from exc
    try:
        for allowed, paths in cfg.path_rules:
            mask = ll.bits(ll.FS, allowed) & fs
            for path in paths if mask else ():
                if not _add_path(ruleset, mask, path):
                    done.missing_paths.append(path)
        for allowed, ports in cfg.port_rules:
            mask = ll.bits(ll.NET, allowed) & net
            if not mask:
                continue
            for port in ports:
                try:
                    ll.add_port_rule(ruleset, mask, port)
                except OSError as exc:
                    raise LandlockError(f"landlock: rule for port {port}: "
                                        f"{exc.strerror}") from exc
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset, done


def _add_path(ruleset: int, mask: int, path: str) -> bool:
    """Allow *mask* beneath *path* (only a file's rights when it is not a directory);
    False when there is no such path."""
    try:
        fd = ll.open_path(path)
    except OSError:
        return False
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            mask &= ll.bits(ll.FS, ll.FILE_RIGHTS)
        if mask:
            ll.add_path_rule(ruleset, mask, fd)
    except OSError as exc:
        raise LandlockError(f"landlock: rule for {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return True


def restrict(ruleset: int, log_denials: bool = False, abi: int = 0) -> None:
    """Confine the calling thread (and what it execs) by a ruleset of :func:`prepare`;
    the fd is closed."""
    flags = ll.RESTRICT_SELF_LOG_NEW_EXEC_ON if log_denials and abi >= 7 else 0
    try:
        ll.restrict_self(ruleset, flags)
    except OSError as exc:
        raise LandlockError(f"landlock: restrict_self: {exc.strerror}") from exc
    finally:
        os.close(ruleset)


def apply(cfg: Landlock, log_denials: bool = False) -> Enforced:
    """Confine the calling process (and what it will exec) by *cfg*. Best effort unless
    *cfg* is strict: with no Landlock at all, nothing is enforced (and that is said in
    the returned record)."""
    ruleset, done = prepare(cfg)
    if ruleset >= 0:
        restrict(ruleset, log_denials, done.abi)
    return done


def restrict_before_exec(ruleset: int, no_new_privs: bool = False) -> None:
    """:func:`restrict` in a container's init (or an exec'd process), the last step
    before execve, after its channel to the runtime is closed: a failure is written to
    the process's stderr and ends it (never an exec without the Landlock domain asked
    for). The ruleset was made by :func:`prepare` earlier, before a seccomp
    user-notification filter could hand its opens to a supervisor (which opens paths
    in its own root). With *no_new_privs*, set it first (Landlock needs it; an exec'd
    process may not have it)."""
    if ruleset < 0:
        return
    try:
        if no_new_privs:
            from contain.linux.syscalls import prctl

            prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
        restrict(ruleset)
    except ContainError as exc:
        os.write(2, f"contain: {exc}\n".encode())
        os._exit(126)
