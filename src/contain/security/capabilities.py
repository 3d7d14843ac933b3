"""Linux capabilities: the OCI ``process.capabilities`` sets, checked and applied.

Checking (:func:`check_capabilities`) runs in the runtime's parent at create: names the
kernel does not know (not in the table, or above /proc/sys/kernel/cap_last_cap) are
skipped with one warning, exactly as runc does.

Applying runs in the container's init, in the order that keeps what the config asks for:

1. :func:`drop_bounding` - PR_CAPBSET_DROP every capability not in ``bounding`` (needs
   CAP_SETPCAP, so before the user switch);
2. PR_SET_KEEPCAPS, then the caller's user switch (setgroups, setgid, setuid), then
   PR_SET_KEEPCAPS off - so that a switch away from uid 0 keeps the permitted set;
3. :func:`apply_after_setuid` - capset(effective, permitted, inheritable), then the
   ambient set cleared and raised cap by cap (a failing raise is a warning, as in runc).

:func:`apply_process_identity` does the three steps given the user switch as a callback.
``caps is None`` (no ``process.capabilities`` in config.json) leaves the capabilities
alone, as runc does.
"""

from __future__ import annotations

import errno

# imported here, not lazily: the init applies capabilities after pivot_root, when the
# package's files may no longer be reachable
from contain.errors import ContainError, SpecError
from contain.linux import consts
from contain.linux.syscalls import capget, capset, prctl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from contain.spec.config import Capabilities

NAMES = consts.CAPABILITY_NAMES
CAPS = {name: i for i, name in enumerate(NAMES)}
CAP_SETPCAP = CAPS["CAP_SETPCAP"]

SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last_cap = int(f.read())
        except (OSError, ValueError):  # no /proc: probe the bounding set instead
            n = 0
            while n < 63:
                try:
                    prctl(consts.PR_CAPBSET_READ, n + 1)
                except OSError:
                    break
                n += 1
            _last_cap = n
    return _last_cap


def name_of(cap: int) -> str:
    return NAMES[cap] if 0 <= cap < len(NAMES) else f"CAP_{cap}"


def mask_to_names(mask: int) -> list[str]:
    return [name_of(i) for i in range(64) if mask >> i & 1]


def names_to_mask(names: list[str], unknown: set[str] | None = None) -> int:
    """The bit mask of *names*; names unknown here or to the kernel go to *unknown*."""
    top = last_cap()
    mask = 0
    for name in names:
        n = CAPS.get(name)
        if n is None or n > top:
            if unknown is not None:
                unknown.add(name)
            continue
        mask |= 1 << n
    return mask


class CapSets:
    """The five sets as bit masks."""

    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted")

    def __init__(self, bounding: int = 0, effective: int = 0, inheritable: int = 0,
                 permitted: int = 0, ambient: int = 0) -> None:
        self.bounding = bounding
        self.effective = effective
        self.inheritable = inheritable
        self.permitted = permitted
        self.ambient = ambient

    def __repr__(self) -> str:
        return ("CapSets(" + ", ".join(f"{s}={getattr(self, s):#x}" for s in SETS) + ")")


def resolve(caps: Capabilities, unknown: set[str] | None = None) -> CapSets:
    return CapSets(*(names_to_mask(getattr(caps, s), unknown) for s in SETS))


def check_capabilities(caps: Capabilities | None,
                       path: str = "$.process.capabilities",
                       strict: bool = False) -> list[str]:
    """Warnings for a capabilities object: runc's one line naming the names it will
    ignore. With *strict*, a name that is no capability at all (not in the table) is a
    SpecError naming its JSON path instead; names the running kernel is too old for
    stay warnings."""
    if caps is None:
        return []
    unknown: set[str] = set()
    for s in SETS:
        for i, name in enumerate(getattr(caps, s)):
            if strict and name not in CAPS:
                raise SpecError(f"{path}.{s}[{i}]", f"unknown capability {name!r}")
            names_to_mask([name], unknown)
    if not unknown:
        return []
    return [f"ignoring unknown or unavailable capabilities: [{' '.join(sorted(unknown))}]"]


# -- applying (in the init) ------------------------------------------------------------------

def bounding_set() -> int:
    """The calling thread's bounding set, read with PR_CAPBSET_READ."""
    mask = 0
    for n in range(last_cap() + 1):
        if prctl(consts.PR_CAPBSET_READ, n):
            mask |= 1 << n
    return mask


def drop_bounding(caps: Capabilities | CapSets | None) -> None:
    """Drop from the bounding set every capability not in ``caps.bounding``."""
    if caps is None:
        return
    keep = caps.bounding if isinstance(caps, CapSets) else names_to_mask(caps.bounding)
    for n in range(last_cap() + 1):
        if keep >> n & 1:
            continue
        if not prctl(consts.PR_CAPBSET_READ, n):
            continue  # already gone (dropping needs CAP_SETPCAP even then)
        try:
            prctl(consts.PR_CAPBSET_DROP, n)
        except OSError as e:
            raise ContainError(f"cannot drop {name_of(n)} from the bounding set: "
                               f"{e.strerror}") from e


def set_keepcaps(on: bool) -> None:
    prctl(consts.PR_SET_KEEPCAPS, 1 if on else 0)


def apply_after_setuid(caps: Capabilities | CapSets | None) -> list[str]:
    """Set effective, permitted and inheritable, then the ambient set. Returns warnings
    (ambient capabilities that could not be raised, as runc only warns about them)."""
    if caps is None:
        return []
    sets = caps if isinstance(caps, CapSets) else resolve(caps)
    try:
        capset(sets.effective, sets.permitted, sets.inheritable)
    except OSError as e:
        _, have, _ = capget()
        missing = (sets.permitted | sets.effective) & ~have
        extra = f" (not held by the runtime: {', '.join(mask_to_names(missing))})" \
            if missing else ""
        raise ContainError(f"can't apply capabilities: {e.strerror}{extra}") from e
    warnings: list[str] = []
    try:
        prctl(consts.PR_CAP_AMBIENT, consts.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL:  # a kernel without ambient capabilities
            raise ContainError(f"can't clear ambient capabilities: {e.strerror}") from e
    for n in range(64):
        if sets.ambient >> n & 1:
            try:
                prctl(consts.PR_CAP_AMBIENT, consts.PR_CAP_AMBIENT_RAISE, n)
            except OSError as e:
                warnings.append(f"can't raise ambient capability {name_of(n)}: {e.strerror}")
    return warnings


def apply_process_identity(caps: Capabilities | CapSets | None,
                           set_user: Callable[[], None]) -> list[str]:
    """The whole ordered sequence: bounding drop, KEEPCAPS around *set_user* (which
    does setgroups/setgid/setuid), then effective/permitted/inheritable and ambient.
    Returns the warnings of :func:`apply_after_setuid`."""
    if caps is None:
        set_user()
        return []
    sets = caps if isinstance(caps, CapSets) else resolve(caps)
    drop_bounding(sets)
    set_keepcaps(True)
    set_user()
    set_keepcaps(False)
    return apply_after_setuid(sets)


def current() -> dict[str, int]:
    """The calling process's sets from /proc/self/status (CapInh/Prm/Eff/Bnd/Amb)."""
    out = {}
    keys = {b"CapInh:": "inheritable", b"CapPrm:": "permitted", b"CapEff:": "effective",
            b"CapBnd:": "bounding", b"CapAmb:": "ambient"}
    with open("/proc/self/status", "rb") as f:
        for line in f:
            k = keys.get(line.split(b"\t", 1)[0])
            if k:
                out[k] = int(line.split()[1], 16)
    return out
