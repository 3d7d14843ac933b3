"""Isolation measured: the attack surface from a process's own filters, interference
between neighbours, and the ordinal scale (survey 8.1, 8.2).

Real kernel throughout: the filters are compiled by libseccomp, loaded in real
processes and read back with ptrace; the neighbours are real containers and sandboxes.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from contain.inspect import filtereval
from contain.inspect.interception import seccomp_interception
from contain.security import seccomp as sec
from contain.spec.config import Seccomp


def _filtered_child(profile: dict) -> int:
    prog = sec.compile_filter(Seccomp.decode(profile, "$.linux.seccomp"))
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            from contain.linux.syscalls import prctl

            prctl(38, 1)
            sec.load_filter(prog)
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


def test_surface_is_what_the_kernel_would_do() -> None:
    """The filters read back from a live process and run offline agree with the
    profile: denied names refused, notified ones decided in user space, the rest
    reach the kernel; with no filter, every call reaches it."""
    pid = _filtered_child({
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock",
        "syscalls": [{"names": ["uname", "mount", "getppid"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}]})
    try:
        icpt = seccomp_interception(pid, 1, 0, surface=True)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    s = icpt["surface"]
    assert s["refused"] == 3 and s["user_space"] == 1
    assert s["user_space_names"] == ["getcwd"]
    assert s["reach_kernel"] == s["total"] - 4
    assert "uname" not in s["reach_names"] and "getpid" in s["reach_names"]
    bare = filtereval.surface([])
    assert bare["reach_kernel"] == bare["total"] == s["total"]


def test_argument_rules_count_as_reachable_with_some_arguments() -> None:
    """A call allowed only for some argument values reaches the kernel (with those)."""
    pid = _filtered_child({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                     {"names": ["exit_group", "write", "clock_nanosleep"],
                      "action": "SCMP_ACT_ALLOW"}]})
    try:
        s = seccomp_interception(pid, 1, 0, surface=True)["surface"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert sorted(s["reach_names"]) == ["clock_nanosleep", "exit_group", "personality",
                                        "write"]


def test_a_corrupt_program_is_an_error_not_a_verdict() -> None:
    with pytest.raises(filtereval.FilterError):
        filtereval.run(b"\x20\x00\x00\x00\x00\x10\x00\x00", 0, 0xC000003E)  # ld [4096]
