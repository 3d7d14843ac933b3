"""Engines end to end: `ctr run --rm` and `podman run --rm` of /bin/true, contain vs runc.

What an engine user waits for: the whole engine round trip (containerd + runc v2 shim, or
podman + conmon) with the runtime's create/start/delete inside it. The runtimes are
interleaved within each round (the order rotates) on one private containerd daemon and one
private Podman store made for the run, so both see the same machine noise; the report gives
medians, quartiles and the contain/runc ratio of the medians.

Run alone:  .venv/bin/python -m benchmarks.engines [--rounds N] [--json FILE]
or through `contain bench --only engines`.

Podman gives the runtime no --root, so each runtime is called through a two-line shell
wrapper that adds a private --root (the same for both runtimes, ~1 ms); containerd's shim
is given the runtime binary and root directly (`--runc-binary`, `--runc-root`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IMAGE = "localhost/contain-busybox:latest"
ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")


def _image_module() -> Any:
    """tests/engines/image.py (the hand-made OCI image), loaded by path."""
    spec = importlib.util.spec_from_file_location("_engines_image",
                                                  REPO / "tests" / "engines" / "image.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rootfs(dest: Path) -> Path:
    from .common import build_busybox_rootfs

    return build_busybox_rootfs(dest)


def _runtimes() -> dict[str, Path]:
    found = {}
    runc = shutil.which("runc")
    if runc:
        found["runc"] = Path(runc)
    contain = REPO / ".venv" / "bin" / "contain"
    if contain.exists():
        found["contain"] = contain
    return found


def _cgroup_mounts() -> list[Path]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
                out.append(Path(fields[4]))
    return out


def _make_cgroup(rel: str) -> None:
    for hier in _cgroup_mounts():
        path = hier
        for part in Path(rel).parts:
            parent, path = path, path / part
            if path.exists():
                continue
            path.mkdir()
            if (hier / "cpuset.cpus").exists():
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((parent / name).read_text())


def _remove_cgroup(rel: str) -> None:
    for hier in _cgroup_mounts():
        top = hier / rel
        if not top.exists():
            continue
        for d in sorted((Path(p) for p, _, _ in os.walk(top)), key=lambda p: len(p.parts),
                        reverse=True):
            for _ in range(30):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


class Engines:
    """A private containerd daemon and Podman store under one temp dir."""

    def __init__(self, runtimes: dict[str, Path]) -> None:
        self.tag = "ceb" + uuid.uuid4().hex[:6]
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.tag}-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.runtimes = runtimes
        self.daemon: subprocess.Popen[bytes] | None = None
        self.sock = self.base / "ctd" / "containerd.sock"
        self.pm = self.base / "podman"
        self.wrappers: dict[str, Path] = {}
        self.created_run_containerd = not Path("/run/containerd").exists()
        self.created_var_lib_containers = not Path("/var/lib/containers").exists()
        self.have_ctr = all(shutil.which(b) for b in ("containerd", "ctr",
                                                      "containerd-shim-runc-v2"))
        self.have_podman = all(shutil.which(b) for b in ("podman", "conmon"))

    # -- setup
    def start(self) -> None:
        _make_cgroup(f"{self.tag}/podman/conmon")
        img = _image_module()
        rootfs = _rootfs(self.base / "rootfs")
        (self.base / "oci.tar").write_bytes(img.oci_archive(rootfs, IMAGE))
        (self.base / "rootfs.tar").write_bytes(img.rootfs_tar(rootfs))
        for name, path in self.runtimes.items():
            root = self.base / "roots" / name
            root.mkdir(parents=True)
            w = self.base / f"{name}-podman"
            w.write_text(f"#!/bin/sh\nexec '{path}' --root '{root}' \"$@\"\n")
            w.chmod(0o755)
            self.wrappers[name] = w
        if self.have_ctr:
            self._start_containerd()
        if self.have_podman:
            self._setup_podman()

    def _start_containerd(self) -> None:
        d = self.base / "ctd"
        (d / "fifo").mkdir(parents=True)
        (d / "config.toml").write_text(
            f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n'
            f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/opt"\n')
        with open(d / "containerd.log", "ab") as log:
            self.daemon = subprocess.Popen(["containerd", "--config", str(d / "config.toml")],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                tail = (d / "containerd.log").read_text()[-800:]
                raise RuntimeError(f"containerd exited: {tail}")
            if self.sock.exists() and self._ctr("version").returncode == 0:
                break
            time.sleep(0.1)
        self._ctr("images", "import", str(self.base / "oci.tar"), check=True)

    def _ctr(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ctr", "--address", str(self.sock), "--namespace", self.tag,
                               *args], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def _setup_podman(self) -> None:
        pm = self.pm
        for d in ("root", "run", "tmp", "net"):
            (pm / d).mkdir(parents=True)
        ul = ", ".join(f'"{u}"' for u in ULIMITS)
        (pm / "containers.conf").write_text(
            f'[containers]\nnetns = "none"\ndefault_ulimits = [{ul}]\n'
            f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'events_logfile_path = "{pm}/events.log"\nlock_type = "file"\n'
            f'tmp_dir = "{pm}/tmp"\nstatic_dir = "{pm}/root/libpod"\n'
            f'volume_path = "{pm}/root/volumes"\n[network]\nnetwork_config_dir = "{pm}/net"\n')
        (pm / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{pm}/root"\nrunroot = "{pm}/run"\n'
            '[storage.options.overlay]\nskip_mount_home = "true"\n')
        (pm / "registries.conf").write_text("")
        proc = self._podman(None, "import", str(self.base / "rootfs.tar"), IMAGE)
        if proc.returncode != 0:
            raise RuntimeError(f"podman import: {proc.stderr.strip()}")

    def _podman_cmd(self, runtime: str | None, *args: str) -> list[str]:
        pm = self.pm
        cmd = ["podman", "--root", f"{pm}/root", "--runroot", f"{pm}/run",
               "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
               "--events-backend", "file", "--tmpdir", f"{pm}/tmp"]
        if runtime:
            cmd += ["--runtime", str(self.wrappers[runtime])]
        return [*cmd, *args]

    def _podman_env(self) -> dict[str, str]:
        pm = self.pm
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "HOME": str(pm), "CONTAINERS_CONF": f"{pm}/containers.conf",
                "CONTAINERS_STORAGE_CONF": f"{pm}/storage.conf",
                "CONTAINERS_REGISTRIES_CONF": f"{pm}/registries.conf"}

    def _podman(self, runtime: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._podman_cmd(runtime, *args), capture_output=True, text=True,
                              timeout=120, env=self._podman_env(), stdin=subprocess.DEVNULL)

    # -- the measured commands
    def ctr_true(self, runtime: str, n: int) -> tuple[float, str]:
        cid = f"{self.tag}-{runtime}-{n}"
        argv = ["ctr", "--address", str(self.sock), "--namespace", self.tag, "run", "--rm",
                "--fifo-dir", str(self.base / "ctd" / "fifo"),
                "--runc-binary", str(self.runtimes[runtime]),
                "--runc-root", str(self.base / "roots" / runtime), IMAGE, cid, "/bin/true"]
        return _timed(argv, None)

    def podman_true(self, runtime: str, n: int) -> tuple[float, str]:
        argv = self._podman_cmd(runtime, "run", "--rm", "--network", "none",
                                "--cgroup-parent", f"/{self.tag}/podman",
                                *[a for u in ULIMITS for a in ("--ulimit", u)],
                                IMAGE, "/bin/true")
        return _timed(argv, self._podman_env())

    # -- teardown
    def close(self) -> None:
        if self.daemon is not None:
            with contextlib.suppress(Exception):
                for cid in self._ctr("containers", "list", "--quiet").stdout.split():
                    self._ctr("task", "delete", "--force", cid)
                    self._ctr("containers", "delete", cid)
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.have_podman and self.pm.exists():
            with contextlib.suppress(Exception):
                self._podman(None, "rm", "--all", "--force", "--time", "0")
        _kill_mentioning(str(self.base))
        _unmount_under(self.base)
        _remove_cgroup(self.tag)
        shutil.rmtree(self.base, ignore_errors=True)
        if self.created_run_containerd:
            for d in ("/run/containerd/s", "/run/containerd"):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        if self.created_var_lib_containers:
            shutil.rmtree("/var/lib/containers", ignore_errors=True)


def _timed(argv: list[str], env: dict[str, str] | None) -> tuple[float, str]:
    """Wall time of *argv*; error text ('' when it exited 0)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        return elapsed, f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return elapsed, ""


