"""The root filesystem, observed from inside real containers: root.path, readonly root,
--no-pivot, rootfsPropagation, every kind of mount in config.json with its options,
/dev (default devices, symlinks, linux.devices), maskedPaths and readonlyPaths."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, ok, run_contain, unique_id

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_sh(make_bundle: Callable[..., Bundle], state_root: Path) -> Runner:
    """run_sh(script, mutate=None, *flags) -> the finished `contain run`; mutate(cfg,
    bundle_path) may change the config (and the bundle) before it is written."""

    def run(script: str, mutate: Callable[[dict[str, Any], Path], None] | None = None,
            *flags: str) -> subprocess.CompletedProcess[str]:
        bundle = make_bundle(["/bin/sh", "-c", script])
        if mutate is not None:
            mutate(bundle.config, bundle.path)
            bundle.write()
        return run_contain(state_root, "run", *flags, "--bundle", str(bundle.path), unique_id())

    return run


class MountLine:
    def __init__(self, line: str) -> None:
        left, _, right = line.partition(" - ")
        f = left.split()
        self.root = f[3]
        self.point = f[4]
        self.options = set(f[5].split(","))
        self.optional = f[6:]
        r = right.split()
        self.fstype = r[0]
        self.source = r[1]
        self.super = set(r[2].split(",")) if len(r) > 2 else set()

    @property
    def propagation(self) -> str:
        kinds = [o.split(":")[0] for o in self.optional]
        if "shared" in kinds:
            return "shared"
        if "master" in kinds:
            return "slave"
        if "unbindable" in kinds:
            return "unbindable"
        return "private"


def mountinfo(text: str) -> dict[str, MountLine]:
    """Mount point -> its (last, i.e. topmost) line of a mountinfo dump."""
    out = {}
    for line in text.splitlines():
        if " - " in line:
            m = MountLine(line)
            out[m.point] = m
    return out


MI = "cat /proc/self/mountinfo"


# -- root ----------------------------------------------------------------------------------

def test_root_path_relative_to_the_bundle(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        (bundle / "rootfs" / "marker").write_text("relative\n")
        assert cfg["root"]["path"] == "rootfs"

    assert ok(run_sh("cat /marker", mutate)) == "relative\n"


def test_root_path_absolute_elsewhere(run_sh: Runner, tmp_path: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        moved = tmp_path / "elsewhere"
        (bundle / "rootfs").rename(moved)
        (moved / "marker").write_text("absolute\n")
        cfg["root"]["path"] = str(moved)

    assert ok(run_sh("cat /marker", mutate)) == "absolute\n"


def test_readonly_root(run_sh: Runner) -> None:
    out = ok(run_sh("touch /x 2>&1 && echo WROTE; touch /tmp/y 2>&1 && echo WROTE-TMP; " + MI))
    assert "Read-only file system" in out and "WROTE\n" not in out
    assert "ro" in mountinfo(out)["/"].options


def test_writable_root(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["root"]["readonly"] = False

    out = ok(run_sh("touch /made-inside && echo WROTE; " + MI, mutate))
    assert "WROTE" in out
    assert "rw" in mountinfo(out)["/"].options


def test_pivot_root_hides_the_host_and_no_pivot_works(run_sh: Runner) -> None:
    for flags in ((), ("--no-pivot",)):
        def mutate(cfg: dict[str, Any], bundle: Path) -> None:
            (bundle / "rootfs" / "marker").write_text("in-rootfs\n")

        out = ok(run_sh("cat /marker; " + MI + "; ls /", mutate, *flags))
        mounts = mountinfo(out)
        assert out.startswith("in-rootfs\n")
        # no mount of the host is visible beyond the container's own
        assert set(mounts) <= {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                               "/sys", "/sys/fs/cgroup", *(p for p in mounts
                                                           if p.startswith(("/sys/fs/cgroup/",
                                                                            "/proc/", "/sys/")))}
        assert "work" not in out.split("\n/proc")[0]


@pytest.mark.parametrize("prop", ["shared", "rshared", "private", "rprivate", "slave",
                                  "rslave", "unbindable"])
def test_rootfs_propagation(run_sh: Runner, prop: str) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["linux"]["rootfsPropagation"] = prop

    root = mountinfo(ok(run_sh(MI, mutate)))["/"]
    want = prop.removeprefix("r")
    if want == "slave":
        # the host's / is private here: a slave of nothing shows as private
        assert root.propagation in ("slave", "private")
    else:
        assert root.propagation == want


# -- mounts ---------------------------------------------------------------------------------

@pytest.fixture
def host_dir(tmp_path: Path) -> Iterator[Path]:
    """A host directory with a file, an executable and a tmpfs submount (for rbind)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "file").write_text("host data\n")
    exe = src / "prog"
    exe.write_text("#!/bin/sh\necho ran\n")
    exe.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "sub")],
                   check=True)
    (src / "sub" / "inner").write_text("submount\n")
    try:
        yield src
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=True)


