"""The learned time transformation Omega = U exp(g_theta) (integrator_mode = "ml_ttl"): an untrained
network is log-H, its hand-derived gradient is the true one, and it knows neither the bodies'
order nor the system's size; the training families are what their docstrings say."""

from __future__ import annotations

import pytest
import torch

from nbody_engine.config.errors import InputError
from nbody_engine.integrators.loop import period_of
from nbody_engine.learning.time_transform import LearnedOmega, OmegaNetwork, shape_features
from nbody_engine.physics.gravity import Gravity, State, momentum
from nbody_engine.physics.initial_conditions import (bound_clusters, energy_period, hierarchical_triples,
                                                     unequal_binaries)


def _systems(bodies: int = 5, dim: int = 3, batch: int = 3) -> State:
    generator = torch.Generator().manual_seed(bodies)
    return bound_clusters(batch, bodies, 0.05, dim=dim, generator=generator)


def _trained_looking(activation: str = "tanh") -> LearnedOmega:
    """A network whose last layer is not zero: what training leaves."""
    torch.manual_seed(0)
    network = OmegaNetwork([16, 16], activation).double()
    torch.nn.init.normal_(network.last.weight, std=0.5)
    torch.nn.init.normal_(network.last.bias, std=0.5)
    network.requires_grad_(False)
    return LearnedOmega(network)


def _omega(omega: LearnedOmega, state: State, gravity: Gravity | None = None):
    acc, potential = (gravity or Gravity())(state.mass, state.position)
    return omega(state.mass, state.position, potential, acc)


def test_untrained_network_is_log_h():
    state = _systems()
    value, gradient = _omega(LearnedOmega(OmegaNetwork([32, 32]).double()), state)
    acc, potential = Gravity()(state)
    assert torch.equal(value, -potential)
    assert torch.equal(gradient, state.mass.unsqueeze(-1) * acc)


@pytest.mark.parametrize("activation", ["tanh", "silu", "gelu"])
@pytest.mark.parametrize("bodies", [2, 3, 6])
def test_gradient_matches_finite_differences(activation, bodies):
    state = _systems(bodies)
    omega = _trained_looking(activation)
    _, gradient = _omega(omega, state)
    step = 1e-6
    for body in range(bodies):
        for axis in range(state.dim):
            shift = torch.zeros_like(state.position)
            shift[:, body, axis] = step
            up, _ = _omega(omega, state.replace(position=state.position + shift))
            down, _ = _omega(omega, state.replace(position=state.position - shift))
            numeric = (up - down) / (2 * step)
            assert torch.allclose(gradient[:, body, axis], numeric, rtol=1e-6, atol=1e-6 * float(numeric.abs().max()))


def test_gradient_matches_autograd_with_softening():
    state = _systems(4)
    gravity = Gravity(softening=0.05)
    omega = _trained_looking()
    omega.softening = 0.05
    position = state.position.clone().requires_grad_(True)
    acc, potential = gravity(state.mass, position)
    value, _ = omega(state.mass, position, potential, acc)
    _, by_hand = _omega(omega, state, gravity)
    assert torch.allclose(torch.autograd.grad(value.sum(), position)[0], by_hand, rtol=1e-10, atol=1e-10)


def test_permutation_invariant():
    state = _systems(6)
    omega = _trained_looking()
    value, gradient = _omega(omega, state)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    shuffled = State(state.mass[:, order], state.position[:, order], state.velocity[:, order], state.time)
    value2, gradient2 = _omega(omega, shuffled)
    assert torch.allclose(value2, value, rtol=1e-13)
    assert torch.allclose(gradient2, gradient[:, order], rtol=1e-12, atol=1e-12 * float(gradient.abs().max()))


def test_features_are_scale_free_and_two_bodies_have_no_shape():
    state = _systems(5)
    features, _, _ = shape_features(state.mass, state.position)
    scaled, _, _ = shape_features(state.mass * 7, state.position * 0.01)
    assert torch.allclose(features, scaled, atol=1e-12)
    binaries = unequal_binaries(4, (0.1, 0.9), (0.5, 2.0), 0.01, generator=torch.Generator().manual_seed(0))
    two, _, _ = shape_features(binaries.mass, binaries.position)
    assert torch.allclose(two[:, :6], torch.zeros_like(two[:, :6]), atol=1e-14)
    g = _trained_looking().g_of(binaries.replace(position=binaries.position * 3))
    assert torch.allclose(g, _trained_looking().g_of(binaries))  # g of a binary depends on its masses alone


def test_g_is_bounded_and_rough_activations_refused():
    omega = _trained_looking()
    torch.nn.init.constant_(omega.network.last.bias, 1e6)
    assert float(omega.g_of(_systems()).max()) <= torch.log(torch.tensor(100.0)) + 1e-12
    with pytest.raises(InputError, match="smooth activation"):
        OmegaNetwork([8], "relu")


def test_training_families():
    generator = torch.Generator().manual_seed(0)
    binaries = unequal_binaries(8, (0.6, 0.95), (0.8, 1.2), 0.1, generator=generator)
    assert torch.allclose(energy_period(binaries), period_of(binaries.mass, binaries.position, binaries.velocity))
    ratio = binaries.mass.amin(-1) / binaries.mass.amax(-1)
    assert bool(((ratio >= 0.1) & (ratio <= 1)).all()) and not torch.allclose(ratio, torch.ones_like(ratio))
    triples = hierarchical_triples(8, (0.6, 0.95), (0.8, 1.2), 0.1, dim=3, generator=generator)
    inner = period_of(triples.mass[:, :2], triples.position[:, :2], triples.velocity[:, :2])
    assert bool(torch.isfinite(inner).all())
    outer_distance = (triples.position[:, 2] - triples.position[:, :2].mean(1)).norm(dim=-1)
    inner_distance = (triples.position[:, 1] - triples.position[:, 0]).norm(dim=-1)
    assert bool((outer_distance > 3 * inner_distance).all())  # hierarchical
    clusters = bound_clusters(4, 6, 0.1, dim=3, generator=generator)
    for family in (binaries, triples, clusters):
        assert bool(torch.isfinite(energy_period(family)).all())  # bound
        assert float(momentum(family).abs().max()) < 1e-12
