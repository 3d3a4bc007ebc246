"""The pair step of three or more bodies (:mod:`nbody_engine.integrators.pair_step`) against the
general step it stands in for: the same physics to rounding, step by step and after many steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nbody_engine.integrators.leapfrog import leapfrog_step
from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.pair_step import Frame, Pairs, pair_stepper
from nbody_engine.integrators.policies import AnalyticDt, ClassicDt, FixedDt, TimeSymmetricDt, pairwise_timescale
from nbody_engine.physics.gravity import Gravity, PointMassField, total_energy
from nbody_engine.physics.initial_conditions import make_state, random_system

from test_two_body import trained_looking

F64 = torch.float64


def systems(bodies: int, dim: int, batch: int, seed: int = 0):
    """Random systems of unequal masses."""
    generator = torch.Generator().manual_seed(seed)
    state = random_system(bodies, dim, num_systems=batch, generator=generator)
    return state.replace(mass=state.mass * torch.rand(batch, bodies, generator=generator, dtype=F64).add(0.5))


def triples(dim: int = 3):
    """Two hierarchical triples, an equal-mass binary (a = 1, e = 0.3 and 0.6, at pericentre) and
    a third body on a circular orbit 8 and 10 times wider, inclined in 3D: regular orbits, so the
    runs of the two paths stay together."""
    rows = []
    for e, wide, tilt in ((0.3, 8.0, 0.5), (0.6, 10.0, 0.0)):
        r, v = 1 - e, np.sqrt(2 * (1 + e) / (1 - e))
        outer_v = np.sqrt(3 / wide)  # circular about the binary's mass 2: the third body moves 2/3 of it
        position = np.array([[-r / 2, 0, 0], [r / 2, 0, 0], [0, 0, 0]]) + np.outer([-1 / 3, -1 / 3, 2 / 3],
                                                                                     [0, wide * np.cos(tilt),
                                                                                      wide * np.sin(tilt)])
        velocity = np.array([[0, -v / 2, 0], [0, v / 2, 0], [0, 0, 0]]) + np.outer([-1 / 3, -1 / 3, 2 / 3],
                                                                                     [-outer_v, 0, 0])
        rows.append((position[:, :dim], velocity[:, :dim]))
    return make_state(np.ones((2, 3)), [row[0] for row in rows], [row[1] for row in rows])


class GeneralStep:
    """``policy`` (its memory included) declaring no fast path: the general step."""

    def __init__(self, policy) -> None:
        self.init, self.dt, self.update = policy.init, policy.dt, policy.update

    def relative_rule(self, binaries):
        return None

    def pair_rule(self, frame):
        return None


def assert_runs_agree(ours, reference, rtol=1e-9) -> None:
    """Two trajectories agree: the same steps, every recorded array to ``rtol`` of its largest
    value, momenta (zero here, up to rounding) to ``rtol`` of the largest ``m |v|``."""
    np.testing.assert_array_equal(ours.steps, reference.steps)
    momentum_scale = np.abs(reference.velocity).max() * reference.mass.max()
    for key, value in reference.arrays().items():
        assert ours.arrays()[key].shape == value.shape, key
        scale = momentum_scale if key == "momentum" else np.abs(value).max()
        np.testing.assert_allclose(ours.arrays()[key], value, rtol=rtol, atol=rtol * scale, err_msg=key)


def assert_same_run(state, policy, gravity, stop, record_every=1, rtol=1e-9):
    """The pair step's run is the general step's to ``rtol`` (:func:`assert_runs_agree`)."""
    ours = simulate(state, policy, gravity, stop, record_every=record_every)
    general = simulate(state, GeneralStep(policy), gravity, stop, record_every=record_every)
    assert ours.path == "pairs" and general.path == "general"
    assert_runs_agree(ours, general, rtol)
    return ours


def pairs_of(state, softening: float = 0.0) -> Pairs:
    with torch.inference_mode():
        return Pairs(Frame(state.mass, softening), state)


def layout(tensor: torch.Tensor) -> torch.Tensor:
    return Frame.rows(tensor)


@pytest.mark.parametrize(("bodies", "dim", "softening"), [(3, 2, 0.0), (3, 3, 0.05), (5, 3, 0.0), (12, 2, 0.01),
                                                          (32, 3, 0.0)])
def test_forces_and_time_scale_are_the_general_ones(bodies, dim, softening):
    state = systems(bodies, dim, 7)
    gravity = Gravity(softening)
    pairs = pairs_of(state, softening)
    acc, _ = gravity(state)
    torch.testing.assert_close(layout(pairs.acc), acc, rtol=1e-13, atol=1e-13 * float(acc.abs().max()))
    with torch.inference_mode():
        tau = pairs.timescale()
    torch.testing.assert_close(tau, pairwise_timescale(state, softening), rtol=1e-13, atol=0)


def test_the_time_scale_of_bodies_at_rest_or_massless_is_the_general_one():
    state = systems(4, 2, 3)
    state = state.replace(velocity=torch.zeros_like(state.velocity),
                          mass=state.mass * torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=F64))
    with torch.inference_mode():
        tau = pairs_of(state).timescale()
    torch.testing.assert_close(tau, pairwise_timescale(state), rtol=1e-13, atol=0)


def test_one_step_is_the_leapfrog_step_under_the_analytic_dt():
    state = systems(6, 3, 5)
    gravity, policy = Gravity(0.02), AnalyticDt(torch.linspace(0.01, 0.05, 5, dtype=F64), 0.02)
    acc, _ = gravity(state)
    dt = policy.dt(state, None, acc)
    expected, expected_acc, _ = leapfrog_step(state, dt, acc, gravity)
    with torch.inference_mode():
        moved, moved_acc, _, _, rows = pair_stepper(policy, gravity, state.mass, None)(
            state, acc, None, torch.zeros(5, dtype=torch.long), 1, (0,))
    torch.testing.assert_close(rows[1][0], dt, rtol=1e-14, atol=0)
    for ours, theirs in ((moved.position, expected.position), (moved.velocity, expected.velocity),
                         (moved_acc, expected_acc), (moved.time, expected.time)):
        torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13 * float(theirs.abs().max()))


@pytest.mark.parametrize("dim", [2, 3])
def test_many_steps_of_triples_are_the_general_run_to_rounding(dim):
    """4000 steps, every 100th recorded: positions, velocities, energies and the steps themselves."""
    traj = assert_same_run(triples(dim), AnalyticDt(0.02), Gravity(), StopRule(max_steps=4000), record_every=100,
                           rtol=1e-9)
    assert traj.path == "pairs" and traj.time.shape[0] == 41
    energy_error = np.abs(traj.energy / traj.energy[0] - 1).max()
    assert energy_error < 1e-4  # and the physics holds: the analytic step keeps a triple's energy


def test_a_batch_of_many_bodies_with_softening_and_a_strided_record_ending_off_the_stride():
    state = systems(20, 3, 4, seed=2)
    assert_same_run(state, AnalyticDt(0.01, 0.05), Gravity(0.05), StopRule(max_steps=300), record_every=7)


def test_steps_to_an_end_time_land_on_it_and_freeze_the_systems_that_reached_it():
    state = triples()
    t_end = torch.tensor([0.5, 1.5], dtype=F64)
    for policy in (FixedDt(0.01), AnalyticDt(0.05)):
        traj = assert_same_run(state, policy, Gravity(), StopRule(t_end=t_end), record_every=10)
        np.testing.assert_allclose(traj.time[-1], t_end.numpy(), rtol=1e-15)
        assert traj.steps[0] < traj.steps[1]


def test_momentum_is_conserved_to_round_off():
    traj = simulate(systems(8, 3, 3), AnalyticDt(0.02), Gravity(), StopRule(max_steps=500), record_every=50)
    momentum = np.einsum("bn,sbnd->sbd", traj.mass, traj.velocity)
    np.testing.assert_allclose(momentum, np.broadcast_to(momentum[0], momentum.shape), rtol=0,
                               atol=1e-12 * np.abs(traj.velocity).max() * traj.mass.sum(1).max())


def test_energy_error_of_the_pair_step_converges_at_second_order():
    """A fixed step on a triple: halving dt divides the worst energy error by about 4."""
    state = triples().select(slice(0, 1))
    errors = []
    for dt in (0.02, 0.01, 0.005):
        traj = simulate(state, FixedDt(dt), Gravity(), StopRule(t_end=torch.tensor([4.0], dtype=F64)))
        assert traj.path == "pairs"
        errors.append(np.abs(traj.energy / traj.energy[0] - 1).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert ((orders > 1.8) & (orders < 2.2)).all(), (errors, orders)


def test_the_path_applies_where_its_policies_and_gravity_allow():
    three = systems(3, 2, 1)
    gravity = Gravity()
    assert pair_stepper(AnalyticDt(0.01), gravity, three.mass, None) is not None
    assert pair_stepper(FixedDt(0.01), gravity, three.mass, None) is not None
    assert pair_stepper(AnalyticDt(0.01), gravity, systems(2, 2, 1).mass, None) is None
    assert pair_stepper(AnalyticDt(0.01), Gravity(field=PointMassField(1.0, (3.0, 0.0, 0.0))), three.mass, None) is None
    assert pair_stepper(AnalyticDt(0.01, softening=0.1), gravity, three.mass, None) is None
    assert pair_stepper(ClassicDt(0.01), gravity, three.mass, None) is None
    assert pair_stepper(TimeSymmetricDt(AnalyticDt(0.01), gravity), gravity, three.mass, None) is None
    assert pair_stepper(GeneralStep(AnalyticDt(0.01)), gravity, three.mass, None) is None

    class Halved(FixedDt):  # its inherited pair rule would no longer say what its dt says
        def dt(self, state, carry=None, acc=None):
            return super().dt(state) / 2

    assert pair_stepper(Halved(0.02), gravity, three.mass, None) is None
    assert simulate(three, ClassicDt(0.01), gravity, StopRule(max_steps=3)).path == "general"


@pytest.mark.parametrize(("bodies", "softening"), [(3, 0.0), (7, 0.05), (32, 0.0)])
def test_a_learned_step_s_dt_from_the_pairs_is_its_dt(bodies, softening):
    """The network runs in float32 in both: the same dt to its rounding."""
    from nbody_engine.learning.network import LearnedDt

    state = systems(bodies, 3, 6)
    gravity = Gravity(softening)
    policy = LearnedDt(trained_looking("basic", spread=2.0), "basic", 0, gravity)
    expected = policy.dt(state, None, gravity(state)[0])
    with torch.inference_mode():
        frame = Frame(state.mass, softening)
        dt = policy.pair_rule(frame)(Pairs(frame, state))
    ratio = expected / (policy.network.eps * pairwise_timescale(state, softening))
    assert ratio.min() < 0.9 or ratio.max() > 1.1  # the network corrects the analytic step here
    torch.testing.assert_close(dt, expected, rtol=1e-5, atol=0)


def test_a_learned_step_without_history_takes_the_path_and_runs_as_the_general_one():
    from nbody_engine.learning.network import LearnedDt

    policy = LearnedDt(trained_looking("delta_mag"), "delta_mag", 0, Gravity())
    traj = assert_same_run(triples(), policy, Gravity(), StopRule(max_steps=400), record_every=10, rtol=1e-5)
    assert traj.path == "pairs"


@pytest.mark.parametrize("history_len", [1, 3])
def test_a_learned_step_with_a_change_history_keeps_it_in_the_path(history_len):
    """``delta_mag`` rows of how the state changed, pushed after each step and carried from one
    block of steps to the next: the same dt as the general step's to float32 rounding."""
    from nbody_engine.config.loading import build_config, config_values
    from nbody_engine.learning.network import LearnedDt, build_network

    torch.manual_seed(history_len)
    net = build_network(config_values(build_config({"history_len": history_len, "hidden_dims": [16, 16]}))).eval()
    width = net.input_shift.shape[0]
    with torch.no_grad():
        net.set_normalization(torch.randn(width), torch.rand(width) + 0.5)
        net.mlp[-1].weight.normal_(0.0, 0.3)
    policy = LearnedDt(net, "delta_mag", history_len, Gravity(0.01))
    state = systems(5, 3, 3)
    traj = assert_same_run(state, policy, Gravity(0.01), StopRule(max_steps=150), record_every=5, rtol=1e-5)
    assert len(set(np.round(traj.dt[2:, 0] / traj.dt[1:-1, 0], 6))) > 1  # the history moves the step


