"""runtime-spec 1.3 and runc 1.2-1.5 features (issue 14, item 3), each on the real kernel:
linux.netDevices, linux.memoryPolicy, linux.intelRdt (its error where resctrl is absent,
and the group logic on a stand-in tree), process.execCPUAffinity, pids.limit 0,
--pidfd-socket, and the features document that lists them."""

from __future__ import annotations

import _socket
import json
import os
import select
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import (
    Bundle,
    contain_cmd,
    fails,
    ok,
    reap_zombies,
    run_contain,
    unique_id,
    wait_for,
)


def run(state_root: Path, bundle: Bundle, *flags: str,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, *contain_cmd(), "--root", str(state_root), "run", *flags,
           "--bundle", str(bundle.path), unique_id("s13")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def nothing_left(state_root: Path) -> None:
    assert [p.name for p in state_root.iterdir() if not p.name.startswith(".")] == []


def detached(state_root: Path, bundle: Bundle, *flags: str,
             prefix: tuple[str, ...] = ()) -> str:
    """`run -d` (its output to a file: a pipe would be held open by the container)."""
    cid = unique_id("s13")
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run([*prefix, *contain_cmd(), "--root", str(state_root), "run",
                               "-d", *flags, "--bundle", str(bundle.path), cid],
                              stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out, timeout=60)
        out.seek(0)
        assert proc.returncode == 0, out.read().decode()
    return cid


def delete_reaping(state_root: Path, cid: str) -> None:
    """delete --force, then reap what `exec -d` left to us: the exec'd processes are
    reparented to pytest (a subreaper), and the container's init cannot finish its exit
    until every process of its PID namespace is reaped (as a shim would)."""
    state = run_contain(state_root, "state", cid)
    pid = json.loads(state.stdout)["pid"] if state.returncode == 0 else 0
    run_contain(state_root, "delete", "--force", cid)

    def gone() -> bool:
        reap_zombies()
        return not pid or not os.path.exists(f"/proc/{pid}/cmdline") or \
            open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX"

    wait_for(gone)


def exec_detached(state_root: Path, *args: str, prefix: tuple[str, ...] = ()) -> None:
    """`exec -d` (output to a file, as above)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run([*prefix, *contain_cmd(), "--root", str(state_root), "exec",
                               "-d", *args],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60)
        out.seek(0)
        assert proc.returncode == 0, out.read().decode()


# -- pids.limit 0 --------------------------------------------------------------------------

def test_pids_limit_zero_is_a_limit(make_bundle: Callable[..., Bundle],
                                    state_root: Path) -> None:
    """runtime-spec 1.3: 0 is a real limit (pids.max 0: the container cannot fork), -1 is
    none (runc 1.4 made the same change; before, 0 meant no limit)."""
    bundle = make_bundle(["/bin/sh", "-c", "/bin/true && echo forked"])
    bundle.config["linux"]["resources"] = {"pids": {"limit": 0}}
    bundle.write()
    proc = run(state_root, bundle)
    assert "forked" not in proc.stdout and "can't fork" in proc.stderr, proc
    bundle.config["linux"]["resources"] = {"pids": {"limit": -1}}
    bundle.write()
    assert ok(run(state_root, bundle)).split() == ["forked"]
    bundle.config["linux"]["resources"] = {"pids": {"limit": -2}}
    bundle.write()
    fails(run(state_root, bundle), "$.linux.resources.pids.limit")
    nothing_left(state_root)


# -- process.execCPUAffinity ----------------------------------------------------------------

def _cpus_allowed(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(ln.split()[1] for ln in f if ln.startswith("Cpus_allowed_list:"))


def _pid_of(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip()))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_exec_cpu_affinity(make_bundle: Callable[..., Bundle], state_root: Path,
                           tmp_path: Path) -> None:
    """execCPUAffinity is for exec'd processes (the spec: not the init): `initial` before
    the process joins the container's cgroup, `final` after; read from the exec'd
    process's /proc/<pid>/status."""
    ours = _cpus_allowed(os.getpid())
    bundle = make_bundle(["/bin/sleep", "100"])
    bundle.config["process"]["execCPUAffinity"] = {"final": "1"}
    bundle.write()
    cid = detached(state_root, bundle)
    try:
        state = json.loads(ok(run_contain(state_root, "state", cid)))
        assert _cpus_allowed(state["pid"]) == ours  # the init: every CPU (as pytest's)
        cases = [({"final": "1"}, "1"), ({"initial": "1"}, "1"),
                 ({"initial": "0", "final": "1"}, "1"), ({"initial": "1", "final": "0"}, "0"),
                 (None, "1")]  # (None: the config's process, whose final is 1)
        for i, (affinity, want) in enumerate(cases):
            pid_file = tmp_path / f"exec{i}.pid"
            flags = ["--pid-file", str(pid_file)]
            if affinity is not None:
                process = dict(bundle.config["process"], args=["/bin/sleep", "100"],
                               execCPUAffinity=affinity)
                (tmp_path / "process.json").write_text(json.dumps(process))
                flags += ["--process", str(tmp_path / "process.json")]
            exec_detached(state_root, *flags, cid,
                          *(["/bin/sleep", "100"] if affinity is None else []))
            assert _cpus_allowed(_pid_of(pid_file)) == want, (affinity, want)
        # bad input: a CPU this machine lacks, a list that is no list
        process = dict(bundle.config["process"], execCPUAffinity={"initial": "4000"})
        (tmp_path / "process.json").write_text(json.dumps(process))
        fails(run_contain(state_root, "exec", "--process", str(tmp_path / "process.json"),
                          cid), "process.execCPUAffinity.initial")
        process["execCPUAffinity"] = {"final": "1-x"}
        (tmp_path / "process.json").write_text(json.dumps(process))
        fails(run_contain(state_root, "exec", "--process", str(tmp_path / "process.json"),
                          cid), "$.execCPUAffinity.final")
    finally:
        delete_reaping(state_root, cid)


PINNED = ("taskset", "-c", "0")  # the runtime's caller pins it to CPU 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_processes_do_not_inherit_the_runtimes_affinity(
        make_bundle: Callable[..., Bundle], state_root: Path, tmp_path: Path) -> None:
    """As runc 1.2.7/1.3.1 and later: a runtime started on CPU 0 alone (a systemd unit's
    CPUAffinity=, `taskset`) does not pass that on. The init and an exec'd process
    without execCPUAffinity get every CPU the container's cpuset allows (since Linux 6.2
    joining a cpuset no longer widens a mask the caller set); `initial` alone is kept,
    `final` wins."""
    every = _cpus_allowed(os.getpid())
    bundle = make_bundle(["/bin/sleep", "100"])
    cid = detached(state_root, bundle, prefix=PINNED)
    bounded = make_bundle(["/bin/sleep", "100"])
    bounded.config["linux"].setdefault("resources", {})["cpu"] = {"cpus": "1"}
    bounded.write()
    cid2 = ""
    try:
        state = json.loads(ok(run_contain(state_root, "state", cid)))
        assert _cpus_allowed(state["pid"]) == every
        cases = [(None, every), ({"initial": "1"}, "1"), ({"final": "0"}, "0")]
        for i, (affinity, want) in enumerate(cases):
            pid_file = tmp_path / f"exec{i}.pid"
            flags = ["--pid-file", str(pid_file)]
            if affinity is not None:
                process = dict(bundle.config["process"], execCPUAffinity=affinity)
                (tmp_path / "process.json").write_text(json.dumps(process))
                flags += ["--process", str(tmp_path / "process.json")]
            exec_detached(state_root, *flags, cid,
                          *(["/bin/sleep", "100"] if affinity is None else []),
                          prefix=PINNED)
            assert _cpus_allowed(_pid_of(pid_file)) == want, (affinity, want)
        # the container's cpuset bounds the reset
        cid2 = detached(state_root, bounded, prefix=PINNED)
        state = json.loads(ok(run_contain(state_root, "state", cid2)))
        assert _cpus_allowed(state["pid"]) == "1"
    finally:
        delete_reaping(state_root, cid)
        if cid2:
            delete_reaping(state_root, cid2)


