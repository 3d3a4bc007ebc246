"""The dashboard in-process, without a browser: real jobs in their threads, drained by hand
(as the session's periodic callback would), and the settings, TOML and Runs tab logic."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import panel as pn
import pytest

from explorer import Explorer
from explorer import jobs as explorer_jobs
from nbody_engine.config import config_values, load_configs
from nbody_engine.errors import InputError

TINY = dict(epochs=3, num_orbits=2, replay_steps=5, n_steps=3, seed=1, save_name="t1")


@pytest.fixture
def explorer(tmp_path, monkeypatch):
    """An Explorer whose runs land in tmp_path/data; its job is stopped afterwards."""
    monkeypatch.chdir(tmp_path)
    e = Explorer()
    e.train.param.update(**TINY)
    yield e
    e.close()


def finish(e: Explorer, timeout: float = 120.0) -> None:
    """Drain until the job's thread ends (bounded), then once more for what it left."""
    deadline = time.monotonic() + timeout
    while e.job.running and time.monotonic() < deadline:
        e.drain()
        time.sleep(0.05)
    assert not e.job.running, f"job still running after {timeout}s"
    e.drain()


def wait_for_steps(e: Explorer, timeout: float = 30.0) -> None:
    """Drain until the running job has reported at least one accepted step."""
    deadline = time.monotonic() + timeout
    while len(e.live.frame("energy_error")) == 0 and time.monotonic() < deadline:
        e.drain()
        time.sleep(0.02)
    assert len(e.live.frame("energy_error")) > 0, "the job reported no step"


def stop_and_wait(e: Explorer, limit: float = 2.0) -> float:
    """Press Stop; return how long the job took to end (asserting it ended within ``limit`` s)."""
    start = time.monotonic()
    e.stop()
    while e.job.running and time.monotonic() - start < limit:
        time.sleep(0.01)
    took = time.monotonic() - start
    assert not e.job.running, f"job still running {limit}s after stop()"
    e.drain()
    return took


# --- jobs --------------------------------------------------------------------------------

def test_train_job_fills_the_plots_and_writes_a_checkpoint(explorer, tmp_path):
    e = explorer
    assert e.start("train") is True
    finish(e)
    assert not e.error.visible, e.error.object
    assert "finished" in e.status
    assert e.progress.value == 100
    assert len(e.live.frame("energy_error")) >= TINY["num_orbits"] and len(e.live.frame("energy_error")) > 0
    epochs = e.live.frame("epoch_metrics")
    assert len(epochs) == TINY["epochs"]
    assert list(epochs["epoch"]) == [0, 1, 2]
    assert len(e.live.frame("orbit")) > 0
    assert (e.live.frame("energy_error")["rel_dE"] > 0).all()  # log axes: never 0
    checkpoint = tmp_path / "data" / "t1" / "model" / "model_epoch_0002.pt"
    assert checkpoint.is_file()
    assert (tmp_path / "data" / "t1" / "metrics.jsonl").read_text().count("\n") == TINY["epochs"]
    # the finished training becomes the Simulate tab's model, as a [simulate] override
    assert Path(e.simulate.model_path) == Path("data/t1/model/model_epoch_0002.pt")
    assert "model_path" in tomllib.loads(e.toml_text())["simulate"]


def test_stop_ends_a_long_run_quickly(explorer):
    e = explorer
    e.train.epochs = 1000
    assert e.start("train")
    wait_for_steps(e)
    assert e.job.running
    stop_and_wait(e, limit=2.0)
    assert "stopped" in e.status
    assert not e.error.visible
    assert e.stop_button.disabled  # Stop is disabled again
    assert not e.buttons["train"].disabled


def test_a_failing_job_shows_its_error_and_the_next_job_starts(explorer):
    e = explorer
    e.train.param.update(energy_threshold=1e-14, max_retrain_steps=2)
    assert e.start("train")
    finish(e)
    assert e.error.visible
    assert "max_retrain_steps" in e.error.object and "energy_threshold" in e.error.object
    assert "failed" in e.status
    assert not e.buttons["train"].disabled
    e.train.param.update(energy_threshold=2e-4, max_retrain_steps=1000, save_name="t2")
    assert e.start("train")
    assert not e.error.visible  # a new start clears the old error
    finish(e)
    assert "finished" in e.status and not e.error.visible, e.error.object


def test_start_refuses_a_second_job_while_one_runs(explorer):
    e = explorer
    e.train.epochs = 1000
    assert e.start("train")
    first = e.job
    assert e.start("train") is False
    assert e.job is first
    assert e.error.visible and "already running" in e.error.object
    stop_and_wait(e)


