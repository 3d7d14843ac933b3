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
        stdio: tuple[int, int, int] | None = None, timeout: float | None = None) -> None:
    """Run ``criu ACTION OPTIONS... -o LOG -v4`` with the log in *log_dir*; a failure
    raises CriuError with CRIU's first error line and the log's path."""
    import subprocess

    log = os.path.join(log_dir, log_name)
    argv = [find(criu), action, *options, "-o", log_name, "-v4"]
    if stdio is None:
        stdin, stdout, stderr = subprocess.DEVNULL, subprocess.PIPE, subprocess.STDOUT
    else:
        stdin, stdout, stderr = stdio
    try:
        proc = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                              pass_fds=tuple(pass_fds), preexec_fn=preexec, timeout=timeout,
                              close_fds=True)
    except (OSError, subprocess.TimeoutExpired, subprocess.SubprocessError) as exc:
        raise CriuError(f"criu {action}: {exc}") from exc
    if proc.returncode == 0:
        return
    text = ""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        pass
    if isinstance(proc.stdout, bytes):
        text += "\n" + proc.stdout.decode(errors="replace")
    why = first_error(text) or f"exit status {proc.returncode}"
    where = f" (log: {log})" if os.path.exists(log) else ""
    raise CriuError(f"criu {action} failed: {why}{where}")
