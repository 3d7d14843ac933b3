"""start, state, kill, delete and wait: the light commands engines call per container.

Kept apart from create (container/lifecycle.py), whose code is most of what a command
would otherwise load: these run in ~10 ms of which most is the interpreter's start.
"""

from __future__ import annotations

import posix  # (not os: see container/store.py)

from contain.container import store
from contain.errors import ContainError, NotFound, WrongState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cgroups import Manager
    from contain.container.store import ContainerRecord


def start(root: str, cid: str, poststart: bool = True) -> ContainerRecord:
    """Release the init blocked on exec.fifo, then run the poststart hooks (unless the
    caller runs them itself)."""
    with store.Lock(store.container_dir(root, cid)):
        record = store.load(root, cid)
        status = record.status()
        if status != "created":
            if status == "stopped":
                raise WrongState("cannot start a container that has stopped")
            raise WrongState(f"cannot start an already {status} container"
                             if status in ("running", "paused")
                             else f"cannot start a container in the {status} state")
        fifo = store.join(record.dir, store.FIFO_NAME)
        _release_fifo(fifo, record)
        posix.unlink(fifo)
    if poststart:
        run_poststart(record)
    return record


def run_poststart(record: ContainerRecord) -> None:
    """The poststart hooks; a failure is a warning, as the spec says."""
    hooks = record.config.get("hooks") or {}
    if hooks.get("poststart"):
        from contain import log
        from contain.process.hooks import HookError, run_hooks
        from contain.spec.config import Hooks

        try:
            run_hooks("poststart", Hooks.decode(hooks, "$.hooks").poststart,
                      record.hook_state("running"))
        except HookError as exc:
            log.warning(str(exc))


def _release_fifo(fifo: str, record: ContainerRecord) -> None:
    """Open exec.fifo for reading, which lets the init's blocked open for writing
    return; the init writes one byte and execs. The byte is the proof it went on.

    The pidfd is taken *before* the fifo is opened: from the open on, the process may
    run, exit and be reaped (by an engine's shim) at any moment, after which its pid
    cannot be opened -- that reported a container that had just run as "stopped". And
    a pidfd that is ready does not mean the init died before starting: it may have
    written its byte and exited between select()'s look at the fifo and its look at the
    pidfd, so the fifo is read once more before saying so."""
    import select

    try:
        pidfd = posix.pidfd_open(record.pid)
    except OSError as exc:
        raise WrongState("cannot start a container that has stopped") from exc
    try:
        if not record.init_alive():  # the pid was reused before we held it
            raise WrongState("cannot start a container that has stopped")
        fd = posix.open(fifo, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
        try:
            waiting = [fd, pidfd]
            while True:
                ready, _, _ = select.select(waiting, [], [], 5.0)
                if not ready:
                    continue
                try:
                    data = posix.read(fd, 1)
                except BlockingIOError:  # a writer is there, its byte is not yet
                    data = b""
                if data:
                    return
                if pidfd in ready:
                    raise WrongState("cannot start a container that has stopped")
                if fd in ready:  # end of file: the init closed it without its byte;
                    waiting = [pidfd]  # it is on its way out (the next look says so)
        finally:
            posix.close(fd)
    finally:
        posix.close(pidfd)


SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}


def parse_signal(text: str) -> int:
    if text.isdigit():
        num = int(text)
        if 0 < num < 65:
            return num
        raise ContainError(f"invalid signal {text!r}")
    name = text.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name.startswith("RTMIN") or name.startswith("RTMAX"):
        base = 34 if name.startswith("RTMIN") else 64
        off = name[5:]
        try:
            return base + int(off) if off else base
        except ValueError:
            pass
    if name in SIGNALS:
        return SIGNALS[name]
    raise ContainError(f"unknown signal {text!r}")