def test_start_says_busy_when_every_job_slot_is_taken(explorer):
    slots = explorer_jobs._SLOTS
    taken = 0
    try:
        for _ in range(explorer_jobs.MAX_JOBS):
            # a job of an earlier test may still be releasing its slot
            assert slots.acquire(timeout=10)
            taken += 1
        assert explorer.start("train") is False
        assert explorer.job is None
        assert explorer.error.visible and "busy" in explorer.error.object
    finally:
        for _ in range(taken):
            slots.release()
    assert explorer.start("train") is True
    finish(explorer)
    assert "finished" in explorer.status


def test_both_with_the_learned_policy_compares_with_analytic(explorer, tmp_path):
    e = explorer
    e.simulate.steps = 20
    assert e.start("both")
    finish(e)
    assert not e.error.visible, e.error.object
    sim = tmp_path / "data" / "t1" / "sim"  # the dashboard simulates num_orbits Kepler orbits
    assert (sim / "ml_multi" / "summary.json").is_file()
    assert (sim / "analytic_multi" / "summary.json").is_file()
    assert len(e.live.frame("simulation")) > 0 and len(e.live.frame("sim_orbit")) > 0
    # the live simulation plots hold the learned run only, not the analytic comparison after it
    assert e.live.frame("simulation").groupby("label")["time"].apply(lambda t: t.is_monotonic_increasing).all()
    assert len(e.sim_view.objects) == 1
    (table,) = [p.object for p in e.sim_view.select(pn.pane.DataFrame)]
    assert list(table.columns) == ["learned / simulated", "analytic"]
    assert table.loc["steps"].tolist() == [20, 20]


def test_train_then_both_simulates_the_new_checkpoint(explorer, tmp_path):
    """Regression: 'Train' fills the Simulate tab's model_path; a later 'Train + simulate'
    must simulate the checkpoint it trains, not that earlier one."""
    e = explorer
    e.simulate.steps = 10
    assert e.start("train")
    finish(e)
    assert e.simulate.model_path.endswith("model_epoch_0002.pt")
    e.train.epochs = 4
    assert e.start("both")
    finish(e)
    assert "finished" in e.status, e.error.object
    resolved = tomllib.loads((tmp_path / "data" / "t1" / "config.toml").read_text())
    assert resolved["simulate"]["model_path"].endswith("model_epoch_0003.pt")


# --- settings ----------------------------------------------------------------------------

def test_a_refused_widget_value_shows_the_cli_message_and_changes_nothing(explorer):
    e = explorer
    before = e.train.lr
    e.train_form.widgets["lr"].value = 0
    assert e.error.visible
    assert "'lr'" in e.error.object and "greater than 0" in e.error.object
    assert e.train.lr == before
    assert e.train_form.widgets["lr"].value == before  # the widget springs back
    e.train_form.widgets["lr"].value = 3e-3  # a good value goes through
    assert e.train.lr == 3e-3


def test_widgets_and_config_stay_in_step(explorer):
    e = explorer
    e.train.epochs = 11
    assert e.train_form.widgets["epochs"].value == 11
    assert e.sim_form.widgets["epochs"].value == 11
    e.train_form.widgets["save_name"].value = ""
    assert e.train.save_name is None  # an empty text box is 'unset'


def test_simulate_changes_become_overrides_and_train_changes_are_shared(explorer):
    e = explorer
    e.simulate.steps = 50
    doc = tomllib.loads(e.toml_text())
    assert doc["simulate"] == {"steps": 50, "multi_orbit_sim": True}  # the dashboard simulates the family
    assert "steps" not in doc
    e.train.epochs = 7
    assert e.simulate.epochs == 7
    doc = tomllib.loads(e.toml_text())
    assert doc["epochs"] == 7 and "epochs" not in doc["simulate"]
    e.train.steps = 5  # a key the simulation overrides stays overridden
    assert e.simulate.steps == 50
    e.simulate.steps = 5  # back to the shared value: no longer an override
    assert "steps" not in tomllib.loads(e.toml_text()).get("simulate", {})


def test_toml_text_loads_with_the_cli_loader_to_the_same_values(explorer, tmp_path):
    e = explorer
    e.train.param.update(hidden_dims=[16, 8], feature_type="rich", external_field_mass=0.5,
                         external_field_position=[3.0, 0.0, 1.0], duration=12.5)
    e.simulate.param.update(steps=123, integrator_mode="ml", multi_orbit_sim=True)
    path = tmp_path / "export.toml"
    path.write_text(e.toml_text())
    loaded = load_configs("both", path, run_defaults=False)
    assert config_values(loaded["train"]) == config_values(e.train)
    assert config_values(loaded["simulate"]) == config_values(e.simulate)


def test_load_toml_applies_a_simulate_section(explorer):
    e = explorer
    e.load_toml('epochs = 4\nlr = 0.002\n\n[simulate]\nsteps = 7\n')
    assert e.simulate.steps == 7
    assert e.train.steps == -1
    assert e.train.epochs == e.simulate.epochs == 4
    assert e.train.lr == 0.002
    assert e.overrides == {"steps"}
    assert e.train_form.widgets["epochs"].value == 4 and e.sim_form.widgets["steps"].value == 7
    assert tomllib.loads(e.toml_text())["simulate"] == {"steps": 7}


