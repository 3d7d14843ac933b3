"""Device access rules: the OCI list, runc's default allowances, v1 files and v2 eBPF.

The rule list is folded into the kernel's own model of a device cgroup (what cgroup v1
implements): a default (allow or deny everything) plus exceptions keyed by
(type, major, minor) with an access set. The same folded state is written to v1's
devices.allow/devices.deny, or compiled into a BPF_PROG_TYPE_CGROUP_DEVICE program for
v2, so both layouts enforce exactly the same thing.

Folding starts from "deny everything", as runc does: a config whose list does not begin
with a deny-all still gets a whitelist.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contain.spec.config import DeviceRule

# (allow, type, major, minor, access); -1 is the wildcard


# runc's AllowedDevices (libcontainer/specconv): appended after the config's rules. The path
# says which entry a linux.devices entry of the same path replaces.
DEFAULT_RULES: tuple[tuple[str | None, tuple[bool, str, int, int, str]], ...] = (
    (None, (True, "c", -1, -1, "m")),
    (None, (True, "b", -1, -1, "m")),
    ("/dev/null", (True, "c", 1, 3, "rwm")),
    ("/dev/random", (True, "c", 1, 8, "rwm")),
    ("/dev/full", (True, "c", 1, 7, "rwm")),
    ("/dev/tty", (True, "c", 5, 0, "rwm")),
    ("/dev/zero", (True, "c", 1, 5, "rwm")),
    ("/dev/urandom", (True, "c", 1, 9, "rwm")),
    (None, (True, "c", 136, -1, "rwm")),   # /dev/pts/*
    (None, (True, "c", 5, 2, "rwm")),      # /dev/ptmx
    (None, (True, "c", 10, 200, "rwm")),   # /dev/net/tun (kept by runc for compatibility)
)

_BITS = {"m": 1, "r": 2, "w": 4}


def _bits(access: str) -> int:
    out = 0
    for c in access:
        out |= _BITS[c]
    return out


def _letters(bits: int) -> str:
    return "".join(c for c in "rwm" if bits & _BITS[c])


def rules_from_spec(rules: list[DeviceRule], linux_device_paths: tuple[str, ...] | list[str] = (),
                    defaults: bool = True) -> list[tuple[bool, str, int, int, str]]:
    """The effective rule list: the config's rules, then runc's defaults (minus those whose
    path a linux.devices entry redefines)."""
    out = [(r.allow, r.type, -1 if r.major is None else r.major,
            -1 if r.minor is None else r.minor, r.access) for r in rules]
    if defaults:
        skip = set(linux_device_paths)
        out.extend(rule for path, rule in DEFAULT_RULES if path is None or path not in skip)
    return out


class DeviceState:
    """The kernel's model: a default verdict plus exceptions (type, major, minor) -> bits."""

    __slots__ = ("default_allow", "exceptions")

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[tuple[str, int, int], int] = {}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DeviceState) and self.default_allow == other.default_allow
                and self.exceptions == other.exceptions)

    def apply(self, rule: tuple[bool, str, int, int, str]) -> None:
        allow, typ, major, minor, access = rule
        bits = _bits(access)
        if typ == "a":
            if major == -1 and minor == -1 and bits == 7:
                self.default_allow = allow
                self.exceptions.clear()
                return
            for t in ("c", "b"):
                self.apply((allow, t, major, minor, access))
            return
        key = (typ, major, minor)
        if allow == self.default_allow:
            left = self.exceptions.get(key, 0) & ~bits
            if left:
                self.exceptions[key] = left
            else:
                self.exceptions.pop(key, None)
        else:
            self.exceptions[key] = self.exceptions.get(key, 0) | bits

    def v1_lines(self) -> list[tuple[str, str]]:
        """(file, line) writes that bring a v1 devices cgroup to this state from any state
        (the parent must allow what is asked)."""
        reset = ("devices.allow", "a") if self.default_allow else ("devices.deny", "a")
        target = "devices.deny" if self.default_allow else "devices.allow"
        out = [reset]
        for (typ, major, minor), bits in self.exceptions.items():
            out.append((target, f"{typ} {_num(major)}:{_num(minor)} {_letters(bits)}"))
        return out

    def program(self) -> bytes:
        """A BPF_PROG_TYPE_CGROUP_DEVICE program enforcing this state (1 allows, 0 denies)."""
        from contain.linux import bpf as b

        insn = b.insn
        head = [
            insn(b.BPF_LDX_MEM_W, dst=2, src=1, off=0),    # r2 = access_type
            insn(b.BPF_ALU64_MOV_X, dst=3, src=2),         # r3 = r2
            insn(b.BPF_ALU64_AND_K, dst=3, imm=0xFFFF),    # r3 = device type
            insn(b.BPF_ALU64_RSH_K, dst=2, imm=16),        # r2 = requested access bits
            insn(b.BPF_LDX_MEM_W, dst=4, src=1, off=4),    # r4 = major
            insn(b.BPF_LDX_MEM_W, dst=5, src=1, off=8),    # r5 = minor
        ]
        verdict = 0 if self.default_allow else 1  # an exception flips the default
        blocks: list[list[tuple[int, int, int, int, int] | bytes]] = []
        for (typ, major, minor), bits in self.exceptions.items():
            block: list[tuple[int, int, int, int, int] | bytes] = []
            dtype = b.BPF_DEVCG_DEV_CHAR if typ == "c" else b.BPF_DEVCG_DEV_BLOCK
            block.append((b.BPF_JMP32_JNE_K, 3, 0, 0, dtype))
            if major != -1:
                block.append((b.BPF_JMP32_JNE_K, 4, 0, 0, major))
            if minor != -1:
                block.append((b.BPF_JMP32_JNE_K, 5, 0, 0, minor))
            block.append(insn(b.BPF_ALU64_MOV_X, dst=6, src=2))
            if verdict:  # allow exception: every requested bit must be in the rule
                block.append(insn(b.BPF_ALU64_AND_K, dst=6, imm=~bits & 7))
                block.append((b.BPF_JMP32_JNE_K, 6, 0, 0, 0))
            else:        # deny exception: any requested bit in the rule denies
                block.append(insn(b.BPF_ALU64_AND_K, dst=6, imm=bits))
                block.append((b.BPF_JMP32_JEQ_K, 6, 0, 0, 0))
            block.append(insn(b.BPF_ALU64_MOV_K, dst=0, imm=verdict))
            block.append(insn(b.BPF_JMP_EXIT))
            blocks.append(block)
        out = list(head)
        for block in blocks:
            n = len(block)
            for i, item in enumerate(block):
                if isinstance(item, bytes):
                    out.append(item)
                else:  # a jump to the next block
                    code, dst, src, _off, imm = item
                    out.append(insn(code, dst=dst, src=src, off=n - i - 1, imm=imm))
        out.append(insn(b.BPF_ALU64_MOV_K, dst=0, imm=1 if self.default_allow else 0))
        out.append(insn(b.BPF_JMP_EXIT))
        return b"".join(out)


