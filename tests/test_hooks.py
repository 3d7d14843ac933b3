"""OCI hooks on real containers: each kind at its point of the lifecycle and in its
namespace, the state JSON on stdin, args, env, timeout, and what a failing hook does
(create fails and leaves nothing; poststart/poststop only warn)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, ok, unique_id, wait_for

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")

# a hook that records: its name, argv, environment, namespaces and its stdin
RECORDER = """#!/bin/sh
exec >> "$LOG" 2>&1
stdin=$(cat)
printf '%s\\n' "{\\"argv\\": \\"$*\\", \\"env\\": \\"$(env | grep -v -E '^(PWD|SHLVL|_)=' \
| sort | tr '\\n' ' ')\\", \\"mnt\\": \\"$(readlink /proc/self/ns/mnt)\\", \
\\"marker\\": \\"$(cat /marker 2>/dev/null)\\", \\"state\\": $stdin}"
"""


def contain(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([*contain_cmd(), "--root", str(root), *args],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=timeout)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


class HookSetup:
    def __init__(self, bundle: Bundle, log: Path, host_script: Path) -> None:
        self.bundle = bundle
        self.log = log
        self.host_script = host_script

    def add(self, kind: str, path: str | None = None, args: list[str] | None = None,
            env: list[str] | None = None, timeout: int | None = None) -> None:
        hook: dict[str, Any] = {"path": path or str(self.host_script),
                                "args": args if args is not None else [kind, kind],
                                "env": env if env is not None else [f"LOG={self.log}",
                                                                    f"KIND={kind}"]}
        if timeout is not None:
            hook["timeout"] = timeout
        self.bundle.config.setdefault("hooks", {}).setdefault(kind, []).append(hook)
        self.bundle.write()

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if line.startswith("{")]

    def kinds(self) -> list[str]:
        return [r["argv"].split()[0] for r in self.records()]


@pytest.fixture
def hooks(make_bundle: Callable[..., Bundle], tmp_path: Path) -> HookSetup:
    bundle = make_bundle(["/bin/sleep", "1000"])
    (bundle.rootfs / "marker").write_text("inside-rootfs")
    log = tmp_path / "hooks.log"
    script = tmp_path / "record-hook"
    script.write_text(RECORDER)
    script.chmod(0o755)
    # the startContainer hook runs in the container: its path resolves in the rootfs,
    # where the log is reached through a bind mount
    inside = bundle.rootfs / "hook"
    inside.write_text(RECORDER)
    inside.chmod(0o755)
    return HookSetup(bundle, log, script)


def test_every_hook_at_its_point(hooks: HookSetup, state_root: Path) -> None:
    logdir = hooks.log.parent
    hooks.bundle.config["mounts"].append({"destination": "/hooklog", "type": "bind",
                                          "source": str(logdir), "options": ["rbind"]})
    for kind in KINDS:
        if kind == "startContainer":
            hooks.add(kind, path="/hook", env=["LOG=/hooklog/hooks.log", f"KIND={kind}"])
        else:
            hooks.add(kind)
    cid = unique_id()
    ok(contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid))
    assert hooks.kinds() == ["prestart", "createRuntime", "createContainer"]
    pid = json.loads(ok(contain(state_root, "state", cid)))["pid"]
    ok(contain(state_root, "start", cid))
    # (startContainer runs in the init once start has released it, poststart in start:
    # as under runc, the two may finish in either order)
    for _ in range(500):
        if len(hooks.kinds()) >= 5:
            break
        time.sleep(0.01)
    assert sorted(hooks.kinds()[3:]) == ["poststart", "startContainer"]
    ok(contain(state_root, "delete", "--force", cid))
    assert hooks.kinds()[:3] == list(KINDS[:3]) and hooks.kinds()[5:] == ["poststop"]

    recs = {r["argv"].split()[0]: r for r in hooks.records()}
    host_mnt = os.readlink("/proc/self/ns/mnt")
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert recs[kind]["mnt"] == host_mnt, kind  # the runtime's namespace
        assert recs[kind]["marker"] == "", kind
    for kind in ("createContainer", "startContainer"):
        assert recs[kind]["mnt"] != host_mnt, kind  # the container's mount namespace
    assert recs["startContainer"]["marker"] == "inside-rootfs"  # after pivot_root
    for kind, rec in recs.items():
        st = rec["state"]
        assert st["id"] == cid and st["bundle"] == str(hooks.bundle.path), kind
        assert st["ociVersion"] == "1.2.0"
        if kind != "poststop":
            assert st["pid"] == pid, kind
    assert recs["prestart"]["state"]["status"] == "creating"
    assert recs["createRuntime"]["state"]["status"] == "creating"
    assert recs["createContainer"]["state"]["status"] == "created"
    assert recs["poststart"]["state"]["status"] == "running"
    assert recs["poststop"]["state"]["status"] == "stopped"


def test_hook_args_and_env(hooks: HookSetup, state_root: Path) -> None:
    hooks.add("createRuntime", args=["argv0", "one", "two words"],
              env=[f"LOG={hooks.log}", "HOOK_VAR=x=y"])
    cid = unique_id()
    ok(contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid))
    ok(contain(state_root, "delete", "--force", cid))
    (rec,) = hooks.records()
    assert rec["argv"] == "one two words"  # $* : args[1:]; args[0] is argv[0]
    # exactly the configured environment, nothing of the runtime's
    assert rec["env"].split() == sorted([f"LOG={hooks.log}", "HOOK_VAR=x=y"])


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_create_and_cleans_up(hooks: HookSetup, state_root: Path,
                                                        tmp_path: Path, kind: str) -> None:
    hooks.add(kind, path="/bin/false", args=["false"], env=[])
    cid = unique_id()
    proc = contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert kind in err and "/bin/false" in err and "exit status 1" in err
    assert not (state_root / cid).exists()
    assert contain(state_root, "state", cid).returncode == 1


def test_hook_timeout(hooks: HookSetup, state_root: Path) -> None:
    hooks.add("createRuntime", path="/bin/sleep", args=["sleep", "30"], env=[], timeout=1)
    cid = unique_id()
    proc = contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid, timeout=25)
    assert proc.returncode == 1
    assert "timed out" in proc.stderr and "createRuntime" in proc.stderr
    assert not (state_root / cid).exists()
    # the hook itself was killed
    out = subprocess.run(["pgrep", "-f", "^sleep 30$"], capture_output=True, text=True)
    assert out.stdout.strip() == "" or all(
        int(p) not in _children_of(os.getpid()) for p in out.stdout.split())


def _children_of(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(entry))
            except OSError:
                pass
    return out


def test_missing_hook_program_fails_create(hooks: HookSetup, state_root: Path) -> None:
    hooks.add("prestart", path="/nonexistent/hook", args=["hook"], env=[])
    cid = unique_id()
    proc = contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid)
    assert proc.returncode == 1
    assert "/nonexistent/hook" in proc.stderr and "prestart" in proc.stderr
    assert not (state_root / cid).exists()


def test_failing_start_container_hook_fails_start(hooks: HookSetup, state_root: Path) -> None:
    hooks.add("startContainer", path="/bin/false", args=["false"], env=[])
    cid = unique_id()
    ok(contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid))
    try:
        contain(state_root, "start", cid)
        # the spec: the runtime must stop the container (runc's start itself returns 0:
        # the hook runs in the init after start has released it, as here, so the init
        # may still be running the hook when start returns: wait for its end)
        wait_for(lambda: json.loads(ok(contain(state_root, "state", cid)))["status"]
                 == "stopped", timeout=30)
    finally:
        ok(contain(state_root, "delete", "--force", cid))


def test_failing_poststart_and_poststop_only_warn(hooks: HookSetup, state_root: Path) -> None:
    hooks.add("poststart", path="/bin/false", args=["false"], env=[])
    hooks.add("poststart")  # the remaining hooks still run
    hooks.add("poststop", path="/bin/false", args=["false"], env=[])
    hooks.add("poststop")
    cid = unique_id()
    ok(contain(state_root, "create", "--bundle", str(hooks.bundle.path), cid))
    proc = contain(state_root, "start", cid)
    assert proc.returncode == 0
    assert "level=warning" in proc.stderr and "poststart" in proc.stderr
    st = json.loads(ok(contain(state_root, "state", cid)))
    assert st["status"] == "running"
    proc = contain(state_root, "delete", "--force", cid)
    assert proc.returncode == 0
    assert "poststop" in proc.stderr
    assert not (state_root / cid).exists()
    assert hooks.kinds() == ["poststart", "poststop"]


def test_hooks_with_run(hooks: HookSetup, state_root: Path) -> None:
    hooks.bundle.config["process"]["args"] = ["/bin/true"]
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        hooks.add(kind)
    ok(contain(state_root, "run", "--bundle", str(hooks.bundle.path), unique_id()))
    assert hooks.kinds() == ["prestart", "createRuntime", "createContainer", "poststart",
                             "poststop"]
