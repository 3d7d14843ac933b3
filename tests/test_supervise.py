"""Syscall supervisors (the sandbox class): policies decided in user space by the
seccomp user-notification supervisor and by the ptrace supervisor, seen from inside
real workloads on the real kernel."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import contain_cmd, run_contain

# a system interpreter: the sandboxed command runs as an unprivileged user, which cannot
# reach one under root's home (pyenv's)
PY = os.path.realpath(shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
                      or sys.executable)
BOTH = pytest.mark.parametrize("supervisor", ["notify", "ptrace"])


def write_policy(tmp_path: Path, policy: dict[str, object], name: str = "p.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(policy))
    return str(path)


def supervised(root: Path, policy: str, script: str, supervisor: str = "notify",
               report: Path | None = None, timeout: float = 90,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    args = ["sandbox", "--supervise", policy, "--supervisor", supervisor, *extra]
    if report is not None:
        args += ["--supervise-report", str(report)]
    return run_contain(root, *args, "--", PY, "-c", script, timeout=timeout)


def events(report: Path) -> list[dict[str, object]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line]


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


MKDIR = """
import os
try:
    os.mkdir('/tmp/d')
    print('made')
except OSError as e:
    print('errno', e.errno)
"""


@BOTH
def test_deny_with_errno(state_root: Path, tmp_path: Path, supervisor: str) -> None:
    pol = write_policy(tmp_path, {"mkdir": {"action": "deny", "errno": "EROFS"}})
    report = tmp_path / "r.jsonl"
    proc = supervised(state_root, pol, MKDIR, supervisor, report)
    assert ok(proc).split() == ["errno", "30"]
    ev = [e for e in events(report) if e["syscall"] == "mkdir"]
    assert ev and ev[0]["action"] == "deny" and ev[0]["errno"] == 30
    assert ev[0]["supervisor"] == supervisor
    assert "1 denied (mkdir)" in proc.stderr  # the summary


@BOTH
def test_log_allows_and_reports(state_root: Path, tmp_path: Path, supervisor: str) -> None:
    pol = write_policy(tmp_path, {"mkdir": "log"})
    report = tmp_path / "r.jsonl"
    proc = supervised(state_root, pol, MKDIR + "print(os.path.isdir('/tmp/d'))",
                      supervisor, report)
    assert ok(proc).split() == ["made", "True"]
    assert [e["action"] for e in events(report) if e["syscall"] == "mkdir"] == ["log"]


@BOTH
def test_kill(state_root: Path, tmp_path: Path, supervisor: str) -> None:
    pol = write_policy(tmp_path, {"mkdir": "kill"})
    report = tmp_path / "r.jsonl"
    proc = supervised(state_root, pol,
                      "import os, sys\nprint('before', flush=True)\nos.mkdir('/tmp/k')\n"
                      "print('after', flush=True)", supervisor, report)
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["before"]
    assert [e["action"] for e in events(report) if e["syscall"] == "mkdir"] == ["kill"]


@BOTH
def test_emulate_uname_and_return(state_root: Path, tmp_path: Path, supervisor: str) -> None:
    pol = write_policy(tmp_path, {
        "uname": {"action": "emulate", "handler": "uname", "release": "2.6.32-contain",
                  "machine": "pdp11"},
        "getppid": {"action": "emulate", "handler": "return", "value": 4242},
    })
    out = ok(supervised(state_root, pol,
                        "import os\nu = os.uname()\nprint(u.release, u.machine, u.nodename)\n"
                        "print(os.getppid())", supervisor))
    assert out.split() == ["2.6.32-contain", "pdp11", "sandbox", "4242"]


@BOTH
def test_children_threads_and_exec_stay_supervised(state_root: Path, tmp_path: Path,
                                                    supervisor: str) -> None:
    pol = write_policy(tmp_path, {"mkdir": {"action": "deny", "errno": "EROFS"}})
    script = f"""
import os, subprocess, threading
def attempt(tag):
    try:
        os.mkdir('/tmp/' + tag)
        print(tag, 'made', flush=True)
    except OSError as e:
        print(tag, e.errno, flush=True)