def test_a_conditioned_network_takes_its_eta_in_the_path_too():
    from nbody_engine.learning.network import LearnedDt

    net = trained_looking("basic", objective="rollout")
    policy = LearnedDt(net, "basic", 0, Gravity(), torch.tensor([0.01, 0.1], dtype=F64))
    traj = assert_same_run(triples(), policy, Gravity(), StopRule(max_steps=300), record_every=10, rtol=1e-5)
    assert traj.path == "pairs"


def test_learned_steps_the_path_cannot_express_take_the_general_step():
    from nbody_engine.config.loading import build_config, config_values
    from nbody_engine.learning.network import LearnedDt, build_network

    mass = triples().mass
    basic_history = build_network(config_values(build_config({"history_len": 2, "feature_type": "basic"}))).eval()
    assert pair_stepper(LearnedDt(basic_history, "basic", 2, Gravity()), Gravity(), mass, None) is None
    for feature_type in ("rich", "radial"):
        net = trained_looking(feature_type)
        assert pair_stepper(LearnedDt(net, feature_type, 0, Gravity()), Gravity(), mass, None) is None
    basic = trained_looking("basic")
    assert pair_stepper(LearnedDt(basic, "basic", 0, Gravity(0.1)), Gravity(), mass, None) is None
    assert pair_stepper(LearnedDt(basic.train(), "basic", 0, Gravity()), Gravity(), mass, None) is None


