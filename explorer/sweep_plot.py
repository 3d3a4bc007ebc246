"""The Sweeps tab's results: the table of a sweep's runs as a DataFrame (and as shown, without
the machinery's columns), the plot of a metric against one swept key, coloured by the values of
the others, and the runs in parallel coordinates coloured by a metric."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColorBar, ColumnDataSource, FixedTicker, HoverTool, LinearColorMapper, LogColorMapper
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from nbody_engine.sweep import STATUS_OK
from nbody_engine.sweep.figures import parallel_lines, spans_decades

# columns of results.json for the machinery, not for reading results: where a run's files are,
# which Dask worker ran it, the hash that tells a rerun whether its run.toml changed
INTERNAL_COLUMNS = ("run_dir", "worker", "run_toml_sha1")
WHERE_COLUMNS = ("host", "slurm_job", "gpu", "device")  # shown only where runs differ in them
FAILURE_COLUMNS = ("exit_code", "error")  # shown only where a run has one


def results_frame(doc: Mapping) -> pd.DataFrame:
    columns = list(dict.fromkeys(doc.get("columns") or []))
    frame = pd.DataFrame(list(doc.get("runs") or []), columns=columns or None)
    for column in ("attempts", "exit_code"):  # counts stay integers beside the runs that have none yet
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The results as the table shows them: no internal columns, no column that says nothing
    (``slurm_job`` None everywhere, ``exit_code`` 0), lists as their JSON text (so a column sorts)."""
    def says_nothing(column: str) -> bool:
        values = [v for v in frame[column] if v is not None and not (isinstance(v, float) and math.isnan(v))
                  and v is not pd.NA]
        if column in WHERE_COLUMNS:
            return len({json.dumps(v, default=str) for v in values}) <= 1
        return column in FAILURE_COLUMNS and all(v in (0, "") for v in values)

    shown = frame.drop(columns=[c for c in frame if c in INTERNAL_COLUMNS or says_nothing(c)])
    for column in shown:
        if shown[column].map(lambda v: isinstance(v, (list, dict))).any():
            shown[column] = shown[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return shown


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _label(value) -> str:
    return json.dumps(value) if isinstance(value, (list, str, bool)) or value is None else f"{value:g}"


def plot_rows(df: pd.DataFrame, x: str | None, metric: str | None, others=(), log_y: bool = False) -> pd.DataFrame:
    """The points of the plot: one per ok run with a value of ``metric`` (positive on a log
    axis). ``x`` is the key's value, or for text, lists and booleans the value's position in
    the grid's order; ``label`` is the value as text; ``group`` names the values of the other
    swept keys and ``color`` is the group's."""
    columns = ["x", "y", "id", "label", "group", "color"]
    if df.empty or x not in df or metric not in df:
        return pd.DataFrame({c: [] for c in columns})
    others = [k for k in others if k in df and k != x]
    groups = pd.Series([", ".join(f"{k}={_label(row[k])}" for k in others) for _, row in df.iterrows()],
                       index=df.index, dtype=object)
    colors = {g: Category10_10[i % len(Category10_10)] for i, g in enumerate(dict.fromkeys(groups))}
    labels = df[x].map(_label)
    if _numeric(df[x].tolist()):
        xs = df[x]
    else:
        positions = {label: i for i, label in enumerate(dict.fromkeys(labels))}
        xs = labels.map(positions)
    y = pd.to_numeric(df[metric], errors="coerce")
    keep = (df["status"] == STATUS_OK) & y.notna() & ((y > 0) if log_y else True)
    rows = pd.DataFrame({"x": xs, "y": y, "id": df["id"], "label": labels, "group": groups,
                         "color": groups.map(colors)}, columns=columns)[keep]
    return rows.sort_values("x", kind="stable")


class MetricPlot:
    """A metric of a sweep's finished runs against one swept key: one colour (and a line) per
    combination of the other swept keys. Two figures, linear and log y, drawn once from two
    sources whose data are replaced in place (swapping figures in a page loses Bokeh models);
    the points' source is named ``sweep_metric``. Text, list and boolean keys are drawn at
    their positions in the grid, labelled with their values."""

    MAX_TICKS = 12

    def __init__(self) -> None:
        self.points = ColumnDataSource({c: [] for c in ("x", "y", "id", "label", "group", "color")},
                                       name="sweep_metric")
        self.lines = ColumnDataSource({"xs": [], "ys": [], "color": []})
        self.log_y = False
        self.figures = {log_y: self._figure(log_y) for log_y in (False, True)}
        # each figure in a layout of its own, which the page hides reliably (a hidden Bokeh pane
        # inside a tab built on demand was still drawn)
        self.panes = {log_y: pn.Column(pn.pane.Bokeh(fig, sizing_mode="stretch_width"), visible=not log_y,
                                       sizing_mode="stretch_width")
                      for log_y, fig in self.figures.items()}

    def _figure(self, log_y: bool):
        fig = figure(height=320, sizing_mode="stretch_width", y_axis_type="log" if log_y else "linear",
                     tools="pan,box_zoom,wheel_zoom,reset,save", active_scroll=None)
        fig.toolbar.logo = None
        fig.multi_line("xs", "ys", source=self.lines, color="color", line_width=2)
        dots = fig.scatter("x", "y", source=self.points, color="color", size=9, legend_field="group")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=self._tooltips("key", "metric")))
        fig.xaxis.ticker = FixedTicker(ticks=[])
        fig.legend.location = "top_left"
        fig.legend.visible = False
        return fig

    @staticmethod
    def _tooltips(x: str, metric: str) -> list[tuple[str, str]]:
        return [("run", "@id"), (x, "@label"), (metric, "@y"), ("", "@group")]

    def update(self, df: pd.DataFrame, x: str | None, metric: str | None, others=(), log_y: bool = False) -> None:
        rows = plot_rows(df, x, metric, others, log_y)
        self.points.data = {c: rows[c].tolist() for c in rows.columns}
        numeric = df.empty or x not in df or _numeric(df[x].tolist())
        lines = [group for _, group in rows.groupby("group", sort=False)] if numeric else []
        self.lines.data = {"xs": [g["x"].tolist() for g in lines], "ys": [g["y"].tolist() for g in lines],
                           "color": [g["color"].iloc[0] for g in lines]}
        if df.empty or x not in df:
            ticks, overrides = [], {}
        elif numeric:
            values = sorted(set(df[x].tolist()))
            ticks, overrides = values[::-(-len(values) // self.MAX_TICKS)], {}
        else:
            labels = list(dict.fromkeys(df[x].map(_label)))
            ticks, overrides = list(range(len(labels))), dict(enumerate(labels))
        for fig in self.figures.values():
            fig.title.text = f"{metric} against {x}" if x and metric else ""
            fig.xaxis.axis_label, fig.yaxis.axis_label = x or "", metric or ""
            fig.xaxis.ticker.ticks = ticks
            fig.xaxis.major_label_overrides = overrides
            fig.legend.visible = any(rows["group"].astype(bool))
            fig.select_one(HoverTool).tooltips = self._tooltips(x or "key", metric or "metric")
        if log_y != self.log_y:
            self.log_y = log_y
            for flag, pane in self.panes.items():
                pane.visible = flag == log_y

    def panel(self) -> pn.Column:
        return pn.Column(*self.panes.values(), sizing_mode="stretch_width")


class ParallelPlot:
    """Every ok run of a sweep as one line across parallel axes (the swept keys, then the
    metrics every ok run has), each axis scaled to its runs' range (log where
    :func:`~nbody_engine.sweep.figures.parallel_lines` says so), coloured by the chosen metric
    with its colour bar (log where it spans decades); the best (lowest) runs are drawn on top,
    as ``nbody-runner sweep --plot`` draws them. The lines' source is named ``sweep_parallel``."""

    def __init__(self) -> None:
        self.lines = ColumnDataSource({c: [] for c in ("xs", "ys", "id", "value", "color")}, name="sweep_parallel")
        self.ends = ColumnDataSource({"x": [], "y": [], "text": []})
        self.axes = ColumnDataSource({"xs": [], "ys": []})
        self.mappers = {False: LinearColorMapper(palette=Viridis256), True: LogColorMapper(palette=Viridis256)}
        self.fig = figure(height=360, sizing_mode="stretch_width", x_range=(-0.3, 1.3), y_range=(-0.15, 1.15),
                          tools="save,reset", toolbar_location="above")
        self.fig.toolbar.logo = None
        self.fig.multi_line("xs", "ys", source=self.axes, color="#999999", line_width=1)
        drawn = self.fig.multi_line("xs", "ys", source=self.lines, color="color", line_width=2, alpha=0.85,
                                    hover_line_width=4, hover_line_color="#d62728")
        self.fig.add_tools(HoverTool(renderers=[drawn], tooltips=[("run", "@id"), ("metric", "@value")]))
        self.fig.text("x", "y", "text", source=self.ends, text_align="center", text_baseline="middle",
                      text_font_size="8pt", text_color="#444444")
        self.bars = {log: ColorBar(color_mapper=mapper, width=12, visible=False)
                     for log, mapper in self.mappers.items()}
        for bar in self.bars.values():
            self.fig.add_layout(bar, "right")
        self.fig.yaxis.visible = False
        self.fig.grid.visible = False
        self.fig.xaxis.ticker = FixedTicker(ticks=[])
        self.pane = pn.Column(pn.pane.Bokeh(self.fig, sizing_mode="stretch_width"), visible=False,
                              sizing_mode="stretch_width")

    def update(self, df: pd.DataFrame, grid: Mapping, metrics: list[str], metric: str | None) -> None:
        """Draw the ok runs of ``df`` with a value of ``metric`` across the swept keys (``grid``:
        each key's values or range, as results.json has it) and the ``metrics`` that each of them
        has, coloured by ``metric``."""
        rows = [] if df.empty or metric not in df else [
            r for r in df.to_dict("records") if r.get("status") == STATUS_OK and _finite(r.get(metric))]
        keys = [k for k in grid if k in df]
        metrics = [m for m in metrics if m != metric and m in df and all(_finite(r.get(m)) for r in rows)]
        columns = [*keys, *metrics, *([metric] if metric else [])]
        values = np.asarray([r[metric] for r in rows], dtype=float)
        log = spans_decades(values)
        if rows:
            lines, ends = parallel_lines(rows, keys, [*metrics, metric], grid)
            order = np.argsort(-values, kind="stable")  # the lowest drawn last, on top
            colors = self._colors(values, log)
            self.lines.data = {"xs": [list(range(len(columns)))] * len(rows), "ys": [lines[i].tolist() for i in order],
                               "id": [rows[i]["id"] for i in order], "value": values[order].tolist(),
                               "color": [colors[i] for i in order]}
        else:
            ends = []
            self.lines.data = {c: [] for c in self.lines.data}
        self.ends.data = {"x": [i for i in range(len(ends)) for _ in (0, 1)], "y": [-0.07, 1.07] * len(ends),
                          "text": [label for pair in ends for label in pair]}
        self.axes.data = {"xs": [[i, i] for i in range(len(columns))], "ys": [[0, 1]] * len(columns)}
        self.fig.x_range.update(start=-0.3, end=max(1, len(columns)) - 0.7)
        self.fig.xaxis.ticker.ticks = list(range(len(columns)))
        self.fig.xaxis.major_label_overrides = dict(enumerate(columns))
        self.fig.title.text = f"{len(rows)} ok run(s), coloured by {metric}" if metric else ""
        self.fig.select_one(HoverTool).tooltips = [("run", "@id"), (metric or "metric", "@value")]
        for flag, bar in self.bars.items():
            bar.visible = bool(rows) and flag == log
            bar.title = metric or ""
        if rows:
            self.mappers[log].update(low=float(values.min()), high=float(values.max()))

    @staticmethod
    def _colors(values: np.ndarray, log: bool) -> list[str]:
        """Each value's colour on the Viridis scale between the smallest and the largest (of the logs)."""
        scaled = np.log10(values) if log else values
        span = scaled.max() - scaled.min()
        position = (scaled - scaled.min()) / span if span > 0 else np.full_like(scaled, 0.5)
        return [Viridis256[int(round(p * (len(Viridis256) - 1)))] for p in position]

    def panel(self) -> pn.Column:
        return self.pane


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
