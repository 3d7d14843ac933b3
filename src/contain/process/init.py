"""The child of a spawn: the stages that become the container's init (create) or a
process joining a running container (exec), up to execve.

The parent's side and the plan are in process/spawn.py; the messages, and the order in
which they go, in process/sync.py. Stages:

1. (both) non-dumpable at once (nothing in the container may open /proc/<pid>/exe, fd,
   cwd of a runtime process); stdio; join the namespaces given by path (exec: all of
   the container's);
2. (create) a new user namespace, whose id maps the parent writes while we wait;
   unshare the other new namespaces. A new or joined PID (or time) namespace needs
   one more fork so that the process is in it (the init is PID 1);
3. (create) the rootfs in the new mount namespace (mounts, /dev; the cgroup step, then
   the cgroup namespace), the parent's hooks, the createContainer hooks, pivot_root,
   masked and read-only paths, hostname, sysctls, console, keyring;
   (exec) the cgroup step, the console;
4. (both) cwd, rlimits, scheduler, user, capabilities, no_new_privs, fds marked; the
   executable is looked up now so a missing one fails create;
5. READY to the parent, which records us and says GO; (create) block on exec.fifo
   until ``start`` (unless GO says start), startContainer hooks; seccomp; execve.

Any failure is sent to the parent as a structured ERROR and the child exits.
"""

from __future__ import annotations

import errno
import os
import sys

from contain.errors import ContainError
from contain.linux import consts as c
from contain.linux.syscalls import prctl, setns, unshare
from contain.passwd import home_of
from contain.process import sync
from contain.process.spawn import CREATE
from contain.spec.decode import SHOW_MAX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from contain.process.spawn import Handles, Plan
    from contain.process.sync import Channel
    from contain.security.seccomp import SeccompProgram
    from contain.spec.config import MemoryPolicy, Personality, Process, Spec


def preload(plan: Plan) -> None:
    """Import, before fork, every module the child uses: after pivot_root (or setns
    into the container's mount namespace) the host's Python library is out of reach,
    so a lazy import there would fail. Only what this plan needs: each module costs
    the hot path its import."""
    if plan.mode == CREATE:
        import contain.rootfs.setup

        if wants_init(plan.spec):  # a small init as PID 1: reaper.py
            from contain.process.reaper import arm as arm_reaper

            arm_reaper()
    if plan.spec.landlock() is not None:  # (enforced just before execve)
        from contain.security import landlock  # noqa: F401
    import contain.linux.syscalls
    import contain.log  # (report_failure: a failure after pivot_root is told with it)
    import contain.security.capabilities
    from contain.linux.exeguard import arm

    arm()  # the sealed exec helper, made before fork: the child only inherits it

    proc = plan.process
    if proc.rlimits:
        import resource  # noqa: F401
    if proc.scheduler is not None:
        import struct  # (sched_setattr's struct, after pivot_root)
    if proc.terminal:
        import fcntl  # noqa: F401
        import struct  # noqa: F401  (console.set_winsize, after pivot_root)
        import termios  # noqa: F401

        import contain.process.console
    if plan.hooks:
        import select  # noqa: F401
        import time  # noqa: F401

        import contain.process.hooks
    if plan.seccomp is not None:
        import contain.security.seccomp
    if plan.net_devices:
        import contain.linux.netlink
    if proc.apparmor_profile or proc.selinux_label:
        import contain.security.lsm  # noqa: F401


INIT_ANNOTATION = "run.contain.init"


def wants_init(spec: Spec) -> bool:
    """Whether the container's first process is contain's small init (reaper.py), which
    forwards signals to the command, reaps, and exits with its status."""
    return spec.annotations.get(INIT_ANNOTATION) == "true"


# signals `run` and `exec` forward to the container's process (HUP INT QUIT USR1 USR2 TERM)
FORWARDED = (1, 2, 3, 10, 12, 15)
SIGWINCH = 28


def reset_signals() -> None:
    """In a forked child: the runtime's forwarding handlers must not outlive the fork (a
    signal during the child's setup takes its default action, as in a new process)."""
    import _signal

    for sig in (*FORWARDED, SIGWINCH):
        _signal.signal(sig, _signal.SIG_DFL)


