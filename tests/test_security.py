"""The runtime's own attack surface (issue 3), attacked for real from inside containers:
leaked fds, cwd through /proc/self/fd, a dumpable init, masked paths against umount,
/proc and /sys as a way to change the host, and symlinks in the rootfs pointing mount
destinations, device paths, masked paths and cwd out of it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, ok, run_contain, unique_id

Runner = Callable[..., subprocess.CompletedProcess[str]]


def contain(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([*contain_cmd(), "--root", str(root), *args],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


@pytest.fixture
def run_sh(make_bundle: Callable[..., Bundle], state_root: Path) -> Runner:
    def run(script: str, mutate: Callable[[dict[str, Any], Path], None] | None = None,
            *flags: str) -> subprocess.CompletedProcess[str]:
        bundle = make_bundle(["/bin/sh", "-c", script])
        if mutate is not None:
            mutate(bundle.config, bundle.path)
            bundle.write()
        return run_contain(state_root, "run", *flags, "--bundle", str(bundle.path), unique_id())

    return run


def fd_targets(listing: str) -> dict[str, str]:
    """fd -> target from `ls -l /proc/<pid>/fd`."""
    out = {}
    for line in listing.splitlines():
        if " -> " in line:
            left, target = line.split(" -> ", 1)
            out[left.split()[-1]] = target
    return out


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host directory the container must never write to."""
    d = tmp_path / "host-victim"
    d.mkdir()
    (d / "precious").write_text("host data\n")
    return d


def contained(proc: subprocess.CompletedProcess[str]) -> str | None:
    """A hostile rootfs may be handled by resolving inside it (runc: the container runs,
    exit 0) or refused at create (one line, exit 1): both are safe. The output, or None."""
    if proc.returncode == 0:
        return proc.stdout
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return None


def untouched(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["precious"], list(d.iterdir())
    assert (d / "precious").read_text() == "host data\n"


# -- fds ----------------------------------------------------------------------------------------

def _with_open_fds(root: Path, bundle: Bundle, *extra: str) -> subprocess.CompletedProcess[str]:
    """`contain run` from a process holding inheritable fds 3..9 (a careless caller)."""
    def leak() -> None:
        for fd in range(3, 10):
            os.dup2(os.open("/", os.O_RDONLY), fd)

    return subprocess.run([*contain_cmd(), "--root", str(root), "run", *extra, "--bundle",
                           str(bundle.path), unique_id()], capture_output=True, text=True,
                          timeout=60, preexec_fn=leak, close_fds=True)


@pytest.mark.parametrize("variant", ["plain", "hooks-and-userns", "no-pid-namespace"])
def test_no_runtime_fd_reaches_the_container(make_bundle: Callable[..., Bundle],
                                             state_root: Path, variant: str) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "exec ls -l /proc/self/fd"])
    cfg = bundle.config
    if variant == "hooks-and-userns":
        cfg["hooks"] = {k: [{"path": "/bin/true"}] for k in
                        ("prestart", "createRuntime", "createContainer", "poststart")}
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    elif variant == "no-pid-namespace":
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != "pid"]
    bundle.write()
    fds = fd_targets(ok(_with_open_fds(state_root, bundle)))
    # ls opens the directory it lists as fd 3; it is gone by the time it prints
    assert set(fds) - {"3"} == {"0", "1", "2"}, fds


def test_no_runtime_fd_reaches_an_exec(make_bundle: Callable[..., Bundle],
                                       state_root: Path) -> None:
    bundle = make_bundle(["/bin/sleep", "1000"])
    cid = unique_id()
    ok(contain(state_root, "run", "--detach", "--bundle", str(bundle.path), cid))
    try:
        def leak() -> None:
            for fd in range(3, 10):
                os.dup2(os.open("/", os.O_RDONLY), fd)

        proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "exec", cid,
                               "ls", "-l", "/proc/self/fd"], capture_output=True, text=True,
                              timeout=60, preexec_fn=leak)
        fds = fd_targets(ok(proc))
        assert set(fds) - {"3"} == {"0", "1", "2"}, fds
    finally:
        ok(contain(state_root, "delete", "--force", cid))


