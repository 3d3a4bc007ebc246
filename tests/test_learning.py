"""The learning half, in process: features, the dt network, the losses, the replay buffer and
the trainer's rules (replay bound, optimizers, stop_at_period, max_retrain_steps, duration),
plus the Weights & Biases sink.

Every system here is tiny (two to four bodies, two orbits, a few steps), so the whole file runs
in seconds on a CPU.
"""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

import helpers
from nbody_engine.config.errors import InputError, TrainingStalled
from nbody_engine.config.feature_widths import input_width
from nbody_engine.config.loading import build_config, config_values
from nbody_engine.events import EpochFinished, Reporter, RunFinished, RunStarted, StepRejected, WandbSink
from nbody_engine.integrators.leapfrog import leapfrog_step
from nbody_engine.integrators.policies import AnalyticDt, pairwise_timescale
from nbody_engine.jobs.train import run_training
from nbody_engine.learning.attempt import attempt
from nbody_engine.learning.features import basic_features, change_features, history_row, state_features
from nbody_engine.learning.losses import NONFINITE_PENALTY, ROUNDOFF, band_loss, step_loss
from nbody_engine.learning.network import DtNetwork, LearnedDt, build_network
from nbody_engine.learning.replay import ReplayBuffer
from nbody_engine.learning.trainer import EpochStats, Trainer
from nbody_engine.physics.gravity import Gravity, State, relative_change
from nbody_engine.physics.initial_conditions import kepler_orbit, random_system
from nbody_engine.physics.runtime import gravity_of
from nbody_engine.runs.checkpoints import load_checkpoint

torch.set_num_threads(1)  # as the engine runs on a CPU (runtime.torch_setup): these tensors are tiny
GRAVITY = Gravity()
FLOOR = ROUNDOFF * torch.finfo(torch.float64).eps

TINY = {**helpers.TINY, "seed": 7, "hidden_dims": [16, 16], "steps_per_epoch": 1, "replay_steps": 5,
        "replay_batch_size": 8, "save_name": "t"}


def make_cfg(**overrides):
    return build_config({**TINY, **overrides})


def make_trainer(**overrides):
    cfg = make_cfg(**overrides)
    events: list = []
    trainer = Trainer(cfg, Reporter([events.append]), torch.device("cpu"), torch.float64, gravity_of(cfg))
    return trainer, events


def system(num_bodies=4, dim=3, batch=3, seed=0) -> State:
    """Random systems with unequal masses, so that a body's identity matters."""
    g = torch.Generator().manual_seed(seed)
    s = random_system(num_bodies, dim, num_systems=batch, pos_scale=1.0, vel_scale=0.5, generator=g)
    mass = 0.5 + torch.rand(batch, num_bodies, generator=g, dtype=torch.float64)
    return State(mass, s.position, s.velocity, s.time)


def permuted(state: State, perm: torch.Tensor) -> State:
    return State(state.mass[:, perm], state.position[:, perm], state.velocity[:, perm], state.time)


def scaled(state: State, length: float, mass: float) -> tuple[State, float]:
    """The same system in other units (G = 1): lengths x L, masses x M; time scales by T."""
    T = math.sqrt(length**3 / mass)
    return State(state.mass * mass, state.position * length, state.velocity * (length / T), state.time * T), T


def one_step(state: State, dt: torch.Tensor):
    acc, pot = GRAVITY(state)
    after, acc_after, _ = leapfrog_step(state, dt, acc, GRAVITY)
    return acc, pot, after, acc_after


def policy_of(network: DtNetwork, feature_type="delta_mag", history_len=0) -> LearnedDt:
    return LearnedDt(network, feature_type, history_len, GRAVITY)


def network(feature_type="basic", history_len=0, **kwargs) -> DtNetwork:
    values = {**config_values(make_cfg(feature_type=feature_type, history_len=history_len)), **kwargs}
    return build_network(values)


# --- features ---------------------------------------------------------------------------

