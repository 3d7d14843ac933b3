"""The Python API: ``import contain`` has no side effects, ``contain.run(["/bin/true"])``
works as written, and ``Container`` drives the lifecycle in-process.

Each scenario runs in a fresh interpreter: creating a container makes the calling
process a child subreaper, which must not happen to pytest itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import SRC, Bundle, unique_id


def py(code: str, timeout: float = 60, **env: str) -> Any:
    """Run *code* in a child interpreter; it prints one JSON document as its last line."""
    environ = dict(os.environ, PYTHONPATH=str(SRC), **env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=environ, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_has_no_side_effects() -> None:
    out = py("""
        import json, os, sys
        before = set(sys.modules)
        import contain
        added = sorted(m for m in set(sys.modules) - before if not m.startswith("contain"))
        print(json.dumps({"added": added, "all": contain.__all__,
                          "version": contain.__version__,
                          "exists": os.path.exists("/run/contain-api-never")}))
    """)
    heavy = {"json", "subprocess", "socket", "typing", "re", "argparse", "ctypes"}
    assert not heavy & set(out["added"]), out["added"]
    assert {"Container", "run", "ContainError", "RunResult"} <= set(out["all"])


def test_run_true_as_written() -> None:
    """`contain.run(["/bin/true"])` with no other argument (the default state root)."""
    before = set(os.listdir("/run/contain")) if os.path.isdir("/run/contain") else set()
    out = py("""
        import json, contain
        r = contain.run(["/bin/true"])
        print(json.dumps({"rc": r.returncode, "out": r.stdout, "repr": repr(r)}))
    """)
    assert out["rc"] == 0 and out["out"] is None
    after = set(os.listdir("/run/contain")) if os.path.isdir("/run/contain") else set()
    # the shared sandbox mount point and the compiled-filter cache may appear (first run
    # on a fresh machine); no container's state directory may
    assert after - before <= {".sandbox", ".seccomp-cache"}
    # nothing of this sandbox is left; `host-root` is the shared (empty) mount point
    assert not os.path.isdir("/run/contain/.sandbox") or not [
        d for d in os.listdir("/run/contain/.sandbox") if d not in before | {"host-root"}]


def test_run_capture_input_and_options(state_root: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("bound\n")
    out = py(f"""
        import json, contain
        r = contain.run(["/bin/sh", "-c",
                         "cat; echo $X; hostname; cat /b/f; pwd; echo err >&2; exit 4"],
                        capture_output=True, input=b"piped\\n", env=["X=1"],
                        hostname="apihost", binds=["{tmp_path}:/srv:ro"], cwd="/srv",
                        memory="64M", pids=32, root="{state_root}")
        print(json.dumps({{"rc": r.returncode, "out": r.stdout.decode(),
                           "err": r.stderr.decode()}}))
    """.replace("/b/f", "/srv/f"))
    assert out["rc"] == 4
    assert out["out"] == "piped\n1\napihost\nbound\n/srv\n"
    assert out["err"] == "err\n"


def test_run_timeout_kills_and_cleans_up(state_root: Path) -> None:
    out = py(f"""
        import json, time, contain
        t = time.monotonic()
        try:
            contain.run(["/bin/sleep", "100"], timeout=0.5, root="{state_root}")
            what = "no timeout"
        except TimeoutError as e:
            what = "timeout"
        print(json.dumps({{"what": what, "took": time.monotonic() - t}}))
    """)
    assert out["what"] == "timeout"
    assert [p for p in state_root.iterdir() if not p.name.startswith(".")] == []


def test_run_errors_are_contain_errors(state_root: Path) -> None:
    out = py(f"""
        import json, contain
        res = {{}}
        for name, kw in (("program", dict(args=["/no/such/program"])),
                         ("memory", dict(args=["/bin/true"], memory="lots")),
                         ("net", dict(args=["/bin/true"], net="bridge"))):
            try:
                contain.run(root="{state_root}", **kw)
                res[name] = "no error"
            except contain.ContainError as e:
                res[name] = str(e)
        print(json.dumps(res))
    """)
    assert "/no/such/program" in out["program"]
    assert "lots" in out["memory"]
    assert "bridge" in out["net"]


def test_container_lifecycle(make_bundle: Callable[..., Bundle], state_root: Path,
                             tmp_path: Path) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "read x; echo got:$x; exit 5"])
    cid = unique_id()
    out_file = tmp_path / "out"
    out = py(f"""
        import json, os, contain
        from contain import Container
        r, w = os.pipe()
        out = os.open("{out_file}", os.O_WRONLY | os.O_CREAT, 0o644)
        c = Container.create("{cid}", "{bundle.path}", root="{state_root}",
                             stdio=(r, out, out))
        os.close(r)
        os.close(out)
        seen = {{"created": c.status, "state": c.state(), "pid": c.pid,
                 "listed": [s["id"] for s in contain.list_containers("{state_root}")]}}
        c.start()
        seen["running"] = c.status
        os.write(w, b"hello\\n")
        os.close(w)
        seen["code"] = c.wait(timeout=30)
        seen["stopped"] = c.status
        c.delete()
        try:
            c.state()
        except contain.NotFound as e:
            seen["after"] = str(e)
        print(json.dumps(seen))
    """)
    assert out["created"] == "created" and out["state"]["id"] == cid
    assert out["state"]["pid"] == out["pid"] > 0
    assert out["listed"] == [cid]
    assert out["running"] == "running"
    assert out["code"] == 5 and out["stopped"] == "stopped"
    assert "does not exist" in out["after"]
    assert out_file.read_text() == "got:hello\n"


def test_container_kill_wait_and_spec(make_bundle: Callable[..., Bundle],
                                      state_root: Path) -> None:
    bundle = make_bundle(["/bin/sleep", "1000"])
    spec = dict(bundle.config)
    spec["process"] = dict(spec["process"], args=["/bin/sh", "-c",
                                                  "trap 'exit 9' USR1; while :; do "
                                                  "sleep 0.05; done"])
    cid = unique_id()
    out = py(f"""
        import json, os
        from contain import Container
        null = os.open("/dev/null", os.O_RDWR)
        c = Container.create("{cid}", "{bundle.path}", root="{state_root}",
                             spec=json.loads({json.dumps(json.dumps(spec))}),
                             stdio=(null, null, null))
        c.start()
        try:
            c.wait(timeout=0.2)
            early = "exited"
        except TimeoutError:
            early = "timeout"
        c.kill("SIGUSR1")
        code = c.wait(timeout=30)
        c.delete()
        print(json.dumps({{"early": early, "code": code}}))
    """)
    assert out == {"early": "timeout", "code": 9}


def test_container_create_errors(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    out = py(f"""
        import json, contain
        from contain import Container
        res = {{}}
        for name, cid, spec in (("id", "../x", None), ("spec", "ok-id", {{"ociVersion": 1}}),
                                ("missing", "nope", None)):
            try:
                if name == "missing":
                    Container("nope", root="{state_root}").state()
                else:
                    Container.create(cid, "{bundle.path}", root="{state_root}", spec=spec)
                res[name] = "no error"
            except contain.ContainError as e:
                res[name] = [type(e).__name__, str(e)]
        print(json.dumps(res))
    """)
    assert "container id" in out["id"][1]
    assert out["spec"][0] == "SpecError" and "$.ociVersion" in out["spec"][1]
    assert out["missing"][0] == "NotFound"
    assert list(state_root.iterdir()) == []


@pytest.mark.parametrize("module", ["contain", "contain.api"])
def test_modules_are_typed(module: str) -> None:
    path = Path(SRC) / "contain" / "py.typed"
    assert path.exists()
    out = py(f"""
        import json, importlib, inspect
        m = importlib.import_module("{module}")
        from contain.api import Container, run
        sig = inspect.signature(run)
        print(json.dumps({{"params": list(sig.parameters),
                           "doc": bool(Container.__doc__ and run.__doc__)}}))
    """)
    assert out["params"][0] == "args" and out["doc"]


def _tasks_code() -> str:
    # the threads of the process, as the kernel sees them (threading.active_count()
    # knows only the threads that `threading` started); a thread that has said it is
    # done still takes a moment to leave /proc/self/task, so wait for that (5 s at most:
    # a thread really left behind still shows)
    return ("next((n for _ in range(500) if (n := len(os.listdir('/proc/self/task'))) == 1 "
            "or __import__('time').sleep(0.01)), len(os.listdir('/proc/self/task')))")


def test_failing_exec_leaves_no_thread(make_bundle: Callable[..., Bundle],
                                       state_root: Path) -> None:
    """Container.exec warms the cgroup lock with a thread; an exec that fails early
    (here: the container has stopped) leaves no thread behind in the caller."""
    bundle = make_bundle(["/bin/true"])
    cid = unique_id()
    out = py(f"""
        import json, os, threading
        from contain import Container, ContainError
        null = os.open("/dev/null", os.O_RDWR)
        c = Container.create("{cid}", "{bundle.path}", root="{state_root}",
                             stdio=(null, null, null))
        c.start()
        c.wait(timeout=30)
        before = ({_tasks_code()}, threading.active_count())
        try:
            c.exec(["/bin/true"])
            err = "no error"
        except ContainError as e:
            err = str(e)
        after = ({_tasks_code()}, threading.active_count())
        c.delete()
        print(json.dumps({{"err": err, "before": before, "after": after}}))
    """)
    assert "stopped" in out["err"]
    assert out["after"] == out["before"] == [1, 1]


def test_run_and_exec_from_another_thread(make_bundle: Callable[..., Bundle],
                                          state_root: Path) -> None:
    """contain.run() and Container.exec() work off the main thread (signal handlers can
    be set only on the main thread: the API leaves them alone unless asked), and asking
    for signal forwarding there is a ContainError, not a ValueError."""
    bundle = make_bundle(["/bin/sleep", "1000"])
    cid = unique_id()
    out = py(f"""
        import json, os, threading, contain
        from contain import Container
        res = {{}}

        def in_thread():
            res["run"] = contain.run(["/bin/sh", "-c", "exit 3"],
                                     root="{state_root}").returncode
            try:
                contain.run(["/bin/true"], root="{state_root}", forward_signals=True)
                res["forward"] = "no error"
            except contain.ContainError as e:
                res["forward"] = str(e)
            null = os.open("/dev/null", os.O_RDWR)
            c = Container.create("{cid}", "{bundle.path}", root="{state_root}",
                                 stdio=(null, null, null))
            try:
                c.start()
                res["exec"] = c.exec(["/bin/sh", "-c", "exit 7"])
            finally:
                c.kill(9)
                c.wait(timeout=30)
                c.delete()

        t = threading.Thread(target=in_thread)
        t.start()
        t.join(120)
        print(json.dumps(res))
    """, timeout=180)
    assert out["run"] == 3
    assert "main thread" in out["forward"]
    assert out["exec"] == 7


def test_run_forwards_signals_when_asked(state_root: Path, tmp_path: Path) -> None:
    """forward_signals=True (main thread): a SIGTERM sent to the caller reaches the
    sandbox, also with captured output, and the caller's handler is back afterwards."""
    out = py(f"""
        import json, os, signal, threading, time, contain

        def term_when_ready():
            deadline = time.monotonic() + 60
            while not os.path.exists("{tmp_path}/ready") and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=term_when_ready, daemon=True).start()
        r = contain.run(["/bin/sh", "-c", "trap 'echo got TERM; exit 7' TERM; "
                         "touch /w/ready; while :; do sleep 0.05; done"],
                        binds=["{tmp_path}:/w"], capture_output=True, forward_signals=True,
                        timeout=60, root="{state_root}")
        print(json.dumps({{"rc": r.returncode, "out": r.stdout.decode(),
                           "handler": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}}))
    """, timeout=120)
    assert out == {"rc": 7, "out": "got TERM\n", "handler": True}
