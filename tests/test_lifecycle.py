"""The OCI lifecycle on real containers: create/start/state/kill/delete, the state machine
(creating, created, running, stopped), runc's state JSON and list formats, a recycled
pid, concurrent creates of one id, `run` exit codes, --detach, --keep, --pid-file and
signal forwarding."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, fails, run_contain, unique_id, wait_for

STATE_KEYS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}


class Contain:
    """`contain --root R ...` with the container's stdio sent to files (a created or
    detached container keeps the runtime's stdio: a pipe would never reach EOF)."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        fd, out_path = tempfile.mkstemp(dir=self.tmp)
        fd2, err_path = tempfile.mkstemp(dir=self.tmp)
        try:
            with open(os.devnull, "rb") as null:
                proc = subprocess.run([*contain_cmd(), "--root", str(self.root), *args],
                                      stdin=null, stdout=fd, stderr=fd2, timeout=timeout)
        finally:
            os.close(fd)
            os.close(fd2)
        return subprocess.CompletedProcess(proc.args, proc.returncode,
                                           Path(out_path).read_text(),
                                           Path(err_path).read_text())

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, f"{args} -> {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self.ok("state", cid))

    def status(self, cid: str) -> str:
        return str(self.state(cid)["status"])


@pytest.fixture
def contain(state_root: Path, tmp_path: Path) -> Contain:
    return Contain(state_root, tmp_path)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


@pytest.fixture
def sleeper(make_bundle: Callable[..., Bundle]) -> Bundle:
    return make_bundle(["/bin/sleep", "1000"])


# -- the state machine -----------------------------------------------------------------------

def test_create_start_kill_delete(contain: Contain, sleeper: Bundle, state_root: Path) -> None:
    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    st = contain.state(cid)
    assert set(st) >= STATE_KEYS
    assert st["status"] == "created" and st["id"] == cid and st["pid"] > 0
    assert st["bundle"] == str(sleeper.path)
    assert st["rootfs"] == str(sleeper.rootfs)
    assert st["ociVersion"] == "1.2.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", st["created"])
    pid = st["pid"]
    assert (state_root / cid / "exec.fifo").exists()
    # created: the init waits, still the runtime, not yet the program
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()

    contain.ok("start", cid)
    st = contain.state(cid)
    assert st["status"] == "running" and st["pid"] == pid
    assert not (state_root / cid / "exec.fifo").exists()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"/bin/sleep", b"1000"]

    fails(contain("start", cid), "cannot start an already running container")
    fails(contain("delete", cid), "not stopped", "running")

    contain.ok("kill", cid, "KILL")
    wait_for(lambda: contain.status(cid) == "stopped")
    st = contain.state(cid)
    assert st["pid"] == 0
    fails(contain("kill", cid), "container not running")
    fails(contain("start", cid), "cannot start a container that has stopped")

    contain.ok("delete", cid)
    assert not (state_root / cid).exists()
    fails(contain("state", cid), "container does not exist")
    fails(contain("delete", cid), "container does not exist")
    contain.ok("delete", "--force", cid)  # runc: --force on a missing container succeeds


def test_delete_force_a_running_and_a_created_container(contain: Contain,
                                                        sleeper: Bundle) -> None:
    a, b = unique_id(), unique_id()
    contain.ok("run", "--detach", "--bundle", str(sleeper.path), a)
    contain.ok("create", "--bundle", str(sleeper.path), b)
    pids = [contain.state(a)["pid"], contain.state(b)["pid"]]
    assert contain.status(a) == "running" and contain.status(b) == "created"
    fails(contain("delete", a), "not stopped", "running")
    contain.ok("delete", "--force", a)
    contain.ok("delete", b)  # as runc: a created container is killed without --force
    for pid in pids:
        wait_for(lambda pid=pid: gone(pid))
    assert contain.ok("list", "-q") == ""


