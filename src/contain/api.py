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


class RunResult:
    """What :func:`run` returns: the exit code and, when captured, the output."""

    __slots__ = ("args", "returncode", "stdout", "stderr")

    def __init__(self, args: list[str], returncode: int, stdout: bytes | None,
                 stderr: bytes | None) -> None:
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"RunResult(args={self.args!r}, returncode={self.returncode})"


def run(args: list[str], *, capture_output: bool = False, input: bytes | None = None,
        memory: str | int | None = None, pids: int | None = None, cpus: float | None = None,
        binds: list[str] | tuple[str, ...] = (), net: str = "none",
        env: list[str] | tuple[str, ...] = (), cwd: str = "/", hostname: str | None = None,
        userns: bool = False, caps: list[str] | tuple[str, ...] = (), seccomp: bool = True,
        timeout: float | None = None, root: str | None = None,
        forward_signals: bool = False, supervise: Any = None,
        supervisor: str | None = None, supervise_report: str | int | None = None,
        record: str | None = None, enforce: str | None = None) -> RunResult:
    """Run *args* in a host-root sandbox (as ``contain sandbox``) and wait for it.

    With *capture_output*, stdout and stderr are returned as bytes; *input* is fed to
    stdin. *timeout* kills the sandbox and raises TimeoutError. *forward_signals*
    replaces this process's handlers of the usual termination signals with ones that
    forward them to the sandbox while it runs (off by default: a library should not
    take its caller's signals; only from the main thread). Without it, safe to call
    from any thread.

    *supervise* (a policy: a dict, a SyscallPolicy, a file path or inline JSON; rules may
    be ``{"action": "ask", "callback": f}`` or just a callable) runs it under a syscall
    supervisor, *supervisor* = "notify" (default) or "ptrace"; decisions are reported as
    JSON lines to *supervise_report* (a path or an fd). *record* writes the OCI seccomp
    profile of every call made; *enforce* runs under such a profile, reporting what it
    denies. See docs/supervise.md."""
    from contain.sandbox.run import run_sandbox

    code, out, err = run_sandbox(
        list(args), root=root or _default_root(), capture=capture_output, input=input,
        timeout=timeout, memory=memory, pids=pids, cpus=cpus, binds=binds, net=net,
        env=env, cwd=cwd, hostname=hostname, userns=userns, caps=caps, seccomp=seccomp,
        forward_signals=forward_signals, supervise=supervise, supervisor=supervisor,
        supervise_report=supervise_report, record=record, enforce=enforce)
    return RunResult(list(args), code, out, err)
