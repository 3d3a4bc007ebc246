"""Finished runs drawn with HoloViews: a job's simulation against the analytic policy's run on the
same initial conditions (:func:`comparison_view`), and several run directories overlaid
(:func:`runs_overlay`). Errors are drawn on log axes without floors, for every system of a batch."""

from __future__ import annotations

import itertools
from pathlib import Path

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401 (registers HoloViews' Bokeh backend)
import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ScientificFormatter
from bokeh.palettes import Category10_10

from nbody_engine.runs.reader import read_metrics, sim_series, summary_value

from .plot_style import hv_clean_log_ticks

hv.Store.set_current_backend("bokeh")  # what hv.extension("bokeh") sets, without the CDN script it puts in a notebook

ORBIT_FRAME = 340  # px, the orbit plot's square frame
POLICY_COLORS = {"simulate": "#1f77b4", "baseline": "#ff7f0e"}
BASELINE_NAMES = {"analytic": "analytic", "ttl": "log-H (ttl)"}  # nbody_engine.jobs.simulate.baseline_mode's
SUMMARY_ROWS = ("steps", "steps_per_period", "max_rel_energy_error", "rel_energy_error_final",
                "max_rel_angular_momentum_error", "dt_min", "dt_max", "wall_time_s")


# compact table rows (the Bootstrap template's Tabulator theme makes a row at least 40 px high,
# in a large font: the Runs tab showed 4 rows)
COMPACT_TABLE = """
:host .tabulator { font-size: 13px; }
:host .tabulator .tabulator-row { min-height: 24px; }
:host .tabulator-row .tabulator-cell { padding: 3px 6px; }
:host .tabulator-col .tabulator-col-content { padding: 3px 6px; }
"""


def scientific_formatters(columns) -> dict[str, ScientificFormatter]:
    """Tabulator formatters for ``columns``' numbers: four significant digits, in scientific
    notation below 0.1 (an energy error of 3e-9 reads as such, not as Tabulator's default
    0.000000, and 2.4e-3 not as 0.002); a cell with none is empty."""
    return {c: ScientificFormatter(precision=3, power_limit_low=-1, nan_format="", null_format="") for c in columns}


TIME_DIM = hv.Dimension("time", label="time (code units, G = 1)")
AXIS_LABELS = {"rel_dE": "|dE/E| (relative energy error)", "rel_dL": "|dL/L| (relative angular-momentum error)",
               "dt": "dt (code units)"}
MAX_SYSTEMS = 10  # systems drawn per run; titles say when there are more
MAX_POINTS = 2_000  # rows drawn per system (evenly spaced, the last one kept)
# the wheel scrolls the page (the toolbar turns wheel zoom on); legends can be clicked to mute a curve
PLOT_OPTS = dict(logy=True, responsive=True, min_height=240, show_grid=True, legend_position="right",
                 active_tools=["pan"], legend_opts={"click_policy": "mute"}, hooks=[hv_clean_log_ticks])


def loggable(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points a log axis can show: positive, finite y (the first row's error is exactly 0,
    a run's last dt may be 0); nothing is moved to a floor."""
    keep = np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def systems_note(systems: int) -> str:
    if systems == 1:
        return "one system"
    return f"all {systems} systems" if systems <= MAX_SYSTEMS else f"systems 0-{MAX_SYSTEMS - 1} of {systems}"


def error_path(series: dict, y: str, label: str, color: str) -> hv.Path:
    """``y`` against time for every drawn system of ``series``: one legend entry, one colour."""
    systems = range(min(series["time"].shape[1], MAX_SYSTEMS))
    rows = np.unique(np.r_[np.arange(0, len(series["time"]), max(1, len(series["time"]) // MAX_POINTS)),
                           len(series["time"]) - 1])
    return hv.Path([loggable(series["time"][rows, k], series[y][rows, k]) for k in systems], [TIME_DIM, "value"],
                   label=label).opts(color=color, ylabel=AXIS_LABELS[y], show_legend=True)


def orbit_overlay(position: np.ndarray, title: str) -> hv.Overlay:
    """x-y paths of every drawn system, one colour per system (per body when there is one)."""
    systems, bodies = position.shape[1], position.shape[2]
    paths = [hv.Path([position[:, k, b, :2] for b in range(bodies)], ["x", "y"], label=f"system {k}")
             for k in range(min(systems, MAX_SYSTEMS))] if systems > 1 else \
        [hv.Path(position[:, 0, b, :2], ["x", "y"], label=f"body {b}") for b in range(bodies)]
    paths = [path.opts(show_legend=True) for path in paths]
    # A fixed square frame keeps data_aspect=1 honest (a responsive one stretches without bound).
    return hv.Overlay(paths).opts(data_aspect=1, frame_width=ORBIT_FRAME, frame_height=ORBIT_FRAME,
                                  xlabel="x (code units)", ylabel="y (code units)",
                                  title=f"{title}: {systems_note(systems)} (x-y)", legend_position="right",
                                  active_tools=["pan"])


def summary_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Rows SUMMARY_ROWS, one column per named summary; batches reduced by
    :func:`~nbody_engine.runs.reader.summary_value`."""
    return pd.DataFrame({name: [summary_value(s, k) for k in SUMMARY_ROWS] for name, s in summaries.items()},
                        index=list(SUMMARY_ROWS))


def _nothing_to_draw(series: dict, y: str) -> str:
    """A title's note when no run has a point a log axis can show (an error exactly 0 throughout,
    as |dL/L| of a leapfrog on Kepler orbits to round-off)."""
    drawable = any(np.any(np.isfinite(s[y][1:]) & (s[y][1:] > 0)) for s in series.values())
    return "" if drawable else ": exactly 0 throughout, nothing to draw on a log axis"


TABLE_NOTE = ("Batches of systems: the largest value over the systems (the smallest for `dt_min`, the mean for "
              "`steps_per_period`).")


def _scheme(run: dict) -> str:
    """A simulation's folder under sim/: its integrator mode (``_multi`` for Kepler orbits)."""
    return Path(run["outputs"]["trajectory"]).parent.name  # sim/<mode>/trajectory.npz


def comparison_view(results: dict) -> pn.Column:
    """Plots and a summary table for ``results`` of a job: 'simulate', and 'baseline' where the
    same systems were simulated with its classical baseline (log-H for a learned time
    transformation, the analytic step for the others)."""
    runs = {name: results[name] for name in ("simulate", "baseline") if name in results}
    mode = _scheme(runs["simulate"])
    labels = {"simulate": mode}
    heading = f"### The simulation ({mode}; other schemes are compared with their classical baseline here)"
    if "baseline" in runs:
        base = _scheme(runs["baseline"])
        learned = mode.startswith("ml")
        labels = {"simulate": f"learned ({mode})" if learned else mode,
                  "baseline": BASELINE_NAMES.get(base.removesuffix("_multi"), base)}
        heading = f"### {'Learned' if learned else mode} against {labels['baseline']} on the same initial conditions"
    series = {name: sim_series(r["outputs"]["trajectory"]) for name, r in runs.items()}
    note = systems_note(series["simulate"]["time"].shape[1])
    # One pane per plot: responsive plots inside one hv.Layout collapse to zero height in Panel.
    plots = [hv.Overlay([error_path(s, y, labels[name], POLICY_COLORS[name]) for name, s in series.items()]).opts(
        title=f"{title} ({note}){_nothing_to_draw(series, y)}", **PLOT_OPTS)
        for y, title in (("rel_dE", "|dE/E| against time"), ("rel_dL", "|dL/L| against time"),
                         ("dt", "dt against time"))]
    orbit = orbit_overlay(series["simulate"]["position"], "orbits")
    table = summary_table({labels[n]: r for n, r in runs.items()})
    return pn.Column(pn.pane.Markdown(heading, sizing_mode="stretch_width"),
                     pn.Row(*(pn.pane.HoloViews(p, sizing_mode="stretch_width", height=280) for p in plots),
                            sizing_mode="stretch_width"),
                     pn.Row(pn.pane.HoloViews(orbit),
                            pn.Column(pn.pane.DataFrame(table, float_format="{:.4g}".format),
                                      pn.pane.Markdown(TABLE_NOTE), sizing_mode="stretch_width")),
                     sizing_mode="stretch_width")


EPOCH_PLOTS = (("loss", "loss (band distance², log space)", True), ("rel_dE_max", "max |dE/E| of accepted steps", True),
               ("dt_mean", "mean dt (code units)", True), ("acceptance_rate", "accepted / attempted", False))


def runs_overlay(runs: dict[str, Path]) -> pn.Column:
    """Several run directories overlaid: their per-epoch curves and their simulations' errors
    against time (every drawn system), one colour per run, a legend naming each; runs without
    training epochs or without a simulation are named, not drawn."""
    colors = dict(zip(runs, itertools.cycle(Category10_10)))
    metrics = {name: _epoch_frame(root) for name, root in runs.items()}
    trained = {name: m for name, m in metrics.items() if m is not None}
    sims = {(name, p.parent.name): p for name, root in runs.items() for p in sorted(root.glob("sim/*/trajectory.npz"))}
    notes = [f"**{', '.join(sorted(set(runs) - set(trained)))}**: no training epochs."] if len(trained) < len(runs) \
        else []
    untouched = sorted(set(runs) - {name for name, _ in sims})
    if untouched:
        notes.append(f"**{', '.join(untouched)}**: no simulation yet (simulate with `nbody-runner simulate --config "
                     f"data/<run>/config.toml`, or from the Simulate tab).")
    panes = [pn.pane.Markdown("\n\n".join(notes), sizing_mode="stretch_width")] if notes else []
    if trained:
        panes.append(pn.GridBox(*(pn.pane.HoloViews(_epoch_overlay(trained, colors, *plot), height=260,
                                                    sizing_mode="stretch_width") for plot in EPOCH_PLOTS),
                                ncols=2, sizing_mode="stretch_width"))
    if sims:
        series = {key: sim_series(path) for key, path in sims.items()}
        for y, title in (("rel_dE", "simulation |dE/E| against time"), ("rel_dL", "simulation |dL/L| against time")):
            overlay = hv.Overlay([error_path(s, y, f"{name} / {label}", colors[name])
                                  for (name, label), s in series.items()]).opts(title=f"{title} (every system drawn)",
                                                                                **PLOT_OPTS)
            panes.append(pn.pane.HoloViews(overlay, height=300, sizing_mode="stretch_width"))
    return pn.Column(*panes, sizing_mode="stretch_width")


def _epoch_frame(root: Path) -> pd.DataFrame | None:
    """A run folder's epochs as a table, None before its first."""
    metrics, _ = read_metrics(root)
    return pd.DataFrame(metrics) if metrics else None


def _epoch_overlay(frames: dict[str, pd.DataFrame], colors: dict, y: str, label: str, log_y: bool) -> hv.Overlay:
    curves = []
    for name, frame in frames.items():
        epochs, values = frame["epoch"].to_numpy(), frame[y].to_numpy(dtype=float)
        if log_y:
            epochs, values = loggable(epochs, values)
        curves.append(hv.Curve((epochs, values), "epoch", hv.Dimension(y, label=label), label=name)
                      .opts(color=colors[name]))
    return hv.Overlay(curves).opts(title=f"{label} per epoch", show_grid=True, responsive=True, logy=log_y,
                                   legend_position="right", active_tools=["pan"], hooks=[hv_clean_log_ticks])