def _kill_mentioning(needle: str) -> None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue


def _unmount_under(path: Path) -> None:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        targets = {line.split()[4] for line in f}
    for t in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", t], capture_output=True, timeout=30)


@contextlib.contextmanager
def engines(runtimes: dict[str, Path]) -> Iterator[Engines]:
    e = Engines(runtimes)
    try:
        e.start()
        yield e
    finally:
        e.close()


def measure(rounds: int, progress: Any = None) -> dict[str, Any]:
    """Samples (seconds) per engine and runtime, and the errors met."""
    runtimes = _runtimes()
    samples: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, str] = {}
    failed: dict[str, int] = {}
    with engines(runtimes) as e:
        benches = []
        if e.have_ctr:
            benches.append(("ctr run --rm", e.ctr_true))
        else:
            errors["ctr"] = "containerd/ctr not installed"
        if e.have_podman:
            benches.append(("podman run --rm", e.podman_true))
        else:
            errors["podman"] = "podman/conmon not installed"
        names = list(runtimes)
        if progress is not None:
            progress.start("engines", rounds * len(names) * len(benches))
        for label, fn in benches:
            samples[label] = {n: [] for n in names}
            for name in names:  # warm-up: first runs pay page-cache and import costs
                _, err = fn(name, 1000)
                if err:
                    errors[f"{label} / {name}"] = err
            for r in range(rounds):
                k = r % len(names)
                for name in [*names[k:], *names[:k]]:
                    key = f"{label} / {name}"
                    if key in errors and not samples[label][name] and r >= 2:
                        continue  # never worked: do not keep paying for it
                    t, err = fn(name, r)
                    if err:
                        # one failure is recorded, not fatal: on a shared machine another
                        # test suite's leak checker may kill a container mid-run
                        failed[key] = failed.get(key, 0) + 1
                        errors[key] = f"{failed[key]} failed run(s), last: {err}"
                    else:
                        samples[label][name].append(t)
                    if progress is not None:
                        progress.step(f"{label} {name}")
        if progress is not None:
            progress.finish()
    return {"samples": samples, "errors": errors,
            "runtimes": {k: str(v) for k, v in runtimes.items()}}


