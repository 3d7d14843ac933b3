"""The container's init: the forked child that becomes the container's first process.

Stages, in the child of ``contain create``:

1. non-dumpable at once (nothing in the container may open /proc/<pid>/exe, fd, cwd
   of a runtime process); join the container's cgroup; join namespaces given by path;
2. a new user namespace, whose id maps the parent writes while the child waits;
3. unshare the other new namespaces; a new PID (or time) namespace needs one more
   fork so that the container's first process is PID 1 (and in the namespace);
4. the rootfs in the new mount namespace (mounts, /dev), the parent's hooks, the
   createContainer hooks, pivot_root, masked and read-only paths;
5. hostname, sysctls, console, cwd, rlimits, scheduler, keyring, user, capabilities,
   no_new_privs, seccomp; the executable is looked up now so a missing one fails create;
6. "ready" to the parent, which writes state.json and answers; then block on exec.fifo
   until ``start``; startContainer hooks; execve.

Any failure is sent to the parent as one line and the child exits.
"""

from __future__ import annotations

import os
import sys

from contain.errors import ContainError
from contain.linux import consts as c
from contain.linux.syscalls import prctl, setns, unshare
from contain.passwd import home_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from contain.process.sync import Channel
    from contain.spec.config import Process, Spec


class InitConfig:
    """What the parent decided and the child needs (shared through fork)."""

    __slots__ = ("spec", "cid", "bundle", "rootfs", "new_flags", "join", "new_userns",
                 "fifo_fd", "console_fd", "preserve_fds", "no_pivot",
                 "no_new_keyring", "seccomp", "parent_hooks", "container_hooks",
                 "start_hooks", "env_extra", "stdio", "cgroup_sync", "close_in_child",
                 "idmap_userns")

    def __init__(self, spec: Spec, cid: str, bundle: str, rootfs: str) -> None:
        self.spec = spec
        self.cid = cid
        self.bundle = bundle
        self.rootfs = rootfs
        self.new_flags = 0
        self.join: list[tuple[int, str]] = []  # (clone flag, path)
        self.new_userns = False
        self.fifo_fd = -1
        self.console_fd = -1
        self.preserve_fds = 0
        self.no_pivot = False
        self.no_new_keyring = False
        self.seccomp: Any = None
        self.parent_hooks = False
        self.container_hooks = False
        self.start_hooks = False
        self.env_extra: list[str] = []
        self.stdio: tuple[int, int, int] | None = None
        self.cgroup_sync = False  # the parent joins us to the cgroup and says "cgroup"
        self.close_in_child = -1  # the parent's lock on the container directory
        self.idmap_userns: dict[int, int] = {}  # mount index -> user namespace fd

    def _pid_ns(self) -> bool:
        joins = any(flag == c.CLONE_NEWPID for flag, _ in self.join)
        return joins or bool(self.new_flags & c.CLONE_NEWPID)

    def pid_from_parent(self) -> bool:
        """Whether the parent puts the child straight into its PID namespace (no user or
        time namespace in the way: see lifecycle._fork_into_pid_namespace)."""
        user = self.new_userns or any(flag == c.CLONE_NEWUSER for flag, _ in self.join)
        return self._pid_ns() and not user and not self.new_flags & c.CLONE_NEWTIME

    def forks(self) -> bool:
        """Whether the first child forks again (a PID namespace it has to make or join
        itself, or a new time namespace)."""
        if self.pid_from_parent():
            return False
        return self._pid_ns() or bool(self.new_flags & c.CLONE_NEWTIME)


def preload(cfg: InitConfig) -> None:
    """Import, before fork, every module the init uses: after pivot_root the host's
    Python library is out of reach, so a lazy import there would fail."""
    import contain.rootfs.setup  # noqa: F401

    proc = cfg.spec.process
    preload_modules(terminal=proc is not None and proc.terminal,
                    hooks=cfg.parent_hooks or cfg.container_hooks or cfg.start_hooks,
                    seccomp=cfg.seccomp is not None,
                    lsm=proc is not None and bool(proc.apparmor_profile or proc.selinux_label))
    if cfg.spec.landlock() is not None:  # (applied just before exec)
        from contain.security import landlock  # noqa: F401