def child_main(ch: Channel, plan: Plan, fds: Handles) -> NoReturn:
    """Entry point of the forked child; never returns."""
    try:
        reset_signals()
        _stage_enter(ch, plan, fds)
        if plan.mode == CREATE:
            _stage_init(ch, plan, fds)
        else:
            _stage_exec(ch, plan, fds)
    except BaseException as exc:  # report every failure to the parent, then exit
        report_failure(ch, exc)
    finally:
        os._exit(1)  # never back into the runtime's code, whatever happened


def report_failure(ch: Channel, exc: BaseException) -> None:
    """Send a failure of the child to the parent (sync.ERROR; the parent formats it)."""
    from contain import log

    if log.debug_enabled():  # --debug: the child's traceback too, on its stderr
        try:
            import traceback

            traceback.print_exc()
        except ImportError:  # after pivot_root the module may be out of reach
            pass
    try:
        ch.send(sync.ERROR, **sync.error_fields(exc))
    except Exception:  # the parent is gone, or the error cannot be encoded
        pass


def _stage_enter(ch: Channel, plan: Plan, fds: Handles) -> None:
    """Stage 1 (and 2): into the namespaces; returns in the process to set up (after
    the fork into a PID or time namespace, in the grandchild)."""
    prctl(c.PR_SET_DUMPABLE, 0)
    if fds.lock >= 0:
        os.close(fds.lock)  # the parent's lock on the container directory
        fds.lock = -1
    if plan.stdio is not None:
        for target, fd in enumerate(plan.stdio):
            if fd != target:
                os.dup2(fd, target)
    proc = plan.process
    if plan.mode == CREATE and proc.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(proc.oom_score_adj))
    _join_namespaces(plan, fds)
    if plan.new_userns:
        # an unprivileged parent can only open our /proc/<pid>/uid_map (root-owned while
        # we are not dumpable) if we are dumpable: briefly, as runc's nsexec does
        rootless = os.geteuid() != 0  # (before unshare: then we are the overflow uid)
        unshare(c.CLONE_NEWUSER)
        if rootless:
            prctl(c.PR_SET_DUMPABLE, 1)
        ch.send(sync.USERNS)
        ch.expect(sync.USERNS_DONE)
        if rootless:
            prctl(c.PR_SET_DUMPABLE, 0)
    if plan.mode == CREATE:
        if plan.in_userns:
            _become_root_in_userns()
        # the cgroup namespace waits until the parent has moved us into the cgroup
        flags = plan.new_flags & ~(c.CLONE_NEWUSER | c.CLONE_NEWCGROUP)
        if plan.pid_from_parent:
            flags &= ~c.CLONE_NEWPID  # we are its PID 1 already
        if flags:
            unshare(flags)
        linux = plan.spec.linux
        if linux is not None and linux.time_offsets:
            with open("/proc/self/timens_offsets", "w") as f:
                for clock, off in linux.time_offsets.items():
                    f.write(f"{clock} {off.secs} {off.nanosecs}\n")
    if plan.forks:
        _fork_process(ch)
    if plan.net_devices:  # (in the process: the parent opens our /proc/<pid>/ns/net)
        import _socket

        # the names taken here: a rename onto one would fail only after the move
        before = [name for _, name in _socket.if_nameindex()]
        ch.send(sync.NETDEV, taken=before)
        _configure_net_devices(ch.expect(sync.NETDEV_DONE).get("devices") or [], before)


def _configure_net_devices(devices: list[dict[str, Any]], before: list[str]) -> None:
    """linux.netDevices, inside: the parent moved each device into our network namespace
    (the kernel drops a device's addresses on the way); give back its permanent global
    ones and set it up, as the spec asks. A name with "%d" is the kernel's choice: the
    new link whose name fits the pattern (the one that kept its index, if one did)."""
    import _socket
    import re

    from contain.linux.netlink import Address, Route

    now = {name: index for index, name in _socket.if_nameindex()}
    new = [name for name in now if name not in before]
    claimed: set[str] = set()
    with Route() as route:
        for dev in devices:
            name = dev["name"]
            found: str | None = name if name in now else None
            if "%d" in name:
                pattern = re.compile(re.escape(name).replace("%d", r"\d+") + r"\Z")
                fits = [n for n in new if n not in claimed and pattern.match(n)]
                same = [n for n in fits if now[n] == dev["index"]]
                choice = same or fits
                found = choice[0] if choice else None
            if found is None:
                raise ContainError(f"linux.netDevices.{dev['host']}: {name} is not in the "
                                   "container's network namespace after the move")
            claimed.add(found)
            try:
                for addr in dev.get("addrs") or []:
                    route.add_address(now[found], Address.from_json(addr))
                route.set_up(now[found], True)
            except OSError as exc:
                raise ContainError(f"linux.netDevices.{dev['host']}: setting up {found} in "
                                   f"the container: {exc.strerror}") from exc


