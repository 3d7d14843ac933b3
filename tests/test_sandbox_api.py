"""The `Sandbox` Python API: a policy that runs many commands, input and capture,
streaming output, a timeout that kills the whole process tree, results with resource
usage and Landlock's record, use from other threads, options validated before anything
starts (issue 11, items 9 and 10), the violations report, and a rootless user."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import contain
from contain.sandbox.report import Reporter
from contain.sandbox.runner import SandboxTimeout
from test_rootless import SYSTEM_PYTHON, User, user  # noqa: F401  (the fixture)


def left(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if not p.name.startswith(".")]


@pytest.fixture
def hostdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="contain-api-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_one_policy_many_commands(state_root: Path, hostdir: Path) -> None:
    sb = contain.Sandbox(rw=[str(hostdir)], memory="128M", root=str(state_root))
    r1 = sb.run(["/bin/sh", "-c", f"cat > {hostdir}/a; echo done"], input="from str\n",
                capture_output=True)
    r2 = sb.run(["/bin/sh", "-c", f"cat {hostdir}/a; cat; echo err >&2; exit 3"],
                input=b"bytes\n", capture_output=True)
    r3 = sb.run(["/bin/sh", "-c", "echo $X; pwd"], capture_output=True, env=["X=over"],
                cwd="/etc")
    assert (r1.returncode, r1.stdout) == (0, b"done\n")
    assert (r2.returncode, r2.stdout, r2.stderr) == (3, b"from str\nbytes\n", b"err\n")
    assert r3.stdout == b"over\n/etc\n"
    assert sb.policy.process.env == []  # per-run options do not stick
    for r in (r1, r2, r3):
        assert r.rusage["user_time"] >= 0 and r.rusage["max_rss_kib"] > 0
        assert r.violations == [] and r.timed_out is False
        assert r.landlock is not None and "write_file" in r.landlock["fs"]
    # a sandbox with a limit has a cgroup: its statistics come with the result
    assert r1.cgroup is not None and r1.cgroup["memory"]["usage"]["limit"] == 128 << 20
    assert r1.cgroup["memory"]["usage"]["max"] > 0
    assert left(state_root) == []
    with pytest.raises(contain.ContainError, match="exit status 3"):
        sb.run(["/bin/sh", "-c", "exit 3"], check=True)


def test_streaming_output(state_root: Path, hostdir: Path) -> None:
    """The callback sees "ready" while the command still runs: the command waits for a
    file that only the callback makes (without streaming it would time out)."""
    go = hostdir / "go"
    seen: list[tuple[str, bytes]] = []

    def on_output(stream: str, data: bytes) -> None:
        seen.append((stream, data))
        if b"ready" in data:
            go.touch()

    sb = contain.Sandbox(root=str(state_root), ro=[str(hostdir)])
    r = sb.run(["/bin/sh", "-c", f"echo ready; while [ ! -e {go} ]; do sleep 0.05; done; "
                "echo after >&2"], on_output=on_output, timeout=60)
    assert r.returncode == 0
    assert seen[0] == ("stdout", b"ready\n")
    assert ("stderr", b"after\n") in seen
    assert r.stdout is None  # streamed, not captured


def test_timeout_kills_the_whole_tree(state_root: Path) -> None:
    marker = f"300.{os.getpid()}"  # a sleep of a unique length, to find it by
    sb = contain.Sandbox(root=str(state_root))
    with pytest.raises(SandboxTimeout) as info:
        sb.run(["/bin/sh", "-c", f"sleep {marker} & sh -c 'sleep {marker}; true' & "
                "echo started; wait"],
               timeout=1.5, capture_output=True)
    assert isinstance(info.value, TimeoutError)
    assert info.value.result.timed_out and info.value.result.stdout == b"started\n"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert marker.encode() not in cmd, f"process {pid} survived"
    assert left(state_root) == []


def test_from_other_threads(state_root: Path) -> None:
    """Issue 11 item 10: no signal handling on the API's path; several at once."""
    sb = contain.Sandbox(root=str(state_root))
    out: dict[int, Any] = {}

    def work(i: int) -> None:
        try:
            out[i] = sb.run(["/bin/sh", "-c", f"echo {i}"], capture_output=True).stdout
        except BaseException as exc:  # reported below
            out[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out == {i: f"{i}\n".encode() for i in range(3)}
    # contain.run without capture (the foreground path) from a thread, too
    res: list[Any] = []
    t = threading.Thread(target=lambda: res.append(
        contain.run(["/bin/true"], root=str(state_root)).returncode))
    t.start()
    t.join(120)
    assert res == [0]


@pytest.mark.parametrize("kw,error,text", [
    ({"input": 123}, TypeError, "input: expected bytes or str"),
    ({"timeout": "5"}, TypeError, "timeout: expected a number of seconds"),
    ({"timeout": -1}, contain.ContainError, "timeout: -1 must be a positive number"),
    ({"memory": 0}, contain.ContainError, "memory: invalid size 0: must be positive"),
    ({"memory": -1}, contain.ContainError, "memory: invalid size -1: must be positive"),
    ({"memory": "nan"}, contain.ContainError, "memory: invalid size 'nan'"),
    ({"cpus": 1e-9}, contain.ContainError, "cpus: 1e-09 is too small"),
    ({"cpus": float("inf")}, contain.ContainError, "cpus: invalid value inf"),
    ({"pids": "10"}, TypeError, "pids: expected an integer"),
    ({"pids": 0}, contain.ContainError, "pids: 0 is out of range"),
    ({"binds": "/a:/b"}, TypeError, "binds: expected a list of strings (not one string)"),
    ({"env": "A=1"}, TypeError, "env: expected a list of strings (not one string)"),
    ({"caps": "NET_ADMIN"}, TypeError, "caps: expected a list of strings (not one"),
    ({"capture_output": "yes"}, TypeError, "capture_output: expected True or False"),
    ({"bogus": 1}, TypeError, "bogus: unknown option"),
])
def test_options_are_checked_before_anything_starts(state_root: Path, kw: dict[str, Any],
                                                    error: type, text: str) -> None:
    """Issue 11 item 9: each raised before a sandbox exists (the autouse leak check
    sees no process, fd or mount left; the state root stays empty)."""
    with pytest.raises(error) as info:
        contain.run(["/bin/sh", "-c", "sleep 5"], root=str(state_root), **kw)
    assert isinstance(info.value, contain.ContainError)
    assert text in str(info.value)
    assert left(state_root) == []


def test_args_must_be_a_list(state_root: Path) -> None:
    with pytest.raises(TypeError, match="args: expected a list of strings"):
        contain.Sandbox(root=str(state_root)).run("/bin/true")  # type: ignore[arg-type]


def test_policy_as_dict_and_file(state_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"process": {"env": ["FROM=file"]}}))
    for policy in ({"process": {"env": ["FROM=file"]}}, str(path)):
        r = contain.Sandbox(policy, root=str(state_root)).run(
            ["/bin/sh", "-c", "echo $FROM"], capture_output=True)
        assert r.stdout == b"file\n"
    with pytest.raises(contain.ContainError, match=r"policy\.limits\.pids: expected an "):
        contain.Sandbox({"limits": {"pids": "10"}}, root=str(state_root))


