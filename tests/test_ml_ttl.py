"""integrator_mode = "ml_ttl": the learned time transformation in the time-transformed leapfrog.
An untrained network runs log-H's trajectory exactly; training through TTL rollouts lowers the
energy error at log-H's cost; a trained network keeps the step time-reversible; and the real CLI
trains, checkpoints and simulates it, and refuses what it cannot honour in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import run_in_process

from nbody_engine.config.loading import build_config
from nbody_engine.events import Reporter
from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.ttl import LogHamiltonian, TimeTransformedLeapfrog, ttl_step
from nbody_engine.learning.time_transform import LearnedOmega, OmegaNetwork
from nbody_engine.learning.ttl_trainer import TTLTrainer
from nbody_engine.physics.gravity import Gravity
from nbody_engine.physics.initial_conditions import hierarchical_triples
from nbody_engine.runs.checkpoints import load_checkpoint, save_checkpoint
from nbody_engine.runs.trained_policy import checked_omega_network

TRAINING = {"integrator_mode": "ml_ttl", "objective": "rollout", "train_family": "triples", "num_orbits": 4,
            "seed": 0, "e_min": 0.3, "e_max": 0.8, "hidden_dims": [16, 16], "optimizer": "adam", "lr": 1e-2,
            "weight_decay": 0.0, "rollout_periods": 1, "rollout_eta": [0.5, 0.5], "steps_per_epoch": 1}


def _trainer(**changes) -> TTLTrainer:
    return TTLTrainer(build_config(TRAINING | changes), Reporter(), torch.device("cpu"), torch.float64, Gravity())


def test_untrained_network_runs_log_h_exactly():
    triples = hierarchical_triples(3, (0.3, 0.8), (0.8, 1.2), 0.1, dim=3, generator=torch.Generator().manual_seed(1))
    stop = StopRule(t_end=torch.full_like(triples.time, 20.0))
    runs = [simulate(triples, TimeTransformedLeapfrog(omega, Gravity(), eps=0.3), Gravity(), stop)
            for omega in (LogHamiltonian(), LearnedOmega(OmegaNetwork([8, 8]).double()))]
    for key in ("time", "position", "velocity", "energy", "force_evals"):
        assert (getattr(runs[0], key) == getattr(runs[1], key)).all(), key


@pytest.fixture(scope="module")
def trained() -> TTLTrainer:
    """Eight optimizer steps on four triples at one accuracy: the losses, and the network after."""
    trainer = _trainer()
    for _ in range(8):
        trainer.run_epoch()
    return trainer


def test_training_lowers_the_energy_error_at_log_h_cost(trained):
    first, last = trained.metrics[0], trained.metrics[-1]
    assert last["loss"] < first["loss"] - 0.2  # the first epoch is log-H's loss (g = 0)
    assert last["rel_dE_mean"] < first["rel_dE_mean"]


def test_a_trained_network_keeps_the_step_time_reversible_on_a_triple(trained):
    """Forward, then backward with -h, returns to the start to round-off: the learned Omega
    depends on the positions alone, so the TTL stays time-symmetric."""
    omega = trained.omega
    assert float(omega.network.last.weight.detach().abs().max()) > 0
    start = hierarchical_triples(2, (0.5, 0.9), (1.0, 1.0), 0.2, dim=3, generator=torch.Generator().manual_seed(7))
    ttl = TimeTransformedLeapfrog(omega, Gravity(), eps=0.1)
    with torch.no_grad():
        carry = ttl.init(start)
        state, w, g_seen = start, carry.w, []
        for _ in range(2000):
            state, w, _ = ttl_step(state, w, carry.h, omega, ttl.gravity)
            g_seen.append(omega.g_of(state))
        assert float(torch.stack(g_seen).std(0).min()) > 1e-3  # the network does change the steps along the orbit
        assert float(state.time.min()) > 5
        for _ in range(2000):
            state, w, _ = ttl_step(state, w, -carry.h, omega, ttl.gravity)
    assert torch.allclose(state.position, start.position, rtol=0, atol=1e-10 * float(start.position.abs().max()))
    assert torch.allclose(state.velocity, start.velocity, rtol=0, atol=1e-10 * float(start.velocity.abs().max()))
    assert torch.allclose(w, carry.w, rtol=1e-10)
    assert float(state.time.abs().max()) < 1e-10


def runner(cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbody_engine.runner", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_trains_checkpoints_and_simulates_ml_ttl(tmp_path):
    done = runner(tmp_path, "both", "--integrator-mode", "ml_ttl", "--objective", "rollout", "--train-family",
                  "triples", "--num-orbits", "3", "--e-min", "0.3", "--e-max", "0.7", "--hidden-dims", "8", "8",
                  "--epochs", "2", "--steps-per-epoch", "1", "--rollout-periods", "1", "--rollout-eta", "0.5", "1.0",
                  "--use-train-ic", "--duration", "10", "--eps", "0.3", "--seed", "3", "-s", "learned")
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(tmp_path / "data/learned/model/model_epoch_0001.pt")  # weights_only, hash checked
    assert ckpt.config["integrator_mode"] == "ml_ttl" and ckpt.train_ic.mass.shape == (3, 3)
    assert isinstance(checked_omega_network(ckpt), OmegaNetwork)
    summary = json.loads((tmp_path / "data/learned/sim/ml_ttl/summary.json").read_text())
    assert summary["num_systems"] == 3 and summary["time_final"] == pytest.approx([10.0] * 3, rel=1e-14)
    assert max(summary["max_rel_energy_error"]) < 1e-2
    assert all(evals >= steps for evals, steps in zip(summary["force_evals"], summary["steps"]))


@pytest.mark.parametrize("args, needle", [
    (("train", "--integrator-mode", "ml_ttl", "--objective", "band"), "objective = 'rollout'"),
    (("train", "--integrator-mode", "ml_ttl", "--objective", "rollout", "--activation", "relu"), "smooth activation"),
    (("simulate", "--integrator-mode", "ml_ttl", "--steps", "5"), "'model_path'"),
])
def test_cli_ml_ttl_refuses_what_it_cannot_honour(tmp_path, args, needle):
    run = runner if args[-1] == "band" else run_in_process  # the real command once, then in this process
    done = run(tmp_path, *args, "--epochs", "1", "-s", "bad")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("nbody-runner: error:")
    assert not (tmp_path / "data/bad/model").exists()


def test_checkpoints_of_the_other_kind_are_refused(tmp_path, tiny_checkpoint, trained):
    """A dt network's checkpoint for ml_ttl, and an ml_ttl checkpoint for ml: one line each, exit 2
    (in this process: test_cli_ml_ttl_refuses_what_it_cannot_honour runs the real command)."""
    done = run_in_process(tmp_path, "simulate", "--integrator-mode", "ml_ttl", "--model-path", str(tiny_checkpoint),
                          "--steps", "5", "-s", "x")
    assert done.returncode == 2 and "not a time transformation" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    save_checkpoint(tmp_path / "omega.pt", trained.checkpoint(trained.snapshot(), tmp_path))
    done = run_in_process(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", "omega.pt", "--steps", "5",
                          "-s", "y")
    assert done.returncode == 2 and "use integrator_mode = 'ml_ttl'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_evaluate_runs_a_learned_pareto_curve_beside_log_h(tmp_path, trained):
    """evaluate with an ml_ttl checkpoint: learned rows over eval_eps through the TTL. On a Kepler
    orbit g is a constant, so each learned point is log-H's: same force evaluations, round-off energy."""
    save_checkpoint(tmp_path / "omega.pt", trained.checkpoint(trained.snapshot(), tmp_path))
    done = runner(tmp_path, "evaluate", "--model-path", "omega.pt", "--eval-suite", "kepler", "--eval-systems", "0",
                  "--eval-e", "0.7", "--Nperiod", "1", "--eval-eps", "0.2", "0.4", "--eval-long-periods", "50",
                  "-s", "ev")
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "data/ev/eval/table.json").read_text())["rows"]
    learned = {r["eps"]: r for r in rows if r["policy"] == "learned"}
    log_h = {r["eps"]: r for r in rows if r["policy"] == "ttl"}
    assert sorted(learned) == [0.2, 0.4]
    for eps, row in learned.items():
        assert row["force_evals"] == log_h[eps]["force_evals"] and row["max_rel_dE"] < 1e-12
    assert "learned vs ttl" in done.stdout


