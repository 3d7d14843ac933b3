"""The default seccomp profile ``contain spec --seccomp`` writes into config.json.

Written for contain from the Linux syscall table, grouped by what the calls do. Its scope
is the one container engines ship: an allow-list with EPERM for everything else; calls
that only a capability makes useful are allowed only when the container keeps that
capability; clone may not create namespaces without CAP_SYS_ADMIN (and clone3, whose
flags live in memory a filter cannot read, gets ENOSYS so libc falls back to clone);
personality is limited to the harmless personas; AF_VSOCK sockets are refused.

What is left out on purpose: the module, kexec, swap, mount and reboot families, keyrings
(keyctl/add_key/request_key: not namespaced), io_uring (a large attack surface that
bypasses the filter for the operations it queues), userfaultfd, bpf and perf_event_open
without their capabilities, the name_to_handle_at/open_by_handle_at pair (a classic
breakout), the obsolete calls (uselib, ustat, sysfs, _sysctl, nfsservctl, vm86 ...).

Names that the running kernel or libseccomp does not know are harmless here: the
compiler skips them as runc does.
"""

from __future__ import annotations

import errno

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# -- the allow-list, by area ------------------------------------------------------------

_FILE_IO = """
read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2
open openat openat2 creat close close_range lseek _llseek dup dup2 dup3 fcntl fcntl64 flock
fsync fdatasync syncfs sync sync_file_range truncate truncate64 ftruncate ftruncate64
fallocate fadvise64 fadvise64_64 readahead sendfile sendfile64 splice tee vmsplice
copy_file_range ioctl pipe pipe2 memfd_create memfd_secret cachestat
select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait
epoll_pwait2 eventfd eventfd2 signalfd signalfd4
timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime timerfd_gettime64
inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
io_setup io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_submit io_cancel
"""

_FILE_META = """
stat stat64 fstat fstat64 lstat lstat64 newfstatat fstatat64 statx statfs statfs64
fstatfs fstatfs64 access faccessat faccessat2 getcwd chdir fchdir
mkdir mkdirat mknod mknodat rmdir rename renameat renameat2 link linkat symlink symlinkat
unlink unlinkat readlink readlinkat chmod fchmod fchmodat fchmodat2
chown chown32 fchown fchown32 lchown lchown32 fchownat umask
utime utimes utimensat utimensat_time64 futimesat getdents getdents64 readdir
setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr
removexattr lremovexattr fremovexattr
"""

_MEMORY = """
brk mmap mmap2 munmap mremap mprotect pkey_mprotect pkey_alloc pkey_free madvise mincore
msync mlock mlock2 munlock mlockall munlockall membarrier remap_file_pages
map_shadow_stack mseal shmget shmat shmdt shmctl
"""

_PROCESS = """
fork vfork execve execveat exit exit_group wait4 waitid waitpid
kill tkill tgkill getpid getppid gettid getpgid getpgrp setpgid getsid setsid
uname getrusage times prctl getpriority setpriority nice
sched_yield sched_getaffinity sched_setaffinity sched_getparam sched_setparam
sched_getscheduler sched_setscheduler sched_get_priority_max sched_get_priority_min
sched_rr_get_interval sched_rr_get_interval_time64 sched_getattr sched_setattr
ioprio_get ioprio_set getrlimit ugetrlimit setrlimit prlimit64 getcpu
set_tid_address set_robust_list get_robust_list rseq restart_syscall seccomp capget capset
pidfd_open pidfd_send_signal process_mrelease sysinfo getrandom
landlock_create_ruleset landlock_add_rule landlock_restrict_self
"""

# ptrace and cross-process memory access: safe since Linux 4.8 (seccomp is re-checked
# after a tracer changes the syscall), as engines decided too
_TRACE = "ptrace process_vm_readv process_vm_writev"

_IDENTITY = """
getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32
getresuid getresuid32 getresgid getresgid32 getgroups getgroups32
setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32
setresuid setresuid32 setresgid setresgid32 setfsuid setfsuid32 setfsgid setfsgid32
setgroups setgroups32
"""

_SIGNALS = """
rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait
rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo rt_sigsuspend
sigaction sigprocmask sigreturn sigpending sigsuspend sigaltstack signal pause alarm
"""

