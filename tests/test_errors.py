"""Bad input and failures on purpose: each gives one line naming the field (JSON path) or
the object, exit status 1, no traceback, and leaves no state directory, mount, cgroup or
process behind (the no_leaks and state_root fixtures check the last part)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, unique_id
from contain.errors import ContainError

Mutate = Callable[[dict[str, Any]], None]


def contain(root: Path, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """The container's stdio goes to files: a created container would hold a pipe."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([*contain_cmd(), "--root", str(root), *args],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60,
                              cwd=cwd)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert "level=error" in err
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    return err


def set_path(cfg: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    obj = cfg
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj.setdefault(k, {})
    last = keys[-1]
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


def setter(path: str, value: Any) -> Mutate:
    return lambda cfg: set_path(cfg, path, value)


def add_ns(*entries: dict[str, str]) -> Mutate:
    return lambda cfg: cfg["linux"]["namespaces"].extend(entries)


def add_mount(**m: Any) -> Mutate:
    return lambda cfg: cfg["mounts"].append(m)


def drop(path: str) -> Mutate:
    def mutate(cfg: dict[str, Any]) -> None:
        keys = path.split(".")
        obj = cfg
        for k in keys[:-1]:
            obj = obj[k]
        del obj[keys[-1]]
    return mutate


def without_ns(kind: str, then: Mutate | None = None) -> Mutate:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != kind]
        if then is not None:
            then(cfg)
    return mutate


# (name, mutation of the default config, words the error must contain)
BAD_CONFIGS: list[tuple[str, Mutate, tuple[str, ...]]] = [
    ("args-not-a-list", setter("process.args", "sh"), ("$.process.args",)),
    ("args-empty", setter("process.args", []), ("$.process.args",)),
    ("arg-not-a-string", setter("process.args", ["/bin/true", 5]), ("$.process.args[1]",)),
    ("uid-a-string", setter("process.user.uid", "0"), ("$.process.user.uid",)),
    ("uid-negative", setter("process.user.uid", -1), ("$.process.user.uid",)),
    ("umask-too-big", setter("process.user.umask", 0o7777), ("$.process.user.umask",)),
    ("env-not-strings", setter("process.env", [1]), ("$.process.env[0]",)),
    ("terminal-a-string", setter("process.terminal", "no"), ("$.process.terminal",)),
    ("cwd-relative", setter("process.cwd", "relative/dir"), ("$.process.cwd",)),
    ("cwd-missing", drop("process.cwd"), ("$.process.cwd",)),
    ("rlimit-bad-soft", setter("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": -1,
                                                     "hard": 10}]),
     ("$.process.rlimits[0].soft",)),
    ("rlimit-unknown", setter("process.rlimits", [{"type": "RLIMIT_NOPE", "soft": 1,
                                                    "hard": 1}]),
     ("RLIMIT_NOPE",)),
    ("rlimit-duplicate", setter("process.rlimits", [
        {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
        {"type": "RLIMIT_NOFILE", "soft": 2, "hard": 2}]), ("$.process.rlimits[1].type",)),
    ("oom-out-of-range", setter("process.oomScoreAdj", 5000), ("$.process.oomScoreAdj",)),
    ("readonly-a-string", setter("root.readonly", "yes"), ("$.root.readonly",)),
    ("root-missing", drop("root"), ("$.root",)),
    ("rootfs-missing", setter("root.path", "no-such-rootfs"), ("$.root.path",
                                                                "no-such-rootfs")),
    ("hostname-a-number", setter("hostname", 5), ("$.hostname",)),
    ("hostname-without-uts", without_ns("uts"), ("$.hostname",)),
    ("version-2", setter("ociVersion", "2.0.0"), ("$.ociVersion",)),
    ("process-missing", drop("process"), ("$.process",)),
    ("namespaces-an-object", setter("linux.namespaces", {}), ("$.linux.namespaces",)),
    ("namespace-unknown", add_ns({"type": "bogus"}), ("$.linux.namespaces[6].type",
                                                      "bogus")),
    ("namespace-duplicate", add_ns({"type": "pid"}), ("$.linux.namespaces[6].type",
                                                      "duplicate")),
    ("namespace-path-relative", without_ns("network", add_ns({"type": "network",
                                                              "path": "proc/1/ns/net"})),
     ("$.linux.namespaces[5].path",)),
    ("namespace-path-missing", without_ns("network", add_ns({"type": "network",
                                                             "path": "/no/such/ns"})),
     ("$.linux.namespaces[5].path", "/no/such/ns")),
    ("mount-namespace-joined", without_ns("mount", add_ns({"type": "mount",
                                                           "path": "/proc/1/ns/mnt"})),
     ("$.linux.namespaces",)),
    ("userns-without-mappings", add_ns({"type": "user"}), ("$.linux.uidMappings",)),
    ("mappings-without-userns", setter("linux.uidMappings", [
        {"containerID": 0, "hostID": 1000, "size": 1}]), ("$.linux.uidMappings",)),
    ("mapping-overlap", lambda cfg: (
        cfg["linux"]["namespaces"].append({"type": "user"}),
        cfg["linux"].update(
            uidMappings=[{"containerID": 0, "hostID": 100000, "size": 100},
                         {"containerID": 50, "hostID": 200000, "size": 10}],
            gidMappings=[{"containerID": 0, "hostID": 100000, "size": 100}])),
     ("$.linux.uidMappings[1]", "overlap")),
    ("time-offsets-without-timens", setter("linux.timeOffsets",
                                           {"boottime": {"secs": 1}}),
     ("$.linux.timeOffsets",)),
    ("time-offsets-unknown-clock", lambda cfg: (
        cfg["linux"]["namespaces"].append({"type": "time"}),
        cfg["linux"].update(timeOffsets={"realtime": {"secs": 1}})),
     ("$.linux.timeOffsets.realtime",)),
    ("mount-destination-relative", add_mount(destination="rel", type="tmpfs",
                                             source="tmpfs"),
     ("$.mounts[7].destination",)),
    ("mount-options-a-string", add_mount(destination="/x", type="tmpfs", source="tmpfs",
                                         options="ro"),
     ("$.mounts[7].options",)),
    ("masked-path-relative", setter("linux.maskedPaths", ["proc/kcore"]),
     ("$.linux.maskedPaths[0]",)),
    ("device-path-relative", setter("linux.devices", [{"type": "c", "path": "dev/x",
                                                       "major": 1, "minor": 3}]),
     ("$.linux.devices[0].path",)),
    ("device-type-unknown", setter("linux.devices", [{"type": "z", "path": "/dev/x",
                                                      "major": 1, "minor": 3}]),
     ("$.linux.devices[0].type",)),
    ("hook-path-relative", setter("hooks", {"prestart": [{"path": "bin/true"}]}),
     ("$.hooks.prestart[0].path",)),
    ("hook-timeout-zero", setter("hooks", {"prestart": [{"path": "/bin/true",
                                                         "timeout": 0}]}),
     ("$.hooks.prestart[0].timeout",)),
    ("sysctl-not-namespaced", setter("linux.sysctl", {"vm.swappiness": "10"}),
     ("$.linux.sysctl.vm.swappiness", "refused")),
    ("sysctl-net-without-netns", without_ns("network", setter(
        "linux.sysctl", {"net.ipv4.ip_forward": "1"})),
     ("$.linux.sysctl.net.ipv4.ip_forward", "network")),
    ("sysctl-value-not-a-string", setter("linux.sysctl", {"net.ipv4.ip_forward": 1}),
     ("$.linux.sysctl.net.ipv4.ip_forward",)),
    ("propagation-unknown", setter("linux.rootfsPropagation", "sideways"),
     ("$.linux.rootfsPropagation",)),
    ("capability-not-a-list", setter("process.capabilities.bounding", "CAP_KILL"),
     ("$.process.capabilities.bounding",)),
]