t = threading.Thread(target=attempt, args=('thread',)); t.start(); t.join()
pid = os.fork()
if pid == 0:
    attempt('child'); os._exit(0)
os.waitpid(pid, 0)
subprocess.run(['{PY}', '-c', 'import os\\ntry:\\n os.mkdir("/tmp/x")\\n'
                'except OSError as e:\\n print("exec", e.errno)'])
subprocess.run(['/bin/sh', '-c', 'mkdir /tmp/sh 2>/dev/null || echo shell denied'])
"""
    out = ok(supervised(state_root, pol, script, supervisor))
    assert out.splitlines() == ["thread 30", "child 30", "exec 30", "shell denied"]


def test_open_path_policy(state_root: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path, {
        "openat": {"action": "emulate", "handler": "open", "default": "ro",
                   "paths": {"/etc/shadow": "deny", "/tmp": "rw", "/dev": "rw",
                             "/proc": "rw"}},
        "open": {"action": "emulate", "handler": "open", "default": "ro",
                 "paths": {"/etc/shadow": "deny", "/tmp": "rw"}},
    })
    report = tmp_path / "r.jsonl"
    script = """
import os
def tryopen(p, flags=os.O_RDONLY):
    try:
        fd = os.open(p, flags, 0o644); os.close(fd); return 'ok'
    except OSError as e:
        return e.errno
os.symlink('/etc/shadow', '/tmp/link')
print(tryopen('/etc/passwd'), tryopen('/etc/shadow'), tryopen('/tmp/link'),
      tryopen('/tmp/new', os.O_WRONLY | os.O_CREAT), tryopen('/etc/hostname', os.O_WRONLY))
os.chdir('/etc')
print(tryopen('passwd'), tryopen('../etc/shadow'), tryopen('/proc/self/status'))
print(open('/tmp/new').read() == '', os.path.exists('/tmp/new'))
"""
    out = ok(supervised(state_root, pol, script, "notify", report)).splitlines()
    assert out[0].split() == ["ok", "13", "13", "ok", "13"]
    assert out[1].split() == ["ok", "13", "ok"]
    assert out[2].split() == ["True", "True"]
    denied = [e for e in events(report) if e.get("result") == -13]
    assert any(e.get("detail") == "/etc/shadow" for e in denied)


def test_open_holds_against_a_thread_flipping_the_path(state_root: Path,
                                                       tmp_path: Path) -> None:
    """Another thread rewrites the path buffer while the call is in flight: the
    supervisor opens what it decided on, never what the buffer says later."""
    pol = write_policy(tmp_path, {
        "openat": {"action": "emulate", "handler": "open", "default": "ro",
                   "paths": {"/etc/shadow": "deny", "/etc/gshadow": "deny"}},
    })
    script = r"""
import ctypes, os, threading, time
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(64)
good, bad = b'/etc/passwd\0', b'/etc/shadow\0'
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, good, len(good))
        ctypes.memmove(buf, bad, len(bad))
t = threading.Thread(target=flip); t.start()
opened = {}
deadline = time.time() + 4
n = 0
while time.time() < deadline:
    fd = libc.openat(-100, buf, 0)
    n += 1
    if fd >= 0:
        where = os.readlink(f'/proc/self/fd/{fd}')
        opened[where] = opened.get(where, 0) + 1
        os.close(fd)
stop = True; t.join()
print(n, sorted(opened.items()))
"""
    out = ok(supervised(state_root, pol, script, "notify", timeout=120)).strip()
    n_text, _, rest = out.partition(" ")
    assert int(n_text) > 50
    assert "/etc/passwd" in rest
    assert "/etc/shadow" not in rest


OPENAT2_SCRIPT = r"""
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
NR_OPENAT2 = 437
def openat2(dirfd, path, flags=0, resolve=0, size=24, extra=b''):
    how = ctypes.create_string_buffer(struct.pack('=QQQ', flags, 0, resolve) + extra)
    fd = libc.syscall(NR_OPENAT2, dirfd, path.encode(), how, size)
    if fd < 0:
        return 'e%d' % ctypes.get_errno()
    data = os.read(fd, 5) if not flags & os.O_PATH else b''
    os.close(fd)
    return data.decode(errors='replace').strip() or 'ok'