def kill(root: str, cid: str, sig: int = 15, all_processes: bool = False) -> None:
    record = store.load(root, cid)
    status = record.status()
    if status in ("stopped", "creating"):
        raise WrongState("container not running")
    # (runc 1.2: SIGKILL to a container without a PID namespace of its own reaches every
    # process in it: killing its init would not end the others, as it does in one)
    if all_processes or (sig == 9 and not _own_pid_namespace(record)):
        mgr = record.cgroup_manager()
        if mgr is not None:
            mgr.kill_all(sig)
            return
    signal_init(record, sig)


def _own_pid_namespace(record: ContainerRecord) -> bool:
    linux = record.config.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return any(isinstance(ns, dict) and ns.get("type") == "pid" and not ns.get("path")
               for ns in namespaces or ())


def signal_init(record: ContainerRecord, sig: int) -> None:
    """Signal the init through a pidfd, after checking it is still our process."""
    import _signal

    try:
        pidfd = posix.pidfd_open(record.pid)
    except ProcessLookupError as exc:
        raise WrongState("container not running") from exc
    try:
        if not record.init_alive():
            raise WrongState("container not running")
        _signal.pidfd_send_signal(pidfd, sig)
    finally:
        posix.close(pidfd)


def delete(root: str, cid: str, force: bool = False) -> None:
    path = store.container_dir(root, cid)
    if not store.is_dir(path):
        raise NotFound("container does not exist")
    with store.Lock(path):
        try:
            record = store.load(root, cid)
        except store.CorruptState as exc:
            if not force:
                raise ContainError(f"{exc} (`delete --force` removes what it can find)"
                                   ) from exc
            _delete_corrupt(root, cid, exc)
            return
        status = record.status()
        if status in ("running", "paused") and not force:
            raise WrongState(f"cannot delete container {cid} that is not stopped: {status}")
        if status != "stopped" and status != "creating":
            mgr = record.cgroup_manager() if status == "paused" else None
            if mgr is not None:
                mgr.thaw()
            try:
                signal_init(record, 9)
            except WrongState:
                pass
            _wait_gone(record)
        # (a systemd scope is stopped through systemd: the driver's destroy)
        if record.cgroup and (record.cgroup.get("systemd")
                              or not _remove_empty_cgroup(record.cgroup)):
            mgr = record.cgroup_manager()
            if mgr is not None:
                mgr.destroy()
        if record.extra.get("rdt"):
            from contain.container.rdt import remove

            remove(record.extra["rdt"])
        _stop_supervisor(record)
        store.remove_dir(path)
    hooks = record.config.get("hooks") or {}
    if hooks.get("poststop"):
        from contain import log
        from contain.process.hooks import HookError, run_hooks
        from contain.spec.config import Hooks

        try:
            run_hooks("poststop", Hooks.decode(hooks, "$.hooks").poststop,
                      record.hook_state("stopped"))
        except HookError as exc:
            log.warning(str(exc))


_PRIMARY = ("pids", "memory", "freezer", "devices", "cpu", "unified")  # (as cgroups')


def _remove_empty_cgroup(saved: dict[str, Any]) -> bool:
    """The usual end of a container's cgroup, without the cgroup package (its import
    is a third of a light command's own time): one rmdir per hierarchy, then the
    parents create made, as Manager.destroy does. The primary hierarchy goes first:
    the kernel refuses to remove a cgroup with a process or a sub-cgroup in it, so once
    that rmdir has succeeded, no process of the container is left. False when any rmdir
    is refused: Manager.destroy then kills what is left and removes the rest."""
    paths = saved.get("paths") or {}
    created = saved.get("created") or {}
    # (Manager.primary's order; a stable sort keeps the others as saved)
    order = sorted(paths, key=lambda k: _PRIMARY.index(k) if k in _PRIMARY else len(_PRIMARY))
    for key in order:
        try:
            posix.rmdir(paths[key])
        except FileNotFoundError:
            pass
        except OSError:
            return False
        parent = paths[key]
        levels = created.get(key, 1)
        for _ in range((levels if isinstance(levels, int) else 1) - 1):
            parent = parent.rsplit("/", 1)[0]
            try:
                posix.rmdir(parent)
            except OSError:
                break
    return True


