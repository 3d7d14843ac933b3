"""CVE-2019-5736's route: a program whose interpreter line is ``#!/proc/self/exe``, exec'd
by the runtime in a container (root, no user namespace), must not run the host's
interpreter there, and nothing in the container may open that executable for writing.

The attempts stop short of writing: opens are O_WRONLY|O_APPEND (no O_TRUNC) and are closed
unwritten. Where the kernel lets an open through, only the sealed helper may be behind it,
and a write to *that* must be refused."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import contain_cmd, run_contain, unique_id
from contain.linux import seccomp as kseccomp

HOST_PY = os.path.realpath(sys.executable)

# Run as the host's interpreter, in the container, if the route is open: a second
# process opens its /proc/<pid>/exe for writing (never writes) and reports.
EXPLOIT = """#!/proc/self/exe
import os, time
me = os.getpid()
print("PYTHON-RAN", os.readlink(f"/proc/{me}/exe"), flush=True)
r, w = os.pipe()
if os.fork() == 0:
    os.close(w)
    try:  # while it runs (the kernel may refuse with ETXTBSY)...
        os.close(os.open(f"/proc/{me}/exe", os.O_WRONLY | os.O_APPEND))
        print("OPENED-FOR-WRITING while running", flush=True)
    except OSError as e:
        print("REFUSED", e.errno, flush=True)
    path = os.open(f"/proc/{me}/exe", os.O_PATH)
    os.read(r, 1)  # ...and after it has exited, through an O_PATH fd kept
    while os.getppid() == me:
        time.sleep(0.01)
    try:
        os.close(os.open(f"/proc/self/fd/{path}", os.O_WRONLY | os.O_APPEND))  # unwritten
        print("OPENED-FOR-WRITING after exit", flush=True)
    except OSError as e:
        print("REFUSED", e.errno, flush=True)
    os._exit(0)
