"""The spawn driver and its protocol: framing, strict order, what died and how."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Bundle, contain_cmd, run_contain, unique_id
from contain.process import sync

# -- the channel itself (a real SOCK_SEQPACKET pair) ------------------------------------------


def test_a_message_larger_than_a_packet_arrives_whole() -> None:
    a, b = sync.Channel.pair()
    try:
        big = "v" * (3 * sync.CHUNK + 17)
        # the sender blocks until the reader drains the socket: send from a thread
        sender = threading.Thread(target=a.send, args=(sync.HOOKS_DONE,),
                                  kwargs={"state": {"annotations": {"big": big}}})
        sender.start()
        msg = b.expect(sync.HOOKS_DONE)
        sender.join()
        assert msg["state"]["annotations"]["big"] == big
        a.send(sync.GO, start=True)  # and the next one is framed on its own
        assert b.expect(sync.GO)["start"] is True
    finally:
        a.close()
        b.close()


def test_an_unexpected_kind_is_a_protocol_error_not_kept_for_later() -> None:
    a, b = sync.Channel.pair()
    try:
        a.send(sync.CGROUP)
        a.send(sync.USERNS_DONE)
        with pytest.raises(sync.ProtocolError, match="expected 'userns-done', got 'cgroup'"):
            b.expect(sync.USERNS_DONE)
        # nothing stashed: the next message is the next one on the wire
        assert b.expect(sync.USERNS_DONE)["t"] == sync.USERNS_DONE
    finally:
        a.close()
        b.close()


def test_the_childs_error_is_structured_and_formatted_by_the_parent() -> None:
    a, b = sync.Channel.pair()
    try:
        err = OSError(2, "mount /proc: No such file or directory")
        a.send(sync.ERROR, **sync.error_fields(err))
        raw = b.recv()
        assert raw["kind"] == "os" and raw["errno"] == 2
        a.send(sync.ERROR, **sync.error_fields(FileNotFoundError(2, "No such file", "/x/y")))
        with pytest.raises(sync.ChildError) as info:
            b.expect(sync.READY)
        assert str(info.value) == "/x/y: No such file" and info.value.errno == 2
    finally:
        a.close()
        b.close()


def test_a_closed_channel_is_channel_closed() -> None:
    a, b = sync.Channel.pair()
    a.close()
    try:
        with pytest.raises(sync.ChannelClosed):
            b.expect(sync.READY)
    finally:
        b.close()


# -- through a real container -------------------------------------------------------------------


def test_env_value_over_64k(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    bundle = make_bundle(["sh", "-c", "echo ${#BIG}"])
    bundle.config["process"]["env"].append("BIG=" + "x" * 70_000)
    bundle.write()
    proc = run_contain(state_root, "run", "-b", str(bundle.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "70000"


def test_hook_state_over_64k(make_bundle: Callable[..., Bundle], state_root: Path,
                             tmp_path: Path) -> None:
    """The init's createContainer hook gets the state the parent sends it over the
    channel: with an annotation of 100 000 bytes that message is over 64 KiB."""
    out = tmp_path / "state.json"
    bundle = make_bundle(["/bin/true"])
    bundle.config["annotations"] = {"big": "y" * 100_000}
    bundle.config["hooks"] = {"createContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"]}]}
    bundle.write()
    cid = unique_id()
    proc = run_contain(state_root, "run", "-b", str(bundle.path), cid)
    assert proc.returncode == 0, proc.stderr[-500:]
    state = json.loads(out.read_text())
    assert state["id"] == cid and state["annotations"]["big"] == "y" * 100_000


def test_child_error_over_64k(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    name = "/no-such-" + "z" * 70_000
    bundle = make_bundle([name])
    proc = run_contain(state_root, "run", "-b", str(bundle.path), unique_id())
    assert proc.returncode != 0
    # (the message may quote the name shortened: that is not the channel's business)
    assert "/no-such-zzzz" in proc.stderr and "no such file or directory" in proc.stderr
    assert "internal error" not in proc.stderr and "JSON" not in proc.stderr


def test_create_names_the_init_and_how_it_died(make_bundle: Callable[..., Bundle],
                                               state_root: Path) -> None:
    """A createContainer hook runs as a child of the init: it kills the init before
    the init is ready, and create says what died and how. (No PID namespace: a PID 1
    cannot be killed from inside its own.)"""
    bundle = make_bundle(["/bin/true"])
    linux = bundle.config["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "pid"]
    bundle.config["hooks"] = {"createContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}]}
    bundle.write()
    proc = run_contain(state_root, "create", "-b", str(bundle.path), unique_id())
    assert proc.returncode != 0
    assert "the container's init was killed by signal 9 before it was ready" in proc.stderr


def _freezer_tasks(state_root: Path, cid: str) -> set[int]:
    out = run_contain(state_root, "ps", "--format", "json", cid, check=True).stdout
    return set(json.loads(out))


def test_exec_names_the_execd_process_and_how_it_died(make_bundle: Callable[..., Bundle],
                                                      state_root: Path) -> None:
    """An exec into a paused container (--ignore-paused) is frozen as soon as the
    runtime joins it to the cgroup, before it is ready: killed there, exec says that
    the exec'd process died (not the container's init) and how."""
    bundle = make_bundle(["sleep", "300"])
    cid = unique_id()
    subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d", "-b",
                    str(bundle.path), cid], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    try:
        before = _freezer_tasks(state_root, cid)
        run_contain(state_root, "pause", cid, check=True)
        exe = subprocess.Popen([*contain_cmd(), "--root", str(state_root), "exec",
                                "--ignore-paused", cid, "/bin/true"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            new: set[int] = set()
            while not new and time.monotonic() < deadline:
                time.sleep(0.05)
                new = _freezer_tasks(state_root, cid) - before
            assert new, "the exec'd process never joined the cgroup"
            for pid in new:
                os.kill(pid, 9)
            run_contain(state_root, "resume", cid, check=True)
            _, err = exe.communicate(timeout=60)
        finally:
            if exe.poll() is None:
                exe.kill()
                exe.wait()
        assert exe.returncode != 0
        assert "the exec'd process was killed by signal 9 before it was ready" in err, err
        assert "init" not in err
    finally:
        run_contain(state_root, "resume", cid)
        run_contain(state_root, "delete", "--force", cid, check=True)


# -- after the seccomp filter, nothing but execve -----------------------------------------------

# what busybox's `echo` needs once it runs (a static binary: no loader, no libc probing);
# no close_range, statfs, recvmsg, openat, ...: the runtime may make none of those calls
# after it has loaded the container's filter
_BUSYBOX_ECHO = ["execve", "arch_prctl", "set_tid_address", "brk", "mprotect", "write",
                 "exit_group", "exit"]


@pytest.mark.parametrize("no_new_privs", [True, False])
def test_a_profile_that_allows_only_execve_and_the_program(
        make_bundle: Callable[..., Bundle], state_root: Path, no_new_privs: bool) -> None:
    """defaultAction ERRNO, and allowed only what busybox echo needs: after loading the
    filter the runtime makes no call but execve (also without no_new_privs, when
    loading it needs CAP_SYS_ADMIN, which the process does not get)."""
    bundle = make_bundle(["echo", "ok"])
    bundle.config["process"]["noNewPrivileges"] = no_new_privs
    allowed = _BUSYBOX_ECHO
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}
    bundle.write()
    proc = run_contain(state_root, "run", "-b", str(bundle.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"


def test_a_strict_profile_through_create_start_and_exec(make_bundle: Callable[..., Bundle],
                                                        state_root: Path) -> None:
    """The same through create (the init waits on exec.fifo: that open and write come
    before the filter), start, and an exec into the running container."""
    bundle = make_bundle(["sleep", "300"])
    bundle.config["process"]["noNewPrivileges"] = False
    allowed = [*_BUSYBOX_ECHO, "nanosleep", "clock_nanosleep", "restart_syscall"]
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}
    bundle.write()
    cid = unique_id()
    subprocess.run([*contain_cmd(), "--root", str(state_root), "create", "-b",
                    str(bundle.path), cid], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    try:
        run_contain(state_root, "start", cid, check=True)
        proc = run_contain(state_root, "exec", cid, "echo", "in")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "in\n"
        state = json.loads(run_contain(state_root, "state", cid, check=True).stdout)
        assert state["status"] == "running"
    finally:
        run_contain(state_root, "delete", "--force", cid, check=True)


def _cap_lines(make_bundle: Callable[..., Bundle], state_root: Path,
               seccomp: dict[str, object] | None, user: dict[str, int]) -> list[str]:
    bundle = make_bundle(["grep", "^Cap", "/proc/self/status"])
    bundle.config["process"]["noNewPrivileges"] = False
    bundle.config["process"]["user"] = user
    if seccomp is not None:
        bundle.config["linux"]["seccomp"] = seccomp
    bundle.write()
    proc = run_contain(state_root, "run", "-b", str(bundle.path), unique_id())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize("user", [{"uid": 0, "gid": 0}, {"uid": 1000, "gid": 1000}])
def test_cap_sys_admin_kept_for_the_filter_does_not_reach_the_process(
        make_bundle: Callable[..., Bundle], state_root: Path, user: dict[str, int]) -> None:
    """Loading the filter without no_new_privs keeps CAP_SYS_ADMIN until then: the
    process's capability sets are exactly those it has without a filter."""
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}
    with_filter = _cap_lines(make_bundle, state_root, seccomp, user)
    without = _cap_lines(make_bundle, state_root, None, user)
    assert with_filter == without
    eff = int(next(line for line in with_filter if line.startswith("CapEff")).split()[1], 16)
    assert not eff & (1 << 21)


def test_an_early_failure_of_the_child_is_reported_as_the_child_said(
        make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """The child fails at once (setns of an IPC namespace as the UTS one), while the
    parent is still making the cgroup: the parent's next step (joining a dead process
    to the cgroup, or a send to a closed channel) fails too, but the error is the
    child's own report, not "exited with status 1"."""
    bundle = make_bundle(["/bin/true"])
    for ns in bundle.config["linux"]["namespaces"]:
        if ns["type"] == "uts":
            ns["path"] = "/proc/self/ns/ipc"
    bundle.write()
    for _ in range(3):
        proc = run_contain(state_root, "run", "-b", str(bundle.path), unique_id())
        assert proc.returncode != 0
        assert "setns ipc:[" in proc.stderr and "Invalid argument" in proc.stderr, proc.stderr