def test_bind_mount_options(run_sh: Runner, host_dir: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"] += [
            {"destination": "/ro", "type": "bind", "source": str(host_dir),
             "options": ["bind", "ro", "nosuid", "nodev", "noexec"]},
            {"destination": "/rw", "type": "none", "source": str(host_dir),
             "options": ["bind", "rw", "noatime"]},
            {"destination": "/strict", "type": "bind", "source": str(host_dir),
             "options": ["bind", "strictatime", "nodiratime"]},
        ]

    out = ok(run_sh("cat /ro/file; touch /ro/x 2>&1; /ro/prog 2>&1; /rw/prog; "
                    "ls /ro/sub; echo END; " + MI, mutate))
    assert out.startswith("host data\n")
    assert "Read-only file system" in out
    assert "Permission denied" in out  # noexec
    assert "ran\n" in out  # /rw allows exec
    assert "inner" not in out.split("END")[0]  # a plain bind does not carry submounts
    m = mountinfo(out)
    assert {"ro", "nosuid", "nodev", "noexec"} <= m["/ro"].options
    assert "rw" in m["/rw"].options and "noatime" in m["/rw"].options
    assert "nodiratime" in m["/strict"].options
    assert "relatime" not in m["/strict"].options and "noatime" not in m["/strict"].options
    assert not (host_dir / "x").exists()


def test_rbind_carries_submounts_and_recursive_ro(run_sh: Runner, host_dir: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"] += [
            {"destination": "/r", "type": "bind", "source": str(host_dir),
             "options": ["rbind", "rro", "rprivate"]},
        ]

    out = ok(run_sh("cat /r/sub/inner; touch /r/sub/x 2>&1; " + MI, mutate))
    assert out.startswith("submount\n")
    assert "Read-only file system" in out
    m = mountinfo(out)
    assert m["/r/sub"].fstype == "tmpfs"
    assert "ro" in m["/r"].options and "ro" in m["/r/sub"].options
    assert m["/r"].propagation == "private"


def test_file_bind_and_destinations_created(run_sh: Runner, host_dir: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"] += [
            {"destination": "/new/deep/file.txt", "type": "bind",
             "source": str(host_dir / "file"), "options": ["bind", "ro"]},
            {"destination": "/another/deep/dir", "type": "tmpfs", "source": "tmpfs"},
        ]

    out = ok(run_sh("cat /new/deep/file.txt; test -d /another/deep/dir && echo DIR", mutate))
    assert out == "host data\nDIR\n"


