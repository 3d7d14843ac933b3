"""The sandbox policy: the policy file (TOML and JSON) and its errors, the file policy
for real (--rw, --ro, --deny, --tmpfs, protected paths, sized /tmp), as root and as an
unprivileged user the tests create, rootless by default, and the precise diagnosis when
user namespaces are blocked (each cause simulated as far as this machine allows)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SRC, contain_cmd, run_contain
from contain.sandbox.policy import Policy, PolicyError, PolicyTypeError, resolve
from test_rootless import SYSTEM_PYTHON, User, user  # noqa: F401  (the fixture)


@pytest.fixture
def hostdir() -> Iterator[Path]:
    """A directory on the host's own filesystem (not under /tmp, which the sandbox
    makes private), readable by everyone."""
    d = Path(tempfile.mkdtemp(prefix="contain-sbp-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def project(base: Path, owner: int | None = None) -> dict[str, Path]:
    """A project tree (writable), a secret dir and file (denied), an outside dir."""
    p = {"proj": base / "proj", "secret": base / "secret", "key": base / "key.pem",
         "outside": base / "outside"}
    (p["proj"] / ".git" / "hooks").mkdir(parents=True)
    (p["proj"] / ".git" / "config").write_text("[core]\n")
    (p["proj"] / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    (p["proj"] / "vendor").mkdir()
    (p["proj"] / ".bashrc").write_text("# rc\n")
    p["secret"].mkdir()
    (p["secret"] / "id_rsa").write_text("SECRET-KEY\n")
    p["key"].write_text("SECRET-PEM\n")
    p["outside"].mkdir()
    if owner is not None:
        for path in [base, *base.rglob("*")]:
            os.chown(path, owner, owner)
    return p


SCRIPT = """
w() {{ if ( : > "$1" ) 2>/dev/null; then echo "$2=writable"; else echo "$2=refused"; fi; }}
w {proj}/new PROJ
w {proj}/.git/config GITCONFIG
w {proj}/.git/hooks/post-checkout HOOKS
w {proj}/.bashrc BASHRC
w {proj}/vendor/x VENDOR
w {outside}/x OUTSIDE
echo SECRET=$(cat {secret}/id_rsa 2>&1 | head -c 40)
echo SECRETLS=$(ls -A {secret} | wc -l)
echo KEY=$(cat {key} 2>&1 | head -c 40)
echo TMPFS=$(df -k /var/cache | tail -1 | awk '{{print $2}}')
"""


def check_policy(out: str) -> None:
    got = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert got["PROJ"] == "writable", out
    assert got["GITCONFIG"] == "refused", out
    assert got["HOOKS"] == "refused", out
    assert got["BASHRC"] == "refused", out
    assert got["VENDOR"] == "refused", out
    assert got["OUTSIDE"] == "refused", out
    assert "SECRET-KEY" not in got["SECRET"] and got["SECRETLS"] == "0", out
    assert "SECRET-PEM" not in out and got["KEY"] == "", out
    assert got["TMPFS"] == "1024", out  # --tmpfs /var/cache:1M


def flags(p: dict[str, Path]) -> list[str]:
    return ["--rw", str(p["proj"]), "--ro", str(p["proj"] / "vendor"),
            "--deny", str(p["secret"]), "--deny", str(p["key"]),
            "--tmpfs", "/var/cache:1M"]


def test_file_policy_as_root(state_root: Path, hostdir: Path) -> None:
    p = project(hostdir)
    proc = run_contain(state_root, "sandbox", *flags(p), "--", "/bin/sh", "-c",
                       SCRIPT.format(**p))
    assert proc.returncode == 0, proc.stderr
    check_policy(proc.stdout)
    assert (p["proj"] / "new").exists()
    assert (p["proj"] / ".git" / "config").read_text() == "[core]\n"
    assert not (p["outside"] / "x").exists()


def test_file_policy_from_a_policy_file(state_root: Path, hostdir: Path) -> None:
    """The same policy as a TOML file and as a JSON file."""
    p = project(hostdir)
    doc = {"files": {"rw": [str(p["proj"])], "ro": [str(p["proj"] / "vendor")],
                     "deny": [str(p["secret"]), str(p["key"])],
                     "tmpfs": ["/var/cache:1M"]},
           "limits": {"memory": "256M", "pids": 64, "tmp": "8M"},
           "landlock": {"mode": "best-effort"}}
    toml = hostdir / "policy.toml"
    toml.write_text(
        "[files]\n"
        f"rw = [{json.dumps(str(p['proj']))}]\n"
        f"ro = [{json.dumps(str(p['proj'] / 'vendor'))}]\n"
        f"deny = [{json.dumps(str(p['secret']))}, {json.dumps(str(p['key']))}]\n"
        'tmpfs = ["/var/cache:1M"]\n'
        "[limits]\nmemory = \"256M\"\npids = 64\ntmp = \"8M\"\n"
        "[landlock]\nmode = \"best-effort\"\n")
    js = hostdir / "policy.json"
    js.write_text(json.dumps(doc))
    assert Policy.load(str(toml)) == Policy.load(str(js))
    for path in (toml, js):
        proc = run_contain(state_root, "sandbox", "--policy", str(path), "--", "/bin/sh",
                           "-c", SCRIPT.format(**p) + "df -k /tmp | tail -1")
        assert proc.returncode == 0, proc.stderr
        check_policy(proc.stdout)
        assert proc.stdout.splitlines()[-1].split()[1] == "8192"  # [limits] tmp = 8M


@pytest.mark.parametrize("text,where", [
    ("[files]\nrww = []\n", "files.rww: unknown field"),
    ("[limits]\nmemory = \"lots\"\n", "limits.memory: invalid size 'lots'"),
    ("[limits]\nmemory = 0\n", "limits.memory: invalid size 0: must be positive"),
    ("[limits]\npids = \"10\"\n", "limits.pids: expected an integer"),
    ("[limits]\ncpus = 1e-9\n", "limits.cpus: 1e-09 is too small"),
    ("[files]\nrw = \"/tmp\"\n", "files.rw: expected a list of strings (not one string)"),
    ("[files]\nrw = [\"/no/such/dir\"]\n", "files.rw[0]: /no/such/dir: no such file"),
    ("[network]\nmode = \"bridge\"\n", "network.mode: 'bridge' is not one of"),
    ("[landlock]\nmode = \"maybe\"\n", "landlock.mode: 'maybe' is not one of"),
    ("[landlock]\nconnect_tcp = [70000]\n", "landlock.connect_tcp[0]: 70000 is not a port"),
    ("[process]\nenv = [\"NOEQUALS\"]\n", "process.env[0]: 'NOEQUALS' is not NAME=VALUE"),
    ("[surprise]\n", "surprise: unknown section"),
    ("[files\n", "not valid TOML"),
])
def test_bad_policy_file_is_refused_with_the_field(state_root: Path, tmp_path: Path,
                                                   text: str, where: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    proc = run_contain(state_root, "sandbox", "--policy", str(path), "--", "/bin/true")
    assert proc.returncode == 1
    assert f"p.toml: {where}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p for p in state_root.iterdir() if not p.name.startswith(".")] == []


def test_bad_json_policy_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"limits": {"memory": "nan"}}))
    with pytest.raises(PolicyError, match=r"p.json: limits.memory: .*not a finite number"):
        Policy.load(str(path))
    path.write_text("{not json")
    with pytest.raises(PolicyError, match=r"p\.json: not valid JSON"):
        Policy.load(str(path))


def test_syscalls_section_goes_to_the_supervisor(tmp_path: Path) -> None:
    """[syscalls] is the supervisor's policy, decoded by it (docs/supervise.md): a good
    table loads, a bad one is refused naming the field in the policy file."""
    path = tmp_path / "p.toml"
    path.write_text('[syscalls]\ndefault = "log"\ngetppid = "deny"\n')
    pol = Policy.load(str(path))
    assert pol.syscalls == {"default": "log", "getppid": "deny"}
    path.write_text('[syscalls]\nno_such_call = "deny"\n')
    with pytest.raises(PolicyError, match=r"p.toml: syscalls.no_such_call: unknown system "
                                          r"call"):
        Policy.load(str(path))


def test_cli_flag_errors_name_the_flag(state_root: Path) -> None:
    for args, text in ((["--memory", "0"], "--memory: invalid size '0': must be positive"),
                       (["--memory", "nan"], "--memory: invalid size 'nan'"),
                       (["--pids", "ten"], "--pids: 'ten' is not an integer"),
                       (["--cpus", "0.000000001"], "--cpus: 1e-09 is too small"),
                       (["--landlock", "maybe"], "--landlock: 'maybe' is not one of"),
                       (["--tmpfs", "relative"], "--tmpfs[0]: 'relative': PATH[:SIZE]"),
                       (["--rw", "/no/such"], "--rw[0]: /no/such: no such file")):
        proc = run_contain(state_root, "sandbox", *args, "--", "/bin/true")
        assert proc.returncode == 1 and text in proc.stderr, (args, proc.stderr)


def test_file_policy_conflicts_are_refused(state_root: Path, hostdir: Path) -> None:
    (hostdir / "a").mkdir()
    for args, text in (
            (["--deny", str(hostdir), "--rw", str(hostdir / "a")],
             f"rw {hostdir / 'a'}: inside the denied {hostdir}"),
            (["--tmpfs", "/no-such-top-dir"], "tmpfs /no-such-top-dir: no such directory")):
        proc = run_contain(state_root, "sandbox", *args, "--", "/bin/true")
        assert proc.returncode == 1 and text in proc.stderr, (args, proc.stderr)
    proc = run_contain(state_root, "sandbox", "--tmpfs", "/tmp/new/dir:1M", "--",
                       "/bin/sh", "-c", "df -k /tmp/new/dir | tail -1")
    assert proc.returncode == 0 and proc.stdout.split()[1] == "1024", proc.stderr


def test_policy_round_trip() -> None:
    pol = resolve({"files": {"tmpfs": ["/x:1M"]}, "limits": {"cpus": 0.5},
                   "landlock": {"connect_tcp": [443]}, "report": {"fd": 2}},
                  {"memory": "64M", "env": ["A=1"]})
    again = Policy.from_dict(pol.to_dict())
    assert again == pol
    assert pol.limits.memory == 64 << 20 and pol.files.tmpfs == [("/x", 1 << 20)]


def test_protected_list_is_configurable(state_root: Path, hostdir: Path) -> None:
    """An empty `protected` list makes .git/config writable again; --protect adds."""
    p = project(hostdir)
    (p["proj"] / "Makefile").write_text("all:\n")
    path = hostdir / "p.toml"
    path.write_text("[files]\nprotected = []\n")
    script = (f"( : > {p['proj']}/.git/config ) 2>/dev/null && echo GIT=w || echo GIT=r; "
              f"( : > {p['proj']}/Makefile ) 2>/dev/null && echo MK=w || echo MK=r")
    proc = run_contain(state_root, "sandbox", "--policy", str(path), "--rw", str(p["proj"]),
                       "--protect", "Makefile", "--", "/bin/sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert "GIT=w" in proc.stdout and "MK=r" in proc.stdout


def user_dirs(user: User, base: Path) -> dict[str, str]:  # noqa: F811
    """The user's runtime dir and home under *base* (/var/tmp), not under the fixture's
    home: another pytest session on this machine may close /tmp/pytest-of-root (0700)."""
    for name in ("run", "home"):
        (base / name).mkdir()
        os.chown(base / name, user.uid, user.gid)
    (base / "run").chmod(0o700)
    return {"XDG_RUNTIME_DIR": str(base / "run"), "HOME": str(base / "home")}


def test_file_policy_as_an_unprivileged_user(user: User, hostdir: Path) -> None:  # noqa: F811
    """Rootless by default: no flag, a user namespace is made automatically; the same
    file policy holds."""
    env = user_dirs(user, hostdir)
    p = project(hostdir / "home", owner=user.uid)
    proc = user.contain("sandbox", *flags(p), "--", "/bin/sh", "-c",
                        SCRIPT.format(**p) + "id -u; cat /etc/shadow >/dev/null 2>&1 || "
                        "echo SHADOW=refused", cwd=hostdir / "home", **env)
    assert proc.returncode == 0, proc.stderr
    check_policy(proc.stdout)
    assert "SHADOW=refused" in proc.stdout
    assert (p["proj"] / "new").exists()


# -- blocked user namespaces --------------------------------------------------------------

INNS = """
import os, sys
sys.path.insert(0, {src!r})
from contain.linux.syscalls import unshare
i = sys.argv.index("--")
sysctls, argv = sys.argv[1:i], sys.argv[i + 1:]
r, w = os.pipe()
r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    unshare(0x10000000)
    os.write(w2, b"u")
    os.read(r, 1)
    for kv in sysctls:
        k, v = kv.split("=", 1)
        with open("/proc/sys/" + k.replace(".", "/"), "w") as f:
            f.write(v)
    os.execvp(argv[0], argv)
