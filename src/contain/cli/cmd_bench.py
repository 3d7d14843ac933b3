"""``contain bench``: side-by-side benchmarks against runc, crun, runsc, bubblewrap.

The benchmarks live in the source checkout's ``benchmarks/`` package, next to ``src/``,
and are installed with the package as ``contain.bench`` (pyproject's package-dir), so
that a user who installed contain can benchmark it too. They (and matplotlib, for the
plots) are imported inside the command only, so no other command pays for them.
"""

from __future__ import annotations

import os
import sys

from contain.cli.args import Command, Flag
from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RUNTIMES = "contain,runc,crun,runsc,bwrap,unshare"

COMMANDS = {
    "bench": Command(
        "bench", "bench",
        flags=(
            Flag("--runtimes", default=RUNTIMES,
                 help=f"comma-separated runtimes to compare (default {RUNTIMES})"),
            Flag("--quick", "bool", help="few rounds and small sizes (a minute or two)"),
            Flag("--out", default="bench-out",
                 help="directory for report.md, results.json and the PNG plots"),
            Flag("--only", default="",
                 help="comma-separated benchmarks: lifecycle, api_spawn, throughput, density, "
                      "pauseresume, workload, syscall_overhead, cgroups, engines, isolation"),
            Flag("--rounds", "int", default=0, help="rounds per benchmark (overrides the mode)"),
            Flag("--density", "int", default=0,
                 help="containers for the density benchmark (default 100, quick 4)"),
            Flag("--no-progress", "bool", help="no progress bar on stderr"),
        ),
        usage="[--runtimes LIST] [--quick] [--out DIR]",
        help="Benchmark contain side by side with other runtimes (runs as root)",
        max_args=0,
    ),
}


def _checkout() -> str | None:
    """The source checkout that holds our src/ and a ``benchmarks`` package, if any."""
    here = os.path.dirname(os.path.abspath(__file__))  # .../src/contain/cli
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    if os.path.isfile(os.path.join(repo, "benchmarks", "driver.py")):
        return repo
    return None


def _driver() -> tuple[Any, type[Exception]]:
    """The driver's ``main`` and ``BenchError``: the checkout's ``benchmarks`` (the files
    ``python -m benchmarks`` and the tests use) when we run from one, else the copy
    installed with the package (``contain.bench``)."""
    repo = _checkout()
    if repo is not None:
        if sys.flags.no_site:
            _add_site_packages(repo)
        if repo not in sys.path:
            sys.path.insert(0, repo)
        name = "benchmarks"
    else:
        name = "contain.bench"
    try:
        driver = __import__(f"{name}.driver", fromlist=["main"])
        common = __import__(f"{name}.common", fromlist=["BenchError"])
    except ImportError as exc:
        where = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        raise ContainError(f"bench: the benchmarks are not installed with {where} "
                           f"({exc}); reinstall the package or run from a checkout") from exc
    return driver.main, common.BenchError


def _add_site_packages(repo: str) -> None:
    """The fast launcher runs the base interpreter without site: for bench only, add the
    virtualenv's site-packages (where the optional matplotlib is installed)."""
    import site

    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for venv in (os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))),
                 os.path.join(repo, ".venv"), sys.prefix):
        if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
            site.addsitedir(os.path.join(venv, "lib", pyver, "site-packages"))
            return
    site.main()


def bench(ctx: Any, opts: dict[str, Any], args: list[str]) -> int:
    main, bench_error = _driver()
    try:
        return main(
            runtimes=[r for r in opts["runtimes"].split(",") if r.strip()],
            quick=opts["quick"],
            out=opts["out"],
            only=[b.strip() for b in opts["only"].split(",") if b.strip()] or None,
            rounds=opts["rounds"] or None,
            density_n=opts["density"] or None,
            progress=not opts["no_progress"],
        )
    except bench_error as exc:
        raise ContainError(f"bench: {exc}") from exc