def _join_namespaces(plan: Plan, fds: Handles) -> None:
    """setns into the namespaces given by path (create: opened here, a user namespace
    first, as the others may belong to it; exec: opened and ordered by the parent)."""
    if plan.mode == CREATE:
        for flag, path in plan.join:
            if flag == c.CLONE_NEWPID and plan.pid_from_parent:
                continue  # the parent forked us into it
            try:
                fds.ns.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as exc:
                raise ContainError(f"namespace {path}: {exc.strerror}") from exc
        fds.ns.sort(key=lambda item: item[0] != c.CLONE_NEWUSER)
    for flag, fd in fds.ns:
        try:
            setns(fd, flag)
        except OSError as exc:
            raise ContainError(f"setns {os.readlink(f'/proc/self/fd/{fd}')}: "
                               f"{os.strerror(exc.errno or 0)}") from exc
        os.close(fd)
    fds.ns = []


def _fork_process(ch: Channel) -> None:
    """Fork the process into the PID (time) namespace; the stage says its pid and
    exits. The process waits for the stage's exit (EOF on a pipe only the stage holds),
    so PID always reaches the parent before anything the process sends."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        os.close(r)
        try:
            ch.send(sync.PID, pid=pid)
        except BaseException:
            os.kill(pid, 9)
            raise
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)


def _become_root_in_userns() -> None:
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError:
        pass  # root is not mapped: stay the overflow id, with full capabilities


def _stage_init(ch: Channel, plan: Plan, fds: Handles) -> None:
    """Stage 3 of a create: the rootfs and the container's own settings."""
    spec = plan.spec
    proc = plan.process
    linux = spec.linux
    assert linux is not None
    os.setsid()
    state: dict[str, Any] = {}
    if plan.new_flags & c.CLONE_NEWNET:  # a new network namespace's lo is down (runc: up,
        # before the rootfs and the hooks, as here; first, while the parent may still be
        # making the cgroup; the socket modules are imported from the host)
        from contain.linux.syscalls import loopback_up

        loopback_up()
    from contain.rootfs import setup

    in_cgroup = _CgroupStep(ch, plan)
    setup.prepare(spec, plan.rootfs, plan.bundle, userns=plan.in_userns,
                  cgroupns=bool(plan.new_flags & c.CLONE_NEWCGROUP),
                  before_cgroup=in_cgroup, idmap_userns=fds.idmap_userns,
                  ask_host=_HostMounts(ch, in_cgroup) if plan.host_binds else None,
                  host_kinds=plan.host_binds)
    in_cgroup()
    _make_cwd(plan.rootfs, proc.cwd)
    if plan.hooks:
        ch.send(sync.HOOKS)
        state = ch.expect(sync.HOOKS_DONE)["state"]
    if plan.container_hooks and spec.hooks is not None:
        from contain.process.hooks import run_hooks

        run_hooks("createContainer", spec.hooks.create_container, state)
    setup.enter_root(plan.rootfs, plan.no_pivot)
    setup.reopen_dev_null()
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

        setup_console(fds.console, proc)
    if not plan.no_new_keyring:
        _join_keyring(plan.cid)
    _stage_final(ch, plan, fds, state)


def _stage_exec(ch: Channel, plan: Plan, fds: Handles) -> None:
    """Stage 3 of an exec: in the container's cgroup (the parent's CGROUP), a console."""
    ch.expect(sync.CGROUP)
    proc = plan.process
    affinity = proc.exec_cpu_affinity
    if affinity is not None and affinity.final:  # (initial: the parent, before the join)
        from contain.spec.config import parse_cpulist  # (loaded: it decoded the plan)

        try:
            os.sched_setaffinity(0, parse_cpulist(affinity.final))
        except OSError as exc:
            raise ContainError(f"process.execCPUAffinity.final {affinity.final!r}: "
                               f"{exc.strerror}") from exc
    # a session (and process group) of its own inside the container, with or without a
    # terminal, as runc's exec does: getpgrp() must not name a process outside
    os.setsid()
    if proc.terminal:
        from contain.process.console import setup_console

        setup_console(fds.console, proc)
    _stage_final(ch, plan, fds, {})


