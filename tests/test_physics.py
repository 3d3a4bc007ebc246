"""Physics of nbody_engine.physics.gravity checked against Newton, hand sums and autograd (G = 1, float64)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nbody_engine.physics.gravity import (PointMassField, State, acceleration_and_potential, accelerations,
                                          angular_momentum, centre_of_mass_frame, kinetic_energy, momentum,
                                          potential_energy, total_energy)
from nbody_engine.physics.initial_conditions import make_state

F64 = torch.float64


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_state(num_bodies: int, dim: int, seed: int, num_systems: int = 3) -> State:
    """Unequal masses, positions and velocities of order one, not in the CoM frame."""
    g = seeded(seed)
    mass = 0.5 + torch.rand(num_systems, num_bodies, generator=g, dtype=F64)
    position = torch.randn(num_systems, num_bodies, dim, generator=g, dtype=F64)
    velocity = torch.randn(num_systems, num_bodies, dim, generator=g, dtype=F64)
    return State(mass, position, velocity, torch.zeros(num_systems, dtype=F64))


def rotation_3d(seed: int) -> torch.Tensor:
    """A proper rotation (det +1) from the QR decomposition of a random matrix."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=seeded(seed), dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# --- mutual gravity -----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_two_body_acceleration_is_newtonian(dim):
    m1, m2 = 1.5, 0.25
    x1 = torch.tensor([0.3, -0.2, 0.7][:dim], dtype=F64)
    x2 = torch.tensor([-0.9, 0.4, 0.1][:dim], dtype=F64)
    state = make_state([[m1, m2]], [torch.stack([x1, x2]).tolist()], [[[0.0] * dim] * 2])

    acc = accelerations(state)[0]

    d = x2 - x1
    r = d.norm()
    torch.testing.assert_close(acc[0], m2 * d / r**3, rtol=1e-13, atol=0)
    torch.testing.assert_close(acc[1], -m1 * d / r**3, rtol=1e-13, atol=0)
    # |a1| = m2 / r^2: the inverse-square law
    assert math.isclose(float(acc[0].norm()), m2 / float(r) ** 2, rel_tol=1e-13)
    # and the potential -m1 m2 / r
    assert math.isclose(float(potential_energy(state)[0]), -m1 * m2 / float(r), rel_tol=1e-13)


@pytest.mark.parametrize("softening", [0.01, 0.3, 2.0])
def test_softening_is_plummer(softening):
    m1, m2 = 0.8, 1.7
    x1 = torch.tensor([0.1, 0.2, -0.3], dtype=F64)
    x2 = torch.tensor([0.6, -0.4, 0.5], dtype=F64)
    state = make_state([[m1, m2]], [torch.stack([x1, x2]).tolist()], [[[0.0] * 3] * 2])

    acc, pot = acceleration_and_potential(state.mass, state.position, softening)
    newton = accelerations(state)[0]

    d = x2 - x1
    plummer = (d @ d + softening**2) ** 1.5
    torch.testing.assert_close(acc[0, 0], m2 * d / plummer, rtol=1e-13, atol=0)
    torch.testing.assert_close(acc[0, 1], -m1 * d / plummer, rtol=1e-13, atol=0)
    assert math.isclose(float(pot[0]), -m1 * m2 / math.sqrt(float(d @ d) + softening**2), rel_tol=1e-13)
    # softening weakens the force, and the more so the larger it is
    assert (acc[0].norm(dim=-1) < newton.norm(dim=-1)).all()


def test_softening_weakens_monotonically():
    state = random_state(4, 3, seed=3, num_systems=1)
    norms = [float(accelerations(state, s).norm()) for s in (0.0, 0.05, 0.2, 1.0)]
    assert all(a > b for a, b in itertools.pairwise(norms))


