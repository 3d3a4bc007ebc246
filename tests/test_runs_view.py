"""The Runs tab in-process: the runs table over data/, the overlay of ticked runs, and following a
run through its progress log into the Explorer's plots and header (real runs of the engine)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import holoviews as hv
import panel as pn
import pytest

from background_run import BackgroundRun
from explorer import Explorer
from explorer.live import LivePlots
from explorer.runs_view import RunsView, runs_table
from nbody_engine.config.loading import load_configs
from nbody_engine.jobs.phases import run_phases
from nbody_engine.runs.reader import list_runs, read_metrics
from test_progress_log import TINY_TOML



def make_run(data: Path, name: str, mode: str = "both") -> None:
    path = data.parent / f"{name}.toml"
    path.write_text(TINY_TOML + f'save_name = "{name}"\n')
    run_phases(load_configs(mode, path), data_dir=data)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two finished runs: 'both_run' (trained and simulated), 'train_run' (trained only)."""
    data = tmp_path_factory.mktemp("runs") / "data"
    make_run(data, "both_run")
    make_run(data, "train_run", "train")
    return data


def metrics_line(epoch: int, loss: float = 0.5) -> str:
    return json.dumps({"epoch": epoch, "loss": loss, "acceptance_rate": 1.0, "retrain_iterations": 0,
                       "dt_mean": 0.01, "epoch_time_s": 0.1}) + "\n"


def test_read_metrics_returns_complete_lines_and_an_offset(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path, 5) == ([], 5)
    first = metrics_line(0) + metrics_line(1)
    partial = metrics_line(2)
    path.write_text(first + partial[:10])
    lines, offset = read_metrics(path)
    assert [m["epoch"] for m in lines] == [0, 1]
    assert offset == len(first.encode())
    assert read_metrics(path, offset) == ([], offset)  # still only half a line
    with path.open("a") as fh:
        fh.write(partial[10:] + metrics_line(3))
    lines, offset2 = read_metrics(path, offset)
    assert [m["epoch"] for m in lines] == [2, 3]
    assert offset2 == path.stat().st_size


def test_list_runs_finds_run_directories(tmp_path):
    data = tmp_path / "data"
    assert list_runs(data) == []
    (data / "r1").mkdir(parents=True)
    (data / "r1" / "config.toml").write_text("epochs = 2\n")
    (data / "not_a_run").mkdir()
    assert list_runs(data) == ["r1"]


@pytest.mark.slow
def test_the_table_has_a_row_per_run_with_mode_status_settings_and_final_metrics(data):
    table = runs_table(data).set_index("run")
    assert set(table.index) == {"both_run", "train_run"}
    assert table.loc["both_run", "mode"] == "both" and table.loc["train_run", "mode"] == "train"
    assert (table["status"] == "finished").all()
    assert (table["orbits"] == 2).all() and (table["epochs"] == 3).all() and (table["epochs done"] == 3).all()
    assert table.loc["both_run", "policy"] == "ml"
    summary = json.loads((data / "both_run/sim/ml_multi/summary.json").read_text())
    assert table.loc["both_run", "sim max |dE/E|"] == max(summary["max_rel_energy_error"])
    assert pd.isna(table.loc["train_run", "sim max |dE/E|"])
    last = json.loads((data / "train_run/metrics.jsonl").read_text().splitlines()[-1])
    assert table.loc["train_run", "final loss"] == last["loss"]


def test_a_damaged_run_is_a_row_that_says_so(tmp_path):
    run = tmp_path / "data" / "broken"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("epochs = [1\n")
    (row,) = runs_table(tmp_path / "data").to_dict("records")
    assert row["run"] == "broken" and row["status"].startswith("unreadable:")


