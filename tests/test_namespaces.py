"""Namespaces, observed from inside real containers: all eight new, joined by path (from a
sleeping container and from an `unshare` process), user namespaces with their mappings,
time offsets, hostname and domainname, and PID 1."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, default_config, ok, run_contain, unique_id

# time namespaces are absent from older or smaller kernels (the user-mode Linux lane's)
HAS_TIME = os.path.exists("/proc/self/ns/time")
IN_UML = os.environ.get("CONTAIN_UML_LANE") == "1"
NS_KINDS = tuple(k for k in ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
                 if HAS_TIME or k != "time")
# OCI namespace type -> /proc/<pid>/ns entry
NS_FILE = {k: v for k, v in {"cgroup": "cgroup", "ipc": "ipc", "mount": "mnt",
                             "network": "net", "pid": "pid", "time": "time", "user": "user",
                             "uts": "uts"}.items() if HAS_TIME or k != "time"}
ALL_TYPES = tuple(NS_FILE)
USERNS_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]

Runner = Callable[..., subprocess.CompletedProcess[str]]


def sh_config(script: str) -> dict[str, Any]:
    return default_config(["/bin/sh", "-c", script])


@pytest.fixture
def run_sh(make_bundle: Callable[..., Bundle], state_root: Path) -> Runner:
    """run_sh(script, mutate=None, *flags) -> the finished `contain run`."""

    def run(script: str, mutate: Callable[[dict[str, Any]], None] | None = None,
            *flags: str) -> subprocess.CompletedProcess[str]:
        cfg = sh_config(script)
        if mutate is not None:
            mutate(cfg)
        bundle = make_bundle(config=cfg)
        if any(ns["type"] == "user" for ns in cfg["linux"]["namespaces"]):
            traversable(bundle.path)
        return run_contain(state_root, "run", *flags, "--bundle", str(bundle.path), unique_id())

    return run


def ns_lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in NS_KINDS:
            out[parts[0]] = parts[1]
    return out


PRINT_NS = "for n in " + " ".join(NS_KINDS) + "; do echo $n $(readlink /proc/self/ns/$n); done"


def host_ns(pid: str | int = "self") -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in NS_KINDS}


def traversable(path: Path) -> None:
    """Let the mapped root of a user namespace (an unprivileged host uid) walk down to a
    bundle: pytest's temporary directories are 0700."""
    for p in (path, *path.parents):
        if p == Path("/tmp") or p == Path("/"):
            break
        os.chmod(p, os.stat(p).st_mode | 0o711)


def with_userns(cfg: dict[str, Any], uid_map: list[dict[str, int]] | None = None,
                gid_map: list[dict[str, int]] | None = None) -> None:
    linux = cfg["linux"]
    if not any(ns["type"] == "user" for ns in linux["namespaces"]):
        linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = copy.deepcopy(uid_map or USERNS_MAP)
    linux["gidMappings"] = copy.deepcopy(gid_map or uid_map or USERNS_MAP)


# -- all eight new --------------------------------------------------------------------------

