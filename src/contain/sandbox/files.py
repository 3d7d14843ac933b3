"""The file policy of a host-root sandbox as mounts and a Landlock ruleset.

The host's root is read-only already (host.sandbox_spec); on top of it:

- ``rw`` paths are bound read-write onto themselves;
- ``ro`` paths are bound read-only again (to take a subtree of a writable tree back);
- ``tmpfs`` paths get a private (sized) tmpfs;
- ``protected`` entries found inside a writable tree are bound read-only onto
  themselves (``.git/hooks`` under each writable tree, ``~/.bashrc`` if home is
  writable);
- ``deny`` paths are covered by an empty read-only directory (a tmpfs) or an empty
  read-only file, so nothing of them can be read.

Mounts are ordered by depth, so that a deeper path is mounted over a shallower one and
``deny`` and ``protected`` win over ``rw`` at the same place.

Landlock (unless off) then confines the same policy from inside: read and execute
beneath ``/``, every right beneath the writable places (rw paths, writable binds, tmpfs
paths, the private /tmp, /run, /dev/shm, /dev), TCP ports when the policy names them,
and scoping of abstract unix sockets and signals. Landlock only grants, so ``deny`` and
``protected`` are the mounts' work: a Landlock rule cannot withhold a subtree of a tree
it grants without also withholding the listing of its parents.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.sandbox.policy import Policy
    from contain.security.landlock import Landlock

# places of the sandbox that are its own and writable (host.sandbox_spec makes them)
PRIVATE_WRITABLE = ("/tmp", "/run", "/dev", "/dev/shm")
_RANK = {"rw": 0, "ro": 1, "tmpfs": 2, "protected": 3, "deny": 4}
_BIND_OPTS = ["rbind", "nosuid", "nodev"]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def denied(pol: Policy) -> list[str]:
    """The paths to hide: ``deny``, plus with ``deny_secrets`` the SECRETS of the
    caller's home that exist (a secret inside a writable tree is hidden too)."""
    out = list(pol.files.deny)
    if pol.files.deny_secrets:
        from contain.sandbox.policy import SECRETS

        for entry in SECRETS:
            path = os.path.realpath(os.path.expanduser(entry))
            if os.path.lexists(path) and path not in out:
                out.append(path)
    return out


def writable_trees(pol: Policy) -> list[tuple[str, str]]:
    """(host source, sandbox destination) of every writable tree of the policy."""
    out = [(p, p) for p in pol.files.rw]
    for text in pol.files.binds:
        parts = text.split(":")
        if len(parts) >= 2 and (len(parts) == 2 or parts[2] == "rw"):
            out.append((os.path.realpath(parts[0]), parts[1]))
    return out


def protected_paths(pol: Policy) -> list[tuple[str, str]]:
    """(host source, sandbox destination) of the protected entries that exist inside a
    writable tree (and are not themselves inside a deny path)."""
    out: list[tuple[str, str]] = []
    trees = writable_trees(pol)
    for entry in pol.files.protected:
        for src, dst in trees:
            if entry.startswith(("/", "~")):
                full = os.path.realpath(os.path.expanduser(entry))
                if not _under(full, src):
                    continue
                rel = os.path.relpath(full, src)
            else:
                rel = os.path.normpath(entry)
                if rel.startswith(".."):
                    continue
            host = os.path.join(src, rel) if rel != "." else src
            if os.path.islink(host) or not os.path.lexists(host):
                continue  # a symlink's target is protected where it lives, or not at all
            inside = os.path.normpath(os.path.join(dst, rel))
            if (host, inside) not in out:
                out.append((host, inside))
    return out


def check(pol: Policy) -> None:
    """Refuse what the mounts could not do, naming the option: a path inside a denied
    one (it is covered by an empty directory), a tmpfs where the read-only host root has
    no such path."""
    from contain.sandbox.policy import PolicyError

    private = ("/tmp", "/run", "/dev")
    for key, paths in (("rw", pol.files.rw), ("ro", pol.files.ro),
                       ("tmpfs", [p for p, _ in pol.files.tmpfs])):
        for path in paths:
            for d in denied(pol):
                if path != d and _under(path, d):
                    raise PolicyError(f"{key} {path}", f"inside the denied {d}, which "
                                      "the sandbox covers with an empty directory")
    for path, _ in pol.files.tmpfs:
        if not os.path.isdir(path) and not any(_under(path, p) for p in private):
            raise PolicyError(f"tmpfs {path}", "no such directory on the host, whose root "
                              "the sandbox has read-only (use an existing directory, or "
                              "one under /tmp or /run)")


def file_mounts(pol: Policy, empty_file: str) -> list[dict[str, Any]]:
    """The mounts of the file policy, in the order to mount them. *empty_file* is an
    empty read-only file of the runtime's to cover denied files with."""
    items: list[tuple[int, int, dict[str, Any]]] = []

    def add(kind: str, dest: str, mount: dict[str, Any]) -> None:
        depth = len([p for p in dest.split("/") if p])
        items.append((depth, _RANK[kind], mount))

    for p in pol.files.rw:
        add("rw", p, {"destination": p, "type": "bind", "source": p,
                      "options": [*_BIND_OPTS, "rw"]})
    for p in pol.files.ro:
        add("ro", p, {"destination": p, "type": "bind", "source": p,
                      "options": [*_BIND_OPTS, "rro"]})
    for p, size in pol.files.tmpfs:
        opts = ["nosuid", "nodev", "mode=1777"]
        if size is not None:
            opts.append(f"size={size}")
        add("tmpfs", p, {"destination": p, "type": "tmpfs", "source": "tmpfs",
                         "options": opts})
    deny = denied(pol)
    for host, inside in protected_paths(pol):
        if any(_under(host, d) for d in deny):
            continue
        add("protected", inside, {"destination": inside, "type": "bind", "source": host,
                                  "options": [*_BIND_OPTS, "rro"]})
    for p in deny:
        if not os.path.lexists(p):
            continue  # nothing there to hide
        if os.path.isdir(p):
            mount = {"destination": p, "type": "tmpfs", "source": "tmpfs",
                     "options": ["ro", "nosuid", "nodev", "noexec", "size=4k", "mode=555"]}
        else:
            mount = {"destination": p, "type": "bind", "source": empty_file,
                     "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}
        add("deny", p, mount)
    items.sort(key=lambda t: (t[0], t[1]))
    return [m for _, _, m in items]


def landlock_ruleset(pol: Policy) -> Landlock | None:
    """The Landlock model of the policy (None when Landlock is off)."""
    from contain.linux import landlock as ll
    from contain.security.landlock import Landlock

    if pol.landlock.mode == "off":
        return None
    read = ["execute", "read_file", "read_dir"]
    every = list(ll.FS)
    writable = [p for p in PRIVATE_WRITABLE]
    writable += [dst for _, dst in writable_trees(pol)]
    writable += [p for p, _ in pol.files.tmpfs]
    cfg = Landlock(handled_fs=every, best_effort=pol.landlock.mode != "strict")
    cfg.path_rules.append((read, ["/"]))
    cfg.path_rules.append((every, sorted(set(writable))))
    cfg.path_rules.append((["write_file", "truncate"], ["/proc"]))
    for key in ("bind_tcp", "connect_tcp"):
        ports = getattr(pol.landlock, key)
        if ports is not None:
            cfg.handled_net.append(key)
            if ports:
                cfg.port_rules.append(([key], list(ports)))
    cfg.scoped = list(pol.landlock.scope)
    return cfg