def _stage_final(ch: Channel, plan: Plan, fds: Handles, state: dict[str, Any]) -> NoReturn:
    """Stages 4 and 5, the same for both: the process's own settings, READY, GO,
    (create) exec.fifo and the startContainer hooks, execve."""
    proc = plan.process
    linux = plan.spec.linux
    warnings: list[str] = []
    env = prepare_process(proc, plan.seccomp, plan.preserve_fds, extra_env=plan.env_extra,
                          personality=linux.personality if linux is not None else None,
                          warnings=warnings,
                          memory_policy=linux.memory_policy if linux is not None else None)
    # a pooled sandbox learns its command at the handover (see _take_over)
    path = lookup_executable(proc.args[0], env) if fds.handover < 0 else ""
    # Landlock (process.landlock): the ruleset is made now, before a notify filter
    # (send_ready) could hand its opens to a supervisor, and enforced last, below; an
    # exec'd process gets it too (it is not the init's descendant). (Before the check
    # below: its fd is held until then.)
    landlock = plan.spec.landlock()
    ruleset = -1
    if landlock is not None:
        from contain.security.landlock import prepare

        ruleset = prepare(landlock)[0]
    if fds.fifo >= 0 or plan.start_hooks:
        _check_can_start(fds.fifo, proc)
    if plan.mode == CREATE and plan.seccomp is not None and plan.seccomp.to_agent and \
            _rootless():
        # an agent of the same user (a syscall supervisor) takes our listener and
        # seizes us: a non-dumpable task whose memory belongs to the host's user
        # namespace refuses both to anyone without CAP_SYS_PTRACE there (execve resets
        # the flag by the new program's credentials). Only an init: nothing of the
        # container runs yet that could attach to it; an exec'd process stays
        # non-dumpable among the container's processes
        prctl(c.PR_SET_DUMPABLE, 1)
    send_ready(ch, plan.seccomp, warnings)
    start = ch.expect(sync.GO)["start"]
    if not start:
        _wait_for_start(fds.fifo)
    if plan.start_hooks and plan.spec.hooks is not None:
        from contain.process.hooks import run_hooks

        run_hooks("startContainer", plan.spec.hooks.start_container, state)
    if ruleset >= 0:  # Landlock: as late as possible, but before the seccomp filter
        from contain.security.landlock import restrict_before_exec

        restrict_before_exec(ruleset, no_new_privs=plan.mode != CREATE)
    init = plan.mode == CREATE and wants_init(plan.spec)
    if fds.handover >= 0:
        # a pooled sandbox: PID 1 forks the command's process now, which waits for its
        # command (the fork is off the caller's path)
        if init:
            from contain.process.reaper import fork_command

            fork_command(proc.terminal)
            init = False
        # it may wait long: nothing another thread of the runtime had open at our fork
        # (another container's lock, another pooled sandbox's socket) stays open here
        from contain.linux.exeguard import helper_fd

        _close_all_but(fds.handover, helper_fd(), *range(3, 3 + plan.preserve_fds))
        path = _take_over(fds.handover, proc, env)
    exec_process(path, proc, env, plan.seccomp, init=init)


def _close_all_but(*keep: int) -> None:
    """Close every fd from 3 on except *keep*."""
    from contain.linux.syscalls import close_range

    low = 3
    for fd in sorted(set(keep)):
        if fd < low:
            continue
        if fd > low:
            close_range(low, fd - 1, 0)
        low = fd + 1
    close_range(low, 0xFFFFFFFF, 0)


