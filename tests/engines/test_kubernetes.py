"""The CRI runtime-handler config of docs/kubernetes.md, loaded by a real containerd.

The TOML block between the `cri-config` markers of the document is used as it stands; only
its paths are changed to private ones (the runtime under test for BinaryName, a temp dir
for Root) and containerd's own root/state/sockets/CNI dirs are added. Then the CRI plugin
must come up with the `contain` handler, and containers run through the same shim with the
same BinaryName and Root, in the `k8s.io` namespace the CRI plugin uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

from .conftest import (
    IMAGE_NAME,
    Containerd,
    Session,
    containerd_config,
    make_cgroup_parent,
    require,
    shim_socket_dir_cleanup,
    subcommand,
    unique,
)

pytestmark = pytest.mark.engines
DOC = REPO / "docs" / "kubernetes.md"
DOC_BINARY = "/usr/local/bin/contain"
DOC_ROOT = "/run/containerd/contain"
K8S_NAMESPACE = "k8s.io"


def doc_cri_block() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- cri-config-begin[^>]*-->\s*```toml\n(.*?)```\s*<!-- cri-config-end -->",
                  text, re.S)
    assert m, "docs/kubernetes.md lost its cri-config block"
    return m.group(1)


def test_doc_block_is_a_runc_v2_handler() -> None:
    block = doc_cri_block()
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.contain]' in block
    assert 'runtime_type = "io.containerd.runc.v2"' in block
    assert f'BinaryName = "{DOC_BINARY}"' in block
    assert f'Root = "{DOC_ROOT}"' in block


class CriDaemon(Containerd):
    """containerd with the CRI plugin; containers get cgroups under cgroup_parent."""

    cgroup_parent = ""


@pytest.fixture(scope="module")
def cri_containerd(engines_session: Session,
                   image_files: tuple[Path, Path]) -> Iterator[CriDaemon]:
    require("containerd", "ctr", "containerd-shim-runc-v2")
    base = engines_session.base / "cri"
    base.mkdir()
    (base / "cni-conf").mkdir()
    (base / "cni-bin").mkdir()
    wrapper = engines_session.wrapper("cri-runtime")
    runtime_root = base / "contain-root"
    block = doc_cri_block()
    assert block.startswith("version = 2\n")
    block = block.removeprefix("version = 2\n")
    block = block.replace(DOC_BINARY, str(wrapper)).replace(DOC_ROOT, str(runtime_root))
    private = (
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        f'  conf_dir = "{base}/cni-conf"\n'
        f'  bin_dir = "{base}/cni-bin"\n')
    config = containerd_config(base, block + private, cri=True)
    cgroup_parent = f"{engines_session.name}/k8s"
    make_cgroup_parent(cgroup_parent)
    with shim_socket_dir_cleanup():
        daemon = CriDaemon(engines_session, base, config, namespace=K8S_NAMESPACE,
                           wrapper="cri-runtime")
        daemon.runtime_root = runtime_root
        daemon.cgroup_parent = "/" + cgroup_parent
        try:
            daemon.start()
            daemon.ctr("images", "import", str(image_files[0]), check=True, timeout=180)
            yield daemon
        finally:
            daemon.stop()


def test_cri_plugin_loads_the_handler(cri_containerd: CriDaemon) -> None:
    plugins = cri_containerd.ctr("plugins", "list").stdout
    cri = [line.split() for line in plugins.splitlines()
           if line.split()[:2] == ["io.containerd.grpc.v1", "cri"]]
    assert cri and cri[0][-1] == "ok", plugins
    log = cri_containerd.log_path.read_text()
    start = [line for line in log.splitlines() if "Start cri plugin with config" in line]
    assert start, log[-3000:]
    assert "contain:{Type:io.containerd.runc.v2" in start[0], start[0]
    assert f"BinaryName:{cri_containerd.wrapper}" in start[0], start[0]
    assert f"Root:{cri_containerd.runtime_root}" in start[0], start[0]


def test_pod_style_container_through_the_shim(cri_containerd: CriDaemon) -> None:
    """The shim call path of a pod: runc v2 shim, BinaryName, Root/<namespace>."""
    ctd = cri_containerd
    cid = unique("k8s")
    mark = ctd.session.mark()
    cgroup = f"{ctd.cgroup_parent}/{cid}"
    try:
        proc = ctd.ctr("run", "--rm", "--cgroup", cgroup, "--fifo-dir", str(ctd.fifo_dir),
                       "--runc-binary", str(ctd.wrapper), "--runc-root", str(ctd.runtime_root),
                       IMAGE_NAME, cid, "sh", "-c", "echo pod-ok; exit 0")
        assert proc.returncode == 0, f"{proc.stderr}\n{ctd.diagnose(mark)}"
        assert "pod-ok" in proc.stdout
    finally:
        ctd.ctr("task", "delete", "--force", cid)
        ctd.ctr("containers", "delete", cid)
    calls = ctd.session.calls_since(mark, "cri-runtime")
    create = [c for c in calls if subcommand(c) == "create"]
    assert create, calls
    assert f"--root {ctd.runtime_root}/{K8S_NAMESPACE} " in create[0], create[0]
