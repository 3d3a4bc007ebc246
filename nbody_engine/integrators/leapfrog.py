"""The kick-drift-kick leapfrog step.

Plain torch arithmetic, so it is differentiable with respect to the per-system step ``dt`` (B,)
(training uses that); simulation runs the same step under ``torch.no_grad()``.
"""

from __future__ import annotations

import torch

from ..physics.gravity import Gravity, State


def leapfrog_step(state: State, dt: torch.Tensor, acc: torch.Tensor, gravity: Gravity, with_potential: bool = True
                  ) -> tuple[State, torch.Tensor, torch.Tensor | None]:
    """One kick-drift-kick step of size ``dt`` (B,) from ``state`` whose accelerations are ``acc``.

    Returns the new state, its accelerations and its potential energy (None without
    ``with_potential``), so the next step reuses them: one force evaluation per step.
    """
    h = dt.view(-1, 1, 1)
    half = 0.5 * h
    v_half = torch.addcmul(state.velocity, half, acc)
    x1 = torch.addcmul(state.position, h, v_half)
    acc1, pot1 = gravity(state.mass, x1, with_potential)
    v1 = torch.addcmul(v_half, half, acc1)
    return State(state.mass, x1, v1, state.time + dt), acc1, pot1


def leapfrog(state: State, dt: torch.Tensor, n_steps: int, gravity: Gravity) -> State:
    """``n_steps`` leapfrog steps of the same ``dt`` (B,); differentiable in ``dt``."""
    acc, _ = gravity(state)
    for _ in range(n_steps):
        state, acc, _ = leapfrog_step(state, dt, acc, gravity)
    return state
