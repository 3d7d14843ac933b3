"""containerd's runc v2 shim driving contain as its runtime binary (real daemon, real shim).

This is the path Kubernetes takes: kubelet -> CRI -> containerd -> containerd-shim-runc-v2
-> `<BinaryName> --root ... --log ... --log-format json create|start|exec|...`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from .conftest import IMAGE_NAME, Containerd, run_in_pty, subcommand, unique

pytestmark = pytest.mark.engines


def _task_status(ctd: Containerd, cid: str) -> str:
    out = ctd.ctr("task", "list").stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


def _wait_status(ctd: Containerd, cid: str, want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _task_status(ctd, cid)
        if status in (want, ""):  # "": no such task (any more)
            return status
        time.sleep(0.1)
    return status


def _remove(ctd: Containerd, cid: str) -> None:
    ctd.ctr("task", "kill", "--signal", "SIGKILL", cid, timeout=30)
    _wait_status(ctd, cid, "STOPPED", timeout=15)
    ctd.ctr("task", "delete", "--force", cid, timeout=60)
    ctd.ctr("containers", "delete", cid, timeout=60)


class Task:
    def __init__(self, ctd: Containerd, cid: str, mark: int) -> None:
        self.ctd = ctd
        self.id = cid
        self.mark = mark

    def calls(self) -> list[str]:
        return self.ctd.session.calls_since(self.mark, "containerd-runtime")

    def why(self) -> str:
        return self.ctd.diagnose(self.mark)


@pytest.fixture
def task(containerd: Containerd) -> Iterator[Task]:
    """A detached `sleep` task started through the shim with our runtime."""
    cid = unique("ctd")
    mark = containerd.session.mark()
    proc = containerd.ctr("run", "--detach", *containerd.run_flags(), IMAGE_NAME, cid,
                          "sleep", "600")
    t = Task(containerd, cid, mark)
    try:
        assert proc.returncode == 0, f"ctr run -d failed: {proc.stderr}\n{t.why()}"
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING", t.why()
        yield t
    finally:
        _remove(containerd, cid)


def test_run_attached_exit_code_and_output(containerd: Containerd) -> None:
    cid = unique("ctd")
    mark = containerd.session.mark()
    try:
        proc = containerd.ctr("run", "--rm", *containerd.run_flags(), IMAGE_NAME, cid,
                              "sh", "-c", "echo hello from $(hostname); exit 3")
        why = containerd.diagnose(mark)
        assert proc.returncode == 3, f"{proc.stdout}\n{proc.stderr}\n{why}"
        assert "hello from" in proc.stdout, why
    finally:
        _remove(containerd, cid)
    calls = containerd.session.calls_since(mark, "containerd-runtime")
    names = [subcommand(c) for c in calls]
    assert "create" in names and "start" in names and "delete" in names, calls
    create = next(c for c in calls if subcommand(c) == "create")
    # the shim always asks for JSON log lines in a file it reads on failure
    assert "--log-format json" in create and "--log " in create, create


def test_run_attached_with_tty(containerd: Containerd) -> None:
    cid = unique("ctd")
    mark = containerd.session.mark()
    try:
        code, out = run_in_pty(containerd.ctr_cmd(
            "run", "--rm", "--tty", *containerd.run_flags(), IMAGE_NAME, cid,
            "sh", "-c", "tty; [ -t 0 ] && echo stdin-is-a-tty; exit 5"))
        why = containerd.diagnose(mark)
        assert code == 5, f"{out}\n{why}"
        assert "/dev/pts/" in out and "stdin-is-a-tty" in out, f"{out}\n{why}"
    finally:
        _remove(containerd, cid)
    create = next(c for c in containerd.session.calls_since(mark, "containerd-runtime")
                  if subcommand(c) == "create")
    assert "--console-socket" in create, create


def test_run_detached_with_tty(containerd: Containerd) -> None:
    cid = unique("ctd")
    mark = containerd.session.mark()
    try:
        # ctr insists on a terminal for -t even when detaching
        code, out = run_in_pty(containerd.ctr_cmd(
            "run", "--detach", "--tty", *containerd.run_flags(), IMAGE_NAME, cid,
            "sleep", "600"))
        assert code == 0, f"{out}\n{containerd.diagnose(mark)}"
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING", containerd.diagnose(mark)
        proc = containerd.exec(cid, "sh", "-c", "tty < /proc/1/fd/0")
        assert "/dev/pts/" in proc.stdout, f"{proc.stdout}{proc.stderr}\n" \
                                           f"{containerd.diagnose(mark)}"
    finally:
        _remove(containerd, cid)


def test_task_exec(task: Task) -> None:
    proc = task.ctd.exec(task.id, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 4")
    assert proc.returncode == 4, f"{proc.stdout}\n{proc.stderr}\n{task.why()}"
    assert "exec-out" in proc.stdout and "exec-err" in proc.stderr, task.why()
    execs = [c for c in task.calls() if subcommand(c) == "exec"]
    assert execs and "--process" in execs[0] and "--detach" in execs[0], task.calls()


def test_task_exec_tty(task: Task) -> None:
    code, out = run_in_pty(task.ctd.exec_cmd(task.id, "sh", "-c", "tty; exit 6", tty=True))
    assert code == 6, f"{out}\n{task.why()}"
    assert "/dev/pts/" in out, f"{out}\n{task.why()}"


def test_task_exec_sees_container(task: Task) -> None:
    """The exec'd process is in the container's pid namespace: pid 1 is the sleep."""
    proc = task.ctd.exec(task.id, "cat", "/proc/1/cmdline")
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    assert proc.stdout.replace("\0", " ").strip() == "sleep 600", task.why()


def test_task_pause_resume(task: Task) -> None:
    ctd = task.ctd
    proc = ctd.ctr("task", "pause", task.id)
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    assert _task_status(ctd, task.id) == "PAUSED", task.why()
    proc = ctd.ctr("task", "resume", task.id)
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    assert _task_status(ctd, task.id) == "RUNNING", task.why()
    names = [subcommand(c) for c in task.calls()]
    assert "pause" in names and "resume" in names, task.calls()


def test_task_ps_and_metrics(task: Task) -> None:
    ctd = task.ctd
    proc = ctd.ctr("task", "ps", task.id)
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    pids = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert pids and all(p.isdigit() for p in pids), proc.stdout
    ps_calls = [c for c in task.calls() if subcommand(c) == "ps"]
    assert ps_calls and "--format json" in ps_calls[0], task.calls()
    proc = ctd.ctr("task", "metrics", task.id)
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    assert "memory.usage_in_bytes" in proc.stdout, proc.stdout
    assert "pids.current" in proc.stdout, proc.stdout


def test_task_kill_and_delete(task: Task) -> None:
    ctd = task.ctd
    proc = ctd.ctr("task", "kill", "--signal", "SIGKILL", task.id)
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    assert _wait_status(ctd, task.id, "STOPPED") == "STOPPED", task.why()
    proc = ctd.ctr("task", "delete", task.id)
    assert proc.returncode == 0, f"{proc.stderr}\n{task.why()}"
    assert "137" in proc.stderr or proc.stdout == "", proc.stderr  # killed by SIGKILL
    proc = ctd.ctr("containers", "delete", task.id)
    assert proc.returncode == 0, proc.stderr
    names = [subcommand(c) for c in task.calls()]
    assert "kill" in names and "delete" in names, task.calls()


def test_detached_nonzero_exit(containerd: Containerd) -> None:
    cid = unique("ctd")
    mark = containerd.session.mark()
    try:
        proc = containerd.ctr("run", "--detach", *containerd.run_flags(), IMAGE_NAME, cid,
                              "sh", "-c", "exit 7")
        assert proc.returncode == 0, f"{proc.stderr}\n{containerd.diagnose(mark)}"
        assert _wait_status(containerd, cid, "STOPPED") == "STOPPED", containerd.diagnose(mark)
        proc = containerd.ctr("task", "delete", cid)
        assert proc.returncode == 0, proc.stderr
        assert "exit code 7" in proc.stderr, proc.stderr
    finally:
        _remove(containerd, cid)


def test_runtime_error_reaches_user(containerd: Containerd) -> None:
    """A runtime failure is reported by ctr with the runtime's own message (the shim
    reads the last error line of the runtime's --log file)."""
    cid = unique("ctd")
    mark = containerd.session.mark()
    try:
        proc = containerd.ctr("run", "--rm", *containerd.run_flags(), IMAGE_NAME, cid,
                              "/no/such/binary")
        assert proc.returncode != 0
        assert "/no/such/binary" in proc.stderr, f"{proc.stderr}\n{containerd.diagnose(mark)}"
    finally:
        _remove(containerd, cid)


