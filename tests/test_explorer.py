"""The dashboard in-process, without a browser: real jobs in their threads, drained by hand
(as the session's periodic callback would), and the settings, TOML and Runs tab logic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import holoviews as hv
import panel as pn
import param
import psutil
import pytest

from helpers import wait_until
from explorer import Explorer
from explorer import jobs as explorer_jobs
from explorer.page import served_page, simulation_tab
from nbody_engine.config.errors import InputError
from nbody_engine.config.loading import config_values, load_configs

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
    def ended() -> bool:
        e.drain()
        return not e.job.running

    wait_until(ended, f"the job to end (still running after {timeout}s)", timeout=timeout, poll=0.05)
    while not e.job.queue.empty():  # a drain takes a bounded number of events
        e.drain()


def wait_for_steps(e: Explorer, timeout: float = 30.0) -> None:
    """Drain until the running job has reported at least one accepted step."""
    def stepped() -> bool:
        e.drain()
        return len(e.live.frame("energy_error")) > 0

    wait_until(stepped, "the job's first step", timeout=timeout, poll=0.02)


def start_long_training(e: Explorer) -> None:
    """Start a training of 1,000 epochs (it runs until stopped) and wait for its first step."""
    e.train.epochs = 1000
    assert e.start("train")
    wait_for_steps(e)


def stop_and_wait(e: Explorer, limit: float = 60.0) -> float:
    """Press Stop; return how long the job took to end (asserting it ended at all within a
    generous ``limit``: how fast it ends is measured in bench/explorer_latency.py)."""
    start = time.monotonic()
    e.stop()
    while e.job.running and time.monotonic() - start < limit:
        time.sleep(0.01)
    took = time.monotonic() - start
    assert not e.job.running, f"job still running {limit}s after stop()"
    e.drain()
    return took


# --- jobs --------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_served_page_passes_bokehs_document_validation(explorer):
    """The server skips Bokeh's per-session validation (explorer/main.py): the page it serves
    is validated here instead, with every tab built. Its only warnings are the empty columns
    that hold a run's comparison, evaluation and notes until there is one."""
    from bokeh.core.validation.check import check_integrity
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    doc = Document()
    with set_curdoc(doc):
        page = served_page(explorer)
        page.server_doc(doc)
        for tab in (simulation_tab(explorer), explorer.runs.panel(), explorer.sweeps.panel(), explorer.sim_settings):
            doc.add_root(pn.panel(tab).get_root(doc))
    issues = check_integrity(list(doc.models))
    assert len(doc.models) > 100
    assert issues.error == []
    assert {issue.name for issue in issues.warning} <= {"EMPTY_LAYOUT"}


def test_train_job_fills_the_plots_and_writes_a_checkpoint(explorer, tmp_path):
    e = explorer
    assert e.start("train") is True
    finish(e)
    assert not e.error.visible, e.error.object
    assert "finished" in e.status
    assert e.progress == 100
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


@pytest.mark.slow
def test_stop_ends_a_long_run_quickly(explorer):
    e = explorer
    start_long_training(e)
    assert e.job.running
    stop_and_wait(e)
    finish(e)
    assert "stopped" in e.status
    kept = re.search(r"checkpoint kept: (\S+\.pt)", e.status)  # the status says what is left
    assert (kept and Path(kept.group(1)).is_file()) or "no checkpoint was written" in e.status, e.status
    assert not e.error.visible
    assert e.stop_button.disabled  # Stop is disabled again
    assert not e.buttons["train"].disabled


@pytest.mark.slow
def test_a_job_runs_in_a_child_process_and_a_stop_is_reported_at_the_next_drain(explorer):
    """The engine's work is not in the server's process (its GIL stays with the pages) and gives
    way to it (a lower priority); once Stop is pressed, the queued steps are dropped, so one
    bounded poll reaches the job's end."""
    from explorer.job_process import NICENESS

    e = explorer
    start_long_training(e)
    child = psutil.Process(e.job.process.pid)
    assert child.pid != os.getpid() and child.is_running()
    assert child.nice() == min(19, os.nice(0) + NICENESS)
    wait_until(lambda: e.job.queue.qsize() > 3, "steps to queue up undrained", timeout=60)
    e.job.stop(timeout=60)
    assert not e.job.running and not child.is_running()
    items = e.job.poll(limit=1)
    assert isinstance(items[-1], explorer_jobs.JobDone) and items[-1].cancelled, items


