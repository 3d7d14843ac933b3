"""What every benchmark shares: statistics, progress, bundles, runtimes and cleanup.

The machine is a noisy shared 2-core box, so every benchmark interleaves the runtimes
within each round (A B C A B C ...; the order rotates from round to round) and reports
medians with their spread and the ratio to runc measured in the same run.

A ``Session`` owns one temporary directory; every container id it makes starts with the
session's tag, and every bundle, state root and scratch file lives under the directory.
``Session.close()`` (also on an exception, Ctrl-C or SIGTERM) deletes the containers it
knows about, kills any process still naming its directory, unmounts what is mounted below
it, removes cgroups named with its tag and then the directory itself.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: the directory holding the measured ``contain`` package: the checkout's src/, or, when
#: these modules run installed as ``contain.bench``, the site-packages above it
SRC = REPO / "src" if (REPO / "src" / "contain").is_dir() else REPO.parent
#: True when running as the installed ``contain.bench`` (no checkout around)
INSTALLED = REPO.parent == SRC
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
CGROUP_BASE = Path("/sys/fs/cgroup")

#: every runtime the driver knows, in report order (runc first: ratios are to runc)
KNOWN_RUNTIMES = ("contain", "runc", "crun", "runsc", "bwrap", "unshare")
ALIASES = {"bubblewrap": "bwrap", "gvisor": "runsc", "floor": "unshare"}
DESCRIPTIONS = {
    "contain": "contain (this project)",
    "runc": "runc (reference, Go)",
    "crun": "crun (C)",
    "runsc": "runsc (gVisor, --network=none)",
    "bwrap": "bubblewrap (no OCI lifecycle: run only)",
    "unshare": "floor: bare `unshare` of the same namespaces + chroot",
}


class BenchError(Exception):
    """A runtime or a benchmark step failed; the message is fit for the report."""


# -- statistics -------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        return math.nan
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, median, mean, p10, p90, q1, q3, iqr, min, max of *values*."""
    n = len(values)
    if n == 0:
        return {"n": 0}
    q1, q3 = percentile(values, 25), percentile(values, 75)
    return {
        "n": n,
        "median": percentile(values, 50),
        "mean": sum(values) / n,
        "p10": percentile(values, 10),
        "p90": percentile(values, 90),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": float(min(values)),
        "max": float(max(values)),
    }


def rotate(items: Sequence[Any], round_no: int) -> list[Any]:
    """*items* starting at position ``round_no % len`` (interleaving without position bias)."""
    if not items:
        return []
    k = round_no % len(items)
    return [*items[k:], *items[:k]]


def fmt_ms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


# -- progress -----------------------------------------------------------------------------

