"""The Runs tab: every run directory under data/ in a table that keeps itself up to date
(name, tags, mode, start, status, key settings, final metrics, notes; sortable, filterable by
any column and by tag, its columns chosen), the runs ticked there overlaid
(:func:`explorer.compare.runs_overlay`), the notes and tags of the last one edited
(:mod:`explorer.run_notes`), and a run followed live.

Following reads the run's ``progress.jsonl`` (:mod:`nbody_engine.runs.progress_log`), written by
``nbody-runner`` and by the dashboard's own jobs alike, and hands its events to ``feed``: the
Explorer passes the path its own jobs' events take, so a followed run fills the same plots and
the header. Whether a run is still going is its directory's lock; every file of a run folder is read
through :mod:`nbody_engine.runs.reader`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import panel as pn

from nbody_engine.events import EpochFinished
from nbody_engine.runs.directory import DATA_DIR, RunDirectory
from nbody_engine.runs.progress_log import ProgressReader
from nbody_engine.runs.reader import (last_metrics, list_runs, phase_setting, read_config, read_metrics, read_notes,
                                      run_status, sim_summaries, summary_value)

from .compare import COMPACT_TABLE, runs_overlay, scientific_formatters, summary_table
from .live import LivePlots
from .run_notes import NotesEditor
from .schedule import every

FOLLOW_PERIOD_MS = 500
FOLLOW_CHUNK_BYTES = 256_000  # of a followed run's log per poll: replaying a long run never freezes the page
REFRESH_PERIOD_MS = 2000
SETTINGS = {"N": "num_particles", "orbits": "num_orbits", "epochs": "epochs", "lr": "lr",
            "threshold": "energy_threshold", "features": "feature_type"}
METRICS = ("sim max |dE/E|", "train max |dE/E|", "final loss", "epochs done")
REAL_NUMBERS = ("lr", "threshold", "final loss", "train max |dE/E|", "sim max |dE/E|")
# the final metrics next to the run and its status: in view at 1600 px however long the run's name
COLUMNS = ("run", "tags", "status", *METRICS, "started", "mode", *SETTINGS, "policy", "notes")
SHOWN = ("tags", "status", *METRICS, "started", "mode", "N", "orbits", "notes")  # what the chooser starts with
ANNOTATIONS = ("tags", "notes")  # the researcher's, not the run's: a change to them redraws no overlay


def run_row(root: Path) -> dict:
    """One row of the runs table for the run directory ``root``."""
    doc = read_config(root)
    phases = [p for p, there in (("train", (root / "metrics.jsonl").is_file()), ("simulate", (root / "sim").is_dir()))
              if there]
    last_epoch = last_metrics(root)
    try:
        notes = read_notes(root)
    except ValueError as err:  # a damaged notes.json spoils no more than its own cells
        notes = {"notes": f"unreadable: {err}", "tags": []}
    return {"run": root.name, "tags": ", ".join(notes["tags"]),
            "mode": "both" if len(phases) == 2 else "".join(phases) or "starting",
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((root / "config.toml").stat().st_mtime)),
            "status": run_status(root),
            **{column: phase_setting(doc, "train", key) for column, key in SETTINGS.items()},
            "policy": phase_setting(doc, "simulate", "integrator_mode") if "simulate" in phases else None,
            "epochs done": last_epoch["epoch"] + 1 if "epoch" in last_epoch else None,
            "final loss": last_epoch.get("loss"), "train max |dE/E|": last_epoch.get("rel_dE_max"),
            "sim max |dE/E|": _worst(sim_summaries(root)), "notes": notes["notes"]}


def _worst(summaries: dict[str, dict]) -> float | None:
    """The largest max |dE/E| over a run's simulations (each reduced by ``summary_value``)."""
    values = [v for s in summaries.values() if (v := summary_value(s, "max_rel_energy_error")) is not None]
    return max(values) if values else None


