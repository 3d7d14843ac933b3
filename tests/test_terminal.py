"""Terminals relayed by contain itself: `run` and `exec -t` from an interactive shell
(raw mode, the window size, keystrokes in, output out, SIGWINCH forwarded), for real on a
pseudo-terminal made by the test."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from conftest import contain_cmd, unique_id


def _pty_run(argv: list[str], feed: list[tuple[str, bytes]], rows: int = 24, cols: int = 80,
             resize: tuple[int, int] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run *argv* on a new pty; when the output shows each marker of *feed*, type its
    bytes (and, first time, apply *resize* with SIGWINCH). Returns (exit code, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    out = b""
    pending = list(feed)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                out += chunk
            if pending and pending[0][0].encode() in out:
                _marker, data = pending.pop(0)
                if resize is not None:
                    fcntl.ioctl(master, termios.TIOCSWINSZ,
                                struct.pack("HHHH", resize[0], resize[1], 0, 0))
                    os.killpg(proc.pid, signal.SIGWINCH)
                    resize = None
                    time.sleep(0.2)
                os.write(master, data)
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


def test_run_with_a_terminal_relays_the_pty(make_bundle, state_root: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle(["/bin/sh", "-c",
                          "tty; stty size; echo ready; read line; stty size; "
                          "echo got:$line; exit 3"])
    bundle.config["process"]["terminal"] = True
    bundle.write()
    code, out = _pty_run([*contain_cmd(), "--root", str(state_root), "run", "--bundle",
                          str(bundle.path), unique_id()],
                         feed=[("ready", b"hello\r")], rows=33, cols=101, resize=(40, 120))
    assert code == 3, out
    assert "/dev/pts/0" in out           # the container's own pty
    assert "33 101" in out               # the caller's window size, at start
    assert "40 120" in out               # ... and after SIGWINCH
    assert "got:hello" in out            # keystrokes reach the container (raw mode)
    assert list(state_root.iterdir()) == []


def test_exec_tty_from_a_shell(make_bundle, state_root: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle(["/bin/sleep", "1000"])
    cid = unique_id()
    root = ["--root", str(state_root)]
    subprocess.run([*contain_cmd(), *root, "run", "-d", "--bundle", str(bundle.path), cid],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    try:
        code, out = _pty_run([*contain_cmd(), *root, "exec", "-t", cid, "/bin/sh", "-c",
                              "tty; stty size; echo ready; read x; echo got:$x"],
                             feed=[("ready", b"abc\r")], rows=20, cols=70)
        assert code == 0, out
        assert "/dev/pts/" in out and "20 70" in out and "got:abc" in out
    finally:
        subprocess.run([*contain_cmd(), *root, "delete", "--force", cid], timeout=60,
                       capture_output=True)
