"""contain: an OCI container runtime and process-isolation toolkit.

The public API (imported lazily, so ``import contain`` costs nothing):

- :func:`run` -- run a command in a host-root sandbox and wait for it;
- :class:`Pool` -- sandboxes made ahead under one policy, one handed over per command;
- :class:`Sandbox` -- a sandbox policy (files, network, Landlock, limits) that runs many
  commands, with streaming output, timeouts, resource usage and violations;
- :class:`Container` -- create/start/state/kill/wait/delete, pause/resume/update/stats,
  exec of an OCI bundle;
- :func:`list_containers`;
- :class:`ContainError` -- every error meant for the user.
"""

from __future__ import annotations

from contain.errors import ContainError, NotFound, SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.api import Container, Pool, RunResult, Sandbox, list_containers, run

__all__ = ["Container", "ContainError", "NotFound", "Pool", "RunResult", "Sandbox", "SpecError",
           "list_containers", "run"]
_LAZY = {"Container", "Pool", "RunResult", "Sandbox", "list_containers", "run"}


def __getattr__(name: str) -> Any:
    if name == "__version__":  # written once, in contain.meta
        from contain.meta import VERSION

        return VERSION
    if name in _LAZY:
        from contain import api

        return getattr(api, name)
    raise AttributeError(f"module 'contain' has no attribute {name!r}")
