"""checkpoint and restore with CRIU, for real.

The CRIU used is $CONTAIN_TEST_CRIU, else `criu` on PATH. Debian 12's CRIU 3.17.1 cannot
run on this machine's kernel (Linux 6.18): `criu check` fails in its vDSO detection,
because the kernel splits the vvar area into [vvar] and [vvar_vclock] since 6.13 (commit
e93d2521b27f) and CRIU learnt that in 4.1 (checkpoint-restore/criu#2539). The tests that
need a working CRIU are then skipped with `criu check`'s own words; the others (flags,
errors, image paths, the clear error a CRIU that cannot run gives) run everywhere.
docs/engines.md has the whole story and how to run these with a newer CRIU.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, fails, ok, run_contain, unique_id, wait_for

# a counter: each number goes to the log in the rootfs (seen from the host) and to stdout
COUNTER = ("trap 'exit 7' TERM; i=0; while :; do i=$((i+1)); echo $i >> /count.log; echo $i; "
           "usleep 50000; done")


def _criu_candidate() -> str | None:
    return os.environ.get("CONTAIN_TEST_CRIU") or shutil.which("criu")


def _criu_check(path: str) -> str | None:
    """None if `criu check` passes with *path*; else its first error line."""
    proc = subprocess.run([path, "check"], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if proc.returncode == 0 and "Looks good" in out:
        return None
    errors = [ln.split("): ", 1)[-1] for ln in out.splitlines() if "Error (" in ln]
    return "; ".join(errors) or out.strip() or f"exit {proc.returncode}"


@pytest.fixture(scope="session")
def criu() -> str:
    """A CRIU that works on this kernel, or a skip that says why not."""
    return working_criu()


def working_criu() -> str:
    """The path of a CRIU that works on this kernel, or a skip that says why not."""
    path = _criu_candidate()
    if path is None:
        pytest.skip("criu is not installed (scripts/extra-deps installs Debian's)")
    why = _criu_check(path)
    if why is not None:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.split()
        pytest.skip(f"{path} ({' '.join(version[:2])}) cannot run on Linux "
                    f"{os.uname().release}: `criu check` says: {why} -- the kernel maps "
                    "[vvar] and [vvar_vclock] since 6.13 and CRIU < 4.1 does not know the "
                    "second (criu#2539); set CONTAIN_TEST_CRIU to a CRIU >= 4.1 "
                    "(docs/engines.md)")
    return path


class Container:
    """A counter container whose stdio are pipes held by the test (as an engine's)."""

    def __init__(self, root: Path, bundle: Bundle, criu: str) -> None:
        self.root, self.bundle, self.criu = root, bundle, criu
        self.cid = unique_id("cr")
        self.fds: list[int] = []
        self.out = -1

    def pipes(self) -> tuple[int, int]:
        """(stdin read end, stdout write end) for the next command; the test keeps the
        stdin writer and the stdout reader (self.out)."""
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        self.fds += [w_in]
        if self.out >= 0:
            os.close(self.out)
        self.out = r_out
        return r_in, w_out

    def contain(self, *args: str, stdio: tuple[int, int] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [*contain_cmd(), "--root", str(self.root), "--criu", self.criu, *args]
        if stdio is None:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        # stderr is the stdout pipe too: the container keeps it (any pipe contain's
        # caller waits on would be held open), so contain's own error is read from it
        r_in, w_out = stdio
        try:
            proc = subprocess.run(argv, stdin=r_in, stdout=w_out, stderr=w_out,
                                  timeout=timeout)
        finally:
            os.close(r_in)
            os.close(w_out)
        err = ""
        if proc.returncode != 0:
            os.set_blocking(self.out, False)
            try:
                err = os.read(self.out, 65536).decode(errors="replace")
            except BlockingIOError:
                pass
            os.set_blocking(self.out, True)
        return subprocess.CompletedProcess(argv, proc.returncode, "", err)

    def start(self) -> None:
        ok(self.contain("run", "-d", "--bundle", str(self.bundle.path), self.cid,
                        stdio=self.pipes()))

    def state(self) -> dict[str, Any]:
        return json.loads(ok(self.contain("state", self.cid)))

    def count(self) -> int:
        log = self.bundle.rootfs / "count.log"
        lines = log.read_text().split() if log.exists() else []
        return int(lines[-1]) if lines else 0

    def read_number(self, timeout: float = 30) -> int:
        """The next whole number the container printed on its stdout."""
        buf = b""
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([self.out], [], [], timeout)
            assert ready, "the container printed nothing"
            chunk = os.read(self.out, 1)
            assert chunk, "the container's stdout was closed"
            buf += chunk
        return int(buf)

    def close(self) -> None:
        run_contain(self.root, "delete", "--force", self.cid)
        for fd in [*self.fds, self.out]:
            if fd >= 0:
                os.close(fd)
        self.fds, self.out = [], -1


@pytest.fixture
def counter(make_bundle: Callable[..., Bundle], state_root: Path,
            criu: str) -> Iterator[Container]:
    bundle = make_bundle(["/bin/sh", "-c", COUNTER])
    bundle.config["root"]["readonly"] = False
    bundle.write()
    c = Container(state_root, bundle, criu)
    c.start()
    wait_for(lambda: c.count() >= 5)
    yield c
    c.close()


def _sequence(c: Container) -> list[int]:
    return [int(x) for x in (c.bundle.rootfs / "count.log").read_text().split()]


# -- with a working CRIU -------------------------------------------------------------------


def test_checkpoint_stops_and_restore_resumes_the_count(counter: Container,
                                                        tmp_path: Path) -> None:
    image = tmp_path / "image"
    ok(counter.contain("checkpoint", "--image-path", str(image), counter.cid))
    # the container is gone (as runc: its id is free for restore); its count stopped
    assert counter.contain("state", counter.cid).returncode == 1
    assert (image / "inventory.img").exists() and (image / "descriptors.json").exists()
    dumped = counter.count()
    assert dumped >= 5 and _sequence(counter) == list(range(1, dumped + 1))

    ok(counter.contain("restore", "-d", "--image-path", str(image), "--bundle",
                       str(counter.bundle.path), counter.cid, stdio=counter.pipes()))
    state = counter.state()
    assert state["status"] == "running" and state["pid"] > 0
    # the restored shell resumes: on its (new) stdout, then in the log, from where it
    # was -- the log is 1, 2, ... without a restart at 1
    first = counter.read_number()
    assert first == dumped + 1
    wait_for(lambda: counter.count() >= dumped + 5)
    seq = _sequence(counter)
    assert seq == list(range(1, len(seq) + 1)), seq
    # the restored init is in the container's new cgroup and its pid namespace
    with open(f"/proc/{state['pid']}/status") as f:
        nspid = next(ln for ln in f if ln.startswith("NSpid:")).split()
    assert nspid[-1] == "1"
    with open(f"/proc/{state['pid']}/cgroup") as f:
        assert any(ln.rstrip().endswith(f"/{counter.cid}") for ln in f)


def test_leave_running_keeps_counting(counter: Container, tmp_path: Path) -> None:
    image = tmp_path / "image"
    pid = counter.state()["pid"]
    ok(counter.contain("checkpoint", "--leave-running", "--image-path", str(image),
                       "--work-path", str(tmp_path / "work"), counter.cid))
    assert (tmp_path / "work" / "dump.log").exists()
    state = counter.state()
    assert state["status"] == "running" and state["pid"] == pid
    now = counter.count()
    wait_for(lambda: counter.count() >= now + 3)
    # the image restores too (once the original is gone)
    ok(counter.contain("delete", "--force", counter.cid))
    ok(counter.contain("restore", "-d", "--image-path", str(image), "--bundle",
                       str(counter.bundle.path), counter.cid, stdio=counter.pipes()))
    assert counter.state()["status"] == "running"
    assert counter.read_number() > 5


def test_restore_in_the_foreground_returns_the_exit_status(counter: Container,
                                                           tmp_path: Path) -> None:
    image = tmp_path / "image"
    ok(counter.contain("checkpoint", "--image-path", str(image), counter.cid))
    r_in, w_out = counter.pipes()
    proc = subprocess.Popen([*contain_cmd(), "--root", str(counter.root), "--criu",
                             counter.criu, "restore", "--image-path", str(image), "--bundle",
                             str(counter.bundle.path), counter.cid],
                            stdin=r_in, stdout=w_out, stderr=subprocess.PIPE)
    os.close(r_in)
    os.close(w_out)
    try:
        assert counter.read_number() > 5
        wait_for(lambda: counter.contain("state", counter.cid).returncode == 0)
        # SIGTERM to contain goes on to the restored init, whose trap exits 7
        proc.send_signal(15)
        assert proc.wait(timeout=60) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    # the foreground restore deleted the container when its init exited
    assert counter.contain("state", counter.cid).returncode == 1


def test_bad_image_path_is_one_line_and_leaves_nothing(counter: Container,
                                                       tmp_path: Path) -> None:
    bad = tmp_path / "missing" / "image"
    err = fails(counter.contain("checkpoint", "--image-path", str(bad), counter.cid),
                "--image-path", str(bad))
    assert not (tmp_path / "missing").exists()
    assert counter.state()["status"] == "running"
    # restore from a directory that holds no checkpoint: nothing of the id is made
    empty = tmp_path / "empty"
    empty.mkdir()
    ok(counter.contain("delete", "--force", counter.cid))
    err = fails(counter.contain("restore", "--image-path", str(empty), "--bundle",
                                str(counter.bundle.path), counter.cid),
                "--image-path", "no checkpoint")
    assert "inventory.img" in err
    assert not (counter.root / counter.cid).exists()
    assert list(empty.iterdir()) == []


def test_criu_failure_names_its_log_and_the_container_runs_on(
        criu: str, make_bundle: Callable[..., Bundle], state_root: Path,
        tmp_path: Path) -> None:
    """A dump CRIU refuses -- the container's stdout is a file of the host, on a mount
    the container does not have (runc refuses it the same way) -- is one line naming
    CRIU's reason and its log; the container runs on; the image directory is gone but
    for the log."""
    bundle = make_bundle(["/bin/sleep", "1000"])
    cid = unique_id("cr")
    with open(tmp_path / "out", "w") as out:
        proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d",
                               "--bundle", str(bundle.path), cid], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out, timeout=60)
    assert proc.returncode == 0, (tmp_path / "out").read_text()
    try:
        image = tmp_path / "image"
        err = fails(run_contain(state_root, "--criu", criu, "checkpoint", "--image-path",
                                str(image), cid),
                    "criu dump failed", "Can't lookup mount", str(tmp_path / "out"),
                    str(image / "dump.log"))
        state = json.loads(ok(run_contain(state_root, "state", cid)))
        assert state["status"] == "running"
        assert [p.name for p in image.iterdir()] == ["dump.log"], err
    finally:
        run_contain(state_root, "delete", "--force", cid)


