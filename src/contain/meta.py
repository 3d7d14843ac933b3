"""Facts about the runtime itself that any layer may need: its version, the version of
the OCI runtime specification it implements, and where it keeps container state when
no ``--root`` is given.

A shared leaf (like errors, log, jsonio, passwd): importable from every layer, it
imports nothing of ours, so the API and the inspector need not reach up into the CLI.
"""

from __future__ import annotations

import os

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"


def default_root() -> str:
    """/run/contain for root; $XDG_RUNTIME_DIR/contain for everybody else (as runc)."""
    if os.geteuid() == 0:
        return "/run/contain"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "contain")
    return f"/tmp/contain-{os.geteuid()}"
