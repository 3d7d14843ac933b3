"""The sandbox policy: one model for the CLI flags, the policy file and the Python API.

A policy file is TOML (``.toml``, read with the standard library's tomllib) or JSON
(``.json``, or any file whose first character is ``{``), with these sections::

    [files]
    rw = ["~/project"]                  # writable (bound read-write)
    ro = ["~/project/vendor"]           # read-only again (inside a writable tree)
    deny = ["~/.ssh", "~/.aws"]         # replaced by an empty file or directory
    tmpfs = ["/var/cache:64M"]          # a private tmpfs, optionally sized
    protected = [".git/hooks", ".git/config", "~/.bashrc"]  # read-only even if rw
    deny_secrets = true                 # also deny ~/.ssh, ~/.aws, ~/.gnupg, ... (SECRETS)
    binds = ["/srv/data:/data:ro"]      # SRC:DST[:ro], as --bind

    [network]
    mode = "none"                       # none | host | allow | private
    allow = ["pypi.org", "*.pythonhosted.org:443"]
    publish = ["8080:80"]

    [landlock]
    mode = "best-effort"                # best-effort | strict | off
    connect_tcp = [443]                 # handle TCP connect: only these ports
    bind_tcp = []                       # handle TCP bind: no port
    scope = ["abstract_unix_socket", "signal"]

    [limits]
    memory = "1G"; pids = 512; cpus = 1.5; tmp = "256M"; shm = "64M"; run = "16M"

    [process]
    env = ["CI=1"]; cwd = "/"; hostname = "sandbox"; caps = []; seccomp = true
    userns = "auto"                     # auto (when not root) | true | false

    [syscalls]                          # handed to contain.sandbox.supervise.policy

    [report]
    file = "violations.jsonl"           # or fd = 3
    summary = true

Every value is checked before anything starts; a bad one is refused with its path
(``policy.toml: limits.memory: ...``, ``--memory: ...``, ``contain.run: memory: ...``).
Relative entries of ``protected`` are looked for under every writable tree; entries
starting with ``~`` are the caller's home.
"""

from __future__ import annotations

import math
import os

from contain.errors import ContainError
from contain.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Option = Callable[["Policy", "Validator", Any, str], None]

NET_MODES = ("none", "host", "allow", "private")
LANDLOCK_MODES = ("best-effort", "strict", "off")
SCOPES = ("abstract_unix_socket", "signal")
# Hidden with `deny_secrets` (--deny-secrets): credentials and browser profiles under
# the caller's home, those that exist.
SECRETS = (
    "~/.ssh", "~/.gnupg", "~/.aws", "~/.azure", "~/.config/gcloud", "~/.kube",
    "~/.docker/config.json", "~/.netrc", "~/.git-credentials", "~/.pypirc", "~/.npmrc",
    "~/.config/gh", "~/.password-store", "~/.local/share/keyrings", "~/.mozilla",
    "~/.config/google-chrome", "~/.config/chromium", "~/.config/BraveSoftware",
    "~/.vault-token", "~/.terraform.d/credentials.tfrc.json",
)
# Kept read-only inside writable trees unless the policy says otherwise: what runs
# code later, outside the sandbox (git hooks and config, shell start-up files).
DEFAULT_PROTECTED = (
    ".git/hooks", ".git/config", ".gitmodules",
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile",
    ".zshrc", ".zshenv", ".zprofile", ".zlogin", ".config/fish/config.fish",
    ".gitconfig", ".ssh/authorized_keys", ".ssh/config",
)


