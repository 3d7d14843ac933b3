"""OCI hooks: run each with the container state on stdin, its args, env and timeout."""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.spec.config import Hook


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
    import select
    import time

    argv = hook.args or [hook.path]
    env = dict(e.split("=", 1) for e in hook.env if "=" in e)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(hook.path, argv, env,
                             file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)])
    except OSError as exc:
        os.close(r)
        os.close(w)
        raise HookError(f"{kind} hook #{index} ({hook.path}): {exc.strerror}") from None
    os.close(r)
    try:
        os.write(w, data)
    except BrokenPipeError:
        pass
    finally:
        os.close(w)
    deadline = None if hook.timeout is None else time.monotonic() + hook.timeout
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([pidfd], [], [], left)
            if ready:
                break
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise HookError(f"{kind} hook #{index} ({hook.path}) timed out after "
                            f"{hook.timeout}s")
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        what = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise HookError(f"{kind} hook #{index} ({hook.path}): {what}")