def table(data: dict[str, Any]) -> str:
    lines = ["| engine command | runtime | n | median ms | q1 ms | q3 ms | ratio to runc |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, per in data["samples"].items():
        base = statistics.median(per["runc"]) if per.get("runc") else float("nan")
        for name, vals in per.items():
            if not vals:
                lines.append(f"| {label} | {name} | 0 | - | - | - | - |")
                continue
            med = statistics.median(vals)
            qs = statistics.quantiles(vals, n=4) if len(vals) > 1 else [med, med, med]
            ratio = f"{med / base:.2f}x" if base == base else "-"  # base is NaN: no runc
            lines.append(f"| {label} | {name} | {len(vals)} | {med * 1000:.1f} | "
                         f"{qs[0] * 1000:.1f} | {qs[2] * 1000:.1f} | {ratio} |")
    if data["errors"]:
        lines += ["", "Errors:", ""] + [f"- {k}: {v}" for k, v in data["errors"].items()]
    return "\n".join(lines) + "\n"


def run(session: Any) -> Any:
    """Entry point for `contain bench` (benchmarks/driver.py)."""
    from .common import Result

    rounds = session.rounds or (5 if session.quick else 15)
    data = measure(rounds, session.progress)
    return Result("engines", "Engines: ctr run --rm and podman run --rm of /bin/true",
                  markdown=table(data), data=data, errors=dict(data["errors"]),
                  notes=["Whole engine round trip (containerd + runc v2 shim, podman + "
                         "conmon), runtimes interleaved per round; ratio of medians."])


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", help="also write the samples to this file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.engines runs containers: run it as root", file=sys.stderr)
        return 1
    data = measure(args.rounds)
    print(table(data), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
