"""The Sweeps tab in-process, without a browser: real sweeps on a LocalCluster in the view's
thread, refreshed by hand (as the session's periodic callback would), Stop, and the one-line
errors of bad input."""

from __future__ import annotations

import json
import tomllib

import pandas as pd
import pytest

from helpers import wait_until
from explorer import Explorer
from explorer import jobs as explorer_jobs
from explorer.sweep_plot import MetricPlot, ParallelPlot, table_frame
from explorer.sweep_results import SweepResults
from explorer.sweeps_view import SweepsView, base_document, parse_values
from nbody_engine.config.errors import InputError


@pytest.fixture
def explorer(tmp_path, monkeypatch):
    """An Explorer with tiny two-body settings whose sweeps land in tmp_path/data."""
    monkeypatch.chdir(tmp_path)
    e = Explorer()
    e.train.param.update(num_particles=2, num_orbits=2, seed=1, save_name="base")
    yield e
    e.close()


def finish(view, timeout: float = 90.0) -> None:
    """Refresh until the sweep's thread ends (bounded), as the periodic callback does."""
    wait_until(lambda: not view.refresh(), "the sweep's thread to end", timeout=timeout)
    assert not view.running, f"sweep still running after {timeout}s: {view.status.object}"


def points(plot: MetricPlot) -> dict:
    """The plotted points: the source named ``sweep_metric``."""
    return dict(plot.points.data)


def free_slots() -> int:
    """How many job slots are free (taken and given back at once)."""
    taken = 0
    while explorer_jobs._SLOTS.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        explorer_jobs._SLOTS.release()
    return taken


@pytest.mark.slow
def test_a_local_sweep_fills_the_table_and_the_plot(explorer, tmp_path):
    view = explorer.sweeps
    view.set_values({"steps": "20, 40"})
    view.mode.value = "simulate"
    view.name.value = "steps_scan"
    slots = free_slots()
    assert view.start(), view.error.object
    assert view.running and view.run_button.disabled and not view.stop_button.disabled
    assert free_slots() == slots - 1  # the sweep holds one job slot
    finish(view)
    assert not view.error.visible, view.error.object
    table = view.results.table.value
    assert len(table) == 2
    assert not {"worker", "slurm_job", "run_dir"} & set(table.columns)  # where runs ran is not a result
    assert list(table["status"]) == ["ok", "ok"], table.to_dict("records")
    assert sorted(table["steps"]) == [20, 40]
    assert (table["max_rel_energy_error"] > 0).all()
    assert "finished" in view.status.object and "2 ok, 0 failed" in view.status.object
    assert view.progress.value == 100
    assert view.run_button.disabled is False and view.stop_button.disabled
    assert free_slots() == slots
    # the plot: the chosen metric against the swept key, one point per run
    assert (view.results.x_select.value, view.results.metric_select.value) == ("steps", "max_rel_energy_error")
    assert "steps" not in view.results.metric_select.options  # a swept key is no metric
    plotted = points(view.results.plot)
    assert plotted["x"] == [20, 40]
    assert plotted["y"] == [table.set_index("steps").loc[s, "max_rel_energy_error"] for s in (20, 40)]
    view.results.metric_select.value = "wall_time_s"
    assert points(view.results.plot)["y"] == [table.set_index("steps").loc[s, "wall_time_s"] for s in (20, 40)]
    assert view.results.plot.figures[False].yaxis.axis_label == "wall_time_s"
    assert list(view.results.plot.figures[False].xaxis.ticker.ticks) == [20, 40]
    view.results.view.value = "parallel coordinates"  # the runs across steps and every metric they have
    assert not view.results.plot_box.visible and view.results.parallel.panel().visible
    assert sorted(view.results.parallel.lines.data["id"]) == sorted(table["id"])
    assert view.results.parallel.lines.data["value"] == sorted(table["wall_time_s"], reverse=True)
    # what it wrote: the ordinary sweep folder, the dashboard's settings as the base
    root = tmp_path / "data" / "steps_scan"
    doc = json.loads((root / "results.json").read_text())
    assert (doc["ok"], doc["failed"], doc["pending"]) == (2, 0, 0)
    assert (root / "results.csv").is_file()
    run = tomllib.loads((root / "runs" / table["id"][0] / "run.toml").read_text())
    assert (run["num_orbits"], run["seed"], run["save_name"]) == (2, 1, table["id"][0])
    # the same sweep again: every run is done, so nothing runs (no cluster either)
    assert view.start()
    finish(view, timeout=30)
    assert view._cluster == ""  # no cluster was started
    assert list(view.results.table.value["attempts"]) == [1, 1]
    assert "2 ok" in view.status.object


