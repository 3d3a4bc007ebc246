"""Whole-trajectory training: ``objective = "rollout"``, the second objective beside band loss.

One optimizer step differentiates through a batched leapfrog rollout of the whole training
family (bound two-body orbits) over ``rollout_periods`` periods and minimises, per orbit,

    log max_t |E(t)/E0 - 1|  +  rollout_lambda * (log h - log eta)^2,

averaged over orbits, with:

- ``eta``, the accuracy asked for, drawn per orbit log-uniformly from ``rollout_eta``; the
  network sees ``log eta`` beside its features (``radial``: the radial fraction ``v_r/|v|``, or
  any other feature type and history), so one network serves every accuracy;
- the rollout's steps ``eta * tau(s) * c_theta(s, log eta)``, and exactly as many of them as the
  analytic policy takes at ``eta`` for the same periods (counted by a plain run first);
- ``h = eta * T_analytic / T``: the step scale that makes the run take the analytic policy's
  number of steps per period (to first order: ``T``, the time the rollout covers in those
  steps, is proportional to the scale). The cost term pins ``h`` to ``eta``, so the network
  may move steps along the orbit but not buy accuracy with more of them; the energy term then
  asks for the smallest worst energy error at that cost: the quantity evaluate compares. As a
  leapfrog's error goes like ``h^2``, shorter steps lower the first term by ``2 log(eta / h)``,
  so the optimum spends ``log(eta / h) = 1 / rollout_lambda`` more: 1% at the default 100 (at
  ``lambda = 1`` a network learns to take e times more steps, which is no gain at equal cost).

Whole rollouts, because a step's error is only paid for later: a 2-period estimate misreads low
eccentricities, whose errors build up slowly. Gradients are clipped (``rollout_clip``) and the
network computes in float64, like the physics. Everything else is shared with the band-loss
objective: the network, features, checkpoints, events and the run directory; only how an epoch
produces its loss differs (``steps_per_epoch`` rollouts, one optimizer step each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config.errors import InputError
from ..integrators.leapfrog import leapfrog_step
from ..integrators.loop import StopRule, period_of, simulate
from ..integrators.policies import AnalyticDt
from ..physics.gravity import Gravity, State, kinetic_energy, relative_change
from .losses import clipped_step
from .network import LearnedDt

TINY_ERROR = 1e-300  # a rollout's max |dE/E| floor, before its logarithm


@dataclass(frozen=True)
class RolloutResult:
    """Per orbit (B,): the loss, max |dE/E| over the rollout, the steps taken and ``log h - log eta``."""

    loss: torch.Tensor
    max_rel_dE: torch.Tensor
    steps: torch.Tensor
    log_h_over_eta: torch.Tensor


def sample_eta(batch: int, eta_range: list[float], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``batch`` accuracies drawn log-uniformly from ``eta_range``, (B,)."""
    low, high = (math.log(x) for x in eta_range)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return torch.exp(low + (high - low) * u).to(like)


def analytic_steps(initial: State, eta: torch.Tensor, t_end: torch.Tensor, gravity: Gravity) -> torch.Tensor:
    """Steps (B,) the analytic policy at ``eta`` takes from ``initial`` to ``t_end``."""
    traj = simulate(initial.detach(), AnalyticDt(eta.detach(), gravity.softening), gravity, StopRule(t_end=t_end))
    return torch.as_tensor(traj.steps, device=eta.device)


def rollout(policy: LearnedDt, initial: State, steps: torch.Tensor, gravity: Gravity
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable rollout: each orbit takes ``steps`` (B,) steps of the policy (then stands
    still). Returns max |E(t)/E0 - 1| over the run and the time covered, both (B,)."""
    state = initial
    acc, _ = gravity(state, with_potential=False)
    energy0 = gravity.energy(state)
    carry = policy.init(state)
    worst = torch.zeros_like(energy0)
    elapsed = torch.zeros_like(energy0)
    for k in range(int(steps.max())):
        dt = policy.dt(state, carry, acc) * (steps > k)
        state, acc, potential = leapfrog_step(state, dt, acc, gravity)
        carry = policy.update(carry, state, dt, acc)
        worst = torch.maximum(worst, relative_change(kinetic_energy(state) + potential, energy0, vector=False))
        elapsed = elapsed + dt
    return worst, elapsed


def periods_of(initial: State) -> torch.Tensor:
    """The Kepler period of each training orbit (B,); an InputError unless all are bound pairs."""
    period = period_of(initial.mass, initial.position, initial.velocity)
    if not bool(torch.isfinite(period).all()):
        raise InputError("objective = 'rollout' trains on bound two-body orbits (num_particles = 2, a Kepler "
                         "family or an IC file of bound pairs); use objective = 'band' for other systems")
    return period


def rollout_loss(policy: LearnedDt, initial: State, eta: torch.Tensor, periods: int, weight: float,
                 gravity: Gravity) -> RolloutResult:
    """The objective of the module docstring for the orbits ``initial`` at accuracies ``eta``."""
    t_end = periods * periods_of(initial)
    steps = analytic_steps(initial, eta, t_end, gravity)
    policy.eta = eta
    worst, elapsed = rollout(policy, initial, steps, gravity)
    log_h_over_eta = torch.log(t_end / elapsed)
    loss = torch.log(worst.clamp_min(TINY_ERROR)) + weight * log_h_over_eta**2
    return RolloutResult(loss, worst.detach(), steps, log_h_over_eta.detach())


def rollout_step(policy: LearnedDt, optimizer: torch.optim.Optimizer, initial: State, eta: torch.Tensor,
                 periods: int, weight: float, clip: float, gravity: Gravity) -> RolloutResult:
    """One optimizer step on the mean rollout loss, its gradient norm clipped to ``clip``.
    A non-finite loss (a rollout that blew up) takes no step."""
    result = rollout_loss(policy, initial, eta, periods, weight, gravity)
    clipped_step(optimizer, result.loss.mean(), policy.network.parameters(), clip)
    return result