def _take_over(sock_fd: int, proc: Process, env: list[str]) -> str:
    """A pooled sandbox (contain.sandbox.pool), ready: wait on the handover socket for
    the command, {"args"} with the fds for its 0, 1, 2 (SCM_RIGHTS); make them ours and
    look the program up, as create does before READY. Nothing comes (the pool closed, or
    its process is gone): exit. A failure goes back over the handover socket (the sync
    channel is closed by now); its path to execve is returned."""
    import _socket

    sock = _socket.socket(fileno=sock_fd)
    try:
        data, anc, _flags, _addr = sock.recvmsg(sync.CHUNK, _socket.CMSG_SPACE(12),
                                                _socket.MSG_CMSG_CLOEXEC)
    except OSError:
        os._exit(0)
    if not data:
        os._exit(0)
    try:
        received = [fd for level, kind, payload in anc if level == 1 and kind == 1
                    for fd in sync.unpack_fds(payload)]
        msg = sync.parse(data)
        args = msg.get("args")
        if len(received) != 3 or msg.get("t") != sync.RUN or not isinstance(args, list):
            raise ContainError("sandbox pool: malformed handover")
        for target, fd in enumerate(received):
            os.dup2(fd, target)  # (inheritable: the command's stdio)
            os.close(fd)
        proc.args = [str(a) for a in args]
        return lookup_executable(proc.args[0], env)
    except BaseException as exc:
        from contain.process.sync import Channel

        try:
            Channel(sock).send(sync.ERROR, **sync.error_fields(exc))
        finally:
            os._exit(1)


class _CgroupStep:
    """The protocol's cgroup step, at its one point in a create: before the first cgroup
    filesystem is mounted, or after all mounts when none is. Waits for the parent's
    CGROUP (we are in the container's cgroup now), then enters a new cgroup namespace
    rooted there, if the spec asks for one."""

    def __init__(self, ch: Channel, plan: Plan) -> None:
        self.ch = ch
        self.plan = plan
        self.done = False
        self.received = False  # CGROUP read already (while waiting for a MOUNT_DONE)

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        if not self.received:
            self.ch.expect(sync.CGROUP)
            self.received = True
        if self.plan.new_flags & c.CLONE_NEWCGROUP:
            unshare(c.CLONE_NEWCGROUP)


class _HostMounts:
    """A bind mount the runtime does for us from the host (MOUNT / MOUNT_DONE): the
    parent's CGROUP may come first, sent before our request; it is noted for the cgroup
    step, which has not been taken yet."""

    def __init__(self, ch: Channel, cgroup_step: _CgroupStep) -> None:
        self.ch = ch
        self.cgroup_step = cgroup_step

    def __call__(self, index: int, fd: int) -> None:
        self.ch.send(sync.MOUNT, index=index, fd=fd)
        while True:
            msg = self.ch.recv()
            if msg["t"] == sync.CGROUP and not self.cgroup_step.received:
                self.cgroup_step.received = True
                continue
            if msg["t"] != sync.MOUNT_DONE:
                raise sync.ProtocolError(f"sync: expected 'mount-done', got {msg['t']!r}")
            if msg.get("error"):
                raise ContainError(str(msg["error"]))
            return


def _make_cwd(rootfs: str, cwd: str) -> None:
    from contain.rootfs.paths import resolve_in_root

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(resolve_in_root(root_fd, cwd, "dir"))
    except OSError as exc:
        raise ContainError(f"process.cwd {cwd}: {exc.strerror or exc}") from exc
    finally:
        os.close(root_fd)


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainError(f"linux.sysctl.{key}: {exc.strerror}") from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise ContainError(f"linux.sysctl.{key}={value}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _join_keyring(cid: str) -> None:
    from contain.linux.syscalls import keyctl_join_session_keyring

    try:
        keyctl_join_session_keyring(f"_ses.{cid}")
    except OSError as exc:
        # keyrings may be unavailable (ENOSYS) or limited (EDQUOT) here: runc ignores it too
        if exc.errno not in (errno.ENOSYS, errno.EDQUOT, errno.EPERM):
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


def prepare_process(proc: Process, seccomp: SeccompProgram | None, preserve_fds: int,
                    extra_env: list[str] | tuple[str, ...] = (),
                    personality: Personality | None = None,
                    warnings: list[str] | None = None,
                    memory_policy: MemoryPolicy | None = None) -> list[str]:
    """Apply the process fields (cwd, rlimits, scheduling, user, capabilities,
    no_new_privs) in the order that keeps them; return the environment to exec with."""
    try:
        os.chdir(proc.cwd)
    except OSError as exc:
        raise ContainError(f"process.cwd {proc.cwd}: {exc.strerror}") from exc
    try:
        os.getcwd()
    except OSError as exc:
        raise ContainError(f"process.cwd {proc.cwd}: outside the container's root") from exc
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
    if memory_policy is not None:
        _set_memory_policy(memory_policy)
    if proc.apparmor_profile or proc.selinux_label:
        from contain.security.lsm import apply_on_exec

        apply_on_exec(proc)
    if proc.user.umask is not None:
        os.umask(proc.user.umask)
    else:
        os.umask(0o022)
    _mark_fds(preserve_fds)
    if proc.no_new_privileges:
        prctl(c.PR_SET_NO_NEW_PRIVS, 1)
    problems = _set_identity(proc, seccomp)
    if warnings is not None:
        warnings.extend(problems)
    env = list(proc.env)
    env.extend(extra_env)
    if not any(e.startswith("HOME=") and e != "HOME=" for e in env):  # (empty: unset, runc)
        env = [e for e in env if e != "HOME="]
        env.append(f"HOME={home_of(proc.user.uid)}")
    return env


def _set_memory_policy(policy: MemoryPolicy) -> None:
    """linux.memoryPolicy: set_mempolicy(2), kept across execve and inherited by every
    child (the host's nodes were checked at create: lifecycle.validate)."""
    from contain.linux.syscalls import set_mempolicy
    from contain.spec.config import MPOL_FLAGS, MPOL_MODES

    mode = MPOL_MODES[policy.mode]
    for flag in policy.flags:
        mode |= MPOL_FLAGS[flag]
    try:
        set_mempolicy(mode, policy.node_set())
    except OSError as exc:
        raise ContainError(f"linux.memoryPolicy: set_mempolicy {policy.mode} "
                           f"nodes={policy.nodes or ''!r}: {exc.strerror}") from exc


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
                               f"{getattr(exc, 'strerror', None) or exc}") from exc


