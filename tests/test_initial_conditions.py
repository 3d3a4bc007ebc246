"""Initial conditions: random systems, Kepler orbits and families, IC files (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nbody_engine.config.errors import InputError
from nbody_engine.physics.gravity import State, angular_momentum, momentum, total_energy
from nbody_engine.physics.initial_conditions import (kepler_family, kepler_orbit, kepler_period, load_ic_file,
                                                     make_state, random_system, save_ic_file)

F64 = torch.float64


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orbital_elements(state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Semi-major axis, eccentricity vector (2D, in the x-y plane) and separation of each
    two-body system, from its relative position and velocity alone."""
    M = state.mass.sum(1)
    r = state.position[:, 1, :2] - state.position[:, 0, :2]
    v = state.velocity[:, 1, :2] - state.velocity[:, 0, :2]
    dist = r.norm(dim=-1)
    specific_energy = 0.5 * (v * v).sum(-1) - M / dist
    a = -M / (2 * specific_energy)
    h = r[:, 0] * v[:, 1] - r[:, 1] * v[:, 0]
    # Laplace-Runge-Lenz: e = v x h / M - r / |r|, pointing at pericentre
    e_vec = torch.stack([v[:, 1] * h, -v[:, 0] * h], -1) / M.unsqueeze(-1) - r / dist.unsqueeze(-1)
    return a, e_vec, dist


# --- random systems -----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_random_system_is_in_the_centre_of_mass_frame(dim):
    state = random_system(5, dim, num_systems=3, mass=0.7, generator=seeded(1))
    assert state.position.shape == (3, 5, dim) and state.mass.shape == (3, 5)
    assert (state.mass == 0.7).all()
    m = state.mass.unsqueeze(-1)
    com = (m * state.position).sum(1) / m.sum(1)
    torch.testing.assert_close(com, torch.zeros_like(com), rtol=0, atol=1e-15)
    torch.testing.assert_close(momentum(state), torch.zeros(3, dim, dtype=F64), rtol=0, atol=1e-14)
    assert state.position.abs().max() > 1e-3  # not collapsed to the origin


def test_random_system_is_reproducible_with_a_seeded_generator():
    a = random_system(4, 3, num_systems=2, generator=seeded(123))
    b = random_system(4, 3, num_systems=2, generator=seeded(123))
    c = random_system(4, 3, num_systems=2, generator=seeded(124))
    for name in ("mass", "position", "velocity"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.position, c.position)
    assert not torch.equal(a.velocity, c.velocity)
    # systems of one batch differ from each other
    assert not torch.equal(a.position[0], a.position[1])


def test_random_system_scales():
    small = random_system(3, 3, pos_scale=0.1, vel_scale=1.0, generator=seeded(5))
    big = random_system(3, 3, pos_scale=0.4, vel_scale=0.25, generator=seeded(5))
    # the same draws, scaled: positions by 4, velocities by 1/4 (powers of two: exact)
    torch.testing.assert_close(big.position, 4 * small.position, rtol=1e-15, atol=0)
    torch.testing.assert_close(big.velocity, small.velocity / 4, rtol=1e-15, atol=0)

    # and the spread of many bodies is the requested standard deviation
    many = random_system(2000, 3, pos_scale=0.3, vel_scale=2.0, generator=seeded(6))
    assert float(many.position.std()) == pytest.approx(0.3, rel=0.05)
    assert float(many.velocity.std()) == pytest.approx(2.0, rel=0.05)


def test_random_system_honours_dtype():
    state = random_system(3, 2, generator=seeded(0), dtype=torch.float32)
    assert state.position.dtype == torch.float32 and state.time.dtype == torch.float32


