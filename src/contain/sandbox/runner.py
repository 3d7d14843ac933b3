"""Running commands under a sandbox policy: the engine of ``contain.Sandbox``,
``contain.run`` and ``contain sandbox`` with a policy.

:func:`build` turns a validated :class:`~contain.sandbox.policy.Policy` and a command
into the sandbox's in-memory config.json (the host-root spec of host.sandbox_spec, plus
the file policy's mounts, sized private tmpfs and the Landlock extension), and says in
advance what Landlock will enforce on this kernel (strict mode refuses here, before
anything exists). :func:`execute` runs it: stdio passed through or captured, input fed,
output streamed to a callback as it comes, a deadline after which the whole sandbox (its
PID namespace) is killed, and a result with the exit status, the output, the resource
usage and the violations. Nothing here touches signal handlers, so it works from any
thread of a host program.
"""

from __future__ import annotations

import os
import time

from contain.errors import ContainError
from contain.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from contain.sandbox.policy import Policy
    from contain.sandbox.report import Reporter
    from contain.security.landlock import Enforced


class Result(Record):
    """What one command in a sandbox came to: ``rusage`` is the resource usage of the
    sandbox's processes (wait4 of its init, which reaps them all), ``cgroup`` its
    cgroup's statistics (memory peak, cpu, pids) when it has one, ``violations`` the
    refused operations reported, ``landlock`` what Landlock enforced."""

    __slots__ = ("args", "returncode", "stdout", "stderr", "timed_out", "duration",
                 "rusage", "cgroup", "violations", "landlock")
    DEFAULTS = {"stdout": None, "stderr": None, "timed_out": False, "duration": 0.0,
                "rusage": dict, "cgroup": None, "violations": list, "landlock": None}
    args: list[str]
    returncode: int
    stdout: bytes | None
    stderr: bytes | None
    timed_out: bool
    duration: float
    rusage: dict[str, float]
    cgroup: dict[str, Any] | None  # the cgroup's statistics at the end, when it has one
    violations: list[dict[str, Any]]
    landlock: dict[str, Any] | None

    def check_returncode(self) -> None:
        if self.returncode != 0:
            raise ContainError(f"sandbox {' '.join(self.args)[:200]}: exit status "
                               f"{self.returncode}")

    def __repr__(self) -> str:
        return (f"Result(args={self.args!r}, returncode={self.returncode}"
                + (", timed_out=True" if self.timed_out else "") + ")")


class SandboxTimeout(TimeoutError):
    """The command did not finish in time; the whole sandbox was killed. *result* holds
    what it wrote until then."""

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result


class Built(Record):
    __slots__ = ("spec", "landlock", "userns", "binds", "raw", "network", "supervise")
    DEFAULTS = {"raw": None, "network": None, "supervise": None}
    spec: Any  # contain.spec.config.Spec
    landlock: Enforced | None
    userns: bool
    binds: list[str]
    raw: dict[str, Any] | None  # the config before decoding (a network is joined in it)
    network: tuple[str, list[str], list[str]] | None  # (mode, allow, publish) to start
    supervise: Any  # the syscall policy for contain.sandbox.supervise, or None


def _network_module() -> Any:
    """contain.sandbox.network when this build has it (``--net allow`` and ``private``,
    and the loopback of ``none``), else None."""
    try:  # (__import__: importlib would also load warnings, on every sandbox)
        mod = __import__("contain.sandbox.network", fromlist=["start_network"])
    except ImportError:
        return None
    return mod if hasattr(mod, "start_network") else None


def _net_plan(pol: Policy) -> tuple[str, tuple[str, list[str], list[str]] | None]:
    """(the net value for host.sandbox_spec, what to start with the network module)."""
    mode = pol.network.mode
    if mode == "none" and not pol.network.publish and not pol.network.allow:
        # the default: the sandbox's own namespace, whose lo its init brings up; the
        # network module has nothing to start for it (nor the spec to re-decode)
        return "none", None
    if mode == "host":
        if pol.network.publish:
            raise ContainError("--publish needs --net private")
        return "host", None
    if _network_module() is None:
        if mode != "none" or pol.network.publish:
            raise ContainError(f"--net {mode}: not available in this build of contain "
                               "(no contain.sandbox.network)")
        return "none", None
    return "none", (mode, list(pol.network.allow), list(pol.network.publish))