def test_pre_dump_needs_dirty_memory_tracking(counter: Container, tmp_path: Path) -> None:
    """--pre-dump copies memory while the container runs and needs the kernel's
    soft-dirty bits; where `criu check` finds them missing (this machine's kernel), the
    error says so before anything is made."""
    probe = subprocess.run([counter.criu, "check", "--feature", "mem_dirty_track"],
                           capture_output=True, text=True, timeout=60)
    image = tmp_path / "image"
    proc = counter.contain("checkpoint", "--pre-dump", "--image-path", str(image),
                           counter.cid)
    if "is supported" in probe.stdout + probe.stderr:
        ok(proc)
        assert (image / "inventory.img").exists()
    else:
        fails(proc, "mem_dirty_track", "Dirty tracking is OFF")
        assert not image.exists()
    assert counter.state()["status"] == "running"


# -- anywhere ---------------------------------------------------------------------------


@pytest.fixture
def sleeper(make_bundle: Callable[..., Bundle], state_root: Path,
            tmp_path: Path) -> Iterator[str]:
    bundle = make_bundle(["/bin/sleep", "1000"])
    cid = unique_id("cr")
    with open(tmp_path / "err", "w+") as err:  # (a pipe would be held by the container)
        proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d",
                               "--bundle", str(bundle.path), cid], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    assert proc.returncode == 0, (tmp_path / "err").read_text()
    yield cid
    run_contain(state_root, "delete", "--force", cid)


