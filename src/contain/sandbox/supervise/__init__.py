"""Syscall supervisors: the sandbox class of the survey's taxonomy.

A supervised workload runs with a seccomp filter that hands the supervised calls to a
user-space supervisor (seccomp user notification, or ptrace) which decides them with a
:class:`~contain.sandbox.supervise.policy.SyscallPolicy`. See docs/supervise.md.
"""

from __future__ import annotations

import os

from contain.errors import ContainError, SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.sandbox.supervise.agent import Supervisor
    from contain.sandbox.supervise.policy import SyscallPolicy

SUPERVISORS = ("notify", "ptrace")


def load_document(text_or_path: str, what: str = "policy") -> tuple[Any, str]:
    """(decoded document, its name) from a file path (.toml or JSON) or inline JSON."""
    from contain.jsonio import loads

    stripped = text_or_path.lstrip()
    if stripped.startswith("{"):
        try:
            return loads(stripped), f"{what} (inline JSON)"
        except ValueError as e:
            raise ContainError(f"{what}: invalid JSON: {e}") from e
    path = text_or_path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ContainError(f"{what} {path}: {e.strerror}") from e
    if path.endswith(".toml"):
        import tomllib

        try:
            return tomllib.loads(data.decode()), path
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ContainError(f"{path}: invalid TOML: {e}") from e
    try:
        return loads(data.decode()), path
    except (ValueError, UnicodeDecodeError) as e:
        raise ContainError(f"{path}: invalid JSON: {e}") from e


def load_policy(source: Any) -> SyscallPolicy:
    """A policy from a SyscallPolicy, a dict (the syscalls table, or a whole sandbox
    policy with a ``syscalls`` table), a file path or inline JSON."""
    from contain.sandbox.supervise.policy import SyscallPolicy

    if isinstance(source, SyscallPolicy):
        return source
    name = "policy"
    if isinstance(source, (str, os.PathLike)):
        source, name = load_document(os.fspath(source))
    path = "$"
    if isinstance(source, dict) and "syscalls" in source:
        source, path = source["syscalls"], "$.syscalls"
    try:
        pol = SyscallPolicy.decode(source, path)
        pol.document = name
        return pol
    except SpecError as e:
        if e.document == "config.json":
            raise SpecError(e.path, e.message, document=name) from e
        raise


def supervisor_for(policy: Any, mode: str | None, *, root: str,
                   report: str | int | None = None, record: str | None = None,
                   enforce: str | None = None, hostname: str = "sandbox",
                   detach: bool = False, name: str | None = None) -> Supervisor:
    """A Supervisor for the options of ``contain sandbox``/``contain.run``/annotations:
    *policy* (see load_policy), *record* (write the recorded profile there), *enforce*
    (an OCI seccomp profile: what it does not allow is denied and reported)."""
    from contain.sandbox.supervise.agent import Supervisor
    from contain.sandbox.supervise.policy import Rule, SyscallPolicy

    mode = mode or "notify"
    if mode not in SUPERVISORS:
        raise ContainError(f"invalid supervisor {mode!r}: notify or ptrace")
    if isinstance(report, str) and report.isdigit():
        report = int(report)
    if isinstance(report, int):
        try:
            os.fstat(report)
        except OSError as exc:
            raise ContainError(f"--supervise-report {report}: not an open file "
                               "descriptor") from exc
    if sum(x is not None and x != "" for x in (policy, record, enforce)) > 1:
        raise ContainError("--supervise, --record and --enforce exclude each other")
    profile = None
    if record:
        # every call reaches the supervisor, which records it and lets it run
        pol = SyscallPolicy(Rule("allow", where="record"))
        pol.route_all = True
    elif enforce:
        doc, doc_name = load_document(enforce, "profile")
        profile = _check_profile(doc, doc_name)
        pol = SyscallPolicy(Rule("deny", errno=int(profile.get("defaultErrnoRet") or 1),
                                 where="$.defaultAction"))
    else:
        pol = load_policy(policy)
    return Supervisor(pol, mode, root=root, report=report, record=record, enforce=profile,
                      hostname=hostname, detach=detach, name=name)


def _check_profile(doc: Any, name: str) -> dict[str, Any]:
    from contain.spec.config import Seccomp

    if not isinstance(doc, dict):
        raise ContainError(f"{name}: expected an OCI linux.seccomp object")
    if "linux" in doc and isinstance(doc["linux"], dict) and "seccomp" in doc["linux"]:
        doc = doc["linux"]["seccomp"]
    try:
        Seccomp.decode(doc, "$")
    except SpecError as e:
        raise SpecError(e.path, e.message, document=name) from e
    return dict(doc)