def preload_modules(terminal: bool, hooks: bool, seccomp: bool, lsm: bool = False) -> None:
    """The modules a process entering a container needs after it has left the host's
    mount namespace (init and exec)."""
    import fcntl  # noqa: F401
    import resource  # noqa: F401
    import select  # noqa: F401
    import time  # noqa: F401

    import contain.linux.syscalls
    import contain.security.capabilities

    if terminal:
        import struct  # noqa: F401  (console.set_winsize, after pivot_root)
        import termios  # noqa: F401

        import contain.process.console
    if hooks:
        import contain.process.hooks
    if seccomp:
        import contain.security.seccomp
    if lsm:
        import contain.security.lsm  # noqa: F401


# signals `run` and `exec` forward to the container's process (HUP INT QUIT USR1 USR2 TERM)
FORWARDED = (1, 2, 3, 10, 12, 15)
SIGWINCH = 28


def reset_signals() -> None:
    """In a forked child: the runtime's forwarding handlers must not outlive the fork (a
    signal during the child's setup takes its default action, as in a new process)."""
    import _signal

    for sig in (*FORWARDED, SIGWINCH):
        _signal.signal(sig, _signal.SIG_DFL)


def child_main(ch: Channel, cfg: InitConfig) -> NoReturn:
    """Entry point of the forked child; never returns."""
    code = 1
    try:
        reset_signals()
        _stage_namespaces(ch, cfg)
        code = 0
    except BaseException as exc:  # report every failure to the parent, then exit
        report_failure(ch, exc)
    os._exit(code)


def report_failure(ch: Channel, exc: BaseException) -> None:
    """Send a failure of the child to the parent as one line."""
    if isinstance(exc, ContainError):
        msg = str(exc)
    elif isinstance(exc, OSError):
        # our syscall wrappers put "name detail: strerror" in args[1]
        msg = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
    else:
        msg = f"{type(exc).__name__}: {exc}"
    from contain import log

    if log.debug_enabled():  # --debug: the child's traceback too, on its stderr
        try:
            import traceback

            traceback.print_exc()
        except ImportError:  # after pivot_root the module may be out of reach
            pass
    try:
        ch.send({"t": "error", "msg": msg})
    except OSError:
        pass


def _stage_namespaces(ch: Channel, cfg: InitConfig) -> None:
    prctl(c.PR_SET_DUMPABLE, 0)
    if cfg.close_in_child >= 0:
        os.close(cfg.close_in_child)
    if cfg.stdio is not None:
        for target, fd in enumerate(cfg.stdio):
            if fd != target:
                os.dup2(fd, target)
    proc = cfg.spec.process
    assert proc is not None
    if proc.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(proc.oom_score_adj))
    # Join namespaces given by path: a user namespace first (the others may belong to it).
    fds = []
    for flag, path in cfg.join:
        if flag == c.CLONE_NEWPID and cfg.pid_from_parent():
            continue  # the parent forked us into it
        try:
            fds.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        except OSError as exc:
            raise ContainError(f"namespace {path}: {exc.strerror}") from None
    fds.sort(key=lambda item: item[0] != c.CLONE_NEWUSER)
    for flag, fd in fds:
        try:
            setns(fd, flag)
        except OSError as exc:
            raise ContainError(f"setns {os.readlink(f'/proc/self/fd/{fd}')}: "
                               f"{exc.strerror}") from None
        os.close(fd)
    if cfg.new_userns:
        # an unprivileged parent can only open our /proc/<pid>/uid_map (root-owned while
        # we are not dumpable) if we are dumpable: briefly, as runc's nsexec does
        rootless = os.geteuid() != 0  # (before unshare: then we are the overflow uid)
        unshare(c.CLONE_NEWUSER)
        if rootless:
            prctl(c.PR_SET_DUMPABLE, 1)
        ch.send({"t": "userns"})
        ch.expect("ok")
        if rootless:
            prctl(c.PR_SET_DUMPABLE, 0)
    if cfg.new_userns or any(flag == c.CLONE_NEWUSER for flag, _ in cfg.join):
        _become_root_in_userns()
    # the cgroup namespace waits until the parent has moved us into the cgroup
    flags = cfg.new_flags & ~(c.CLONE_NEWUSER | c.CLONE_NEWCGROUP)
    if cfg.pid_from_parent():
        flags &= ~c.CLONE_NEWPID  # we are its PID 1 already
    if flags:
        unshare(flags)
    linux = cfg.spec.linux
    if linux is not None and linux.time_offsets:
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, off in linux.time_offsets.items():
                f.write(f"{clock} {off.secs} {off.nanosecs}\n")
    if cfg.forks():
        pid = os.fork()
        if pid:
            ch.send({"t": "pid", "pid": pid})
            os._exit(0)
    _stage_init(ch, cfg)


