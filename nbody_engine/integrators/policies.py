"""Time-step policies: given the state of each system, the dt (B,) of its next step.

Every policy implements :class:`~nbody_engine.integrators.dt_policy.DtPolicy` (``init``, ``dt``,
``update``, ``relative_rule`` and ``pair_rule``), so the integrator never asks which one it
holds. Fixed and analytic steps declare a relative rule, the two-body fast path
(:mod:`nbody_engine.integrators.two_body`), and a pair rule, the fast path of three or more bodies
(:mod:`nbody_engine.integrators.pair_step`); the others declare None.

Fixed (``dt > 0``) and analytic (``dt <= 0``, scaled by ``eps``) live here; the learned
policies in :mod:`nbody_engine.learning.network` follow the same interface. Every accuracy knob (a fixed
``dt``, an ``eps``) is a number or a tensor (B,) with one value per system, so one batched
simulation can run a whole sweep of the knob (``nbody-runner evaluate`` does).
"""

from __future__ import annotations

import functools

import torch

from ..physics.gravity import Gravity, State, diagonals, pair_separations, squared_halves, sum_last, tightest_pair
from .dt_policy import PackagedRule
from .leapfrog import leapfrog_step


class _Memoryless:
    """A policy that keeps nothing between steps: its carry is None. It declares no relative
    or pair rule unless it defines one; a subclass that redefines ``dt`` without redefining a
    rule declares none too, since an inherited rule would say something else than its ``dt``
    (decided once, when the class is made)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for rule in ("relative_rule", "pair_rule", "packaged_rule"):
            if "dt" in vars(cls) and rule not in vars(cls):
                setattr(cls, rule, getattr(_Memoryless, rule))

    def init(self, state: State):
        return None

    def update(self, carry, state: State, dt: torch.Tensor, acc=None):
        return carry

    def relative_rule(self, binaries) -> None:
        """No two-body fast path unless the policy declares its own (see ``DtPolicy``)."""
        return None

    def pair_rule(self, frame) -> None:
        """No fast path of three or more bodies unless the policy declares its own."""
        return None

    def packaged_rule(self, mass: torch.Tensor, softening: float) -> None:
        """No compiled pair step (:mod:`~nbody_engine.integrators.aot_step`) unless the policy declares one."""
        return None


def _check_positive(what: str, value) -> None:
    """``value``, a number or a tensor of one per system, must be positive."""
    if not bool((torch.as_tensor(value, dtype=torch.float64) > 0).all()):  # float32 would make 1e-300 zero
        raise ValueError(f"{what} must be positive, not {value}")


class FixedDt(_Memoryless):
    """The same ``dt`` at every step: a number for every system, or a tensor (B,), one per system."""

    def __init__(self, dt: float | torch.Tensor) -> None:
        _check_positive("a fixed time step", dt)
        self.value = dt

    def dt(self, state: State, carry=None, acc=None) -> torch.Tensor:
        if isinstance(self.value, torch.Tensor):
            return self.value.to(state.time).expand_as(state.time)
        return torch.full_like(state.time, self.value)

    def relative_rule(self, binaries):
        """:meth:`dt` for :mod:`~nbody_engine.integrators.two_body`'s path (see the module's docstring)."""
        total_mass = binaries.total
        dt = torch.as_tensor(self.value, dtype=total_mass.dtype, device=total_mass.device).reshape(-1, 1)
        dt = dt.expand_as(total_mass)
        return lambda separation, distance, relative_velocity, drift: dt

    def pair_rule(self, frame):
        """:meth:`dt` for :mod:`~nbody_engine.integrators.pair_step`'s path."""
        mass = frame.mass
        dt = torch.as_tensor(self.value, dtype=mass.dtype, device=mass.device).expand(frame.systems).contiguous()
        return lambda pairs: dt

    def packaged_rule(self, mass: torch.Tensor, softening: float) -> PackagedRule:
        """:meth:`dt` for :mod:`~nbody_engine.integrators.aot_step` (:func:`fixed_or_analytic_dt`)."""
        return _fixed_or_analytic(mass, self.value, adaptive=False)