@pytest.mark.parametrize("mutate, words", [(m, w) for _, m, w in BAD_CONFIGS],
                         ids=[n for n, _, _ in BAD_CONFIGS])
def test_bad_config_is_refused_at_create(make_bundle: Callable[..., Bundle],
                                         state_root: Path, mutate: Mutate,
                                         words: tuple[str, ...]) -> None:
    bundle = make_bundle(["/bin/true"])
    mutate(bundle.config)
    bundle.write()
    cid = unique_id()
    one_line_error(contain(state_root, "create", "--bundle", str(bundle.path), cid), *words)
    assert not (state_root / cid).exists()
    # run refuses it the same way
    one_line_error(contain(state_root, "run", "--bundle", str(bundle.path), cid), *words)


@pytest.mark.parametrize("text, words", [
    ("{not json", ("config.json", "malformed JSON")),
    ("", ("config.json", "malformed JSON")),
    ("[1, 2]", ("config.json", "$")),
    ('{"ociVersion": "1.2.0", "process": {"cwd": "/", "args": ["/bin/true"]}}',
     ("$.root",)),
    ("\xff\xfe", ("config.json",)),
])
def test_malformed_config_json(make_bundle: Callable[..., Bundle], state_root: Path,
                               text: str, words: tuple[str, ...]) -> None:
    bundle = make_bundle(["/bin/true"])
    (bundle.path / "config.json").write_bytes(text.encode("latin-1"))
    one_line_error(contain(state_root, "create", "--bundle", str(bundle.path), unique_id()),
                   *words)