def test_all_eight_namespaces_are_new(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [{"type": t} for t in ALL_TYPES]
        with_userns(cfg)

    inside = ns_lines(ok(run_sh(PRINT_NS, mutate)))
    host = host_ns()
    assert set(inside) == set(NS_KINDS)
    for kind in NS_KINDS:
        assert inside[kind] != host[kind], f"{kind} namespace is the host's"


def test_absent_namespaces_are_shared_with_the_runtime(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [{"type": "mount"}]
        cfg.pop("hostname", None)

    inside = ns_lines(ok(run_sh(PRINT_NS + "; echo pid=$$", mutate)))
    host = host_ns()
    assert inside["mnt"] != host["mnt"]
    for kind in (k for k in NS_KINDS if k != "mnt"):
        assert inside[kind] == host[kind], kind


def test_first_process_of_a_new_pid_namespace_is_pid_1(run_sh: Runner) -> None:
    out = ok(run_sh("echo pid=$$; grep -E '^(PPid|NSpid):' /proc/$$/status; "
                    "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"))
    assert "pid=1" in out
    assert "PPid:\t0" in out
    assert "NSpid:\t1\n" in out or "NSpid:\t1" in out.splitlines()
    # only the shell and the ls/grep/sort/tr it runs: no runtime process is visible
    pids = [int(p) for p in out.splitlines()[-1].split()]
    assert pids[0] == 1 and len(pids) <= 6


def test_hostname_and_domainname(run_sh: Runner) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["hostname"] = "box-one"
        cfg["domainname"] = "example.test"

    out = ok(run_sh("hostname; cat /proc/sys/kernel/domainname", mutate))
    assert out.split() == ["box-one", "example.test"]
    assert os.uname().nodename != "box-one"


# -- user namespaces ------------------------------------------------------------------------

@pytest.mark.skipif(IN_UML, reason="hostfs (the UML lane's root) ignores file ownership")
def test_user_namespace_mappings_inside_and_on_the_host(run_sh: Runner, tmp_path: Path) -> None:
    """Two uid ranges and two gid ranges: /proc/self/uid_map shows them, a process of
    uid 1000 is root-less inside, and a file it creates on a bind mount is owned on the
    host by the mapped ids."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)

    def mutate(cfg: dict[str, Any]) -> None:
        with_userns(cfg,
                    [{"containerID": 0, "hostID": 100000, "size": 1000},
                     {"containerID": 1000, "hostID": 231000, "size": 10}],
                    [{"containerID": 0, "hostID": 100000, "size": 1000},
                     {"containerID": 1000, "hostID": 232000, "size": 10}])
        cfg["process"]["user"] = {"uid": 1000, "gid": 1001}
        cfg["mounts"].append({"destination": "/home", "type": "bind", "source": str(shared),
                              "options": ["rbind", "rw"]})

    out = ok(run_sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; "
                    "touch /home/made-inside", mutate))
    lines = [line.split() for line in out.splitlines()]
    assert ["0", "100000", "1000"] in lines
    assert ["1000", "231000", "10"] in lines
    assert ["1000", "232000", "10"] in lines
    assert lines[-2:] == [["1000"], ["1001"]]
    st = (shared / "made-inside").stat()
    assert (st.st_uid, st.st_gid) == (231000, 232001)


def test_root_in_a_user_namespace_is_not_root_on_the_host(run_sh: Runner) -> None:
    """Root inside owns nothing of the host: a file of the host's root (unmapped) shows
    as the overflow id and cannot be written, even with all capabilities inside."""

    def mutate(cfg: dict[str, Any]) -> None:
        with_userns(cfg)
        cfg["root"]["readonly"] = False
        caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SYS_ADMIN"]
        cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective",
                                                              "permitted")}

    out = run_sh("id -u; stat -c '%u %g' /etc/passwd; "
                 "echo x >> /etc/passwd && echo WROTE || echo DENIED", mutate)
    lines = ok(out).split()
    assert lines[0] == "0"
    assert lines[1:3] == ["65534", "65534"]
    assert lines[-1] == "DENIED"


# -- joined by path -------------------------------------------------------------------------

def _copy_bundle(busybox_rootfs: Path, path: Path, cfg: dict[str, Any]) -> Bundle:
    path.mkdir()
    shutil.copytree(busybox_rootfs, path / "rootfs", symlinks=True, copy_function=os.link)
    return Bundle(path, cfg).write()


class Target:
    """A sleeping container with its own user, pid, net, ipc, uts, cgroup and time
    namespaces, to be joined by path."""

    def __init__(self, root: Path, cid: str, pid: int) -> None:
        self.root = root
        self.cid = cid
        self.pid = pid

    def ns_path(self, oci_type: str) -> str:
        return f"/proc/{self.pid}/ns/{NS_FILE[oci_type]}"


@pytest.fixture(scope="module")
def target(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    import json

    root = Path(tempfile.mkdtemp(prefix="contain-ns-", dir="/run"))
    cfg = sh_config("exec sleep 1000")
    cfg["linux"]["namespaces"] = [{"type": t} for t in ALL_TYPES]
    with_userns(cfg)
    cfg["hostname"] = "target-host"
    bundle = _copy_bundle(busybox_rootfs, tmp_path_factory.mktemp("target") / "b", cfg)
    traversable(bundle.path)
    cid = unique_id("target")
    with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out:
        proc = subprocess.run([*contain_cmd(), "--root", str(root), "run", "--detach",
                               "--bundle", str(bundle.path), cid],
                              stdin=null, stdout=out, stderr=out, timeout=60)
        out.seek(0)
        assert proc.returncode == 0, out.read().decode()
    state = json.loads(run_contain(root, "state", cid, check=True).stdout)
    try:
        assert state["status"] == "running"
        yield Target(root, cid, state["pid"])
    finally:
        run_contain(root, "delete", "--force", cid)
        shutil.rmtree(root, ignore_errors=True)


def test_join_every_namespace_of_a_running_container(run_sh: Runner, target: Target) -> None:
    joined = [t for t in ALL_TYPES if t != "mount"]

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [{"type": "mount"}] + [
            {"type": t, "path": target.ns_path(t)} for t in joined]
        cfg.pop("hostname", None)

    out = ok(run_sh(PRINT_NS + "; echo pid=$$; hostname; cat /proc/self/uid_map", mutate))
    inside = ns_lines(out)
    theirs = host_ns(target.pid)
    for t in joined:
        kind = NS_FILE[t]
        assert inside[kind] == theirs[kind], f"{kind} not joined"
    assert inside["mnt"] != theirs["mnt"]
    assert "pid=1\n" not in out  # the target's sleep is PID 1 of that namespace
    assert "target-host" in out
    assert "0     100000      65536" in out or "0 100000 65536" in " ".join(out.split())


def test_join_the_pid_namespace_sees_the_other_container(run_sh: Runner,
                                                          target: Target) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        for ns in cfg["linux"]["namespaces"]:
            if ns["type"] == "pid":
                ns["path"] = target.ns_path("pid")

    out = ok(run_sh("cat /proc/1/cmdline | tr '\\0' ' '; echo; echo me=$$", mutate))
    assert out.splitlines()[0].strip() == "sleep 1000"
    assert "me=1\n" not in out


def test_join_the_network_namespace_of_an_unshare_process(run_sh: Runner) -> None:
    holder = subprocess.Popen(["unshare", "--net", "sleep", "1000"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        for _ in range(1000):  # unshare(1) execs sleep once the namespace is made
            if os.readlink(path) != os.readlink("/proc/self/ns/net"):
                break
            os.sched_yield()
        want = os.readlink(path)

        def mutate(cfg: dict[str, Any]) -> None:
            for ns in cfg["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = path

        out = ok(run_sh("readlink /proc/self/ns/net; cat /proc/net/dev", mutate))
        assert out.splitlines()[0] == want
        ifaces = [line.split(":")[0].strip() for line in out.splitlines()[3:]]
        assert ifaces == ["lo"]
    finally:
        holder.kill()
        holder.wait()


# -- time namespace -------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_TIME, reason="this kernel has no time namespaces")
def test_time_offsets(run_sh: Runner) -> None:
    days = 100 * 86400

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"].append({"type": "time"})
        cfg["linux"]["timeOffsets"] = {"boottime": {"secs": days, "nanosecs": 0},
                                       "monotonic": {"secs": 2 * days}}

    with open("/proc/uptime") as f:
        before = float(f.read().split()[0])
    out = ok(run_sh("cat /proc/uptime; cat /proc/self/timens_offsets", mutate))
    with open("/proc/uptime") as f:
        after = float(f.read().split()[0])
    uptime = float(out.split()[0])
    assert before + days - 1 <= uptime <= after + days + 1
    offsets = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert offsets["boottime"] == [str(days), "0"]
    assert offsets["monotonic"] == [str(2 * days), "0"]


# -- sysctls (namespaced ones only) -----------------------------------------------------------

def test_sysctls_of_the_containers_own_namespaces(run_sh: Runner) -> None:
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host_forward = f.read()

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1",
                                  "net.ipv4.ping_group_range": "0 2147483647",
                                  "kernel.shmmni": "1234",
                                  "fs.mqueue.msg_max": "20",
                                  "kernel.domainname": "sysctl.test"}

    out = ok(run_sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ping_group_range "
                    "/proc/sys/kernel/shmmni /proc/sys/fs/mqueue/msg_max "
                    "/proc/sys/kernel/domainname; "
                    "(echo 0 > /proc/sys/net/ipv4/ip_forward) 2>&1; true", mutate))
    lines = out.splitlines()
    assert lines[0] == "1"
    assert lines[1].split() == ["0", "2147483647"]
    assert lines[2:5] == ["1234", "20", "sysctl.test"]
    assert "Read-only file system" in lines[5]  # /proc/sys is read-only afterwards
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read() == host_forward


def test_sysctl_outside_the_containers_namespaces_is_refused(run_sh: Runner) -> None:
    with open("/proc/sys/kernel/shmmni") as f:
        host = f.read()

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != "ipc"]
        cfg["linux"]["sysctl"] = {"kernel.shmmni": "999"}

    proc = run_sh("true", mutate)
    assert proc.returncode == 1
    assert "$.linux.sysctl.kernel.shmmni" in proc.stderr and "ipc" in proc.stderr
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read() == host