@pytest.mark.slow
def test_a_job_whose_process_dies_says_so_and_gives_its_slot_back(explorer):
    e = explorer
    start_long_training(e)
    os.kill(e.job.process.pid, signal.SIGKILL)
    finish(e)
    assert e.error.visible and "exit status -9" in e.error.object, e.error.object
    assert "failed" in e.status
    e.train.epochs = 3
    assert e.start("train")
    finish(e)
    assert "finished" in e.status, e.status


SERVER_SCRIPT = """
import time
from explorer.jobs import Job, JobSlot
from nbody_engine.events import EpochFinished

if __name__ == "__main__":
    toml = "seed = 1\\nepochs = 1000\\nnum_orbits = 2\\nreplay_steps = 5\\nn_steps = 3\\n"
    job = Job("train", toml, save_name="orphan")
    with JobSlot() as slot:
        slot.start(job)
    while not any(isinstance(event, EpochFinished) for event in job.poll()):
        time.sleep(0.05)
    print(job.process.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_job_whose_server_is_killed_stops_and_keeps_its_checkpoint(tmp_path):
    """A server SIGKILLed while its job trains: the job does not train on unseen, it stops as
    Stop would (its checkpoint written) and its process ends."""
    (tmp_path / "server.py").write_text(SERVER_SCRIPT)
    server = subprocess.Popen([sys.executable, "server.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    job = psutil.Process(int(server.stdout.readline()))
    server.kill()
    server.wait(timeout=60)

    def ended() -> bool:
        try:
            return job.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(ended, "the orphaned job to end", timeout=120)
    assert list((tmp_path / "data" / "orphan" / "model").glob("model_epoch_*.pt"))


@pytest.mark.slow
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


@pytest.mark.slow
def test_start_refuses_a_second_job_while_one_runs(explorer):
    e = explorer
    e.train.epochs = 1000
    assert e.start("train")
    first = e.job
    assert e.start("train") is False
    assert e.job is first
    assert e.error.visible and "already running" in e.error.object
    stop_and_wait(e)


def test_a_job_whose_end_was_shown_is_not_running_though_its_thread_lingers():
    """The page shows a job's end when it polls its JobDone; a Train clicked at once must not be
    refused because the job's thread has not exited yet (a race seen under load)."""
    job = explorer_jobs.Job("work", "", work=lambda _reporter: {})
    queued, release = threading.Event(), threading.Event()
    put = job.queue.put

    def put_then_linger(item, *args, **kwargs):
        put(item, *args, **kwargs)
        if isinstance(item, explorer_jobs.JobDone):
            queued.set()
            release.wait(30)

    job.queue.put = put_then_linger
    job.start()
    assert queued.wait(30)
    assert job.running  # ended, but its end not seen yet
    items = job.poll()
    assert isinstance(items[-1], explorer_jobs.JobDone)
    assert job.thread.is_alive() and not job.running
    release.set()
    job.thread.join(30)


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert list(table.columns) == ["learned (ml_multi)", "analytic"]
    assert "Learned against analytic" in e.sim_view.objects[0].objects[0].object
    assert table.loc["steps"].tolist() == [20, 20]
    for plot in e.sim_view.select(pn.pane.HoloViews):  # legends beside the data, never over it
        fig = hv.render(plot.object)
        assert fig.legend and all(legend in fig.right for legend in fig.legend), plot.object


@pytest.mark.slow
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
    resolved = tomllib.loads((tmp_path / "data" / "t1_2" / "config.toml").read_text())  # a run folder of its own
    assert resolved["simulate"]["model_path"] == "data/t1_2/model/model_epoch_0003.pt"


def test_every_job_writes_a_run_folder_of_its_own(explorer, tmp_path):
    """Two Trains in one session leave two complete runs; the settings keep the name typed,
    and the exported command names a third folder."""
    e = explorer
    for epochs in (3, 2):
        e.train.epochs = epochs
        assert e.start("train")
        finish(e)
        assert "finished" in e.status and not e.error.visible, e.error.object
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir()) == ["t1", "t1_2"]
    assert [(data / run / "metrics.jsonl").read_text().count("\n") for run in ("t1", "t1_2")] == [3, 2]
    assert e.status.endswith("data/t1_2.") and e.train.save_name == "t1"
    assert e.command("train") == "nbody-runner train --config t1.toml --save-name t1_3"


