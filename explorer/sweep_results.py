"""The results part of the Sweeps tab: which metric to plot (an error metric unless the
researcher chose another), the plot of it against a swept key or the runs in parallel coordinates
coloured by it (:mod:`explorer.sweep_plot`), and the table of the runs, sortable by any column
(click its header) and without the machinery's columns (:func:`~explorer.sweep_plot.table_frame`)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import panel as pn

from .compare import COMPACT_TABLE, scientific_formatters
from .sweep_plot import MetricPlot, ParallelPlot, table_frame

# the metric a plot opens on: the worst energy error of the simulations, else of the training
# steps, else the loss (what a sweep is for), never a count such as steps
ERROR_METRICS = ("max_rel_energy_error", "rel_dE_max", "loss")
VIEWS = ("against a key", "parallel coordinates")
TABLE_HEIGHT = 420  # px: 12 rows in view, the rest a scroll away


class SweepResults:
    """The plots and table of one sweep's results; :meth:`set_choices` when a sweep is chosen,
    :meth:`show` as its results come in."""

    def __init__(self) -> None:
        self.frame = pd.DataFrame()
        self.grid: dict = {}  # the swept keys and their values or ranges, as results.json has them
        self.view = pn.widgets.RadioButtonGroup(label="plot", options=list(VIEWS), value=VIEWS[0],
                                                color="primary", variant="outline", align="end",
                                                width=320, height=32, sizing_mode="fixed")
        self.x_select = pn.widgets.Select(label="against key", options=[], width=220)
        self.metric_select = pn.widgets.Select(label="metric", options=[], width=220,
                                               description="the metric plotted, and the colour of the parallel lines")
        self.log_y = pn.widgets.Checkbox(label="log y", value=False, align="end")
        self.plot = MetricPlot()
        self.parallel = ParallelPlot()
        self.plot_box = self.plot.panel()  # one layout, shown or hidden with its view
        self.table = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False, layout="fit_data_table",
                                          selectable=False, max_height=TABLE_HEIGHT, stylesheets=[COMPACT_TABLE],
                                          sizing_mode="stretch_width")
        for widget in (self.x_select, self.metric_select, self.log_y, self.view):
            widget.param.watch(lambda _e: self.draw(), "value")

    def set_choices(self, grid: Mapping, metrics: list[str]) -> None:
        """Offer the swept keys of ``grid`` and ``metrics``; a choice that is still offered stays,
    else the plot opens on an error metric, on a log axis."""
        self.grid = dict(grid)
        keys = list(self.grid)
        previous = self.metric_select.value  # before the options: a Select takes their first for a lost value
        self.x_select.options = keys
        if self.x_select.value not in keys:
            self.x_select.value = keys[0] if keys else None
        self.metric_select.options = metrics
        if previous not in metrics:
            preferred = [m for m in ERROR_METRICS if m in metrics]
            self.metric_select.value = (preferred or metrics or [None])[0]
            self.log_y.value = bool(preferred)  # errors and losses span decades

    def show(self, frame: pd.DataFrame, grid: Mapping | None = None) -> None:
        """The runs of ``frame`` (:func:`~explorer.sweep_plot.results_frame`) in the table and the plots."""
        self.frame = frame
        if grid:
            self.grid = dict(grid)
        shown = table_frame(frame)
        formatters = scientific_formatters(c for c in shown if pd.api.types.is_float_dtype(shown[c]))
        if formatters.keys() != self.table.formatters.keys():
            self.table.formatters = formatters
        self.table.value = shown
        self.draw()

    def draw(self) -> None:
        against = self.view.value == VIEWS[0]
        for widget in (self.x_select, self.log_y):
            widget.visible = against
        self.plot_box.visible, self.parallel.panel().visible = against, not against
        x, metric = self.x_select.value, self.metric_select.value
        if against:
            self.plot.update(self.frame, x, metric, [k for k in self.grid if k != x], self.log_y.value)
        else:
            self.parallel.update(self.frame, self.grid, list(self.metric_select.options), metric)

    def panel(self) -> pn.Column:
        return pn.Column(pn.Row(self.view, self.metric_select, self.x_select, self.log_y),
                         self.plot_box, self.parallel.panel(), self.table, sizing_mode="stretch_width")
