"""One training attempt: the policy picks dt for each orbit's state, ``n_steps`` leapfrog steps
are taken with it (differentiably), and the energy and angular-momentum errors are measured;
and the orbits being trained on, which advance by their accepted attempts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.loading import Config
from ..integrators.leapfrog import leapfrog_step
from ..integrators.loop import period_of
from ..integrators.policies import two_body_timescale
from ..integrators.two_body import Binaries, Leapfrogged, relative_leapfrog, relative_start
from ..physics.gravity import Gravity, State, angular_momentum, kinetic_energy, kinetic_energy_of, relative_change
from ..physics.initial_conditions import kepler_family, load_ic_file, random_system
from .features import empty_rows, history_row, push_row
from .losses import step_loss
from .network import LearnedDt


@dataclass
class Attempt:
    """The outcome of integrating each system ``n_steps`` steps with its predicted dt (the state
    reached is None in replay, which does not advance)."""

    dt: torch.Tensor
    rel_dE: torch.Tensor
    rel_dL: torch.Tensor
    loss: torch.Tensor
    after: State | None
    new_rows: torch.Tensor | None

    def accepted(self, threshold: float) -> torch.Tensor:
        return torch.isfinite(self.rel_dE) & torch.isfinite(self.rel_dL) & (self.rel_dE <= threshold)


def attempt(policy: LearnedDt, state: State, rows: torch.Tensor | None, cfg: Config, advance: bool = True) -> Attempt:
    """Integrate each system ``n_steps`` steps with its predicted dt; ``advance = False`` (replay)
    skips the history row the orbit would carry on with. Binaries take the relative
    coordinates of :mod:`.two_body`: a third of the operations to step and to differentiate."""
    gravity = policy.gravity
    with_row = bool(policy.history_len and advance)
    if Binaries.cover(state.mass, gravity):
        binaries = Binaries(state.mass, gravity.softening)
        start, acc, pot = relative_start(binaries, state)
        speed = torch.linalg.vector_norm(start.u, dim=-1, keepdim=True)
        tau = two_body_timescale(start.distance, speed, binaries.total.reciprocal()).view(-1)
        dt = policy.dt_from(state, rows, acc, pot, tau)
        run = relative_leapfrog(binaries, state, start, dt, cfg.n_steps, ends=1 + with_row if advance else 0)
    else:
        acc, pot = gravity(state)
        dt = policy.dt_from(state, rows, acc, pot)
        run = _leapfrog_run(state, dt, cfg.n_steps, gravity, acc, pot)
    rel_dE = relative_change(run.energies, run.energy0, vector=False).amax(0)
    rel_dL = relative_change(run.angular_momentum, run.angular_momentum0)
    new_rows = None
    if with_row:
        with torch.no_grad():
            row = history_row(policy.feature_type, run.before, run.acc_before, run.potential_before, run.after,
                              run.acc, dt, gravity.softening)
            new_rows = push_row(rows, row)
    return Attempt(dt, rel_dE, rel_dL, step_loss(rel_dE, rel_dL, dt, cfg), run.after, new_rows)


def _leapfrog_run(state: State, dt: torch.Tensor, n_steps: int, gravity: Gravity, acc: torch.Tensor,
                  pot: torch.Tensor) -> Leapfrogged:
    """:class:`~nbody_engine.integrators.two_body.Leapfrogged` by the general step (any N, an external field)."""
    energy0, angular0 = kinetic_energy(state) + pot, angular_momentum(state)
    s = state
    velocities, potentials = [], []
    for _ in range(n_steps):
        before, acc_before, pot_before = s, acc, pot
        s, acc, pot = leapfrog_step(s, dt, acc, gravity)
        velocities.append(s.velocity)
        potentials.append(pot)
    # the energy after every sub-step, in one pass over them all: (n_steps, B)
    energies = kinetic_energy_of(state.mass, torch.stack(velocities)) + torch.stack(potentials)
    return Leapfrogged(energy0, energies, angular0, angular_momentum(s), s, acc, pot, before, acc_before, pot_before)


@dataclass
class Orbits:
    """Where each training system stands: state, history rows, initial conditions, period and
    whether it is paused (``stop_at_period``)."""

    state: State
    rows: torch.Tensor
    initial: State
    period: torch.Tensor
    paused: torch.Tensor

    @classmethod
    def start(cls, initial: State, policy: LearnedDt) -> Orbits:
        rows = empty_rows(initial.batch_size, policy.history_len, policy.feature_type, initial.position)
        period = period_of(initial.mass, initial.position, initial.velocity)
        return cls(initial, rows, initial, period, torch.zeros_like(initial.time, dtype=torch.bool))

    def restart_if_all_paused(self) -> None:
        if bool(self.paused.all()):
            self.restart(torch.arange(self.initial.batch_size, device=self.paused.device))

    def restart(self, index: torch.Tensor) -> None:
        """Put the systems ``index`` back at their initial conditions, with an empty history."""
        init = self.initial
        self.state = State(self.state.mass, self.state.position.index_copy(0, index, init.position[index]),
                           self.state.velocity.index_copy(0, index, init.velocity[index]),
                           self.state.time.index_copy(0, index, init.time[index]))
        self.rows = self.rows.index_fill(0, index, 0.0)
        self.paused = self.paused.index_fill(0, index, False)

    def advance(self, index: torch.Tensor, att: Attempt, keep: torch.Tensor, stop_at_period: bool) -> None:
        """Move the systems ``index[keep]`` to their accepted states."""
        idx = index[keep]
        after = att.after.select(keep).detach()
        self.state = State(self.state.mass, self.state.position.index_copy(0, idx, after.position),
                           self.state.velocity.index_copy(0, idx, after.velocity),
                           self.state.time.index_copy(0, idx, after.time))
        if att.new_rows is not None:
            self.rows = self.rows.index_copy(0, idx, att.new_rows[keep].detach())
        if stop_at_period:
            self.paused = self.paused | (self.state.time >= self.period)

    def state_dict(self) -> dict:
        return {"position": self.state.position, "velocity": self.state.velocity, "time": self.state.time,
                "rows": self.rows, "paused": self.paused}

    def load_state_dict(self, d: dict) -> None:
        self.state = State(self.initial.mass, d["position"], d["velocity"], d["time"])
        self.rows, self.paused = d["rows"], d["paused"]


def training_initial_state(cfg: Config, generator: torch.Generator, device, dtype) -> State:
    """``ic_path`` if given; else ``num_orbits`` Kepler orbits for two bodies, random systems for more."""
    if cfg.ic_path:
        return load_ic_file(cfg.ic_path, cfg.dim, dtype, device)
    if cfg.num_particles == 2:
        return kepler_family(cfg.num_orbits, (cfg.e_min, cfg.e_max), (cfg.a_min, cfg.a_max), mass=cfg.mass,
                             dim=cfg.dim, generator=generator, dtype=dtype, device=device)
    return random_system(cfg.num_particles, cfg.dim, num_systems=cfg.num_orbits, mass=cfg.mass,
                         pos_scale=cfg.pos_scale, vel_scale=cfg.vel_scale, generator=generator, dtype=dtype,
                         device=device)


def training_source(cfg: Config) -> str:
    """Where training's systems come from, as a message names them."""
    if cfg.ic_path:
        return f"IC file '{cfg.ic_path}'"
    if cfg.num_particles == 2:
        return "the sampled Kepler orbits (mass, e_min/e_max, a_min/a_max)"
    return "the random systems (num_particles, mass, pos_scale, vel_scale)"
