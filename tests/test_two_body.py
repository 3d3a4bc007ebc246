"""The two-body path (relative coordinates) against the general step it stands in for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.policies import AnalyticDt, ClassicDt, FixedDt, TimeSymmetricDt
from nbody_engine.integrators.two_body import relative_stepper
from nbody_engine.physics.gravity import Gravity, PointMassField
from nbody_engine.physics.initial_conditions import kepler_orbit, kepler_period, random_system

F64 = torch.float64


class GeneralStep:
    """``policy`` declaring no relative rule: the general step."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def init(self, state):
        return None

    def dt(self, state, carry=None, acc=None):
        return self.policy.dt(state, carry, acc)

    def update(self, carry, state, dt, acc=None):
        return carry

    def relative_rule(self, binaries):
        return None


def assert_same_run(state, policy, gravity, stop, record_every=1, rtol=1e-9):
    fused = simulate(state, policy, gravity, stop, record_every=record_every)
    general = simulate(state, GeneralStep(policy), gravity, stop, record_every=record_every)
    np.testing.assert_array_equal(fused.steps, general.steps)
    for key, value in general.arrays().items():
        assert fused.arrays()[key].shape == value.shape, key
        scale = np.abs(value).max()
        np.testing.assert_allclose(fused.arrays()[key], value, rtol=rtol, atol=rtol * scale, err_msg=key)
    return fused


def test_a_single_orbit_under_the_analytic_step_is_the_general_run_to_rounding():
    state = kepler_orbit(0.9, 1.0)
    traj = assert_same_run(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=1500))
    assert traj.position.shape == (1501, 1, 2, 2)


@pytest.mark.parametrize("softening", [0.0, 0.05])
def test_a_batch_in_3d_with_one_eps_per_orbit_is_the_general_run(softening):
    state = kepler_orbit([0.1, 0.5, 0.8], [1.0, 0.7, 1.3], dim=3)  # bound under the softening too
    eps = torch.tensor([0.01, 0.03, 0.05], dtype=F64)
    assert_same_run(state, AnalyticDt(eps, softening), Gravity(softening), StopRule(max_steps=700))


def test_unequal_masses_keep_their_centre_of_mass_and_its_motion():
    generator = torch.Generator().manual_seed(3)
    state = random_system(2, 2, num_systems=4, generator=generator)
    state = state.replace(mass=state.mass * torch.tensor([[1.0, 0.01]], dtype=F64))
    traj = assert_same_run(state, AnalyticDt(0.05), Gravity(), StopRule(max_steps=400))
    momentum = np.einsum("bn,sbnd->sbd", traj.mass, traj.velocity)
    np.testing.assert_allclose(momentum, np.broadcast_to(momentum[0], momentum.shape), rtol=0,
                               atol=1e-13 * np.abs(momentum).max())


def test_fixed_steps_to_an_end_time_freeze_the_systems_that_reached_it():
    state = kepler_orbit([0.3, 0.6], [1.0, 2.0])
    t_end = kepler_period(torch.tensor([1.0, 2.0], dtype=F64))
    traj = assert_same_run(state, FixedDt(0.01), Gravity(), StopRule(t_end=t_end))
    np.testing.assert_allclose(traj.time[-1], t_end.numpy(), rtol=1e-15)
    assert traj.steps[0] < traj.steps[1]


def test_a_strided_record_ending_off_the_stride_is_the_general_run():
    state = kepler_orbit(0.5, 1.0)
    traj = assert_same_run(state, AnalyticDt(0.05), Gravity(), StopRule(max_steps=1000), record_every=7)
    assert traj.time.shape[0] == 1 + 1000 // 7 + 1


def test_a_policy_softened_unlike_gravity_keeps_its_own_softening():
    state = kepler_orbit(0.8, 1.0)
    assert_same_run(state, AnalyticDt(0.03, softening=0.2), Gravity(softening=0.01), StopRule(max_steps=500))