@pytest.mark.parametrize("feature_type", ["basic", "rich", "delta_mag"])
@pytest.mark.parametrize("history_len", [0, 3])
def test_input_width_matches_the_features(feature_type, history_len):
    state = system()
    policy = policy_of(network(feature_type, history_len), feature_type, history_len)
    carry = policy.init(state)
    x = policy.inputs(state, carry.rows if carry else None)
    assert x.shape == (state.batch_size, input_width(feature_type, history_len))
    assert policy.network.mlp[0].in_features == input_width(feature_type, history_len)
    # a history row has the width input_width reserves for it
    dt = AnalyticDt(0.1).dt(state)
    acc, pot, after, acc_after = one_step(state, dt)
    row = history_row(feature_type, state, acc, pot, after, acc_after, dt)
    assert row.shape[1] * history_len == input_width(feature_type, history_len) - input_width(feature_type, 0)
    assert torch.isfinite(x).all() and torch.isfinite(row).all()


@pytest.mark.parametrize("dim", [2, 3])
def test_features_do_not_depend_on_the_order_of_the_bodies(dim):
    state = system(dim=dim)
    perm = torch.tensor([2, 0, 3, 1])
    assert not torch.equal(state.position, permuted(state, perm).position)
    dt = AnalyticDt(0.1).dt(state)
    acc, pot, after, acc_after = one_step(state, dt)
    p_state = permuted(state, perm)
    p_acc, p_pot, p_after, p_acc_after = one_step(p_state, dt)
    for feature_type in ("basic", "rich"):
        torch.testing.assert_close(state_features(feature_type, p_state, p_acc, p_pot),
                                   state_features(feature_type, state, acc, pot), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(change_features(p_state, p_acc, p_after, p_acc_after, dt),
                               change_features(state, acc, after, acc_after, dt), rtol=1e-12, atol=1e-12)


def test_delta_features_are_dimensionless():
    """The same step in other units (lengths x 7.3, masses x 0.37, times accordingly) gives the
    same change features; the log features, by contrast, do change."""
    state = system()
    dt = 0.3 * pairwise_timescale(state)
    acc, _, after, acc_after = one_step(state, dt)
    big, T = scaled(state, 7.3, 0.37)
    b_acc, _, b_after, b_acc_after = one_step(big, dt * T)
    torch.testing.assert_close(b_after.position, after.position * 7.3, rtol=1e-10, atol=1e-12)  # same dynamics
    delta = change_features(state, acc, after, acc_after, dt)
    assert (delta.abs() > 1e-6).all()  # a step that changed something measurable
    torch.testing.assert_close(change_features(big, b_acc, b_after, b_acc_after, dt * T), delta, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(basic_features(big, b_acc), basic_features(state, acc))
    # the analytic time scale the network multiplies is in the system's own units too
    torch.testing.assert_close(pairwise_timescale(big), pairwise_timescale(state) * T, rtol=1e-12, atol=0)


@pytest.mark.parametrize("feature_type", ["delta_mag", "basic", "rich"])
def test_history_rows_are_zero_padded_until_full(feature_type):
    H = 3
    state = system(batch=2)
    policy = policy_of(network(feature_type, H), feature_type, H)
    carry = policy.init(state)
    assert carry.rows.shape == (2, H, input_width(feature_type, 1) - input_width(feature_type, 0))
    for taken in range(H + 2):
        filled = carry.rows.abs().sum(-1) > 0  # (B, H)
        assert filled[:, :min(taken, H)].all(), f"after {taken} steps"
        assert not filled[:, taken:].any(), f"after {taken} steps"
        dt = policy.dt(state, carry)
        state, _, _ = leapfrog_step(state, dt, GRAVITY(state)[0], GRAVITY)
        previous = carry.rows
        carry = policy.update(carry, state, dt)
        # the newest row goes in front, the others move back by one
        torch.testing.assert_close(carry.rows[:, 1:], previous[:, :-1], rtol=0, atol=0)


@pytest.mark.parametrize("feature_type", ["basic", "rich", "delta_mag"])
@pytest.mark.parametrize("history_len", [0, 2])
def test_accelerations_the_integrator_passes_change_nothing(feature_type, history_len):
    """The integrator hands the policy the accelerations it has: same dt and history as when
    the policy evaluates the forces itself."""
    net = network(feature_type, history_len)
    torch.nn.init.normal_(net.mlp[-1].weight, std=0.3)  # a trained-looking, non-trivial correction
    policy = policy_of(net, feature_type, history_len)
    state = system(batch=2)
    own, given = policy.init(state), policy.init(state)
    for _ in range(3):
        acc = GRAVITY(state)[0]
        dt = policy.dt(state, own)
        torch.testing.assert_close(policy.dt(state, given, acc), dt, rtol=1e-12, atol=0)
        state, acc_after, _ = leapfrog_step(state, dt, acc, GRAVITY)
        own, given = policy.update(own, state, dt), policy.update(given, state, dt, acc_after)
        if history_len:
            torch.testing.assert_close(given.rows, own.rows, rtol=1e-12, atol=0)


def test_history_row_records_the_step_taken():
    state = system()
    dt = 0.2 * pairwise_timescale(state)
    acc, _, after, acc_after = one_step(state, dt)
    row = change_features(state, acc, after, acc_after, dt)
    # |dx| in units of the closest pair distance: the largest displacement over r_min
    r = torch.cdist(state.position, state.position)
    r_min = r.masked_fill(torch.eye(4, dtype=torch.bool), math.inf).flatten(1).min(1).values
    dx_max = (after.position - state.position).norm(dim=-1).max(-1).values
    torch.testing.assert_close(row[:, 1], dx_max / r_min, rtol=1e-12, atol=0)
    # dt over the shortest dynamical time grows with dt
    _, _, after2, acc_after2 = one_step(state, 2 * dt)
    torch.testing.assert_close(change_features(state, acc, after2, acc_after2, 2 * dt)[:, -1], 2 * row[:, -1])


# --- the dt network ---------------------------------------------------------------------

@pytest.mark.parametrize("feature_type,history_len", [("basic", 0), ("rich", 0), ("delta_mag", 3)])
def test_untrained_network_is_exactly_the_analytic_policy(feature_type, history_len):
    state = system(batch=5)
    net = network(feature_type, history_len, eps=0.07)
    with torch.no_grad():  # whatever the hidden layers and input scales, the zero last layer decides
        net.set_normalization(torch.randn(net.input_shift.shape[0], dtype=torch.float64),
                              torch.rand(net.input_scale.shape[0], dtype=torch.float64) + 0.5)
    policy = policy_of(net, feature_type, history_len)
    carry = policy.init(state)
    for _ in range(3):
        dt = policy.dt(state, carry)
        assert torch.equal(dt, AnalyticDt(0.07).dt(state))
        state, _, _ = leapfrog_step(state, dt, GRAVITY(state)[0], GRAVITY)
        carry = policy.update(carry, state, dt)


def test_dt_bound_is_a_floor():
    state = system(batch=6)
    analytic = AnalyticDt(0.1).dt(state)
    assert (analytic < 1.0).all()
    floored = policy_of(network(dt_bound=1.0)).dt(state)
    assert torch.equal(floored, torch.ones_like(floored))
    assert torch.equal(policy_of(network(dt_bound=1e-8)).dt(state), analytic)


def test_correction_stays_between_a_hundredth_and_ten():
    state = system(batch=32)
    analytic = AnalyticDt(0.1).dt(state)
    ratios = []
    for bias in (1e6, -1e6, None):
        net = network()
        with torch.no_grad():
            if bias is None:  # huge random weights: every ratio anywhere inside the range
                net.mlp[-1].weight.normal_(0.0, 1e6)
                net.mlp[-1].bias.normal_(0.0, 1e6)
            else:
                net.mlp[-1].bias.fill_(bias)
        ratios.append(policy_of(net).dt(state) / analytic)
    longest, shortest, random = ratios
    assert torch.allclose(longest, torch.full_like(longest, 10.0), rtol=1e-4)
    assert torch.allclose(shortest, torch.full_like(shortest, 0.01), rtol=1e-4)
    assert (random >= 0.01 * (1 - 1e-12)).all() and (random <= 10 * (1 + 1e-12)).all()


def test_fourier_features():
    F = input_width("basic", 0)
    torch.manual_seed(0)
    net = network(fourier_dim=8, fourier_scale=2.0)
    assert net.fourier_matrix.shape == (8, F)
    assert net.mlp[0].in_features == F + 16
    with torch.no_grad():
        net.mlp[-1].weight.normal_(0.0, 0.1)
    state = system(batch=4)
    dt = policy_of(net).dt(state)
    assert torch.isfinite(dt).all() and dt.shape == (4,)
    dt.sum().backward()
    assert net.mlp[0].weight.grad.abs().sum() > 0
    # the random frequencies are part of the state dict, so a checkpoint reproduces the network
    torch.manual_seed(1)
    twin = network(fourier_dim=8, fourier_scale=2.0)
    assert not torch.equal(twin.fourier_matrix, net.fourier_matrix)
    twin.load_state_dict(net.state_dict())
    assert torch.equal(policy_of(twin).dt(state), dt.detach())


def test_upstream_network_size_runs_forward_and_backward():
    net = network("delta_mag", 2, hidden_dims=[200, 1000, 1000, 200])
    with torch.no_grad():
        net.mlp[-1].weight.normal_(0.0, 1e-2)
    policy = policy_of(net, "delta_mag", 2)
    state = system(batch=4)
    dt = policy.dt(state, policy.init(state))
    torch.log(dt).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.mlp[0].weight.grad.abs().sum() > 0


# --- losses ------------------------------------------------------------------------------

def band(values, lower=1e-6, upper=1e-4):
    return band_loss(torch.tensor(values, dtype=torch.float64), lower, upper, FLOOR)


def test_band_loss_is_zero_inside_the_band():
    assert torch.equal(band([1e-6, 3e-6, 1e-5, 1e-4]), torch.zeros(4, dtype=torch.float64))


def test_band_loss_is_squared_log_distance_outside():
    torch.testing.assert_close(band([1e-8, 1e-2, 1e-7, 1e-3]),
                               torch.tensor([4.0, 4.0, 1.0, 1.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # further from the band costs more, on either side
    loss = band([1e-9, 1e-8, 1e-7, 1e-3, 1e-2, 1e-1])
    assert (loss[:3].diff() < 0).all() and (loss[3:].diff() > 0).all()


def test_band_loss_ignores_round_off_errors_below_the_band():
    assert torch.equal(band([0.0, FLOOR / 10, FLOOR]), torch.zeros(3, dtype=torch.float64))
    assert band([FLOOR * 10]).item() > 0  # just above round-off: a real (too small) error
    assert band([1.0], lower=1e-6, upper=1e-4).item() == pytest.approx(16.0)  # no floor on the upper side


def test_step_loss_penalises_non_finite_errors_with_a_gradient_that_shrinks_dt():
    cfg = make_cfg()
    dt = torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=torch.float64, requires_grad=True)
    rel_dE = torch.tensor([math.nan, math.inf, 1e-5, 1e-5], dtype=torch.float64)
    rel_dL = torch.tensor([1e-3, 1e-3, math.nan, 1e-3], dtype=torch.float64)
    loss = step_loss(rel_dE, rel_dL, dt, cfg)
    assert torch.isfinite(loss).all()
    assert loss[:3].tolist() == [NONFINITE_PENALTY] * 3
    assert loss[3].item() == 0.0  # both errors inside their bands
    loss.sum().backward()
    assert (dt.grad[:3] > 0).all() and dt.grad[3] == 0  # descent shrinks the dt of the blown-up systems


def test_an_optimizer_step_on_a_blown_up_state_shrinks_its_dt():
    cfg = make_cfg()
    net = network()
    policy = policy_of(net)
    state = system(batch=3)
    before = policy.dt(state)
    nan = torch.full((3,), math.nan, dtype=torch.float64)
    step_loss(nan, nan, before, cfg).mean().backward()
    torch.optim.SGD(net.parameters(), lr=1e-3).step()
    assert (policy.dt(state) < before.detach()).all()


def test_an_attempt_through_a_pericentre_is_judged_by_its_worst_sub_step():
    """Stepping through a pericentre, the energy error peaks and largely comes back: the
    attempt's error is that peak, not the small error left at its end."""
    cfg = make_cfg(n_steps=20)
    pericentre = kepler_orbit(0.9, 1.0)
    policy = policy_of(network("basic"), "basic")
    back = State(pericentre.mass, pericentre.position, -pericentre.velocity, pericentre.time)
    for _ in range(10):  # ten of the policy's steps back in time from the pericentre
        back, _, _ = leapfrog_step(back, policy.dt(pericentre).detach(), GRAVITY(back)[0], GRAVITY)
    before = State(back.mass, back.position, -back.velocity, back.time)
    dt = policy.dt(before).detach()
    energies, s = [], before
    for _ in range(cfg.n_steps):
        s, _, _ = leapfrog_step(s, dt, GRAVITY(s)[0], GRAVITY)
        energies.append(GRAVITY.energy(s))
    E0 = GRAVITY.energy(before)
    at_end = relative_change(energies[-1], E0)
    worst = torch.stack([relative_change(E, E0) for E in energies]).max(0).values
    assert worst > 3 * at_end  # the passage indeed gives back most of its error
    result = attempt(policy, before, None, cfg)
    assert torch.allclose(result.rel_dE, worst, rtol=1e-9)


# --- replay buffer -----------------------------------------------------------------------

def tagged(ids) -> tuple[State, torch.Tensor]:
    """Two-body states whose first coordinate (and history row) carries an id."""
    ids = torch.as_tensor(ids, dtype=torch.float64)
    B = ids.shape[0]
    pos = torch.zeros(B, 2, 2, dtype=torch.float64)
    pos[:, 0, 0], pos[:, 1, 0] = ids, ids + 1
    rows = ids.view(B, 1, 1).expand(B, 2, 3).clone()
    mass, time = torch.ones(B, 2, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
    return State(mass, pos, torch.zeros_like(pos), time), rows


def test_replay_buffer_is_bounded_and_first_in_first_out():
    buf = ReplayBuffer(capacity=5)
    assert len(buf) == 0
    buf.add(*tagged([0, 1, 2]))
    buf.add(*tagged([3, 4, 5, 6]))
    assert len(buf) == 5
    assert buf.tensors["position"][:, 0, 0].tolist() == [2, 3, 4, 5, 6]
    buf.add(*tagged([7]))
    assert buf.tensors["position"][:, 0, 0].tolist() == [3, 4, 5, 6, 7]


def test_replay_sample_draws_distinct_states_with_their_rows():
    buf = ReplayBuffer(capacity=100)
    buf.add(*tagged(range(20)))
    g = torch.Generator().manual_seed(0)
    state, rows = buf.sample(8, g)
    ids = state.position[:, 0, 0]
    assert len(set(ids.tolist())) == 8
    assert torch.equal(rows[:, 0, 0], ids)  # each state keeps its own history
    state, _ = buf.sample(50, g)  # asking for more than it holds gives each state once
    assert sorted(state.position[:, 0, 0].tolist()) == list(range(20))


# --- the trainer -------------------------------------------------------------------------

def test_rel_loss_bound_decides_how_long_replay_runs():
    # a band far below the errors eps = 0.1 makes: every replayed state has a positive loss
    narrow = dict(E_lower=1e-12, E_upper=1e-12, replay_steps=6)
    loose, _ = make_trainer(rel_loss_bound=1e30, **narrow)
    strict, _ = make_trainer(rel_loss_bound=0.0, **narrow)
    for _ in range(2):
        m_loose, m_strict = loose.run_epoch(), strict.run_epoch()
        assert m_loose["replay_iterations"] == 0 and m_loose["replay_pass_rate"] == 1.0
        assert m_strict["replay_iterations"] == 6 and m_strict["replay_pass_rate"] < 1.0


def test_replay_stops_once_every_state_passes():
    trainer, _ = make_trainer(rel_loss_bound=0.0, replay_steps=50)  # default bands: most steps pass at once
    iterations = [trainer.run_epoch()["replay_iterations"] for _ in range(3)]
    assert min(iterations) < 50


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("sgd", torch.optim.SGD)])
def test_every_optimizer_trains(name, cls):
    trainer, _ = make_trainer(optimizer=name, E_lower=1e-12, E_upper=1e-12, rel_loss_bound=0.0, weight_decay=0.0)
    assert type(trainer.optimizer) is cls
    before = [p.detach().clone() for p in trainer.network.parameters()]
    metrics = trainer.run_epoch()
    assert metrics["replay_iterations"] > 0 and metrics["accepted_steps"] == 2
    assert all(math.isfinite(metrics[k]) for k in ("loss", "rel_dE_max", "dt_mean"))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))


@pytest.mark.parametrize("sign", [-1, 1])
def test_training_moves_dt_towards_the_energy_band(sign):
    """Errors above the band teach smaller steps, errors below it larger ones."""
    band_ = dict(E_lower=1e-12, E_upper=1e-12) if sign < 0 else dict(E_lower=1e-1, E_upper=1e-1,
                                                                       energy_threshold=1.0)
    trainer, _ = make_trainer(rel_loss_bound=0.0, replay_steps=10, lr=1e-2, weight_decay=0.0, **band_)
    for _ in range(2):
        trainer.run_epoch()
    state, rows = trainer.buffer.sample(100, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ratio = trainer.policy.dt_from(state, rows) / AnalyticDt(trainer.cfg.eps).dt(state)
    assert ((ratio < 0.99) if sign < 0 else (ratio > 1.01)).all()


def test_stop_at_period_pauses_orbits_and_restarts_them_from_their_initial_conditions():
    # steps per period depend on e alone: different eccentricities finish their periods at different steps
    short = dict(a_min=0.05, a_max=0.12, e_min=0.0, e_max=0.8, n_steps=5, energy_threshold=1e-2, seed=3)
    trainer, _ = make_trainer(stop_at_period=True, **short)
    orbits = trainer.orbits
    period = orbits.period.clone()
    times, paused = [], []
    for _ in range(200):
        trainer.collect(EpochStats())
        times.append(orbits.state.time.clone())
        paused.append(orbits.paused.clone())
        if orbits.paused.all():
            break
    times, paused = torch.stack(times), torch.stack(paused)
    assert paused[-1].all()
    pause_step = paused.int().argmax(0)  # the first step at which each orbit was paused
    first = int(pause_step.argmin())
    when = int(pause_step[first])
    assert when < len(times) - 1, "both orbits paused at the same step"
    assert times[when, first] >= period[first] > times[when - 1, first]  # right after one period...
    assert (times[when:, first] == times[when, first]).all()  # ...and then it waited
    assert (times[-1] >= period).all()
    # once all are paused, every orbit starts over from its initial state
    orbits.restart_if_all_paused()
    for field in ("position", "velocity", "time"):
        assert torch.equal(getattr(orbits.state, field), getattr(trainer.initial, field))
    assert not orbits.paused.any()
    trainer.collect(EpochStats())
    assert torch.equal(orbits.state.time, times[0])
    # without stop_at_period nothing pauses and the orbits run on past their periods
    free, _ = make_trainer(stop_at_period=False, **short)
    for _ in range(len(times)):
        free.collect(EpochStats())
    assert not free.orbits.paused.any() and (free.orbits.state.time > period).all()


def test_max_retrain_steps_stops_a_stalled_run_with_a_clear_message():
    trainer, events = make_trainer(energy_threshold=1e-30, max_retrain_steps=3)
    with pytest.raises(TrainingStalled, match=r"max_retrain_steps = 3") as info:
        trainer.run_epoch()
    assert "energy_threshold" in str(info.value)
    assert sum(isinstance(e, StepRejected) for e in events) == 3  # exactly max_retrain_steps optimizer steps


@pytest.mark.slow
def test_a_stall_after_some_epochs_leaves_the_last_finished_epoch_checkpointed(tmp_path):
    cfg = make_cfg(epochs=6, max_retrain_steps=2)

    def stall_after_epoch_1(event):
        if isinstance(event, EpochFinished) and event.epoch == 1:
            cfg.energy_threshold = 1e-30

    with pytest.raises(TrainingStalled):
        run_training(cfg, Reporter([stall_after_epoch_1]), data_dir=tmp_path)
    found = sorted((tmp_path / "t" / "model").glob("*.pt"))
    assert [p.name for p in found] == ["model_epoch_0001.pt"]
    ckpt = load_checkpoint(found[0])
    assert ckpt.epoch == 1 and len(ckpt.data["metrics"]) == 2


def test_duration_is_a_wall_clock_budget(tmp_path):
    result = run_training(make_cfg(epochs=50, duration=1e-9), data_dir=tmp_path)
    assert result["epochs"] == 1
    ckpt = load_checkpoint(result["checkpoint"])
    assert ckpt.epoch == 0 and result["checkpoint"].endswith("model_epoch_0000.pt")
    assert len((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_resume_without_a_seed_continues_with_the_checkpoints_seed(tmp_path):
    import tomllib

    from nbody_engine.jobs.phases import run_phases

    unseeded = {k: v for k, v in TINY.items() if k != "seed"}
    run_phases({"train": build_config({**unseeded, "epochs": 2})}, data_dir=tmp_path)
    seed = load_checkpoint(tmp_path / "t" / "model" / "model_epoch_0001.pt").config["seed"]
    run_phases({"train": build_config({**unseeded, "epochs": 3, "resume": True})}, data_dir=tmp_path)
    final = load_checkpoint(tmp_path / "t" / "model" / "model_epoch_0002.pt")
    assert final.config["seed"] == seed and len(final.data["metrics"]) == 3
    assert tomllib.loads((tmp_path / "t" / "config.toml").read_text())["seed"] == seed  # the seed actually used


# --- Weights & Biases --------------------------------------------------------------------

def test_wandb_sink_without_the_package_is_a_clear_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(InputError, match=r"wandb = true but the wandb package is not installed.*wandb = false"):
        WandbSink()


@pytest.mark.slow
def test_wandb_sink_logs_every_epoch(monkeypatch, tmp_path):
    calls: list = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)),
                                 log=lambda data, step=None: calls.append(("log", data, step)),
                                 finish=lambda exit_code=0: calls.append(("finish", exit_code)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sink = WandbSink()
    run_training(make_cfg(epochs=3, wandb=True), Reporter([sink]), data_dir=tmp_path)
    assert calls[0][0] == "init" and calls[0][1]["config"]["seed"] == 7
    logged = [c for c in calls if c[0] == "log"]
    assert [c[2] for c in logged] == [0, 1, 2]
    assert all("rel_dE_max" in c[1] and "loss" in c[1] for c in logged)
    assert calls[-1] == ("finish", 0)
    # a phase without wandb = true is not logged
    calls.clear()
    sink(RunStarted("simulate", "t", 0, {"wandb": False}))
    sink(RunFinished("simulate", {"steps": 3}))
    assert calls == []


def apocentre_orbit_file(path, e=0.9, a=1.0):
    """A Kepler orbit starting at apocentre (it reaches pericentre half a period later)."""
    from nbody_engine.physics.initial_conditions import make_state, save_ic_file

    M, r_a = 2.0, a * (1 + e)
    v_a = math.sqrt(M * (1 - e) / r_a)
    state = make_state([[1.0, 1.0]], [[[r_a / 2, 0.0], [-r_a / 2, 0.0]]], [[[0.0, -v_a / 2], [0.0, v_a / 2]]])
    save_ic_file(path, state)
    return str(path)


def test_an_encounter_no_step_can_resolve_restarts_the_system(tmp_path):
    # dt_bound = 0.01 is fine at apocentre but far too coarse for pericentre of e = 0.9
    trainer, _ = make_trainer(ic_path=apocentre_orbit_file(tmp_path / "apo.npy"), dt_bound=0.01, n_steps=3,
                           energy_threshold=1e-3, steps_per_epoch=40, replay_steps=0)
    metrics = trainer.run_epoch()
    assert metrics["orbit_restarts"] >= 1
    assert metrics["accepted_steps"] == 40  # training went on instead of stalling


def test_initial_conditions_rejected_at_dt_bound_are_a_stall(tmp_path):
    trainer, _ = make_trainer(ic_path=apocentre_orbit_file(tmp_path / "apo.npy"), dt_bound=2.0, n_steps=3,
                           energy_threshold=1e-6, steps_per_epoch=1, replay_steps=0)
    with pytest.raises(TrainingStalled, match="initial conditions.*dt_bound"):
        trainer.run_epoch()


def test_a_rejected_step_is_always_pushed_shorter():
    """Far above the band the error is a chaotic function of dt; the loss then takes its
    dt-dependence from the leapfrog's order (|dE/E| ~ dt^2), so retraining shortens the step."""
    cfg = make_cfg(energy_threshold=1e-4)
    dt = torch.tensor([0.1, 0.2], dtype=torch.float64, requires_grad=True)
    # an error that (falsely) shrinks as dt grows: the true gradient would lengthen the step
    rel_dE = 1e-2 * (0.1 / dt)
    loss = step_loss(rel_dE, torch.full_like(rel_dE, 1e-3), dt, cfg)
    loss.sum().backward()
    assert (dt.grad > 0).all()
    # inside the threshold the true gradient is kept
    dt2 = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    step_loss(1e-5 * (0.1 / dt2) ** 2, torch.full((1,), 1e-3, dtype=torch.float64), dt2, cfg).sum().backward()
    assert dt2.grad.item() == 0.0  # 1e-5 is inside [E_lower, E_upper]: nothing to learn


@pytest.mark.slow
def test_resume_is_refused_when_an_architecture_key_differs(tmp_path):
    """Resuming checks the checkpoint's architecture keys, the same list a simulation checks
    (runs.checkpoints.ARCHITECTURE_KEYS), plus what the trainer's state is shaped by."""
    run_training(build_config({**TINY, "epochs": 1}), data_dir=tmp_path)
    with pytest.raises(InputError, match=r"cannot resume from .*trained with dropout = 0\.0, the config says 0\.1"):
        run_training(build_config({**TINY, "epochs": 2, "dropout": 0.1, "resume": True}), data_dir=tmp_path)