def test_cwd_through_proc_self_fd_cannot_reach_the_host(make_bundle: Callable[..., Bundle],
                                                        state_root: Path) -> None:
    """runc's CVE-2024-21626: process.cwd = /proc/self/fd/N, N a runtime fd on a host
    directory. Either create refuses it, or the process is inside its rootfs."""
    for n in range(3, 12):
        bundle = make_bundle(["/bin/sh", "-c", "pwd; readlink /proc/self/cwd; ls .. ../.."])
        bundle.config["process"]["cwd"] = f"/proc/self/fd/{n}"
        bundle.write()
        proc = contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
        if proc.returncode != 0:
            assert proc.returncode == 1 and "process.cwd" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
            continue
        assert "config.json" not in proc.stdout, proc.stdout  # the bundle is the host
        assert "pytest" not in proc.stdout and "(unreachable)" not in proc.stdout
    assert list(state_root.iterdir()) == []


def test_exec_cwd_through_proc_self_fd(make_bundle: Callable[..., Bundle],
                                       state_root: Path) -> None:
    bundle = make_bundle(["/bin/sleep", "1000"])
    cid = unique_id()
    ok(contain(state_root, "run", "--detach", "--bundle", str(bundle.path), cid))
    try:
        for n in range(3, 12):
            proc = contain(state_root, "exec", "--cwd", f"/proc/self/fd/{n}", cid, "/bin/sh",
                           "-c", "pwd; ls .. ../..")
            if proc.returncode != 0:
                assert "Traceback" not in proc.stderr
                continue
            assert "config.json" not in proc.stdout and "pytest" not in proc.stdout
    finally:
        ok(contain(state_root, "delete", "--force", cid))


# -- a non-dumpable init ---------------------------------------------------------------------

def test_created_init_is_unreachable_from_a_container_sharing_its_pid_namespace(
        make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """The init of a created container still runs the runtime (Python, our files). A
    second container in its PID namespace, root with the default capabilities (no
    CAP_SYS_PTRACE), must not reach /proc/1/exe, fd, cwd, root, mem, environ."""
    victim = make_bundle(["/bin/sleep", "1000"])
    vid = unique_id()
    ok(contain(state_root, "create", "--bundle", str(victim.path), vid))
    try:
        pid = json.loads(ok(contain(state_root, "state", vid)))["pid"]
        attacker = make_bundle(["/bin/sh", "-c",
                                "for p in exe cwd root; do readlink /proc/1/$p "
                                "&& echo LEAK-$p; done; "
                                "ls -l /proc/1/fd | grep -- '->' && echo LEAK-fd; "
                                "cat /proc/1/environ >/dev/null && echo LEAK-environ; "
                                "head -c 1 /proc/1/mem >/dev/null && echo LEAK-mem; "
                                "(echo x >> /proc/1/exe) && echo LEAK-write; "
                                "ls /proc/1/root/ && echo LEAK-root-list; "
                                "cat /proc/1/cmdline | tr '\\0' ' '; echo; true"])
        for ns in attacker.config["linux"]["namespaces"]:
            if ns["type"] == "pid":
                ns["path"] = f"/proc/{pid}/ns/pid"
        attacker.write()
        proc = run_contain(state_root, "run", "--bundle", str(attacker.path), unique_id())
        out = ok(proc)
        assert "LEAK" not in out, out + proc.stderr
        assert "Permission denied" in proc.stderr
        # the victim is still waiting, untouched
        assert json.loads(ok(contain(state_root, "state", vid)))["status"] == "created"
    finally:
        ok(contain(state_root, "delete", "--force", vid))


def test_created_init_is_not_dumpable(make_bundle: Callable[..., Bundle],
                                      state_root: Path) -> None:
    """Seen from the host: an unprivileged uid that owned the process could attach to a
    dumpable one; /proc/<pid>/ files of a non-dumpable process are owned by root."""
    bundle = make_bundle(["/bin/sleep", "1000"])
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.write()
    cid = unique_id()
    ok(contain(state_root, "create", "--bundle", str(bundle.path), cid))
    try:
        pid = json.loads(ok(contain(state_root, "state", cid)))["pid"]
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids == ["1000"] * 4  # it is already the container's user ...
        st = os.stat(f"/proc/{pid}/fd")
        assert st.st_uid == 0  # ... but its /proc entries stay root's: not dumpable
        probe = subprocess.run(
            ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c",
             f"readlink /proc/{pid}/exe || echo DENIED-exe; ls /proc/{pid}/fd "
             f"|| echo DENIED-fd; cat /proc/{pid}/environ >/dev/null || echo DENIED-env"],
            capture_output=True, text=True, timeout=30)
        assert probe.stdout.split() == ["DENIED-exe", "DENIED-fd", "DENIED-env"], (
            probe.stdout + probe.stderr)
    finally:
        ok(contain(state_root, "delete", "--force", cid))


