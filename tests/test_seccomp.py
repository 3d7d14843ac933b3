"""Seccomp: OCI profiles compiled with libseccomp, loaded in a forked child, observed for
real on this kernel (errno, SIGSYS, the -ENOSYS stub, argument conditions, user
notification through an agent that receives the listener the way runc sends it)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contain.errors import SpecError
from contain.linux import libseccomp
from contain.linux import seccomp as kseccomp
from contain.security import seccomp as sec
from contain.security.seccomp_default import default_profile
from contain.spec.config import Seccomp

pytestmark = pytest.mark.skipif(not libseccomp.available(), reason="libseccomp.so.2 missing")

PATH = "$.linux.seccomp"


def nr(name: str) -> int:
    n = libseccomp.syscall_resolve_name(name)
    assert n >= 0, name
    return n


def profile(default: str = "SCMP_ACT_ALLOW", syscalls: list[dict[str, Any]] | None = None,
            **extra: Any) -> Seccomp:
    obj: dict[str, Any] = {"defaultAction": default, "syscalls": syscalls or []}
    obj.update(extra)
    return Seccomp.decode(obj, PATH)


def compiled(default: str = "SCMP_ACT_ALLOW", syscalls: list[dict[str, Any]] | None = None,
             **extra: Any) -> sec.SeccompProgram:
    return sec.compile_filter(profile(default, syscalls, **extra))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw(name_or_nr: str | int, *args: int) -> tuple[int, int]:
    """A raw syscall: (return value, errno). Extra arguments reach the filter even when
    the syscall ignores them, which is how argument conditions are tested on getppid."""
    n = nr(name_or_nr) if isinstance(name_or_nr, str) else name_or_nr
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(n), *(ctypes.c_ulong(a) for a in args))
    return int(ret), (ctypes.get_errno() if ret == -1 else 0)


class Child:
    """The outcome of a forked child: its wait status and what it reported (JSON)."""

    def __init__(self, status: int, report: Any) -> None:
        self.status = status
        self.report = report

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    @property
    def exit_code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.01)


def in_child(body: Callable[[Callable[[Any], None]], Any], program: sec.SeccompProgram | None,
             nnp: bool = True, timeout: float = 30,
             after_load: Callable[[int | None, int], None] | None = None) -> Child:
    """Fork; in the child set no_new_privs, load *program*, run body(report). *report*
    writes a JSON value to the parent; *after_load(listener_fd, report_fd)* runs right
    after loading. The child never returns into pytest."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS dumps core

            def report(value: Any) -> None:
                os.write(w, json.dumps(value).encode() + b"\n")

            if nnp:
                from contain.linux.syscalls import prctl

                prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
            listener = sec.load_filter(program) if program is not None else None
            if after_load is not None:
                after_load(listener, w)
            body(report)
        except BaseException as e:
            try:
                os.write(w, json.dumps({"error": repr(e)}).encode() + b"\n")
            except BaseException:
                pass
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 0.2)
            if ready:
                data = os.read(r, 65536)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(r)
        status = _wait(pid, 5)
    lines = [json.loads(x) for x in b"".join(chunks).splitlines() if x.strip()]
    report = lines[0] if len(lines) == 1 else lines
    if isinstance(report, dict) and "error" in report:
        raise AssertionError(f"child failed: {report['error']}")
    return Child(status, report)


# -- actions -------------------------------------------------------------------------------

def test_errno_with_errno_ret_and_default_eperm() -> None:
    prog = compiled(syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
        {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"},
    ])
    assert prog.flags == 0 and not prog.notify
    child = in_child(lambda report: report([raw("getppid"), raw("getpgrp"), raw("getpid")]),
                     prog)
    assert child.exit_code == 0
    (ppid, pgrp, me) = child.report
    assert ppid == [-1, errno.EXDEV]
    assert pgrp == [-1, errno.EPERM]
    assert me[0] > 0 and me[1] == 0


