"""process.*, observed from inside real containers: args, env, cwd, user, umask, groups,
rlimits, oomScoreAdj, noNewPrivileges, capabilities, stdio, a terminal through
--console-socket (a receiver written here, as containerd's shim does it), --preserve-fds
and LISTEN_FDS, and a missing executable failing at create."""

from __future__ import annotations

import array
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, ok, run_contain, unique_id

Runner = Callable[..., subprocess.CompletedProcess[str]]

CAP_BITS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_KILL": 5,
            "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13,
            "CAP_SYS_ADMIN": 21, "CAP_AUDIT_WRITE": 29}


@pytest.fixture
def run_sh(make_bundle: Callable[..., Bundle], state_root: Path) -> Runner:
    def run(script: str, mutate: Callable[[dict[str, Any]], None] | None = None,
            *flags: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        bundle = make_bundle(["/bin/sh", "-c", script])
        if mutate is not None:
            mutate(bundle.config)
            bundle.write()
        return run_contain(state_root, "run", *flags, "--bundle", str(bundle.path),
                           unique_id(), input=input)

    return run


def status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def mask(*names: str) -> int:
    out = 0
    for n in names:
        out |= 1 << CAP_BITS[n]
    return out


# -- args, env, cwd, stdio ----------------------------------------------------------------

def test_args_are_passed_verbatim(make_bundle: Callable[..., Bundle],
                                  state_root: Path) -> None:
    bundle = make_bundle(["/bin/echo", "two  spaces", "", "$HOME", "*", "-n"])
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
    assert ok(proc) == "two  spaces  $HOME * -n\n"


def test_env_exactly_as_configured_plus_home(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["env"] = ["PATH=/bin", "A=1", "B=with space", "EMPTY="]

    env = dict(line.split("=", 1) for line in ok(run_sh("env", mutate)).splitlines())
    env.pop("PWD", None)
    env.pop("SHLVL", None)
    assert env == {"PATH": "/bin", "A": "1", "B": "with space", "EMPTY": "", "HOME": "/root"}


def test_home_follows_the_user(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}

    assert ok(run_sh("echo $HOME", mutate)) == "/home\n"


def test_cwd_existing_and_created(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["cwd"] = "/work/deep/dir"

    out = ok(run_sh("pwd; stat -c %a /work/deep/dir", mutate))
    assert out.split() == ["/work/deep/dir", "755"]


def test_cwd_through_a_symlink_inside_the_rootfs(make_bundle: Callable[..., Bundle],
                                                 state_root: Path) -> None:
    bundle = make_bundle(["/bin/pwd"])
    (bundle.rootfs / "real").mkdir()
    (bundle.rootfs / "link").symlink_to("/real")
    bundle.config["process"]["cwd"] = "/link"
    bundle.write()
    out = ok(run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id()))
    assert out == "/real\n"


def test_stdio_passed_through(run_sh: Runner) -> None:
    proc = run_sh("read line; echo got:$line; echo to-stderr >&2; exit 3",
                  input="hello\n")
    assert proc.returncode == 3
    assert proc.stdout == "got:hello\n"
    assert proc.stderr == "to-stderr\n"


# -- user ---------------------------------------------------------------------------------

def test_user_uid_gid_additional_gids_umask(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 20, 1002],
                                  "umask": 0o027}
        cfg["root"]["readonly"] = False

    out = ok(run_sh("id -u; id -g; umask; grep -E '^(Uid|Gid|Groups):' /proc/$$/status; "
                    "touch /tmp/f; stat -c '%a %u %g' /tmp/f", mutate))
    lines = out.splitlines()
    assert lines[:3] == ["1000", "1001", "0027"]
    st = status_fields(out)
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1001"] * 4
    assert sorted(int(g) for g in st["Groups"].split()) == [5, 20, 1002]
    assert lines[-1] == "640 1000 1001"


def test_default_umask_is_022(run_sh: Runner) -> None:
    assert ok(run_sh("umask")) == "0022\n"


def test_root_has_no_supplementary_groups_by_default(run_sh: Runner) -> None:
    st = status_fields(ok(run_sh("cat /proc/$$/status")))
    assert st["Groups"] == ""


# -- rlimits, oom, nnp --------------------------------------------------------------------

def test_rlimits(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600},
            {"type": "RLIMIT_MSGQUEUE", "soft": 4096, "hard": 8192},
        ]

    out = ok(run_sh("ulimit -n; ulimit -c; cat /proc/$$/limits", mutate))
    lines = out.splitlines()
    assert lines[:2] == ["100", "0"]
    limits = {}
    for line in lines[3:]:
        name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
        limits[name] = (soft, hard)
    assert limits["Max open files"] == ("100", "200")
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max processes"] == ("500", "600")
    assert limits["Max msgqueue size"] == ("4096", "8192")


