"""The layers of DESIGN.md hold: every module imports only from its own layer or below.

    cli > api > measure > sandbox > inspect > container > process > rootfs > cgroups
        > security > spec > linux

and the shared leaves (errors, log, jsonio, passwd, meta) may be imported by any layer
and import nothing of ours but each other (log writes its JSON lines with jsonio).

Every import counts, wherever it is written: at the top of a module, inside a function
(the hot path imports lazily, but a lazy import is as much a dependency as an eager
one: it runs as soon as the function does) and under ``if TYPE_CHECKING:`` (a type
named in a signature is part of the module's interface: a lower layer that names an
upper layer's type cannot be read, typed or moved without it). The imports are read
with ``ast``, so nothing is imported to check them.

Outside the layers: ``contain/__init__.py`` re-exports the API (it is the API layer's
front), and ``contain/__main__.py`` runs the CLI (the CLI's).
"""

from __future__ import annotations

import ast
import os

import pytest

import contain

SRC = os.path.dirname(contain.__file__)
ORDER = ["cli", "api", "measure", "sandbox", "inspect", "container", "process", "rootfs",
         "cgroups", "security", "spec", "linux"]
LEAVES = {"errors", "log", "jsonio", "passwd", "meta"}
FRONTS = {"contain": "api", "contain.__main__": "cli"}


def _modules() -> dict[str, str]:
    """module name -> file, for every module of the package."""
    out = {}
    for dirpath, _dirs, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), os.path.dirname(SRC))
            mod = rel[:-3].replace(os.sep, ".")
            if mod.endswith(".__init__"):
                mod = mod[: -len(".__init__")]
            out[mod] = os.path.join(dirpath, name)
    return out


MODULES = _modules()


def layer(module: str) -> str:
    """The layer of a module of ours: a name of ORDER, "leaf", or a front's layer."""
    if module in FRONTS:
        return FRONTS[module]
    part = module.split(".")[1]
    return "leaf" if part in LEAVES else part


def imports_of(path: str) -> list[tuple[int, str]]:
    """(line, module) for every import of ours in the file, at any depth."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                # `from contain.container import store` imports a module; `from
                # contain.errors import ContainError` a name of one
                out.append((node.lineno, sub if sub in MODULES else node.module))
    return sorted({(line, mod) for line, mod in out
                   if mod == "contain" or mod.startswith("contain.")})


def violations(module: str, imports: list[tuple[int, str]]) -> list[str]:
    mine = layer(module)
    bad = []
    for line, target in imports:
        theirs = layer(target)
        if mine == "leaf":
            if theirs != "leaf":
                bad.append(f"{module}:{line}: the shared leaf imports {target}")
        elif theirs != "leaf" and ORDER.index(theirs) < ORDER.index(mine):
            bad.append(f"{module}:{line}: {mine} imports {target} ({theirs}, above it)")
    return bad


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        where = layer(module)
        assert where == "leaf" or where in ORDER, f"{module}: not in DESIGN.md's table"


def test_no_upward_import() -> None:
    bad = []
    for module, path in sorted(MODULES.items()):
        bad += violations(module, imports_of(path))
    assert not bad, "upward imports:\n" + "\n".join(bad)


@pytest.mark.parametrize(("module", "source", "upward"), [
    ("contain.spec.config", "from contain.rootfs.mounts import MOUNT_FLAGS\n", True),
    ("contain.process.foreground",
     "def f():\n    from contain.container.control import wait\n", True),
    ("contain.linux.syscalls",
     "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from contain.spec.config import Spec\n",
     True),
    ("contain.api", "from contain import cli\n", True),
    ("contain.meta", "from contain.linux import consts\n", True),
    ("contain.cli.main", "from contain.container import store\n", False),
    ("contain.spec.config", "from contain.errors import SpecError\nimport os\n", False),
])
def test_the_check_sees(tmp_path: object, module: str, source: str, upward: bool) -> None:
    """The check itself: it sees an upward import at the top, in a function and under
    TYPE_CHECKING, and lets a downward one or a leaf pass."""
    path = os.path.join(str(tmp_path), "m.py")
    with open(path, "w") as f:
        f.write(source)
    assert bool(violations(module, imports_of(path))) == upward