os.close(r)
time.sleep(0.2)
"""


def _bundle_with_host_usr(make_bundle: Any, args: list[str]) -> Any:
    """A busybox container that also sees the host's /usr (read-only), so that the host's
    interpreter could start in it if the runtime let it (its loader and library)."""
    bundle = make_bundle(args)
    rootfs = bundle.rootfs
    for name in ("lib", "lib64"):
        if os.path.islink("/" + name) and not os.path.lexists(rootfs / name):
            os.symlink(os.readlink("/" + name), rootfs / name)
    (rootfs / "exploit").write_text(EXPLOIT)
    os.chmod(rootfs / "exploit", 0o755)
    for path in sorted({"/usr", sys.base_prefix}):
        bundle.config["mounts"].append({"destination": path, "type": "bind", "source": path,
                                        "options": ["rbind", "ro", "nosuid", "nodev"]})
    bundle.config["linux"].pop("uidMappings", None)
    bundle.config["linux"]["namespaces"] = [
        ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "user"]
    return bundle.write()


def _assert_closed(proc: Any) -> None:
    out = proc.stdout + proc.stderr
    assert "OPENED-FOR-WRITING" not in out, out
    assert "PYTHON-RAN" not in out, f"the host's interpreter ran in the container:\n{out}"
    assert proc.returncode == 127, out
    assert "contain: exec" in proc.stderr


def test_run_of_a_proc_self_exe_script(state_root: Path, make_bundle: Any) -> None:
    bundle = _bundle_with_host_usr(make_bundle, ["/exploit"])
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id("cve"))
    _assert_closed(proc)


def test_exec_of_a_proc_self_exe_script(state_root: Path, make_bundle: Any) -> None:
    bundle = _bundle_with_host_usr(make_bundle, ["sleep", "60"])
    cid = unique_id("cve")
    with tempfile.TemporaryFile() as out:  # (the detached container keeps its stdio)
        subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d", "--bundle",
                        str(bundle.path), cid], stdin=subprocess.DEVNULL, stdout=out,
                       stderr=out, timeout=60, check=True)
    try:
        proc = run_contain(state_root, "exec", cid, "/exploit")
        _assert_closed(proc)
    finally:
        run_contain(state_root, "delete", "--force", cid)


def test_sandbox_as_root_of_a_proc_self_exe_script(state_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "exploit"
    script.write_text(EXPLOIT)
    script.chmod(0o755)
    proc = run_contain(state_root, "sandbox", "--as-root", "--bind", f"{tmp_path}:/tmp/x",
                       "--", "/tmp/x/exploit")
    _assert_closed(proc)


def test_api_run_of_a_proc_self_exe_script(tmp_path: Path) -> None:
    import contain

    script = tmp_path / "exploit"
    script.write_text(EXPLOIT)
    script.chmod(0o755)
    res = contain.run(["/tmp/x/exploit"], binds=[f"{tmp_path}:/tmp/x"], as_root=True,
                      capture_output=True, root=str(tmp_path / "root"))
    out = (res.stdout or b"") + (res.stderr or b"")
    assert b"PYTHON-RAN" not in out and b"OPENED" not in out, out
    assert res.returncode == 127


class _HoldExecve(threading.Thread):
    """A seccomp agent that holds the container's first execve (made by the exec helper,
    the image that execs the container's program) until told to let it go."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.held_pid = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        listener = -1
        try:
            conn, _ = self.sock.accept()
            with conn:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
            listener = fds[json.loads(msg)["fds"].index("seccompFd")]
            while True:
                ready, _, _ = select.select([listener], [], [], 30)
                if not ready:
                    raise TimeoutError("no notification")
                try:
                    req = kseccomp.notif_recv(listener)
                except OSError:
                    return  # the container is gone
                if not self.held_pid:
                    self.held_pid = req.pid
                    self.held.set()
                    self.release.wait(30)
                kseccomp.notif_send(listener, req.id,
                                    flags=kseccomp.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        except BaseException as e:
            self.error = e
            self.held.set()
        finally:
            if listener >= 0:
                os.close(listener)
            self.sock.close()


def test_the_image_that_execs_the_program_is_sealed(state_root: Path, make_bundle: Any,
                                                    tmp_path: Path) -> None:
    """Hold the exec helper at its execve (seccomp user notification) and attack it
    from the host's side, with more privilege than the container has: its exe is not
    the host's interpreter, and it cannot be written."""
    sock = str(tmp_path / "agent.sock")
    agent = _HoldExecve(sock)
    agent.start()
    bundle = _bundle_with_host_usr(make_bundle, ["/exploit"])
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock,
        "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_NOTIFY"}]}
    bundle.write()
    cid = unique_id("cve")
    with tempfile.TemporaryFile() as out:
        subprocess.run([*contain_cmd(), "--root", str(state_root), "create", "--bundle",
                        str(bundle.path), cid], stdin=subprocess.DEVNULL, stdout=out,
                       stderr=out, timeout=60, check=True)
    try:
        run_contain(state_root, "start", cid, check=True)
        assert agent.held.wait(30) and agent.error is None, repr(agent.error)
        pid = agent.held_pid
        exe = os.readlink(f"/proc/{pid}/exe")
        assert exe.startswith("/memfd:contain-exec"), exe
        assert os.stat(f"/proc/{pid}/exe").st_ino != os.stat(HOST_PY).st_ino
        try:
            fd = os.open(f"/proc/{pid}/exe", os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            assert exc.errno in (1, 13, 26), exc  # EPERM, EACCES, ETXTBSY
        else:
            try:  # a memfd is behind it (checked above): its seals must refuse writes
                with pytest.raises(PermissionError):
                    os.write(fd, b"x")
            finally:
                os.close(fd)
    finally:
        agent.release.set()
        run_contain(state_root, "delete", "--force", cid)
        agent.join(30)


def _helper_runs(machine: str, tmp_path: Path) -> list[str]:
    """How to run the helper image for *machine* here: natively, or under qemu-user."""
    from contain.linux.exeguard import elf_image

    image = tmp_path / f"helper-{machine}"
    image.write_bytes(elf_image(machine))
    image.chmod(0o755)
    if machine == os.uname().machine:
        return [str(image)]
    qemu = shutil.which(f"qemu-{machine}-static") or shutil.which(f"qemu-{machine}")
    if qemu is None:
        pytest.fail(f"qemu-{machine}-static is not installed (scripts/extra-deps)")
    return [qemu, str(image)]


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_helper_image_execs_argv0_with_the_rest(machine: str, tmp_path: Path) -> None:
    """The helper of each architecture: execve(argv[0], argv + 1, envp); on failure a
    message with the path and errno, exit 127; without a program, exit 127."""
    runs = _helper_runs(machine, tmp_path)

    def helper(*argv: str) -> subprocess.CompletedProcess[str]:
        if len(runs) == 1:  # native: argv[0] is ours to choose
            return subprocess.run(argv, executable=runs[0], capture_output=True, text=True,
                                  env={"FOO": "bar"}, timeout=30)
        # qemu-user: -0 sets the guest's argv[0]
        cmd = [runs[0], *(["-0", argv[0]] if argv else []), runs[1], *argv[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, env={"FOO": "bar"},
                              timeout=30)

    ok = helper("/bin/sh", "sh", "-c", 'echo "$0 $1 $FOO"; tr "\\0" " " < /proc/$$/cmdline',
                "zero", "one")
    assert ok.returncode == 0, ok
    assert ok.stdout.splitlines()[0] == "zero one bar"
    assert ok.stdout.splitlines()[1].startswith("sh -c "), ok.stdout  # argv[0] is "sh"
    missing = helper("/nonexistent/prog", "prog")
    assert missing.returncode == 127
    assert missing.stderr == "contain: exec /nonexistent/prog: errno 2\n"
    denied = helper("/etc/passwd", "x")
    assert (denied.returncode, denied.stderr) == (127, "contain: exec /etc/passwd: errno 13\n")
    if len(runs) == 1:
        alone = subprocess.run(["only-argv0"], executable=runs[0], capture_output=True,
                               text=True, timeout=30)
        assert alone.returncode == 127 and "no program given" in alone.stderr


def test_an_unknown_architecture_fails_closed() -> None:
    from contain.errors import ContainError
    from contain.linux import exeguard

    with pytest.raises(KeyError):
        exeguard.elf_image("riscv64")
    assert issubclass(exeguard.ExecGuardError, ContainError)
