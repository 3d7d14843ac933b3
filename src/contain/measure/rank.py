"""The ordinal scale the survey asks for (8.1, 8.2): ranks per axis, then a weighted order.

Each axis is a measured number where lower is better:

- ``surface``      the attack surface score (:mod:`contain.measure.surface`)
- ``interference`` the well-behaved workload's mean slow-down beside the hogs, in %
- ``containment``  the memory a hog without a limit of its own took from the machine it
                   shares, relative to the limit (1.0: held at its limit)
- ``startup``      start-up time of /bin/true, ms
- ``overhead``     the well-behaved workload alone, relative to running it natively

``isolation`` in the weights stands for surface, interference and containment together.
Technologies are ranked per axis (1 = best; ties share a rank; a technology not
measured on an axis ranks last there), and ordered by the weighted mean of their ranks:
a multi-criteria decision with the user's weights, not a single truth.
"""

from __future__ import annotations

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AXES = ("surface", "interference", "containment", "startup", "overhead")
ALIASES = {"isolation": ("surface", "interference", "containment")}


def parse_weights(text: str) -> dict[str, float]:
    """'isolation=3,startup=1' -> per-axis weights (unnamed axes weigh 1)."""
    weights = dict.fromkeys(AXES, 1.0)
    if not text:
        return weights
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise ContainError(f"--weights: {part.strip()!r} is not NAME=NUMBER")
        try:
            w = float(value)
        except ValueError as exc:
            raise ContainError(f"--weights: {name}={value!r}: not a number") from exc
        if not 0 <= w <= 1000 or w != w:
            raise ContainError(f"--weights: {name}={value}: must be between 0 and 1000")
        names = ALIASES.get(name, (name,))
        for n in names:
            if n not in AXES:
                raise ContainError(f"--weights: unknown axis {name!r} (choose from "
                                   f"{', '.join((*AXES, *ALIASES))})")
            weights[n] = w
    if not any(weights.values()):
        raise ContainError("--weights: every weight is 0")
    return weights


def ranks(values: dict[str, float | None]) -> dict[str, int]:
    """Competition ranks, lower value first; missing values share the last rank."""
    known: list[tuple[float, str]] = sorted((v, k) for k, v in values.items() if v is not None)
    out: dict[str, int] = {}
    prev: float | None = None
    rank = 0
    for i, (v, k) in enumerate(known, start=1):
        if prev is None or v != prev:
            rank = i
        out[k] = rank
        prev = v
    last = len(known) + 1
    for k, val in values.items():
        if val is None:
            out[k] = last
    return out


def order(axes: dict[str, dict[str, float | None]], weights: dict[str, float]
          ) -> list[dict[str, Any]]:
    """*axes*: axis -> technology -> value. The technologies in weighted-rank order,
    each with its per-axis ranks and values."""
    techs = sorted({t for per in axes.values() for t in per})
    per_axis = {a: ranks({t: axes.get(a, {}).get(t) for t in techs}) for a in AXES}
    total_w = sum(weights[a] for a in AXES)
    rows = []
    for t in techs:
        score = sum(weights[a] * per_axis[a][t] for a in AXES) / total_w
        rows.append({"key": t, "score": round(score, 3),
                     "ranks": {a: per_axis[a][t] for a in AXES},
                     "values": {a: axes.get(a, {}).get(t) for a in AXES}})
    rows.sort(key=lambda r: (r["score"], r["key"]))
    for i, r in enumerate(rows, start=1):
        r["place"] = i
    return rows