# -- --pidfd-socket ------------------------------------------------------------------------

@pytest.fixture
def pidfd_listener(tmp_path: Path) -> Iterator[tuple[_socket.socket, str]]:
    path = str(tmp_path / "pidfd.sock")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.bind(path)
    sock.listen(4)
    yield sock, path
    sock.close()


def _receive_pidfd(listener: _socket.socket) -> tuple[int, str]:
    """Accept one connection and take the pidfd it carries (SCM_RIGHTS) and its name."""
    fd, _ = listener._accept()  # type: ignore[attr-defined]
    conn = _socket.socket(fileno=fd)
    try:
        data, anc, _flags, _addr = conn.recvmsg(64, _socket.CMSG_SPACE(4),
                                                _socket.MSG_CMSG_CLOEXEC)
    finally:
        conn.close()
    fds = [int.from_bytes(p[:4], "little") for lvl, kind, p in anc
           if lvl == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS]
    assert len(fds) == 1, anc
    return fds[0], data.decode()


def _pid_of_pidfd(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        return int(next(ln.split()[1] for ln in f if ln.startswith("Pid:")))


def _kill_through(pidfd: int) -> None:
    """SIGKILL through the pidfd, wait for the exit by polling it, and reap through it
    when the process is ours (an exec -d process is reparented to pytest, a subreaper)."""
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    assert poller.poll(20_000), "the pidfd did not report the exit"
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        pass


def test_pidfd_socket_run_and_exec(make_bundle: Callable[..., Bundle], state_root: Path,
                                   tmp_path: Path,
                                   pidfd_listener: tuple[_socket.socket, str]) -> None:
    """runc 1.2's --pidfd-socket: a pidfd of the container's init (run/create) or of the
    exec'd process goes over the unix socket; the receiver signals and waits with it."""
    listener, path = pidfd_listener
    bundle = make_bundle(["/bin/sleep", "100"])
    cid = detached(state_root, bundle, "--pidfd-socket", path)
    try:
        pidfd, name = _receive_pidfd(listener)
        try:
            state = json.loads(ok(run_contain(state_root, "state", cid)))
            assert name == "standard" and _pid_of_pidfd(pidfd) == state["pid"]
            pid_file = tmp_path / "exec.pid"
            exec_detached(state_root, "--pid-file", str(pid_file), "--pidfd-socket", path,
                          cid, "/bin/sleep", "100")
            exec_fd, exec_name = _receive_pidfd(listener)
            try:
                assert exec_name == "setns"
                assert _pid_of_pidfd(exec_fd) == _pid_of(pid_file)
                _kill_through(exec_fd)
            finally:
                os.close(exec_fd)
            _kill_through(pidfd)
            wait_for(lambda: json.loads(ok(run_contain(state_root, "state", cid)))
                     ["status"] == "stopped")
        finally:
            os.close(pidfd)
        ok(run_contain(state_root, "delete", cid))
        # a socket nobody listens on: an error naming the flag, nothing left behind
        proc = run(state_root, bundle, "--pidfd-socket", str(tmp_path / "nobody.sock"))
        fails(proc, "--pidfd-socket")
        nothing_left(state_root)
    finally:
        delete_reaping(state_root, cid)


# -- linux.memoryPolicy --------------------------------------------------------------------

def test_memory_policy(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """set_mempolicy(2) for the container's processes: /proc/self/numa_maps shows the
    task's policy on each mapping that has none of its own."""
    if not Path("/sys/devices/system/node/node0").exists():
        pytest.skip("no NUMA node 0 (a kernel without CONFIG_NUMA)")
    bundle = make_bundle(["/bin/sh", "-c", "head -1 /proc/self/numa_maps"])
    for policy, shown in (({"mode": "MPOL_BIND", "nodes": "0"}, "bind:0"),
                          ({"mode": "MPOL_INTERLEAVE", "nodes": "0",
                            "flags": ["MPOL_F_STATIC_NODES"]}, "interleave=static:0"),
                          ({"mode": "MPOL_PREFERRED", "nodes": "0"}, "prefer:0"),
                          ({"mode": "MPOL_LOCAL"}, "local")):
        bundle.config["linux"]["memoryPolicy"] = policy
        bundle.write()
        assert ok(run(state_root, bundle)).split()[1] == shown, policy
    for policy, field in (({"mode": "MPOL_NOPE"}, "$.linux.memoryPolicy.mode"),
                          ({"mode": "MPOL_BIND"}, "$.linux.memoryPolicy.nodes"),
                          ({"mode": "MPOL_LOCAL", "nodes": "0"}, "$.linux.memoryPolicy.nodes"),
                          ({"mode": "MPOL_BIND", "nodes": "0-"}, "$.linux.memoryPolicy.nodes"),
                          ({"mode": "MPOL_BIND", "nodes": "1000"}, "not online"),
                          ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_X"]},
                           "$.linux.memoryPolicy.flags[0]"),
                          ({"mode": "MPOL_BIND", "nodes": "0", "flags": [
                              "MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]},
                           "$.linux.memoryPolicy.flags"),
                          ({"nodes": "0"}, "$.linux.memoryPolicy.mode")):
        bundle.config["linux"]["memoryPolicy"] = policy
        bundle.write()
        fails(run(state_root, bundle), field)
    nothing_left(state_root)


# -- linux.intelRdt ------------------------------------------------------------------------

def test_intel_rdt_without_resctrl(make_bundle: Callable[..., Bundle],
                                   state_root: Path) -> None:
    """Where resctrl is not mounted, a config with intelRdt fails at create with one line
    naming the field (the spec: the runtime MUST generate an error); bad fields fail
    first, each with its path."""
    from contain.container.rdt import mountpoint

    if mountpoint() is not None:
        pytest.skip("resctrl is mounted here")
    bundle = make_bundle(["/bin/true"])
    for rdt, words in (({"closID": "g", "schemata": ["L3:0=ff"], "enableMonitoring": True},
                        ("$.linux.intelRdt:", "resctrl")),
                       ({"closID": "a/b"}, ("$.linux.intelRdt.closID",)),
                       ({"closID": ".."}, ("$.linux.intelRdt.closID",)),
                       ({"memBwSchema": "L3:0=1"}, ("$.linux.intelRdt.memBwSchema", "MB:")),
                       ({"schemata": ["L3:0=f\nMB:0=1"]}, ("$.linux.intelRdt.schemata[0]",
                                                          "newline")),
                       ({"schemata": "L3:0=f"}, ("$.linux.intelRdt.schemata",)),
                       ({"enableMonitoring": "yes"}, ("$.linux.intelRdt.enableMonitoring",))):
        bundle.config["linux"]["intelRdt"] = rdt
        bundle.write()
        fails(run(state_root, bundle), *words)
    nothing_left(state_root)


def test_intel_rdt_groups_on_a_stand_in_tree(tmp_path: Path) -> None:
    """The group logic against a directory standing in for resctrl (this machine has no
    RDT; a real resctrl makes a group's files itself on mkdir, which a plain directory
    does not, so the files are made here by hand): an existing closID group is compared,
    not written; the pid goes to tasks and to the monitoring group's tasks; delete
    removes the monitoring group and leaves a closID group alone."""
    from contain.container import rdt
    from contain.errors import ContainError
    from contain.spec.config import IntelRdt

    root = tmp_path / "resctrl"
    group = root / "gold"
    (group / "mon_groups").mkdir(parents=True)
    (root / "mon_groups").mkdir()
    (group / "schemata").write_text("    L3:0=0ff;1=fff\n    MB:0=100;1=100\n")
    (group / "tasks").write_text("")
    spec = IntelRdt.decode({"closID": "gold", "l3CacheSchema": "L3:0=ff;1=fff",
                            "enableMonitoring": True}, "$.linux.intelRdt")
    with pytest.raises(ContainError, match="monitoring group"):  # no tasks file: a
        rdt.apply(spec, "c1", 4242, root=str(root))              # plain mkdir made none
    assert not (group / "mon_groups" / "c1").exists()  # undone
    spec = IntelRdt.decode({"closID": "gold", "schemata": ["MB:0=100"]}, "$")
    done = rdt.apply(spec, "c1", 4242, root=str(root))
    assert (group / "tasks").read_text() == "4242"
    assert (group / "schemata").read_text().startswith("    L3:0=0ff")  # not written
    rdt.remove(done)
    assert group.is_dir()  # a closID group is not ours to remove
    spec = IntelRdt.decode({"closID": "gold", "schemata": ["MB:0=50"]}, "$")
    with pytest.raises(ContainError, match="other schemata"):
        rdt.apply(spec, "c1", 4242, root=str(root))
    missing = IntelRdt.decode({"closID": "silver"}, "$.linux.intelRdt")
    with pytest.raises(ContainError, match=r"\$\.linux\.intelRdt\.closID"):
        rdt.apply(missing, "c1", 4242, root=str(root))


# -- linux.netDevices ----------------------------------------------------------------------

class NetNs:
    """A network namespace of our own, held by a sleeping process (no /run/netns mount
    to leave behind); `ip` runs in it through nsenter."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "--net", "sleep", "300"])
        self.path = f"/proc/{self.proc.pid}/ns/net"
        wait_for(lambda: os.readlink(self.path) != os.readlink("/proc/self/ns/net"))
        self.enter = ("nsenter", f"--net={self.path}")

    def ip(self, *args: str) -> str:
        return subprocess.run([*self.enter, "ip", *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def links(self) -> list[str]:
        return [ln.split()[0].split("@")[0] for ln in self.ip("-br", "link").splitlines()]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def netns() -> Iterator[Callable[[], NetNs]]:
    made: list[NetNs] = []

    def make() -> NetNs:
        made.append(NetNs())
        return made[-1]

    yield make
    for ns in made:
        ns.close()


def test_net_devices_moved_renamed_and_up(make_bundle: Callable[..., Bundle],
                                          state_root: Path,
                                          netns: Callable[[], NetNs]) -> None:
    """A veth end in a network namespace of ours (where contain runs, as the host's
    stand-in) moves into the container's new namespace renamed, keeps its permanent
    global addresses (v4 and v6) and is up; when the container's namespace goes, the
    kernel destroys it (a virtual device: the spec's lifecycle)."""
    host = netns()
    host.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    host.ip("addr", "add", "10.99.0.1/24", "dev", "v0")
    host.ip("-6", "addr", "add", "fd00:99::1/64", "dev", "v0", "nodad")
    bundle = make_bundle(["/bin/sh", "-c", "ip -o addr show dev eth9; "
                          "cat /sys/class/net/eth9/flags; ls /sys/class/net"])
    bundle.config["linux"]["netDevices"] = {"v0": {"name": "eth9"}}
    bundle.write()
    out = ok(run(state_root, bundle, prefix=host.enter))
    assert "inet 10.99.0.1/24" in out and "inet6 fd00:99::1/64" in out, out
    flags = next(ln for ln in out.splitlines() if ln.startswith("0x"))
    assert int(flags, 16) & 0x1, out  # IFF_UP
    assert "v0" not in out.split()
    assert "v0" not in host.links()
    wait_for(lambda: "v1" not in host.links())  # (the kernel's cleanup runs apart)


def test_net_devices_stay_in_a_joined_namespace(make_bundle: Callable[..., Bundle],
                                                state_root: Path,
                                                netns: Callable[[], NetNs]) -> None:
    """Into a network namespace joined by path, with a kernel-numbered name ("%d"); on
    delete the device is not moved back: the spec says the runtime MUST NOT (the
    namespace's owner decides; runc 1.3+ does the same)."""
    host, pod = netns(), netns()
    host.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    bundle = make_bundle(["/bin/sleep", "100"])
    ns = bundle.config["linux"]["namespaces"]
    next(n for n in ns if n["type"] == "network")["path"] = pod.path
    pod.ip("link", "add", "taken", "type", "veth", "peer", "name", "taken1")
    bundle.config["linux"]["netDevices"] = {"v0": {"name": "taken"}}
    bundle.write()
    # a name taken in the joined namespace: refused before the move (the kernel renames
    # after it, and the device would be stranded there)
    fails(run(state_root, bundle, prefix=host.enter), "linux.netDevices.v0", "exists")
    assert "v0" in host.links()
    bundle.config["linux"]["netDevices"] = {"v0": {"name": "net%d"}}
    bundle.write()
    cid = unique_id("s13")
    with tempfile.TemporaryFile() as out:  # (not a pipe: the init would hold it open)
        proc = subprocess.run([*host.enter, *contain_cmd(), "--root", str(state_root),
                               "create", "--bundle", str(bundle.path), cid], stdout=out,
                              stderr=out, timeout=60, stdin=subprocess.DEVNULL)
        out.seek(0)
        output = out.read().decode()
    try:
        assert proc.returncode == 0, output
        assert "net0" in pod.links() and "v0" not in host.links()
        flags = pod.ip("-o", "link", "show", "net0").split("<", 1)[1].split(">")[0]
        assert "UP" in flags.split(","), flags
    finally:
        ok(run_contain(state_root, "delete", "--force", cid))
    assert "net0" in pod.links() and "v0" not in host.links()


def test_net_devices_bad_input(make_bundle: Callable[..., Bundle], state_root: Path,
                               netns: Callable[[], NetNs]) -> None:
    """Each mistake is one line naming the field, and nothing is left behind."""
    host = netns()
    host.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    bundle = make_bundle(["/bin/true"])
    cases = [({"nope0": {}}, "$.linux.netDevices.nope0", "no such network device"),
             ({"v0": {"name": "a/b"}}, "$.linux.netDevices.v0.name", "not a network"),
             ({"v0": {"name": "x" * 16}}, "$.linux.netDevices.v0.name", "15 bytes"),
             ({"v0": {"name": "lo"}}, "$.linux.netDevices.v0.name", "loopback"),
             ({"v0": {"name": "e"}, "v1": {"name": "e"}}, "$.linux.netDevices.v1", "also"),
             ({"v0": {"name": 7}}, "$.linux.netDevices.v0.name", "expected string")]
    for devices, field, why in cases:
        bundle.config["linux"]["netDevices"] = devices
        bundle.write()
        fails(run(state_root, bundle, prefix=host.enter), field, why)
    assert "v0" in host.links()  # (nothing was moved)
    bundle.config["linux"]["namespaces"] = [
        n for n in bundle.config["linux"]["namespaces"] if n["type"] != "network"]
    bundle.config["linux"]["netDevices"] = {"v1": {}}
    bundle.write()
    fails(run(state_root, bundle, prefix=host.enter), "$.linux.netDevices",
          "network namespace")
    nothing_left(state_root)


# -- the features document -----------------------------------------------------------------

def test_features_lists_the_new_fields() -> None:
    feats = json.loads(ok(subprocess.run([*contain_cmd(), "features"], capture_output=True,
                                         text=True, timeout=60)))
    linux = feats["linux"]
    assert feats["ociVersionMax"] == "1.3.0"
    assert linux["netDevices"] == {"enabled": True}
    assert linux["intelRdt"] == {"enabled": True, "schemata": True, "monitoring": True}
    assert set(linux["memoryPolicy"]["modes"]) == {
        "MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE",
        "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "MPOL_LOCAL"}
    assert set(linux["memoryPolicy"]["flags"]) == {
        "MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"}
