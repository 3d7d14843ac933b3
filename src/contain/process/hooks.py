"""OCI hooks: run each with the container state on stdin, its args, env and timeout.

A hook's stdout and stderr are collected and, when it fails, put in the error (as runc
does): engines show that line to the user, and it is usually the only clue.
"""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.spec.config import Hook

_KEEP = 4096  # bytes of each output stream kept for the error message


class HookError(ContainError):
    pass


# the runtime spec: a failing poststart or poststop hook is a warning, "the remaining
# hooks and lifecycle continue as if the hook had succeeded"
CONTINUE_ON_FAILURE = ("poststart", "poststop")


def run_hooks(kind: str, hooks: list[Hook], state: dict[str, Any]) -> None:
    """Run *hooks* in order; the first failure raises HookError naming the hook (for
    poststart and poststop every hook runs, and the failures are raised together)."""
    if not hooks:
        return
    from contain.jsonio import dumps

    data = dumps(state).encode()
    errors = []
    for i, hook in enumerate(hooks):
        try:
            _run_one(kind, i, hook, data)
        except HookError as exc:
            if kind not in CONTINUE_ON_FAILURE:
                raise
            errors.append(str(exc))
    if errors:
        raise HookError("; ".join(errors))


def _run_one(kind: str, index: int, hook: Hook, data: bytes) -> None:
    import time

    from contain.process.pump import Pump

    argv = hook.args or [hook.path]
    # a hook without env gets the runtime's environment (runc and crun: Go's nil Env)
    env = dict(e.split("=", 1) for e in hook.env if "=" in e) if hook.env else dict(os.environ)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
               (os.POSIX_SPAWN_DUP2, err_w, 2)]
    name = f"{kind} hook #{index} ({hook.path})"
    try:
        pid = os.posix_spawn(hook.path, argv, env, file_actions=actions)
    except OSError as exc:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise HookError(f"{name}: {exc.strerror}", errno=exc.errno) from exc
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    pump = Pump()
    pump.feed(in_w, data)
    outputs = {"stdout": pump.collect(out_r, keep=_KEEP),
               "stderr": pump.collect(err_r, keep=_KEEP)}
    deadline = None if hook.timeout is None else time.monotonic() + hook.timeout
    try:
        if not pump.run(deadline=deadline):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise HookError(f"{name} timed out after {hook.timeout}s")
    finally:
        os.close(out_r)
        os.close(err_r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        what = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        detail = ""
        for label, buf in outputs.items():
            text = buf.decode(errors="replace").strip()
            if text:
                detail += f", {label}: {text}"
        raise HookError(f"{name}: {what}{detail}")
