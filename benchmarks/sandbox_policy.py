"""Sandbox start-up with a file policy: ``contain sandbox`` next to bubblewrap (and
firejail, when installed) doing the same work.

The same policy for every tool: the host's root read-only, new PID, mount, IPC, UTS and
network namespaces, one writable project directory, one denied (hidden) directory, a
private sized /tmp, then ``/bin/true``. contain also applies its default seccomp profile
and Landlock (a row without Landlock shows its cost); bwrap gets ``--die-with-parent``
and ``--new-session`` as the coding-assistant sandboxes run it. Calls are interleaved,
one of each tool per round, and timed from spawn to exit (CLI start-up included). A
last row is ``contain.Sandbox.run`` of the same policy called in one interpreter: what
a Python program that runs many commands pays per command.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from .common import (
    Result,
    Session,
    contain_argv,
    fmt_ms,
    md_table,
    rotate,
    stopwatch,
    summarize,
    timed,
)


def commands(root: Path, proj: Path, secret: Path) -> dict[str, list[str]]:
    contain = [*contain_argv(), "--root", str(root), "sandbox", "--rw", str(proj),
               "--deny", str(secret), "--tmp-size", "64M"]
    out = {
        "contain sandbox": [*contain, "--", "/bin/true"],
        "contain sandbox --landlock off": [*contain, "--landlock", "off", "--",
                                           "/bin/true"],
    }
    bwrap = shutil.which("bwrap")
    if bwrap:
        out["bwrap"] = [bwrap, "--ro-bind", "/", "/", "--bind", str(proj), str(proj),
                        "--tmpfs", str(secret), "--size", str(64 << 20), "--tmpfs", "/tmp",
                        "--proc", "/proc", "--dev", "/dev", "--unshare-all",
                        "--die-with-parent", "--new-session", "/bin/true"]
    firejail = shutil.which("firejail")
    if firejail:
        out["firejail"] = [firejail, "--quiet", "--noprofile", "--read-only=/",
                           f"--read-write={proj}", f"--blacklist={secret}", "--private-tmp",
                           "--net=none", "--seccomp", "/bin/true"]
    return out


API_CHILD = r"""
import json, sys, time
sys.path.insert(0, @SRC@)
import contain
sb = contain.Sandbox(rw=[@PROJ@], deny=[@SECRET@], tmp_size="64M", root=@ROOT@)
out = []
for i in range(@N@ + 1):
    t = time.perf_counter()
    r = sb.run(["/bin/true"])
    dt = time.perf_counter() - t
    if r.returncode != 0:
        print(json.dumps({"error": repr(r)}))
        sys.exit(0)
    if i:
        out.append(dt)
print(json.dumps({"samples": out}))
"""


def api_samples(session: Session, root: Path, proj: Path, secret: Path, n: int,
                result: Result) -> list[float]:
    """``contain.Sandbox.run`` of the same policy in one interpreter (no start-up of
    Python per call), in a child so that a failure cannot take the driver down."""
    import json

    from .common import SRC

    code = (API_CHILD.replace("@SRC@", repr(str(SRC))).replace("@N@", str(n))
            .replace("@PROJ@", repr(str(proj))).replace("@SECRET@", repr(str(secret)))
            .replace("@ROOT@", repr(str(root))))
    c = timed([sys.executable, "-I", "-S", "-c", code], timeout=60 + 5 * n,
              scratch=session.scratch)
    try:
        doc = json.loads(c.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        doc = {"error": c.describe()}
    if "error" in doc:
        result.errors["contain.Sandbox.run"] = str(doc["error"])
        return []
    return list(doc["samples"])


def run(session: Session) -> Result:
    result = Result("sandbox_policy", "Sandbox start-up with a file policy, next to bwrap")
    n = session.each_round(default=40, quick=5)
    base = Path(tempfile.mkdtemp(prefix="contain-bench-sbp-", dir="/var/tmp"))
    try:
        proj, secret, root = base / "proj", base / "secret", base / "root"
        for d in (proj, secret, root):
            d.mkdir()
        (secret / "key").write_text("secret\n")
        cmds = commands(root, proj, secret)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        with stopwatch(result):
            session.progress.start("sandbox_policy", n + 1)
            for rnd in range(n + 1):  # the first round warms up
                for name in rotate(list(cmds), rnd):
                    c = timed(cmds[name], scratch=session.scratch)
                    if c.rc != 0:
                        result.errors[name] = c.describe()
                        continue
                    if rnd:
                        samples[name].append(c.elapsed)
                session.progress.step()
            session.progress.finish()
            samples["contain.Sandbox.run (in-process)"] = api_samples(
                session, root, proj, secret, n, result)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {k: summarize(v) for k, v in samples.items() if v}
    result.data = {"calls": n, "unit": "seconds", "samples": samples, "summary": summary}
    ref = summary.get("bwrap", {}).get("median")
    rows = []
    for k, s in summary.items():
        ratio = f"{s['median'] / ref:.2f}x" if ref else "-"
        rows.append([k, s["n"], f"**{fmt_ms(s['median'])}**", fmt_ms(s["p10"]),
                     fmt_ms(s["p90"]), ratio])
    text = md_table(["tool", "n", "median ms", "p10", "p90", "vs bwrap"], rows)
    if result.errors:
        text += "\n" + md_table(["tool", "error"], sorted(result.errors.items()))
    result.markdown = text
    result.notes.append(f"{n} interleaved rounds after one warm-up round; "
                        f"python {sys.version.split()[0]}")
    return result
