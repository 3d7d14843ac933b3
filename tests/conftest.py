"""Shared fixtures: a real busybox rootfs, OCI bundles, the contain binary, leak checks."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
CONTAIN = REPO / ".venv" / "bin" / "contain"


def contain_cmd() -> list[str]:
    """The command line that runs contain (the fast launcher when installed)."""
    if CONTAIN.exists():
        return [str(CONTAIN)]
    return [sys.executable, "-m", "contain"]


def build_busybox_rootfs(dest: Path) -> Path:
    """A minimal rootfs: busybox-static and its applet links, /etc/passwd and group."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root",
              "var", "run", "home"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = dest / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        "user:x:1000:1000:user:/home:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\nuser:x:1000:\n")
    return dest


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(BUSYBOX).exists():
        pytest.fail("busybox-static is not installed (run `make deps`)")
    return build_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


def default_config(args: list[str] | None = None) -> dict[str, Any]:
    """A config.json like `runc spec` writes, running *args* without a terminal."""
    from contain.spec.defaults import default_spec

    cfg = default_spec()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args or ["/bin/true"]
    return cfg


class Bundle:
    """An OCI bundle directory whose rootfs is a bind of the shared busybox tree."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self) -> Bundle:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))
        return self


@pytest.fixture
def make_bundle(busybox_rootfs: Path, tmp_path: Path) -> Callable[..., Bundle]:
    """Build bundles; each gets its own copy-on-nothing rootfs: a symlink-free copy of
    the busybox tree (cheap: hard links where possible)."""
    counter = iter(range(1000))

    def make(args: list[str] | None = None, config: dict[str, Any] | None = None,
             **changes: Any) -> Bundle:
        path = tmp_path / f"bundle{next(counter)}"
        path.mkdir()
        shutil.copytree(busybox_rootfs, path / "rootfs", symlinks=True,
                        copy_function=os.link)
        cfg = copy.deepcopy(config) if config is not None else default_config(args)
        if args is not None:
            cfg["process"]["args"] = args
        for key, value in changes.items():
            cfg[key] = value
        return Bundle(path, cfg).write()

    return make


@pytest.fixture
def state_root() -> Iterator[Path]:
    """A private --root for contain, removed after the test."""
    root = Path(tempfile.mkdtemp(prefix="contain-root-", dir="/run"))
    yield root
    # dot-entries are caches (compiled seccomp programs) and sandbox bundles' parent
    left = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    for cid in left:  # clean up, then fail: a test must delete what it made
        subprocess.run([*contain_cmd(), "--root", str(root), "delete", "--force", cid],
                       capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)
    if left:
        pytest.fail(f"state directories left in --root: {left}")


# A token of this test session in every id it makes, so that the leak checks can tell
# our cgroups from those of another session running on the same machine.
SESSION = uuid.uuid4().hex[:4]


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}{SESSION}-{uuid.uuid4().hex[:10]}"


def _become_subreaper() -> None:
    """Make pytest a child subreaper: a container's init whose `contain create` has
    exited is reparented to us, so "our processes" are exactly our descendants."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


_become_subreaper()


def run_contain(root: Path, *args: str, input: str | None = None, timeout: float = 60,
                check: bool = False, env: dict[str, str] | None = None,
                cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*contain_cmd(), "--root", str(root), *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """A command that succeeded: its stdout."""
    assert proc.returncode == 0, \
        f"{proc.args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """A command that failed as contain fails: exit 1, one log line and no traceback,
    naming each of *words*; the line."""
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout} {proc.stderr}"
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def wait_for(pred: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll *pred* until it returns something true (returned); fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {pred}"
        time.sleep(0.02)


# -- leak checks ---------------------------------------------------------------------------

def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _processes() -> dict[int, int]:
    """pid -> ppid of every live (not zombie) process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            out[int(entry)] = int(fields[1])
    return out


def reap_zombies() -> None:
    """Collect orphans reparented to us that have exited (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _leaked_processes(before: dict[int, int]) -> set[int]:
    """New processes descended from this test process: a container or a runtime process
    that outlived its test. Other sessions' processes are never ours."""
    me = os.getpid()
    procs = _processes()
    leaked = set()
    for pid in procs:
        if pid in before or pid == me:
            continue
        parent, hops = procs.get(pid), 0
        while parent not in (None, 0, 1, me) and hops < 64:
            parent, hops = procs.get(parent), hops + 1
        if parent == me:
            leaked.add(pid)
    return leaked


ENGINES_TMP = "/tmp/ce-"  # tests/engines/conftest.py's session directories

CGROUP_ROOTS = ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified",
                # a pure cgroup v2 host (the user-mode Linux lane, tests/test_uml_lane.py)
                *(("/sys/fs/cgroup",) if os.path.exists("/sys/fs/cgroup/cgroup.controllers")
                  else ()))


def _cgroups() -> set[str]:
    """Cgroup directories named after ids of this session."""
    found = set()
    for base in CGROUP_ROOTS:
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                if SESSION in d:
                    found.add(os.path.join(dirpath, d))
    return found


def _dev_null() -> tuple[int, int, int]:
    st = os.stat("/dev/null")
    return st.st_uid, st.st_gid, st.st_mode


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves mounts, child processes, cgroups or fds behind."""
    # Engine tests drive daemons (containerd, conmon, dockerd) that keep helper processes
    # and storage mounts of their own between tests; their session fixtures remove those.
    engines = request.node.get_closest_marker("engines") is not None
    reap_zombies()
    mounts, cgroups, fds, procs = _mounts(), _cgroups(), _fds(), _processes()
    null = _dev_null()
    yield
    if engines:
        mounts = _mounts()
        procs = _processes()
    # the engines' storage (a session fixture's, under /tmp/ce-*) mounts and unmounts as
    # their daemons please, also while later tests run
    leaked_mounts = {m for m in _mounts() - mounts if not m.startswith(ENGINES_TMP)}
    leaked_cgroups = _cgroups() - cgroups
    leaked_fds = {fd for fd in _fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")}
    children = _leaked_processes(procs)
    problems = []
    if leaked_mounts:
        problems.append(f"mounts: {sorted(leaked_mounts)}")
    if leaked_cgroups:
        problems.append(f"cgroups: {sorted(leaked_cgroups)}")
    if leaked_fds:
        problems.append(f"fds: {sorted(leaked_fds)}")
    if _dev_null() != null:  # runsc, given it as stdio, made it nobody's once
        problems.append(f"/dev/null changed: {null} -> {_dev_null()}")
    if children:
        for pid in children:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        problems.append(f"processes: {sorted(children)}")
    reap_zombies()
    if problems:
        pytest.fail("test leaked " + "; ".join(problems))
