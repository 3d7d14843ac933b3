"""contain inspect / probe: facts read from the live kernel about real processes.

Everything here is real: the test process itself, processes started with unshare(1)
and bubblewrap, containers started by runc and by contain from busybox bundles. No
kernel interface is faked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import contain_cmd, default_config, run_contain, unique_id, wait_for
from contain.inspect import classes, probe, procfs, taxonomy

RUNC = shutil.which("runc")
UNSHARE = shutil.which("unshare")


def only_child(pid: int) -> int:
    kids = wait_for(lambda: procfs.children(pid))
    assert len(kids) == 1, kids
    return kids[0]


def with_retries(attempt: Any, tries: int = 5) -> Any:
    """Run *attempt* until it does not raise ProcessGone.

    While other test suites run on the same machine, their leak checks SIGKILL any new
    process in a foreign namespace -- our detached containers included -- so a
    container may vanish under us; that is retried, never accepted as a result."""
    for i in range(tries):
        try:
            return attempt()
        except procfs.ProcessGone:
            if i == tries - 1:
                raise
            time.sleep(0.2)
    return None


def detached(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `X run -d`: the container inherits stdio, so its output goes to a file, not
    to a pipe whose end it would hold open."""
    import tempfile

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=60)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, "", err.read())


def stop(proc: subprocess.Popen[bytes], inner: int | None = None) -> None:
    for pid in (inner, proc.pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait(timeout=30)


# -- the test process itself --------------------------------------------------------------

def test_self_is_a_host_process() -> None:
    facts = procfs.inspect_pid(os.getpid())
    assert facts["schema"] == "contain.inspect/1"
    assert facts["pid"] == os.getpid()
    for kind in procfs.NS_KINDS:
        ns = facts["namespaces"][kind]
        assert ns["private"] is False, kind
        assert ns["inode"] == int(os.readlink(f"/proc/self/ns/{kind}").split("[")[1][:-1])
    assert facts["namespaces"]["user"]["uid_map"] == [[0, 0, 4294967295]]
    sc = facts["seccomp"]
    assert {k: sc[k] for k in ("mode", "mode_name", "filters", "no_new_privs", "profile")} == {
        "mode": 0, "mode_name": "disabled", "filters": 0, "no_new_privs": False,
        "profile": None}
    assert sc["kind"] == "none" and sc["interception"]["returns"] == []
    assert facts["tracer"] is None
    root = facts["filesystem"]["root"]
    assert root["same_as_host"] is True and root["method"] == "host"
    # capabilities match what the kernel says (capget), decoded to names
    status = procfs.parse_status(Path("/proc/self/status").read_text())
    assert facts["capabilities"]["sets"]["effective"]["hex"] == status["CapEff"]
    assert "CAP_SYS_ADMIN" in facts["capabilities"]["sets"]["effective"]["names"]
    assert facts["capabilities"]["full_count"] == \
        int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1
    assert facts["class"]["name"] == "host"
    assert facts["cgroups"]["version"] in ("v1", "v2", "hybrid")
    paths = {",".join(h["controllers"]): h["path"] for h in facts["cgroups"]["hierarchies"]}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        assert paths[ctrl] == path


def test_cli_inspect_self_json_and_tree() -> None:
    proc = subprocess.run([*contain_cmd(), "inspect", "self", "--json"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "contain.inspect/1"
    assert doc["class"]["name"] == "host"
    assert set(doc["marks"]) == {f"{g}/{c}" for g, c in classes.COLUMNS}
    assert doc["marks"]["Container/Namespaces"]["mark"] is False
    text = subprocess.run([*contain_cmd(), "inspect", "--tree", str(os.getpid())],
                          capture_output=True, text=True, timeout=60).stdout
    assert "Virtualization" in text and "[ ] PID" in text and "[ ] Syscall User Dispatch" in text


# -- errors -----------------------------------------------------------------------------------

def test_missing_pid_is_a_one_line_error() -> None:
    pid = 4194304 + 1  # above pid_max's ceiling: never a live process
    with pytest.raises(procfs.ProcessGone):
        procfs.inspect_pid(pid)
    proc = subprocess.run([*contain_cmd(), "inspect", str(pid)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert proc.stdout == ""


def test_unknown_container_id(state_root: Path) -> None:
    proc = run_contain(state_root, "inspect", "no-such-container")
    assert proc.returncode == 1
    assert "no-such-container" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr


def test_process_that_vanishes_mid_read_is_gone_not_partial() -> None:
    child = subprocess.Popen(["sleep", "60"])
    wait_for(lambda: (procfs._read_file(f"/proc/{child.pid}/comm") or "") == "sleep")
    reader = procfs._Proc(child.pid)  # the directory fd is open: the read has begun
    try:
        assert "sleep" in (reader.read("comm") or "")
        child.kill()
        child.wait()
        with pytest.raises(procfs.ProcessGone, match="exited while it was being inspected"):
            reader.read("status")
        with pytest.raises(procfs.ProcessGone):
            reader.readlink("ns/net")
    finally:
        reader.close()
    with pytest.raises(procfs.ProcessGone):
        procfs.inspect_pid(child.pid)


def test_zombie_is_reported_gone() -> None:
    child = subprocess.Popen(["true"])
    wait_for(lambda: procfs._read_file(f"/proc/{child.pid}/stat").split(") ")[1][0] == "Z")
    try:
        with pytest.raises(procfs.ProcessGone, match="exited"):
            procfs.inspect_pid(child.pid)
    finally:
        child.wait()


def test_process_we_may_not_read() -> None:
    """An unprivileged inspector (uid 65534, in a forked child of this test) may not read
    a root process's namespaces: one clear error, no partial result."""
    target = subprocess.Popen(["sleep", "60"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody and inspect
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                procfs.inspect_pid(target.pid)
                msg = "no error"
            except procfs.AccessDenied as exc:
                msg = f"denied: {exc}"
            except Exception as exc:
                msg = f"other: {type(exc).__name__}: {exc}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode()
        os.waitpid(pid, 0)
    finally:
        target.kill()
        target.wait()
    assert msg.startswith("denied: "), msg
    assert f"process {target.pid}: permission denied" in msg


# -- processes with known isolation -----------------------------------------------------

@pytest.mark.skipif(UNSHARE is None, reason="unshare(1) not installed")
def test_unshare_pid_net_uts_ipc_mount() -> None:
    proc = subprocess.Popen([UNSHARE, "--fork", "--pid", "--mount-proc", "--net", "--uts",
                             "--ipc", "sleep", "60"])
    inner = None
    try:
        inner = only_child(proc.pid)
        wait_for(lambda: (procfs._read_file(f"/proc/{inner}/comm") or "") == "sleep")
        facts = procfs.inspect_pid(inner)
        ns = facts["namespaces"]
        private = {k for k in procfs.NS_KINDS if ns[k]["private"]}
        assert private == {"pid", "net", "uts", "ipc", "mnt"}
        assert ns["pid"]["nspid"] == [inner, 1]
        assert ns["net"]["inode"] == int(os.readlink(f"/proc/{inner}/ns/net")[5:-1])
        assert facts["class"]["name"] == "container"
        assert "Container/Namespaces" in " ".join(facts["class"]["evidence"])
        # same root directory: unshare does not pivot or chroot
        assert facts["filesystem"]["root"]["method"] == "host"
        marks = classes.table_marks(facts)
        real = taxonomy.realised(facts, marks)
        assert real["container.namespaces.pid"] and real["container.namespaces.net"]
        assert real["container.namespaces.user"] is False
    finally:
        stop(proc, inner)


@pytest.mark.skipif(UNSHARE is None, reason="unshare(1) not installed")
def test_unshare_user_namespace_maps() -> None:
    proc = subprocess.Popen([UNSHARE, "--user", "--map-user=1000", "--map-group=1000", "--fork",
                             "sleep", "60"])
    inner = None
    try:
        inner = only_child(proc.pid)
        wait_for(lambda: (procfs._read_file(f"/proc/{inner}/comm") or "") == "sleep")
        facts = procfs.inspect_pid(inner)
        user = facts["namespaces"]["user"]
        assert user["private"] is True
        assert user["uid_map"] == [[1000, 0, 1]]
        assert user["gid_map"] == [[1000, 0, 1]]
        assert facts["capabilities"]["in_user_namespace"] is True
        # uid 1000 in its namespace: no effective capabilities
        assert facts["capabilities"]["sets"]["effective"]["names"] == []
    finally:
        stop(proc, inner)


# -- runc containers ----------------------------------------------------------------------

def runc_config(args: list[str], cgpath: str) -> dict[str, Any]:
    cfg = default_config(args)
    cfg["linux"]["cgroupsPath"] = cgpath
    cfg["linux"]["resources"] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": 64 * 1024 * 1024},
        "pids": {"limit": 32},
        "cpu": {"quota": 50000, "period": 100000},
    }
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mount", "unshare", "swapoff"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 1}],
    }
    cfg["hostname"] = "inspected"
    return cfg


@pytest.fixture
def runc_root(tmp_path: Path) -> Path:
    return tmp_path / "runc-root"


def runc(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    assert RUNC is not None
    return subprocess.run([RUNC, "--root", str(root), *args], text=True, timeout=60, **kw)


@pytest.mark.skipif(RUNC is None, reason="runc not installed")
def test_runc_container_every_field(make_bundle: Any, runc_root: Path) -> None:
    cid = unique_id("insp")
    cgpath = f"/contain-test-inspect-{cid}"
    bundle = make_bundle(config=runc_config(["/bin/sleep", "60"], cgpath))

    def start_and_inspect() -> dict[str, Any]:
        runc(runc_root, "delete", "--force", cid, capture_output=True)
        proc = detached([RUNC or "runc", "--root", str(runc_root), "run", "-d", "--bundle",
                         str(bundle.path), cid])
        if "already dead" in proc.stderr:
            raise procfs.ProcessGone(proc.stderr)
        assert proc.returncode == 0, proc.stderr
        state = json.loads(runc(runc_root, "state", cid, capture_output=True).stdout)
        return procfs.inspect_pid(state["pid"], descendants=True)

    try:
        facts = with_retries(start_and_inspect)

        private = {k for k in procfs.NS_KINDS if facts["namespaces"][k]["private"]}
        assert private == {"pid", "net", "ipc", "uts", "mnt", "cgroup"}
        assert facts["namespaces"]["pid"]["nspid"][1:] == [1]

        cg = facts["cgroups"]
        mem = cg["limits"]["memory"]["max"]
        assert mem["value"] == mem["effective"] == 64 * 1024 * 1024
        assert mem["set_at"] == cgpath
        assert cg["limits"]["pids"]["max"]["effective"] == 32
        assert cg["limits"]["cpu"]["quota_cpus"]["effective"] == 0.5
        assert cg["limits"]["devices"]["restricted"] is True
        assert {"memory.max", "pids.max", "cpu.quota", "devices"} <= set(cg["enforced"])
        paths = {",".join(h["controllers"]): h["path"] for h in cg["hierarchies"]}
        assert paths["memory"] == cgpath

        capsf = facts["capabilities"]
        want = sorted(default_config()["process"]["capabilities"]["bounding"])
        assert sorted(capsf["sets"]["bounding"]["names"]) == want
        assert sorted(capsf["sets"]["effective"]["names"]) == want
        assert "CAP_SYS_ADMIN" in capsf["missing"]["bounding"]

        assert facts["seccomp"]["mode"] == 2 and facts["seccomp"]["mode_name"] == "filter"
        assert facts["seccomp"]["filters"] >= 1
        assert facts["seccomp"]["no_new_privs"] is True
        assert facts["tracer"] is None

        fs = facts["filesystem"]
        assert fs["root"]["same_as_host"] is False
        assert fs["root"]["method"] == "pivot_root"
        assert fs["root"]["readonly"] is True
        assert fs["root"]["source_root"].endswith("/rootfs")
        cfg = bundle.config["linux"]
        # runc masks only what exists on this kernel (no /proc/kcore here, for one)
        assert {p for p in cfg["maskedPaths"] if os.path.exists(p)} == set(fs["masked_paths"])
        assert {p for p in cfg["readonlyPaths"] if os.path.exists(p)} <= \
            set(fs["readonly_paths"])
        assert "/proc/keys" in fs["masked_paths"]
        assert fs["root"]["propagation"] in ("private", "slave")

        marks = classes.table_marks(facts)
        assert marks["Container/Namespaces"]["mark"] is True
        assert marks["Container/Cgroups"]["mark"] is True
        assert marks["Container/Capabilities"]["mark"] is True
        # a kernel-only deny list: filtering, not interception (no BPF mark, as the
        # survey's Table 1 gives Docker and Podman none)
        assert marks["Sandbox/BPF"]["mark"] is False
        assert facts["seccomp"]["kind"] == "filter"
        assert "notify" not in facts["seccomp"]["interception"]["returns"]
        assert marks["Sandbox/ptrace"]["mark"] is False
        assert marks["Sandbox/SUD"]["mark"] is False  # read in a ptrace stop
        assert facts["class"]["name"] == "container"
        real = taxonomy.realised(facts, marks)
        for leaf in ("container.cgroups.memory", "container.cgroups.pids", "container.cgroups.cpu",
                     "container.cgroups.devices"):
            assert real[leaf] is True, leaf
        assert real["hypervisor.abstraction.HWA"] is False
    finally:
        runc(runc_root, "delete", "--force", cid, capture_output=True)


@pytest.mark.skipif(RUNC is None, reason="runc not installed")
def test_probe_inside_busybox_runc_container(make_bundle: Any, runc_root: Path) -> None:
    cid = unique_id("probe")
    cfg = runc_config(["/bin/sh", "-c", probe.script()], f"/contain-test-inspect-{cid}")
    bundle = make_bundle(config=cfg)
    proc = runc(runc_root, "run", "--bundle", str(bundle.path), cid, stdin=subprocess.DEVNULL,
                capture_output=True)
    try:
        assert proc.returncode == 0, proc.stderr
        facts = probe.parse(proc.stdout)
    finally:
        runc(runc_root, "delete", "--force", cid, capture_output=True)
    host = probe.run_here()[1]
    assert facts["hostname"] == "inspected"
    assert facts["pid1_comm"] == "sh" and facts["nspid"] == [1]
    assert facts["kernel"] == host["kernel"]  # a container shares the host's kernel
    assert facts["capabilities"]["effective"]["count"] == 3
    assert facts["seccomp"]["mode"] == 2 and facts["seccomp"]["no_new_privs"] is True
    assert facts["root"]["readonly"] is True
    ns = facts["namespaces"]
    assert ns["pid"]["self"].startswith("pid:[") and ns["pid"]["same_as_init"] is True
    res = facts["syscalls"]["results"]
    # filtered by the profile (EPERM = errnoRet 1) or refused for want of a capability
    # busybox words EPERM from mount(2) as "permission denied (are you root?)"
    assert res["mount"]["verdict"] == "denied" and res["mount"]["errno"] in ("EPERM", "EACCES")
    assert res["swapoff"]["verdict"] == "denied"
    assert res["mknod"]["verdict"] == "denied"  # no CAP_MKNOD
    assert res["kill_init"]["verdict"] == "allowed"
    assert host["syscalls"]["results"]["mount"]["verdict"] == "allowed"
    assert facts["syscalls"]["reachable"] < host["syscalls"]["reachable"]
    assert facts["cgroup_files"].get("/sys/fs/cgroup/memory/memory.limit_in_bytes") == \
        str(64 * 1024 * 1024)


def test_probe_script_cli_and_format() -> None:
    script = subprocess.run([*contain_cmd(), "probe", "--script"], capture_output=True,
                            text=True, timeout=60).stdout
    assert script == probe.script()
    assert script.startswith("#!/bin/sh")
    # a POSIX shell runs it; busybox ash too
    for sh in ("/bin/sh", shutil.which("busybox")):
        if sh is None:
            continue
        argv = [sh, "-c", script] if not sh.endswith("busybox") else [sh, "sh", "-c", script]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL).stdout
        facts = probe.parse(out)
        assert facts["syscalls"]["tried"] >= 8
        assert facts["kernel"]["release"] == os.uname().release
    with pytest.raises(probe.ProbeError, match="incomplete"):
        probe.parse(out.replace(probe.TRAILER, ""))
    with pytest.raises(probe.ProbeError, match="header"):
        probe.parse("garbage\n")
    proc = subprocess.run([*contain_cmd(), "probe", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == 1


def test_errno_recovered_from_messages() -> None:
    assert probe.errno_of("unshare: unshare(0x10000000): Operation not permitted") == "EPERM"
    assert probe.errno_of("mount: permission denied (are you root?)") == "EACCES"
    assert probe.errno_of("swapoff: x: swapoff failed: Function not implemented") == "ENOSYS"
    assert probe.errno_of("all fine") is None


# -- contain containers -------------------------------------------------------------------

def test_contain_container_by_id(make_bundle: Any, state_root: Path) -> None:
    cid = unique_id("insp")
    cfg = runc_config(["/bin/sleep", "60"], f"/contain-test-inspect-{cid}")
    bundle = make_bundle(config=cfg)

    def start_and_inspect() -> tuple[dict[str, Any], dict[str, Any]]:
        run_contain(state_root, "delete", "--force", cid)
        proc = detached([*contain_cmd(), "--root", str(state_root), "run", "-d", "--bundle",
                         str(bundle.path), cid])
        assert proc.returncode == 0, f"contain run -d failed: {proc.stderr}"
        out = run_contain(state_root, "inspect", cid, "--json")
        if "has no running process" in out.stderr or "exited" in out.stderr:
            raise procfs.ProcessGone(out.stderr)
        assert out.returncode == 0, out.stderr
        state = json.loads(run_contain(state_root, "state", cid).stdout)
        return json.loads(out.stdout), state

    try:
        doc, state = with_retries(start_and_inspect)
        assert doc["pid"] == state["pid"]
        assert doc["container"]["id"] == cid
        assert doc["seccomp"]["mode"] == 2
        assert doc["seccomp"]["profile"] == {"source": "container config",
                                             "default_action": "SCMP_ACT_ALLOW",
                                             "allowed_syscalls": None, "denied_syscalls": 3,
                                             "rules": 1}
        private = {k for k in procfs.NS_KINDS if doc["namespaces"][k]["private"]}
        assert private == {"pid", "net", "ipc", "uts", "mnt", "cgroup"}
        assert doc["cgroups"]["limits"]["memory"]["max"]["effective"] == 64 * 1024 * 1024
        assert doc["filesystem"]["root"]["method"] == "pivot_root"
        assert doc["filesystem"]["root"]["readonly"] is True
        assert doc["class"]["name"] == "container"
        assert doc["seccomp"]["kind"] == "filter"
        text = run_contain(state_root, "inspect", cid)
        if text.returncode == 0:  # (unless a foreign leak check killed it meanwhile)
            assert f"container {cid}" in text.stdout and "class: container" in text.stdout
    finally:
        run_contain(state_root, "delete", "--force", cid)
    gone = run_contain(state_root, "inspect", cid)
    assert gone.returncode == 1 and gone.stderr.strip().count("\n") == 0


def _notify_filtered_child(listener_out: list[int]) -> int:
    """A child whose seccomp filter hands getppid to user space (USER_NOTIF); the
    listener is copied into this process (as a supervisor holds it) when *listener_out*
    is given a slot, else closed with the child's copy (nobody receives)."""
    from contain.linux import seccomp as kseccomp
    from contain.security import seccomp as sec
    from contain.spec.config import Seccomp

    prog = sec.compile_filter(Seccomp.decode(
        {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock",
         "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]},
        "$.linux.seccomp"))
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            from contain.linux.syscalls import prctl

            prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
            fd = sec.load_filter(prog)
            os.write(w, f"{fd}\n".encode())
            time.sleep(0.5)  # the parent copies the listener meanwhile
            os.close(fd)
            os.close(w)
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as rf:
        fd = int(rf.readline())
        if listener_out is not None:
            pidfd = os.pidfd_open(pid)
            try:
                listener_out.append(kseccomp.pidfd_getfd(pidfd, fd))
            finally:
                os.close(pidfd)
        rf.read()  # the child closed its copy
    return pid


@pytest.mark.parametrize("supervised", [True, False])
def test_interception_is_told_from_filtering(supervised: bool) -> None:
    """A filter returning USER_NOTIF with a live receiver is interception (the sandbox
    class's BPF mark, with the supervisor as evidence); the same filter with nobody
    receiving is a filter whose notified calls fail."""
    held: list[int] = []
    pid = _notify_filtered_child(held if supervised else None)  # type: ignore[arg-type]
    try:
        facts = procfs.inspect_pid(pid)
        sc = facts["seccomp"]
        assert "notify" in sc["interception"]["returns"]
        marks = classes.table_marks(facts)
        if supervised:
            assert sc["kind"] == "interception"
            assert os.getpid() in [s["pid"] for s in sc["interception"]["supervisors"]]
            assert marks["Sandbox/BPF"]["mark"] is True
            assert facts["class"]["name"] == "sandbox"
        else:
            holders = [s["pid"] for s in sc["interception"]["supervisors"]]
            assert os.getpid() not in holders
            if not holders:  # (another session on this machine may hold a listener)
                assert sc["kind"] == "filter" and "fail closed" in sc["kind_evidence"]
                assert marks["Sandbox/BPF"]["mark"] is False
                assert facts["class"]["name"] == "host"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in held:
            os.close(fd)