class PolicyError(ContainError):
    """A policy value is invalid; *path* names it (a flag, a file field, an argument)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class PolicyTypeError(PolicyError, TypeError):
    """A policy value has the wrong type (also a TypeError, for Python callers)."""


# -- the model -------------------------------------------------------------------------

class Files(Record):
    __slots__ = ("rw", "ro", "deny", "tmpfs", "protected", "binds", "deny_secrets",
                 "host_sockets")
    DEFAULTS = {"rw": list, "ro": list, "deny": list, "tmpfs": list,
                "protected": lambda: list(DEFAULT_PROTECTED), "binds": list,
                "deny_secrets": False, "host_sockets": False}
    rw: list[str]
    ro: list[str]
    deny: list[str]
    tmpfs: list[tuple[str, int | None]]
    protected: list[str]
    binds: list[str]
    deny_secrets: bool  # also deny SECRETS under the caller's home
    host_sockets: bool  # leave the host's filesystem unix sockets reachable


class Network(Record):
    __slots__ = ("mode", "allow", "publish")
    DEFAULTS = {"mode": "none", "allow": list, "publish": list}
    mode: str
    allow: list[str]
    publish: list[str]


class Landlock(Record):
    __slots__ = ("mode", "bind_tcp", "connect_tcp", "scope")
    DEFAULTS = {"mode": "best-effort", "bind_tcp": None, "connect_tcp": None,
                "scope": lambda: list(SCOPES)}
    mode: str
    bind_tcp: list[int] | None
    connect_tcp: list[int] | None
    scope: list[str]


class Limits(Record):
    __slots__ = ("memory", "pids", "cpus", "tmp", "shm", "run")
    DEFAULTS = dict.fromkeys(__slots__)
    memory: int | str | None  # bytes, or "max" (no bound, where the build has a default)
    pids: int | None
    cpus: float | None
    tmp: int | None
    shm: int | None
    run: int | None


class Process(Record):
    __slots__ = ("env", "cwd", "hostname", "caps", "seccomp", "userns", "as_root")
    DEFAULTS = {"env": list, "cwd": "/", "hostname": None, "caps": list, "seccomp": True,
                "userns": None, "as_root": False}
    env: list[str]
    cwd: str
    hostname: str | None
    caps: list[str]
    seccomp: bool
    userns: bool | None  # None: automatically when the caller is not root
    as_root: bool  # a root caller's command as root (else an unprivileged uid)


class Report(Record):
    __slots__ = ("target", "summary")
    DEFAULTS = {"target": None, "summary": True}
    target: str | int | None
    summary: bool


class Policy(Record):
    __slots__ = ("files", "network", "landlock", "limits", "process", "syscalls",
                 "syscall_policy", "supervision", "report")
    DEFAULTS = {"files": Files, "network": Network, "landlock": Landlock,
                "limits": Limits, "process": Process, "syscalls": None,
                "syscall_policy": None, "supervision": dict, "report": Report}
    files: Files
    network: Network
    landlock: Landlock
    limits: Limits
    process: Process
    syscalls: dict[str, Any] | None
    syscall_policy: Any  # what contain.sandbox.supervise.policy made of it
    # the supervisor's options from the CLI or the API (supervise, supervisor,
    # supervise_report, record, enforce), as contain.sandbox.supervise takes them
    supervision: dict[str, Any]
    report: Report

    # -- sources -------------------------------------------------------------------

    @classmethod
    def load(cls, path: str) -> Policy:
        """A policy file (TOML or JSON)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise PolicyError(path, exc.strerror or str(exc)) from exc
        name = os.path.basename(path)
        if path.endswith(".json") or data.lstrip()[:1] == b"{":
            from contain.jsonio import loads

            try:
                doc = loads(data)
            except ValueError as exc:
                raise PolicyError(name, f"not valid JSON: {exc}") from exc
        else:
            import tomllib

            try:
                doc = tomllib.loads(data.decode("utf-8", "replace"))
            except tomllib.TOMLDecodeError as exc:
                raise PolicyError(name, f"not valid TOML: {exc}") from exc
        return cls.from_dict(doc, f"{name}: ")

    @classmethod
    def from_dict(cls, doc: Any, origin: str = "policy: ") -> Policy:
        """The policy of a decoded file (or a dict given to the API); *origin* prefixes
        every error's field path."""
        pol = cls()
        pol.update(doc, origin)
        return pol

    def update(self, doc: Any, origin: str = "policy: ") -> None:
        """Merge a policy document into this one (lists replace, as a file says them)."""
        top = _table(doc, origin.rstrip(": ") or "policy", origin="")
        sections = (*_FILE_FIELDS, "syscalls")
        for key in top:
            if key not in sections:
                raise PolicyError(f"{origin}{key}", "unknown section (one of "
                                  f"{', '.join(sections)})")
        v = Validator(origin)
        for section, fields in _FILE_FIELDS.items():
            if section not in top:
                continue
            for key, value in v.table(top[section], section, tuple(fields)).items():
                attr, parse = fields[key]
                part, name = attr.split(".")
                setattr(getattr(self, part), name, parse(v, value, f"{section}.{key}"))
        if "syscalls" in top:
            self.syscalls = v.table(top["syscalls"], "syscalls", None)
            self.syscall_policy = _syscall_policy(self.syscalls, f"{origin}syscalls")

    def to_dict(self) -> dict[str, Any]:
        """The policy as a document (what ``from_dict`` reads back)."""
        out: dict[str, Any] = {
            "files": {"rw": self.files.rw, "ro": self.files.ro, "deny": self.files.deny,
                      "deny_secrets": self.files.deny_secrets,
                      "host_sockets": self.files.host_sockets,
                      "tmpfs": [p if s is None else f"{p}:{s}" for p, s in self.files.tmpfs],
                      "protected": self.files.protected, "binds": self.files.binds},
            "network": {"mode": self.network.mode, "allow": self.network.allow,
                        "publish": self.network.publish},
            "landlock": {"mode": self.landlock.mode, "scope": self.landlock.scope},
            "limits": {k: getattr(self.limits, k) for k in Limits.__slots__
                       if getattr(self.limits, k) is not None},
            "process": {"env": self.process.env, "cwd": self.process.cwd,
                        "as_root": self.process.as_root,
                        "caps": self.process.caps, "seccomp": self.process.seccomp,
                        "userns": "auto" if self.process.userns is None
                        else self.process.userns},
            "report": {"summary": self.report.summary},
        }
        for key in ("bind_tcp", "connect_tcp"):
            if getattr(self.landlock, key) is not None:
                out["landlock"][key] = getattr(self.landlock, key)
        if self.process.hostname is not None:
            out["process"]["hostname"] = self.process.hostname
        if isinstance(self.report.target, int):
            out["report"]["fd"] = self.report.target
        elif self.report.target is not None:
            out["report"]["file"] = self.report.target
        if self.syscalls is not None:
            out["syscalls"] = self.syscalls
        return out

    # -- what it means -------------------------------------------------------------

    def use_userns(self) -> bool:
        if self.process.userns is None:
            return os.geteuid() != 0
        return self.process.userns


