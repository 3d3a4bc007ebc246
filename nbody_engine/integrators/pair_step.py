"""The fast eager simulation step of systems of three or more bodies: every pair quantity once.

The general step (:func:`~nbody_engine.integrators.leapfrog.leapfrog_step` with a policy's ``dt``) builds
the (B, N, N, D) matrix of separations twice a step, once for the forces and once for the time
scale, each in a few dozen small torch operations. Here the state lives in a layout of its own,
bodies first and systems last, ``x (N, D, B)``, and every pair quantity is a row of ``(P, B)``
for the P = N (N - 1) / 2 pairs i < j: contiguous rows of B systems, so each operation is one
vectorized pass over the batch, and the forces on the two bodies of a pair come from the same
row (one ``index_add_``, or one product, adds them to the bodies). The squared separations and
inverse distances the forces compute are the next step's time scale's (which the positions
reached by the drift decide): its potential energy, free-fall times and energy guard, and a
learned step's features. The step's arrays are allocated once per block of BLOCK steps and
written in place (``out=``), so a step allocates nothing of the size of its pairs.

The physics is :func:`~nbody_engine.integrators.leapfrog.leapfrog_step`'s under
:func:`~nbody_engine.integrators.policies.pairwise_timescale` (or a learned step,
:meth:`~nbody_engine.learning.network.LearnedDt.pair_rule`), in float64, to rounding: sums run over pairs
in another order, and the time scale's energy guard is taken as a cube root of the smallest
``t^(3/2) g`` over the pairs instead of the square root of the smallest ``t g^(2/3)`` (the same
number: both are monotonic), which saves a power per pair (tests/test_pair_step.py compares the
two paths step by step and after many steps).

Simulation takes this path in eager runs of three or more bodies without an external field,
under a policy with a ``pair_rule`` (fixed and analytic steps, a learned step without history on
the ``basic`` or ``delta_mag`` features); the policy's ``pair_rule(frame)`` returns
``rule(pairs) -> dt (B,)`` from a :class:`Pairs`, or None where it has no such form. A rule with
a memory (a learned step's history) also has ``resume(carry)`` (the policy's carry at the start
of a block of steps), ``stepped(pairs, dt)`` (after each step) and ``carry(state, acc)`` (the
policy's carry at the end of a block).
"""

from __future__ import annotations

import torch

from ..physics.gravity import State, upper_pairs

BLOCK = 64  # steps per call: entering and leaving the layout costs a few copies a call
SMALL_PRODUCT = 2**14  # N P B at most this: differences and sums over pairs by matrix products
TINY_SPEED2 = 1e-60  # squared relative speeds below this count as this: the features' 1e-30 clamp on speeds


class Frame:
    """Systems of masses ``mass`` (B, N), N >= 3, under softening ``softening``: the constants
    of their pairs in the fast layout, and the way into and out of it."""

    def __init__(self, mass: torch.Tensor, softening: float) -> None:
        self.mass = mass
        B, N = mass.shape
        self.softening2 = softening**2
        i, j = upper_pairs(N, mass.device)
        self.first, self.second = i, j
        self.both = torch.cat([i, j])  # where the pair's two contributions go
        m = mass.t().contiguous()  # (N, B)
        m_i, m_j = m.index_select(0, i), m.index_select(0, j)  # (P, B)
        self.mass_product = m_i * m_j
        self.inverse_pair_mass = (m_i + m_j).reciprocal()
        # body i is pulled along x_j - x_i by m_j / r^3, body j back by m_i / r^3: (2, P, 1, B)
        self.pulls = torch.stack([m_j, -m_i]).unsqueeze(2)
        self.kinetic_weight = self.mass_product / (2 * m.sum(0))  # T = sum over pairs of this times |v_j - v_i|^2
        self.energy_mix = mass.new_tensor([[1.0, -1.0], [0.01, 0.01]])  # (T, -W) -> (T + W, 0.01 (T - W))
        self.bodies, self.pairs, self.systems = N, i.numel(), B
        # Few pairs: differences and sums over pairs as products with the pairs' incidence matrix,
        # one operation each (a difference of a row with +1 and one with -1 is the subtraction's,
        # exactly); many: gathers and index_add_, whose work grows with P, not with P * N.
        self.by_products = N * self.pairs * B <= SMALL_PRODUCT
        if self.by_products:
            pair_rows = torch.arange(self.pairs, device=mass.device)
            self.difference = mass.new_zeros(self.pairs, N).index_put_((pair_rows, j), mass.new_ones(()))
            self.difference.index_put_((pair_rows, i), mass.new_full((), -1.0))
            self.onto_bodies = mass.new_zeros(N, 2 * self.pairs)
            self.onto_bodies[self.both, torch.arange(2 * self.pairs, device=mass.device)] = 1.0

    @staticmethod
    def cover(mass: torch.Tensor, gravity) -> bool:
        """Whether systems of ``mass`` under ``gravity`` take this path."""
        return mass.shape[1] >= 3 and gravity.field is None

    @staticmethod
    def rows(tensor: torch.Tensor) -> torch.Tensor:
        """(N, D, B) -> a (B, N, D) copy."""
        return tensor.permute(2, 0, 1).clone()


