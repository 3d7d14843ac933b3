"""The OCI runtime-spec (1.2) configuration model: config.json, decoded with JSON paths.

Every object of the spec is a :class:`Model` here; unknown properties are ignored as the
spec asks, and a wrong type or value fails with the path of the field.
"""

from __future__ import annotations

from contain.spec.decode import (
    ID_MAX,
    REQUIRED,
    Model,
    absolute_path,
    array,
    boolean,
    check_path_length,
    fail,
    i32,
    i64,
    id32,
    integer,
    key,
    mapping,
    model,
    one_of,
    show,
    string,
    u16,
    u32,
    u64,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.3.0"

_strs = array(string)

NGROUPS_MAX = 65536  # the kernel's limit on supplementary groups (setgroups: EINVAL)


def _gids(value: Any, path: str) -> list[int]:
    if isinstance(value, list) and len(value) > NGROUPS_MAX:
        raise fail(path, f"{len(value)} groups: the kernel allows at most {NGROUPS_MAX}")
    gids: list[int] = array(id32)(value, path)
    return gids


# the rlimits of setrlimit(2), by the names the spec uses
RLIMIT_TYPES = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
                "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
                "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
                "RLIMIT_RTPRIO", "RLIMIT_RTTIME")

MAX_ARG_STRLEN = 131072  # execve's limit on one argument or environment string
MAX_OPTIONS = 8192  # a mount's options joined (its data goes to the kernel in one page)
PAGE = 4096  # a sysctl write takes at most one page
CPU_MAX = 8192  # NR_CPUS at most (CONFIG_NR_CPUS tops out at 8192)
NODE_MAX = 1024  # MAX_NUMNODES at most (CONFIG_NODES_SHIFT tops out at 10)


def _number(text: str) -> bool:
    """Decimal digits, few enough for int() (which refuses more than 4300)."""
    return text.isdigit() and text.isascii() and len(text) <= 18


def parse_cpulist(text: str) -> set[int]:
    """The numbers of a list in the kernel's cpulist format ("0-3,7"), checked already."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if part:
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def check_cpu_list(text: str, path: str, limit: int = CPU_MAX, stride: bool = False) -> None:
    """A list of the kernel's cpulist format ("0-3,7"): numbers below *limit*; with
    *stride*, ranges may take the cgroup files' "0-7:2/4" form too."""
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        part, colon, groups = part.partition(":")
        if colon:
            used, slash, size = groups.partition("/")
            if not (stride and "-" in part and slash and _number(used) and _number(size)):
                raise fail(path, f"{show(text)} is not a list of numbers and ranges (0-3,7)")
        lo, dash, hi = part.partition("-")
        lo, hi = lo.strip(), hi.strip()
        if not _number(lo) or (dash and not _number(hi)):
            raise fail(path, f"{show(text)} is not a list of numbers and ranges (0-3,7)")
        first, last = int(lo), int(hi) if dash else int(lo)
        if first > last:
            raise fail(path, f"range {show(part)} runs backwards")
        if last >= limit:
            raise fail(path, f"{last} is beyond the largest number the kernel allows "
                       f"({limit - 1})")


# -- process --------------------------------------------------------------------------

class Box(Model):
    __slots__ = ("height", "width")
    FIELDS = (("height", "height", u32, REQUIRED), ("width", "width", u32, REQUIRED))
    height: int
    width: int


class User(Model):
    __slots__ = ("uid", "gid", "umask", "additional_gids", "username")
    FIELDS = (
        ("uid", "uid", id32, 0),
        ("gid", "gid", id32, 0),
        ("umask", "umask", integer(0, 0o777), None),
        ("additional_gids", "additionalGids", _gids, list),
        ("username", "username", string, None),
    )
    uid: int
    gid: int
    umask: int | None
    additional_gids: list[int]
    username: str | None


class Rlimit(Model):
    __slots__ = ("type", "soft", "hard")
    FIELDS = (("type", "type", string, REQUIRED), ("soft", "soft", u64, REQUIRED),
              ("hard", "hard", u64, REQUIRED))
    type: str
    soft: int
    hard: int

    def validate(self, path: str) -> None:
        if self.type not in RLIMIT_TYPES:
            raise fail(f"{path}.type", f"unknown rlimit {show(self.type)}")
        if self.soft > self.hard:
            raise fail(path, f"{self.type}: soft limit {self.soft} exceeds hard limit {self.hard}")


class Capabilities(Model):
    __slots__ = ("bounding", "effective", "inheritable", "permitted", "ambient")
    FIELDS = (
        ("bounding", "bounding", _strs, list),
        ("effective", "effective", _strs, list),
        ("inheritable", "inheritable", _strs, list),
        ("permitted", "permitted", _strs, list),
        ("ambient", "ambient", _strs, list),
    )
    bounding: list[str]
    effective: list[str]
    inheritable: list[str]
    permitted: list[str]
    ambient: list[str]