def test_default_errno_ret_and_enosys_stub() -> None:
    """Default deny with defaultErrnoRet: unlisted calls get that errno, calls numbered
    above every call the profile names get ENOSYS (runc's stub), listed ones work."""
    needed = ["read", "write", "close", "exit", "exit_group", "brk", "mmap", "munmap",
              "mremap", "madvise", "mprotect", "rt_sigprocmask", "rt_sigaction",
              "rt_sigreturn", "futex", "getpid", "sigaltstack", "fstat", "newfstatat",
              "lseek", "ioctl"]
    prog = compiled("SCMP_ACT_ERRNO", [{"names": needed, "action": "SCMP_ACT_ALLOW"}],
                    defaultErrnoRet=errno.EACCES)
    top = max(nr(n) for n in needed)
    child = in_child(lambda report: report([raw("getppid"), raw(top + 1), raw("getpid")]),
                     prog)
    assert child.exit_code == 0, child.report
    ppid, above, me = child.report
    assert ppid == [-1, errno.EACCES]
    assert above == [-1, errno.ENOSYS]
    assert me[0] > 0


def test_no_stub_when_default_errno_is_enosys_or_allow() -> None:
    plain = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}])
    stubbed = compiled("SCMP_ACT_ERRNO", [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}])
    enosys = compiled("SCMP_ACT_ERRNO", [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}],
                      defaultErrnoRet=errno.ENOSYS)
    assert enosys.instructions < stubbed.instructions
    assert plain.instructions < stubbed.instructions


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_KILL_PROCESS"])
def test_kill_actions_kill_with_sigsys(action: str) -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": action}])

    def body(report: Callable[[Any], None]) -> None:
        report("before")
        raw("getppid")
        report("survived")

    child = in_child(body, prog)
    assert child.report == "before"
    assert child.signal == signal.SIGSYS


def test_trap_delivers_sigsys() -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}])

    def body(report: Callable[[Any], None]) -> None:
        got: list[int] = []
        signal.signal(signal.SIGSYS, lambda signum, frame: got.append(signum))
        res = raw("getppid")
        for _ in range(100):  # the Python-level handler runs between bytecodes
            if got:
                break
            time.sleep(0.001)
        report({"signals": got, "ret": res[0]})

    child = in_child(body, prog)
    assert child.exit_code == 0
    assert child.report["signals"] == [signal.SIGSYS]
    assert child.report["ret"] != os.getpid()  # the call did not run


def test_log_allows() -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_LOG"}])
    child = in_child(lambda report: report(raw("getppid")), prog)
    assert child.report == [os.getpid(), 0]


def test_log_writes_an_audit_record() -> None:
    """SCMP_ACT_LOG also logs (through audit or the kernel log): look for the record."""
    try:
        with open("/proc/sys/kernel/seccomp/actions_logged") as f:
            logged = f.read().split()
        kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        pytest.skip(f"kernel log not readable: {e}")
    try:
        if "log" not in logged:
            pytest.skip("the kernel does not log SCMP_ACT_LOG here")
        os.lseek(kmsg, 0, os.SEEK_END)
        prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_LOG"}])
        child = in_child(lambda report: report([os.getpid(), raw("getppid")]), prog)
        pid = child.report[0]
        found = False
        deadline = time.monotonic() + 5
        while not found and time.monotonic() < deadline:
            try:
                rec = os.read(kmsg, 8192).decode(errors="replace")
            except BlockingIOError:
                time.sleep(0.05)
                continue
            except OSError:  # EPIPE: overwritten records
                continue
            if "type=1326" in rec and f"pid={pid}" in rec and f"syscall={nr('getppid')}" in rec:
                found = True
        if not found:
            pytest.skip("no seccomp record seen (audit may route it elsewhere)")
    finally:
        os.close(kmsg)


def test_trace_without_tracer_is_enosys() -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_TRACE"}])
    child = in_child(lambda report: report(raw("getppid")), prog)
    assert child.report == [-1, errno.ENOSYS]


def test_allow_rule_under_deny_default_and_errno_zero() -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                               "errnoRet": 0}])
    child = in_child(lambda report: report(raw("getppid")), prog)
    assert child.report == [0, 0]  # "succeeds" without running


# -- argument conditions -------------------------------------------------------------------

def _cond_prog(args: list[dict[str, Any]]) -> sec.SeccompProgram:
    return compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                               "errnoRet": errno.EIO, "args": args}])


