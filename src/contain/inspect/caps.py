"""Capability numbers and names (linux/capability.h), and mask decoding."""

from __future__ import annotations

from contain.linux.consts import CAPABILITY_NAMES as NAMES  # index = number

SETS = (("inheritable", "CapInh"), ("permitted", "CapPrm"), ("effective", "CapEff"),
        ("bounding", "CapBnd"), ("ambient", "CapAmb"))


def name(bit: int) -> str:
    return NAMES[bit] if bit < len(NAMES) else f"CAP_{bit}"


def last_cap() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(NAMES) - 1


def full_mask(last: int) -> int:
    return (1 << (last + 1)) - 1


def decode(mask: int) -> list[str]:
    out = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            out.append(name(bit))
        bit += 1
    return out
