"""The leapfrog, the simulation loop, stop rules and dt policies, checked against physics (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from nbody_engine.config.errors import NonFiniteStateError, RunCancelled
from nbody_engine.config.schema import Config
from nbody_engine.events import CancelToken, Reporter, TrajectoryChunk
from nbody_engine.integrators.leapfrog import leapfrog
from nbody_engine.integrators.loop import StopRule, period_of, simulate
from nbody_engine.integrators.policies import (AnalyticDt, ClassicDt, FixedDt, TimeSymmetricDt,
                                               nearest_neighbour_timescale, pairwise_timescale)
from nbody_engine.jobs import simulate as simulation
from nbody_engine.physics.gravity import (Gravity, PointMassField, accelerations, kinetic_energy, potential_energy,
                                          relative_change)
from nbody_engine.physics.initial_conditions import kepler_orbit, kepler_period, make_state, random_system

F64 = torch.float64


def t64(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def rel_energy_error(traj) -> np.ndarray:
    """max over the run of |E - E0| / |E0|, per system."""
    return (np.abs(traj.energy - traj.energy[0]) / np.abs(traj.energy[0])).max(0)


# --- convergence --------------------------------------------------------------------------------


def test_leapfrog_is_second_order_on_a_kepler_orbit():
    state = kepler_orbit(0.5, 1.0)
    period = float(kepler_period(1.0))
    energy_errors, position_errors = [], []
    for n in (200, 400, 800):
        traj = simulate(state, FixedDt(period / n), Gravity(), StopRule(max_steps=n))
        assert traj.steps[0] == n
        assert traj.time[-1, 0] == pytest.approx(period, rel=1e-12)
        energy_errors.append(rel_energy_error(traj)[0])
        # the orbit is periodic: after one period it should be back where it started
        position_errors.append(np.abs(traj.position[-1] - traj.position[0]).max())

    for errors in (energy_errors, position_errors):
        orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
        assert ((orders >= 1.8) & (orders <= 2.2)).all(), (errors, orders)


def test_leapfrog_function_matches_simulate():
    state = kepler_orbit([0.3, 0.6], [1.0, 0.8])
    dt = t64(0.01, 0.02)

    class PerSystem(FixedDt):
        def dt(self, s, carry=None, acc=None):
            return dt.clone()

    traj = simulate(state, PerSystem(1.0), Gravity(softening=0.01), StopRule(max_steps=40))
    end = leapfrog(state, dt, 40, Gravity(softening=0.01))
    np.testing.assert_allclose(traj.position[-1], end.position.numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(traj.velocity[-1], end.velocity.numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(traj.time[-1], end.time.numpy(), rtol=1e-15)


# --- conservation laws --------------------------------------------------------------------------


def test_momentum_and_angular_momentum_conserved_to_round_off():
    state = random_system(4, 3, num_systems=2, generator=torch.Generator().manual_seed(1))
    traj = simulate(state, AnalyticDt(0.01), Gravity(), StopRule(max_steps=500))
    assert (traj.steps == 500).all()
    # the bodies really moved
    assert np.abs(traj.position[-1] - traj.position[0]).max() > 1e-2

    m = traj.mass[None, :, :, None]
    p_scale = (m * np.abs(traj.velocity)).sum((-1, -2)).max(0)  # (B,)
    dP = np.linalg.norm(traj.momentum - traj.momentum[0], axis=-1).max(0)
    assert (dP < 1e-12 * p_scale).all(), (dP, p_scale)

    r = np.linalg.norm(traj.position, axis=-1)
    v = np.linalg.norm(traj.velocity, axis=-1)
    L_scale = (traj.mass[None] * r * v).sum(-1).max(0)
    dL = np.linalg.norm(traj.angular_momentum - traj.angular_momentum[0], axis=-1).max(0)
    assert (dL < 1e-12 * L_scale).all(), (dL, L_scale)


def test_energy_conserved_with_external_field_but_momentum_is_not():
    state = kepler_orbit(0.5, 1.0)
    field = PointMassField(mass=0.5, position=(3.0, 0.0, 1.0))
    gravity = Gravity(field=field)
    t_end = kepler_period(t64(1.0))
    traj = simulate(state, AnalyticDt(0.01), gravity, StopRule(t_end=t_end))
    assert traj.time[-1, 0] == float(t_end[0])

    assert rel_energy_error(traj)[0] < 1e-4
    dP = np.linalg.norm(traj.momentum[-1] - traj.momentum[0], axis=-1)[0]
    p_scale = (traj.mass[0, :, None] * np.abs(traj.velocity[0, 0])).sum()
    assert dP > 1e-2 * p_scale
    # the conserved energy includes the field's potential: without it, energy is far from conserved
    final = make_state(traj.mass, traj.position[-1], traj.velocity[-1])
    own_energy = kinetic_energy(final) + potential_energy(final)
    own_energy0 = kinetic_energy(state) + potential_energy(state)
    assert float(relative_change(own_energy, own_energy0)[0]) > 1e-3


# --- differentiability --------------------------------------------------------------------------


def test_energy_error_is_differentiable_in_dt():
    state = kepler_orbit([0.5, 0.3], [1.0, 1.2])
    gravity = Gravity()
    energy0 = gravity.energy(state)

    def energy_error(dt):
        return relative_change(gravity.energy(leapfrog(state, dt, 3, gravity)), energy0)

    dt = t64(0.05, 0.03).requires_grad_(True)
    value = energy_error(dt)
    assert (value > 1e-8).all()
    assert torch.autograd.gradcheck(energy_error, (dt,), eps=1e-6, atol=1e-7, rtol=1e-4)
    (grad,) = torch.autograd.grad(value.sum(), dt)
    # a larger step makes a larger error
    assert (grad > 0).all()


# --- batches ------------------------------------------------------------------------------------


def test_batched_and_single_runs_agree():
    es, as_ = [0.2, 0.5, 0.8], [1.0, 0.6, 1.5]
    batch = kepler_orbit(es, as_)
    policy, gravity = AnalyticDt(0.02), Gravity(softening=1e-3)
    together = simulate(batch, policy, gravity, StopRule(max_steps=300))
    for b in range(3):
        alone = simulate(kepler_orbit(es[b], as_[b]), policy, gravity, StopRule(max_steps=300))
        for key in ("time", "dt", "position", "velocity", "energy", "angular_momentum"):
            np.testing.assert_allclose(getattr(together, key)[:, b], getattr(alone, key)[:, 0],
                                       rtol=1e-12, atol=1e-12, err_msg=key)
    # the systems took different steps (otherwise a mix-up between them could go unnoticed)
    assert len({float(together.dt[1, b]) for b in range(3)}) == 3


def test_batched_t_end_freezes_finished_systems():
    es, as_ = [0.1, 0.6], [0.7, 1.3]
    batch = kepler_orbit(es, as_)
    t_end = kepler_period(t64(*as_))
    together = simulate(batch, AnalyticDt(0.02), Gravity(), StopRule(t_end=t_end))
    np.testing.assert_array_equal(together.time[-1], t_end.numpy())
    for b in range(2):
        alone = simulate(kepler_orbit(es[b], as_[b]), AnalyticDt(0.02), Gravity(), StopRule(t_end=t_end[b:b + 1]))
        assert together.steps[b] == alone.steps[0]
        np.testing.assert_allclose(together.position[-1, b], alone.position[-1, 0], rtol=0, atol=1e-12)
        # once done, the system stands still
        k = together.steps[b]
        assert (together.dt[k + 1:, b] == 0).all()
        assert (together.position[k:, b] == together.position[k, b]).all()
    assert together.steps[0] != together.steps[1]


@pytest.mark.parametrize("stop", [StopRule(max_steps=1003), StopRule(t_end=t64(2.0, 3.3))])
def test_record_every_keeps_every_kth_row_and_the_last(stop):
    batch = kepler_orbit([0.3, 0.8], [1.0, 1.0])
    every = simulate(batch, AnalyticDt(0.05), Gravity(), stop)
    strided = simulate(batch, AnalyticDt(0.05), Gravity(), stop, chunk=8, record_every=10)
    np.testing.assert_array_equal(strided.steps, every.steps)
    assert every.steps.max() % 10  # the run does not end on a recorded step: its last row is extra
    inner = np.arange(0, len(strided.time) - 1) * 10  # rows 0, 10, 20, ... before the last
    for key in ("time", "dt", "position", "velocity", "energy", "angular_momentum"):
        np.testing.assert_array_equal(getattr(strided, key)[:-1], getattr(every, key)[inner], err_msg=key)
    for key in ("time", "position", "velocity", "energy", "angular_momentum"):  # the final state
        np.testing.assert_array_equal(getattr(strided, key)[-1], getattr(every, key)[-1], err_msg=key)


def test_a_run_to_t_end_ends_there_whatever_record_every():
    """With record_every beyond the run's steps no row falls between the start and the end: the
    run still stops at t_end (it used to step zero-length steps until the next recorded row) and
    records its final state."""
    batch = kepler_orbit([0.3, 0.8], [1.0, 1.0])
    stop = StopRule(t_end=t64(2.0, 3.3))
    every = simulate(batch, AnalyticDt(0.05), Gravity(), stop)
    sparse = simulate(batch, AnalyticDt(0.05), Gravity(), stop, chunk=8, record_every=10**9)
    np.testing.assert_array_equal(sparse.steps, every.steps)
    assert len(sparse.time) == 2
    for key in ("time", "position", "velocity", "energy", "angular_momentum"):
        np.testing.assert_array_equal(getattr(sparse, key)[-1], getattr(every, key)[-1], err_msg=key)


@pytest.mark.slow
def test_a_run_longer_than_its_first_guess_of_rows_records_the_same_rows():
    """A run to t_end does not know its number of rows: its arrays start at 4 chunks and double.
    Each row's diagnostics must sit in the same row as its state after every growth."""
    batch = random_system(3, 3, num_systems=2, generator=torch.Generator().manual_seed(3))
    stop = StopRule(t_end=t64(0.6, 0.9))
    roomy = simulate(batch, AnalyticDt(0.05), Gravity(softening=0.05), stop)
    grown = simulate(batch, AnalyticDt(0.05), Gravity(softening=0.05), stop, chunk=2)  # 8 rows, then 16, 32, ...
    assert len(grown.time) > 32
    for key, value in roomy.arrays().items():
        np.testing.assert_array_equal(getattr(grown, key), value, err_msg=key)
    states = make_state(np.repeat(grown.mass[None], len(grown.time), 0).reshape(-1, 3),
                        grown.position.reshape(-1, 3, 3), grown.velocity.reshape(-1, 3, 3))
    energy = Gravity(softening=0.05).energy(states).numpy().reshape(grown.energy.shape)
    np.testing.assert_allclose(grown.energy, energy, rtol=1e-13)