@pytest.mark.parametrize(("flags", "words"), [
    (["--manage-cgroups-mode", "hard"], ["--manage-cgroups-mode", "'hard'"]),
    (["--empty-ns", "pid"], ["--empty-ns", "only network"]),
    (["--page-server", "nowhere"], ["--page-server", "ADDRESS:PORT"]),
    (["--status-fd", "x"], ["--status-fd", "integer"]),
    (["--bogus"], ["--bogus"]),
])
def test_bad_flags_are_one_line(state_root: Path, sleeper: str, tmp_path: Path,
                                flags: list[str], words: list[str]) -> None:
    image = tmp_path / "image"
    fails(run_contain(state_root, "checkpoint", "--image-path", str(image), *flags,
                      sleeper), *words)
    assert not image.exists()
    assert json.loads(ok(run_contain(state_root, "state", sleeper)))["status"] == "running"


def test_missing_criu_and_missing_container(state_root: Path, sleeper: str,
                                            tmp_path: Path) -> None:
    image = tmp_path / "image"
    fails(run_contain(state_root, "--criu", str(tmp_path / "no-criu"), "checkpoint",
                      "--image-path", str(image), sleeper), "no-criu", "not found")
    fails(run_contain(state_root, "checkpoint", "--image-path", str(image), "nosuch"),
          "does not exist")
    assert not image.exists()


