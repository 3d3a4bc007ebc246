"""Time-step policies: given the state of each system, the dt (B,) of its next step.

Every policy has the same small interface, so the integrator never asks which one it holds:

- ``init(state) -> carry``: what the policy keeps between steps (its history), or None;
- ``dt(state, carry) -> Tensor (B,)``: the next step size of each system;
- ``update(carry, state, dt) -> carry``: called with the state reached after each step.

Fixed (``dt > 0``) and analytic (``dt <= 0``, scaled by ``eps``) live here; the learned
policies in :mod:`nbody_engine.model` follow the same interface.
"""

from __future__ import annotations

import torch

from .physics import State, pair_separations


class FixedDt:
    """The same ``dt`` for every system and step."""

    def __init__(self, dt: float) -> None:
        if not dt > 0:
            raise ValueError(f"a fixed time step must be positive, not {dt}")
        self.value = dt

    def init(self, state: State):
        return None

    def dt(self, state: State, carry=None) -> torch.Tensor:
        return torch.full_like(state.time, self.value)

    def update(self, carry, state: State, dt: torch.Tensor):
        return carry


def pairwise_timescale(state: State, softening: float = 0.0) -> torch.Tensor:
    """The shortest dynamical time of each system, (B,).

    For every pair, the smaller of the free-fall time ``sqrt(r^3 / (m_i + m_j))`` and the
    collision time ``r / |v_i - v_j|``; the minimum over pairs. Both are finite for any r > 0
    (unlike ``sqrt(r / |a|)``, which diverges where the net acceleration cancels), and both
    shrink through a close encounter. For a Kepler orbit the free-fall time equals
    ``sqrt(r / |a|)``; the collision time takes over near pericentre of eccentric orbits.
    """
    dx = pair_separations(state.position)
    dv = pair_separations(state.velocity)
    N = state.num_bodies
    eye = torch.eye(N, dtype=dx.dtype, device=dx.device, requires_grad=False).bool()
    r2 = (dx * dx).sum(-1) + softening**2
    v2 = (dv * dv).sum(-1)
    m_pair = state.mass.unsqueeze(1) + state.mass.unsqueeze(2)
    free_fall = (r2.pow(1.5) / m_pair).sqrt()
    collision = (r2 / v2.clamp_min(torch.finfo(r2.dtype).tiny)).sqrt()
    tau = torch.minimum(free_fall, collision).masked_fill(eye, float("inf"))
    return tau.flatten(1).min(1).values


class AnalyticDt:
    """Adaptive ``dt = eps * pairwise_timescale(state)``, see :func:`pairwise_timescale`."""

    def __init__(self, eps: float, softening: float = 0.0) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be positive, not {eps}")
        self.eps = eps
        self.softening = softening

    def init(self, state: State):
        return None

    def dt(self, state: State, carry=None) -> torch.Tensor:
        return self.eps * pairwise_timescale(state, self.softening)

    def update(self, carry, state: State, dt: torch.Tensor):
        return carry


def analytic_or_fixed(dt: float, eps: float, softening: float = 0.0):
    """The spec's rule for ``integrator_mode = analytic``: ``dt > 0`` fixed, else adaptive."""
    return FixedDt(dt) if dt > 0 else AnalyticDt(eps, softening)
