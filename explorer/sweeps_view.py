"""The Sweeps tab: run the dashboard's settings over a grid of up to three keys on this
machine's cores (``nbody_engine.sweep``, what ``nbody-runner sweep`` runs), watch the results
table fill in, and plot a chosen metric against a chosen swept key.

The sweep runs in a daemon thread of the session and takes one of the server's job slots
(explorer/jobs.py). That thread starts a ``LocalCluster`` exactly as ``run_sweep`` would and
hands it to ``run_sweep``, so that Stop can cancel the sweep's tasks (run_sweep has no stop
of its own); it never touches Panel objects. While the sweep runs, a periodic callback of the
session re-reads ``data/<name>/results.json``, which run_sweep rewrites atomically (with
results.csv) as each run finishes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from nbody_engine import sweep
from nbody_engine.config import PHASES, parse_text, unknown_key_error
from nbody_engine.errors import InputError
from nbody_engine.runs import DATA_DIR, write_json
from nbody_engine.schema import KEYS, Config
from nbody_engine.sweep import (SIM_METRICS, STATUS_FAILED, STATUS_OK, STATUS_PENDING, TRAIN_METRICS, SweepPlan,
                                distinct_values)

from . import jobs
from .jobs import Job

MAX_KEYS = 3
MAX_RUNS = 1000  # a bigger grid belongs to ``nbody-runner sweep --samples``
REFRESH_PERIOD_MS = 1000
CLOSE_TIMEOUT = 5.0  # s that closing the session waits for a stopped sweep to close its cluster
DRAIN_TIMEOUT = 15.0  # s that a stopped sweep waits for its cancelled runs to end before closing the cluster
SWEEPABLE = [k for k in KEYS if k != "save_name"]  # the sweep names each run itself
NOT_RUN = "not run: the sweep was stopped first"
STOPPED = "cancelled: the sweep was stopped"
WHERE = "sweep values"

# Sweeps running in this server process, by folder: two sessions must not run the same sweep.
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------- input

def example_values(key: str) -> str:
    """What the values box of ``key`` shows before anything is typed."""
    p = Config.param[key]
    if isinstance(p, param.Boolean):
        return "true, false"
    if isinstance(p, param.Selector):
        return ", ".join(str(o) for o in list(p.objects)[:3])
    if isinstance(p, param.Integer):
        return "100, 200"
    if isinstance(p, param.Number):
        return "1e-4, 2e-4, 5e-4"
    if isinstance(p, param.List):
        return "[64, 64], [128, 128]"
    return "a, b"


def parse_values(key: str, text: str) -> list:
    """The values typed for ``key`` ("1e-4, 2e-4"; lists in brackets: "[64, 64], [128]"),
    each checked as the CLI checks it; raises InputError."""
    if key not in KEYS:
        raise unknown_key_error(key, "the sweep")
    text = (text or "").strip()
    if not text:
        raise InputError(f"{WHERE}: '{key}' has no values; give at least one, e.g. {example_values(key)}")
    p = Config.param[key]
    try:  # TOML's syntax covers numbers, booleans, quoted strings and lists
        items = tomllib.loads(f"v = [{text}]")["v"]
    except tomllib.TOMLDecodeError:
        items = None if isinstance(p, param.List) else [_parse_item(key, p, piece.strip()) for piece in text.split(",")]
    if isinstance(p, param.List) and (items is None or not all(isinstance(i, list) for i in items)):
        raise InputError(f"{WHERE}: '{key}' takes lists; write each value in brackets, e.g. "
                         f"{example_values(key)}, not {text!r}")
    return distinct_values(key, items, WHERE)


def _parse_item(key: str, p: param.Parameter, piece: str) -> Any:
    if not piece:
        raise InputError(f"{WHERE}: '{key}' has an empty value between commas")
    if isinstance(p, param.Boolean) and piece.lower() in ("true", "false"):
        return piece.lower() == "true"
    return parse_text(key, piece)  # "none" for the keys that may be unset, numbers, else the text


def base_document(toml_text: str, keys) -> dict:
    """The dashboard's TOML as the sweep's base. A swept key applies to every phase: the
    dashboard's ``[train]``/``[simulate]`` value of it would hide the swept value, so it goes."""
    doc = tomllib.loads(toml_text)
    for phase in PHASES:
        section = doc.get(phase)
        if isinstance(section, dict):
            for key in keys:
                section.pop(key, None)
            if not section:
                del doc[phase]
    return doc