def _stop_supervisor(record: ContainerRecord) -> None:
    """End the syscall supervisor of an annotated container (sandbox/supervise keeps
    its pid, start time and socket in state.json), if it is still that process."""
    info = record.extra.get("supervisor")
    if not isinstance(info, dict) or not info.get("pid"):
        return
    pid = int(info["pid"])
    try:
        pidfd = posix.pidfd_open(pid)
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        try:
            if store.process_start_time(pid) == info.get("start"):
                import _signal

                _signal.pidfd_send_signal(pidfd, 9)
        finally:
            posix.close(pidfd)
    if info.get("socket"):
        try:
            posix.unlink(info["socket"])
        except OSError:
            pass


def _delete_corrupt(root: str, cid: str, exc: store.CorruptState) -> None:
    """delete --force of a container whose state.json cannot be read: kill what can be
    found -- the init if what survived of the record still names it (pid and start time
    agree), every process of its cgroup (from the record if its cgroup part is sound,
    else recomputed as create would from the id and the bundle's config.json) -- and
    remove the entry. The poststop hooks are not run: their config is not trusted."""
    from contain import log

    log.warning(f"{exc}: removing what can be found of it")
    partial = exc.partial
    pid, start = partial.get("pid"), partial.get("init_start")
    if type(pid) is int and type(start) is int and pid > 0:
        record = store.ContainerRecord(root, cid, {"pid": pid, "init_start": start})
        if record.init_alive():
            try:
                signal_init(record, 9)
            except WrongState:
                pass
            _wait_gone(record)
    mgr = _recover_cgroup(cid, partial)
    if mgr is not None:
        try:
            if mgr.exists():
                mgr.destroy()
        except (OSError, ContainError) as err:
            log.warning(f"container {cid}: {err}")
    store.remove_dir(store.container_dir(root, cid))


def _recover_cgroup(cid: str, partial: dict[str, Any]) -> Manager | None:
    from contain.cgroups import load_manager, new_manager

    saved = partial.get("cgroup")
    if isinstance(saved, dict) and store.check_shape(cid, {"id": cid, "pid": 0,
                                                           "cgroup": saved}) is None:
        return load_manager(saved)
    cgroups_path = None
    config = partial.get("config")
    bundle = partial.get("bundle")
    if not isinstance(config, dict) and isinstance(bundle, str) and bundle:
        from contain.jsonio import loads

        try:
            with open(store.join(bundle, "config.json"), "rb") as f:
                config = loads(f.read())
        except (OSError, ValueError):
            config = None
    if isinstance(config, dict):
        linux = config.get("linux")
        if isinstance(linux, dict) and isinstance(linux.get("cgroupsPath"), str):
            cgroups_path = linux["cgroupsPath"]
    try:
        return new_manager(cgroups_path, cid, rootless=posix.geteuid() != 0)
    except (OSError, ContainError):
        return None


def _wait_gone(record: ContainerRecord, timeout: float = 10.0) -> None:
    import select

    try:
        pidfd = posix.pidfd_open(record.pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        posix.close(pidfd)
    # the init may be our own child (run): reap it so it does not linger as a zombie
    try:
        posix.waitpid(record.pid, posix.WNOHANG)
    except ChildProcessError:
        pass


def wait(record: ContainerRecord) -> int:
    """Wait for the init to exit; return its exit code (128+N when killed by signal N).
    The init must be our child (run makes itself a subreaper before forking)."""
    while True:
        try:
            _, status = posix.waitpid(record.pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if posix.WIFEXITED(status):
            return posix.WEXITSTATUS(status)
        if posix.WIFSIGNALED(status):
            return 128 + posix.WTERMSIG(status)
