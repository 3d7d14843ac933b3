"""contain.Pool (issue 16): sandboxes made ahead under one policy, one handed its
command per call. Behaviour only (speed is measured in benchmarks/goals.py): results
as Sandbox.run's, the same policy as an unpooled sandbox, a fresh sandbox per call,
bad input refused before anything exists, and nothing left behind -- on close, when an
unclosed pool is collected, at interpreter exit, and across a fork."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import contain
from conftest import wait_for
from contain.sandbox.runner import SandboxTimeout
from test_rootless import SYSTEM_PYTHON, User, user  # noqa: F401  (the fixture)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def traces(root: Path) -> tuple[list[int], list[str]]:
    """The inits and cgroup directories of the sandboxes now in *root*."""
    pids, cgroups = [], []
    for cid in left(root):
        state = json.loads((root / cid / "state.json").read_text())
        pids.append(state["pid"])
        cgroups.extend((state.get("cgroup") or {}).get("paths", {}).values())
    return pids, cgroups


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def gone(pids: list[int], cgroups: list[str], reaped: bool = True) -> None:
    """None of these processes (with *reaped*: not even as a zombie, they were our
    children) and cgroup directories exists any more."""
    alive = [p for p in pids if running(p)]
    assert alive == [], f"sandbox inits still running: {alive}"
    if reaped:
        zombies = [p for p in pids if os.path.exists(f"/proc/{p}")]
        assert zombies == [], f"sandbox inits not reaped: {zombies}"
    assert [c for c in cgroups if os.path.exists(c)] == []


def pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "contain-pool"]


def ready_pool(root: Path, size: int = 2, **options: Any) -> contain.Pool:
    pool = contain.Pool(size=size, root=str(root), **options)
    wait_for(lambda: pool.ready == size, timeout=120)
    return pool


# -- what a call does -------------------------------------------------------------------

def test_pool_runs_commands_as_sandbox_run(state_root: Path) -> None:
    with contain.Pool(size=2, root=str(state_root), memory="128M") as pool:
        r1 = pool.run(["/bin/sh", "-c", "cat; echo err >&2; exit 3"], input=b"in\n",
                      capture_output=True)
        r2 = pool.run(["sh", "-c", "echo $0"], capture_output=True)  # looked up in PATH
        chunks: list[tuple[str, bytes]] = []
        r3 = pool.run(["echo", "streamed"], on_output=lambda s, d: chunks.append((s, d)))
        assert (r1.returncode, r1.stdout, r1.stderr) == (3, b"in\n", b"err\n")
        assert r2.stdout == b"sh\n"
        assert r3.returncode == 0 and b"".join(d for _, d in chunks) == b"streamed\n"
        for r in (r1, r2, r3):
            assert r.rusage["max_rss_kib"] > 0 and r.violations == []
        assert r1.cgroup is not None and r1.cgroup["memory"]["usage"]["limit"] == 128 << 20
        with pytest.raises(contain.ContainError, match="exit status 3"):
            pool.run(["sh", "-c", "exit 3"], check=True)
        # a missing program: the same error as an unpooled run's, raised by the call
        with pytest.raises(contain.ContainError) as pooled:
            pool.run(["no-such-program-here"])
        with pytest.raises(contain.ContainError) as unpooled:
            pool.sandbox.run(["no-such-program-here"])
        assert str(pooled.value) == str(unpooled.value)
        assert "executable file not found" in str(pooled.value)
        # a call with options of its own: a new sandbox with them (unpooled)
        assert pool.run(["pwd"], cwd="/etc", capture_output=True).stdout == b"/etc\n"
        with pytest.raises(SandboxTimeout) as timeout:
            pool.run(["sh", "-c", "echo started; exec sleep 60"], timeout=1.0,
                     capture_output=True)
        assert timeout.value.result.stdout == b"started\n"
        assert pool.run(["/bin/true"]).returncode == 0  # the pool goes on after all that
    assert left(state_root) == []


PROBE = r"""
grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' \
    /proc/self/status
awk '{print $5, $6}' /proc/self/mountinfo | sort
hostname; ulimit -n; ulimit -u; umask; pwd; env | sort
cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null
for f in /etc/pool-probe /tmp/ok "$HOME/pool-probe" "$RW/w"; do
    (echo x > "$f") 2>/dev/null && echo "wrote $f" || echo "refused $f"