def default_name() -> str:
    return f"sweep_{time.strftime('%Y%m%d_%H%M%S')}"


def _claim(root: Path) -> bool:
    with _ACTIVE_LOCK:
        if root in _ACTIVE:
            return False
        _ACTIVE.add(root)
        return True


def _unclaim(root: Path) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(root)


# --------------------------------------------------------------------------- the sweep's thread

def runs_to_do(plan: SweepPlan) -> int:
    """How many runs run_sweep will execute (the others are ok with an unchanged run.toml)."""
    todo = 0
    for run in plan.runs:
        record = sweep.read_status(plan.run_dir(run))
        done = (record.get("status") == STATUS_OK and record.get("mode") == plan.mode
                and record.get("run_toml_sha1") == hashlib.sha1(run.toml.encode()).hexdigest())
        todo += not done
    return todo


class LocalSweep:
    """One sweep in a daemon thread: a LocalCluster, ``run_sweep`` on it, and Stop.

    Stop cancels the sweep's Dask tasks (the workers interrupt the runs that are running,
    which then save a checkpoint as the runner does), waits for those runs to end, corrects
    the rows of the cancelled runs in the results and closes the cluster. Only plain
    attributes are shared with the session: ``lines`` (run_sweep's progress lines),
    ``error`` (one line, or None), ``doc`` (the final results) and ``running``.
    """

    def __init__(self, plan: SweepPlan, base: Mapping, grid: Mapping) -> None:
        self.plan = plan
        self.base = base
        self.grid = grid
        self.lines: list[str] = []
        self.error: str | None = None
        self.doc: dict | None = None
        self.cancelled: set[str] = set()  # run ids
        self.stop_requested = threading.Event()
        self.started = time.monotonic()
        self.ended: float | None = None
        self._cancelled_keys: set[str] = set()
        self._attempts_before: dict[str, int] = {}
        self.thread = threading.Thread(target=self._work, name=f"nbody-sweep-{plan.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_requested.set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self.stop_requested.is_set()

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _echo(self, line: str) -> None:
        self.lines.append(line)

    def _work(self) -> None:
        try:
            self._sweep()
        except InputError as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 - a failing sweep must leave the server healthy
            self.error = f"{type(err).__name__}: {err}".splitlines()[0]
            traceback.print_exc()
        finally:
            self.ended = time.monotonic()
            _unclaim(self.plan.root)
            jobs._SLOTS.release()  # the slot Job.slot_free() took for this sweep

    def _run_sweep(self, client=None) -> dict:
        plan = self.plan
        return sweep.run_sweep(self.base, self.grid, mode=plan.mode, name=plan.name, client=client,
                               data_dir=plan.root.parent, echo=self._echo)

    def _sweep(self) -> None:
        if self.stop_requested.is_set():
            return
        todo = runs_to_do(self.plan)
        self._attempts_before = {run.id: int(sweep.read_status(self.plan.run_dir(run)).get("attempts") or 0)
                                 for run in self.plan.runs}
        if not todo:  # every run is done already: run_sweep writes the table and starts no cluster
            self.doc = self._run_sweep()
            return
        # run_sweep's default cluster (a LocalCluster of one single-threaded worker process per
        # core, at most one per run), started here and handed to run_sweep, so that Stop can
        # reach the sweep's tasks: run_sweep itself has no way to be stopped from another thread
        with sweep._dask_client(self.plan, todo, None, None, None, None, self._echo) as client:
            if self.stop_requested.is_set():
                return
            box: dict[str, Any] = {}

            def target() -> None:
                try:
                    box["doc"] = self._run_sweep(client)
                except BaseException as err:  # noqa: BLE001 - handed to the sweep's thread below
                    box["error"] = err

            inner = threading.Thread(target=target, name=f"nbody-sweep-{self.plan.name}-run", daemon=True)
            inner.start()
            while inner.is_alive():
                if self.stop_requested.is_set():
                    self._cancel(client)
                inner.join(0.2)
            err = box.get("error")
            if err is not None and not (self.cancelled and _is_cancellation(err)):
                raise err
            if self.cancelled:
                self._wait_for_cancelled_runs(client)
                self.doc = settle_cancelled(self.plan, self.cancelled, self._attempts_before) or None
            else:
                self.doc = box["doc"]

    def _prefix(self) -> str:
        return f"nbody-sweep-{self.plan.name}-"  # run_sweep's task keys: <prefix><run id>-<token>

    def _cancel(self, client) -> None:
        """Cancel the sweep's tasks that are not finished (queued or running)."""
        from distributed import Future

        prefix = self._prefix()
        try:
            states = list(client.futures.items())
        except RuntimeError:  # the client changed its futures while we read them: next time
            return
        keys = [k for k, state in states if isinstance(k, str) and k.startswith(prefix)
                and k not in self._cancelled_keys and state.status not in ("finished", "error")]
        if not keys:
            return
        self._cancelled_keys.update(keys)
        self.cancelled.update(k[len(prefix):].rsplit("-", 1)[0] for k in keys)
        client.cancel([Future(k, client) for k in keys], reason="stopped from the dashboard")

    def _wait_for_cancelled_runs(self, client) -> None:
        """Wait (bounded) until no worker executes a task of this sweep: a cancelled run ends
        within seconds, after it has written its status.json; closing the cluster before
        would leave its runner process behind."""
        prefix = self._prefix()

        def executing(dask_worker) -> int:  # a closure: pickled by value, nothing imported on the workers
            return sum(isinstance(k, str) and k.startswith(prefix) for k in dask_worker.state.tasks)

        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if not any(client.run(executing).values()):
                    return
            except Exception:  # noqa: BLE001 - a worker going away: nothing left to wait for there
                return
            time.sleep(0.2)


def _is_cancellation(err: BaseException) -> bool:
    from distributed.utils import CancelledError

    return isinstance(err, CancelledError)


def settle_cancelled(plan: SweepPlan, cancelled: set[str], attempts_before: Mapping[str, int]) -> dict:
    """Rewrite the results of a stopped sweep from the runs' own status.json.

    run_sweep records a task cancelled under it as a failed run with an error like
    ``dask: NoneType: None``. A cancelled run that had started has since written its own
    record (``cancelled: the sweep was interrupted``, or ok if it finished first); one that
    never started is pending again, as after an interrupted ``nbody-runner sweep``. A rerun
    of the sweep runs both again. ``attempts_before``: each run's attempts before this sweep.
    """
    try:
        doc = json.loads((plan.root / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    rows = {row["id"]: dict(row) for row in doc.get("runs", [])}
    if any(run.id not in rows for run in plan.runs):
        return doc
    for run in plan.runs:
        row = rows[run.id]
        if run.id not in cancelled and row.get("status") != STATUS_PENDING:
            continue
        run_dir = plan.run_dir(run)
        record = sweep.read_status(run_dir)
        error = str(record.get("error") or "")
        if (record.get("attempts") or 0) > attempts_before.get(run.id, 0):  # it started in this sweep
            ok = "finished" in record and record.get("exit_code") == 0
            record["status"] = STATUS_OK if ok else STATUS_FAILED
            record["error"] = "" if ok else (error if error and not error.startswith("dask:") else STOPPED)
        else:
            record = {**record, "status": STATUS_PENDING, "error": NOT_RUN}
        write_json(run_dir / "status.json", record)
        for column in plan.columns:
            if column in record and column not in run.values and column not in ("id", "run_dir"):
                row[column] = record[column]
        row["status"] = record["status"]
    return sweep.write_results(plan, rows)


# --------------------------------------------------------------------------- results

def read_results(root: Path) -> dict | None:
    """``results.json`` of a sweep folder, or None while there is none (or it cannot be read).

    The JSON rather than results.csv: it keeps the values' types (lists, booleans, unset),
    and a swept key that is also a metric column (``steps``) is a single column in its rows,
    where results.csv repeats the header."""
    try:
        return json.loads((root / "results.json").read_text())
    except (OSError, ValueError):
        return None


def results_frame(doc: Mapping) -> pd.DataFrame:
    columns = list(dict.fromkeys(doc.get("columns") or []))
    frame = pd.DataFrame(list(doc.get("runs") or []), columns=columns or None)
    for column in ("attempts", "exit_code"):  # counts stay integers beside the runs that have none yet
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def metric_columns(doc: Mapping) -> list[str]:
    """The numeric result columns a plot can show (not those that are swept keys)."""
    mode = doc.get("mode", "both")
    metrics = {"train": TRAIN_METRICS, "simulate": SIM_METRICS}.get(mode, TRAIN_METRICS + SIM_METRICS)
    swept = set(doc.get("grid") or {})
    return [c for c in (*metrics, "wall_time_s") if c not in swept]


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
        self.panes = {log_y: pn.pane.Bokeh(fig, sizing_mode="stretch_width", visible=not log_y)
                      for log_y, fig in self.figures.items()}

    def _figure(self, log_y: bool):
        fig = figure(height=320, sizing_mode="stretch_width", y_axis_type="log" if log_y else "linear",
                     tools="pan,box_zoom,wheel_zoom,reset,save")
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


# --------------------------------------------------------------------------- the tab

class SweepsView:
    """The Sweeps tab of one session. ``base_toml`` returns the dashboard's settings as TOML."""

    def __init__(self, base_toml: Callable[[], str], data_dir: str | Path | None = None) -> None:
        self.base_toml = base_toml
        self.data_dir = data_dir  # None: data/ under the working directory when a sweep starts
        self.sweep: LocalSweep | None = None
        self.frame = pd.DataFrame()
        self._doc: dict | None = None
        self._stamp = None
        self._root: Path | None = None
        self._callback = None
        self._finished_shown = True
        self.keys = pn.widgets.MultiChoice(label=f"Keys to sweep (at most {MAX_KEYS})", options=SWEEPABLE,
                                           max_items=MAX_KEYS, placeholder="choose keys", width=360)
        self.values_box = pn.Column(sizing_mode="stretch_width")
        self.value_inputs: dict[str, pn.widgets.TextInput] = {}
        self.mode = pn.widgets.RadioButtonGroup(label="mode", options=list(sweep.SWEEP_MODES), value="both",
                                                color="primary", variant="outline")
        self.name = pn.widgets.TextInput(label="Sweep name (its folder under data/)", value=default_name(), width=300)
        self.run_button = pn.widgets.Button(label="Run sweep", color="primary")
        self.stop_button = pn.widgets.Button(label="Stop sweep", color="danger", disabled=True)
        self.open_button = pn.widgets.Button(label="Open results")
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.status = pn.pane.Markdown("No sweep yet.", sizing_mode="stretch_width")
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", bar_color="primary")
        self.x_select = pn.widgets.Select(label="against key", options=[], width=220)
        self.metric_select = pn.widgets.Select(label="metric", options=[], width=220)
        self.log_y = pn.widgets.Checkbox(label="log y", value=False)
        self.plot = MetricPlot()
        self.table = pn.pane.DataFrame(self.frame, index=False, sizing_mode="stretch_width", max_rows=200)
        self.keys.param.watch(lambda _e: self._sync_value_inputs(), "value")
        for widget in (self.x_select, self.metric_select, self.log_y):
            widget.param.watch(lambda _e: self._draw(), "value")
        self.run_button.on_click(lambda _e: self.start())
        self.stop_button.on_click(lambda _e: self.stop())
        self.open_button.on_click(lambda _e: self.open())

    # input -----------------------------------------------------------------------------------
    def _sync_value_inputs(self) -> None:
        for key in self.keys.value:
            if key not in self.value_inputs:
                doc = Config.param[key].doc if key in KEYS else ""
                self.value_inputs[key] = pn.widgets.TextInput(
                    label=f"{key} values", placeholder=f"e.g. {example_values(key) if key in KEYS else '1, 2'}",
                    description=doc, sizing_mode="stretch_width")
        self.values_box.objects = [self.value_inputs[k] for k in self.keys.value]

    def set_values(self, values: Mapping[str, str]) -> None:
        """Choose the keys and type their values (as the widgets would)."""
        self.keys.value = list(values)
        for key, text in values.items():
            self.value_inputs[key].value = text

    def grid(self) -> dict[str, list]:
        """The swept keys and their checked values; raises InputError."""
        keys = list(self.keys.value)
        if not keys:
            raise InputError("choose at least one key to sweep")
        if len(keys) > MAX_KEYS:
            raise InputError(f"choose at most {MAX_KEYS} keys to sweep, not {len(keys)}")
        return {key: parse_values(key, self.value_inputs[key].value if key in self.value_inputs else "")
                for key in keys}

    def plan(self) -> tuple[SweepPlan, dict, dict]:
        """Check everything and work out the runs, writing nothing; raises InputError."""
        grid = self.grid()
        size = math.prod(len(v) for v in grid.values())
        if size > MAX_RUNS:
            raise InputError(f"the sweep has {size} runs; the dashboard runs at most {MAX_RUNS} "
                             f"(nbody-runner sweep --samples K runs K random points of a bigger grid)")
        name = self.name.value.strip()
        if not name:
            name = self.name.value = default_name()
        base = base_document(self.base_toml(), list(grid))
        try:
            plan = sweep.plan_sweep(base, grid, mode=self.mode.value, name=name, data_dir=self.data_dir)
        except InputError as err:
            raise InputError(str(err).replace("(see --name)", "(the sweep name box)")) from None
        return plan, base, grid

    # the sweep -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.sweep is not None and self.sweep.running

    def start(self) -> bool:
        """Start the sweep in the background; False (with the reason shown) if not."""
        if self.running:
            self._show_error("a sweep is already running in this session; stop it first")
            return False
        try:
            plan, base, grid = self.plan()
        except InputError as err:
            self._show_error(str(err))
            return False
        if not _claim(plan.root):
            self._show_error(f"sweep '{plan.name}' is running in another session; choose another name")
            return False
        if not Job.slot_free():
            _unclaim(plan.root)
            self._show_error("the server is busy: every job slot is taken; try again when a run ends")
            return False
        self.error.visible = False
        self.sweep = LocalSweep(plan, base, grid)
        self._root, self._doc, self._stamp, self._finished_shown = plan.root, None, None, False
        self._set_choices(list(grid), metric_columns({"mode": plan.mode, "grid": grid}))
        self._show_frame(pd.DataFrame())
        self.progress.value = 0
        self.status.object = f"Sweep '{plan.name}': {len(plan.runs)} run(s), starting a local cluster..."
        self._set_running(True)
        self.sweep.start()
        if pn.state.curdoc is not None:
            self._callback = pn.state.add_periodic_callback(self.refresh, period=REFRESH_PERIOD_MS)
        return True

    def stop(self) -> None:
        """Stop the sweep: its runs are cancelled (a rerun resumes them); never blocks."""
        if self.running:
            self.sweep.stop()
            self.stop_button.disabled = True
            self.status.object = f"Sweep '{self.sweep.plan.name}': stopping..."

    def open(self) -> bool:
        """Show the results of the sweep named in the name box (one that ran earlier)."""
        if self.running:
            return False
        name = self.name.value.strip()
        root = Path(self.data_dir if self.data_dir is not None else DATA_DIR).resolve() / name
        doc = read_results(root) if name else None
        if doc is None:
            self._show_error(f"no sweep results in '{root}'")
            return False
        self.error.visible = False
        self.sweep = None
        self._root, self._doc, self._stamp = root, None, None
        self._set_choices(list(doc.get("grid") or {}), metric_columns(doc))
        self.refresh()
        return True

    def refresh(self) -> bool:
        """Re-read the results into the table and the plot (the periodic callback while a
        sweep runs); returns whether the sweep is still running."""
        if self._root is None:
            return False
        sweep_ = self.sweep
        running = sweep_ is not None and sweep_.running
        path = self._root / "results.json"
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        changed = stamp is not None and stamp != self._stamp
        doc = read_results(self._root) if changed else self._doc
        with pn.io.hold():
            if changed and doc is not None:
                self._stamp, self._doc = stamp, doc
                self._show_frame(results_frame(doc))
            if running:
                self._running_status()
            elif sweep_ is not None and not self._finished_shown:
                self._finish()
            elif doc is not None and sweep_ is None:
                self._counts_status(f"Sweep '{doc.get('sweep', self._root.name)}'")
        return running

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the sweep and the callback (called when the browser tab goes away)."""
        if self.sweep is not None:
            self.sweep.stop()
            self.sweep.join(timeout)
        self._stop_callback()

    def _stop_callback(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    # display ---------------------------------------------------------------------------------
    def _show_error(self, message: str) -> None:
        self.error.object = f"**error:** {message}"
        self.error.visible = True

    def _set_running(self, running: bool) -> None:
        for widget in (self.keys, self.mode, self.name, self.run_button, self.open_button,
                       *self.value_inputs.values()):
            widget.disabled = running
        self.stop_button.disabled = not running

    def _set_choices(self, keys: list[str], metrics: list[str]) -> None:
        self.x_select.options = keys
        if self.x_select.value not in keys:
            self.x_select.value = keys[0] if keys else None
        self.metric_select.options = metrics
        if self.metric_select.value not in metrics:
            preferred = [m for m in ("max_rel_energy_error", "loss") if m in metrics]
            self.metric_select.value = (preferred or metrics or [None])[0]

    def _show_frame(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.table.object = frame.drop(columns=["run_dir"], errors="ignore")
        self._draw()

    def _draw(self) -> None:
        keys = list(self._doc.get("grid") or {}) if self._doc else list(self.x_select.options)
        self.plot.update(self.frame, self.x_select.value, self.metric_select.value,
                         [k for k in keys if k != self.x_select.value], self.log_y.value)

    def _counts(self) -> tuple[int, int, int, int]:
        doc = self._doc or {}
        ok, failed, pending = (int(doc.get(k, 0)) for k in (STATUS_OK, STATUS_FAILED, STATUS_PENDING))
        total = int(doc.get("runs_total", ok + failed + pending))
        return ok, failed, pending, total

    def _counts_status(self, head: str, tail: str = "") -> None:
        ok, failed, _, total = self._counts()
        self.progress.value = int(100 * (ok + failed) / total) if total else 0
        text = f"{head}: {ok + failed}/{total} runs done ({ok} ok, {failed} failed)"
        self.status.object = text + tail

    def _running_status(self) -> None:
        s = self.sweep
        elapsed = time.monotonic() - s.started
        link = next((m.group(1) for line in s.lines for m in [re.search(r"dashboard (\S+)", line)] if m), None)
        tail = f" · {elapsed:.0f} s" + (f" · [Dask dashboard]({link})" if link else "")
        if s.stopped:
            self.status.object = f"Sweep '{s.plan.name}': stopping..."
        elif self._doc is None:
            self.status.object = f"Sweep '{s.plan.name}': {len(s.plan.runs)} run(s), starting{tail}"
        else:
            self._counts_status(f"Sweep '{s.plan.name}'", tail)

    def _finish(self) -> None:
        s = self.sweep
        self._finished_shown = True
        self._stop_callback()
        self._set_running(False)
        elapsed = (s.ended or time.monotonic()) - s.started
        if s.doc is not None:
            self._doc, self._stamp = s.doc, None
            self._show_frame(results_frame(s.doc))
        head = f"Sweep '{s.plan.name}'"
        if s.error:
            self._show_error(s.error)
            self.status.object = f"{head} failed after {elapsed:.1f} s."
        elif s.stopped and (s.cancelled or s.doc is None):  # (a Stop after the last run ended changes nothing)
            if self._doc is None:
                self.status.object = f"{head} stopped before any run started."
            else:
                _, _, pending, _ = self._counts()
                self._counts_status(f"{head} stopped after {elapsed:.1f} s",
                                    f"; {pending} not run. Run it again (same name) to finish it.")
        else:
            self._counts_status(f"{head} finished in {elapsed:.1f} s")

    def panel(self) -> pn.Column:
        intro = pn.pane.Markdown(
            "Run the dashboard's current settings over a grid of values, on this machine's cores "
            "(the same as `nbody-runner sweep`, see docs/SWEEPS.md). Type each key's values separated by "
            "commas (`1e-4, 2e-4`; lists in brackets: `[64, 64], [128]`). A swept key applies to every phase "
            "(it replaces a `[simulate]` override). The runs land in `data/<name>/`; running a sweep again "
            "under the same name skips the runs that are done.", sizing_mode="stretch_width")
        return pn.Column(
            intro,
            pn.Row(self.keys, pn.Column(pn.pane.Markdown("Each run does (`--mode`)"), self.mode)),
            self.values_box,
            pn.Row(self.name, self.run_button, self.stop_button, self.open_button),
            self.error, self.status, self.progress,
            pn.Row(self.metric_select, self.x_select, self.log_y),
            self.plot.panel(), self.table, sizing_mode="stretch_width")
