"""The figures of ``nbody-runner sweep --status NAME --plot METRIC``, drawn headless from the
results document: METRIC against each swept key (one panel per key, the points coloured by
the values of the other swept keys, log axes where a key's values are log-spaced or the metric
spans decades, equal points spread sideways so none hides another), and a parallel-coordinates
figure (one line per ok run through every swept key and the metric, coloured by the metric)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

JITTER = 0.06  # how far equal points are spread, as a fraction of the gap between neighbouring values


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, bool, str)) or value is None else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log_spaced(values: Sequence, declared: Any = None) -> bool:
    """Whether a key's values belong on a log axis: declared so (a search's ``log = true``
    range), or positive numbers spanning at least two decades, or three or more in a geometric
    progression (1e-4, 1e-3, 1e-2)."""
    if isinstance(declared, Mapping) and "log" in declared:
        return bool(declared["log"])
    numbers = sorted({v for v in values if _is_number(v)})
    if len(numbers) < 2 or len(numbers) != len({_label(v) for v in values}) or numbers[0] <= 0:
        return False
    if numbers[-1] / numbers[0] >= 100:
        return True
    ratios = np.diff(np.log(numbers))
    return len(numbers) >= 3 and ratios.min() > math.log(1.5) and ratios.std() < 0.1 * ratios.mean()


def ok_rows(doc: Mapping, metric: str) -> list[dict]:
    """The ok runs with a finite value of ``metric``."""
    return [r for r in doc.get("runs") or [] if r.get("status") == "ok" and _is_number(r.get(metric))]


def _positions(values: list, log: bool) -> tuple[np.ndarray, list[str] | None]:
    """x positions of a key's values: the numbers themselves (their logs on a log axis), or
    for text, lists and booleans their order of appearance, with the labels."""
    if all(_is_number(v) for v in values):
        return np.asarray(values, dtype=float), None
    labels = list(dict.fromkeys(_label(v) for v in values))
    return np.asarray([labels.index(_label(v)) for v in values], dtype=float), labels


def _spread(x: np.ndarray, y: np.ndarray, log: bool) -> np.ndarray:
    """x with points of equal (x, y) moved apart sideways, in the axis' own scale."""
    scaled = np.log10(x) if log else x.copy()
    distinct = np.unique(scaled)
    gap = np.diff(distinct).min() if len(distinct) > 1 else 1.0
    out = scaled.copy()
    for key in {(a, b) for a, b in zip(scaled, y)}:
        same = np.flatnonzero((scaled == key[0]) & (y == key[1]))
        if len(same) > 1:
            out[same] += JITTER * gap * (np.arange(len(same)) - (len(same) - 1) / 2) / max(1, len(same) - 1) * 2
    return 10 ** out if log else out