def runs_table(data_dir: Path) -> pd.DataFrame:
    """Every run under ``data_dir``, newest first; a run that cannot be read says so in its status."""
    rows = []
    for name in list_runs(data_dir):
        try:
            rows.append(run_row(data_dir / name))
        except (OSError, ValueError) as err:  # a run directory being deleted, or a damaged file
            rows.append({"run": name, "status": f"unreadable: {err}"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def run_tags(frame: pd.DataFrame) -> pd.Series:
    """Each row's tags as a set (the table holds them joined by commas)."""
    return frame["tags"].map(lambda text: {t.strip() for t in text.split(",") if t.strip()} if isinstance(text, str)
                             else set())


def tagged(frame: pd.DataFrame, tags: list[str]) -> pd.DataFrame:
    """The rows that carry every one of ``tags`` (all rows for none)."""
    return frame[run_tags(frame).map(set(tags).issubset)] if tags else frame


class RunsView:
    """The runs table, the overlay of the ticked runs, one run's details, and following a run.

    ``feed(events, started_at)`` receives a followed run's events (default: the live plots)."""

    def __init__(self, live: LivePlots, data_dir: Path | str = DATA_DIR, feed=None) -> None:
        self.live = live
        self.data_dir = Path(data_dir)
        self.feed = feed or (lambda events, _started_at: live.ingest(events))
        self.columns = pn.widgets.MultiChoice(label="Columns", options=list(COLUMNS[1:]), value=list(SHOWN),
                                              sizing_mode="stretch_width")
        self.tag_filter = pn.widgets.MultiChoice(label="Runs tagged (all of)", options=[], placeholder="any tags",
                                                 width=320)
        # long notes are cut at the column's edge (the whole text on hover), so rows stay one line high
        self.table = pn.widgets.Tabulator(runs_table(self.data_dir), selectable="checkbox", disabled=True,
                                          show_index=False, header_filters=True, layout="fit_data_table",
                                          sorters=[{"field": "started", "dir": "desc"}], hidden_columns=self._hidden(),
                                          widths={"notes": 240, "tags": 120}, frozen_columns=["run"],
                                          formatters=scientific_formatters(REAL_NUMBERS),
                                          configuration={"columnDefaults": {"tooltip": True}},
                                          stylesheets=[COMPACT_TABLE], height=440,
                                          sizing_mode="stretch_width")  # 10+ rows in view
        self.table.add_filter(pn.bind(tagged, tags=self.tag_filter))
        self._update_tag_choices()
        self.notes_editor = NotesEditor(self.data_dir, on_saved=lambda _run: self.refresh())
        self.table_slot = pn.Column(self.table, sizing_mode="stretch_width")
        self._shown = True
        self.follow = pn.widgets.Toggle(label="Follow the last ticked run live (Training and Simulation tabs)",
                                        color="default", width=420)
        self.message = pn.pane.Markdown("Tick runs in the table to overlay them.", sizing_mode="stretch_width")
        self.overlay = pn.Column(sizing_mode="stretch_width")
        self.details = pn.Column(sizing_mode="stretch_width")
        self.followed: str | None = None
        self._reader: ProgressReader | None = None
        self._metrics_offset = 0
        self._follow_callback = None
        self._refresh_callback = every(self.refresh, REFRESH_PERIOD_MS)
        self._tick_order: list[str] = []
        self._refreshing = False
        self.table.param.watch(self._ticked, "selection")
        self.columns.param.watch(lambda _e: setattr(self.table, "hidden_columns", self._hidden()), "value")
        self.follow.param.watch(self._toggle_follow, "value")

    # the table -----------------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """The ticked runs, in the order they were ticked: the last is the one whose details and
        notes show (the table's order moves as runs are written)."""
        return list(self._tick_order)

    def _ticked(self, _event=None) -> None:
        if self._refreshing:  # refresh puts the ticks back itself, in their order
            return
        frame = self.table.value
        names = [frame["run"].iloc[i] for i in self.table.selection if i < len(frame)]
        self._tick_order = [n for n in self._tick_order if n in names] + [n for n in names if n not in self._tick_order]
        self.show_selection()

    def _hidden(self) -> list[str]:
        return [c for c in COLUMNS[1:] if c not in self.columns.value]

    def _update_tag_choices(self) -> None:
        """Offer every tag of the table (and keep those chosen, so a filter never drops by itself)."""
        known = set().union(*run_tags(self.table.value)) if len(self.table.value) else set()
        self.tag_filter.options = sorted(known | set(self.tag_filter.value))

    def set_shown(self, shown: bool) -> None:
        """Put the table on the page, brought up to date, or take it off (then it is not refreshed
        and its cells leave the page's text). Put back, it reaches the browser as a new table with
        its current rows: an update to the table being redrawn in the tab can arrive while
        Tabulator draws it, which drops the update (a stopped run kept reading 'running')."""
        self._shown = shown
        if shown:
            self.refresh()
        self.table_slot.objects = [self.table] if shown else []

    def refresh(self) -> None:
        """Re-read data/: new runs appear (the table sorts them), statuses and final metrics move
        on, the ticks stay on their runs; the overlay is redrawn when a ticked run changed."""
        if not self._shown:
            return
        shown = self.table.value
        frame = stable_order(runs_table(self.data_dir), list(shown["run"]))
        if frame.equals(shown):
            return
        ticked = self.selected
        fresh, old = (f.set_index("run").drop(columns=list(ANNOTATIONS)) for f in (frame, shown))
        changed = {run for run in ticked if run not in fresh.index or not fresh.loc[run].equals(old.loc[run])}
        self._refreshing = True
        try:
            with pn.io.hold():
                self.table.value = frame
                self.table.selection = [i for i, name in enumerate(frame["run"]) if name in ticked]
                self._update_tag_choices()
        finally:
            self._refreshing = False
        self._tick_order = [name for name in ticked if name in set(frame["run"])]
        if changed:
            self.show_selection()

    def show_selection(self) -> None:
        runs = self.selected
        self.notes_editor.show(runs[-1] if runs else None)
        if not runs:
            self.message.object = "Tick runs in the table to overlay them."
            self.overlay.objects, self.details.objects = [], []
            return
        self.message.object = f"Overlaid: {', '.join(runs)}. Details of '{runs[-1]}' below."
        self.overlay.objects = [runs_overlay({name: self.data_dir / name for name in runs})]
        self.details.objects = [self.run_details(runs[-1])]

    def run_details(self, name: str) -> pn.Column:
        """One run: its simulation summaries (or why there are none), last epochs and config."""
        root = self.data_dir / name
        try:
            config = (root / "config.toml").read_text()
            metrics, _ = read_metrics(root / "metrics.jsonl")
            summaries = sim_summaries(root)
        except (OSError, ValueError) as err:
            return pn.Column(pn.pane.Alert(f"cannot read run '{name}': {err}", alert_type="warning"))
        sims = pn.pane.DataFrame(summary_table(summaries), float_format="{:.4g}".format) if summaries else \
            pn.pane.Markdown(f"**'{name}' has no simulation yet.** Simulate it with `nbody-runner simulate --config "
                             f"{root / 'config.toml'}` (or from the Simulate tab).")
        epochs = pn.pane.DataFrame(pd.DataFrame(metrics).tail(10), float_format="{:.4g}".format, index=False) \
            if metrics else pn.pane.Markdown(f"'{name}' has no training epochs (a simulation-only run).")
        return pn.Column(f"### Run '{name}'", "**Simulations**", sims, "**Last epochs**", epochs,
                         pn.Card(pn.pane.Markdown(f"```toml\n{config}```"), title="config.toml", collapsed=True,
                                 sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    # following -----------------------------------------------------------------------------
    def _toggle_follow(self, event) -> None:
        if event.new and self.selected:
            self.start_following(self.selected[-1])
        else:
            self.close_follow()

    def start_following(self, name: str) -> None:
        """Empty the live plots and replay run ``name``'s progress so far; go on with :meth:`poll`."""
        self.close_follow()
        self.followed = name
        self._reader = ProgressReader(RunDirectory(name, self.data_dir).progress_path)
        self._metrics_offset = 0
        self._reset_plots()
        self.poll()
        self._follow_callback = every(self.poll, FOLLOW_PERIOD_MS)

    def _reset_plots(self) -> None:
        try:
            doc = read_config(self.data_dir / self.followed)
        except (OSError, ValueError):
            doc = {}
        cfg = {k: phase_setting(doc, "train", k) for k in ("E_lower", "E_upper", "L_lower", "L_upper",
                                                            "energy_threshold")}
        self.live.reset({"E": (cfg["E_lower"], cfg["E_upper"]), "L": (cfg["L_lower"], cfg["L_upper"]),
                         "threshold": cfg["energy_threshold"]})

    def poll(self) -> int:
        """Feed what the followed run reported since the last poll; returns how many events.
        A run from before the progress log is followed through its metrics.jsonl."""
        if self._reader is None:
            return 0
        if self._reader.path.is_file():
            events = self._reader.read(max_bytes=FOLLOW_CHUNK_BYTES)
            if self._reader.restarted:  # a new run in that directory
                self._reset_plots()
        else:
            lines, self._metrics_offset = read_metrics(self._reader.path.with_name("metrics.jsonl"),
                                                       self._metrics_offset)
            events = [EpochFinished(m["epoch"], m) for m in lines]
        if events:
            self.feed(events, self._reader.started_at)
        return len(events)

    def close_follow(self) -> None:
        if self._follow_callback is not None:
            self._follow_callback.stop()
            self._follow_callback = None
        self._reader = None
        self.followed = None

    def close(self) -> None:
        self.close_follow()
        if self._refresh_callback is not None:
            self._refresh_callback.stop()
            self._refresh_callback = None

    def panel(self) -> pn.Column:
        return pn.Column(pn.pane.Markdown("Every run under `data/`, headless or from this dashboard; the table "
                                          "updates itself. Click a header to sort, type in the row under it to "
                                          "filter, choose the columns and the tags to show, tick runs to overlay "
                                          "them; the last one ticked gets its notes and tags edited below."),
                         pn.Row(self.tag_filter, self.columns, sizing_mode="stretch_width"),
                         self.table_slot, pn.Row(self.follow, self.message, sizing_mode="stretch_width"),
                         self.notes_editor.panel(), self.overlay, self.details, sizing_mode="stretch_width")



def stable_order(frame: pd.DataFrame, shown: list[str]) -> pd.DataFrame:
    """``frame``'s rows with the runs already ``shown`` first, in their order, then new ones."""
    position = {name: i for i, name in enumerate(shown)}
    order = sorted(range(len(frame)), key=lambda i: (position.get(frame["run"].iloc[i], len(shown)), i))
    return frame.iloc[order].reset_index(drop=True)