def test_restore_refuses_before_creating_anything(state_root: Path, sleeper: str,
                                                  make_bundle: Callable[..., Bundle],
                                                  tmp_path: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    cid = unique_id("cr")
    fails(run_contain(state_root, "restore", "--image-path", str(tmp_path / "none"),
                      "--bundle", str(bundle.path), cid), "--image-path", "no such directory")
    fails(run_contain(state_root, "restore", "--bundle", str(tmp_path / "nobundle"), cid),
          "bundle")
    # the id of a live container is refused (runc: container with id exists)
    image = tmp_path / "img"
    image.mkdir()
    (image / "inventory.img").write_bytes(b"")
    path = _criu_candidate()
    if path is not None and _criu_check(path) is None:
        fails(run_contain(state_root, "--criu", path, "restore", "--image-path", str(image),
                          "--bundle", str(bundle.path), sleeper), "exists")
    assert sorted(p.name for p in state_root.iterdir() if not p.name.startswith(".")) == \
        [sleeper]


def test_a_criu_that_cannot_run_here_is_a_clear_error(state_root: Path, sleeper: str,
                                                      tmp_path: Path) -> None:
    """Debian 12's CRIU on Linux >= 6.13: `criu check` fails; checkpoint says so in one
    line with CRIU's reason, and the container runs on."""
    found = [p for p in dict.fromkeys(("/usr/sbin/criu", shutil.which("criu"))) if p and
             os.path.exists(p)]
    if not found:
        pytest.skip("criu is not installed (scripts/extra-deps installs Debian's)")
    failing = [(p, why) for p in found if (why := _criu_check(p)) is not None]
    if not failing:
        pytest.skip(f"{', '.join(found)} work(s) on this kernel: nothing to refuse")
    path, why = failing[0]
    image = tmp_path / "image"
    err = fails(run_contain(state_root, "--criu", path, "checkpoint", "--image-path",
                            str(image), sleeper), "criu check")
    assert why.split(";")[0].strip() in err
    assert not image.exists()
    assert json.loads(ok(run_contain(state_root, "state", sleeper)))["status"] == "running"


def test_help_lists_runc_flags() -> None:
    out = subprocess.run([*contain_cmd(), "checkpoint", "--help"], capture_output=True,
                         text=True, timeout=60).stdout
    for flag in ("--image-path", "--work-path", "--leave-running", "--tcp-established",
                 "--ext-unix-sk", "--shell-job", "--file-locks", "--pre-dump",
                 "--parent-path", "--manage-cgroups-mode", "--lazy-pages", "--page-server",
                 "--status-fd", "--empty-ns", "--auto-dedup", "--link-remap",
                 "--tcp-skip-in-flight"):
        assert flag in out, flag
    out = subprocess.run([*contain_cmd(), "restore", "--help"], capture_output=True,
                         text=True, timeout=60).stdout
    for flag in ("--image-path", "--work-path", "--bundle", "--detach", "--pid-file",
                 "--console-socket", "--no-pivot", "--no-subreaper", "--lazy-pages",
                 "--lsm-profile", "--lsm-mount-context", "--manage-cgroups-mode"):
        assert flag in out, flag


def test_stdio_of_the_hosts_dev_null_is_reopened_inside(state_root: Path,
                                                       sleeper: str) -> None:
    """An engine's /dev/null on the init's stdio is replaced by the container's own
    /dev/null (runc does the same): CRIU cannot dump an fd of a mount the container
    does not have."""
    pid = json.loads(ok(run_contain(state_root, "state", sleeper)))["pid"]
    with open(f"/proc/{pid}/mountinfo") as f:
        dev = {ln.split()[4]: ln.split()[0] for ln in f}["/dev"]
    for fd in (0, 1):  # (the fixture's stderr is a file)
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            mnt = next(ln.split()[1] for ln in f if ln.startswith("mnt_id:"))
        assert mnt == dev, (fd, mnt, dev)


def test_terminal_comes_back_on_a_new_console(criu: str, make_bundle: Callable[..., Bundle],
                                             state_root: Path, tmp_path: Path) -> None:
    """A container with a terminal: the dumped pty is external, and restore hands CRIU
    the slave of a new pty whose master goes to --console-socket (what conmon and the
    shim serve); the counter goes on there."""
    from test_process import ConsoleReceiver

    bundle = make_bundle(["/bin/sh", "-c", COUNTER])
    bundle.config["process"]["terminal"] = True
    bundle.config["root"]["readonly"] = False
    bundle.write()
    cid = unique_id("cr")
    log = bundle.rootfs / "count.log"

    def count() -> int:
        lines = log.read_text().split() if log.exists() else []
        return int(lines[-1]) if lines else 0

    first = ConsoleReceiver(tmp_path / "c1.sock")
    ok(run_contain(state_root, "run", "-d", "--console-socket", str(first.path),
                   "--bundle", str(bundle.path), cid))
    try:
        wait_for(lambda: count() >= 5)
        ok(run_contain(state_root, "--criu", criu, "checkpoint", "--image-path",
                       str(tmp_path / "image"), cid))
        first.join()  # the old pty's slave is gone with the dumped tree
        dumped = count()
        second = ConsoleReceiver(tmp_path / "c2.sock")
        ok(run_contain(state_root, "--criu", criu, "restore", "-d", "--console-socket",
                       str(second.path), "--image-path", str(tmp_path / "image"),
                       "--bundle", str(bundle.path), cid))
        wait_for(lambda: count() >= dumped + 5)
    finally:
        run_contain(state_root, "delete", "--force", cid)
    second.join()
    before = [int(x) for x in first.output.split()]
    after = [int(x) for x in second.output.split()]
    assert before and before[-1] <= dumped
    assert after and after[0] == dumped + 1 and after == list(range(dumped + 1,
                                                                      after[-1] + 1))


@pytest.fixture
def request_cleanup() -> Iterator[list[Callable[[], Any]]]:
    """Callables run after the test (last first)."""
    todo: list[Callable[[], Any]] = []
    yield todo
    for fn in reversed(todo):
        fn()


@pytest.fixture
def netns_file(tmp_path: Path) -> Iterator[Path]:
    """A network namespace of our own, kept by a bind mount on a file."""
    path = Path("/run") / f"crnet-{unique_id()}"
    path.touch()
    try:
        subprocess.run(["unshare", f"--net={path}", "true"], check=True, timeout=30)
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        path.unlink()


def test_joined_network_namespace_and_bind_mount_come_back(
        criu: str, make_bundle: Callable[..., Bundle], state_root: Path, tmp_path: Path,
        netns_file: Path) -> None:
    """A network namespace joined by path is external to the dump and handed back by fd;
    a bind mount of the host comes back from its source: the restored counter goes on
    writing into the host's directory, in the same network namespace."""
    data = tmp_path / "data"
    data.mkdir()
    bundle = make_bundle(["/bin/sh", "-c", COUNTER.replace("/count.log", "/data/count.log")])
    cfg = bundle.config
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(data),
                          "options": ["rbind", "rw"]})
    for ns in cfg["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = str(netns_file)
    bundle.write()
    c = Container(state_root, bundle, criu)
    log = data / "count.log"

    def count() -> int:
        lines = log.read_text().split() if log.exists() else []
        return int(lines[-1]) if lines else 0

    c.start()
    try:
        wait_for(lambda: count() >= 5)
        ok(c.contain("checkpoint", "--image-path", str(tmp_path / "image"), c.cid))
        dumped = count()
        ok(c.contain("restore", "-d", "--image-path", str(tmp_path / "image"), "--bundle",
                     str(bundle.path), c.cid, stdio=c.pipes()))
        wait_for(lambda: count() >= dumped + 5)
        seq = [int(x) for x in log.read_text().split()]
        assert seq == list(range(1, len(seq) + 1))
        pid = c.state()["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns_file).st_ino
    finally:
        c.close()


def test_user_namespace_container_comes_back(criu: str, state_root: Path, tmp_path: Path,
                                             request_cleanup: list[Callable[[], Any]]
                                             ) -> None:
    """With a user namespace, create binds the host's device nodes into /dev (external
    to the dump, bound again on restore), and the restored tasks read images as the
    container's root: the image directory is opened to that root's group for the
    restore only."""
    import tempfile

    from conftest import build_busybox_rootfs, default_config

    # the container's root must reach its rootfs: not under pytest's 0700 directories
    base = Path(tempfile.mkdtemp(prefix="contain-crus-", dir="/tmp"))
    request_cleanup.append(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o711)
    rootfs = build_busybox_rootfs(base / "rootfs")  # a copy of its own: chowned below
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), 100000, 100000)
    os.lchown(rootfs, 100000, 100000)
    cfg = default_config(["/bin/sh", "-c", COUNTER])
    cfg["root"]["readonly"] = False
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle = Bundle(base, cfg).write()
    c = Container(state_root, bundle, criu)
    image = tmp_path / "image"  # (under a 0700 directory: CRIU reads it through an fd)
    try:
        c.start()
        wait_for(lambda: c.count() >= 5)
        ok(c.contain("checkpoint", "--image-path", str(image), c.cid))
        dumped = c.count()
        ok(c.contain("restore", "-d", "--image-path", str(image), "--bundle",
                     str(bundle.path), c.cid, stdio=c.pipes()))
        assert c.read_number() == dumped + 1
        pid = c.state()["pid"]
        with open(f"/proc/{pid}/uid_map") as f:
            assert f.read().split() == ["0", "100000", "65536"]
        st = image.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o700, 0)  # as it was
    finally:
        c.close()