def _start_network(built: Built, reporter: Reporter) -> Any:
    """Start the sandbox's network (the network module's handle, or None) and join it
    in the spec; the caller closes the handle."""
    if built.network is None or built.raw is None:
        return None
    from contain.spec.config import Spec

    mode, allow, publish = built.network
    ids = (0, os.geteuid(), 0, os.getegid()) if built.userns else None

    def report(event: dict[str, Any]) -> None:
        target = f"{event.get('host', '')}:{event.get('port', '')}"
        detail = {k: v for k, v in event.items()
                  if k not in ("type", "action", "host", "port", "reason", "time")}
        action = event.get("action")
        if action == "deny":
            reporter.violation("proxy", "connect", target,
                               reason=str(event.get("reason", "")), **detail)
        elif action == "log-full":  # the proxy's log is full: later decisions unreported
            reporter.event("proxy", "log-full", reason=str(event.get("reason", "")))
        else:
            reporter.event("proxy", "allowed", target=target, **detail)

    handle = _network_module().start_network(mode, allow, publish, report, userns=ids)
    if not (handle.namespace_path or handle.userns_path or handle.env):
        return handle  # (--net none: nothing to join, the spec stands as decoded)
    try:
        raw = built.raw
        for ns in raw["linux"]["namespaces"]:
            if ns["type"] == "network" and handle.namespace_path:
                ns["path"] = handle.namespace_path
            if ns["type"] == "user" and handle.userns_path:
                ns["path"] = handle.userns_path
                raw["linux"].pop("uidMappings", None)
                raw["linux"].pop("gidMappings", None)
        env = raw["process"]["env"]
        names = {e.split("=", 1)[0] for e in env}
        env.extend(e for e in handle.env if e.split("=", 1)[0] not in names)
        built.spec = Spec.decode(raw)
    except BaseException:
        handle.close()
        raise
    return handle


def _supervision(pol: Policy) -> dict[str, Any] | None:
    """The supervisor's options when the policy asks for one (``[syscalls]``, or the
    CLI's/API's supervise, record, enforce), its policy decoded now (a bad one is
    refused before anything starts); None otherwise."""
    sv = dict(pol.supervision)
    if pol.syscalls is not None and sv.get("supervise") is None:
        sv["supervise"] = pol.syscall_policy
    if not any(sv.get(k) not in (None, "") for k in ("supervise", "record", "enforce")):
        if sv:
            raise ContainError(f"{', '.join(sorted(sv))}: needs a syscall policy "
                               "(--supervise or [syscalls]), --record or --enforce")
        return None
    import importlib

    try:
        mod = importlib.import_module("contain.sandbox.supervise")
    except ImportError as exc:
        raise ContainError("syscall supervision is not available in this build of "
                           "contain (no contain.sandbox.supervise)") from exc
    if sv.get("supervise") is not None and hasattr(mod, "load_policy"):
        sv["supervise"] = mod.load_policy(sv["supervise"])
    return sv


def _start_supervisor(built: Built, root: str) -> tuple[Any, int]:
    """(the syscall supervisor, the fd of its report) when the policy has [syscalls]:
    the spec gets its filter, and it is started (the sandbox is attached to it after
    create, before it starts); else (None, -1)."""
    if built.supervise is None or built.raw is None:
        return None, -1
    import importlib

    from contain.spec.config import Spec

    # (by name: a build may come without the supervisor; the policy refused [syscalls])
    supervisor_for = importlib.import_module("contain.sandbox.supervise").supervisor_for
    sv = built.supervise
    # the supervisor's decisions come back into the sandbox's report, unless its own
    # report was asked for (then they go there, as the supervisor writes them)
    fd = -1 if sv.get("supervise_report") is not None else \
        os.memfd_create("contain-supervise-report", os.MFD_CLOEXEC)
    try:
        sup = supervisor_for(sv.get("supervise"), sv.get("supervisor"), root=root,
                             report=fd if fd >= 0 else sv["supervise_report"],
                             record=sv.get("record"), enforce=sv.get("enforce"),
                             hostname=built.raw.get("hostname") or "sandbox")
        built.raw = sup.prepare(built.raw)
        built.spec = Spec.decode(built.raw)
        sup.start()
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return sup, fd


_SUPERVISOR_DECISIONS = {"deny": "denied", "kill": "killed", "log": "logged"}


