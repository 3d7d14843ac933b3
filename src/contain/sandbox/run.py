"""Running a host-root sandbox to completion (``contain sandbox`` and ``contain.run``)."""

from __future__ import annotations

import os

from contain.container.control import delete, run_poststart, wait
from contain.container.lifecycle import CreateOptions, create

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
                terminal: bool = False, supervise: Any = None, supervisor: str | None = None,
                supervise_report: str | int | None = None, record: str | None = None,
                enforce: str | None = None,
                **options: Any) -> tuple[int, bytes | None, bytes | None]:
    """Run *args* in a sandbox; return (exit code, stdout, stderr) (output only when
    *capture*). *supervise* (a policy), *record* or *enforce* (an OCI seccomp profile
    file) put it in the sandbox class: see contain.sandbox.supervise."""
    from contain.process.foreground import become_subreaper, run_container
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

            def after(record: Any) -> None:
                sup.attach(record.pid)
        if not capture and input is None and timeout is None:
            return run_container(root, cid, bundle, spec, opts, after_create=after), None, None
        become_subreaper()
        return _run_captured(root, cid, bundle, spec, opts, capture, input, timeout, after)
    except BaseException:
        if sup is not None:
            sup.kill()
        raise
    finally:
        if sup is not None:
            sup.finish()
        _remove_bundle(bundle)


def _run_captured(root: str, cid: str, bundle: str, spec: Any, opts: CreateOptions,
                  capture: bool, input: bytes | None, timeout: float | None,
                  after_create: Any = None) -> tuple[int, bytes | None, bytes | None]:
    import select
    import time

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
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    pending = memoryview(input or b"")
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if after_create is not None:
            from contain.container.control import start

            after_create(record)
            start(root, cid)
        else:
            run_poststart(record)
        pidfd = os.pidfd_open(record.pid)
        readers = [fd for fd in (out_r, err_r) if fd >= 0]
        writers = [stdin_w] if stdin_w >= 0 else []
        if writers and not pending:
            os.close(stdin_w)
            ours.remove(stdin_w)
            writers = []
        exited = False
        try:
            while readers or writers or not exited:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    os.kill(record.pid, 9)
                    raise TimeoutError(f"sandbox {args_text(spec)} timed out after {timeout}s")
                watch = readers + ([] if exited else [pidfd])
                if exited:  # drain what is left, without waiting on a stray writer
                    left = 1.0 if left is None else min(left, 1.0)
                r, w, _ = select.select(watch, writers, [], left)
                if pidfd in r:
                    exited = True
                for fd in r:
                    if fd == pidfd:
                        continue
                    data = os.read(fd, 65536)
                    if data:
                        chunks[fd].append(data)
                    else:
                        readers.remove(fd)
                if w:
                    try:
                        n = os.write(stdin_w, pending[:65536])
                    except BrokenPipeError:
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        os.close(stdin_w)
                        ours.remove(stdin_w)
                        writers = []
                if exited and not r:
                    break
        finally:
            os.close(pidfd)
        code = wait(record)
    finally:
        for fd in ours:
            os.close(fd)
        delete(root, cid, force=True)
    out = b"".join(chunks[out_r]) if capture else None
    err = b"".join(chunks[err_r]) if capture else None
    return code, out, err


def args_text(spec: Any) -> str:
    return " ".join(spec.process.args) if spec.process else "?"