def test_restore_runs_prestart_and_create_runtime_hooks(counter: Container,
                                                        tmp_path: Path) -> None:
    """The hooks run when CRIU has made the restored tasks, before they run, with the
    restored init's pid (CRIU's action script asks contain); a failing hook fails the
    restore in one line and leaves nothing."""
    image = tmp_path / "image"
    ok(counter.contain("checkpoint", "--leave-running", "--image-path", str(image),
                       counter.cid))
    ok(counter.contain("delete", "--force", counter.cid))
    out = tmp_path / "hooks"

    def hook(name: str, code: int = 0) -> dict[str, Any]:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}-{name}; exit {code}"]}

    counter.bundle.config["hooks"] = {"prestart": [hook("prestart", 3)]}
    counter.bundle.write()
    fails(counter.contain("restore", "-d", "--image-path", str(image), "--bundle",
                          str(counter.bundle.path), counter.cid, stdio=counter.pipes()),
          "prestart", "exit status 3")
    assert not (counter.root / counter.cid).exists()
    assert not list(Path(counter.root).glob("*/criu-action*"))

    counter.bundle.config["hooks"] = {"prestart": [hook("prestart")],
                                      "createRuntime": [hook("create")]}
    counter.bundle.write()
    ok(counter.contain("restore", "-d", "--image-path", str(image), "--bundle",
                       str(counter.bundle.path), counter.cid, stdio=counter.pipes()))
    pid = counter.state()["pid"]
    for name in ("prestart", "create"):
        state = json.loads((tmp_path / f"hooks-{name}").read_text())
        assert (state["id"], state["pid"], state["status"]) == (counter.cid, pid, "creating")
    assert counter.read_number() > 5
    assert sorted(p.name for p in (counter.root / counter.cid).iterdir()) == ["state.json"]


