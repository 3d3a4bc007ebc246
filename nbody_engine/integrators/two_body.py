"""Two bodies in relative coordinates: the eager simulation step of a binary, and a training
attempt's differentiable leapfrog.

A binary's centre of mass moves uniformly, and the leapfrog, whose kicks on the two bodies are
equal and opposite, keeps it so. What is left to integrate is the relative orbit: separation
``r = x_1 - x_0`` and relative velocity ``u = v_1 - v_0``, accelerated by
``-M r / (|r|^2 + s^2)^(3/2)`` (``M = m_0 + m_1``). The same kick-drift-kick on those two vectors,
with a step rule that reads only ``|r|`` and ``u`` (the rule a policy declares,
:meth:`~nbody_engine.integrators.dt_policy.DtPolicy.relative_rule`), takes about a
third of the torch operations of the general step. On a single orbit an operation costs about
the same whatever its size, so their count is the step's cost (docs/BENCHMARKS.md, "Figures the
code's comments rely on").
In training (:func:`relative_leapfrog`) the derivatives in dt are stepped along in forward mode,
so that autograd does not differentiate the leapfrog at all.

The bodies' positions and velocities are rebuilt once per block of steps, for all of its rows in
one vectorized pass: with ``X``, ``V`` the centre of mass, ``x_0 = X - (m_1 / M) r`` and
``x_1 = X + (m_0 / M) r``. The trajectory is the general path's to rounding
(tests/test_two_body.py compares the two).

Simulation takes this path in eager runs of two bodies with positive total mass, without an
external field (:meth:`Binaries.cover`), under a policy that declares a relative rule
(fixed and analytic steps, and a learned step without history on the ``basic`` features);
training attempts take it for every such binary. Everything else takes the general step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..physics.gravity import State, cross, sum_last

BLOCK = 64  # steps per call: entering and leaving relative coordinates costs a dozen operations a call


class Binaries:
    """A batch of binaries of masses ``mass`` (B, 2) under softening ``softening``: their fixed
    quantities and the way into and out of relative coordinates."""

    def __init__(self, mass: torch.Tensor, softening: float) -> None:
        self.mass = mass
        self.softening_length = softening
        self.total = mass.sum(1, keepdim=True)  # (B, 1)
        self.towards = torch.stack([-mass[:, 1], mass[:, 0]], 1).div(self.total).unsqueeze(-1)  # x_i = X + towards_i r
        self.minus_half_total = -0.5 * self.total
        # tensors: cheaper operands than numbers, made once per dtype, device and softening
        self.minus_three, self.softening = _constants(softening, mass.dtype, mass.device)

    @staticmethod
    def cover(mass: torch.Tensor, gravity) -> bool:
        """Whether systems of ``mass`` under ``gravity`` are binaries this module can step."""
        return mass.shape[1] == 2 and gravity.field is None and bool((mass.sum(1) > 0).all())

    def separation(self, r: torch.Tensor) -> torch.Tensor:
        """|r| (B, 1), softened."""
        distance = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
        return distance if self.softening is None else torch.hypot(distance, self.softening)

    def half_acceleration(self, r: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """Half the relative acceleration ``-M r / distance^3``: a half kick of dt is ``u + dt * it``."""
        return r * self.pull(distance)

    def pull(self, distance: torch.Tensor) -> torch.Tensor:
        """``-M / (2 distance^3)`` (B, 1): half the relative acceleration per unit of separation."""
        return distance.pow(self.minus_three) * self.minus_half_total

    def relative(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Separation, relative velocity, centre of mass and its velocity, each (B, D)."""
        x0, x1 = state.position.unbind(1)
        v0, v1 = state.velocity.unbind(1)
        r, u = x1 - x0, v1 - v0
        back = self.towards[:, 0]
        return r, u, torch.addcmul(x0, back, r, value=-1), torch.addcmul(v0, back, u, value=-1)

    def bodies(self, centre: torch.Tensor, drift: torch.Tensor, r: torch.Tensor, u: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions and velocities (..., B, 2, D) of the bodies from the centre of mass, its
        velocity and the relative coordinates (..., B, D)."""
        return (torch.addcmul(centre.unsqueeze(-2), self.towards, r.unsqueeze(-2)),
                torch.addcmul(drift.unsqueeze(-2), self.towards, u.unsqueeze(-2)))

    def state(self, centre, drift, r, u, time) -> State:
        return State(self.mass, *self.bodies(centre, drift, r, u), time)

    def accelerations(self, half_a: torch.Tensor) -> torch.Tensor:
        """The bodies' accelerations (B, 2, D) from half the relative one."""
        return self.towards * (2 * half_a).unsqueeze(-2)


@functools.lru_cache(maxsize=16)
def _constants(softening: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-3 and the softening (None without), as tensors (normal ones even under inference mode)."""
    with torch.inference_mode(False):
        return (torch.tensor(-3.0, dtype=dtype, device=device),
                torch.tensor(softening, dtype=dtype, device=device) if softening else None)


def relative_stepper(policy, gravity, mass: torch.Tensor, t_end: torch.Tensor | None):
    """The stepper of :func:`~nbody_engine.integrators.loop.simulate`'s eager loop for a binary, or
    None where this path does not apply (see the module's docstring).

    ``steps_of(state, acc, carry, steps, n, keep, out=None)`` takes ``n`` steps and returns the new state,
    its accelerations, the policy's carry (None: these policies keep nothing), each system's
    count of steps taken and the rows (time, dt, position, velocity), each (len(keep), B, ...),
    of the steps ``keep`` (indices into the n; None if empty).
    """
    if not Binaries.cover(mass, gravity):
        return None
    binaries = Binaries(mass, gravity.softening)
    step_rule = policy.relative_rule(binaries)
    if step_rule is None:
        return None
    separation, half_acceleration = binaries.separation, binaries.half_acceleration
    end = None if t_end is None else t_end.view(-1, 1)

    def steps_of(state: State, acc: torch.Tensor, carry, steps: torch.Tensor, n: int, keep: tuple[int, ...],
                 out: None = None):
        r, u, centre, drift = binaries.relative(state)
        a0, a1 = acc.unbind(1)
        half_a = (a1 - a0) * 0.5
        start = t = state.time.view(-1, 1)
        distance = separation(r)
        rows, times = [], []
        for _ in range(n):
            dt = step_rule(r, distance, u, drift)
            if end is not None:  # the clock decides the step; without an end it is summed once below
                dt = torch.minimum(dt, (end - t).clamp_min(0))
                t = t + dt
                times.append(t)
            u = torch.addcmul(u, dt, half_a)
            r = torch.addcmul(r, dt, u)
            distance = separation(r)
            half_a = half_acceleration(r, distance)
            u = torch.addcmul(u, dt, half_a)
            rows.append((dt, r, u))
        dts, rs, us = (torch.stack(column) for column in zip(*rows))  # (n, B, 1) and (n, B, D)
        if end is None:  # the times as a running sum: the same additions in the same order, in one operation
            time = torch.cat([start.unsqueeze(0), dts]).cumsum(0)[1:]
        else:
            time = torch.stack(times)
            steps = steps + (dts > 0).sum(0).view(-1)
        position, velocity = binaries.bodies(torch.addcmul(centre, time - start, drift), drift, rs, us)
        time, dts = time.squeeze(-1), dts.squeeze(-1)
        moved = State(state.mass, position[-1], velocity[-1], time[-1])
        if not keep:
            return moved, binaries.accelerations(half_a), carry, steps, None
        kept = slice(None) if len(keep) == n else torch.tensor(keep, device=time.device)
        return (moved, binaries.accelerations(half_a), carry, steps,
                (time[kept], dts[kept], position[kept], velocity[kept]))
    return steps_of


@dataclass
class Leapfrogged:
    """``n`` leapfrog steps of one dt (B,) per system, differentiable in dt, as a training
    attempt sees them: the energy at the start (B,) and after each step (n, B), the angular
    momentum at the start and the end, the state reached with its accelerations and potential
    (None where not asked for: replay needs only the errors), and the state one step earlier
    with its (for a history row; None unless asked for)."""

    energy0: torch.Tensor
    energies: torch.Tensor
    angular_momentum0: torch.Tensor
    angular_momentum: torch.Tensor
    after: State | None = None
    acc: torch.Tensor | None = None
    potential: torch.Tensor | None = None
    before: State | None = None
    acc_before: torch.Tensor | None = None
    potential_before: torch.Tensor | None = None


@dataclass(frozen=True)
class RelativeStart:
    """Binaries at the start of an attempt in relative coordinates: separation, relative
    velocity, centre of mass and its velocity (B, D), distance (B, 1) and half the relative
    acceleration (B, D)."""

    r: torch.Tensor
    u: torch.Tensor
    centre: torch.Tensor
    drift: torch.Tensor
    distance: torch.Tensor
    half_a: torch.Tensor


def relative_start(binaries: Binaries, state: State) -> tuple[RelativeStart, torch.Tensor, torch.Tensor]:
    """``state`` in relative coordinates, and the bodies' accelerations (B, 2, D) and potential
    energy (B,): a training attempt's policy needs them, so they are not computed twice."""
    r, u, centre, drift = binaries.relative(state)
    distance = binaries.separation(r)
    half_a = binaries.half_acceleration(r, distance)
    potential = -binaries.mass.prod(1) / distance.squeeze(-1)
    return RelativeStart(r, u, centre, drift, distance, half_a), binaries.accelerations(half_a), potential


def relative_leapfrog(binaries: Binaries, state: State, start: RelativeStart, dt: torch.Tensor, n_steps: int,
                      ends: int = 1) -> Leapfrogged:
    """:class:`Leapfrogged` for binaries (:meth:`Binaries.cover`) from ``state`` (``start`` in
    relative coordinates), stepped in relative coordinates, with ``ends`` of its last states
    rebuilt as the bodies' (0, 1, or 2 for a history row).

    The energy is the centre of mass's kinetic energy, constant, plus the relative orbit's
    ``mu |u|^2 / 2 - m_0 m_1 / |r|`` (mu the reduced mass), the angular momentum the centre of
    mass's ``M X x V``, constant, plus ``mu r x u``: the quantities of the bodies, in the terms
    the relative orbit has.

    Differentiated in forward mode: each system has one dt, so the derivatives of every step's
    separation, relative velocity and acceleration in its dt (the tangents) are stepped along
    with them, without autograd, and the energies and the final angular momentum are attached
    to ``dt`` by their derivatives (:func:`_attached`). Autograd then differentiates only what
    depends on them (the loss), not the leapfrog: ``loss.backward()`` gives the same gradient
    to rounding, and an attempt with its backward pass costs less (docs/BENCHMARKS.md). The
    states returned carry no gradient."""
    b = binaries
    total, pair = b.total.squeeze(-1), state.mass.prod(1)  # M and m_0 m_1, (B,)
    reduced = pair / total
    with torch.no_grad():
        orbit = _TangentOrbit(b, start, dt.detach(), keep_previous=ends == 2)
        for _ in range(n_steps):
            orbit.step()
        # sum_last: on a CPU a reduction over D = 2 costs many times the products it adds up
        com_energy = 0.5 * total * sum_last(start.drift * start.drift)
        com_angular = _times(total, cross(start.centre, start.drift))
        # the energies at the start and after every step in one pass over them all, with their tangents: (n + 1, B)
        u_all, u_dot_all = torch.stack(orbit.velocities), torch.stack(orbit.velocity_tangents)
        inverse_distances = torch.stack(orbit.distances).squeeze(-1).reciprocal()
        stretches = torch.stack(orbit.stretches).squeeze(-1)
        energies = com_energy + 0.5 * reduced * sum_last(u_all * u_all) - pair * inverse_distances
        energy_dots = reduced * sum_last(u_all * u_dot_all) + pair * inverse_distances * stretches
        r, u = orbit.r, orbit.u
        angular0 = com_angular + _times(reduced, cross(start.r, start.u))
        angular = com_angular + _times(reduced, cross(r, u))
        angular_dot = _times(reduced, cross(orbit.r_dot, u) + cross(r, orbit.u_dot))
    shift = dt - dt.detach()  # zero, with dt's gradient
    run = Leapfrogged(energies[0], _attached(energies[1:], energy_dots[1:], shift), angular0,
                      _attached(angular, angular_dot, shift.view(-1, *[1] * (angular.dim() - 1))))

    def at(steps, r, u, half_a, distance):
        elapsed = dt.detach() * steps
        moved = torch.addcmul(start.centre, elapsed.view(-1, 1), start.drift)
        return (b.state(moved, start.drift, r, u, state.time + elapsed), b.accelerations(half_a),
                -pair / distance.squeeze(-1))

    with torch.no_grad():
        if ends:
            run.after, run.acc, run.potential = at(n_steps, r, u, orbit.half_a, orbit.distance)
        if orbit.previous is not None:
            run.before, run.acc_before, run.potential_before = at(n_steps - 1, *orbit.previous)
    return run


class _TangentOrbit:
    """The relative leapfrog of :func:`relative_leapfrog` with its tangents, the derivatives in
    dt of the separation, the relative velocity and half the acceleration (``r_dot``,
    ``u_dot``, ``half_a_dot``), stepped together; it keeps the relative velocity, its tangent,
    the distance and its relative tangent ``d|r| / |r|`` of the start and of every step."""

    def __init__(self, binaries: Binaries, start: RelativeStart, dt: torch.Tensor, keep_previous: bool) -> None:
        self.b, self.keep_previous, self.previous = binaries, keep_previous, None
        self.r, self.u, self.half_a, self.distance = start.r, start.u, start.half_a, start.distance
        self.h = dt.view(-1, 1).expand_as(self.r).contiguous()  # a (B, 1) factor would cost each kick a broadcast
        self.r_dot, self.u_dot, self.half_a_dot = (torch.zeros_like(self.r) for _ in range(3))
        self.velocities, self.velocity_tangents = [self.u], [self.u_dot]
        self.distances, self.stretches = [self.distance], [torch.zeros_like(self.distance)]

    def step(self) -> None:
        if self.keep_previous:
            self.previous = (self.r, self.u, self.half_a, self.distance)
        h = self.h
        self._kick()
        self.r_dot = torch.addcmul(self.r_dot + self.u, h, self.u_dot)
        self.r = r = torch.addcmul(self.r, h, self.u)
        self.distance = distance = self.b.separation(r)
        stretch = sum_last(r * self.r_dot).unsqueeze(-1) / distance.square()  # d|r| / |r|, softened or not
        pull = self.b.pull(distance)
        self.half_a, self.half_a_dot = r * pull, pull * torch.addcmul(self.r_dot, r, stretch, value=-3.0)
        self._kick()
        self.velocities.append(self.u)
        self.velocity_tangents.append(self.u_dot)
        self.distances.append(distance)
        self.stretches.append(stretch)

    def _kick(self) -> None:
        """Half a kick, ``u + dt half_a``, and its tangent ``u_dot + half_a + dt half_a_dot``."""
        self.u_dot = torch.addcmul(self.u_dot + self.half_a, self.h, self.half_a_dot)
        self.u = torch.addcmul(self.u, self.h, self.half_a)


def _attached(value: torch.Tensor, tangent: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``value`` with the gradient its derivative ``tangent`` in dt gives it: ``value + tangent *
    shift``, where ``shift = dt - dt`` (broadcast to ``value``) is zero, so the numbers are
    ``value``'s. A non-finite tangent (a blown-up attempt, whose loss does not use the
    leapfrog's gradient) counts as zero, so that it cannot make the gradient NaN."""
    return torch.addcmul(value, torch.nan_to_num(tangent, nan=0.0, posinf=0.0, neginf=0.0), shift)


def _times(k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """k (B,) times x, (B,) or (B, 3)."""
    return k.view(-1, *([1] * (x.dim() - 1))) * x