def test_bind_source_relative_to_the_bundle(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        (bundle / "data").mkdir()
        (bundle / "data" / "f").write_text("from bundle\n")
        cfg["mounts"].append({"destination": "/data", "type": "bind", "source": "data",
                              "options": ["rbind"]})

    assert ok(run_sh("cat /data/f", mutate)) == "from bundle\n"


def test_tmpfs_options(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev", "mode=1770", "size=2m"]})

    out = ok(run_sh("stat -c %a /scratch; " + MI, mutate))
    assert out.splitlines()[0] == "1770"
    m = mountinfo(out)["/scratch"]
    assert m.fstype == "tmpfs" and {"nosuid", "nodev"} <= m.options
    assert "size=2048k" in m.super


def test_tmpcopyup_keeps_the_image_content(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        (bundle / "rootfs" / "etc" / "keep.conf").write_text("kept\n")
        cfg["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                              "options": ["tmpcopyup"]})

    out = ok(run_sh("cat /etc/keep.conf; touch /etc/new && echo W; " + MI, mutate))
    assert out.startswith("kept\nW\n")
    assert mountinfo(out)["/etc"].fstype == "tmpfs"


def test_default_kernel_filesystems(run_sh: Runner) -> None:
    out = ok(run_sh(MI + "; ls /sys/fs/cgroup; echo END; touch /sys/x 2>&1; true"))
    m = mountinfo(out)
    assert m["/proc"].fstype == "proc"
    assert m["/sys"].fstype == "sysfs" and "ro" in m["/sys"].options
    assert m["/dev"].fstype == "tmpfs"
    assert m["/dev/pts"].fstype == "devpts" and "newinstance" not in m["/dev/pts"].options
    assert {"ptmxmode=666", "mode=620", "gid=5"} <= m["/dev/pts"].super
    assert m["/dev/shm"].fstype == "tmpfs" and "noexec" in m["/dev/shm"].options
    assert m["/dev/mqueue"].fstype == "mqueue"
    # the cgroup mount: one hierarchy per controller, as the host has them (hybrid)
    cg = [p for p in m if p.startswith("/sys/fs/cgroup/")]
    assert any(p.endswith("/memory") for p in cg) and any(p.endswith("/pids") for p in cg)
    assert all("ro" in m[p].options for p in cg)
    assert "memory" in out.split("END")[0]
    assert "Read-only file system" in out


def test_cgroup_mount_shows_the_containers_own_cgroup(run_sh: Runner) -> None:
    out = ok(run_sh("cat /proc/self/cgroup; ls /sys/fs/cgroup/pids"))
    lines = out.splitlines()
    pids_line = next(line for line in lines if ":pids:" in line)
    # with a cgroup namespace, the container's cgroup is its root
    assert pids_line.endswith(":/")
    assert "pids.max" in out and "cgroup.procs" in out


def test_cgroup_mount_without_cgroup_namespace_binds_the_containers_own(
        run_sh: Runner) -> None:
    """No cgroup namespace: each v1 hierarchy is the container's own cgroup bound from
    the host (found in /proc/self/cgroup, read once for all of them): its pids.max and
    memory.limit_in_bytes are the container's limits, not the host's or the runtime's."""
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        linux = cfg["linux"]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "cgroup"]
        linux.setdefault("resources", {}).update(
            {"pids": {"limit": 77}, "memory": {"limit": 123 * 1024 * 1024}})

    out = ok(run_sh("cat /sys/fs/cgroup/pids/pids.max "
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes", mutate))
    assert out.split() == ["77", str(123 * 1024 * 1024)]


def test_cgroup2_mount(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"].append({"destination": "/cg2", "type": "cgroup2", "source": "cgroup",
                              "options": ["nosuid", "noexec", "nodev"]})

    out = ok(run_sh("ls /cg2; " + MI, mutate))
    assert mountinfo(out)["/cg2"].fstype == "cgroup2"
    assert "cgroup.procs" in out


def test_overlay_mount(run_sh: Runner, tmp_path: Path) -> None:
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "base").write_text("lower layer\n")

    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"].append({
            "destination": "/merged", "type": "overlay", "source": "overlay",
            "options": [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"]})

    out = ok(run_sh("cat /merged/base; echo new > /merged/added; " + MI, mutate))
    assert out.startswith("lower layer\n")
    assert mountinfo(out)["/merged"].fstype == "overlay"
    assert (upper / "added").read_text() == "new\n"
    assert not (lower / "added").exists()


def test_mount_options_unknown_to_the_flags_go_to_the_filesystem(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["mounts"].append({"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nr_inodes=123", "uid=1000", "gid=1000"]})

    out = ok(run_sh("stat -c '%u %g' /t; " + MI, mutate))
    assert out.splitlines()[0] == "1000 1000"
    assert "nr_inodes=123" in mountinfo(out)["/t"].super


# -- /dev ---------------------------------------------------------------------------------

def test_default_devices_and_links(run_sh: Runner) -> None:
    out = ok(run_sh("for d in null zero full random urandom tty; do "
                    "stat -c '%n %F %t:%T %a' /dev/$d; done; "
                    "for l in fd stdin stdout stderr ptmx core; do "
                    "echo /dev/$l '->' $(readlink /dev/$l); done; "
                    "head -c 4 /dev/zero | od -An -tx1; (echo x > /dev/full) 2>&1; "
                    "ls /dev"))
    want = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9",
            "tty": "5:0"}
    for name, dev in want.items():
        assert f"/dev/{name} character special file {dev.replace(':', ':')}" in out.replace(
            f"{int(dev.split(':')[0]):x}:{int(dev.split(':')[1]):x}", dev), name
        assert f"/dev/{name} character special file" in out
    links = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    if os.path.exists("/proc/kcore"):  # (this kernel has none)
        links["core"] = "/proc/kcore"
    for name, target in links.items():
        assert f"/dev/{name} -> {target}\n" in out
    assert "00 00 00 00" in out
    assert "No space left on device" in out
    # nothing of the host's /dev leaks in
    listed = set(out.split("No space left on device")[1].split())
    assert not listed & {"vda", "kvm", "fuse", "mem", "kmsg"}


def test_default_device_modes(run_sh: Runner) -> None:
    out = ok(run_sh("stat -c '%n %a %u %g' /dev/null /dev/zero /dev/tty"))
    for line in out.splitlines():
        assert line.split()[1:] == ["666", "0", "0"], line


def test_linux_devices(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["linux"]["devices"] = [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o660,
             "uid": 1000, "gid": 0},
            {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
            {"path": "/dev/myfifo", "type": "p", "fileMode": 0o600},
        ]
        cfg["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"})

    out = ok(run_sh("stat -c '%n %F %t:%T %a %u %g' /dev/fuse /dev/net/tun /dev/myfifo; "
                    "exec 3<>/dev/fuse && echo OPENED-FUSE", mutate))
    lines = out.splitlines()
    assert lines[0] == "/dev/fuse character special file a:e5 660 1000 0"
    assert lines[1].startswith("/dev/net/tun character special file a:c8 666 0 0")
    assert lines[2].startswith("/dev/myfifo fifo")
    assert "OPENED-FUSE" in out


def test_devices_in_a_user_namespace_are_bind_mounted(run_sh: Runner, tmp_path: Path) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        for p in (bundle, *bundle.parents):
            if p == Path("/tmp"):
                break
            os.chmod(p, os.stat(p).st_mode | 0o711)
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10,
                                    "minor": 229}]

    out = ok(run_sh("stat -c '%n %F %t:%T' /dev/null /dev/fuse; " + MI, mutate))
    assert "/dev/null character special file 1:3" in out
    assert "/dev/fuse character special file a:e5" in out
    m = mountinfo(out)
    assert "/dev/null" in m and "/dev/fuse" in m  # bound from the host, not mknod'ed


# -- masked and read-only paths ------------------------------------------------------------

def test_masked_paths(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        (bundle / "rootfs" / "etc" / "secret").write_text("top secret\n")
        (bundle / "rootfs" / "private").mkdir()
        (bundle / "rootfs" / "private" / "key").write_text("k\n")
        cfg["linux"]["maskedPaths"] += ["/etc/secret", "/private", "/does/not/exist"]

    out = ok(run_sh("wc -c < /proc/keys; wc -c < /etc/secret; ls -A /private | wc -l; "
                    "ls -A /sys/firmware | wc -l; touch /private/x 2>&1; "
                    "(echo y > /etc/secret) 2>&1; echo END; " + MI, mutate))
    head = out.split("END")[0].split("\n")
    assert head[:4] == ["0", "0", "0", "0"]
    assert "Read-only file system" in out
    m = mountinfo(out)
    assert m["/private"].fstype == "tmpfs" and "ro" in m["/private"].options
    assert m["/sys/firmware"].fstype == "tmpfs"
    for p in ("/etc/secret", "/proc/keys", "/proc/timer_list"):
        assert m[p].root == "/null", p  # the container's /dev/null bound over it


def test_readonly_paths(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["root"]["readonly"] = False
        (bundle / "rootfs" / "frozen").mkdir()
        cfg["linux"]["readonlyPaths"] += ["/frozen", "/does/not/exist"]

    out = ok(run_sh("touch /frozen/x 2>&1; (echo 1 > /proc/sys/vm/overcommit_ratio) 2>&1; "
                    "(echo 1 > /proc/sysrq-trigger) 2>&1; touch /fine && echo FINE; " + MI,
                    mutate))
    assert out.count("Read-only file system") >= 2
    # (this kernel has no /proc/sysrq-trigger; where it has one it is read-only)
    assert "sysrq-trigger: Read-only file system" in out or not os.path.exists(
        "/proc/sysrq-trigger")
    assert "FINE" in out
    m = mountinfo(out)
    for p in ("/frozen", "/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/irq"):
        if p in m:
            assert {"ro", "nosuid", "nodev", "noexec"} <= m[p].options, p
    assert "/frozen" in m and "/proc/sys" in m


def test_mode_of_a_mknod_device_honours_file_mode_not_umask(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        cfg["process"]["user"]["umask"] = 0o077
        cfg["linux"]["devices"] = [{"path": "/dev/zero2", "type": "c", "major": 1,
                                    "minor": 5, "fileMode": 0o666}]

    out = ok(run_sh("stat -c %a /dev/zero2; umask", mutate))
    assert out.split() == ["666", "0077"]


def _rootfs_stat(bundle: Path, rel: str) -> os.stat_result:
    return os.lstat(bundle / "rootfs" / rel)


def test_image_dev_entries_are_replaced_not_followed(run_sh: Runner, tmp_path: Path) -> None:
    """A rootfs whose /dev/null is a symlink to a host path: the container gets a real
    device, and the host file is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("host file\n")

    def mutate(cfg: dict[str, Any], bundle: Path) -> None:
        # no tmpfs on /dev: the image's own /dev is used
        cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        (bundle / "rootfs" / "dev" / "null").symlink_to(victim)

    out = ok(run_sh("stat -c '%F %t:%T' /dev/null", mutate))
    assert out.strip() == "character special file 1:3"
    assert victim.read_text() == "host file\n"
    assert stat.S_ISREG(victim.stat().st_mode)
