"""The public Python API: containers and sandboxes without spawning the CLI.

    >>> import contain
    >>> contain.run(["/bin/true"]).returncode
    0
    >>> c = contain.Container.create("web", "/srv/bundles/web")
    >>> c.start(); c.kill(); c.wait(); c.delete()

Everything here is what the ``contain`` command does, called in-process. Creating a
container makes the calling process a child subreaper (PR_SET_CHILD_SUBREAPER) so that
the container's init, a grandchild, is reparented to it and ``wait`` can collect its
exit status, as ``contain run`` does.
"""

from __future__ import annotations

import os

from contain.container import control, lifecycle, store
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.container.store import ContainerRecord

DEFAULT_ROOT = "/run/contain"


def _default_root() -> str:
    return store.default_root()


class Container:
    """A container in a state root; a thin handle over the lifecycle functions."""

    def __init__(self, id: str, root: str | None = None) -> None:
        store.validate_id(id)
        self.id = id
        self.root = root or _default_root()

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def create(cls, id: str, bundle: str, root: str | None = None, *,
               console_socket: str | None = None, pid_file: str | None = None,
               preserve_fds: int = 0, no_pivot: bool = False,
               no_new_keyring: bool = False, spec: dict[str, Any] | None = None,
               stdio: tuple[int, int, int] | None = None) -> Container:
        """Create container *id* from *bundle* (its config.json, or *spec* if given);
        the process waits for :meth:`start`. *stdio* gives the fds for its 0, 1, 2."""
        from contain.cgroups import warm
        from contain.process.foreground import become_subreaper

        self = cls(id, root)
        opts = lifecycle.CreateOptions(console_socket=console_socket, pid_file=pid_file,
                                       preserve_fds=preserve_fds, no_pivot=no_pivot,
                                       no_new_keyring=no_new_keyring)
        opts.stdio = stdio
        decoded = None
        if spec is not None:
            from contain.spec.config import Spec

            decoded = Spec.decode(spec)
        become_subreaper()
        with warm.warming():
            lifecycle.create(self.root, id, bundle, opts, spec=decoded)
        return self

    def start(self) -> None:
        control.start(self.root, self.id)

    def record(self) -> ContainerRecord:
        return store.load(self.root, self.id)

    def state(self) -> dict[str, Any]:
        """The OCI state (ociVersion, id, status, pid, bundle, ...)."""
        return self.record().oci_state()

    @property
    def status(self) -> str:
        return self.record().status()

    @property
    def pid(self) -> int:
        return self.record().pid

    def kill(self, signal: int | str = 15, all: bool = False) -> None:
        sig = control.parse_signal(signal) if isinstance(signal, str) else signal
        control.kill(self.root, self.id, sig, all_processes=all)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the container's process to exit; its exit code (128+N if killed by
        signal N). The container must have been created by this process."""
        record = self.record()
        if timeout is not None and not _wait_exit(record.pid, timeout):
            raise TimeoutError(f"container {self.id} still running after {timeout}s")
        return control.wait(record)

    def delete(self, force: bool = False) -> None:
        control.delete(self.root, self.id, force=force)

    # -- resources (cgroups) -----------------------------------------------------------

    def pause(self) -> None:
        from contain.container import resources as api

        api.pause(self.root, self.id)

    def resume(self) -> None:
        from contain.container import resources as api

        api.resume(self.root, self.id)

    def update(self, resources: dict[str, Any]) -> None:
        from contain.container import resources as api

        api.update(self.root, self.id, resources)

    def stats(self) -> Any:
        from contain.container import resources as api

        return api.stats(self.root, self.id)

    def processes(self) -> list[int]:
        from contain.container import resources as api

        return api.processes(self.root, self.id)

    def exec(self, args: list[str], **options: Any) -> int:
        """Run *args* inside the container (as ``contain exec``); its exit code.

        The options are ``contain exec``'s (tty, env, cwd, user, detach, ...), and
        *forward_signals*: while the process runs, replace this process's handlers of
        the usual termination signals with ones that forward them to it (off by default;
        only from the main thread)."""
        from contain.cgroups import warm
        from contain.container.exec import ExecOptions, exec_process

        with warm.warming():
            return exec_process(self.root, self.id, ExecOptions(args=args, **options))

    def __repr__(self) -> str:
        return f"Container({self.id!r}, root={self.root!r})"


def _wait_exit(pid: int, timeout: float) -> bool:
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def list_containers(root: str | None = None) -> list[dict[str, Any]]:
    root = root or _default_root()
    out = []
    for cid in store.list_ids(root):
        try:
            out.append(store.load(root, cid).oci_state())
        except ContainError:
            continue
    return out


def _result_type() -> Any:
    from contain.sandbox.runner import Result

    return Result


class Sandbox:
    """A sandbox policy that runs many commands, each in a fresh sandbox under it.

        >>> sb = contain.Sandbox(rw=["~/project"], deny=["~/.ssh"], memory="1G",
        ...                      net="none")
        >>> r = sb.run(["make", "test"], cwd="/home/me/project", capture_output=True,
        ...            timeout=600)
        >>> r.returncode, r.stdout, r.rusage["max_rss_kib"], r.violations

    *policy* is a :class:`contain.sandbox.policy.Policy`, a dict of the policy file's
    sections, or the path of a policy file (TOML or JSON); keyword options (memory,
    pids, cpus, rw, ro, deny, tmpfs, protected, binds, net, env, cwd, hostname, userns,
    caps, seccomp, landlock, report, ...) add to it. Everything is validated here: a bad
    value raises ContainError (a TypeError too, for a value of the wrong type) naming
    the option, before any sandbox exists. Safe to use from any thread; each
    :meth:`run` is independent.
    """

    def __init__(self, policy: Any = None, *, root: str | None = None,
                 **options: Any) -> None:
        from contain.sandbox.policy import resolve

        self.policy = resolve(policy, options)
        if root is not None and not isinstance(root, str):
            from contain.sandbox.policy import PolicyTypeError

            raise PolicyTypeError("root", "expected a directory path")
        self.root = root or _default_root()

    def run(self, args: list[str], *, input: bytes | str | None = None,
            timeout: float | None = None, capture_output: bool = False,
            stdin: Any = None, stdout: Any = None, stderr: Any = None,
            on_output: Any = None, check: bool = False, forward_signals: bool = False,
            **options: Any) -> Any:
        """Run *args* in a new sandbox under this policy and wait for it; a
        :class:`contain.sandbox.runner.Result`.

        *input* (bytes, or str as UTF-8) is fed to stdin; *capture_output* collects
        stdout and stderr; *on_output(stream, data)* is called with each chunk as it
        comes ("stdout"/"stderr"); *stdin*/*stdout*/*stderr* may be files or fds to use
        instead. *timeout* (seconds) kills the whole sandbox and raises
        :class:`contain.sandbox.runner.SandboxTimeout` (a TimeoutError; its ``result``
        has the output so far). *forward_signals* replaces this process's handlers of
        the usual termination signals with ones that forward them to the sandbox while
        it runs (off by default: a library should not take its caller's signals; only
        from the main thread); without it, safe to call from any thread. *options*
        override the policy for this command only (cwd="/src", env=["A=1"], ...)."""
        from contain.sandbox.policy import check_run_call, resolve
        from contain.sandbox.report import Reporter
        from contain.sandbox.runner import build, checked, execute

        data, seconds = check_run_call(
            input, timeout, {"capture_output": capture_output, "check": check,
                             "forward_signals": forward_signals}, on_output)
        pol = resolve(self.policy, options) if options else self.policy
        built = build(pol, args, self.root)
        reporter = Reporter(pol.report.target)
        try:
            result = execute(built, list(args), self.root, reporter,
                             capture=capture_output, input=data, timeout=seconds,
                             stdin=stdin, stdout=stdout, stderr=stderr, on_output=on_output,
                             forward_signals=forward_signals)
        finally:
            reporter.close()
        return checked(result, args, timeout, check)

    def __repr__(self) -> str:
        return f"Sandbox(root={self.root!r})"


class Pool:
    """Sandboxes made ahead under one policy, for many short commands: each
    :meth:`run` hands one its command (a fresh sandbox per call, never reused) while a
    background thread makes the next and removes the used one.

        >>> with contain.Pool(size=2, memory="256M", net="none") as pool:
        ...     pool.run(["/bin/true"]).returncode
        ...     pool.run(["sh", "-c", "echo hi"], capture_output=True).stdout

    *policy* and the keyword options are :class:`Sandbox`'s, validated here (a bad one
    raises before anything exists); *size* (1 to 64, default 2) is how many sandboxes
    are kept ready, each a waiting process, a cgroup and a state directory. :meth:`run`
    takes :meth:`Sandbox.run`'s arguments and returns the same result; a call with
    policy options of its own (``cwd=...``) runs unpooled, as :meth:`Sandbox.run`. When
    the pool is empty a call waits for the sandbox being made. Close the pool (or use it
    as a context manager); an unclosed one is closed when it is collected or the
    interpreter exits. In a child of ``os.fork`` every call runs unpooled (the ready
    sandboxes are the parent's). Safe to use from several threads. See
    docs/sandbox.md, "A pool of ready sandboxes".
    """

    def __init__(self, policy: Any = None, *, size: int = 2, root: str | None = None,
                 **options: Any) -> None:
        from contain.sandbox.pool import Pool as Machinery

        self.sandbox = Sandbox(policy, root=root, **options)
        self._pool = Machinery(self.sandbox.policy, self.sandbox.root, size,
                               self.sandbox.run)

    @property
    def size(self) -> int:
        return self._pool.size

    @property
    def ready(self) -> int:
        """How many sandboxes are ready now."""
        return self._pool.ready

    @property
    def closed(self) -> bool:
        return self._pool.closed

    def run(self, args: list[str], *, input: bytes | str | None = None,
            timeout: float | None = None, capture_output: bool = False,
            stdin: Any = None, stdout: Any = None, stderr: Any = None,
            on_output: Any = None, check: bool = False, forward_signals: bool = False,
            **options: Any) -> Any:
        """Run *args* in a ready sandbox and wait for it; the arguments and the result
        are :meth:`Sandbox.run`'s. With *options* (policy for this call only), in a new
        sandbox instead, unpooled."""
        return self._pool.run(args, input=input, timeout=timeout,
                              capture_output=capture_output, stdin=stdin, stdout=stdout,
                              stderr=stderr, on_output=on_output, check=check,
                              forward_signals=forward_signals, **options)

    def close(self) -> None:
        """Stop making sandboxes; kill and remove the ready ones (idempotent)."""
        self._pool.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pool(size={self.size}, root={self.sandbox.root!r}, ready={self.ready})"


def run(args: list[str], *, capture_output: bool = False, input: bytes | str | None = None,
        timeout: float | None = None, root: str | None = None, policy: Any = None,
        forward_signals: bool = False, **options: Any) -> Any:
    """Run *args* in a host-root sandbox (as ``contain sandbox``) and wait for it:
    ``Sandbox(policy, root=root, **options).run(args, ...)``.

    With *capture_output*, stdout and stderr are returned as bytes; *input* is fed to
    stdin. *timeout* kills the sandbox and raises TimeoutError. Options: memory, pids,
    cpus, binds, net, env, cwd, hostname, userns, caps, seccomp, rw, ro, deny, tmpfs,
    protected, landlock, report (see :class:`Sandbox`); all are checked before anything
    starts. *forward_signals*: see :meth:`Sandbox.run` (off by default; without it,
    safe to call from any thread)."""
    return Sandbox(policy, root=root, **options).run(
        args, capture_output=capture_output, input=input, timeout=timeout,
        forward_signals=forward_signals)


def __getattr__(name: str) -> Any:
    if name == "RunResult":
        return _result_type()
    raise AttributeError(f"module 'contain.api' has no attribute {name!r}")
