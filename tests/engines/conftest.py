"""Real engines driving contain: a private containerd daemon and a private Podman.

Everything lives under one temp dir per session (sockets, roots, state, storage, the
runtime's own --root); nothing uses the host's default engine paths, except two that the
engines hard-code and that the fixtures clean up: containerd 1.6's shims put their sockets
in /run/containerd/s/<hash of our address> and Podman writes a blob-info cache to
/var/lib/containers/cache when it imports an image.

The runtime under test is contain's launcher (.venv/bin/contain, `make venv`); set
CONTAIN_ENGINES_RUNTIME=/usr/sbin/runc to prove the fixtures against runc, and
CONTAIN_ENGINES_CALLS_OUT=FILE to keep the log of every runtime call the engines made.
The engines call it through a two-line shell wrapper that appends each argv to a calls
log and execs the runtime: the tests use that log to show that the engine really ran our
binary and, on a failure, exactly which call failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CONTAIN, REPO, build_busybox_rootfs

from .image import IMAGE_NAME, oci_archive, rootfs_tar

# binary -> the Debian package that provides it
PACKAGES = {
    "containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd",
    "podman": "podman", "conmon": "conmon", "dockerd": "docker.io",
}
CGROUP_BASE = Path("/sys/fs/cgroup")
ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")  # no CAP_SYS_RESOURCE: stay below ours


def _extra_deps() -> set[str]:
    path = REPO / "scripts" / "extra-deps"
    if not path.exists():
        return set()
    return {line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def require(*binaries: str) -> None:
    """Fail when a binary the install step provides is missing; skip otherwise."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if not missing:
        return
    expected = [b for b in missing if PACKAGES.get(b) in _extra_deps()]
    if expected:
        pytest.fail(f"{', '.join(expected)} missing although scripts/extra-deps installs "
                    f"{', '.join(sorted({PACKAGES[b] for b in expected}))} (run `make deps`)")
    pytest.skip(f"{', '.join(missing)} not installed")


def runtime_binary() -> Path:
    """The runtime the engines drive: contain's launcher unless overridden."""
    override = os.environ.get("CONTAIN_ENGINES_RUNTIME")
    if override:
        path = Path(shutil.which(override) or override)
    else:
        path = CONTAIN
    if not path.exists():
        pytest.fail(f"runtime {path} does not exist (run `make venv` for contain's launcher)")
    return path


# -- small process helpers ---------------------------------------------------------------

