"""Report plots (PNG, matplotlib) for headless runs, and the panels movies are made of.

The same panel functions draw a simulation's report, a training run's report and every movie
frame, so a researcher on a cluster can look at a run by opening one folder.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from ..runs.directory import atomic_path
from .curves import positive

PROJECTION = (0, 1)  # 3D runs are drawn in the x-y plane


def new_figure(ncols: int, figsize: tuple[float, float], dpi: float | None = None, nrows: int = 1):
    """A figure with ``ncols`` axes in a row (``nrows`` such rows), drawn by the Agg canvas and unknown to pyplot.

    Reports and movie frames never go through pyplot: they neither switch the backend of the
    process that imports the engine (a notebook keeps its inline plots) nor touch pyplot's
    global figure list, which is not thread-safe (the explorer runs jobs in a thread)."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols)


def log_y(ax) -> None:
    """A log y axis labelled 1e-05, not with mathtext, whose parsing is most of a report's time."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def errors_panel(ax, time: np.ndarray, rel_dE: np.ndarray, rel_dL: np.ndarray, upto: int | None = None) -> None:
    """|dE/E| and |dL/L| of the first system against time, log y."""
    s = slice(1, upto)
    log_y(ax)
    ax.plot(time[s], positive(rel_dE[s]), label="|dE/E|", color="#1f77b4", lw=1)
    if np.isfinite(rel_dL[s]).any():
        ax.plot(time[s], positive(rel_dL[s]), label="|dL/L|", color="#2ca02c", lw=1)
    ax.set_xlabel("time (code units, G = 1)")
    ax.set_ylabel("relative error")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def dt_panel(ax, time: np.ndarray, dt: np.ndarray, upto: int | None = None) -> None:
    s = slice(1, upto)
    log_y(ax)
    ax.plot(time[s], positive(dt[s]), color="#444", lw=1)
    ax.set_xlabel("time (code units, G = 1)")
    ax.set_ylabel("dt")
    ax.grid(alpha=0.3)


def orbit_panel(ax, position: np.ndarray, upto: int | None = None, trail: int | None = None,
                limits=None) -> None:
    """Paths of every body of one system, position (S, N, D), up to row ``upto`` with an
    optional trail length; a dot marks each body's latest position. ``limits`` ((x0, x1),
    (y0, y1)) fixes the view (movies), else it fits the data."""
    i, j = PROJECTION
    end = len(position) if upto is None else upto
    start = 0 if trail is None else max(0, end - trail)
    colors = matplotlib.colormaps["tab10"]
    for b in range(position.shape[1]):
        path = position[start:end, b]
        ax.plot(path[:, i], path[:, j], lw=0.8, color=colors(b % 10))
        ax.plot(path[-1:, i], path[-1:, j], "o", ms=4, color=colors(b % 10))
    labels = "xyz"
    ax.set_xlabel(labels[i] + (" (projection)" if position.shape[-1] == 3 else ""))
    ax.set_ylabel(labels[j])
    if limits is None:
        ax.set_aspect("equal", adjustable="datalim")
    else:
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    ax.grid(alpha=0.3)


def epoch_panel(ax, epochs: np.ndarray, values: np.ndarray, label: str, logy: bool = False) -> None:
    if logy:
        log_y(ax)
        values = positive(values)
    ax.plot(epochs, values, lw=1, marker=".", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def simulation_report(curves: dict, path: Path, title: str) -> Path:
    """Errors, dt and orbit of a simulation's first system, from its
    :func:`~nbody_engine.reporting.curves.simulation_curves`."""
    fig, axes = new_figure(3, (15, 4.2))
    errors_panel(axes[0], curves["time"], curves["rel_dE"], curves["rel_dL"])
    dt_panel(axes[1], curves["time"], curves["dt"])
    orbit_panel(axes[2], curves["position"])
    batch = curves["systems"]
    fig.suptitle(title + (f" (first of {batch} systems)" if batch > 1 else ""))
    return save_figure(fig, path)


def training_report(metrics: list[dict], train_position: np.ndarray | None, path: Path, title: str) -> Path:
    """Loss, acceptance rate, retrain iterations and |dE/E| per epoch, and the training orbit."""
    epochs = np.arange(len(metrics))
    get = lambda key: np.array([m.get(key) if m.get(key) is not None else np.nan for m in metrics], float)  # noqa: E731
    fig, axes = new_figure(5, (22, 4.2))
    epoch_panel(axes[0], epochs, get("loss"), "loss", logy=True)
    epoch_panel(axes[1], epochs, get("acceptance_rate"), "acceptance rate")
    epoch_panel(axes[2], epochs, get("retrain_iterations"), "retrain iterations")
    epoch_panel(axes[3], epochs, get("rel_dE_max"), "max |dE/E| of accepted steps", logy=True)
    if train_position is not None and len(train_position):
        orbit_panel(axes[4], train_position[:, 0])
        axes[4].set_title("training trajectory (first system)", fontsize=9)
    fig.suptitle(title)
    return save_figure(fig, path)