# -- masked and read-only paths --------------------------------------------------------------

def test_masked_paths_hold_against_umount(run_sh: Runner) -> None:
    out = ok(run_sh("for p in /proc/keys /proc/timer_list /proc/acpi /sys/firmware; do "
                    "umount $p 2>&1; umount -l $p 2>&1; done; "
                    "mount -o remount,rw /sys/firmware 2>&1; "
                    "mount -t proc proc /mnt 2>&1; "
                    "echo END; wc -c < /proc/keys; ls -A /sys/firmware | wc -l"))
    head, tail = out.split("END\n")
    assert tail.split() == ["0", "0"]
    assert "Operation not permitted" in head or "Permission denied" in head


def test_proc_and_sys_cannot_change_the_host(run_sh: Runner) -> None:
    with open("/proc/sys/kernel/core_pattern") as f:
        core_pattern = f.read()
    with open("/proc/sys/vm/overcommit_ratio") as f:
        overcommit = f.read()
    out = ok(run_sh(
        "(echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern) 2>&1; "
        "(echo 99 > /proc/sys/vm/overcommit_ratio) 2>&1; "
        "(echo 1 > /proc/sys/kernel/sysrq) 2>&1; "
        "(echo b > /proc/sysrq-trigger) 2>&1; "
        "(echo 1 > /sys/kernel/mm/ksm/run) 2>&1; "
        "mount -o remount,rw /proc/sys 2>&1; mount -o remount,rw /sys 2>&1; "
        "umount /proc/sys 2>&1; true"))
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core_pattern
    with open("/proc/sys/vm/overcommit_ratio") as f:
        assert f.read() == overcommit
    assert "core_pattern: Read-only file system" in out
    assert "overcommit_ratio: Read-only file system" in out
    assert "/pwn" not in out.replace("'|/tmp/pwn'", "")


def test_proc_sys_still_readonly_for_a_user_namespace_root(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        for d in (bundle, *bundle.parents):
            if str(d) == "/tmp":
                break
            d.chmod(d.stat().st_mode | 0o711)
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        caps = ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]
        cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective",
                                                              "permitted")}

    out = ok(run_sh("(echo x > /proc/sys/kernel/core_pattern) 2>&1; "
                    "umount /proc/sys 2>&1; "
                    "(echo x > /proc/sys/kernel/core_pattern) 2>&1; true", mutate))
    # CAP_SYS_ADMIN of its own user namespace may undo its own read-only /proc/sys (as
    # under runc); the host's knobs stay out of reach: they need the host's root
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read().strip() != "x"
    assert "Read-only file system" in out.splitlines()[0]
    assert "Permission denied" in out or "Operation not permitted" in out or (
        "Read-only" in out.splitlines()[-1])


# -- symlinks in the rootfs ------------------------------------------------------------------

