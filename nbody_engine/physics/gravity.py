"""Batched gravitational N-body physics in torch (G = 1).

Shapes are batch-first: ``B`` independent systems of ``N`` bodies in ``D`` dimensions.
Gravity is Newtonian with Plummer softening ``s``: the pair potential is
``-m_i m_j / sqrt(r_ij^2 + s^2)``; ``s = 0`` is exact Newtonian gravity.

An optional external point mass ``M`` fixed at ``R = (X, Y, Z)`` adds the potential
``-M m_i / sqrt(|x_i - R|^2 + s^2)`` to every body: the tidal field of a distant perturber that
is massive enough not to move. In 2D the bodies live in the plane z = 0, so ``Z`` is the
perturber's height above that plane: it enters the distance, and only the in-plane force acts.
With the field on, energy is still conserved, but momentum (and angular momentum, unless R is on
the axis) is not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class State:
    """One batch of systems.

    mass: (B, N); position, velocity: (B, N, D); time: (B,).
    """

    mass: torch.Tensor
    position: torch.Tensor
    velocity: torch.Tensor
    time: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.mass.shape[0]

    @property
    def num_bodies(self) -> int:
        return self.mass.shape[1]

    @property
    def dim(self) -> int:
        return self.position.shape[2]

    def replace(self, **changes) -> State:
        return replace(self, **changes)

    def to(self, device=None, dtype=None) -> State:
        return State(*(t.to(device=device, dtype=dtype) for t in (self.mass, self.position, self.velocity, self.time)))

    def select(self, index) -> State:
        """The systems at ``index`` (an index tensor, slice or boolean mask over B)."""
        return State(self.mass[index], self.position[index], self.velocity[index], self.time[index])

    def detach(self) -> State:
        return State(self.mass.detach(), self.position.detach(), self.velocity.detach(), self.time.detach())


@dataclass(frozen=True)
class PointMassField:
    """A fixed point mass: ``mass`` (scalar) at ``position`` (x, y, z)."""

    mass: float
    position: tuple[float, float, float]

    def offset(self, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vector from the perturber to each body in the bodies' D dimensions, (B, N, D), and
        the squared out-of-space part of the distance (Z^2 in 2D, else 0)."""
        D = position.shape[-1]
        R = torch.as_tensor(self.position, dtype=position.dtype, device=position.device)
        extra = (R[D:] ** 2).sum()
        return position - R[:D], extra

    def acceleration(self, position: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
        d, extra = self.offset(position)
        r2 = (d * d).sum(-1, keepdim=True) + extra + softening**2
        return -self.mass * d * r2.pow(-1.5)

    def potential(self, mass: torch.Tensor, position: torch.Tensor, softening: float = 0.0) -> torch.Tensor:
        """Potential energy of the bodies in the field, (B,)."""
        d, extra = self.offset(position)
        r = ((d * d).sum(-1) + extra + softening**2).sqrt()
        return -(self.mass * mass / r).sum(-1)


def pair_separations(position: torch.Tensor) -> torch.Tensor:
    """x_j - x_i for every pair: (B, N, N, D).

    Two row gathers and a contiguous subtraction: on large batches of few bodies this is twice
    as fast as the broadcast ``x[:, None] - x[:, :, None]``, whose inner dimensions are tiny."""
    B, N = position.shape[:2]
    i, j = _pair_index(N, position.device)
    return position.index_select(1, j).sub_(position.index_select(1, i)).view(B, N, N, *position.shape[2:])


@functools.lru_cache(maxsize=64)
def _pair_index(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i and row j of every pair (i, j), i-major: (n * n,) each."""
    with torch.inference_mode(False):
        rows = torch.arange(n, device=device)
        return rows.repeat_interleave(n), rows.repeat(n)


@functools.lru_cache(maxsize=64)
def upper_pairs(n: int, device: torch.device) -> torch.Tensor:
    """(2, P): row i and row j of the pairs i < j."""
    with torch.inference_mode(False):
        return torch.triu_indices(n, n, 1, device=device)


def upper_pair_differences(x: torch.Tensor) -> torch.Tensor:
    """x_j - x_i for the pairs i < j of the rows of ``x`` (B, N, ...): (B, P, ...)."""
    i, j = upper_pairs(x.shape[1], x.device)
    return x.index_select(1, j).sub_(x.index_select(1, i))


def squared_halves(x: torch.Tensor, dim: int) -> torch.Tensor:
    """|x[..., :dim]|^2 and |x[..., dim:]|^2 of ``x`` (..., 2 dim), as (..., 2): the squared
    lengths of a position and a velocity difference stored side by side, in one product."""
    return (x * x) @ _halves(dim, x.dtype, x.device)


@functools.lru_cache(maxsize=16)
def _halves(dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2 dim, 2): sums the first and the last ``dim`` entries of a vector separately."""
    with torch.inference_mode(False):
        return torch.eye(2, dtype=dtype, device=device).repeat_interleave(dim, 0)


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):
        return torch.ones(n, dtype=dtype, device=device)


def sum_last(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(-1)`` as a product with ones: PyTorch's CPU reductions over a dimension of 2 or 3
    cost 20-50 times an elementwise operation on batches; the product goes through BLAS."""
    return x @ _ones(x.shape[-1], x.dtype, x.device)


def weighted_sum_over_j(weight: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """sum_j weight[b, i, j] * vectors[b, i, j, :] -> (B, N, D), as a batched product."""
    return (weight.unsqueeze(-2) @ vectors).squeeze(-2)


@functools.lru_cache(maxsize=64)
def diagonals(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, n): the identity, its complement, and inf on the diagonal (0 elsewhere); made once
    per shape, dtype and device (as normal tensors even when first asked for under inference
    mode, so autograd may use them later)."""
    with torch.inference_mode(False):
        eye = torch.eye(n, dtype=dtype, device=device)
        return eye, 1 - eye, torch.zeros_like(eye).fill_diagonal_(float("inf"))


def _inverse_distance(dx: torch.Tensor, softening: float) -> torch.Tensor:
    """1 / sqrt(r_ij^2 + s^2) with zeros on the diagonal, (B, N, N); gradient-safe at i == j."""
    eye, off_diagonal, _ = diagonals(dx.shape[1], dx.dtype, dx.device)
    r2 = sum_last(dx * dx) + (softening**2 + eye)
    return r2.rsqrt() * off_diagonal


def acceleration_and_potential(mass: torch.Tensor, position: torch.Tensor, softening: float = 0.0,
                               field: PointMassField | None = None, with_potential: bool = True
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accelerations (B, N, D) and total potential energy (B,) from one pass over the pairs
    (the potential is None when ``with_potential`` is False)."""
    if position.shape[1] == 2:
        acc, potential = _two_body_forces(mass, position, softening, with_potential)
    else:
        acc, potential = _pair_forces(mass, position, softening, with_potential)
    if field is not None:
        acc = acc + field.acceleration(position, softening)
    if not with_potential:
        return acc, None
    return acc, _with_field(potential, mass, position, softening, field)


def _pair_forces(mass, position, softening, with_potential):
    """Mutual accelerations and potential over the (B, N, N) matrix of pairs."""
    dx = pair_separations(position)
    inv_r = _inverse_distance(dx, softening)
    m_j = mass.unsqueeze(1)
    acc = weighted_sum_over_j(m_j * inv_r**3, dx)
    if not with_potential:
        return acc, None
    return acc, -0.5 * sum_last(sum_last(mass.unsqueeze(2) * mass.unsqueeze(1) * inv_r))


def _two_body_forces(mass, position, softening, with_potential):
    """The same for N = 2, from the one separation: a third of the operations of the matrix
    path, which on a single orbit are the step's cost."""
    d = position[:, 1] - position[:, 0]  # (B, D)
    inv_r = (sum_last(d * d) + softening**2).rsqrt()  # (B,)
    pull = d * (inv_r * inv_r * inv_r).unsqueeze(-1)  # (B, D): body 0's acceleration per unit mass of body 1
    acc = pull.unsqueeze(1) * (mass.flip(1) * _towards(mass.dtype, mass.device)).unsqueeze(-1)
    return acc, (-mass.prod(-1) * inv_r if with_potential else None)


@functools.lru_cache(maxsize=16)
def _towards(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2,): +1 for body 0 (pulled along x_1 - x_0), -1 for body 1."""
    with torch.inference_mode(False):
        return torch.tensor([1.0, -1.0], dtype=dtype, device=device)


def _with_field(potential, mass, position, softening, field) -> torch.Tensor:
    """The mutual ``potential`` (B,) plus the external field's, if any."""
    if field is not None:
        potential = potential + field.potential(mass, position, softening)
    return potential


def accelerations(state: State, softening: float = 0.0, field: PointMassField | None = None) -> torch.Tensor:
    return acceleration_and_potential(state.mass, state.position, softening, field)[0]


def kinetic_energy(state: State) -> torch.Tensor:
    """(B,)"""
    return kinetic_energy_of(state.mass, state.velocity)


def kinetic_energy_of(mass: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Kinetic energy (..., B) of masses (B, N) moving at velocity (..., B, N, D): many states of
    the same systems at once."""
    return 0.5 * sum_last(mass * sum_last(velocity * velocity))


def potential_energy(state: State, softening: float = 0.0, field: PointMassField | None = None) -> torch.Tensor:
    """(B,), without computing the accelerations: a sum over the pairs i < j alone, half the
    pairs of the (B, N, N) matrix of ``acceleration_and_potential`` and no forces."""
    i, j = upper_pairs(state.num_bodies, state.position.device)
    dx = upper_pair_differences(state.position)
    inv_r = (sum_last(dx * dx) + softening**2).rsqrt()
    potential = -sum_last(state.mass.index_select(1, i) * state.mass.index_select(1, j) * inv_r)
    return _with_field(potential, state.mass, state.position, softening, field)


def total_energy(state: State, softening: float = 0.0, field: PointMassField | None = None) -> torch.Tensor:
    """(B,)"""
    return kinetic_energy(state) + potential_energy(state, softening, field)


def momentum(state: State) -> torch.Tensor:
    """Total linear momentum, (B, D)."""
    return (state.mass.unsqueeze(-2) @ state.velocity).squeeze(-2)


def angular_momentum(state: State) -> torch.Tensor:
    """Total angular momentum about the origin: (B,) in 2D (the z component), (B, 3) in 3D."""
    moments = cross(state.position, state.velocity)
    if state.dim == 2:
        return sum_last(state.mass * moments)
    return (state.mass.unsqueeze(-1) * moments).sum(1)


def cross(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``x x v`` of vectors (..., D): (...) in 2D (the z component), (..., 3) in 3D."""
    if x.shape[-1] == 2:
        return x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0]
    return torch.linalg.cross(x, v, dim=-1)


def centre_of_mass_frame(state: State) -> State:
    """The same systems with centre of mass at rest at the origin."""
    m = state.mass.unsqueeze(-1)
    total = m.sum(1, keepdim=True)
    com = (m * state.position).sum(1, keepdim=True) / total
    vcom = (m * state.velocity).sum(1, keepdim=True) / total
    return state.replace(position=state.position - com, velocity=state.velocity - vcom)


def magnitude(vector_or_scalar: torch.Tensor, dim: int) -> torch.Tensor:
    """|L| for angular momentum of either shape: (B,) from (B,) in 2D or (B, 3) in 3D."""
    return vector_or_scalar.abs() if dim == 2 else vector_or_scalar.norm(dim=-1)


def relative_change(new, old, vector: bool | None = None):
    """|new - old| / |old| per system: the one relative error (|dE/E|, |dL/L|) of the engine, for
    tensors and NumPy arrays alike. Scalars (..., B) are compared elementwise, vectors
    (..., B, K) by their norm; ``vector`` says which (default: vectors when ``new`` is 2-D).

    Where |old| = 0 a relative change is undefined: a NumPy array holds NaN there; a tensor
    holds what the division gives (inf or NaN), which costs a training attempt no extra
    operation and which every non-finite check treats alike."""
    if vector is None:
        vector = new.ndim > 1
    if isinstance(new, torch.Tensor):
        if vector:
            return (new - old).norm(dim=-1) / old.norm(dim=-1)
        return (new - old).abs() / old.abs()
    new, old = np.asarray(new), np.asarray(old)
    change, size = ((np.linalg.norm(new - old, axis=-1), np.linalg.norm(old, axis=-1)) if vector
                    else (np.abs(new - old), np.abs(old)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(size > 0, change / np.where(size > 0, size, 1), np.nan)


def relative_errors(energy: np.ndarray, angular_momentum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A recorded trajectory's |dE/E| (S, B) and |dL/L| (S, B) against row 0, from energy (S, B)
    and L (S, B) or (S, B, 3), by :func:`relative_change` (NaN where L0 = 0)."""
    return (relative_change(energy, energy[0], vector=False),
            relative_change(angular_momentum, angular_momentum[0], vector=angular_momentum.ndim > energy.ndim))


@dataclass(frozen=True)
class Gravity:
    """What the bodies feel: softened mutual gravity plus an optional external field."""

    softening: float = 0.0
    field: PointMassField | None = None

    def __call__(self, state_or_mass, position=None, with_potential: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Accelerations (B, N, D) and potential energy (B,) (None without ``with_potential``)."""
        if position is None:
            state_or_mass, position = state_or_mass.mass, state_or_mass.position
        return acceleration_and_potential(state_or_mass, position, self.softening, self.field, with_potential)

    def potential(self, state: State) -> torch.Tensor:
        """Potential energy (B,) alone."""
        return potential_energy(state, self.softening, self.field)

    def energy(self, state: State) -> torch.Tensor:
        """Total energy (B,): kinetic plus this potential."""
        return kinetic_energy(state) + self.potential(state)


def tightest_pair(state: State, softening: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separation and relative velocity (B, D) of each system's pair with the shortest
    free-fall time ``sqrt(r^3 / (m_i + m_j))``: the pair whose motion sets the step."""
    i, j = upper_pairs(state.num_bodies, state.position.device)
    both = torch.cat([state.position, state.velocity], -1)
    pairs = upper_pair_differences(both)  # (B, P, 2D)
    if pairs.shape[1] > 1:
        r2 = sum_last(pairs[..., : state.dim] ** 2) + softening**2
        m_pair = state.mass.index_select(1, i) + state.mass.index_select(1, j)
        tightest = (r2.pow(1.5) / m_pair).argmin(-1)  # (B,)
        pairs = pairs.gather(1, tightest.view(-1, 1, 1).expand(-1, 1, pairs.shape[-1]))
    return pairs[:, 0, : state.dim], pairs[:, 0, state.dim:]