@pytest.mark.slow
def test_a_random_search_over_a_typed_range_runs_its_trials(explorer, tmp_path):
    view = explorer.sweeps
    view.set_values({"steps": "20 .. 60"})
    view.mode.value = "simulate"
    view.search.value, view.trials.value = "random", 3
    view.name.value = "steps_search"
    assert view.start(), view.error.object
    finish(view)
    assert not view.error.visible, view.error.object
    table = view.results.table.value
    assert len(table) <= 3 and set(table["status"]) == {"ok"}, table.to_dict("records")  # a point drawn twice runs once
    assert all(20 <= s <= 60 for s in table["steps"])
    root = tmp_path / "data" / "steps_search"
    doc = json.loads((root / "results.json").read_text())
    assert doc["search"]["sampler"] == "random" and doc["grid"]["steps"]["low"] == 20
    assert (root / "study.journal").is_file()
    assert len(points(view.results.plot)["x"]) == len(table)


def test_a_typed_range_is_checked(explorer):
    assert parse_values("lr", "1e-4 .. 1e-2 log") == {"low": 1e-4, "high": 1e-2, "log": True}
    assert parse_values("steps", "10..20") == {"low": 10, "high": 20, "log": False}
    with pytest.raises(InputError, match="a range is 'low .. high' or 'low .. high log'"):
        parse_values("lr", "1e-4 .. 1e-2 ln")
    view = explorer.sweeps
    view.set_values({"lr": "1e-4 .. 1e-2 log"})
    assert view.start() is False and "only a search can draw from" in view.error.object


@pytest.mark.slow
def test_stop_cancels_the_runs_and_a_second_session_cannot_run_the_same_sweep(explorer, tmp_path):
    view = explorer.sweeps
    view.set_values({"epochs": "100000, 100001, 100002"})  # trainings that cannot end before the stop
    view.mode.value = "train"
    view.name.value = "long"
    slots = free_slots()
    assert view.start(), view.error.object
    other = Explorer()
    try:
        other.sweeps.set_values({"steps": "20"})
        other.sweeps.name.value = "long"
        assert other.sweeps.start() is False
        assert "running in another session" in other.sweeps.error.object
    finally:
        other.close()
    runs = tmp_path / "data" / "long" / "runs"
    def one_running():
        view.refresh()
        return any(json.loads(p.read_text()).get("status") == "running" for p in runs.glob("*/status.json"))

    wait_until(one_running, "a run of the sweep to be running", timeout=60)
    view.stop()
    assert view.stop_button.disabled
    finish(view, timeout=40)
    assert not view.error.visible, view.error.object
    assert "stopped" in view.status.object
    table = view.results.table.value
    assert set(table["status"]) <= {"cancelled", "pending"} and "cancelled" in set(table["status"])
    for row in table.to_dict("records"):  # the cancelled runs say so; none reads like a crash
        assert row["error"] in ("cancelled: the sweep was interrupted", "not run: the sweep was cancelled"), row
        if row["status"] == "cancelled":  # the run's own record says so too
            status = json.loads((runs / row["id"] / "status.json").read_text())
            assert (status["status"], status["error"]) == (row["status"], row["error"])
    assert free_slots() == slots


@pytest.mark.parametrize("values, message", [
    ({"stepz": "1, 2"}, "unknown key 'stepz' in the sweep; did you mean 'steps'?"),
    ({"steps": " "}, "sweep values: 'steps' has no values; give at least one"),
    ({"steps": "20, many"}, "sweep values: 'steps' must be an integer, not 'many'"),
    ({"steps": "20, 20"}, "sweep values: 'steps' lists 20 twice"),
    ({"lr": "1e-3, -1"}, "sweep values: 'lr' must be greater than 0"),
    ({"hidden_dims": "64, 64"}, "'hidden_dims' takes lists; write each value in brackets"),
    ({"E_lower": "1.0"}, "'E_lower' (1.0) must not exceed 'E_upper'"),
    ({}, "choose at least one key to sweep"),
    ({"steps": "1", "lr": "1e-3", "epochs": "2", "seed": "1"}, "choose at most 3 keys"),
])
def test_bad_input_is_one_line_in_the_page_and_starts_nothing(explorer, tmp_path, values, message):
    view = explorer.sweeps
    view.set_values(values)
    slots = free_slots()
    assert view.start() is False
    assert view.error.visible and message in view.error.object, view.error.object
    assert "\n" not in view.error.object
    assert view.job is None and free_slots() == slots
    assert not (tmp_path / "data").exists()
    view.set_values({"steps": "20, 40"})
    view.name.value = "../elsewhere"
    assert view.start() is False
    assert "plain folder name" in view.error.object


