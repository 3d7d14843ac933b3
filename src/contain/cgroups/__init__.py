"""Cgroups: one Manager interface over the v1, v2 and hybrid layouts.

A :class:`Manager` is a container's cgroup: one directory per v1 hierarchy (v1 and
hybrid), plus the cgroup2 directory (v2 and hybrid). Which files a resource goes to is
decided by :mod:`contain.cgroups.resources`; stats by :mod:`contain.cgroups.stats`;
events by :mod:`contain.cgroups.events`. ``state``, ``kill`` and ``list`` do not import
it: the container store reads the freezer state from the saved paths itself.

The package itself imports nothing: :class:`Manager` and its functions live in
:mod:`contain.cgroups.manager`, loaded on first use (PEP 562), so that ``create`` and
``run`` can start :mod:`contain.cgroups.warm` first thing, before ``os`` and the rest
(docs/performance.md, the third pass).

cgroupsPath follows runc's cgroupfs driver: an absolute path hangs from each hierarchy's
mount point, a relative one from the runtime's own cgroup in that hierarchy, and the
default is the container id, relative.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contain.cgroups.fs import detect_layout
    from contain.cgroups.manager import UNIFIED, Manager, load_manager, new_manager

__all__ = ["UNIFIED", "Manager", "detect_layout", "load_manager", "new_manager"]


def __getattr__(name: str) -> object:
    """The manager's names, imported on first use (and kept here afterwards)."""
    if name == "detect_layout":
        from contain.cgroups.fs import detect_layout as value
    elif name in __all__:
        from contain.cgroups import manager

        value = getattr(manager, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
