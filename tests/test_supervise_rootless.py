"""Syscall supervisors run by a real unprivileged user (made for these tests by
test_rootless's ``user`` fixture: useradd, removed afterwards), through
``contain sandbox --supervise``: the supervisor is then the user's own process, the
workload runs in a user namespace the user owns, and the kernel's ptrace checks apply
to the listener's hand-over and to the seizes (no CAP_SYS_PTRACE anywhere)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from test_rootless import User, user  # noqa: F401  (the fixture)

PY = "/usr/bin/python3"

SCRIPT = """
import os
print(os.getppid(), os.uname().release, flush=True)
try:
    os.mkdir('/tmp/x')
    print('made', flush=True)
except OSError as e:
    print('mkdir', e.errno, flush=True)
pid = os.fork()
if pid == 0:
    try:
        os.rmdir('/tmp')
    except OSError as e:
        print('child rmdir', e.errno, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
os.chdir('/')
os.setsid()  # killed here
print('not killed')
"""


def _policy(path: Path) -> str:
    path.write_text(json.dumps({
        "mkdir": {"action": "deny", "errno": "EROFS"},
        "getppid": {"action": "emulate", "handler": "return", "value": 77},
        "uname": {"action": "emulate", "handler": "uname", "release": "9.9-rootless"},
        "rmdir": "log",
        "setsid": "kill",
    }))
    os.chown(path, os.stat(path.parent).st_uid, -1)
    return str(path)


def _report(user: User) -> Path:  # noqa: F811
    return user.home / f"report-{os.urandom(4).hex()}.jsonl"


@pytest.mark.parametrize("supervisor", ["notify", "ptrace"])
def test_rootless_supervision(user: User, supervisor: str) -> None:  # noqa: F811
    """deny, emulate (return, uname), log and kill, seen from inside a workload run by
    an unprivileged user, a forked child included; the supervisor is the user's."""
    pol = _policy(user.home / f"policy-{supervisor}.json")
    report = _report(user)
    proc = user.contain("sandbox", "--supervise", pol, "--supervisor", supervisor,
                        "--supervise-report", str(report), "--", PY, "-c", SCRIPT,
                        timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    # rmdir is logged, so allowed: the read-only root refuses it
    assert lines == ["77 9.9-rootless", "mkdir 30", "child rmdir 30"], \
        (proc.returncode, proc.stdout, proc.stderr)
    assert proc.returncode != 0  # killed at setsid
    evs = [json.loads(line) for line in report.read_text().splitlines()]
    assert [e["action"] for e in evs if e["syscall"] in ("mkdir", "rmdir", "setsid")] == \
        ["deny", "log", "kill"]
    assert all(e["supervisor"] == supervisor for e in evs)
    report.unlink()


def test_rootless_refuses_root_handlers(user: User) -> None:  # noqa: F811
    """The handlers that need root's privileges on the host (open, mknod, mount) are
    refused by name for a rootless supervisor, before anything runs."""
    path = user.home / "open-policy.json"
    path.write_text(json.dumps({"openat": {"action": "emulate", "handler": "open",
                                           "paths": {"/tmp": "rw"}}}))
    proc = user.contain("sandbox", "--supervise", str(path), "--", PY, "-c", "print(1)")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "$.openat.handler: handler 'open' needs a supervisor running as root" in \
        proc.stderr
    assert "Traceback" not in proc.stderr
    root = user.runtime_dir / "contain"  # no container, no supervisor socket left
    assert not [p for p in root.glob("*") if not p.name.startswith(".")]
    assert not list(root.glob(".supervise/*"))
