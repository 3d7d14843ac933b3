"""`contain bench` in quick mode: every benchmark writes its table, its samples to JSON and
its plots, with sane values, every runtime measured or explained; nothing is left behind
(the autouse no_leaks fixture checks mounts, cgroups, processes and fds), also after a
Ctrl-C in the middle. Real runtimes, real containers: no timing is asserted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, contain_cmd

sys.path.insert(0, str(REPO))

from benchmarks.common import percentile, rotate, summarize

RUNTIMES = ["contain", "runc", "crun", "runsc", "bwrap", "unshare"]
BENCHMARKS = ["lifecycle", "api_spawn", "throughput", "density", "pauseresume", "workload"]


def bench_dirs() -> set[str]:
    return {p for p in os.listdir("/tmp") if p.startswith("contain-bench-")}


def numbers(tree: Any) -> Iterator[float]:
    if isinstance(tree, bool):
        return
    if isinstance(tree, (int, float)):
        yield float(tree)
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from numbers(v)


def bench(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*contain_cmd(), "bench", "--out", str(out), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout)


# -- pure helpers ---------------------------------------------------------------------------

def test_statistics() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 90) == 10
    assert math.isnan(percentile([], 50))
    s = summarize([0.004, 0.001, 0.003, 0.002, 0.005])
    assert s["n"] == 5 and s["median"] == 0.003 and s["min"] == 0.001 and s["max"] == 0.005
    assert s["p10"] < s["q1"] <= s["median"] <= s["q3"] < s["p90"]
    assert summarize([]) == {"n": 0}
    assert rotate(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotate(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_runtime_commands_do_not_import_bench_libraries(tmp_path: Path) -> None:
    """Plotting and the benchmarks are imported by `contain bench` only."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'src')!r})\n"
        "from contain.cli import main, cmd_bench\n"
        f"rc = main.main(['--root', {str(tmp_path)!r}, 'list'])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'benchmarks', 'numpy', 'tqdm')]\n"
        "print(rc, bad)\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr


# -- the command ----------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_quick_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # our own benchmarks; the ones other modules contribute (syscall_overhead, cgroups,
    # engines) have their own tests
    proc = bench(out, "--quick", "--runtimes", ",".join(RUNTIMES), "--only",
                 ",".join(BENCHMARKS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    doc = json.loads((out / "results.json").read_text())
    meta = doc["meta"]
    assert not Path(meta["tmp"]).exists(), "the benchmark left its temporary directory behind"
    assert proc.stdout == report
    assert meta["cleanup_problems"] == []
    assert not meta["interrupted"]

    # every runtime: measured, or left out with its error
    for rt in RUNTIMES:
        info = meta["runtimes"][rt]
        assert info["ok"] or info["error"], (rt, info)
        assert f"| {rt} |" in report
    assert meta["runtimes"]["runc"]["ok"], meta["runtimes"]["runc"]
    assert meta["runtimes"]["unshare"]["ok"], meta["runtimes"]["unshare"]
    ok = [rt for rt in RUNTIMES if meta["runtimes"][rt]["ok"]]

    # every benchmark: a section with a table, its samples, sane values
    for name in BENCHMARKS:
        assert name in doc["benchmarks"], name
        b = doc["benchmarks"][name]
        assert f"## {b['title']}" in report
        assert "*" not in b["errors"], b["errors"]  # the benchmark itself did not crash
        vals = list(numbers(b["data"].get("samples", b["data"].get("curves", {}))))
        assert vals, f"{name}: no samples"
        assert all(math.isfinite(v) for v in vals), name
    section_tables = report.count("|---|")
    assert section_tables >= len(BENCHMARKS)

    # latency samples: positive; every working runtime ran, or says why not
    lc = doc["benchmarks"]["lifecycle"]
    for rt in ok:
        runs = lc["data"]["samples"][rt]["run"]
        assert runs or rt in lc["errors"], rt
        assert all(v > 0 for v in runs)
    assert lc["data"]["samples"]["runc"]["create"], "runc create/start/delete measured"
    assert all(v > 0 for ph in lc["data"]["samples"].values() for s in ph.values() for v in s)
    assert lc["data"]["ratio_to_runc"]["runc"]["run"] == pytest.approx(1.0)

    tp = doc["benchmarks"]["throughput"]
    for rt in ok:
        per = tp["data"]["samples"][rt]
        assert any(per.values()) or rt in tp["errors"], rt
        assert all(v > 0 for s in per.values() for v in s)

    dn = doc["benchmarks"]["density"]
    for rt in ok:
        pts = dn["data"]["curves"].get(rt)
        assert pts or rt in dn["errors"], rt
        for p in pts or []:
            assert p["n"] > 0 and p["residue_procs"] >= 0 and p["workload_pss_kib"] >= 0
    runc_points = dn["data"]["curves"]["runc"]
    assert runc_points[-1]["residue_procs"] == 0, "runc leaves nothing resident"
    assert runc_points[-1]["workload_pss_kib"] > 0

    pr = doc["benchmarks"]["pauseresume"]
    assert pr["data"]["samples"]["runc"]["pause"], pr["errors"]
    for rt in ("bwrap", "unshare"):
        assert "no pause/resume" in pr["errors"][rt]
    assert all(v > 0 for per in pr["data"]["samples"].values() for s in per.values() for v in s)

    wl = doc["benchmarks"]["workload"]
    for wname, per in wl["data"]["samples"].items():
        assert per.get("native"), f"{wname} ran natively"
        assert all(v > 0 for s in per.values() for v in s), wname
    assert "unshare" in wl["errors"]

    api = doc["benchmarks"]["api_spawn"]
    assert api["data"]["samples"]["subprocess.run (floor)"]
    assert api["data"]["samples"]["contain.run"] or api["errors"].get("contain")

    # plots: written and PNG, or skipped with the reason in the report
    if meta["plots_skipped"]:
        assert "Plots skipped" in report
    else:
        plots = [p for b in doc["benchmarks"].values() for p in b["plots"]]
        for expected in ("lifecycle.png", "density.png", "throughput.png",
                         "pauseresume.png", "workload.png"):
            assert expected in plots, expected
        for p in plots:
            data = (out / p).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, p
            assert f"]({p})" in report


def test_bench_unknown_runtime_is_explained(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--runtimes", "runc,nosuch", "--only", "lifecycle",
                 "--rounds", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["meta"]["runtimes"]["nosuch"]["ok"] is False
    assert "unknown runtime" in doc["meta"]["runtimes"]["nosuch"]["error"]
    assert doc["benchmarks"]["lifecycle"]["data"]["samples"]["runc"]["run"]
    assert "nosuch" in doc["benchmarks"]["lifecycle"]["errors"]


@pytest.mark.slow
def test_bench_goals_quick(tmp_path: Path) -> None:
    """The goals table: every goal of the performance issue as a ratio measured in this
    run, with its spread and target; the entry points built and measured; nothing left."""
    if not (shutil.which("runc") and shutil.which("bwrap")):
        pytest.skip("runc and bubblewrap are the goals' peers")
    out = tmp_path / "out"
    before = bench_dirs()
    proc = bench(out, "--quick", "--runtimes", "contain", "--only", "goals", "--rounds", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["cleanup_problems"] == []
    assert bench_dirs() == before
    goals = doc["benchmarks"]["goals"]
    assert goals["errors"] == {}, goals["errors"]
    from benchmarks.goals import GOALS

    ratios = goals["data"]["ratios"]
    assert set(ratios) == set(GOALS)
    for name, r in ratios.items():
        assert 0 < r["p10"] <= r["median"] <= r["p90"], name
        assert r["n"] >= 2 and len(r["per_round"]) == r["n"], name
        assert r["a"]["median"] > 0 and r["b"]["median"] > 0, name
    # the lifecycle is the sum of its five steps, round by round
    samples = goals["data"]["samples"]
    steps = [samples[f"contain.{s}"] for s in ("create", "start", "state", "kill", "delete")]
    assert samples["contain.lifecycle"] == pytest.approx([sum(x) for x in zip(*steps, strict=True)])
    assert set(goals["data"]["entry_points"]) == {"launcher", "packaged", "console"}
    report = (out / "report.md").read_text()
    for what, _, _, reads in GOALS.values():
        assert what in report and reads in report
    assert report.count("**x") == len(GOALS)


def test_sandbox_floor_isolates() -> None:
    """The goals' yardstick benchmarks/sandbox_floor.py is only a fair floor if it does
    the sandbox's work: PID 1 of its own PID namespace, a read-only host root, a private
    /tmp and /proc, a /dev of a few nodes, no network but lo, its own hostname space."""
    if os.geteuid() != 0:
        pytest.skip("the floor program mounts: it runs as root")
    script = ("echo pid=$$; touch /etc/floor-probe 2>/dev/null || echo ro; "
              "ls /tmp | wc -l; ls /dev | tr '\\n' ' '; echo; "
              "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ls /proc | grep -c '^[0-9]'; "
              "hostname floor-probe && hostname")
    floor = REPO / "benchmarks" / "sandbox_floor.py"
    proc = subprocess.run([sys.executable, "-I", "-S", str(floor), "/bin/sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid, ro, tmp, dev, net, procs, host = proc.stdout.splitlines()
    assert (pid, ro, tmp) == ("pid=1", "ro", "0")
    assert dev.split() == sorted(["full", "null", "ptmx", "pts", "random", "shm", "tty",
                                  "urandom", "zero"])
    assert net.split() == ["lo"] and host == "floor-probe"
    assert int(procs) <= 3  # sh, and ls / grep of the pipe: nothing of the host's
    assert os.uname().nodename != "floor-probe" and not os.path.exists("/etc/floor-probe")


def test_bench_bad_benchmark_name(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--only", "nosuch")
    assert proc.returncode == 1
    assert "unknown benchmark" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bench_ctrl_c_cleans_up(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) while density has containers running: the
    containers, cgroups, mounts and the temporary directory all go away."""
    if not shutil.which("runc"):
        pytest.skip("runc is not installed")
    before = bench_dirs()
    proc = subprocess.Popen([*contain_cmd(), "bench", "--out", str(tmp_path), "--no-progress",
                             "--runtimes", "runc,bwrap", "--only", "density",
                             "--density", "40"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        started = False
        while time.monotonic() < deadline and proc.poll() is None and not started:
            for d in bench_dirs() - before:
                scratch = Path("/tmp", d, "scratch")
                if scratch.is_dir() and len([p for p in scratch.glob("*-dn-*.pid")]) >= 3:
                    started = True
            time.sleep(0.05)
        assert started, "density never started its containers"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    doc = json.loads((tmp_path / "results.json").read_text())
    assert not Path(doc["meta"]["tmp"]).exists()
    assert doc["meta"]["interrupted"] is True
    assert doc["meta"]["cleanup_problems"] == []


def test_driver_finds_contributed_benchmarks() -> None:
    """syscall_overhead, cgroups and engines run when their module exists, else are skipped."""
    from benchmarks import driver

    for name in driver.EXTERNAL:
        present = (REPO / "benchmarks" / f"{name}.py").exists()
        module = driver.benchmark_module(name)
        assert (module is not None) == present, name
        if module is not None:
            assert callable(module.run), name