def _become_root_in_userns() -> None:
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError:
        pass  # root is not mapped: stay the overflow id, with full capabilities


def _stage_init(ch: Channel, cfg: InitConfig) -> None:
    spec = cfg.spec
    proc = spec.process
    linux = spec.linux
    assert proc is not None and linux is not None
    os.setsid()
    state: dict[str, Any] | None = None
    from contain.rootfs import setup

    in_cgroup = _CgroupGate(ch, cfg)
    setup.prepare(spec, cfg.rootfs, cfg.bundle, userns=_in_userns(cfg),
                  cgroupns=bool(cfg.new_flags & c.CLONE_NEWCGROUP), before_cgroup=in_cgroup,
                  idmap_userns=cfg.idmap_userns)
    in_cgroup()
    _make_cwd(cfg.rootfs, proc.cwd)
    if cfg.parent_hooks or cfg.container_hooks or cfg.start_hooks:
        ch.send({"t": "hooks"})
        msg, _ = ch.expect("ok")
        state = msg["state"]
    if cfg.container_hooks and spec.hooks is not None:
        from contain.process.hooks import run_hooks

        run_hooks("createContainer", spec.hooks.create_container, state or {})
    setup.enter_root(cfg.rootfs, cfg.no_pivot)
    if spec.hostname:
        from contain.linux.syscalls import sethostname

        sethostname(spec.hostname)
    if spec.domainname:
        from contain.linux.syscalls import setdomainname

        setdomainname(spec.domainname)
    # sysctls before the read-only paths: /proc/sys is one of them
    for key, value in linux.sysctl.items():
        _write_sysctl(key, value)
    setup.finish(spec)
    if proc.terminal:
        from contain.process.console import setup_console

        setup_console(cfg.console_fd, proc)
    if not cfg.no_new_keyring:
        _join_keyring(cfg.cid)
    warnings: list[str] = []
    env = prepare_process(proc, cfg.seccomp, cfg.preserve_fds, extra_env=cfg.env_extra,
                          personality=linux.personality, warnings=warnings)
    path = lookup_executable(proc.args[0], env)
    # Landlock (process.landlock): the ruleset is made now, before a notify filter
    # (send_ready) could hand its opens to a supervisor; it is enforced last, below
    landlock = spec.landlock()
    ruleset = -1
    if landlock is not None:
        from contain.security.landlock import prepare

        ruleset = prepare(landlock)[0]
    send_ready(ch, cfg.seccomp, warnings)
    msg, _ = ch.expect("committed")
    ch.close()
    if not msg.get("start"):
        _wait_for_start(cfg.fifo_fd)
    if cfg.start_hooks and spec.hooks is not None:
        from contain.process.hooks import run_hooks

        run_hooks("startContainer", spec.hooks.start_container, state or {})
    if ruleset >= 0:  # Landlock: as late as possible, but before the seccomp filter
        from contain.security.landlock import restrict_before_exec

        restrict_before_exec(ruleset)
    exec_process(path, proc, env, cfg.seccomp)


