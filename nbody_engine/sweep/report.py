"""A sweep's progress from its folder alone (``nbody-runner sweep --status NAME``): the table
as text, a one-line progress count, and PNGs of a metric against the swept keys and in
parallel coordinates (:mod:`.figures`), drawn headless."""

from __future__ import annotations

import json
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
    ended_states = ("ok", "failed", "cancelled", "pruned")
    ended = sum(int(doc.get(s, 0)) for s in ended_states)
    parts = ", ".join(f"{doc.get(s, 0)} {s}" for s in ended_states if doc.get(s, 0))
    waiting = ", ".join(f"{doc.get(s, 0)} {s}" for s in ("running", "pending") if doc.get(s, 0))
    if doc.get("waiting") and doc.get("pending"):  # where the pending runs wait, as the sweep last saw it
        waiting += f" (waiting for a worker: {doc['waiting']})"
    search = doc.get("search")
    size = f" of a search of {search['trials']} trial(s)" if search else ""
    stopped = f"; stopped: {doc['stopped']}" if doc.get("stopped") else ""
    return (f"sweep '{doc.get('sweep')}': {ended}/{total} runs ended{size}" + (f" ({parts})" if parts else "")
            + (f", {waiting}" if waiting else "") + f"; updated {doc.get('updated', '?')}{stopped}")


def table_text(doc: Mapping, width: int = 40) -> str:
    """The results as an aligned text table (long cells cut to ``width`` characters)."""
    columns = [c for c in dict.fromkeys(doc.get("columns") or []) if c not in HIDDEN_COLUMNS]
    rows = [[_cell(row.get(c)) for c in columns] for row in doc.get("runs") or []]
    rows = [[c if len(c) <= width else c[:width - 3] + "..." for c in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [columns, *rows]]
    return "\n".join(lines)


def plot_metric(doc: Mapping, metric: str, keys: list[str] | None, path: str | Path) -> list[Path]:
    """PNGs of ``metric`` over the ok runs: against each of ``keys`` (default: every swept key)
    at ``path``, and in parallel coordinates beside it (``*_parallel.png``); raises InputError."""
    grid, metrics = list(doc.get("grid") or {}), plot_metrics(doc)
    keys = keys or grid
    for key in keys:
        if key not in grid:
            raise InputError(f"--against {key!r} is not a swept key of this sweep; it sweeps {', '.join(grid)}")
    if metric not in metrics:
        raise InputError(f"--plot {metric!r} is not a metric of this sweep; choose one of {', '.join(metrics)}")
    from .figures import metric_by_key, parallel_coordinates  # matplotlib: only for a plot

    path = Path(path)
    return [metric_by_key(doc, metric, keys, path),
            parallel_coordinates(doc, metric, path.with_name(f"{path.stem}_parallel{path.suffix or '.png'}"))]
