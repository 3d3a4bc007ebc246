"""Searches (``nbody-runner sweep --search``): ranges in the grid file, Optuna's ask-and-tell on a
real LocalCluster, the study in the sweep folder continued by a rerun, pruning that stops a run as
Stop does, the per-run time limit, and the figures of ``--status --plot``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbody_engine.config.errors import InputError
from nbody_engine.sweep import Range, SearchOptions, plan_sweep, read_grid

optuna = pytest.importorskip("optuna")

# tiny trainings; no step is ever rejected (energy_threshold = 1), so every run reaches its last epoch
TRAIN_BASE = ('num_particles = 2\nnum_orbits = 2\nseed = 11\nhidden_dims = [16, 16]\nn_steps = 3\nreplay_steps = 5\n'
              'E_lower = 1e-14\nenergy_threshold = 1.0\n')


def sweep_cli(cwd: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbody_engine.runner", "sweep", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


# --------------------------------------------------------------------------- the grid file's ranges

def test_ranges_are_read_with_their_kind():
    axes = {a.column: a for a in read_grid({"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                            "train": {"history_len": {"low": 0, "high": 8, "step": 2}},
                                            "hidden_dims": [[16], [32, 32]]}, "both")}
    assert axes["lr"].range == Range(1e-4, 1e-2, log=True)
    assert axes["train.history_len"].range == Range(0, 8, step=2, integer=True)
    assert axes["hidden_dims"].range is None and axes["hidden_dims"].values == ([16], [32, 32])


@pytest.mark.parametrize(("grid", "message"), [
    ({"lr": {"low": 1e-2, "high": 1e-4}}, "the range of 'lr' needs low < high"),
    ({"lr": {"low": 0.0, "high": 1e-2, "log": True}}, "'lr' must be greater than 0"),
    ({"softening": {"low": 0.0, "high": 0.1, "log": True}}, "a log range of 'softening' needs low > 0"),
    ({"lr": {"low": 1e-4}}, "the range of 'lr' needs 'low' and 'high'"),
    ({"lr": {"low": 1e-4, "high": 1e-2, "scale": "log"}}, "the range of 'lr' unknown field 'scale'"),
    ({"history_len": {"low": 0, "high": 8, "step": 1.5}}, "'history_len.step' must be a positive integer"),
    ({"activation": {"low": 0, "high": 1}}, "'activation' is not a number, so it has no range"),
    ({"lr": {"low": 1e-4, "high": 1e-2, "log": "yes"}}, "'lr.log' must be true or false"),
])
def test_bad_ranges_are_one_line_input_errors(grid, message):
    with pytest.raises(InputError) as err:
        read_grid(grid, "both")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_range_needs_a_search_and_search_options_are_checked(tmp_path):
    grid = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    with pytest.raises(InputError, match="only a search can draw from; run it with --search tpe"):
        plan_sweep(None, grid, mode="train", name="s", cwd=tmp_path)
    plan = plan_sweep(None, grid, mode="train", name="s", cwd=tmp_path, search={"trials": 3})
    assert plan.runs == [] and plan.total == 3
    assert plan.search == SearchOptions("tpe", 3, "loss", "minimize", "median", "loss")
    simulate = plan_sweep(None, {"eps": [0.01, 0.1]}, mode="simulate", name="s", cwd=tmp_path, search={})
    assert (simulate.search.metric, simulate.search.pruner) == ("max_rel_energy_error", "none")
    for search, message in (({"sampler": "grid"}, "--sampler must be one of tpe, random"),
                            ({"metric": "speed"}, "--metric 'speed' is not a result of a 'train' run"),
                            ({"trails": 3}, "unknown search option 'trails'"),
                            ({"prune_on": "max_rel_energy_error"}, "pruning reads the training's per-epoch")):
        with pytest.raises(InputError, match=message):
            plan_sweep(None, grid, mode="train", name="s", cwd=tmp_path, search=search)
    with pytest.raises(InputError, match="leave out --samples"):
        plan_sweep(None, grid, mode="train", name="s", cwd=tmp_path, search={}, samples=2)


def test_cli_search_flags_need_search(tmp_path):
    (tmp_path / "grid.toml").write_text("eps = [0.01, 0.1]\n")
    (tmp_path / "base.toml").write_text("")
    result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--trials", "3")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--trials needs --search tpe|random" in result.stderr
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- real searches

def load_study(root: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(root / "study.journal")))
    return optuna.load_study(study_name=root.name, storage=storage)


@pytest.mark.slow
def test_a_tpe_search_runs_its_trials_and_a_rerun_continues_the_study(tmp_path):
    (tmp_path / "base.toml").write_text(TRAIN_BASE + "epochs = 2\n")
    (tmp_path / "grid.toml").write_text('lr = { low = 1e-4, high = 1e-1, log = true }\n'
                                        'eps = { low = 0.01, high = 0.1 }\nhistory_len = { low = 0, high = 3 }\n')
    args = ("--config", "base.toml", "--grid", "grid.toml", "--mode", "train", "--workers", "2", "--search", "tpe",
            "--pruner", "none", "--name", "tpe")
    first = sweep_cli(tmp_path, *args, "--trials", "3")
    assert first.returncode == 0, first.stdout + first.stderr
    root = tmp_path / "data" / "tpe"
    doc = json.loads((root / "results.json").read_text())
    assert (doc["ok"], doc["runs_total"]) == (3, 3), doc
    assert doc["grid"]["lr"] == {"low": 1e-4, "high": 1e-1, "log": True, "step": None}
    assert doc["search"]["sampler"] == "tpe" and doc["search"]["metric"] == "loss"
    study = load_study(root)
    trials = {t.user_attrs["run_id"]: t for t in study.trials}
    for row in doc["runs"]:  # each trial is its run: its point, and the run's loss told as its value
        trial = trials[row["id"]]
        assert trial.params == {"lr": row["lr"], "eps": row["eps"], "history_len": row["history_len"]}
        assert 1e-4 <= row["lr"] <= 1e-1 and isinstance(row["history_len"], int)
        assert trial.value == pytest.approx(row["loss"])
        assert (root / row["run_dir"] / "data" / row["id"] / "metrics.jsonl").is_file()
    again = sweep_cli(tmp_path, *args, "--trials", "5")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 finished earlier" in again.stdout
    doc = json.loads((root / "results.json").read_text())
    assert (doc["ok"], doc["runs_total"]) == (5, 5), doc
    assert len(load_study(root).trials) == 5
    assert all(row["attempts"] == 1 for row in doc["runs"])  # the first three ran once
    changed = sweep_cli(tmp_path, *args, "--trials", "6", "--metric",
                        "rel_dE_max")
    assert changed.returncode == 2 and "was started with a different metric" in changed.stderr, changed.stderr


@pytest.mark.slow
def test_the_pruner_stops_a_lagging_run_as_stop_does(tmp_path):
    """E_upper = 1e-12 puts every step far above the band: its loss lags far behind the runs with
    E_upper = 1e-2, so once two of those are complete the median pruner stops it. The random
    sampler with seed 6 draws 1e-2, 1e-2, 1e-12, 1e-2; one worker runs them one after another.
    The runs are long (200 epochs) so that the sweep sees the lagging one's epochs while it runs
    however fast the machine is (30 epochs could end between two looks)."""
    (tmp_path / "base.toml").write_text(TRAIN_BASE + "epochs = 200\n")
    (tmp_path / "grid.toml").write_text("E_upper = [0.01, 1e-12]\n")
    result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "train", "--workers", "1",
                       "--search", "random", "--trials", "4", "--seed", "6", "--name", "prune")
    assert result.returncode == 0, result.stdout + result.stderr
    root = tmp_path / "data" / "prune"
    doc = json.loads((root / "results.json").read_text())
    rows = {row["E_upper"]: row for row in doc["runs"]}
    assert rows[0.01]["status"] == "ok" and rows[1e-12]["status"] == "pruned", doc["runs"]
    pruned = rows[1e-12]
    assert pruned["error"].startswith("pruned by the search at epoch"), pruned
    lines = (root / pruned["run_dir"] / "data" / pruned["id"] / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(lines) < 200  # stopped before its last epoch, after writing what it had
    assert "Traceback" not in (root / pruned["run_dir"] / "stderr.log").read_text()
    states = [t.state.name for t in load_study(root).trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]  # the drawn-again point is told, not rerun
    assert "1 ok, 0 failed, 1 pruned" in result.stdout


@pytest.mark.slow
def test_a_run_over_its_time_limit_is_stopped_and_recorded_failed(tmp_path):
    (tmp_path / "base.toml").write_text('seed = 1\nnum_orbits = 1\nnum_particles = 2\ndt = 0.001\n'
                                        'record_every = 1000\n')
    (tmp_path / "grid.toml").write_text("steps = [20, 20000000]\n")
    result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate", "--workers",
                       "2", "--run-time-limit", "8", "--name", "limit")
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads((tmp_path / "data" / "limit" / "results.json").read_text())
    rows = {row["steps"]: row for row in doc["runs"]}
    assert rows[20]["status"] == "ok"
    assert rows[20000000]["status"] == "failed" and rows[20000000]["exit_code"] == 130, rows
    assert rows[20000000]["error"] == "stopped: its time limit of 8 s ran out"
    assert doc["provenance"]["backend"]["run_time_limit_s"] == 8


@pytest.mark.slow
def test_status_plots_the_metric_against_every_key_and_in_parallel_coordinates(tmp_path):
    (tmp_path / "base.toml").write_text('seed = 1\nnum_orbits = 1\nnum_particles = 2\n[simulate]\nsteps = 30\n')
    (tmp_path / "grid.toml").write_text("eps = [0.003, 0.03, 0.3]\nsoftening = [0.0, 0.01]\n")
    run = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate", "--name", "p")
    assert run.returncode == 0, run.stdout + run.stderr
    result = sweep_cli(tmp_path, "--status", "p", "--plot", "max_rel_energy_error")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "data" / "p"
    for name in ("max_rel_energy_error_vs_keys.png", "max_rel_energy_error_vs_keys_parallel.png"):
        assert f"written: {root / name}" in result.stdout
        assert (root / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from nbody_engine.sweep.figures import log_spaced

    assert log_spaced([0.003, 0.03, 0.3]) and not log_spaced([0.0, 0.01]) and not log_spaced([1, 2, 3])
    assert log_spaced([0.5, 0.6], {"low": 0.1, "high": 1.0, "log": True})


def test_a_rerun_settles_the_trials_a_killed_search_left_running(tmp_path):
    """Two trials left running by a killed sweep: the one whose run ended ok is told its loss;
    the other is failed, its point asked again, and not counted against --trials."""
    from nbody_engine.runs.directory import write_json
    from nbody_engine.sweep.results import toml_sha1
    from nbody_engine.sweep.search import Trials

    def plan():
        return plan_sweep(None, {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
                          mode="train", name="s", cwd=tmp_path, data_dir=tmp_path / "data",
                          search={"trials": 4, "sampler": "random"})
    first = Trials(plan())
    finished, lost = first.ask(), first.ask()
    assert first.remaining == 2
    run_dir = first.plan.run_dir(finished)
    run_dir.mkdir(parents=True)
    write_json(run_dir / "status.json", {"status": "ok", "mode": "train", "loss": 0.25,
                                         "run_toml_sha1": toml_sha1(finished.toml)})
    again = Trials(plan())  # the sweep was SIGKILLed: nothing told the study how its runs ended
    states = {t.user_attrs.get("run_id"): t for t in again.study.trials}
    assert states[finished.id].state.name == "COMPLETE" and states[finished.id].value == 0.25
    assert states[lost.id].state.name == "FAIL"
    assert [r.id for r in again.plan.runs] == [finished.id]
    assert again.remaining == 3  # one finished; the failed one is redone, not counted
    redo = again.ask()
    assert redo.id == lost.id  # the same point, asked again first
