"""The time-transformed leapfrog (log-H): Kepler to round-off, a triple against IAS15, time
symmetry, a learned-style time transformation through the same interface, and the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import run_in_process

from nbody_engine.config.schema import Config
from nbody_engine.evaluate.problems import triples_problem
from nbody_engine.evaluate.reference import ias15, rebound_available
from nbody_engine.evaluate.metrics import initial_size
from nbody_engine.integrators.loop import StopRule, period_of, simulate
from nbody_engine.integrators.ttl import LogHamiltonian, TimeTransformedLeapfrog, ttl_step
from nbody_engine.physics.gravity import Gravity
from nbody_engine.physics.initial_conditions import kepler_orbit


def orbital_elements(traj) -> tuple[np.ndarray, np.ndarray]:
    """Semi-major axis and eccentricity (rows, B) of recorded two-body orbits."""
    M = traj.mass.sum(-1)
    r = traj.position[:, :, 1] - traj.position[:, :, 0]
    v = traj.velocity[:, :, 1] - traj.velocity[:, :, 0]
    distance = np.linalg.norm(r, axis=-1)
    energy = 0.5 * (v * v).sum(-1) - M / distance
    h = r[..., 0] * v[..., 1] - r[..., 1] * v[..., 0]  # 2D: the z component of r x v
    runge_lenz = np.stack([v[..., 1] * h, -v[..., 0] * h], -1) / M[..., None] - r / distance[..., None]
    return -M / (2 * energy), np.linalg.norm(runge_lenz, axis=-1)


def test_log_h_keeps_kepler_energy_eccentricity_and_semi_major_axis_to_round_off():
    orbit = kepler_orbit([0.5, 0.9, 0.99], 1.0)
    period = period_of(orbit.mass, orbit.position, orbit.velocity)
    traj = simulate(orbit, TimeTransformedLeapfrog(LogHamiltonian(), Gravity(), eps=0.2), Gravity(),
                    StopRule(t_end=10 * period))
    assert np.array_equal(traj.time[-1], (10 * period).numpy())  # landed exactly on the end time
    assert np.abs(traj.energy / traj.energy[0] - 1).max() < 1e-11
    a, e = orbital_elements(traj)
    assert np.abs(a / a[0] - 1).max() < 1e-11
    assert np.abs(e - [0.5, 0.9, 0.99]).max() < 1e-11
    # a plain adaptive leapfrog at far more steps is nowhere near: the orbit, not the error, is exact
    assert traj.steps.max() < 20_000


def test_landing_costs_are_counted():
    orbit = kepler_orbit([0.9], 1.0)
    period = period_of(orbit.mass, orbit.position, orbit.velocity)
    ttl = TimeTransformedLeapfrog(LogHamiltonian(), Gravity(), eps=0.1)
    landed = simulate(orbit, ttl, Gravity(), StopRule(t_end=2 * period))
    # every step one force evaluation, the step that would pass the end one more, and the last
    # step's secant iterates at least one
    assert landed.force_evals[0] >= landed.steps[0] + 1
    assert landed.force_evals[0] <= landed.steps[0] + 8
    fixed_count = simulate(orbit, ttl, Gravity(), StopRule(max_steps=50))
    assert fixed_count.force_evals[0] == fixed_count.steps[0] == 50


def test_forward_then_backward_returns_to_the_start():
    """-h retraces +h: a triple (no exact orbit to hide behind) and an e = 0.9 binary."""
    triple = triples_problem(Config(eval_systems=0), torch.float64, "cpu").state.select(slice(1, 3))
    binary = kepler_orbit([0.9], 1.0, dim=3)
    for start in (triple, binary):
        ttl = TimeTransformedLeapfrog(LogHamiltonian(), Gravity(), eps=0.05)
        carry = ttl.init(start)
        state, w = start, carry.w
        for _ in range(3000):
            state, w, _ = ttl_step(state, w, carry.h, ttl.omega, ttl.gravity)
        assert float(state.time.min()) > 0.5
        for _ in range(3000):
            state, w, _ = ttl_step(state, w, -carry.h, ttl.omega, ttl.gravity)
        scale = float(start.position.abs().max())
        assert torch.allclose(state.position, start.position, rtol=0, atol=1e-10 * scale)
        assert torch.allclose(state.velocity, start.velocity, rtol=0, atol=1e-10 * float(start.velocity.abs().max()))
        assert float(state.time.abs().max()) < 1e-10


@pytest.mark.slow
@pytest.mark.skipif(not rebound_available(), reason="needs rebound (the 'reference' extra) for IAS15")
def test_a_hierarchical_triple_converges_to_ias15_at_second_order():
    problem = triples_problem(Config(eval_systems=0), torch.float64, "cpu")
    reference = ias15(problem)
    errors = []
    for eps in (0.04, 0.02):
        traj = simulate(problem.state, TimeTransformedLeapfrog(LogHamiltonian(), Gravity(), eps=eps), Gravity(),
                        StopRule(t_end=problem.t_end))
        assert np.array_equal(traj.time[-1], problem.t_end.numpy())
        assert np.abs(traj.energy / traj.energy[0] - 1).max() < 1e-4
        errors.append(np.linalg.norm(traj.position[-1] - reference.position, axis=-1).max(-1) / initial_size(problem))
    assert errors[1].max() < 2e-3
    assert np.all((errors[0] / errors[1] > 3.5) & (errors[0] / errors[1] < 4.5))  # order 2


class ScaledLogHamiltonian:
    """``Omega = U exp(g(q))`` with ``g`` a small network of the pair separation, its gradient
    by autograd: the shape a learned time transformation takes (issue 28)."""

    name = "scaled"

    def __init__(self, network) -> None:
        self.network = network

    def __call__(self, mass, position, potential, acc):
        u, grad_u = LogHamiltonian()(mass, position, potential, acc)
        with torch.inference_mode(False), torch.enable_grad():
            q = position.clone().requires_grad_()
            g = self.network(q[:, 1] - q[:, 0]).squeeze(-1)
            (grad_g,) = torch.autograd.grad(g.sum(), q)
        scale = g.detach().exp()
        return u * scale, scale.view(-1, 1, 1) * (grad_u + u.view(-1, 1, 1) * grad_g)


def test_a_learned_style_time_transformation_plugs_into_the_same_step():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    orbit = kepler_orbit([0.7], 1.0)
    period = period_of(orbit.mass, orbit.position, orbit.velocity)
    gravity = Gravity()
    scaled = simulate(orbit, TimeTransformedLeapfrog(ScaledLogHamiltonian(network), gravity, eps=0.1), gravity,
                      StopRule(t_end=20 * period))
    rel_dE = np.abs(scaled.energy[:, 0] / scaled.energy[0, 0] - 1)
    assert 1e-12 < rel_dE.max() < 1e-3  # not log-H any more (no exact orbit), but a sane integrator
    assert np.array_equal(scaled.time[-1], (20 * period).numpy())
    # and still time-reversible: -h retraces +h
    ttl = TimeTransformedLeapfrog(ScaledLogHamiltonian(network), gravity, eps=0.1)
    carry = ttl.init(orbit)
    state, w = orbit, carry.w
    for h in (carry.h, -carry.h):
        for _ in range(500):
            state, w, _ = ttl_step(state, w, h, ttl.omega, gravity)
    assert torch.allclose(state.position, orbit.position, rtol=0, atol=1e-11)
    torch.nn.init.zeros_(network[2].weight)
    torch.nn.init.zeros_(network[2].bias)  # g = 0: exactly log-H
    ttl = simulate(orbit, TimeTransformedLeapfrog(ScaledLogHamiltonian(network), gravity, eps=0.1), gravity,
                   StopRule(max_steps=200))
    log_h = simulate(orbit, TimeTransformedLeapfrog(LogHamiltonian(), gravity, eps=0.1), gravity,
                     StopRule(max_steps=200))
    assert np.allclose(ttl.position, log_h.position, rtol=0, atol=1e-13)


def test_a_batch_of_eps_runs_each_system_as_alone():
    orbit = kepler_orbit([0.8, 0.8], 1.0)
    period = period_of(orbit.mass, orbit.position, orbit.velocity)
    eps = torch.tensor([0.05, 0.2], dtype=torch.float64)
    batch = simulate(orbit, TimeTransformedLeapfrog(LogHamiltonian(), Gravity(), eps=eps), Gravity(),
                     StopRule(t_end=3 * period))
    for b in range(2):
        alone = simulate(orbit.select(slice(b, b + 1)), TimeTransformedLeapfrog(LogHamiltonian(), Gravity(),
                                                                               eps=float(eps[b])),
                         Gravity(), StopRule(t_end=3 * period[b: b + 1]))
        assert batch.steps[b] == alone.steps[0] and batch.force_evals[b] == alone.force_evals[0]
        assert np.allclose(batch.position[-1, b], alone.position[-1, 0], rtol=0, atol=1e-12)


def runner(cwd, *args):
    return subprocess.run([sys.executable, "-m", "nbody_engine.runner", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_ttl_keeps_an_e09_kepler_orbit_to_1e10_for_10_periods(tmp_path):
    e, r_p = 0.9, 0.1  # a = 1, masses 1: v_p = sqrt(M (1 + e) / r_p)
    v_p = (2 * (1 + e) / r_p) ** 0.5
    np.savetxt(tmp_path / "orbit.txt", [[1.0, -r_p / 2, 0, 0, -v_p / 2], [1.0, r_p / 2, 0, 0, v_p / 2]])
    done = runner(tmp_path, "simulate", "--integrator-mode", "ttl", "--ic-path", "orbit.txt", "--Nperiod", "10",
                  "--eps", "0.1", "-s", "ttl")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "data/ttl/sim/ttl/summary.json").read_text())
    assert summary["max_rel_energy_error"] < 1e-10
    assert summary["time_final"] == pytest.approx(10 * summary["period"], rel=1e-15)
    assert summary["steps"] < summary["force_evals"] <= summary["steps"] + 8  # the landing's iterates counted
    trajectory = np.load(tmp_path / "data/ttl/sim/ttl/trajectory.npz")
    assert trajectory["position"].shape[1:] == (1, 2, 2) and trajectory["force_evals"].tolist() == [
        summary["force_evals"]]


@pytest.mark.slow
def test_cli_ttl_runs_where_the_analytic_step_runs(tmp_path):
    """N bodies with a random start for a number of steps, and a sampled Kepler family."""
    done = runner(tmp_path, "simulate", "--integrator-mode", "ttl", "--num-particles", "4", "--steps", "300",
                  "--eps", "0.002", "--seed", "1", "-s", "nbody")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "data/nbody/sim/ttl/summary.json").read_text())
    assert summary["steps"] == summary["force_evals"] == 300 and summary["max_rel_energy_error"] < 1e-6
    done = runner(tmp_path, "simulate", "--integrator-mode", "ttl", "--multi-orbit-sim", "--num-orbits", "3",
                  "--Nperiod", "2", "--seed", "2", "-s", "family")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "data/family/sim/ttl_multi/summary.json").read_text())
    assert summary["num_systems"] == 3 and max(summary["max_rel_energy_error"]) < 1e-11


@pytest.mark.parametrize("args, needle", [(("--dt", "0.01"), "'dt'"), (("--compile",), "'compile'")])
def test_cli_ttl_refuses_keys_it_cannot_honour(tmp_path, args, needle):
    run = runner if needle == "'dt'" else run_in_process  # the real command once, then in this process
    done = run(tmp_path, "simulate", "--integrator-mode", "ttl", "--steps", "10", *args, "-s", "bad")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("nbody-runner: error:")
    assert not (tmp_path / "data/bad").exists()


def test_the_ttl_declares_its_own_step_and_a_dt_policy_does_not():
    """The loop runs an integrator's own step only where the policy declares one (OwnStep)."""
    from nbody_engine.integrators.dt_policy import OwnStep
    from nbody_engine.integrators.policies import AnalyticDt

    assert isinstance(TimeTransformedLeapfrog(LogHamiltonian(), Gravity(), eps=0.2), OwnStep)
    assert not isinstance(AnalyticDt(0.02), OwnStep)