def test_a_job_slot_is_given_back_when_starting_fails(explorer, monkeypatch):
    """Regression: a slot taken by start() leaked when something after it raised (live.reset
    did, with two quick Train messages), and every later Train said 'busy'."""
    e = explorer

    def broken(_bands):
        raise RuntimeError("broken plots")
    with monkeypatch.context() as patch:  # undoes this patch only (not the fixture's working directory)
        patch.setattr(e.live, "reset", broken)
        for _ in range(explorer_jobs.MAX_JOBS + 1):
            with pytest.raises(RuntimeError, match="broken plots"):
                e.start("train")
    assert not e.buttons["train"].disabled and e.job is None
    assert e.start("train")
    finish(e)
    assert "finished" in e.status, e.error.object


# --- settings ----------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "text", "message"), [
    ("epochs", "-5", "Settings: 'epochs' must be at least 1, not -5"),
    ("epochs", "0", "Settings: 'epochs' must be at least 1, not 0"),
    ("epochs", "abc", "Settings: 'epochs' must be an integer, not 'abc'"),
    ("epochs", "2.5", "Settings: 'epochs' must be an integer, not 2.5"),
    ("lr", "-1", "Settings: 'lr' must be greater than 0, not -1.0"),
    ("hidden_dims", "64, -3", "Settings: 'hidden_dims' items must be between 1 and 16384, not -3"),
])
def test_a_refused_text_shows_the_cli_message_and_keeps_the_last_good_value(explorer, key, text, message):
    e = explorer
    shown: list[str] = []
    e.train_settings.on_refused = shown.append
    field = e.train_settings.field(key)
    field.on_refused = shown.append
    before, before_text = getattr(e.train, key), field.widget.value
    field.widget.value = text
    assert (field.message.visible, field.message.object) == (True, message)
    assert shown == [message]  # and as a notification
    assert getattr(e.train, key) == before and field.widget.value == before_text


@pytest.mark.slow
def test_the_settings_message_is_the_clis(explorer, tmp_path):
    """The text after the CLI's 'command line --flag: ' is the dashboard's after 'Settings: '."""
    import subprocess
    import sys

    cli = subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", "--lr", "-1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    field = explorer.train_settings.field("lr")
    field.widget.value = "-1"
    assert field.message.object.removeprefix("Settings: ") == cli.stderr.strip().split(": ", 3)[3]


def test_a_good_text_and_the_slider_set_the_key_and_reset_restores_it(explorer):
    e = explorer
    field = e.train_settings.field("lr")
    card = next(c for c in e.train_settings.cards if "lr" in c.keys)
    changed = len(card.changed_keys())  # the fixture's TINY keys
    assert not field.reset.visible
    field.widget.value = "0.003"
    assert e.train.lr == 0.003 and field.reset.visible and not field.message.visible
    assert (field.slider.start, field.slider.end) == type(e.train).param["lr"].softbounds
    with param.edit_constant(field.slider):
        field.slider.value_throttled = 0.005  # what the browser sends at the end of a drag
    assert e.train.lr == 0.005 and field.widget.value == "0.005"
    assert card.card.title.endswith(f"· {changed + 1} changed") and "lr" in card.changed_keys()
    field.reset.clicks += 1
    assert e.train.lr == 1e-3 and not field.reset.visible and card.card.title.endswith(f"· {changed} changed")


def test_a_list_of_paths_is_typed_comma_separated_and_exported_to_toml(explorer):
    e = explorer
    field = e.sim_settings.field("eval_model_paths")
    field.widget.value = "data/s1/model/a b.pt, data/s2/model/c.pt"
    assert e.simulate.eval_model_paths == ["data/s1/model/a b.pt", "data/s2/model/c.pt"]
    assert tomllib.loads(e.toml_text())["simulate"]["eval_model_paths"] == e.simulate.eval_model_paths
    field.widget.value = "/etc/passwd"  # outside the directories this server reads
    assert field.message.visible and "'eval_model_paths' = '/etc/passwd' lies outside" in field.message.object
    assert e.simulate.eval_model_paths == ["data/s1/model/a b.pt", "data/s2/model/c.pt"]
    field.widget.value = ""
    assert e.simulate.eval_model_paths == []