def _finish_supervisor(sup: Any, fd: int, reporter: Reporter, failed: bool) -> None:
    """Let the supervisor end (or kill it), then pass its refusals to the reporter."""
    from contain.jsonio import loads

    try:
        if failed:
            sup.kill()
        sup.finish()
    finally:
        data = b""
        while fd >= 0:
            chunk = os.pread(fd, 1 << 20, len(data))
            if not chunk:
                break
            data += chunk
        if fd >= 0:
            os.close(fd)
    for line in data.splitlines():
        try:
            ev = loads(line)
        except ValueError:
            continue
        decision = _SUPERVISOR_DECISIONS.get(ev.get("action", ""))
        if decision is None or not isinstance(ev, dict):
            continue
        target = str(ev.get("path") or ev.get("args", ""))
        detail = {k: v for k, v in ev.items()
                  if k not in ("time", "syscall", "action", "path", "supervisor")}
        reporter.violation("supervisor", str(ev.get("syscall", "?")), target,
                           decision=decision, **detail)


def _host_options(sandbox_spec: Any, pol: Policy) -> dict[str, Any]:
    """The options of host.sandbox_spec that only some builds have (the defaults'
    as_root, host_sockets, tmp_size, shm_size): passed when asked for, refused by name
    where this build lacks them."""
    known = sandbox_spec.__code__.co_varnames
    wanted = {"as_root": pol.process.as_root, "host_sockets": pol.files.host_sockets,
              "tmp_size": pol.limits.tmp, "shm_size": pol.limits.shm}
    out = {}
    for key, value in wanted.items():
        if value in (None, False):
            continue
        if key in known:
            out[key] = value
        elif key in ("as_root", "host_sockets"):  # (the sizes are applied here anyway)
            raise ContainError(f"{key}: not available in this build of contain")
    return out


def check_command(args: Any) -> None:
    """A sandbox's command: a non-empty list of strings (its texts are checked with the
    spec)."""
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)) or not all(
            isinstance(a, str) for a in args):
        from contain.sandbox.policy import PolicyTypeError

        raise PolicyTypeError("args", "expected a list of strings (the command and its "
                              "arguments)")
    if not args:
        raise ContainError("sandbox: no command given")


def build(pol: Policy, args: list[str], root: str, terminal: bool = False) -> Built:
    """The decoded spec of *args* under *pol*; every refusal happens here."""
    from contain.sandbox.host import sandbox_spec
    from contain.spec.config import Spec

    check_command(args)
    userns = pol.use_userns()
    lim = pol.limits
    net, network = _net_plan(pol)
    raw = sandbox_spec(list(args), memory=lim.memory, pids=lim.pids, cpus=lim.cpus,
                       binds=list(pol.files.binds), net=net,
                       env=list(pol.process.env), cwd=pol.process.cwd,
                       hostname=pol.process.hostname, userns=userns,
                       caps=list(pol.process.caps), seccomp=pol.process.seccomp,
                       terminal=terminal, **_host_options(sandbox_spec, pol))
    _size_private(raw, {"/tmp": lim.tmp, "/dev/shm": lim.shm, "/run": lim.run})
    if os.geteuid() != 0 and raw["linux"].get("resources"):
        # rootless: limits need a cgroup delegated to the user; naming one makes create
        # use it where it can, and say so (a warning) where it cannot: never silently
        raw["linux"]["cgroupsPath"] = f"/contain-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
    from contain.sandbox.files import check, denied, file_mounts, landlock_ruleset

    check(pol)
    files_denied = any(os.path.lexists(p) and not os.path.isdir(p) for p in denied(pol))
    extra = file_mounts(pol, empty_file(root) if files_denied else "")
    _grant_writable_trees(raw, extra)
    raw["mounts"].extend(extra)
    enforced = None
    ruleset = landlock_ruleset(pol)
    if ruleset is not None:
        from contain.security.landlock import plan

        enforced = plan(ruleset)  # strict mode refuses here
        if enforced.abi:
            raw["process"]["landlock"] = ruleset.to_json()
            raw["process"]["noNewPrivileges"] = True
    supervise = _supervision(pol)
    return Built(Spec.decode(raw), enforced, userns, list(pol.files.binds), raw, network,
                 supervise)


def _grant_writable_trees(raw: dict[str, Any], mounts: list[dict[str, Any]]) -> None:
    """A root caller's command runs as the unprivileged sandbox user (host.SANDBOX_UID):
    a tree the policy makes writable is id-mapped to that user, as --bind is, so that
    the grant works whatever the tree's owner (on disk nothing changes)."""
    from contain.sandbox import host

    user = raw["process"]["user"]
    if user.get("uid") != host.SANDBOX_UID or any(
            ns.get("type") == "user" for ns in raw["linux"]["namespaces"]):
        return
    for m in mounts:
        if m.get("type") == "bind" and "rw" in m.get("options", ()):
            host.shift_to_sandbox_user(m)


