"""The rollout objective: backpropagation through whole leapfrog rollouts of a Kepler family."""

from __future__ import annotations

import math

import pytest
import torch

from nbody_engine.config.loading import load_configs
from nbody_engine.integrators.loop import StopRule, period_of, simulate
from nbody_engine.integrators.policies import AnalyticDt
from nbody_engine.jobs.train import run_training
from nbody_engine.learning.network import LearnedDt, build_network
from nbody_engine.learning.rollout import analytic_steps, rollout, rollout_loss, rollout_step
from nbody_engine.physics.gravity import Gravity
from nbody_engine.physics.initial_conditions import kepler_orbit
from nbody_engine.runs.checkpoints import load_checkpoint

TINY = {"num_particles": 2, "num_orbits": 2, "e_min": 0.6, "e_max": 0.8, "objective": "rollout",
        "feature_type": "radial", "history_len": 0, "hidden_dims": [8], "seed": 5, "lr": 1e-2, "weight_decay": 0.0,
        "rollout_periods": 2, "rollout_eta": [0.08, 0.2], "epochs": 2, "steps_per_epoch": 2}


def tiny_policy(seed: int = 0) -> LearnedDt:
    torch.manual_seed(seed)
    values = load_configs("train", cli=TINY)["train"].param.values()
    return LearnedDt(build_network(values).double(), "radial", 0, Gravity())


@pytest.mark.slow
def test_an_untrained_rollout_is_the_analytic_policy_with_the_analytic_step_count():
    """The last layer starts at zero: c = 1, so the rollout is the analytic policy at eta, takes
    its steps, covers its time (log h = log eta) and makes its energy error."""
    orbits = kepler_orbit([0.6, 0.8], 1.0)
    eta = torch.tensor([0.1, 0.05], dtype=torch.float64)
    t_end = 2 * period_of(orbits.mass, orbits.position, orbits.velocity)
    steps = analytic_steps(orbits, eta, t_end, Gravity())
    policy = tiny_policy()
    policy.eta = eta
    with torch.no_grad():
        worst, elapsed = rollout(policy, orbits, steps, Gravity())
    reference = simulate(orbits, AnalyticDt(eta), Gravity(), StopRule(t_end=t_end))
    rel_dE = abs(reference.energy / reference.energy[0] - 1).max(0)
    assert torch.allclose(worst, torch.as_tensor(rel_dE), rtol=1e-6)
    # the analytic run cuts its last step to land on t_end; the rollout takes it whole
    assert (elapsed >= t_end).all() and torch.allclose(elapsed, t_end, rtol=1e-3)


@pytest.mark.slow
def test_rollout_steps_decrease_the_loss_on_a_tiny_family():
    orbits = kepler_orbit([0.6, 0.8], 1.0)
    eta = torch.tensor([0.1, 0.1], dtype=torch.float64)
    policy = tiny_policy()
    optimizer = torch.optim.Adam(policy.network.parameters(), lr=1e-2)
    before = rollout_loss(policy, orbits, eta, 2, 100.0, Gravity())
    for _ in range(8):
        rollout_step(policy, optimizer, orbits, eta, 2, 100.0, 1.0, Gravity())
    after = rollout_loss(policy, orbits, eta, 2, 100.0, Gravity())
    assert after.loss.mean().item() < before.loss.mean().item() - 0.05
    # at the cost the analytic policy pays, give or take a few percent: the gain is where the steps go
    assert (after.log_h_over_eta.abs() < 0.05).all()
    assert (after.max_rel_dE < before.max_rel_dE).all()


@pytest.mark.slow
def test_rollout_training_reproduces_with_a_seed_and_writes_a_conditioned_checkpoint(tmp_path):
    weights = []
    for run in ("a", "b"):
        cfg = load_configs("train", cli={**TINY, "save_name": run})["train"]
        result = run_training(cfg, data_dir=tmp_path)
        ckpt = load_checkpoint(result["checkpoint"])
        metrics = ckpt.data["metrics"]
        assert ckpt.config["objective"] == "rollout" and len(metrics) == 2
        assert all(math.isfinite(m["loss"]) and m["attempts"] == 2 * 2 for m in metrics)
        weights.append(ckpt.model_state)
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
    network = build_network(ckpt.config)
    assert network.conditioned and network.input_shift.shape == (2,)  # v_r/|v| and log eta


@pytest.mark.slow
def test_a_rollout_epoch_reports_its_optimizer_steps_not_acceptances(tmp_path):
    """No step is accepted or retrained in a rollout epoch: its metrics say how many rollout
    steps it took, its acceptance rate is undefined (not 0), and the console line says so."""
    from nbody_engine.events import epoch_counts

    cfg = load_configs("train", cli={**TINY, "save_name": "r", "epochs": 1})["train"]
    metrics = load_checkpoint(run_training(cfg, data_dir=tmp_path)["checkpoint"]).data["metrics"][0]
    assert metrics["rollout_steps"] == TINY["steps_per_epoch"]
    assert metrics["acceptance_rate"] is None or math.isnan(metrics["acceptance_rate"])
    assert epoch_counts(metrics) == f"rollout steps {TINY['steps_per_epoch']}"
    assert epoch_counts({"accepted_steps": 7, "retrain_iterations": 3}) == "accepted 7  retrains 3"


def test_rollout_needs_bound_two_body_orbits():
    from nbody_engine.config.errors import InputError
    from nbody_engine.physics.initial_conditions import random_system

    with pytest.raises(InputError, match="objective = 'band'"):
        rollout_loss(tiny_policy(), random_system(3, 2), torch.tensor([0.1], dtype=torch.float64), 1, 1.0, Gravity())


@pytest.mark.slow
def test_rollout_training_of_three_bodies_is_one_line_exit_2_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", "--objective", "rollout",
                           "--num-particles", "3", "-n", "1", "-s", "r3"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "objective = 'band'" in lines[0]
    assert not (tmp_path / "data" / "r3").exists()
