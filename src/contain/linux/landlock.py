"""Landlock's three system calls and constants (Linux 5.13+; ABI 1 to 7).

``landlock_create_ruleset`` makes a ruleset fd that *handles* some access rights (what
it does not allow is then denied), ``landlock_add_rule`` allows rights beneath a path
(or on a TCP port), ``landlock_restrict_self`` confines the calling thread and every
process it starts from then on; it needs no_new_privs (or CAP_SYS_ADMIN in its user
namespace). Rights the running kernel does not know are refused with EINVAL, so callers
mask them with :func:`fs_rights` / :func:`net_rights` / :func:`scopes` for its ABI.
"""

from __future__ import annotations

import os

from contain.linux import native as ctypes
from contain.linux.syscalls import syscall

# landlock_create_ruleset flags
CREATE_RULESET_VERSION = 1 << 0
CREATE_RULESET_ERRATA = 1 << 1  # ABI 7

# rule types
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

# landlock_restrict_self flags (ABI 7: audit logging)
RESTRICT_SELF_LOG_SAME_EXEC_OFF = 1 << 0
RESTRICT_SELF_LOG_NEW_EXEC_ON = 1 << 1
RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 2

# filesystem rights: name -> (bit, first ABI)
FS: dict[str, tuple[int, int]] = {
    "execute": (1 << 0, 1),
    "write_file": (1 << 1, 1),
    "read_file": (1 << 2, 1),
    "read_dir": (1 << 3, 1),
    "remove_dir": (1 << 4, 1),
    "remove_file": (1 << 5, 1),
    "make_char": (1 << 6, 1),
    "make_dir": (1 << 7, 1),
    "make_reg": (1 << 8, 1),
    "make_sock": (1 << 9, 1),
    "make_fifo": (1 << 10, 1),
    "make_block": (1 << 11, 1),
    "make_sym": (1 << 12, 1),
    "refer": (1 << 13, 2),
    "truncate": (1 << 14, 3),
    "ioctl_dev": (1 << 15, 5),
}
NET: dict[str, tuple[int, int]] = {
    "bind_tcp": (1 << 0, 4),
    "connect_tcp": (1 << 1, 4),
}
SCOPE: dict[str, tuple[int, int]] = {
    "abstract_unix_socket": (1 << 0, 6),
    "signal": (1 << 1, 6),
}
# rights that make sense on a regular file (the kernel refuses the others there)
FILE_RIGHTS = ("execute", "write_file", "read_file", "truncate", "ioctl_dev")


def _known(table: dict[str, tuple[int, int]], abi: int) -> int:
    mask = 0
    for bit, first in table.values():
        if abi >= first:
            mask |= bit
    return mask


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel of *abi* handles."""
    return _known(FS, abi)


def net_rights(abi: int) -> int:
    return _known(NET, abi)


def scopes(abi: int) -> int:
    return _known(SCOPE, abi)


def bits(table: dict[str, tuple[int, int]], names: list[str] | tuple[str, ...]) -> int:
    mask = 0
    for name in names:
        mask |= table[name][0]
    return mask


def names(table: dict[str, tuple[int, int]], mask: int) -> list[str]:
    return [name for name, (bit, _) in table.items() if mask & bit]


_abi_cache: list[int] = []


def abi_version() -> int:
    """The kernel's Landlock ABI; 0 when Landlock is not built in or not enabled (ENOSYS,
    EOPNOTSUPP)."""
    if _abi_cache:
        return _abi_cache[0]
    try:
        abi = syscall("landlock_create_ruleset", None, ctypes.c_ulong(0),
                      ctypes.c_uint(CREATE_RULESET_VERSION))
    except OSError:
        abi = 0
    _abi_cache.append(abi)
    return abi


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def create_ruleset(handled_fs: int, handled_net: int = 0, scoped: int = 0) -> int:
    """A new ruleset fd (close-on-exec) handling these rights."""
    attr = _RulesetAttr(handled_fs, handled_net, scoped)
    size = 8 if not (handled_net or scoped) else (16 if not scoped else 24)
    return syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_ulong(size),
                   ctypes.c_uint(0))


def add_path_rule(ruleset_fd: int, allowed: int, parent_fd: int) -> None:
    attr = _PathBeneathAttr(allowed, parent_fd)
    syscall("landlock_add_rule", ctypes.c_int(ruleset_fd), ctypes.c_int(RULE_PATH_BENEATH),
            ctypes.byref(attr), ctypes.c_uint(0))


def add_port_rule(ruleset_fd: int, allowed: int, port: int) -> None:
    attr = _NetPortAttr(allowed, port)
    syscall("landlock_add_rule", ctypes.c_int(ruleset_fd), ctypes.c_int(RULE_NET_PORT),
            ctypes.byref(attr), ctypes.c_uint(0))


def restrict_self(ruleset_fd: int, flags: int = 0) -> None:
    syscall("landlock_restrict_self", ctypes.c_int(ruleset_fd), ctypes.c_uint(flags))


def open_path(path: str) -> int:
    """An O_PATH fd for a rule's parent_fd."""
    return os.open(path, os.O_PATH | os.O_CLOEXEC)