done
set -- /proc/[0-9]*; echo "$#"
"""


def test_pooled_policy_is_the_unpooled_one(state_root: Path, tmp_path: Path) -> None:
    """Identity, capabilities, no_new_privs, seccomp, mounts, limits, environment,
    Landlock's grants and refusals: the same, pooled or not."""
    rw = tmp_path / "rw"
    rw.mkdir()
    options: dict[str, Any] = {"memory": "96M", "pids": 64, "hostname": "probe",
                               "env": ["PROBE=1", f"RW={rw}"], "rw": [str(rw)],
                               "landlock": "strict"}
    with ready_pool(state_root, 1, **options) as pool:
        pooled = pool.run(["sh", "-c", PROBE], capture_output=True)
    unpooled = contain.run(["sh", "-c", PROBE], capture_output=True, root=str(state_root),
                           **options)
    assert pooled.returncode == unpooled.returncode == 0, pooled.stderr
    assert b"Seccomp:\t2" in pooled.stdout and b"NoNewPrivs:\t1" in pooled.stdout
    assert b"refused /etc/pool-probe" in pooled.stdout
    assert f"wrote {rw}/w".encode() in pooled.stdout
    assert pooled.stdout.decode() == unpooled.stdout.decode()
    assert pooled.landlock == unpooled.landlock


def test_each_call_gets_a_fresh_sandbox(state_root: Path) -> None:
    """Nothing passes from one call to the next: not /tmp, not a process left running.
    (Not a namespace's inode number: the kernel reuses those of freed namespaces.)"""
    with ready_pool(state_root, 2) as pool:
        first = pool.run(["sh", "-c", "echo x > /tmp/mark; sleep 600 & echo $!"],
                         capture_output=True)
        assert first.returncode == 0 and first.stdout.strip().isdigit()
        for _ in range(4):
            r = pool.run(["sh", "-c", "ls -A /tmp; echo --; ps -o comm= 2>/dev/null || "
                          "cat /proc/[0-9]*/comm"], capture_output=True)
            listing, _, procs = r.stdout.partition(b"--\n")
            assert listing == b"", r.stdout  # no mark
            assert b"sleep" not in procs, r.stdout  # no sleep from an earlier call
            assert b"sh" in procs, r.stdout


def test_many_threads_share_a_pool(state_root: Path) -> None:
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(3):
                r = pool.run(["sh", "-c", f"echo {n}-{i}"], capture_output=True)
                results.append(r.stdout)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with ready_pool(state_root, 2) as pool:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert errors == []
    assert sorted(results) == sorted(f"{n}-{i}\n".encode() for n in range(4)
                                     for i in range(3))


def test_unpooled_runs_beside_the_pool(state_root: Path) -> None:
    """contain.run in the caller's thread while the pool's thread makes sandboxes: a
    waiting pooled init must not hold what the caller's sandbox needs (its directory's
    lock, inherited at the fork)."""
    with contain.Pool(size=2, root=str(state_root)) as pool:
        for _ in range(4):
            assert contain.run(["/bin/true"], root=str(state_root)).returncode == 0
            assert pool.run(["/bin/true"]).returncode == 0


# -- refused before anything exists ---------------------------------------------------------

def test_bad_input_refused_before_anything_exists(state_root: Path) -> None:
    for size, err in ((0, contain.ContainError), (65, contain.ContainError),
                      ("2", TypeError), (True, TypeError)):
        with pytest.raises(err, match="size"):
            contain.Pool(size=size, root=str(state_root))
    with pytest.raises(contain.ContainError, match="memory"):
        contain.Pool(size=1, root=str(state_root), memory="lots")
    assert pool_threads() == [] and left(state_root) == []
    with ready_pool(state_root, 1) as pool:
        with pytest.raises(TypeError, match="args"):
            pool.run("/bin/true")  # type: ignore[arg-type]
        with pytest.raises(contain.ContainError, match="no command"):
            pool.run([])
        with pytest.raises(contain.ContainError, match="NUL"):
            pool.run(["/bin/echo", "a\0b"])
        with pytest.raises(TypeError, match="capture_output"):
            pool.run(["/bin/true"], capture_output="yes")
        assert pool.ready == 1  # nothing was taken for those
    with pytest.raises(contain.ContainError, match="closed"):
        pool.run(["/bin/true"])


# -- nothing left behind ------------------------------------------------------------------

def test_close_leaves_nothing(state_root: Path) -> None:
    pool = ready_pool(state_root, 3, memory="64M")
    pool.run(["/bin/true"])
    wait_for(lambda: pool.ready == 3, timeout=120)
    pids, cgroups = traces(state_root)
    assert len(pids) == 3 and cgroups
    pool.close()
    pool.close()  # idempotent
    assert pool.closed and pool_threads() == []
    assert left(state_root) == []
    gone(pids, cgroups)


def test_an_unclosed_pool_is_removed_when_collected(state_root: Path) -> None:
    def forget() -> tuple[list[int], list[str]]:
        ready_pool(state_root, 2)  # never closed, no reference kept
        return traces(state_root)

    pids, cgroups = forget()
    gc.collect()
    assert pool_threads() == []
    assert left(state_root) == []
    gone(pids, cgroups)


SCRIPT = """
import os, sys, json, time
sys.path.insert(0, {src!r})
import contain
pool = contain.Pool(size=2, root={root!r}, memory="64M")
deadline = time.monotonic() + 120
while pool.ready < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
{body}
"""