def run(cmd: list[str], *, timeout: float = 90, check: bool = False, env: dict[str, str] |
        None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> exit {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def run_in_pty(cmd: list[str], *, timeout: float = 90, env: dict[str, str] | None = None,
               rows: int = 24, cols: int = 80) -> tuple[int, str]:
    """Run *cmd* with a pseudo-terminal as its stdin/stdout/stderr (as from a shell);
    return (exit code, everything it printed)."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                start_new_session=True)
        os.close(slave)
        slave = -1
        out = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{' '.join(cmd)} timed out; output: {out.decode()!r}")
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the slave side
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return code, out.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def _pids_mentioning(needle: str) -> list[int]:
    """Processes whose command line names *needle* (our private paths): what our
    daemons started (shims, conmon) and that outlived them."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _unmount_under(path: Path) -> None:
    """Lazily unmount whatever is still mounted under *path*, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for target in sorted({t for t in targets if t.startswith(prefix)}, key=len,
                         reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, timeout=30)


# -- cgroups -----------------------------------------------------------------------------

def _cgroup_hierarchies() -> list[Path]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                out.append(Path(fields[4]))
    return out


def make_cgroup_parent(rel: str) -> None:
    """Create /<rel> in every hierarchy before the tests run, so that the per-test leak
    check does not count the parent an engine would otherwise create on first use."""
    for hier in _cgroup_hierarchies():
        path = hier
        for part in Path(rel).parts:
            parent, path = path, path / part
            if path.exists():
                continue
            path.mkdir()
            if (hier / "cpuset.cpus").exists():  # v1 cpuset: a child starts empty
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((parent / name).read_text())


def remove_cgroup_tree(rel: str) -> list[str]:
    """Remove /<rel> and everything below it in every hierarchy; return what resisted."""
    stuck = []
    for hier in _cgroup_hierarchies():
        top = hier / rel
        if not top.exists():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last task is still exiting
                    with contextlib.suppress(OSError):
                        for pid in (d / "cgroup.procs").read_text().split():
                            os.kill(int(pid), signal.SIGKILL)
                    time.sleep(0.1)
            else:
                stuck.append(str(d))
    return stuck


# -- the session -------------------------------------------------------------------------

class Session:
    """The temp dir, the runtime wrappers and the calls log shared by all engines."""

    def __init__(self, base: Path, runtime: Path) -> None:
        self.base = base
        self.runtime = runtime
        # cgroup parent and containerd namespace: mkdtemp may put "_" in the name, which
        # containerd refuses in a namespace next to "-"
        self.name = base.name.replace("_", "0")
        self.calls_log = base / "runtime-calls.log"
        self.calls_log.touch()

    def wrapper(self, name: str, extra: tuple[str, ...] = ()) -> Path:
        """A wrapper that logs argv to the calls log and execs the runtime."""
        path = self.base / name
        args = " ".join(f"'{a}'" for a in extra)
        path.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"{name} $*\" >> '{self.calls_log}'\n"
            f"exec '{self.runtime}' {args} \"$@\"\n")
        path.chmod(0o755)
        return path

    def calls(self) -> list[str]:
        return self.calls_log.read_text().splitlines()

    def mark(self) -> int:
        return len(self.calls())

    def calls_since(self, mark: int, engine: str | None = None) -> list[str]:
        lines = self.calls()[mark:]
        if engine:
            lines = [c for c in lines if c.startswith(engine + " ")]
        return lines


@pytest.fixture(scope="session")
def engines_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    runtime = runtime_binary()
    # short: unix socket paths are limited to 108 bytes
    base = Path(tempfile.mkdtemp(prefix=f"ce-{uuid.uuid4().hex[:6]}-", dir="/tmp"))
    os.chmod(base, 0o755)
    session = Session(base, runtime)
    make_cgroup_parent(session.name)
    try:
        yield session
    finally:
        keep = os.environ.get("CONTAIN_ENGINES_CALLS_OUT")
        if keep:  # every runtime argv the engines used, for docs/engines.md
            shutil.copyfile(session.calls_log, keep)
        _kill_pids(_pids_mentioning(str(base)))
        _unmount_under(base)
        stuck = remove_cgroup_tree(session.name)
        shutil.rmtree(base, ignore_errors=True)
        if stuck:
            pytest.fail(f"engine cgroups could not be removed: {stuck}")


@pytest.fixture(scope="session")
def image_files(engines_session: Session) -> tuple[Path, Path]:
    """(OCI archive for ctr, plain rootfs tar for podman) of the busybox image."""
    rootfs = build_busybox_rootfs(engines_session.base / "image-rootfs")
    oci = engines_session.base / "busybox-oci.tar"
    oci.write_bytes(oci_archive(rootfs))
    plain = engines_session.base / "busybox-rootfs.tar"
    plain.write_bytes(rootfs_tar(rootfs))
    shutil.rmtree(rootfs)
    return oci, plain


# -- containerd --------------------------------------------------------------------------

def containerd_config(base: Path, extra: str = "", *, cri: bool = False) -> str:
    """A containerd 1.6 config whose every path is under *base*."""
    disabled = "[]" if cri else '["io.containerd.grpc.v1.cri"]'
    return (
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        f"disabled_plugins = {disabled}\n"
        "[grpc]\n"
        f'  address = "{base}/containerd.sock"\n'
        "[ttrpc]\n"
        f'  address = "{base}/containerd.sock.ttrpc"\n'
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f'  path = "{base}/opt"\n'
        + extra)


class Containerd:
    """A private containerd daemon and `ctr` bound to it."""

    def __init__(self, session: Session, base: Path, config: str, *,
                 namespace: str | None = None, wrapper: str = "containerd-runtime") -> None:
        self.session = session
        self.base = base
        self.address = str(base / "containerd.sock")
        self.namespace = namespace or session.name
        self.fifo_dir = base / "fifo"
        self.runtime_root = base / "runtime-root"
        self.wrapper = session.wrapper(wrapper)
        base.mkdir(parents=True, exist_ok=True)
        self.fifo_dir.mkdir(exist_ok=True)
        (base / "config.toml").write_text(config)
        self.log_path = base / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.base / "config.toml")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            if os.path.exists(self.address) and self.ctr("version").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"containerd did not come up:\n{self.log_path.read_text()[-3000:]}")

    def ctr(self, *args: str, timeout: float = 90, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", self.address, "--namespace", self.namespace, *args],
                   timeout=timeout, check=check, input=input)

    def ctr_cmd(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.address, "--namespace", self.namespace, *args]

    def fifo_flags(self) -> list[str]:
        """ctr's stdio fifos go to /run/containerd/fifo unless told otherwise."""
        return ["--fifo-dir", str(self.fifo_dir)]

    def exec_cmd(self, cid: str, *args: str, tty: bool = False) -> list[str]:
        """`ctr task exec` of *args* in task *cid*, with a fresh exec id."""
        return self.ctr_cmd("task", "exec", *self.fifo_flags(), *(["--tty"] if tty else []),
                            "--exec-id", f"exec-{uuid.uuid4().hex[:8]}", cid, *args)

    def exec(self, cid: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return run(self.exec_cmd(cid, *args), timeout=timeout)

    def run_flags(self) -> list[str]:
        """`ctr run` flags that make the runc v2 shim call our runtime, privately."""
        return ["--fifo-dir", str(self.fifo_dir), "--runc-binary", str(self.wrapper),
                "--runc-root", str(self.runtime_root)]

    def cleanup_containers(self) -> None:
        listed = self.ctr("containers", "list", "--quiet", timeout=60)
        for cid in listed.stdout.split():
            self.ctr("task", "kill", "--signal", "SIGKILL", cid, timeout=30)
            self.ctr("task", "delete", "--force", cid, timeout=60)
            self.ctr("containers", "delete", cid, timeout=60)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self.cleanup_containers()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _kill_pids(_pids_mentioning(str(self.base)))
        _unmount_under(self.base)
        self.proc = None

    def diagnose(self, mark: int) -> str:
        """What the runtime was asked since *mark*, and containerd's last words."""
        calls = "\n".join(self.session.calls_since(mark))
        tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        return f"runtime calls:\n{calls}\ncontainerd log tail:\n{tail}"


_SHIM_SOCKET_DIR = Path("/run/containerd")


@contextlib.contextmanager
def shim_socket_dir_cleanup() -> Iterator[None]:
    """containerd 1.6 shims hard-code /run/containerd/s for their sockets."""
    existed = _SHIM_SOCKET_DIR.exists()
    try:
        yield
    finally:
        if not existed:
            for d in (_SHIM_SOCKET_DIR / "s", _SHIM_SOCKET_DIR):
                with contextlib.suppress(OSError):
                    d.rmdir()


@pytest.fixture(scope="session")
def containerd(engines_session: Session, image_files: tuple[Path, Path]) -> Iterator[Containerd]:
    require("containerd", "ctr", "containerd-shim-runc-v2")
    base = engines_session.base / "containerd"
    with shim_socket_dir_cleanup():
        daemon = Containerd(engines_session, base, containerd_config(base))
        try:
            daemon.start()
            daemon.ctr("images", "import", str(image_files[0]), check=True, timeout=180)
            yield daemon
        finally:
            daemon.stop()


# -- podman ------------------------------------------------------------------------------

class Podman:
    """Podman on private storage, run root, tmp dir and config files."""

    def __init__(self, session: Session, base: Path) -> None:
        self.session = session
        self.base = base
        self.runtime_root = base / "runtime-root"
        # Podman gives the runtime no --root, and its exit command drops --runtime-flag:
        # the wrapper adds our private --root so contain never touches its default root.
        self.wrapper = session.wrapper("podman-runtime", ("--root", str(self.runtime_root)))
        self.cgroup_parent = f"/{session.name}/podman"
        for d in ("root", "run", "tmp", "net", "runtime-root"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "containers.conf").write_text(
            "[containers]\n"
            'netns = "none"\n'
            f"default_ulimits = [{', '.join(repr(u).replace(chr(39), chr(34)) for u in ULIMITS)}]\n"
            'log_driver = "k8s-file"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{base}/events.log"\n'
            'lock_type = "file"\n'
            f'tmp_dir = "{base}/tmp"\n'
            f'static_dir = "{base}/root/libpod"\n'
            f'volume_path = "{base}/root/volumes"\n'
            "[network]\n"
            f'network_config_dir = "{base}/net"\n')
        (base / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{base}/root"\n'
            f'runroot = "{base}/run"\n'
            "[storage.options.overlay]\n"
            # no private bind of the storage home, made lazily on a test's first container
            'skip_mount_home = "true"\n')
        (base / "registries.conf").write_text("")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(base),
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf"),
        }
        # conmon's cgroup is <parent>/conmon: make it now so no test "leaks" it
        make_cgroup_parent(self.cgroup_parent.lstrip("/") + "/conmon")

    def cmd(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "run"),
                "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--tmpdir", str(self.base / "tmp"),
                "--runtime", str(self.wrapper), *args]

    def run_flags(self) -> list[str]:
        """Flags for `podman run/create`: our cgroup parent, explicit lower ulimits."""
        flags = ["--cgroup-parent", self.cgroup_parent, "--network", "none"]
        for u in ULIMITS:
            flags += ["--ulimit", u]
        return flags

    def podman(self, *args: str, timeout: float = 90, check: bool = False,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.cmd(*args), timeout=timeout, check=check, env=self.env, input=input)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.podman("rm", "--all", "--force", "--time", "0", timeout=120)
        _kill_pids(_pids_mentioning(str(self.base)))
        _unmount_under(self.base)

    def diagnose(self, mark: int) -> str:
        return "runtime calls:\n" + "\n".join(self.session.calls_since(mark))


@pytest.fixture(scope="session")
def podman(engines_session: Session, image_files: tuple[Path, Path]) -> Iterator[Podman]:
    require("podman", "conmon")
    cache = Path("/var/lib/containers")
    cache_existed = cache.exists()
    engine = Podman(engines_session, engines_session.base / "podman")
    try:
        engine.podman("import", "--change", "CMD=/bin/sh", str(image_files[1]), IMAGE_NAME,
                      check=True, timeout=180)
        yield engine
    finally:
        engine.stop()
        if not cache_existed:  # podman's blob-info cache, hard-coded for root
            shutil.rmtree(cache, ignore_errors=True)


# -- docker ------------------------------------------------------------------------------

def docker_client() -> str:
    """Debian's docker.io client when present (it matches its daemon), else any on PATH."""
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


class Docker:
    """A private dockerd (with its own managed containerd) that knows contain by
    `--add-runtime contain=PATH`."""

    def __init__(self, session: Session, base: Path) -> None:
        self.session = session
        self.base = base
        self.wrapper = session.wrapper("docker-runtime")
        self.cgroup_parent = f"/{session.name}/docker"
        self.sock = base / "docker.sock"
        base.mkdir(parents=True, exist_ok=True)
        # dockerd 20.10 writes a trust key to /etc/docker/key.json unless told otherwise
        (base / "daemon.json").write_text(
            '{"deprecated-key-path": "%s"}\n' % (base / "key.json"))
        self.log_path = base / "dockerd.log"
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HOME": str(base), "DOCKER_HOST": f"unix://{self.sock}",
                    "DOCKER_CONFIG": str(base / "client")}
        self.proc: subprocess.Popen[bytes] | None = None
        make_cgroup_parent(self.cgroup_parent.lstrip("/"))

    def start(self) -> None:
        b = self.base
        cmd = ["dockerd", "--config-file", str(b / "daemon.json"),
               "--data-root", str(b / "data"), "--exec-root", str(b / "exec"),
               "--pidfile", str(b / "docker.pid"), "--host", f"unix://{self.sock}",
               "--bridge", "none", "--iptables=false", "--ip6tables=false",
               "--ip-masq=false", "--cgroup-parent", self.cgroup_parent,
               "--containerd-namespace", f"{self.session.name}-d",
               "--containerd-plugins-namespace", f"{self.session.name}-dp",
               "--storage-driver", "overlay2",
               "--add-runtime", f"contain={self.wrapper}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, env=self.env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            if self.sock.exists() and self.docker("version").returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"dockerd did not come up:\n{self.log_path.read_text()[-3000:]}")

    def docker(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return run([docker_client(), *args], timeout=timeout, env=self.env)

    def run_flags(self) -> list[str]:
        return ["--runtime", "contain", "--network", "none"]

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            ids = self.docker("ps", "--all", "--quiet", timeout=60).stdout.split()
            if ids:
                self.docker("rm", "--force", *ids, timeout=120)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _kill_pids(_pids_mentioning(str(self.base)))
        _unmount_under(self.base)
        self.proc = None

    def diagnose(self, mark: int) -> str:
        calls = "\n".join(self.session.calls_since(mark))
        tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        return f"runtime calls:\n{calls}\ndockerd log tail:\n{tail}"


@pytest.fixture(scope="session")
def docker(engines_session: Session, image_files: tuple[Path, Path]) -> Iterator[Docker]:
    require("dockerd")
    plugins_dir = Path("/run/docker")  # dockerd hard-codes /run/docker/plugins
    plugins_existed = plugins_dir.exists()
    with shim_socket_dir_cleanup():
        daemon = Docker(engines_session, engines_session.base / "docker")
        try:
            daemon.start()
            proc = daemon.docker("import", str(image_files[1]), "contain-busybox:latest",
                                 timeout=180)
            assert proc.returncode == 0, proc.stderr
            yield daemon
        finally:
            daemon.stop()
            if not plugins_existed:
                shutil.rmtree(plugins_dir, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def argv_of(call: str) -> list[str]:
    """Split a logged call back into words (paths here never contain spaces)."""
    return call.split()


def subcommand(call: str) -> str:
    """The runtime subcommand of a logged call: the first word that is not a global flag
    or its value."""
    words = argv_of(call)[1:]
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--") and "=" not in w and w in ("--root", "--log", "--log-format",
                                                           "--criu", "--rootless"):
            i += 2
            continue
        if w.startswith("-"):
            i += 1
            continue
        return w
    return ""


__all__ = ["IMAGE_NAME", "Containerd", "Docker", "Podman", "Session", "argv_of",
           "containerd_config", "require", "run", "run_in_pty", "subcommand", "unique"]
