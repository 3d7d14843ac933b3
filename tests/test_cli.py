"""The command line: runc's global flags, `spec` (the config runc writes), `features`,
help and usage errors, log formats, and `python -m contain`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SRC, Bundle, contain_cmd, run_contain, unique_id

COMMANDS = ("spec", "create", "start", "state", "kill", "delete", "list", "run", "features",
            "exec", "sandbox")


def cli(*args: str, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*contain_cmd(), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL)


def test_version() -> None:
    for flag in ("--version", "-v"):
        proc = cli(flag)
        assert proc.returncode == 0
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("contain version ")
        assert lines[1] == "spec: 1.3.0"


def test_help_lists_every_command() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for name in COMMANDS:
        assert f"   {name} " in proc.stdout, name
    for flag in ("--root", "--log", "--log-format", "--debug", "--systemd-cgroup"):
        assert flag in proc.stdout


def test_no_command_is_usage_and_exit_1() -> None:
    proc = cli()
    assert proc.returncode == 1
    assert "Usage:" in proc.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name: str) -> None:
    for argv in ((name, "--help"), ("help", name)):
        proc = cli(*argv)
        assert proc.returncode == 0, proc.stderr
        assert name in proc.stdout and proc.stderr == ""


def test_systemd_cgroup_is_a_global_flag(state_root: Path) -> None:
    """--systemd-cgroup is accepted before any command (containerd's shim passes it to
    all of them); only create/run use it (tests/test_systemd.py)."""
    proc = run_contain(state_root, "--systemd-cgroup", "list")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_bad_log_format() -> None:
    proc = cli("--log-format", "xml", "list")
    assert proc.returncode == 1 and "xml" in proc.stderr


def test_python_dash_m(state_root: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-m", "contain", "--root", str(state_root), "list",
                           "-q"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout == ""


# -- spec ------------------------------------------------------------------------------------

def test_spec_matches_runcs_shape(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    ours.mkdir()
    assert cli("spec", "--bundle", str(ours)).returncode == 0
    cfg = json.loads((ours / "config.json").read_text())
    assert cfg["ociVersion"] == "1.2.0"
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    assert cfg["process"]["terminal"] is True and cfg["process"]["args"] == ["sh"]
    assert [m["destination"] for m in cfg["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert {ns["type"] for ns in cfg["linux"]["namespaces"]} >= {
        "pid", "network", "ipc", "uts", "mount"}
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    runc = shutil.which("runc")
    if runc is None:
        return
    theirs = tmp_path / "runc"
    theirs.mkdir()
    subprocess.run([runc, "spec", "--bundle", str(theirs)], check=True, timeout=60)
    ref = json.loads((theirs / "config.json").read_text())
    assert sorted(cfg) == sorted(ref)
    assert sorted(cfg["process"]) == sorted(ref["process"])
    assert sorted(cfg["linux"]) == sorted(ref["linux"])
    assert [m["destination"] for m in cfg["mounts"]] == [m["destination"]
                                                         for m in ref["mounts"]]
    for ours_m, ref_m in zip(cfg["mounts"], ref["mounts"], strict=True):
        assert ours_m["type"] == ref_m["type"], ours_m


def test_spec_in_the_working_directory_and_no_overwrite(tmp_path: Path) -> None:
    assert cli("spec", cwd=tmp_path).returncode == 0
    first = (tmp_path / "config.json").read_text()
    proc = cli("spec", cwd=tmp_path)
    assert proc.returncode == 1 and "exists" in proc.stderr
    assert (tmp_path / "config.json").read_text() == first


def test_spec_output_runs(tmp_path: Path, make_bundle: Callable[..., Bundle],
                          state_root: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    (bundle.path / "config.json").unlink()
    assert cli("spec", "--bundle", str(bundle.path)).returncode == 0
    cfg = json.loads((bundle.path / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/sh", "-c", "hostname; id -u"]
    (bundle.path / "config.json").write_text(json.dumps(cfg))
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [cfg["hostname"], "0"]


def test_spec_missing_bundle_directory(tmp_path: Path) -> None:
    proc = cli("spec", "--bundle", str(tmp_path / "nope"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# -- features --------------------------------------------------------------------------------

def test_features_json() -> None:
    proc = cli("features")
    assert proc.returncode == 0
    feats = json.loads(proc.stdout)
    assert feats["ociVersionMin"].startswith("1.") and feats["ociVersionMax"] == "1.3.0"
    assert set(feats["hooks"]) == {"prestart", "createRuntime", "createContainer",
                                   "startContainer", "poststart", "poststop"}
    assert {"bind", "rbind", "ro", "nosuid", "rro"} <= set(feats["mountOptions"])
    linux = feats["linux"]
    assert set(linux["namespaces"]) == {"pid", "network", "mount", "ipc", "uts", "user",
                                        "cgroup", "time"}
    assert "CAP_SYS_ADMIN" in linux["capabilities"]


# -- logging -------------------------------------------------------------------------------

def test_log_file_and_json_lines(state_root: Path, tmp_path: Path,
                                 make_bundle: Callable[..., Bundle]) -> None:
    log = tmp_path / "log.json"
    proc = run_contain(state_root, "--log", str(log), "--log-format", "json", "kill",
                       unique_id())
    assert proc.returncode == 1
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines and set(lines[-1]) >= {"level", "msg", "time"}
    assert lines[-1]["level"] == "error"
    # a good command writes no error
    bundle = make_bundle(["/bin/true"])
    before = log.read_text()
    proc = run_contain(state_root, "--log", str(log), "--log-format", "json", "run",
                       "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 0
    added = log.read_text()[len(before):]
    assert all(json.loads(x)["level"] != "error" for x in added.splitlines())


def test_debug_flag_keeps_errors_one_line_for_user_errors(state_root: Path) -> None:
    proc = run_contain(state_root, "--debug", "state", unique_id())
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_default_root_is_run_contain() -> None:
    from contain.container.store import default_root

    assert default_root() == "/run/contain"


def test_flag_forms(state_root: Path, make_bundle: Callable[..., Bundle]) -> None:
    """runc's flag spellings: --flag=value, -b, and flags after the id."""
    bundle = make_bundle(["/bin/true"])
    for argv in (("run", f"--bundle={bundle.path}", unique_id()),
                 ("run", "-b", str(bundle.path), unique_id()),
                 ("run", unique_id(), "--bundle", str(bundle.path))):
        proc = run_contain(state_root, *argv)
        assert proc.returncode == 0, (argv, proc.stderr)
    proc = subprocess.run([*contain_cmd(), f"--root={state_root}", "list", "-q"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == ""


@pytest.mark.parametrize("setup, expect_out", [
    ("", "out"),  # nothing at exit: the fast way, the output still flushed
    ("import atexit; atexit.register(lambda: print('atexit ran'))\n", "outatexit ran\n"),
    ("import threading\n", "out"),
])
def test_leave_flushes_and_keeps_exit_work(setup: str, expect_out: str) -> None:
    """The entry point's exit skips the interpreter's finalization, but never the
    command's buffered output, its status, or an atexit callback someone registered."""
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n{setup}"
            "from contain.cli.main import leave\n"
            "sys.stdout.write('out'); sys.stderr.write('err')\n"
            "leave(300)\n")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (300 & 0xFF, expect_out, "err")


def test_setup_commands_run_without_the_cycle_collector(state_root: Path,
                                                        make_bundle: Callable[..., Bundle]
                                                        ) -> None:
    """A setup command keeps the cyclic garbage collector off (its imports would
    trigger collections that walk everything); a forked child that stays a Python
    process gets it back, and `run` turns it back on once its container runs (a pty
    relay or a network proxy may then serve for long)."""
    bundle = make_bundle(["/bin/true"])
    code = (f"import gc, os, sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from contain.cli.main import main\n"
            f"root = {str(state_root)!r}\n"
            "main(['--root', root, 'list', '-q'])\n"
            "after_list = gc.isenabled()\n"
            "r, w = os.pipe()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.write(w, b'1' if gc.isenabled() else b'0'); os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "in_child = os.read(r, 1) == b'1'\n"
            f"rc = main(['--root', root, 'run', '--bundle', {str(bundle.path)!r}, "
            f"{unique_id('gc')!r}])\n"
            "print(after_list, in_child, rc, gc.isenabled())\n")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.stdout.split() == ["False", "True", "0", "True"], p.stdout + p.stderr