class _CgroupGate:
    """Wait (once) until the parent has put us in the container's cgroup, then enter a
    new cgroup namespace rooted there. Called before the first cgroup mount, or after
    all mounts."""

    def __init__(self, ch: Channel, cfg: InitConfig) -> None:
        self.ch = ch
        self.cfg = cfg
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        if self.cfg.cgroup_sync:
            self.ch.expect("cgroup")
        if self.cfg.new_flags & c.CLONE_NEWCGROUP:
            unshare(c.CLONE_NEWCGROUP)


def _in_userns(cfg: InitConfig) -> bool:
    return cfg.new_userns or any(flag == c.CLONE_NEWUSER for flag, _ in cfg.join)


def _make_cwd(rootfs: str, cwd: str) -> None:
    from contain.rootfs.paths import resolve_in_root

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(resolve_in_root(root_fd, cwd, "dir"))
    except OSError as exc:
        raise ContainError(f"process.cwd {cwd}: {exc.strerror or exc}") from None
    finally:
        os.close(root_fd)


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainError(f"linux.sysctl.{key}: {exc.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise ContainError(f"linux.sysctl.{key}={value}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _join_keyring(cid: str) -> None:
    from contain.linux.syscalls import keyctl_join_session_keyring

    try:
        keyctl_join_session_keyring(f"_ses.{cid}")
    except OSError as exc:
        # keyrings may be unavailable (ENOSYS) or limited (EDQUOT) here: runc ignores it too
        if exc.errno not in (38, 122, 1):
            raise


# -- shared by init and exec -----------------------------------------------------------------

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
_SCHED = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
          "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}


def prepare_process(proc: Process, seccomp: Any, preserve_fds: int,
                    extra_env: list[str] | tuple[str, ...] = (),
                    personality: Any = None, warnings: list[str] | None = None) -> list[str]:
    """Apply the process fields (cwd, rlimits, scheduling, user, capabilities,
    no_new_privs) in the order that keeps them; return the environment to exec with."""
    try:
        os.chdir(proc.cwd)
    except OSError as exc:
        raise ContainError(f"process.cwd {proc.cwd}: {exc.strerror}") from None
    try:
        os.getcwd()
    except OSError:
        raise ContainError(f"process.cwd {proc.cwd}: outside the container's root") from None
    if proc.rlimits:
        _set_rlimits(proc)
    if proc.scheduler is not None:
        _set_scheduler(proc)
    if proc.io_priority is not None:
        from contain.linux.syscalls import ioprio_set

        cls = c.IOPRIO_CLASSES[proc.io_priority.io_class]
        ioprio_set(c.IOPRIO_WHO_PROCESS, 0, (cls << 13) | proc.io_priority.priority)
    if personality is not None:
        from contain.linux.syscalls import personality as set_personality

        set_personality(c.PERSONALITY_DOMAINS[personality.domain])
    if proc.exec_cpu_affinity is not None and proc.exec_cpu_affinity.initial:
        os.sched_setaffinity(0, parse_cpulist(proc.exec_cpu_affinity.initial))
    if proc.apparmor_profile or proc.selinux_label:
        from contain.security.lsm import apply_on_exec

        apply_on_exec(proc)
    problems = _set_identity(proc, seccomp)
    if warnings is not None:
        warnings.extend(problems)
    if proc.user.umask is not None:
        os.umask(proc.user.umask)
    else:
        os.umask(0o022)
    if proc.no_new_privileges:
        prctl(c.PR_SET_NO_NEW_PRIVS, 1)
    _mark_fds(preserve_fds)
    env = list(proc.env)
    env.extend(extra_env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home_of(proc.user.uid)}")
    return env


def _set_rlimits(proc: Process) -> None:
    import resource

    for rl in proc.rlimits:
        num = RLIMITS.get(rl.type)
        if num is None:
            raise ContainError(f"process.rlimits: unknown rlimit {rl.type}")
        try:
            resource.setrlimit(num, (_rlim(rl.soft), _rlim(rl.hard)))
        except (OSError, ValueError) as exc:
            raise ContainError(f"process.rlimits {rl.type} soft={rl.soft} hard={rl.hard}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None


def _rlim(v: int) -> int:
    return -1 if v >= 2**64 - 1 else v


def parse_cpulist(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _set_scheduler(proc: Process) -> None:
    sch = proc.scheduler
    assert sch is not None
    policy = _SCHED[sch.policy]
    if sch.nice:
        os.setpriority(os.PRIO_PROCESS, 0, sch.nice)
    if policy == 6:
        raise ContainError("process.scheduler.policy: SCHED_DEADLINE is not supported")
    try:
        os.sched_setscheduler(0, policy, os.sched_param(sch.priority))
    except OSError as exc:
        raise ContainError(f"process.scheduler: {sch.policy}: {exc.strerror}") from None


def _set_identity(proc: Process, seccomp: Any) -> list[str]:
    """Bounding set, user and groups, then the capability sets (KEEPCAPS across setuid);
    a seccomp filter that needs CAP_SYS_ADMIN (no no_new_privs) is loaded before the drop."""
    from contain.security import capabilities as caps_mod

    user = proc.user

    def set_user() -> None:
        try:
            if _setgroups_allowed():
                os.setgroups(user.additional_gids)
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
        except OSError as exc:
            raise ContainError(f"process.user uid={user.uid} gid={user.gid}: "
                               f"{exc.strerror}") from None

    if seccomp is not None and not proc.no_new_privileges and not seccomp.notify:
        from contain.security.seccomp import load_filter

        load_filter(seccomp)
    return caps_mod.apply_process_identity(proc.capabilities, set_user)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _mark_fds(preserve_fds: int) -> None:
    """Nothing the runtime opened may reach the container: every fd from 3 + the
    preserved ones on is close-on-exec; the preserved ones are inheritable."""
    from contain.linux.syscalls import close_range

    for fd in range(3, 3 + preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    close_range(3 + preserve_fds, 0xFFFFFFFF, c.CLOSE_RANGE_CLOEXEC)


def lookup_executable(name: str, env: list[str]) -> str:
    """Find args[0] as execve would through $PATH; a missing program fails here, at
    create time, with the message runc gives."""
    if "/" in name:
        if os.access(name, os.X_OK) and not os.path.isdir(name):
            return name
        raise ContainError(f'exec: "{name}": stat {name}: no such file or directory'
                           if not os.path.exists(name) else
                           f'exec: "{name}": permission denied')
    path_var = next((e[5:] for e in env if e.startswith("PATH=")), None)
    if path_var is None:
        path_var = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for d in path_var.split(":"):
        cand = os.path.join(d or ".", name)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    raise ContainError(f'exec: "{name}": executable file not found in $PATH')


def send_ready(ch: Channel, seccomp: Any, warnings: list[str]) -> None:
    """Tell the parent we are ready. A notify filter is loaded first, so its listener
    can reach the agent: we write() its number and the parent copies the fd with
    pidfd_getfd (a sendmsg could be one of the calls the filter hands to the agent,
    which does not have the listener yet). Other filters wait until just before execve."""
    msg: dict[str, Any] = {"t": "ready"}
    if warnings:
        msg["warnings"] = warnings
    if seccomp is not None and seccomp.notify:
        from contain.security.seccomp import load_filter

        msg["listener_fd"] = load_filter(seccomp)
        from contain.jsonio import dumps

        os.write(ch.fileno(), dumps(msg).encode())
        return
    ch.send(msg)


def _wait_for_start(fifo_fd: int) -> None:
    """Block until `start` opens exec.fifo for reading; then tell it we are going."""
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)


def exec_process(path: str, proc: Process, env: list[str], seccomp: Any) -> NoReturn:
    if seccomp is not None and proc.no_new_privileges and not seccomp.notify:
        from contain.security.seccomp import load_filter

        load_filter(seccomp)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(path, proc.args, dict(e.split("=", 1) for e in env if "=" in e))
    except OSError as exc:
        os.write(2, f"contain: exec {proc.args[0]}: {exc.strerror}\n".encode())
        os._exit(127)