BENEATH, IN_ROOT, NO_SYMLINKS, NO_MAGICLINKS, NO_XDEV = 0x08, 0x10, 0x04, 0x02, 0x01
os.makedirs('/tmp/jail/etc')
with open('/tmp/jail/etc/passwd', 'w') as f:
    f.write('jail\n')
os.symlink('/etc/passwd', '/tmp/jail/link')
os.symlink('/etc/passwd', '/tmp/plainlink')
jail = os.open('/tmp/jail', os.O_PATH)
etc = os.open('/etc', os.O_PATH)
print('beneath', openat2(etc, 'passwd', 0, BENEATH), openat2(etc, '../etc/passwd', 0, BENEATH),
      openat2(etc, '/etc/passwd', 0, BENEATH), openat2(jail, 'link', 0, BENEATH))
print('in_root', openat2(jail, 'link', 0, IN_ROOT), openat2(jail, '/etc/passwd', 0, IN_ROOT),
      openat2(jail, '../../etc/passwd', 0, IN_ROOT))
print('no_symlinks', openat2(-100, '/tmp/plainlink', 0, NO_SYMLINKS),
      openat2(-100, '/etc/passwd', 0, NO_SYMLINKS))
fd0 = os.open('/etc/passwd', os.O_RDONLY)
print('no_magiclinks', openat2(-100, '/proc/self/fd/%d' % fd0, 0, NO_MAGICLINKS),
      openat2(-100, '/proc/self/fd/%d' % fd0, 0, 0))
print('no_xdev', openat2(-100, '/proc/self/status', 0, NO_XDEV),
      openat2(-100, '/tmp/jail/etc/passwd', 0, NO_XDEV))
print('bad', openat2(-100, '/etc/passwd', 0, BENEATH | IN_ROOT), openat2(-100, '/etc/passwd',
      0, 0x400), openat2(-100, '/etc/passwd', 0, 0, 32, b'\1' + bytes(7)),
      openat2(-100, '/etc/passwd', 0, 0, 16))
os.chdir('/tmp/jail')
print('cwd_scoped', openat2(-100, '/etc/passwd', 0, IN_ROOT), openat2(-100, 'etc/passwd', 0,
      BENEATH), openat2(-100, '../jail/etc/passwd', 0, BENEATH))
