"""contain classify: Table 1 measured under real runtimes (contain, runc, bubblewrap,
gVisor when it runs here). Each technology really runs the probe in a busybox rootfs;
nothing is faked. Classification runs in quick mode (no start-up timing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from conftest import contain_cmd
from contain.inspect import classes, render
from contain.measure import runners
from contain.measure.classify import classify


def measure(techs: list[runners.Tech], tries: int = 4) -> dict[str, dict[str, Any]]:
    """classify(techs) -> rows by key. A run killed from outside (other suites' leak
    checks SIGKILL new processes in foreign namespaces on a shared machine) is re-run;
    a failure that persists stays a failure."""
    rows: dict[str, dict[str, Any]] = {}
    todo = list(techs)
    for _ in range(tries):
        doc = classify(techs=todo, quick=True)
        for row in doc["rows"]:
            rows[row["key"]] = row
        todo = [t for t in todo if rows[t.key]["status"] == "failed" or (
            rows[t.key]["status"] == "measured" and rows[t.key]["reason"])]
        if not todo:
            break
    return rows


def mark(row: dict[str, Any], key: str) -> bool | None:
    return row["marks"][key]["mark"]


@pytest.fixture(scope="module")
def default_rows() -> dict[str, dict[str, Any]]:
    return measure([runners.ContainRun(), runners.ContainSandbox(), runners.OCIRuntime("runc"),
                    runners.Bwrap()])


def test_contain_runc_bubblewrap_measured(default_rows: dict[str, dict[str, Any]]) -> None:
    for key in ("contain-run", "contain-sandbox", "runc", "bwrap"):
        row = default_rows[key]
        assert row["status"] == "measured", (key, row.get("reason"))
        assert row["reason"] is None, (key, row["reason"])
        assert set(row["marks"]) == {f"{g}/{c}" for g, c in classes.COLUMNS}
        # every mark carries its evidence
        assert all(m["evidence"] for m in row["marks"].values())
        # all four share the host's kernel: no hypervisor column can be realised
        for col in ("I", "II", "Full", "Para", "HWA"):
            assert mark(row, f"Hypervisor/{col}") is False, (key, col)
        assert mark(row, "Container/Namespaces") is True
        assert mark(row, "Sandbox/ptrace") is False
        # read in a ptrace stop (Linux 6.4+): off for all of them
        assert mark(row, "Sandbox/SUD") is False
        assert row["probe"]["kernel"]["release"] == os.uname().release


def test_marks_differ_where_configs_differ(default_rows: dict[str, dict[str, Any]]) -> None:
    runc, crun_ = default_rows["runc"], default_rows["contain-run"]
    bwrap, sandbox = default_rows["bwrap"], default_rows["contain-sandbox"]
    # `runc spec` defaults: six namespaces, a device allow-list, three capabilities,
    # no seccomp profile -- the same for contain run, which reads the same config
    for row in (runc, crun_):
        assert row["measured"]["namespaces_private"] == ["cgroup", "ipc", "mnt", "net", "pid",
                                                         "uts"]
        assert mark(row, "Container/Cgroups") is True
        assert "devices" in row["measured"]["cgroup_limits"]
        assert mark(row, "Container/Capabilities") is True
        assert row["measured"]["capabilities_kept"] == 3
        assert mark(row, "Sandbox/BPF") is False
        assert row["class"]["name"] == "container"
    assert {k: v["mark"] for k, v in runc["marks"].items()} == \
        {k: v["mark"] for k, v in crun_["marks"].items()}
    # bubblewrap as root: a user namespace too, no cgroup, all capabilities kept in it
    assert "user" in bwrap["measured"]["namespaces_private"]
    assert len(bwrap["measured"]["namespaces_private"]) == 7
    assert mark(bwrap, "Container/Cgroups") is False
    assert mark(bwrap, "Container/Capabilities") is False
    assert bwrap["class"]["name"] == "container"
    # contain sandbox: no capabilities, a kernel-only seccomp filter: filtering is no
    # interception, so a container (the survey gives Docker and Podman no BPF mark)
    assert mark(sandbox, "Sandbox/BPF") is False
    assert sandbox["measured"]["seccomp"] == "filter"
    assert runc["measured"]["seccomp"] == "none"
    assert mark(sandbox, "Container/Capabilities") is True
    assert sandbox["measured"]["capabilities_kept"] == 0
    assert sandbox["class"]["name"] == "container"
    # what the probe saw from inside agrees with the marks
    assert sandbox["probe"]["seccomp"]["mode"] == 2
    assert runc["probe"]["seccomp"]["mode"] == 0
    reach = {k: r["measured"]["syscalls_reachable"] for k, r in default_rows.items()}
    assert reach["runc"][0] < reach["runc"][1]  # some harmless calls refused
    assert reach["bwrap"][0] > reach["runc"][0]  # full capabilities in its user namespace
    # the taxonomy's options realised follow the same measurements
    assert runc["taxonomy"]["container.cgroups.devices"] is True
    assert bwrap["taxonomy"]["container.namespaces.user"] is True
    assert runc["taxonomy"]["container.namespaces.user"] is False
    assert sandbox["taxonomy"]["hybrid.container+sandbox"] is False


def test_same_runtime_different_config() -> None:
    """runc with a seccomp profile and a memory limit vs runc with the defaults; contain
    sandbox with and without its seccomp profile and limits."""
    cfg = runners.default_config()
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}
    cfg["linux"]["resources"]["memory"] = {"limit": 96 * 1024 * 1024}
    techs = [runners.OCIRuntime("runc", key="runc-plain"),
             runners.OCIRuntime("runc", key="runc-filtered", config=cfg),
             runners.ContainSandbox(("--no-seccomp", "--memory", "80M", "--pids", "50"),
                                    key="sandbox-limits")]
    rows = measure(techs)
    plain, filtered, limits = rows["runc-plain"], rows["runc-filtered"], rows["sandbox-limits"]
    assert plain["measured"]["seccomp"] == "none" and filtered["measured"]["seccomp"] == "filter"
    assert mark(plain, "Sandbox/BPF") is False and mark(filtered, "Sandbox/BPF") is False
    assert plain["class"]["name"] == "container" and filtered["class"]["name"] == "container"
    assert "memory.max" not in plain["measured"]["cgroup_limits"]
    assert "memory.max" in filtered["measured"]["cgroup_limits"]
    assert filtered["facts"]["cgroups"]["limits"]["memory"]["max"]["effective"] == 96 << 20
    assert filtered["probe"]["syscalls"]["results"]["mount"]["verdict"] == "denied"
    assert mark(limits, "Sandbox/BPF") is False
    assert mark(limits, "Container/Cgroups") is True
    assert {"memory.max", "pids.max"} <= set(limits["measured"]["cgroup_limits"])
    assert limits["facts"]["cgroups"]["limits"]["pids"]["max"]["effective"] == 50


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc (gVisor) not installed")
def test_gvisor_ptrace_platform() -> None:
    row = measure([runners.Runsc("ptrace")])["runsc-ptrace"]
    if row["status"] != "measured":
        pytest.skip(f"runsc does not run here: {row['reason']}")
    # its own kernel, seen from inside; the workload is invisible on the host
    assert row["probe"]["kernel"]["release"] != os.uname().release
    assert "gVisor" in " ".join(row["probe"]["dmesg"]["head"])
    assert "runtime reports" in row["facts"]["found_as"]
    assert mark(row, "Sandbox/ptrace") is True  # the Sentry traces its stub processes
    assert mark(row, "Hypervisor/HWA") is False
    assert mark(row, "Hypervisor/II") is False  # a traced user-space kernel, no emulator
    assert row["class"]["name"] == "sandbox"


def test_not_installed_is_listed() -> None:
    doc = classify(techs=[runners.OCIRuntime("no-such-runtime-4711"), runners.Bwrap()],
                   quick=True)
    row = doc["rows"][0]
    assert row["status"] == "not installed"
    assert "not installed" in row["reason"]
    for fmt, fn in render.FORMATS.items():
        text = fn(doc)
        assert "no-such-runtime-4711" in text, fmt
        assert "not installed" in text, fmt


def test_formats(default_rows: dict[str, dict[str, Any]]) -> None:
    doc = {"schema": "contain.classify/1", "host": {"kernel": {"release": "6.x"},
                                                    "virtualised": True},
           "rows": list(default_rows.values()), "columns": []}
    table = render.table_text(doc)
    assert "Hypervisor" in table and "runc" in table and "bubblewrap" in table
    md = render.table_markdown(doc)
    assert md.splitlines()[0].startswith("| Name | Version | Comment | I | II |")
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")]) == 1 + len(default_rows)
    html = render.table_html(doc)
    assert html.startswith("<!doctype html>") and "<table>" in html
    assert "Syscall User Dispatch" in html  # the taxonomy tree is on the page
    assert "http" not in html.split("<body>")[1].split("Host kernel")[0]  # self-contained
    assert "<script" not in html and "<link" not in html
    json.loads(render.table_json(doc))


def test_cli_classify_json_and_errors() -> None:
    proc = subprocess.run([*contain_cmd(), "classify", "--quick", "--runtimes", "bwrap",
                           "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "contain.classify/1"
    assert [r["key"] for r in doc["rows"]] == ["bwrap"]
    bad = subprocess.run([*contain_cmd(), "classify", "--format", "pdf"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "unknown format" in bad.stderr
    bad = subprocess.run([*contain_cmd(), "classify", "--runtimes", "vmware"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "unknown runtime 'vmware'" in bad.stderr


def test_classify_finds_the_contain_that_runs_it() -> None:
    """Run from the checkout's virtualenv with no `contain` on PATH, classify measures
    contain's own rows instead of calling them not installed."""
    from conftest import CONTAIN

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    proc = subprocess.run([str(CONTAIN), "classify", "--runtimes", "contain-sandbox",
                           "--quick", "--format", "json"], capture_output=True, text=True,
                          timeout=300, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert row["status"] == "measured", row.get("reason")


def test_the_machine_is_reported_as_context() -> None:
    """A guest is detected as systemd-detect-virt does (here: the CPU's hypervisor bit,
    kvm-clock); `inspect` reports it apart from the process's class."""
    from contain.inspect import virt

    with open("/proc/cpuinfo") as f:
        flagged = " hypervisor " in f" {f.read()} ".replace("\n", " ")
    info = virt.detect()
    assert info["guest"] is flagged
    text = subprocess.run([*contain_cmd(), "inspect", "self"], capture_output=True, text=True,
                          timeout=60).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("machine: "))
    assert ("a virtual machine" in line) is flagged
    assert "class: host" in text  # the machine's hypervisor is not the process's own