def _num(n: int) -> str:
    return "*" if n == -1 else str(n)


def fold(rules: list[tuple[bool, str, int, int, str]]) -> DeviceState:
    state = DeviceState(default_allow=False)
    for rule in rules:
        state.apply(rule)
    return state


def state_from_v1_list(text: str) -> DeviceState:
    """Parse devices.list: "a *:* rwm" is allow-all; other lines are allow exceptions."""
    state = DeviceState(default_allow=False)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        typ, (major, minor), access = parts[0], parts[1].split(":"), parts[2]
        rule = (True, typ, -1 if major == "*" else int(major),
                -1 if minor == "*" else int(minor), access)
        state.apply(rule)
    return state


def apply_v1(path: str, state: DeviceState) -> None:
    """Write *state* into the v1 devices cgroup at *path*, unless it is already there."""
    from contain.cgroups.fs import read_text, write_text

    try:
        current = state_from_v1_list(read_text(path, "devices.list"))
    except OSError:
        current = None
    if current == state or (current is not None and state.default_allow
                            and current.default_allow and not state.exceptions):
        return
    for name, line in state.v1_lines():
        write_text(path, name, line)


def apply_v2(path: str, state: DeviceState) -> None:
    """Load *state* as an eBPF program and attach it to the cgroup2 directory *path*,
    replacing the device programs attached there before (attach new, then detach old)."""
    from contain.linux import bpf as b

    dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            old = b.prog_query(dirfd, b.BPF_CGROUP_DEVICE)
        except OSError:
            old = []
        prog = b.prog_load(b.BPF_PROG_TYPE_CGROUP_DEVICE, state.program(), license="Apache",
                           expected_attach_type=b.BPF_CGROUP_DEVICE, name="contain_dev")
        try:
            b.prog_attach(dirfd, prog, b.BPF_CGROUP_DEVICE, b.BPF_F_ALLOW_MULTI)
        finally:
            os.close(prog)
        for prog_id in old:
            try:
                fd = b.prog_get_fd_by_id(prog_id)
            except OSError:
                continue
            try:
                b.prog_detach(dirfd, fd, b.BPF_CGROUP_DEVICE)
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        os.close(dirfd)