os.chdir('/')
root = os.open('/', os.O_PATH)
print('policy', openat2(root, '/etc/../etc/shadow', 0, IN_ROOT), openat2(etc, 'shadow', 0, BENEATH))
"""


def test_openat2_resolve_flags(state_root: Path, tmp_path: Path) -> None:
    """openat2's RESOLVE_* flags under the open path policy mean what they mean
    without supervision (the supervisor resolves with openat2 and the same flags, in the
    workload's root), and the policy still decides on the resolved path."""
    pol = write_policy(tmp_path, {
        "openat2": {"action": "emulate", "handler": "open", "default": "ro",
                    "paths": {"/etc/shadow": "deny", "/tmp": "rw", "/proc": "rw"}},
    })
    plain = ok(run_contain(state_root, "sandbox", "--", PY, "-c", OPENAT2_SCRIPT,
                           timeout=90)).splitlines()
    got = ok(supervised(state_root, pol, OPENAT2_SCRIPT, "notify", timeout=90)).splitlines()
    # without supervision the sandbox's user may not read /etc/shadow either
    assert got[:-1] == plain[:-1], (got, plain)
    assert got[0].split() == ["beneath", "root:", "e18", "e18", "e18"]
    assert got[1].split() == ["in_root", "jail", "jail", "jail"]
    assert got[2].split() == ["no_symlinks", "e40", "root:"]
    assert got[3].split() == ["no_magiclinks", "e40", "root:"]
    assert got[4].split()[0:2] == ["no_xdev", "e18"]
    assert got[5].split() == ["bad", "e22", "e22", "e7", "e22"]
    assert got[6].split() == ["cwd_scoped", "jail", "jail", "e18"]
    assert got[7].split() == ["policy", "e13", "e13"]


FIFO_SCRIPT = r"""
import os, signal, threading, time
# a stuck supervisor: the workload ends itself (it is PID 1: no default action)
signal.signal(signal.SIGALRM, lambda *a: os._exit(3))
signal.alarm(25)
os.mkfifo('/tmp/fifo')
got = []
def reader():
    fd = os.open('/tmp/fifo', os.O_RDONLY)  # waits for a writer, at the supervisor
    got.append(os.read(fd, 16).decode()); os.close(fd)
t = threading.Thread(target=reader); t.start()
deadline = time.monotonic() + 20
while True:  # the reader's openat is with the supervisor (still in the call)
    with open(f'/proc/self/task/{t.native_id}/syscall') as f:
        if f.read().split()[0] == '257':
            break
    assert time.monotonic() < deadline
    time.sleep(0.01)
# its notification is queued before the next ones (the supervisor takes them in order)
print(os.uname().release, flush=True)  # emulated: answered while the reader waits
with open('/etc/hostname') as f:  # an emulated open, too
    f.read()
fd = os.open('/tmp/fifo', os.O_WRONLY)
os.write(fd, b'through'); os.close(fd)
t.join()
print(got[0], flush=True)
"""


def test_fifo_open_does_not_block_the_supervisor(state_root: Path, tmp_path: Path) -> None:
    """An emulated open of a FIFO waits for its other end in a worker: another thread's
    supervised calls are answered meanwhile, and the open completes when a writer
    comes."""
    pol = write_policy(tmp_path, {
        "openat": {"action": "emulate", "handler": "open", "default": "ro",
                   "paths": {"/tmp": "rw", "/proc": "rw"}},
        "uname": {"action": "emulate", "handler": "uname", "release": "9.9-fifo"},
    })
    report = tmp_path / "r.jsonl"
    out = ok(supervised(state_root, pol, FIFO_SCRIPT, "notify", report, timeout=120))
    assert out.split() == ["9.9-fifo", "through"]
    fifo_opens = [e for e in events(report) if e.get("detail") == "/tmp/fifo"]
    assert len(fifo_opens) == 2 and all(int(str(e["result"])) >= 0 for e in fifo_opens)


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out += [int(x) for x in text.split()]
    return out


def _tracer(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@BOTH
def test_killed_supervisor_kills_the_workload(state_root: Path, tmp_path: Path,
                                              supervisor: str) -> None:
    pol = write_policy(tmp_path, {"mkdir": "log"})
    proc = subprocess.Popen(
        [*contain_cmd(), "--root", str(state_root), "sandbox", "--supervise", pol,
         "--supervisor", supervisor, "--", PY, "-c",
         "import time\nprint('up', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        init = sup = 0
        for child in _children(proc.pid):
            if _tracer(child):
                init, sup = child, _tracer(child)
        assert init and sup and sup in _children(proc.pid)
        os.kill(sup, signal.SIGKILL)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGKILL
    assert not os.path.exists(f"/proc/{init}")


@pytest.mark.parametrize("policy, message", [
    ({"mkdri": "deny"}, "$.mkdri: unknown system call 'mkdri'"),
    ({"mkdir": {"action": "deny", "errno": "EFOO"}}, "$.mkdir.errno: unknown errno name 'EFOO'"),
    ({"mkdir": {"action": "deny", "errno": 5000}}, "$.mkdir.errno: errno 5000 out of range"),
    ({"mkdir": "forbid"}, "$.mkdir.action: unknown action 'forbid'"),
    ({"uname": {"action": "emulate", "handler": "nope"}}, "$.uname.handler: unknown handler"),
    ({"mkdir": {"action": "emulate", "handler": "uname"}},
     "$.mkdir.handler: handler 'uname' emulates uname, not mkdir"),
    ({"socket": [{"action": "deny", "args": [{"index": 7, "value": 1}]}]},
     "$.socket[0].args[0].index"),
    ({"default": "ask"}, "$.default.callback: action 'ask' needs a Python callable"),
    ({"write": "deny"}, "$.write.action: write cannot be supervised by the notify supervisor"),
    ({"syscalls": []}, "$.syscalls: expected a table"),
])
def test_bad_policies(state_root: Path, tmp_path: Path, policy: dict[str, object],
                      message: str) -> None:
    pol = write_policy(tmp_path, policy)
    proc = run_contain(state_root, "sandbox", "--supervise", pol, "--", "/bin/true")
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not list((state_root / ".supervise").glob("*")) \
        if (state_root / ".supervise").exists() else True


def test_malformed_policy_files(state_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[syscalls\nmkdir = 'deny'\n")
    proc = run_contain(state_root, "sandbox", "--supervise", str(bad), "--", "/bin/true")
    assert proc.returncode == 1 and "invalid TOML" in proc.stderr
    proc = run_contain(state_root, "sandbox", "--supervise", "{not json", "--", "/bin/true")
    assert proc.returncode == 1 and "invalid JSON" in proc.stderr
    proc = run_contain(state_root, "sandbox", "--supervise", "{}", "--supervisor", "strace",
                       "--", "/bin/true")
    assert proc.returncode == 1 and "invalid supervisor 'strace'" in proc.stderr


def test_ptrace_supervisor_refuses_an_unknown_machine() -> None:
    """The ptrace supervisor reads x86_64 registers only: on another machine it is
    refused by name, before anything starts (the notify supervisor has no such limit)."""
    from contain.errors import SpecError
    from contain.sandbox.supervise.filter import check_policy
    from contain.sandbox.supervise.policy import SyscallPolicy

    policy = SyscallPolicy.decode({"mkdir": "deny"}, "$.syscalls")
    with pytest.raises(SpecError, match="registers of x86_64 only, not aarch64"):
        check_policy(policy, "ptrace", machine="aarch64")
    check_policy(policy, "notify", machine="aarch64")
    check_policy(policy, "ptrace", machine="x86_64")


def test_toml_sandbox_policy_table(state_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text('[syscalls]\ndefault = "allow"\nmkdir = { action = "deny", '
                    'errno = "EACCES" }\n')
    out = ok(supervised(state_root, str(path), MKDIR))
    assert out.split() == ["errno", "13"]


@BOTH
def test_record_then_enforce(state_root: Path, tmp_path: Path, supervisor: str) -> None:
    profile = tmp_path / "profile.json"
    work = "import socket, os\ns = socket.socket(socket.AF_UNIX)\nprint('ok', os.getpid())"
    proc = run_contain(state_root, "sandbox", "--record", str(profile), "--supervisor",
                       supervisor, "--", PY, "-c", work, timeout=120)
    assert ok(proc).split()[0] == "ok"
    prof = json.loads(profile.read_text())
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    socket_rules = [r for r in prof["syscalls"] if r["names"] == ["socket"]]
    assert [r["args"][0]["value"] for r in socket_rules] == [1]  # AF_UNIX only
    names = {n for r in prof["syscalls"] for n in r["names"]}
    assert {"execve", "getpid"} <= names and "mkdir" not in names
    report = tmp_path / "r.jsonl"
    again = run_contain(state_root, "sandbox", "--enforce", str(profile), "--supervisor",
                        supervisor, "--supervise-report", str(report), "--",
                        PY, "-c", work, timeout=120)
    assert ok(again).split()[0] == "ok"
    assert events(report) == []
    new = run_contain(state_root, "sandbox", "--enforce", str(profile), "--supervisor",
                      supervisor, "--supervise-report", str(report), "--", PY, "-c",
                      work + "\n" + MKDIR, timeout=120)
    assert ok(new).split()[-2:] == ["errno", "1"]
    assert [e["syscall"] for e in events(report) if e["action"] == "deny"] == ["mkdir"]


def test_api_ask_callback(tmp_path: Path) -> None:
    import contain
    from contain.sandbox.supervise.policy import Decision

    seen: list[tuple[str, int]] = []

    def decide(call: object) -> Decision:
        seen.append((call.name, call.args[1]))  # type: ignore[attr-defined]
        return Decision("deny", errno="EXDEV") if call.args[1] == 0o700 else Decision("allow")  # type: ignore[attr-defined]

    root = tmp_path / "root"
    r = contain.run([PY, "-c", "import os\nfor m in (0o700, 0o755):\n try:\n"
                     "  os.mkdir(f'/tmp/{m}', m); print('made')\n except OSError as e:\n"
                     "  print(e.errno)"], capture_output=True, root=str(root),
                    supervise={"mkdir": decide}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [b"18", b"made"]
    assert seen == [("mkdir", 0o700), ("mkdir", 0o755)]


def test_api_report_to_fd(tmp_path: Path) -> None:
    import contain

    r_fd, w_fd = os.pipe()
    try:
        res = contain.run([PY, "-c", MKDIR], capture_output=True, root=str(tmp_path / "root"),
                          supervise={"mkdir": {"action": "deny"}}, supervise_report=w_fd,
                          supervisor="ptrace", timeout=60)
        os.close(w_fd)
        w_fd = -1
        lines = os.read(r_fd, 65536).decode().splitlines()
    finally:
        os.close(r_fd)
        if w_fd >= 0:
            os.close(w_fd)
    assert res.stdout.split() == [b"errno", b"1"]
    assert json.loads(lines[0])["action"] == "deny"


def test_mknod_emulation(state_root: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path, {
        "mknodat": {"action": "emulate", "handler": "mknod"},
        "mknod": {"action": "emulate", "handler": "mknod"},
    })
    script = """
import os, stat
for name, dev in (('null', os.makedev(1, 3)), ('mem', os.makedev(1, 1))):
    try:
        os.mknod('/dev/my' + name, 0o666 | stat.S_IFCHR, dev)
        st = os.stat('/dev/my' + name)
        print(name, 'made', os.major(st.st_rdev), os.minor(st.st_rdev))
    except OSError as e:
        print(name, e.errno)
with open('/dev/mynull', 'w') as f:
    f.write('x')
print('written')
"""
    # as root (without CAP_MKNOD): the sandbox's default user may not write /dev at all,
    # and the emulation refuses what the kernel would (EACCES), as it should
    out = ok(supervised(state_root, pol, script, extra=("--as-root",))).splitlines()
    assert out == ["null made 1 3", "mem 1", "written"]


def test_mount_emulation(state_root: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path, {"mount": {"action": "emulate", "handler": "mount"}})
    script = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir('/tmp/m')
def mount(src, dst, fs, flags=0, data=None):
    r = libc.mount(src, dst, fs, flags, data)
    return 'ok' if r == 0 else ctypes.get_errno()
print(mount(b'x', b'/tmp/m', b'tmpfs', 0, b'size=1m'))
open('/tmp/m/f', 'w').write('x')
print(mount(b'x', b'/tmp/m', b'ext4'), mount(b'/dev', b'/tmp/m', b'', 4096))
print(any(' /tmp/m ' in l and 'tmpfs' in l for l in open('/proc/self/mounts')))
"""
    out = ok(supervised(state_root, pol, script)).splitlines()
    assert out == ["ok", "1 1", "True"]
    assert not os.path.exists("/tmp/m/f")


# -- OCI containers, turned on by annotations ---------------------------------------------

def detached(root: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`contain` with stdio in files: a created container keeps the runtime's stdio (a
    pipe would never reach EOF)."""
    out, err = tmp / "out.txt", tmp / "err.txt"
    with open(out, "w") as o, open(err, "w") as e:
        code = subprocess.run([*contain_cmd(), "--root", str(root), *args], stdout=o,
                              stderr=e, stdin=subprocess.DEVNULL, timeout=60).returncode
    return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())


@BOTH
def test_annotated_container_lifecycle(state_root: Path, tmp_path: Path, make_bundle: Any,
                                       supervisor: str) -> None:
    """create starts a supervisor that outlives it, state.json knows it, the workload
    is supervised once started, delete leaves no supervisor behind."""
    from conftest import unique_id

    report = tmp_path / "r.jsonl"
    bundle = make_bundle(
        ["/bin/sh", "-c", "mkdir /tmp/x 2>/dev/null || echo denied > /tmp/out; sleep 1000"],
        annotations={"org.contain.supervise": '{"mkdir": {"action": "deny", "errno": 30}}',
                     "org.contain.supervisor": supervisor,
                     "org.contain.supervise.report": str(report)},
        root={"path": "rootfs", "readonly": False})
    cid = unique_id("sup")
    proc = detached(state_root, tmp_path, "create", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 0, proc.stderr
    try:
        state = json.loads((state_root / cid / "state.json").read_text())
        sup = state["extra"]["supervisor"]["pid"]
        assert os.path.exists(f"/proc/{sup}")
        init = state["pid"]
        assert _tracer(init) == sup  # seized before it runs anything of the workload
        run_contain(state_root, "start", cid, check=True)
        out = bundle.rootfs / "tmp" / "out"
        for _ in range(600):
            if events(report) and out.exists() and out.read_text():
                break
            time.sleep(0.05)
        assert [e["action"] for e in events(report)] == ["deny"]
        assert out.read_text().strip() == "denied"
        assert json.loads(run_contain(state_root, "state", cid, check=True).stdout)[
            "status"] == "running"
    finally:
        run_contain(state_root, "delete", "--force", cid, check=True)
    for _ in range(400):
        if not os.path.exists(f"/proc/{sup}") or \
                Path(f"/proc/{sup}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the supervisor outlived delete")
    assert not list((state_root / ".supervise").glob("*"))


def test_annotated_bad_policy_leaves_nothing(state_root: Path, tmp_path: Path,
                                             make_bundle: Any) -> None:
    from conftest import unique_id

    bundle = make_bundle(["/bin/true"],
                         annotations={"org.contain.supervise": '{"mkdri": "deny"}'})
    cid = unique_id("sup")
    proc = detached(state_root, tmp_path, "create", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 1 and "unknown system call 'mkdri'" in proc.stderr
    assert not (state_root / cid).exists()


@BOTH
def test_inspect_classifies_a_supervised_process(state_root: Path, tmp_path: Path,
                                                 supervisor: str) -> None:
    pol = write_policy(tmp_path, {"mkdir": "log"})
    proc = subprocess.Popen(
        [*contain_cmd(), "--root", str(state_root), "sandbox", "--supervise", pol,
         "--supervisor", supervisor, "--", PY, "-c",
         "import sys, time\nprint('up', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "up"
        init = next(c for c in _children(proc.pid) if _tracer(c))
        sup = _tracer(init)
        facts = json.loads(run_contain(state_root, "inspect", "--json", str(init),
                                       check=True).stdout)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=60)
    cls = facts["class"]
    assert cls["name"] == "sandbox"
    evidence = " ".join(cls["evidence"])
    assert f"pid {sup} (contain-{supervisor})" in evidence
    if supervisor == "notify":
        assert "user-notification" in evidence and cls["marks"]["Sandbox/BPF"]
    else:
        assert "TRACE returns" in evidence and cls["marks"]["Sandbox/ptrace"]


def test_syscall_user_dispatch_is_read() -> None:
    """linux.ptrace.syscall_user_dispatch: off for a plain process; on, with the
    selector's address, for one that turned SUD on (PR_SET_SYSCALL_USER_DISPATCH)."""
    from contain.linux.ptrace import syscall_user_dispatch

    script = ("import ctypes, sys\nlibc = ctypes.CDLL(None)\nsel = ctypes.c_char(b'\\0')\n"
              "on = sys.argv[1] == 'on'\n"
              "r = libc.prctl(59, 1, 0, 0, ctypes.c_void_p(ctypes.addressof(sel))) if on else 0\n"
              "print(r, ctypes.addressof(sel), flush=True)\nsys.stdin.read()")
    for mode in ("off", "on"):
        p = subprocess.Popen([PY, "-c", script, mode], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout is not None
            ret, addr = p.stdout.readline().split()
            assert ret == "0"
            got = syscall_user_dispatch(p.pid)
        finally:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=30)
        assert got["mode"] == mode
        if mode == "on":
            assert got["selector"] == int(addr)


@BOTH
def test_exec_into_an_annotated_container(state_root: Path, tmp_path: Path, make_bundle: Any,
                                          supervisor: str) -> None:
    """`contain exec` reaches the same supervisor through the listener hand-over
    (notify); under ptrace an exec'd process is not traced, and its supervised calls
    fail closed (ENOSYS), never open."""
    from conftest import unique_id

    report = tmp_path / "r.jsonl"
    bundle = make_bundle(
        ["/bin/sleep", "1000"],
        annotations={"org.contain.supervise": '{"mkdir": {"action": "deny", "errno": 30}}',
                     "org.contain.supervisor": supervisor,
                     "org.contain.supervise.report": str(report)},
        root={"path": "rootfs", "readonly": False})
    cid = unique_id("sup")
    proc = detached(state_root, tmp_path, "run", "--detach", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 0, proc.stderr
    try:
        ex = run_contain(state_root, "exec", cid, "/bin/sh", "-c", "mkdir /tmp/y 2>&1; true")
        assert ex.returncode == 0, ex.stderr
    finally:
        run_contain(state_root, "delete", "--force", cid, check=True)
    if supervisor == "notify":
        assert "Read-only file system" in ex.stdout
        assert [e["action"] for e in events(report)] == ["deny"]
    else:
        assert "Function not implemented" in ex.stdout
    assert not (bundle.rootfs / "tmp" / "y").exists()


@pytest.mark.slow
def test_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/supervise.py, quick: every case measured, runsc-ptrace next to it."""
    out = tmp_path / "out"
    proc = subprocess.run([*contain_cmd(), "bench", "--out", str(out), "--no-progress",
                           "--quick", "--runtimes", "contain", "--only", "supervise"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    res = doc["benchmarks"]["supervise"]
    med = res["data"]["median_ns"]
    for label in ("native", "notify, getppid emulated (return)",
                  "ptrace, getppid emulated (return)", "notify, getppid unsupervised"):
        assert med.get(label, 0) > 0, (label, res.get("errors"))
    # an answered call is a round trip through the supervisor: far dearer than a filter
    assert med["notify, getppid emulated (return)"] > 10 * med["notify, getppid unsupervised"]
    cpu = res["data"]["cpu_us_per_call"]
    for label in ("notify, getppid emulated (return)", "ptrace, getppid logged (resumed)"):
        assert cpu.get(label, 0) > 0, (label, res.get("errors"))


@pytest.mark.slow
def test_workload_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/supervise_workload.py, quick: every workload measured under every
    member (the supervisors with their realistic policies, runsc-ptrace beside them)."""
    out = tmp_path / "out"
    proc = subprocess.run([*contain_cmd(), "bench", "--out", str(out), "--no-progress",
                           "--quick", "--runtimes", "contain", "--only", "supervise_workload"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())["benchmarks"]["supervise_workload"]
    med = res["data"]["median"]
    members = ["native", "contain (container class)", "notify, realistic policy",
               "notify, + open path policy", "ptrace, realistic policy"]
    if shutil.which("runsc"):
        members.append("runsc --platform=ptrace")
    for workload in ("syscalls", *(("cpu", "memory", "fileio") if shutil.which("sysbench")
                                   else ())):
        for m in members:
            assert med[workload].get(m, 0) > 0, (workload, m, res.get("errors"))


@BOTH
def test_default_deny_fails_cleanly(state_root: Path, tmp_path: Path, supervisor: str) -> None:
    """A policy that denies everything: exit, exit_group and rt_sigreturn stay allowed
    (decided in the kernel), so the workload fails and ends instead of faulting in a
    loop; nothing is left behind."""
    report = tmp_path / "r.jsonl"
    proc = supervised(state_root, write_policy(tmp_path, {"default": "deny"}), "pass",
                      supervisor, report, timeout=60)
    assert proc.returncode != 0
    denied = {e["syscall"] for e in events(report)}
    assert denied and not denied & {"exit", "exit_group", "rt_sigreturn"}