def test_load_toml_refuses_an_unknown_key_with_a_suggestion(explorer):
    e = explorer
    before = config_values(e.train)
    with pytest.raises(InputError, match=r"unknown key 'epochz'.*did you mean 'epochs'"):
        e.load_toml("epochz = 3\n", "'mine.toml'")
    assert config_values(e.train) == before


def test_an_invalid_upload_shows_the_error(explorer):
    e = explorer
    e.upload.filename = "bad.toml"
    e.upload.value = b"lr = 0.001\nreplay_stpes = 3\n"
    assert e.error.visible
    assert "unknown key 'replay_stpes'" in e.error.object and "'bad.toml'" in e.error.object
    assert "did you mean 'replay_steps'" in e.error.object
    e.upload.filename = "good.toml"
    e.upload.value = b"epochs = 9\n"
    assert not e.error.visible and e.train.epochs == 9
    assert "good.toml" in e.status


def test_evaluate_compares_the_checkpoint_with_the_baselines_in_the_page(explorer, tmp_path):
    e = explorer
    assert e.start("train")
    finish(e)
    assert e.simulate.model_path  # the finished training hands its checkpoint to the Simulate tab
    e.simulate.param.update(eval_e=[0.6], eval_eps=[0.05, 0.2], Nperiod=1)
    assert e.start("evaluate")
    finish(e)
    assert not e.error.visible, e.error.object
    assert "Evaluate finished" in e.status
    table = (tmp_path / "data" / "t1" / "eval" / "table.csv").read_text().splitlines()
    assert len(table) == 1 + 5  # header, the learned policy, two baselines at two eps each
    (view,) = e.eval_view.objects
    assert view.select(pn.pane.PNG) and view.select(pn.pane.DataFrame)
    verdicts = " ".join(m.object for m in view.select(pn.pane.Markdown))
    assert "analytic" in verdicts and "classic" in verdicts  # one verdict per baseline
    assert len(e.live.frame("simulation")) == 0  # the evaluation's many runs stay out of the live plots
    # a third baseline, the time-symmetrized analytic policy, whatever the Simulate tab's mode
    e.simulate.param.update(time_symmetric=True, integrator_mode="ml")
    assert e.start("evaluate")
    finish(e)
    assert not e.error.visible, e.error.object
    (view,) = e.eval_view.objects
    assert "analytic-symmetric" in " ".join(m.object for m in view.select(pn.pane.Markdown))


def test_evaluate_after_train_and_simulate_takes_the_checkpoint_that_training_wrote(explorer, tmp_path):
    """'Train + simulate' hands its checkpoint to the Simulate tab, as 'Train' does; with the
    model_path cleared, Evaluate finds it from the settings, as `nbody-runner evaluate --config`
    does."""
    e = explorer
    assert e.start("both")
    finish(e)
    assert e.simulate.model_path.endswith("model_epoch_0002.pt")
    e.simulate.param.update(model_path=None, eval_e=[0.6], eval_eps=[0.05, 0.2], Nperiod=1)
    assert e.start("evaluate")
    finish(e)
    assert not e.error.visible, e.error.object
    (table,) = (tmp_path / "data").glob("*/eval/table.json")
    model_path = tmp_path / json.loads(table.read_text())["model_path"]  # relative to the working directory
    assert model_path.is_file() and model_path.parent == table.parent.parent / "model"


def test_the_simulate_tab_leaves_the_kepler_family_for_the_systems_a_user_sets(explorer, tmp_path):
    e = explorer
    assert e.simulate.multi_orbit_sim  # the dashboard starts by simulating the training family
    e.train.num_particles = 3  # set in Settings, shared with the simulation
    assert e.simulate.num_particles == 3 and not e.simulate.multi_orbit_sim
    e.simulate.steps = 20
    assert e.start("simulate")
    finish(e)
    assert not e.error.visible, e.error.object
    summary = json.loads(next((tmp_path / "data" / "t1" / "sim").glob("*/summary.json")).read_text())
    assert summary["num_systems"] == 1  # the three-body system alone
    e.train.num_particles = 2
    e.simulate.multi_orbit_sim = True
    e.simulate.ic_path = "my_system.npy"
    assert not e.simulate.multi_orbit_sim
    # an imported TOML is taken as it is: the spec lets Kepler orbits join the checkpoint's ICs
    e.load_toml("use_train_ic = true\nmulti_orbit_sim = true\n")
    assert e.simulate.use_train_ic and e.simulate.multi_orbit_sim


def test_evaluate_without_a_checkpoint_says_so(explorer):
    e = explorer
    assert e.start("evaluate")
    finish(e)
    assert e.error.visible and "model_path" in e.error.object