def test_batch_systems_are_independent():
    """Each system of a batch feels only its own bodies."""
    state = random_state(4, 3, seed=11, num_systems=3)
    acc, pot = acceleration_and_potential(state.mass, state.position, 0.1)
    for b in range(3):
        one = state.select(slice(b, b + 1))
        acc1, pot1 = acceleration_and_potential(one.mass, one.position, 0.1)
        torch.testing.assert_close(acc[b], acc1[0], rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(pot[b], pot1[0], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("softening", [0.0, 0.1])
def test_newtons_third_law(dim, softening):
    state = random_state(5, dim, seed=7 + dim, num_systems=4)
    force = state.mass.unsqueeze(-1) * accelerations(state, softening)  # (B, N, D)

    net = force.sum(1)
    scale = force.norm(dim=-1).sum(1, keepdim=True)
    assert (scale > 0.1).all()
    assert (net.abs() < 1e-13 * scale).all(), net


# --- energy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("softening", [0.0, 0.2])
def test_energy_of_three_bodies_by_hand(softening):
    masses = [1.0, 2.0, 0.5]
    xs = [(0.0, 0.0, 0.0), (1.0, 0.5, -0.25), (-0.5, 2.0, 1.0)]
    vs = [(0.1, -0.3, 0.2), (0.0, 0.4, -0.1), (-1.2, 0.0, 0.5)]
    state = make_state([masses], [xs], [vs])

    kinetic = sum(0.5 * m * sum(c * c for c in v) for m, v in zip(masses, vs))
    potential = 0.0
    for i, j in itertools.combinations(range(3), 2):
        r2 = sum((a - b) ** 2 for a, b in zip(xs[i], xs[j]))
        potential -= masses[i] * masses[j] / math.sqrt(r2 + softening**2)

    assert math.isclose(float(kinetic_energy(state)[0]), kinetic, rel_tol=1e-14)
    assert math.isclose(float(potential_energy(state, softening)[0]), potential, rel_tol=1e-14)
    assert math.isclose(float(total_energy(state, softening)[0]), kinetic + potential, rel_tol=1e-14)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("softening", [0.0, 0.05])
@pytest.mark.parametrize("with_field", [False, True])
def test_acceleration_is_minus_gradient_of_potential(dim, softening, with_field):
    field = PointMassField(0.7, (2.0, -1.0, 0.5)) if with_field else None
    state = random_state(4, dim, seed=21 + dim, num_systems=2)
    position = state.position.clone().requires_grad_(True)

    acc, pot = acceleration_and_potential(state.mass, position, softening, field)
    (grad,) = torch.autograd.grad(pot.sum(), position)

    torch.testing.assert_close(acc, -grad / state.mass.unsqueeze(-1), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("num_bodies", [2, 5])
@pytest.mark.parametrize("softening", [0.0, 0.05])
@pytest.mark.parametrize("with_field", [False, True])
def test_potential_alone_equals_the_one_computed_with_the_forces(num_bodies, softening, with_field):
    """potential_energy sums the pairs i < j; acceleration_and_potential halves the N x N matrix."""
    field = PointMassField(0.7, (2.0, -1.0, 0.5)) if with_field else None
    state = random_state(num_bodies, 3, seed=5, num_systems=4)
    _, pot = acceleration_and_potential(state.mass, state.position, softening, field)
    torch.testing.assert_close(potential_energy(state, softening, field), pot, rtol=1e-13, atol=1e-14)


# --- angular momentum ---------------------------------------------------------------------------


def test_angular_momentum_shapes():
    assert angular_momentum(random_state(3, 2, seed=1, num_systems=4)).shape == (4,)
    assert angular_momentum(random_state(3, 3, seed=1, num_systems=4)).shape == (4, 3)


def test_angular_momentum_of_one_body_by_hand():
    # a unit mass at (1, 0) moving with (0, 2) about the origin: L = m (x v_y - y v_x) = 2
    s2 = make_state([[1.0, 3.0]], [[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 2.0], [0.0, 0.0]]])
    assert float(angular_momentum(s2)[0]) == pytest.approx(2.0, rel=1e-15)
    # r x v for r = (0, 0, 1), v = (1, 0, 0): +y
    s3 = make_state([[0.5, 3.0]], [[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]], [[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(angular_momentum(s3)[0], torch.tensor([0.0, 0.5, 0.0], dtype=F64))


def with_zero_z(t: torch.Tensor) -> torch.Tensor:
    """2D vectors (..., 2) as 3D ones in the z = 0 plane."""
    return torch.cat([t, torch.zeros_like(t[..., :1])], -1)


def test_planar_3d_system_has_angular_momentum_along_z():
    flat = random_state(5, 2, seed=5, num_systems=3)
    lifted = State(flat.mass, with_zero_z(flat.position), with_zero_z(flat.velocity), flat.time)

    L2 = angular_momentum(flat)
    L3 = angular_momentum(lifted)

    assert (L2.abs() > 1e-3).all()
    torch.testing.assert_close(L3, torch.stack([torch.zeros_like(L2), torch.zeros_like(L2), L2], -1),
                               rtol=1e-14, atol=1e-15)


def test_angular_momentum_rotates_with_the_system():
    state = random_state(4, 3, seed=8, num_systems=2)
    R = rotation_3d(seed=9)
    rotated = state.replace(position=state.position @ R.T, velocity=state.velocity @ R.T)
    torch.testing.assert_close(angular_momentum(rotated), angular_momentum(state) @ R.T, rtol=1e-12, atol=1e-13)

    flat = random_state(4, 2, seed=10, num_systems=2)
    c, s = math.cos(0.7), math.sin(0.7)
    R2 = torch.tensor([[c, -s], [s, c]], dtype=F64)
    turned = flat.replace(position=flat.position @ R2.T, velocity=flat.velocity @ R2.T)
    torch.testing.assert_close(angular_momentum(turned), angular_momentum(flat), rtol=1e-12, atol=1e-13)


# --- external field -----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("softening", [0.0, 0.1])
def test_external_field_acceleration_is_minus_gradient_per_unit_mass(dim, softening):
    field = PointMassField(1.3, (3.0, -0.5, 1.0))
    state = random_state(3, dim, seed=30 + dim)
    position = state.position.clone().requires_grad_(True)

    pot = field.potential(state.mass, position, softening)
    (grad,) = torch.autograd.grad(pot.sum(), position)
    acc = field.acceleration(state.position, softening)

    torch.testing.assert_close(acc, -grad / state.mass.unsqueeze(-1), rtol=1e-12, atol=1e-14)
    # the field pulls toward the perturber (in the bodies' own dimensions)
    R = torch.tensor(field.position[:dim], dtype=F64)
    assert ((acc * (R - state.position)).sum(-1) > 0).all()


def test_external_field_point_mass_formula():
    """|a| = M / d^2 with d the full 3D distance, pointing at the perturber."""
    field = PointMassField(2.0, (1.0, 2.0, 2.0))
    x = torch.zeros(1, 1, 3, dtype=F64)
    acc = field.acceleration(x)[0, 0]
    torch.testing.assert_close(acc, 2.0 * torch.tensor([1.0, 2.0, 2.0], dtype=F64) / 27.0, rtol=1e-14, atol=0)
    pot = field.potential(torch.tensor([[0.5]], dtype=F64), x)
    assert float(pot[0]) == pytest.approx(-2.0 * 0.5 / 3.0, rel=1e-14)


@pytest.mark.parametrize("softening", [0.0, 0.2])
def test_external_field_in_2d_matches_3d_at_z0(softening):
    field = PointMassField(0.9, (2.5, 1.0, 1.5))
    flat = random_state(4, 2, seed=40)
    lifted = State(flat.mass, with_zero_z(flat.position), with_zero_z(flat.velocity), flat.time)

    a2, p2 = acceleration_and_potential(flat.mass, flat.position, softening, field)
    a3, p3 = acceleration_and_potential(lifted.mass, lifted.position, softening, field)

    torch.testing.assert_close(a2, a3[..., :2], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(p2, p3, rtol=1e-13, atol=1e-15)
    # the height Z really enters: the 3D force has an out-of-plane pull toward +z ...
    assert (a3[..., 2] > 0).all()
    # ... and dropping Z would make the in-plane field stronger
    in_plane = PointMassField(0.9, (2.5, 1.0, 0.0))
    a2_flat = in_plane.acceleration(flat.position, softening)
    assert (a2_flat.norm(dim=-1) > field.acceleration(flat.position, softening).norm(dim=-1)).all()


# --- centre of mass -----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_centre_of_mass_frame(dim):
    state = random_state(5, dim, seed=50 + dim)
    moved = centre_of_mass_frame(state)

    m = moved.mass.unsqueeze(-1)
    com = (m * moved.position).sum(1) / m.sum(1)
    p_before = momentum(state)
    assert (p_before.norm(dim=-1) > 1e-2).all()
    torch.testing.assert_close(momentum(moved), torch.zeros_like(p_before), rtol=0, atol=1e-14)
    torch.testing.assert_close(com, torch.zeros_like(com), rtol=0, atol=1e-14)

    # a Galilean shift: relative positions and velocities, hence the potential, are unchanged,
    # and the kinetic energy drops by exactly that of the centre of mass, P^2 / (2M)
    def rel(t):
        return t.unsqueeze(1) - t.unsqueeze(2)

    torch.testing.assert_close(rel(moved.position), rel(state.position), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(rel(moved.velocity), rel(state.velocity), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(potential_energy(moved), potential_energy(state), rtol=1e-13, atol=1e-14)
    total_mass = state.mass.sum(1)
    torch.testing.assert_close(kinetic_energy(moved),
                               kinetic_energy(state) - (p_before**2).sum(-1) / (2 * total_mass),
                               rtol=1e-12, atol=1e-14)



# --- the two-body path ----------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("softening", [0.0, 0.05])
def test_two_body_path_equals_the_pair_matrix(dim, softening):
    """Two bodies take their own, shorter path through the forces and the analytic time scale;
    it computes what the general (B, N, N) path computes, to rounding."""
    from nbody_engine.integrators import policies
    from nbody_engine.physics import gravity as physics

    state = random_state(2, dim, seed=dim, num_systems=64)
    acc, pot = physics._two_body_forces(state.mass, state.position, softening, True)
    acc_ref, pot_ref = physics._pair_forces(state.mass, state.position, softening, True)
    torch.testing.assert_close(acc, acc_ref, rtol=1e-13, atol=0)
    torch.testing.assert_close(pot, pot_ref, rtol=1e-13, atol=0)
    torch.testing.assert_close(policies._two_body_timescale(state, softening),
                               policies._pair_matrix_timescale(state, softening), rtol=1e-13, atol=0)
