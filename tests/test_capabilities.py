"""Capabilities: names checked as runc checks them, the five sets applied in a forked
child in the init's order, observed in /proc/self/status (before and after execve)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from contain.errors import ContainError, SpecError
from contain.security import capabilities as caps
from contain.spec.config import Capabilities

C = caps.CAPS
BUSYBOX = "/bin/busybox"


def model(**sets: list[str]) -> Capabilities:
    return Capabilities.decode(sets, "$.process.capabilities")


def mask(*names: str) -> int:
    out = 0
    for n in names:
        out |= 1 << C[n]
    return out


def in_child(body: Callable[[], Any], timeout: float = 30) -> Any:
    """Run body() in a forked child; return its JSON-able result (or raise its error)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            out = {"ok": body()}
        except BaseException as e:
            out = {"error": f"{type(e).__name__}: {e}"}
            code = 1
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    deadline = time.monotonic() + timeout
    while True:
        got, _ = os.waitpid(pid, os.WNOHANG)
        if got:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    res = json.loads(data)
    if "error" in res:
        raise AssertionError(res["error"])
    return res["ok"]


def status_of(text: str) -> dict[str, int]:
    keys = {"CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective",
            "CapBnd": "bounding", "CapAmb": "ambient"}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in keys:
            out[keys[k]] = int(v.strip(), 16)
        elif k == "Uid":
            out["uid"] = int(v.split()[0])
    return out


# -- names -------------------------------------------------------------------------------

def test_name_table_and_last_cap() -> None:
    assert C["CAP_CHOWN"] == 0
    assert C["CAP_SETPCAP"] == 8
    assert C["CAP_SYS_ADMIN"] == 21
    assert C["CAP_AUDIT_READ"] == 37
    assert C["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(caps.NAMES) == 41
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())
    assert caps.mask_to_names(mask("CAP_KILL", "CAP_CHOWN")) == ["CAP_CHOWN", "CAP_KILL"]


def test_unknown_names_are_one_warning_like_runc() -> None:
    c = model(bounding=["CAP_KILL", "CAP_NOPE"], effective=["CAP_KILL", "CAP_ALSO_NOPE"],
              ambient=["CAP_NOPE"])
    assert caps.check_capabilities(c) == [
        "ignoring unknown or unavailable capabilities: [CAP_ALSO_NOPE CAP_NOPE]"]
    assert caps.check_capabilities(model(bounding=["CAP_KILL"])) == []
    assert caps.check_capabilities(None) == []
    s = caps.resolve(c)
    assert s.bounding == s.effective == mask("CAP_KILL") and s.ambient == 0


def test_strict_check_names_the_field() -> None:
    c = model(permitted=["CAP_KILL", "CAP_NOPE"])
    with pytest.raises(SpecError) as ei:
        caps.check_capabilities(c, strict=True)
    assert ei.value.path == "$.process.capabilities.permitted[1]"


def test_names_beyond_the_kernels_last_cap_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "_last_cap", 38)  # a kernel before CAP_BPF
    c = model(bounding=["CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"])
    assert caps.check_capabilities(c) == [
        "ignoring unknown or unavailable capabilities: [CAP_BPF CAP_CHECKPOINT_RESTORE]"]
    assert caps.resolve(c).bounding == mask("CAP_PERFMON")


# -- applying ----------------------------------------------------------------------------

SETS = model(
    bounding=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID",
              "CAP_NOPE"],
    effective=["CAP_KILL", "CAP_NET_BIND_SERVICE"],
    permitted=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
    inheritable=["CAP_NET_BIND_SERVICE", "CAP_KILL"],
    ambient=["CAP_NET_BIND_SERVICE"],
)
EXPECT = {
    "bounding": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
                     "CAP_SETGID"),
    "effective": mask("CAP_KILL", "CAP_NET_BIND_SERVICE"),
    "permitted": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"),
    "inheritable": mask("CAP_NET_BIND_SERVICE", "CAP_KILL"),
    "ambient": mask("CAP_NET_BIND_SERVICE"),
}


