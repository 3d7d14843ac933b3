"""Isolation measured: the attack surface from a process's own filters, interference
between neighbours, and the ordinal scale (survey 8.1, 8.2).

Real kernel throughout: the filters are compiled by libseccomp, loaded in real
processes and read back with ptrace; the neighbours are real containers and sandboxes.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from contain.inspect import filtereval
from contain.inspect.interception import seccomp_interception
from contain.security import seccomp as sec
from contain.spec.config import Seccomp


def _filtered_child(profile: dict) -> int:
    prog = sec.compile_filter(Seccomp.decode(profile, "$.linux.seccomp"))
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            from contain.linux.syscalls import prctl

            prctl(38, 1)
            sec.load_filter(prog)
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


def test_surface_is_what_the_kernel_would_do() -> None:
    """The filters read back from a live process and run offline agree with the
    profile: denied names refused, notified ones decided in user space, the rest
    reach the kernel; with no filter, every call reaches it."""
    pid = _filtered_child({
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock",
        "syscalls": [{"names": ["uname", "mount", "getppid"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}]})
    try:
        icpt = seccomp_interception(pid, 1, 0, surface=True)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    s = icpt["surface"]
    assert s["refused"] == 3 and s["user_space"] == 1
    assert s["user_space_names"] == ["getcwd"]
    assert s["reach_kernel"] == s["total"] - 4
    assert "uname" not in s["reach_names"] and "getpid" in s["reach_names"]
    bare = filtereval.surface([])
    assert bare["reach_kernel"] == bare["total"] == s["total"]


def test_argument_rules_count_as_reachable_with_some_arguments() -> None:
    """A call allowed only for some argument values reaches the kernel (with those)."""
    pid = _filtered_child({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                     {"names": ["exit_group", "write", "clock_nanosleep"],
                      "action": "SCMP_ACT_ALLOW"}]})
    try:
        s = seccomp_interception(pid, 1, 0, surface=True)["surface"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert sorted(s["reach_names"]) == ["clock_nanosleep", "exit_group", "personality",
                                        "write"]


def test_a_corrupt_program_is_an_error_not_a_verdict() -> None:
    with pytest.raises(filtereval.FilterError):
        filtereval.run(b"\x20\x00\x00\x00\x00\x10\x00\x00", 0, 0xC000003E)  # ld [4096]


# -- interference, attack surface, the ordinal scale (quick mode, real technologies) -------

import shutil  # noqa: E402
import subprocess  # noqa: E402

from contain.measure import rank, runners  # noqa: E402
from contain.measure.interference import Limits  # noqa: E402
from contain.measure.interference import measure as interference  # noqa: E402
from contain.measure.isolation import measure_isolation  # noqa: E402


def test_a_memory_hog_with_a_limit_leaves_its_neighbour_the_machine() -> None:
    """Two contain containers in a 512 MiB machine: a memory hog with a 128 MiB limit
    holds at most its limit while the neighbour's workload completes; the same hog
    without a limit takes what the machine has -- the neighbour's share too."""
    work = runners.Work()
    try:
        tech = runners.ContainRun()
        kw = {"hogs": ("memory",), "runs": 1, "victim_mb": 30, "victim_mem": 64,
              "machine_memory": 512 << 20, "settle": 1.0}
        limited = interference(tech, work, limits=Limits(memory=128 << 20, cpus=None,
                                                         pids=128), **kw)
        free = interference(tech, work, limits=Limits(None, None, None), **kw)
    finally:
        work.close()
    lim, unl = limited["hogs"]["memory"], free["hogs"]["memory"]
    assert lim["victim_failures"] == 0 and lim["victim_s"] is not None, limited
    assert lim["hog_peak_mb"] is not None and lim["hog_peak_mb"] <= 128 * 1.05, limited
    assert unl["hog_peak_mb"] is not None and unl["hog_peak_mb"] >= 512 * 0.7, free
    assert unl["hog_peak_mb"] > 2 * lim["hog_peak_mb"]
    assert not os.path.exists("/sys/fs/cgroup/memory/contain-classify") or not [
        d for d in os.listdir("/sys/fs/cgroup/memory/contain-classify")
        if d.startswith("machine-")]


