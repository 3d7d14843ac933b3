"""The bundle of a host-root sandbox: its id and its (mostly shared) root mount point.

The sandbox itself is built and run by :mod:`contain.sandbox.runner`."""

from __future__ import annotations

import os


def new_id() -> str:
    return f"sandbox-{os.getpid()}-{os.urandom(4).hex()}"


def bundle_dir(root: str, cid: str, binds: list[str] | tuple[str, ...]) -> str:
    """The sandbox's bundle. Its rootfs is only a mount point when the host's root is
    bound as a whole: one such bundle serves every sandbox (each mounts on it in its own
    mount namespace) and is kept. A skeleton root is the sandbox's own."""
    from contain.sandbox.host import make_skeleton, needs_skeleton

    if not needs_skeleton(binds):
        bundle = os.path.join(root, ".sandbox", "host-root")
        if not os.path.isdir(os.path.join(bundle, "rootfs")):
            os.makedirs(os.path.join(bundle, "rootfs"), mode=0o755, exist_ok=True)
        return bundle
    bundle = os.path.join(root, ".sandbox", cid)
    os.makedirs(os.path.join(bundle, "rootfs"), mode=0o700)
    os.chmod(os.path.join(bundle, "rootfs"), 0o755)
    make_skeleton(os.path.join(bundle, "rootfs"), binds)
    return bundle


def remove_bundle(bundle: str) -> None:
    if os.path.basename(bundle) == "host-root":
        return  # shared, kept
    from contain.sandbox.host import remove_skeleton

    remove_skeleton(os.path.join(bundle, "rootfs"))
    try:
        os.rmdir(bundle)
    except OSError:
        pass
