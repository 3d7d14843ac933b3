"""PNG plots with matplotlib, an optional extra (``pip install contain[bench]``).

matplotlib is imported inside these functions only; ``available()`` says whether it can
be, and the driver skips every plot (and says so) when it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_ERROR: str | None = None
_CHECKED = False


def available() -> str | None:
    """None when matplotlib can be used, else why not."""
    global _ERROR, _CHECKED
    if not _CHECKED:
        _CHECKED = True
        try:
            import matplotlib

            matplotlib.use("Agg")
        except Exception as exc:  # ImportError, or a broken install
            _ERROR = f"matplotlib unavailable ({type(exc).__name__}: {exc}); " \
                     "install it with `pip install contain[bench]`"
    return _ERROR


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def latency_boxplots(path: Path, title: str,
                     groups: Mapping[str, Mapping[str, Sequence[float]]],
                     unit: str = "ms", scale: float = 1000.0, log: bool = True) -> Path:
    """One panel per group (a phase), one box per runtime, all samples drawn as dots."""
    plt = _pyplot()
    names = [g for g in groups if any(_finite(v) for v in groups[g].values())]
    if not names:
        names = list(groups)[:1]
    fig, axes = plt.subplots(1, len(names), figsize=(max(4.5, 3.6 * len(names)), 4.2),
                             squeeze=False)
    for ax, group in zip(axes[0], names, strict=False):
        series = {rt: [v * scale for v in _finite(vals)] for rt, vals in groups[group].items()}
        series = {rt: vals for rt, vals in series.items() if vals}
        labels = list(series)
        if labels:
            ax.boxplot([series[rt] for rt in labels], showfliers=False, whis=(10, 90))
            for i, rt in enumerate(labels, start=1):
                vals = series[rt]
                xs = [i + (((j * 7919) % 100) / 100 - 0.5) * 0.3 for j in range(len(vals))]
                ax.scatter(xs, vals, s=6, alpha=0.45)
            ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
        if log:
            ax.set_yscale("log")
        ax.set_title(group)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3, which="both")
    fig.suptitle(title + " (box: quartiles, whiskers: p10-p90)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(path: Path, title: str, groups: Mapping[str, Mapping[str, float]], ylabel: str,
         log: bool = False, reference: float | None = None) -> Path:
    """Grouped bars: one group per key of *groups* (a workload, a mode), one bar per runtime."""
    plt = _pyplot()
    group_names = list(groups)
    runtimes: list[str] = []
    for g in group_names:
        for rt in groups[g]:
            if rt not in runtimes:
                runtimes.append(rt)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(group_names) * max(1, len(runtimes)) / 2),
                                    4.2))
    width = 0.8 / max(1, len(runtimes))
    for i, rt in enumerate(runtimes):
        xs = [gi + (i - (len(runtimes) - 1) / 2) * width for gi in range(len(group_names))]
        ys = [groups[g].get(rt, math.nan) for g in group_names]
        ax.bar(xs, [y if math.isfinite(y) else 0 for y in ys], width, label=rt)
    if reference is not None:
        ax.axhline(reference, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(group_names)), group_names)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(path: Path, title: str, series: Mapping[str, Sequence[tuple[float, float]]],
           xlabel: str, ylabel: str) -> Path:
    """One line per runtime through (x, y) points (the density curve)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rt, points in series.items():
        pts = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=rt)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