def test_kill_with_signal_names_and_numbers(contain: Contain,
                                            make_bundle: Callable[..., Bundle],
                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bundle = make_bundle(["/bin/sh", "-c", "trap 'echo USR1 >> /out/log' USR1; "
                          "trap 'echo HUP >> /out/log' HUP; "
                          "trap 'echo TERM >> /out/log; exit 0' TERM; "
                          "touch /out/ready; while :; do sleep 0.05; done"])
    bundle.config["mounts"].append({"destination": "/out", "type": "bind",
                                    "source": str(out), "options": ["rbind"]})
    bundle.write()
    cid = unique_id()
    contain.ok("run", "--detach", "--bundle", str(bundle.path), cid)
    wait_for((out / "ready").exists)  # the traps are set (before, USR1 would kill sh)
    log = out / "log"
    for sig, word in (("USR1", "USR1"), ("SIGHUP", "HUP"), ("10", "USR1"), ("TERM", "TERM")):
        before = log.read_text().count(word) if log.exists() else 0
        contain.ok("kill", cid, sig)
        wait_for(lambda w=word, n=before: log.exists() and log.read_text().count(w) > n)
    wait_for(lambda: contain.status(cid) == "stopped")
    fails(contain("kill", "--all", cid, "KILL"), "not running")
    contain.ok("delete", cid)
    fails(contain("kill", cid, "KILL"), "does not exist")


def test_kill_bad_signal(contain: Contain, sleeper: Bundle) -> None:
    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    try:
        fails(contain("kill", cid, "SIGNOPE"), "signal")
        fails(contain("kill", cid, "99"), "signal")
        assert contain.status(cid) == "created"
    finally:
        contain.ok("delete", "--force", cid)


def test_kill_a_created_container_then_start_fails(contain: Contain, sleeper: Bundle) -> None:
    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    pid = contain.state(cid)["pid"]
    contain.ok("kill", cid, "KILL")
    wait_for(lambda: gone(pid))
    assert contain.status(cid) == "stopped"
    fails(contain("start", cid), "stopped")
    contain.ok("delete", cid)


def test_kill_all(contain: Contain, make_bundle: Callable[..., Bundle]) -> None:
    """kill --all signals every process of the container's cgroup, not only its init.
    The container has no PID namespace of its own: there, the others do not die with
    the init, so a kill of the init alone leaves them running and this test fails."""
    bundle = make_bundle(["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                            if ns["type"] != "pid"]
    bundle.write()
    cid = unique_id()
    contain.ok("run", "--detach", "--bundle", str(bundle.path), cid)
    pid = contain.state(cid)["pid"]
    sleepers = wait_for(lambda: _children(pid) if len(_children(pid)) == 2 else None)
    contain.ok("kill", "--all", cid, "KILL")
    wait_for(lambda: all(gone(p) for p in (pid, *sleepers)), timeout=10)
    assert contain.status(cid) == "stopped"
    contain.ok("delete", cid)


def test_delete_of_a_stopped_container_kills_what_its_cgroup_still_holds(
        contain: Contain, make_bundle: Callable[..., Bundle]) -> None:
    """delete removes a stopped container's cgroup with one rmdir per hierarchy when it
    is empty; when processes outlived the init (no PID namespace), the kernel refuses
    that rmdir and the cgroup package kills them and removes the cgroup. A delete that
    took the refusal for success would leave the sleepers and the cgroup behind."""
    bundle = make_bundle(["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                            if ns["type"] != "pid"]
    bundle.write()
    cid = unique_id()
    contain.ok("run", "--detach", "--bundle", str(bundle.path), cid)
    pid = contain.state(cid)["pid"]
    sleepers = wait_for(lambda: _children(pid) if len(_children(pid)) == 2 else None)
    with open(f"/proc/{sleepers[0]}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    # the sleepers' cgroup directory: in the pids hierarchy (v1, hybrid), else the one
    # cgroup2 tree (pure v2: the user-mode Linux lane)
    v1 = [path for _, ctrls, path in lines if "pids" in ctrls.split(",")]
    cgroup_dir = (f"/sys/fs/cgroup/pids{v1[0]}" if v1 else
                  f"/sys/fs/cgroup{next(path for hid, _, path in lines if hid == '0')}")
    assert os.path.isdir(cgroup_dir)
    contain.ok("kill", cid, "TERM")  # the init only (KILL goes to the whole cgroup here)
    wait_for(lambda: contain.status(cid) == "stopped")
    assert not any(gone(p) for p in sleepers)
    contain.ok("delete", cid)
    wait_for(lambda: all(gone(p) for p in sleepers), timeout=10)
    assert not os.path.exists(cgroup_dir)
    assert fails(contain("state", cid))


@pytest.mark.parametrize("command", ["state", "kill", "start", "delete"])
def test_light_commands_load_neither_os_nor_the_cgroup_package(
        contain: Contain, sleeper: Bundle, command: str) -> None:
    """state, kill, start and delete (of a stopped container) use posix, not os, whose
    import is ~1 ms of CPU for commands of ~9 ms; delete removes an empty cgroup
    without the cgroup package."""
    import sys

    from conftest import SRC

    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    if command in ("state", "kill", "delete"):
        contain.ok("start", cid)
    args = {"state": ["state", cid], "kill": ["kill", cid, "KILL"], "start": ["start", cid],
            "delete": ["delete", cid]}[command]
    if command == "delete":
        contain.ok("kill", cid, "KILL")
        wait_for(lambda: contain.status(cid) == "stopped")
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from contain.cli.main import main\n"
            f"rc = main(['--root', {str(contain.root)!r}, *{args!r}])\n"
            "sys.stdout.write('\\n%d %s' % (rc, sorted(m for m in ('os', 'posixpath', "
            "'contain.cgroups') if m in sys.modules)))\n")
    with open(os.devnull, "rb") as null:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code], stdin=null,
                             capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[-1] == "0 []", out.stdout + out.stderr
    if command != "delete":
        contain("delete", "--force", cid)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def test_creating_status_of_a_create_that_died(contain: Contain, state_root: Path) -> None:
    """A directory without state.json is a create in progress (or one that died):
    status creating; it cannot be started or killed; delete removes it."""
    cid = unique_id()
    (state_root / cid).mkdir(parents=True)
    st = contain.state(cid)
    assert st["status"] == "creating" and st["pid"] == 0
    fails(contain("start", cid))
    fails(contain("kill", cid), "not running")
    assert cid in contain.ok("list", "-q").split()
    contain.ok("delete", cid)
    assert not (state_root / cid).exists()


def test_pid_file(contain: Contain, sleeper: Bundle, tmp_path: Path) -> None:
    cid = unique_id()
    pid_file = tmp_path / "sub" / "init.pid"
    pid_file.parent.mkdir()
    contain.ok("create", "--pid-file", str(pid_file), "--bundle", str(sleeper.path), cid)
    try:
        assert pid_file.read_text() == str(contain.state(cid)["pid"])
        assert [p.name for p in pid_file.parent.iterdir()] == ["init.pid"]  # no temp left
    finally:
        contain.ok("delete", "--force", cid)


def test_pid_reuse_is_not_mistaken_for_the_container(contain: Contain, sleeper: Bundle,
                                                     state_root: Path) -> None:
    """state.json names a pid that now belongs to another process: the container is
    stopped, kill does not signal that process, delete leaves it alone."""
    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    pid = contain.state(cid)["pid"]
    contain.ok("kill", cid, "KILL")
    wait_for(lambda: gone(pid))
    stranger = subprocess.Popen(["sleep", "1000"])
    try:
        path = state_root / cid / "state.json"
        record = json.loads(path.read_text())
        record["pid"] = stranger.pid  # as if the kernel had given the pid to it
        path.write_text(json.dumps(record))
        st = contain.state(cid)
        assert st["status"] == "stopped" and st["pid"] == 0
        fails(contain("kill", cid, "KILL"), "not running")
        fails(contain("start", cid), "stopped")
        contain.ok("delete", cid)
        assert stranger.poll() is None, "the stranger was signalled"
        listed = contain.ok("list", "--format", "json")
        assert cid not in listed
    finally:
        stranger.kill()
        stranger.wait()


def test_concurrent_creates_of_one_id(contain: Contain, sleeper: Bundle,
                                      state_root: Path, tmp_path: Path) -> None:
    cid = unique_id()
    procs = []
    logs = []
    for i in range(4):
        log = open(tmp_path / f"create{i}.err", "w+")  # noqa: SIM115
        logs.append(log)
        procs.append(subprocess.Popen(
            [*contain_cmd(), "--root", str(state_root), "create", "--bundle",
             str(sleeper.path), cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log))
    codes = [p.wait(60) for p in procs]
    try:
        assert sorted(codes) == [0, 1, 1, 1], codes
        for code, log in zip(codes, logs, strict=True):
            log.seek(0)
            if code:
                assert "exists" in log.read()
        assert contain.status(cid) == "created"
        assert contain.ok("list", "-q").split() == [cid]
        # exactly one init is waiting
        pid = contain.state(cid)["pid"]
        assert not gone(pid)
    finally:
        for log in logs:
            log.close()
        contain.ok("delete", "--force", cid)


def test_existing_id_is_refused_and_untouched(contain: Contain, sleeper: Bundle) -> None:
    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    try:
        before = contain.state(cid)
        fails(contain("create", "--bundle", str(sleeper.path), cid), "exists", cid)
        fails(contain("run", "--bundle", str(sleeper.path), cid), "exists", cid)
        assert contain.state(cid) == before
    finally:
        contain.ok("delete", "--force", cid)


# -- list ------------------------------------------------------------------------------------

def test_list_formats(contain: Contain, sleeper: Bundle) -> None:
    assert contain.ok("list", "-q") == ""
    assert contain.ok("list", "--format", "json").strip() == "null"
    table = contain.ok("list").splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    a, b = sorted([unique_id("a"), unique_id("b")])
    contain.ok("create", "--bundle", str(sleeper.path), a)
    contain.ok("run", "--detach", "--bundle", str(sleeper.path), b)
    try:
        assert contain.ok("list", "-q").split() == [a, b]
        rows = [line.split() for line in contain.ok("list").splitlines()[1:]]
        assert [r[0] for r in rows] == [a, b]
        assert [r[2] for r in rows] == ["created", "running"]
        assert all(r[3] == str(sleeper.path) and r[5] == "root" for r in rows)
        listed = json.loads(contain.ok("list", "--format", "json"))
        assert [c["id"] for c in listed] == [a, b]
        assert all(set(c) >= STATE_KEYS for c in listed)
        assert listed[1]["status"] == "running" and listed[1]["pid"] == contain.state(b)["pid"]
        fails(contain("list", "--format", "yaml"), "yaml")
    finally:
        contain.ok("delete", "--force", a)
        contain.ok("delete", "--force", b)


def test_state_json_has_runc_shape_and_annotations(contain: Contain, sleeper: Bundle) -> None:
    sleeper.config["annotations"] = {"org.example.key": "value"}
    sleeper.write()
    cid = unique_id()
    contain.ok("create", "--bundle", str(sleeper.path), cid)
    try:
        st = contain.state(cid)
        assert st["annotations"] == {"org.example.key": "value"}
        assert isinstance(st["pid"], int)
        assert st["owner"] == ""  # runc's state prints an empty owner
    finally:
        contain.ok("delete", "--force", cid)


# -- run -------------------------------------------------------------------------------------

@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 7", 7), ("exit 255", 255)])
def test_run_exit_codes(make_bundle: Callable[..., Bundle], state_root: Path, script: str,
                        code: int) -> None:
    bundle = make_bundle(["/bin/sh", "-c", script])
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == code
    assert "level=error" not in proc.stderr
    assert list(state_root.iterdir()) == []


def test_the_default_config_runs_quietly(make_bundle: Callable[..., Bundle],
                                         state_root: Path) -> None:
    """runc's default config lists ambient capabilities the kernel cannot raise (no
    inheritable ones); runc says nothing about it. Neither should contain: engines keep
    the runtime's stderr."""
    bundle = make_bundle(["/bin/true"])
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 0
    assert proc.stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_run_exit_code_of_a_signal(make_bundle: Callable[..., Bundle], state_root: Path,
                                   sig: signal.Signals) -> None:
    # without a PID namespace the shell is not PID 1 and can signal itself
    bundle = make_bundle(["/bin/sh", "-c", f"kill -{int(sig)} $$"])
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                            if ns["type"] != "pid"]
    bundle.write()
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 128 + int(sig)
    assert list(state_root.iterdir()) == []


def test_run_killed_from_outside_is_128_plus_9(contain: Contain, sleeper: Bundle,
                                               state_root: Path) -> None:
    cid = unique_id()
    runner = subprocess.Popen([*contain_cmd(), "--root", str(state_root), "run", "--bundle",
                               str(sleeper.path), cid], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (state_root / cid / "state.json").exists()
                 and contain.status(cid) == "running")
        contain.ok("kill", cid, "KILL")
        assert runner.wait(30) == 137
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.wait()
        if runner.stderr:
            runner.stderr.close()
    assert not (state_root / cid).exists()


def test_run_forwards_signals(sleeper: Bundle, make_bundle: Callable[..., Bundle],
                              state_root: Path, contain: Contain) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "trap 'exit 42' TERM; echo ready; "
                          "while :; do sleep 0.05; done"])
    cid = unique_id()
    runner = subprocess.Popen([*contain_cmd(), "--root", str(state_root), "run", "--bundle",
                               str(bundle.path), cid], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == b"ready\n"
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == 42
    finally:
        if runner.poll() is None:
            runner.kill()
        if (state_root / cid).exists():  # never hang on pipes a stray container holds
            subprocess.run([*contain_cmd(), "--root", str(state_root), "delete", "--force",
                            cid], capture_output=True, timeout=60)
        runner.communicate(timeout=60)
    assert not (state_root / cid).exists()


def test_run_detach_and_keep(contain: Contain, sleeper: Bundle,
                             make_bundle: Callable[..., Bundle]) -> None:
    cid = unique_id()
    started = time.monotonic()
    contain.ok("run", "--detach", "--bundle", str(sleeper.path), cid)
    assert time.monotonic() - started < 30  # it did not wait for sleep 1000
    st = contain.state(cid)
    assert st["status"] == "running"
    # nothing of the runtime stays resident: the init's parent is not a contain process
    with open(f"/proc/{st['pid']}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        parent = f.read()
    assert b"bin/contain" not in parent and b"-m\0contain" not in parent, parent
    contain.ok("delete", "--force", cid)

    short = make_bundle(["/bin/sh", "-c", "exit 3"])
    kept = unique_id()
    assert contain("run", "--keep", "--bundle", str(short.path), kept).returncode == 3
    assert contain.status(kept) == "stopped"
    contain.ok("delete", kept)


def test_run_with_bundle_from_the_working_directory(sleeper: Bundle, state_root: Path,
                                                    make_bundle: Callable[..., Bundle]) -> None:
    bundle = make_bundle(["/bin/echo", "cwd bundle"])
    proc = run_contain(state_root, "run", unique_id(), cwd=str(bundle.path))
    assert proc.returncode == 0 and proc.stdout == "cwd bundle\n"


@pytest.fixture
def many_ids() -> Iterator[list[str]]:
    yield [unique_id() for _ in range(3)]


def test_state_of_many_containers_after_their_init_exits(contain: Contain,
                                                        make_bundle: Callable[..., Bundle],
                                                        many_ids: list[str]) -> None:
    bundle = make_bundle(["/bin/true"])
    for cid in many_ids:
        contain.ok("run", "--detach", "--bundle", str(bundle.path), cid)
    for cid in many_ids:
        wait_for(lambda cid=cid: contain.status(cid) == "stopped")
        contain.ok("delete", cid)