def _read_status() -> str:
    with open("/proc/self/status") as f:
        return f.read()


def test_apply_as_root_sets_all_five_sets() -> None:
    def body() -> Any:
        warnings = caps.apply_process_identity(SETS, lambda: None)
        return {"warnings": warnings, "status": _read_status()}

    res = in_child(body)
    assert res["warnings"] == []
    st = status_of(res["status"])
    assert {k: st[k] for k in EXPECT} == EXPECT
    assert st["uid"] == 0


def _switch_to(uid: int, gid: int) -> Callable[[], None]:
    def set_user() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return set_user


def test_setuid_to_non_root_keeps_the_configured_sets() -> None:
    def body() -> Any:
        caps.apply_process_identity(SETS, _switch_to(1000, 1000))
        before = _read_status()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(w, 1)
            os.execv(BUSYBOX, ["cat", "/proc/self/status"])
        os.close(w)
        with os.fdopen(r) as f:
            after = f.read()
        os.waitpid(pid, 0)
        return {"before": before, "after": after}

    res = in_child(body)
    before = status_of(res["before"])
    assert before["uid"] == 1000
    assert {k: before[k] for k in EXPECT} == EXPECT
    after = status_of(res["after"])  # execve as uid 1000: the ambient set survives
    assert after["uid"] == 1000
    assert after["ambient"] == EXPECT["ambient"]
    assert after["permitted"] == after["effective"] == EXPECT["ambient"]
    assert after["inheritable"] == EXPECT["inheritable"]
    assert after["bounding"] == EXPECT["bounding"]


def test_without_keepcaps_a_setuid_loses_everything() -> None:
    """The control for the test above: the order is what keeps the sets."""
    def body() -> Any:
        caps.drop_bounding(SETS)
        _switch_to(1000, 1000)()
        try:
            caps.apply_after_setuid(SETS)
        except ContainError as e:
            return {"error": str(e), "status": _read_status()}
        return {"error": None, "status": _read_status()}

    res = in_child(body)
    assert res["error"] and "can't apply capabilities" in res["error"]
    assert status_of(res["status"])["permitted"] == 0


def test_capabilities_none_leaves_the_process_alone() -> None:
    def body() -> Any:
        before = caps.current()
        assert caps.apply_process_identity(None, lambda: None) == []
        return [before, caps.current()]

    before, after = in_child(body)
    assert before == after


def test_asking_for_a_capability_not_held_names_it() -> None:
    def body() -> Any:
        from contain.linux.syscalls import capset

        capset(mask("CAP_KILL", "CAP_SETPCAP"), mask("CAP_KILL", "CAP_SETPCAP"), 0)
        try:
            caps.apply_process_identity(model(bounding=["CAP_KILL", "CAP_CHOWN"],
                                              permitted=["CAP_KILL", "CAP_CHOWN"]),
                                        lambda: None)
        except ContainError as e:
            return str(e)
        return "applied"

    msg = in_child(body)
    assert "can't apply capabilities" in msg and "CAP_CHOWN" in msg


def test_ambient_that_cannot_be_raised_is_a_warning() -> None:
    def body() -> Any:
        c = model(bounding=["CAP_KILL"], permitted=["CAP_KILL"], effective=["CAP_KILL"],
                  ambient=["CAP_KILL"])  # not inheritable: the kernel refuses it
        return [caps.apply_process_identity(c, lambda: None), caps.current()["ambient"]]

    warnings, ambient = in_child(body)
    assert ambient == 0
    assert len(warnings) == 1 and "CAP_KILL" in warnings[0]


def test_bounding_drop_is_idempotent_and_reads_back() -> None:
    def body() -> Any:
        keep = model(bounding=["CAP_SETPCAP", "CAP_KILL"])
        caps.drop_bounding(keep)
        caps.drop_bounding(keep)
        return caps.bounding_set()

    assert in_child(body) == mask("CAP_SETPCAP", "CAP_KILL")
