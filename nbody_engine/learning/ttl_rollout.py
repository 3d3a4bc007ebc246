"""The rollout objective of the learned time transformation (``integrator_mode = "ml_ttl"``,
``objective = "rollout"``): the dt policy's rollout objective (:mod:`.rollout`), with the
time-transformed leapfrog in place of the variable-step leapfrog.

One optimizer step differentiates through a batched TTL rollout of the training family
(``train_family``) over ``rollout_periods`` time units and minimises, per system,

    log max_t |E(t)/E0 - 1|  +  rollout_lambda * (log h - log eta)^2,

averaged over systems, with:

- ``eta``, the accuracy, drawn per system log-uniformly from ``rollout_eta``; the fictitious step
  is ``h = eta * Omega_theta(q0) * tau(q0)`` (``tau`` the analytic time scale), as ``simulate``
  sets it from ``eps``: at ``g = 0`` the first step lasts about ``eta * tau``;
- exactly as many steps as log-H (``Omega = U``) takes at the same ``eta`` to cover the run,
  counted by a plain run first: the number of force evaluations is log-H's;
- ``log h - log eta = log(T / T_covered)``, the step scale that would make those steps cover the
  run's time ``T``: the cost term pins the force evaluations per time unit to log-H's, so the
  network may move steps along the orbit (where ``Omega`` is large the steps are short) but not
  buy accuracy with more of them.

The time unit of a system is its Kepler period (kepler, binaries), its inner binary's period
(triples) or its energy period (:func:`~nbody_engine.physics.initial_conditions.energy_period`:
clusters, IC files). The network's weights are the only thing trained; the step stays a TTL step
for every value they take, so every network the training passes through is time-reversible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.errors import InputError
from ..config.loading import Config
from ..integrators.loop import period_of
from ..integrators.policies import pairwise_timescale
from ..integrators.ttl import LogHamiltonian, ttl_step
from ..physics.gravity import Gravity, State
from ..physics.initial_conditions import (bound_clusters, energy_period, hierarchical_triples, kepler_family,
                                          load_ic_file, unequal_binaries)
from .losses import clipped_step
from .rollout import TINY_ERROR
from .time_transform import LearnedOmega

MAX_STEPS = 200_000  # a log-H run to count steps never takes more: an eta far too small for its systems


def training_family(cfg: Config, generator: torch.Generator, device, dtype) -> tuple[State, torch.Tensor]:
    """The systems ``train_family`` (or ``ic_path``) names, ``num_orbits`` of them, and each one's
    time unit (B,)."""
    e, a, ratio = (cfg.e_min, cfg.e_max), (cfg.a_min, cfg.a_max), cfg.family_mass_ratio
    common = {"mass": cfg.mass, "dim": cfg.dim, "generator": generator, "dtype": dtype, "device": device}
    if cfg.ic_path:
        state = load_ic_file(cfg.ic_path, cfg.dim, dtype, device)
        unit = energy_period(state)
    elif cfg.train_family == "kepler":
        state = kepler_family(cfg.num_orbits, e, a, **common)
        unit = period_of(state.mass, state.position, state.velocity)
    elif cfg.train_family == "binaries":
        state = unequal_binaries(cfg.num_orbits, e, a, ratio, **common)
        unit = period_of(state.mass, state.position, state.velocity)
    elif cfg.train_family == "triples":
        state = hierarchical_triples(cfg.num_orbits, e, a, ratio, **common)
        unit = period_of(state.mass[:, :2], state.position[:, :2], state.velocity[:, :2])
    else:
        state = bound_clusters(cfg.num_orbits, cfg.family_cluster_size, ratio, **common)
        unit = energy_period(state)
    if not bool(torch.isfinite(unit).all()):
        raise InputError(f"IC file '{cfg.ic_path}' holds an unbound system (energy >= 0); the ml_ttl rollout "
                         "measures its runs in energy periods of bound systems")
    return state, unit


@dataclass(frozen=True)
class TTLRolloutResult:
    """Per system (B,): the loss, max |dE/E| over the rollout, the steps taken and ``log h - log eta``."""

    loss: torch.Tensor
    max_rel_dE: torch.Tensor
    steps: torch.Tensor
    log_h_over_eta: torch.Tensor


def fictitious_step(omega, initial: State, eta: torch.Tensor, gravity: Gravity) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = eta * Omega(q0) * tau(q0)`` (B,) and ``W0 = Omega(q0)`` (B,)."""
    acc, potential = gravity(initial)
    w, _ = omega(initial.mass, initial.position, potential, acc)
    return eta * w * pairwise_timescale(initial.detach(), gravity.softening), w


def log_h_steps(initial: State, eta: torch.Tensor, t_end: torch.Tensor, gravity: Gravity) -> torch.Tensor:
    """Steps (B,) log-H's TTL at ``eta`` takes from ``initial`` until its time reaches ``t_end``."""
    with torch.no_grad():
        omega = LogHamiltonian()
        state = initial.detach()
        h, w = fictitious_step(omega, state, eta, gravity)
        steps = torch.zeros_like(eta, dtype=torch.long)
        for _ in range(MAX_STEPS):
            running = state.time < t_end
            if not bool(running.any()):
                return steps
            state, w, _ = ttl_step(state, w, h * running, omega, gravity)
            steps = steps + running
    raise InputError(f"log-H needs more than {MAX_STEPS} steps for the rollout at the smallest eta "
                     f"{float(eta.min()):g}; raise 'rollout_eta' or lower 'rollout_periods'")


def ttl_rollout(omega: LearnedOmega, initial: State, eta: torch.Tensor, steps: torch.Tensor, gravity: Gravity
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable rollout: each system takes ``steps`` (B,) TTL steps of ``omega`` (then
    stands still). Returns max |E(t)/E0 - 1| over the run and the time covered, both (B,)."""
    h, w = fictitious_step(omega, initial, eta, gravity)
    state = initial
    energy0 = gravity.energy(initial)
    worst = torch.zeros_like(energy0)
    for k in range(int(steps.max())):
        state, w, _ = ttl_step(state, w, h * (steps > k), omega, gravity)
        worst = torch.maximum(worst, (gravity.energy(state) / energy0 - 1).abs())
    return worst, state.time - initial.time


def ttl_rollout_loss(omega: LearnedOmega, initial: State, t_end: torch.Tensor, eta: torch.Tensor, weight: float,
                     gravity: Gravity) -> TTLRolloutResult:
    """The objective of the module docstring for the systems ``initial`` run to ``t_end`` (B,) at ``eta``."""
    steps = log_h_steps(initial, eta, t_end, gravity)
    worst, elapsed = ttl_rollout(omega, initial, eta, steps, gravity)
    log_h_over_eta = torch.log(t_end / elapsed)
    loss = torch.log(worst.clamp_min(TINY_ERROR)) + weight * log_h_over_eta**2
    return TTLRolloutResult(loss, worst.detach(), steps, log_h_over_eta.detach())


def ttl_rollout_step(omega: LearnedOmega, optimizer: torch.optim.Optimizer, initial: State, t_end: torch.Tensor,
                     eta: torch.Tensor, weight: float, clip: float, gravity: Gravity) -> TTLRolloutResult:
    """One optimizer step on the mean rollout loss, its gradient norm clipped to ``clip``.
    A non-finite loss (a rollout that blew up) takes no step."""
    result = ttl_rollout_loss(omega, initial, t_end, eta, weight, gravity)
    clipped_step(optimizer, result.loss.mean(), omega.network.parameters(), clip)
    return result