def _groups(rows: list[dict], others: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Each row's combination of the other keys' values, and a colour per combination."""
    from matplotlib import colormaps

    names = [", ".join(f"{k}={_label(r.get(k))}" for k in others) for r in rows]
    distinct = list(dict.fromkeys(names))
    palette = colormaps["tab10" if len(distinct) <= 10 else "viridis"]
    colors = {g: palette(i if len(distinct) <= 10 else i / max(1, len(distinct) - 1)) for i, g in enumerate(distinct)}
    return names, colors


def metric_by_key(doc: Mapping, metric: str, keys: list[str], path: Path) -> Path:
    """One panel per swept key: ``metric`` of the ok runs against it, coloured by the others."""
    from ..reporting.plots import log_y, new_figure, save_figure

    rows, grid = ok_rows(doc, metric), dict(doc.get("grid") or {})
    fig, axes = new_figure(len(keys), (4.2 * len(keys) + 1.0, 4.0))
    axes = np.atleast_1d(axes)
    ys = np.asarray([r[metric] for r in rows], dtype=float)
    for ax, key in zip(axes, keys):
        others = [k for k in grid if k != key]
        xs_raw = [r.get(key) for r in rows]
        log = log_spaced(xs_raw, grid.get(key))
        xs, labels = _positions(xs_raw, log)
        names, colors = _groups(rows, others)
        xs = _spread(xs, ys, log and labels is None) if len(xs) else xs
        for name, color in colors.items():
            picked = [i for i, n in enumerate(names) if n == name]
            ax.scatter(xs[picked], ys[picked], color=color, s=28, alpha=0.8, label=name or None,
                       edgecolors="black", linewidths=0.4)
        if log and labels is None:
            ax.set_xscale("log")
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0)
        if len(ys) and ys.min() > 0 and ys.max() / ys.min() > 100:
            log_y(ax)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if others and 0 < len(colors) <= 12:
            ax.legend(fontsize=7, title=", ".join(others), title_fontsize=7)
    fig.suptitle(f"sweep '{doc.get('sweep')}': {metric} of {len(rows)} ok run(s)")
    fig.tight_layout()
    return save_figure(fig, path)


def _normalised(values: list, log: bool) -> tuple[np.ndarray, list[str]]:
    """Values mapped onto [0, 1] (logs on a log axis; text in order of appearance), and the
    labels of the axis' bottom and top."""
    positions, labels = _positions(values, log)
    if labels is None and log:
        positions = np.log10(positions)
    low, high = positions.min(), positions.max()
    scaled = (positions - low) / (high - low) if high > low else np.full_like(positions, 0.5)
    if labels is not None:
        return scaled, [labels[0], labels[-1]] if len(labels) > 1 else [labels[0]] * 2
    shown = [10 ** low, 10 ** high] if log else [low, high]
    return scaled, [f"{v:.3g}" for v in shown]


def spans_decades(values: Sequence[float]) -> bool:
    """Whether a metric belongs on a log axis (or colour scale): positive, over more than two decades."""
    ys = np.asarray(values, dtype=float)
    return bool(len(ys)) and ys.min() > 0 and ys.max() / ys.min() > 100


def parallel_lines(rows: list[dict], keys: Sequence[str], metrics: Sequence[str],
                   grid: Mapping | None = None) -> tuple[np.ndarray, list[list[str]]]:
    """The polylines of a parallel-coordinates figure: ``rows`` (each with a value of every
    column) through the axes ``keys`` (swept keys, log where :func:`log_spaced`) then ``metrics``
    (log where they span decades), as an array (runs, axes) in [0, 1], and each axis' bottom and
    top labels."""
    grid = grid or {}
    axes = [(c, log_spaced([r.get(c) for r in rows], grid.get(c))) for c in keys]
    axes += [(c, spans_decades([r[c] for r in rows])) for c in metrics]
    scaled, ends = zip(*(_normalised([r.get(c) for r in rows], log) for c, log in axes))
    return np.stack(scaled, axis=1), [list(e) for e in ends]


def parallel_coordinates(doc: Mapping, metric: str, path: Path) -> Path:
    """One polyline per ok run through every swept key and ``metric``, coloured by the metric."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    from ..reporting.plots import new_figure, save_figure

    rows, grid = ok_rows(doc, metric), dict(doc.get("grid") or {})
    columns = [*grid, metric]
    ys = np.asarray([r[metric] for r in rows], dtype=float)
    metric_log = spans_decades(ys)
    fig, ax = new_figure(1, (1.8 * len(columns) + 2.0, 4.5))
    if rows:
        lines, ends = parallel_lines(rows, list(grid), [metric], grid)  # (runs, columns) in [0, 1]
        norm = LogNorm(ys.min(), ys.max()) if metric_log else Normalize(ys.min(), ys.max())
        cmap = colormaps["viridis"]
        for line, y in sorted(zip(lines, ys), key=lambda pair: -pair[1]):  # the best drawn last, on top
            ax.plot(range(len(columns)), line, color=cmap(norm(y)), alpha=0.8, lw=1.2)
        for i, (low, high) in enumerate(ends):
            ax.annotate(low, (i, 0), xytext=(0, -12), textcoords="offset points", ha="center", fontsize=7)
            ax.annotate(high, (i, 1), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7)
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    for i in range(len(columns)):
        ax.axvline(i, color="0.5", lw=0.8)
    ax.set_xticks(range(len(columns)), columns, rotation=20)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_title(f"sweep '{doc.get('sweep')}': {len(rows)} ok run(s), one line each")
    fig.tight_layout()
    return save_figure(fig, path)