def _rlim(v: int) -> int:
    return -1 if v >= 2**64 - 1 else v


def _set_scheduler(proc: Process) -> None:
    sch = proc.scheduler
    assert sch is not None
    policy = _SCHED[sch.policy]
    if sch.nice:
        os.setpriority(os.PRIO_PROCESS, 0, sch.nice)
    if policy == 6 or sch.flags:  # SCHED_DEADLINE and sched flags: sched_setattr only
        from contain.linux.syscalls import SCHED_FLAGS, sched_setattr

        unknown = [f for f in sch.flags if f not in SCHED_FLAGS]
        if unknown:
            raise ContainError(f"process.scheduler.flags: unknown flag {unknown[0]!r}")
        try:
            sched_setattr(policy, flags=sum(SCHED_FLAGS[f] for f in set(sch.flags)),
                          nice=sch.nice, priority=sch.priority, runtime=sch.runtime,
                          deadline=sch.deadline, period=sch.period)
        except OSError as exc:
            raise ContainError(f"process.scheduler: {sch.policy}: {exc.strerror}") from exc
        return
    try:
        os.sched_setscheduler(0, policy, os.sched_param(sch.priority))
    except OSError as exc:
        raise ContainError(f"process.scheduler: {sch.policy}: {exc.strerror}") from exc


class _Filter:
    """Whether _set_identity had to load the filter already (see there); read by
    exec_process in the same process."""

    loaded = False


_CAP_SYS_ADMIN = 1 << 21