def test_checkpoint_restore_resumes_a_counter(containerd: Containerd) -> None:
    """`ctr containers checkpoint --task` then `ctr containers restore --live` through
    the runc v2 shim and contain: the restored counter goes on from where it was. The
    shim runs `criu` from containerd's PATH, so a CRIU that works on this kernel must be
    first there (tests/test_checkpoint.py says which)."""
    import shutil

    from test_checkpoint import working_criu

    criu = working_criu()
    on_path = shutil.which("criu")
    if on_path is None or os.path.realpath(on_path) != os.path.realpath(criu):
        pytest.skip(f"the CRIU that works here ({criu}) is not the `criu` on PATH, which "
                    "containerd's shim runs")
    cid = unique("ctd")
    ref = f"checkpoint/{cid}:1"
    mark = containerd.session.mark()
    why = lambda: containerd.diagnose(mark)  # noqa: E731

    def numbers() -> list[int]:
        out = containerd.exec(cid, "cat", "/count.log").stdout
        return [int(x) for x in out.split()]

    try:
        proc = containerd.ctr("run", "--detach", *containerd.run_flags(), IMAGE_NAME, cid,
                              "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i >> /count.log;"
                              " usleep 50000; done")
        assert proc.returncode == 0, f"{proc.stderr}\n{why()}"
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING", why()
        deadline = time.monotonic() + 30
        while len(numbers()) < 5:
            assert time.monotonic() < deadline, why()
            time.sleep(0.1)
        proc = containerd.ctr("containers", "checkpoint", "--task", "--rw", cid, ref,
                              timeout=180)
        assert proc.returncode == 0, f"{proc.stderr}\n{why()}"
        dumped = len(numbers())
        _remove(containerd, cid)
        proc = containerd.ctr("containers", "restore", "--live", "--rw", cid, ref,
                              timeout=180)
        assert proc.returncode == 0, f"{proc.stderr}\n{why()}"
        assert _wait_status(containerd, cid, "RUNNING") == "RUNNING", why()
        deadline = time.monotonic() + 30
        while len(numbers()) < dumped + 5:
            assert time.monotonic() < deadline, why()
            time.sleep(0.1)
        seq = numbers()
        assert seq == list(range(1, len(seq) + 1)), (dumped, seq)
        names = [subcommand(c) for c in containerd.session.calls_since(mark,
                                                                       "containerd-runtime")]
        assert "checkpoint" in names and "restore" in names, names
    finally:
        _remove(containerd, cid)
        containerd.ctr("images", "remove", ref, timeout=60)
