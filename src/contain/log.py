"""Log lines as runc writes them: logrus text or JSON (level, msg, time).

Engines pass ``--log FILE --log-format json`` and show the user the ``msg`` of the last
error line, so the shape matters more than anything else here.
"""

from __future__ import annotations

import posix  # (not os: this module is on every engine's command, see container/store.py)
import sys

_state = {"path": None, "format": "text", "debug": False}
_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3, "fatal": 4}


def configure(path: str | None, fmt: str, debug: bool) -> None:
    _state["path"] = path
    _state["format"] = fmt
    _state["debug"] = debug


def debug_enabled() -> bool:
    return bool(_state["debug"])


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def format_line(level: str, msg: str, fmt: str) -> str:
    if fmt == "json":
        from contain.jsonio import dumps

        return dumps({"level": level, "msg": msg, "time": _now()}) + "\n"
    quoted = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'time="{_now()}" level={level} msg="{quoted}"\n'


def _emit(level: str, msg: str) -> None:
    if level == "debug" and not _state["debug"]:
        return
    path = _state["path"]
    fmt = str(_state["format"])
    line = format_line(level, msg, fmt)
    if path:
        try:
            fd = posix.open(str(path),
                            posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC,
                            0o644)
            try:
                posix.write(fd, line.encode())
            finally:
                posix.close(fd)
        except OSError:
            sys.stderr.write(line)
        # runc also tells the caller on stderr, without the decoration
        if level in ("error", "fatal"):
            sys.stderr.write(msg + "\n")
    elif level != "debug" or _state["debug"]:
        sys.stderr.write(line)


def debug(msg: str) -> None:
    _emit("debug", msg)


def info(msg: str) -> None:
    _emit("info", msg)


def warning(msg: str) -> None:
    _emit("warning", msg)


def error(msg: str) -> None:
    _emit("error", msg)
