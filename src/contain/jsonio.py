"""JSON reading and writing on the C accelerator alone.

``import json`` pulls in ``re`` and the pure-Python encoder and costs ~10 ms here, a
large share of a ``contain state`` call. The C scanner and encoder in ``_json`` do the
work; this module gives them the few lines of glue ``json`` would have added.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing costs milliseconds to import; only mypy needs it
if TYPE_CHECKING:
    from typing import Any


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        # NaN, Infinity and -Infinity are not JSON (RFC 8259); Python's json accepts them
        raise _NotJSON(f"{name} is not a JSON value (numbers must be finite)")


class _NotJSON(ValueError):
    pass


_INF = float("inf")
_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
_WS = " \t\n\r"
MAX_DEPTH = 200  # arrays and objects nested deeper than this are refused


class JSONDecodeError(ValueError):
    def __init__(self, msg: str, doc: str, pos: int | None) -> None:
        if pos is None:
            super().__init__(msg)
            return
        line = doc.count("\n", 0, pos) + 1
        col = pos - doc.rfind("\n", 0, pos)
        super().__init__(f"{msg}: line {line} column {col} (char {pos})")


def loads(data: str | bytes) -> Any:
    doc = data.decode("utf-8") if isinstance(data, bytes) else data
    n = len(doc)
    i = 0
    while i < n and doc[i] in _WS:
        i += 1
    try:
        value, end = _scan(doc, i)
    except StopIteration as exc:
        raise JSONDecodeError("expecting value", doc, exc.value) from exc
    except _NotJSON as exc:
        raise JSONDecodeError(str(exc), doc, None) from exc
    except RecursionError as exc:
        raise JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", doc, None) from exc
    except ValueError as exc:
        raise _decode_error(exc, doc, i) from exc
    except SystemError:
        # _json reports most syntax errors through json.decoder.JSONDecodeError, which it
        # only finds when json.decoder is already imported; otherwise it fails with
        # "returned NULL without setting an exception". On this error path, import it
        # and scan again for the precise message.
        import json.decoder  # noqa: F401

        try:
            value, end = _scan(doc, i)
        except StopIteration as exc:
            raise JSONDecodeError("expecting value", doc, exc.value) from exc
        except ValueError as exc:
            raise _decode_error(exc, doc, i) from exc
    while end < n and doc[end] in _WS:
        end += 1
    if end != n:
        raise JSONDecodeError("extra data", doc, end)
    # a document with fewer brackets than the limit cannot nest deeper than it
    if doc.count("[") + doc.count("{") > MAX_DEPTH and not _depth_within(value, MAX_DEPTH):
        raise JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", doc, None)
    return value


def _depth_within(value: Any, limit: int) -> bool:
    """True if no array or object in *value* lies more than *limit* levels deep."""
    stack = [(value, 1)]
    while stack:
        obj, depth = stack.pop()
        children = obj.values() if type(obj) is dict else obj
        for child in children:
            t = type(child)
            if t is dict or t is list:
                if depth >= limit:
                    return False
                stack.append((child, depth + 1))
    return True


def _decode_error(exc: ValueError, doc: str, pos: int) -> JSONDecodeError:
    msg = getattr(exc, "msg", None) or str(exc).split(":")[0][:200]
    return JSONDecodeError(msg[:1].lower() + msg[1:], doc, getattr(exc, "pos", pos))


def _float(o: float) -> str:
    if o != o or o in (_INF, -_INF):
        raise ValueError(f"out of range float value {o!r}")
    return float.__repr__(o)


def _default(o: object) -> Any:
    to_json = getattr(o, "to_json", None)
    if to_json is not None:
        return to_json()
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


_compact = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",",
                              False, False, False)
_spaced = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, False)


def dumps(obj: Any, indent: int | None = None, compact: bool = True) -> str:
    """Serialise *obj*; *indent* gives the layout ``json.dumps(indent=N)`` gives."""
    if indent is None:
        return "".join((_compact if compact else _spaced)(obj, 0))
    out: list[str] = []
    _pretty(obj, out, "\n", " " * indent)
    return "".join(out)


def _pretty(obj: Any, out: list[str], nl: str, step: str) -> None:
    if hasattr(obj, "to_json"):
        obj = obj.to_json()
    if isinstance(obj, dict) and obj:
        inner = nl + step
        out.append("{")
        first = True
        for k, v in obj.items():
            out.append(inner if first else "," + inner)
            first = False
            out.append(_json.encode_basestring_ascii(str(k)))
            out.append(": ")
            _pretty(v, out, inner, step)
        out.append(nl + "}")
    elif isinstance(obj, list | tuple) and obj:
        inner = nl + step
        out.append("[")
        for i, v in enumerate(obj):
            out.append(inner if i == 0 else "," + inner)
            _pretty(v, out, inner, step)
        out.append(nl + "]")
    elif isinstance(obj, float):
        out.append(_float(obj))
    else:
        out.extend(_compact(obj, 0))
