"""Facts about the runtime itself that any layer may need: its version and the version
of the OCI runtime specification it implements (the default state root, a fact of the
state store, is contain.container.store.default_root).

A shared leaf (like errors, log, jsonio, passwd): importable from every layer, it
imports nothing of ours, so the API and the inspector need not reach up into the CLI.
"""

from __future__ import annotations

VERSION = "0.1.0"
SPEC_VERSION = "1.3.0"