def pairwise_timescale(state: State, softening: float = 0.0) -> torch.Tensor:
    """The time scale each system's next step must resolve, (B,).

    For every pair, the smaller of the free-fall time ``sqrt(r^3 / (m_i + m_j))`` and the
    collision time ``r / |v_i - v_j|``, times the energy guard
    ``min(1, E r / (m_i m_j)) ** (1/3)``; the minimum over pairs.

    - Both times are finite for any r > 0 (unlike ``sqrt(r / |a|)``, which diverges where the
      net acceleration of a body cancels) and both shrink through a close encounter. For a
      Kepler orbit the free-fall time equals ``sqrt(r / |a_rel|)`` with the relative
      acceleration ``(m_1 + m_2) / r^2``.
    - The guard keeps a leapfrog step's energy error a fixed fraction of the *system's* energy
      ``E = max(|T + W|, 0.01 (T + |W|))``: the error of a step of ``eps * tau`` scales like
      ``eps^3`` times the pair's binding energy ``m_i m_j / r``, which in a near-collision dwarfs
      the system's. Without it, one close passage of two point masses can change the energy of a
      random three-body system several-fold. T is the kinetic energy in the centre-of-mass
      frame, ``sum_ij m_i m_j |v_i - v_j|^2 / 4M``, and W the mutual potential energy, so the
      step, like the dynamics, is the same in every inertial frame (with the total kinetic
      energy, a binary whose centre of mass moved at its orbital speed would step up to 2.3
      times shorter, and a fast-moving one longer and less accurately).

    Not differentiable with respect to the state (the diagonal holds inf); training computes it
    from the detached state at the start of an attempt. It is computed on squares, with one
    square root at the end, from one pass over the pair separations of positions and velocities
    together: a single orbit's step is mostly this function's few dozen tiny torch operations,
    so their number is its cost (two bodies take a path of their own with a third of them).
    """
    if state.num_bodies == 2:
        return _two_body_timescale(state, softening)
    return _pair_matrix_timescale(state, softening)


def _pair_matrix_timescale(state: State, softening: float) -> torch.Tensor:
    """:func:`pairwise_timescale` over the (B, N, N) matrix of pairs (any N >= 2)."""
    mass = state.mass
    pairs = pair_separations(torch.cat([state.position, state.velocity], -1))  # (B, N, N, 2D)
    squares = squared_halves(pairs, state.dim)  # r^2, |v_j - v_i|^2
    _, _, inf_diagonal = diagonals(state.num_bodies, mass.dtype, mass.device)
    r2 = squares[..., 0] + (softening**2 + inf_diagonal)  # inf on the diagonal: a body is no pair
    r = r2.sqrt()
    m_i, m_j = mass.unsqueeze(2), mass.unsqueeze(1)
    mm = m_i * m_j
    binding = mm / r  # m_i m_j / r_ij, 0 on the diagonal
    kinetic = sum_last(sum_last(mm * squares[..., 1])) / (4 * sum_last(mass))
    potential = -0.5 * sum_last(sum_last(binding))
    scale = torch.maximum((kinetic + potential).abs(), 0.01 * (kinetic - potential)).view(-1, 1, 1)
    free_fall2 = r2 * r / (m_i + m_j)
    collision2 = r2 / squares[..., 1].clamp_min(torch.finfo(r2.dtype).tiny)
    guard2 = (scale / binding).clamp(max=1.0).pow(2.0 / 3.0)  # 1 on the diagonal
    return (torch.minimum(free_fall2, collision2) * guard2).flatten(1).amin(1).sqrt()


def _two_body_timescale(state: State, softening: float) -> torch.Tensor:
    """:func:`pairwise_timescale` of the one pair of a two-body system, (B,)."""
    relative = state.position[:, 1] - state.position[:, 0], state.velocity[:, 1] - state.velocity[:, 0]
    separation, speed = (torch.linalg.vector_norm(v, dim=-1) for v in relative)
    if softening:
        separation = torch.hypot(separation, separation.new_tensor(softening))
    return two_body_timescale(separation, speed, sum_last(state.mass).reciprocal())


