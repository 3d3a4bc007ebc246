"""The Runs tab: open a run directory under data/, read its config, metrics and simulation
summaries, and follow a run that is still going (headless or not) by tailing metrics.jsonl
into the same live plots as a dashboard job."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import panel as pn

from nbody_engine.events import EpochFinished
from nbody_engine.runs import DATA_DIR

from .live import LivePlots

FOLLOW_PERIOD_MS = 1000


def list_runs(data_dir: Path) -> list[str]:
    """Run directories (those with a config.toml), newest first."""
    if not data_dir.is_dir():
        return []
    runs = [p for p in data_dir.iterdir() if (p / "config.toml").is_file()]
    return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


def read_metrics(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete JSON lines of ``path`` from byte ``offset``; returns them and the new offset."""
    if not path.is_file():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    lines = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
    return lines, offset + len(complete)


class RunsView:
    def __init__(self, live: LivePlots, data_dir: Path | str = DATA_DIR) -> None:
        self.live = live
        self.data_dir = Path(data_dir)
        self.select = pn.widgets.Select(label="run directory", options=list_runs(self.data_dir), width=300)
        self.refresh = pn.widgets.Button(label="Refresh list")
        self.follow = pn.widgets.Toggle(label="Follow its metrics.jsonl live", color="default")
        self.config_pane = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.metrics_pane = pn.pane.DataFrame(pd.DataFrame(), sizing_mode="stretch_width", max_rows=20)
        self.summary_pane = pn.pane.JSON({}, depth=2, sizing_mode="stretch_width")
        self._offset = 0
        self._callback = None
        self.refresh.on_click(lambda _e: self.update_list())
        self.select.param.watch(lambda _e: self.show(), "value")
        self.follow.param.watch(self._toggle_follow, "value")
        self.show()  # the Select starts on the newest run without telling its watcher

    def update_list(self) -> None:
        self.select.options = list_runs(self.data_dir)

    @property
    def run_dir(self) -> Path | None:
        return self.data_dir / self.select.value if self.select.value else None

    def show(self) -> None:
        run = self.run_dir
        if run is None:
            return
        try:
            config = (run / "config.toml").read_text()
            metrics, _ = read_metrics(run / "metrics.jsonl")
            summaries = {p.parent.name: json.loads(p.read_text()) for p in sorted((run / "sim").glob("*/summary.json"))}
        except (OSError, ValueError) as err:  # a run directory being deleted, or a damaged file
            self.config_pane.object = f"cannot read run '{run.name}': {err}"
            return
        self.config_pane.object = f"```toml\n{config}```"
        self.metrics_pane.object = pd.DataFrame(metrics).tail(20)
        self.summary_pane.object = summaries

    def _toggle_follow(self, event) -> None:
        if event.new and self.run_dir is not None:
            self.live.reset_epochs()
            self._offset = 0
            self.poll()
            if pn.state.curdoc is not None:
                self._callback = pn.state.add_periodic_callback(self.poll, period=FOLLOW_PERIOD_MS)
        else:
            self.close()

    def poll(self) -> int:
        """Feed new metrics lines of the followed run to the live plots; returns how many."""
        lines, self._offset = read_metrics(self.run_dir / "metrics.jsonl", self._offset)
        events = [EpochFinished(m["epoch"], m) for m in lines]
        if events:
            self.live.ingest(events)
        return len(events)

    def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def panel(self) -> pn.Column:
        return pn.Column(pn.Row(self.select, self.refresh, self.follow),
                         pn.pane.Markdown("Following feeds the per-epoch plots of the Training tab."),
                         pn.Row(self.config_pane, self.summary_pane), self.metrics_pane, sizing_mode="stretch_width")
