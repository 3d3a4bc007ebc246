"""The time-transformed leapfrog (TTL): a constant fictitious step ``h``, the adaptivity moved
into a time transformation ``Omega(q)`` of the positions (Mikkola & Aarseth 2002; with
``Omega = U`` the logarithmic-Hamiltonian leapfrog of Mikkola & Tanikawa 1999 and Preto &
Tremaine 1999).

One step, drift-kick-drift, one force evaluation (at the midpoint positions):

- carry ``W``, Omega integrated along the orbit (``W = Omega(q)`` at the start);
- half drift: ``dt1 = (h / 2) / W``; ``q += dt1 v``; ``t += dt1``;
- kick: ``dtk = h / Omega(q)``; ``v' = v + dtk a(q)``; ``W += dtk grad Omega(q) . (v + v') / 2``;
- half drift with the new ``W``.

The step is time-reversible for any ``Omega`` (``-h`` retraces it), so its energy error does
not drift the way a state-dependent ``dt`` makes the leapfrog's drift. With ``Omega = U``
(:class:`LogHamiltonian`) the kick changes ``W`` by exactly the change of the kinetic energy,
so ``W = T - E0`` all along: Preto & Tremaine's form, whose orbit of a Kepler problem is exact
(energy, eccentricity and semi-major axis to round-off; only the phase errs).

A time transformation is any object with the :class:`TimeTransformation` interface: called with
the masses, the positions, and the potential energy and accelerations that the one force
evaluation of the step gave there, it returns ``Omega`` (B,) and its gradient (B, N, D). A
learned ``Omega = U exp(g(q))`` plugs in the same way (its gradient ``exp(g) (grad U + U grad
g)``, with ``grad g`` from autograd under ``torch.enable_grad()``).

:class:`TimeTransformedLeapfrog` drives the simulation loop (:func:`..loop.simulate`) in place
of a dt policy: its ``stepper`` takes the loop's steps, and the run lands exactly on an end
time through a last step whose ``h`` is solved for (a secant iteration, a force evaluation an
iterate, each counted: :meth:`TimeTransformedLeapfrog.force_evals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..physics.gravity import Gravity, State, sum_last
from .policies import pairwise_timescale


class TimeTransformation(Protocol):
    """``Omega(q) > 0`` of each system and its gradient with respect to the positions."""

    name: str

    def __call__(self, mass: torch.Tensor, position: torch.Tensor, potential: torch.Tensor, acc: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Omega`` (B,) and ``dOmega/dq`` (B, N, D) at ``position`` (B, N, D) of bodies of
        ``mass`` (B, N), given the potential energy (B,) and the accelerations (B, N, D) there."""
        ...


class LogHamiltonian:
    """``Omega = U = -V``, the (positive) force function: the logarithmic Hamiltonian.
    ``dU/dq_i = m_i a_i`` (the force on body i), so it costs nothing beyond the step's one force
    evaluation; an external field's potential and force are part of ``U`` like the bodies'."""

    name = "log-H"

    def __call__(self, mass, position, potential, acc):
        return -potential, mass.unsqueeze(-1) * acc


def ttl_step(state: State, w: torch.Tensor, h: torch.Tensor, omega: TimeTransformation, gravity: Gravity
             ) -> tuple[State, torch.Tensor, torch.Tensor]:
    """One drift-kick-drift step of fictitious length ``h`` (B,) from ``state`` carrying ``w`` (B,).

    Returns the new state, the new ``w`` and the physical time the step took (B,). Plain torch:
    differentiable, and ``h = 0`` leaves a system where it is."""
    half = 0.5 * h
    first = half / w
    midpoint = torch.addcmul(state.position, first.view(-1, 1, 1), state.velocity)
    acc, potential = gravity(state.mass, midpoint)
    value, gradient = omega(state.mass, midpoint, potential, acc)
    kick = h / value
    velocity = torch.addcmul(state.velocity, kick.view(-1, 1, 1), acc)
    w = w + 0.5 * kick * sum_last(sum_last(gradient * (state.velocity + velocity)))
    second = half / w
    position = torch.addcmul(midpoint, second.view(-1, 1, 1), velocity)
    dt = first + second
    return State(state.mass, position, velocity, state.time + dt), w, dt


@dataclass
class TTLCarry:
    """What the loop carries between steps: ``w`` (B,), the fictitious step ``h`` (B,) and the
    force evaluations ``evals`` (B,) each system has cost so far."""

    w: torch.Tensor
    h: torch.Tensor
    evals: torch.Tensor


LANDING_ITERATIONS = 40  # secant iterates of a last step at most (a handful in practice)
LANDING_ULPS = 8  # a last step lands once it is this many units of round-off of t_end from it


