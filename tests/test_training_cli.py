"""Training through the real CLI, in a subprocess started in a scratch directory (outputs go to
./data there): train, simulate a checkpoint in every mode, both, resume, Ctrl-C, a stalled run
and every kind of bad input. The configs are tiny: two Kepler orbits, a 16x16 network."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch

import helpers
from helpers import run_cli, run_in_process
from nbody_engine.learning.train_trajectory import TrainTrajectory

PROG = "nbody-runner"
TINY = {**{k: v for k, v in helpers.TINY.items() if k not in ("epochs", "steps_per_epoch")}, "seed": 11,
        "hidden_dims": [16, 16], "replay_steps": 5}
METRIC_KEYS = {"loss", "rel_dE_mean", "rel_dE_max", "rel_dL_mean", "rel_dL_max", "dt_mean", "dt_min", "dt_max",
               "accepted_steps", "retrain_iterations", "acceptance_rate", "replay_iterations", "replay_pass_rate",
               "epoch_time_s"}
CHECKPOINT_KEYS = {"epoch", "model", "optimizer", "config", "train_ic", "metrics"}


def ok(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = run_cli(cwd, *args)
    assert result.returncode == 0, result.stderr
    return result


def write_toml(path: Path, top: dict, **sections: dict) -> Path:
    path.write_text(tomli_w.dumps({**TINY, **top, **sections}))
    return path


def strict_json(line: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def read_metrics(path: Path) -> list[dict]:
    return [strict_json(line) for line in path.read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{PROG}: error:")]


def fails_cleanly(cwd: Path, *args: str, code: int = 2) -> str:
    """Run in process, require exit status ``code`` with exactly one line on stderr and nothing
    written; return that line. (tests/test_bad_input.py runs each class of bad input once in a
    subprocess, the real command's exit status included.)"""
    result = run_in_process(cwd, *args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROG}: error: ")
    assert not (cwd / "data").exists(), "a bad input must stop the run before anything is written"
    return lines[0]


# --- one trained model, shared ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``train`` for 12 epochs without history: checkpoints at epochs 9 and 11. The replay buffer
    needs 3 states, so epoch 0 (2 accepted states) skips replay."""
    cwd = tmp_path_factory.mktemp("trained")
    toml = write_toml(cwd / "run.toml", {"save_name": "ml0", "epochs": 12, "min_replay_size": 3})
    ok(cwd, "train", "--config", str(toml))
    return cwd / "data" / "ml0"


@pytest.fixture(scope="module")
def history_run(tmp_path_factory) -> Path:
    """``both`` with history_len = 3 (delta_mag): simulates the history checkpoint it trained."""
    cwd = tmp_path_factory.mktemp("history")
    toml = write_toml(cwd / "run.toml", {"save_name": "h3", "history_len": 3, "feature_type": "delta_mag"},
                      train={"epochs": 2}, simulate={"steps": 20})
    result = ok(cwd, "both", "--config", str(toml))
    return cwd / "data" / "h3", json.loads(result.stdout)


@pytest.mark.slow
def test_train_writes_config_metrics_and_checkpoints(trained):
    resolved = tomllib.loads((trained / "config.toml").read_text())
    flat = {**resolved, **resolved.get("train", {})}
    assert flat["seed"] == 11 and flat["epochs"] == 12 and flat["hidden_dims"] == [16, 16]

    metrics = read_metrics(trained / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == list(range(12))
    for m in metrics:
        assert METRIC_KEYS <= m.keys()
        assert m["accepted_steps"] == 2  # steps_per_epoch = 1 accepted step for each of the 2 orbits
        assert m["rel_dE_max"] <= 2e-4  # nothing is accepted above energy_threshold
        assert m["dt_min"] <= m["dt_mean"] <= m["dt_max"]
        assert 0 < m["acceptance_rate"] <= 1
    assert metrics[0]["replay_iterations"] == 0 and metrics[0]["replay_pass_rate"] is None  # buffer too small

    assert sorted(p.name for p in (trained / "model").glob("*.pt")) == ["model_epoch_0009.pt", "model_epoch_0011.pt"]
    ckpt = load(trained / "model" / "model_epoch_0011.pt")
    assert CHECKPOINT_KEYS <= ckpt.keys()
    assert ckpt["epoch"] == 11 and load(trained / "model" / "model_epoch_0009.pt")["epoch"] == 9
    assert ckpt["config"]["seed"] == 11 and ckpt["config"]["hidden_dims"] == [16, 16]
    assert ckpt["train_ic"]["position"].shape == (2, 2, 2)  # num_orbits systems of 2 bodies in 2D
    assert len(ckpt["metrics"]) == 12
    assert ckpt["metrics"][-1]["loss"] == metrics[-1]["loss"]
    assert ckpt["model"]["mlp.0.weight"].shape == (16, 11)
    assert (trained / "train_trajectory.npz").is_file()


# --- simulate -----------------------------------------------------------------------------

def summary_of(cwd: Path, name: str, mode: str) -> dict:
    return json.loads((cwd / "data" / name / "sim" / mode / "summary.json").read_text())


@pytest.mark.slow
def test_simulate_analytic(tmp_path):
    ok(tmp_path, "simulate", "--integrator-mode", "analytic", "--steps", "20", "-s", "a", "--seed", "1")
    s = summary_of(tmp_path, "a", "analytic")
    assert s["steps"] == 20 and s["num_systems"] == 1


@pytest.mark.slow
def test_simulate_ml_checkpoint(tmp_path, trained):
    model = trained / "model" / "model_epoch_0011.pt"
    ok(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", str(model), "--steps", "20", "-s", "m",
       "--seed", "1")
    s = summary_of(tmp_path, "m", "ml")
    assert s["steps"] == 20 and s["max_rel_energy_error"] < 1e-2 and 0 < s["dt_min"] <= s["dt_max"]


@pytest.mark.slow
def test_simulate_with_the_training_initial_conditions(tmp_path, trained):
    model = trained / "model" / "model_epoch_0011.pt"
    ok(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", str(model), "--use-train-ic", "--steps", "10",
       "-s", "u")
    s = summary_of(tmp_path, "u", "ml")
    assert s["num_systems"] == 2  # the training run's num_orbits
    traj = np.load(tmp_path / "data" / "u" / "sim" / "ml" / "trajectory.npz")
    np.testing.assert_array_equal(traj["position"][0], load(model)["train_ic"]["position"].numpy())


@pytest.mark.slow
def test_simulate_history_checkpoint(tmp_path, history_run):
    run, _ = history_run
    model = run / "model" / "model_epoch_0001.pt"
    assert load(model)["config"]["history_len"] == 3
    ok(tmp_path, "simulate", "--integrator-mode", "history", "--model-path", str(model), "--steps", "15", "-s", "h")
    assert summary_of(tmp_path, "h", "history")["steps"] == 15


# --- both ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_both_simulates_the_history_checkpoint_it_trained(history_run):
    run, printed = history_run
    assert (run / "model" / "model_epoch_0001.pt").is_file()
    summary = json.loads((run / "sim" / "history" / "summary.json").read_text())
    assert summary["steps"] == printed["steps"] == 20
    assert not (run / "sim" / "ml").exists() and not (run / "sim" / "analytic").exists()


@pytest.mark.slow
def test_both_without_history_simulates_with_ml(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"save_name": "b"}, train={"epochs": 2}, simulate={"steps": 10})
    ok(tmp_path, "both", "--config", str(toml))
    run = tmp_path / "data" / "b"
    assert json.loads((run / "sim" / "ml" / "summary.json").read_text())["steps"] == 10
    assert sorted(p.name for p in (run / "sim").iterdir()) == ["ml"]


# --- resume, Ctrl-C, a stalled run --------------------------------------------------------

@pytest.mark.slow
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"min_replay_size": 3})
    ok(tmp_path, "train", "--config", str(toml), "-s", "A", "-n", "20")
    ok(tmp_path, "train", "--config", str(toml), "-s", "B", "-n", "10")
    assert [p.name for p in (tmp_path / "data" / "B" / "model").glob("*.pt")] == ["model_epoch_0009.pt"]
    ok(tmp_path, "train", "--config", str(toml), "-s", "B", "-n", "20", "--resume")

    def metrics(name):
        return [{k: v for k, v in m.items() if k != "epoch_time_s"}
                for m in read_metrics(tmp_path / "data" / name / "metrics.jsonl")]
    a, b = metrics("A"), metrics("B")
    assert len(a) == len(b) == 20
    assert a == b
    final_a = load(tmp_path / "data" / "A" / "model" / "model_epoch_0019.pt")
    final_b = load(tmp_path / "data" / "B" / "model" / "model_epoch_0019.pt")
    assert final_a["model"].keys() == final_b["model"].keys()
    assert all(torch.equal(final_a["model"][k], final_b["model"][k]) for k in final_a["model"])
    assert final_a["config"]["seed"] == final_b["config"]["seed"]
    # the cumulative training trajectory (for movies) survives the interruption too
    with np.load(tmp_path / "data" / "A" / "train_trajectory.npz") as ta, \
            np.load(tmp_path / "data" / "B" / "train_trajectory.npz") as tb:
        assert ta["position"].shape == tb["position"].shape
        assert np.array_equal(ta["position"], tb["position"]) and np.array_equal(ta["epoch"], tb["epoch"])


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"save_name": "c", "epochs": 100_000})
    metrics = tmp_path / "data" / "c" / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "nbody_engine.runner", "train", "--config", str(toml)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "training never finished an epoch"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    found = sorted((tmp_path / "data" / "c" / "model").glob("*.pt"))
    assert found, "Ctrl-C must leave a checkpoint"
    ckpt = load(found[-1])
    assert CHECKPOINT_KEYS <= ckpt.keys()
    assert len(ckpt["metrics"]) == ckpt["epoch"] + 1  # the last finished epoch, whole
    trajectory = TrainTrajectory.from_checkpoint(ckpt["trajectory"], found[-1]).columns()
    assert int(trajectory["epoch"].max()) == ckpt["epoch"]  # and no step of the unfinished one


@pytest.mark.slow
def test_a_stalled_run_exits_1_naming_max_retrain_steps(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"save_name": "s", "epochs": 5, "energy_threshold": 1e-30,
                                              "max_retrain_steps": 2})
    result = run_cli(tmp_path, "train", "--config", str(toml))
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert "max_retrain_steps = 2" in errors[0] and "energy_threshold" in errors[0]
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr


# --- bad input: exit 2, one line, nothing written -----------------------------------------

@pytest.fixture
def checkpoint_copy(tmp_path, trained) -> Path:
    """The trained (history_len = 0) checkpoint, copied outside data/ so nothing is there yet."""
    path = tmp_path / "ml0.pt"
    path.write_bytes((trained / "model" / "model_epoch_0011.pt").read_bytes())
    return path


def test_missing_checkpoint(tmp_path):
    line = fails_cleanly(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", "nope.pt")
    assert "nope.pt" in line and "does not exist" in line


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b'save_name = "x"\n[train]\nepochs = 3\n'],
                         ids=["random bytes", "a TOML file"])
def test_corrupt_checkpoint(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    line = fails_cleanly(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", "bad.pt")
    assert "bad.pt" in line and "corrupt" in line
    assert "weights_only` set to `False" not in line  # never advise running a file's code


@pytest.mark.slow
def test_checkpoint_without_history_in_history_mode(tmp_path, checkpoint_copy):
    line = fails_cleanly(tmp_path, "simulate", "--integrator-mode", "history", "--model-path", str(checkpoint_copy))
    assert "history_len = 0" in line and "'ml'" in line


@pytest.mark.slow
def test_architecture_flag_that_contradicts_the_checkpoint(tmp_path, checkpoint_copy):
    line = fails_cleanly(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", str(checkpoint_copy),
                         "--hidden-dims", "8", "8")
    assert "hidden_dims" in line and "[8, 8]" in line and "[16, 16]" in line


def test_history_mode_needs_history_len_or_a_model(tmp_path):
    line = fails_cleanly(tmp_path, "simulate", "--integrator-mode", "history")
    assert "history_len" in line and "model_path" in line


def test_resume_without_a_checkpoint(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"save_name": "none", "epochs": 2})
    line = fails_cleanly(tmp_path, "train", "--config", str(toml), "--resume")
    assert "resume" in line and "no checkpoint" in line


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_the_package(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"save_name": "w", "epochs": 2, "wandb": True})
    line = fails_cleanly(tmp_path, "train", "--config", str(toml))
    assert "wandb = true but the wandb package is not installed" in line and "wandb = false" in line


@pytest.mark.slow
def test_simulating_into_a_training_run_keeps_its_training_settings(tmp_path):
    toml = write_toml(tmp_path / "run.toml", {"save_name": "keep", "epochs": 2})
    ok(tmp_path, "train", "--config", str(toml))
    ok(tmp_path, "simulate", "--config", str(toml), "--integrator-mode", "ml", "--steps", "20",
       "--model-path", "data/keep/model/model_epoch_0001.pt")
    recorded = tomllib.loads((tmp_path / "data" / "keep" / "config.toml").read_text())
    train = {**recorded, **recorded.get("train", {})}
    simulate = {**recorded, **recorded.get("simulate", {})}
    assert train["epochs"] == 2 and train.get("integrator_mode", "analytic") == "analytic"
    assert simulate["integrator_mode"] == "ml" and simulate["steps"] == 20


# --- a run is never written over unasked ------------------------------------------------------

def refused(cwd: Path, *args: str, run=run_cli) -> str:
    """Run (the real command unless ``run`` says otherwise), require exit status 2 with one line on
    stderr; return it."""
    result = run(cwd, *args)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{PROG}: error: ")
    return line


@pytest.mark.slow
def test_a_finished_run_is_kept_unless_overwrite_or_resume(tmp_path):
    """train, simulate and both refuse a folder whose run they would write over, naming it;
    --overwrite replaces that run (a training: the whole folder), --resume continues it."""
    toml = write_toml(tmp_path / "run.toml", {"save_name": "kept", "epochs": 2, "steps": 5})
    run = tmp_path / "data" / "kept"
    ok(tmp_path, "train", "--config", str(toml))
    before = (run / "metrics.jsonl").read_text()
    for mode in ("train", "both"):
        line = refused(tmp_path, mode, "--config", str(toml))
        assert "'data/kept' holds a training run already" in line and "--resume" in line and "--overwrite" in line
    assert (run / "metrics.jsonl").read_text() == before and not (run / "sim").exists()
    ok(tmp_path, "simulate", "--config", str(toml), "--integrator-mode", "analytic")  # a simulation adds to the run
    summary = (run / "sim" / "analytic" / "summary.json").read_text()
    line = refused(tmp_path, "simulate", "--config", str(toml), "--integrator-mode", "analytic", "--steps", "7")
    assert "'data/kept/sim/analytic' holds a simulation already" in line and "--overwrite" in line
    assert (run / "sim" / "analytic" / "summary.json").read_text() == summary
    ok(tmp_path, "simulate", "--config", str(toml), "--integrator-mode", "analytic", "--steps", "7", "--overwrite")
    assert json.loads((run / "sim" / "analytic" / "summary.json").read_text())["steps"] == 7
    ok(tmp_path, "train", "--config", str(toml), "-n", "3", "--resume")
    assert len(read_metrics(run / "metrics.jsonl")) == 3
    ok(tmp_path, "train", "--config", str(toml), "-n", "1", "--overwrite")
    assert len(read_metrics(run / "metrics.jsonl")) == 1
    assert [p.name for p in (run / "model").glob("*.pt")] == ["model_epoch_0000.pt"] and not (run / "sim").exists()


def test_a_training_run_and_a_simulation_are_not_written_over(tmp_path, tiny_checkpoint):
    """The fast lane's share of the test above, in this process on a copy of the session's tiny
    run: train and both refuse its folder, and simulate a simulation it holds, each naming it."""
    run = Path(shutil.copytree(tiny_checkpoint.parent.parent, tmp_path / "data" / "tiny"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    tiny = [*helpers.flags(helpers.TINY), "-s", "tiny"]
    for mode in ("train", "both"):
        line = refused(tmp_path, mode, *tiny, run=run_in_process)
        assert "'data/tiny' holds a training run already" in line and "--resume" in line and "--overwrite" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    simulate = ["simulate", *tiny, "--integrator-mode", "analytic", "--steps", "5"]
    assert run_in_process(tmp_path, *simulate).returncode == 0
    summary = (run / "sim" / "analytic" / "summary.json").read_text()
    line = refused(tmp_path, *simulate, run=run_in_process)
    assert "'data/tiny/sim/analytic' holds a simulation already" in line and "--overwrite" in line
    assert (run / "sim" / "analytic" / "summary.json").read_text() == summary
