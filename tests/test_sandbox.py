"""`contain sandbox -- CMD`: a command over the host's root, read-only, in fresh
namespaces, with private /tmp, no capabilities and limits; observed from inside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, contain_cmd, ok, run_contain

# the real interpreter: the venv may live under /tmp, which the sandbox makes private,
# and the sandbox's user (uid 65534) must reach it (not one under /root)
PY = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or \
    os.path.realpath(sys.executable)


def sandbox(root: Path, *args: str, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_contain(root, "sandbox", *args, input=input, timeout=timeout)


def sh(root: Path, script: str, *opts: str) -> subprocess.CompletedProcess[str]:
    return sandbox(root, *opts, "--", "/bin/sh", "-c", script)


def status(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":")
                                                 for line in text.splitlines()) if v}


def test_defaults(state_root: Path, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"contain-sandbox-marker-{os.getpid()}"
    marker.write_text("host tmp\n")
    try:
        out = ok(sh(state_root,
                    "echo pid=$$; hostname; cat /proc/self/status; ls -A /tmp | wc -l; "
                    "touch /etc/contain-x 2>&1; touch /tmp/inside && echo TMP-OK; "
                    f"cat {PY} > /dev/null && echo HOST-ROOT; "
                    "readlink /proc/self/ns/net; cat /proc/net/dev | wc -l"))
    finally:
        marker.unlink()
    lines = out.splitlines()
    # PID 1 is the sandbox's small init; the command is its child
    assert lines[0] == "pid=2" and lines[1] == "sandbox"
    st = status(out)
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0
    assert int(st["CapPrm"], 16) == 0 and int(st["CapAmb"], 16) == 0
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    assert "0" in lines  # an empty private /tmp: the host's marker is not there
    assert "Read-only file system" in out
    assert "TMP-OK" in out and "HOST-ROOT" in out
    assert not Path("/tmp/inside").exists()
    assert f"net:[{os.stat('/proc/self/ns/net').st_ino}]" not in out
    assert lines[-1] == "3"  # /proc/net/dev: two header lines and lo


def test_exit_code_and_stdio(state_root: Path) -> None:
    proc = sandbox(state_root, "--", "/bin/sh", "-c", "read x; echo got:$x; echo err >&2; "
                   "exit 7", input="in\n")
    assert proc.returncode == 7
    assert proc.stdout == "got:in\n"
    assert proc.stderr == "err\n"
    assert sandbox(state_root, "--", "/bin/false").returncode == 1
    killed = sandbox(state_root, "--", "/bin/sh", "-c", "sh -c 'kill -9 $$'; exit $?")
    assert killed.returncode == 137
    assert list(p for p in state_root.iterdir() if not p.name.startswith(".")) == []


def test_env_cwd_hostname(state_root: Path) -> None:
    out = ok(sh(state_root, "echo $FOO $BAR; pwd; hostname",
                "--env", "FOO=one", "-e", "BAR=two=2", "--cwd", "/usr/bin",
                "--hostname", "boxy"))
    assert out.splitlines() == ["one two=2", "/usr/bin", "boxy"]


def test_bind_rw_and_ro(state_root: Path, tmp_path: Path) -> None:
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    # writable by the sandbox's user (uid 65534) also where the bind cannot be id-mapped
    # to it (hostfs in the UML lane)
    rw.chmod(0o777)
    (ro / "f").write_text("read me\n")
    # (destinations that exist on this host: see the next test)
    out = ok(sh(state_root, "echo written > /srv/out; cat /media/f; "
                "touch /media/x 2>&1; true",
                "--bind", f"{rw}:/srv", "--bind", f"{ro}:/media:ro"))
    assert (rw / "out").read_text() == "written\n"
    assert "read me" in out and "Read-only file system" in out
    assert not (ro / "x").exists()


def test_bind_to_a_destination_the_host_lacks(state_root: Path, tmp_path: Path) -> None:
    """`--bind ./project:/work` on a host without /work: the host root is read-only, so
    the mount point must be made some other way (runc's rootfs is writable; here it
    is not)."""
    assert not Path("/contain-test-dest").exists()
    tmp_path.chmod(0o755)  # (readable by uid 65534 without an id-mapped bind too)
    out = ok(sh(state_root, "ls /contain-test-dest", "--bind",
                f"{tmp_path}:/contain-test-dest"))
    assert not Path("/contain-test-dest").exists()
    assert out == ""  # the (empty) bound directory


def test_net_host(state_root: Path) -> None:
    out = ok(sh(state_root, "readlink /proc/self/ns/net", "--net", "host"))
    assert out.strip() == os.readlink("/proc/self/ns/net")


def test_memory_limit(state_root: Path) -> None:
    proc = sandbox(state_root, "--memory", "48M", "--", PY, "-c",
                   "b = bytearray(256 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
                   "print('survived')")
    assert "survived" not in proc.stdout
    assert proc.returncode == 137, proc.stderr
    ok(sandbox(state_root, "--memory", "48M", "--", PY, "-c", "bytearray(8 << 20)"))


def test_pids_limit(state_root: Path) -> None:
    proc = sh(state_root, "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & done; wait", "--pids",
              "5")
    assert proc.returncode != 0
    assert "fork" in proc.stderr.lower()
    ok(sh(state_root, "sleep 0.1 & sleep 0.1 & wait", "--pids", "5"))


def test_cpus_limit_accepted(state_root: Path) -> None:
    ok(sandbox(state_root, "--cpus", "0.5", "--", "/bin/true"))


def test_capability_on_request(state_root: Path) -> None:
    out = ok(sh(state_root, "grep CapEff /proc/self/status", "--cap", "NET_RAW",
                "--cap", "CAP_CHOWN"))
    assert int(status(out)["CapEff"], 16) == (1 << 13) | (1 << 0)


@pytest.mark.parametrize("args, words", [
    (("--memory", "lots", "--", "/bin/true"), ("lots",)),
    (("--memory", "nan", "--", "/bin/true"), ("--memory", "nan")),
    (("--tmp-size", "0", "--", "/bin/true"), ("--tmp-size",)),
    (("--shm-size", "x", "--", "/bin/true"), ("--shm-size",)),
    (("--pids", "0", "--", "/bin/true"), ("--pids",)),
    (("--cpus", "x", "--", "/bin/true"), ("--cpus",)),
    (("--bind", "nocolon", "--", "/bin/true"), ("--bind",)),
    (("--bind", "/nonexistent/src:/x", "--", "/bin/true"), ("/nonexistent/src",)),
    (("--bind", "/tmp:relative", "--", "/bin/true"), ("DST",)),
    (("--net", "bridge", "--", "/bin/true"), ("--net",)),
    (("--env", "NOEQUALS", "--", "/bin/true"), ("--env",)),
    (("--", "/no/such/program"), ("/no/such/program",)),
])
def test_bad_options(state_root: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    proc = sandbox(state_root, *args)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err
    assert [p for p in state_root.iterdir() if not p.name.startswith(".")] == []
    # nothing of this sandbox is left; `host-root` is the shared (empty) mount point
    sandboxes = state_root / ".sandbox"
    assert not sandboxes.exists() or [p.name for p in sandboxes.iterdir()
                                      if p.name != "host-root"] == []


def test_userns(state_root: Path) -> None:
    out = ok(sh(state_root, "id -u; cat /proc/self/uid_map", "--userns"))
    lines = out.split()
    assert lines[0] == "0" and lines[1:] == ["0", "0", "1"]


def test_sandbox_keeps_the_callers_cpu_affinity(state_root: Path) -> None:
    """`taskset -c 1 contain sandbox -- CMD` pins CMD as it would pin any command (an
    engine's container, by contrast, gets every CPU its cpuset allows: runc 1.3.1);
    the Python API keeps the calling thread's affinity the same way."""
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
        pytest.skip("needs two CPUs and taskset")
    cmd = ["taskset", "-c", "1", *contain_cmd(), "--root", str(state_root), "sandbox", "--",
           "/bin/sh", "-c", "grep Cpus_allowed_list /proc/self/status"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert status(proc.stdout)["Cpus_allowed_list"] == "1"
    code = ("import os, sys, contain; os.sched_setaffinity(0, {1}); "
            "r = contain.run(['/bin/grep', 'Cpus_allowed_list', '/proc/self/status'], "
            f"capture_output=True, root={str(state_root)!r}); "
            "sys.stdout.write(r.stdout.decode())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert status(proc.stdout)["Cpus_allowed_list"] == "1"