def _set_identity(proc: Process, seccomp: SeccompProgram | None) -> list[str]:
    """Bounding set, user and groups, then the capability sets (KEEPCAPS across setuid).

    The filter is loaded later, as the last call before execve. Without no_new_privs
    loading it needs CAP_SYS_ADMIN: when the process is not to have that capability,
    it stays in the effective and permitted sets until then. execve drops it: the new
    permitted set is computed from the inheritable, bounding and ambient sets and the
    file, never from the old permitted one (capabilities(7)); the bounding set has lost
    it already. Where it could survive -- in the ambient set, or setuid clearing every
    capability (no capabilities object, and another user than root) -- the filter is
    loaded before setuid instead, as runc does."""
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
                               f"{exc.strerror}") from exc

    needs_admin = seccomp is not None and not proc.no_new_privileges
    sets = caps_mod.resolve(proc.capabilities) if proc.capabilities is not None else None
    if needs_admin and (sets.ambient & _CAP_SYS_ADMIN if sets is not None else user.uid != 0):
        from contain.security.seccomp import load_filter

        assert seccomp is not None
        load_filter(seccomp)
        _Filter.loaded = True
    elif needs_admin and sets is not None and not sets.permitted & _CAP_SYS_ADMIN:
        from contain.linux.syscalls import capget

        if capget()[1] & _CAP_SYS_ADMIN:
            sets = caps_mod.CapSets(bounding=sets.bounding,
                                    effective=sets.effective | _CAP_SYS_ADMIN,
                                    inheritable=sets.inheritable,
                                    permitted=sets.permitted | _CAP_SYS_ADMIN,
                                    ambient=sets.ambient)
    return caps_mod.apply_process_identity(sets, set_user)


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
    create time, with the message runc gives (a long name quoted short)."""
    if "/" in name:
        if os.access(name, os.X_OK) and not os.path.isdir(name):
            return name
        shown = _shown(name)
        raise ContainError(f'exec: "{shown}": stat {shown}: no such file or directory'
                           if not os.path.exists(name) else
                           f'exec: "{shown}": permission denied')
    path_var = next((e[5:] for e in env if e.startswith("PATH=")), None)
    if path_var is None:
        path_var = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for d in path_var.split(":"):
        cand = os.path.join(d or ".", name)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    raise ContainError(f'exec: "{_shown(name)}": executable file not found in $PATH')


def _shown(name: str) -> str:
    if len(name) <= SHOW_MAX:
        return name
    return f"{name[:SHOW_MAX]}... ({len(name)} characters)"


def _rootless() -> bool:
    """Whether our effective uid is not root on the host (read through our user
    namespace's map)."""
    euid = os.geteuid()
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, outside, count = (int(w) for w in line.split())
                if inside <= euid < inside + count:
                    return outside + euid - inside != 0
    except (OSError, ValueError):
        pass
    return euid != 0


def send_ready(ch: Channel, seccomp: SeccompProgram | None, warnings: list[str]) -> None:
    """Tell the parent we are ready (READY). A notify filter is loaded first, so its
    listener can reach the agent: we write() its number and the parent copies the fd
    with pidfd_getfd (a sendmsg could be one of the calls the filter hands to the agent,
    which does not have the listener yet). Other filters wait until just before execve."""
    fields: dict[str, Any] = {}
    if warnings:
        fields["warnings"] = warnings
    if seccomp is not None and seccomp.notify:
        from contain.security.seccomp import load_filter

        fields["listener_fd"] = load_filter(seccomp)
        ch.write(sync.READY, **fields)
        return
    ch.send(sync.READY, **fields)


def _check_can_start(fifo_fd: int, proc: Process) -> None:
    """After `ready` the init can no longer report a failure: create would succeed and
    leave a dead container. So try now what start will need: a free file descriptor
    under process.rlimits (RLIMIT_NOFILE) and /proc to reopen exec.fifo through. Fewer
    fds are open at start than now, so what works now works then."""
    target = f"/proc/self/fd/{fifo_fd}" if fifo_fd >= 0 else "/"
    try:
        os.close(os.open(target, os.O_PATH | os.O_CLOEXEC))
    except OSError as exc:
        import errno

        if exc.errno == errno.EMFILE:
            soft = next((rl.soft for rl in proc.rlimits if rl.type == "RLIMIT_NOFILE"), None)
            raise ContainError(f"process.rlimits: RLIMIT_NOFILE soft limit {soft} leaves the "
                               "runtime no file descriptor to start the process with"
                               ) from exc
        if exc.errno == errno.ENOENT:
            raise ContainError("mounts: the container has no /proc, which the runtime needs "
                               "to wait for `start` (mount proc at /proc, or use `run`)"
                               ) from exc
        raise ContainError(f"cannot reopen exec.fifo: {exc.strerror}") from exc


def _wait_for_start(fifo_fd: int) -> None:
    """Block until `start` opens exec.fifo for reading; then tell it we are going."""
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)


def exec_process(path: str, proc: Process, env: list[str],
                 seccomp: SeccompProgram | None, init: bool = False) -> NoReturn:
    """Load the seccomp filter and execve: nothing else may come after the filter, as
    the container's profile may deny anything else (close_range, statfs, ...)."""
    if init:  # we stay as PID 1; the command is exec'd by our child
        from contain.process.reaper import fork_command

        fork_command(proc.terminal)
    sys.stdout.flush()
    sys.stderr.flush()
    args = proc.args
    envp = dict(e.split("=", 1) for e in env if "=" in e)
    if seccomp is not None and not seccomp.notify and not _Filter.loaded:
        from contain.security.seccomp import load_filter

        load_filter(seccomp)
    from contain.linux.exeguard import exec_guarded  # (CVE-2019-5736: see there)

    exec_guarded(path, args, envp)