def _denied(prog: sec.SeccompProgram, calls: list[tuple[int, ...]]) -> list[bool]:
    child = in_child(lambda report: report([raw("getppid", *a) for a in calls]), prog)
    assert child.exit_code == 0, child.report
    return [r == [-1, errno.EIO] for r in child.report]


@pytest.mark.parametrize(("op", "value", "denied", "allowed"), [
    ("SCMP_CMP_EQ", 7, [7], [6, 8]),
    ("SCMP_CMP_NE", 7, [6, 8], [7]),
    ("SCMP_CMP_LT", 7, [0, 6], [7, 8]),
    ("SCMP_CMP_LE", 7, [6, 7], [8]),
    ("SCMP_CMP_GT", 7, [8, 2**40], [7, 0]),
    ("SCMP_CMP_GE", 7, [7, 8], [6]),
    ("SCMP_CMP_EQ", 0x1_0000_0007, [0x1_0000_0007], [7, 0x2_0000_0007]),
])
def test_argument_ops(op: str, value: int, denied: list[int], allowed: list[int]) -> None:
    prog = _cond_prog([{"index": 1, "value": value, "op": op}])
    calls = [(0, v) for v in denied + allowed]
    assert _denied(prog, calls) == [True] * len(denied) + [False] * len(allowed)


def test_masked_eq() -> None:
    # value is the mask, valueTwo what the masked argument must equal
    prog = _cond_prog([{"index": 0, "value": 0xF0, "valueTwo": 0x30,
                        "op": "SCMP_CMP_MASKED_EQ"}])
    assert _denied(prog, [(0x30,), (0x3F,), (0x130,), (0x40,), (0x0F,)]) == \
        [True, True, True, False, False]


def test_conditions_on_distinct_args_are_anded() -> None:
    prog = _cond_prog([{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                       {"index": 2, "value": 3, "op": "SCMP_CMP_EQ"}])
    assert _denied(prog, [(1, 0, 3), (1, 0, 4), (2, 0, 3)]) == [True, False, False]


def test_conditions_on_the_same_arg_are_ored_as_runc_does() -> None:
    prog = _cond_prog([{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                       {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}])
    assert _denied(prog, [(1,), (2,), (3,)]) == [True, True, False]


# -- names, redundancy, architectures, flags -------------------------------------------------

def test_unknown_syscall_names_are_skipped() -> None:
    prog = compiled(syscalls=[{"names": ["no_such_syscall_xyz", "getppid"],
                               "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS}])
    child = in_child(lambda report: report(raw("getppid")), prog)
    assert child.report == [-1, errno.EROFS]


def test_rule_with_the_default_action_is_skipped() -> None:
    # libseccomp refuses such a rule; runc drops it silently
    prog = compiled("SCMP_ACT_ERRNO", [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["read", "write", "exit_group", "getpid"], "action": "SCMP_ACT_ALLOW"},
    ])
    assert prog.instructions > 0


def test_architectures_are_added() -> None:
    one = compiled("SCMP_ACT_ERRNO", [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}])
    machine = os.uname().machine
    extra = {"x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
             "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}.get(machine)
    if extra is None:
        pytest.skip(f"no multi-arch case for {machine}")
    multi = compiled("SCMP_ACT_ERRNO", [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}],
                     architectures=extra)
    assert multi.instructions > one.instructions


@pytest.mark.parametrize("flag", ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                  "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
def test_flags_reach_the_kernel(flag: str) -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}],
                    flags=[flag])
    assert prog.flags == kseccomp.FILTER_FLAGS[flag]
    child = in_child(lambda report: report([raw("getppid"), kseccomp.mode()]), prog)
    assert child.report == [[-1, errno.EPERM], 2]


def test_load_without_nnp_needs_cap_sys_admin() -> None:
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}])
    child = in_child(lambda report: report(raw("getppid")), prog, nnp=False)
    assert child.report == [-1, errno.EPERM]  # loaded as root without no_new_privs

    def drop_then_load(report: Callable[[Any], None]) -> None:
        from contain.linux.syscalls import capset

        capset(0, 0, 0)
        try:
            sec.load_filter(prog)
        except Exception as e:
            report(str(e))
            return
        report("loaded")

    child = in_child(drop_then_load, None, nnp=False)
    assert "error loading seccomp filter" in child.report


# -- bad input --------------------------------------------------------------------------------