def test_reporter_writes_json_lines_and_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    rep = Reporter(str(path))
    rep.event("landlock", "enforced", abi=7)
    rep.violation("proxy", "connect", "example.com:443", reason="not in the allow list")
    rep.violation("supervisor", "open", "/etc/shadow")
    rep.violation("supervisor", "open", "/etc/gshadow")
    rep.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["event", "violation", "violation", "violation"]
    assert lines[1]["target"] == "example.com:443" and lines[1]["decision"] == "denied"
    summary = rep.summary()
    assert summary.startswith("contain: 3 operation(s) refused")
    assert "supervisor: open x2 (/etc/gshadow, /etc/shadow)" in summary
    r, w = os.pipe()
    rep = Reporter(f"fd:{w}")
    rep.violation("mounts", "write", "/usr/x")
    rep.close()
    os.close(w)
    with os.fdopen(r) as f:
        assert json.loads(f.read())["target"] == "/usr/x"
    assert Reporter(None).summary() == ""


def test_api_as_an_unprivileged_user(user: User, hostdir: Path) -> None:  # noqa: F811
    """Everything of the user's lives under /var/tmp: another pytest session on this
    machine may close /tmp/pytest-of-root (mode 0700) under the user's home."""
    work = hostdir / "work"
    run = hostdir / "run"
    for d in (work, run):
        d.mkdir()
        os.chown(d, user.uid, user.gid)
    run.chmod(0o700)
    script = hostdir / "api.py"
    script.write_text(
        "import json, contain\n"
        f"sb = contain.Sandbox(rw=[{str(work)!r}])\n"
        f"r = sb.run(['/bin/sh', '-c', 'id -u; touch {work}/f; touch /etc/x 2>&1; true'],"
        " capture_output=True, timeout=60)\n"
        "print(json.dumps({'rc': r.returncode, 'out': r.stdout.decode(),"
        " 'll': r.landlock['abi'] if r.landlock else None}))\n")
    proc = user.run(str(SYSTEM_PYTHON), str(script), cwd=work, XDG_RUNTIME_DIR=str(run),
                    HOME=str(work))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rc"] == 0 and out["out"].startswith("0\n")
    assert "Read-only file system" in out["out"]
    assert (work / "f").exists()


def test_a_failing_callback_ends_the_sandbox(state_root: Path) -> None:
    """An exception out of on_output (as a KeyboardInterrupt would) kills the sandbox and
    reaps it: the leak check sees no process, and the state root is empty."""
    def boom(stream: str, data: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        contain.Sandbox(root=str(state_root)).run(
            ["/bin/sh", "-c", "echo go; sleep 300"], on_output=boom, timeout=60)
    assert left(state_root) == []