class Scheduler(Model):
    __slots__ = ("policy", "nice", "priority", "flags", "runtime", "deadline", "period")
    FIELDS = (
        ("policy", "policy", one_of("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
                                    "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE"), REQUIRED),
        ("nice", "nice", integer(-20, 19), 0),
        ("priority", "priority", i32, 0),
        ("flags", "flags", _strs, list),
        ("runtime", "runtime", u64, 0),
        ("deadline", "deadline", u64, 0),
        ("period", "period", u64, 0),
    )
    policy: str
    nice: int
    priority: int
    flags: list[str]
    runtime: int
    deadline: int
    period: int


class IOPriority(Model):
    __slots__ = ("io_class", "priority")
    FIELDS = (
        ("io_class", "class", one_of("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"),
         REQUIRED),
        ("priority", "priority", integer(0, 7), 0),
    )
    io_class: str
    priority: int


class CPUAffinity(Model):
    __slots__ = ("initial", "final")
    FIELDS = (("initial", "initial", string, None), ("final", "final", string, None))
    initial: str | None
    final: str | None

    def validate(self, path: str) -> None:
        for name in ("initial", "final"):
            value = getattr(self, name)
            if value is not None:
                check_cpu_list(value, f"{path}.{name}")


class Process(Model):
    __slots__ = ("terminal", "console_size", "cwd", "env", "args", "rlimits",
                 "apparmor_profile", "capabilities", "no_new_privileges", "oom_score_adj",
                 "scheduler", "selinux_label", "io_priority", "exec_cpu_affinity", "user")
    FIELDS = (
        ("terminal", "terminal", boolean, False),
        ("console_size", "consoleSize", model(Box), None),
        ("cwd", "cwd", absolute_path, REQUIRED),
        ("env", "env", _strs, list),
        ("args", "args", _strs, list),
        ("rlimits", "rlimits", array(model(Rlimit)), list),
        ("apparmor_profile", "apparmorProfile", string, None),
        ("capabilities", "capabilities", model(Capabilities), None),
        ("no_new_privileges", "noNewPrivileges", boolean, False),
        ("oom_score_adj", "oomScoreAdj", integer(-1000, 1000), None),
        ("scheduler", "scheduler", model(Scheduler), None),
        ("selinux_label", "selinuxLabel", string, None),
        ("io_priority", "ioPriority", model(IOPriority), None),
        ("exec_cpu_affinity", "execCPUAffinity", model(CPUAffinity), None),
        ("user", "user", model(User), User),
    )
    terminal: bool
    console_size: Box | None
    cwd: str
    env: list[str]
    args: list[str]
    rlimits: list[Rlimit]
    apparmor_profile: str | None
    capabilities: Capabilities | None
    no_new_privileges: bool
    oom_score_adj: int | None
    scheduler: Scheduler | None
    selinux_label: str | None
    io_priority: IOPriority | None
    exec_cpu_affinity: CPUAffinity | None
    user: User

    def validate(self, path: str) -> None:
        if not self.args:
            raise fail(f"{path}.args", "must name the program to run")
        check_path_length(self.args[0], f"{path}.args[0]")
        for name, strings in (("args", self.args), ("env", self.env)):
            for i, text in enumerate(strings):
                if len(text) >= MAX_ARG_STRLEN // 4 and len(text.encode()) >= MAX_ARG_STRLEN:
                    raise fail(f"{path}.{name}[{i}]", f"{show(text)} is longer than the "
                               f"kernel's {MAX_ARG_STRLEN - 1} bytes for one string")
        seen: set[str] = set()
        for i, rl in enumerate(self.rlimits):
            if rl.type in seen:
                raise fail(f"{path}.rlimits[{i}].type", f"duplicate rlimit {rl.type}")
            seen.add(rl.type)


# -- root and mounts ---------------------------------------------------------------------

class Root(Model):
    __slots__ = ("path", "readonly")
    FIELDS = (("path", "path", string, REQUIRED), ("readonly", "readonly", boolean, False))
    path: str
    readonly: bool

    def validate(self, path: str) -> None:
        if not self.path:
            raise fail(f"{path}.path", "must not be empty")
        check_path_length(self.path, f"{path}.path")


class IDMapping(Model):
    __slots__ = ("container_id", "host_id", "size")
    FIELDS = (("container_id", "containerID", id32, REQUIRED),
              ("host_id", "hostID", id32, REQUIRED),
              ("size", "size", integer(1, ID_MAX + 1), REQUIRED))
    container_id: int
    host_id: int
    size: int

    def validate(self, path: str) -> None:
        # the last id of either range must be a valid id too: no range may reach
        # 4294967295, which is (uid_t)-1 and no id at all
        for name, first in (("containerID", self.container_id), ("hostID", self.host_id)):
            if first + self.size - 1 > ID_MAX:
                raise fail(path, f"{name} {first} + size {self.size} goes beyond the "
                           f"largest id {ID_MAX}")


