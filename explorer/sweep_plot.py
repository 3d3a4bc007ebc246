"""The Sweeps tab's results: the table of a sweep's runs as a DataFrame, and the plot of a
metric against one swept key, coloured by the values of the others."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from nbody_engine.sweep import STATUS_OK


def results_frame(doc: Mapping) -> pd.DataFrame:
    columns = list(dict.fromkeys(doc.get("columns") or []))
    frame = pd.DataFrame(list(doc.get("runs") or []), columns=columns or None)
    for column in ("attempts", "exit_code"):  # counts stay integers beside the runs that have none yet
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


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