def test_mount_destination_symlinks_stay_inside(run_sh: Runner, host_dir: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        rootfs = bundle / "rootfs"
        (rootfs / "abs").symlink_to(host_dir)
        (rootfs / "rel").symlink_to("../../../../../../../../.." + str(host_dir))
        (rootfs / "dangling").symlink_to(str(host_dir / "newdir"))
        cfg["root"]["readonly"] = False
        cfg["mounts"] += [
            {"destination": "/abs", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/rel/sub/deeper", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dangling", "type": "bind", "source": "/bin",
             "options": ["rbind", "ro"]},
        ]

    out = contained(run_sh("echo pwned > /abs/file && echo WROTE-ABS; "
                           "echo pwned > /rel/sub/deeper/file && echo WROTE-REL; "
                           "ls /dangling | head -1", mutate))
    assert out is None or ("WROTE-ABS" in out and "WROTE-REL" in out)
    untouched(host_dir)


def test_device_path_symlink_stays_inside(run_sh: Runner, host_dir: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        rootfs = bundle / "rootfs"
        cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        (rootfs / "dev" / "evil").symlink_to(host_dir)
        (rootfs / "dev" / "evil2").symlink_to(host_dir / "nodefile")
        cfg["linux"]["devices"] = [
            {"path": "/dev/evil/null2", "type": "c", "major": 1, "minor": 3},
            {"path": "/dev/evil2", "type": "c", "major": 1, "minor": 5},
        ]

    contained(run_sh("ls -l /dev/ >/dev/null", mutate))
    untouched(host_dir)


def test_masked_and_readonly_path_symlinks_stay_inside(run_sh: Runner, host_dir: Path,
                                                       tmp_path: Path) -> None:
    host_file = host_dir / "precious"

    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        rootfs = bundle / "rootfs"
        (rootfs / "etc" / "mask-me").symlink_to(host_file)
        (rootfs / "etc" / "ro-me").symlink_to(host_dir)
        cfg["linux"]["maskedPaths"].append("/etc/mask-me")
        cfg["linux"]["readonlyPaths"].append("/etc/ro-me")

    contained(run_sh("cat /etc/mask-me 2>&1; true", mutate))
    untouched(host_dir)


def test_cwd_symlink_stays_inside(run_sh: Runner, host_dir: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        (bundle / "rootfs" / "work").symlink_to(host_dir)
        cfg["process"]["cwd"] = "/work/created/by/runtime"

    out = contained(run_sh("pwd; ls", mutate))
    assert out is None or "precious" not in out
    untouched(host_dir)


def test_bind_source_is_the_hosts_but_destination_is_the_containers(
        run_sh: Runner, host_dir: Path, tmp_path: Path) -> None:
    """A symlinked *destination* parent inside the rootfs that points at the host's
    /etc must not make the runtime mount over the host's /etc (runc's CVE-2021-30465
    family): the mount lands inside the rootfs."""
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        (bundle / "rootfs" / "hostetc").symlink_to("/etc")
        cfg["mounts"].append({"destination": "/hostetc/passwd", "type": "bind",
                              "source": str(host_dir / "precious"), "options": ["bind"]})

    before = Path("/etc/passwd").read_bytes()
    out = contained(run_sh("cat /etc/passwd | head -1", mutate))
    # inside: the rootfs's own /etc/passwd is the one covered
    assert out is None or out.startswith("host data")
    assert Path("/etc/passwd").read_bytes() == before


def test_runtime_state_is_out_of_reach(run_sh: Runner, state_root: Path) -> None:
    out = ok(run_sh("ls -a / /run /tmp; find / -xdev -name state.json 2>/dev/null; "
                    "find / -xdev -name exec.fifo 2>/dev/null; true"))
    assert "state.json" not in out and "exec.fifo" not in out
    assert state_root.name not in out


def test_destination_swapped_for_a_symlink_in_a_race(make_bundle: Callable[..., Bundle],
                                                     state_root: Path,
                                                     host_dir: Path) -> None:
    """A thread flips a directory of the rootfs between a real directory and a symlink to
    the host while containers mount onto it: whatever wins, the host is untouched."""
    import shutil
    import threading

    bundle = make_bundle(["/bin/true"])
    bundle.config["mounts"].append({"destination": "/flip/sub", "type": "tmpfs",
                                    "source": "tmpfs"})
    bundle.write()
    flip = bundle.rootfs / "flip"
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                if flip.is_symlink():
                    flip.unlink()
                    (flip / "sub").mkdir(parents=True)
                else:
                    shutil.rmtree(flip, ignore_errors=True)
                    flip.symlink_to(host_dir)
            except OSError:
                pass

    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    try:
        for _ in range(8):
            proc = contain(state_root, "run", "--bundle", str(bundle.path), unique_id())
            assert proc.returncode in (0, 1), proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        stop.set()
        t.join(10)
    untouched(host_dir)
    assert list(state_root.iterdir()) == []
