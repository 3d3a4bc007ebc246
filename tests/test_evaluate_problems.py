"""The evaluation suite's problems, set up physically, and their reference trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nbody_engine.config.errors import InputError
from nbody_engine.config.loading import load_configs
from nbody_engine.config.schema import Config
from nbody_engine.evaluate.problems import (CLUSTER_SIZE, CLUSTER_SOFTENING, CLUSTER_VIRIAL, TRIPLES, burrau_problem,
                                            cluster_problem, planetary_problem, plummer_problem, problems_of,
                                            scattering_problem, training_family, triples_problem)
from nbody_engine.evaluate.systems import (IMPACT_RANGE, KEPLER_E_RANGE, PLANET_MASSES, PLANET_MAX_E,
                                           PLANET_MAX_INCLINATION_DEG, PLANET_SPACING, PLUMMER_SIZE, TRIPLE_E_RANGE,
                                           TRIPLE_RATIO_RANGE, UNEQUAL_E_RANGE, UNEQUAL_RATIOS, plummer_spheres)
from nbody_engine.evaluate.reference import converged_leapfrog, ias15
from nbody_engine.physics.gravity import angular_momentum, kinetic_energy, potential_energy

HAND_PICKED = Config(eval_systems=0)


def hand_picked(seed: int) -> Config:
    return Config(eval_systems=0, seed=seed)


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
    state = burrau_problem(HAND_PICKED, torch.float64, "cpu").state
    mass, x = state.mass[0].numpy(), state.position[0].numpy()
    assert mass.tolist() == [3, 4, 5]
    assert not state.velocity.any()
    for k, m in enumerate(mass):
        others = [j for j in range(3) if j != k]
        assert np.linalg.norm(x[others[0]] - x[others[1]]) == pytest.approx(m)  # the side opposite mass m is m long
    assert np.allclose((mass[:, None] * x).sum(0), 0)
    assert float(potential_energy(state)) == pytest.approx(-769 / 60, rel=1e-14)  # -(12/5 + 15/4 + 20/3)


def test_triples_are_hierarchical_inner_binary_and_inclined_outer_orbit_as_named():
    state = triples_problem(HAND_PICKED, torch.float64, "cpu").state
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
    state = scattering_problem(HAND_PICKED, torch.float64, "cpu").state
    for b in range(state.batch_size):
        mass, x, v = (t[b].numpy() for t in (state.mass, state.position, state.velocity))
        assert pair_orbit(mass, x, v, 0, 1)[0] < 0
        com, vcom = (x[:2].sum(0) / 2, v[:2].sum(0) / 2)
        relative_speed2 = (v[2] - vcom) @ (v[2] - vcom)
        assert 0.5 * relative_speed2 - 3 / np.linalg.norm(x[2] - com) > 0  # the single comes in unbound
    assert np.allclose(state.mass.numpy()[..., None].__mul__(state.velocity.numpy()).sum(1), 0)


def test_cluster_is_cold_and_of_unit_mass():
    problem = cluster_problem(hand_picked(3), torch.float64, "cpu")
    state = problem.state
    assert state.num_bodies == CLUSTER_SIZE and torch.allclose(state.mass.sum(1), torch.ones(state.batch_size,
                                                                                               dtype=torch.float64))
    virial = kinetic_energy(state) / potential_energy(state, problem.softening).abs()
    assert torch.allclose(virial, torch.full_like(virial, CLUSTER_VIRIAL))
    assert float(state.position.norm(dim=-1).max()) < 1.5


@pytest.mark.parametrize("make", [lambda: triples_problem(HAND_PICKED, torch.float64, "cpu"),
                                  lambda: burrau_problem(HAND_PICKED, torch.float64, "cpu"),
                                  lambda: cluster_problem(hand_picked(3), torch.float64, "cpu"),
                                  lambda: planetary_problem(hand_picked(0), torch.float64, "cpu")])
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
    problem = triples_problem(HAND_PICKED, torch.float64, "cpu")
    fallback, exact = converged_leapfrog(problem, 0.1 / 16), ias15(problem)
    assert "converged leapfrog" in fallback.name
    assert np.abs(fallback.position - exact.position).max() < 0.05
    L = angular_momentum(problem.state)
    assert L.shape == (problem.state.batch_size, 3)


def suite_problem(name, **cli):
    """Problem ``name`` as evaluate builds it (the hand-picked systems unless eval_systems is given)."""
    cli = {"eval_suite": name, "eval_systems": 0, **cli}
    [problem] = problems_of(load_configs("evaluate", cli=cli)["simulate"], torch.float64, "cpu")
    return problem


def test_the_kepler_family_spans_its_eccentricity_range_in_and_out_of_the_training_range():
    problem = suite_problem("kepler", eval_systems=16, eval_a=1.5, mass=0.5, seed=3)
    state = problem.state
    assert state.batch_size == 16 and problem.kepler_split
    e = []
    for b in range(16):
        mass, x, v = (t[b].numpy() for t in (state.mass, state.position, state.velocity))
        energy, a, ecc, _ = pair_orbit(mass, x, v, 0, 1)
        assert energy < 0 and a == pytest.approx(1.5, rel=1e-12) and mass.tolist() == [0.5, 0.5]
        assert np.allclose(mass @ x, 0) and np.allclose(mass @ v, 0)
        assert problem.labels[b] == f"e={ecc:.3f}"
        assert float(problem.time_unit[b]) == pytest.approx(2 * math.pi * math.sqrt(a**3), rel=1e-12)
        e.append(ecc)
    low, high = KEPLER_E_RANGE
    slices = np.floor((np.array(e) - low) / (high - low) * 16)
    assert sorted(slices.tolist()) == list(range(16))  # stratified: one orbit in each sixteenth of the range
    separations = state.position[:, 1] - state.position[:, 0]
    pericentre = separations.norm(dim=-1) / 1.5 - (1 - torch.tensor(e, dtype=torch.float64))
    assert (pericentre.abs() > 1e-3).sum() > 8  # the orbits start at random phases, not all at pericentre
    family = training_family(problem, {**KEPLER_TRAINED, "e_min": 0.6, "e_max": 0.95, "a_min": 1.0, "a_max": 2.0})
    assert 3 <= family.count("in") <= 13 and family.count("in") + family.count("out") == 16


def test_the_families_of_triples_impacts_and_clusters_are_drawn_from_their_stated_ranges():
    triples = suite_problem("triples", eval_systems=16, seed=5)
    assert triples.state.batch_size == 16
    for b in range(16):
        mass, x, v = (t[b].numpy() for t in (triples.state.mass, triples.state.position, triples.state.velocity))
        energy, a, e, _ = pair_orbit(mass, x, v, 0, 1)
        assert energy < 0 and a == pytest.approx(1.0) and TRIPLE_E_RANGE[0] <= e <= TRIPLE_E_RANGE[1]
        ratio = np.linalg.norm(x[2] - x[:2].mean(0))
        assert TRIPLE_RATIO_RANGE[0] <= ratio <= TRIPLE_RATIO_RANGE[1]
    impacts = [float(label[2:]) for label in suite_problem("scattering", eval_systems=16, seed=5).labels]
    assert len(impacts) == 16 and all(IMPACT_RANGE[0] <= b <= IMPACT_RANGE[1] for b in impacts)
    assert len(set(impacts)) == 16
    assert suite_problem("cluster", eval_systems=16, seed=5).state.batch_size == 16
    assert suite_problem("burrau", eval_systems=16).state.batch_size == 1  # one system, the classic


@pytest.mark.parametrize("name", ["kepler", "triples", "scattering", "cluster"])
def test_a_family_is_the_same_for_the_same_seed_and_another_for_another(name):
    first, again, other = (suite_problem(name, eval_systems=16, seed=seed).state for seed in (7, 7, 8))
    assert torch.equal(first.position, again.position) and torch.equal(first.velocity, again.velocity)
    assert not torch.allclose(first.position, other.position)


def test_hand_picked_eccentricities_with_a_drawn_family_are_refused_naming_both_keys():
    with pytest.raises(InputError, match="'eval_e'.*eval_systems = 0"):
        suite_problem("kepler", eval_systems=16, eval_e=[0.5])


def test_unequal_binaries_are_bound_orbits_of_exactly_the_stated_mass_ratios():
    problem = suite_problem("unequal", eval_a=1.5, mass=0.5, seed=4)
    state = problem.state
    ratios = [q for q in UNEQUAL_RATIOS for _ in range(3)]
    assert state.batch_size == len(ratios)
    for b in range(state.batch_size):
        mass, x, v = (t[b].numpy() for t in (state.mass, state.position, state.velocity))
        assert mass[1] / mass[0] == pytest.approx(ratios[b], rel=1e-14) and mass.sum() == pytest.approx(1.0, rel=1e-15)
        energy, a, e, _ = pair_orbit(mass, x, v, 0, 1)
        assert energy < 0 and a == pytest.approx(1.5, rel=1e-12) and UNEQUAL_E_RANGE[0] <= e <= UNEQUAL_E_RANGE[1]
        assert problem.labels[b] == f"q={ratios[b]:g} e={e:.2f}"
        assert np.allclose(mass @ x, 0) and np.allclose(mass @ v, 0)
        period = 2 * math.pi * math.sqrt(a**3 / mass.sum())
        assert float(problem.time_unit[b]) == pytest.approx(period, rel=1e-12)
    assert problem.kepler_split


def test_planetary_systems_hold_bound_near_circular_slightly_inclined_well_separated_planets():
    problem = planetary_problem(hand_picked(5), torch.float64, "cpu")
    state = problem.state
    assert state.dim == 3 and problem.kepler_split and problem.softening == 0
    for b in range(state.batch_size):
        mass, x, v = (t[b].numpy() for t in (state.mass, state.position, state.velocity))
        assert mass.tolist() == [1.0, *PLANET_MASSES]
        assert np.allclose(mass @ x, 0) and np.allclose(mass @ v, 0)
        elements = [pair_orbit(mass, x, v, 0, k) for k in range(1, len(mass))]
        assert all(energy < 0 and 0 <= e <= PLANET_MAX_E for energy, _, e, _ in elements)
        a = [element[1] for element in elements]
        assert a[0] == pytest.approx(1.0, rel=1e-12)
        assert all(PLANET_SPACING[0] <= outer / inner <= PLANET_SPACING[1] for inner, outer in zip(a, a[1:]))
        for _, _, _, h in elements:  # inclination to the x-y plane
            assert math.degrees(math.acos(h[2] / np.linalg.norm(h))) <= PLANET_MAX_INCLINATION_DEG + 1e-9
        innermost = 2 * math.pi * math.sqrt(a[0] ** 3 / (1 + PLANET_MASSES[0]))
        assert float(problem.time_unit[b]) == pytest.approx(innermost, rel=1e-12)
        assert float(problem.t_end[b]) == pytest.approx(10 * innermost, rel=1e-12)


def test_plummer_sampling_has_the_plummer_virial_ratio_half_mass_radius_and_energy():
    """Aarseth-Henon-Wielen in Henon units: T / |W| = 1/2, E = -1/4 and half the mass within
    1.305 scale lengths (0.769), each up to sampling noise over 100 spheres of 64."""
    state = plummer_spheres(torch.Generator().manual_seed(1), 100, PLUMMER_SIZE)
    virial = kinetic_energy(state) / potential_energy(state).abs()
    assert abs(float(virial.mean()) - 0.5) < 0.02 and 0.02 < float(virial.std()) < 0.1
    assert float((kinetic_energy(state) + potential_energy(state)).mean()) == pytest.approx(-0.25, abs=0.01)
    assert float(state.position.norm(dim=-1).median()) == pytest.approx(1.305 * 3 * math.pi / 16, abs=0.03)


def test_plummer_problem_is_virialized_of_unit_mass_in_its_centre_of_mass_frame():
    problem = plummer_problem(hand_picked(2), torch.float64, "cpu")
    state = problem.state
    assert state.num_bodies == 64 and problem.softening == CLUSTER_SOFTENING and not problem.kepler_split
    assert torch.allclose(state.mass.sum(1), torch.ones(state.batch_size, dtype=torch.float64))
    assert torch.allclose(state.mass, torch.full_like(state.mass, 1 / 64))
    virial = kinetic_energy(state) / potential_energy(state, CLUSTER_SOFTENING).abs()
    assert torch.allclose(virial, torch.full_like(virial, 0.5), rtol=1e-12)
    momentum = (state.mass.unsqueeze(-1) * state.velocity).sum(1)
    centre = (state.mass.unsqueeze(-1) * state.position).sum(1)
    assert float(momentum.abs().max()) < 1e-15 and float(centre.abs().max()) < 1e-15
    energy = kinetic_energy(state) + potential_energy(state, CLUSTER_SOFTENING)
    crossing = 1 / (-2 * energy) ** 1.5  # G M^(5/2) / (2|E|)^(3/2): near 2 sqrt(2) for E near -1/4
    assert torch.allclose(problem.time_unit, crossing, rtol=1e-12)
    assert ((problem.time_unit - 2 * math.sqrt(2)).abs() < 0.5).all() and (problem.t_end > 2 * problem.time_unit).all()


@pytest.mark.parametrize("name", ["unequal", "planetary", "plummer"])
def test_the_same_seed_draws_the_same_systems_and_another_seed_others(name):
    first, again, other = (suite_problem(name, seed=seed).state for seed in (7, 7, 8))
    assert torch.equal(first.position, again.position) and torch.equal(first.velocity, again.velocity)
    assert not torch.allclose(first.position, other.position)


KEPLER_TRAINED = {"integrator_mode": "analytic", "num_particles": 2, "e_min": 0.0, "e_max": 0.95, "a_min": 0.5,
                  "a_max": 2.0}


def test_unequal_masses_are_out_of_an_equal_mass_training_family_and_in_one_trained_on_such_ratios():
    problem = suite_problem("unequal")
    assert training_family(problem, KEPLER_TRAINED) == ("out",) * 6
    binaries = {**KEPLER_TRAINED, "integrator_mode": "ml_ttl", "train_family": "binaries"}
    assert training_family(problem, {**binaries, "family_mass_ratio": 0.01}) == ("in",) * 6
    assert training_family(problem, {**binaries, "family_mass_ratio": 0.05}) == ("in",) * 3 + ("out",) * 3
    kepler = suite_problem("kepler", eval_e=[0.5, 0.98])  # equal masses: in by their orbits' ranges alone
    assert training_family(kepler, KEPLER_TRAINED) == ("in", "out")


def test_planets_and_plummer_spheres_are_out_unless_trained_on_their_body_count_and_mass_ratios():
    planetary, plummer = (make(hand_picked(0), torch.float64, "cpu") for make in (planetary_problem, plummer_problem))
    assert set(training_family(planetary, KEPLER_TRAINED)) == set(training_family(plummer, KEPLER_TRAINED)) == {"out"}
    assert set(training_family(plummer, {**KEPLER_TRAINED, "num_particles": 64})) == {"in"}
    assert set(training_family(planetary, {**KEPLER_TRAINED, "num_particles": 4})) == {"out"}  # masses 1e-3 of the star
    clusters = {**KEPLER_TRAINED, "integrator_mode": "ml_ttl", "train_family": "clusters", "family_cluster_size": 4}
    assert set(training_family(planetary, {**clusters, "family_mass_ratio": 1e-4})) == {"in"}
    assert set(training_family(planetary, {**clusters, "family_mass_ratio": 1e-2})) == {"out"}
