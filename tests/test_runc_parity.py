"""Behaviours where runc was right and contain differed, found by trying runc case by case
(issue 14, item 6). Each test runs real containers; what runc does is said in the
docstring."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Bundle, contain_cmd, reap_zombies, run_contain, unique_id, wait_for


def run(state_root: Path, bundle: Bundle, **kw: object) -> subprocess.CompletedProcess[str]:
    return run_contain(state_root, "run", "--bundle", str(bundle.path), unique_id("par"),
                       **kw)  # type: ignore[arg-type]


def test_new_network_namespace_has_loopback_up(make_bundle: Callable[..., Bundle],
                                               state_root: Path) -> None:
    """runc brings `lo` up in a network namespace it creates: 127.0.0.1 works at once."""
    # (the client tries until the listener is up: a slow kernel -- the UML lane -- may
    # need more than a moment to start it)
    bundle = make_bundle(["/bin/sh", "-c", "cat /sys/class/net/lo/flags; "
                          "nc -l -p 7777 >/dev/null & "
                          "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.3; "
                          "echo hi | nc -w 2 127.0.0.1 7777 && { echo connected; break; }; "
                          "done; wait"])
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    flags = int(proc.stdout.split()[0], 16)
    assert flags & 0x1, proc.stdout  # IFF_UP
    assert "connected" in proc.stdout.split(), proc.stdout


def test_no_resources_still_gets_the_default_device_rules(
        make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """A config without linux.resources: the device cgroup still denies every device but
    the default allowances (runc appends them whatever the config says), so a container
    given CAP_MKNOD cannot make and open a host device node (tty0, loop0); /dev/null,
    an allowance, still opens."""
    bundle = make_bundle(["/bin/sh", "-c",
                          "mknod /tmp/tty0 c 4 0 && mknod /tmp/loop0 b 7 0 && "
                          "mknod /tmp/null c 1 3 || exit 9; "
                          "echo x > /tmp/null && echo null-ok; "
                          "echo x > /tmp/tty0 || echo tty0-refused; "
                          "head -c 1 /tmp/loop0 > /dev/null || echo loop0-refused"])
    bundle.config["linux"].pop("resources", None)
    bundle.config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["nosuid"]})  # (mknod needs a dev mount)
    caps = ["CAP_MKNOD", "CAP_DAC_OVERRIDE"]
    bundle.config["process"]["capabilities"] = {k: caps for k in
                                                ("bounding", "effective", "permitted")}
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["null-ok", "tty0-refused", "loop0-refused"], \
        (proc.stdout, proc.stderr)
    assert proc.stderr.count("Operation not permitted") == 2, proc.stderr


def test_device_outside_dev(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """linux.devices may put a node anywhere in the container (the spec and runc allow
    /foo-dev); the device cgroup rules still apply to it."""
    bundle = make_bundle(["/bin/sh", "-c", "stat -c '%F %t:%T %a' /foo-dev /mnt/null2; "
                          "echo x > /foo-dev && echo written"])
    bundle.config["root"]["readonly"] = False
    bundle.config["linux"]["devices"] = [
        {"path": "/foo-dev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
        {"path": "/mnt/null2", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640}]
    bundle.config["linux"]["resources"] = {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    if os.environ.get("CONTAIN_UML_LANE") == "1":  # hostfs masks modes with UML's umask
        lines[:2] = [ln.rsplit(" ", 1)[0] + " -" for ln in lines[:2]]
        assert lines[:2] == ["character special file 1:3 -"] * 2, lines
    else:
        assert lines[0] == "character special file 1:3 666", lines
        assert lines[1] == "character special file 1:3 640", lines
    assert lines[2] == "written"
    bundle.config["linux"]["devices"] = [
        {"path": "foo-dev", "type": "c", "major": 1, "minor": 3}]
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 1 and "$.linux.devices[0].path" in proc.stderr


def test_log_file_that_cannot_be_opened_fails(state_root: Path, tmp_path: Path) -> None:
    """runc fails when --log cannot be opened; the messages must not go to stderr in its
    stead (the engine reads the log file)."""
    bad = tmp_path / "no-such-dir" / "log.json"
    proc = run_contain(state_root, "--log", str(bad), "--log-format", "json", "list")
    assert proc.returncode == 1
    assert f"--log {bad}: No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    good = tmp_path / "log.json"
    proc = run_contain(state_root, "--log", str(good), "list")
    assert proc.returncode == 0 and good.exists()


def test_list_of_a_root_that_does_not_exist(tmp_path: Path) -> None:
    """runc 1.5 (`runc list: fix error reporting for non-existent root`): `list` with a
    --root that does not exist fails, whatever the format, and makes nothing (runc 1.1
    listed nothing and made the directory; 1.2-1.4 had the test inverted); the default
    root not existing yet lists nothing (no container made yet)."""
    from conftest import SRC, fails

    missing = tmp_path / "no-such-root"
    for flags in ((), ("-q",), ("--format", "json"), ("--format", "table")):
        proc = run_contain(missing, "list", *flags)
        fails(proc, f"--root {missing}: No such file or directory")
        assert proc.stdout == "" and not missing.exists()
    (tmp_path / "file").touch()
    fails(run_contain(tmp_path / "file", "list"), f"--root {tmp_path / 'file'}: Not a directory")
    # the default root of a user who has made no container yet ($XDG_RUNTIME_DIR/contain)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1",
           "XDG_RUNTIME_DIR": f"/tmp/contain-no-such-dir-{unique_id()}"}
    for flags, out in (((), "ID  "), (("-q",), ""), (("--format", "json"), "null\n")):
        proc = subprocess.run(["/usr/bin/python3.11", "-m", "contain", "list", *flags],
                              capture_output=True, text=True, env=env, timeout=60,
                              user=65534, group=65534, extra_groups=[], cwd="/")
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert proc.stdout.startswith(out) if out else proc.stdout == "", proc.stdout
    assert not os.path.exists(env["XDG_RUNTIME_DIR"])


@pytest.fixture
def sleeper(make_bundle: Callable[..., Bundle], state_root: Path) -> Iterator[str]:
    bundle = make_bundle(["/bin/sleep", "100"])
    cid = unique_id("par")
    with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out:
        proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d",
                               "--bundle", str(bundle.path), cid],
                              stdin=null, stdout=out, stderr=out, timeout=60)
        out.seek(0)
        assert proc.returncode == 0, out.read().decode()
    yield cid
    run_contain(state_root, "delete", "--force", cid)


def test_exec_without_terminal_has_its_own_session(sleeper: str, state_root: Path) -> None:
    """runc's exec makes the process a session and group leader inside the container
    with or without a terminal; without it getpgrp() named a process outside (0)."""
    proc = run_contain(state_root, "exec", sleeper, "/bin/sh", "-c",
                       "echo $$; cut -d' ' -f5,6 /proc/$$/stat")
    assert proc.returncode == 0, proc.stderr
    pid, pgrp, sid = proc.stdout.split()
    assert pgrp == pid and sid == pid, proc.stdout


def test_exec_into_a_sub_cgroup(sleeper: str, state_root: Path) -> None:
    """runc 1.2's exec --cgroup [CTRL:]SUBPATH runs the process in an existing
    sub-cgroup of the container; a missing one or an escaping path is an error."""
    saved = json.loads((state_root / sleeper / "state.json").read_text())["cgroup"]
    v2 = saved["layout"] == "v2"
    key = "unified" if v2 else "pids"
    sub = Path(saved["paths"][key]) / "side"
    sub.mkdir()
    try:
        spec = "side" if v2 else "pids:side"
        proc = run_contain(state_root, "exec", "--cgroup", spec, sleeper, "/bin/cat",
                           "/proc/self/cgroup")
        assert proc.returncode == 0, proc.stderr
        line = next(ln for ln in proc.stdout.splitlines()
                    if (ln.startswith("0::") if v2 else ":pids:" in ln))
        assert line.endswith("/side"), proc.stdout
        for bad, text in (("nosuch", "no such sub-cgroup"), ("../x", "relative path"),
                          ("pids:", "relative path")):
            proc = run_contain(state_root, "exec", "--cgroup", bad, sleeper, "/bin/true")
            assert proc.returncode == 1 and text in proc.stderr, (bad, proc.stderr)
    finally:
        sub.rmdir()


def test_hook_without_env_gets_the_runtimes(make_bundle: Callable[..., Bundle],
                                            state_root: Path, tmp_path: Path) -> None:
    """A hook without `env` runs with the runtime's environment (runc and crun); one
    with `env` gets exactly that."""
    out = tmp_path / "env"
    bundle = make_bundle(["/bin/true"])
    bundle.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}"]},
        {"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}.given"], "env": ["ONLY=1"]}]}
    bundle.write()
    env = {**os.environ, "PARITY_MARK": "from-the-runtime"}
    proc = run(state_root, bundle, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "PARITY_MARK=from-the-runtime" in out.read_text().splitlines()
    given = Path(f"{out}.given").read_text()
    assert "ONLY=1" in given and "PARITY_MARK" not in given


def test_tmpfs_without_mode_takes_the_directorys(make_bundle: Callable[..., Bundle],
                                                 state_root: Path) -> None:
    """runc: a tmpfs without mode= gets the mode of the directory it covers (0712 here,
    not the kernel's 1777); mode= wins; a directory the runtime makes keeps 1777."""
    bundle = make_bundle(["/bin/stat", "-c", "%a", "/covered", "/given", "/made"])
    for d in ("covered", "given"):
        (bundle.rootfs / d).mkdir()
        os.chmod(bundle.rootfs / d, 0o712)
    bundle.config["mounts"] += [
        {"destination": "/covered", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
        {"destination": "/given", "type": "tmpfs", "source": "tmpfs",
         "options": ["mode=755"]},
        {"destination": "/made", "type": "tmpfs", "source": "tmpfs"}]
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["712", "755", "1777"]


def test_sched_deadline(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """process.scheduler SCHED_DEADLINE is set with sched_setattr (runc does); the
    process's policy is 6 (SCHED_DEADLINE); parameters the kernel refuses are one line."""
    if not os.path.exists("/proc/self/sched"):
        pytest.skip("no /proc/<pid>/sched (CONFIG_SCHED_DEBUG)")
    bundle = make_bundle(["/bin/grep", "-E", "^(policy|dl\\.)", "/proc/self/sched"])
    bundle.config["process"]["scheduler"] = {
        "policy": "SCHED_DEADLINE", "runtime": 2_000_000, "deadline": 50_000_000,
        "period": 100_000_000, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    fields = {ln.split(":")[0].strip(): ln.split(":")[1].strip()
              for ln in proc.stdout.splitlines()}
    assert fields["policy"] == "6", proc.stdout  # (dl.runtime is what is left of it)
    bundle.config["process"]["scheduler"] = {
        "policy": "SCHED_DEADLINE", "runtime": 90_000_000, "deadline": 50_000_000,
        "period": 100_000_000}
    bundle.write()
    proc = run(state_root, bundle)  # runtime > deadline: the kernel's EINVAL, one line
    assert proc.returncode == 1
    assert "process.scheduler: SCHED_DEADLINE: sched_setattr: Invalid argument" in proc.stderr


def test_sysctl_kernel_hostname_refused(make_bundle: Callable[..., Bundle],
                                        state_root: Path) -> None:
    """runc refuses linux.sysctl kernel.hostname (the hostname field sets it);
    kernel.domainname, which has no field of its own, stays allowed."""
    bundle = make_bundle(["/bin/cat", "/proc/sys/kernel/domainname"])
    bundle.config["linux"]["sysctl"] = {"kernel.hostname": "x"}
    bundle.write()
    cid = unique_id("par")
    proc = run_contain(state_root, "run", "--bundle", str(bundle.path), cid)
    assert proc.returncode == 1
    assert "$.linux.sysctl.kernel.hostname" in proc.stderr and "hostname field" in proc.stderr
    assert not (state_root / cid).exists()
    bundle.config["linux"]["sysctl"] = {"kernel.domainname": "example.org"}
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0 and proc.stdout.strip() == "example.org", proc.stderr


def test_join_a_mount_namespace_by_path(make_bundle: Callable[..., Bundle],
                                        state_root: Path) -> None:
    """runc joins a mount namespace given by path and sets the rootfs up inside it (the
    runtime-tools program linux_ns_path); the runtime's own is refused (it is the host's
    tree, where a rootfs must not be mounted)."""
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                               "sleep", "100"])
    try:
        path = f"/proc/{holder.pid}/ns/mnt"
        deadline = 50
        while os.readlink(path) == os.readlink("/proc/self/ns/mnt") and deadline:
            import time

            time.sleep(0.1)
            deadline -= 1
        bundle = make_bundle(["/bin/readlink", "/proc/self/ns/mnt"])
        ns = bundle.config["linux"]["namespaces"]
        i = next(i for i, n in enumerate(ns) if n["type"] == "mount")
        ns[i]["path"] = path
        bundle.write()
        proc = run(state_root, bundle)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == os.readlink(path)
        ns[i]["path"] = "/proc/self/ns/mnt"
        bundle.write()
        proc = run(state_root, bundle)
        assert proc.returncode == 1
        assert f"$.linux.namespaces[{i}].path" in proc.stderr and "own mount" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


def _userns_bundle(make_bundle: Callable[..., Bundle], args: list[str]) -> Bundle:
    """A container in a user namespace of its own: root is host uid/gid 100000."""
    bundle = make_bundle(args)
    cfg = bundle.config
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # (/sys cannot be mounted without a network namespace of the user namespace's own)
    cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/sys")]
    (bundle.rootfs / "data").mkdir()  # (the root-owned rootfs is read-only to its root)
    for p in (bundle.path, *bundle.path.parents):  # (pytest's directories are 0700)
        if p in (Path("/tmp"), Path("/")):
            break
        p.chmod(p.stat().st_mode | 0o711)
    return bundle


def test_bind_source_is_opened_on_the_host(make_bundle: Callable[..., Bundle],
                                           state_root: Path, tmp_path: Path) -> None:
    """runc reaches a bind source from the host: one under a root-owned mode-000
    directory binds into a container whose root is a host uid without access to it
    (the container sees the source itself, not the directory above it)."""
    locked = tmp_path / "locked"
    (locked / "data").mkdir(parents=True)
    (locked / "data" / "hello").write_text("hello\n")
    (locked / "data").chmod(0o755)
    (locked / "data" / "hello").chmod(0o644)
    locked.chmod(0o000)
    try:
        bundle = _userns_bundle(make_bundle, ["/bin/cat", "/data/hello"])
        bundle.config["mounts"].append({"destination": "/data", "type": "bind",
                                        "source": str(locked / "data"),
                                        "options": ["rbind", "ro"]})
        bundle.write()
        proc = run(state_root, bundle)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "hello\n"
        # a source that is missing is still one line naming the mount
        bundle.config["mounts"][-1]["source"] = str(locked / "nope")
        bundle.write()
        proc = run(state_root, bundle)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"mounts[{len(bundle.config['mounts']) - 1}]" in proc.stderr, proc.stderr
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(os.environ.get("CONTAIN_UML_LANE") == "1",
                    reason="hostfs has no id-mapped mounts (docs/hosts.md)")
def test_idmapped_mount_in_a_user_namespace(make_bundle: Callable[..., Bundle],
                                            state_root: Path, tmp_path: Path) -> None:
    """runc sets MOUNT_ATTR_IDMAP from the host: inside the container's user namespace
    mount_setattr fails with EPERM, because the kernel asks for CAP_SYS_ADMIN in the
    user namespace that owns the filesystem's superblock (the host's, for a host
    directory), which no process in the container has."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine").write_text("x")
    os.chown(data / "mine", 0, 0)
    bundle = _userns_bundle(make_bundle, ["/bin/sh", "-c", "ls -ln /data; "
                                          "grep ' /data ' /proc/self/mountinfo"])
    # on-disk 0 appears as host 100000, which is the container's root
    bundle.config["mounts"].append({
        "destination": "/data", "type": "bind", "source": str(data), "options": ["rbind"],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]})
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    line = next(ln.split() for ln in proc.stdout.splitlines() if ln.endswith(" mine"))
    assert line[2:4] == ["0", "0"], proc.stdout  # root's file, as the container's root
    assert "idmapped" in proc.stdout


def test_masked_file_is_not_bound_through_a_dev_null_symlink(
        make_bundle: Callable[..., Bundle], state_root: Path, tmp_path: Path) -> None:
    """runc's CVE-2025-31133: a masked file is covered by binding /dev/null; when /dev
    comes from the image (a bind) and its null is a symlink, a bind of that path would
    put what it names -- /proc/sys/kernel/core_pattern, writable -- over the masked file.
    contain opens /dev/null inside the root and refuses anything but the 1:3 device."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "null").symlink_to("/proc/sys/kernel/core_pattern")
    bundle = make_bundle(["/bin/cat", "/etc/passwd"])
    bundle.config["mounts"].append({"destination": "/dev", "type": "bind",
                                    "source": str(dev), "options": ["rbind"]})
    bundle.config["linux"]["maskedPaths"] = ["/etc/passwd"]
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 1, proc.stdout
    assert "/dev/null is not the null device" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_empty_home_is_replaced(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """runc 1.3 treats an empty HOME= as unset: HOME comes from the container's
    /etc/passwd for the process's user."""
    bundle = make_bundle(["/bin/sh", "-c", "echo \"[$HOME]\""])
    bundle.config["process"]["env"].append("HOME=")
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[/root]"]


def test_user_sysctls_need_a_user_namespace(make_bundle: Callable[..., Bundle],
                                            state_root: Path) -> None:
    """runc 1.4 allows user.* sysctls for a container with a user namespace of its own
    (they are that namespace's); without one they would be the host's: refused."""
    bundle = _userns_bundle(make_bundle, ["/bin/cat", "/proc/sys/user/max_user_namespaces"])
    bundle.config["linux"]["sysctl"] = {"user.max_user_namespaces": "7"}
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7"]
    bundle.config["linux"]["namespaces"] = [
        n for n in bundle.config["linux"]["namespaces"] if n["type"] != "user"]
    del bundle.config["linux"]["uidMappings"], bundle.config["linux"]["gidMappings"]
    bundle.write()
    proc = run(state_root, bundle)
    assert proc.returncode == 1
    assert "$.linux.sysctl.user.max_user_namespaces" in proc.stderr, proc.stderr


def test_sigkill_reaches_every_process_without_a_pid_namespace(
        make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """runc 1.2 (kill -a deprecated): SIGKILL to a container without a PID namespace of
    its own kills all its processes, not only the init (whose death would not take the
    others with it)."""
    bundle = make_bundle(["/bin/sh", "-c", "sleep 100 & sleep 100 & wait"])
    bundle.config["linux"]["namespaces"] = [
        n for n in bundle.config["linux"]["namespaces"] if n["type"] != "pid"]
    bundle.write()
    cid = unique_id("par")
    with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out:
        proc = subprocess.run([*contain_cmd(), "--root", str(state_root), "run", "-d",
                               "--bundle", str(bundle.path), cid],
                              stdin=null, stdout=out, stderr=out, timeout=60)
        assert proc.returncode == 0
    try:
        def pids() -> str:
            return run_contain(state_root, "ps", "--format", "json", cid).stdout.strip()

        wait_for(lambda: len(json.loads(pids() or "[]")) == 3)
        assert run_contain(state_root, "kill", cid, "KILL").returncode == 0

        def all_gone() -> bool:
            reap_zombies()  # (the sleeps are ours once their shell is gone)
            return json.loads(pids() or "[]") == []

        wait_for(all_gone)
    finally:
        run_contain(state_root, "delete", "--force", cid)


def test_recursive_atime_options(make_bundle: Callable[..., Bundle], state_root: Path,
                                 tmp_path: Path) -> None:
    """runc 1.4.1 applies the recursive access-time options (rnoatime, rstrictatime,
    rnodiratime ...; mount_setattr wants the whole atime mask cleared to set one) and
    rnosymfollow, to a bind and every mount below it."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        bundle = make_bundle(["/bin/sh", "-c", "grep ' /data' /proc/self/mountinfo"])
        bundle.config["mounts"].append({"destination": "/data", "type": "bind",
                                        "source": str(src), "options": [
                                            "rbind", "rnoatime", "rnodiratime",
                                            "rnosymfollow"]})
        bundle.write()
        proc = run(state_root, bundle)
        assert proc.returncode == 0, proc.stderr
        opts = {ln.split()[4]: set(ln.split()[5].split(",")) for ln in proc.stdout.splitlines()}
        assert set(opts) == {"/data", "/data/sub"}, proc.stdout
        for mp, have in opts.items():
            assert {"noatime", "nodiratime", "nosymfollow"} <= have, (mp, have)
        bundle.config["mounts"][-1]["options"] = ["rbind", "rstrictatime"]
        bundle.write()
        proc = run(state_root, bundle)
        assert proc.returncode == 0, proc.stderr
        for ln in proc.stdout.splitlines():
            have = set(ln.split()[5].split(","))
            assert not have & {"noatime", "relatime"}, ln  # strictatime shows as neither
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)


def test_console_keeps_the_devpts_group(make_bundle: Callable[..., Bundle],
                                        state_root: Path) -> None:
    """runc 1.4 gives the container's pty to the process's uid and leaves its group to
    the devpts mount (gid=5 in the default config), which need not be mapped."""
    from test_terminal import _pty_run

    bundle = make_bundle(["/bin/sh", "-c", "stat -c 'owner %u %g' $(tty)"])
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.write()
    code, out = _pty_run([*contain_cmd(), "--root", str(state_root), "run", "--bundle",
                          str(bundle.path), unique_id("par")], feed=[])
    assert code == 0, out
    assert "owner 1000 5" in out, out