def test_the_default_seccomp_profile_shrinks_the_attack_surface() -> None:
    """The same container with `contain spec`'s config and with the default seccomp
    profile added: fewer system calls reach the host kernel, and its surface score
    ranks first."""
    from contain.measure.classify import classify
    from contain.measure.surface import attack_surface
    from contain.security.seccomp_default import default_profile

    cfg = runners.default_config()
    cfg["linux"]["seccomp"] = default_profile([])
    techs = [runners.OCIRuntime("contain", key="plain"),
             runners.OCIRuntime("contain", key="filtered", config=cfg)]
    for t in techs:
        t.path = runners.contain_launcher  # type: ignore[method-assign]
    doc = classify(techs=techs, quick=True)
    rows = {r["key"]: r for r in doc["rows"]}
    assert all(r["status"] == "measured" for r in rows.values()), doc["rows"]
    plain, filtered = attack_surface(rows["plain"]), attack_surface(rows["filtered"])
    assert plain["syscalls_to_host_kernel"] == plain["syscalls_total"]
    assert filtered["syscalls_to_host_kernel"] < plain["syscalls_to_host_kernel"] - 30
    assert filtered["score"] < plain["score"]
    order = rank.ranks({"plain": plain["score"], "filtered": filtered["score"]})
    assert order == {"filtered": 1, "plain": 2}


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc (gVisor) not installed")
def test_the_sandbox_class_ranks_above_the_container_class_on_attack_surface() -> None:
    """gVisor (ptrace platform: the sandbox class, its workload's calls served by the
    Sentry) reaches fewer host system calls than runc's container class."""
    doc = measure_isolation(quick=True, techs=[runners.OCIRuntime("runc"),
                                               runners.Runsc("ptrace")])
    if any(r["key"] == "runsc-ptrace" for r in doc["not_measured"]):
        pytest.skip(f"runsc does not run here: {doc['not_measured']}")
    classes = {r["key"]: r["class"]["name"] for r in doc["classify"]["rows"]}
    assert classes == {"runc": "container", "runsc-ptrace": "sandbox"}
    places = {r["key"]: r["ranks"]["surface"] for r in doc["order"]}
    assert places == {"runsc-ptrace": 1, "runc": 2}
    assert doc["measured"]["runsc-ptrace"]["surface"]["syscalls_to_host_kernel"] < \
        doc["measured"]["runc"]["surface"]["syscalls_to_host_kernel"]


def test_weights_order_and_bad_weights() -> None:
    axes = {"surface": {"a": 0.1, "b": 0.9}, "interference": {"a": 90.0, "b": 5.0},
            "containment": {"a": 1.0, "b": 1.0}, "startup": {"a": 300.0, "b": 10.0},
            "overhead": {"a": 1.0, "b": None}}
    iso = rank.order(axes, rank.parse_weights("isolation=10,startup=0,overhead=0"))
    fast = rank.order(axes, rank.parse_weights("isolation=0,startup=5"))
    assert [r["key"] for r in fast] == ["b", "a"]
    assert iso[0]["ranks"]["surface"] == 1 and iso[0]["key"] in ("a", "b")
    assert {r["key"]: r["ranks"]["overhead"] for r in iso} == {"a": 1, "b": 2}  # None last
    from contain.errors import ContainError

    for bad in ("speed=2", "surface", "surface=x", "surface=-1", "surface=nan",
                "isolation=0,startup=0,overhead=0"):
        with pytest.raises(ContainError, match="--weights"):
            rank.parse_weights(bad)


def test_cli_measure_quick_markdown_and_html(tmp_path: Any) -> None:
    from conftest import contain_cmd

    out = tmp_path / "iso.html"
    proc = subprocess.run([*contain_cmd(), "classify", "--measure", "--quick", "--runtimes",
                           "contain-sandbox", "--weights", "isolation=2", "--format", "html",
                           "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert "<table>" in html and "contain sandbox" in html and "surface" in html
    bad = subprocess.run([*contain_cmd(), "classify", "--weights", "isolation=2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--weights goes with --measure" in bad.stderr


def test_bench_isolation_writes_its_report(tmp_path: Any) -> None:
    """`contain bench --only isolation` runs the same measurement for the runtimes the
    bench compares and writes isolation.md/.json/.html beside report.md."""
    import json

    from conftest import contain_cmd

    proc = subprocess.run([*contain_cmd(), "bench", "--quick", "--no-progress", "--runtimes",
                           "bwrap", "--only", "isolation", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "isolation.json").read_text())
    assert [r["key"] for r in doc["order"]] == ["bwrap"]
    assert doc["measured"]["bwrap"]["interference"]["hogs"]["memory"]["hog_peak_mb"] <= 200
    assert "## Isolation measured" in (tmp_path / "report.md").read_text()