def _check_mappings(maps: list[IDMapping], path: str) -> None:
    spans = sorted((m.container_id, m.container_id + m.size, i) for i, m in enumerate(maps))
    for i in range(1, len(spans)):
        a1, (b0, _b1, bi) = spans[i - 1][1], spans[i]
        if b0 < a1:
            raise fail(f"{path}[{bi}]", "mapping overlaps another mapping")
    for i, m in enumerate(maps):
        if m.size == 0:
            raise fail(f"{path}[{i}].size", "must be at least 1")


# mount options that carry a uid or gid (tmpfs, devpts, fat, iso9660, ...)
_ID_OPTIONS = ("uid", "gid", "setuid", "setgid")


class Mount(Model):
    __slots__ = ("destination", "source", "options", "type", "uid_mappings", "gid_mappings")
    FIELDS = (
        ("destination", "destination", string, REQUIRED),
        ("source", "source", string, None),
        ("options", "options", _strs, list),
        ("type", "type", string, None),
        ("uid_mappings", "uidMappings", array(model(IDMapping)), list),
        ("gid_mappings", "gidMappings", array(model(IDMapping)), list),
    )
    destination: str
    source: str | None
    options: list[str]
    type: str | None
    uid_mappings: list[IDMapping]
    gid_mappings: list[IDMapping]

    def validate(self, path: str) -> None:
        if not self.destination.startswith("/"):
            raise fail(f"{path}.destination",
                       f"{show(self.destination)} is not an absolute path")
        check_path_length(self.destination, f"{path}.destination")
        if self.source is not None:
            check_path_length(self.source, f"{path}.source")
        if sum(len(o) + 1 for o in self.options) > MAX_OPTIONS:
            raise fail(f"{path}.options", f"longer than {MAX_OPTIONS} characters together")
        for i, opt in enumerate(self.options):
            name, eq, value = opt.partition("=")
            bad = not (value.isdigit() and value.isascii() and len(value) <= 10) \
                or int(value) > ID_MAX
            if eq and name in _ID_OPTIONS and bad:
                raise fail(f"{path}.options[{i}]", f"{show(opt)}: {name} must be a "
                           f"number in [0, {ID_MAX}]")
        if bool(self.uid_mappings) != bool(self.gid_mappings):
            raise fail(path, "uidMappings and gidMappings must be given together")


# -- hooks -----------------------------------------------------------------------------

class Hook(Model):
    __slots__ = ("path", "args", "env", "timeout")
    FIELDS = (("path", "path", absolute_path, REQUIRED), ("args", "args", _strs, list),
              ("env", "env", _strs, list), ("timeout", "timeout", integer(1, 2**31 - 1), None))
    path: str
    args: list[str]
    env: list[str]
    timeout: int | None


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")


class Hooks(Model):
    __slots__ = ("prestart", "create_runtime", "create_container", "start_container",
                 "poststart", "poststop")
    FIELDS = tuple((attr, key, array(model(Hook)), list) for attr, key in zip(
        __slots__, HOOK_KINDS, strict=True))
    prestart: list[Hook]
    create_runtime: list[Hook]
    create_container: list[Hook]
    start_container: list[Hook]
    poststart: list[Hook]
    poststop: list[Hook]


# -- linux: namespaces, devices, seccomp ---------------------------------------------------

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


class Namespace(Model):
    __slots__ = ("type", "path")
    FIELDS = (("type", "type", one_of(*NAMESPACE_TYPES), REQUIRED),
              ("path", "path", absolute_path, None))
    type: str
    path: str | None


class TimeOffset(Model):
    __slots__ = ("secs", "nanosecs")
    FIELDS = (("secs", "secs", i64, 0), ("nanosecs", "nanosecs", integer(0, 999_999_999), 0))
    secs: int
    nanosecs: int


