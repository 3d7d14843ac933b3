"""The performance goals (issue 16), each as a ratio measured in one run, with its spread.

Every goal compares two things timed back to back in the same round (their order
alternates from round to round), and the ratio is taken round by round: the table gives
the median of those per-round ratios and their p10..p90, so a slow period of this shared
machine hits both sides of a ratio alike.

- ``contain sandbox -- /bin/true`` vs bubblewrap doing the same
  (``bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-all
  --die-with-parent --new-session /bin/true``), and with a file policy (a writable
  directory, a hidden file in it) vs bubblewrap binding the same;
- two yardsticks beside the sandbox, no goal of their own: the interpreter alone
  (``python3 -I -S -c pass``) and benchmarks/sandbox_floor.py, the sandbox's system calls
  and nothing else on the same interpreter, each against bubblewrap: the second is the
  lowest ratio any sandbox started per command in Python can reach here;
- ``contain.run(["/bin/true"])`` and ``contain.Pool(size=2).run(["/bin/true"])`` vs
  ``subprocess.run`` of that bwrap command, all three from one Python process (a child
  interpreter, as in api_spawn), interleaved call by call;
- the engine lifecycle (create, start, state, kill KILL, delete --force of a busybox
  bundle) vs runc's, and create alone;
- each light command (state, kill, start, delete) vs the interpreter's floor,
  ``python3 -I -S -c pass`` with the interpreter contain's command runs on, and that
  floor against ``runc state`` (a yardstick: what one interpreter start costs against
  a Go runtime's light command);
- ``run`` of /bin/true vs runc's;
- the packaged entry point (the script pip installs, scripts/contain) vs the launcher
  (scripts/make-launcher), on ``state``; pip's console script, which the package used
  to install, is measured beside them for reference.

The two entry points are built here in a temporary directory from the measured package,
so both are measured whichever way contain was installed: the launcher as
scripts/make-launcher writes it, the packaged one in a virtualenv (``python -m venv
--without-pip``) whose site-packages holds the package, as pip would lay it out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import (
    REPO,
    SRC,
    BenchError,
    OciRuntime,
    Result,
    Session,
    fmt_ms,
    make_runtime,
    md_table,
    oci_config,
    percentile,
    stopwatch,
    summarize,
    timed,
)

BWRAP_TRUE = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
              "--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--new-session",
              "/bin/true"]
SANDBOX_FLOOR = Path(__file__).resolve().parent / "sandbox_floor.py"

#: goal -> (what, peer, target ratio or None, how the target reads)
GOALS: dict[str, tuple[str, str, float | None, str]] = {
    "sandbox": ("`contain sandbox -- /bin/true`", "bwrap (same namespaces and mounts)", 2.0,
                "<= 2.0"),
    "sandbox_policy": ("`contain sandbox --rw DIR --deny DIR/secret -- /bin/true`",
                       "bwrap, the same plus `--bind DIR DIR --ro-bind /dev/null DIR/secret`",
                       2.5, "<= 2.5"),
    "floor_python": ("`python3 -I -S -c pass` (yardstick)", "bwrap (same namespaces and mounts)",
                     None, "(the interpreter alone)"),
    "floor_sandbox": ("benchmarks/sandbox_floor.py (yardstick)",
                      "bwrap (same namespaces and mounts)", None,
                      "(the least a Python-started sandbox costs)"),
    "floor_light": ("`python3 -I -S -c pass` (yardstick)", "`runc state`", None,
                    "(the interpreter alone against a light runc command)"),
    "sandbox_over_floor": ("`contain sandbox -- /bin/true`", "benchmarks/sandbox_floor.py",
                           None, "(what contain adds to the floor)"),
    "api": ("`contain.run(['/bin/true'])`", "`subprocess.run(bwrap ...)`, same process", 1.0,
            "< 1.0, and < 5 ms"),
    "api_pool": ("`contain.Pool(size=2).run(['/bin/true'])`",
                 "`subprocess.run(bwrap ...)`, same process", 1.0, "< 1.0, and < 5 ms"),
    "lifecycle": ("create+start+state+kill+delete", "runc, the same five", 1.0, "<= 1.0"),
    "create": ("`create`", "`runc create`", 1.0, "well under 1.0"),
    "state": ("`state`", "`python3 -I -S -c pass`", 1.3, "<= 1.3"),
    "kill": ("`kill KILL`", "`python3 -I -S -c pass`", 1.3, "<= 1.3"),
    "start": ("`start`", "`python3 -I -S -c pass`", 1.3, "<= 1.3"),
    "delete": ("`delete --force`", "`python3 -I -S -c pass`", 1.3, "<= 1.3"),
    "run": ("`run` of /bin/true", "`runc run`", 0.75, "<= 0.75"),
    "entry": ("packaged entry point, `state`", "the launcher, `state`", 1.0, "~1.0"),
    "console": ("pip's console script, `state`", "the launcher, `state`", None,
                "(reference: what pip's console script cost)"),
}

API_CHILD = r"""
import json, subprocess, sys, time
sys.path.insert(0, @SRC@)
import contain
bwrap = @BWRAP@
n = @N@
names = ("api", "pool", "peer")
samples = {name: [] for name in names}
with contain.Pool(size=2) as pool:
    deadline = time.monotonic() + 60
    while pool.ready < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(n + 2):  # two warm-up rounds
        got = []
        for k in range(3):  # the order rotates from round to round
            which = names[(i + k) % 3]
            t = time.perf_counter()
            if which == "api":
                rc = contain.run(["/bin/true"]).returncode
            elif which == "pool":
                rc = pool.run(["/bin/true"]).returncode
            else:
                rc = subprocess.run(bwrap).returncode
            dt = time.perf_counter() - t
            if rc != 0:
                print(json.dumps({"error": f"{which}: exit {rc}"}))
                sys.exit(0)
            got.append((which, dt))
        if i >= 2:
            for which, dt in got:
                samples[which].append(dt)
