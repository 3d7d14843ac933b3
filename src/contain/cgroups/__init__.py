"""Cgroups: one Manager interface over the v1, v2 and hybrid layouts.

Placeholder interface; the full implementation lands with the resource-management work.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Manager:
    """A container's cgroup in every hierarchy of the host's layout."""

    def is_frozen(self) -> bool:
        return False


def load_manager(saved: dict[str, Any]) -> Manager:
    return Manager()
