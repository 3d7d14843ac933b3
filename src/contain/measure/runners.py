"""Run the probe workload under each isolation technology and measure it.

For every technology the same workload runs: ``/bin/sh -c PROBE TOKEN``, which prints
the probe's facts and then blocks reading stdin. While it blocks, the host finds the
workload's process (by TOKEN, its ``$0``; or, when the technology hides it from the
host as gVisor does, the process the runtime reports) and inspects it from /proc;
then stdin is closed and the workload exits. Each technology runs with its own
defaults: ``runc spec``'s config for the OCI runtimes, an ordinary invocation for the
others (given in the row's comment).
"""

from __future__ import annotations

import os
import shutil
import time

from contain.inspect import probe as probe_mod

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from typing import Any

    from contain.measure.interference import Limits


class Work:
    """A scratch directory with a busybox rootfs, bundles and runtime roots."""

    def __init__(self, base: str | None = None) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="contain-classify-", dir=base or "/run")
        self._rootfs: str | None = None
        self.cleanups: list[Callable[[], None]] = []
        # where the instances' cgroups go (interference runs them inside a cgroup that
        # stands for a small machine)
        self.cgroup_parent = "/contain-classify"

    def rootfs(self) -> str:
        if self._rootfs is None:
            self._rootfs = build_rootfs(os.path.join(self.dir, "rootfs"))
        return self._rootfs

    def bundle(self, name: str, argv: list[str], config: dict[str, Any] | None = None,
               oci_version: str | None = None) -> str:
        """An OCI bundle whose rootfs is a bind of the shared busybox tree."""
        from contain.jsonio import dumps

        path = os.path.join(self.dir, "bundles", name)
        os.makedirs(path)
        cfg = config if config is not None else default_config()
        cfg = _deep_copy(cfg)
        cfg["process"]["args"] = argv
        cfg["process"]["terminal"] = False
        cfg["root"]["path"] = self.rootfs()
        cfg.setdefault("linux", {})["cgroupsPath"] = f"{self.cgroup_parent}/{name}"
        if oci_version:
            cfg["ociVersion"] = oci_version
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write(dumps(cfg, indent=2))
        return path

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:  # cleanup is best effort, one failure must not stop the rest
                pass
        remove_cgroup("/contain-classify")
        shutil.rmtree(self.dir, ignore_errors=True)


def _deep_copy(obj: Any) -> Any:
    from contain.jsonio import dumps, loads

    return loads(dumps(obj))


def default_config() -> dict[str, Any]:
    """`runc spec`'s config (the spec's defaults), as every OCI runtime here gets it."""
    from contain.spec.defaults import default_spec

    cfg = default_spec()
    cfg["process"]["terminal"] = False
    return cfg


def build_rootfs(dest: str) -> str:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise RuntimeError("busybox is not installed (needed for the image-based runs)")
    import subprocess

    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root",
              "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(dest, applet)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return dest


def remove_cgroup(rel: str) -> None:
    """rmdir *rel* (and what is below it, deepest first) in every hierarchy."""
    base = "/sys/fs/cgroup"
    try:
        hierarchies = os.listdir(base)
    except OSError:
        return
    for h in hierarchies:
        top = os.path.join(base, h, rel.lstrip("/"))
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


# -- technologies -----------------------------------------------------------------------