class Pairs:
    """One state of the systems of a :class:`Frame` in the fast layout, and its pair quantities,
    computed once and shared by the forces, the time scale and a learned step's features; every
    array is allocated once and written in place.

    ``x``, ``v``, ``acc`` (N, D, B): positions, velocities and accelerations, the three parts of
    ``phase`` (3, N, D, B), whose last two are ``motion`` (2, N, D, B); per pair (P, B):
    ``distance2`` ``|x_j - x_i|^2 + s^2``,
    ``inverse_distance`` and ``cube`` (its powers -1/2 and -3/2) of the positions of the last
    :meth:`forces`; ``speed2`` ``|v_j - v_i|^2``, ``free_fall2`` ``r^3 / (m_i + m_j)`` and
    ``collision2`` ``r^2 / v^2`` of the state of the last :meth:`timescale`."""

    def __init__(self, frame: Frame, state: State) -> None:
        P, B, N, D = frame.pairs, frame.systems, frame.bodies, state.dim
        self.frame = frame
        like = state.position
        self.phase = like.new_empty(3, N, D, B)
        self.x, self.v, self.acc = self.phase.unbind(0)
        self.motion = self.phase[1:]
        self.x.copy_(state.position.permute(1, 2, 0))
        self.v.copy_(state.velocity.permute(1, 2, 0))
        self.gathered, self.separation = like.new_empty(2, P, D, B).unbind(0)
        self.weighted = like.new_empty(2, P, D, B)
        (self.distance2, self.inverse_distance, self.cube, self.speed2, self.free_fall2, self.collision2,
         self.shortest, self.guard, self.weighed, self.distance) = like.new_empty(10, P, B).unbind(0)
        self.motion_squares = like.new_empty(2, N, D, B)  # for a learned step's features
        # m_i m_j |v_j - v_i|^2 / 2M and m_i m_j / r, whose sums over the pairs are T and -W
        self.terms = like.new_empty(2, P, B)
        self.kinetic_terms, self.binding = self.terms.unbind(0)
        self.sums, self.energies = like.new_empty(2, B), like.new_empty(2, B)
        self.energy, self.energy_spread = self.energies.unbind(0)
        self.strengths = like.new_empty(2, P, 1, B)  # m_j / r^3 and -m_i / r^3
        self.cube_per_pair = self.cube.view(1, P, 1, B)
        # views made once: making one costs about as much as an operation on these small arrays
        self.components = self.separation.unbind(1)
        self.contributions = self.weighted.view(2 * P, D, B)
        self.forces()

    def differences(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows[j] - rows[i]`` (P, D, B) of ``rows`` (N, D, B), into ``separation``."""
        f = self.frame
        if f.by_products:
            torch.matmul(f.difference, rows.view(f.bodies, -1), out=self.separation.view(f.pairs, -1))
            return self.separation
        torch.index_select(rows, 0, f.first, out=self.gathered)
        torch.index_select(rows, 0, f.second, out=self.separation)
        return self.separation.sub_(self.gathered)

    def squared_length(self, out: torch.Tensor) -> torch.Tensor:
        """|separation|^2 (P, B), into ``out``."""
        first, *others = self.components
        torch.mul(first, first, out=out)
        for component in others:
            out.addcmul_(component, component)
        return out

    def forces(self) -> torch.Tensor:
        """The accelerations (N, D, B) at the positions ``x``, into ``acc``; keeps the distances."""
        f = self.frame
        d = self.differences(self.x)
        r2 = self.squared_length(self.distance2)
        if f.softening2:
            r2.add_(f.softening2)
        torch.rsqrt(r2, out=self.inverse_distance)
        torch.mul(self.inverse_distance, self.inverse_distance, out=self.cube).mul_(self.inverse_distance)
        torch.mul(self.cube_per_pair, f.pulls, out=self.strengths)
        torch.mul(d, self.strengths, out=self.weighted)  # the accelerations of body i and of body j
        if f.by_products:
            return torch.matmul(f.onto_bodies, self.contributions.view(2 * f.pairs, -1),
                                out=self.acc.view(f.bodies, -1))
        return self.acc.zero_().index_add_(0, f.both, self.contributions)

    def timescale(self) -> torch.Tensor:
        """:func:`~nbody_engine.integrators.policies.pairwise_timescale` (B,) of the state (``x``, ``v``),
        whose positions the last :meth:`forces` saw. A pair's relative speed counts as at least
        1e-30 (TINY_SPEED2, the features' clamp), not the float's smallest normal number: only a
        pair at rest relative to each other and more than 1e60 (m_i + m_j) apart could
        tell the two apart, since its free-fall time is the shorter of its times otherwise."""
        f = self.frame
        self.differences(self.v)
        v2 = self.squared_length(self.speed2)
        torch.mul(f.kinetic_weight, v2, out=self.kinetic_terms)
        binding = torch.mul(f.mass_product, self.inverse_distance, out=self.binding)  # m_i m_j / r
        # (T + W, 0.01 (T - W)) from the sums of T's and -W's terms over the pairs, in one product
        torch.matmul(f.energy_mix, torch.sum(self.terms, 1, out=self.sums), out=self.energies)
        scale = torch.maximum(self.energy.abs_(), self.energy_spread)
        torch.div(f.inverse_pair_mass, self.cube, out=self.free_fall2)
        torch.div(self.distance2, v2.clamp_min_(TINY_SPEED2), out=self.collision2)
        shortest = torch.minimum(self.free_fall2, self.collision2, out=self.shortest)
        # min over pairs of t g^(2/3), t = shortest^2 and g the guard, is the cube of min t^(3/2) g;
        # t^(3/2) as t^2 / sqrt(t): a reciprocal square root costs half a square root here
        guard = torch.div(scale, binding, out=self.guard).clamp_(max=1.0)
        weighed = torch.rsqrt(shortest, out=self.weighed).mul_(shortest).mul_(shortest).mul_(guard)
        return weighed.amin(0).pow_(1.0 / 3.0)


def pair_stepper(policy, gravity, mass: torch.Tensor, t_end: torch.Tensor | None):
    """The stepper of :func:`~nbody_engine.integrators.loop.simulate`'s eager loop for systems of three
    or more bodies, or None where this path does not apply (see the module's docstring).

    ``steps_of(state, acc, carry, steps, n, keep, out=None)``: as
    :func:`~nbody_engine.integrators.two_body.relative_stepper`'s (``acc`` is computed again here)."""
    if not Frame.cover(mass, gravity):
        return None
    frame = Frame(mass, gravity.softening)
    rule = policy.pair_rule(frame)
    if rule is None:
        return None
    # a rule with a memory (a learned step's history) takes the policy's carry in and gives it back
    resume, stepped, carry_of = (getattr(rule, name, None) for name in ("resume", "stepped", "carry"))

    def steps_of(state: State, acc: torch.Tensor, carry, steps: torch.Tensor, n: int, keep: tuple[int, ...],
                 out: None = None):
        pairs = Pairs(frame, state)
        x, v, a = pairs.x, pairs.v, pairs.acc
        if resume is not None:
            resume(carry)
        dts = state.time.new_empty(n, frame.systems)
        t = state.time.clone()
        kept, rows = set(keep or ()), []
        for k, dt in enumerate(dts.unbind(0)):
            if t_end is None:  # the times are summed once, after the block
                dt.copy_(rule(pairs))
            else:
                torch.minimum(rule(pairs), (t_end - t).clamp_min_(0), out=dt)
                t += dt
            v.addcmul_(dt, a, value=0.5)
            x.addcmul_(dt, v)
            pairs.forces()
            v.addcmul_(dt, a, value=0.5)
            if stepped is not None:
                stepped(pairs, dt)
            if k in kept:
                rows.append((t.clone() if t_end is not None else None, frame.rows(x), frame.rows(v)))
        index = torch.tensor(keep or (), dtype=torch.long, device=dts.device)
        if t_end is None:  # the times as a running sum: the same additions in the same order, in one operation
            times = torch.cat([state.time.unsqueeze(0), dts]).cumsum(0)[1:]
            t, times = times[-1], times.index_select(0, index)
        else:
            steps = steps + (dts > 0).sum(0)
            times = torch.stack([row[0] for row in rows]) if rows else None
        moved, acc = State(state.mass, frame.rows(x), frame.rows(v), t), frame.rows(a)
        if carry_of is not None:
            carry = carry_of(moved, acc)
        if not rows:
            return moved, acc, carry, steps, None
        return (moved, acc, carry, steps, (times, dts.index_select(0, index),
                                                     torch.stack([row[1] for row in rows]),
                                                     torch.stack([row[2] for row in rows])))
    return steps_of
