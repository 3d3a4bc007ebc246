"""Two bodies in relative coordinates: the eager simulation step of a binary.

A binary's centre of mass moves uniformly, and the leapfrog, whose kicks on the two bodies are
equal and opposite, keeps it so. What is left to integrate is the relative orbit: separation
``r = x_1 - x_0`` and relative velocity ``u = v_1 - v_0``, accelerated by
``-M r / (|r|^2 + s^2)^(3/2)`` (``M = m_0 + m_1``). The same kick-drift-kick on those two vectors,
with a step rule that reads only ``|r|`` and ``u`` (a policy's ``relative_rule``), takes about a
third of the torch operations of the general step. On a single orbit each operation costs about
a microsecond whatever its size, so that is the step's cost: 2.5-3x the steps per second.

The bodies' positions and velocities are rebuilt once per block of steps, for all of its rows in
one vectorized pass: with ``X``, ``V`` the centre of mass, ``x_0 = X - (m_1 / M) r`` and
``x_1 = X + (m_0 / M) r``. The trajectory is the general path's to rounding
(tests/test_two_body.py compares the two).

It applies to eager runs of two bodies with positive total mass, without an external field,
under a policy whose step rule has a relative form (fixed and analytic steps); everything else
takes the general step.
"""

from __future__ import annotations

import torch

from .physics import State

BLOCK = 64  # steps per call: entering and leaving relative coordinates costs a dozen operations a call


def relative_stepper(policy, gravity, mass: torch.Tensor, t_end: torch.Tensor | None):
    """The stepper of :func:`~nbody_engine.integrate.simulate`'s eager loop for a binary, or
    None where this path does not apply (see the module's docstring).

    ``steps_of(state, acc, carry, steps, n, keep, out=None)`` takes ``n`` steps and returns the new state,
    its accelerations, the policy's carry (None: these policies keep nothing), each system's
    count of steps taken and the rows (time, dt, position, velocity), each (len(keep), B, ...),
    of the steps ``keep`` (indices into the n; None if empty).
    """
    rule = _rule_of(policy)
    if rule is None or mass.shape[1] != 2 or gravity.field is not None or not bool((mass.sum(1) > 0).all()):
        return None
    total = mass.sum(1, keepdim=True)  # (B, 1)
    step_rule = rule(total, gravity.softening)
    towards = torch.stack([-mass[:, 1], mass[:, 0]], 1).div(total).unsqueeze(-1)  # (B, 2, 1): x_i = X + towards_i r
    minus_half_total = -0.5 * total
    minus_three = total.new_tensor(-3.0)  # a tensor exponent costs less than a number
    softening = total.new_tensor(gravity.softening) if gravity.softening else None
    end = None if t_end is None else t_end.view(-1, 1)

    def separation(r: torch.Tensor) -> torch.Tensor:
        distance = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
        return distance if softening is None else torch.hypot(distance, softening)

    def steps_of(state: State, acc: torch.Tensor, carry, steps: torch.Tensor, n: int, keep: tuple[int, ...],
                 out: None = None):
        x0, x1 = state.position.unbind(1)
        v0, v1 = state.velocity.unbind(1)
        r, u = x1 - x0, v1 - v0
        centre, drift = torch.addcmul(x0, towards[:, 0], r, value=-1), torch.addcmul(v0, towards[:, 0], u, value=-1)
        a0, a1 = acc.unbind(1)
        half_a = (a1 - a0) * 0.5  # half the relative acceleration: a half kick of dt is u + dt * half_a
        start = t = state.time.view(-1, 1)
        distance = separation(r)
        rows = []
        for _ in range(n):
            dt = step_rule(r, distance, u)
            if end is not None:
                dt = torch.minimum(dt, (end - t).clamp_min(0))
                t = t + dt
            u = torch.addcmul(u, dt, half_a)
            r = torch.addcmul(r, dt, u)
            distance = separation(r)
            half_a = r * (distance.pow(minus_three) * minus_half_total)
            u = torch.addcmul(u, dt, half_a)
            rows.append((t, dt, r, u))
        time, dts, rs, us = (torch.stack(column) for column in zip(*rows))  # (n, B, 1) and (n, B, D)
        if end is None:  # the times as a running sum: the same additions in the same order, in one operation
            time = torch.cat([start.unsqueeze(0), dts]).cumsum(0)[1:]
        else:
            steps = steps + (dts > 0).sum(0).view(-1)
        centres = torch.addcmul(centre, time - start, drift)
        position = torch.addcmul(centres.unsqueeze(-2), towards, rs.unsqueeze(-2))
        velocity = torch.addcmul(drift.unsqueeze(-2), towards, us.unsqueeze(-2))
        time, dts = time.squeeze(-1), dts.squeeze(-1)
        moved = State(state.mass, position[-1], velocity[-1], time[-1])
        acc = towards * (2 * half_a).unsqueeze(-2)
        if not keep:
            return moved, acc, carry, steps, None
        kept = slice(None) if len(keep) == n else torch.tensor(keep, device=time.device)
        return moved, acc, carry, steps, (time[kept], dts[kept], position[kept], velocity[kept])
    return steps_of


def _rule_of(policy):
    """The policy's ``relative_rule``, unless a subclass redefined ``dt`` without it (its rule
    would then say something else than its ``dt``)."""
    def owner(name: str):
        return next((k for k in type(policy).__mro__ if name in vars(k)), None)
    rule_owner = owner("relative_rule")
    return policy.relative_rule if rule_owner is not None and rule_owner is owner("dt") else None