def test_every_key_type_has_a_widget():
    from explorer.fields import WIDGETS
    from nbody_engine.config.keytypes import TYPES

    assert {t.name for t in TYPES} == set(WIDGETS)


def test_cards_build_their_fields_when_opened_and_search_opens_the_matching_ones(explorer):
    panel = explorer.train_settings
    assert panel.fields == {}  # a new session builds no field
    card = next(c for c in panel.cards if "lr" in c.keys)
    card.card.collapsed = False
    assert set(panel.fields) == set(card.keys)
    panel.filter("threshold")
    shown = [c for c in panel.cards if c.card.visible]
    assert shown and all(not c.card.collapsed for c in shown)
    visible = {k for c in shown for k, f in c.fields.items() if f.layout.visible}
    assert "energy_threshold" in visible and "lr" not in visible
    panel.filter("")
    assert all(c.card.visible for c in panel.cards)


def test_widgets_and_config_stay_in_step(explorer):
    e = explorer
    e.train.epochs = 11
    assert e.train_settings.field("epochs").widget.value == "11"
    assert e.sim_settings.field("epochs").widget.value == "11"
    assert not e.sim_settings.field("epochs").reset.visible  # shared, not an override
    e.train_settings.field("save_name").widget.value = ""
    assert e.train.save_name is None  # an empty text box is 'unset'
    e.sim_settings.field("steps").widget.value = "30"
    assert e.sim_settings.field("steps").reset.visible  # an override of the shared value


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
    assert e.train_settings.field("epochs").widget.value == "4"
    assert e.sim_settings.field("steps").widget.value == "7"
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


@pytest.mark.slow
def test_evaluate_compares_the_checkpoint_with_the_baselines_in_the_page(explorer, tmp_path):
    e = explorer
    assert e.start("train")
    finish(e)
    assert e.simulate.model_path  # the finished training hands its checkpoint to the Simulate tab
    e.simulate.param.update(eval_suite="kepler", eval_systems=0, eval_e=[0.6], eval_eps=[0.05, 0.2], Nperiod=1,
                            eval_long_periods=20)
    assert e.start("evaluate")
    finish(e)
    assert not e.error.visible, e.error.object
    assert "Evaluate finished" in e.status
    rows = json.loads((tmp_path / "data" / "t1" / "eval" / "table.json").read_text())["rows"]
    # IAS15 and the learned policy, seven baselines and WHFast at two eps each (a sweep extended to
    # bracket the learned cost adds rows at other eps)
    assert len([r for r in rows if r["eps"] in (None, 0.05, 0.2)]) == 2 + 8 * 2
    (view,) = e.eval_view.objects
    assert view.select(pn.pane.HoloViews)
    statistics, verdicts = (table.value for table in view.select(pn.widgets.Tabulator)[:2])
    assert set(verdicts["baseline"]) == set(statistics["baseline"]) == {
        "fixed", "classic", "analytic", "analytic-symmetric", "analytic-hmm", "analytic-midpoint", "ttl", "WHFast"}
    assert list(statistics.columns) == ["baseline", "family", "systems", "learned slower than every run",
                                        "max|dE/E| at equal force evals",
                                        "position error at equal force evals", "max|dE/E| at equal wall time"]
    analytic = statistics[statistics["baseline"] == "analytic"].iloc[0]
    assert analytic["systems"] == 1 and analytic["max|dE/E| at equal force evals"].count("[") == 1
    assert len(e.live.frame("simulation")) == 0  # the evaluation's many runs stay out of the live plots


@pytest.mark.slow
def test_evaluate_after_train_and_simulate_takes_the_checkpoint_that_training_wrote(explorer, tmp_path):
    """'Train + simulate' hands its checkpoint to the Simulate tab, as 'Train' does; with the
    model_path cleared, Evaluate finds it from the settings, as `nbody-runner evaluate --config`
    does."""
    e = explorer
    assert e.start("both")
    finish(e)
    assert e.simulate.model_path.endswith("model_epoch_0002.pt")
    e.simulate.param.update(model_path=None, eval_suite="kepler", eval_systems=0, eval_e=[0.6], eval_eps=[0.05, 0.2],
                            Nperiod=1, eval_long_periods=20)
    assert e.start("evaluate")
    finish(e)
    assert not e.error.visible, e.error.object
    (table,) = (tmp_path / "data").glob("*/eval/table.json")
    model_path = tmp_path / json.loads(table.read_text())["model_path"]  # relative to the working directory
    assert model_path.is_file() and model_path.parent == table.parent.parent / "model"