class Progress:
    """A progress bar on stderr (a redrawn line on a terminal, a line per 10% elsewhere).

    No dependency: tqdm is not needed for one line of text."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = 1
        self.done = 0
        self.label = ""
        self.started = time.monotonic()
        self._last_decile = -1

    def start(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(1, total)
        self.done = 0
        self.started = time.monotonic()
        self._last_decile = -1
        self._draw("")

    def step(self, detail: str = "", n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw(detail)

    def finish(self, note: str = "") -> None:
        self.done = self.total
        self._draw(note)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text.rstrip() + "\n")
        self.stream.flush()

    def _draw(self, detail: str) -> None:
        if not self.enabled:
            return
        frac = self.done / self.total
        elapsed = time.monotonic() - self.started
        if self.tty:
            width = 28
            bar = "#" * int(frac * width) + "." * (width - int(frac * width))
            line = (f"\r\x1b[K{self.label:<12} [{bar}] {self.done}/{self.total} "
                    f"{elapsed:5.1f}s {detail}")
            self.stream.write(line[:160])
            self.stream.flush()
            return
        decile = int(frac * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({elapsed:.1f}s) "
                              f"{detail}\n")
            self.stream.flush()


# -- bundles ------------------------------------------------------------------------------

def build_busybox_rootfs(dest: Path) -> Path:
    """A minimal rootfs: busybox-static, its applet links, /etc/passwd and /etc/group
    (the same tree as the test suite's fixture)."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root",
              "var", "run", "home"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    if not Path(BUSYBOX).exists():
        raise BenchError("busybox-static is not installed (apt-get install busybox-static)")
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = dest / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                          "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


def build_hostusr_rootfs(dest: Path) -> Path:
    """A rootfs for host tools (sysbench, stress-ng): /usr is bind-mounted read-only
    from the host by the config; /bin, /sbin, /lib, /lib64 are links into it."""
    for d in ("usr", "dev", "proc", "sys", "tmp", "etc", "root", "scratch", "run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        if (Path("/usr") / name).exists():
            (dest / name).symlink_to(f"usr/{name}")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    return dest


_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def oci_config(args: Sequence[str], *, hostname: str = "bench", cwd: str = "/",
               readonly: bool = True, binds: Sequence[tuple[str, str, bool]] = (),
               env: Sequence[str] = ()) -> dict[str, Any]:
    """A config.json of the shape ``runc spec`` writes (no terminal), running *args*.

    *binds* are (host source, destination, read-only) bind mounts added at the end."""
    from contain.spec.defaults import default_mounts  # runc spec's mounts, the same list

    mounts = default_mounts()
    for src, dst, ro in binds:
        mounts.append({"destination": dst, "type": "bind", "source": src,
                       "options": ["rbind", "nosuid", "nodev", *(["ro"] if ro else [])]})
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm", *env],
            "cwd": cwd,
            "capabilities": {k: list(_CAPS) for k in
                             ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": readonly},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


@dataclass
class Bundle:
    path: Path
    config: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def args(self) -> list[str]:
        return list(self.config["process"]["args"])

    def binds(self) -> list[tuple[str, str, bool]]:
        out = []
        for m in self.config.get("mounts", []):
            if m.get("type") == "bind":
                out.append((m["source"], m["destination"], "ro" in m.get("options", [])))
        return out


# -- running commands ---------------------------------------------------------------------

@dataclass
class Call:
    argv: list[str]
    elapsed: float
    rc: int
    out: str
    err: str

    def check(self) -> Call:
        if self.rc != 0:
            raise BenchError(self.describe())
        return self

    def describe(self) -> str:
        text = (self.err.strip() or self.out.strip()).splitlines()
        tail = " / ".join(line.strip() for line in text[-3:]) or "no output"
        verb = next((a for a in self.argv[1:] if a in VERBS), "")
        return f"{Path(self.argv[0]).name} {verb}: exit {self.rc}: {tail[:400]}".replace("  ", " ")


VERBS = {"run", "create", "start", "delete", "kill", "state", "pause", "resume", "exec"}


def timed(argv: Sequence[str], *, timeout: float = 120, scratch: Path | None = None,
          env: dict[str, str] | None = None, cwd: str | None = None) -> Call:
    """Run *argv* with stdin from /dev/null and stdout/stderr to files; time the wall clock
    from spawn to exit. Files rather than pipes: a detached container inherits them and a
    pipe would keep us waiting for its end of file."""
    # stdin: an empty file of our own, not /dev/null: `runsc run` fchowns its stdio to
    # the sandbox's user (nobody), which turned the host's /dev/null into nobody's
    with tempfile.TemporaryFile(dir=scratch) as out, tempfile.TemporaryFile(dir=scratch) as err, \
            tempfile.TemporaryFile(dir=scratch) as empty:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=empty, stdout=out, stderr=err,
                                env=env, cwd=cwd)
        # the exit is seen through a pidfd at once: Popen.wait(timeout=) polls with
        # doubling sleeps (0.5, 1, 2, 4, 8 ... ms), which rounded every figure up to the
        # next sum of them (a 8.1 ms command read as 15.5 ms)
        try:
            pidfd = os.pidfd_open(proc.pid)
            try:
                exited, _, _ = select.select([pidfd], [], [], timeout)
            finally:
                os.close(pidfd)
            elapsed = time.perf_counter() - t0
            if not exited:
                proc.kill()
                proc.wait()
                return Call(list(argv), elapsed, -9, "", f"timed out after {timeout:.0f}s")
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        return Call(list(argv), elapsed, rc, out.read().decode(errors="replace"),
                    err.read().decode(errors="replace"))


# -- runtimes -------------------------------------------------------------------------------

class Runtime:
    """One way of running a bundle. ``lifecycle`` runtimes also create/start/delete;
    ``pausable`` ones pause and resume."""

    name = ""
    lifecycle = False
    pausable = False

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name
        self.root = session.tmp / "state" / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.version = ""

    def describe(self) -> str:
        return DESCRIPTIONS.get(self.name, self.name)

    def run(self, cid: str, bundle: Bundle, timeout: float = 120) -> Call:
        """Run *bundle* in the foreground. A run killed by SIGKILL from outside (on this
        shared machine other test suites' leak checkers kill processes in foreign
        namespaces) is retried up to twice and counted in ``session.killed``."""
        for attempt in range(3):
            c = self._run(cid, bundle, timeout)
            if c.rc not in (137, -9) or attempt == 2:
                return c
            self.session.killed[self.name] = self.session.killed.get(self.name, 0) + 1
            self._after_kill(cid)
        return c

    def _run(self, cid: str, bundle: Bundle, timeout: float) -> Call:
        raise NotImplementedError

    def _after_kill(self, cid: str) -> None:
        pass

    def start_detached(self, cid: str, bundle: Bundle) -> int:
        """Start *bundle* running in the background; return the host pid of its workload."""
        raise NotImplementedError

    def stop_detached(self, cid: str) -> None:
        raise NotImplementedError

    # lifecycle; only for lifecycle runtimes
    def create(self, cid: str, bundle: Bundle, pid_file: Path | None = None) -> Call:
        raise BenchError(f"{self.name} has no create/start/delete lifecycle")

    def start(self, cid: str) -> Call:
        raise BenchError(f"{self.name} has no create/start/delete lifecycle")

    def delete(self, cid: str, force: bool = False) -> Call:
        raise BenchError(f"{self.name} has no create/start/delete lifecycle")

    def pause(self, cid: str) -> Call:
        raise BenchError(f"{self.name} cannot pause")

    def resume(self, cid: str) -> Call:
        raise BenchError(f"{self.name} cannot resume")


class OciRuntime(Runtime):
    """A runc-compatible command line: contain, runc, crun, runsc."""

    lifecycle = True
    pausable = True

    def __init__(self, session: Session, name: str, argv: Sequence[str],
                 global_flags: Sequence[str] = ()) -> None:
        super().__init__(session, name)
        self.argv = list(argv)
        self.global_flags = list(global_flags)
        self.detached: dict[str, int] = {}

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, "--root", str(self.root), *self.global_flags, *args]

    def call(self, *args: str, timeout: float = 120) -> Call:
        return timed(self.cmd(*args), timeout=timeout, scratch=self.session.scratch)

    def _run(self, cid: str, bundle: Bundle, timeout: float) -> Call:
        self.session.track(self, cid)
        c = self.call("run", "--bundle", str(bundle.path), cid, timeout=timeout)
        if c.rc == 0:
            self.session.untrack(self, cid)
        return c

    def _after_kill(self, cid: str) -> None:
        self.delete(cid, force=True)

    def create(self, cid: str, bundle: Bundle, pid_file: Path | None = None) -> Call:
        self.session.track(self, cid)
        extra = ["--pid-file", str(pid_file)] if pid_file else []
        return self.call("create", "--bundle", str(bundle.path), *extra, cid)

    def start(self, cid: str) -> Call:
        return self.call("start", cid)

    def delete(self, cid: str, force: bool = False) -> Call:
        c = self.call("delete", *(["--force"] if force else []), cid)
        if c.rc == 0:
            self.session.untrack(self, cid)
        return c

    def kill(self, cid: str, sig: str = "KILL") -> Call:
        return self.call("kill", cid, sig)

    def pause(self, cid: str) -> Call:
        return self.call("pause", cid)

    def resume(self, cid: str) -> Call:
        return self.call("resume", cid)

    def state(self, cid: str) -> dict[str, Any]:
        c = self.call("state", cid).check()
        return dict(json.loads(c.out))

    def start_detached(self, cid: str, bundle: Bundle) -> int:
        pid_file = self.session.scratch / f"{cid}.pid"
        self.session.track(self, cid)
        self.call("run", "--detach", "--pid-file", str(pid_file), "--bundle", str(bundle.path),
                  cid).check()
        pid = int(pid_file.read_text().strip())
        self.detached[cid] = pid
        return pid

    def stop_detached(self, cid: str) -> None:
        self.detached.pop(cid, None)
        self.delete(cid, force=True).check()

    def wait_stopped(self, pid: int, timeout: float = 30) -> None:
        """Wait until *pid* has exited (gone or a zombie): /bin/true after ``start``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.0005)
        raise BenchError(f"{self.name}: container process {pid} still running after {timeout}s")


class BwrapRuntime(Runtime):
    """bubblewrap: the bundle's rootfs bound at /, new pid/net/ipc/uts/mount namespaces."""

    def __init__(self, session: Session) -> None:
        super().__init__(session, "bwrap")
        self.bg: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, bundle: Bundle) -> list[str]:
        cfg = bundle.config
        ro = cfg.get("root", {}).get("readonly", False)
        argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--ro-bind" if ro else "--bind", str(bundle.rootfs), "/",
                "--proc", "/proc", "--dev", "/dev", "--hostname", cfg.get("hostname", "bench"),
                "--die-with-parent"]
        for src, dst, bro in bundle.binds():
            argv += ["--ro-bind" if bro else "--bind", src, dst]
        argv += ["--chdir", cfg["process"].get("cwd", "/"), "--", *bundle.args]
        return argv

    def _run(self, cid: str, bundle: Bundle, timeout: float) -> Call:
        return timed(self.argv(bundle), timeout=timeout, scratch=self.session.scratch)

    def start_detached(self, cid: str, bundle: Bundle) -> int:
        proc = self.session.spawn(self.argv(bundle))
        self.bg[cid] = proc
        return proc.pid

    def stop_detached(self, cid: str) -> None:
        proc = self.bg.pop(cid)
        proc.kill()
        proc.wait()