def test_energy_error_of_the_relative_step_converges_at_second_order():
    """Physics, not only agreement: halving eps divides the worst energy error by about 4."""
    state = kepler_orbit(0.7, 1.0)
    t_end = kepler_period(torch.tensor([1.0], dtype=F64))
    errors = []
    for eps in (0.04, 0.02, 0.01):
        traj = simulate(state, AnalyticDt(eps), Gravity(), StopRule(t_end=t_end))
        errors.append(np.abs(traj.energy / traj.energy[0] - 1).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert ((orders > 1.8) & (orders < 2.3)).all(), (errors, orders)


def test_the_path_applies_to_fixed_and_analytic_binaries_only():
    binary = kepler_orbit(0.5, 1.0)
    three = random_system(3, 2, generator=torch.Generator().manual_seed(0))
    gravity = Gravity()
    assert relative_stepper(FixedDt(0.01), gravity, binary.mass, None) is not None
    assert relative_stepper(AnalyticDt(0.01), gravity, binary.mass, None) is not None
    assert relative_stepper(AnalyticDt(0.01), gravity, three.mass, None) is None
    assert relative_stepper(AnalyticDt(0.01), Gravity(field=PointMassField(1.0, (3.0, 0.0, 0.0))), binary.mass,
                            None) is None
    assert relative_stepper(ClassicDt(0.01), gravity, binary.mass, None) is None
    assert relative_stepper(TimeSymmetricDt(AnalyticDt(0.01), gravity), gravity, binary.mass, None) is None
    assert relative_stepper(AnalyticDt(0.01), gravity, torch.zeros_like(binary.mass), None) is None


def test_a_subclass_that_redefines_dt_takes_the_general_step():
    """Its inherited relative rule would no longer say what its dt says."""
    class Halved(FixedDt):
        def dt(self, state, carry=None, acc=None):
            return super().dt(state) / 2

    state = kepler_orbit(0.5, 1.0)
    assert relative_stepper(Halved(0.02), Gravity(), state.mass, None) is None
    traj = simulate(state, Halved(0.02), Gravity(), StopRule(max_steps=10))
    np.testing.assert_allclose(traj.time[-1], 0.1, rtol=1e-14)


@pytest.mark.parametrize(("dim", "softening"), [(2, 0.0), (3, 0.05)])
def test_a_training_attempt_s_relative_leapfrog_is_the_general_one(dim, softening):
    """Energies after each step, angular momenta, the states at both ends with their
    accelerations and potentials, and the gradients of the energies and of the angular momentum
    in dt."""
    from nbody_engine.integrators.two_body import Binaries, relative_leapfrog, relative_start
    from nbody_engine.learning.attempt import _leapfrog_run

    generator = torch.Generator().manual_seed(dim)
    state = random_system(2, dim, num_systems=16, generator=generator)
    state = state.replace(mass=state.mass * torch.rand(16, 2, generator=generator, dtype=F64).add(0.5),
                          velocity=state.velocity + torch.randn(16, 1, dim, generator=generator, dtype=F64))
    gravity = Gravity(softening)
    dts = [torch.full((16,), 1e-3, dtype=F64, requires_grad=True) for _ in range(2)]
    acc, pot = gravity(state)
    general = _leapfrog_run(state, dts[0], 10, gravity, acc, pot)
    binaries = Binaries(state.mass, softening)
    start, start_acc, start_pot = relative_start(binaries, state)
    torch.testing.assert_close(start_acc, acc, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(start_pot, pot, rtol=1e-10, atol=1e-12)
    relative = relative_leapfrog(binaries, state, start, dts[1], 10, ends=2)
    close = dict(rtol=1e-10, atol=1e-12)
    for name in ("energy0", "energies", "angular_momentum0", "angular_momentum", "acc", "potential",
                 "acc_before", "potential_before"):
        torch.testing.assert_close(getattr(relative, name), getattr(general, name), **close, msg=name)
    for end in ("after", "before"):
        for field in ("position", "velocity", "time"):
            torch.testing.assert_close(getattr(getattr(relative, end), field), getattr(getattr(general, end), field),
                                       **close, msg=f"{end}.{field}")
    # the relative path's gradients come from its tangents; the leapfrog keeps a binary's angular
    # momentum exactly (kicks along r, drifts along u), so its derivative is rounding on both sides
    for quantity, sizeable in (("energies", True), ("angular_momentum", False)):
        general_grad, relative_grad = (
            torch.autograd.grad(getattr(run, quantity).pow(2).sum(), dt, retain_graph=True)[0]
            for run, dt in ((general, dts[0]), (relative, dts[1])))
        assert bool((general_grad.abs() > 1e-6).all()) == sizeable, quantity
        torch.testing.assert_close(relative_grad, general_grad, rtol=1e-6, atol=1e-10, msg=quantity)


# --- the learned step ------------------------------------------------------------------------

def moving_binaries(dim: int, seed: int = 0, batch: int = 6):
    """Bound binaries of unequal masses whose centres of mass move."""
    generator = torch.Generator().manual_seed(seed)
    state = kepler_orbit(torch.linspace(0.1, 0.8, batch, dtype=F64).tolist(), 1.0, dim=dim)
    mass = state.mass * torch.rand(batch, 2, generator=generator, dtype=F64).add(0.5)
    drift = 0.3 * torch.randn(batch, 1, dim, generator=generator, dtype=F64)
    return state.replace(mass=mass, velocity=state.velocity * mass.sum(1).sqrt().view(-1, 1, 1) + drift)


def trained_looking(feature_type: str, spread: float = 0.3, seed: int = 0, **architecture):
    """A network whose last layer is not zero (an untrained one is the analytic step whatever
    its features), with input normalization, so every feature counts."""
    from nbody_engine.config.loading import build_config, config_values
    from nbody_engine.learning.network import build_network

    torch.manual_seed(seed)
    values = config_values(build_config({"feature_type": feature_type, "history_len": 0, "hidden_dims": [16, 16],
                                         "eps": 0.01}))
    net = build_network(values | architecture).eval()
    width = net.input_shift.shape[0]
    with torch.no_grad():
        net.set_normalization(torch.randn(width), torch.rand(width) + 0.5)
        net.mlp[-1].weight.normal_(0.0, spread)
    return net


@pytest.mark.parametrize(("dim", "softening"), [(2, 0.0), (3, 0.05)])
@pytest.mark.parametrize("feature_type", ["basic", "delta_mag", "radial"])
def test_a_binary_s_features_from_its_relative_orbit_are_its_features(dim, softening, feature_type):
    from nbody_engine.integrators.policies import two_body_times
    from nbody_engine.integrators.two_body import Binaries
    from nbody_engine.learning.features import binary_state_features, state_features

    state = moving_binaries(dim)
    state = state.replace(velocity=torch.cat([torch.zeros_like(state.velocity[:1]), state.velocity[1:]]))  # at rest
    gravity = Gravity(softening)
    acc, potential = gravity(state)
    binaries = Binaries(state.mass, softening)
    r, u, _, drift = binaries.relative(state)
    distance, speed = binaries.separation(r), torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    shortest, _ = two_body_times(distance, speed, binaries.total.reciprocal())
    inputs_of, (offset, mix) = binary_state_features(feature_type, binaries)
    features = offset + inputs_of(r, distance, speed, shortest, u, drift) @ mix
    torch.testing.assert_close(features, state_features(feature_type, state, acc, potential, softening),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("architecture", [{}, {"activation": "gelu"}, {"activation": "relu", "dropout": 0.2},
                                          {"fourier_dim": 4}])
def test_a_frozen_network_is_its_forward_to_float32_rounding(architecture):
    net = trained_looking("basic", spread=2.0, **architecture)
    generator = torch.Generator().manual_seed(1)
    features = 3 * torch.randn(64, net.input_shift.shape[0], generator=generator, dtype=F64)
    tau = torch.rand(64, generator=generator, dtype=F64) + 0.5
    width = features.shape[1]
    inputs, offset, mix = (torch.randn(*shape, generator=generator, dtype=F64) for shape in ((64, 5), (64, width),
                                                                                            (5, width)))
    with torch.no_grad():
        expected = net(features, tau)
        frozen = net.frozen()(features, (net.eps * tau).view(-1, 1)).view(-1)
        mapped = net.frozen((offset, mix))(inputs, (net.eps * tau).view(-1, 1)).view(-1)
    ratio = expected / (net.eps * tau)
    assert ratio.min() < 0.9 and ratio.max() > 1.1  # the correction works both ways here
    # float32 rounding of the pre-activations, times up to ln 100 through the exponential
    torch.testing.assert_close(frozen, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(mapped, net(offset + inputs @ mix, tau).detach(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("feature_type", ["basic", "radial"])
def test_a_learned_step_without_history_takes_the_path_and_runs_as_the_general_one(feature_type):
    """The network runs in float32, in both paths, so the steps agree to its rounding, and
    so do the orbits after 400 steps."""
    from nbody_engine.learning.network import LearnedDt

    state = moving_binaries(2)
    policy = LearnedDt(trained_looking(feature_type), feature_type, 0, Gravity())
    assert relative_stepper(policy, Gravity(), state.mass, None) is not None
    assert_same_run(state, policy, Gravity(), StopRule(max_steps=400), rtol=1e-5)


def test_a_conditioned_network_takes_its_eta_in_the_path_too():
    from nbody_engine.learning.network import LearnedDt

    net = trained_looking("radial", objective="rollout")
    assert net.conditioned
    eta = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.2, 0.3], dtype=F64)
    policy = LearnedDt(net, "radial", 0, Gravity(), eta)
    assert relative_stepper(policy, Gravity(), moving_binaries(2).mass, None) is not None
    assert_same_run(moving_binaries(2), policy, Gravity(), StopRule(max_steps=200), rtol=1e-5)


def test_learned_steps_the_path_cannot_express_take_the_general_step():
    from nbody_engine.config.loading import build_config, config_values
    from nbody_engine.learning.network import LearnedDt, build_network

    mass = moving_binaries(2).mass
    with_history = build_network(config_values(build_config({"history_len": 2}))).eval()
    assert relative_stepper(LearnedDt(with_history, "delta_mag", 2, Gravity()), Gravity(), mass, None) is None
    rich = trained_looking("rich")
    assert relative_stepper(LearnedDt(rich, "rich", 0, Gravity()), Gravity(), mass, None) is None
    basic = trained_looking("basic")
    own_softening = LearnedDt(basic, "basic", 0, Gravity(0.1))
    assert relative_stepper(own_softening, Gravity(), mass, None) is None
    assert relative_stepper(LearnedDt(basic.train(), "basic", 0, Gravity()), Gravity(), mass, None) is None
