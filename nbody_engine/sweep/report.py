"""A sweep's progress from its folder alone (``nbody-runner sweep --status NAME``): the table
as text, a one-line progress count, and a PNG of a metric against a swept key, drawn headless."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config.errors import InputError
from .results import plot_metrics

HIDDEN_COLUMNS = ("run_dir", "exit_code")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict, bool)):
        return json.dumps(value)
    return str(value)


def progress_line(doc: Mapping) -> str:
    """``3/4 runs ended (2 ok, 1 failed), 1 running`` for a results document."""
    total = int(doc.get("runs_total", 0))
    ended = sum(int(doc.get(s, 0)) for s in ("ok", "failed", "cancelled"))
    parts = ", ".join(f"{doc.get(s, 0)} {s}" for s in ("ok", "failed", "cancelled") if doc.get(s, 0))
    waiting = ", ".join(f"{doc.get(s, 0)} {s}" for s in ("running", "pending") if doc.get(s, 0))
    stopped = f"; stopped: {doc['stopped']}" if doc.get("stopped") else ""
    return (f"sweep '{doc.get('sweep')}': {ended}/{total} runs ended" + (f" ({parts})" if parts else "")
            + (f", {waiting}" if waiting else "") + f"; updated {doc.get('updated', '?')}{stopped}")


def table_text(doc: Mapping, width: int = 40) -> str:
    """The results as an aligned text table (long cells cut to ``width`` characters)."""
    columns = [c for c in dict.fromkeys(doc.get("columns") or []) if c not in HIDDEN_COLUMNS]
    rows = [[_cell(row.get(c)) for c in columns] for row in doc.get("runs") or []]
    rows = [[c if len(c) <= width else c[:width - 3] + "..." for c in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [columns, *rows]]
    return "\n".join(lines)


def _points(doc: Mapping, metric: str, key: str) -> tuple[list, list, list[str]]:
    xs, ys = [], []
    for row in doc.get("runs") or []:
        y = row.get(metric)
        if row.get("status") == "ok" and isinstance(y, (int, float)) and math.isfinite(y):
            xs.append(row.get(key))
            ys.append(y)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    labels = [] if numeric else list(dict.fromkeys(_cell(x) for x in xs))
    if not numeric:
        xs = [labels.index(_cell(x)) for x in xs]
    return xs, ys, labels


def plot_metric(doc: Mapping, metric: str, key: str, path: str | Path) -> Path:
    """PNG of ``metric`` against the swept ``key`` over the ok runs (raises InputError)."""
    grid, metrics = list(doc.get("grid") or {}), plot_metrics(doc)
    if key not in grid:
        raise InputError(f"--against {key!r} is not a swept key of this sweep; it sweeps {', '.join(grid)}")
    if metric not in metrics:
        raise InputError(f"--plot {metric!r} is not a metric of this sweep; choose one of {', '.join(metrics)}")
    xs, ys, labels = _points(doc, metric, key)
    from ..reporting.plots import new_figure, save_figure  # matplotlib: only for a plot, not for every command line

    fig, ax = new_figure(1, (6.0, 4.0))
    ax.plot(xs, ys, "o")
    if labels:
        ax.set_xticks(range(len(labels)), labels)
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax.set_yscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"sweep '{doc.get('sweep')}': {len(ys)} ok run(s)")
    return save_figure(fig, Path(path))