_TIME = """
nanosleep clock_nanosleep clock_nanosleep_time64 clock_gettime clock_gettime64
clock_getres clock_getres_time64 clock_adjtime clock_adjtime64 adjtimex gettimeofday time
getitimer setitimer timer_create timer_settime timer_settime64 timer_gettime
timer_gettime64 timer_getoverrun timer_delete
futex futex_time64 futex_waitv futex_wake futex_wait futex_requeue
"""

_IPC = """
semget semop semtimedop semtimedop_time64 semctl msgget msgsnd msgrcv msgctl ipc
mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive mq_timedreceive_time64
mq_notify mq_getsetattr
"""

_NETWORK = """
socketpair bind listen accept accept4 connect getsockname getpeername setsockopt
getsockopt sendto recvfrom sendmsg recvmsg sendmmsg recvmmsg recvmmsg_time64 send recv
shutdown socketcall
"""

# architecture-specific calls, by `uname -m`
_ARCH_CALLS = {
    "x86_64": "arch_prctl modify_ldt",
    "i686": "modify_ldt",
    "aarch64": "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush "
               "set_tls",
    "armv7l": "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush "
              "set_tls",
    "ppc64le": "sync_file_range2 swapcontext",
    "s390x": "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
    "riscv64": "riscv_flush_icache",
}

# the architectures a filter for a machine covers (its compat ABIs too)
_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "i686": ["SCMP_ARCH_X86"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "armv7l": ["SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
    "loongarch64": ["SCMP_ARCH_LOONGARCH64"],
    "mips64": ["SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS"],
    "mips64el": ["SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL"],
}

# calls a capability makes meaningful: allowed when the container keeps that capability
_BY_CAPABILITY = {
    "CAP_SYS_ADMIN": """
        bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
        mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd
        setdomainname sethostname setns syslog umount umount2 unshare
    """,
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "init_module finit_module delete_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise " + _TRACE,
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
}

# personality(2) values a process may ask for: Linux, Linux32 (i386 compat), UNAME26,
# both, and 0xffffffff (a query that changes nothing)
_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# clone(2) flags that create namespaces
_CLONE_NS_FLAGS = (0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                   | 0x40000000 | 0x02000000)  # NEWNS UTS IPC USER PID NET CGROUP

_AF_VSOCK = 40
_ENOSYS = errno.ENOSYS
_EPERM = 1


def _names(*groups: str) -> list[str]:
    seen: dict[str, None] = {}
    for g in groups:
        for n in g.split():
            seen.setdefault(n, None)
    return list(seen)


def default_profile(capabilities: Iterable[str] | None = None,
                    machine: str | None = None) -> dict[str, Any]:
    """An OCI ``linux.seccomp`` object (a dict ready for config.json).

    *capabilities* is the container's bounding set (CAP_* names): calls gated by a
    capability the container does not have stay denied. *machine* is a ``uname -m``
    value (the running machine by default); it picks the architectures and the
    architecture-specific calls.
    """
    import os

    caps = set(capabilities or ())
    machine = machine or os.uname().machine
    allowed = _names(_FILE_IO, _FILE_META, _MEMORY, _PROCESS, _TRACE, _IDENTITY, _SIGNALS,
                     _TIME, _IPC, _NETWORK, _ARCH_CALLS.get(machine, ""))
    syscalls: list[dict[str, Any]] = [
        {"names": allowed, "action": "SCMP_ACT_ALLOW"},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}]},
    ]
    for persona in _PERSONAS:
        syscalls.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]})
    gated = [n for cap in sorted(caps) if cap in _BY_CAPABILITY
             for n in _BY_CAPABILITY[cap].split()]
    gated = [n for n in _names(" ".join(gated)) if n not in allowed]
    if gated:
        syscalls.append({"names": gated, "action": "SCMP_ACT_ALLOW"})
    if "CAP_SYS_ADMIN" not in caps:
        # s390 swaps clone's first two arguments
        flags_arg = 1 if machine.startswith("s390") else 0
        syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": flags_arg, "value": _CLONE_NS_FLAGS, "valueTwo": 0,
                                   "op": "SCMP_CMP_MASKED_EQ"}]})
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                         "errnoRet": _ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": _EPERM,
        "architectures": list(_ARCHES.get(machine, [])),
        "syscalls": syscalls,
    }


DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE",
)


def default_profile_for_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The default profile for a config.json dict, gated on its bounding set."""
    caps = (spec.get("process") or {}).get("capabilities")
    if caps is None or caps.get("bounding") is None:
        return default_profile(DEFAULT_CAPABILITIES)
    return default_profile(caps["bounding"])