def _base_rules() -> list[dict[str, Any]]:
    return [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["close"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]


def _bad(mutate: Callable[[dict[str, Any]], None]) -> SpecError:
    obj: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": _base_rules(),
                           "architectures": [], "flags": []}
    mutate(obj)
    with pytest.raises(SpecError) as ei:
        sec.compile_filter(Seccomp.decode(obj, PATH))
    return ei.value


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda o: o.update(defaultAction="SCMP_ACT_BOGUS"), "$.linux.seccomp.defaultAction"),
    (lambda o: o["syscalls"][1].update(action="SCMP_ACT_NOPE"),
     "$.linux.seccomp.syscalls[1].action"),
    (lambda o: o["architectures"].append("SCMP_ARCH_VAX"), "$.linux.seccomp.architectures[0]"),
    (lambda o: o["syscalls"][3]["args"][0].update(op="SCMP_CMP_ALMOST"),
     "$.linux.seccomp.syscalls[3].args[0].op"),
    (lambda o: o["syscalls"][3]["args"][0].pop("op"), "$.linux.seccomp.syscalls[3].args[0].op"),
    (lambda o: o["syscalls"][3]["args"][0].update(index=6),
     "$.linux.seccomp.syscalls[3].args[0].index"),
    (lambda o: o["syscalls"][3]["args"][0].update(value=-1),
     "$.linux.seccomp.syscalls[3].args[0].value"),
    (lambda o: o["syscalls"][3]["args"][0].update(value="1"),
     "$.linux.seccomp.syscalls[3].args[0].value"),
    (lambda o: o["syscalls"][3].update(args=[7]), "$.linux.seccomp.syscalls[3].args[0]"),
    (lambda o: o["syscalls"][2].update(names="close"), "$.linux.seccomp.syscalls[2].names"),
    (lambda o: o["syscalls"][2].update(names=[""]), "$.linux.seccomp.syscalls[2].names[0]"),
    (lambda o: o["syscalls"][3].update(errnoRet=70000), "$.linux.seccomp.syscalls[3].errnoRet"),
    (lambda o: o["flags"].append("SECCOMP_FILTER_FLAG_FAST"), "$.linux.seccomp.flags[0]"),
    (lambda o: o["flags"].append("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
     "$.linux.seccomp.flags"),
    (lambda o: o["syscalls"][0].update(action="SCMP_ACT_NOTIFY"),
     "$.linux.seccomp.listenerPath"),
    (lambda o: (o.update(listenerPath="/run/agent.sock"),
                o["syscalls"][1].update(action="SCMP_ACT_NOTIFY")),
     "$.linux.seccomp.syscalls[1].names[0]"),
    (lambda o: o.update(defaultAction="SCMP_ACT_NOTIFY", listenerPath="/run/a.sock"),
     "$.linux.seccomp.defaultAction"),
])
def test_bad_profiles_are_refused_with_the_json_path(mutate: Callable[[dict[str, Any]], None],
                                                     path: str) -> None:
    err = _bad(mutate)
    assert err.path == path, str(err)
    assert "\n" not in str(err)


def test_unsupported_architecture_names_the_field() -> None:
    if libseccomp.arch_resolve_name("m68k"):
        pytest.skip("this libseccomp knows m68k")
    err = _bad(lambda o: o["architectures"].extend(["SCMP_ARCH_X86", "SCMP_ARCH_M68K"]))
    assert err.path == "$.linux.seccomp.architectures[1]"
    assert "libseccomp" in err.message


def test_missing_libseccomp_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from contain.errors import ContainError

    monkeypatch.setattr(libseccomp, "_lib", None)
    monkeypatch.setattr(libseccomp, "LIBRARY", "libseccomp-not-here.so.2")
    with pytest.raises(ContainError, match="libseccomp"):
        compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}])


# -- user notification ---------------------------------------------------------------------

