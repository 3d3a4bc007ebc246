"""The learned time transformation of the time-transformed leapfrog (``integrator_mode = "ml_ttl"``):

    Omega_theta(q) = U(q) * exp(g_theta(F(q))),

``U = -V > 0`` the force function and ``g_theta`` an MLP of shape features ``F`` of the positions.
The last layer starts at zero, so an untrained network *is* the logarithmic Hamiltonian
(``Omega = U``); training starts from that baseline. ``g`` is bounded, ``|g| <= G_LIMIT``
(``g = G_LIMIT tanh(s / G_LIMIT)`` of the network's output ``s``), so a network evaluated far
from its training family changes log-H's steps by at most that factor either way.

Features (:func:`shape_features`), permutation invariant, for any N, and scale-free (a
function of the configuration's shape and of the masses, not of its size): with
``x_ij = log rho_ij`` the log pair distances (softened, ``rho^2 = r^2 + s^2``) and pair
log-weights ``l_ij``, each feature is a difference of generalized means of the distances,

    A_k = -(1/p_k) log sum_{i<j} exp(l^k_ij - p_k x_ij),    F_k = A_k - log r_U,

where ``log r_U = A`` at ``p = 1`` with the binding weights ``w_ij = m_i m_j / sum m m``: ``r_U =
sum m m / U``, the system's harmonic mean size. ``p > 0`` weighs the closest pairs (``p -> inf``:
``log(min rho / r_U)``), ``p < 0`` the widest. Two families: binding weights at ``p = -2, 2, 4, 8``,
and the same weights with the pair mass ``(m_i + m_j) / M`` as a time scale's ``rho /
(m_i + m_j)^(1/3)`` at ``p = 4, 8`` (the pair that is fastest, not only closest). Then two
constants of the system: ``log N`` and ``log(m_min / m_max)``. On two bodies every shape feature
is 0: ``g`` is a constant there and the learned leapfrog is log-H (exact orbit shape) with a
rescaled step, as it should be.

The gradient the leapfrog needs is by hand, so that it runs under ``torch.inference_mode`` and
stays differentiable in the weights when training: ``grad Omega = exp(g) (grad U + U grad g)``,
``grad U = m_i a_i`` from the step's one force evaluation, and ``grad g = sum_k dg/dF_k grad F_k``
with ``dF_k / dx_ij = pi^k_ij - pi^U_ij`` (the softmax weights of the two means) and
``dx_ij / dq_i = (q_i - q_j) / rho_ij^2``; ``dg/dF`` by a hand-written backward pass of the MLP.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.errors import InputError
from ..physics.gravity import State, sum_last, upper_pair_differences, upper_pairs

BINDING_POWERS = (-2.0, 2.0, 4.0, 8.0)  # generalized means of the pair distances, binding-weighted
TIMESCALE_POWERS = (4.0, 8.0)  # the same, of rho / (m_i + m_j)^(1/3): the fastest pairs
CONSTANT_FEATURES = ("log N", "log(m_min / m_max)")
FEATURE_NAMES = (tuple(f"F_bind(p={p:g})" for p in BINDING_POWERS)
                 + tuple(f"F_time(p={p:g})" for p in TIMESCALE_POWERS) + CONSTANT_FEATURES)
NUM_FEATURES = len(FEATURE_NAMES)
G_LIMIT = math.log(100.0)  # |g| at most: Omega within a factor 100 of U


def _activation_and_slope(name: str):
    """The activation and its derivative (of the pre-activation ``a`` and the value ``z``)."""
    if name == "tanh":
        return torch.tanh, lambda a, z: 1 - z * z
    if name == "silu":
        return nn.functional.silu, lambda a, z: torch.sigmoid(a) * (1 + a * (1 - torch.sigmoid(a)))
    if name == "gelu":
        return nn.functional.gelu, lambda a, z: (0.5 * (1 + torch.erf(a / math.sqrt(2)))
                                                 + a * torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi))
    raise InputError(f"integrator_mode = 'ml_ttl' needs a smooth activation (its gradient enters the step), not "
                     f"'{name}'; set activation to tanh, silu or gelu")


class OmegaNetwork(nn.Module):
    """MLP from the features (B, NUM_FEATURES) to ``g`` (B,), with ``dg/dF`` (B, NUM_FEATURES)."""

    def __init__(self, hidden_dims: list[int], activation: str = "tanh") -> None:
        super().__init__()
        self.activation_name = activation
        self.activation, self.slope = _activation_and_slope(activation)
        widths = [NUM_FEATURES, *hidden_dims]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.last = nn.Linear(widths[-1], 1)
        nn.init.zeros_(self.last.weight)  # g = 0 exactly: an untrained network is log-H
        nn.init.zeros_(self.last.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``g`` (B,) and its gradient with respect to ``features`` (B, F), by a hand-written
        backward pass (plain operations: differentiable in the weights, and no autograd needed)."""
        z, slopes = features, []
        for layer in self.hidden:
            a = layer(z)
            z = self.activation(a)
            slopes.append(self.slope(a, z))
        s = self.last(z).squeeze(-1)
        bounded = torch.tanh(s / G_LIMIT)
        delta = self.last.weight.expand(z.shape[0], -1)  # ds/dz of the last hidden layer, (B, H)
        for layer, slope in zip(reversed(self.hidden), reversed(slopes)):
            delta = (delta * slope) @ layer.weight
        return G_LIMIT * bounded, (1 - bounded * bounded).unsqueeze(-1) * delta