os.read(r2, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{{pid}}/{{name}}", "w") as f:
        f.write("0 0 65536")
os.write(w, b"g")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_max_user_namespaces_zero_is_named(user: User, tmp_path: Path,  # noqa: F811
                                           hostdir: Path) -> None:
    """user.max_user_namespaces=0, set in a user namespace of the test's own (it is per
    namespace, so the host's stays as it is); the user's sandbox is refused, and says
    which knob and how to lift it."""
    env = user_dirs(user, hostdir)
    helper = tmp_path / "inns.py"
    helper.write_text(INNS.format(src=str(SRC)))
    proc = subprocess.run(
        [sys.executable, str(helper), "user.max_user_namespaces=0", "--",
         "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
         "env", "-i", *[f"{k}={v}" for k, v in user.env(**env).items()],
         str(SYSTEM_PYTHON), "-m", "contain", "sandbox", "--", "/bin/sh", "-c",
         "echo RAN"], capture_output=True, text=True, timeout=120, cwd=env["HOME"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RAN" not in proc.stdout
    assert "user.max_user_namespaces=0" in proc.stderr
    assert "sysctl -w user.max_user_namespaces=" in proc.stderr
    assert "not run" in proc.stderr


NOUNSHARE = """
import os, sys
sys.path.insert(0, {src!r})
from contain.linux.syscalls import prctl
from contain.security.seccomp import compile_filter, load_filter
from contain.spec.config import Seccomp
prof = Seccomp.decode({{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {{"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}}]}})
prctl(38, 1)
load_filter(compile_filter(prof))
os.execvp(sys.argv[1], sys.argv[1:])
"""


def test_outer_seccomp_filter_is_named(state_root: Path, tmp_path: Path) -> None:
    """A seccomp filter denying unshare, as the default profile of an outer container
    does: the sandbox is refused with that cause, and the command does not run."""
    helper = tmp_path / "nounshare.py"
    helper.write_text(NOUNSHARE.format(src=str(SRC)))
    proc = subprocess.run([sys.executable, str(helper), *contain_cmd(), "--root",
                           str(state_root), "sandbox", "--userns", "--", "/bin/sh", "-c",
                           "echo RAN"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "RAN" not in proc.stdout
    assert "seccomp filter" in proc.stderr and "seccomp=unconfined" in proc.stderr
    assert [p for p in state_root.iterdir() if not p.name.startswith(".")] == []


def fake_proc(base: Path, **sysctls: str) -> Path:
    """A copy of the /proc entries the diagnosis reads, with some knobs set (for the
    causes this machine lacks: it has no AppArmor, and no Debian userns switch)."""
    (base / "self" / "ns").mkdir(parents=True)
    (base / "self" / "ns" / "user").write_text("")
    (base / "self" / "status").write_text("Name:\tx\nSeccomp:\t0\n")
    for key, value in sysctls.items():
        path = base / "sys" / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return base


def test_diagnosis_of_each_cause(tmp_path: Path) -> None:
    from contain.sandbox.userns import diagnose

    assert diagnose("ok", 0) is None
    apparmor = fake_proc(tmp_path / "a", **{
        "kernel.apparmor_restrict_unprivileged_userns": "1",
        "user.max_user_namespaces": "1000"})
    text = diagnose("uid_map", 1, str(apparmor))
    assert text and "AppArmor" in text and "apparmor_restrict_unprivileged_userns=0" in text
    clone = fake_proc(tmp_path / "c", **{"kernel.unprivileged_userns_clone": "0"})
    text = diagnose("unshare", 1, str(clone))
    assert text and "kernel.unprivileged_userns_clone=1" in text
    limit = fake_proc(tmp_path / "l", **{"user.max_user_namespaces": "0"})
    text = diagnose("unshare", 28, str(limit))
    assert text and "user.max_user_namespaces=0" in text
    plain = fake_proc(tmp_path / "s")
    text = diagnose("gid_map", 1, str(plain))
    assert text and "setgroups" in text
    (plain / "self" / "status").write_text("Seccomp:\t2\n")
    text = diagnose("unshare", 1, str(plain))
    assert text and "seccomp" in text
    nouserns = tmp_path / "n"
    (nouserns / "self").mkdir(parents=True)
    text = diagnose("unshare", 22, str(nouserns))
    assert text and "CONFIG_USER_NS" in text
    for t in (diagnose("unshare", 1, str(clone)), diagnose("unshare", 28, str(limit))):
        assert t and t.endswith("unsandboxed.")


def test_policy_type_errors_are_type_errors() -> None:
    with pytest.raises(PolicyTypeError) as info:
        resolve(None, {"binds": "/a:/b"})
    assert isinstance(info.value, TypeError) and "binds" in str(info.value)


def test_deny_a_host_daemons_unix_socket(state_root: Path, hostdir: Path) -> None:
    """Issue 11 item 6: a filesystem socket of a host daemon is reachable through the
    read-only root even with --net none; --deny takes it away."""
    import socket

    path = hostdir / "daemon.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    py = os.path.realpath(sys.executable)
    script = ("import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
              f"    s.connect({str(path)!r}); print('CONNECTED')\n"
              "except OSError as e:\n    print('REFUSED', e.errno)\n")
    # (as root: the test's interpreter may live in root's home)
    try:
        # the hole is real where the host's sockets are left reachable ...
        proc = run_contain(state_root, "sandbox", "--as-root", "--host-sockets", "--", py,
                           "-c", script)
        assert "CONNECTED" in proc.stdout, proc.stderr
        # ... --deny closes it there, and the default masks every host socket
        proc = run_contain(state_root, "sandbox", "--as-root", "--host-sockets", "--deny",
                           str(path), "--", py, "-c", script)
        assert "REFUSED" in proc.stdout, proc.stdout + proc.stderr
        proc = run_contain(state_root, "sandbox", "--as-root", "--", py, "-c", script)
        assert "REFUSED" in proc.stdout, proc.stdout + proc.stderr
    finally:
        server.close()


def test_rootless_limits_are_not_silently_dropped(user: User, hostdir: Path) -> None:  # noqa: F811
    """Without a cgroup delegated to the user, an asked-for limit cannot be applied:
    contain says so rather than run as if it were."""
    env = user_dirs(user, hostdir)
    proc = user.contain("sandbox", "--memory", "64M", "--", "/bin/true",
                        cwd=hostdir / "home", **env)
    assert proc.returncode == 0, proc.stderr
    assert "level=warning" in proc.stderr and "resources not applied" in proc.stderr
    # mounted here, but not the user's to use: said so, naming the controller
    assert "memory cgroup controller, which is not delegated" in proc.stderr, proc.stderr
    assert "not mounted" not in proc.stderr


def test_deny_secrets(state_root: Path, hostdir: Path) -> None:
    """--deny-secrets hides the caller's credentials (here a home of the test's own),
    also inside a writable home; a deny path that does not exist is accepted."""
    home = hostdir / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE\n")
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("AKIA\n")
    (home / ".netrc").write_text("machine x password p\n")
    (home / "notes").write_text("visible\n")
    env = {**os.environ, "HOME": str(home)}
    script = (f"cat {home}/.ssh/id_ed25519 {home}/.aws/credentials {home}/.netrc "
              f"{home}/notes 2>&1; ls -A {home}/.ssh | wc -l")
    proc = run_contain(state_root, "sandbox", "--deny-secrets", "--rw", str(home),
                       "--deny", "~/.no-such", "--", "/bin/sh", "-c", script, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "PRIVATE" not in proc.stdout and "AKIA" not in proc.stdout
    assert "password" not in proc.stdout
    assert "visible" in proc.stdout and proc.stdout.split()[-1] == "0"
    proc = run_contain(state_root, "sandbox", "--", "/bin/sh", "-c", script, env=env)
    assert "PRIVATE" in proc.stdout  # without it, they are readable