@pytest.mark.slow
def test_a_new_run_appears_by_itself_and_ticks_stay_on_their_runs(data, tmp_path):
    view = RunsView(LivePlots(), data)
    view.table.selection = [list(view.table.value["run"]).index("train_run")]
    assert view.selected == ["train_run"]
    make_run(data, "newer_run", "train")
    view.refresh()  # what the session's periodic callback calls
    assert "newer_run" in list(view.table.value["run"])  # streamed in; the browser sorts by start
    assert view.selected == ["train_run"]
    (data / "newer_run" / "metrics.jsonl").unlink()  # its epochs gone: the row is patched
    view.refresh()
    assert view.table.value.set_index("run").loc["newer_run", "mode"] == "starting"
    assert view.selected == ["train_run"]
    view.close()


@pytest.mark.slow
def test_the_details_are_of_the_run_ticked_last_whatever_the_table_order(data):
    view = RunsView(LivePlots(), data)
    names = list(view.table.value["run"])
    for ticked in (["both_run", "train_run"], ["train_run", "both_run"]):
        view.table.selection = []
        for name in ticked:  # one tick at a time, as clicks come
            view.table.selection = [*view.table.selection, names.index(name)]
        assert view.selected == ticked
        heading = view.details.objects[0].objects[0].object
        assert heading == f"### Run '{ticked[-1]}'", heading
    make_run(data, "newest_run", "train")
    view.refresh()  # the table's rows move; the ticks keep their order
    assert view.selected == ["train_run", "both_run"]
    view.close()


@pytest.mark.slow
def test_ticked_runs_are_overlaid_and_a_run_without_a_simulation_says_so(data):
    view = RunsView(LivePlots(), data)
    names = list(view.table.value["run"])
    view.table.selection = [names.index("both_run"), names.index("train_run")]
    overlays = [p.object for p in view.overlay.select(pn.pane.HoloViews)]
    labels = {el.label for overlay in overlays for el in overlay}
    assert {"both_run", "train_run", "both_run / ml_multi"} <= labels
    for overlay in overlays:  # legends beside the data, never over it
        fig = hv.render(overlay)
        assert fig.legend and all(legend in fig.right for legend in fig.legend), overlay
    text = " ".join(p.object for p in view.overlay.select(pn.pane.Markdown))
    assert "train_run" in text and "no simulation yet" in text
    view.table.selection = [names.index("train_run")]  # its details: a message, not an empty object
    details = " ".join(p.object for p in view.details.select(pn.pane.Markdown))
    assert "'train_run' has no simulation yet" in details
    view.close()


