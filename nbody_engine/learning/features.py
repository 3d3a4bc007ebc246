"""Inputs of the dt network: permutation-invariant system features and the per-orbit history.

All features are dimensionless or logarithms, so one network serves systems of any scale,
any number of bodies and 2D or 3D alike.

- ``basic``: body count, total mass, pair distances (mean, min), speeds (rms, max),
  accelerations (rms, max) and the shortest free-fall and collision times, as logarithms.
- ``rich``: ``basic`` plus the widest pair, the spread of pair distances, the virial ratio
  ``T/|W|``, ``log|E|`` and ``log|L|``.
- ``radial``: the tightest pair's radial fraction ``v_r / |v|`` alone (one number: where on its
  orbit a pair is, which is what the rollout objective's network needs).
- ``delta_mag``: ``basic`` now, plus for each of the last ``history_len`` steps the statistics
  of how much the system changed: mean and max of ``|dx|`` (in units of the closest pair
  distance), ``|dv|`` (in units of the rms speed), ``|da|`` (in units of the rms acceleration),
  and ``dt`` over the shortest dynamical time.

With ``history_len = H > 0`` every feature type keeps H rows per orbit (``delta_mag``: the
change statistics above; ``basic``/``rich``: the features of the H previous states), zero-padded
until H steps have been taken.
"""

from __future__ import annotations

import math

import torch

from ..config.feature_widths import DELTA_WIDTH, row_width
from ..physics.gravity import State, squared_halves, sum_last, tightest_pair, upper_pair_differences, upper_pairs

_TINY = 1e-30


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.abs() + _TINY)


def _pair_stats(state: State, softening: float):
    """Per pair i < j, (B, P): distance, free-fall time and collision time."""
    i, j = upper_pairs(state.num_bodies, state.position.device)
    both = torch.cat([state.position, state.velocity], -1)
    squares = squared_halves(upper_pair_differences(both), state.dim)  # (B, P, 2)
    r = (squares[..., 0] + softening**2).sqrt()
    v = squares[..., 1].sqrt()
    m_pair = state.mass.index_select(1, i) + state.mass.index_select(1, j)
    free_fall = (r**3 / m_pair).sqrt()
    collision = r / v.clamp_min(_TINY)
    return r, free_fall, collision


def radial_fraction(state: State, softening: float = 0.0) -> torch.Tensor:
    """``v_r / |v| = (r . v) / (|r| |v|)`` of the tightest pair, (B, 1): -1 falling straight in,
    0 at a turning point (pericentre, apocentre), +1 moving straight out."""
    return _radial(*tightest_pair(state, softening))


