"""A state.json that cannot be read (issue 11 item 15): truncated, not JSON, or JSON of
the wrong shape, under a real running container. `list` skips it with a warning and
still lists the others; `delete --force` kills what it can find (the init by pid and
start time, every process of its cgroup, recomputed from the id and the bundle when the
record's own cgroup part is gone) and removes the entry."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Bundle, contain_cmd, reap_zombies, unique_id, wait_for
from test_errors import contain, one_line_error
from test_hostile import _processes_running


def _truncate(text: str, cid: str) -> str:
    return text[: len(text) // 2]


def _reshape(value: Any) -> Callable[[str, str], str]:
    return lambda text, cid: json.dumps(value)


def _field(key: str, value: Any) -> Callable[[str, str], str]:
    def corrupt(text: str, cid: str) -> str:
        data = json.loads(text)
        data[key] = value
        return json.dumps(data)
    return corrupt


def _without(*keys: str) -> Callable[[str, str], str]:
    def corrupt(text: str, cid: str) -> str:
        data = json.loads(text)
        for k in keys:
            data.pop(k, None)
        return json.dumps(data)
    return corrupt


CORRUPTIONS: dict[str, Callable[[str, str], str]] = {
    "truncated": _truncate,
    "empty": lambda text, cid: "",
    "not utf-8": lambda text, cid: "\udcff",
    "array": _reshape([1, 2]),
    "string": _reshape("state"),
    "null": _reshape(None),
    "NaN pid": lambda text, cid: text.replace('"pid":', '"pid": NaN, "x":', 1),
    "pid is a string": _field("pid", "1234"),
    "pid is an object": _field("pid", {}),
    "config is a list": _field("config", []),
    "cgroup is a string": _field("cgroup", "/sys/fs/cgroup"),
    "cgroup paths wrong": _field("cgroup", {"paths": ["x"]}),
    "annotations is a list": _field("annotations", ["a"]),
    "wrong id": _field("id", "another"),
    # the record says nothing of the process or the cgroup: both are recomputed
    "no pid, no cgroup": _without("pid", "init_start", "cgroup"),
    "cgroup and config gone": lambda text, cid: json.dumps(
        {k: v for k, v in json.loads(text).items() if k in ("id", "bundle")} | {"pid": "x"}),
}


def _start(root: Path, bundle: Bundle) -> str:
    cid = unique_id()
    assert contain(root, "create", "--bundle", str(bundle.path), cid).returncode == 0
    assert contain(root, "start", cid).returncode == 0
    return cid


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_state_json(case: str, make_bundle: Callable[..., Bundle],
                            state_root: Path) -> None:
    marker = str(6000 + random.randrange(1000))
    bad_bundle = make_bundle(["/bin/sleep", marker])
    good_bundle = make_bundle(["/bin/sleep", "1000"])
    good = _start(state_root, good_bundle)
    bad = _start(state_root, bad_bundle)
    try:
        # start returns once the init is released, not once it has exec'd the sleep
        wait_for(lambda: _processes_running(f"sleep {marker}"))
        state = state_root / bad / "state.json"
        corrupted = CORRUPTIONS[case](state.read_text(), bad)
        state.write_bytes(corrupted.encode(errors="surrogateescape"))

        for fmt in ("table", "json"):
            proc = contain(state_root, "list", "--format", fmt)
            assert proc.returncode == 0, proc.stderr
            assert good in proc.stdout and bad not in proc.stdout, proc.stdout
            assert "level=warning" in proc.stderr and bad in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

        one_line_error(contain(state_root, "state", bad), bad, "state.json is corrupt")
        one_line_error(contain(state_root, "delete", bad), "state.json is corrupt", "--force")
        assert _processes_running(f"sleep {marker}")  # a plain delete touched nothing

        proc = contain(state_root, "delete", "--force", bad)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (state_root / bad).exists()
        assert _processes_running(f"sleep {marker}") == []
        # (the no_leaks fixture checks that its cgroup is gone too)
        assert contain(state_root, "state", good).returncode == 0
    finally:
        contain(state_root, "delete", "--force", bad)
        contain(state_root, "delete", "--force", good)


def test_list_of_only_good_entries_is_quiet(make_bundle: Callable[..., Bundle],
                                            state_root: Path) -> None:
    """The control: no warning when nothing is wrong."""
    cid = _start(state_root, make_bundle(["/bin/sleep", "1000"]))
    try:
        proc = contain(state_root, "list")
        assert proc.returncode == 0 and cid in proc.stdout
        assert proc.stderr == ""
    finally:
        contain(state_root, "delete", "--force", cid)


def test_delete_racing_create(make_bundle: Callable[..., Bundle], state_root: Path) -> None:
    """`delete` in a tight loop while `create` runs (issue 11 item 16). A delete that
    came between create's mkdir and its flock removed the directory under it: create
    failed with "state.json.tmp: No such file or directory" (51 of 100 trials). Now the
    directory appears already locked: every create succeeds, and each delete either
    finds nothing or waits for create and deletes a whole container."""
    from contain.container.control import delete
    from contain.errors import ContainError

    bundle = make_bundle(["/bin/sleep", "1000"])
    failures: list[str] = []
    deleted_whole = 0
    for _ in range(100):
        cid = unique_id()
        with open(state_root.parent / f"{cid}.err", "w+") as err:
            create = subprocess.Popen([*contain_cmd(), "--root", str(state_root), "create",
                                       "--bundle", str(bundle.path), cid],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err)
            gone_after_create = False
            while create.poll() is None:
                try:
                    delete(str(state_root), cid)
                    gone_after_create = True
                except ContainError:
                    pass
            create.wait()
            err.seek(0)
            text = err.read()
        os.unlink(state_root.parent / f"{cid}.err")
        if create.returncode != 0:
            failures.append(text.strip())
        deleted_whole += gone_after_create
        try:
            delete(str(state_root), cid, force=True)
        except ContainError:
            pass
        reap_zombies()  # the deleted inits were reparented to us (a subreaper)
    assert failures == [], f"{len(failures)} of 100 creates failed: {failures[:3]}"
    assert not [p for p in state_root.iterdir() if p.name.startswith(".new-")]



def test_create_sweeps_claims_of_killed_creates(make_bundle: Callable[..., Bundle],
                                                state_root: Path) -> None:
    """A create SIGKILLed between making its temporary claim directory and renaming it
    into place leaves a `.new-<pid>-*` directory; the next create removes it once that
    pid is gone, and leaves a live creator's alone."""
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    state_root.mkdir(parents=True, exist_ok=True)
    abandoned = state_root / f".new-{dead.pid}-0badc0de"
    abandoned.mkdir()
    (abandoned / "state.json").write_text("{}")
    alive = state_root / f".new-{os.getpid()}-0badc0de"
    alive.mkdir()
    try:
        cid = _start(state_root, make_bundle(["/bin/true"]))
        contain(state_root, "delete", "--force", cid)
        assert not abandoned.exists()
        assert alive.exists()
    finally:
        alive.rmdir()