class Device(Model):
    __slots__ = ("type", "path", "major", "minor", "file_mode", "uid", "gid")
    FIELDS = (
        ("type", "type", one_of("c", "b", "u", "p"), REQUIRED),
        ("path", "path", absolute_path, REQUIRED),
        ("major", "major", i64, None),
        ("minor", "minor", i64, None),
        ("file_mode", "fileMode", integer(0, 0o7777), None),
        ("uid", "uid", id32, None),
        ("gid", "gid", id32, None),
    )
    type: str
    path: str
    major: int | None
    minor: int | None
    file_mode: int | None
    uid: int | None
    gid: int | None

    def validate(self, path: str) -> None:
        if self.type != "p" and (self.major is None or self.minor is None):
            raise fail(path, f"device {self.path}: type {self.type} needs major and minor")
        for name in ("major", "minor"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 2**32:
                raise fail(f"{path}.{name}", f"{v} out of range")


class SeccompArg(Model):
    __slots__ = ("index", "value", "value_two", "op")
    FIELDS = (
        ("index", "index", integer(0, 5), REQUIRED),
        ("value", "value", u64, 0),
        ("value_two", "valueTwo", u64, 0),
        ("op", "op", one_of("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                            "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"), REQUIRED),
    )
    index: int
    value: int
    value_two: int
    op: str


SECCOMP_ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                   "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                   "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
SECCOMP_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                 "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
SECCOMP_ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
                  "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
                  "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
                  "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                  "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
                  "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
                  "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB")


class SeccompSyscall(Model):
    __slots__ = ("names", "action", "errno_ret", "args")
    FIELDS = (
        ("names", "names", _strs, REQUIRED),
        ("action", "action", one_of(*SECCOMP_ACTIONS), REQUIRED),
        ("errno_ret", "errnoRet", u32, None),
        ("args", "args", array(model(SeccompArg)), list),
    )
    names: list[str]
    action: str
    errno_ret: int | None
    args: list[SeccompArg]


class Seccomp(Model):
    __slots__ = ("default_action", "default_errno_ret", "architectures", "flags",
                 "listener_path", "listener_metadata", "syscalls")
    FIELDS = (
        ("default_action", "defaultAction", one_of(*SECCOMP_ACTIONS), REQUIRED),
        ("default_errno_ret", "defaultErrnoRet", u32, None),
        ("architectures", "architectures", array(one_of(*SECCOMP_ARCHES)), list),
        ("flags", "flags", array(one_of(*SECCOMP_FLAGS)), list),
        ("listener_path", "listenerPath", absolute_path, None),
        ("listener_metadata", "listenerMetadata", string, None),
        ("syscalls", "syscalls", array(model(SeccompSyscall)), list),
    )
    default_action: str
    default_errno_ret: int | None
    architectures: list[str]
    flags: list[str]
    listener_path: str | None
    listener_metadata: str | None
    syscalls: list[SeccompSyscall]

    def validate(self, path: str) -> None:
        uses_notify = self.default_action == "SCMP_ACT_NOTIFY" or any(
            s.action == "SCMP_ACT_NOTIFY" for s in self.syscalls)
        if uses_notify and not self.listener_path:
            raise fail(f"{path}.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath")
        if self.default_action == "SCMP_ACT_NOTIFY":
            raise fail(f"{path}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")


class Personality(Model):
    __slots__ = ("domain", "flags")
    FIELDS = (("domain", "domain", one_of("LINUX", "LINUX32"), REQUIRED),
              ("flags", "flags", _strs, list))
    domain: str
    flags: list[str]


# -- linux.resources ----------------------------------------------------------------------

class DeviceRule(Model):
    __slots__ = ("allow", "type", "major", "minor", "access")
    FIELDS = (
        ("allow", "allow", boolean, REQUIRED),
        ("type", "type", one_of("a", "c", "b"), "a"),
        ("major", "major", i64, None),
        ("minor", "minor", i64, None),
        ("access", "access", string, "rwm"),
    )
    allow: bool
    type: str
    major: int | None
    minor: int | None
    access: str

    def validate(self, path: str) -> None:
        if not self.access or any(c not in "rwm" for c in self.access):
            raise fail(f"{path}.access", f"invalid access {show(self.access)} (letters of rwm)")
        for name in ("major", "minor"):
            v = getattr(self, name)
            if v is not None and not -1 <= v < 2**32:
                raise fail(f"{path}.{name}", f"{v} out of range")


class Memory(Model):
    __slots__ = ("limit", "reservation", "swap", "kernel", "kernel_tcp", "swappiness",
                 "disable_oom_killer", "use_hierarchy", "check_before_update")
    FIELDS = (
        ("limit", "limit", i64, None),
        ("reservation", "reservation", i64, None),
        ("swap", "swap", i64, None),
        ("kernel", "kernel", i64, None),
        ("kernel_tcp", "kernelTCP", i64, None),
        ("swappiness", "swappiness", u64, None),
        ("disable_oom_killer", "disableOOMKiller", boolean, None),
        ("use_hierarchy", "useHierarchy", boolean, None),
        ("check_before_update", "checkBeforeUpdate", boolean, None),
    )
    limit: int | None
    reservation: int | None
    swap: int | None
    kernel: int | None
    kernel_tcp: int | None
    swappiness: int | None
    disable_oom_killer: bool | None
    use_hierarchy: bool | None
    check_before_update: bool | None

    def validate(self, path: str) -> None:
        for name in ("limit", "reservation", "swap", "kernel", "kernel_tcp"):
            v = getattr(self, name)
            if v is not None and v < -1:
                raise fail(f"{path}.{name}", f"{v} is negative (use -1 for unlimited)")
        if self.swappiness is not None and self.swappiness > 100:
            raise fail(f"{path}.swappiness", f"{self.swappiness} out of range [0, 100]")


class CPU(Model):
    __slots__ = ("shares", "quota", "burst", "period", "realtime_runtime", "realtime_period",
                 "cpus", "mems", "idle")
    FIELDS = (
        ("shares", "shares", u64, None),
        ("quota", "quota", i64, None),
        ("burst", "burst", u64, None),
        ("period", "period", u64, None),
        ("realtime_runtime", "realtimeRuntime", i64, None),
        ("realtime_period", "realtimePeriod", u64, None),
        ("cpus", "cpus", string, None),
        ("mems", "mems", string, None),
        ("idle", "idle", i64, None),
    )
    shares: int | None
    quota: int | None
    burst: int | None
    period: int | None
    realtime_runtime: int | None
    realtime_period: int | None
    cpus: str | None
    mems: str | None
    idle: int | None

    def validate(self, path: str) -> None:
        if self.quota is not None and self.quota < -1:
            raise fail(f"{path}.quota", f"{self.quota} is negative (use -1 for unlimited)")
        if self.idle is not None and self.idle not in (0, 1):
            raise fail(f"{path}.idle", f"{self.idle} must be 0 or 1")
        if self.cpus:
            check_cpu_list(self.cpus, f"{path}.cpus", stride=True)
        if self.mems:
            check_cpu_list(self.mems, f"{path}.mems", NODE_MAX, stride=True)


class Pids(Model):
    """runtime-spec 1.3: the limit is optional, -1 is no limit and 0 is a limit of 0 (the
    kernel takes pids.max=0: no fork at all); runc before 1.4 wrote "max" for 0."""

    __slots__ = ("limit",)
    FIELDS = (("limit", "limit", i64, None),)
    limit: int | None

    def validate(self, path: str) -> None:
        if self.limit is not None and self.limit < -1:
            raise fail(f"{path}.limit", f"{self.limit} is negative (use -1 for no limit)")


class WeightDevice(Model):
    __slots__ = ("major", "minor", "weight", "leaf_weight")
    FIELDS = (("major", "major", i64, REQUIRED), ("minor", "minor", i64, REQUIRED),
              ("weight", "weight", u16, None), ("leaf_weight", "leafWeight", u16, None))
    major: int
    minor: int
    weight: int | None
    leaf_weight: int | None


class ThrottleDevice(Model):
    __slots__ = ("major", "minor", "rate")
    FIELDS = (("major", "major", i64, REQUIRED), ("minor", "minor", i64, REQUIRED),
              ("rate", "rate", u64, REQUIRED))
    major: int
    minor: int
    rate: int


class BlockIO(Model):
    __slots__ = ("weight", "leaf_weight", "weight_device", "throttle_read_bps_device",
                 "throttle_write_bps_device", "throttle_read_iops_device",
                 "throttle_write_iops_device")
    FIELDS = (
        ("weight", "weight", u16, None),
        ("leaf_weight", "leafWeight", u16, None),
        ("weight_device", "weightDevice", array(model(WeightDevice)), list),
        ("throttle_read_bps_device", "throttleReadBpsDevice", array(model(ThrottleDevice)), list),
        ("throttle_write_bps_device", "throttleWriteBpsDevice", array(model(ThrottleDevice)),
         list),
        ("throttle_read_iops_device", "throttleReadIOPSDevice", array(model(ThrottleDevice)),
         list),
        ("throttle_write_iops_device", "throttleWriteIOPSDevice", array(model(ThrottleDevice)),
         list),
    )
    weight: int | None
    leaf_weight: int | None
    weight_device: list[WeightDevice]
    throttle_read_bps_device: list[ThrottleDevice]
    throttle_write_bps_device: list[ThrottleDevice]
    throttle_read_iops_device: list[ThrottleDevice]
    throttle_write_iops_device: list[ThrottleDevice]


class HugepageLimit(Model):
    __slots__ = ("page_size", "limit")
    FIELDS = (("page_size", "pageSize", string, REQUIRED), ("limit", "limit", u64, REQUIRED))
    page_size: str
    limit: int


class InterfacePriority(Model):
    __slots__ = ("name", "priority")
    FIELDS = (("name", "name", string, REQUIRED), ("priority", "priority", u32, REQUIRED))
    name: str
    priority: int


class Network(Model):
    __slots__ = ("class_id", "priorities")
    FIELDS = (("class_id", "classID", u32, None),
              ("priorities", "priorities", array(model(InterfacePriority)), list))
    class_id: int | None
    priorities: list[InterfacePriority]


class Rdma(Model):
    __slots__ = ("hca_handles", "hca_objects")
    FIELDS = (("hca_handles", "hcaHandles", u32, None), ("hca_objects", "hcaObjects", u32, None))
    hca_handles: int | None
    hca_objects: int | None


class Resources(Model):
    __slots__ = ("devices", "memory", "cpu", "pids", "block_io", "hugepage_limits", "network",
                 "rdma", "unified")
    FIELDS = (
        ("devices", "devices", array(model(DeviceRule)), list),
        ("memory", "memory", model(Memory), None),
        ("cpu", "cpu", model(CPU), None),
        ("pids", "pids", model(Pids), None),
        ("block_io", "blockIO", model(BlockIO), None),
        ("hugepage_limits", "hugepageLimits", array(model(HugepageLimit)), list),
        ("network", "network", model(Network), None),
        ("rdma", "rdma", mapping(model(Rdma)), dict),
        ("unified", "unified", mapping(string), dict),
    )
    devices: list[DeviceRule]
    memory: Memory | None
    cpu: CPU | None
    pids: Pids | None
    block_io: BlockIO | None
    hugepage_limits: list[HugepageLimit]
    network: Network | None
    rdma: dict[str, Rdma]
    unified: dict[str, str]


IFNAMSIZ = 16  # a network device's name: at most 15 bytes and the NUL


def check_netdev_name(name: str, path: str) -> None:
    """A name the kernel takes for a network device (dev_valid_name): 1 to 15 bytes, not
    . or .., no slash, colon or white space."""
    if not name or len(name.encode()) >= IFNAMSIZ:
        raise fail(path, f"{show(name)} is not a network device name (1 to "
                   f"{IFNAMSIZ - 1} bytes)")
    if name in (".", "..") or any(ch in name for ch in "/:") or \
            any(ch.isspace() for ch in name):
        raise fail(path, f"{show(name)} is not a network device name (no /, : or "
                   "white space; not . or ..)")


class NetDevice(Model):
    """runtime-spec 1.3 linux.netDevices.<host name>: the device's name inside (a "%d"
    in it lets the kernel pick a free number)."""

    __slots__ = ("name",)
    FIELDS = (("name", "name", string, None),)
    name: str | None

    def validate(self, path: str) -> None:
        if self.name is not None:
            check_netdev_name(self.name, f"{path}.name")


MPOL_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
              "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
MPOL_FLAGS = {"MPOL_F_STATIC_NODES": 1 << 15, "MPOL_F_RELATIVE_NODES": 1 << 14,
              "MPOL_F_NUMA_BALANCING": 1 << 13}


class MemoryPolicy(Model):
    """runtime-spec 1.3 linux.memoryPolicy: set_mempolicy(2) for the container's
    processes (the init and every exec'd one)."""

    __slots__ = ("mode", "nodes", "flags")
    FIELDS = (
        ("mode", "mode", one_of(*MPOL_MODES), REQUIRED),
        ("nodes", "nodes", string, None),
        ("flags", "flags", array(one_of(*MPOL_FLAGS)), list),
    )
    mode: str
    nodes: str | None
    flags: list[str]

    def validate(self, path: str) -> None:
        if self.nodes is not None:
            check_cpu_list(self.nodes, f"{path}.nodes", NODE_MAX)
        has_nodes = bool(self.nodes and self.nodes.strip())
        if self.mode in ("MPOL_DEFAULT", "MPOL_LOCAL") and has_nodes:
            raise fail(f"{path}.nodes", f"{self.mode} takes no nodes")
        if self.mode in ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE",
                         "MPOL_PREFERRED_MANY") and not has_nodes:
            raise fail(f"{path}.nodes", f"{self.mode} needs at least one node")
        if self.mode == "MPOL_DEFAULT" and self.flags:
            raise fail(f"{path}.flags", "MPOL_DEFAULT takes no flags")
        if {"MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"} <= set(self.flags):
            raise fail(f"{path}.flags", "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES "
                       "exclude each other")
        if "MPOL_F_NUMA_BALANCING" in self.flags and self.mode not in (
                "MPOL_BIND", "MPOL_PREFERRED_MANY"):
            raise fail(f"{path}.flags", "MPOL_F_NUMA_BALANCING needs MPOL_BIND or "
                       "MPOL_PREFERRED_MANY")

    def node_set(self) -> set[int]:
        return parse_cpulist(self.nodes or "")


def _one_line(value: Any, path: str) -> str:
    string(value, path)
    if "\n" in value or "\r" in value:
        raise fail(path, f"{show(value)} contains a newline")
    return value


class IntelRdt(Model):
    """linux.intelRdt (runtime-spec 1.3: schemata and enableMonitoring; enableCMT and
    enableMBM, which no runtime implemented, are gone and ignored)."""

    __slots__ = ("clos_id", "l3_cache_schema", "mem_bw_schema", "schemata",
                 "enable_monitoring")
    FIELDS = (
        ("clos_id", "closID", string, None),
        ("l3_cache_schema", "l3CacheSchema", _one_line, None),
        ("mem_bw_schema", "memBwSchema", _one_line, None),
        ("schemata", "schemata", array(_one_line), list),
        ("enable_monitoring", "enableMonitoring", boolean, False),
    )
    clos_id: str | None
    l3_cache_schema: str | None
    mem_bw_schema: str | None
    schemata: list[str]
    enable_monitoring: bool

    def validate(self, path: str) -> None:
        clos = self.clos_id
        if clos is not None and clos != "/" and (
                not clos or clos in (".", "..") or "/" in clos or len(clos.encode()) > 255):
            raise fail(f"{path}.closID", f"{show(clos)} is not a resctrl group name (one "
                       "path component, or / for the default group)")
        if self.mem_bw_schema is not None and not self.mem_bw_schema.startswith("MB:"):
            raise fail(f"{path}.memBwSchema", f"{show(self.mem_bw_schema)} does not start "
                       "with MB:")
        for i, line in enumerate(self.schemata):
            if not line.strip():
                raise fail(f"{path}.schemata[{i}]", "an empty schemata line")

    def has_schema(self) -> bool:
        return bool(self.l3_cache_schema or self.mem_bw_schema or self.schemata)


def _check_net_devices(devices: dict[str, NetDevice], netns: bool, path: str) -> None:
    if not netns:
        raise fail(path, "moving network devices needs a network namespace of the "
                   "container's own")
    inside: dict[str, str] = {}
    for host, netdev in devices.items():
        check_netdev_name(host, f"{path}.{key(host)}")
        name = netdev.name or host
        if name in inside and "%d" not in name:
            raise fail(f"{path}.{key(host)}", f"{show(name)} is also the name of "
                       f"{show(inside[name])} in the container")
        inside[name] = host


class Linux(Model):
    __slots__ = ("namespaces", "uid_mappings", "gid_mappings", "time_offsets", "devices",
                 "cgroups_path", "resources", "rootfs_propagation", "seccomp", "sysctl",
                 "masked_paths", "readonly_paths", "mount_label", "personality", "intel_rdt",
                 "net_devices", "memory_policy")
    FIELDS = (
        ("namespaces", "namespaces", array(model(Namespace)), list),
        ("uid_mappings", "uidMappings", array(model(IDMapping)), list),
        ("gid_mappings", "gidMappings", array(model(IDMapping)), list),
        ("time_offsets", "timeOffsets", mapping(model(TimeOffset)), dict),
        ("devices", "devices", array(model(Device)), list),
        ("cgroups_path", "cgroupsPath", string, None),
        ("resources", "resources", model(Resources), None),
        ("rootfs_propagation", "rootfsPropagation",
         one_of("shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate",
                "runbindable"), None),
        ("seccomp", "seccomp", model(Seccomp), None),
        ("sysctl", "sysctl", mapping(string), dict),
        ("masked_paths", "maskedPaths", array(absolute_path), list),
        ("readonly_paths", "readonlyPaths", array(absolute_path), list),
        ("mount_label", "mountLabel", string, None),
        ("personality", "personality", model(Personality), None),
        ("intel_rdt", "intelRdt", model(IntelRdt), None),
        ("net_devices", "netDevices", mapping(model(NetDevice)), dict),
        ("memory_policy", "memoryPolicy", model(MemoryPolicy), None),
    )
    namespaces: list[Namespace]
    uid_mappings: list[IDMapping]
    gid_mappings: list[IDMapping]
    time_offsets: dict[str, TimeOffset]
    devices: list[Device]
    cgroups_path: str | None
    resources: Resources | None
    rootfs_propagation: str | None
    seccomp: Seccomp | None
    sysctl: dict[str, str]
    masked_paths: list[str]
    readonly_paths: list[str]
    mount_label: str | None
    personality: Personality | None
    intel_rdt: IntelRdt | None
    net_devices: dict[str, NetDevice]
    memory_policy: MemoryPolicy | None

    def validate(self, path: str) -> None:
        seen: dict[str, int] = {}
        for i, ns in enumerate(self.namespaces):
            if ns.type in seen:
                raise fail(f"{path}.namespaces[{i}].type", f"duplicate namespace {ns.type!r}")
            seen[ns.type] = i
        _check_mappings(self.uid_mappings, f"{path}.uidMappings")
        _check_mappings(self.gid_mappings, f"{path}.gidMappings")
        new_user = "user" in seen and self.namespaces[seen["user"]].path is None
        if new_user and not (self.uid_mappings and self.gid_mappings):
            raise fail(f"{path}.uidMappings",
                       "a new user namespace needs uidMappings and gidMappings")
        if (self.uid_mappings or self.gid_mappings) and "user" not in seen:
            raise fail(f"{path}.uidMappings", "mappings given without a user namespace")
        for clock in self.time_offsets:
            if clock not in ("monotonic", "boottime"):
                raise fail(f"{path}.timeOffsets.{key(clock)}",
                           "unknown clock (monotonic or boottime)")
        for name, value in self.sysctl.items():
            if not name or len(name) > 255:
                raise fail(f"{path}.sysctl.{key(name)}", "not a sysctl name")
            if len(value) >= PAGE:
                raise fail(f"{path}.sysctl.{key(name)}", f"{show(value)} is longer than a "
                           f"sysctl takes ({PAGE - 1} bytes)")
        new_time = "time" in seen and self.namespaces[seen["time"]].path is None
        if self.time_offsets and not new_time:
            raise fail(f"{path}.timeOffsets", "time offsets need a new time namespace")
        for i, dev in enumerate(self.devices):
            # anywhere in the container (the spec and runc allow /foo-dev), but absolute
            if not dev.path.startswith("/") or dev.path.rstrip("/") == "":
                raise fail(f"{path}.devices[{i}].path", f"{show(dev.path)} is not an "
                           "absolute path of a file")
        if self.net_devices:
            _check_net_devices(self.net_devices, "network" in seen, f"{path}.netDevices")

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


# -- the document ------------------------------------------------------------------------

def _version(value: Any, path: str) -> str:
    string(value, path)
    if not value.startswith("1."):
        raise fail(path, f"unsupported OCI version {show(value)} (1.x is supported)")
    return value


class Spec(Model):
    __slots__ = ("oci_version", "process", "root", "hostname", "domainname", "mounts", "hooks",
                 "annotations", "linux", "raw")
    FIELDS = (
        ("oci_version", "ociVersion", _version, REQUIRED),
        ("process", "process", model(Process), None),
        ("root", "root", model(Root), None),
        ("hostname", "hostname", string, None),
        ("domainname", "domainname", string, None),
        ("mounts", "mounts", array(model(Mount)), list),
        ("hooks", "hooks", model(Hooks), None),
        ("annotations", "annotations", mapping(string), dict),
        ("linux", "linux", model(Linux), None),
    )
    oci_version: str
    process: Process | None
    root: Root | None
    hostname: str | None
    domainname: str | None
    mounts: list[Mount]
    hooks: Hooks | None
    annotations: dict[str, str]
    linux: Linux | None
    raw: dict[str, Any]  # the document as decoded (kept for state.json: no re-encoding)

    @classmethod
    def decode(cls, value: Any, path: str = "$") -> Spec:
        spec = super().decode(value, path)
        object.__setattr__(spec, "raw", value)
        if spec.landlock() is not None and spec.process is not None \
                and not spec.process.no_new_privileges:
            raise fail(f"{path}.process.landlock", "Landlock needs "
                       "process.noNewPrivileges: true")
        return spec

    def landlock(self) -> Any:
        """The Landlock extension (contain.spec.landlock), or None: decoded on each
        call, only when the config has one."""
        proc = self.raw.get("process")
        if not (isinstance(proc, dict) and "landlock" in proc) \
                and "run.contain.landlock" not in self.annotations:
            return None
        from contain.spec.landlock import from_spec

        return from_spec(self)

    def validate(self, path: str) -> None:
        if self.root is None:
            raise fail(f"{path}.root", "required field is missing")
        linux = self.linux
        if self.hostname and (linux is None or not _new_ns(linux, "uts")):
            raise fail(f"{path}.hostname", "setting the hostname needs a new uts namespace")
        if self.domainname and (linux is None or not _new_ns(linux, "uts")):
            raise fail(f"{path}.domainname", "setting the domainname needs a new uts namespace")
        for name, value in (("hostname", self.hostname), ("domainname", self.domainname)):
            if value is not None and len(value.encode()) > 64:
                raise fail(f"{path}.{name}", f"{show(value)} is longer than the kernel's "
                           "64 bytes")


def _new_ns(linux: Linux, kind: str) -> bool:
    return linux.namespace(kind) is not None


def load_spec(data: bytes | str, document: str = "config.json") -> Spec:
    """Parse and decode a config.json; every failure is a SpecError naming the field."""
    from contain.errors import SpecError
    from contain.jsonio import loads

    try:
        raw = loads(data)
    except ValueError as exc:
        raise SpecError("$", f"malformed JSON: {exc}", document) from exc
    except UnicodeDecodeError as exc:
        raise SpecError("$", f"not UTF-8: {exc.reason}", document) from exc
    try:
        return Spec.decode(raw)
    except SpecError as exc:
        exc.document = document
        exc.args = (f"{document}: {exc.path}: {exc.message}",)
        raise
