"""The Sweeps tab: run the dashboard's settings over a grid of up to three keys on this
machine's cores (``nbody_engine.sweep``, what ``nbody-runner sweep`` runs), or search them with
Optuna (TPE or random, over the typed values or ranges ``1e-4 .. 1e-2 log``), watch the results
table fill in, and plot a chosen metric against a chosen swept key or the runs in parallel
coordinates coloured by it (:mod:`explorer.sweep_results`).

The sweep is an ordinary background job of the session (explorer/background.py, as the
Explorer's runs) whose work is ``run_sweep`` with the job's cancellation token and event queue;
Stop cancels the token. Every second the session drains the job's events and re-reads the
sweep's results (``read_results(..., live=True)``: the table with the runs running now).
"""

from __future__ import annotations

import math
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import panel as pn

from nbody_engine import sweep
from nbody_engine.config.errors import InputError
from nbody_engine.config.loading import PHASES
from nbody_engine.config.schema import Config, KEYS, PATH_KEYS
from nbody_engine.runs.directory import DATA_DIR
from nbody_engine.sweep import ClusterReady, SweepPlan, WorkersNotice
from nbody_engine.sweep.results import STATUSES
from nbody_engine.sweep.search_options import PRUNERS, SAMPLERS

from .background import BackgroundJob
from .jobs import Job, JobDone
from .sweep_plot import results_frame
from .sweep_results import SweepResults

MAX_KEYS = 3
# the runs the progress bar counts: those that got to their end (cancelled ones run again)
FINISHED = ("ok", "failed", "pruned")
# file paths are not swept from the page: the page reads files only where the server allows
# (explorer/files.py), and a swept path would go round that check
SWEEPABLE_HERE = [k for k in sweep.SWEEPABLE if k not in PATH_KEYS]
MAX_RUNS = 1000  # a bigger grid belongs to ``nbody-runner sweep --samples``
REFRESH_PERIOD_MS = 1000
CLOSE_TIMEOUT = 5.0  # s that closing the session waits for a stopped sweep to end
WHERE = "sweep values"

# Sweeps running in this server process, by folder: two sessions must not run the same sweep.
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


SEARCHES = ["grid", *SAMPLERS]  # grid: every point; else an Optuna sampler


def parse_values(key: str, text: str) -> list | dict:
    """The values typed for ``key``, checked as the CLI checks them, or a search's range typed
    as ``low .. high`` (``log`` after it: log-uniform), which the plan checks; raises InputError."""
    low, dots, rest = (text or "").partition("..")
    if not dots:
        return sweep.parse_values(key, text, WHERE)
    high, _, scale = rest.strip().partition(" ")
    if scale.strip() not in ("", "log"):
        raise InputError(f"{WHERE}: '{key}': a range is 'low .. high' or 'low .. high log', not {text!r}")
    ends = [sweep.parse_values(key, end, WHERE)[0] for end in (low, high)]
    return {"low": ends[0], "high": ends[1], "log": scale.strip() == "log"}


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


def sweep_work(plan: SweepPlan) -> Callable:
    """The job's work: ``run_sweep`` on a local cluster, reporting to the job's queue."""
    def work(reporter) -> dict:
        try:
            return {"sweep": sweep.run_sweep(plan, cancel=reporter.cancel, sink=reporter.emit)}
        finally:
            _unclaim(plan.root)
    return work


# --------------------------------------------------------------------------- the tab