def two_body_timescale(separation: torch.Tensor, speed: torch.Tensor, inverse_total_mass: torch.Tensor,
                       factor: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`pairwise_timescale` of one pair (times ``factor``) from its separation ``r``
    (softened), relative speed ``v`` and ``1 / M`` (M = m_0 + m_1), tensors of one shape.

    In these terms the free-fall time is ``r sqrt(w)`` with ``w = r / M`` and the collision time
    ``r / v``; the smaller is ``r / max(1 / sqrt(w), v)``. The reduced mass cancels from the guard:
    with ``k = T / (m_0 m_1 / r) = v^2 w / 2`` its ratio ``E r / (m_0 m_1)`` is
    ``max(|k - 1|, 0.01 (k + 1))``, at most 1 (one clamp). Twelve operations: the most of a
    binary's step (:mod:`nbody_engine.integrators.two_body`), whose cost is its count of operations.
    ``v = 0`` gives the free-fall time, an infinite collision time, as it should.
    """
    shortest, guard = two_body_times(separation, speed, inverse_total_mass)
    scale = shortest.mul(guard)
    return scale if factor is None else scale.mul(factor)


def two_body_times(separation: torch.Tensor, speed: torch.Tensor, inverse_total_mass: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`two_body_timescale`'s two factors: the shorter of the free-fall and collision
    times, and the energy guard (at most 1). A learned step's features need the first too."""
    minus_one, hundredth, one, third = _guard_constants(separation.dtype, separation.device)
    w = separation * inverse_total_mass
    vw = speed * w
    ratio = torch.clamp(torch.addcmul(minus_one, speed, vw, value=0.5).abs(),
                        min=torch.addcmul(hundredth, speed, vw, value=0.005), max=one)
    return separation.div(torch.maximum(w.rsqrt(), speed)), ratio.pow(third)


@functools.lru_cache(maxsize=16)
def _guard_constants(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """-1, 0.01, 1 and 1/3 as tensors: on a single orbit an operation with a tensor operand
    costs less than one with a number, which torch wraps in a tensor on every call."""
    with torch.inference_mode(False):
        return tuple(torch.tensor(v, dtype=dtype, device=device) for v in (-1.0, 0.01, 1.0, 1.0 / 3.0))


def fixed_or_analytic_dt(quantities, adaptive: torch.Tensor, knob: torch.Tensor) -> torch.Tensor:
    """dt (B,) of the compiled pair step: ``knob * timescale`` where ``adaptive`` (B,), else ``knob`` (B,)."""
    return torch.where(adaptive, knob * quantities.timescale, knob)


def _fixed_or_analytic(mass: torch.Tensor, knob, adaptive: bool) -> PackagedRule:
    """A fixed (``knob`` = dt) or analytic (``knob`` = eps) step as one kind of package: a batch
    may mix them, and one compile serves both."""
    B = mass.shape[0]
    knob = torch.as_tensor(knob, dtype=mass.dtype, device=mass.device).expand(B).contiguous()
    flags = torch.full((B,), adaptive, dtype=torch.bool, device=mass.device)
    return PackagedRule("fixed-or-analytic", (flags, knob), fixed_or_analytic_dt, (__file__,))


class _TimescaleDt(_Memoryless):
    """``dt = eps * timescale(state)``: a criterion without memory."""

    def __init__(self, eps: float | torch.Tensor, softening: float = 0.0) -> None:
        _check_positive("eps", eps)
        self.eps = eps
        self.softening = softening


class AnalyticDt(_TimescaleDt):
    """Adaptive ``dt = eps * pairwise_timescale(state)``, see :func:`pairwise_timescale`."""

    def dt(self, state: State, carry=None, acc=None) -> torch.Tensor:
        return self.eps * pairwise_timescale(state, self.softening)

    def pair_rule(self, frame):
        """:meth:`dt` for :mod:`~nbody_engine.integrators.pair_step`'s path, or None with a
        softening of the policy's own."""
        if self.softening**2 != frame.softening2:
            return None
        eps = torch.as_tensor(self.eps, dtype=frame.mass.dtype, device=frame.mass.device)
        return lambda pairs: pairs.timescale().mul_(eps)

    def packaged_rule(self, mass: torch.Tensor, softening: float) -> PackagedRule | None:
        """:meth:`dt` for :mod:`~nbody_engine.integrators.aot_step` (:func:`fixed_or_analytic_dt`),
        or None with a softening of the policy's own."""
        if self.softening**2 != softening**2:
            return None
        return _fixed_or_analytic(mass, self.eps, adaptive=True)

    def relative_rule(self, binaries):
        """:meth:`dt` for :mod:`~nbody_engine.integrators.two_body`'s path (see the module's docstring)."""
        total_mass = binaries.total
        inverse_total_mass = total_mass.reciprocal()
        eps = torch.as_tensor(self.eps, dtype=total_mass.dtype, device=total_mass.device).reshape(-1, 1)
        own = None if self.softening == binaries.softening_length else total_mass.new_tensor(self.softening)

        def rule(separation, distance, relative_velocity, drift):
            if own is not None:  # the policy's own softening
                distance = torch.hypot(torch.linalg.vector_norm(separation, dim=-1, keepdim=True), own)
            speed = torch.linalg.vector_norm(relative_velocity, dim=-1, keepdim=True)
            return two_body_timescale(distance, speed, inverse_total_mass, eps)
        return rule


class DriftCorrectedDt(_TimescaleDt):
    """The analytic step taken at its midpoint rather than its start:
    ``dt = eps * tau * exp((11/12) * eps * tau * v_r / r)``, with ``v_r / r`` the radial rate
    ``(r . v) / r^2`` of the tightest pair (:func:`~nbody_engine.physics.gravity.tightest_pair`).

    A step chosen from the state at its start is too long on the way in to pericentre and too
    short on the way out; the two do not cancel, and the energy error drifts secularly. Where
    the energy guard is active (a bound pair) ``tau ~ r^(3/2) * r^(1/3) = r^(11/6)``, so ``tau``
    changes along a step like ``exp((11/6) (v_r / r) t)`` and the value half a step later is
    ``tau * exp((11/12) eps tau v_r / r)``: the step is, to first order, the criterion at its
    midpoint. It costs nothing beyond the analytic step (no extra force evaluation).
    """

    def dt(self, state: State, carry=None, acc=None) -> torch.Tensor:
        step = self.eps * pairwise_timescale(state, self.softening)
        separation, relative_velocity = tightest_pair(state, self.softening)
        rate = sum_last(separation * relative_velocity) / (sum_last(separation * separation) + self.softening**2)
        return step * torch.exp(DRIFT_FACTOR * step * rate)


DRIFT_FACTOR = 11.0 / 12.0


def nearest_neighbour_timescale(state: State, acc: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
    """``min_i sqrt(r_i,nearest / |a_i|)``, (B,): the classic criterion, the one upstream's
    ``eps * sqrt(r / |a|)`` and DESIGN.md name. For a Kepler orbit it is the free-fall time up to
    a constant; it diverges where a body's net acceleration cancels, which
    :func:`pairwise_timescale` avoids. Evaluation runs it as a second baseline."""
    pairs = pair_separations(state.position)
    _, _, inf_diagonal = diagonals(state.num_bodies, pairs.dtype, pairs.device)
    nearest2 = (sum_last(pairs * pairs) + (softening**2 + inf_diagonal)).amin(-1)  # (B, N)
    acc2 = sum_last(acc * acc).clamp_min(torch.finfo(acc.dtype).tiny)
    return (nearest2 / acc2).pow(0.25).amin(-1)


class ClassicDt(_TimescaleDt):
    """Adaptive ``dt = eps * nearest_neighbour_timescale(state)``: the classic criterion. When
    the caller passes no accelerations, ``gravity`` gives them (its external field included)."""

    def __init__(self, eps: float, gravity: Gravity | None = None) -> None:
        self.gravity = gravity or Gravity()
        super().__init__(eps, self.gravity.softening)

    def dt(self, state: State, carry=None, acc=None) -> torch.Tensor:
        if acc is None:
            acc, _ = self.gravity(state, with_potential=False)
        return self.eps * nearest_neighbour_timescale(state, acc, self.softening)


class TimeSymmetricDt(_Memoryless):
    """``dt = (c(s0) + c(s1)) / 2`` for a criterion ``c`` without memory, where s1 is the end of
    a trial leapfrog step of ``c(s0)`` from s0: the step depends (to this order) on both of its
    ends, as a time-reversible integrator's must.

    A step chosen from its start alone makes the adaptive leapfrog irreversible, and its energy
    error grows linearly: 25% after ~380 periods of an e = 0.7 Kepler orbit at eps = 0.1, where
    this one stays near 2.6e-3. The cost is one more force and time-scale evaluation per step."""

    def __init__(self, criterion, gravity: Gravity) -> None:
        self.criterion, self.gravity = criterion, gravity

    def dt(self, state: State, carry=None, acc=None) -> torch.Tensor:
        if acc is None:
            acc, _ = self.gravity(state, with_potential=False)
        first = self.criterion.dt(state, None, acc)
        trial, trial_acc, _ = leapfrog_step(state, first, acc, self.gravity, with_potential=False)
        return 0.5 * (first + self.criterion.dt(trial, None, trial_acc))

    def force_evals(self, carry, steps: torch.Tensor) -> torch.Tensor:
        """The trial step's evaluation and the step's own: two a step."""
        return 2 * steps


class IteratedTimeSymmetricDt:
    """The truly time-symmetric adaptive step of Hut, Makino & McMillan (1995): ``dt`` solves
    ``dt = (c(s0) + c(s1(dt))) / 2``, with ``s1(dt)`` the end of a leapfrog step of ``dt`` from
    ``s0`` and ``c`` a criterion without memory, iterated to convergence (relative change at most
    ``tolerance``; at most ``max_iterations`` trial steps).

    :class:`TimeSymmetricDt` is this iteration's first pass. Solved exactly, the step depends
    on its two ends symmetrically, so the integrator is time-reversible and its energy error is
    bounded over long runs. Each iterate costs a trial step (a force evaluation); the carry
    counts them per system, beside the loop's one force evaluation a step.
    """

    def __init__(self, criterion, gravity: Gravity, tolerance: float = 1e-12, max_iterations: int = 50) -> None:
        self.criterion, self.gravity = criterion, gravity
        self.tolerance, self.max_iterations = tolerance, max_iterations

    def relative_rule(self, binaries) -> None:
        """No two-body fast path: each step iterates trial steps of the general one."""
        return None

    def pair_rule(self, frame) -> None:
        """No pair fast path, for the same reason."""
        return None

    def init(self, state: State) -> torch.Tensor:
        """(2, B): each system's trial force evaluations so far (row 0), and those of the step
        being taken (row 1), which :meth:`update` adds where the step moved the system."""
        return torch.zeros((2, state.batch_size), dtype=torch.long, device=state.time.device)

    def dt(self, state: State, carry: torch.Tensor, acc=None) -> torch.Tensor:
        if acc is None:
            acc, _ = self.gravity(state, with_potential=False)
        start = self.criterion.dt(state, None, acc)
        dt, unsettled = start, torch.ones_like(start, dtype=torch.bool)
        carry[1].zero_()  # in place: the loop holds the carry and passes it to update
        for _ in range(self.max_iterations):
            trial, trial_acc, _ = leapfrog_step(state, dt, acc, self.gravity, with_potential=False)
            carry[1] += unsettled
            new = 0.5 * (start + self.criterion.dt(trial, None, trial_acc))
            change = (new - dt).abs()
            dt = torch.where(unsettled, new, dt)
            unsettled = unsettled & (change > self.tolerance * dt)
            if not bool(unsettled.any()):
                break
        return dt

    def update(self, carry: torch.Tensor, state: State, dt: torch.Tensor, acc=None) -> torch.Tensor:
        carry[0] += carry[1] * (dt > 0)  # a system already at its end took no step and paid nothing
        return carry

    def force_evals(self, carry: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Each step's own evaluation and its trial steps."""
        return steps + carry[0]


def analytic_or_fixed(dt: float, eps: float, gravity: Gravity, time_symmetric: bool = False):
    """The spec's rule for ``integrator_mode = analytic``: ``dt > 0`` fixed, else adaptive
    (time-symmetrized with ``time_symmetric``; a fixed step is symmetric already)."""
    if dt > 0:
        return FixedDt(dt)
    adaptive = AnalyticDt(eps, gravity.softening)
    return TimeSymmetricDt(adaptive, gravity) if time_symmetric else adaptive