@pytest.mark.slow
def test_the_explorer_simulates_and_evaluates_an_ml_ttl_checkpoint_against_log_h(tmp_path, monkeypatch, trained):
    """The dashboard's Simulate compares a learned time transformation with log-H (its untrained
    form, the baseline it is judged against), and its Evaluate draws the learned Pareto curve."""
    import panel as pn

    from explorer import Explorer
    from test_explorer import finish

    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "omega.pt", trained.checkpoint(trained.snapshot(), tmp_path))
    e = Explorer()
    try:
        e.simulate.param.update(integrator_mode="ml_ttl", model_path="omega.pt", use_train_ic=True, duration=5.0,
                                eps=0.3, multi_orbit_sim=False, save_name="ttl_run")
        assert e.start("simulate"), e.error.object
        finish(e)
        assert not e.error.visible, e.error.object
        heading = e.sim_view.objects[0].objects[0].object
        assert heading == "### Learned against log-H (ttl) on the same initial conditions", heading
        (table,) = [p.object for p in e.sim_view.select(pn.pane.DataFrame)]
        assert list(table.columns) == ["learned (ml_ttl)", "log-H (ttl)"]
        assert len(e.live.frame("simulation")) > 0  # the live plots drew the learned run
        e.simulate.param.update(eval_suite="kepler", eval_systems=0, eval_e=[0.7], Nperiod=1.0, eval_eps=[0.2, 0.4],
                                eval_long_periods=50.0)
        assert e.start("evaluate"), e.error.object
        finish(e, timeout=600)
        assert not e.error.visible, e.error.object
        assert e.status.startswith("Evaluate finished"), e.status
        (pareto,) = [p.object for p in e.eval_view.select(pn.pane.HoloViews)]
        assert {"learned", "ttl"} <= {layer.label for layer in pareto}  # the learned curve beside log-H's
    finally:
        e.close()