class UnshareRuntime(Runtime):
    """The floor: util-linux ``unshare`` of the config's namespaces and a chroot, nothing
    else (no mounts, no cgroup, no capabilities dropped)."""

    FLAGS = {"pid": "--pid", "network": "--net", "ipc": "--ipc", "uts": "--uts",
             "mount": "--mount", "cgroup": "--cgroup", "user": "--user", "time": "--time"}

    def __init__(self, session: Session) -> None:
        super().__init__(session, "unshare")
        self.bg: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, bundle: Bundle) -> list[str]:
        flags = [self.FLAGS[ns["type"]] for ns in bundle.config["linux"]["namespaces"]
                 if ns["type"] in self.FLAGS]
        return ["unshare", *flags, "--fork", "--kill-child", f"--root={bundle.rootfs}",
                *bundle.args]

    def _run(self, cid: str, bundle: Bundle, timeout: float) -> Call:
        if bundle.binds():
            raise BenchError("the unshare floor has no mounts: native is the floor here")
        return timed(self.argv(bundle), timeout=timeout, scratch=self.session.scratch)

    def start_detached(self, cid: str, bundle: Bundle) -> int:
        proc = self.session.spawn(self.argv(bundle))
        self.bg[cid] = proc
        return proc.pid

    def stop_detached(self, cid: str) -> None:
        proc = self.bg.pop(cid)
        proc.kill()
        proc.wait()