def test_foreground_restore_relays_a_terminal(criu: str, make_bundle: Callable[..., Bundle],
                                              state_root: Path, tmp_path: Path) -> None:
    """A foreground restore of a container with a terminal and no --console-socket
    relays the pty itself (as runc, and as contain run): the rest of the count shows on
    the caller's terminal and the exit status is the container's."""
    from test_process import ConsoleReceiver
    from test_terminal import _pty_run

    bundle = make_bundle(["/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); "
                          "echo $i >> /count.log; echo $i; usleep 20000; done; exit 5"])
    bundle.config["process"]["terminal"] = True
    bundle.config["root"]["readonly"] = False
    bundle.write()
    cid = unique_id("cr")
    log = bundle.rootfs / "count.log"

    def count() -> int:
        lines = log.read_text().split() if log.exists() else []
        return int(lines[-1]) if lines else 0

    console = ConsoleReceiver(tmp_path / "c.sock")
    ok(run_contain(state_root, "run", "-d", "--console-socket", str(console.path),
                   "--bundle", str(bundle.path), cid))
    try:
        wait_for(lambda: count() >= 5)
        ok(run_contain(state_root, "--criu", criu, "checkpoint", "--image-path",
                       str(tmp_path / "image"), cid))
    finally:
        run_contain(state_root, "delete", "--force", cid)
    console.join()
    dumped = count()
    assert dumped < 300
    code, out = _pty_run([*contain_cmd(), "--root", str(state_root), "--criu", criu,
                          "restore", "--image-path", str(tmp_path / "image"), "--bundle",
                          str(bundle.path), cid], [], timeout=120)
    assert code == 5, out
    numbers = [int(x) for x in out.split() if x.isdigit()]
    assert numbers == list(range(dumped + 1, 301)), out[-500:]
    assert run_contain(state_root, "state", cid).returncode == 1