class SweepsView:
    """The Sweeps tab of one session. ``base_toml`` returns the dashboard's settings as TOML."""

    def __init__(self, base_toml: Callable[[], str], data_dir: str | Path | None = None) -> None:
        self.base_toml = base_toml
        self.data_dir = data_dir  # None: data/ under the working directory when a sweep starts
        self.runner = BackgroundJob(self.refresh, REFRESH_PERIOD_MS, what="sweep", status="No sweep yet.")
        self.job: Job | None = None  # the sweep whose results are shown (None: one opened from disk)
        self.plan_: SweepPlan | None = None
        self._doc: dict | None = None
        self._root: Path | None = None
        self._started = 0.0
        self._cluster = ""
        self._notice = ""  # the sweep's last word about its workers ("no worker alive for 15 s: ...")
        self.keys = pn.widgets.MultiChoice(label=f"Keys to sweep (at most {MAX_KEYS})", options=SWEEPABLE_HERE,
                                           max_items=MAX_KEYS, placeholder="choose keys", width=360)
        self.values_box = pn.Column(sizing_mode="stretch_width")
        self.value_inputs: dict[str, pn.widgets.TextInput] = {}
        self.mode = pn.widgets.RadioButtonGroup(label="mode", options=list(sweep.SWEEP_MODES), value="both",
                                                color="primary", variant="outline")
        self.name = pn.widgets.TextInput(label="Sweep name (its folder under data/)", value=default_name(), width=300)
        self.search = pn.widgets.Select(label="points", options=SEARCHES, value="grid", width=120,
                                        description="grid: every combination; tpe / random: an Optuna search")
        self.trials = pn.widgets.IntInput(label="trials", value=20, start=1, end=MAX_RUNS, width=100)
        self.pruner = pn.widgets.Select(label="pruner", options=list(PRUNERS), value="median",
                                        width=120, description="stop trials whose per-epoch loss lags (training)")
        self.run_button = pn.widgets.Button(label="Run sweep", color="primary")
        self.stop_button = pn.widgets.Button(label="Stop sweep", color="danger", disabled=True)
        self.open_button = pn.widgets.Button(label="Open results")
        self.error = self.runner.error_alert()
        self.status = pn.pane.Markdown(self.runner.param.status, sizing_mode="stretch_width")
        self.progress = pn.indicators.Progress(value=self.runner.param.progress, max=100, sizing_mode="stretch_width",
                                               bar_color="primary")
        self.results = SweepResults()
        self.keys.param.watch(lambda _e: self._sync_value_inputs(), "value")
        self.run_button.on_click(lambda _e: self.start())
        self.stop_button.on_click(lambda _e: self.stop())
        self.open_button.on_click(lambda _e: self.open())

    # input -----------------------------------------------------------------------------------
    def _sync_value_inputs(self) -> None:
        for key in self.keys.value:
            if key not in self.value_inputs:
                doc = Config.param[key].doc if key in KEYS else ""
                example = sweep.example_values(key) if key in KEYS else "1, 2"
                self.value_inputs[key] = pn.widgets.TextInput(
                    label=f"{key} values", placeholder=f"e.g. {example}", description=doc, sizing_mode="stretch_width")
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

    def search_options(self) -> dict | None:
        """The Optuna search the page asks for, or None for a grid."""
        if self.search.value == "grid":
            return None
        pruner = self.pruner.value if self.mode.value != "simulate" else "none"  # simulate has no epochs
        return {"sampler": self.search.value, "trials": int(self.trials.value), "pruner": pruner}

    def plan(self) -> SweepPlan:
        """Check everything and work out the runs, writing nothing; raises InputError."""
        grid = self.grid()
        search = self.search_options()
        size = search["trials"] if search else math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values())
        if size > MAX_RUNS:
            raise InputError(f"the sweep has {size} runs; the dashboard runs at most {MAX_RUNS} "
                             f"(nbody-runner sweep --samples K runs K random points of a bigger grid)")
        name = self.name.value.strip()
        if not name:
            name = self.name.value = default_name()
        base = base_document(self.base_toml(), list(grid))
        try:
            return sweep.plan_sweep(base, grid, mode=self.mode.value, name=name, data_dir=self.data_dir, search=search)
        except InputError as err:
            raise InputError(str(err).replace("(see --name)", "(the sweep name box)")) from None

    # the sweep -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(self) -> bool:
        """Start the sweep in the background; False (with the reason shown) if not."""
        if self.runner.busy():
            return False
        try:
            plan = self.plan()
        except InputError as err:
            self._show_error(str(err))
            return False
        if not _claim(plan.root):
            self._show_error(f"sweep '{plan.name}' is running in another session; choose another name")
            return False
        try:
            job = self.runner.start(lambda: Job("sweep", "", work=sweep_work(plan)))
        except BaseException:
            _unclaim(plan.root)  # the job's work gives the claim back only once it runs
            raise
        if job is None:
            _unclaim(plan.root)
            return False
        self.job = job
        self.plan_, self._root, self._doc, self._cluster, self._notice = plan, plan.root, None, "", ""
        self._started = time.monotonic()
        grid = {a.column: a.describe() for a in plan.axes}
        self.results.set_choices(grid, sweep.plot_metrics({"mode": plan.mode, "grid": grid}))
        self.results.show(pd.DataFrame())
        self.runner.show(f"Sweep '{plan.name}': {plan.total or len(plan.runs)} run(s), starting a local cluster...", 0)
        self._set_running(True)
        return True

    def stop(self) -> None:
        """Stop the sweep: its runs are cancelled (a rerun resumes them); never blocks."""
        if self.running:
            self.runner.stop()
            self.stop_button.disabled = True
            self.runner.show(f"Sweep '{self.plan_.name}': stopping...")

    def open(self) -> bool:
        """Show the results of the sweep named in the name box (one that ran earlier)."""
        if self.running:
            return False
        name = self.name.value.strip()
        root = Path(self.data_dir if self.data_dir is not None else DATA_DIR).resolve() / name
        doc = sweep.read_results(root, live=True) if name else None
        if doc is None:
            self._show_error(f"no sweep results in '{root}'")
            return False
        self.runner.show_error(None)
        self.job, self._root, self._doc = None, root, None
        self.results.set_choices(doc.get("grid") or {}, sweep.plot_metrics(doc))
        self.refresh()
        return True

    def refresh(self) -> bool:
        """Drain the job's events and re-read the results into the table and the plot (the
        periodic callback while a sweep runs); returns whether the sweep is still running."""
        if self._root is None:
            return False
        job, alive = self.job, self.running  # alive first: a job that ends after has queued its JobDone
        events = job.poll() if job is not None else []
        self._cluster = next((e.label for e in events if isinstance(e, ClusterReady)), self._cluster)
        self._notice = next((e.message for e in reversed(events) if isinstance(e, WorkersNotice)), self._notice)
        doc = sweep.read_results(self._root, live=True)
        done = next((e for e in events if isinstance(e, JobDone)), None)
        with pn.io.hold():
            if doc is not None and (self._doc is None or doc["runs"] != self._doc["runs"]):
                self.results.show(results_frame(doc), doc.get("grid"))
            self._doc = doc or self._doc
            if done is not None:
                self._finish(done)
            elif alive:
                self._running_status()
            elif self._doc is not None and job is None:
                self._counts_status(f"Sweep '{self._doc.get('sweep', self._root.name)}'")
        return alive and done is None

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the sweep and the callback (called when the browser tab goes away)."""
        self.runner.close(timeout)

    # display ---------------------------------------------------------------------------------
    def _show_error(self, message: str) -> None:
        self.runner.show_error(message)

    def _set_running(self, running: bool) -> None:
        for widget in (self.keys, self.mode, self.name, self.run_button, self.open_button, self.search, self.trials,
                       self.pruner, *self.value_inputs.values()):
            widget.disabled = running
        self.stop_button.disabled = not running

    def _counts_status(self, head: str, tail: str = "") -> None:
        """The status line and the progress bar from the results' counts: the bar counts the runs
        that finished (ok, failed or pruned), not those cancelled (a rerun runs them again) nor
        those running; a search counts against its trials, which it makes as it goes."""
        doc = self._doc or {}
        total = max(int(doc.get("runs_total", 0)), int((doc.get("search") or {}).get("trials", 0)))
        finished = sum(int(doc.get(s, 0)) for s in FINISHED)
        shown = ", ".join(f"{doc.get(s, 0)} {s}" for s in STATUSES if doc.get(s, 0) or s in ("ok", "failed"))
        self.runner.show(f"{head}: {finished}/{total} runs finished ({shown}){tail}",
                         100 * finished / total if total else 0)

    def _running_status(self) -> None:
        name = self.plan_.name
        link = self._cluster.rsplit("dashboard ", 1)[-1] if "dashboard " in self._cluster else None
        tail = (f" · {time.monotonic() - self._started:.0f} s" + (f" · [Dask dashboard]({link})" if link else "")
                + (f"  \n{self._notice}" if self._notice else ""))
        if self.job.stopping:
            self.runner.show(f"Sweep '{name}': stopping...")
        elif self._doc is None:
            self.runner.show(f"Sweep '{name}': {self.plan_.total or len(self.plan_.runs)} run(s), starting{tail}")
        else:
            self._counts_status(f"Sweep '{name}'", tail)

    def _finish(self, done: JobDone) -> None:
        self.runner.ended()
        self._set_running(False)
        elapsed = time.monotonic() - self._started
        head = f"Sweep '{self.plan_.name}'"
        doc = done.results.get("sweep")
        if doc is not None:
            self._doc = doc
            self.results.show(results_frame(doc), doc.get("grid"))
        if done.error:
            self._show_error(done.error)
            self.runner.show(f"{head} failed after {elapsed:.1f} s.")
        elif doc is None:
            self.runner.show(f"{head} stopped before any run started.")
        elif doc.get("stopped"):
            self._counts_status(f"{head} stopped after {elapsed:.1f} s ({doc['stopped']})",
                                ". Run it again (same name) to finish it.")
        else:
            self._counts_status(f"{head} finished in {elapsed:.1f} s")

    def panel(self) -> pn.Column:
        intro = pn.pane.Markdown(
            "Run the dashboard's current settings over a grid of values, on this machine's cores "
            "(the same as `nbody-runner sweep`, see docs/SWEEPS.md). Type each key's values separated by "
            "commas (`1e-4, 2e-4`; lists in brackets: `[64, 64], [128]`). A swept key applies to every phase "
            "(it replaces a `[simulate]` override). The runs land in `data/<name>/`; running a sweep again "
            "under the same name skips the runs that are done. Every run uses the settings' `seed` (0 when "
            "it is empty), so the points are compared on the same initial conditions. **Search**: choose tpe or "
            "random under *points* for an Optuna search of *trials* runs over the typed values or ranges "
            "(`1e-4 .. 1e-2 log`, `0 .. 8`); a search run again under its name continues its study.",
            sizing_mode="stretch_width")
        return pn.Column(
            intro,
            pn.Row(self.keys, pn.Column(pn.pane.Markdown("Each run does (`--mode`)"), self.mode),
                   self.search, self.trials, self.pruner),
            self.values_box,
            pn.Row(self.name, self.run_button, self.stop_button, self.open_button),
            self.error, self.status, self.progress, self.results.panel(), sizing_mode="stretch_width")
