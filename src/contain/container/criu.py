"""Driving CRIU (Checkpoint/Restore In Userspace) through its command line.

runc talks to CRIU over the ``criu swrk`` RPC socket with protobuf messages; contain runs
the ``criu`` command with options instead. Everything runc's requests carry has an option
of the same meaning (``--external``, ``--ext-mount-map``, ``--inherit-fd``,
``--cgroup-root``, ``--manage-cgroups``, ``--freeze-cgroup``, ``--restore-sibling``,
``--pidfile``, ``--status-fd``, ...), the restored init's pid comes back in a pid file,
and CRIU's own log (``-o``, ``-v4``) is the record of what went wrong. What the RPC adds
-- notification callbacks between CRIU's steps, which runc uses to run hooks and set up
networks -- is not needed for what contain restores, and it would cost a protobuf
dependency (or an encoder of our own) on a path that otherwise needs none.

This module knows CRIU, not containers: the orchestration is container/checkpoint.py.
"""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# --manage-cgroups modes CRIU accepts (runc's --manage-cgroups-mode takes the same words)
CGROUP_MODES = ("soft", "full", "strict", "ignore")


class CriuError(ContainError):
    """CRIU failed; the message names the first error line of its log and the log."""


def find(criu: str) -> str:
    """The CRIU executable named by --criu (a path, or a name looked up in PATH)."""
    import shutil

    path = shutil.which(criu) if "/" not in criu else (criu if os.access(criu, os.X_OK)
                                                         else None)
    if path is None:
        raise ContainError(f"criu {criu!r} not found: install CRIU (Debian: apt-get install "
                           "criu) or name it with --criu")
    return path


def first_error(text: str) -> str:
    """The first ``Error (file:line): ...`` line of CRIU's output or log that says why
    it failed, without the timestamp and source position; "" if there is none. CRIU
    logs some errors it goes on after (raising its own RLIMIT_NOFILE, which this
    machine's root may not do): those are not the reason."""
    for line in text.splitlines():
        i = line.find("Error (")
        if i < 0:
            continue
        rest = line[i + len("Error ("):]
        j = rest.find("):")
        why = rest[j + 2:].strip() if j >= 0 else rest.strip()
        if not why.startswith(_NOT_FATAL):
            return why
    return ""


_NOT_FATAL = ("rlimit: Can't setup RLIMIT_NOFILE",)


def check(criu: str, feature: str | None = None) -> None:
    """``criu check`` (or ``criu check --feature F``): a CRIU that cannot work on this
    kernel (Debian 12's 3.17 does not know the vvar_vclock mapping of Linux 6.13+ and
    fails in its vDSO detection) is a one-line error before anything is done."""
    import subprocess

    argv = [find(criu), "check"] + (["--feature", feature] if feature else [])
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CriuError(f"criu check: {exc}") from exc
    out = proc.stdout + proc.stderr
    bad = proc.returncode != 0 or (feature is not None and "is supported" not in out) or \
        (feature is None and "Looks good" not in out)
    if bad:
        why = first_error(out) or (out.strip().splitlines() or ["failed"])[-1]
        what = f"criu check --feature {feature}" if feature else "criu check"
        raise CriuError(f"{what}: {why}")


def run(criu: str, action: str, options: Sequence[str], log_dir: str, log_name: str,
        pass_fds: Sequence[int] = (), preexec: Callable[[], None] | None = None,
        stdio: tuple[int, int, int] | None = None, timeout: float | None = None,
        on_action: Callable[[str], bool] | None = None, action_dir: str = "") -> None:
    """Run ``criu ACTION OPTIONS... -o LOG -v4`` with the log in *log_dir*; a failure
    raises CriuError with CRIU's first error line and the log's path.

    With *on_action*, CRIU's ``setup-namespaces`` step (its tasks exist, in their
    namespaces, not yet running) is handed to *on_action(init_pid)* through a small
    action script and two fifos in *action_dir*; CRIU goes on when it returns True and
    gives up when it returns False."""
    import subprocess

    log = os.path.join(log_dir, log_name)
    argv = [find(criu), action, *options, "-o", log_name, "-v4"]
    if stdio is None:
        stdin, stdout, stderr = subprocess.DEVNULL, subprocess.PIPE, subprocess.STDOUT
    else:
        stdin, stdout, stderr = stdio
    channel = _ActionChannel(action_dir) if on_action is not None else None
    if channel is not None:
        argv[2:2] = ["--action-script", channel.script]
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                pass_fds=tuple(pass_fds), preexec_fn=preexec, close_fds=True)
    except (OSError, subprocess.SubprocessError) as exc:
        if channel is not None:
            channel.close()
        raise CriuError(f"criu {action}: {exc}") from exc
    try:
        if channel is not None and on_action is not None:
            channel.serve(proc.pid, on_action)
        out, _ = proc.communicate(timeout=timeout)
    except BaseException as exc:
        proc.kill()
        proc.wait()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise CriuError(f"criu {action}: {exc}") from exc
        raise
    finally:
        if channel is not None:
            channel.close()
    if proc.returncode == 0:
        return
    text = ""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        pass
    if isinstance(out, bytes):
        text += "\n" + out.decode(errors="replace")
    why = first_error(text) or f"exit status {proc.returncode}"
    where = f" (log: {log})" if os.path.exists(log) else ""
    raise CriuError(f"criu {action} failed: {why}{where}")


# CRIU runs the action script at each step with the step's name in the environment;
# at setup-namespaces it asks contain (the fifo "req") and waits for the answer ("ack",
# opened read-write first, so that contain can open it without blocking)
_SCRIPT = """#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] || exit 0
exec 3<>'{ack}'
echo "$CRTOOLS_INIT_PID" > '{req}'
read answer <&3
[ "$answer" = ok ]
"""


class _ActionChannel:
    __slots__ = ("dir", "script", "req", "ack", "fds")

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.script = os.path.join(directory, "criu-action.sh")
        self.req = os.path.join(directory, "criu-action.req")
        self.ack = os.path.join(directory, "criu-action.ack")
        self.fds: list[int] = []
        os.mkfifo(self.req, 0o600)
        os.mkfifo(self.ack, 0o600)
        fd = os.open(self.script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
        try:
            os.write(fd, _SCRIPT.format(req=self.req, ack=self.ack).encode())
        finally:
            os.close(fd)
        # our own writer keeps the read end from reporting EOF between requests
        self.fds.append(os.open(self.req, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        self.fds.append(os.open(self.req, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))

    def serve(self, pid: int, on_action: Callable[[str], bool]) -> None:
        """Answer the script's requests until CRIU (*pid*) exits."""
        import select

        pidfd = os.pidfd_open(pid)
        try:
            buf = b""
            while True:
                ready, _, _ = select.select([self.fds[0], pidfd], [], [])
                if pidfd in ready:
                    return
                try:
                    buf += os.read(self.fds[0], 64)
                except BlockingIOError:
                    continue
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    answer = b"ok\n" if on_action(line.decode().strip()) else b"no\n"
                    ack = os.open(self.ack, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    try:
                        os.write(ack, answer)
                    finally:
                        os.close(ack)
        finally:
            os.close(pidfd)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        for path in (self.script, self.req, self.ack):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