def test_missing_bundle_and_config(state_root: Path, tmp_path: Path) -> None:
    one_line_error(contain(state_root, "create", "--bundle", str(tmp_path / "nope"),
                           unique_id()), str(tmp_path / "nope"))
    one_line_error(contain(state_root, "create", "--bundle", str(tmp_path), unique_id()),
                   "config.json")
    # without --bundle: the working directory
    one_line_error(contain(state_root, "create", unique_id(), cwd=str(tmp_path)),
                   "config.json")


@pytest.mark.parametrize("cid", ["a/b", "..", "../escape", "/abs", ".hidden", "x" * 1025,
                                 "sp ace", "new\nline", "é"])
def test_bad_container_ids(make_bundle: Callable[..., Bundle], state_root: Path,
                           cid: str) -> None:
    bundle = make_bundle(["/bin/true"])
    for cmd in (("create", "--bundle", str(bundle.path), cid),
                ("run", "--bundle", str(bundle.path), cid),
                ("state", cid), ("start", cid), ("kill", cid), ("delete", cid)):
        one_line_error(contain(state_root, *cmd), "container id")
    assert list(state_root.iterdir()) == []
    assert not (state_root.parent / "escape").exists()


def test_empty_id(state_root: Path) -> None:
    one_line_error(contain(state_root, "state", ""), "container id")


