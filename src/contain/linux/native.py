"""The subset of ctypes the syscall layer needs, built on the ``_ctypes`` C module.

``import ctypes`` costs ~9 ms here (the pure-Python part builds dozens of types and
caches at import), ``_ctypes`` ~0.6 ms; with Python's start-up that difference alone is
a quarter of runc's whole ``run``. These few definitions give the syscall wrappers what
they use: C scalar types, structures, arrays, byref/sizeof, errno, and functions of the
running process's libc.
"""

from __future__ import annotations

import _ctypes
from _ctypes import (  # noqa: F401  (re-exported for the syscall wrappers)
    POINTER,
    Array,
    Structure,
    _SimpleCData,
    addressof,
    byref,
    get_errno,
    sizeof,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# One class per C type code used here (each costs a metaclass instantiation at import);
# the fixed-width names are aliases on this LP64 ABI.
class c_int(_SimpleCData):
    _type_ = "i"


class c_uint(_SimpleCData):
    _type_ = "I"


class c_long(_SimpleCData):
    _type_ = "l"


class c_ulong(_SimpleCData):
    _type_ = "L"


class c_ushort(_SimpleCData):
    _type_ = "H"


class c_char(_SimpleCData):
    _type_ = "c"


class c_void_p(_SimpleCData):
    _type_ = "P"


c_int64 = c_long
c_uint64 = c_ulong
c_uint32 = c_uint
c_uint16 = c_ushort
c_size_t = c_ulong


def create_string_buffer(init: bytes | int, size: int | None = None) -> Any:
    """A mutable char array holding *init* (bytes) or *init* zero bytes; ``.raw`` reads it."""
    if isinstance(init, int):
        return (c_char * init)()
    buf = (c_char * (size if size is not None else len(init)))()
    buf.raw = init  # type: ignore[misc,assignment]
    return buf


class CDLL:
    """``ctypes.CDLL(None, use_errno=True)``'s use here: attribute access yields libc
    functions that return a C int and save errno."""

    def __init__(self, name: str | None = None, use_errno: bool = True) -> None:
        self._name = name

    def __getattr__(self, name: str) -> Any:
        func = function(name, c_int, self._name)
        setattr(self, name, func)
        return func


class _Library:
    """What _ctypes needs of a library object: its dlopen handle."""

    def __init__(self, name: str | None) -> None:
        self._handle = _ctypes.dlopen(name, 0x100 | 0x2)  # type: ignore[arg-type]  # RTLD_GLOBAL|NOW


class _Func(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


_libs: dict[str | None, _Library] = {}


def function(name: str, restype: Any = c_int, library: str | None = None,
             argtypes: tuple[Any, ...] | None = None) -> Any:
    """A callable for the C function *name* of *library* (default: the process's libc);
    errno is saved for :func:`get_errno` after every call."""
    lib = _libs.get(library)
    if lib is None:
        lib = _libs[library] = _Library(library)
    func = _Func((name, lib))  # type: ignore[arg-type]
    func.restype = restype
    if argtypes is not None:
        func.argtypes = argtypes
    return func