def test_start_says_busy_when_every_job_slot_is_taken(explorer):
    view = explorer.sweeps
    view.set_values({"steps": "20"})
    taken = 0
    try:
        for _ in range(explorer_jobs.MAX_JOBS):
            assert explorer_jobs._SLOTS.acquire(timeout=10)  # a job of an earlier test may still be ending
            taken += 1
        assert view.start() is False
        assert view.error.visible and "busy" in view.error.object
        assert view.job is None
    finally:
        for _ in range(taken):
            explorer_jobs._SLOTS.release()


def test_values_are_parsed_and_checked_like_the_cli():
    assert parse_values("energy_threshold", "1e-4, 2e-4, 5e-4") == [1e-4, 2e-4, 5e-4]
    assert parse_values("hidden_dims", "[64, 64], [128]") == [[64, 64], [128]]
    assert parse_values("feature_type", "basic, rich") == ["basic", "rich"]
    assert parse_values("multi_orbit_sim", "true, False") == [True, False]
    assert parse_values("seed", "none, 3") == [None, 3]
    with pytest.raises(InputError, match="sweep values: 'feature_type' does not accept 'fancy'"):
        parse_values("feature_type", "fancy")


def test_a_swept_key_replaces_the_dashboards_phase_override(explorer):
    explorer.simulate.steps = 50  # a [simulate] override, next to the dashboard's multi_orbit_sim
    assert tomllib.loads(explorer.toml_text())["simulate"] == {"steps": 50, "multi_orbit_sim": True}
    base = base_document(explorer.toml_text(), ["steps"])
    assert base["simulate"] == {"multi_orbit_sim": True} and base["num_orbits"] == 2


def test_the_plot_draws_one_colour_per_value_of_the_other_keys():
    df = pd.DataFrame({"id": list("abcdef"), "status": ["ok"] * 5 + ["failed"],
                       "eps": [0.3, 0.2, 0.1] * 2, "feature_type": ["basic"] * 3 + ["rich"] * 3,
                       "loss": [1.0, 2.0, 3.0, 4.0, 5.0, None]})
    plot = MetricPlot()
    assert plot.panes[False].visible and not plot.panes[True].visible
    plot.update(df, "eps", "loss", ["feature_type"], log_y=True)
    assert plot.panes[True].visible and not plot.panes[False].visible
    plotted = points(plot)
    assert plotted["id"] == ["c", "b", "e", "a", "d"]  # by eps; the failed run is left out
    basic, rich = 'feature_type="basic"', 'feature_type="rich"'
    assert plotted["group"] == [basic, basic, rich, basic, rich]
    assert len(set(plotted["color"])) == 2
    assert plot.lines.data["xs"] == [[0.1, 0.2, 0.3], [0.2, 0.3]]  # one line per group
    assert plot.figures[True].legend.visible
    plot.update(df, "feature_type", "loss", ["eps"])  # text values: at their positions, labelled
    assert points(plot)["x"] == [0, 0, 0, 1, 1] and points(plot)["label"][-1] == '"rich"'
    assert plot.figures[False].xaxis.major_label_overrides == {0: '"basic"', 1: '"rich"'}
    assert plot.lines.data["xs"] == []
    plot.update(pd.DataFrame(), "eps", "loss")
    assert points(plot)["y"] == []


def test_the_page_offers_no_file_path_to_sweep():
    """A swept path would reach files the page may not read (explorer/files.py)."""
    from nbody_engine.config.schema import PATH_KEYS

    view = SweepsView(lambda: "")
    assert not set(view.keys.options) & set(PATH_KEYS)
    assert "epochs" in view.keys.options