def test_rlimit_above_the_hard_limit_fails_at_create(run_sh: Runner,
                                                     state_root: Path) -> None:
    """This machine's root lacks CAP_SYS_RESOURCE: raising a hard limit is refused, at
    create, with the rlimit named."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("unlimited hard nofile limit")

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard + 1,
                                      "hard": hard + 1}]

    proc = run_sh("true", mutate)
    if proc.returncode == 0:
        pytest.skip("this process may raise its hard limits (CAP_SYS_RESOURCE)")
    assert proc.returncode == 1
    assert "RLIMIT_NOFILE" in proc.stderr and "Traceback" not in proc.stderr
    assert list(state_root.iterdir()) == []


def test_oom_score_adj(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["oomScoreAdj"] = 567

    assert ok(run_sh("cat /proc/$$/oom_score_adj", mutate)) == "567\n"


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(run_sh: Runner, nnp: bool) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["noNewPrivileges"] = nnp

    st = status_fields(ok(run_sh("cat /proc/$$/status", mutate)))
    assert st["NoNewPrivs"] == ("1" if nnp else "0")


# -- capabilities --------------------------------------------------------------------------

def test_default_capabilities(run_sh: Runner) -> None:
    st = status_fields(ok(run_sh("cat /proc/$$/status")))
    want = mask("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    for key in ("CapBnd", "CapEff", "CapPrm"):
        assert int(st[key], 16) == want, key
    # runc's default config lists ambient caps without inheritable ones: the kernel
    # cannot raise them, and runc (like contain) goes on without them
    assert int(st["CapInh"], 16) == 0
    assert int(st["CapAmb"], 16) == 0


def test_all_five_capability_sets(run_sh: Runner) -> None:
    """As a non-root user (for root the kernel's file-capability rules add the bounding
    set at execve): exactly the configured sets, after execve."""

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["process"]["capabilities"] = {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "effective": ["CAP_CHOWN", "CAP_KILL"],
            "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
            "ambient": ["CAP_KILL"],
        }

    st = status_fields(ok(run_sh("cat /proc/$$/status", mutate)))
    # after execve: ambient caps join permitted and effective
    assert int(st["CapBnd"], 16) == mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID")
    assert int(st["CapInh"], 16) == mask("CAP_KILL", "CAP_NET_RAW")
    assert int(st["CapAmb"], 16) == mask("CAP_KILL")
    assert int(st["CapPrm"], 16) == mask("CAP_KILL")
    assert int(st["CapEff"], 16) == mask("CAP_KILL")


def test_capabilities_of_a_non_root_user_survive_through_ambient(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["root"]["readonly"] = False
        cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "permitted",
                                                              "effective", "inheritable",
                                                              "ambient")}

    out = ok(run_sh("grep Cap /proc/$$/status; touch /tmp/f; "
                    "chown 0:0 /tmp/f && echo CHOWNED", mutate))
    st = status_fields(out)
    want = mask("CAP_CHOWN", "CAP_DAC_OVERRIDE")
    assert int(st["CapEff"], 16) == want and int(st["CapAmb"], 16) == want
    assert "CHOWNED" in out


def test_no_capabilities_means_root_cannot_chown(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["capabilities"] = {}
        cfg["root"]["readonly"] = False

    out = ok(run_sh("touch /tmp/f; chown 1000 /tmp/f 2>&1 || echo DENIED; "
                    "grep CapEff /proc/$$/status", mutate))
    assert "DENIED" in out
    assert int(status_fields(out)["CapEff"], 16) == 0


def test_unknown_capability_is_named(run_sh: Runner) -> None:
    """Issue 3 allows both: runc warns and skips an unknown name; a strict check refuses
    it at create with its JSON path. Either way the name is given and nothing breaks."""

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_NOT_A_CAP"],
                                          "effective": ["CAP_KILL"],
                                          "permitted": ["CAP_KILL"]}

    proc = run_sh("grep CapBnd /proc/$$/status", mutate)
    assert "CAP_NOT_A_CAP" in proc.stderr and "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert int(status_fields(proc.stdout)["CapBnd"], 16) == mask("CAP_KILL")
        assert "level=warning" in proc.stderr
    else:
        assert proc.returncode == 1
        assert "$.process.capabilities.bounding[1]" in proc.stderr


# -- terminal --------------------------------------------------------------------------------

class ConsoleReceiver:
    """A console socket as containerd's shim serves it: accept one connection, receive
    the pty master with SCM_RIGHTS, then read everything the container writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.name = ""
        self.output = b""
        self.master_fd = -1
        self.error: BaseException | None = None
        self.to_send: bytes = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                fds = array.array("i")
                msg, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                self.name = msg.decode(errors="replace")
            assert len(fds) == 1, f"expected one fd, got {list(fds)} {msg!r} {anc!r}"
            self.master_fd = fds[0]
            if self.to_send:
                os.write(self.master_fd, self.to_send)
            chunks = []
            while True:
                try:
                    data = os.read(self.master_fd, 4096)
                except OSError:  # EIO: every slave is closed
                    break
                if not data:
                    break
                chunks.append(data)
            self.output = b"".join(chunks)
        except BaseException as exc:
            self.error = exc
        finally:
            if self.master_fd >= 0:
                os.close(self.master_fd)
            self.sock.close()

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_terminal_through_a_console_socket(make_bundle: Callable[..., Bundle],
                                           state_root: Path, tmp_path: Path) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "tty; stty size; [ -t 0 ] && echo STDIN-TTY; "
                          "read x; echo got:$x; ls -l /proc/self/fd/"])
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle.write()
    receiver = ConsoleReceiver(tmp_path / "console.sock")
    receiver.to_send = b"typed\n"
    proc = run_contain(state_root, "run", "--console-socket", str(receiver.path),
                       "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    receiver.join()
    assert proc.stdout == ""  # everything went through the pty
    out = receiver.output.decode().replace("\r\n", "\n")
    out = out.removeprefix("typed\n")  # the pty echoes what was typed ahead
    assert out.startswith("/dev/pts/0\n33 101\nSTDIN-TTY\n")
    assert "got:typed" in out
    assert receiver.name.endswith("/dev/pts/0") or receiver.name == ""
    fds = {line.split()[-3]: line.split()[-1] for line in out.splitlines() if " -> " in line}
    assert fds == {"0": "/dev/pts/0", "1": "/dev/pts/0", "2": "/dev/pts/0"}


def test_terminal_without_console_socket_is_refused_at_create(
        make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    bundle.config["process"]["terminal"] = True
    bundle.write()
    proc = run_contain(state_root, "create", "--bundle", str(bundle.path), unique_id())
    assert proc.returncode == 1
    assert "console socket" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert list(state_root.iterdir()) == []


# -- preserved fds -----------------------------------------------------------------------------

def _run_with_fds(root: Path, bundle: Bundle, fds: list[int], *flags: str,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`contain run` with *fds* open at 3, 4, ... in the runtime."""
    def arrange() -> None:
        for i, fd in enumerate(fds):
            os.dup2(fd, 3 + i)

    return subprocess.run([*contain_cmd(), "--root", str(root), "run", *flags, "--bundle",
                           str(bundle.path), unique_id()], capture_output=True, text=True,
                          timeout=60, preexec_fn=arrange, close_fds=False, env=env)


def test_preserve_fds(make_bundle: Callable[..., Bundle], state_root: Path,
                      tmp_path: Path) -> None:
    files = []
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_text(f"content {i}\n")
        files.append(os.open(p, os.O_RDONLY | os.O_CLOEXEC))
    try:
        bundle = make_bundle(["/bin/sh", "-c", "cat <&3; cat <&4; ls /proc/self/fd; "
                              "cat <&5 2>&1 || echo NO-FD-5"])
        proc = _run_with_fds(state_root, bundle, files, "--preserve-fds", "2")
    finally:
        for fd in files:
            os.close(fd)
    out = ok(proc)
    assert out.startswith("content 0\ncontent 1\n")
    assert "NO-FD-5" in out and "content 2" not in out


def test_listen_fds(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bundle = make_bundle(["/bin/sh", "-c", "echo $LISTEN_FDS $LISTEN_PID; "
                              "readlink /proc/self/fd/3"])
        env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        out = ok(_run_with_fds(state_root, bundle, [sock.fileno()], env=env))
    finally:
        sock.close()
    lines = out.splitlines()
    assert lines[0] == "1 1"
    assert lines[1].startswith("socket:[")


def test_only_stdio_reaches_the_process_by_default(make_bundle: Callable[..., Bundle],
                                                   state_root: Path, tmp_path: Path) -> None:
    extra = os.open(tmp_path, os.O_RDONLY)
    try:
        bundle = make_bundle(["/bin/ls", "/proc/self/fd"])
        proc = _run_with_fds(state_root, bundle, [extra])
    finally:
        os.close(extra)
    # ls itself opens the directory it lists (fd 3)
    assert ok(proc).split() in (["0", "1", "2"], ["0", "1", "2", "3"])


# -- a missing executable ------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["/does/not/exist"], 'exec: "/does/not/exist": stat /does/not/exist: '
                          'no such file or directory'),
    (["no-such-program"], 'exec: "no-such-program": executable file not found in $PATH'),
    (["/etc/passwd"], 'exec: "/etc/passwd": permission denied'),
])
def test_missing_executable_fails_at_create(make_bundle: Callable[..., Bundle],
                                           state_root: Path, args: list[str],
                                           message: str) -> None:
    bundle = make_bundle(args)
    cid = unique_id()
    proc = run_contain(state_root, "create", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 1
    assert message in proc.stderr.replace('\\"', '"')
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert list(state_root.iterdir()) == []
    assert run_contain(state_root, "state", cid).returncode == 1


def test_executable_found_through_the_containers_path(make_bundle: Callable[..., Bundle],
                                                      state_root: Path) -> None:
    bundle = make_bundle(["hello"])
    tool = bundle.rootfs / "opt" / "tools" / "hello"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho hello from path\n")
    tool.chmod(0o755)
    bundle.config["process"]["env"] = ["PATH=/opt/tools:/bin"]
    bundle.write()
    out = ok(run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id()))
    assert out == "hello from path\n"

