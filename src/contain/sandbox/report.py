"""The violations report of a sandbox: JSON lines to a file or fd, a summary at exit.

One :class:`Reporter` per sandbox run. Everything that refuses an operation on the
sandbox's behalf (the syscall supervisor, the network proxy, the Landlock set-up) calls
:meth:`Reporter.violation`; the sandbox itself records what it enforced with
:meth:`Reporter.event`. Both are thread-safe (the proxy serves connections on threads).

Each line is one JSON object::

    {"time": 1764400000.123, "kind": "violation", "source": "proxy",
     "operation": "connect", "target": "example.com:443", "decision": "denied",
     "reason": "not in the allow list", "pid": 1234}
    {"time": ..., "kind": "event", "source": "landlock", "event": "enforced",
     "abi": 7, "fs": [...], "net": [...], "scoped": [...], "dropped": []}

The fields beyond time, kind and source are the caller's; ``operation``, ``target``,
``decision`` and ``reason`` are the common ones of a violation.
"""

from __future__ import annotations

import _thread
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def open_target(target: str | int | None) -> tuple[int, bool]:
    """(fd, owned) for ``--report``: an fd number (``3`` or ``fd:3``) is used as is,
    anything else is a file path, created (appended to) with mode 0600. -1 for none."""
    if target is None:
        return -1, False
    if isinstance(target, int) and not isinstance(target, bool):
        return target, False
    text = str(target)
    num = text[3:] if text.startswith("fd:") else text
    if num.isdigit():
        fd = int(num)
        try:
            os.fstat(fd)
        except OSError as exc:
            from contain.errors import ContainError

            raise ContainError(f"--report {text}: fd {fd} is not open") from exc
        return fd, False
    try:
        fd = os.open(text, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        from contain.errors import ContainError

        raise ContainError(f"--report {text}: {exc.strerror}") from exc
    return fd, True


class Reporter:
    """Collects a sandbox's violations and events; writes each as one JSON line to the
    report fd (if any) as it happens, and keeps them for the result and the summary."""

    def __init__(self, target: str | int | None = None) -> None:
        self._lock = _thread.allocate_lock()
        self.violations: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._fd, self._owned = open_target(target)

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd < 0:
            return
        from contain.jsonio import dumps

        line = (dumps(record) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError:
            pass  # a reader that went away must not stop the sandbox

    def violation(self, source: str, operation: str, target: str = "", *,
                  decision: str = "denied", reason: str = "", **detail: Any) -> None:
        """A refused operation. *source*: who refused (landlock, supervisor, proxy,
        mounts); *operation*: what was tried (open, write, connect, unshare...);
        *target*: on what (a path, host:port, a syscall's argument)."""
        record: dict[str, Any] = {"time": round(time.time(), 3), "kind": "violation",
                                  "source": source, "operation": operation,
                                  "target": target, "decision": decision}
        if reason:
            record["reason"] = reason
        record.update(detail)
        with self._lock:
            self.violations.append(record)
            self._write(record)

    def event(self, source: str, event: str, **detail: Any) -> None:
        """Something the sandbox did or enforced (not a refusal)."""
        record: dict[str, Any] = {"time": round(time.time(), 3), "kind": "event",
                                  "source": source, "event": event}
        record.update(detail)
        with self._lock:
            self.events.append(record)
            self._write(record)

    def summary(self) -> str:
        """A few lines for stderr at exit; empty when nothing was refused."""
        with self._lock:
            items = list(self.violations)
        if not items:
            return ""
        by: dict[tuple[str, str], list[str]] = {}
        for v in items:
            by.setdefault((v["source"], v["operation"]), []).append(str(v.get("target", "")))
        lines = [f"contain: {len(items)} operation(s) refused in the sandbox:"]
        for (source, op), targets in sorted(by.items()):
            shown = ", ".join(sorted(set(t for t in targets if t))[:3])
            more = len(set(targets)) - 3
            lines.append(f"  {source}: {op} x{len(targets)}"
                         + (f" ({shown}{', ...' if more > 0 else ''})" if shown else ""))
        return "\n".join(lines)

    def close(self) -> None:
        with self._lock:
            if self._owned and self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
