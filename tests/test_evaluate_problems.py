"""The evaluation suite's problems, set up physically, and their reference trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nbody_engine.evaluate.problems import (CLUSTER_SIZE, CLUSTER_VIRIAL, TRIPLES, burrau_problem, cluster_problem,
                                            scattering_problem, triples_problem)
from nbody_engine.evaluate.reference import converged_leapfrog, ias15
from nbody_engine.physics.gravity import angular_momentum, kinetic_energy, potential_energy

rebound = pytest.importorskip("rebound", reason="the IAS15 references need rebound (the test extra installs it)")


def pair_orbit(mass, position, velocity, i, j):
    """Specific energy, semi-major axis, eccentricity and angular momentum vector of bodies i, j."""
    m = mass[i] + mass[j]
    r, v = position[j] - position[i], velocity[j] - velocity[i]
    energy = 0.5 * v @ v - m / np.linalg.norm(r)
    h = np.cross(np.pad(r, (0, 3 - len(r))), np.pad(v, (0, 3 - len(v))))
    a = -m / (2 * energy)
    return energy, a, math.sqrt(max(0.0, 1 - h @ h / (m * a))), h


def test_burrau_starts_at_rest_on_the_3_4_5_triangle_each_mass_opposite_its_side():
    state = burrau_problem(torch.float64, "cpu").state
    mass, x = state.mass[0].numpy(), state.position[0].numpy()
    assert mass.tolist() == [3, 4, 5]
    assert not state.velocity.any()
    for k, m in enumerate(mass):
        others = [j for j in range(3) if j != k]
        assert np.linalg.norm(x[others[0]] - x[others[1]]) == pytest.approx(m)  # the side opposite mass m is m long
    assert np.allclose((mass[:, None] * x).sum(0), 0)
    assert float(potential_energy(state)) == pytest.approx(-769 / 60, rel=1e-14)  # -(12/5 + 15/4 + 20/3)


def test_triples_are_hierarchical_inner_binary_and_inclined_outer_orbit_as_named():
    state = triples_problem(torch.float64, "cpu").state
    for b, (e_inner, ratio, inclination) in enumerate(TRIPLES):
        mass, x, v = (t[b].numpy() for t in (state.mass, state.position, state.velocity))
        energy, a, e, h_inner = pair_orbit(mass, x, v, 0, 1)
        assert energy < 0 and a == pytest.approx(1.0) and e == pytest.approx(e_inner)
        com = (mass[:2, None] * x[:2]).sum(0) / 2
        vcom = (mass[:2, None] * v[:2]).sum(0) / 2
        r_out, v_out = x[2] - com, v[2] - vcom
        assert np.linalg.norm(r_out) == pytest.approx(ratio)
        assert 0.5 * v_out @ v_out - 3 / np.linalg.norm(r_out) < 0  # the outer orbit is bound
        h_outer = np.cross(r_out, v_out)
        angle = math.degrees(math.acos(h_inner @ h_outer / np.linalg.norm(h_inner) / np.linalg.norm(h_outer)))
        assert angle == pytest.approx(inclination)


def test_scattering_throws_an_unbound_single_at_a_bound_binary():
    state = scattering_problem(torch.float64, "cpu").state
    for b in range(state.batch_size):
        mass, x, v = (t[b].numpy() for t in (state.mass, state.position, state.velocity))
        assert pair_orbit(mass, x, v, 0, 1)[0] < 0
        com, vcom = (x[:2].sum(0) / 2, v[:2].sum(0) / 2)
        relative_speed2 = (v[2] - vcom) @ (v[2] - vcom)
        assert 0.5 * relative_speed2 - 3 / np.linalg.norm(x[2] - com) > 0  # the single comes in unbound
    assert np.allclose(state.mass.numpy()[..., None].__mul__(state.velocity.numpy()).sum(1), 0)


def test_cluster_is_cold_and_of_unit_mass():
    problem = cluster_problem(3, torch.float64, "cpu")
    state = problem.state
    assert state.num_bodies == CLUSTER_SIZE and torch.allclose(state.mass.sum(1), torch.ones(state.batch_size,
                                                                                               dtype=torch.float64))
    virial = kinetic_energy(state) / potential_energy(state, problem.softening).abs()
    assert torch.allclose(virial, torch.full_like(virial, CLUSTER_VIRIAL))
    assert float(state.position.norm(dim=-1).max()) < 1.5


@pytest.mark.parametrize("make", [lambda: triples_problem(torch.float64, "cpu"),
                                  lambda: burrau_problem(torch.float64, "cpu"),
                                  lambda: cluster_problem(3, torch.float64, "cpu")])
def test_ias15_reference_conserves_energy_to_1e_10(make):
    problem = make()
    reference = ias15(problem)
    assert (reference.rel_dE < 1e-10).all()
    assert reference.name.startswith("IAS15") and all(c["force_evals"] > c["steps"] > 0 for c in reference.cost)
    assert reference.position.shape == tuple(problem.state.position.shape)


@pytest.mark.slow
def test_fallback_reference_agrees_with_ias15_on_a_hierarchical_triple():
    """Our converged run (time-symmetric, small eps) ends where IAS15 does, to a small fraction
    of the system's size, and names itself."""
    problem = triples_problem(torch.float64, "cpu")
    fallback, exact = converged_leapfrog(problem, 0.1 / 16), ias15(problem)
    assert "converged leapfrog" in fallback.name
    assert np.abs(fallback.position - exact.position).max() < 0.05
    L = angular_momentum(problem.state)
    assert L.shape == (problem.state.batch_size, 3)