# --- Kepler orbits ------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("mass", [1.0, 0.3])
def test_kepler_orbit_starts_at_pericentre_with_the_right_energy(dim, mass):
    es = torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=F64)
    as_ = torch.tensor([1.0, 0.6, 2.0, 1.3], dtype=F64)
    state = kepler_orbit(es, as_, mass=mass, dim=dim)
    assert state.position.shape == (4, 2, dim)

    a, e_vec, dist = orbital_elements(state)
    torch.testing.assert_close(dist, as_ * (1 - es), rtol=1e-14, atol=0)
    # reduced two-body energy E = -m1 m2 / (2a)
    torch.testing.assert_close(total_energy(state), -mass * mass / (2 * as_), rtol=1e-13, atol=0)
    # e and a are recovered; the eccentricity vector points at pericentre (along +x)
    torch.testing.assert_close(a, as_, rtol=1e-12, atol=0)
    torch.testing.assert_close(e_vec[:, 0], es, rtol=0, atol=1e-12)
    torch.testing.assert_close(e_vec[:, 1], torch.zeros_like(es), rtol=0, atol=1e-12)
    # at pericentre the radial velocity vanishes
    r = state.position[:, 1] - state.position[:, 0]
    v = state.velocity[:, 1] - state.velocity[:, 0]
    assert ((r * v).sum(-1).abs() < 1e-14).all()
    # |L| about the centre of mass = mu sqrt(M a (1 - e^2)), mu = m1 m2 / M
    M = 2 * mass
    L = angular_momentum(state) if dim == 2 else angular_momentum(state)[:, 2]
    torch.testing.assert_close(L.abs(), (mass * mass / M) * torch.sqrt(M * as_ * (1 - es**2)), rtol=1e-13, atol=0)
    # centre of mass at rest at the origin; the orbit lies in the x-y plane
    com = state.position.sum(1) / 2
    torch.testing.assert_close(com, torch.zeros_like(com), rtol=0, atol=1e-15)
    torch.testing.assert_close(momentum(state), torch.zeros(4, dim, dtype=F64), rtol=0, atol=1e-15)
    if dim == 3:
        assert (state.position[..., 2] == 0).all() and (state.velocity[..., 2] == 0).all()


def test_kepler_period_is_keplers_third_law():
    a = torch.tensor([0.5, 1.0, 3.0], dtype=F64)
    for mass in (1.0, 0.2):
        T = kepler_period(a, mass=mass)
        torch.testing.assert_close(T**2 / a**3, torch.full_like(a, 4 * math.pi**2 / (2 * mass)), rtol=1e-14, atol=0)


@pytest.mark.parametrize("e, a", [(1.0, 1.0), (1.5, 1.0), (-0.1, 1.0), (0.5, 0.0), (0.5, -2.0)])
def test_kepler_orbit_rejects_unbound_or_degenerate_orbits(e, a):
    with pytest.raises(InputError):
        kepler_orbit(e, a)


def test_kepler_family_samples_inside_the_ranges():
    e_range, a_range = (0.6, 0.95), (0.8, 1.2)
    state = kepler_family(200, e_range, a_range, mass=0.5, generator=seeded(3))
    assert state.batch_size == 200
    a, e_vec, _ = orbital_elements(state)
    e = e_vec.norm(dim=-1)
    tol = 1e-9
    assert ((e >= e_range[0] - tol) & (e <= e_range[1] + tol)).all()
    assert ((a >= a_range[0] - tol) & (a <= a_range[1] + tol)).all()
    # spread over the ranges, not clustered at one value
    for x, (lo, hi) in ((e, e_range), (a, a_range)):
        assert float(x.min()) < lo + 0.1 * (hi - lo) and float(x.max()) > hi - 0.1 * (hi - lo)
    # e and a are drawn independently
    assert abs(float(torch.corrcoef(torch.stack([e, a]))[0, 1])) < 0.3

    again = kepler_family(200, e_range, a_range, mass=0.5, generator=seeded(3))
    assert torch.equal(again.position, state.position) and torch.equal(again.velocity, state.velocity)