def test_a_step_limit_beyond_the_preallocation_grows_the_record_instead(monkeypatch):
    """A run of 10^9 steps must not allocate its whole record before the first step."""
    from nbody_engine.integrators import loop as integrate

    batch = kepler_orbit([0.3, 0.8], [1.0, 1.0])
    whole = simulate(batch, AnalyticDt(0.05), Gravity(), StopRule(max_steps=300))
    monkeypatch.setattr(integrate, "PREALLOCATED_BYTES", 10_000)  # ~40 rows of two 2D orbits
    grown = simulate(batch, AnalyticDt(0.05), Gravity(), StopRule(max_steps=300), chunk=16)
    for key, value in whole.arrays().items():
        np.testing.assert_array_equal(getattr(grown, key), value, err_msg=key)


def test_a_record_grown_past_the_preallocation_stops_at_the_rows_the_run_needs(monkeypatch):
    """Doubling 44 rows would give 176; the run needs 100, so that is where growth stops,
    until a row beyond them (only a t_end run's first guess is exceeded) doubles it again."""
    from nbody_engine.integrators import loop as integrate

    monkeypatch.setattr(integrate, "PREALLOCATED_BYTES", 10_000)  # 44 rows of two 2D orbits
    state = kepler_orbit([0.3, 0.8], [1.0, 1.0])
    recorder = integrate._Recorder(state, Gravity(), capacity=100, diagnosed=False)
    sizes = []
    for _ in range(100):
        recorder.add(tuple(t.unsqueeze(0) for t in (state.time, state.time, state.position, state.velocity)))
        recorder.flush()
        sizes.append(recorder.arrays["time"].shape[0])
    assert sizes[0] == 44 and sizes[44] == 88 and sizes[88] == 100 and sizes[98] == 100 and sizes[99] == 200