def _script(root: Path, body: str) -> subprocess.CompletedProcess[str]:
    code = SCRIPT.format(src=SRC, root=str(root), body=textwrap.dedent(body))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_interpreter_exit_removes_an_unclosed_pool(state_root: Path) -> None:
    """A program that forgets to close its pool and just ends."""
    p = _script(state_root, """
        assert pool.run(["/bin/true"]).returncode == 0
        while pool.ready < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for cid in sorted(os.listdir({root!r})):
            if not cid.startswith("."):
                s = json.load(open(os.path.join({root!r}, cid, "state.json")))
                print(json.dumps([s["pid"], list(s["cgroup"]["paths"].values())]))
    """.replace("{root!r}", repr(str(state_root))))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(lines) == 2
    assert left(state_root) == []
    # (the inits were the script's children: reaped by it, or orphaned to our subreaper)
    gone([pid for pid, _ in lines], [c for _, cg in lines for c in cg], reaped=False)


def test_a_forked_child_leaves_the_parents_pool_alone(state_root: Path) -> None:
    """The child of a fork gets the pool object, not its sandboxes: its calls run
    unpooled, it holds none of their sockets, and its exit (which closes its copy of the
    pool) kills and removes nothing of the parent's."""
    p = _script(state_root, """
        socks = [r.sock.fileno() for r in pool._pool._state.ready]
        before = sorted(n for n in os.listdir({root!r}) if not n.startswith("."))
        pid = os.fork()
        if pid == 0:
            held = [fd for fd in socks if os.path.exists(f"/proc/self/fd/{fd}")]
            r = pool.run(["sh", "-c", "echo child"], capture_output=True)
            print("child", held, r.stdout, pool.ready, flush=True)
            sys.exit(0)  # the interpreter's normal exit: the pool's finalizer runs
        _, status = os.waitpid(pid, 0)
        after = sorted(n for n in os.listdir({root!r}) if not n.startswith("."))
        print("parent", status, before == after, pool.ready)
        r = pool.run(["sh", "-c", "echo parent"], capture_output=True)
        print("pooled", r.stdout, pool._pool._state.owner == os.getpid())
        pool.close()
    """.replace("{root!r}", repr(str(state_root))))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "child [] b'child\\n' 0", p.stdout
    assert lines[1] == "parent 0 True 2", p.stdout
    assert lines[2] == "pooled b'parent\\n' True", p.stdout
    assert left(state_root) == []


def test_a_killed_pool_process_leaves_no_process(state_root: Path) -> None:
    """SIGKILLed with ready sandboxes: their inits see the end of the handover socket
    and exit (state directories and cgroups stay, as a SIGKILLed `contain run`'s;
    `contain delete --force` removes them: the state_root fixture does)."""
    p = _script(state_root, """
        for cid in sorted(os.listdir({root!r})):
            if not cid.startswith("."):
                s = json.load(open(os.path.join({root!r}, cid, "state.json")))
                print(s["pid"], flush=True)
        os.kill(os.getpid(), 9)
    """.replace("{root!r}", repr(str(state_root))))
    assert p.returncode == -9
    pids = [int(x) for x in p.stdout.split()]
    assert len(pids) == 2
    wait_for(lambda: not any(running(pid) for pid in pids), timeout=60)
    for cid in left(state_root):  # (what a SIGKILL leaves, removed the documented way)
        subprocess.run([sys.executable, "-I", "-c",
                        f"import sys; sys.path.insert(0, {SRC!r}); "
                        "from contain.cli.main import main; sys.exit(main())",
                        "--root", str(state_root), "delete", "--force", cid],
                       check=True, timeout=60, capture_output=True)


def test_pool_as_an_unprivileged_user(user: User, tmp_path_factory: Any) -> None:  # noqa: F811
    """Rootless: the init is the stage's child in a user namespace (reaped as our
    subreaper's orphan); a pooled call works and close leaves nothing in the user's
    state root. (Under /var/tmp: see test_sandbox_api's rootless test.)"""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="contain-pool-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        work, run = base / "work", base / "run"
        for d in (work, run):
            d.mkdir()
            os.chown(d, user.uid, user.gid)
        run.chmod(0o700)
        script = base / "pool.py"
        script.write_text(textwrap.dedent(f"""
            import json, os, time, contain
            with contain.Pool(size=1, rw=[{str(work)!r}]) as pool:
                deadline = time.monotonic() + 120
                while pool.ready < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                ready = pool.ready
                r = pool.run(["/bin/sh", "-c", "id -u; touch {work}/f"],
                             capture_output=True, timeout=60)
                root = pool.sandbox.root
            left = [n for n in os.listdir(root) if not n.startswith(".")]
            print(json.dumps({{"ready": ready, "rc": r.returncode,
                              "out": r.stdout.decode(), "left": left}}))
        """))
        proc = user.run(str(SYSTEM_PYTHON), str(script), cwd=work,
                        XDG_RUNTIME_DIR=str(run), HOME=str(work))
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out == {"ready": 1, "rc": 0, "out": "0\n", "left": []}, out
        assert (work / "f").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
