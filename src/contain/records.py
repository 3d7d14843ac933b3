"""Small mutable records: what ``dataclasses`` would give (defaults, ==, repr, a deep
copy) without its import, which costs ~10 ms (it pulls in inspect, re and enum) on the
sandbox's start-up path. A shared leaf: imports nothing of ours."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Record:
    """Fields are the subclass's ``__slots__``; ``DEFAULTS`` maps a field to its default
    value, or to a callable that makes one (``list``); a field without one is required."""

    __slots__: tuple[str, ...] = ()
    DEFAULTS: dict[str, Any] = {}

    def __init__(self, *args: Any, **kw: Any) -> None:
        names: tuple[str, ...] = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        for name, value in zip(names, args, strict=False):
            kw[name] = value
        for name in names:
            if name in kw:
                value = kw.pop(name)
            elif name in self.DEFAULTS:
                value = self.DEFAULTS[name]
                if callable(value):
                    value = value()
            else:
                raise TypeError(f"{type(self).__name__}: {name} is required")
            object.__setattr__(self, name, value)
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown field {next(iter(kw))!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def copy(self) -> Any:
        """A deep copy (records, lists, tuples and dicts are copied; the rest shared)."""
        new = object.__new__(type(self))
        for n in self.__slots__:
            object.__setattr__(new, n, _copy(getattr(self, n)))
        return new


def _copy(value: Any) -> Any:
    if isinstance(value, Record):
        return value.copy()
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value