@pytest.mark.slow
def test_following_a_finished_run_replays_it_into_every_plot_and_the_header(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = Explorer()
    e.runs.data_dir = data
    e.runs.refresh()
    e.runs.table.selection = [list(e.runs.table.value["run"]).index("both_run")]
    e.runs.follow.value = True
    for name in ("energy_error", "angular_momentum_error", "epoch_metrics", "orbit", "simulation", "sim_orbit"):
        assert len(e.live.frame(name)) > 0, name
    assert list(e.live.frame("epoch_metrics")["epoch"]) == [0, 1, 2]
    assert e.progress == 100
    assert e.status == "simulate finished."
    assert e.runs.poll() == 0  # nothing new
    e.runs.follow.value = False
    e.close()


@pytest.mark.slow
def test_following_a_live_headless_run(tmp_path):
    """A real nbody-runner in a subprocess, followed while it trains: its epochs arrive as it
    writes them, and the table calls it running until it ends."""
    (tmp_path / "run.toml").write_text(TINY_TOML.replace("epochs = 3", "epochs = 400"))
    proc = BackgroundRun(tmp_path, "train", "--config", "run.toml", "-s", "live")
    try:
        live = LivePlots()
        view = RunsView(live, tmp_path / "data")
        deadline = time.monotonic() + 240
        while len(live.frame("epoch_metrics")) < 2 and time.monotonic() < deadline:
            view.refresh()
            if view.followed is None and "live" in list(view.table.value["run"]):
                view.table.selection = [0]
                view.follow.value = True
            view.poll()
            time.sleep(0.2)
        assert len(live.frame("epoch_metrics")) >= 2 and len(live.frame("orbit")) > 0
        (row,) = runs_table(tmp_path / "data").to_dict("records")
        assert row["status"] == f"running (pid {proc.pid})"
    finally:
        proc.terminate()
        proc.wait(60)
    (row,) = runs_table(tmp_path / "data").to_dict("records")
    assert not row["status"].startswith("running")


def fake_run(data: Path, name: str, **notes) -> None:
    """A run folder with a config.toml only (a run that is starting); ``notes``: its notes.json."""
    (data / name).mkdir(parents=True)
    (data / name / "config.toml").write_text("epochs = 3\n")
    if notes:
        (data / name / "notes.json").write_text(json.dumps(notes))


def test_notes_and_tags_are_columns_and_the_tag_filter_keeps_the_runs_with_every_tag(tmp_path):
    data = tmp_path / "data"
    fake_run(data, "a", notes="first", tags=["baseline", "kepler"])
    fake_run(data, "b", notes="", tags=["kepler"])
    fake_run(data, "c")
    fake_run(data, "d")
    (data / "d" / "notes.json").write_text("{")
    view = RunsView(LivePlots(), data)
    table = view.table.value.set_index("run")
    assert (table.loc["a", "tags"], table.loc["a", "notes"]) == ("baseline, kepler", "first")
    assert table.loc["c", "tags"] == "" and table.loc["d", "notes"].startswith("unreadable: ")  # d's row is read
    assert view.tag_filter.options == ["baseline", "kepler"]
    view.tag_filter.value = ["kepler"]
    assert sorted(view.table.current_view["run"]) == ["a", "b"]
    view.tag_filter.value = ["kepler", "baseline"]
    assert list(view.table.current_view["run"]) == ["a"]
    view.close()


def test_the_column_chooser_hides_what_is_not_chosen(tmp_path):
    fake_run(tmp_path / "data", "a")
    view = RunsView(LivePlots(), tmp_path / "data")
    assert "sim max |dE/E|" not in view.table.hidden_columns and "lr" in view.table.hidden_columns
    view.columns.value = [c for c in view.columns.value if c != "notes"] + ["lr"]
    assert "notes" in view.table.hidden_columns and "lr" not in view.table.hidden_columns
    view.close()


def test_notes_typed_for_the_ticked_run_are_saved_in_its_folder_and_shown(tmp_path):
    data = tmp_path / "data"
    fake_run(data, "a")
    fake_run(data, "b")
    view = RunsView(LivePlots(), data)
    editor = view.notes_editor
    assert not editor.layout.visible  # nothing ticked
    view.table.selection = [list(view.table.value["run"]).index("a")]
    assert editor.layout.visible and editor.run == "a"
    editor.tags.value_input, editor.notes.value_input = "baseline,  kepler, baseline,", "lr too high"
    assert editor.save(), editor.message.object
    assert json.loads((data / "a" / "notes.json").read_text()) == {"notes": "lr too high",
                                                                  "tags": ["baseline", "kepler"]}
    assert view.table.value.set_index("run").loc["a", "tags"] == "baseline, kepler"  # the table shows them at once
    assert view.tag_filter.options == ["baseline", "kepler"]
    # another session saves first: this one writes nothing, says so, and replaces them on a second save
    (data / "a" / "notes.json").write_text(json.dumps({"notes": "theirs", "tags": []}))
    editor.notes.value_input = "mine"
    assert not editor.save() and "changed since this page read them" in editor.message.object
    assert json.loads((data / "a" / "notes.json").read_text())["notes"] == "theirs"
    assert editor.save() and json.loads((data / "a" / "notes.json").read_text())["notes"] == "mine"
    editor.tags.value_input = "a,b"
    view.table.selection = [list(view.table.value["run"]).index("b")]  # another run: its own (no) notes
    assert (editor.run, editor.tags.value, editor.notes.value) == ("b", "", "")
    view.close()
