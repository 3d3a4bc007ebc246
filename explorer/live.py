"""Live plots: Bokeh figures over bounded, named ``ColumnDataSource``s.

The session's drain callback turns queued engine events into one batch of columns per source
and streams it with ``source.stream(batch, rollover=K)``: the browser receives only the new
rows, nothing is re-rendered on the server, and every source keeps at most K rows, so memory
and update cost stay bounded however long a run is. (An earlier HoloViews DynamicMap version
re-rendered each plot on every update, about 0.1 s per plot on this class of machine, which
delayed the page by seconds and halved training throughput.)

The sources have names for automated checks: ``energy_error``, ``angular_momentum_error``,
``epoch_metrics``, ``orbit``, ``simulation`` and ``sim_orbit``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from bokeh.models import BoxAnnotation, ColumnDataSource, HoverTool, Span
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from nbody_engine.events import EpochFinished, StepAccepted, TrajectoryChunk

TINY = 1e-18  # log axes cannot show 0
LOSS_FLOOR = 1e-10  # a loss of exactly 0 (every state in band) shows at the floor of the log axis
PROJECTIONS = {"x-y": (0, 1), "x-z": (0, 2), "y-z": (1, 2)}
COLUMNS = {
    "energy_error": ("step", "rel_dE"),
    "angular_momentum_error": ("step", "rel_dL"),
    "epoch_metrics": ("epoch", "loss", "acceptance_rate", "retrain_iterations", "dt_mean"),
    "orbit": ("x", "y", "body", "color"),
    "simulation": ("time", "rel_dE", "rel_dL", "dt"),
    "sim_orbit": ("x", "y", "body", "color"),
}
ROLLOVER = {"energy_error": 5_000, "angular_momentum_error": 5_000, "epoch_metrics": 5_000, "orbit": 6_000,
            "simulation": 20_000, "sim_orbit": 6_000}


def _figure(title: str, x: str, y: str, log_y: bool = True, height: int = 250, **kwargs):
    fig = figure(title=title, x_axis_label=x, y_axis_label=y, y_axis_type="log" if log_y else "linear",
                 height=height, sizing_mode="stretch_width", tools="pan,box_zoom,wheel_zoom,reset,save", **kwargs)
    fig.add_tools(HoverTool(tooltips=[(x, "$x"), (y, "$y")]))
    fig.toolbar.logo = None
    return fig


class LivePlots:
    """The sources of one session and the figures drawn from them."""

    def __init__(self) -> None:
        self.sources = {name: ColumnDataSource({c: [] for c in cols}, name=name) for name, cols in COLUMNS.items()}
        self.bands = {"E": BoxAnnotation(bottom=1e-6, top=1e-4, fill_color="orange", fill_alpha=0.15),
                      "L": BoxAnnotation(bottom=1e-4, top=1e-2, fill_color="orange", fill_alpha=0.15)}
        self.threshold = Span(location=2e-4, dimension="width", line_color="red", line_dash="dashed", line_width=1)
        self.projection = "x-y"
        self._step_count = 0

    def frame(self, name: str) -> pd.DataFrame:
        """What a source holds, as a DataFrame (for tests and notebooks)."""
        return pd.DataFrame(self.sources[name].data)

    # figures -------------------------------------------------------------------------------
    def energy_error(self):
        fig = _figure("|dE/E| per accepted step (band and threshold)", "step", "|dE/E|")
        fig.line("step", "rel_dE", source=self.sources["energy_error"], color="#1f77b4")
        fig.add_layout(self.bands["E"])
        fig.add_layout(self.threshold)
        return fig

    def angular_momentum_error(self):
        fig = _figure("|dL/L| per accepted step (band)", "step", "|dL/L|")
        fig.line("step", "rel_dL", source=self.sources["angular_momentum_error"], color="#2ca02c")
        fig.add_layout(self.bands["L"])
        return fig

    def per_epoch(self) -> list:
        source = self.sources["epoch_metrics"]
        figs = []
        for y, title, log_y, color in (("loss", "loss per epoch", True, "#444"),
                                       ("dt_mean", "mean dt per epoch", True, "#444"),
                                       ("acceptance_rate", "acceptance rate per epoch", False, "#9467bd"),
                                       ("retrain_iterations", "retrain iterations per epoch", False, "#d62728")):
            fig = _figure(title, "epoch", y, log_y=log_y, height=230)
            fig.line("epoch", y, source=source, color=color)
            fig.scatter("epoch", y, source=source, color=color, size=3)
            figs.append(fig)
        return figs

    def orbit_plot(self, name: str = "orbit"):
        fig = _figure("orbits (trail)", "x", "y", log_y=False, height=420, match_aspect=True)
        fig.scatter("x", "y", source=self.sources[name], color="color", size=3)
        return fig

    def simulation_plots(self) -> list:
        source = self.sources["simulation"]
        figs = []
        for y, title in (("rel_dE", "simulation |dE/E| (first system)"), ("rel_dL", "simulation |dL/L|"),
                         ("dt", "simulation dt")):
            fig = _figure(title, "time", y)
            fig.line("time", y, source=source)
            figs.append(fig)
        return figs

    # feeding -------------------------------------------------------------------------------
    def reset(self, bands: dict) -> None:
        self._step_count = 0
        for source in self.sources.values():
            source.data = {c: [] for c in source.data}
        for which in ("E", "L"):
            self.bands[which].bottom, self.bands[which].top = bands[which]
        self.threshold.location = bands["threshold"]

    def reset_epochs(self) -> None:
        source = self.sources["epoch_metrics"]
        source.data = {c: [] for c in source.data}

    def ingest(self, events: list) -> dict[str, int]:
        """Stream what ``events`` hold into the sources, one batch per source; returns counts."""
        rows: dict[str, list[tuple]] = {name: [] for name in COLUMNS}
        for ev in events:
            if isinstance(ev, StepAccepted):
                self._step_count += 1
                rows["energy_error"].append((self._step_count, ev.rel_dE + TINY))
                rows["angular_momentum_error"].append((self._step_count, ev.rel_dL + TINY))
            elif isinstance(ev, EpochFinished):
                m = ev.metrics
                rows["epoch_metrics"].append((ev.epoch, max(m["loss"], LOSS_FLOOR), m["acceptance_rate"],
                                              m["retrain_iterations"], m["dt_mean"]))
            elif isinstance(ev, TrajectoryChunk):
                rows["orbit" if ev.phase == "train" else "sim_orbit"].extend(self._orbit_rows(ev.position))
                if ev.phase == "simulate":
                    rows["simulation"].extend(self._sim_rows(ev))
        for name, batch in rows.items():
            if batch:
                limit = ROLLOVER[name]
                self.sources[name].stream(dict(zip(COLUMNS[name], map(list, zip(*batch[-limit:])))), rollover=limit)
        return {name: len(batch) for name, batch in rows.items()}

    def _orbit_rows(self, position: np.ndarray, max_rows: int = 20) -> list[tuple]:
        """Body positions of the first system, projected, at most ``max_rows`` rows per chunk."""
        i, j = PROJECTIONS[self.projection] if position.shape[-1] == 3 else (0, 1)
        rows = position[:: max(1, len(position) // max_rows), 0]
        return [(float(p[b, i]), float(p[b, j]), b, Category10_10[b % 10]) for p in rows for b in range(p.shape[0])]

    @staticmethod
    def _sim_rows(ev: TrajectoryChunk, max_rows: int = 64) -> list[tuple]:
        keep = slice(None, None, max(1, len(ev.time) // max_rows))
        columns = (ev.time[keep, 0], ev.rel_dE[keep, 0] + TINY, ev.rel_dL[keep, 0] + TINY, ev.dt[keep, 0] + TINY)
        return [tuple(float(v) for v in row) for row in zip(*columns)]