def _syscall_policy(table: dict[str, Any], path: str) -> Any:
    """Hand ``[syscalls]`` to the supervisor's policy module, if this build has it (its
    ``SyscallPolicy.decode``); a bad field is refused with its path here too."""
    import importlib

    try:
        mod = importlib.import_module("contain.sandbox.supervise.policy")
    except ImportError as exc:
        raise PolicyError(path, "syscall supervision is not available in this build of "
                          "contain (no contain.sandbox.supervise): remove the [syscalls] "
                          "section") from exc
    decoder = getattr(getattr(mod, "SyscallPolicy", None), "decode", None)
    if decoder is None:
        return table
    from contain.errors import SpecError

    try:
        return decoder(table, "syscalls")
    except SpecError as exc:
        origin = path[: -len("syscalls")] if path.endswith("syscalls") else ""
        raise PolicyError(f"{origin}{exc.path}", exc.message) from exc


def _table(value: Any, path: str, origin: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyTypeError(f"{origin}{path}", f"expected a table, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"a string ({shown!r})"
    return f"{type(value).__name__} ({str(value)[:40]})"


# -- values ------------------------------------------------------------------------------

class Validator:
    """Checks one value each; errors name it as *origin* + its key."""

    def __init__(self, origin: str = "", flag: bool = False) -> None:
        self.origin = origin
        self.flag = flag

    def name(self, key: str) -> str:
        if self.flag:
            return "--" + key.split(".")[-1].replace("_", "-")
        return self.origin + key

    def type_error(self, key: str, expected: str, value: Any) -> PolicyTypeError:
        return PolicyTypeError(self.name(key), f"expected {expected}, got {_kind(value)}")

    def error(self, key: str, message: str) -> PolicyError:
        return PolicyError(self.name(key), message)

    def table(self, value: Any, key: str, keys: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.type_error(key, "a table", value)
        if keys is not None:
            for k in value:
                if k not in keys:
                    raise self.error(f"{key}.{k}", f"unknown field (one of {', '.join(keys)})")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.type_error(key, "a string", value)
        if "\0" in value:
            raise self.error(key, "contains a NUL byte")
        return value

    def strings(self, value: Any, key: str) -> list[str]:
        if isinstance(value, (str, bytes)):
            raise self.type_error(key, "a list of strings (not one string)", value)
        if not isinstance(value, (list, tuple)):
            raise self.type_error(key, "a list of strings", value)
        return [self.string(x, f"{key}[{i}]") for i, x in enumerate(value)]

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.type_error(key, "true or false", value)
        return value

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        text = self.string(value, key)
        if text not in choices:
            raise self.error(key, f"{text!r} is not one of {', '.join(choices)}")
        return text

    def count(self, value: Any, key: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.type_error(key, "an integer", value)
        if value < minimum:
            raise self.error(key, f"{value} is out of range (at least {minimum})")
        return value

    def size(self, value: Any, key: str) -> int:
        """Bytes: a positive integer, or a string such as 512M, 2G, 64k."""
        if isinstance(value, bool):
            raise self.type_error(key, "a size (bytes, or 512M, 2G)", value)
        if isinstance(value, int):
            number = float(value)
            mult = 1
        elif isinstance(value, str):
            t = value.strip().lower()
            t = t[:-1] if t.endswith("b") else t
            mult = 1
            if t and t[-1] in "kmgt":
                mult = 1024 ** ("kmgt".index(t[-1]) + 1)
                t = t[:-1]
            try:
                number = float(t)
            except ValueError as exc:
                raise self.error(key, f"invalid size {value!r} (e.g. 512M, 2G)") from exc
        else:
            raise self.type_error(key, "a size (bytes, or 512M, 2G)", value)
        if not math.isfinite(number):
            raise self.error(key, f"invalid size {value!r}: not a finite number")
        if number <= 0:
            raise self.error(key, f"invalid size {value!r}: must be positive")
        total = int(number * mult)
        if total < 4096:
            raise self.error(key, f"invalid size {value!r}: at least 4096 bytes")
        if total > 2 ** 62:
            raise self.error(key, f"invalid size {value!r}: too large")
        return total

    def cpus(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str) and self.flag:
                try:
                    value = float(value)
                except ValueError as exc:
                    raise self.error(key, f"invalid value {value!r}: a number of cores "
                                     "(e.g. 0.5)") from exc
            else:
                raise self.type_error(key, "a number of cores (e.g. 0.5)", value)
        if not math.isfinite(value):
            raise self.error(key, f"invalid value {value!r}: not a finite number")
        if value < 0.01:
            raise self.error(key, f"{value} is too small (at least 0.01 of a core)")
        if value > 4096:
            raise self.error(key, f"{value} is too large")
        return float(value)

    def ports(self, value: Any, key: str) -> list[int]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise self.type_error(key, "a list of port numbers", value)
        out = []
        for i, p in enumerate(value):
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 65535:
                raise self.error(f"{key}[{i}]", f"{p!r} is not a port number (0-65535)")
            out.append(p)
        return out

    def abspath(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not text.startswith("/"):
            raise self.error(key, f"{text!r} is not an absolute path")
        return text

    def paths(self, value: Any, key: str, must_exist: bool = True) -> list[str]:
        return [self.path(p, f"{key}[{i}]", must_exist)
                for i, p in enumerate(self.strings(value, key))]

    def path(self, value: Any, key: str, must_exist: bool = True) -> str:
        """A host path (``~`` is the caller's home; relative to the current directory),
        made absolute and free of symlinks; it must exist (unless not *must_exist*: a
        path to deny that does not exist has nothing to hide)."""
        text = self.string(value, key)
        if not text:
            raise self.error(key, "empty path")
        full = os.path.realpath(os.path.expanduser(text))
        if must_exist and not os.path.lexists(full):
            raise self.error(key, f"{text}: no such file or directory")
        return full

    def tmpfs(self, value: Any, key: str) -> tuple[str, int | None]:
        text = self.string(value, key)
        path, _, size = text.partition(":")
        if not path.startswith("/"):
            raise self.error(key, f"{text!r}: PATH[:SIZE] with an absolute PATH")
        return os.path.normpath(path), (self.size(size, key) if size else None)

    def env(self, value: Any, key: str) -> list[str]:
        out = self.strings(value, key)
        for i, e in enumerate(out):
            if "=" not in e or e.startswith("="):
                raise self.error(f"{key}[{i}]", f"{e!r} is not NAME=VALUE")
        return out

    def userns(self, value: Any, key: str) -> bool | None:
        if value == "auto" or value is None:
            return None
        return self.boolean(value, key)

    def seconds(self, value: Any, key: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.type_error(key, "a number of seconds", value)
        if not math.isfinite(value) or value <= 0:
            raise self.error(key, f"{value!r} must be a positive number of seconds")
        return float(value)

    def input(self, value: Any, key: str) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise self.type_error(key, "bytes or str", value)


def check_run_call(input: Any, timeout: Any, flags: dict[str, Any],
                   on_output: Any) -> tuple[bytes | None, float | None]:
    """The arguments of one Sandbox.run / Pool.run call (not the policy's): the input
    as bytes and the timeout in seconds; *flags* must each be True or False."""
    v = Validator()
    data = v.input(input, "input")
    seconds = v.seconds(timeout, "timeout")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise PolicyTypeError(name, f"expected True or False, got {type(value).__name__}")
    if on_output is not None and not callable(on_output):
        raise PolicyTypeError("on_output", "expected a callable(stream, data)")
    return data, seconds


# -- the policy file's fields ---------------------------------------------------------

def _tmpfs_list(v: Validator, value: Any, key: str) -> list[tuple[str, int | None]]:
    return [v.tmpfs(x, f"{key}[{i}]") for i, x in enumerate(v.strings(value, key))]


def _scopes(v: Validator, value: Any, key: str) -> list[str]:
    return [v.choice(x, f"{key}[{i}]", SCOPES) for i, x in enumerate(v.strings(value, key))]


def _memory(v: Validator, value: Any, key: str) -> int | str:
    """A memory size, or "max": no bound (where the build bounds sandboxes by default)."""
    return "max" if value == "max" else v.size(value, key)


def _deny_paths(v: Validator, value: Any, key: str) -> list[str]:
    return v.paths(value, key, must_exist=False)


def _fd(v: Validator, value: Any, key: str) -> int:
    return v.count(value, key, minimum=0)


# section -> field -> (the Policy attribute it sets, its parser)
_FILE_FIELDS: dict[str, dict[str, tuple[str, Callable[[Validator, Any, str], Any]]]] = {
    "files": {
        "rw": ("files.rw", Validator.paths), "ro": ("files.ro", Validator.paths),
        "deny": ("files.deny", _deny_paths), "tmpfs": ("files.tmpfs", _tmpfs_list),
        "protected": ("files.protected", Validator.strings),
        "binds": ("files.binds", Validator.strings),
        "deny_secrets": ("files.deny_secrets", Validator.boolean),
        "host_sockets": ("files.host_sockets", Validator.boolean),
    },
    "network": {
        "mode": ("network.mode", lambda v, x, k: v.choice(x, k, NET_MODES)),
        "allow": ("network.allow", Validator.strings),
        "publish": ("network.publish", Validator.strings),
    },
    "landlock": {
        "mode": ("landlock.mode", lambda v, x, k: v.choice(x, k, LANDLOCK_MODES)),
        "bind_tcp": ("landlock.bind_tcp", Validator.ports),
        "connect_tcp": ("landlock.connect_tcp", Validator.ports),
        "scope": ("landlock.scope", _scopes),
    },
    "limits": {
        "memory": ("limits.memory", _memory), "tmp": ("limits.tmp", Validator.size),
        "shm": ("limits.shm", Validator.size), "run": ("limits.run", Validator.size),
        "pids": ("limits.pids", Validator.count), "cpus": ("limits.cpus", Validator.cpus),
    },
    "process": {
        "env": ("process.env", Validator.env), "cwd": ("process.cwd", Validator.abspath),
        "hostname": ("process.hostname", Validator.string),
        "caps": ("process.caps", Validator.strings),
        "seccomp": ("process.seccomp", Validator.boolean),
        "userns": ("process.userns", Validator.userns),
        "as_root": ("process.as_root", Validator.boolean),
    },
    "report": {
        "file": ("report.target", Validator.string), "fd": ("report.target", _fd),
        "summary": ("report.summary", Validator.boolean),
    },
}


# -- keyword options (the Python API and the CLI flags) --------------------------------------

SUPERVISORS = ("notify", "ptrace")


def apply_options(pol: Policy, options: dict[str, Any], origin: str = "",
                  flag: bool = False) -> Policy:
    """Set keyword options (``contain.run(memory=..., rw=[...])``, or the CLI's parsed
    flags with *flag*) on *pol*; lists extend what the policy already has."""
    v = Validator(origin, flag)
    for key, value in options.items():
        if key not in OPTION_KEYS:
            raise PolicyTypeError(v.name(key), "unknown option")
        if value is not None:
            _OPTIONS[key](pol, v, value, key)
    return pol


def _set(attr: str, parse: Callable[[Validator, Any, str], Any]) -> Option:
    part, name = attr.split(".")

    def option(pol: Policy, v: Validator, value: Any, key: str) -> None:
        setattr(getattr(pol, part), name, parse(v, value, key))

    return option


def _extend(attr: str, parse: Callable[[Validator, Any, str], Any]) -> Option:
    part, name = attr.split(".")

    def option(pol: Policy, v: Validator, value: Any, key: str) -> None:
        getattr(getattr(pol, part), name).extend(parse(v, value, key))

    return option


def _supervision(parse: Callable[[Validator, Any, str], Any]) -> Option:
    def option(pol: Policy, v: Validator, value: Any, key: str) -> None:
        pol.supervision[key] = parse(v, value, key)

    return option


def _pids(v: Validator, value: Any, key: str) -> int:
    if v.flag and isinstance(value, str):
        try:
            value = int(value)
        except ValueError as exc:
            raise v.error(key, f"{value!r} is not an integer") from exc
    return v.count(value, key)


def _net(pol: Policy, v: Validator, value: Any, key: str) -> None:
    mode, _, rest = v.string(value, key).partition("=")
    pol.network.mode = v.choice(mode, key, NET_MODES)
    if rest:
        pol.network.allow += [d for d in rest.split(",") if d]
    if mode == "allow" and not pol.network.allow:
        raise v.error(key, "allow=DOMAIN[:PORT],... names at least one domain")


def _target(v: Validator, value: Any, key: str) -> str | int:
    """A report target: an fd number or a file path."""
    if isinstance(value, int) and not isinstance(value, bool):
        return v.count(value, key, minimum=0)
    return v.string(value, key)


def _supervisor(v: Validator, value: Any, key: str) -> str:
    if v.string(value, key) not in SUPERVISORS:
        raise v.error(key, f"invalid supervisor {value!r}: notify or ptrace")
    return str(value)


_OPTIONS: dict[str, Option] = {
    "memory": _set("limits.memory", _memory),
    "tmp_size": _set("limits.tmp", Validator.size),
    "shm_size": _set("limits.shm", Validator.size),
    "pids": _set("limits.pids", _pids),
    "cpus": _set("limits.cpus", Validator.cpus),
    "binds": _extend("files.binds", Validator.strings),
    "rw": _extend("files.rw", Validator.paths),
    "ro": _extend("files.ro", Validator.paths),
    "deny": _extend("files.deny", _deny_paths),
    "deny_secrets": _set("files.deny_secrets", Validator.boolean),
    "host_sockets": _set("files.host_sockets", Validator.boolean),
    "as_root": _set("process.as_root", Validator.boolean),
    "tmpfs": _extend("files.tmpfs", _tmpfs_list),
    "protected": _extend("files.protected", Validator.strings),
    "net": _net,
    "allow": _extend("network.allow", Validator.strings),
    "publish": _extend("network.publish", Validator.strings),
    "env": _extend("process.env", Validator.env),
    "cwd": _set("process.cwd", Validator.abspath),
    "hostname": _set("process.hostname", Validator.string),
    "userns": _set("process.userns", Validator.userns),
    "caps": _extend("process.caps", Validator.strings),
    "seccomp": _set("process.seccomp", Validator.boolean),
    "landlock": _set("landlock.mode", lambda v, x, k: v.choice(x, k, LANDLOCK_MODES)),
    "report": _set("report.target", _target),
    "supervisor": _supervision(_supervisor),
    "record": _supervision(Validator.string),
    "enforce": _supervision(Validator.string),
    "supervise_report": _supervision(_target),
    # a syscall policy: a dict, a file path, inline JSON, or the supervisor's own
    # SyscallPolicy (with callbacks), decoded by the supervisor (runner.build)
    "supervise": _supervision(lambda v, x, k: x),
}
OPTION_KEYS = tuple(_OPTIONS)


def resolve(policy: Policy | dict[str, Any] | str | None, options: dict[str, Any],
            origin: str = "") -> Policy:
    """One validated policy from what a caller gave: a Policy (copied), a dict, a file
    path, or nothing, plus keyword options on top."""
    if policy is None:
        pol = Policy()
    elif isinstance(policy, Policy):
        pol = policy.copy()
    elif isinstance(policy, dict):
        pol = Policy.from_dict(policy, f"{origin}policy.")
    elif isinstance(policy, (str, os.PathLike)):
        pol = Policy.load(os.fspath(policy))
    else:
        raise PolicyTypeError(f"{origin}policy", f"expected a Policy, a dict or a file "
                              f"path, got {_kind(policy)}")
    return apply_options(pol, options, origin)