def test_the_table_leaves_out_the_machinerys_columns_and_those_that_say_nothing():
    frame = pd.DataFrame({"id": ["a", "b"], "status": ["ok", "failed"], "hidden_dims": [[8, 8], [16]],
                          "loss": [0.5, None], "exit_code": [0, 0], "error": [None, None], "slurm_job": [None, None],
                          "host": ["n1", "n2"], "device": ["cpu", "cpu"], "worker": ["tcp://1", "tcp://2"],
                          "run_dir": ["runs/a", "runs/b"], "run_toml_sha1": ["x", "y"]})
    shown = table_frame(frame)
    assert list(shown.columns) == ["id", "status", "hidden_dims", "loss", "host"]  # host: the runs differ in it
    assert list(shown["hidden_dims"]) == ["[8, 8]", "[16]"]  # text: the column sorts
    failed = table_frame(frame.assign(exit_code=[0, 1], error=[None, "boom"]))
    assert {"exit_code", "error"} <= set(failed.columns)


@pytest.mark.parametrize("mode, metric", [("simulate", "max_rel_energy_error"), ("train", "rel_dE_max"),
                                          ("both", "max_rel_energy_error")])
def test_the_plot_opens_on_an_error_metric_and_keeps_a_chosen_one(mode, metric):
    from nbody_engine.sweep import plot_metrics

    results = SweepResults()
    results.set_choices({"eps": [0.1, 0.2]}, plot_metrics({"mode": mode, "grid": {"eps": []}}))
    assert results.metric_select.value == metric and results.log_y.value
    results.metric_select.value, results.log_y.value = "wall_time_s", False
    results.set_choices({"lr": [0.1, 0.2]}, plot_metrics({"mode": mode, "grid": {"lr": []}}))
    assert results.metric_select.value == "wall_time_s" and not results.log_y.value


def test_parallel_coordinates_draw_one_line_per_ok_run_coloured_by_the_metric():
    df = pd.DataFrame({"id": list("abcd"), "status": ["ok", "ok", "ok", "failed"],
                       "eps": [1e-3, 1e-2, 1e-1, 1.0], "feature_type": ["basic", "rich", "basic", "rich"],
                       "max_rel_energy_error": [1e-9, 1e-6, 1e-3, None], "wall_time_s": [3.0, 2.0, 1.0, 0.5]})
    plot = ParallelPlot()
    grid = {"eps": [1e-3, 1e-2, 1e-1, 1.0], "feature_type": ["basic", "rich"]}
    plot.update(df, grid, ["max_rel_energy_error", "wall_time_s"], "max_rel_energy_error")
    lines = plot.lines.data
    assert lines["id"] == ["c", "b", "a"]  # the lowest error drawn last, on top
    assert plot.fig.xaxis.major_label_overrides == {0: "eps", 1: "feature_type", 2: "wall_time_s",
                                                    3: "max_rel_energy_error"}
    # eps is log-spaced: its axis is logarithmic, so 1e-2 sits half way; the error spans decades too
    assert [round(y, 6) for y in lines["ys"][1]] == [0.5, 1.0, 0.5, 0.5]
    assert lines["color"][-1] == "#440154" and lines["color"][0] == "#FDE724"  # viridis, low to high
    assert plot.bars[True].visible and not plot.bars[False].visible  # a log colour bar
    plot.update(df, grid, ["max_rel_energy_error", "wall_time_s"], "wall_time_s")
    assert plot.lines.data["value"] == [3.0, 2.0, 1.0] and plot.bars[False].visible
    plot.update(pd.DataFrame(), grid, [], "wall_time_s")
    assert plot.lines.data["id"] == [] and not any(bar.visible for bar in plot.bars.values())


@pytest.mark.parametrize("counts, total, percent", [
    ({"running": 1, "cancelled": 1}, 2, 0),  # a run cancelled before this rerun has not finished
    ({"ok": 1, "running": 1}, 2, 50),
    ({"ok": 1, "failed": 1, "pruned": 1, "pending": 1}, 4, 75),
])
def test_the_progress_bar_counts_finished_runs_only(counts, total, percent):
    view = SweepsView(lambda: "")
    view._doc = {"runs_total": total, **counts}
    view._counts_status("Sweep 's'")
    assert view.progress.value == percent
    assert f"{percent * total // 100}/{total} runs finished" in view.status.object
    view._doc = {"runs_total": 1, "ok": 1, "search": {"trials": 4}}  # a search makes its trials as it goes
    view._counts_status("Sweep 's'")
    assert view.progress.value == 25
