"""Landlock: the kernel's ABI, the OCI extension (runtime-spec proposal #1241's
process.landlock, and the annotation form) applied by the init, writes refused by
Landlock on its own, TCP bind/connect by port (ABI 4), abstract unix socket and signal
scoping (ABI 6), best effort versus strict, and the sandbox's defence in depth (a
process that could undo the read-only mount cannot under Landlock)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, run_contain, unique_id
from contain.errors import SpecError
from contain.linux import landlock as ll
from contain.security.landlock import Landlock, LandlockError, apply, decode, plan

ABI = ll.abi_version()
pytestmark = pytest.mark.skipif(ABI < 1, reason="no Landlock on this kernel")
PY = os.path.realpath(sys.executable)
ALL_FS = list(ll.FS)


def in_child(fn: Callable[[], Any]) -> Any:
    """Run *fn* in a forked child (Landlock confines the caller for good); its JSON
    result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            out = fn()
        except BaseException as exc:
            out = {"error": repr(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def nnp() -> None:
    from contain.linux.syscalls import prctl

    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS


def test_abi_here() -> None:
    assert ABI >= 1
    assert ll.fs_rights(1) == (1 << 13) - 1
    assert ll.fs_rights(ABI) >= ll.fs_rights(1)


def test_fs_rules_in_a_child(tmp_path: Path) -> None:
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    cfg = Landlock(handled_fs=ALL_FS, path_rules=[
        (["execute", "read_file", "read_dir"], ["/"]), (ALL_FS, [str(tmp_path / "rw")])])

    def body() -> Any:
        nnp()
        done = apply(cfg)
        res = {"abi": done.abi}
        for name in ("rw", "ro"):
            try:
                (tmp_path / name / "f").write_text("x")
                res[name] = "ok"
            except OSError as exc:
                res[name] = exc.errno
        res["read"] = bool(Path("/etc/os-release").read_text())
        return res

    res = in_child(body)
    assert res == {"abi": ABI, "rw": "ok", "ro": 13, "read": True}


def test_signal_scoping(tmp_path: Path) -> None:
    if ABI < 6:
        pytest.skip("signal scoping needs Landlock ABI 6")
    parent = os.getpid()

    def body(scoped: list[str]) -> Any:
        nnp()
        apply(Landlock(scoped=scoped))
        try:
            os.kill(parent, 0)
            return "delivered"
        except PermissionError:
            return "refused"

    assert in_child(lambda: body(["signal"])) == "refused"
    assert in_child(lambda: body([])) == "delivered"


def test_abstract_unix_socket_scoping() -> None:
    if ABI < 6:
        pytest.skip("abstract unix socket scoping needs Landlock ABI 6")
    name = f"\0contain-test-{os.getpid()}-{os.urandom(3).hex()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(4)
    try:
        def body(scoped: list[str]) -> Any:
            nnp()
            apply(Landlock(scoped=scoped))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(name)
                return "connected"
            except OSError as exc:
                return exc.errno
            finally:
                s.close()

        assert in_child(lambda: body(["abstract_unix_socket"])) == 1  # EPERM
        assert in_child(lambda: body([])) == "connected"
    finally:
        server.close()


def test_tcp_ports(tmp_path: Path) -> None:
    if ABI < 4:
        pytest.skip("TCP rules need Landlock ABI 4")
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    allowed, other = (s.getsockname()[1] for s in servers)
    try:
        def body() -> Any:
            nnp()
            apply(Landlock(handled_net=["bind_tcp", "connect_tcp"],
                           port_rules=[(["connect_tcp"], [allowed])]))
            res = {}
            for port in (allowed, other):
                c = socket.socket()
                try:
                    c.connect(("127.0.0.1", port))
                    res[str(port)] = "connected"
                except OSError as exc:
                    res[str(port)] = exc.errno
                finally:
                    c.close()
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", 0))
                res["bind"] = "bound"
            except OSError as exc:
                res["bind"] = exc.errno
            finally:
                b.close()
            return res

        res = in_child(body)
        assert res == {str(allowed): "connected", str(other): 13, "bind": 13}
    finally:
        for s in servers:
            s.close()


def test_best_effort_and_strict() -> None:
    cfg = Landlock(handled_fs=["read_file", "truncate", "ioctl_dev"],
                   handled_net=["connect_tcp"], scoped=["signal"])
    done = plan(cfg, abi=3)  # a kernel as old as 6.2
    assert done.fs == ["read_file", "truncate"]
    assert done.net == [] and done.scoped == []
    assert done.dropped == ["ioctl_dev (ABI 5)", "connect_tcp (ABI 4)", "signal (ABI 6)"]
    cfg.best_effort = False
    with pytest.raises(LandlockError, match=r"strict.*ABI 3.*ioctl_dev \(ABI 5\)"):
        plan(cfg, abi=3)
    with pytest.raises(LandlockError, match="lacks Landlock itself"):
        plan(Landlock(best_effort=False), abi=0)
    assert plan(cfg).dropped == [] if ABI >= 6 else True


@pytest.mark.parametrize("value,path", [
    ({"ruleset": {"handledAccessFS": ["read_files"]}}, "ruleset.handledAccessFS[0]"),
    ({"ruleset": {"handledAccessFS": ["read_file"]},
      "rules": {"pathBeneath": [{"allowedAccess": ["write_file"], "paths": ["/"]}]}},
     "rules.pathBeneath[0].allowedAccess"),
    ({"rules": {"pathBeneath": [{"allowedAccess": [], "paths": ["rel"]}]}},
     "rules.pathBeneath[0].paths[0]"),
    ({"ruleset": {"handledAccessNetwork": ["connect_tcp"]},
      "rules": {"netPort": [{"allowedAccess": ["connect_tcp"], "ports": [-1]}]}},
     "rules.netPort[0].ports"),
    ({"rules": {"netPort": [{"allowedAccess": ["bind_tcp"], "ports": [80]}]}},
     "rules.netPort[0].allowedAccess"),
    ({"rules": {"pathBeneath": {}}}, "rules.pathBeneath"),
    ({"rules": {"netPort": "80"}}, "rules.netPort"),
    ({"rules": {"pathBeneath": [{"allowedAccess": [], "paths": [1]}]}},
     "rules.pathBeneath[0].paths"),
    ({"rules": {"pathBeneath": [{"allowedAccess": [], "ports": [1]}]}},
     "rules.pathBeneath[0].ports"),
    ({"disableBestEffort": "yes"}, "disableBestEffort"),
    ({"rulez": {}}, "rulez"),
])
def test_decode_errors_name_the_field(value: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        decode(value)
    assert info.value.path == f"$.process.landlock.{path}"


def test_decode_takes_kernel_names() -> None:
    cfg = decode({"ruleset": {"handledAccessFS": ["LANDLOCK_ACCESS_FS_READ_FILE"]}})
    assert cfg.handled_fs == ["read_file"]
    again = decode(cfg.to_json())
    assert again == cfg


# -- the OCI extension, applied by the container's init --------------------------------

LANDLOCK = {"ruleset": {"handledAccessFS": ALL_FS},
            "rules": {"pathBeneath": [
                {"allowedAccess": ["execute", "read_file", "read_dir"], "paths": ["/"]},
                {"allowedAccess": ALL_FS, "paths": ["/w1", "/dev"]}]}}
WRITE_BOTH = "echo a > /w1/f && echo W1=ok; echo b > /w2/f && echo W2=ok; true"


def oci_bundle(make_bundle: Callable[..., Bundle], how: str) -> Bundle:
    b = make_bundle(["/bin/sh", "-c", WRITE_BOTH])
    cfg = b.config
    for d in ("/w1", "/w2"):  # both writable as far as the mounts go
        cfg["mounts"].append({"destination": d, "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev", "size=1m"]})
    cfg["process"]["noNewPrivileges"] = True
    if how == "field":
        cfg["process"]["landlock"] = LANDLOCK
    elif how == "annotation":
        cfg.setdefault("annotations", {})["run.contain.landlock"] = json.dumps(LANDLOCK)
    return b.write()


@pytest.mark.parametrize("how", ["field", "annotation", "none"])
def test_oci_container_landlock_alone_refuses_writes(
        make_bundle: Callable[..., Bundle], state_root: Path, how: str) -> None:
    """Both /w1 and /w2 are writable tmpfs mounts: only Landlock tells them apart."""
    b = oci_bundle(make_bundle, how)
    proc = run_contain(state_root, "run", "--bundle", str(b.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    assert "W1=ok" in proc.stdout
    if how == "none":
        assert "W2=ok" in proc.stdout
    else:
        assert "W2=ok" not in proc.stdout
        assert "Permission denied" in proc.stderr + proc.stdout


def test_oci_exec_joins_the_landlock_domain(make_bundle: Callable[..., Bundle],
                                            state_root: Path) -> None:
    """A process `contain exec` starts in the container is confined as its init is
    (it is not the init's descendant, so it gets the ruleset of its own)."""
    b = oci_bundle(make_bundle, "field")
    b.config["process"]["args"] = ["/bin/sleep", "100"]
    b.write()
    cid = unique_id()
    with tempfile.TemporaryFile() as out:  # a detached container keeps its stdio open
        proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d",
                               "--bundle", str(b.path), cid], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out, timeout=60)
    assert proc.returncode == 0
    try:
        proc = run_contain(state_root, "exec", cid, "/bin/sh", "-c", WRITE_BOTH)
        assert proc.returncode == 0, proc.stderr
        assert "W1=ok" in proc.stdout and "W2=ok" not in proc.stdout
    finally:
        run_contain(state_root, "delete", "--force", cid)


def test_oci_landlock_needs_no_new_privileges(make_bundle: Callable[..., Bundle],
                                              state_root: Path) -> None:
    b = oci_bundle(make_bundle, "field")
    b.config["process"]["noNewPrivileges"] = False
    b.write()
    proc = run_contain(state_root, "run", "--bundle", str(b.path), unique_id())
    assert proc.returncode == 1
    assert "$.process.landlock" in proc.stderr and "noNewPrivileges" in proc.stderr


def test_oci_bad_landlock_fails_before_create(make_bundle: Callable[..., Bundle],
                                              state_root: Path) -> None:
    b = oci_bundle(make_bundle, "field")
    b.config["process"]["landlock"] = {"ruleset": {"handledAccessFS": ["fly"]}}
    b.write()
    proc = run_contain(state_root, "create", "--bundle", str(b.path), unique_id())
    assert proc.returncode == 1
    assert "$.process.landlock.ruleset.handledAccessFS[0]" in proc.stderr
    assert [p for p in state_root.iterdir() if not p.name.startswith(".")] == []


# -- the sandbox ------------------------------------------------------------------------

@pytest.fixture
def hostdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="contain-ll-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_sandbox_mount_undone_is_still_confined(state_root: Path, hostdir: Path) -> None:
    """Defence in depth: a sandboxed process given CAP_SYS_ADMIN and no seccomp can
    remount the host root read-write and write to the host; under Landlock the remount
    is refused and the write too."""
    target = hostdir / "escaped"
    script = f"mount -o remount,rw,bind / 2>&1; echo x > {target} && echo WROTE; true"
    base = ["sandbox", "--as-root", "--cap", "SYS_ADMIN", "--no-seccomp"]
    proc = run_contain(state_root, *base, "--landlock", "off", "--", "/bin/sh", "-c", script)
    assert "WROTE" in proc.stdout, proc.stdout + proc.stderr  # the hole is real
    target.unlink()
    proc = run_contain(state_root, *base, "--", "/bin/sh", "-c", script)
    assert "WROTE" not in proc.stdout
    assert not target.exists()


def test_sandbox_strict_and_report(state_root: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"
    proc = run_contain(state_root, "sandbox", "--landlock=strict", "--report", str(report),
                       "--", "/bin/true")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in report.read_text().splitlines()]
    ll_events = [e for e in events if e["source"] == "landlock"]
    assert ll_events and ll_events[0]["event"] == "enforced"
    assert ll_events[0]["abi"] == ABI and ll_events[0]["dropped"] == []
    assert "write_file" in ll_events[0]["fs"]


def test_sandbox_landlock_tcp_ports(state_root: Path) -> None:
    if ABI < 4:
        pytest.skip("TCP rules need Landlock ABI 4")
    script = ("import socket\n"
              "for p in (0,):\n"
              "    s = socket.socket()\n"
              "    try:\n"
              "        s.bind(('127.0.0.1', p)); print('BIND=ok')\n"
              "    except OSError as e:\n"
              "        print('BIND', e.errno)\n")
    path = Path("/var/tmp") / f"contain-ll-{os.getpid()}.toml"
    path.write_text("[landlock]\nbind_tcp = []\n")
    try:
        # (as root: the test's interpreter may live in root's home)
        proc = run_contain(state_root, "sandbox", "--as-root", "--policy", str(path), "--",
                           PY, "-c", script)
        assert proc.returncode == 0, proc.stderr
        assert "BIND 13" in proc.stdout
        proc = run_contain(state_root, "sandbox", "--as-root", "--", PY, "-c", script)
        assert "BIND=ok" in proc.stdout
    finally:
        path.unlink()


def test_sandbox_ruleset_alone_refuses_writes_outside_rw(hostdir: Path) -> None:
    """The sandbox's own Landlock ruleset (from its policy), applied without any of its
    mounts to a child on the host's filesystem: writes land only under --rw (and the
    private places), reads go on everywhere."""
    from contain.sandbox.files import landlock_ruleset
    from contain.sandbox.policy import resolve

    (hostdir / "proj").mkdir()
    (hostdir / "outside").mkdir()
    cfg = landlock_ruleset(resolve(None, {"rw": [str(hostdir / "proj")]}))
    assert cfg is not None

    def body() -> Any:
        nnp()
        apply(cfg)
        res = {}
        for name in ("proj", "outside"):
            try:
                (hostdir / name / "f").write_text("x")
                res[name] = "ok"
            except OSError as exc:
                res[name] = exc.errno
        res["read"] = bool(Path("/etc/os-release").read_text())
        return res

    assert in_child(body) == {"proj": "ok", "outside": 13, "read": True}
    assert not (hostdir / "outside" / "f").exists()
    assert landlock_ruleset(resolve(None, {"landlock": "off"})) is None