def test_each_chunk_event_names_the_step_of_its_first_row():
    """Rows 0, 300, 600, 900 and the final step 1000 (off the grid), one chunk each."""
    events = []
    simulate(kepler_orbit(0.5, 1.0), FixedDt(0.01), Gravity(), StopRule(max_steps=1000),
             Reporter([events.append]), chunk=4, record_every=300)
    chunks = [e for e in events if isinstance(e, TrajectoryChunk)]
    assert [(c.step, len(c.time)) for c in chunks] == [(0, 1), (300, 1), (600, 1), (900, 1), (1000, 1)]
    np.testing.assert_allclose([c.time[0, 0] for c in chunks], [0.0, 3.0, 6.0, 9.0, 10.0], rtol=1e-12)


def test_a_strided_run_names_a_blow_up_by_the_recorded_step_after_it():
    state = make_state([[1e-300, 1e-300]], [[[-0.5, 0.0], [0.5, 0.0]]], [[[2.0, 0.0], [-2.0, 0.0]]])
    with pytest.raises(NonFiniteStateError, match=r"by step 3 \(recorded every 3\)"):
        simulate(state, FixedDt(0.25), Gravity(), StopRule(max_steps=5), record_every=3)


@pytest.mark.slow
def test_compiled_simulation_matches_eager_and_is_quiet(recwarn):
    """compile = true runs the same steps through torch.compile (cold compiles: ~20 s)."""
    batch = kepler_orbit([0.3, 0.8], [1.0, 1.0])
    stop = StopRule(t_end=t64(0.7, 1.3))
    eager = simulate(batch, AnalyticDt(0.05), Gravity(), stop)
    compiled = simulate(batch, AnalyticDt(0.05), Gravity(), stop, compile=True)
    np.testing.assert_array_equal(compiled.steps, eager.steps)
    np.testing.assert_allclose(compiled.position, eager.position, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(compiled.time[-1], eager.time[-1])
    # the compiled stepper computes the diagnostics with each step, the eager recorder per chunk
    for key in ("energy", "momentum", "angular_momentum"):
        np.testing.assert_allclose(getattr(compiled, key), getattr(eager, key), rtol=1e-12, atol=1e-14, err_msg=key)
    # 8 steps per compiled call, then a last call of 2: one graph, compiled once
    steps = StopRule(max_steps=10)
    counters.clear()
    strided = simulate(batch, AnalyticDt(0.05), Gravity(), steps, compile=True, record_every=4)
    assert counters["stats"]["unique_graphs"] == 1
    every = simulate(batch, AnalyticDt(0.05), Gravity(), steps)
    np.testing.assert_allclose(strided.position, every.position[[0, 4, 8, 10]], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(strided.steps, [10, 10])
    # recording every step, the compiled stepper writes its rows straight into the record; the
    # last call's two steps (of a block of 8) are all that is kept of it
    in_place = simulate(batch, AnalyticDt(0.05), Gravity(), steps, compile=True)
    assert in_place.position.shape == every.position.shape == (11, 2, 2, 2)
    for key in ("time", "dt", "position", "velocity", "energy", "momentum", "angular_momentum"):
        np.testing.assert_allclose(getattr(in_place, key), getattr(every, key), rtol=1e-12, atol=1e-14, err_msg=key)
    assert not [w for w in recwarn if "lru_cache" in str(w.message)]


# --- stop rules ---------------------------------------------------------------------------------


def test_t_end_is_reached_exactly():
    state = kepler_orbit([0.3, 0.3], [1.0, 1.0])
    t_end = t64(1.0, 0.55)
    dt = 0.03
    traj = simulate(state, FixedDt(dt), Gravity(), StopRule(t_end=t_end))
    np.testing.assert_array_equal(traj.time[-1], t_end.numpy())
    for b in range(2):
        steps = math.ceil(float(t_end[b]) / dt)
        assert traj.steps[b] == steps
        taken = traj.dt[1:steps + 1, b]
        assert (taken[:-1] == dt).all()
        assert 0 < taken[-1] < dt  # the last step was shortened


def test_nperiod_stop_rule_ends_after_whole_periods():
    cfg = Config(Nperiod=2, integrator_mode="analytic", eps=0.02)
    e, a = 0.5, 1.0
    state = kepler_orbit(e, a)
    stop = simulation.stop_rule(cfg, state)
    assert stop.max_steps is None
    policy, _ = simulation.simulation_policy(cfg, "cpu")
    traj = simulate(state, policy, simulation.gravity_of(cfg), stop)

    assert traj.time[-1, 0] == pytest.approx(2 * float(kepler_period(a)), rel=1e-14)
    start, end = traj.position[0, 0], traj.position[-1, 0]
    # back near the start, while halfway it was far away: each body's ellipse has semi-major axis
    # a / 2, so at apocentre it is a distance a from where it started
    excursion = np.linalg.norm(traj.position[:, 0] - start, axis=-1).max()
    assert excursion == pytest.approx(a, rel=1e-2)
    assert np.linalg.norm(end - start, axis=-1).max() < 1e-2 * excursion


def test_steps_stop_rule_stops_at_that_many_steps():
    cfg = Config(steps=50, integrator_mode="analytic")
    state = kepler_orbit(0.5, 1.0)
    stop = simulation.stop_rule(cfg, state)
    assert stop.max_steps == 50 and stop.t_end is None
    traj = simulate(state, AnalyticDt(cfg.eps), Gravity(), stop)
    assert traj.steps[0] == 50
    assert traj.time.shape[0] == 51


def test_duration_stop_rule():
    cfg = Config(duration=0.7, Nperiod=0)
    state = kepler_orbit(0.5, 1.0)
    traj = simulate(state, AnalyticDt(0.05), Gravity(), simulation.stop_rule(cfg, state))
    assert traj.time[-1, 0] == 0.7


@pytest.mark.parametrize("state", [kepler_orbit(0.5, 1.0),
                                   random_system(3, 2, generator=torch.Generator().manual_seed(2))],
                         ids=["kepler", "three-body"])
def test_default_stop_rule_is_1000_steps(state):
    cfg = Config(steps=-1, Nperiod=0, duration=None)
    stop = simulation.stop_rule(cfg, state)
    assert stop.max_steps == simulation.DEFAULT_STEPS == 1000
    traj = simulate(state, FixedDt(1e-3), Gravity(), stop)
    assert traj.steps[0] == 1000


def test_nperiod_without_a_two_body_orbit_falls_back_to_1000_steps():
    state = random_system(3, 2, generator=torch.Generator().manual_seed(2))
    stop = simulation.stop_rule(Config(Nperiod=2), state)
    assert stop.max_steps == 1000 and stop.t_end is None


# --- the analytic time step ---------------------------------------------------------------------


def test_analytic_dt_finite_where_net_acceleration_vanishes():
    # three equal masses on a line: the middle one feels no net force
    state = make_state([[1.0, 1.0, 1.0]], [[[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0]] * 3])
    acc = accelerations(state)
    assert float(acc[0, 1].norm()) == 0.0
    assert float(acc[0, 0].norm()) > 0

    dts = [float(AnalyticDt(eps).dt(state)[0]) for eps in (0.1, 0.01, 0.001)]
    assert all(math.isfinite(d) and d > 0 for d in dts)
    assert dts[0] > dts[1] > dts[2]
    assert dts[0] / dts[1] == pytest.approx(10, rel=1e-12)
    # nearest pair (r = 1, m_i + m_j = 2) at rest: the free-fall time sqrt(r^3 / (m_i + m_j))
    assert dts[0] == pytest.approx(0.1 * math.sqrt(1 / 2), rel=1e-12)

    traj = simulate(state, AnalyticDt(0.01), Gravity(), StopRule(max_steps=20))
    assert np.isfinite(traj.position).all() and (traj.dt[1:] > 0).all()


@pytest.mark.parametrize("e, a, mass", [(0.5, 1.0, 1.0), (0.8, 2.0, 0.3), (0.0, 0.7, 1.5)])
def test_pairwise_timescale_of_a_kepler_orbit(e, a, mass):
    M = 2 * mass
    r_a = a * (1 + e)
    v_a = math.sqrt(M * (1 - e) / (a * (1 + e)))  # vis-viva at apocentre
    apo = make_state([[mass, mass]], [[[r_a / 2, 0.0], [-r_a / 2, 0.0]]], [[[0.0, -v_a / 2], [0.0, v_a / 2]]])
    # it is the same orbit as kepler_orbit(e, a): same energy
    assert float(Gravity().energy(apo)[0]) == pytest.approx(
        float(Gravity().energy(kepler_orbit(e, a, mass=mass))[0]), rel=1e-12)

    # the energy guard: (|E| r / (m_1 m_2))^(1/3) with |E| = m_1 m_2 / (2a), i.e. (r / 2a)^(1/3)
    guard = lambda r: (r / (2 * a)) ** (1 / 3)  # noqa: E731
    # at apocentre the free-fall time sqrt(r^3 / M) is the shorter one
    assert float(pairwise_timescale(apo)[0]) == pytest.approx(math.sqrt(r_a**3 / M) * guard(r_a), rel=1e-12)
    # at pericentre of an eccentric orbit the collision time r / v takes over
    peri = kepler_orbit(e, a, mass=mass)
    r_p = a * (1 - e)
    v_p = math.sqrt(M * (1 + e) / r_p)
    tau = float(pairwise_timescale(peri)[0])
    assert tau == pytest.approx(r_p / v_p * guard(r_p), rel=1e-12)
    assert tau <= math.sqrt(r_p**3 / M) * guard(r_p) * (1 + 1e-12)


@pytest.mark.parametrize("boost", [(0.7, 0.0), (-0.5, 1.2), (5.0, 0.0)])
def test_pairwise_timescale_is_the_same_in_every_inertial_frame(boost):
    """Moving the whole system changes no relative motion, so it must not change the step. Were
    the energy guard computed from the total kinetic energy, the e = 0.5 binary's pericentre step
    would be 2.3 times shorter at a speed of 0.7 (its total energy all but zero) and 1.6 times
    longer at 5."""
    def moved(state):
        return state.replace(velocity=state.velocity + torch.tensor(boost, dtype=torch.float64))

    rest = random_system(3, 2, num_systems=4, generator=torch.Generator().manual_seed(5))
    binary = kepler_orbit(0.5, 1.0)
    torch.testing.assert_close(pairwise_timescale(moved(rest)), pairwise_timescale(rest), rtol=1e-12, atol=0)
    torch.testing.assert_close(pairwise_timescale(moved(binary)), pairwise_timescale(binary), rtol=1e-12, atol=0)


def test_classic_criterion_is_the_smallest_sqrt_of_nearest_distance_over_acceleration():
    # a hierarchical triple: a tight pair and a far, heavy third body
    mass = [[1.0, 0.5, 3.0]]
    pos = [[[0.0, 0.0], [0.1, 0.0], [4.0, 1.0]]]
    state = make_state(mass, pos, [[[0.0, 0.0]] * 3])
    acc = accelerations(state)
    r = np.array(pos[0])
    expected = []
    for i in range(3):
        nearest = min(np.linalg.norm(r[i] - r[j]) for j in range(3) if j != i)
        expected.append(math.sqrt(nearest / float(acc[0, i].norm())))
    assert float(nearest_neighbour_timescale(state, acc)[0]) == pytest.approx(min(expected), rel=1e-12)
    # the policy computes the accelerations itself when the caller has none, and scales by eps
    assert float(ClassicDt(0.1).dt(state)[0]) == pytest.approx(0.1 * min(expected), rel=1e-12)
    # ... and then includes the external field in |a_i|, as the integrator's accelerations do
    field = PointMassField(mass=5.0, position=(2.0, 0.5, 0.0))
    with_field = accelerations(state, field=field)
    assert float(ClassicDt(0.1, Gravity(field=field)).dt(state)[0]) == pytest.approx(
        0.1 * float(nearest_neighbour_timescale(state, with_field)[0]), rel=1e-12)
    assert float(ClassicDt(0.1, Gravity(field=field)).dt(state)[0]) != pytest.approx(0.1 * min(expected), rel=1e-3)
    # for a Kepler orbit: sqrt(r / (m_other / r^2)), the free-fall time up to sqrt(M / m_other)
    peri = kepler_orbit(0.6, 1.0)
    r_p = 0.4
    assert float(ClassicDt(1.0).dt(peri)[0]) == pytest.approx(math.sqrt(r_p**3 / 1.0), rel=1e-12)


def _energy_error_by_quarter(policy, state, steps):
    traj = simulate(state, policy, Gravity(), StopRule(max_steps=steps))
    error = np.abs(traj.energy[:, 0] / traj.energy[0, 0] - 1)
    return [error[k * steps // 4: (k + 1) * steps // 4 + 1].max() for k in range(4)], traj


@pytest.mark.slow
def test_time_symmetric_step_bounds_the_energy_error_the_plain_adaptive_step_drifts():
    """~75 periods of an e = 0.7 Kepler orbit at eps 0.1: a step chosen from its start alone
    makes the leapfrog irreversible and its energy error grows every period; the step
    symmetrized over its two ends keeps the error bounded, and far smaller."""
    state = kepler_orbit(0.7, 1.0)
    plain, _ = _energy_error_by_quarter(AnalyticDt(0.1), state, 8000)
    symmetric, traj = _energy_error_by_quarter(TimeSymmetricDt(AnalyticDt(0.1), Gravity()), state, 8000)
    assert plain[3] > 2.5 * plain[0]  # a secular drift
    assert symmetric[3] < 1.3 * symmetric[0]  # bounded
    assert symmetric[3] < plain[3] / 10
    # a true adaptive step: it spans pericentre and apocentre time scales
    assert traj.dt[1:, 0].max() > 5 * traj.dt[1:, 0].min()


# --- failures and cancellation ------------------------------------------------------------------


def test_nan_velocity_raises_non_finite_state_error():
    state = kepler_orbit(0.5, 1.0)
    velocity = state.velocity.clone()
    velocity[0, 1, 0] = float("nan")
    with pytest.raises(NonFiniteStateError, match="step"):
        simulate(state.replace(velocity=velocity), FixedDt(0.01), Gravity(), StopRule(max_steps=10))


def test_finite_coordinates_whose_sum_overflows_are_not_an_error():
    """The finiteness check sums each array first; an overflowing sum of finite values is
    searched row by row and passes."""
    state = make_state([[1e-3, 1e-3]], [[[1e308, 0.0], [1e308, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]])
    traj = simulate(state, FixedDt(1e-3), Gravity(), StopRule(max_steps=3))
    assert np.isfinite(traj.position).all() and traj.steps[0] == 3


def test_collision_names_the_step_where_it_happened():
    # two near-massless bodies meet exactly at the origin after one step of 0.25 (exact in binary)
    state = make_state([[1e-300, 1e-300]], [[[-0.5, 0.0], [0.5, 0.0]]], [[[2.0, 0.0], [-2.0, 0.0]]])
    with pytest.raises(NonFiniteStateError, match=r"step 1\b"):
        simulate(state, FixedDt(0.25), Gravity(), StopRule(max_steps=5))


def test_cancelled_token_stops_simulation():
    token = CancelToken()
    token.cancel()
    with pytest.raises(RunCancelled):
        simulate(kepler_orbit(0.5, 1.0), FixedDt(0.01), Gravity(), StopRule(max_steps=10), Reporter(cancel=token))


def test_cancelling_mid_run_stops_at_the_next_step():
    token = CancelToken()
    chunks = []

    def sink(event):
        if isinstance(event, TrajectoryChunk):
            chunks.append(event)
            token.cancel()

    with pytest.raises(RunCancelled):
        simulate(kepler_orbit(0.5, 1.0), FixedDt(0.01), Gravity(), StopRule(max_steps=10_000),
                 Reporter([sink], token), chunk=16)
    assert len(chunks) == 1 and chunks[0].time.shape[0] == 17


# --- periods ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_period_of_kepler_orbits(dim):
    es = [0.0, 0.3, 0.6, 0.9]
    as_ = [1.0, 0.5, 2.0, 1.3]
    for mass in (1.0, 0.25):
        state = kepler_orbit(es, as_, mass=mass, dim=dim)
        period = period_of(state.mass, state.position, state.velocity)
        torch.testing.assert_close(period, kepler_period(t64(*as_), mass=mass), rtol=1e-12, atol=0)
        # and Kepler's third law: T^2 / a^3 = 4 pi^2 / M
        np.testing.assert_allclose(period.numpy() ** 2 / np.array(as_) ** 3, 4 * math.pi**2 / (2 * mass), rtol=1e-12)


def test_period_of_unbound_or_many_body_systems_is_infinite():
    unbound = make_state([[1.0, 1.0]], [[[-0.5, 0.0], [0.5, 0.0]]], [[[0.0, -2.0], [0.0, 2.0]]])
    assert math.isinf(float(period_of(unbound.mass, unbound.position, unbound.velocity)[0]))
    three = random_system(3, 2, generator=torch.Generator().manual_seed(0))
    assert math.isinf(float(period_of(three.mass, three.position, three.velocity)[0]))


def test_one_simulated_period_returns_to_start():
    """period_of is the real period: integrating that long with a small step closes the orbit."""
    state = kepler_orbit([0.4], [1.1])
    T = period_of(state.mass, state.position, state.velocity)
    traj = simulate(state, AnalyticDt(0.005), Gravity(), StopRule(t_end=T))
    closure = np.abs(traj.position[-1] - traj.position[0]).max()
    half = traj.position[np.argmin(np.abs(traj.time[:, 0] - float(T[0]) / 2)), 0]
    assert closure < 1e-3 * np.abs(half - traj.position[0, 0]).max()


@pytest.mark.parametrize("seed", range(6))
def test_analytic_policy_keeps_random_three_body_energy_bounded(seed):
    """The runner's quick run (3 random bodies, 200 steps, eps = 0.1): close passages of point
    masses must not change the energy several-fold (the energy guard of pairwise_timescale)."""
    state = random_system(3, 2, generator=torch.Generator().manual_seed(seed))
    traj = simulate(state, AnalyticDt(0.1), Gravity(), StopRule(max_steps=200))
    rel_dE = np.abs(traj.energy - traj.energy[0]) / np.abs(traj.energy[0])
    assert rel_dE.max() < 0.1


def test_an_unbound_system_flying_apart_is_named_as_such():
    # two bodies receding at ten times the escape speed: the adaptive step grows with their
    # separation (geometrically) until time overflows
    state = make_state([[1.0, 1.0]], [[[-1.0, 0.0], [1.0, 0.0]]], [[[-10.0, 0.0], [10.0, 0.0]]])
    with pytest.raises(NonFiniteStateError, match="flew apart"):
        simulate(state, AnalyticDt(0.1), Gravity(), StopRule(max_steps=50_000))
