"""The package installed the ecosystem's way (`pip install` into a virtualenv): the
`contain` command pip installs starts the interpreter isolated and without site, finds
the package itself, behaves as the launcher's does, and `contain bench` works there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, SRC


def test_pyproject_lists_every_package() -> None:
    """pyproject lists the packages (contain.bench is mapped from benchmarks/, which
    packages.find cannot do): a new package under src/contain must be added there."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(SRC).parts)
             for p in (SRC / "contain").rglob("__init__.py")}
    assert set(conf["packages"]) == found | {"contain.bench"}
    assert conf["package-dir"]["contain.bench"] == "benchmarks"
    assert conf["script-files"] == ["scripts/contain"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv with the checkout installed by pip (a copy of the checkout, so that
    pip's build directory never lands in it)."""
    base = tmp_path_factory.mktemp("pkg")
    tree = base / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("src", "benchmarks"):
        shutil.copytree(REPO / name, tree / name, ignore=ignore)
    (tree / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "contain", tree / "scripts" / "contain")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    venv = base / "venv"
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    # build isolation: setuptools and wheel come from the configured index (a fresh
    # virtualenv has no `wheel`, which setuptools' bdist_wheel needs)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps",
                        "--disable-pip-version-check", str(tree)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    yield venv


@pytest.mark.slow
def test_packaged_command_is_isolated_and_finds_itself(installed: Path,
                                                       tmp_path: Path) -> None:
    script = installed / "bin" / "contain"
    assert script.read_text().startswith("#!/bin/sh\n")  # not pip's console script
    # a .pth file runs when site processes site-packages: -S must keep it from running,
    # and -I must ignore PYTHONPATH (here: a `contain` that would shadow ours)
    marker = tmp_path / "site-ran"
    site_packages = next((installed / "lib").glob("python3*/site-packages"))
    (site_packages / "zz_marker.pth").write_text(
        f"import os; open({str(marker)!r}, 'w').close()\n")
    shadow = tmp_path / "shadow" / "contain"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit('the shadow contain ran')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    p = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                       timeout=60, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("contain version ")
    assert not marker.exists()
    # behaviour as through the launcher: one error line, status 1
    p = subprocess.run([str(script), "--root", str(tmp_path / "root"), "state", "nosuch"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 1
    assert "does not exist" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    # reached through a symbolic link elsewhere (no python3 next to it), it still
    # finds its package
    link = tmp_path / "bin" / "contain"
    link.parent.mkdir()
    link.symlink_to(script)
    p = subprocess.run([str(link), "--version"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("contain version "), p.stderr


@pytest.mark.slow
def test_installed_bench_runs(installed: Path, tmp_path: Path) -> None:
    """`contain bench` from the installed package (no checkout around): the benchmarks
    shipped as contain.bench run and measure the installed command."""
    out = tmp_path / "out"
    p = subprocess.run([str(installed / "bin" / "contain"), "bench", "--quick",
                        "--no-progress", "--runtimes", "contain", "--only", "goals",
                        "--rounds", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["runtimes"]["contain"]["ok"] is True
    assert doc["benchmarks"]["goals"]["data"]["ratios"]
    assert str(installed) in doc["meta"]["runtimes"]["contain"]["argv"][0]
