"""The default sandbox's protections (issue 11, items 3-7), each attacked for real:
host devices, unbounded resources, signals, host daemons' unix sockets, root's secrets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import contain_cmd, run_contain

PY = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or \
    os.path.realpath(sys.executable)


def sandbox(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_contain(root, "sandbox", *args, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory on the host's own root (not /tmp or /run, which the sandbox makes
    private), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="contain-safety-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- item 3: devices -----------------------------------------------------------------------

def test_host_root_is_nosuid_and_nodev_on_every_submount(state_root: Path) -> None:
    out = ok(sandbox(state_root, "--", "cat", "/proc/self/mountinfo"))
    own = ("/proc", "/dev", "/tmp", "/run", "/sys")  # the sandbox's own mounts
    checked = 0
    for line in out.splitlines():
        fields = line.split()
        point, opts = fields[4], fields[5].split(",")
        if any(point == p or point.startswith(p + "/") for p in own) or fields[3] == "/null":
            continue  # the sandbox's own, or a masked path (its /dev/null bound over it)
        checked += 1
        assert "nosuid" in opts and "nodev" in opts and "ro" in opts, line
    assert checked >= 1


def test_a_host_device_node_outside_dev_cannot_be_opened(state_root: Path,
                                                         host_dir: Path) -> None:
    """A device node the host's root holds outside /dev (here: /dev/zero's numbers, and
    a loop device) is inert in the sandbox, even for root (--as-root)."""
    os.mknod(host_dir / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    os.mknod(host_dir / "loop", 0o666 | stat.S_IFBLK, os.makedev(7, 0))
    script = (f"head -c 1 {host_dir}/zero | wc -c; echo rc=$?; "
              f"head -c 1 {host_dir}/loop; echo rc=$?")
    out = sandbox(state_root, "--as-root", "--", "sh", "-c", script)
    assert "Permission denied" in out.stderr and "rc=0" not in out.stdout.replace(
        "0\nrc=0", ""), out
    assert out.stderr.count("Permission denied") == 2, out.stderr


def test_mknod_of_a_block_device_then_open_fails(state_root: Path) -> None:
    """Even root with CAP_MKNOD: a node made in the writable /tmp (nodev) or in the
    sandbox's own /dev (not nodev: the cgroup's device list refuses it) cannot be
    opened."""
    script = ("for d in /tmp /dev; do mknod $d/loop0 b 7 0 && echo made-$d; "
              "head -c 1 $d/loop0 > /dev/null && echo OPENED-$d; done; "
              "mknod /dev/kvm c 10 232 && head -c 1 /dev/kvm > /dev/null && echo OPENED-kvm; "
              "true")
    out = sandbox(state_root, "--as-root", "--cap", "MKNOD", "--cap", "DAC_OVERRIDE", "--",
                  "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert "made-/tmp" in out.stdout and "made-/dev" in out.stdout  # the attempt was real
    assert "OPENED" not in out.stdout, out.stdout


# -- item 4: bounds --------------------------------------------------------------------------

def _sandbox_processes(runtime: int) -> list[int]:
    """The runtime's descendants (the sandbox's init and its children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [runtime]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cgroup(pid: int, controller: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return path
    raise AssertionError(f"no {controller} cgroup for {pid}")


class Running:
    """`contain sandbox ARGS` in the background, until a process named *ready* runs in
    it (its pid is then :attr:`target`). Output goes to files: a sandbox that outlives
    its runtime (the bug some tests look for) cannot hang the test on a pipe."""

    def __init__(self, root: Path, *args: str, ready: str = "sleep") -> None:
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 (closed by finish)
        self.proc = subprocess.Popen([*contain_cmd(), "--root", str(root), "sandbox", *args],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.out)
        self.target = 0
        self.group = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            for pid in _sandbox_processes(self.proc.pid):
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() == ready:
                            self.target = pid
                            self.group = os.getpgid(pid)
                            return
                except OSError:
                    pass
            time.sleep(0.02)
        self.finish(0)
        raise AssertionError(f"the sandbox did not start: {self.output()}")

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def finish(self, timeout: float = 20) -> int | None:
        """The runtime's exit code (None if it had to be killed); whatever is left of the
        sandbox is killed."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.group and self.group != os.getpgrp():
                try:
                    os.killpg(self.group, signal.SIGKILL)
                except OSError:
                    pass
            self.out.close()


def _half_the_ram() -> int:
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return kib * 1024 // 2


def test_own_cgroup_with_default_bounds_and_the_runtime_outside(state_root: Path) -> None:

    run = Running(state_root, "--", "sleep", "1000")
    try:
        pids_path = _cgroup(run.target, "pids")
        mem_path = _cgroup(run.target, "memory")
        assert pids_path != _cgroup(run.proc.pid, "pids")   # the runtime is not in it
        assert mem_path != _cgroup(run.proc.pid, "memory")
        base = "/sys/fs/cgroup"
        assert Path(f"{base}/pids{pids_path}/pids.max").read_text().strip() == "4096"
        limit = int(Path(f"{base}/memory{mem_path}/memory.limit_in_bytes").read_text())
        assert abs(limit - _half_the_ram()) < 1 << 20
        devices = Path(f"{base}/devices{_cgroup(run.target, 'devices')}/devices.list")
        allowed = devices.read_text().split("\n")
        assert "a *:* rwm" not in allowed and "b 7:0 rw" not in " ".join(allowed)
        os.kill(run.proc.pid, signal.SIGTERM)
    finally:
        assert run.finish() == 128 + signal.SIGTERM


def test_memory_hog_is_killed_not_the_runtime(state_root: Path) -> None:
    proc = sandbox(state_root, "--memory", "64M", "--", PY, "-c",
                   "b = []\nwhile True: b.append(bytearray(8 << 20))")
    assert proc.returncode == 137, proc.stderr  # the hog, OOM-killed; we are here to see it
    assert "Traceback" not in proc.stderr


def test_limits_can_be_raised_and_lifted(state_root: Path) -> None:
    run = Running(state_root, "--memory", "max", "--pids", "100000", "--", "sleep", "1000")
    try:
        base = "/sys/fs/cgroup"
        pids = Path(f"{base}/pids{_cgroup(run.target, 'pids')}/pids.max").read_text().strip()
        assert pids == "100000"
        mem = int(Path(f"{base}/memory{_cgroup(run.target, 'memory')}/"
                       "memory.limit_in_bytes").read_text())
        assert mem > 1 << 50  # no bound
        os.kill(run.proc.pid, signal.SIGTERM)
    finally:
        run.finish()


def test_tmpfs_are_sized(state_root: Path) -> None:
    def sizes(*opts: str) -> dict[str, int]:
        out = ok(sandbox(state_root, *opts, "--", "df", "-k", "/tmp", "/run", "/dev/shm"))
        return {line.split()[-1]: int(line.split()[1]) * 1024
                for line in out.splitlines()[1:]}

    got = sizes()
    assert abs(got["/tmp"] - _half_the_ram()) < 1 << 20  # as large as the memory bound
    assert got["/run"] == 64 << 20 and got["/dev/shm"] == 64 << 20
    got = sizes("--tmp-size", "100M", "--shm-size", "8M")
    assert got["/tmp"] == 100 << 20 and got["/dev/shm"] == 8 << 20
    full = sandbox(state_root, "--tmp-size", "4M", "--", "sh", "-c",
                   "head -c 8388608 /dev/zero > /tmp/big; echo rc=$?")
    assert "rc=1" in full.stdout and "No space left" in full.stderr


# -- item 5: signals -------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["sleep", "1000"], ["sh", "-c", "sleep 1000"]],
                         ids=["sleep", "sh"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["INT", "TERM", "HUP"])
def test_a_signal_stops_the_sandbox(state_root: Path, command: list[str], sig: int) -> None:
    run = Running(state_root, "--", *command)
    os.kill(run.proc.pid, sig)
    code = run.finish()
    assert code == 128 + sig, code
    assert not _sandbox_processes(run.proc.pid)


def test_a_second_signal_kills_the_tree(state_root: Path) -> None:
    run = Running(state_root, "--", "sh", "-c", "trap '' INT TERM; sleep 1000; sleep 1000")
    os.kill(run.proc.pid, signal.SIGINT)
    time.sleep(0.5)
    assert run.proc.poll() is None  # the command ignores the first
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGKILL


def test_a_term_at_any_moment_of_the_start_is_not_lost(state_root: Path) -> None:
    """TERM sent while the sandbox is being set up (before PID 1 has its handlers) is
    held and forwarded: the sandbox always ends."""
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5):
        proc = subprocess.Popen([*contain_cmd(), "--root", str(state_root), "sandbox", "--",
                                 "sleep", "1000"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            code = None
            for pid in _sandbox_processes(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        assert code in (128 + signal.SIGTERM, -signal.SIGTERM), (delay, code)


def test_sigkill_of_the_runtime_does_not_orphan_the_sandbox(state_root: Path) -> None:
    run = Running(state_root, "--", "sleep", "1000")
    sleeper = run.target
    try:
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and os.path.exists(f"/proc/{sleeper}"):
            try:
                with open(f"/proc/{sleeper}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        os.waitpid(sleeper, os.WNOHANG)  # (reparented to us, the subreaper)
            except (OSError, ChildProcessError):
                pass
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{sleeper}"), "the sandbox outlived its runtime"
    finally:
        run.finish()
    # what a killed runtime could not remove: its state (and cgroup) and skeleton
    for entry in state_root.iterdir():
        if not entry.name.startswith("."):
            run_contain(state_root, "delete", "--force", entry.name)


def test_api_run_raises_keyboard_interrupt(state_root: Path) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent / 'src')!r})
import contain
print("started", flush=True)
try:
    contain.run(["sleep", "1000"], root={str(state_root)!r})
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(3)
print("swallowed", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                Path(f"/proc/{p}/comm").read_text().strip() == "sleep"
                for p in _sandbox_processes(proc.pid) if os.path.exists(f"/proc/{p}/comm")):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3 and "KeyboardInterrupt" in out, (out, err)
    assert [p.name for p in state_root.iterdir() if not p.name.startswith(".")] == []


# -- item 6: unix sockets of host daemons ----------------------------------------------------

class _Server(threading.Thread):
    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)  # so that permissions are not what stops a client
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.sendall(b"hello from the host\n")
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close()


def test_host_unix_sockets_are_masked(state_root: Path, host_dir: Path) -> None:
    path = host_dir / "daemon.sock"
    server = _Server(path)
    server.start()
    client = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
              "try:\n    s.connect(sys.argv[1]); print('CONNECTED', s.recv(64))\n"
              "except OSError as e:\n    print('REFUSED', e.errno)\n")
    try:
        for opts in ((), ("--as-root",)):
            out = ok(sandbox(state_root, *opts, "--", PY, "-c", client, str(path)))
            assert "REFUSED" in out, out
        assert server.accepted == 0
        # asked for, it is there
        out = ok(sandbox(state_root, "--host-sockets", "--", PY, "-c", client, str(path)))
        assert "CONNECTED" in out and server.accepted == 1
        out = ok(sandbox(state_root, "--bind", f"{path}:{path}", "--", PY, "-c", client,
                         str(path)))
        assert "CONNECTED" in out and server.accepted == 2
    finally:
        server.close()


# -- item 7: root's secrets ------------------------------------------------------------------

def test_root_caller_runs_as_an_unprivileged_user(state_root: Path, host_dir: Path) -> None:
    secret = host_dir / "secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o600)
    script = f"id -u; cat /etc/shadow > /dev/null && echo SHADOW; cat {secret}; true"
    out = sandbox(state_root, "--", "sh", "-c", script)
    assert out.stdout.splitlines()[0] == "65534"
    assert "SHADOW" not in out.stdout and "s3cret" not in out.stdout
    assert out.stderr.count("Permission denied") == 2, out.stderr
    out = sandbox(state_root, "--as-root", "--", "sh", "-c", script)
    assert out.stdout.splitlines()[0] == "0" and "s3cret" in out.stdout


def test_binds_are_usable_by_the_unprivileged_user(state_root: Path, tmp_path: Path) -> None:
    """A root-owned 0700 directory bound in is the sandbox user's (id-mapped), and what it
    writes there is root's on the host, as when root wrote it."""
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (work / "in").write_text("input\n")
    os.chmod(work / "in", 0o600)
    out = ok(sandbox(state_root, "--bind", f"{work}:/srv", "--", "sh", "-c",
                     "cat /srv/in; echo out > /srv/out; id -u"))
    assert out.split() == ["input", "65534"]
    st = os.stat(work / "out")
    assert (st.st_uid, st.st_gid) == (0, 0) and (work / "out").read_text() == "out\n"