def contain_argv() -> list[str]:
    """How to run contain: $CONTAIN_BIN, the fast launcher in .venv, the installed
    ``contain`` command that runs us, or ``python -m contain``."""
    env = os.environ.get("CONTAIN_BIN")
    if env:
        return env.split()
    launcher = REPO / ".venv" / "bin" / "contain"
    if not INSTALLED and launcher.exists():
        return [str(launcher)]
    command = os.path.abspath(sys.argv[0])
    if INSTALLED and os.path.basename(command) == "contain" and os.access(command, os.X_OK):
        return [command]
    # what scripts/make-launcher writes, inline: isolated mode, no site, our src first
    return [sys.executable, "-I", "-S", "-c",
            f"import sys; sys.path.insert(0, {str(SRC)!r}); "
            "from contain.cli.main import run; run()"]


def runtime_version(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    return (proc.stdout.strip().splitlines() or ["?"])[0]


def make_runtime(session: Session, name: str) -> Runtime:
    """The runtime called *name*, or BenchError saying why it cannot be used here."""
    name = ALIASES.get(name, name)
    if name == "contain":
        argv = contain_argv()
        if not Path(argv[0]).exists() and not shutil.which(argv[0]):
            raise BenchError(f"{argv[0]} not found")
        rt: Runtime = OciRuntime(session, "contain", argv)
        rt.version = runtime_version(argv)
        return rt
    if name in ("runc", "crun", "runsc"):
        path = shutil.which(name)
        if not path:
            raise BenchError(f"{name} is not installed (apt-get install {name})")
        flags = ["--network=none"] if name == "runsc" else []
        rt = OciRuntime(session, name, [path], flags)
        rt.version = runtime_version([path])
        return rt
    if name == "bwrap":
        if not shutil.which("bwrap"):
            raise BenchError("bubblewrap is not installed (apt-get install bubblewrap)")
        rt = BwrapRuntime(session)
        rt.version = runtime_version(["bwrap"])
        return rt
    if name == "unshare":
        if not shutil.which("unshare"):
            raise BenchError("unshare (util-linux) is not installed")
        rt = UnshareRuntime(session)
        rt.version = runtime_version(["unshare"])
        return rt
    raise BenchError(f"unknown runtime {name!r} (known: {', '.join(KNOWN_RUNTIMES)})")


# -- processes ------------------------------------------------------------------------------

def process_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(pid)
    return kids


def descendants(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    """*pid* and every process below it."""
    kids = kids if kids is not None else children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size of *pid* in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def meminfo_used_kib() -> int:
    """Host memory in use: MemTotal - MemAvailable, KiB."""
    vals = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            vals[key] = int(rest.split()[0])
    return vals["MemTotal"] - vals["MemAvailable"]


# -- the session ---------------------------------------------------------------------------

@dataclass
class Session:
    """One benchmark run: options, the temp directory, everything to clean up."""

    quick: bool = False
    out: Path = Path("bench-out")
    progress: Progress = field(default_factory=Progress)
    rounds: int | None = None
    plot: bool = True
    density_n: int | None = None
    tag: str = field(default_factory=lambda: "cb" + uuid.uuid4().hex[:6])
    tmp: Path = field(init=False)
    runtimes: list[Runtime] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    _tracked: dict[tuple[str, str], Runtime] = field(default_factory=dict)
    _spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _bundles: dict[str, Bundle] = field(default_factory=dict)
    _counter: int = 0
    _old_handlers: dict[int, Any] = field(default_factory=dict)
    _closed: bool = False
    cleanup_problems: list[str] = field(default_factory=list)
    #: runs retried after an outside SIGKILL, per runtime
    killed: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"contain-bench-{self.tag}-", dir="/tmp"))
        self.scratch = self.tmp / "scratch"
        self.scratch.mkdir()

    # context management and signals
    def __enter__(self) -> Session:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._old_handlers[sig] = signal.signal(sig, _raise_interrupt)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        # a second Ctrl-C while cleaning up must not leave half the mess behind
        old_int = None
        with contextlib.suppress(ValueError):
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.close()
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)

    # ids and bundles
    def new_id(self, runtime: str, what: str) -> str:
        self._counter += 1
        return f"{self.tag}-{runtime}-{what}-{self._counter}"

    def busybox_base(self) -> Path:
        base = self.tmp / "rootfs-busybox"
        if not base.exists():
            build_busybox_rootfs(base)
        return base

    def hostusr_base(self) -> Path:
        base = self.tmp / "rootfs-hostusr"
        if not base.exists():
            build_hostusr_rootfs(base)
        return base

    def bundle(self, runtime: str, name: str, config: dict[str, Any],
               base: str = "busybox") -> Bundle:
        """A bundle for *runtime* (each runtime gets its own copy: hard links of the base)."""
        key = f"{runtime}/{name}"
        if key in self._bundles:
            return self._bundles[key]
        path = self.tmp / "bundles" / runtime / name
        path.mkdir(parents=True)
        src = self.busybox_base() if base == "busybox" else self.hostusr_base()
        shutil.copytree(src, path / "rootfs", symlinks=True, copy_function=os.link)
        cfg = copy.deepcopy(config)
        (path / "config.json").write_text(json.dumps(cfg, indent=1))
        b = Bundle(path, cfg)
        self._bundles[key] = b
        return b

    # bookkeeping for cleanup
    def track(self, rt: Runtime, cid: str) -> None:
        self._tracked[(rt.name, cid)] = rt

    def untrack(self, rt: Runtime, cid: str) -> None:
        self._tracked.pop((rt.name, cid), None)

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        # not /dev/null: runsc fchowns its stdio to the sandbox's user (see timed)
        with tempfile.TemporaryFile(dir=self.scratch) as sink:
            proc = subprocess.Popen(list(argv), stdin=sink, stdout=sink, stderr=sink)
        self._spawned.append(proc)
        return proc

    def each_round(self, default: int, quick: int) -> int:
        if self.rounds:
            return self.rounds
        return quick if self.quick else default

    # cleanup
    def close(self) -> list[str]:
        """Remove everything this session made; return what could not be removed."""
        if self._closed:
            return self.cleanup_problems
        self._closed = True
        problems: list[str] = self.cleanup_problems
        for (_, cid), rt in list(self._tracked.items()):
            with contextlib.suppress(Exception):
                c = rt.delete(cid, force=True)
                if c.rc != 0 and "not exist" not in c.err and rt.name not in self.failed:
                    problems.append(f"{rt.name} delete {cid}: {c.describe()}")
        for proc in self._spawned:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        self._kill_strays()
        self._umount_all(problems)
        self._remove_cgroups(problems)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.tmp.exists():
            problems.append(f"could not remove {self.tmp}")
        for p in problems:
            self.progress.message(f"cleanup: {p}")
        return problems

    def _kill_strays(self) -> None:
        """Kill processes whose command line names our directory or tag (runsc's sandbox
        and gofer, a leftover bwrap or unshare) and container processes in our cgroups."""
        me = os.getpid()
        marker = str(self.tmp)
        for cg in self._our_cgroups():  # a frozen task cannot die: thaw first
            state = cg / "freezer.state"
            if state.exists():
                with contextlib.suppress(OSError):
                    state.write_text("THAWED")
        victims = [pid for pid in all_pids()
                   if pid != me and (marker in cmdline(pid))]
        victims += self._cgroup_pids()
        for pid in set(victims):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(process_alive(p) for p in victims):
            time.sleep(0.05)

    def _our_cgroups(self) -> list[Path]:
        found: list[Path] = []
        if not CGROUP_BASE.is_dir():
            return found
        for ctrl in CGROUP_BASE.iterdir():
            if not ctrl.is_dir():
                continue
            for dirpath, dirnames, _ in os.walk(ctrl):
                depth = Path(dirpath).relative_to(ctrl).parts
                if len(depth) > 3:
                    dirnames[:] = []
                    continue
                for d in dirnames:
                    if d.startswith(self.tag):
                        found.append(Path(dirpath) / d)
        return found

    def _cgroup_pids(self) -> list[int]:
        pids: list[int] = []
        for cg in self._our_cgroups():
            for dirpath, _, files in os.walk(cg):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError, ValueError):
                        pids += [int(x) for x in
                                 Path(dirpath, "cgroup.procs").read_text().split()]
        return pids

    def _remove_cgroups(self, problems: list[str]) -> None:
        for cg in self._our_cgroups():
            for dirpath, _, _ in sorted(os.walk(cg), key=lambda w: -len(w[0])):
                for _ in range(50):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)
                else:
                    problems.append(f"could not remove cgroup {dirpath}")

    def _umount_all(self, problems: list[str]) -> None:
        marker = str(self.tmp)
        for _ in range(3):
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
            ours = sorted((p for p in points if p.startswith(marker)), key=len, reverse=True)
            if not ours:
                return
            for p in ours:
                subprocess.run(["umount", "-l", p], capture_output=True)
        problems.append(f"mounts left below {marker}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- results ----------------------------------------------------------------------------------

@dataclass
class Result:
    """What a benchmark hands the driver: its tables, every sample and its plots."""

    name: str
    title: str
    markdown: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "data": self.data, "errors": self.errors,
                "plots": self.plots, "notes": self.notes, "seconds": self.seconds}