def test_energy_of_a_recorded_run_is_the_physics_energy():
    """The recorder's diagnostics come from the rows the pair step returns."""
    state = triples()
    traj = simulate(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=250), record_every=50)
    last = make_state(traj.mass, traj.position[-1], traj.velocity[-1])
    np.testing.assert_allclose(traj.energy[-1], total_energy(last).numpy(), rtol=1e-13)


def test_a_single_system_s_start_is_left_as_it_was():
    state = triples().select(slice(0, 1))
    before = state.position.clone(), state.velocity.clone()
    traj = simulate(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=100), record_every=10)
    assert traj.path == "pairs"
    assert torch.equal(state.position, before[0]) and torch.equal(state.velocity, before[1])
    np.testing.assert_array_equal(traj.position[0], before[0].numpy())


def test_the_summary_names_the_stepper_a_run_took():
    from nbody_engine.jobs.simulate import summarize

    runs = {"pairs": (triples(), AnalyticDt(0.02)), "general": (triples(), ClassicDt(0.02)),
            "two-body": (systems(2, 3, 2), AnalyticDt(0.02))}
    for path, (state, policy) in runs.items():
        traj = simulate(state, policy, Gravity(), StopRule(max_steps=20))
        assert summarize(traj, np.full(state.batch_size, np.inf), state.dim)["stepper"] == path