print(json.dumps(samples))
"""

PIP_CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from contain.cli.main import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def _interpreter(argv: Sequence[str]) -> str:
    """The interpreter contain's command runs on: the launcher's shebang, the python3
    next to the packaged script, else ours."""
    try:
        with open(argv[0], "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!") and "python" in first:
        return first[2:].split()[0]
    beside = Path(os.path.realpath(argv[0])).parent / "python3"
    if first == "#!/bin/sh" and beside.exists():
        return str(beside)
    return sys.executable


def _packaged_script_text(contain: Sequence[str]) -> str | None:
    for path in (REPO / "scripts" / "contain", Path(contain[0])):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if text.startswith("#!/bin/sh\n") and "contain.cli.main" in text:
            return text
    return None


def _entry_points(session: Session, python: str,
                  contain: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The launcher, the packaged script and pip's console script, built in the
    session's directory around the measured package."""
    errors: dict[str, str] = {}
    base = session.tmp / "entry"
    base.mkdir(exist_ok=True)
    launcher = base / "launcher"
    launcher.write_text(f"#!{python} -IS\nimport sys\nsys.path.insert(0, {str(SRC)!r})\n"
                        "from contain.cli.main import run\nrun()\n")
    launcher.chmod(0o755)
    points = {"launcher": [str(launcher)]}
    venv = base / "venv"
    c = timed([python, "-m", "venv", "--without-pip", str(venv)], timeout=300)
    if c.rc != 0:
        errors["entry"] = errors["console"] = f"python -m venv: {c.describe()}"
        return points, errors
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    found = subprocess.run([python, "-c", "import sys; print('python%d.%d' % "
                            "sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=60).stdout.strip()
    site = venv / "lib" / (found or ver) / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / "contain").symlink_to(SRC / "contain")
    text = _packaged_script_text(contain)
    if text is None:
        errors["entry"] = "the packaged script (scripts/contain) was not found"
    else:
        script = venv / "bin" / "contain"
        script.write_text(text)
        script.chmod(0o755)
        points["packaged"] = [str(script)]
    console = venv / "bin" / "contain-console"
    console.write_text(PIP_CONSOLE_SCRIPT.format(python=venv / "bin" / "python3"))
    console.chmod(0o755)
    points["console"] = [str(console)]
    return points, errors


def _ratios(a: list[float], b: list[float]) -> dict[str, Any]:
    r = [x / y for x, y in zip(a, b, strict=False) if y > 0]
    if not r:
        return {}
    return {"median": percentile(r, 50), "p10": percentile(r, 10), "p90": percentile(r, 90),
            "n": len(r), "per_round": r, "a": summarize(a), "b": summarize(b)}


class _Rounds:
    """Samples per name, and the calls that failed."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.errors: dict[str, str] = {}

    def time(self, name: str, argv: Sequence[str], session: Session,
             check: Callable[[int], bool] = lambda rc: rc == 0) -> float | None:
        c = timed(argv, timeout=120, scratch=session.scratch)
        if not check(c.rc):
            self.errors.setdefault(name, c.describe())
            return None
        self.samples.setdefault(name, []).append(c.elapsed)
        return c.elapsed


def _lifecycle(rt: OciRuntime, rounds: _Rounds, bundle: Any, session: Session,
               floor: list[str] | None) -> None:
    cid = session.new_id(rt.name, "goal")
    steps = (("create", lambda: rt.cmd("create", "--bundle", str(bundle.path), cid)),
             ("start", lambda: rt.cmd("start", cid)),
             ("state", lambda: rt.cmd("state", cid)),
             ("kill", lambda: rt.cmd("kill", cid, "KILL")),
             ("delete", lambda: rt.cmd("delete", "--force", cid)))
    session.track(rt, cid)
    total = 0.0
    for step, argv in steps:
        if floor is not None and step != "create":  # the floor right before a light one
            rounds.time(f"floor.{step}", floor, session)
        dt = rounds.time(f"{rt.name}.{step}", argv(), session)
        if dt is None:
            rt.delete(cid, force=True)
            return
        total += dt
    session.untrack(rt, cid)
    rounds.samples.setdefault(f"{rt.name}.lifecycle", []).append(total)


def _api(session: Session, n: int) -> tuple[dict[str, list[float]], str | None]:
    code = (API_CHILD.replace("@SRC@", repr(str(SRC))).replace("@BWRAP@", repr(BWRAP_TRUE))
            .replace("@N@", str(n)))
    c = timed([sys.executable, "-I", "-S", "-c", code], timeout=120 + 5 * n,
              scratch=session.scratch)
    try:
        doc = json.loads(c.out.strip().splitlines()[-1]) if c.out.strip() else {}
    except ValueError:
        doc = {}
    if c.rc != 0 or not doc:
        return {}, f"API child failed: {c.describe()}"
    if "error" in doc:
        return {}, str(doc["error"])
    return {"api": doc["api"], "pool": doc["pool"], "peer": doc["peer"]}, None


def _table(ratios: dict[str, dict[str, Any]], errors: dict[str, str]) -> str:
    rows = []
    for name, (what, peer, target, reads) in GOALS.items():
        r = ratios.get(name) or {}
        if not r:
            rows.append([what, "", peer, "", "n/a", reads, errors.get(name, "not measured")])
            continue
        met = ""
        if target is not None:
            api = name in ("api", "api_pool")
            ok = r["median"] < target if api else r["median"] <= target
            if api:
                ok = ok and r["a"]["median"] < 0.005
            met = "**met**" if ok else "not met"
        rows.append([what, fmt_ms(r["a"]["median"]), peer, fmt_ms(r["b"]["median"]),
                     f"**x{r['median']:.2f}** ({r['p10']:.2f}..{r['p90']:.2f})", reads, met])
    return md_table(["contain", "ms", "peer", "ms", "ratio (p10..p90)", "target", ""], rows)


def _round(i: int, session: Session, rounds: _Rounds, oci: list[OciRuntime],
           contain: OciRuntime, floor: list[str], sleep: dict[str, Any],
           true: dict[str, Any], have_bwrap: bool, points: dict[str, list[str]],
           held: str) -> None:
    """One round: every pair once, the order alternating from round to round."""
    order = oci if i % 2 == 0 else oci[::-1]
    for rt in order:
        _lifecycle(rt, rounds, sleep[rt.name], session,
                   floor if rt is contain else None)
    for rt in order:
        c = rt.run(session.new_id(rt.name, "gr"), true[rt.name])
        if c.rc == 0:
            rounds.samples.setdefault(f"{rt.name}.run", []).append(c.elapsed)
        else:
            rounds.errors.setdefault(f"{rt.name}.run", c.describe())
    if have_bwrap:
        work = session.tmp / "goals-work"
        group = [("contain.sandbox", [*contain.argv, "sandbox", "--", "/bin/true"]),
                 ("bwrap.sandbox", BWRAP_TRUE),
                 ("floor.python", [*floor]),
                 ("floor.sandbox", [floor[0], "-I", "-S", str(SANDBOX_FLOOR), "/bin/true"]),
                 ("contain.sandbox_policy", [*contain.argv, "sandbox", "--rw", str(work),
                                             "--deny", str(work / "secret"), "--",
                                             "/bin/true"]),
                 ("bwrap.sandbox_policy", [*BWRAP_TRUE[:-1], "--bind", str(work), str(work),
                                           "--ro-bind", "/dev/null", str(work / "secret"),
                                           "/bin/true"])]
        k = i % len(group)  # the order rotates from round to round
        for name, argv in group[k:] + group[:k]:
            rounds.time(name, argv, session)
    names = list(points)
    for name in names[i % len(names):] + names[:i % len(names)]:
        rounds.time(f"entry.{name}", [*points[name], "--root", str(contain.root),
                                      "state", held], session)


def run(session: Session) -> Result:
    result = Result("goals", "Goals: each as a ratio from this run (median of per-round "
                    "ratios, p10..p90)")
    n = session.each_round(default=20, quick=3)
    contain = next((rt for rt in session.runtimes if rt.name == "contain"), None)
    if not isinstance(contain, OciRuntime):
        raise BenchError("the goals need contain (add it to --runtimes)")
    runc = next((rt for rt in session.runtimes if rt.name == "runc"), None)
    if runc is None and shutil.which("runc"):
        try:
            runc = make_runtime(session, "runc")
        except BenchError as exc:
            result.errors["runc"] = str(exc)
    if runc is None:
        result.errors.setdefault("runc", "runc is not installed: no ratio to runc")
    have_bwrap = shutil.which("bwrap") is not None
    if not have_bwrap:
        result.errors["bwrap"] = "bubblewrap is not installed: no ratio to bwrap"
    python = _interpreter(contain.argv)
    floor = [python, "-I", "-S", "-c", "pass"]
    work = session.tmp / "goals-work"  # the policy row's writable directory
    work.mkdir(exist_ok=True)
    (work / "secret").write_text("not for the sandbox\n")
    oci = [rt for rt in (contain, runc) if isinstance(rt, OciRuntime)]
    sleep = {rt.name: session.bundle(rt.name, "goals-sleep", oci_config(["/bin/sleep", "600"]))
             for rt in oci}
    true = {rt.name: session.bundle(rt.name, "goals-true", oci_config(["/bin/true"]))
            for rt in oci}
    rounds = _Rounds()
    with stopwatch(result):
        points, point_errors = _entry_points(session, python, contain.argv)
        result.errors.update(point_errors)
        held = session.new_id("contain", "entry")  # a container for `state`
        session.track(contain, held)
        contain.create(held, sleep["contain"]).check()
        session.progress.start("goals", n)
        for i in range(n):
            _round(i, session, rounds, oci, contain, floor, sleep, true, have_bwrap, points,
                   held)
            session.progress.step()
        session.progress.finish()
        contain.delete(held, force=True)
        api: dict[str, list[float]] = {}
        if have_bwrap:
            session.progress.start("goals: API", 1)
            api, err = _api(session, max(n, 5))
            session.progress.finish()
            if err:
                result.errors["api"] = err
    result.errors.update({k: v for k, v in rounds.errors.items()})

    s = rounds.samples
    pairs: dict[str, tuple[list[float], list[float]]] = {
        "sandbox": (s.get("contain.sandbox", []), s.get("bwrap.sandbox", [])),
        "sandbox_policy": (s.get("contain.sandbox_policy", []),
                           s.get("bwrap.sandbox_policy", [])),
        "floor_python": (s.get("floor.python", []), s.get("bwrap.sandbox", [])),
        "floor_sandbox": (s.get("floor.sandbox", []), s.get("bwrap.sandbox", [])),
        "sandbox_over_floor": (s.get("contain.sandbox", []), s.get("floor.sandbox", [])),
        "api": (api.get("api", []), api.get("peer", [])),
        "api_pool": (api.get("pool", []), api.get("peer", [])),
        "lifecycle": (s.get("contain.lifecycle", []), s.get("runc.lifecycle", [])),
        "create": (s.get("contain.create", []), s.get("runc.create", [])),
        "run": (s.get("contain.run", []), s.get("runc.run", [])),
        "entry": (s.get("entry.packaged", []), s.get("entry.launcher", [])),
        "console": (s.get("entry.console", []), s.get("entry.launcher", [])),
    }
    for step in ("state", "kill", "start", "delete"):
        pairs[step] = (s.get(f"contain.{step}", []), s.get(f"floor.{step}", []))
    pairs["floor_light"] = (s.get("floor.state", []), s.get("runc.state", []))
    ratios = {name: _ratios(a, b) for name, (a, b) in pairs.items()}
    result.markdown = _table(ratios, result.errors)
    loads = os.getloadavg()
    result.notes.append(f"{n} rounds; each ratio is the median of per-round ratios of "
                        f"neighbouring runs; load average {loads[0]:.1f} at the end; floor "
                        f"interpreter {python}")
    result.data = {"rounds": n, "unit": "seconds", "interpreter": python,
                   "ratios": {k: v for k, v in ratios.items() if v},
                   "targets": {k: v[2] for k, v in GOALS.items()},
                   "samples": {**s, **{f"api.{k}": v for k, v in api.items()}},
                   "entry_points": points, "loadavg": loads, "when": time.time()}
    return result