def _radial(separation: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    norms = (sum_last(separation * separation) * sum_last(velocity * velocity)).sqrt().clamp_min(_TINY)
    return (sum_last(separation * velocity) / norms).unsqueeze(-1)


def _body_stats(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rms and max over bodies of |values| (B, N, D)."""
    squares = sum_last(values * values)
    return (sum_last(squares) / squares.shape[-1]).sqrt(), squares.amax(-1).sqrt()


def basic_features(state: State, acc: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
    """(B, 11)"""
    r, free_fall, collision = _pair_stats(state, softening)
    v_rms, v_max = _body_stats(state.velocity)
    a_rms, a_max = _body_stats(acc)
    shortest_free_fall, shortest_collision = free_fall.amin(-1), collision.amin(-1)
    cols = [torch.full_like(state.time, state.num_bodies), sum_last(state.mass), sum_last(r) / r.shape[-1],
            r.amin(-1), v_rms, v_max, a_rms, a_max, shortest_free_fall, shortest_collision,
            torch.minimum(shortest_free_fall, shortest_collision)]
    return _log(torch.stack(cols, -1))


def binary_basic_features(binaries):
    """:func:`basic_features` of a batch of binaries (:class:`~nbody_engine.integrators.two_body.Binaries`)
    from their relative orbit, for the two-body path, as :func:`binary_state_features` gives
    them: a function ``inputs(separation, distance, speed, shortest, relative_velocity, drift)
    -> (B, K)`` and the map ``(offset (B, 11), mix (K, 11))`` of those inputs to the features.
    ``distance`` and ``speed`` are the lengths of the separation (softened) and of the relative
    velocity, ``shortest`` the shorter of the pair's free-fall and collision times (each (B, 1),
    from the step's time scale, :func:`~nbody_engine.integrators.policies.two_body_times`) and ``drift`` the
    centre of mass's velocity (B, D).

    The inputs are the logarithms of five quantities (six with softening): distance, rms and
    largest speed of the bodies, collision time, shortest time [, |r|]. Every feature is a fixed
    combination of them: the distance's powers (free-fall time ``d^1.5 / sqrt(M)``, the bodies'
    accelerations ``m_other |r| / d^3``) and the constants (body count, total mass, mass
    factors) need no operation of their own, and the map folds into the network's first layer
    (:meth:`~nbody_engine.learning.network.DtNetwork.frozen`). The same numbers to rounding."""
    mass, total = binaries.mass, binaries.total  # (B, 2), (B, 1)
    softened = binaries.softening is not None
    factor = binaries.towards.abs().squeeze(-1)  # |a_i| = factor_i M |r| / d^3
    log_total = total.log().squeeze(-1)
    zero = torch.zeros_like(log_total)
    offset = torch.stack([torch.full_like(log_total, math.log(2)), log_total, zero, zero, zero, zero,
                          (sum_last(factor**2) / 2).sqrt().log() + log_total,
                          factor.amax(-1).log() + log_total, -0.5 * log_total, zero, zero], -1)
    mix = mass.new_zeros(6 if softened else 5, 11)
    mix[0, [2, 3]] = 1.0  # mean and least pair distance
    mix[0, 8] = 1.5  # free-fall time
    mix[0, [6, 7]] = -3.0 if softened else -2.0  # accelerations: |r| / d^3, or 1 / d^2
    mix[1, 4] = mix[2, 5] = mix[3, 9] = mix[4, 10] = 1.0
    if softened:
        mix[5, [6, 7]] = 1.0
    exponent = mass.new_tensor([1.0, 0.5, 0.5, 1.0, 1.0, 1.0][: mix.shape[0]])  # the speeds from their squares
    mean_of_two = mass.new_full((2, 1), 0.5)
    towards = binaries.towards

    def inputs(separation, distance, speed, shortest, relative_velocity, drift):
        body_velocity = torch.addcmul(drift.unsqueeze(-2), towards, relative_velocity.unsqueeze(-2))  # (B, 2, D)
        squares = sum_last(body_velocity * body_velocity)  # (B, 2)
        columns = [distance, squares @ mean_of_two, squares.amax(-1, keepdim=True),
                   distance / speed.clamp_min(_TINY), shortest]
        if softened:
            columns.append(torch.linalg.vector_norm(separation, dim=-1, keepdim=True))
        return (torch.cat(columns, -1).pow(exponent) + _TINY).log()
    return inputs, (offset, mix)


def rich_features(state: State, acc: torch.Tensor, potential: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
    """(B, 16)"""
    from ..physics.gravity import angular_momentum, kinetic_energy, magnitude

    r, _, _ = _pair_stats(state, softening)
    kinetic = kinetic_energy(state)
    log_r = _log(r)
    spread = log_r.std(-1, unbiased=False) if r.shape[-1] > 1 else torch.zeros_like(state.time)
    extra = [_log(r.max(-1).values), spread, kinetic / potential.abs().clamp_min(_TINY),
             _log(kinetic + potential), _log(magnitude(angular_momentum(state), state.dim))]
    return torch.cat([basic_features(state, acc, softening), torch.stack(extra, -1)], -1)


def state_features(feature_type: str, state: State, acc: torch.Tensor, potential: torch.Tensor,
                   softening: float = 0.0) -> torch.Tensor:
    if feature_type == "rich":
        return rich_features(state, acc, potential, softening)
    if feature_type == "radial":
        return radial_fraction(state, softening)
    return basic_features(state, acc, softening)


def binary_state_features(feature_type: str, binaries):
    """:func:`state_features` of binaries in the two-body path's terms: a function of the
    relative orbit giving inputs (B, K), and the map ``(offset (B, F), mix (K, F))`` whose
    ``offset + inputs @ mix`` are the features (see :func:`binary_basic_features`); None for the
    ``rich`` features, which have no such form here."""
    if feature_type == "radial":
        def radial(separation, distance, speed, shortest, relative_velocity, drift):
            return _radial(separation, relative_velocity)
        return radial, (binaries.total.new_zeros(binaries.total.shape), binaries.total.new_ones(1, 1))
    if feature_type == "rich":
        return None
    return binary_basic_features(binaries)


class PairFeatures:
    """:func:`basic_features` of systems of three or more bodies, and with ``history_len`` H > 0
    the ``delta_mag`` history rows of :func:`change_features`, from the pair quantities of the
    fast step (:class:`~nbody_engine.integrators.pair_step.Pairs`), in the form of
    :func:`binary_basic_features`: network inputs (B, 9 + 7 H) and the map ``(offset (B, F),
    mix (9 + 7 H, F))`` (F = 11 + 7 H) of those inputs to the features, which
    :meth:`~nbody_engine.learning.network.DtNetwork.frozen` folds into the network's first layer.

    The inputs are the logarithms of nine sums and extremes: the sum of the pair distances, the
    least squared distance, the sums of the bodies' squared speeds and squared accelerations and
    their largest, the least squared free-fall and collision times and their minimum; then the
    history rows as they are. The square roots, the means' divisions and the constant features
    (body count, total mass) are factors and offsets of the map: the same numbers to rounding.
    Call :meth:`measure` after ``pairs.timescale()``, whose free-fall and collision times it
    reads, and :meth:`push_change` after each step."""

    def __init__(self, frame, history_len: int = 0) -> None:
        mass, N, P, B = frame.mass, frame.bodies, frame.pairs, frame.systems
        self.history_len = H = history_len
        log_total = (sum_last(mass) + _TINY).log()
        zero = torch.zeros_like(log_total)
        basic = torch.stack([torch.full_like(log_total, math.log(N + _TINY)), log_total, zero - math.log(P), zero,
                             zero - 0.5 * math.log(N), zero, zero - 0.5 * math.log(N), zero, zero, zero, zero], -1)
        self.offset = torch.cat([basic, mass.new_zeros(B, DELTA_WIDTH * H)], -1)
        self.mix = mass.new_zeros(9 + DELTA_WIDTH * H, 11 + DELTA_WIDTH * H)
        self.mix[0, 2] = 1.0  # mean pair distance
        for row, feature in ((1, 3), (2, 4), (3, 6), (4, 5), (5, 7), (6, 8), (7, 9), (8, 10)):
            self.mix[row, feature] = 0.5  # from squares
        self.mix[9:, 11:] = torch.eye(DELTA_WIDTH * H, dtype=mass.dtype, device=mass.device)
        # what a column's sum or extreme adds to the features' 1e-30 before the logarithm
        self.tiny = mass.new_tensor([P * _TINY, _TINY**2, N * _TINY**2, N * _TINY**2, _TINY**2, _TINY**2, _TINY**2,
                                     _TINY**2, _TINY**2]).unsqueeze(-1)
        self.raw = mass.new_empty(9, B)
        self.columns = mass.new_zeros(9 + DELTA_WIDTH * H, B)  # the inputs, one row per input
        self.inputs = self.columns.t()
        self.history = self.columns[9:].view(H, DELTA_WIDTH, B)  # newest row first
        self.scale_factors = mass.new_tensor([1.0, 1.0 / N, 1.0 / N]).unsqueeze(-1)  # r_min^2, v_rms^2, a_rms^2
        self.before = None
        # views made once: making one costs about as much as an operation on these small arrays
        raw = self.raw
        self.distance_sum, self.least_distance2, self.body_sums, self.body_largest = raw[0], raw[1], raw[2:4], raw[4:6]
        self.free_fall, self.collision, self.shortest, self.squared_scales = raw[6], raw[7], raw[8], raw[1:4]
        self.logs = self.columns[:9]
        if H:
            self.older_rows, self.newer_rows = self.history[1:], self.history[:-1]
            newest = self.history[0]
            self.means, self.largest = newest[:6].view(3, 2, B).unbind(1)  # (3, B) each: of |dx|, |dv|, |da|
            self.step_ratio = newest[6]

    def measure(self, pairs) -> torch.Tensor:
        """The inputs (B, 9 + 7 H) of the state of ``pairs``."""
        torch.sum(torch.mul(pairs.distance2, pairs.inverse_distance, out=pairs.distance), 0, out=self.distance_sum)
        torch.amin(pairs.distance2, 0, out=self.least_distance2)
        squares = torch.mul(pairs.motion, pairs.motion, out=pairs.motion_squares).sum(2)  # (2, N, B): |v_i|^2, |a_i|^2
        torch.sum(squares, 1, out=self.body_sums)
        torch.amax(squares, 1, out=self.body_largest)
        torch.amin(pairs.free_fall2, 0, out=self.free_fall)
        torch.amin(pairs.collision2, 0, out=self.collision)
        torch.minimum(self.free_fall, self.collision, out=self.shortest)
        torch.add(self.raw, self.tiny, out=self.logs).log_()
        if self.history_len:  # the state the coming step starts from
            self.before = pairs.phase.clone() if self.before is None else self.before.copy_(pairs.phase)
        return self.inputs

    def packaged_inputs(self, quantities) -> torch.Tensor:
        """:meth:`measure` without a history as a pure function, for the compiled pair step
        (:mod:`~nbody_engine.integrators.aot_step`): the inputs (B, 9) from its
        :class:`~nbody_engine.integrators.aot_step.PairQuantities`, ``self.tiny`` taken as a
        number of the trace (it depends on N alone, which the package's key holds)."""
        q = quantities
        speeds, accelerations = (q.velocity * q.velocity).sum(1), (q.acc * q.acc).sum(1)  # (N, B)
        free_fall, collision = q.free_fall2.amin(0), q.collision2.amin(0)
        raw = torch.stack([(q.distance2 * q.inverse_distance).sum(0), q.distance2.amin(0), speeds.sum(0),
                           accelerations.sum(0), speeds.amax(0), accelerations.amax(0), free_fall, collision,
                           torch.minimum(free_fall, collision)])
        return (raw + self.tiny).log().t()

    def resume(self, rows: torch.Tensor) -> None:
        """Start from the history ``rows`` (B, H, 7) of a :class:`~nbody_engine.learning.network.LearnedCarry`."""
        self.history.copy_(rows.permute(1, 2, 0))

    def rows(self) -> torch.Tensor:
        """The history, (B, H, 7)."""
        return self.history.permute(2, 0, 1).clone()

    def push_change(self, pairs, dt: torch.Tensor) -> None:
        """Put :func:`change_features` of the step of ``dt`` (B,) that led from the state of the
        last :meth:`measure` to the state of ``pairs`` in front of the history."""
        changes = pairs.phase.sub(self.before)  # (3, N, D, B): of positions, velocities, accelerations
        scales = torch.mul(self.squared_scales, self.scale_factors).sqrt_().clamp_min_(_TINY)  # r_min, v_rms, a_rms
        magnitudes = changes.mul_(changes).sum(2).sqrt_().div_(scales.unsqueeze(1))  # (3, N, B)
        if self.history_len > 1:
            self.older_rows.copy_(self.newer_rows.clone())  # they overlap
        torch.mean(magnitudes, 1, out=self.means)
        torch.amax(magnitudes, 1, out=self.largest)
        torch.div(dt, self.shortest.sqrt().clamp_min_(_TINY), out=self.step_ratio)


def change_features(before: State, acc_before: torch.Tensor, after: State, acc_after: torch.Tensor,
                    dt: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
    """How much one step changed the system, dimensionless: (B, 7)."""
    r, free_fall, collision = _pair_stats(before, softening)
    r_min = r.min(-1).values.clamp_min(_TINY)
    v_rms, _ = _body_stats(before.velocity)
    a_rms, _ = _body_stats(acc_before)
    tau = torch.minimum(free_fall, collision).min(-1).values.clamp_min(_TINY)
    cols = []
    for delta, scale in ((after.position - before.position, r_min), (after.velocity - before.velocity, v_rms),
                         (acc_after - acc_before, a_rms)):
        mag = delta.norm(dim=-1) / scale.clamp_min(_TINY).unsqueeze(-1)
        cols += [mag.mean(-1), mag.max(-1).values]
    cols.append(dt / tau)
    return torch.stack(cols, -1)


def history_row(feature_type: str, before: State, acc_before: torch.Tensor, potential_before: torch.Tensor,
                after: State, acc_after: torch.Tensor, dt: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
    """The history row one leapfrog step of size ``dt`` (from ``before`` to ``after``) adds: (B, K)."""
    if feature_type == "delta_mag":
        return change_features(before, acc_before, after, acc_after, dt, softening)
    return state_features(feature_type, before, acc_before, potential_before, softening)


def empty_rows(batch: int, history_len: int, feature_type: str, like: torch.Tensor) -> torch.Tensor:
    """History of an orbit that has not moved yet: zeros, (B, H, K)."""
    return like.new_zeros(batch, history_len, row_width(feature_type))


def push_row(rows: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Add the newest row (B, K) in front of ``rows`` (B, H, K), dropping the oldest."""
    return torch.cat([row.unsqueeze(1), rows[:, :-1]], 1)
