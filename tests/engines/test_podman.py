"""Podman (through conmon) driving contain as its OCI runtime: `podman --runtime contain`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import IMAGE_NAME, Podman, run, subcommand, unique

pytestmark = pytest.mark.engines


class Ctr:
    def __init__(self, pm: Podman, name: str, mark: int) -> None:
        self.pm = pm
        self.name = name
        self.mark = mark

    def calls(self) -> list[str]:
        return self.pm.session.calls_since(self.mark, "podman-runtime")

    def why(self) -> str:
        return self.pm.diagnose(self.mark)

    def status(self) -> str:
        proc = self.pm.podman("inspect", "--format", "{{.State.Status}}", self.name)
        return proc.stdout.strip()

    def wait_status(self, want: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.status()
            if status == want:
                break
            time.sleep(0.1)
        return status


def _rm(pm: Podman, name: str) -> None:
    pm.podman("rm", "--force", "--time", "0", name, timeout=120)


@pytest.fixture
def container(podman: Podman) -> Iterator[Ctr]:
    """A detached container that prints a line and then sleeps."""
    name = unique("pm")
    mark = podman.session.mark()
    c = Ctr(podman, name, mark)
    try:
        proc = podman.podman("run", "--detach", "--name", name, *podman.run_flags(), IMAGE_NAME,
                             "sh", "-c", "echo started-$(hostname); exec sleep 600")
        assert proc.returncode == 0, f"podman run -d failed: {proc.stderr}\n{c.why()}"
        assert c.wait_status("running") == "running", c.why()
        yield c
    finally:
        _rm(podman, name)


def test_run_attached_exit_code(podman: Podman) -> None:
    name = unique("pm")
    mark = podman.session.mark()
    try:
        proc = podman.podman("run", "--rm", "--name", name, *podman.run_flags(), IMAGE_NAME,
                             "sh", "-c", "echo hello; echo oops >&2; exit 3")
        why = podman.diagnose(mark)
        assert proc.returncode == 3, f"{proc.stdout}\n{proc.stderr}\n{why}"
        assert "hello" in proc.stdout and "oops" in proc.stderr, why
    finally:
        _rm(podman, name)
    names = [subcommand(c) for c in podman.session.calls_since(mark, "podman-runtime")]
    assert "create" in names and "start" in names and "delete" in names, names


def test_run_with_tty(podman: Podman) -> None:
    name = unique("pm")
    mark = podman.session.mark()
    try:
        proc = podman.podman("run", "--rm", "--tty", "--name", name, *podman.run_flags(),
                             IMAGE_NAME, "sh", "-c", "tty; exit 2")
        why = podman.diagnose(mark)
        assert proc.returncode == 2, f"{proc.stdout}\n{proc.stderr}\n{why}"
        assert "/dev/pts/0" in proc.stdout, why
    finally:
        _rm(podman, name)
    create = next(c for c in podman.session.calls_since(mark, "podman-runtime")
                  if subcommand(c) == "create")
    assert "--console-socket" in create, create


def test_run_rm_leaves_nothing(podman: Podman) -> None:
    name = unique("pm")
    mark = podman.session.mark()
    before = set(podman.runtime_root.iterdir())
    proc = podman.podman("run", "--rm", "--name", name, *podman.run_flags(), IMAGE_NAME,
                         "/bin/true")
    assert proc.returncode == 0, f"{proc.stderr}\n{podman.diagnose(mark)}"
    listed = podman.podman("ps", "--all", "--format", "{{.Names}}").stdout.split()
    assert name not in listed
    # (the compiled seccomp filters are a cache the first container may create)
    left = {p for p in set(podman.runtime_root.iterdir()) - before if p.name != ".seccomp-cache"}
    assert not left, f"runtime state left behind: {left}\n{podman.diagnose(mark)}"


def test_detached_logs_and_ps(container: Ctr) -> None:
    pm = container.pm
    deadline = time.monotonic() + 20
    logs = ""
    while time.monotonic() < deadline and "started-" not in logs:
        logs = pm.podman("logs", container.name).stdout
        time.sleep(0.1)
    assert "started-" in logs, container.why()
    listed = pm.podman("ps", "--format", "{{.Names}} {{.Status}}").stdout
    assert any(line.startswith(container.name + " Up") for line in listed.splitlines()), listed


def test_exec(container: Ctr) -> None:
    proc = container.pm.podman("exec", container.name, "sh", "-c",
                               "echo out; echo err >&2; cat /proc/1/cmdline; exit 4")
    assert proc.returncode == 4, f"{proc.stdout}\n{proc.stderr}\n{container.why()}"
    assert "out" in proc.stdout and "err" in proc.stderr
    assert "sleep\x00600" in proc.stdout, "exec did not join the container's pid namespace"
    execs = [c for c in container.calls() if subcommand(c) == "exec"]
    assert execs and "--process" in execs[0], container.calls()


def test_exec_tty(container: Ctr) -> None:
    proc = container.pm.podman("exec", "--tty", container.name, "sh", "-c", "tty")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{container.why()}"
    assert "/dev/pts/" in proc.stdout, proc.stdout


def test_pause_unpause(container: Ctr) -> None:
    pm = container.pm
    proc = pm.podman("pause", container.name)
    assert proc.returncode == 0, f"{proc.stderr}\n{container.why()}"
    assert container.status() == "paused", container.why()
    proc = pm.podman("unpause", container.name)
    assert proc.returncode == 0, f"{proc.stderr}\n{container.why()}"
    assert container.status() == "running", container.why()


def test_stop(container: Ctr) -> None:
    pm = container.pm
    # sleep as pid 1 ignores SIGTERM: podman escalates to SIGKILL after the timeout
    proc = pm.podman("stop", "--time", "1", container.name)
    assert proc.returncode == 0, f"{proc.stderr}\n{container.why()}"
    assert container.wait_status("exited") == "exited", container.why()
    code = pm.podman("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout
    assert code.strip() == "137", code
    kills = [c.split()[-1] for c in container.calls() if subcommand(c) == "kill"]
    assert kills[:1] == ["15"] and "9" in kills, container.calls()


def test_kill_and_rm(container: Ctr) -> None:
    pm = container.pm
    proc = pm.podman("kill", "--signal", "KILL", container.name)
    assert proc.returncode == 0, f"{proc.stderr}\n{container.why()}"
    assert container.wait_status("exited") == "exited", container.why()
    proc = pm.podman("rm", container.name)
    assert proc.returncode == 0, f"{proc.stderr}\n{container.why()}"
    assert container.name not in pm.podman("ps", "-a", "--format", "{{.Names}}").stdout


def test_detached_nonzero_exit(podman: Podman) -> None:
    name = unique("pm")
    mark = podman.session.mark()
    c = Ctr(podman, name, mark)
    try:
        proc = podman.podman("run", "--detach", "--name", name, *podman.run_flags(), IMAGE_NAME,
                             "sh", "-c", "exit 7")
        assert proc.returncode == 0, f"{proc.stderr}\n{c.why()}"
        proc = podman.podman("wait", name)
        assert proc.stdout.strip() == "7", f"{proc.stdout}{proc.stderr}\n{c.why()}"
    finally:
        _rm(podman, name)


def test_runtime_error_reaches_user(podman: Podman) -> None:
    name = unique("pm")
    mark = podman.session.mark()
    try:
        proc = podman.podman("run", "--rm", "--name", name, *podman.run_flags(), IMAGE_NAME,
                             "/no/such/binary")
        assert proc.returncode != 0
        assert "/no/such/binary" in proc.stderr, f"{proc.stderr}\n{podman.diagnose(mark)}"
    finally:
        _rm(podman, name)


@pytest.mark.parametrize("supervisor", ["notify", "ptrace"])
def test_annotated_container_is_supervised(podman: Podman, tmp_path: Path,
                                           supervisor: str) -> None:
    """`podman run --annotation org.contain.supervise=...`: the workload runs in the
    sandbox class (its mkdir is denied by contain's syscall supervisor and reported),
    and no supervisor outlives the container."""
    import json
    import os

    name = unique("pm")
    report = tmp_path / "report.jsonl"
    # podman reads --annotation values as CSV: a file, not inline JSON with its quotes
    policy = tmp_path / "policy.toml"
    policy.write_text('mkdir = { action = "deny", errno = "EROFS" }\n')
    mark = podman.session.mark()
    try:
        proc = podman.podman(
            "run", "--rm", "--name", name,
            "--annotation", f"org.contain.supervise={policy}",
            "--annotation", f"org.contain.supervisor={supervisor}",
            "--annotation", f"org.contain.supervise.report={report}",
            *podman.run_flags(), IMAGE_NAME,
            "sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?")
        why = podman.diagnose(mark)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{why}"
        assert "Read-only file system" in proc.stdout and "rc=1" in proc.stdout, why
    finally:
        _rm(podman, name)
    events = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(e["syscall"], e["action"], e["supervisor"]) for e in events] == [
        ("mkdir", "deny", supervisor)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in os.listdir("/proc") if p.isdigit() and
                _comm(p) == f"contain-{supervisor}"]
        if not left:
            break
        time.sleep(0.1)
    assert not left, "a supervisor outlived its container"


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_checkpoint_restore_resumes_a_counter(podman: Podman, tmp_path: Path) -> None:
    """`podman container checkpoint` / `restore` through contain (and CRIU): the restored
    counter goes on from where it was, not from 1. Podman finds CRIU on PATH and so does
    contain: a CRIU that works on this kernel goes first (tests/test_checkpoint.py)."""
    from test_checkpoint import working_criu

    criu = working_criu()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "criu").symlink_to(criu)
    env = dict(podman.env, PATH=f"{bindir}:{podman.env['PATH']}")
    name = unique("pm")
    mark = podman.session.mark()
    c = Ctr(podman, name, mark)

    def pm(*args: str) -> str:
        proc = run(podman.cmd(*args), env=env, timeout=180)
        assert proc.returncode == 0, f"podman {args[0]} {args[1] if len(args) > 1 else ''}:" \
            f" {proc.stderr}\n{c.why()}"
        return proc.stdout

    def numbers() -> list[int]:
        return [int(x) for x in pm("logs", name).split() if x.isdigit()]

    try:
        pm("run", "--detach", "--name", name, *podman.run_flags(), IMAGE_NAME, "sh", "-c",
           "i=0; while :; do i=$((i+1)); echo $i; usleep 50000; done")
        assert c.wait_status("running") == "running", c.why()
        wait_until(lambda: len(numbers()) >= 5)
        pm("container", "checkpoint", name)
        assert c.wait_status("exited") == "exited", c.why()
        dumped = numbers()
        assert dumped == list(range(1, len(dumped) + 1))
        assert "checkpoint" in [subcommand(call) for call in c.calls()], c.calls()
        pm("container", "restore", name)
        assert c.wait_status("running") == "running", c.why()
        wait_until(lambda: len(numbers()) >= len(dumped) + 5)
        seq = numbers()
        assert seq == list(range(1, len(seq) + 1)), (len(dumped), seq)
        assert "restore" in [subcommand(call) for call in c.calls()], c.calls()
    finally:
        _rm(podman, name)


def wait_until(pred: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
