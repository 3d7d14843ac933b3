"""Running a host-root sandbox to completion (``contain sandbox`` and ``contain.run``)."""

from __future__ import annotations

import os

from contain.container.control import delete, run_poststart, wait
from contain.container.lifecycle import CreateOptions, create
from contain.container.run import run_container
from contain.process.foreground import ForwardSignals, become_subreaper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _new_id() -> str:
    return f"sandbox-{os.getpid()}-{os.urandom(4).hex()}"


def _bundle_dir(root: str, cid: str, binds: list[str] | tuple[str, ...]) -> str:
    """The sandbox's bundle. Its rootfs is only a mount point when the host's root is
    bound as a whole: one such bundle serves every sandbox (each mounts on it in its own
    mount namespace) and is kept. A skeleton root is the sandbox's own."""
    from contain.sandbox.host import make_skeleton, needs_skeleton

    if not needs_skeleton(binds):
        bundle = os.path.join(root, ".sandbox", "host-root")
        if not os.path.isdir(os.path.join(bundle, "rootfs")):
            os.makedirs(os.path.join(bundle, "rootfs"), mode=0o755, exist_ok=True)
        return bundle
    bundle = os.path.join(root, ".sandbox", cid)
    os.makedirs(os.path.join(bundle, "rootfs"), mode=0o700)
    os.chmod(os.path.join(bundle, "rootfs"), 0o755)
    make_skeleton(os.path.join(bundle, "rootfs"), binds)
    return bundle


def _remove_bundle(bundle: str) -> None:
    if os.path.basename(bundle) == "host-root":
        return  # shared, kept
    from contain.sandbox.host import remove_skeleton

    remove_skeleton(os.path.join(bundle, "rootfs"))
    try:
        os.rmdir(bundle)
    except OSError:
        pass


def run_sandbox(args: list[str], *, root: str, capture: bool = False,
                input: bytes | None = None, timeout: float | None = None,
                terminal: bool = False, forward_signals: bool = False,
                supervise: Any = None, supervisor: str | None = None,
                supervise_report: str | int | None = None, record: str | None = None,
                enforce: str | None = None,
                **options: Any) -> tuple[int, bytes | None, bytes | None]:
    """Run *args* in a sandbox; return (exit code, stdout, stderr) (output only when
    *capture*). *forward_signals* (the CLI's choice; main thread only) forwards the
    usual termination signals sent to the caller to the sandbox while it runs.
    *supervise* (a policy), *record* or *enforce* (an OCI seccomp profile file) put it
    in the sandbox class: see contain.sandbox.supervise and docs/supervise.md."""
    from contain.sandbox.host import sandbox_spec
    from contain.spec.config import Spec

    config = sandbox_spec(args, terminal=terminal, **options)
    sup = None
    if supervise is not None or record or enforce:
        from contain.sandbox.supervise import supervisor_for

        sup = supervisor_for(supervise, supervisor, root=root, report=supervise_report,
                             record=record, enforce=enforce,
                             hostname=config.get("hostname") or "sandbox")
        config = sup.prepare(config)
    spec = Spec.decode(config)
    cid = _new_id()
    bundle = _bundle_dir(root, cid, options.get("binds", ()))
    opts = CreateOptions()
    # no limit asked, no cgroup made: the PID namespace already ends every process of
    # the sandbox with its first one (a cgroup costs ~6 ms to make, join and remove)
    opts.no_cgroup = spec.linux is None or spec.linux.resources is None
    after = None
    try:
        if sup is not None:
            sup.start()

            def after(created: Any) -> None:
                sup.attach(created.pid)
        if opts.no_cgroup:  # (and no import of contain.cgroups either)
            return _run(root, cid, bundle, spec, opts, capture, input, timeout,
                        forward_signals, after)
        from contain.cgroups import warm

        # a cgroup to join: the attach finds the cgroup lock warm (see cgroups/warm.py)
        with warm.warming():
            return _run(root, cid, bundle, spec, opts, capture, input, timeout,
                        forward_signals, after)
    except BaseException:
        if sup is not None:
            sup.kill()
        raise
    finally:
        if sup is not None:
            sup.finish()
        _remove_bundle(bundle)


def _run(root: str, cid: str, bundle: str, spec: Any, opts: CreateOptions, capture: bool,
         input: bytes | None, timeout: float | None, forward_signals: bool,
         after_create: Any = None) -> tuple[int, bytes | None, bytes | None]:
    if not capture and input is None and timeout is None:
        return run_container(root, cid, bundle, spec, opts, forward_signals=forward_signals,
                             after_create=after_create), None, None
    become_subreaper()
    if not forward_signals:
        return _run_captured(root, cid, bundle, spec, opts, capture, input, timeout,
                             after_create=after_create)
    with ForwardSignals() as forward:
        return _run_captured(root, cid, bundle, spec, opts, capture, input, timeout,
                             forward, after_create)


def _run_captured(root: str, cid: str, bundle: str, spec: Any, opts: CreateOptions,
                  capture: bool, input: bytes | None, timeout: float | None,
                  forward: ForwardSignals | None = None, after_create: Any = None,
                  ) -> tuple[int, bytes | None, bytes | None]:
    import signal
    import time

    # a supervisor attaches between create and start
    opts.start_now = after_create is None
    ours: list[int] = []
    theirs: list[int] = []
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC) if input is not None else (0, -1)
    out_r, out_w = os.pipe2(os.O_CLOEXEC) if capture else (-1, 1)
    err_r, err_w = os.pipe2(os.O_CLOEXEC) if capture else (-1, 2)
    for fd in (stdin_w, out_r, err_r):
        if fd >= 0:
            ours.append(fd)
    for fd, std in ((stdin_r, 0), (out_w, 1), (err_w, 2)):
        if fd != std:
            theirs.append(fd)
    opts.stdio = (stdin_r, out_w, err_w)
    try:
        record = create(root, cid, bundle, opts, spec=spec)
    except BaseException:
        for fd in ours + theirs:
            os.close(fd)
        raise
    for fd in theirs:
        os.close(fd)
    if forward is not None:
        forward.attach(record.pid)
    from contain.process.pump import Pump

    deadline = None if timeout is None else time.monotonic() + timeout
    pump = Pump()
    out = pump.collect(out_r) if capture else None
    err = pump.collect(err_r) if capture else None
    try:
        if after_create is not None:
            from contain.container.control import start

            after_create(record)
            start(root, cid)
        else:
            run_poststart(record)
        pidfd = os.pidfd_open(record.pid)
        try:
            if stdin_w >= 0:
                ours.remove(stdin_w)
                pump.feed(stdin_w, input or b"")  # the pump closes it
            # once it has exited, its output is drained while it keeps coming within 1 s
            # (a stray process may still hold a pipe)
            if not pump.run(exit_fd=pidfd, deadline=deadline, linger=1.0):
                os.kill(record.pid, signal.SIGKILL)
                raise TimeoutError(f"sandbox {args_text(spec)} timed out after {timeout}s")
        finally:
            os.close(pidfd)
        code = wait(record)
    finally:
        for fd in ours:
            os.close(fd)
        delete(root, cid, force=True)
    return code, None if out is None else bytes(out), None if err is None else bytes(err)


def args_text(spec: Any) -> str:
    return " ".join(spec.process.args) if spec.process else "?"

