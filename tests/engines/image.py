"""A busybox image made here, without a registry: an OCI image layout written by hand.

The layer is a gzip'd tar of the busybox rootfs that tests/conftest.py builds; the image
config names the layer's diff id; the manifest and index point at both by digest. The
layout is packed into one tar that `ctr images import` reads, and the plain rootfs tar is
what `podman import` reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

IMAGE_NAME = "localhost/contain-busybox:latest"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Reproducible entries: owned by root, fixed mtime, no host user names."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def rootfs_tar(rootfs: Path) -> bytes:
    """The rootfs as an uncompressed tar (relative paths, symlinks kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in [*sorted(dirnames), *sorted(filenames)]:
                full = Path(dirpath) / name
                arc = str(full.relative_to(rootfs))
                tar.add(full, arcname=arc, recursive=False, filter=_normalise)
    return buf.getvalue()


def _blob(layout: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout["blobs/sha256/" + digest.split(":", 1)[1]] = data
    return digest


def oci_archive(rootfs: Path, name: str = IMAGE_NAME, cmd: list[str] | None = None) -> bytes:
    """A tar of an OCI image layout holding one single-layer linux/amd64 image *name*."""
    files: dict[str, bytes] = {}
    plain = rootfs_tar(rootfs)
    layer = gzip.compress(plain, mtime=0)
    layer_digest = _blob(files, layer)
    config = {
        "architecture": _goarch(),
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": cmd or ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]},
        "history": [{"created_by": "contain tests: busybox-static rootfs"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = _blob(files, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST,
        "config": {"mediaType": _CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": _LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _blob(files, manifest_bytes)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": _MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": _goarch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag},
        }],
    }
    files["oci-layout"] = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    files["index.json"] = json.dumps(index, sort_keys=True).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("blobs", "blobs/sha256"):
            info = _normalise(tarfile.TarInfo(d))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = _normalise(tarfile.TarInfo(path))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