class TimeTransformedLeapfrog:
    """The TTL as the simulation loop's integrator, for a time transformation ``omega``.

    The fictitious step is ``h = eps * Omega(q0) * tau(q0)`` per system, with ``tau`` the
    analytic policy's time scale (:func:`~.policies.pairwise_timescale`): the first step lasts
    about ``eps * tau``, as the analytic policy's would. ``eps`` is a number or a tensor (B,),
    one per system (a sweep in one batch). ``h`` (a number or (B,), negative to integrate
    backwards) sets the fictitious step directly instead.
    """

    def __init__(self, omega: TimeTransformation, gravity: Gravity, eps: float | torch.Tensor | None = None,
                 h: float | torch.Tensor | None = None) -> None:
        if (eps is None) == (h is None):
            raise ValueError("the time-transformed leapfrog needs exactly one of eps and h")
        if eps is not None and not bool((torch.as_tensor(eps) > 0).all()):
            raise ValueError(f"eps must be positive, not {eps}")
        self.omega, self.gravity, self.eps, self.h = omega, gravity, eps, h

    def init(self, state: State) -> TTLCarry:
        """``W = Omega(q0)`` and the fictitious step of every system (one force evaluation)."""
        acc, potential = self.gravity(state)
        w, _ = self.omega(state.mass, state.position, potential, acc)
        if self.h is not None:
            h = torch.as_tensor(self.h, dtype=w.dtype, device=w.device).expand_as(w).clone()
        else:
            h = torch.as_tensor(self.eps, dtype=w.dtype, device=w.device) * w * pairwise_timescale(
                state, self.gravity.softening)
        return TTLCarry(w, h, torch.zeros_like(state.time, dtype=torch.long))

    def force_evals(self, carry: TTLCarry, steps: torch.Tensor) -> torch.Tensor:
        """Force evaluations per system (B,): one a step, plus a landing's iterates."""
        return carry.evals

    def first_step(self, state: State) -> tuple[torch.Tensor, State]:
        """The physical length (B,) and end of the first step from ``state``, not recorded."""
        carry = self.init(state)
        after, _, dt = ttl_step(state, carry.w, carry.h, self.omega, self.gravity)
        return dt, after

    def stepper(self, t_end: torch.Tensor | None):
        """The loop's ``advance(state, acc, carry, steps, n, keep)`` (see :func:`..loop.simulate`):
        ``n`` steps, returning the new state, ``acc`` unchanged (a TTL step evaluates its forces
        at its midpoint), the carry, each system's steps taken and the rows of the steps ``keep``.

        With an end time, a step that would pass it is not taken; at the end of the call those
        systems take a last step that ends on it (:meth:`_land`). Deciding that once per call,
        not per step, keeps the loop free of a host synchronization per step."""
        def advance(state: State, acc, carry: TTLCarry, steps: torch.Tensor, n: int, keep, out=None):
            rows = []
            passed = torch.zeros_like(steps, dtype=torch.bool) if t_end is not None else None
            overshoot = torch.zeros_like(state.time)
            for j in range(n):
                h = carry.h if t_end is None else torch.where((state.time < t_end) & ~passed, carry.h, 0.0)
                new, w, dt = ttl_step(state, carry.w, h, self.omega, self.gravity)
                carry.evals = carry.evals + (h != 0)
                if t_end is not None:
                    over = new.time > t_end
                    overshoot = torch.where(over, dt, overshoot)
                    passed = passed | over
                    new, w, dt = _where(~over, (new, w, dt), (state, carry.w, torch.zeros_like(dt)))
                    steps = steps + (dt != 0)
                state, carry.w = new, w
                if keep is None or j in keep:
                    rows.append((state.time, dt, state.position, state.velocity))
            if passed is not None and bool(passed.any()):
                state, dt = self._land(state, carry, passed, overshoot, t_end)
                steps = steps + passed
                if rows and keep and keep[-1] == n - 1:  # the call's last row shows the landing
                    rows[-1] = (state.time, torch.where(passed, dt, rows[-1][1]), state.position, state.velocity)
            blocks = tuple(torch.stack(t) for t in zip(*rows)) if rows else None
            return state, acc, carry, steps, blocks
        return advance

    def _land(self, state: State, carry: TTLCarry, landing: torch.Tensor, overshoot: torch.Tensor,
              t_end: torch.Tensor) -> tuple[State, torch.Tensor]:
        """The systems ``landing`` (B,) take the step whose physical length is what remains to
        ``t_end``: ``h`` solved by the secant method on ``dt(h) - remaining``, from the two points
        known for free, ``dt(0) = 0`` and the step that passed ``t_end`` (``overshoot``).
        Returns the state (time exactly ``t_end``) and the last step's length (B,)."""
        remaining = torch.where(landing, t_end - state.time, 0.0)
        tolerance = LANDING_ULPS * torch.finfo(remaining.dtype).eps * t_end.abs()
        h0, miss0 = torch.zeros_like(carry.h), -remaining
        h1, miss1 = carry.h, torch.where(landing, overshoot - remaining, 0.0)
        unsettled = landing.clone()
        new, w, dt = state, carry.w, torch.zeros_like(remaining)
        for _ in range(LANDING_ITERATIONS):
            slope = (miss1 - miss0) / torch.where(h1 != h0, h1 - h0, 1.0)
            h = torch.where(unsettled & (slope != 0), h1 - miss1 / torch.where(slope != 0, slope, 1.0), h1)
            new, w, dt = ttl_step(state, carry.w, torch.where(landing, h, 0.0), self.omega, self.gravity)
            carry.evals = carry.evals + unsettled
            h0, miss0, h1, miss1 = h1, miss1, h, dt - remaining
            unsettled = unsettled & (miss1.abs() > tolerance)
            if not bool(unsettled.any()):
                break
        carry.w = torch.where(landing, w, carry.w)
        landed = State(state.mass, new.position, new.velocity, t_end)
        return _where(landing, landed, state), torch.where(landing, dt, 0.0)


def _where(mask: torch.Tensor, chosen, other):
    """``chosen`` where ``mask`` (B,) holds, else ``other``: states, (B,) tensors or tuples of them."""
    if isinstance(chosen, tuple):
        return tuple(_where(mask, a, b) for a, b in zip(chosen, other))
    if isinstance(chosen, State):
        return State(chosen.mass, *(_where(mask, a, b) for a, b in
                                    ((chosen.position, other.position), (chosen.velocity, other.velocity),
                                     (chosen.time, other.time))))
    return torch.where(mask.view(-1, *[1] * (chosen.dim() - 1)), chosen, other)
