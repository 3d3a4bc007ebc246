"""Live plots: Bokeh figures over bounded, named ``ColumnDataSource``s.

The session's drain callback collects queued engine events as rows (:meth:`LivePlots.collect`)
and, once the page has drawn the last batch (explorer/paint_gate.py), streams them as one batch
of columns per source with ``source.stream(batch, rollover=K)``: the browser receives only the new
rows, nothing is re-rendered on the server, and every source keeps at most K rows, so memory
and update cost stay bounded however long a run is. (An earlier HoloViews DynamicMap version
re-rendered each plot on every update, which delayed the page by seconds and slowed training:
docs/BENCHMARKS.md.)

What a physicist reads here: quantities in code units (G = 1); log axes show only what a log
axis can show (a zero error, the first row of a simulation, or a loss of exactly 0 is left out,
never drawn at an invented floor); the target band and the acceptance threshold are drawn where
the data can meet them; every orbit of a multi-orbit run is drawn (up to ``MAX_SYSTEMS``, the
title says how many) with a legend, and legends sit beside the plot area, never over the data.
The per-epoch curves carry their exponential moving average (``*_ema`` columns, weight set by
:meth:`LivePlots.set_smoothing`), smoothed on the server as the epochs stream in.

The sources have names for automated checks: ``energy_error``, ``angular_momentum_error``,
``epoch_metrics``, ``orbit``, ``simulation`` and ``sim_orbit``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from bokeh.core.properties import value
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from nbody_engine.events import EpochFinished, RunStarted, StepAccepted, TrajectoryChunk

from .plot_style import clean_log_ticks, ema, legend_beside

PROJECTIONS = {"x-y": (0, 1), "x-z": (0, 2), "y-z": (1, 2)}
MAX_SYSTEMS = 10  # orbits drawn (one colour each); the title says when a run has more
BAND_REACH = 10.0  # a band is drawn once the data comes within this factor of it
COLUMNS = {
    "energy_error": ("step", "rel_dE"),
    "angular_momentum_error": ("step", "rel_dL"),
    "epoch_metrics": ("epoch", "loss", "acceptance_rate", "retrain_iterations", "dt_mean", "loss_ema",
                      "acceptance_rate_ema", "retrain_iterations_ema", "dt_mean_ema"),
    "orbit": ("x", "y", "label", "color"),
    "simulation": ("time", "rel_dE", "rel_dL", "dt", "label", "color"),
    "sim_orbit": ("x", "y", "label", "color"),
}
ROLLOVER = {"energy_error": 5_000, "angular_momentum_error": 5_000, "epoch_metrics": 5_000, "orbit": 6_000,
            "simulation": 20_000, "sim_orbit": 6_000}
CODE_TIME = "time (code units, G = 1)"
# the per-epoch curves: column, axis label, title, log axis, colour; each is drawn raw (faint) and
# as its exponential moving average (the column + "_ema", with the smoothing slider's weight)
EPOCH_CURVES = (("loss", "loss", "loss per epoch (0 not drawn)", True, "#1f77b4"),
                ("dt_mean", "mean dt (code units)", "mean accepted dt per epoch", True, "#17becf"),
                ("acceptance_rate", "accepted / attempted", "acceptance rate per epoch", False, "#9467bd"),
                ("retrain_iterations", "optimizer steps", "retrain iterations per epoch", False, "#d62728"))
SIM_PLOTS = (("rel_dE", "|dE/E| (relative)", "simulation |dE/E| against time"),
             ("rel_dL", "|dL/L| (relative)", "simulation |dL/L| against time"),
             ("dt", "dt (code units)", "simulation time step dt"))


def positive(values) -> np.ndarray:
    """``values`` as floats, with what a log axis cannot show (zero, negative, non-finite) as NaN,
    which Bokeh leaves out."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def _figure(title: str, x: str, y: str, log_y: bool = True, height: int = 250, **kwargs):
    fig = figure(title=title, x_axis_label=x, y_axis_label=y, y_axis_type="log" if log_y else "linear",
                 height=height, sizing_mode="stretch_width", tools="pan,box_zoom,wheel_zoom,reset,save",
                 active_scroll=None, **kwargs)  # the wheel scrolls the page; the toolbar turns zooming on
    fig.add_tools(HoverTool(tooltips=[(x, "$x"), (y, "$y")]))
    fig.toolbar.logo = None
    fig.y_range.only_visible = True  # a hidden band does not stretch the axis
    clean_log_ticks(fig)
    return fig


def _legend(fig) -> None:
    legend_beside(fig)
    fig.legend.click_policy = "hide"