def build_omega_network(values: dict) -> OmegaNetwork:
    """An OmegaNetwork from config values (a Config's or a checkpoint's ``config`` dict)."""
    return OmegaNetwork(list(values["hidden_dims"]), values["activation"])


def _pair_log_weights(mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair (B, P): the binding log-weights ``log(m_i m_j / sum m m)`` and ``log((m_i + m_j) / M)``."""
    i, j = upper_pairs(mass.shape[1], mass.device)
    m_i, m_j = mass.index_select(1, i), mass.index_select(1, j)
    binding = torch.log(m_i * m_j)
    binding = binding - torch.logsumexp(binding, -1, keepdim=True)
    return binding, torch.log((m_i + m_j) / sum_last(mass).unsqueeze(-1))


def _generalized_mean(log_weights: torch.Tensor, x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = -(1/p) log sum exp(l - p x)`` (B,) over the pairs and ``dA/dx`` (B, P), its softmax weights."""
    scores = log_weights - p * x
    return -torch.logsumexp(scores, -1) / p, torch.softmax(scores, -1)


def shape_features(mass: torch.Tensor, position: torch.Tensor, softening: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The features F (B, NUM_FEATURES) of the module docstring, their derivatives with respect to
    the log pair distances (B, NUM_FEATURES, P) (zero for the constants), and the pair separations
    ``q_j - q_i`` over ``rho_ij^2`` (B, P, D), which turn the latter into gradients in ``q``."""
    separation = upper_pair_differences(position)  # (B, P, D)
    rho2 = sum_last(separation * separation) + softening**2
    x = 0.5 * torch.log(rho2)  # (B, P)
    binding, pair_mass = _pair_log_weights(mass)
    log_size, size_weights = _generalized_mean(binding, x, 1.0)  # log r_U
    values, slopes = [], []
    # binding-weighted means, then means of rho (M / (m_i + m_j))^(1/3): l - p x with l = log w + (p/3) log(m_pair / M)
    families = [(p, binding) for p in BINDING_POWERS] + [(p, binding + pair_mass * (p / 3)) for p in TIMESCALE_POWERS]
    for p, log_weights in families:
        mean, weights = _generalized_mean(log_weights, x, p)
        values.append(mean - log_size)
        slopes.append(weights - size_weights)
    values.append(torch.full_like(log_size, math.log(mass.shape[1])))
    values.append(torch.log(mass.amin(-1) / mass.amax(-1)))
    slopes += [torch.zeros_like(x)] * len(CONSTANT_FEATURES)
    return torch.stack(values, -1), torch.stack(slopes, 1), separation / rho2.unsqueeze(-1)


def pair_gradient(pair_coefficient: torch.Tensor, scaled_separation: torch.Tensor, num_bodies: int) -> torch.Tensor:
    """``sum_{i<j} c_ij grad_q x_ij`` (B, N, D) from ``c`` (B, P) and ``(q_j - q_i) / rho_ij^2``
    (B, P, D): ``grad_{q_i} x_ij = -(q_j - q_i) / rho^2``, ``grad_{q_j} x_ij = +(q_j - q_i) / rho^2``."""
    i, j = upper_pairs(num_bodies, scaled_separation.device)
    pull = pair_coefficient.unsqueeze(-1) * scaled_separation  # (B, P, D)
    B, _, D = pull.shape
    gradient = pull.new_zeros(B, num_bodies, D)
    return gradient.index_add(1, j, pull).index_add(1, i, -pull)


class LearnedOmega:
    """``Omega = U exp(g_theta)`` as a time transformation of the time-transformed leapfrog
    (the ``TimeTransformation`` interface of :mod:`nbody_engine.integrators.ttl`): called with
    the masses (B, N), positions (B, N, D), the potential energy (B,) and accelerations (B, N, D)
    that the step's force evaluation gave there, it returns ``Omega`` (B,) and ``dOmega/dq``
    (B, N, D). ``softening`` is the Plummer length of the distances in the features."""

    name = "learned Omega"

    def __init__(self, network: OmegaNetwork, softening: float = 0.0) -> None:
        self.network, self.softening = network, softening

    def log_correction(self, mass: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``g`` (B,) and ``dg/dq`` (B, N, D)."""
        features, slopes, scaled = shape_features(mass, position, self.softening)
        g, dg_dF = self.network(features.to(self.network.last.weight.dtype))
        pair_coefficient = (dg_dF.to(slopes.dtype).unsqueeze(-1) * slopes).sum(1)  # dg/dx_ij, (B, P)
        return g.to(position.dtype), pair_gradient(pair_coefficient, scaled, mass.shape[1])

    def __call__(self, mass: torch.Tensor, position: torch.Tensor, potential: torch.Tensor, acc: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        g, grad_g = self.log_correction(mass, position)
        factor = torch.exp(g)
        force_function = -potential  # U > 0
        omega = factor * force_function
        grad_u = mass.unsqueeze(-1) * acc  # dU/dq_i = m_i a_i
        gradient = factor.view(-1, 1, 1) * (grad_u + force_function.view(-1, 1, 1) * grad_g)
        return omega, gradient

    def g_of(self, state: State) -> torch.Tensor:
        """``g`` (B,) of the systems ``state`` (for plots of what the network learned)."""
        return self.log_correction(state.mass, state.position)[0]