def _size_private(raw: dict[str, Any], sizes: dict[str, int | None]) -> None:
    for m in raw["mounts"]:
        size = sizes.get(m["destination"])
        if size is not None and m.get("type") == "tmpfs":
            m["options"] = [o for o in m["options"] if not o.startswith("size=")]
            m["options"].append(f"size={size}")


def empty_file(root: str) -> str:
    """An empty, read-only file of the runtime's (covers denied files); made once."""
    path = os.path.join(root, ".sandbox", "host-root", "empty")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        os.chmod(tmp, 0o444)
        os.rename(tmp, path)
    return path


def _explain_userns(built: Built, exc: ContainError) -> None:
    """A sandbox with a user namespace failed: if no user namespace can be made here,
    raise the precise cause instead (contain.sandbox.userns); else return."""
    if built.userns:
        from contain.sandbox.userns import explain

        why = explain(exc)
        if why:
            raise ContainError(why) from exc


def _cgroup_stats(record: Any) -> dict[str, Any] | None:
    """The sandbox's cgroup statistics (as ``contain events --stats``) once its processes
    are gone, or None without a cgroup."""
    try:
        mgr = record.cgroup_manager()
        if mgr is None or not mgr.exists():
            return None
        stats: dict[str, Any] = mgr.stats().to_json()
        return stats
    except (ContainError, OSError):
        return None


def _disarm_init() -> None:
    """Undo, in the runtime, what arming the sandbox's PID-1 init did before the fork
    (contain.process.reaper, where this build has it)."""
    import sys

    mod = sys.modules.get("contain.process.reaper")  # (not imported: nothing was armed)
    if mod is None:
        return
    disarm = getattr(mod, "disarm", None)
    if disarm is not None:
        disarm()


def _rusage(ru: Any) -> dict[str, float]:
    return {"user_time": round(ru.ru_utime, 6), "system_time": round(ru.ru_stime, 6),
            "max_rss_kib": float(ru.ru_maxrss), "minor_faults": float(ru.ru_minflt),
            "major_faults": float(ru.ru_majflt),
            "voluntary_switches": float(ru.ru_nvcsw),
            "involuntary_switches": float(ru.ru_nivcsw)}


def _wait4(pid: int) -> tuple[int, dict[str, float]]:
    while True:
        try:
            _, status, ru = os.wait4(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255, {}
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status), _rusage(ru)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status), _rusage(ru)