class Tech:
    """One isolation technology (or one mode of one)."""

    key = ""
    label = ""
    binary = ""
    comment = ""
    timeout = 60.0

    def path(self) -> str | None:
        return shutil.which(self.binary)

    def missing(self) -> str | None:
        return None if self.path() else f"{self.binary} not installed"

    def version(self) -> str:
        import subprocess

        try:
            out = subprocess.run([self.path() or self.binary, "--version"], capture_output=True,
                                 text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return "?"
        for word in out.split():
            if word[:1].isdigit():
                return word.rstrip(",")
        return out.strip().splitlines()[0] if out.strip() else "?"

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        raise NotImplementedError

    def cleanup(self, work: Work, name: str) -> None:
        """Remove what a run named *name* may have left (after it exited or was killed)."""

    def host_pids(self, work: Work, name: str) -> list[int]:
        """Where the workload lives on the host when TOKEN does not find it."""
        return []

    def with_limits(self, limits: Limits) -> Tech:
        """This technology with *limits* on its workload: by its own means where it has
        them (OCI resources, flags), else inside a cgroup the measurer makes."""
        return CgroupWrapped(self, limits)


class CgroupWrapped(Tech):
    """A technology without limits of its own (bubblewrap), started inside a cgroup
    made here with the limits (a shell joins it, then execs the technology)."""

    def __init__(self, inner: Tech, limits: Limits) -> None:
        self.inner = inner
        self.limits = limits
        self.key, self.label, self.binary = inner.key, inner.label, inner.binary
        self.comment = f"{inner.comment}, in a cgroup made by the measurer"
        self.timeout = inner.timeout
        self.managers: dict[str, Any] = {}

    def path(self) -> str | None:
        return self.inner.path()

    def missing(self) -> str | None:
        return self.inner.missing()

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        from contain.cgroups import new_manager
        from contain.spec.config import Resources

        mgr = new_manager(f"{work.cgroup_parent}/{name}", name)
        mgr.create()
        self.managers[name] = mgr
        mgr.set(Resources.decode(self.limits.resources(), "$.linux.resources"))
        procs = [os.path.join(p, "cgroup.procs") for p in mgr.paths().values()]
        join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; '\
               'exec "$@"'
        return ["/bin/sh", "-c", join, "sh", *procs, "--",
                *self.inner.command(work, name, argv)]

    def cleanup(self, work: Work, name: str) -> None:
        self.inner.cleanup(work, name)
        mgr = self.managers.pop(name, None)
        if mgr is not None:
            try:
                mgr.kill_all(9)
            except Exception:  # best effort: the cgroup may be gone already
                pass
            for _ in range(50):
                try:
                    mgr.destroy()
                    break
                except Exception:  # busy while the killed tasks exit
                    time.sleep(0.02)


class OCIRuntime(Tech):
    """runc, crun, and the like: ``X --root R run --bundle B ID``."""

    oci_version: str | None = None
    extra: tuple[str, ...] = ()

    def __init__(self, binary: str, label: str | None = None, comment: str = "",
                 extra: tuple[str, ...] = (), key: str | None = None,
                 oci_version: str | None = None, config: dict[str, Any] | None = None
                 ) -> None:
        self.binary = binary
        self.label = label or binary
        self.key = key or binary
        self.extra = extra
        self.oci_version = oci_version
        self.config = config  # None: the spec's defaults (`runc spec`)
        self.comment = comment or "OCI bundle with `runc spec`'s default config"

    def root(self, work: Work) -> str:
        return os.path.join(work.dir, f"state-{self.key}")

    def with_limits(self, limits: Limits) -> Tech:
        import copy

        limited = copy.copy(self)
        cfg = _deep_copy(self.config if self.config is not None else default_config())
        cfg.setdefault("linux", {})["resources"] = {
            **(cfg["linux"].get("resources") or {}), **limits.resources()}
        limited.config = cfg
        return limited

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        bundle = work.bundle(name, argv, self.config, oci_version=self.oci_version)
        return [self.path() or self.binary, "--root", self.root(work), *self.extra, "run",
                "--bundle", bundle, name]

    def cleanup(self, work: Work, name: str) -> None:
        import subprocess

        subprocess.run([self.path() or self.binary, "--root", self.root(work), *self.extra,
                        "delete", "--force", name], capture_output=True, timeout=30)
        remove_cgroup(f"{work.cgroup_parent}/{name}")

    def host_pids(self, work: Work, name: str) -> list[int]:
        import subprocess

        from contain.jsonio import loads

        proc = subprocess.run([self.path() or self.binary, "--root", self.root(work),
                               *self.extra, "state", name], capture_output=True, text=True,
                              timeout=20)
        try:
            pid = int(loads(proc.stdout).get("pid") or 0)
        except (ValueError, AttributeError):
            return []
        return [pid] if pid > 0 else []


class Runsc(OCIRuntime):
    def __init__(self, platform: str) -> None:
        super().__init__("runsc", label=f"runsc ({platform})", key=f"runsc-{platform}",
                         comment=f"gVisor, platform {platform}, --network=none, "
                                 "`runc spec` config",
                         extra=("--network=none", f"--platform={platform}"))
        self.platform = platform
        self.timeout = 30.0 if platform == "kvm" else 60.0

    def version(self) -> str:
        v = super().version()
        return v


class ContainRun(OCIRuntime):
    def __init__(self) -> None:
        super().__init__("contain", label="contain run", key="contain-run",
                         comment="OCI bundle with `contain spec`'s default config")

    def path(self) -> str | None:
        return contain_launcher()

    def version(self) -> str:
        from contain.meta import VERSION

        return VERSION


class ContainSandbox(Tech):
    key = "contain-sandbox"
    label = "contain sandbox"
    binary = "contain"
    comment = "`contain sandbox -- CMD`: host root read-only, no image"

    def __init__(self, flags: tuple[str, ...] = (), key: str | None = None,
                 label: str | None = None) -> None:
        self.flags = flags
        if key:
            self.key = key
        if label:
            self.label = label
        if flags:
            self.comment = f"`contain sandbox {' '.join(flags)} -- CMD`"

    def path(self) -> str | None:
        return contain_launcher()

    def version(self) -> str:
        from contain.meta import VERSION

        return VERSION

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        return [self.path() or "contain", "sandbox", *self.flags, "--", *argv]

    def with_limits(self, limits: Limits) -> Tech:
        flags = list(self.flags)
        if limits.memory is not None:
            flags += ["--memory", str(limits.memory)]
        if limits.cpus is not None:
            flags += ["--cpus", str(limits.cpus)]
        if limits.pids is not None:
            flags += ["--pids", str(limits.pids)]
        limited = ContainSandbox(tuple(flags), key=self.key, label=self.label)
        limited.comment = self.comment
        return limited


class Bwrap(Tech):
    key = "bwrap"
    label = "bubblewrap"
    binary = "bwrap"
    comment = "bwrap --unshare-all over the busybox rootfs, /proc, /dev, /tmp"

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        return [self.path() or "bwrap", "--unshare-all", "--die-with-parent",
                "--ro-bind", work.rootfs(), "/", "--proc", "/proc", "--dev", "/dev",
                "--tmpfs", "/tmp", "--", *argv]


class Podman(Tech):
    key = "podman"
    label = "podman"
    binary = "podman"
    comment = "podman run --rootfs (private storage, runtime runc, --network none)"

    def _base(self, work: Work) -> list[str]:
        d = os.path.join(work.dir, "podman")
        return [self.path() or "podman", "--root", f"{d}/root", "--runroot", f"{d}/run",
                "--runtime", shutil.which("runc") or "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--storage-driver", "vfs"]

    def missing(self) -> str | None:
        if not self.path():
            return "podman not installed"
        if not shutil.which("runc"):
            return "podman needs runc here (crun cannot run on this cgroup layout)"
        return None

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        return [*self._base(work), "run", "--rm", "-i", "--name", name, "--network", "none",
                "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                "--rootfs", work.rootfs(), *argv]

    def cleanup(self, work: Work, name: str) -> None:
        import subprocess

        subprocess.run([*self._base(work), "rm", "--force", name], capture_output=True,
                       timeout=30)

    def with_limits(self, limits: Limits) -> Tech:
        limited = LimitedPodman()
        limited.flags = []
        if limits.memory is not None:
            limited.flags += ["--memory", str(limits.memory), "--memory-swap",
                              str(limits.memory)]
        if limits.cpus is not None:
            limited.flags += ["--cpus", str(limits.cpus)]
        if limits.pids is not None:
            limited.flags += ["--pids-limit", str(limits.pids)]
        return limited


class LimitedPodman(Podman):
    flags: list[str] = []

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        cmd = super().command(work, name, argv)
        at = cmd.index("--rootfs")
        return [*cmd[:at], *self.flags, *cmd[at:]]


class Containerd(Tech):
    key = "containerd"
    label = "containerd"
    binary = "containerd"
    comment = "ctr run --rootfs against the running daemon ($CONTAINERD_ADDRESS)"

    def __init__(self) -> None:
        self.address = os.environ.get("CONTAINERD_ADDRESS") or "/run/containerd/containerd.sock"

    def missing(self) -> str | None:
        if not self.path():
            return "containerd not installed"
        if not shutil.which("ctr"):
            return "ctr not installed"
        if not os.path.exists(self.address):
            return f"installed, but no daemon listening on {self.address}"
        return None

    def command(self, work: Work, name: str, argv: list[str]) -> list[str]:
        return [shutil.which("ctr") or "ctr", "--address", self.address, "run", "--rm",
                "--rootfs", work.rootfs(), name, *argv]

    def cleanup(self, work: Work, name: str) -> None:
        import subprocess

        ctr = shutil.which("ctr") or "ctr"
        subprocess.run([ctr, "--address", self.address, "task", "kill", "-s", "SIGKILL", name],
                       capture_output=True, timeout=30)
        subprocess.run([ctr, "--address", self.address, "container", "rm", name],
                       capture_output=True, timeout=30)


def contain_launcher() -> str | None:
    """The contain command that is running this code: the command line that started us
    (``.venv/bin/contain classify``), the launcher of the checkout or virtualenv this
    package lives in, the one next to the interpreter, else the one on PATH."""
    import sys

    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "contain" and os.access(argv0, os.X_OK):
        return argv0
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../contain
    checkout = os.path.dirname(os.path.dirname(package))  # src/contain -> the checkout
    for cand in (os.path.join(checkout, ".venv", "bin", "contain"),
                 os.path.join(os.path.dirname(sys.executable), "contain")):
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("contain")


# the sandbox class by contain: a supervisor in user space sees (and here logs) the
# workload's getppid/uname calls; everything else is decided in the kernel as before
SUPERVISE_POLICY = '{"default": "allow", "getppid": "log", "uname": "log"}'


def supervised(supervisor: str) -> ContainSandbox:
    return ContainSandbox(("--supervise", SUPERVISE_POLICY, "--supervisor", supervisor),
                          key=f"contain-supervise-{supervisor}",
                          label=f"contain sandbox --supervisor {supervisor}")


def all_techs() -> list[Tech]:
    return [ContainRun(), ContainSandbox(), supervised("notify"), supervised("ptrace"),
            OCIRuntime("runc"), OCIRuntime("crun", oci_version="1.0.2"), Runsc("ptrace"),
            Runsc("kvm"), Bwrap(), Podman(), Containerd()]


def select(names: list[str] | None) -> list[Tech]:
    """Technologies by key; "contain" means both contain modes, "runsc" both platforms."""
    techs = all_techs()
    if not names:
        return techs
    out: list[Tech] = []
    known = {t.key for t in techs}
    for n in names:
        matched = [t for t in techs if t.key == n or t.key.startswith(n + "-")
                   or (n == "bubblewrap" and t.key == "bwrap")]
        if not matched:
            from contain.errors import ContainError

            raise ContainError(f"unknown runtime {n!r}: choose from {', '.join(sorted(known))}")
        out.extend(t for t in matched if t not in out)
    return out


# -- running one technology ---------------------------------------------------------------

def find_by_token(token: str) -> list[int]:
    """Host pids of the workload's shell: argv is /bin/sh -c SCRIPT TOKEN."""
    out = []
    tok = token.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[-1] == b"":
            argv = argv[:-1]
        if len(argv) >= 4 and argv[-1] == tok and argv[1] == b"-c" and \
                os.path.basename(argv[0]) in (b"sh", b"dash", b"bash", b"ash", b"busybox"):
            out.append(int(entry))
    return sorted(out)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while marker not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    return buf


def run_probe(tech: Tech, work: Work, baseline: dict[str, Any] | None = None,
              host_probe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the probe workload under *tech*; return the row's raw measurements:
    {"status", "reason", "probe", "facts", "raw"}."""
    import secrets
    import signal
    import subprocess

    from contain.errors import ContainError
    from contain.inspect import procfs

    name = f"cp-{tech.key}-{secrets.token_hex(4)}"
    token = f"contain-probe-{secrets.token_hex(8)}"
    argv = probe_mod.workload_argv(token, wait=True)
    try:
        cmd = tech.command(work, name, argv)
    except (RuntimeError, OSError, ContainError) as exc:
        return {"status": "failed", "reason": str(exc), "probe": None, "facts": None,
                "raw": ""}
    out: dict[str, Any] = {"status": "failed", "reason": None, "probe": None, "facts": None,
                           "raw": ""}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, cwd=work.dir)
    try:
        raw = _read_until(proc, probe_mod.TRAILER.encode(), tech.timeout)
        out["raw"] = raw.decode("utf-8", "replace")
        if probe_mod.TRAILER.encode() not in raw:
            alive = proc.poll() is None
            err = b""
            if not alive:
                err = proc.stderr.read() if proc.stderr else b""
            msg = err.decode("utf-8", "replace").strip().splitlines()
            out["reason"] = (msg[-1][:300] if msg else
                             (f"timed out after {tech.timeout:.0f}s" if alive else
                              f"exited with status {proc.returncode} before the probe ended"))
            return out
        out["probe"] = probe_mod.parse(out["raw"])
        pids = find_by_token(token)
        how = "the workload's shell, found by its $0"
        if not pids:
            pids = tech.host_pids(work, name)
            how = "the process the runtime reports (the workload is not visible on the host)"
        if pids:
            try:
                facts = procfs.inspect_pid(pids[0], descendants=True, surface=True)
                facts["found_as"] = how
                out["facts"] = facts
            except ContainError as exc:
                out["reason"] = f"inspecting pid {pids[0]}: {exc}"
        else:
            out["reason"] = "the workload's process was not found on the host"
        out["status"] = "measured"
        return out
    finally:
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(timeout=20)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        tech.cleanup(work, name)


def private_stdio() -> Any:
    """An unlinked empty file to give a technology's command as stdio instead of
    /dev/null: runsc changes the owner of its stdio to the sandbox's user, and
    /dev/null is the whole machine's (it went to nobody:nogroup)."""
    import tempfile

    return tempfile.TemporaryFile()


def startup_ms(tech: Tech, work: Work, runs: int = 3) -> float | None:
    """Median wall time of running /bin/true under *tech* (what the benchmarks time)."""
    import subprocess

    times = []
    for i in range(runs):
        name = f"cs-{tech.key}-{i}-{os.getpid()}"
        try:
            cmd = tech.command(work, name, ["/bin/true"])
        except (RuntimeError, OSError):
            return None
        t0 = time.perf_counter()
        try:
            with private_stdio() as stdin:
                rc = subprocess.run(cmd, stdin=stdin, capture_output=True,
                                    timeout=tech.timeout, cwd=work.dir).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        dt = (time.perf_counter() - t0) * 1000
        tech.cleanup(work, name)
        if rc != 0:
            return None
        times.append(dt)
    times.sort()
    return round(times[len(times) // 2], 1)