def runtimes_with(session: Session, pred: Callable[[Runtime], bool]) -> list[Runtime]:
    return [rt for rt in session.runtimes if pred(rt)]


def guard(result: Result, rt: Runtime, what: str, fn: Callable[[], Any]) -> Any:
    """Call *fn*; on BenchError record the error for *rt* in *result* and return None."""
    try:
        return fn()
    except BenchError as exc:
        result.errors.setdefault(rt.name, f"{what}: {exc}")
        return None


@contextlib.contextmanager
def stopwatch(result: Result) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        result.seconds = time.monotonic() - t0


class Failures:
    """A failure budget per runtime (or runtime/step): on this noisy shared machine one
    failed run must not exclude a runtime, but a runtime that keeps failing is given up
    after *limit* failures. The last error and the count go into ``result.errors``."""

    def __init__(self, result: Result, limit: int = 3) -> None:
        self.result = result
        self.limit = limit
        self.counts: dict[str, int] = {}

    def record(self, key: str, error: object) -> None:
        n = self.counts[key] = self.counts.get(key, 0) + 1
        state = "given up" if n >= self.limit else "went on"
        self.result.errors[key] = f"{error} ({n} failure(s), {state})"

    def given_up(self, key: str) -> bool:
        return self.counts.get(key, 0) >= self.limit