def _fileno(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    fileno = getattr(value, "fileno", None)
    if fileno is None:
        from contain.sandbox.policy import PolicyTypeError

        raise PolicyTypeError(name, f"expected a file or an fd, got {type(value).__name__}")
    fd = fileno()
    assert isinstance(fd, int)
    return fd


class _Stdio:
    """The sandbox's fds 0, 1, 2 and our ends of them: a pipe for input, pipes for
    output that is captured or streamed, else the caller's fds (or files)."""

    def __init__(self, capture: bool, streaming: bool, input: bytes | None,
                 stdin: Any, stdout: Any, stderr: Any) -> None:
        self.ours: list[int] = []
        self.theirs: list[int] = []
        self.stdin_w = self.out_r = self.err_r = -1
        in_fd = _fileno(stdin, "stdin")
        out_fd = _fileno(stdout, "stdout")
        err_fd = _fileno(stderr, "stderr")
        stdin_r = in_fd if in_fd is not None else 0
        if input is not None:
            stdin_r, self.stdin_w = self._pipe(reader_is_ours=False)
        out_w = out_fd if out_fd is not None else 1
        if (capture or streaming) and out_fd is None:
            self.out_r, out_w = self._pipe(reader_is_ours=True)
        err_w = err_fd if err_fd is not None else 2
        if (capture or streaming) and err_fd is None:
            self.err_r, err_w = self._pipe(reader_is_ours=True)
        self.fds = (stdin_r, out_w, err_w)

    def _pipe(self, reader_is_ours: bool) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        self.ours.append(r if reader_is_ours else w)
        self.theirs.append(w if reader_is_ours else r)
        return r, w

    def close_theirs(self) -> None:
        for fd in self.theirs:
            os.close(fd)
        self.theirs = []

    def close(self) -> None:
        self.close_theirs()
        for fd in self.ours:
            os.close(fd)
        self.ours = []


class _Run:
    """One command in a sandbox: what :func:`execute` starts, serves and undoes."""

    def __init__(self, built: Built, root: str, reporter: Reporter, io: _Stdio) -> None:
        from contain.container.lifecycle import CreateOptions
        from contain.sandbox.bundle import bundle_dir, new_id

        self.built = built
        self.root = root
        self.reporter = reporter
        self.io = io
        self.cid = new_id()
        self.bundle = bundle_dir(root, self.cid, built.binds)
        self.opts = CreateOptions()
        self.opts.stdio = io.fds
        self.network: Any = None
        self.sup: Any = None
        self.sup_fd = -1
        self.forward: Any = None
        self.warming: Any = None
        self.record: Any = None

    def start(self, forward_signals: bool) -> None:
        """Network, supervisor, cgroup warm-up, signal forwarding, create, start."""
        from contain.container.control import run_poststart, start
        from contain.container.lifecycle import create
        from contain.process.foreground import ForwardSignals, become_subreaper

        become_subreaper()
        self.network = _start_network(self.built, self.reporter)
        self.sup, self.sup_fd = _start_supervisor(self.built, self.root)
        spec = self.built.spec
        self.opts.no_cgroup = spec.linux is None or spec.linux.resources is None
        self.opts.keep_affinity = True  # the caller's taskset holds, as for any command
        self.opts.start_now = self.sup is None  # a supervisor attaches in between
        if not self.opts.no_cgroup:  # a cgroup to join: the attach finds its lock warm
            from contain.cgroups import warm

            self.warming = warm.warming()
            self.warming.__enter__()
        if forward_signals:  # (the caller's choice; the main thread only)
            self.forward = ForwardSignals()
            self.forward.__enter__()
        try:
            self.record = create(self.root, self.cid, self.bundle, self.opts, spec=spec)
        except ContainError as exc:
            _explain_userns(self.built, exc)
            raise
        finally:
            self.io.close_theirs()
        if self.forward is not None:
            self.forward.attach(self.record.pid)
        if self.sup is not None:
            self.sup.attach(self.record.pid)
            start(self.root, self.cid)
        else:
            run_poststart(self.record)

    def serve(self, pump: Any, input: bytes | None, deadline: float | None) -> bool:
        """Feed, stream and collect until the sandbox has exited; False when the
        deadline came first (then the sandbox was killed)."""
        import signal

        pid = self.record.pid
        pidfd = os.pidfd_open(pid)
        try:
            if self.io.stdin_w >= 0:
                self.io.ours.remove(self.io.stdin_w)
                pump.feed(self.io.stdin_w, input or b"")  # the pump closes it
            # once it has exited, its output is drained while it keeps coming within 1 s
            # (a stray process may still hold a pipe)
            if pump.run(exit_fd=pidfd, deadline=deadline, linger=1.0):
                return True
            # PID 1 of the sandbox's PID namespace: the kernel kills all the rest
            os.kill(pid, signal.SIGKILL)
            pump.run(exit_fd=pidfd, deadline=time.monotonic() + 5, linger=0.2)
            return False
        except BaseException:  # (KeyboardInterrupt, a failing callback): end it all
            os.kill(pid, signal.SIGKILL)
            raise
        finally:
            os.close(pidfd)

    def close(self, failed: bool) -> None:
        """Undo everything, whatever happened; the supervisor's and the proxy's last
        decisions reach the reporter here."""
        from contain.container.control import delete
        from contain.sandbox.bundle import remove_bundle

        self.io.close()
        try:
            if self.record is not None:
                delete(self.root, self.cid, force=True)
        finally:
            _disarm_init()
            remove_bundle(self.bundle)
            for ctx in (self.forward, self.warming):
                if ctx is not None:
                    ctx.__exit__(None, None, None)
            if self.sup is not None:
                _finish_supervisor(self.sup, self.sup_fd, self.reporter, failed)
            if self.network is not None:
                self.network.close()


def execute(built: Built, args: list[str], root: str, reporter: Reporter, *,
            capture: bool = False, input: bytes | None = None,
            timeout: float | None = None, stdin: Any = None, stdout: Any = None,
            stderr: Any = None,
            on_output: Callable[[str, bytes], None] | None = None,
            forward_signals: bool = False) -> Result:
    """Run the built sandbox to its end; see the module's docstring."""

    io = _Stdio(capture, on_output is not None, input, stdin, stdout, stderr)
    try:
        run = _Run(built, root, reporter, io)
    except BaseException:
        io.close()
        raise
    started = time.monotonic()
    pump, outputs = serving(built, reporter, io, capture, on_output)
    failed = True
    try:
        run.start(forward_signals)
        finished = run.serve(pump, input, None if timeout is None else started + timeout)
        code, usage = _wait4(run.record.pid)
        cgroup = _cgroup_stats(run.record)
        failed = False
    finally:
        run.close(failed)
    return result_of(built, reporter, list(args), code, finished, started, usage, cgroup,
                     outputs if capture else None)


def result_of(built: Built, reporter: Reporter, args: list[str], code: int, finished: bool,
              started: float, usage: dict[str, Any], cgroup: dict[str, Any] | None,
              outputs: dict[str, bytearray] | None) -> Result:
    """The Result of a sandbox's command that has ended (*outputs*: what was captured)."""
    result = Result(args, code, timed_out=not finished,
                    duration=round(time.monotonic() - started, 6), rusage=usage,
                    cgroup=cgroup, violations=list(reporter.violations),
                    landlock=built.landlock.to_json() if built.landlock else None)
    if outputs is not None:
        result.stdout = bytes(outputs.get("stdout", b""))
        result.stderr = bytes(outputs.get("stderr", b""))
    return result


def checked(result: Result, args: list[str], timeout: float | None, check: bool) -> Result:
    """*result*, or SandboxTimeout when it timed out, or the error of a non-zero exit
    when *check* asks for it."""
    if result.timed_out:
        raise SandboxTimeout(f"sandbox {' '.join(args)[:200]} timed out after "
                             f"{timeout}s (killed)", result)
    if check:
        result.check_returncode()
    return result


def serving(built: Built, reporter: Reporter, io: _Stdio, capture: bool,
            on_output: Callable[[str, bytes], None] | None) -> tuple[Any, dict[str, bytearray]]:
    """What a sandbox's command is served with, as it starts (a pooled one at its
    handover): the Landlock event reported, and a pump that collects (or passes on) its
    stdout and stderr into the returned buffers."""
    from contain.process.pump import Pump

    if built.landlock is not None:
        reporter.event("landlock", "enforced" if built.landlock.abi else "unavailable",
                       **built.landlock.to_json())
    pump = Pump()
    outputs: dict[str, bytearray] = {}
    for fd, name in ((io.out_r, "stdout"), (io.err_r, "stderr")):
        if fd >= 0:
            pump.each(fd, _sink(outputs.setdefault(name, bytearray()), name, capture,
                                on_output))
    return pump, outputs


def _sink(buf: bytearray, name: str, keep: bool,
          on_output: Callable[[str, bytes], None] | None) -> Callable[[bytes], None]:
    def sink(data: bytes) -> None:
        if keep:
            buf.extend(data)
        if on_output is not None:
            on_output(name, data)

    return sink



def run_foreground(built: Built, root: str, reporter: Reporter) -> int:
    """Run the built sandbox on the caller's terminal (``contain sandbox``): signals
    forwarded (the CLI's main thread), a pty relayed with -t; the exit code."""
    from contain.container.lifecycle import CreateOptions
    from contain.container.run import run_container
    from contain.sandbox.bundle import bundle_dir, new_id, remove_bundle

    spec = built.spec
    cid = new_id()
    bundle = bundle_dir(root, cid, built.binds)
    opts = CreateOptions()
    opts.no_cgroup = spec.linux is None or spec.linux.resources is None
    opts.keep_affinity = True
    if built.landlock is not None:
        reporter.event("landlock", "enforced" if built.landlock.abi else "unavailable",
                       **built.landlock.to_json())
    network = None
    sup, sup_fd = None, -1
    failed = True
    try:
        network = _start_network(built, reporter)
        sup, sup_fd = _start_supervisor(built, root)
        extra: dict[str, Any] = {"forward_signals": True}
        if sup is not None:
            extra["after_create"] = lambda record: sup.attach(record.pid)
        if opts.no_cgroup:
            code = run_container(root, cid, bundle, built.spec, opts, **extra)
        else:  # a cgroup to join: the attach finds its lock warm (cgroups/warm.py)
            from contain.cgroups import warm

            with warm.warming():
                code = run_container(root, cid, bundle, built.spec, opts, **extra)
        failed = False
        return code
    except ContainError as exc:
        _explain_userns(built, exc)
        raise
    finally:
        _disarm_init()
        remove_bundle(bundle)
        if sup is not None:
            _finish_supervisor(sup, sup_fd, reporter, failed)
        if network is not None:
            network.close()
