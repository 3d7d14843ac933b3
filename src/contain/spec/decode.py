"""A small, fast decoder from parsed JSON to typed objects, with JSON-path errors.

Each model class lists its fields as ``(attribute, json_key, codec, default)``.
A codec is a function ``(value, path) -> decoded`` that raises :class:`SpecError`
naming the path. Only the standard library is used: third-party model libraries cost
tens of milliseconds of import time, which is most of a ``contain state`` call.
"""

from __future__ import annotations

from contain.errors import SpecError

TYPE_CHECKING = False  # typing costs milliseconds to import; only mypy needs it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, TypeVar

    Codec = Callable[[Any, str], Any]
    M = TypeVar("M", bound="Model")

_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean",
              list: "array", dict: "object", type(None): "null"}


def _kind(value: object) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def fail(path: str, message: str) -> SpecError:
    return SpecError(path, message)


SHOW_MAX = 200  # an error quotes at most this many characters of a bad value


def show(value: object) -> str:
    """*value* as an error message quotes it: repr, cut to SHOW_MAX characters."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"<a {type(value).__name__} too large to show>"
    if len(text) <= SHOW_MAX:
        return text
    return f"{text[:SHOW_MAX]}... ({len(text)} characters)"


def key(name: str) -> str:
    """An object key as it appears in a JSON path: as is when short and printable, else
    quoted and cut like :func:`show`."""
    if len(name) <= SHOW_MAX and name.isprintable():
        return name
    return show(name)


def check_text(value: str, path: str) -> str:
    """Every string may reach the kernel (paths, argv, env, names), which reads it as a
    NUL-terminated UTF-8 byte string: a NUL would cut it short silently, and a lone
    surrogate (a JSON "\\ud800" escape) has no UTF-8 form at all."""
    if "\0" in value:
        raise fail(path, f"contains a NUL byte: {show(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise fail(path, f"is not valid Unicode text (a lone surrogate): {show(value)}"
                       ) from exc
    return value


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise fail(path, f"expected string, got {_kind(value)}")
    return check_text(value, path)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise fail(path, f"expected boolean, got {_kind(value)}")
    return value


def integer(lo: int, hi: int) -> Codec:
    def codec(value: Any, path: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(path, f"expected integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise fail(path, f"{show(value)} out of range [{lo}, {hi}]")
        return value
    return codec


u8 = integer(0, 2**8 - 1)
u16 = integer(0, 2**16 - 1)
u32 = integer(0, 2**32 - 1)
u64 = integer(0, 2**64 - 1)
i32 = integer(-(2**31), 2**31 - 1)
i64 = integer(-(2**63), 2**63 - 1)
# uids and gids: 4294967295 is (uid_t)-1, which setresuid/setresgid/chown read as "leave
# unchanged" (so the runtime's root would stay); runc accepts 0..2147483647, as here
ID_MAX = 2**31 - 1
id32 = integer(0, ID_MAX)


def array(item: Codec) -> Codec:
    def codec(value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise fail(path, f"expected array, got {_kind(value)}")
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return codec


def mapping(item: Codec) -> Codec:
    def codec(value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise fail(path, f"expected object, got {_kind(value)}")
        out = {}
        for k, v in value.items():
            check_text(k, f"{path}.{key(k)}")
            out[k] = item(v, f"{path}.{key(k)}")
        return out
    return codec


def one_of(*choices: str) -> Codec:
    def codec(value: Any, path: str) -> str:
        string(value, path)
        if value not in choices:
            raise fail(path, f"unknown value {show(value)} (expected one of {', '.join(choices)})")
        return value
    return codec


PATH_MAX = 4096  # the kernel refuses a path of this many bytes or more (ENAMETOOLONG)


def check_path_length(value: str, path: str) -> None:
    if len(value) >= PATH_MAX // 4 and len(value.encode()) >= PATH_MAX:
        raise fail(path, f"{show(value)} is longer than the kernel's {PATH_MAX - 1} bytes")


def absolute_path(value: Any, path: str) -> str:
    string(value, path)
    if not value.startswith("/"):
        raise fail(path, f"{show(value)} is not an absolute path")
    check_path_length(value, path)
    return value


def model(cls: type[M]) -> Codec:
    return cls.decode


REQUIRED = object()


class Model:
    """Base of every spec object: slots, declared fields, decode with paths."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[tuple[str, str, Codec, Any], ...]] = ()

    def __init__(self, **kw: Any) -> None:
        for attr, _key, _codec, default in self.FIELDS:
            if attr in kw:
                value = kw[attr]
            elif default is REQUIRED:
                raise TypeError(f"{type(self).__name__}: {attr} is required")
            else:
                value = default() if callable(default) else default
            object.__setattr__(self, attr, value)

    @classmethod
    def decode(cls: type[M], value: Any, path: str = "$") -> M:
        if not isinstance(value, dict):
            raise fail(path, f"expected object, got {_kind(value)}")
        obj = cls.__new__(cls)
        for attr, key, codec, default in cls.FIELDS:
            raw = value.get(key)
            if raw is None:
                if default is REQUIRED:
                    raise fail(f"{path}.{key}", "required field is missing")
                raw_default = default() if callable(default) else default
                object.__setattr__(obj, attr, raw_default)
                continue
            object.__setattr__(obj, attr, codec(raw, f"{path}.{key}"))
        obj.validate(path)
        return obj

    def validate(self, path: str) -> None:
        """Cross-field checks; subclasses override."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, key, _codec, _default in self.FIELDS:
            value = getattr(self, attr)
            if value is None or value == [] or value == {}:
                continue
            out[key] = _encode(value)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{a}={getattr(self, a)!r}" for a, *_ in self.FIELDS)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, a) == getattr(other, a) for a, *_ in self.FIELDS)


def _encode(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_json()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value