def test_long_but_valid_id(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    cid = "x" * 200
    proc = contain(state_root, "run", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("command", [("state",), ("start",), ("kill",), ("kill", "KILL"),
                                     ("delete",)])
def test_unknown_id(state_root: Path, command: tuple[str, ...]) -> None:
    cid = unique_id("unknown")
    args = [command[0], cid, *command[1:]]
    one_line_error(contain(state_root, *args), "container does not exist")


def test_unknown_command_and_flags(state_root: Path) -> None:
    one_line_error(contain(state_root, "frobnicate"), "frobnicate")
    one_line_error(contain(state_root, "create", "--no-such-flag", "x"), "--no-such-flag")
    one_line_error(contain(state_root, "create"), "create")
    one_line_error(contain(state_root, "create", "--preserve-fds", "many", "x"),
                   "--preserve-fds")
    one_line_error(contain(state_root, "create", "--preserve-fds", "-1", "x"),
                   "--preserve-fds")


# -- failures on purpose, at each step of create -----------------------------------------------

FAILING_STEPS: list[tuple[str, Mutate, tuple[str, ...]]] = [
    ("bind-source-missing", add_mount(destination="/data", type="bind",
                                      source="/no/such/source", options=["rbind"]),
     ("mounts[7]", "/no/such/source")),
    ("unknown-filesystem", add_mount(destination="/data", type="nosuchfs", source="x"),
     ("mounts[7]", "nosuchfs")),
    ("bad-tmpfs-option", add_mount(destination="/data", type="tmpfs", source="tmpfs",
                                   options=["size=lots"]),
     ("mounts[7]",)),
    ("mount-over-a-file-with-a-dir-fs", add_mount(destination="/etc/passwd", type="tmpfs",
                                                  source="tmpfs"),
     ("mounts[7]", "/etc/passwd")),
    ("overlay-missing-lower", add_mount(destination="/o", type="overlay", source="overlay",
                                        options=["lowerdir=/no/such/lower"]),
     ("mounts[7]", "overlay")),
    ("sysctl-bad-value", setter("linux.sysctl", {"net.ipv4.ip_forward": "banana"}),
     ("net.ipv4.ip_forward",)),
    ("sysctl-unknown-key", setter("linux.sysctl", {"net.ipv4.no_such_knob": "1"}),
     ("net.ipv4.no_such_knob",)),
    ("cwd-under-a-file", setter("process.cwd", "/etc/passwd/sub"), ("process.cwd",
                                                                     "/etc/passwd/sub")),
    ("user-not-mapped", lambda cfg: (
        cfg["linux"]["namespaces"].append({"type": "user"}),
        cfg["linux"].update(uidMappings=[{"containerID": 0, "hostID": 100000, "size": 10}],
                            gidMappings=[{"containerID": 0, "hostID": 100000, "size": 10}]),
        cfg["process"]["user"].update(uid=500)),
     ("process.user",)),
    ("device-over-a-directory", setter("linux.devices", [
        {"type": "c", "path": "/dev/pts", "major": 1, "minor": 3}]), ("/dev/pts",)),
    ("masked-path-error", setter("linux.readonlyPaths", ["/proc/self/fd/0/x"]),
     ("readonlyPaths",)),
    # a failure after pivot_root is told with its message also when nothing else made
    # the runtime import what the init reports it with (no process.capabilities here)
    ("no-executable-no-capabilities", lambda cfg: (
        cfg["process"].pop("capabilities", None),
        cfg["process"].update(args=["/no/such/program"])), ("/no/such/program",)),
]


@pytest.mark.parametrize("mutate, words", [(m, w) for _, m, w in FAILING_STEPS],
                         ids=[n for n, _, _ in FAILING_STEPS])
def test_failing_step_cleans_up(make_bundle: Callable[..., Bundle], state_root: Path,
                                mutate: Mutate, words: tuple[str, ...]) -> None:
    bundle = make_bundle(["/bin/true"])
    mutate(bundle.config)
    bundle.write()
    for d in (bundle.path, *bundle.path.parents):  # (a user namespace must reach it)
        if str(d) == "/tmp":
            break
        d.chmod(d.stat().st_mode | 0o711)
    cid = unique_id()
    one_line_error(contain(state_root, "create", "--bundle", str(bundle.path), cid), *words)
    assert not (state_root / cid).exists()


def test_debug_shows_more_but_still_one_error(make_bundle: Callable[..., Bundle],
                                              state_root: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    bundle.config["process"]["args"] = "sh"
    bundle.write()
    proc = contain(state_root, "--debug", "create", "--bundle", str(bundle.path),
                   unique_id())
    assert proc.returncode == 1
    assert "$.process.args" in proc.stderr


def test_json_log_format_for_errors(state_root: Path) -> None:
    proc = contain(state_root, "--log-format", "json", "state", unique_id())
    assert proc.returncode == 1
    line = json.loads(proc.stderr.strip())
    assert line["level"] == "error" and "does not exist" in line["msg"] and "time" in line


def test_log_file_receives_the_error(state_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "contain.log"
    proc = contain(state_root, "--log", str(log), "--log-format", "json", "state",
                   unique_id())
    assert proc.returncode == 1
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert any(e["level"] == "error" and "does not exist" in e["msg"] for e in entries)


def test_syscall_numbers_of_an_unknown_machine_fail_loudly() -> None:
    """No fallback to x86_64's numbers: on another machine they call other syscalls."""
    from contain.linux.syscalls import NR, SyscallNumbers

    assert NR["setns"] > 0  # this machine has a table
    with pytest.raises(ContainError, match=r"setns.*riscv64"):
        SyscallNumbers("riscv64")["setns"]


def test_syscall_errors_carry_the_call_and_its_target() -> None:
    """linux/ raises one OSError subclass: errno (and the errno's own OSError class, so
    `except FileNotFoundError` still works), the syscall's name and its target."""
    import errno
    import pickle

    from contain.errors import message
    from contain.linux.syscalls import SyscallError, umount2

    with pytest.raises(FileNotFoundError) as info:
        umount2("/no/such/mount/point", 0)
    exc = info.value
    assert isinstance(exc, SyscallError)
    assert (exc.errno, exc.syscall, exc.target) == (errno.ENOENT, "umount2",
                                                   "/no/such/mount/point")
    assert message(exc) == "umount2 /no/such/mount/point: No such file or directory"
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc) and again.target == exc.target


def test_contain_errors_keep_their_cause_and_errno(tmp_path: Path) -> None:
    """A ContainError raised from an OSError keeps it as __cause__ and reports its errno
    (not `from None`, which drops both)."""
    import errno

    from contain.container import store
    from contain.errors import NotFound

    with pytest.raises(NotFound) as info:
        store.load(str(tmp_path), "missing")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert info.value.errno == errno.ENOENT
    assert ContainError("plain").errno is None
    assert ContainError("given", errno=errno.EBUSY).errno == errno.EBUSY


def test_one_message_for_any_exception() -> None:
    from contain.errors import message

    assert message(ContainError("config.json: $.x: bad")) == "config.json: $.x: bad"
    assert message(FileNotFoundError(2, "No such file or directory", "/etc/x")) == \
        "/etc/x: No such file or directory"
    assert message(KeyError("k")) == "internal error: KeyError: 'k'"


def _errno_literals(path: Path) -> list[int]:
    """Lines comparing an `.errno` with a number (`exc.errno == 22`, `in (1, 13)`)."""
    import ast

    def numeric(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, int)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(numeric(e) for e in node.elts)
        return False

    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "errno" for s in sides) and \
                    any(numeric(s) for s in sides):
                lines.append(node.lineno)
    return lines


def test_errno_values_come_from_the_errno_module(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "src" / "contain"
    found = {str(p.relative_to(src)): _errno_literals(p) for p in sorted(src.rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}
    sample = tmp_path / "m.py"
    sample.write_text("try:\n    pass\nexcept OSError as e:\n    if e.errno in (1, 13):\n"
                      "        raise\n")
    assert _errno_literals(sample) == [4]  # the check sees one