@pytest.mark.slow
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


@pytest.mark.slow
def test_nbody_explorer_listens_on_loopback_and_confines_files_by_default(tmp_path, monkeypatch):
    from explorer.serve import panel_serve_args

    monkeypatch.chdir(tmp_path)
    args, roots = panel_serve_args(["--port", "5011"])
    assert args[args.index("--address") + 1] == "127.0.0.1"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--allow-websocket-origin"] == \
        ["localhost:5011", "127.0.0.1:5011"]
    assert roots == [tmp_path]
    args, roots = panel_serve_args(["--address", "0.0.0.0", "--allow-files-under", "/scratch", "--num-procs", "2"])
    assert args[args.index("--address") + 1] == "0.0.0.0" and args[-2:] == ["--num-procs", "2"]
    assert roots == [tmp_path, Path("/scratch")]


def test_an_imported_path_outside_the_allowed_directories_is_refused(explorer, tmp_path, monkeypatch):
    outside = tmp_path.parent / "elsewhere.txt"
    with pytest.raises(InputError, match=r"'ic_path' = .* lies outside .*--allow-files-under"):
        explorer.load_toml(f"ic_path = '{outside}'\n", "'x.toml'")
    assert explorer.train.ic_path is None
    monkeypatch.setenv("NBODY_EXPLORER_FILE_ROOTS", f"{tmp_path}{os.pathsep}{tmp_path.parent}")
    explorer.load_toml(f"ic_path = '{outside}'\n", "'x.toml'")
    assert explorer.train.ic_path == str(outside)


def test_track_shows_a_followed_runs_progress_and_eta_in_the_header(explorer):
    """Events of a run this session did not start (a run followed on disk) fill the header."""
    from nbody_engine.events import EpochFinished, RunStarted

    e = explorer
    e.track(RunStarted("train", "elsewhere", total=40))
    assert "'elsewhere' running" in e.status
    e.track(EpochFinished(9, {"accepted_steps": 4, "retrain_iterations": 0}))
    assert e.progress == 25
    assert e.status.startswith("epoch 10/40 ") and "ETA" in e.status


def test_a_refused_import_names_every_bad_key_and_clears_the_stale_status(explorer):
    e = explorer
    e.upload.filename = "good.toml"
    e.upload.value = b"epochs = 9\n"
    assert e.status == "Loaded good.toml."
    loaded = config_values(e.train)
    e.upload.filename = "bad.toml"
    e.upload.value = b"learning_rate = 0.01\nreplay_stpes = 3\n[simulate]\nstpes = 4\n"
    message = e.error.object
    assert "unknown key 'learning_rate'" in message and "did you mean 'lr'" in message  # an alias
    assert "'replay_stpes'" in message and "did you mean 'replay_steps'" in message
    assert "'stpes' in [simulate]" in message and "did you mean 'steps'" in message
    assert "good.toml" not in e.status and "refused" in e.status
    assert config_values(e.train) == loaded


def test_the_export_mode_buttons_follow_the_mode_of_the_last_job(explorer):
    e = explorer
    e.mode_select.value = "both"
    assert e.start("train")
    assert e.mode_select.value == "train" and e.command_box.value.startswith("nbody-runner train ")
    finish(e)


def test_evaluate_shows_the_problem_and_policy_it_measures_and_stop_stops_it(explorer):
    e = explorer
    assert e.start("train")
    finish(e)
    e.simulate.param.update(eval_suite="kepler", eval_systems=0, eval_e=[0.6], eval_eps=[0.05, 0.2], Nperiod=1)
    assert e.start("evaluate")
    deadline = time.monotonic() + 120
    while not e.status.startswith("Evaluate: kepler") and time.monotonic() < deadline:
        e.drain()
        time.sleep(0.02)
    assert re.match(r"Evaluate: kepler · learned \(1/\d+\) · elapsed \d+s$", e.status), e.status
    e.stop()
    finish(e)
    assert e.status.startswith("Evaluate stopped after"), e.status
    assert not e.eval_view.objects and not e.error.visible