class Agent(threading.Thread):
    """A seccomp agent as a separate program would be: it listens on a unix socket,
    receives the ContainerProcessState message with the listener fd (runc's shape), then
    answers getppid with 4242 once and lets the second call continue."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(20)
        self.message: dict[str, Any] | None = None
        self.fds_received = 0
        self.seen: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        listener = -1
        try:
            conn, _ = self.sock.accept()
            with conn:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
            self.fds_received = len(fds)
            self.message = json.loads(msg)
            listener = fds[self.message["fds"].index("seccompFd")]
            for extra in fds:
                if extra != listener:
                    os.close(extra)
            answered = 0
            while answered < 2:
                ready, _, _ = select.select([listener], [], [], 20)
                if not ready:
                    raise TimeoutError("no notification")
                req = kseccomp.notif_recv(listener)
                self.seen.append(req.nr)
                assert kseccomp.notif_id_valid(listener, req.id)
                if answered == 0:
                    kseccomp.notif_send(listener, req.id, val=4242)
                else:
                    kseccomp.notif_send(listener, req.id,
                                        flags=kseccomp.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
                answered += 1
        except BaseException as e:
            self.error = e
        finally:
            if listener >= 0:
                os.close(listener)
            self.sock.close()


def test_notify_reaches_an_agent_with_runcs_message(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "agent.sock")
    agent = Agent(sock_path)
    agent.start()
    prog = compiled(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}],
                    listenerPath=sock_path, listenerMetadata="hello-agent",
                    flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
    assert prog.notify
    assert prog.flags & kseccomp.SECCOMP_FILTER_FLAG_NEW_LISTENER
    assert prog.listener_path == sock_path and prog.listener_metadata == "hello-agent"

    # the init's side: write(2) the listener's number (write can never be notified)
    def after_load(listener: int | None, report_fd: int) -> None:
        assert listener is not None
        os.write(report_fd, json.dumps({"listener": listener}).encode() + b"\n")

    def body(report: Callable[[Any], None]) -> None:
        report([raw("getppid"), raw("getppid")])

    r, w = os.pipe2(os.O_CLOEXEC)
    # run the child by hand to act as the runtime's parent in the middle
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            from contain.linux.syscalls import prctl

            prctl(38, 1)
            listener = sec.load_filter(prog)
            after_load(listener, w)
            body(lambda v: os.write(w, json.dumps(v).encode() + b"\n"))
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as rf:
            first = json.loads(rf.readline())
            # the runtime's side: copy the fd out of the init, hand it to the agent
            pidfd = os.pidfd_open(pid)
            try:
                listener = kseccomp.pidfd_getfd(pidfd, first["listener"])
            finally:
                os.close(pidfd)
            state = {"ociVersion": "1.2.0", "id": "seccomp-test", "status": "running",
                     "pid": pid, "bundle": str(tmp_path)}
            try:
                sec.send_listener(sock_path, listener, state, prog.listener_metadata)
            finally:
                os.close(listener)
            result = json.loads(rf.readline())
    finally:
        status = _wait(pid, 20)
        agent.join(20)
    assert agent.error is None, repr(agent.error)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert result == [[4242, 0], [os.getpid(), 0]]
    assert agent.seen == [nr("getppid")] * 2
    assert agent.fds_received == 1
    msg = agent.message
    assert msg is not None
    assert msg["ociVersion"] == "1.2.0"
    assert msg["fds"] == ["seccompFd"]
    assert msg["pid"] == pid
    assert msg["metadata"] == "hello-agent"
    assert msg["state"] == state


def test_send_listener_without_agent_is_a_clear_error(tmp_path: Path) -> None:
    from contain.errors import ContainError

    r, w = os.pipe()
    try:
        with pytest.raises(ContainError, match="cannot send seccomp fd"):
            sec.send_listener(str(tmp_path / "nobody.sock"), r, {"pid": 1}, None)
    finally:
        os.close(r)
        os.close(w)


def test_process_state_shape_omits_empty_metadata() -> None:
    st = {"ociVersion": "1.2.0", "id": "x", "status": "running", "pid": 12, "bundle": "/b"}
    msg = sec.process_state(st, None)
    assert msg == {"ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": 12, "state": st}


# -- the default profile -----------------------------------------------------------------------

def _default_checks(report: Callable[[Any], None]) -> None:
    out = {
        "getppid": raw("getppid"),
        "unshare": raw("unshare", 0x00020000),
        "mount": raw("mount", 0, 0, 0, 0, 0),
        "keyctl": raw("keyctl", 0),
        "vsock": raw("socket", 40, 1, 0),
        "clone3": raw("clone3", 0, 0),
        # CLONE_NEWUSER|CLONE_THREAD is invalid for the kernel (EINVAL) if the filter lets
        # it through: no process is created either way
        "clone_ns": raw("clone", 0x10000000 | 0x00010000, 0, 0, 0, 0),
        "personality_query": raw("personality", 0xFFFFFFFF),
        "personality_exec": raw("personality", 0x0400000),
        "above_table": raw(nr("futex_requeue") + 10),
    }
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()  # other families work
    report(out)


def test_default_profile_confines_like_engines_do() -> None:
    prof = default_profile(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == errno.EPERM
    prog = sec.compile_filter(Seccomp.decode(prof, PATH))
    child = in_child(_default_checks, prog)
    assert child.exit_code == 0, child.report
    r = child.report
    assert r["getppid"] == [os.getpid(), 0]
    for denied in ("unshare", "mount", "keyctl", "vsock", "clone_ns", "personality_exec"):
        assert r[denied] == [-1, errno.EPERM], denied
    assert r["clone3"] == [-1, errno.ENOSYS]
    assert r["above_table"] == [-1, errno.ENOSYS]
    assert r["personality_query"][1] == 0


def test_default_profile_follows_capabilities() -> None:
    prof = default_profile(["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"])
    names = {n for s in prof["syscalls"] for n in s["names"]}
    assert {"mount", "unshare", "setns", "chroot", "clone3"} <= names
    assert not any(s["names"] == ["clone"] and s.get("args") for s in prof["syscalls"])
    prog = sec.compile_filter(Seccomp.decode(prof, PATH))
    child = in_child(lambda report: report(raw("clone3", 0, 0)), prog)
    assert child.report[1] != errno.ENOSYS and child.report[1] != errno.EPERM  # EFAULT/EINVAL


def test_default_profile_runs_a_shell() -> None:
    prog = sec.compile_filter(Seccomp.decode(default_profile(), PATH))
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.dup2(w, 1)
            from contain.linux.syscalls import prctl

            prctl(38, 1)
            sec.load_filter(prog)
            os.execv("/bin/busybox", ["sh", "-c",
                                      "echo start; ls / >/dev/null && echo ls; "
                                      "cat /proc/self/status | grep ^Seccomp:; "
                                      "unshare -m true 2>/dev/null || echo no-unshare"])
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    status = _wait(pid, 30)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    assert out.split() == ["start", "ls", "Seccomp:", "2", "no-unshare"]


def test_compiled_program_cache(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    sc = Seccomp.decode(default_profile(), PATH)
    first = sec.compile_filter(sc, cache_dir=cache)
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith(".bpf")
    assert os.stat(os.path.join(cache, files[0])).st_mode & 0o777 == 0o600
    again = sec.compile_filter(sc, cache_dir=cache)
    assert again.bpf == first.bpf and again.flags == first.flags
    other = sec.compile_filter(Seccomp.decode(default_profile(["CAP_SYS_ADMIN"]), PATH),
                               cache_dir=cache)
    assert other.bpf != first.bpf and len(os.listdir(cache)) == 2
    # a tampered (group-writable) entry is not trusted
    os.chmod(os.path.join(cache, files[0]), 0o660)
    with open(os.path.join(cache, files[0]), "wb") as f:
        f.write(b"\0" * 8)
    assert sec.compile_filter(sc, cache_dir=cache).bpf == first.bpf


def test_cached_program_needs_no_libseccomp_binding(tmp_path: Path) -> None:
    """A cache hit compiles nothing: neither ctypes nor the libseccomp binding is loaded
    (the cache key reads libseccomp's version through the lean native layer), and the
    program is the one the binding compiled."""
    import subprocess
    import sys

    from conftest import SRC

    cache = str(tmp_path / "cache")
    sc = Seccomp.decode(default_profile(), PATH)
    first = sec.compile_filter(sc, cache_dir=cache)
    assert kseccomp.libseccomp_version() == libseccomp.version()
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from contain.security import seccomp as sec\n"
            "from contain.security.seccomp_default import default_profile\n"
            "from contain.spec.config import Seccomp\n"
            "sc = Seccomp.decode(default_profile(), '$')\n"
            f"p = sec.compile_filter(sc, cache_dir={cache!r})\n"
            "sys.stdout.write(p.bpf.hex() + ' ' + str(p.flags) + ' ' + "
            "str(sorted(m for m in sys.modules if 'ctypes' == m or 'libseccomp' in m)))\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == [first.bpf.hex(), str(first.flags), "[]"]


# -- through the runtime: `contain run` with linux.seccomp from config.json ------------------

def _run(make_bundle: Callable[..., Any], state_root: Path, script: str,
         seccomp: dict[str, Any] | None, **kw: Any) -> Any:
    from conftest import run_contain, unique_id

    bundle = make_bundle(["/bin/sh", "-c", script])
    if seccomp is not None:
        bundle.config["linux"]["seccomp"] = seccomp
    else:
        bundle.config["linux"].pop("seccomp", None)
    bundle.write()
    return run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id("sc"),
                       timeout=60, **kw)


def test_container_denied_syscall_returns_configured_errno(make_bundle: Callable[..., Any],
                                                           state_root: Path) -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}]}
    p = _run(make_bundle, state_root,
             "grep ^Seccomp: /proc/self/status; mkdir /tmp/d || echo refused", prof)
    assert p.returncode == 0, p.stderr
    assert "Seccomp:\t2" in p.stdout and "refused" in p.stdout
    assert os.strerror(errno.EXDEV) in p.stderr


def test_container_kill_process(make_bundle: Callable[..., Any], state_root: Path) -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    p = _run(make_bundle, state_root, "echo before; exec mkdir /tmp/d", prof)
    assert p.stdout.strip() == "before"
    assert p.returncode == 128 + signal.SIGSYS, (p.returncode, p.stderr)


def test_container_default_profile(make_bundle: Callable[..., Any], state_root: Path) -> None:
    prof = default_profile(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    p = _run(make_bundle, state_root,
             "echo ok; ls / >/dev/null && echo ls; unshare -m true 2>/dev/null || echo no-unshare;"
             " hostname x 2>/dev/null || echo no-hostname", prof)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ok", "ls", "no-unshare", "no-hostname"]


def test_container_bad_profile_fails_at_create(make_bundle: Callable[..., Any],
                                               state_root: Path) -> None:
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["write"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}
    p = _run(make_bundle, state_root, "true", prof)
    assert p.returncode != 0
    assert "$.linux.seccomp.syscalls[1].args[0].op" in p.stderr
    assert not list(state_root.iterdir())


def test_container_notify_reaches_agent(make_bundle: Callable[..., Any], state_root: Path,
                                        tmp_path: Path) -> None:
    """mkdir is answered by the agent (success without a directory), the agent gets the
    listener with runc's ContainerProcessState message."""
    sock_path = str(tmp_path / "agent.sock")
    agent = MkdirAgent(sock_path)
    agent.start()
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock_path,
            "listenerMetadata": "meta-1",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    try:
        p = _run(make_bundle, state_root,
                 "mkdir /tmp/d && echo said-ok; test -d /tmp/d || echo no-dir", prof)
    finally:
        agent.stop.set()
        agent.join(30)
    assert agent.error is None, repr(agent.error)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["said-ok", "no-dir"]
    msg = agent.message
    assert msg is not None
    assert msg["fds"] == ["seccompFd"] and msg["metadata"] == "meta-1"
    assert msg["state"]["pid"] > 0 and msg["state"]["id"].startswith("sc")
    assert msg["pid"] > 0
    assert agent.answered >= 1


class MkdirAgent(threading.Thread):
    """Answers every notification with success (val 0) until stopped."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.stop = threading.Event()
        self.message: dict[str, Any] | None = None
        self.answered = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        listener = -1
        try:
            conn, _ = self.sock.accept()
            with conn:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
            self.message = json.loads(msg)
            listener = fds[0]
            while not self.stop.is_set():
                ready, _, _ = select.select([listener], [], [], 0.1)
                if not ready:
                    continue
                try:
                    req = kseccomp.notif_recv(listener)
                    kseccomp.notif_send(listener, req.id, val=0)
                except OSError as e:
                    if e.errno == errno.ENOENT:  # the caller went away
                        continue
                    raise
                self.answered += 1
        except BaseException as e:
            self.error = e
        finally:
            if listener >= 0:
                os.close(listener)
            self.sock.close()