def sim_labels(systems: int) -> list[str]:
    return [f"orbit {k}" for k in range(min(systems, MAX_SYSTEMS))] if systems > 1 else ["one system"]


def system_labels(systems: int, bodies: int) -> tuple[list[str], str]:
    """Legend labels of the drawn systems (bodies when there is one system) and what the title
    says about them."""
    if systems == 1:
        return [f"body {b}" for b in range(bodies)], "one system"
    shown = min(systems, MAX_SYSTEMS)
    which = f"all {systems} orbits" if shown == systems else f"orbits 0-{shown - 1} of {systems}"
    return [f"orbit {k}" for k in range(shown)], which


class LivePlots:
    """The sources of one session and the figures drawn from them."""

    def __init__(self) -> None:
        self.sources = {name: ColumnDataSource({c: [] for c in cols}, name=name) for name, cols in COLUMNS.items()}
        self._legends: dict[str, list] = {"orbit": [], "sim_orbit": [], "simulation": []}
        self._legend_labels: dict[str, list[str]] = {}
        self.limits = {"E": (1e-6, 1e-4), "L": (1e-4, 1e-2), "threshold": 2e-4}
        self.projection = "x-y"
        self._step_count = 0
        self._max_rel_dL = 0.0
        self._figures: dict[str, list] = {"orbit": [], "sim_orbit": []}
        self.smoothing = 0.0  # the per-epoch curves' EMA weight (0: off)
        self._ema_state: dict[str, tuple[float, int]] = {}
        self._bands: dict[str, list] = {"E": [], "L": [], "threshold": []}
        self._waiting: dict[str, list[dict]] = {name: [] for name in COLUMNS}  # rows for the next flush
        self.run_name: str | None = None  # the run whose rows the sources hold (its RunStarted's save_name)

    def frame(self, name: str) -> pd.DataFrame:
        """What a source holds, as a DataFrame (for tests and notebooks)."""
        return pd.DataFrame(self.sources[name].data)

    def csv_filename(self, name: str) -> str:
        """The file a download of source ``name`` is saved as: ``<run>_<name>.csv``."""
        return f"{self.run_name}_{name}.csv" if self.run_name else f"{name}.csv"

    def csv(self, name: str) -> str:
        """What source ``name`` holds as CSV, its columns as named in COLUMNS (without the drawing
        colour); what a log axis leaves out is an empty field."""
        return self.frame(name).drop(columns="color", errors="ignore").to_csv(index=False)

    def set_smoothing(self, weight: float) -> None:
        """Smooth the per-epoch curves with an EMA of ``weight`` (0: off): the drawn epochs are
        smoothed again now, the ones still to come as they stream in."""
        self.smoothing = float(weight)
        self._ema_state = {}
        source = self.sources["epoch_metrics"]
        source.data.update({c: v.tolist() for c, v in self._smoothed(source.data).items()})

    def _smoothed(self, batch: dict) -> dict:
        """The ``*_ema`` columns of a batch of epochs, carrying on from the batches before."""
        columns = {}
        for y, _label, _title, log_y, _color in EPOCH_CURVES:
            smooth, self._ema_state[y] = ema(batch[y], self.smoothing, log_y, self._ema_state.get(y, (0.0, 0)))
            columns[f"{y}_ema"] = smooth
        return columns

    # figures -------------------------------------------------------------------------------
    def _band(self, fig, which: str) -> None:
        low, high = self.limits[which]
        band = fig.hstrip(y0=[low], y1=[high], fill_color="orange", fill_alpha=0.15, line_alpha=0,
                          legend_label="target band")
        self._bands[which].append((band, fig.legend.items[-1]))

    def energy_error(self):
        fig = _figure("|dE/E| per accepted training step", "accepted step", "|dE/E| (relative)")
        fig.line("step", "rel_dE", source=self.sources["energy_error"], color="#1f77b4",
                 legend_label="max over orbits")
        self._band(fig, "E")
        line = fig.hspan(y=[self.limits["threshold"]], line_color="red", line_dash="dashed", line_width=1,
                         legend_label="acceptance threshold")
        self._bands["threshold"].append((line, fig.legend.items[-1]))
        _legend(fig)
        self._label_bands()
        return fig

    def angular_momentum_error(self):
        fig = _figure("|dL/L| per accepted training step", "accepted step", "|dL/L| (relative)")
        fig.line("step", "rel_dL", source=self.sources["angular_momentum_error"], color="#2ca02c",
                 legend_label="max over orbits")
        self._band(fig, "L")
        _legend(fig)
        self._label_bands()
        return fig

    def per_epoch(self) -> list:
        """The per-epoch curves (EPOCH_CURVES): raw points and line faint, the moving average
        (:meth:`set_smoothing`) drawn over them; with smoothing 0 the average is the data."""
        source = self.sources["epoch_metrics"]
        figs = []
        for y, label, title, log_y, color in EPOCH_CURVES:
            fig = _figure(title, "epoch", label, log_y=log_y, height=230)
            fig.line("epoch", y, source=source, color=color, alpha=0.3)
            fig.scatter("epoch", y, source=source, color=color, size=3, alpha=0.4)
            fig.line("epoch", f"{y}_ema", source=source, color=color, line_width=2)
            figs.append(fig)
        return figs

    def orbit_plot(self, name: str = "orbit"):
        fig = _figure(self._orbit_title(name, "no run yet"), "x (code units)", "y (code units)", log_y=False,
                      height=420, match_aspect=True)
        fig.scatter("x", "y", source=self.sources[name], color="color", size=3)
        self._add_legend(fig, name)
        self._figures[name].append(fig)
        return fig

    def simulation_plots(self) -> list:
        source = self.sources["simulation"]
        figs = []
        for y, label, title in SIM_PLOTS:
            fig = _figure(title, CODE_TIME, label)
            fig.scatter("time", y, source=source, color="color", size=2)
            self._add_legend(fig, "simulation")
            figs.append(fig)
        return figs

    # titles and bands ----------------------------------------------------------------------
    def _orbit_title(self, name: str, which: str) -> str:
        a, b = "xyz"[PROJECTIONS[self.projection][0]], "xyz"[PROJECTIONS[self.projection][1]]
        kind = "training trajectory" if name == "orbit" else "simulation"
        return f"{kind}: {which} ({a}-{b} projection, code units)"

    def _add_legend(self, fig, name: str) -> None:
        """A legend of the labels in source ``name``, one entry per orbit colour, drawn from
        renderers of its own (a ``legend_field`` over a streamed source reads past the end of its
        colours in BokehJS: a RangeError in the browser tests)."""
        swatches = [fig.scatter(x=[np.nan], y=[np.nan], color=Category10_10[k], size=6) for k in range(MAX_SYSTEMS)]
        legend = Legend(items=[], click_policy="none")
        fig.add_layout(legend, "right")
        legend_beside(fig)
        self._legends[name].append((legend, swatches))

    def _set_legend(self, name: str, labels: list[str]) -> None:
        if self._legend_labels.get(name) == labels:
            return
        self._legend_labels[name] = labels
        for legend, swatches in self._legends[name]:
            legend.items = [LegendItem(label=value(label), renderers=[swatch])
                            for label, swatch in zip(labels, swatches)]

    def _set_orbit_title(self, name: str, position: np.ndarray) -> None:
        labels, which = system_labels(position.shape[1], position.shape[2])
        self._set_legend(name, labels)
        for fig in self._figures[name]:
            fig.title.text = self._orbit_title(name, which)

    def _label_bands(self) -> None:
        """The legend says where the band and the threshold are (and that a band far from the
        data is not drawn)."""
        for which in ("E", "L"):
            low, high = self.limits[which]
            hidden = which == "L" and not self._l_band_visible()
            text = f"target band [{low:.0e}, {high:.0e}]" + (" (far above)" if hidden else "")
            for band, item in self._bands[which]:
                band.visible = not hidden
                item.label = value(text)
        for _line, item in self._bands["threshold"]:
            item.label = value(f"acceptance threshold {self.limits['threshold']:.0e}")

    def _l_band_visible(self) -> bool:
        return self._max_rel_dL * BAND_REACH >= self.limits["L"][0]

    def _move_bands(self) -> None:
        for which in ("E", "L"):
            low, high = self.limits[which]
            for band, _item in self._bands[which]:
                band.data_source.data = {"y0": [low], "y1": [high]}
        for line, _item in self._bands["threshold"]:
            line.data_source.data = {"y": [self.limits["threshold"]]}
        self._label_bands()

    # feeding -------------------------------------------------------------------------------
    def reset(self, bands: dict) -> None:
        """Empty every source for a new run whose band and threshold are ``bands`` ('E', 'L':
        (lower, upper); 'threshold')."""
        self._step_count = 0
        self._max_rel_dL = 0.0
        self._ema_state = {}
        for name, source in self.sources.items():
            source.data = {c: [] for c in source.data}
            self._waiting[name].clear()
        for name in self._legends:
            self._set_legend(name, [])
        self.limits = dict(bands)
        self._move_bands()
        self._label_bands()

    def reset_epochs(self) -> None:
        self._ema_state = {}
        self._waiting["epoch_metrics"].clear()
        source = self.sources["epoch_metrics"]
        source.data = {c: [] for c in source.data}

    def ingest(self, events: list) -> dict[str, int]:
        """Stream what ``events`` hold into the sources at once; returns the rows per source."""
        counts = self.collect(events)
        self.flush()
        return counts

    def collect(self, events: list) -> dict[str, int]:
        """Take what ``events`` hold as rows waiting for :meth:`flush`; returns the rows per source."""
        rows: dict[str, list[dict]] = {name: [] for name in COLUMNS}
        for ev in events:
            if isinstance(ev, StepAccepted):
                self._step(ev, rows)
            elif isinstance(ev, RunStarted):
                self.run_name = ev.save_name
            elif isinstance(ev, EpochFinished):
                m = ev.metrics
                rows["epoch_metrics"].append({"epoch": [ev.epoch], "loss": positive([m["loss"]]),
                                              "acceptance_rate": [m["acceptance_rate"]],
                                              "retrain_iterations": [m["retrain_iterations"]],
                                              "dt_mean": positive([m["dt_mean"]])})
            elif isinstance(ev, TrajectoryChunk):
                name = "orbit" if ev.phase == "train" else "sim_orbit"
                rows[name].append(self._orbit_rows(ev.position))
                self._set_orbit_title(name, ev.position)
                if ev.phase == "simulate":
                    rows["simulation"].append(self._sim_rows(ev))
                    self._set_legend("simulation", sim_labels(ev.time.shape[1]))
        for name, batches in rows.items():
            self._waiting[name].extend(batches)
        return {name: sum(len(b[COLUMNS[name][0]]) for b in batches) for name, batches in rows.items()}

    @property
    def waiting(self) -> bool:
        """Whether rows wait for :meth:`flush`."""
        return any(self._waiting.values())

    def flush(self) -> None:
        """Stream the waiting rows, one batch per source, each at most its rollover long."""
        for name, batches in self._waiting.items():
            if batches:
                batch = {c: np.concatenate([np.asarray(b[c]) for b in batches]) for c in batches[0]}
                if name == "epoch_metrics":
                    batch.update(self._smoothed(batch))
                limit = ROLLOVER[name]
                # plain lists: BokehJS rejected some streamed binary arrays ("Offset is outside the
                # bounds of the DataView") in the browser tests
                self.sources[name].stream({c: v[-limit:].tolist() for c, v in batch.items()}, rollover=limit)
                batches.clear()
        self._label_bands()

    def _step(self, ev: StepAccepted, rows: dict) -> None:
        self._step_count += 1
        for name, error in (("energy_error", ev.rel_dE), ("angular_momentum_error", ev.rel_dL)):
            if np.isfinite(error) and error > 0:  # an exact zero has no place on a log axis
                rows[name].append({"step": [self._step_count], COLUMNS[name][1]: [error]})
        if np.isfinite(ev.rel_dL):
            self._max_rel_dL = max(self._max_rel_dL, ev.rel_dL)

    def _orbit_rows(self, position: np.ndarray, max_rows: int = 20) -> dict:
        """Body positions of the drawn systems, projected, at most ``max_rows`` rows per chunk:
        coloured by orbit (by body when there is one system)."""
        i, j = PROJECTIONS[self.projection] if position.shape[-1] == 3 else (0, 1)
        labels, _ = system_labels(position.shape[1], position.shape[2])
        rows = position[:: max(1, len(position) // max_rows), :MAX_SYSTEMS]  # (S, B, N, D)
        S, B, N = rows.shape[:3]
        per_body = B == 1
        index = np.broadcast_to(np.arange(N) if per_body else np.arange(B)[:, None], (S, B, N)).ravel()
        return {"x": rows[..., i].ravel(), "y": rows[..., j].ravel(), "label": np.array(labels)[index],
                "color": np.array(Category10_10)[index % 10]}

    @staticmethod
    def _sim_rows(ev: TrajectoryChunk, max_rows: int = 64) -> dict:
        """Each drawn system's time, |dE/E|, |dL/L| and dt, at most ``max_rows`` rows per chunk."""
        keep = slice(None, None, max(1, len(ev.time) // max_rows))
        systems = min(ev.time.shape[1], MAX_SYSTEMS)
        labels = sim_labels(ev.time.shape[1])
        columns = {c: getattr(ev, c)[keep, :systems].T.ravel() for c in ("time", "rel_dE", "rel_dL", "dt")}
        index = np.repeat(np.arange(systems), len(columns["time"]) // systems)
        return {"time": columns["time"], **{c: positive(columns[c]) for c in ("rel_dE", "rel_dL", "dt")},
                "label": np.array(labels)[index], "color": np.array(Category10_10)[index % 10]}
