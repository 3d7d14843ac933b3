"""Supervision of OCI containers, turned on by annotations in config.json, so that
engines (Podman ``--annotation``, containerd/CRI-O and Kubernetes pod annotations) can
put a workload in the sandbox class through contain:

* ``org.contain.supervise``: the policy (a file path, relative to the bundle, or inline
  JSON);
* ``org.contain.supervisor``: ``notify`` (default) or ``ptrace``;
* ``org.contain.supervise.report``: a file for the JSON-lines report;
* ``org.contain.record``: record every call and write an OCI seccomp profile there.

``create`` starts the supervisor as a daemon before it creates the container, attaches it
while the init waits for ``start``, and keeps its pid and start time in state.json
(``extra.supervisor``); ``delete`` ends it. It also ends by itself when the container's
last process is gone (container/control.py's delete does the killing, from state.json,
so that the container layer needs nothing of this one).
"""

from __future__ import annotations

import os

from contain.sandbox.supervise.agent import (
    ANNOTATION_POLICY,
    ANNOTATION_RECORD,
    ANNOTATION_REPORT,
    ANNOTATION_SUPERVISOR,
    STATE_KEY,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.container.lifecycle import CreateOptions
    from contain.container.store import ContainerRecord
    from contain.sandbox.supervise.agent import Supervisor
    from contain.spec.config import Spec


def annotated(spec: Spec) -> bool:
    ann = spec.annotations or {}
    return bool(ann.get(ANNOTATION_POLICY) or ann.get(ANNOTATION_RECORD))


def _in_bundle(bundle: str, value: str | None) -> str | None:
    if not value:
        return None
    if value.lstrip().startswith("{") or os.path.isabs(value):
        return value
    return os.path.join(bundle, value)


def supervisor_of(spec: Spec, bundle: str, root: str, cid: str, detach: bool) -> Supervisor:
    from contain.sandbox.supervise import supervisor_for

    ann = spec.annotations or {}
    return supervisor_for(
        _in_bundle(bundle, ann.get(ANNOTATION_POLICY)), ann.get(ANNOTATION_SUPERVISOR),
        root=root, report=_in_bundle(bundle, ann.get(ANNOTATION_REPORT)),
        record=_in_bundle(bundle, ann.get(ANNOTATION_RECORD)),
        hostname=spec.hostname or "sandbox", detach=detach, name=cid)


def _supervised_spec(sup: Supervisor, spec: Spec) -> Spec:
    from contain.spec.config import Spec as S

    return S.decode(sup.prepare(spec.raw))


def _attach(sup: Supervisor, record: ContainerRecord) -> None:
    from contain.container import store

    sup.attach(record.pid)
    with store.Lock(record.dir):
        fresh = store.load(record.root, record.id)
        fresh.extra[STATE_KEY] = sup.state()
        store.save(fresh)
    record.extra[STATE_KEY] = sup.state()


def create_supervised(root: str, cid: str, bundle: str, spec: Spec,
                      opts: CreateOptions) -> ContainerRecord:
    """``create`` of an annotated container."""
    from contain.container.control import delete
    from contain.container.lifecycle import create

    sup = supervisor_of(spec, bundle, root, cid, detach=True)
    spec = _supervised_spec(sup, spec)
    sup.start()
    try:
        record = create(root, cid, bundle, opts, spec=spec)
    except BaseException:
        sup.kill()
        raise
    try:
        _attach(sup, record)
    except BaseException:
        delete(root, cid, force=True)
        sup.kill()
        raise
    sup.release()
    return record


def run_supervised(root: str, cid: str, bundle: str, spec: Spec, opts: CreateOptions,
                   detach: bool, keep: bool) -> int:
    """``run`` of an annotated container."""
    from contain.container.run import run_container

    sup = supervisor_of(spec, bundle, root, cid, detach=detach)
    spec = _supervised_spec(sup, spec)
    sup.start()

    def after(record: Any) -> None:
        _attach(sup, record)
        if detach:
            sup.release()

    try:
        return run_container(root, cid, bundle, spec, opts, detach=detach, keep=keep,
                             after_create=after)
    except BaseException:
        sup.kill()
        raise
    finally:
        if not detach:
            sup.finish()