def test_kepler_family_with_a_single_value_range():
    state = kepler_family(5, (0.3, 0.3), (1.5, 1.5), generator=seeded(0))
    a, e_vec, _ = orbital_elements(state)
    torch.testing.assert_close(a, torch.full((5,), 1.5, dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(e_vec.norm(dim=-1), torch.full((5,), 0.3, dtype=F64), rtol=0, atol=1e-12)


# --- IC files -----------------------------------------------------------------------------------


def assert_same_state(a: State, b: State) -> None:
    for name in ("mass", "position", "velocity"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-15, atol=0)
    assert (b.time == 0).all()


@pytest.mark.parametrize("dim", [2, 3])
def test_npy_round_trip_keeps_a_batch(tmp_path, dim):
    state = random_system(4, dim, num_systems=3, mass=0.8, generator=seeded(9))
    path = tmp_path / "ics.npy"
    save_ic_file(path, state)
    loaded = load_ic_file(path)
    assert loaded.batch_size == 3 and loaded.dim == dim
    assert_same_state(state, loaded)
    assert_same_state(state, load_ic_file(str(path), dim=dim))


@pytest.mark.parametrize("dim", [2, 3])
def test_txt_round_trip(tmp_path, dim):
    state = kepler_orbit(0.4, 1.3, mass=0.6, dim=dim)
    path = tmp_path / "ics.txt"
    save_ic_file(path, state)
    loaded = load_ic_file(path, dim=dim)
    assert loaded.batch_size == 1 and loaded.dim == dim
    assert_same_state(state, loaded)
    # physics survives the trip
    torch.testing.assert_close(total_energy(loaded), total_energy(state), rtol=1e-14, atol=0)


def test_hand_written_txt_file(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("# mass x y vx vy\n1.0  -0.5 0 0 -0.5\n2.0 0.25 0 0 0.25\n")
    state = load_ic_file(path)
    torch.testing.assert_close(state.mass, torch.tensor([[1.0, 2.0]], dtype=F64))
    torch.testing.assert_close(state.position[0, :, 0], torch.tensor([-0.5, 0.25], dtype=F64))
    torch.testing.assert_close(state.velocity[0, :, 1], torch.tensor([-0.5, 0.25], dtype=F64))


def _write(path, table):
    if path.suffix == ".npy":
        np.save(path, np.asarray(table, dtype=np.float64))
    else:
        np.savetxt(path, np.asarray(table, dtype=np.float64))
    return path


GOOD_2D = [[1.0, 0.0, 0.0, 0.0, 0.5], [1.0, 1.0, 0.0, 0.0, -0.5]]


BAD_TABLES = ["wrong_columns", "nine_columns", "one_body", "nan", "inf", "zero_mass", "negative_mass"]


@pytest.mark.parametrize("suffix, case", [(sfx, case) for case in BAD_TABLES for sfx in (".txt", ".npy")]
                         + [(".npy", "one_dimensional")])
def test_bad_ic_tables_raise_input_error_naming_the_file(tmp_path, suffix, case):
    table = np.array(GOOD_2D)
    if case == "wrong_columns":
        table = table[:, :4]
    elif case == "nine_columns":
        table = np.hstack([table, table[:, 1:]])
    elif case == "one_body":
        table = table[:1]
    elif case == "nan":
        table[1, 2] = np.nan
    elif case == "inf":
        table[0, 4] = np.inf
    elif case == "zero_mass":
        table[1, 0] = 0.0
    elif case == "negative_mass":
        table[0, 0] = -1.0
    elif case == "one_dimensional":
        table = table[0]
    path = _write(tmp_path / f"bad_{case}{suffix}", table)
    with pytest.raises(InputError) as info:
        load_ic_file(path)
    assert str(path) in str(info.value)


def test_good_table_used_by_the_bad_cases_is_fine(tmp_path):
    for suffix in (".txt", ".npy"):
        assert load_ic_file(_write(tmp_path / f"good{suffix}", GOOD_2D)).num_bodies == 2


@pytest.mark.parametrize("suffix", [".txt", ".npy"])
def test_dimension_mismatch_raises_input_error(tmp_path, suffix):
    path = _write(tmp_path / f"planar{suffix}", GOOD_2D)
    with pytest.raises(InputError) as info:
        load_ic_file(path, dim=3)
    assert str(path) in str(info.value) and "dim" in str(info.value)
    assert load_ic_file(path, dim=2).dim == 2


def test_missing_file_raises_input_error(tmp_path):
    for name in ("absent.txt", "absent.npy"):
        path = tmp_path / name
        with pytest.raises(InputError) as info:
            load_ic_file(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["ics.csv", "ics", "ics.npz"])
def test_wrong_suffix_raises_input_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("1 0 0 0 0\n1 1 0 0 0\n")
    with pytest.raises(InputError) as info:
        load_ic_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name, content", [
    ("garbage.txt", "hello world\nthis is not a table\n"),
    ("ragged.txt", "1 0 0 0 0\n1 1 0 0\n"),
    ("garbage.npy", "not a numpy file at all"),
])
def test_garbage_raises_input_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_ic_file(path)
    assert str(path) in str(info.value)


def test_make_state_starts_at_time_zero():
    state = make_state([[1.0, 2.0]], [[[0.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]])
    assert state.time.shape == (1,) and float(state.time[0]) == 0.0 and state.position.dtype == F64
