"""Docker (dockerd 20.10 -> its containerd -> runc v2 shim) with `--runtime contain`."""

from __future__ import annotations

import time

import pytest

from .conftest import Docker, subcommand, unique

pytestmark = pytest.mark.engines
IMAGE = "contain-busybox:latest"


def _rm(dk: Docker, name: str) -> None:
    dk.docker("rm", "--force", name, timeout=120)


def _state(dk: Docker, name: str) -> str:
    return dk.docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()


def test_run_attached_exit_code(docker: Docker) -> None:
    name = unique("dk")
    mark = docker.session.mark()
    try:
        proc = docker.docker("run", "--rm", "--name", name, *docker.run_flags(), IMAGE,
                             "sh", "-c", "echo hello; exit 3")
        assert proc.returncode == 3, f"{proc.stdout}\n{proc.stderr}\n{docker.diagnose(mark)}"
        assert "hello" in proc.stdout
    finally:
        _rm(docker, name)
    names = [subcommand(c) for c in docker.session.calls_since(mark, "docker-runtime")]
    assert "create" in names and "start" in names and "delete" in names, names


def test_run_with_tty(docker: Docker) -> None:
    name = unique("dk")
    mark = docker.session.mark()
    try:
        proc = docker.docker("run", "--rm", "--tty", "--name", name, *docker.run_flags(),
                             IMAGE, "tty")
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{docker.diagnose(mark)}"
        assert "/dev/pts/0" in proc.stdout
    finally:
        _rm(docker, name)


def test_detached_exec_pause_stop(docker: Docker) -> None:
    name = unique("dk")
    mark = docker.session.mark()
    why = lambda: docker.diagnose(mark)  # noqa: E731
    try:
        proc = docker.docker("run", "--detach", "--name", name, *docker.run_flags(), IMAGE,
                             "sleep", "600")
        assert proc.returncode == 0, f"{proc.stderr}\n{why()}"
        proc = docker.docker("exec", name, "sh", "-c", "echo exec-ok; exit 4")
        assert proc.returncode == 4 and "exec-ok" in proc.stdout, f"{proc.stderr}\n{why()}"
        assert docker.docker("pause", name).returncode == 0, why()
        assert _state(docker, name) == "paused", why()
        assert docker.docker("unpause", name).returncode == 0, why()
        assert _state(docker, name) == "running", why()
        top = docker.docker("top", name)
        assert "sleep 600" in top.stdout, f"{top.stdout}{top.stderr}\n{why()}"
        proc = docker.docker("stop", "--time", "1", name)
        assert proc.returncode == 0, f"{proc.stderr}\n{why()}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _state(docker, name) != "exited":
            time.sleep(0.1)
        code = docker.docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout
        assert code.strip() == "137", why()
    finally:
        _rm(docker, name)