def test_survey_rows_beside_the_measured_ones(default_rows: dict[str, dict[str, Any]]) -> None:
    """Each measured technology is set beside its Table 1 row; every column where the
    two disagree has one line of explanation, and agreeing rows say so."""
    runc, bwrap = default_rows["runc"], default_rows["bwrap"]
    assert runc["survey"]["survey"]["name"] == "Docker"
    assert runc["survey"]["differences"] == []  # runc spec's defaults: Docker's marks
    assert bwrap["survey"]["survey"]["name"] == "Flatpak"
    cols = [d.split(":")[0] for d in bwrap["survey"]["differences"]]
    # run as root without limits: no cgroup, and the caller's bounding set
    assert cols == ["Container/Cgroups", "Container/Capabilities"]
    assert all(" -- " in d for d in bwrap["survey"]["differences"])
    doc = {"rows": list(default_rows.values()), "host": {
        "kernel": {"release": os.uname().release}, "virtualised": False}}
    text = render.table_text(doc)
    assert "The survey's Table 1 beside the measurements:" in text
    assert "runc ~ Docker 20.10" in text and "the same marks" in text


def test_contain_supervised_rows_are_the_sandbox_class() -> None:
    """contain's own sandbox-class rows: the notify supervisor gives the BPF mark (a
    notify filter with a live receiver), the ptrace one the ptrace mark; both are set
    beside the survey's rows they resemble."""
    rows = measure([runners.supervised("notify"), runners.supervised("ptrace")])
    notify, ptrace = rows["contain-supervise-notify"], rows["contain-supervise-ptrace"]
    assert mark(notify, "Sandbox/BPF") is True and notify["class"]["name"] == "sandbox"
    assert "contain-notify" in notify["marks"]["Sandbox/BPF"]["evidence"]
    assert mark(ptrace, "Sandbox/ptrace") is True and ptrace["class"]["name"] == "sandbox"
    assert notify["survey"]["survey"]["name"] == "bpfContain"
    assert ptrace["survey"]["survey"]["comment"] == "with ptrace"
